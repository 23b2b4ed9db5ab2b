//! Resource representation (RFC 7643 §3, §4): turning an IdP's JSON into canonical
//! attributes (names in schema spelling, types coerced, read-only input dropped) and a
//! stored resource back into JSON, with `attributes`/`excludedAttributes` (RFC 7644 §3.4.2.5,
//! §3.9).

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::ScimError;
use super::schema::{self, AttributeDef, Mutability, Returned};
use crate::model::query::AttrType;
use crate::model::{MemberRef, Resource, ResourceKind};

/// A POST/PUT body, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub attrs: Map<String, Value>,
    /// Group members as sent (`None` when the body has no `members` key).
    pub members: Option<Vec<MemberRef>>,
}

/// Parse the body of a POST or PUT (RFC 7644 §3.3, §3.5.1). Read-only attributes (`id`,
/// `meta`, `groups`) are ignored, as §3.3 asks; extra schema URNs in `schemas` are tolerated.
pub fn parse_input(kind: ResourceKind, body: Value) -> Result<Parsed, ScimError> {
    let Value::Object(mut obj) = body else {
        return Err(ScimError::invalid_syntax("the request body must be a JSON object"));
    };
    // `members` may also come URN-qualified (`urn:...:core:2.0:Group:members`, RFC 7644 §3.10).
    let qualified = format!("{}:members", schema::core_urn(kind));
    let members = match take_key(&mut obj, "members").or_else(|| take_key(&mut obj, &qualified)) {
        Some(v) if kind == ResourceKind::Group => Some(parse_members(&v)?),
        _ => None,
    };
    let attrs = normalize(kind, obj)?;
    Ok(Parsed { attrs, members })
}

fn take_key(obj: &mut Map<String, Value>, name: &str) -> Option<Value> {
    let key = obj.keys().find(|k| k.eq_ignore_ascii_case(name))?.clone();
    obj.remove(&key)
}

/// Group members as the IdP lists them: `[{"value": id, "type"?: "User"|"Group", ...}]`.
/// `display` and `$ref` are ignored (we fill them in); `"$ref": null` is fine.
pub fn parse_members(v: &Value) -> Result<Vec<MemberRef>, ScimError> {
    let items: Vec<&Value> = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => vec![v],
        _ => return Err(ScimError::invalid_value("members must be a list of objects with a \"value\"")),
    };
    items
        .into_iter()
        .map(|m| {
            let obj = m.as_object().ok_or_else(|| ScimError::invalid_value("each member must be an object"))?;
            let get = |name: &str| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v);
            let id = match get("value") {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                _ => return Err(ScimError::invalid_value("members[].value must be the id of a user or group")),
            };
            let kind =
                match get("type") {
                    Some(Value::String(t)) => Some(ResourceKind::parse(t).ok_or_else(|| {
                        ScimError::invalid_value(format!("members[].type {t:?} is not User or Group"))
                    })?),
                    _ => None,
                };
            let display = match get("display") {
                Some(Value::String(d)) => Some(d.clone()),
                _ => None,
            };
            Ok(MemberRef { id, kind, display })
        })
        .collect()
}

/// Canonicalise and validate a resource's attributes: schema spelling for names, values
/// coerced to the schema's types (IdPs send `"True"` for booleans), unknown attributes and
/// read-only ones dropped, `password` hashed, required attributes checked.
pub fn normalize(kind: ResourceKind, input: Map<String, Value>) -> Result<Map<String, Value>, ScimError> {
    let mut out = Map::new();
    for (key, value) in input {
        if is_ignored_top(&key, kind) {
            continue;
        }
        if key.len() > 4 && starts_with_ci(&key, "urn:") {
            normalize_urn_key(kind, &key, value, &mut out)?;
            continue;
        }
        let Some((_, def)) = schema::find_attr(kind, None, &key) else { continue };
        if def.mutability == Mutability::ReadOnly {
            continue;
        }
        if let Some(v) = coerce(def, value, &def.name)? {
            out.insert(def.name.clone(), v);
        }
    }
    if let Some(pw) = out.get("password").and_then(Value::as_str)
        && !pw.starts_with(PASSWORD_HASH_PREFIX)
    {
        let hashed = hash_password(pw);
        out.insert("password".into(), Value::String(hashed));
    }
    check_required(kind, &out)?;
    Ok(out)
}

/// `s` starts with the ASCII `prefix`, ignoring ASCII case. Unlike `s[..n].eq_ignore_ascii_case`,
/// it cannot panic when byte `n` of a client's string falls inside a multi-byte character;
/// when it holds, `s[prefix.len()..]` is a valid slice.
fn starts_with_ci(s: &str, prefix: &str) -> bool {
    s.as_bytes().get(..prefix.len()).is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
}

fn is_ignored_top(key: &str, kind: ResourceKind) -> bool {
    ["schemas", "id", "meta"].iter().any(|k| key.eq_ignore_ascii_case(k))
        || (kind == ResourceKind::User && key.eq_ignore_ascii_case("groups"))
        || (kind == ResourceKind::Group && key.eq_ignore_ascii_case("members"))
}

/// An extension object (`"urn:...:enterprise:2.0:User": {...}`) or a URN-qualified attribute
/// (`"urn:...:enterprise:2.0:User:department": "x"`), folded into the extension object.
fn normalize_urn_key(
    kind: ResourceKind,
    key: &str,
    value: Value,
    out: &mut Map<String, Value>,
) -> Result<(), ScimError> {
    if let Some(ext) = schema::extension_urns(kind).iter().find(|u| u.eq_ignore_ascii_case(key)) {
        let Value::Object(obj) = value else {
            if value.is_null() {
                return Ok(());
            }
            return Err(ScimError::invalid_value(format!("{ext} must be an object")));
        };
        let mut ext_out = match out.remove(*ext) {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        for (k, v) in obj {
            let Some((_, def)) = schema::find_attr(kind, Some(ext), &k) else { continue };
            if def.mutability == Mutability::ReadOnly {
                continue;
            }
            if let Some(v) = coerce(def, v, &format!("{ext}:{}", def.name))? {
                ext_out.insert(def.name.clone(), v);
            }
        }
        if !ext_out.is_empty() {
            out.insert(ext.to_string(), Value::Object(ext_out));
        }
        return Ok(());
    }
    // `urn:...:User:attr` (a core URN prefix: the attribute is a core one).
    let Some((urn, attr)) = key.rsplit_once(':') else { return Ok(()) };
    if urn.eq_ignore_ascii_case(schema::core_urn(kind)) {
        // Qualified or not, what the top level ignores stays ignored (normalising is idempotent).
        if is_ignored_top(attr, kind) {
            return Ok(());
        }
        let mut one = Map::new();
        one.insert(attr.to_string(), value);
        for (k, v) in normalize_partial(kind, one)? {
            out.insert(k, v);
        }
        return Ok(());
    }
    if let Some(ext) = schema::extension_urns(kind).iter().find(|u| u.eq_ignore_ascii_case(urn)) {
        let mut one = Map::new();
        one.insert(attr.to_string(), value);
        let mut wrapper = Map::new();
        wrapper.insert(ext.to_string(), Value::Object(one));
        for (k, v) in wrapper {
            normalize_urn_key(kind, &k, v, out)?;
        }
    }
    Ok(())
}

fn normalize_partial(kind: ResourceKind, input: Map<String, Value>) -> Result<Map<String, Value>, ScimError> {
    let mut out = Map::new();
    for (key, value) in input {
        let Some((_, def)) = schema::find_attr(kind, None, &key) else { continue };
        if def.mutability == Mutability::ReadOnly {
            continue;
        }
        if let Some(v) = coerce(def, value, &def.name)? {
            out.insert(def.name.clone(), v);
        }
    }
    Ok(out)
}

fn check_required(kind: ResourceKind, attrs: &Map<String, Value>) -> Result<(), ScimError> {
    let (name, what) = match kind {
        ResourceKind::User => ("userName", "a user"),
        ResourceKind::Group => ("displayName", "a group"),
    };
    match attrs.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(()),
        _ => Err(ScimError::invalid_value(format!("{name} is required for {what} and must be a non-empty string"))),
    }
}

/// Coerce `value` to the attribute's definition. `Ok(None)` means "unassigned" (null or an
/// empty list), which RFC 7643 §2.5 treats as absent.
fn coerce(def: &AttributeDef, value: Value, path: &str) -> Result<Option<Value>, ScimError> {
    if value.is_null() {
        return Ok(None);
    }
    if def.multi_valued {
        let items = match value {
            Value::Array(a) => a,
            // One value where a list is expected: IdPs do this; take it as a list of one.
            other => vec![other],
        };
        let mut out = Vec::with_capacity(items.len());
        let mut seen_primary = false;
        for item in items {
            if let Some(mut v) = coerce_single(def, item, path)? {
                // RFC 7643 §2.4: at most one value may be primary; keep the first.
                if let Some(obj) = v.as_object_mut()
                    && obj.get("primary") == Some(&Value::Bool(true))
                {
                    if seen_primary {
                        obj.insert("primary".into(), Value::Bool(false));
                    }
                    seen_primary = true;
                }
                out.push(v);
            }
        }
        return Ok(if out.is_empty() { None } else { Some(Value::Array(out)) });
    }
    if let Value::Array(mut items) = value {
        // Microsoft Entra ID sends a single-valued reference as a list of one:
        // `"manager": [{"$ref": "...", "value": id}]` (the Entra tutorial's "Example 5").
        if def.ty == AttrType::Complex && items.len() == 1 && items[0].is_object() {
            return coerce_single(def, items.remove(0), path);
        }
        return Err(ScimError::invalid_value(format!("{path} is single-valued; a list was given")));
    }
    coerce_single(def, value, path)
}

fn coerce_single(def: &AttributeDef, value: Value, path: &str) -> Result<Option<Value>, ScimError> {
    if value.is_null() {
        return Ok(None);
    }
    if def.ty == AttrType::Complex {
        let obj = match value {
            Value::Object(o) => o,
            // Enterprise `manager` as a bare id string (seen from IdPs): `{"value": id}`.
            Value::String(s) if def.sub("value").is_some() => {
                let mut o = Map::new();
                o.insert("value".into(), Value::String(s));
                o
            }
            _ => return Err(ScimError::invalid_value(format!("{path} must be an object"))),
        };
        let mut out = Map::new();
        for (k, v) in obj {
            let Some(sub) = def.sub(&k) else { continue };
            if let Some(v) = coerce_single(sub, v, &format!("{path}.{}", sub.name))? {
                out.insert(sub.name.clone(), v);
            }
        }
        return Ok(if out.is_empty() { None } else { Some(Value::Object(out)) });
    }
    let bad = |what: &str| ScimError::invalid_value(format!("{path} must be {what}"));
    Ok(Some(match def.ty {
        AttrType::Boolean => match value {
            Value::Bool(b) => Value::Bool(b),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Value::Bool(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Value::Bool(false),
            _ => return Err(bad("a boolean")),
        },
        AttrType::Integer => match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => Value::Number(n),
            Value::String(s) => s.trim().parse::<i64>().map(Value::from).map_err(|_| bad("an integer"))?,
            _ => return Err(bad("an integer")),
        },
        AttrType::Decimal => match value {
            Value::Number(n) => Value::Number(n),
            Value::String(s) => s
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| bad("a number"))?,
            _ => return Err(bad("a number")),
        },
        AttrType::DateTime => match value {
            Value::String(s) if crate::model::normalize_time(&s).is_some() => Value::String(s),
            _ => return Err(bad("an RFC 3339 date-time")),
        },
        // Strings, references, binary: strings. Numbers and booleans are accepted as their
        // text (an HR system sending employeeNumber as 42 should not stop provisioning).
        _ => match value {
            Value::String(s) => Value::String(s),
            Value::Number(n) => Value::String(n.to_string()),
            Value::Bool(b) => Value::String(b.to_string()),
            _ => return Err(bad("a string")),
        },
    }))
}

const PASSWORD_HASH_PREFIX: &str = "sha256$";

/// Passwords are write-only (RFC 7643 §4.1.1) and never stored in clear: a salted SHA-256
/// is kept only to tell whether the IdP changed it.
fn hash_password(pw: &str) -> String {
    let mut salt = [0u8; 16];
    let _ = getrandom::fill(&mut salt);
    let mut h = Sha256::new();
    h.update(salt);
    h.update(pw.as_bytes());
    format!("{PASSWORD_HASH_PREFIX}{}${}", hex::encode(salt), hex::encode(h.finalize()))
}

/// Which attributes a response carries (RFC 7644 §3.4.2.5, §3.9).
#[derive(Debug, Clone, Default)]
pub struct Projection {
    pub attributes: Vec<String>,
    pub excluded: Vec<String>,
}

impl Projection {
    pub fn new(attributes: Vec<String>, excluded: Vec<String>) -> Self {
        Projection { attributes, excluded }
    }
    /// Whether a group's member list is wanted at all, so the store can skip loading it.
    pub fn wants(&self, attr: &str) -> bool {
        if !self.attributes.is_empty() {
            return self.attributes.iter().any(|a| first_segment(a).eq_ignore_ascii_case(attr));
        }
        !self.excluded.iter().any(|a| a.eq_ignore_ascii_case(attr))
    }
}

fn first_segment(path: &str) -> &str {
    let p = strip_core_urn(path);
    p.split(['.', '[']).next().unwrap_or(p)
}

fn strip_core_urn(path: &str) -> &str {
    for urn in [schema::USER, schema::GROUP] {
        if path.len() > urn.len() + 1 && starts_with_ci(path, urn) && path.as_bytes()[urn.len()] == b':' {
            return &path[urn.len() + 1..];
        }
    }
    path
}

/// Render a stored resource as SCIM JSON (RFC 7643 §3), then apply the projection.
pub fn render(res: Resource, base_url: &str, proj: &Projection) -> Value {
    let kind = res.kind;
    let mut m = Map::with_capacity(res.attrs.len() + 4);
    let mut schemas = vec![Value::String(schema::core_urn(kind).to_string())];
    for ext in schema::extension_urns(kind) {
        if res.attrs.contains_key(*ext) {
            schemas.push(Value::String(ext.to_string()));
        }
    }
    m.insert("schemas".into(), Value::Array(schemas));
    let location = format!("{base_url}/{}/{}", kind.segment(), res.id);
    m.insert("id".into(), Value::String(res.id));
    // Moved, not copied: a list page renders a hundred of these.
    let mut attrs = res.attrs;
    if let Some(x) = attrs.shift_remove("externalId") {
        m.insert("externalId".into(), x);
    }
    for (k, v) in attrs {
        if is_never_returned(kind, &k) {
            continue;
        }
        m.insert(k, v);
    }
    if let Some(members) = &res.members {
        let list: Vec<Value> = members
            .iter()
            .map(|mm| {
                let mut o = Map::new();
                o.insert("value".into(), json!(mm.id));
                o.insert("$ref".into(), json!(format!("{base_url}/{}/{}", mm.kind.segment(), mm.id)));
                o.insert("type".into(), json!(mm.kind.as_str()));
                if let Some(d) = &mm.display {
                    o.insert("display".into(), json!(d));
                }
                Value::Object(o)
            })
            .collect();
        if !list.is_empty() {
            m.insert("members".into(), Value::Array(list));
        }
    }
    if let Some(groups) = &res.groups {
        let list: Vec<Value> = groups
            .iter()
            .map(|g| {
                let mut o = Map::new();
                o.insert("value".into(), json!(g.id));
                o.insert("$ref".into(), json!(format!("{base_url}/Groups/{}", g.id)));
                if let Some(d) = &g.display {
                    o.insert("display".into(), json!(d));
                }
                o.insert("type".into(), json!("direct"));
                Value::Object(o)
            })
            .collect();
        if !list.is_empty() {
            m.insert("groups".into(), Value::Array(list));
        }
    }
    m.insert(
        "meta".into(),
        json!({
            "resourceType": kind.as_str(),
            "created": res.meta.created,
            "lastModified": res.meta.last_modified,
            "location": location,
            "version": etag(res.meta.version),
        }),
    );
    project(kind, m, proj)
}

fn is_never_returned(kind: ResourceKind, key: &str) -> bool {
    schema::find_attr(kind, None, key).is_some_and(|(_, d)| d.returned == Returned::Never)
}

/// The weak entity tag of a version (RFC 7644 §3.14).
pub fn etag(version: u64) -> String {
    format!("W/\"{version}\"")
}

/// The version in an `If-Match`/`If-None-Match` value (`W/"3"` or `"3"`); `None` for `*`
/// or anything else.
pub fn parse_etag(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s.strip_prefix("W/").unwrap_or(s);
    s.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
}

/// Keep `id` and `schemas` always (returned "always"); with `attributes`, only those named;
/// otherwise everything but `excludedAttributes`.
fn project(kind: ResourceKind, m: Map<String, Value>, proj: &Projection) -> Value {
    if proj.attributes.is_empty() && proj.excluded.is_empty() {
        return Value::Object(m);
    }
    let always = |k: &str| k == "id" || k == "schemas";
    if !proj.attributes.is_empty() {
        let mut out = Map::new();
        for (k, v) in m {
            if always(&k) {
                out.insert(k, v);
                continue;
            }
            let mut keep_whole = false;
            let mut subs: Vec<String> = Vec::new();
            for a in &proj.attributes {
                let (top, sub) = split_attr(kind, a);
                if top.eq_ignore_ascii_case(&k) {
                    match sub {
                        None => keep_whole = true,
                        Some(s) => subs.push(s),
                    }
                }
            }
            if keep_whole {
                out.insert(k, v);
            } else if !subs.is_empty()
                && let Some(v) = select_subs(v, &subs)
            {
                out.insert(k, v);
            }
        }
        return Value::Object(out);
    }
    let mut out = m;
    for a in &proj.excluded {
        let (top, sub) = split_attr(kind, a);
        if always(&top) {
            continue;
        }
        let Some(key) = out.keys().find(|k| k.eq_ignore_ascii_case(&top)).cloned() else { continue };
        match sub {
            None => {
                out.remove(&key);
            }
            Some(s) => {
                if let Some(v) = out.get_mut(&key) {
                    remove_sub(v, &s);
                }
            }
        }
    }
    Value::Object(out)
}

/// Split `name.sub`, `urn:...:User:name.sub` or `urn:...:enterprise:2.0:User:department` into
/// the top-level key of the rendered object and an optional sub-key.
fn split_attr(kind: ResourceKind, a: &str) -> (String, Option<String>) {
    let a = strip_core_urn(a.trim());
    for ext in schema::extension_urns(kind) {
        if a.len() > ext.len() && starts_with_ci(a, ext) && a.as_bytes()[ext.len()] == b':' {
            return (ext.to_string(), Some(a[ext.len() + 1..].split('.').next().unwrap_or("").to_string()));
        }
        if a.eq_ignore_ascii_case(ext) {
            return (ext.to_string(), None);
        }
    }
    match a.split_once('.') {
        Some((t, s)) => (t.to_string(), Some(s.to_string())),
        None => (a.to_string(), None),
    }
}

fn select_subs(v: Value, subs: &[String]) -> Option<Value> {
    let pick = |o: Map<String, Value>| -> Map<String, Value> {
        o.into_iter().filter(|(k, _)| subs.iter().any(|s| s.eq_ignore_ascii_case(k))).collect()
    };
    match v {
        Value::Object(o) => Some(Value::Object(pick(o))).filter(|v| v.as_object().is_some_and(|o| !o.is_empty())),
        Value::Array(a) => Some(Value::Array(
            a.into_iter()
                .filter_map(|e| if let Value::Object(o) = e { Some(Value::Object(pick(o))) } else { None })
                .collect(),
        )),
        other => Some(other),
    }
}

fn remove_sub(v: &mut Value, sub: &str) {
    match v {
        Value::Object(o) => {
            if let Some(k) = o.keys().find(|k| k.eq_ignore_ascii_case(sub)).cloned() {
                o.remove(&k);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|e| remove_sub(e, sub)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Meta;

    fn user(body: Value) -> Result<Parsed, ScimError> {
        parse_input(ResourceKind::User, body)
    }

    #[test]
    fn canonicalises_names_and_coerces_string_booleans() {
        let p = user(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:example:unknown"],
            "USERNAME": "Bjensen",
            "Active": "False",
            "id": "client-chosen",
            "meta": {"version": "W/\"9\""},
            "name": {"GivenName": "Barbara", "bogus": 1},
            "emails": {"value": "b@example.com", "type": "work"},
            "unknownAttr": 1,
        }))
        .unwrap();
        assert_eq!(p.attrs["userName"], "Bjensen");
        assert_eq!(p.attrs["active"], false);
        assert_eq!(p.attrs["name"], json!({"givenName": "Barbara"}));
        assert_eq!(p.attrs["emails"], json!([{"value": "b@example.com", "type": "work"}]));
        assert!(!p.attrs.contains_key("id") && !p.attrs.contains_key("meta") && !p.attrs.contains_key("unknownAttr"));
    }

    /// Entra's tutorial "Example 5" sends the manager reference as a list of one.
    #[test]
    fn single_valued_reference_as_a_list_of_one() {
        let ext = schema::ENTERPRISE_USER;
        let p = user(json!({"userName": "e", ext: {"manager": [{"$ref": null, "value": "boss"}]}})).unwrap();
        assert_eq!(p.attrs[ext], json!({"manager": {"value": "boss"}}));
        // Two references, or a list for a simple attribute, are still refused.
        let e = user(json!({"userName": "e", ext: {"manager": [{"value": "a"}, {"value": "b"}]}})).unwrap_err();
        assert_eq!(e.scim_type, Some(crate::scim::ScimType::InvalidValue));
        assert!(user(json!({"userName": ["e"]})).is_err());
    }

    #[test]
    fn enterprise_extension_and_bare_manager() {
        let p = user(json!({
            "userName": "a",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": 42, "manager": "boss-id"},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "Sales",
        }))
        .unwrap();
        let ext = &p.attrs[schema::ENTERPRISE_USER];
        assert_eq!(ext["employeeNumber"], "42");
        assert_eq!(ext["manager"], json!({"value": "boss-id"}));
        assert_eq!(ext["department"], "Sales");
    }

    #[test]
    fn required_and_type_errors_are_invalid_value() {
        for body in [
            json!({"displayName": "no username"}),
            json!({"userName": ""}),
            json!({"userName": "a", "active": "maybe"}),
            json!({"userName": "a", "name": "not an object"}),
            json!({"userName": "a", "displayName": ["x"]}),
        ] {
            let e = user(body.clone()).unwrap_err();
            assert_eq!((e.status, e.scim_type), (400, Some(crate::scim::ScimType::InvalidValue)), "{body}");
        }
        assert_eq!(user(json!("x")).unwrap_err().scim_type, Some(crate::scim::ScimType::InvalidSyntax));
    }

    #[test]
    fn password_is_hashed_and_never_rendered() {
        let p = user(json!({"userName": "a", "password": "hunter2"})).unwrap();
        let stored = p.attrs["password"].as_str().unwrap();
        assert!(stored.starts_with(PASSWORD_HASH_PREFIX) && !stored.contains("hunter2"));
        // Normalising again (after a PATCH) does not hash the hash.
        assert_eq!(normalize(ResourceKind::User, p.attrs.clone()).unwrap()["password"], stored);
        let res = Resource {
            kind: ResourceKind::User,
            id: "1".into(),
            meta: Meta { created: "c".into(), last_modified: "m".into(), version: 3 },
            attrs: p.attrs,
            members: None,
            groups: None,
        };
        let out = render(res.clone(), "http://h/scim/v2", &Projection::default());
        assert!(out.get("password").is_none());
        assert_eq!(out["meta"]["version"], "W/\"3\"");
        assert_eq!(out["meta"]["location"], "http://h/scim/v2/Users/1");
    }

    #[test]
    fn at_most_one_primary() {
        let p = user(json!({"userName": "a", "emails": [
            {"value": "x@a", "primary": true}, {"value": "y@a", "primary": true}]}))
        .unwrap();
        assert_eq!(p.attrs["emails"][1]["primary"], false);
    }

    #[test]
    fn group_members_parse() {
        let p = parse_input(
            ResourceKind::Group,
            json!({"displayName": "g", "members": [{"value": "u1", "$ref": null}, {"value": "g2", "type": "Group"}]}),
        )
        .unwrap();
        let m = p.members.unwrap();
        assert_eq!(m[0], MemberRef { id: "u1".into(), kind: None, display: None });
        assert_eq!(m[1].kind, Some(ResourceKind::Group));
        assert!(parse_input(ResourceKind::Group, json!({"displayName": "g", "members": [{"display": "x"}]})).is_err());
    }

    #[test]
    fn projection() {
        let res = Resource {
            kind: ResourceKind::User,
            id: "1".into(),
            meta: Meta { created: "c".into(), last_modified: "m".into(), version: 1 },
            attrs: json!({"userName": "a", "name": {"givenName": "G", "familyName": "F"}, "title": "t"})
                .as_object()
                .unwrap()
                .clone(),
            members: None,
            groups: None,
        };
        let only = render(res.clone(), "b", &Projection::new(vec!["userName".into(), "name.givenName".into()], vec![]));
        assert_eq!(only, json!({"schemas": [schema::USER], "id": "1", "userName": "a", "name": {"givenName": "G"}}));
        let ex = render(res.clone(), "b", &Projection::new(vec![], vec!["title".into(), "meta".into(), "id".into()]));
        assert!(ex.get("title").is_none() && ex.get("meta").is_none() && ex.get("id").is_some());
        assert!(!Projection::new(vec![], vec!["members".into()]).wants("members"));
        assert!(Projection::new(vec!["members.value".into()], vec![]).wants("members"));
    }

    /// Found by the resource_parse fuzz target (tests/fixtures/fuzzed/resource_parse/): a
    /// client's key or `attributes` path with a multi-byte character across the byte where a
    /// URN prefix would end panicked slicing it (a 500 and a dropped connection per request).
    #[test]
    fn multi_byte_characters_where_a_urn_prefix_would_end() {
        // "ᗩ" is bytes 2..5: normalize looked at key[..4] for "urn:".
        let p = user(json!({"userName": "u", "ac\u{15e9}tive": true})).unwrap();
        assert_eq!(p.attrs, json!({"userName": "u"}).as_object().unwrap().clone());
        // Byte 42 (the core User URN's length) inside "Ɠ"; byte 58 (the extension's) inside "é".
        let core = format!("{}\u{193}xy", &schema::USER[..41]);
        let ext = format!("{}\u{e9}x", &schema::ENTERPRISE_USER[..57]);
        assert!(!core.is_char_boundary(schema::USER.len()) && !ext.is_char_boundary(schema::ENTERPRISE_USER.len()));
        let res = Resource {
            kind: ResourceKind::User,
            id: "1".into(),
            meta: Meta { created: "c".into(), last_modified: "m".into(), version: 1 },
            attrs: p.attrs,
            members: None,
            groups: None,
        };
        for paths in [vec![core.clone()], vec![ext.clone()], vec![core, ext]] {
            let only = render(res.clone(), "b", &Projection::new(paths.clone(), vec![]));
            assert_eq!(only, json!({"schemas": [schema::USER], "id": "1"}), "{paths:?}");
            let all_but = render(res.clone(), "b", &Projection::new(vec![], paths.clone()));
            assert_eq!(all_but["userName"], "u", "{paths:?}");
            assert!(!Projection::new(paths.clone(), vec![]).wants("members"), "{paths:?}");
        }
        assert!(
            starts_with_ci("URN:x", "urn:") && !starts_with_ci("ur\u{e9}x", "urn:") && !starts_with_ci("ur", "urn:")
        );
    }

    #[test]
    fn etags() {
        assert_eq!(parse_etag("W/\"12\""), Some(12));
        assert_eq!(parse_etag("\"12\""), Some(12));
        assert_eq!(parse_etag("*"), None);
    }

    #[test]
    fn qualified_members_are_members_not_attributes() {
        let body = json!({
            "displayName": "G",
            "urn:ietf:params:scim:schemas:core:2.0:Group:members": [{"value": "m1"}],
            "urn:ietf:params:scim:schemas:core:2.0:Group:id": "x"
        });
        let p = parse_input(ResourceKind::Group, body).unwrap();
        assert_eq!(p.attrs, json!({"displayName": "G"}).as_object().unwrap().clone());
        assert_eq!(p.members.unwrap().iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), vec!["m1"]);
        assert_eq!(normalize(ResourceKind::Group, p.attrs.clone()).unwrap(), p.attrs, "idempotent");
    }
}
