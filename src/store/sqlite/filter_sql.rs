//! Translates a resolved `model::query::Filter` into a SQL condition with bound parameters:
//! never string-formatted values. Indexed attributes (`id`, `userName`, `externalId`,
//! `displayName`, `emails.value`, `members.value`) use their columns and side tables; any
//! other attribute is read from the JSON document with SQLite's JSON functions, so a filter
//! never loads the table into memory.

use rusqlite::types::Value as SqlValue;

use super::StoreError;
use crate::model::query::{AttrPath, AttrType, CompareOp, Filter, Literal};
use crate::model::{ResourceKind, normalize_time};

/// The SQL function that folds case the way Rust's `str::to_lowercase` does, which is how
/// the indexed `*_ci` columns and `resource_emails.value_ci` are folded when written.
/// SQLite's own `lower()` folds ASCII only, so `name.givenName eq "élodie"` missed
/// "Élodie" while `userName eq` found it: one attribute would be case-insensitive in
/// Unicode and the other in ASCII (RFC 7643 §2.3.1 `caseExact = false` makes no such
/// difference). Registered on every connection by [`register_functions`].
const FOLD: &str = "scimsync_fold";

/// Registers the SQL functions the translated filters and sort keys call.
pub fn register_functions(conn: &rusqlite::Connection) -> Result<(), StoreError> {
    use rusqlite::functions::FunctionFlags;
    use rusqlite::types::ValueRef;
    conn.create_scalar_function(
        FOLD,
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC | FunctionFlags::SQLITE_INNOCUOUS,
        |ctx| {
            Ok(match ctx.get_raw(0) {
                ValueRef::Text(t) => SqlValue::Text(crate::model::fold_case(&String::from_utf8_lossy(t))),
                ValueRef::Null => SqlValue::Null,
                ValueRef::Integer(i) => SqlValue::Integer(i),
                ValueRef::Real(r) => SqlValue::Real(r),
                ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
            })
        },
    )?;
    Ok(())
}

pub struct Sql {
    pub text: String,
    pub params: Vec<SqlValue>,
}

/// Where attribute values are read from.
#[derive(Clone, Copy)]
enum Scope {
    /// The resource row `r`.
    Row,
    /// One element `e` of a multi-valued attribute held in the JSON document.
    Element,
    /// One member `m` of a group (inside `members[...]`).
    Member,
    /// One group `g` of a user (inside `groups[...]`).
    GroupOf,
}

pub fn translate(kind: ResourceKind, f: &Filter) -> Result<Sql, StoreError> {
    let mut t = Translator { kind, params: Vec::new() };
    let text = t.filter(f, Scope::Row)?;
    Ok(t.finish(&text))
}

/// Builds SQL text and its parameters together.
///
/// Every bound value gets a numbered marker `?N` (its index in `params`, from 1) and
/// [`Translator::finish`] turns the finished text into plain `?`s with the parameters in
/// the order their markers appear. So the parameters always agree with the text, whatever
/// a branch does with a fragment it has built: dropping it (a comparison that can never
/// match becomes `0` after its column's path was bound), repeating it, or placing it before
/// a fragment bound earlier. Counting on "bind in text order" by hand is what once sent
/// `Got 2, needed 1` to SQLite and a 500 to the client (issue #13).
struct Translator {
    kind: ResourceKind,
    params: Vec<SqlValue>,
}

/// A JSON path for SQLite: `$."urn:...:User"."employeeNumber"` — every key quoted, so URNs
/// with dots and colons stay one key.
fn json_path(urn: Option<&str>, name: &str, sub: Option<&str>) -> String {
    let mut p = String::from("$");
    for k in [urn, Some(name), sub].into_iter().flatten() {
        p.push_str(".\"");
        p.push_str(&k.replace('"', ""));
        p.push('"');
    }
    p
}

const MEMBER_DISPLAY: &str =
    "coalesce(gm.display, json_extract(m.data, '$.displayName'), json_extract(m.data, '$.userName'))";

impl Translator {
    /// Binds `v` and returns its marker for the SQL text (see [`Translator`]).
    fn bind(&mut self, v: SqlValue) -> String {
        self.params.push(v);
        format!("?{}", self.params.len())
    }

    /// The finished statement fragment: each marker `?N` in `text` becomes `?` and
    /// contributes parameter N, in text order. A marker that is not in the text binds
    /// nothing; one that appears twice binds twice. The generated text holds no other `?`:
    /// its only SQL string literals are fixed ones, and every value is bound.
    fn finish(self, text: &str) -> Sql {
        let (text, params) = crate::store::sql_markers::resolve(text, &self.params);
        Sql { text, params }
    }

    fn filter(&mut self, f: &Filter, scope: Scope) -> Result<String, StoreError> {
        Ok(match f {
            Filter::And(a, b) => format!("({} AND {})", self.filter(a, scope)?, self.filter(b, scope)?),
            Filter::Or(a, b) => format!("({} OR {})", self.filter(a, scope)?, self.filter(b, scope)?),
            // SQL's NOT of an unknown (NULL) is unknown; SCIM's `not` of a comparison on an
            // absent attribute is true.
            Filter::Not(a) => format!("NOT coalesce(({}), 0)", self.filter(a, scope)?),
            Filter::Present(p) => self.present(p, scope),
            Filter::Compare(p, op, lit) => self.compare(p, *op, lit, scope)?,
            Filter::ValuePath(p, inner) => self.value_path(p, inner, scope)?,
        })
    }

    fn value_path(&mut self, p: &AttrPath, inner: &Filter, scope: Scope) -> Result<String, StoreError> {
        if !matches!(scope, Scope::Row) {
            return Ok("0".into());
        }
        let name = p.name.as_str();
        if p.urn.is_none() && self.kind == ResourceKind::Group && name == "members" {
            let cond = self.filter(inner, Scope::Member)?;
            return Ok(format!(
                "EXISTS (SELECT 1 FROM group_members gm JOIN resources m ON m.seq = gm.member_seq \
                 WHERE gm.group_seq = r.seq AND {cond})"
            ));
        }
        if p.urn.is_none() && self.kind == ResourceKind::User && name == "groups" {
            let cond = self.filter(inner, Scope::GroupOf)?;
            return Ok(format!(
                "EXISTS (SELECT 1 FROM group_members gm JOIN resources g ON g.seq = gm.group_seq \
                 WHERE gm.member_seq = r.seq AND {cond})"
            ));
        }
        let path = json_path(p.urn.as_deref(), name, None);
        let ph = self.bind(SqlValue::Text(path));
        let cond = self.filter(inner, Scope::Element)?;
        // The elements: each value of a multi-valued attribute, or the one object of a
        // single-valued complex attribute (`name[givenName eq "x"]`; `json_each` would walk
        // its members). Only objects have sub-attributes: the condition is not evaluated on
        // anything else, where `json_extract` would fail on a bare string.
        let elements = if p.info.multi_valued {
            format!("json_each(r.data, {ph})")
        } else {
            format!("(SELECT json_extract(r.data, {ph}) AS value, json_type(r.data, {ph}) AS type)")
        };
        let each = format!(
            "EXISTS (SELECT 1 FROM {elements} e WHERE CASE WHEN e.type = 'object' THEN coalesce(({cond}), 0) ELSE 0 END)"
        );
        // `emails[type eq "work" and value eq "x"]` (and Entra's `emails[type eq "work"].value
        // eq "x"`, which the parser reads as that): an element can only match when the user
        // has the address at all, which the email index answers; the element test then runs
        // on those few rows instead of on every user's document.
        if p.urn.is_none()
            && self.kind == ResourceKind::User
            && name == "emails"
            && let Some(address) = conjunct_value_eq(inner)
        {
            let ph = self.bind(SqlValue::Text(crate::model::fold_case(address)));
            return Ok(format!(
                "(r.seq IN (SELECT resource_seq FROM resource_emails WHERE value_ci = {ph}) AND {each})"
            ));
        }
        Ok(each)
    }

    /// The SQL expression for a single-valued attribute in `scope`, or `None` when the
    /// attribute lives in a multi-valued JSON array (handled with `json_each`).
    fn column(&mut self, p: &AttrPath, scope: Scope) -> Option<String> {
        let name = p.name.as_str();
        let sub = p.sub.as_deref();
        match scope {
            Scope::Member => Some(match name {
                "value" => "m.id".into(),
                "type" => "m.kind".into(),
                "display" => MEMBER_DISPLAY.into(),
                _ => "NULL".into(),
            }),
            Scope::GroupOf => Some(match name {
                "value" => "g.id".into(),
                "display" => "json_extract(g.data, '$.displayName')".into(),
                "type" => "'direct'".into(),
                _ => "NULL".into(),
            }),
            Scope::Element => {
                let ph = self.bind(SqlValue::Text(json_path(None, name, sub)));
                Some(format!("json_extract(e.value, {ph})"))
            }
            Scope::Row => {
                if p.urn.is_none() {
                    match (name, sub) {
                        ("id", None) => return Some("r.id".into()),
                        ("externalId", None) => return Some("r.external_id".into()),
                        ("meta", Some("created")) => return Some("r.created".into()),
                        ("meta", Some("lastModified")) => return Some("r.last_modified".into()),
                        ("meta", Some("resourceType")) => return Some("r.kind".into()),
                        ("meta", Some("version")) => return Some("('W/\"' || r.version || '\"')".into()),
                        ("meta", Some(_)) => return Some("NULL".into()),
                        _ => {}
                    }
                }
                if p.info.multi_valued {
                    return None;
                }
                let ph = self.bind(SqlValue::Text(json_path(p.urn.as_deref(), name, sub)));
                Some(format!("json_extract(r.data, {ph})"))
            }
        }
    }

    fn present(&mut self, p: &AttrPath, scope: Scope) -> String {
        if matches!(scope, Scope::Row) && p.urn.is_none() {
            if self.kind == ResourceKind::Group && p.name == "members" {
                return "EXISTS (SELECT 1 FROM group_members gm WHERE gm.group_seq = r.seq)".into();
            }
            if self.kind == ResourceKind::User && p.name == "groups" {
                return "EXISTS (SELECT 1 FROM group_members gm WHERE gm.member_seq = r.seq)".into();
            }
            if p.name == "schemas" && p.sub.is_none() {
                // Every resource is rendered with its core schema.
                return "1".into();
            }
        }
        match self.column(p, scope) {
            Some(col) => non_empty(&col),
            None => {
                let (each, val) = self.each(p);
                format!("EXISTS (SELECT 1 FROM {each} WHERE {})", non_empty(&val))
            }
        }
    }

    /// `json_each` over a multi-valued attribute and the expression for the element's value
    /// (its sub-attribute, or the element itself for arrays of simple values).
    fn each(&mut self, p: &AttrPath) -> (String, String) {
        let ph = self.bind(SqlValue::Text(json_path(p.urn.as_deref(), &p.name, None)));
        let each = format!("json_each(r.data, {ph}) e");
        let val = match &p.sub {
            // Only an object element has sub-attributes (`json_extract` fails on a string).
            Some(s) => {
                let ph = self.bind(SqlValue::Text(json_path(None, s, None)));
                format!("(CASE WHEN e.type = 'object' THEN json_extract(e.value, {ph}) END)")
            }
            None => "e.value".into(),
        };
        (each, val)
    }

    fn compare(&mut self, p: &AttrPath, op: CompareOp, lit: &Literal, scope: Scope) -> Result<String, StoreError> {
        // `null` is "no value" (RFC 7643 §2.5), the absence `pr` tests for: `eq null` holds
        // when no value is present (none of a multi-valued attribute's, not an empty
        // string), `ne null` when one is.
        if let Literal::Null = lit {
            let present = self.present(p, scope);
            return Ok(match op {
                CompareOp::Eq => format!("(NOT {present})"),
                CompareOp::Ne => present,
                _ => "0".into(),
            });
        }
        let row = matches!(scope, Scope::Row) && p.urn.is_none();
        // Fast paths on indexed columns and side tables.
        if row {
            if self.kind == ResourceKind::User && p.name == "userName" && p.sub.is_none() {
                return Ok(self.cmp_folded("r.user_name_ci", op, lit, p.info.ty));
            }
            if p.name == "displayName" && p.sub.is_none() {
                return Ok(self.cmp_folded("r.display_name_ci", op, lit, p.info.ty));
            }
            if self.kind == ResourceKind::User
                && p.name == "emails"
                && p.sub.as_deref() == Some("value")
                && op == CompareOp::Eq
                && let Literal::String(s) = lit
            {
                let ph = self.bind(SqlValue::Text(s.to_lowercase()));
                return Ok(format!("r.seq IN (SELECT resource_seq FROM resource_emails WHERE value_ci = {ph})"));
            }
            if self.kind == ResourceKind::Group && p.name == "members" {
                let inner = AttrPath { name: p.sub.clone().unwrap_or_else(|| "value".into()), ..p.clone() };
                let cond = self.compare(&inner, op, lit, Scope::Member)?;
                return Ok(format!(
                    "EXISTS (SELECT 1 FROM group_members gm JOIN resources m ON m.seq = gm.member_seq \
                     WHERE gm.group_seq = r.seq AND {cond})"
                ));
            }
            if self.kind == ResourceKind::User && p.name == "groups" {
                let inner = AttrPath { name: p.sub.clone().unwrap_or_else(|| "value".into()), ..p.clone() };
                let cond = self.compare(&inner, op, lit, Scope::GroupOf)?;
                return Ok(format!(
                    "EXISTS (SELECT 1 FROM group_members gm JOIN resources g ON g.seq = gm.group_seq \
                     WHERE gm.member_seq = r.seq AND {cond})"
                ));
            }
            if p.name == "schemas" && p.sub.is_none() {
                return Ok(self.schemas(op, lit));
            }
        }
        let case_exact = p.info.case_exact
            || matches!(scope, Scope::Member | Scope::GroupOf) && p.name == "value"
            || row && (p.name == "id" || p.name == "externalId");
        Ok(match self.column(p, scope) {
            Some(col) => self.cmp(&col, op, lit, p.info.ty, case_exact),
            None => {
                let (each, val) = self.each(p);
                let c = self.cmp(&val, op, lit, p.info.ty, case_exact);
                format!("EXISTS (SELECT 1 FROM {each} WHERE {c})")
            }
        })
    }

    /// `schemas op "<urn>"`: the values are those a resource is rendered with, the core
    /// schema of its kind and each extension whose attributes it carries (an object under
    /// the extension's URN key in the document), compared as strings that are not
    /// `caseExact` (RFC 7643 §3).
    fn schemas(&mut self, op: CompareOp, lit: &Literal) -> String {
        let core = match self.kind {
            ResourceKind::User => "urn:ietf:params:scim:schemas:core:2.0:User",
            ResourceKind::Group => "urn:ietf:params:scim:schemas:core:2.0:Group",
        };
        let ph = self.bind(SqlValue::Text(core.into()));
        let c = self.cmp("s.v", op, lit, AttrType::String, false);
        format!(
            "EXISTS (SELECT 1 FROM (SELECT {ph} AS v UNION ALL SELECT x.key FROM json_each(r.data) x \
             WHERE x.key LIKE 'urn:%' AND x.type = 'object') s WHERE {c})"
        )
    }

    /// A comparison on a column that already holds lower-cased text (`user_name_ci`,
    /// `display_name_ci`): the literal is folded instead of the column, so the index serves it.
    fn cmp_folded(&mut self, col: &str, op: CompareOp, lit: &Literal, ty: AttrType) -> String {
        match lit {
            Literal::String(s) => self.cmp(col, op, &Literal::String(s.to_lowercase()), ty, true),
            other => self.cmp(col, op, other, ty, true),
        }
    }

    /// `col op literal`, following the attribute's type and `caseExact` (RFC 7644 §3.4.2.2).
    fn cmp(&mut self, col: &str, op: CompareOp, lit: &Literal, ty: AttrType, case_exact: bool) -> String {
        let value = match (lit, ty) {
            (Literal::Null, _) => {
                return match op {
                    CompareOp::Eq => format!("({col} IS NULL)"),
                    CompareOp::Ne => format!("({col} IS NOT NULL)"),
                    _ => "0".into(),
                };
            }
            (Literal::Bool(b), _) => SqlValue::Integer(*b as i64),
            // IdPs send booleans as strings ("True"): compare by the attribute's type.
            (Literal::String(s), AttrType::Boolean) => match s.to_ascii_lowercase().as_str() {
                "true" => SqlValue::Integer(1),
                "false" => SqlValue::Integer(0),
                _ => return "0".into(),
            },
            (Literal::String(s), AttrType::DateTime) => match instant_ms(s) {
                Some((floor, exact)) if !exact && op != CompareOp::Co && op != CompareOp::Sw && op != CompareOp::Ew => {
                    // Stored times have millisecond precision (`model::format_time`); a
                    // literal between two milliseconds equals none of them, and orders
                    // after the one it truncates to.
                    return match op {
                        CompareOp::Eq => "0".into(),
                        CompareOp::Ne => format!("({col} IS NOT NULL)"),
                        CompareOp::Gt | CompareOp::Ge => format!("({col} > {})", self.bind(SqlValue::Text(floor))),
                        _ => format!("({col} <= {})", self.bind(SqlValue::Text(floor))),
                    };
                }
                Some((floor, _)) => SqlValue::Text(floor),
                None => SqlValue::Text(s.clone()),
            },
            (Literal::String(s), _) => SqlValue::Text(if case_exact { s.clone() } else { s.to_lowercase() }),
            (Literal::Number(n), _) => match n.as_i64() {
                Some(i) => SqlValue::Integer(i),
                None => SqlValue::Real(n.as_f64().unwrap_or(f64::NAN)),
            },
        };
        let is_text = matches!(value, SqlValue::Text(_));
        let fold = is_text && !case_exact && ty != AttrType::DateTime;
        let lhs = if fold { format!("{FOLD}({col})") } else { col.to_string() };
        let rel = |s: &str| s.to_string();
        match op {
            CompareOp::Eq | CompareOp::Ne | CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le => {
                let sym = match op {
                    CompareOp::Eq => "=",
                    CompareOp::Ne => "!=",
                    CompareOp::Gt => ">",
                    CompareOp::Ge => ">=",
                    CompareOp::Lt => "<",
                    _ => "<=",
                };
                if matches!(value, SqlValue::Integer(_)) && matches!(lit, Literal::Bool(_)) && sym != "=" && sym != "!="
                {
                    return "0".into();
                }
                let ph = self.bind(value);
                rel(&format!("({lhs} {sym} {ph})"))
            }
            CompareOp::Co | CompareOp::Sw | CompareOp::Ew => {
                if !is_text {
                    return "0".into();
                }
                match op {
                    CompareOp::Co => {
                        let ph = self.bind(value);
                        format!("(instr({lhs}, {ph}) > 0)")
                    }
                    CompareOp::Sw => {
                        let len = text_len(&value);
                        let ph = self.bind(value);
                        format!("(substr({lhs}, 1, {len}) = {ph})")
                    }
                    _ => {
                        let len = text_len(&value);
                        if len == 0 {
                            return format!("({lhs} IS NOT NULL)");
                        }
                        let ph = self.bind(value);
                        format!("(substr({lhs}, -{len}) = {ph})")
                    }
                }
            }
        }
    }
}

/// The string of a `value eq "..."` that `inner` requires (a conjunct at its top level).
fn conjunct_value_eq(inner: &Filter) -> Option<&str> {
    match inner {
        Filter::And(a, b) => conjunct_value_eq(a).or_else(|| conjunct_value_eq(b)),
        Filter::Compare(p, CompareOp::Eq, Literal::String(s)) if p.name == "value" && p.sub.is_none() => Some(s),
        _ => None,
    }
}

/// An RFC 3339 timestamp in our stored format (UTC, truncated to milliseconds), and whether
/// that is exact (no finer fraction was cut off).
fn instant_ms(s: &str) -> Option<(String, bool)> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some((normalize_time(s)?, t.nanosecond() % 1_000_000 == 0))
}

fn text_len(v: &SqlValue) -> usize {
    match v {
        SqlValue::Text(s) => s.chars().count(),
        _ => 0,
    }
}

/// RFC 7644 §3.4.2.2 `pr`: present and not null, not an empty string, not an empty array.
fn non_empty(expr: &str) -> String {
    format!("(coalesce({expr}, '') NOT IN ('', '[]', '{{}}'))")
}

/// The SQL expression a list is ordered by for `sortBy` (RFC 7644 §3.4.2.3), with its bound
/// parameters. It is NULL when the resource has no value, so the caller can place those
/// last (ascending) or first (descending) as the RFC asks.
///
/// - Strings that are not `caseExact` compare folded (the indexed `*_ci` columns already
///   are); caseExact strings compare by code point (SQLite's BINARY collation on UTF-8).
/// - `dateTime` values compare as instants (`julianday`), whatever offset they were sent
///   with; booleans and numbers as numbers.
/// - A multi-valued attribute contributes "the value of the primary attribute, if any, or
///   else the first value in the list"; for a group's `members` and a user's `groups`,
///   which have no `primary`, the first one in list order.
/// - An empty string counts as no value, as it does for `pr`.
pub fn sort_key(kind: ResourceKind, p: &AttrPath) -> Sql {
    let mut t = Translator { kind, params: Vec::new() };
    let text = t.sort_key(p);
    t.finish(&text)
}

impl Translator {
    fn sort_key(&mut self, p: &AttrPath) -> String {
        let name = p.name.as_str();
        let sub = p.sub.as_deref();
        let core = p.urn.is_none();
        let fold = |e: String| if p.info.case_exact { e } else { format!("{FOLD}({e})") };
        let raw = match (name, sub) {
            // Indexed columns hold the folded value already.
            ("userName", None) if core && self.kind == ResourceKind::User => return "r.user_name_ci".into(),
            ("displayName", None) if core && !p.info.case_exact => return "r.display_name_ci".into(),
            ("meta", Some("location")) if core => "r.id".into(),
            ("members", Some(s)) if core && self.kind == ResourceKind::Group => {
                let col = match s {
                    "value" => "m.id".to_string(),
                    "type" => "m.kind".to_string(),
                    "display" => MEMBER_DISPLAY.to_string(),
                    _ => "NULL".to_string(),
                };
                format!(
                    "(SELECT {col} FROM group_members gm JOIN resources m ON m.seq = gm.member_seq \
                     WHERE gm.group_seq = r.seq ORDER BY gm.member_seq LIMIT 1)"
                )
            }
            ("groups", Some(s)) if core && self.kind == ResourceKind::User => {
                let col = match s {
                    "value" => "g.id".to_string(),
                    "display" => "json_extract(g.data, '$.displayName')".to_string(),
                    "type" => "'direct'".to_string(),
                    _ => "NULL".to_string(),
                };
                format!(
                    "(SELECT {col} FROM group_members gm JOIN resources g ON g.seq = gm.group_seq \
                     WHERE gm.member_seq = r.seq ORDER BY g.seq LIMIT 1)"
                )
            }
            _ if p.info.multi_valued => {
                let val = match sub {
                    Some(s) => {
                        format!("json_extract(e.value, {})", self.bind(SqlValue::Text(json_path(None, s, None))))
                    }
                    None => "e.value".into(),
                };
                let ph = self.bind(SqlValue::Text(json_path(p.urn.as_deref(), name, None)));
                let each = format!("json_each(r.data, {ph}) e");
                format!(
                    "(SELECT {val} FROM {each} ORDER BY (json_extract(e.value, '$.primary') IS 1) DESC, e.key LIMIT 1)"
                )
            }
            // `column` knows the other common attributes and the JSON paths.
            _ => self.column(p, Scope::Row).unwrap_or_else(|| "NULL".into()),
        };
        match p.info.ty {
            AttrType::DateTime => format!("julianday({raw})"),
            AttrType::String | AttrType::Reference | AttrType::Binary => fold(format!("nullif({raw}, '')")),
            _ => raw,
        }
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;
    use serde_json::Number;

    use super::*;
    use crate::model::query::AttrInfo;

    const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        crate::store::sqlite::migrations::apply(&mut c).unwrap();
        register_functions(&c).unwrap();
        c
    }

    fn path(urn: Option<&str>, name: &str, sub: Option<&str>, ty: AttrType, multi_valued: bool) -> AttrPath {
        AttrPath {
            urn: urn.map(str::to_string),
            name: name.into(),
            sub: sub.map(str::to_string),
            info: AttrInfo { resolved: true, ty, case_exact: false, multi_valued },
        }
    }

    fn run(conn: &Connection, kind: ResourceKind, f: &Filter) -> Result<usize, String> {
        let sql = translate(kind, f).map_err(|e| e.to_string())?;
        let text = format!("SELECT r.id FROM resources r WHERE {}", sql.text);
        let mut st = conn.prepare(&text).map_err(|e| format!("{text}: {e}"))?;
        let rows = st
            .query_map(rusqlite::params_from_iter(sql.params.iter()), |r| r.get::<_, String>(0))
            .map_err(|e| format!("{text}: {e}"))?;
        Ok(rows.count())
    }

    /// Issue #13: comparisons whose literal does not fit the attribute (or whose operator
    /// cannot apply) become a constant after their column's JSON path was bound; the bound
    /// value must go with the text that dropped it. Every scope a path can be read in, every
    /// operator and every kind of literal, against every attribute type: SQLite accepts the
    /// statement with exactly the parameters it names.
    #[test]
    fn parameters_always_match_the_text() {
        let conn = db();
        let ops = [
            CompareOp::Eq,
            CompareOp::Ne,
            CompareOp::Co,
            CompareOp::Sw,
            CompareOp::Ew,
            CompareOp::Gt,
            CompareOp::Ge,
            CompareOp::Lt,
            CompareOp::Le,
        ];
        let literals = [
            Literal::Null,
            Literal::Bool(true),
            Literal::Bool(false),
            Literal::Number(Number::from(-1)),
            Literal::Number(Number::from_f64(-1.5e10).unwrap()),
            Literal::String(String::new()),
            Literal::String("%%%%%".into()),
            Literal::String("True".into()),
            Literal::String("2026-01-02T03:04:05Z".into()),
        ];
        let types = [
            AttrType::String,
            AttrType::Boolean,
            AttrType::Decimal,
            AttrType::Integer,
            AttrType::DateTime,
            AttrType::Binary,
            AttrType::Reference,
        ];
        let mut checked = 0;
        for ty in types {
            let user_paths = [
                path(None, "active", None, ty, false),
                path(None, "userName", None, ty, false),
                path(None, "displayName", None, ty, false),
                path(None, "externalId", None, ty, false),
                path(None, "name", Some("givenName"), ty, false),
                path(None, "emails", Some("value"), ty, true),
                path(None, "emails", Some("type"), ty, true),
                path(None, "groups", Some("display"), ty, true),
                path(None, "meta", Some("lastModified"), ty, false),
                path(None, "schemas", None, ty, true),
                path(Some(ENTERPRISE), "department", None, ty, false),
                path(Some(ENTERPRISE), "manager", Some("value"), ty, false),
            ];
            let group_paths = [
                path(None, "displayName", None, ty, false),
                path(None, "members", Some("value"), ty, true),
                path(None, "members", Some("display"), ty, true),
            ];
            for op in ops {
                for lit in &literals {
                    let cases = user_paths
                        .iter()
                        .map(|p| (ResourceKind::User, p.clone(), "emails"))
                        .chain(group_paths.iter().map(|p| (ResourceKind::Group, p.clone(), "members")));
                    for (kind, p, multi) in cases {
                        let cmp = Filter::Compare(p.clone(), op, lit.clone());
                        let element = Filter::Compare(path(None, "value", None, ty, false), op, lit.clone());
                        let in_vp = Filter::ValuePath(
                            path(None, multi, None, AttrType::Complex, true),
                            Box::new(Filter::And(Box::new(element.clone()), Box::new(Filter::Not(Box::new(element))))),
                        );
                        let issue_shape = Filter::And(
                            Box::new(Filter::Not(Box::new(cmp.clone()))),
                            Box::new(Filter::Or(Box::new(in_vp), Box::new(cmp))),
                        );
                        run(&conn, kind, &issue_shape).unwrap_or_else(|e| panic!("{issue_shape:?}: {e}"));
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 1000, "{checked}");
    }

    /// `emails[type eq "work" and value eq "x"]`, the form Entra's
    /// `emails[type eq "work"].value eq "x"` is read as, is served from the email index.
    #[test]
    fn value_path_with_an_address_uses_the_email_index() {
        let conn = db();
        let elem = |name: &str, v: &str| {
            Filter::Compare(path(None, name, None, AttrType::String, false), CompareOp::Eq, Literal::String(v.into()))
        };
        let f = Filter::ValuePath(
            path(None, "emails", None, AttrType::Complex, true),
            Box::new(Filter::And(Box::new(elem("type", "work")), Box::new(elem("value", "A@b.example")))),
        );
        let sql = translate(ResourceKind::User, &f).unwrap();
        assert!(sql.params.contains(&SqlValue::Text("a@b.example".into())), "{:?}", sql.params);
        let text = format!("EXPLAIN QUERY PLAN SELECT r.id FROM resources r WHERE r.kind = 'User' AND {}", sql.text);
        let mut st = conn.prepare(&text).unwrap();
        let plan: Vec<String> = st
            .query_map(rusqlite::params_from_iter(sql.params.iter()), |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(plan.iter().any(|l| l.contains("resource_emails_value")), "{plan:#?}");
        // Without an address to look up there is nothing for the index to answer.
        let f = Filter::ValuePath(path(None, "emails", None, AttrType::Complex, true), Box::new(elem("type", "work")));
        assert!(!translate(ResourceKind::User, &f).unwrap().text.contains("resource_emails"));
    }

    #[test]
    fn unicode_case_folds_like_the_indexed_columns() {
        let conn = db();
        conn.execute(
            "INSERT INTO resources (id, kind, user_name_ci, version, created, last_modified, data) \
             VALUES ('u1', 'User', 'élodie', 1, 'x', 'x', '{\"name\": {\"givenName\": \"ÉLODIE\"}}')",
            [],
        )
        .unwrap();
        for (name, sub) in [("userName", None), ("name", Some("givenName"))] {
            let f = Filter::Compare(
                path(None, name, sub, AttrType::String, false),
                CompareOp::Eq,
                Literal::String("Élodie".into()),
            );
            assert_eq!(run(&conn, ResourceKind::User, &f), Ok(1), "{name}");
        }
    }

    /// Stored times have millisecond precision; a literal with a finer fraction falls
    /// between two of them (found by the differential test: `ne` missed a resource).
    #[test]
    fn datetime_literals_finer_than_a_millisecond() {
        let conn = db();
        conn.execute(
            "INSERT INTO resources (id, kind, version, created, last_modified, data) \
             VALUES ('u1', 'User', 1, '2026-01-02T03:04:05.308Z', '2026-01-02T03:04:05.308Z', '{}')",
            [],
        )
        .unwrap();
        let at = |op, t: &str| {
            let f = Filter::Compare(
                path(None, "meta", Some("lastModified"), AttrType::DateTime, false),
                op,
                Literal::String(t.into()),
            );
            run(&conn, ResourceKind::User, &f).unwrap()
        };
        use CompareOp::*;
        for (t, want) in [
            // eq ne gt ge lt le
            ("2026-01-02T03:04:05.308Z", [1, 0, 0, 1, 0, 1]),
            ("2026-01-02T04:04:05.308+01:00", [1, 0, 0, 1, 0, 1]),
            ("2026-01-02T03:04:05.308001Z", [0, 1, 0, 0, 1, 1]),
            ("2026-01-02T03:04:05.307999Z", [0, 1, 1, 1, 0, 0]),
        ] {
            let got = [Eq, Ne, Gt, Ge, Lt, Le].map(|op| at(op, t));
            assert_eq!(got, want, "{t}");
        }
    }

    #[test]
    fn markers_become_plain_placeholders_in_text_order() {
        let mut t = Translator { kind: ResourceKind::User, params: Vec::new() };
        let a = t.bind(SqlValue::Integer(1));
        let b = t.bind(SqlValue::Integer(2));
        let _dropped = t.bind(SqlValue::Integer(3));
        let sql = t.finish(&format!("{b} AND {a} OR {b} AND '?' = ?x"));
        assert_eq!(sql.text, "? AND ? OR ? AND '?' = ?x");
        assert_eq!(sql.params, vec![SqlValue::Integer(2), SqlValue::Integer(1), SqlValue::Integer(2)]);
    }
}
