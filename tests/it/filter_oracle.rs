//! A pure, in-memory meaning of SCIM filters (RFC 7644 §3.4.2.2), written apart from the
//! daemon's code so that the differential test in `filter_diff.rs` can hold the SQL
//! translation against it. It has its own filter tree (with its own printer), its own table
//! of the attributes it generates (types and `caseExact` as RFC 7643 §4 defines them) and
//! its own type rules, which restate the ones `scim::schema::check_comparison` documents:
//!
//! - `null` compares only with `eq` (not present) and `ne` (present);
//! - string, reference and binary attributes take strings (binary: no `gt ge lt le`);
//! - booleans take `eq`/`ne` with `true`/`false` or the strings "true"/"false" in any case;
//! - dateTime attributes take RFC 3339 strings with `eq ne gt ge lt le`, compared as instants;
//! - anything else is refused (400 `invalidFilter`), as are unknown attributes,
//!   attributes that are never returned, and the references each response builds from the
//!   server's URL (`meta.location`, `members.$ref`, `groups.$ref`), and value filters on
//!   `meta` (`meta[...]`: the server's columns, not an object).
//!
//! Meaning: names match case-insensitively; a multi-valued attribute matches when any of
//! its values does; a comparison on an absent attribute is false (`eq null` aside); strings
//! that are not `caseExact` compare after Unicode lower-casing (`str::to_lowercase`), and
//! order by code point; `pr` is "present and not null, empty string, empty array or empty
//! object"; a complex attribute named without a sub-attribute in a comparison means its
//! `value`; `attr[f]` matches when one element satisfies `f`; Entra's `attr[f].sub op v`
//! means `attr[f and sub op v]`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const CORE_USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const CORE_GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Str,
    Bool,
    DateTime,
    Binary,
    Reference,
    Complex,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

pub const OPS: [Op; 9] = [Op::Eq, Op::Ne, Op::Co, Op::Sw, Op::Ew, Op::Gt, Op::Ge, Op::Lt, Op::Le];

impl Op {
    pub fn text(self) -> &'static str {
        match self {
            Op::Eq => "eq",
            Op::Ne => "ne",
            Op::Co => "co",
            Op::Sw => "sw",
            Op::Ew => "ew",
            Op::Gt => "gt",
            Op::Ge => "ge",
            Op::Lt => "lt",
            Op::Le => "le",
        }
    }
}

/// `compValue`: numbers keep their text (`-1.5e10`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Lit {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
}

/// An attribute path as written: `urn` is the prefix as typed (any case), `name` and
/// `sub` too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct P {
    pub urn: Option<String>,
    pub name: String,
    pub sub: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum F {
    And(Box<F>, Box<F>),
    Or(Box<F>, Box<F>),
    Not(Box<F>),
    Pr(P),
    Cmp(P, Op, Lit),
    /// `attr[inner]`, or with `Some(tail)` Entra's `attr[inner].sub op v` (the tail's
    /// path names the sub-attribute). `attr` may be URN-qualified.
    Vp(String, Box<F>, Option<Box<F>>),
}

/// How the filter is printed: keyword case and spacing vary, the meaning does not.
pub struct Style<'a> {
    pub pick: &'a mut dyn FnMut(u32) -> u32,
}

impl Style<'_> {
    fn kw(&mut self, k: &str) -> String {
        match (self.pick)(3) {
            0 => k.to_string(),
            1 => k.to_uppercase(),
            _ => k.chars().enumerate().map(|(i, c)| if i % 2 == 0 { c.to_ascii_uppercase() } else { c }).collect(),
        }
    }
    fn sp(&mut self) -> &'static str {
        match (self.pick)(8) {
            1 => "  ",
            2 => " \t",
            _ => " ",
        }
    }
}

pub fn lit_text(l: &Lit) -> String {
    match l {
        Lit::Null => "null".into(),
        Lit::Bool(b) => b.to_string(),
        Lit::Num(n) => n.clone(),
        Lit::Str(s) => serde_json::to_string(s).unwrap(),
    }
}

fn path_text(p: &P) -> String {
    let mut s = String::new();
    if let Some(u) = &p.urn {
        s.push_str(u);
        s.push(':');
    }
    s.push_str(&p.name);
    if let Some(sub) = &p.sub {
        s.push('.');
        s.push_str(sub);
    }
    s
}

/// Filter text; `and` binds tighter than `or`, so children are parenthesised as needed.
pub fn print(f: &F, st: &mut Style) -> String {
    fn atom(f: &F, st: &mut Style, parent_and: bool) -> String {
        let inner = print(f, st);
        match f {
            F::Or(..) => format!("({inner})"),
            F::And(..) if !parent_and => format!("({inner})"),
            _ => inner,
        }
    }
    match f {
        F::And(a, b) => {
            let (l, r) = (atom(a, st, true), atom(b, st, true));
            let (s1, k, s2) = (st.sp(), st.kw("and"), st.sp());
            format!("{l}{s1}{k}{s2}{r}")
        }
        F::Or(a, b) => {
            let l = print(a, st);
            let r = match **b {
                F::Or(..) => format!("({})", print(b, st)),
                _ => print(b, st),
            };
            let (s1, k, s2) = (st.sp(), st.kw("or"), st.sp());
            format!("{l}{s1}{k}{s2}{r}")
        }
        F::Not(a) => {
            let k = st.kw("not");
            let sp = if (st.pick)(2) == 0 { "" } else { " " };
            format!("{k}{sp}({})", print(a, st))
        }
        F::Pr(p) => {
            let (s, k) = (st.sp(), st.kw("pr"));
            format!("{}{s}{k}", path_text(p))
        }
        F::Cmp(p, op, l) => {
            let (s1, k, s2) = (st.sp(), st.kw(op.text()), st.sp());
            format!("{}{s1}{k}{s2}{}", path_text(p), lit_text(l))
        }
        F::Vp(attr, inner, tail) => {
            let mut s = format!("{attr}[{}]", print(inner, st));
            if let Some(t) = tail {
                s.push('.');
                s.push_str(&print(t, st));
            }
            s
        }
    }
}

/// What the oracle knows of an attribute (RFC 7643 §4 and §3.1).
#[derive(Debug, Clone, Copy)]
pub struct Def {
    pub ty: Ty,
    pub case_exact: bool,
    pub multi: bool,
    /// Sub-attributes of a complex attribute: (name, type, caseExact).
    pub subs: &'static [(&'static str, Ty, bool)],
}

const S: Ty = Ty::Str;
const MV_COMMON: &[(&str, Ty, bool)] =
    &[("value", S, false), ("display", S, false), ("type", S, false), ("primary", Ty::Bool, false)];
const NAME_SUBS: &[(&str, Ty, bool)] = &[
    ("formatted", S, false),
    ("familyName", S, false),
    ("givenName", S, false),
    ("middleName", S, false),
    ("honorificPrefix", S, false),
    ("honorificSuffix", S, false),
];
const X509_SUBS: &[(&str, Ty, bool)] =
    &[("value", Ty::Binary, true), ("display", S, false), ("type", S, false), ("primary", Ty::Bool, false)];
const GROUPS_SUBS: &[(&str, Ty, bool)] =
    &[("value", S, true), ("$ref", Ty::Reference, true), ("display", S, false), ("type", S, false)];
const MEMBERS_SUBS: &[(&str, Ty, bool)] =
    &[("value", S, true), ("$ref", Ty::Reference, true), ("type", S, false), ("display", S, false)];
const MANAGER_SUBS: &[(&str, Ty, bool)] =
    &[("value", S, true), ("$ref", Ty::Reference, true), ("displayName", S, false)];
const META_SUBS: &[(&str, Ty, bool)] = &[
    ("resourceType", S, true),
    ("created", Ty::DateTime, false),
    ("lastModified", Ty::DateTime, false),
    ("location", Ty::Reference, true),
    ("version", S, true),
];

const fn simple(ty: Ty, case_exact: bool) -> Def {
    Def { ty, case_exact, multi: false, subs: &[] }
}
const fn complex(multi: bool, subs: &'static [(&'static str, Ty, bool)]) -> Def {
    Def { ty: Ty::Complex, case_exact: false, multi, subs }
}

/// The attributes of a resource type the oracle knows: (schema URN or "" for common ones,
/// name, definition).
pub fn attributes(user: bool) -> Vec<(&'static str, &'static str, Def)> {
    let mut v = vec![
        ("", "id", simple(S, true)),
        ("", "externalId", simple(S, true)),
        ("", "meta", complex(false, META_SUBS)),
        ("", "schemas", Def { ty: S, case_exact: false, multi: true, subs: &[] }),
    ];
    if user {
        v.extend([
            (CORE_USER, "userName", simple(S, false)),
            (CORE_USER, "name", complex(false, NAME_SUBS)),
            (CORE_USER, "displayName", simple(S, false)),
            (CORE_USER, "nickName", simple(S, false)),
            (CORE_USER, "profileUrl", simple(Ty::Reference, true)),
            (CORE_USER, "title", simple(S, false)),
            (CORE_USER, "userType", simple(S, false)),
            (CORE_USER, "locale", simple(S, false)),
            (CORE_USER, "active", simple(Ty::Bool, false)),
            (CORE_USER, "emails", complex(true, MV_COMMON)),
            (CORE_USER, "phoneNumbers", complex(true, MV_COMMON)),
            (CORE_USER, "roles", complex(true, MV_COMMON)),
            (CORE_USER, "x509Certificates", complex(true, X509_SUBS)),
            (CORE_USER, "groups", complex(true, GROUPS_SUBS)),
            (ENTERPRISE, "employeeNumber", simple(S, false)),
            (ENTERPRISE, "department", simple(S, false)),
            (ENTERPRISE, "costCenter", simple(S, false)),
            (ENTERPRISE, "manager", complex(false, MANAGER_SUBS)),
        ]);
    } else {
        v.extend([(CORE_GROUP, "displayName", simple(S, false)), (CORE_GROUP, "members", complex(true, MEMBERS_SUBS))]);
    }
    v
}

/// Why the oracle refuses a filter (the daemon must answer 400 `invalidFilter`).
#[derive(Debug, Clone, PartialEq)]
pub struct Reject(pub String);

/// A leaf the oracle resolved: where its values are and how they compare.
pub struct Leaf {
    /// JSON keys from the resource (or element) root.
    keys: Vec<String>,
    ty: Ty,
    case_exact: bool,
}

fn find_def(user: bool, urn: Option<&str>, name: &str) -> Option<(&'static str, Def)> {
    let core = if user { CORE_USER } else { CORE_GROUP };
    attributes(user).into_iter().find_map(|(schema, n, d)| {
        if !n.eq_ignore_ascii_case(name) {
            return None;
        }
        let ok = match urn {
            None => schema != ENTERPRISE,
            Some(u) if u.eq_ignore_ascii_case(core) => schema != ENTERPRISE,
            Some(u) => schema == ENTERPRISE && u.eq_ignore_ascii_case(ENTERPRISE),
        };
        ok.then_some((schema, d))
    })
}

fn find_sub(def: &Def, sub: &str) -> Option<(&'static str, Ty, bool)> {
    def.subs.iter().copied().find(|(n, _, _)| n.eq_ignore_ascii_case(sub))
}

/// Resolves a top-level path. `compare`: a comparison (a complex attribute then means its
/// `value`); else `pr`.
fn resolve(user: bool, p: &P, compare: bool) -> Result<Leaf, Reject> {
    let (schema, def) = find_def(user, p.urn.as_deref(), &p.name)
        .ok_or_else(|| Reject(format!("unknown attribute {}", path_text(p))))?;
    let mut keys = Vec::new();
    if schema == ENTERPRISE {
        keys.push(ENTERPRISE.to_string());
    }
    let canonical = attributes(user).into_iter().find(|(_, n, _)| n.eq_ignore_ascii_case(&p.name)).unwrap().1;
    keys.push(canonical.to_string());
    let computed = [("meta", "location"), ("members", "$ref"), ("groups", "$ref")];
    if let Some(sub) = &p.sub
        && computed.iter().any(|(t, l)| canonical == *t && sub.eq_ignore_ascii_case(l))
    {
        return Err(Reject("a reference built from the server's URL".into()));
    }
    match (&p.sub, def.ty) {
        (Some(sub), Ty::Complex) => {
            let (n, ty, ce) = find_sub(&def, sub).ok_or_else(|| Reject(format!("unknown sub-attribute {sub}")))?;
            keys.push(n.to_string());
            Ok(Leaf { keys, ty, case_exact: ce })
        }
        (Some(_), _) => Err(Reject(format!("{} is not complex", p.name))),
        (None, Ty::Complex) => match find_sub(&def, "value") {
            Some((n, ty, ce)) => {
                keys.push(n.to_string());
                Ok(Leaf { keys, ty, case_exact: ce })
            }
            None if !compare => Ok(Leaf { keys, ty: Ty::Complex, case_exact: false }),
            None => Err(Reject(format!("{} is complex", p.name))),
        },
        (None, ty) => Ok(Leaf { keys, ty, case_exact: def.case_exact }),
    }
}

/// The type rules of the module doc; returns the literal to compare with (string booleans
/// become booleans).
fn check(leaf: &Leaf, op: Op, lit: &Lit) -> Result<Lit, Reject> {
    let ordering = matches!(op, Op::Gt | Op::Ge | Op::Lt | Op::Le);
    let substring = matches!(op, Op::Co | Op::Sw | Op::Ew);
    let no = |why: &str| Err(Reject(why.to_string()));
    if *lit == Lit::Null {
        return if matches!(op, Op::Eq | Op::Ne) { Ok(Lit::Null) } else { no("null has no order") };
    }
    match leaf.ty {
        Ty::Str | Ty::Reference | Ty::Binary => {
            if leaf.ty == Ty::Binary && ordering {
                return no("binary has no order");
            }
            match lit {
                Lit::Str(_) => Ok(lit.clone()),
                _ => no("a string attribute takes a string"),
            }
        }
        Ty::Bool => {
            if ordering || substring {
                return no("booleans take eq and ne");
            }
            match lit {
                Lit::Bool(b) => Ok(Lit::Bool(*b)),
                Lit::Str(s) if s.eq_ignore_ascii_case("true") => Ok(Lit::Bool(true)),
                Lit::Str(s) if s.eq_ignore_ascii_case("false") => Ok(Lit::Bool(false)),
                _ => no("a boolean takes true or false"),
            }
        }
        Ty::DateTime => {
            if substring {
                return no("dateTime has no substrings");
            }
            match lit {
                Lit::Str(s) if instant(s).is_some() => Ok(lit.clone()),
                _ => no("a dateTime takes an RFC 3339 string"),
            }
        }
        Ty::Complex => no("complex"),
    }
}

fn instant(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

fn get_ci<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a Value> {
    m.get(k).or_else(|| m.iter().find(|(key, _)| key.eq_ignore_ascii_case(k)).map(|(_, v)| v))
}

/// Every value at `keys` under `root`, arrays flattened at each step.
fn values<'a>(root: &'a Value, keys: &[String]) -> Vec<&'a Value> {
    let mut cur = vec![root];
    for k in keys {
        let mut next = Vec::new();
        for v in cur {
            if let Some(x) = v.as_object().and_then(|o| get_ci(o, k)) {
                match x {
                    Value::Array(a) => next.extend(a.iter()),
                    other => next.push(other),
                }
            }
        }
        cur = next;
    }
    cur
}

fn present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

fn fold(s: &str, case_exact: bool) -> String {
    if case_exact { s.to_string() } else { s.to_lowercase() }
}

fn compare_one(v: &Value, leaf: &Leaf, op: Op, lit: &Lit) -> bool {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (leaf.ty, v, lit) {
        (Ty::Bool, Value::Bool(a), Lit::Bool(b)) => {
            return match op {
                Op::Eq => a == b,
                Op::Ne => a != b,
                _ => false,
            };
        }
        (Ty::DateTime, Value::String(a), Lit::Str(b)) => match (instant(a), instant(b)) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => None,
        },
        (Ty::Str | Ty::Reference | Ty::Binary, Value::String(a), Lit::Str(b)) => {
            let (a, b) = (fold(a, leaf.case_exact), fold(b, leaf.case_exact));
            match op {
                Op::Co => return a.contains(&b),
                Op::Sw => return a.starts_with(&b),
                Op::Ew => return a.ends_with(&b),
                _ => Some(a.cmp(&b)),
            }
        }
        _ => None,
    };
    let Some(ord) = ord else { return false };
    match op {
        Op::Eq => ord == Ordering::Equal,
        Op::Ne => ord != Ordering::Equal,
        Op::Gt => ord == Ordering::Greater,
        Op::Ge => ord != Ordering::Less,
        Op::Lt => ord == Ordering::Less,
        Op::Le => ord != Ordering::Greater,
        _ => false,
    }
}

fn compare(root: &Value, leaf: &Leaf, op: Op, lit: &Lit) -> bool {
    let vals = values(root, &leaf.keys);
    if *lit == Lit::Null {
        let any = vals.iter().any(|v| present(v));
        return if op == Op::Eq { !any } else { any };
    }
    vals.into_iter().any(|v| compare_one(v, leaf, op, lit))
}

/// A filter checked against the schema, ready to evaluate.
pub enum Checked {
    And(Box<Checked>, Box<Checked>),
    Or(Box<Checked>, Box<Checked>),
    Not(Box<Checked>),
    Pr(Leaf),
    Cmp(Leaf, Op, Lit),
    Vp(Vec<String>, Box<Checked>),
}

/// Checks `f` for a User (`user`) or Group list; `Err` when the daemon must refuse it.
pub fn check_filter(user: bool, f: &F) -> Result<Checked, Reject> {
    check_in(user, f, None)
}

/// `element`: inside `attr[...]`, the attribute's definition.
fn check_in(user: bool, f: &F, element: Option<&Def>) -> Result<Checked, Reject> {
    let leaf = |p: &P, compare: bool| -> Result<Leaf, Reject> {
        match element {
            None => {
                let leaf = resolve(user, p, compare)?;
                // Never-returned attributes and unknown ones are refused by `resolve`.
                Ok(leaf)
            }
            Some(def) => {
                if p.urn.is_some() || p.sub.is_some() {
                    return Err(Reject("sub-attribute paths inside [...]".into()));
                }
                let (n, ty, ce) =
                    find_sub(def, &p.name).ok_or_else(|| Reject(format!("unknown sub-attribute {}", p.name)))?;
                if n == "$ref" && (def.subs == GROUPS_SUBS || def.subs == MEMBERS_SUBS) {
                    return Err(Reject("a reference built from the server's URL".into()));
                }
                Ok(Leaf { keys: vec![n.to_string()], ty, case_exact: ce })
            }
        }
    };
    Ok(match f {
        F::And(a, b) => Checked::And(Box::new(check_in(user, a, element)?), Box::new(check_in(user, b, element)?)),
        F::Or(a, b) => Checked::Or(Box::new(check_in(user, a, element)?), Box::new(check_in(user, b, element)?)),
        F::Not(a) => Checked::Not(Box::new(check_in(user, a, element)?)),
        F::Pr(p) => Checked::Pr(leaf(p, false)?),
        F::Cmp(p, op, lit) => {
            let l = leaf(p, true)?;
            let lit = check(&l, *op, lit)?;
            Checked::Cmp(l, *op, lit)
        }
        F::Vp(attr, inner, tail) => {
            if element.is_some() {
                return Err(Reject("nested value filter".into()));
            }
            // `attr` may carry a schema URN: the name is after the last `:`.
            let (urn, name) = match attr.rsplit_once(':') {
                Some((u, n)) => (Some(u), n),
                None => (None, attr.as_str()),
            };
            let (schema, def) = find_def(user, urn, name).ok_or_else(|| Reject(format!("unknown attribute {attr}")))?;
            if def.ty != Ty::Complex {
                return Err(Reject(format!("{attr} is not complex")));
            }
            if def.subs == META_SUBS {
                return Err(Reject("meta takes no value filter".into()));
            }
            let mut keys = Vec::new();
            if schema == ENTERPRISE {
                keys.push(ENTERPRISE.to_string());
            }
            let canonical = attributes(user).into_iter().find(|(_, n, _)| n.eq_ignore_ascii_case(name)).unwrap().1;
            keys.push(canonical.to_string());
            let mut c = check_in(user, inner, Some(&def))?;
            if let Some(t) = tail {
                c = Checked::And(Box::new(c), Box::new(check_in(user, t, Some(&def))?));
            }
            Checked::Vp(keys, Box::new(c))
        }
    })
}

/// Whether `resource` (as the daemon returns it) satisfies the checked filter.
pub fn eval(c: &Checked, resource: &Value) -> bool {
    match c {
        Checked::And(a, b) => eval(a, resource) && eval(b, resource),
        Checked::Or(a, b) => eval(a, resource) || eval(b, resource),
        Checked::Not(a) => !eval(a, resource),
        Checked::Pr(l) => values(resource, &l.keys).into_iter().any(present),
        Checked::Cmp(l, op, lit) => compare(resource, l, *op, lit),
        Checked::Vp(keys, inner) => values(resource, keys).into_iter().any(|e| e.is_object() && eval(inner, e)),
    }
}
