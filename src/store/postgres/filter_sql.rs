//! The PostgreSQL dialect of the filter translation: a resolved `model::query::Filter` to a
//! SQL condition with bound parameters (never string-formatted values), meaning exactly what
//! `store::filter_sql` makes it mean on SQLite — the differential test in `tests.rs` holds
//! the two together.
//!
//! Indexed attributes use the same columns and side tables (`user_name_ci`,
//! `display_name_ci`, `external_id`, `resource_emails`, `group_members`); any other attribute
//! is read from the JSONB document (`data #> path`), through the functions of migration
//! 0002, which give a JSON value SQLite's `json_extract` semantics (types, `null`, folding,
//! code-point order). Text is compared `COLLATE "C"` whatever the database's collation.
//!
//! The text holds `?` placeholders; [`number`] turns them into `$1, $2, ...` once the whole
//! statement is assembled. Generated SQL uses no `?` operator (jsonb's key test) and no
//! string literal with a `?` in it.

use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use crate::model::query::{AttrPath, AttrType, CompareOp, Filter, Literal};
use crate::model::{ResourceKind, normalize_time};
use crate::store::StoreError;

/// A bound value. Numbers travel as text and are cast in SQL (`::numeric`), so no decimal
/// crate is needed and nothing is rounded on the way.
#[derive(Debug, Clone, PartialEq)]
pub enum PgValue {
    Text(String),
    /// A JSON path: the keys from the document's root.
    Path(Vec<String>),
    Int(i64),
}

impl ToSql for PgValue {
    fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            PgValue::Text(s) => s.to_sql(ty, out),
            PgValue::Path(p) => p.to_sql(ty, out),
            PgValue::Int(i) => i.to_sql(ty, out),
        }
    }
    fn accepts(ty: &Type) -> bool {
        <String as ToSql>::accepts(ty) || <Vec<String> as ToSql>::accepts(ty) || <i64 as ToSql>::accepts(ty)
    }
    to_sql_checked!();
}

pub struct Sql {
    pub text: String,
    pub params: Vec<PgValue>,
}

/// Number the `?` placeholders of an assembled statement `$1, $2, ...` in text order.
pub fn number(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut n = 0;
    for c in text.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

#[derive(Clone, Copy)]
enum Scope {
    Row,
    Element,
    Member,
    GroupOf,
}

/// What a comparison reads: a JSON value (with `json_extract`'s semantics through the
/// migration's functions) or an SQL text expression. `affinity`: a plain column, to which
/// SQLite converts a compared number to text (an expression gets no such conversion, and a
/// number is then never equal to it and orders before it).
enum Operand {
    Json(String),
    Text { expr: String, affinity: bool },
}

pub fn translate(kind: ResourceKind, f: &Filter) -> Result<Sql, StoreError> {
    let mut t = Translator { kind, params: Vec::new() };
    let text = t.filter(f, Scope::Row)?;
    Ok(t.finish(&text))
}

struct Translator {
    kind: ResourceKind,
    params: Vec<PgValue>,
}

fn json_path(urn: Option<&str>, name: &str, sub: Option<&str>) -> Vec<String> {
    [urn, Some(name), sub].into_iter().flatten().map(str::to_string).collect()
}

/// JSON null is no value, as for `json_extract`.
fn extract(doc: &str, ph: &str) -> String {
    format!("nullif({doc} #> {ph}, 'null'::jsonb)")
}

const MEMBER_DISPLAY: &str = "coalesce(to_jsonb(gm.display), nullif(m.data -> 'displayName', 'null'::jsonb), \
                              nullif(m.data -> 'userName', 'null'::jsonb))";

impl Translator {
    /// Binds `v` and returns its marker (see `store::filter_sql::Translator`: markers are
    /// resolved by [`Translator::finish`], so a dropped fragment binds nothing).
    fn bind(&mut self, v: PgValue) -> String {
        let cast = match v {
            PgValue::Text(_) => "text",
            PgValue::Path(_) => "text[]",
            PgValue::Int(_) => "bigint",
        };
        self.params.push(v);
        format!("(?{}::{cast})", self.params.len())
    }

    fn finish(self, text: &str) -> Sql {
        let (text, params) = crate::store::sql_markers::resolve(text, &self.params);
        Sql { text, params }
    }

    fn filter(&mut self, f: &Filter, scope: Scope) -> Result<String, StoreError> {
        Ok(match f {
            Filter::And(a, b) => format!("({} AND {})", self.filter(a, scope)?, self.filter(b, scope)?),
            Filter::Or(a, b) => format!("({} OR {})", self.filter(a, scope)?, self.filter(b, scope)?),
            Filter::Not(a) => format!("NOT coalesce(({}), false)", self.filter(a, scope)?),
            Filter::Present(p) => self.present(p, scope),
            Filter::Compare(p, op, lit) => self.compare(p, *op, lit, scope)?,
            Filter::ValuePath(p, inner) => self.value_path(p, inner, scope)?,
        })
    }

    fn value_path(&mut self, p: &AttrPath, inner: &Filter, scope: Scope) -> Result<String, StoreError> {
        if !matches!(scope, Scope::Row) {
            return Ok("false".into());
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
        let ph = self.bind(PgValue::Path(json_path(p.urn.as_deref(), name, None)));
        let cond = self.filter(inner, Scope::Element)?;
        let elements = if p.info.multi_valued {
            format!("scimsync_each(r.data #> {ph})")
        } else {
            format!("(SELECT 0::bigint AS key, r.data #> {ph} AS value)")
        };
        let each = format!(
            "EXISTS (SELECT 1 FROM {elements} e WHERE jsonb_typeof(e.value) = 'object' AND coalesce(({cond}), false))"
        );
        if p.urn.is_none()
            && self.kind == ResourceKind::User
            && name == "emails"
            && let Some(address) = conjunct_value_eq(inner)
        {
            let ph = self.bind(PgValue::Text(crate::model::fold_case(address)));
            return Ok(format!(
                "(r.seq IN (SELECT resource_seq FROM resource_emails WHERE value_ci = {ph}) AND {each})"
            ));
        }
        Ok(each)
    }

    /// What a single-valued attribute reads in `scope`; `None` for one inside a multi-valued
    /// JSON array.
    fn column(&mut self, p: &AttrPath, scope: Scope) -> Option<Operand> {
        let name = p.name.as_str();
        let sub = p.sub.as_deref();
        let col = |e: &str| Operand::Text { expr: e.into(), affinity: true };
        match scope {
            Scope::Member => Some(match name {
                "value" => col("m.id"),
                "type" => col("m.kind"),
                "display" => Operand::Json(MEMBER_DISPLAY.into()),
                _ => Operand::Json("NULL::jsonb".into()),
            }),
            Scope::GroupOf => Some(match name {
                "value" => col("g.id"),
                "display" => Operand::Json("nullif(g.data -> 'displayName', 'null'::jsonb)".into()),
                "type" => Operand::Text { expr: "'direct'::text".into(), affinity: false },
                _ => Operand::Json("NULL::jsonb".into()),
            }),
            Scope::Element => {
                let ph = self.bind(PgValue::Path(json_path(None, name, sub)));
                Some(Operand::Json(extract("e.value", &ph)))
            }
            Scope::Row => {
                if p.urn.is_none() {
                    match (name, sub) {
                        ("id", None) => return Some(col("r.id")),
                        ("externalId", None) => return Some(col("r.external_id")),
                        ("meta", Some("created")) => return Some(col("r.created")),
                        ("meta", Some("lastModified")) => return Some(col("r.last_modified")),
                        ("meta", Some("resourceType")) => return Some(col("r.kind")),
                        ("meta", Some("version")) => {
                            return Some(Operand::Text {
                                expr: "('W/\"' || r.version || '\"')".into(),
                                affinity: false,
                            });
                        }
                        ("meta", Some(_)) => return Some(Operand::Json("NULL::jsonb".into())),
                        _ => {}
                    }
                }
                if p.info.multi_valued {
                    return None;
                }
                let ph = self.bind(PgValue::Path(json_path(p.urn.as_deref(), name, sub)));
                Some(Operand::Json(extract("r.data", &ph)))
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
                return "true".into();
            }
        }
        match self.column(p, scope) {
            Some(op) => non_empty(&op),
            None => {
                let (each, val) = self.each(p);
                format!("EXISTS (SELECT 1 FROM {each} WHERE {})", non_empty(&val))
            }
        }
    }

    /// The elements of a multi-valued attribute and the value each contributes.
    fn each(&mut self, p: &AttrPath) -> (String, Operand) {
        let ph = self.bind(PgValue::Path(json_path(p.urn.as_deref(), &p.name, None)));
        let each = format!("scimsync_each(r.data #> {ph}) e");
        let val = match &p.sub {
            Some(s) => {
                let ph = self.bind(PgValue::Path(json_path(None, s, None)));
                Operand::Json(format!(
                    "(CASE WHEN jsonb_typeof(e.value) = 'object' THEN {} END)",
                    extract("e.value", &ph)
                ))
            }
            None => Operand::Json("nullif(e.value, 'null'::jsonb)".into()),
        };
        (each, val)
    }

    fn compare(&mut self, p: &AttrPath, op: CompareOp, lit: &Literal, scope: Scope) -> Result<String, StoreError> {
        if let Literal::Null = lit {
            let present = self.present(p, scope);
            return Ok(match op {
                CompareOp::Eq => format!("(NOT {present})"),
                CompareOp::Ne => present,
                _ => "false".into(),
            });
        }
        let row = matches!(scope, Scope::Row) && p.urn.is_none();
        if row {
            let col = |e: &str| Operand::Text { expr: e.into(), affinity: true };
            if self.kind == ResourceKind::User && p.name == "userName" && p.sub.is_none() {
                return Ok(self.cmp_folded(&col("r.user_name_ci"), op, lit, p.info.ty));
            }
            if p.name == "displayName" && p.sub.is_none() {
                return Ok(self.cmp_folded(&col("r.display_name_ci"), op, lit, p.info.ty));
            }
            if self.kind == ResourceKind::User
                && p.name == "emails"
                && p.sub.as_deref() == Some("value")
                && op == CompareOp::Eq
                && let Literal::String(s) = lit
            {
                let ph = self.bind(PgValue::Text(s.to_lowercase()));
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

    fn schemas(&mut self, op: CompareOp, lit: &Literal) -> String {
        let core = match self.kind {
            ResourceKind::User => "urn:ietf:params:scim:schemas:core:2.0:User",
            ResourceKind::Group => "urn:ietf:params:scim:schemas:core:2.0:Group",
        };
        let ph = self.bind(PgValue::Text(core.into()));
        let c = self.cmp(&Operand::Text { expr: "s.v".into(), affinity: false }, op, lit, AttrType::String, false);
        format!(
            "EXISTS (SELECT 1 FROM (SELECT {ph} AS v UNION ALL SELECT x.key FROM jsonb_each(r.data) x \
             WHERE x.key LIKE 'urn:%' AND jsonb_typeof(x.value) = 'object') s WHERE {c})"
        )
    }

    fn cmp_folded(&mut self, col: &Operand, op: CompareOp, lit: &Literal, ty: AttrType) -> String {
        match lit {
            Literal::String(s) => self.cmp(col, op, &Literal::String(s.to_lowercase()), ty, true),
            other => self.cmp(col, op, other, ty, true),
        }
    }

    /// `operand op literal` as the SQLite translation has it (RFC 7644 §3.4.2.2, with
    /// SQLite's value semantics; see the module doc).
    fn cmp(&mut self, col: &Operand, op: CompareOp, lit: &Literal, ty: AttrType, case_exact: bool) -> String {
        let value = match (lit, ty) {
            (Literal::Null, _) => {
                let present = match col {
                    Operand::Json(e) => format!("({e} IS NOT NULL)"),
                    Operand::Text { expr, .. } => format!("({expr} IS NOT NULL)"),
                };
                return match op {
                    CompareOp::Eq => format!("(NOT {present})"),
                    CompareOp::Ne => present,
                    _ => "false".into(),
                };
            }
            (Literal::Bool(b), _) => V2::Num(if *b { "1" } else { "0" }.into()),
            (Literal::String(s), AttrType::Boolean) => match s.to_ascii_lowercase().as_str() {
                "true" => V2::Num("1".into()),
                "false" => V2::Num("0".into()),
                _ => return "false".into(),
            },
            (Literal::String(s), AttrType::DateTime) => match instant_ms(s) {
                Some((floor, exact)) if !exact && !matches!(op, CompareOp::Co | CompareOp::Sw | CompareOp::Ew) => {
                    return match op {
                        CompareOp::Eq => "false".into(),
                        CompareOp::Ne => match col {
                            Operand::Json(e) => format!("({e} IS NOT NULL)"),
                            Operand::Text { expr, .. } => format!("({expr} IS NOT NULL)"),
                        },
                        CompareOp::Gt | CompareOp::Ge => self.relation(col, ">", &V2::Text(floor), false),
                        _ => self.relation(col, "<=", &V2::Text(floor), false),
                    };
                }
                Some((floor, _)) => V2::Text(floor),
                None => V2::Text(s.clone()),
            },
            (Literal::String(s), _) => V2::Text(if case_exact { s.clone() } else { s.to_lowercase() }),
            (Literal::Number(n), _) => V2::Num(match n.as_i64() {
                Some(i) => i.to_string(),
                None => n.as_f64().map(sqlite_real_text).unwrap_or_default(),
            }),
        };
        let fold = matches!(value, V2::Text(_)) && !case_exact && ty != AttrType::DateTime;
        match op {
            CompareOp::Eq | CompareOp::Ne | CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le => {
                let sym = match op {
                    CompareOp::Eq => "=",
                    CompareOp::Ne => "<>",
                    CompareOp::Gt => ">",
                    CompareOp::Ge => ">=",
                    CompareOp::Lt => "<",
                    _ => "<=",
                };
                if matches!(lit, Literal::Bool(_)) && sym != "=" && sym != "<>" {
                    return "false".into();
                }
                self.relation(col, sym, &value, fold)
            }
            CompareOp::Co | CompareOp::Sw | CompareOp::Ew => {
                let V2::Text(s) = value else { return "false".into() };
                let len = s.chars().count();
                let lhs = match col {
                    Operand::Json(e) => format!("scimsync_text({e})"),
                    Operand::Text { expr, .. } => expr.clone(),
                };
                let lhs = if fold { format!("scimsync_fold({lhs})") } else { lhs };
                match op {
                    CompareOp::Co => {
                        let ph = self.bind(PgValue::Text(s));
                        format!("(strpos({lhs}, {ph}) > 0)")
                    }
                    CompareOp::Sw => {
                        let ph = self.bind(PgValue::Text(s));
                        format!("(left({lhs}, {len}) = {ph})")
                    }
                    _ => {
                        if len == 0 {
                            return format!("({lhs} IS NOT NULL)");
                        }
                        let ph = self.bind(PgValue::Text(s));
                        format!("(right({lhs}, {len}) = {ph})")
                    }
                }
            }
        }
    }

    /// `operand sym value` with SQLite's rules for values of different types.
    fn relation(&mut self, col: &Operand, sym: &str, value: &V2, fold: bool) -> String {
        match (col, value) {
            (Operand::Json(e), V2::Text(t)) => {
                let ph = self.bind(PgValue::Text(t.clone()));
                format!("(scimsync_cmp_text({e}, {ph}, {fold}) {sym} 0)")
            }
            (Operand::Json(e), V2::Num(n)) => {
                let ph = self.bind(PgValue::Text(n.clone()));
                format!("(scimsync_cmp_num({e}, {ph}::numeric) {sym} 0)")
            }
            (Operand::Text { expr, .. }, V2::Text(t)) => {
                let lhs = if fold { format!("scimsync_fold({expr})") } else { expr.clone() };
                let ph = self.bind(PgValue::Text(t.clone()));
                format!("({lhs} COLLATE \"C\" {sym} {ph})")
            }
            // A number against a column: SQLite compares the number's text.
            (Operand::Text { expr, affinity: true }, V2::Num(n)) => {
                let ph = self.bind(PgValue::Text(n.clone()));
                format!("({expr} COLLATE \"C\" {sym} {ph})")
            }
            // A number against an expression: never equal, and before any text.
            (Operand::Text { expr, affinity: false }, V2::Num(_)) => {
                let holds = matches!(sym, "<>" | ">" | ">=");
                format!("(CASE WHEN {expr} IS NULL THEN NULL ELSE {holds} END)")
            }
        }
    }
}

/// A comparison's literal, as SQLite binds it: text, or a number (booleans are 1 and 0).
enum V2 {
    Text(String),
    Num(String),
}

/// SQLite's text for a REAL (`%!.15g`): what a real number becomes when SQLite compares it
/// with a text column.
fn sqlite_real_text(f: f64) -> String {
    if f.is_finite() && f == f.trunc() && f.abs() < 1e15 { format!("{f:.1}") } else { format!("{f}") }
}

fn non_empty(op: &Operand) -> String {
    match op {
        Operand::Json(e) => format!("scimsync_present({e})"),
        Operand::Text { expr, .. } => format!("(coalesce({expr}, '') NOT IN ('', '[]', '{{}}'))"),
    }
}

fn conjunct_value_eq(inner: &Filter) -> Option<&str> {
    match inner {
        Filter::And(a, b) => conjunct_value_eq(a).or_else(|| conjunct_value_eq(b)),
        Filter::Compare(p, CompareOp::Eq, Literal::String(s)) if p.name == "value" && p.sub.is_none() => Some(s),
        _ => None,
    }
}

fn instant_ms(s: &str) -> Option<(String, bool)> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some((normalize_time(s)?, t.nanosecond() % 1_000_000 == 0))
}

/// The key a list is ordered by for `sortBy` (RFC 7644 §3.4.2.3), as a JSONB value with the
/// meaning `store::filter_sql::sort_key` gives it on SQLite (no value is NULL; see
/// migration 0002 for how keys of different types order). The caller orders by its parts.
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
        let raw = match (name, sub) {
            ("userName", None) if core && self.kind == ResourceKind::User => return "to_jsonb(r.user_name_ci)".into(),
            ("displayName", None) if core && !p.info.case_exact => return "to_jsonb(r.display_name_ci)".into(),
            ("meta", Some("location")) if core => "to_jsonb(r.id)".into(),
            ("members", Some(s)) if core && self.kind == ResourceKind::Group => {
                let col = match s {
                    "value" => "to_jsonb(m.id)",
                    "type" => "to_jsonb(m.kind)",
                    "display" => MEMBER_DISPLAY,
                    _ => "NULL::jsonb",
                };
                format!(
                    "(SELECT {col} FROM group_members gm JOIN resources m ON m.seq = gm.member_seq \
                     WHERE gm.group_seq = r.seq ORDER BY gm.member_seq LIMIT 1)"
                )
            }
            ("groups", Some(s)) if core && self.kind == ResourceKind::User => {
                let col = match s {
                    "value" => "to_jsonb(g.id)",
                    "display" => "nullif(g.data -> 'displayName', 'null'::jsonb)",
                    "type" => "to_jsonb('direct'::text)",
                    _ => "NULL::jsonb",
                };
                format!(
                    "(SELECT {col} FROM group_members gm JOIN resources g ON g.seq = gm.group_seq \
                     WHERE gm.member_seq = r.seq ORDER BY g.seq LIMIT 1)"
                )
            }
            _ if p.info.multi_valued => {
                let val = match sub {
                    Some(s) => {
                        let ph = self.bind(PgValue::Path(json_path(None, s, None)));
                        extract("e.value", &ph)
                    }
                    None => "nullif(e.value, 'null'::jsonb)".into(),
                };
                let ph = self.bind(PgValue::Path(json_path(p.urn.as_deref(), name, None)));
                format!(
                    "(SELECT {val} FROM scimsync_each(r.data #> {ph}) e \
                     ORDER BY coalesce(scimsync_cmp_num(e.value -> 'primary', 1) = 0, false) DESC, e.key LIMIT 1)"
                )
            }
            _ => match self.column(p, Scope::Row) {
                Some(Operand::Json(e)) => e,
                Some(Operand::Text { expr, .. }) => format!("to_jsonb({expr})"),
                None => "NULL::jsonb".into(),
            },
        };
        match p.info.ty {
            AttrType::DateTime => format!("scimsync_instant({raw})"),
            AttrType::String | AttrType::Reference | AttrType::Binary => {
                format!("scimsync_sort_str({raw}, {})", !p.info.case_exact)
            }
            _ => raw,
        }
    }
}
