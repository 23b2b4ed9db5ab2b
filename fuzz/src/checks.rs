//! What each fuzz target checks, one function per target, taking the fuzzer's raw bytes.
//!
//! Shared by the libFuzzer binaries in `fuzz_targets/` and by the regression test
//! `tests/it/fuzzed.rs`, which compiles this file as a module and replays every input kept
//! under `tests/fixtures/fuzzed/<target>/` through the function of the same name: so a crash
//! found once stays fixed without the fuzzer installed. Hence this file reaches the code
//! under test only through `super::sut::{model, scim}` (scimsync's modules: compiled into
//! the fuzz crate, or the real `scimsync` crate in the test) and may use no other crate but
//! `serde_json` and `arbitrary`.
//!
//! Every function panics (a finding) only when scimsync breaks a promise: the parsers never
//! panic on any input, canonical text parses back to the same tree, a failed PATCH leaves
//! the resource untouched, and what the PATCH engine or `parse_input` produce normalises.

use std::sync::LazyLock;

use arbitrary::Unstructured;
use serde_json::{Map, Value, json};

use super::sut::model::{Member, Meta, Resource, ResourceKind};
use super::sut::scim::filter::{self, parse_filter, parse_path};
use super::sut::scim::{patch, resource, schema};

const KINDS: [ResourceKind; 2] = [ResourceKind::User, ResourceKind::Group];
const EXT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// The target names, as directories under `fuzz/corpus/` and `tests/fixtures/fuzzed/`.
pub const TARGETS: [&str; 4] = ["filter_parse", "path_parse", "patch_apply", "resource_parse"];

/// Runs the target called `name` on `data`; `false` if there is no such target.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "filter_parse" => filter_parse(data),
        "path_parse" => path_parse(data),
        "patch_apply" => patch_apply(data),
        "resource_parse" => resource_parse(data),
        _ => return false,
    }
    true
}

// ---------------------------------------------------------------------------------------
// Fixed resources the targets work on.
// ---------------------------------------------------------------------------------------

/// RFC 7643 §8.2's full user, trimmed to what we store, with the enterprise extension: as a
/// resource (for filters to match against) and as canonical attributes (for PATCH).
fn user_json() -> Value {
    json!({
        "userName": "bjensen@example.com",
        "externalId": "701984",
        "name": {"formatted": "Ms. Barbara J Jensen III", "familyName": "Jensen", "givenName": "Barbara"},
        "displayName": "Babs Jensen",
        "nickName": "Babs",
        "title": "Tour Guide",
        "userType": "Employee",
        "active": true,
        "emails": [
            {"value": "bjensen@example.com", "type": "work", "primary": true},
            {"value": "babs@jensen.org", "type": "home"}
        ],
        "phoneNumbers": [{"value": "555-555-5555", "type": "work"}, {"value": "555-555-4444", "type": "mobile"}],
        "addresses": [{"type": "work", "streetAddress": "100 Universal City Plaza", "locality": "Hollywood",
                       "region": "CA", "postalCode": "91608", "country": "USA", "primary": true}],
        "roles": [{"value": "admin"}],
        EXT: {
            "employeeNumber": "701984",
            "department": "Tour Operations",
            "manager": {"value": "26118915-6090-4610-87e4-49d8ca9f808d", "displayName": "John Smith"}
        }
    })
}

fn group_json() -> Value {
    json!({"displayName": "Tour Guides", "externalId": "g-701984"})
}

fn canonical(kind: ResourceKind, v: Value) -> Map<String, Value> {
    let Value::Object(m) = v else { unreachable!("fixed resources are objects") };
    resource::normalize(kind, m).expect("the fixed resources are valid")
}

static USER_ATTRS: LazyLock<Map<String, Value>> = LazyLock::new(|| canonical(ResourceKind::User, user_json()));
static GROUP_ATTRS: LazyLock<Map<String, Value>> = LazyLock::new(|| canonical(ResourceKind::Group, group_json()));

fn fixed_attrs(kind: ResourceKind) -> &'static Map<String, Value> {
    match kind {
        ResourceKind::User => &USER_ATTRS,
        ResourceKind::Group => &GROUP_ATTRS,
    }
}

/// The member list a group PATCH may be given (a user, a nested group, another user).
fn members() -> Vec<Member> {
    vec![
        Member { id: "u1".into(), kind: ResourceKind::User, display: Some("User One".into()) },
        Member { id: "g1".into(), kind: ResourceKind::Group, display: Some("Group One".into()) },
        Member { id: "u2".into(), kind: ResourceKind::User, display: None },
    ]
}

// ---------------------------------------------------------------------------------------
// Targets.
// ---------------------------------------------------------------------------------------

/// `parse_filter` on any UTF-8: never panics, errors point inside the input, a parsed filter
/// prints as text that parses back to the same tree, and resolving or evaluating it (against
/// the fixed user) never panics.
pub fn filter_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse_filter(text) {
        Err(e) => assert!(e.position <= text.chars().count(), "error column {} past the end of {text:?}", e.position),
        Ok(f) => {
            let printed = f.to_string();
            assert_eq!(parse_filter(&printed).as_ref(), Ok(&f), "{text:?} printed as {printed:?}");
            let user = user_json();
            let _ = filter::matches(&f, &user);
            for kind in KINDS {
                let mut resolved = f.clone();
                if schema::resolve_filter(kind, &mut resolved).is_ok() {
                    let _ = filter::matches(&resolved, &user);
                }
            }
        }
    }
}

/// `parse_path` on any UTF-8: never panics, errors point inside the input, a parsed path
/// prints as text that parses back to the same path, and resolving it never panics.
pub fn path_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse_path(text) {
        Err(e) => assert!(e.position <= text.chars().count(), "error column {} past the end of {text:?}", e.position),
        Ok(p) => {
            let printed = p.to_string();
            assert_eq!(parse_path(&printed).as_ref(), Ok(&p), "{text:?} printed as {printed:?}");
            for kind in KINDS {
                let _ = schema::resolve_path(kind, &mut p.clone());
            }
        }
    }
}

/// A PATCH request (the input as JSON if it is JSON, else a request built from it, see
/// [`patch_body`]) parsed and applied to the fixed user and the fixed group, with and
/// without the group's member list: never panics; a failed request leaves the attributes
/// exactly as they were; a successful one reports `attrs_changed` truthfully and its result
/// goes through `normalize` without panicking.
pub fn patch_apply(data: &[u8]) {
    let body = patch_body(data);
    let list = members();
    for kind in KINDS {
        let Ok(ops) = patch::parse_request(kind, &body) else { continue };
        for members in [None, Some(list.as_slice())] {
            let before = fixed_attrs(kind);
            let mut attrs = before.clone();
            match patch::apply(kind, &mut attrs, &ops, members) {
                Err(e) => assert_eq!(&attrs, before, "a failed PATCH ({e}) changed the resource"),
                Ok(effect) => {
                    assert_eq!(effect.attrs_changed, &attrs != before, "attrs_changed is wrong");
                    let _ = resource::normalize(kind, attrs);
                }
            }
        }
    }
}

/// `parse_input` (a POST/PUT body) on any JSON, for both types: never panics; what it
/// accepts is canonical (normalising it again changes nothing) and renders without panicking,
/// in full and projected with the body's keys as `attributes` and as `excludedAttributes`
/// (query parameters, so as hostile as the body).
pub fn resource_parse(data: &[u8]) {
    let Ok(body) = serde_json::from_slice::<Value>(data) else { return };
    let keys: Vec<String> = body.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
    let projections = [
        resource::Projection::default(),
        resource::Projection::new(keys.clone(), Vec::new()),
        resource::Projection::new(Vec::new(), keys),
    ];
    for kind in KINDS {
        let Ok(parsed) = resource::parse_input(kind, body.clone()) else { continue };
        let again = resource::normalize(kind, parsed.attrs.clone());
        assert_eq!(again.as_ref(), Ok(&parsed.attrs), "normalising a parsed {kind:?} again changed it");
        let res = Resource {
            kind,
            id: "2819c223".into(),
            meta: Meta {
                created: "2026-01-01T00:00:00.000Z".into(),
                last_modified: "2026-01-01T00:00:00.000Z".into(),
                version: 1,
            },
            attrs: parsed.attrs,
            members: (kind == ResourceKind::Group).then(members),
            groups: None,
        };
        for proj in &projections {
            let _ = proj.wants("members");
            let _ = resource::render(res.clone(), "https://scim.example.com/scim/v2", proj);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Building a PATCH body from bytes.
// ---------------------------------------------------------------------------------------

/// The PATCH body for `data`: `data` itself when it is JSON (so the corpus holds readable
/// real requests, and libFuzzer's byte mutations explore around them), otherwise a request
/// whose operations `arbitrary` builds from `data` out of real attribute paths, filters and
/// values (so most inputs reach `apply` instead of failing to parse).
pub fn patch_body(data: &[u8]) -> Value {
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        return v;
    }
    let mut u = Unstructured::new(data);
    build_body(&mut u).unwrap_or(Value::Null)
}

const OPS: &[&str] = &["add", "remove", "replace", "Add", "Remove", "Replace", "ADD", " replace ", "move", ""];

/// Whole paths as IdPs send them.
const PATHS: &[&str] = &[
    "members",
    "members[value eq \"u1\"]",
    "members[value eq \"u1\" or value eq \"g1\"]",
    "members[type eq \"Group\"]",
    "members[display sw \"User\"]",
    "members[not (value eq \"u2\")]",
    "emails[type eq \"work\"].value",
    "emails[type eq \"work\" and primary eq true]",
    "emails[value ew \"example.com\"]",
    "phoneNumbers[type eq \"mobile\"].value",
    "addresses[type eq \"work\"].locality",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
    "urn:ietf:params:scim:schemas:core:2.0:User:name.givenName",
    "urn:ietf:params:scim:schemas:core:2.0:Group:displayName",
    "name.givenName",
    "meta.lastModified",
    "",
];

/// Attribute names (real, wrongly cased, read-only, unknown) to build paths and keys from.
const ATTRS: &[&str] = &[
    "userName",
    "username",
    "displayName",
    "name",
    "nickName",
    "title",
    "active",
    "password",
    "externalId",
    "emails",
    "phoneNumbers",
    "addresses",
    "roles",
    "ims",
    "photos",
    "entitlements",
    "x509Certificates",
    "members",
    "groups",
    "id",
    "meta",
    "schemas",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
    "bogus",
];

const FILTERS: &[&str] = &[
    "type eq \"work\"",
    "type eq \"home\"",
    "value eq \"u1\"",
    "value eq \"bjensen@example.com\"",
    "primary eq true",
    "type eq \"work\" and primary eq true",
    "value pr",
    "not (type eq \"work\")",
    "display co \"One\"",
    "givenName eq \"Barbara\"",
];

const SUBS: &[&str] =
    &["value", "type", "primary", "display", "givenName", "familyName", "formatted", "streetAddress", "$ref", "bogus"];

const STRINGS: &[&str] = &[
    "u1",
    "g1",
    "u3",
    "work",
    "home",
    "mobile",
    "User",
    "Group",
    "True",
    "False",
    "bjensen@example.com",
    "new@example.com",
    "",
    " ",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
];

fn pick<'a>(u: &mut Unstructured<'_>, from: &[&'a str]) -> arbitrary::Result<&'a str> {
    u.choose(from).copied()
}

fn build_body(u: &mut Unstructured<'_>) -> arbitrary::Result<Value> {
    let mut ops = Vec::new();
    let n = u.int_in_range(1..=4)?;
    for _ in 0..n {
        ops.push(build_op(u)?);
    }
    let mut body = Map::new();
    if u.ratio(7, 8)? {
        body.insert("schemas".into(), json!([schema::PATCH_OP]));
    }
    let key = if u.ratio(7, 8)? { "Operations" } else { "operations" };
    body.insert(key.into(), Value::Array(ops));
    Ok(Value::Object(body))
}

fn build_op(u: &mut Unstructured<'_>) -> arbitrary::Result<Value> {
    let mut op = Map::new();
    op.insert("op".into(), pick(u, OPS)?.into());
    if u.ratio(3, 4)? {
        op.insert("path".into(), build_path(u)?.into());
    }
    if u.ratio(3, 4)? {
        op.insert("value".into(), build_value(u, 0)?);
    }
    Ok(Value::Object(op))
}

fn build_path(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    if u.arbitrary()? {
        return Ok(pick(u, PATHS)?.to_string());
    }
    let mut path = pick(u, ATTRS)?.to_string();
    if u.ratio(1, 3)? {
        path = format!("{path}[{}]", pick(u, FILTERS)?);
    }
    if u.ratio(1, 3)? {
        path = format!("{path}.{}", pick(u, SUBS)?);
    }
    Ok(path)
}

fn build_value(u: &mut Unstructured<'_>, depth: usize) -> arbitrary::Result<Value> {
    let leaf_only = depth >= 3;
    Ok(match u.int_in_range(0..=if leaf_only { 4 } else { 6 })? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => json!(u.int_in_range(-2..=3)?),
        3 => json!(0.5),
        4 => pick(u, STRINGS)?.into(),
        5 => {
            let n = u.int_in_range(0..=3)?;
            Value::Array((0..n).map(|_| build_value(u, depth + 1)).collect::<arbitrary::Result<_>>()?)
        }
        _ => {
            let mut m = Map::new();
            for _ in 0..u.int_in_range(0..=3)? {
                let key = match u.int_in_range(0..=2)? {
                    0 => pick(u, ATTRS)?.to_string(),
                    1 => pick(u, SUBS)?.to_string(),
                    _ => build_path(u)?,
                };
                m.insert(key, build_value(u, depth + 1)?);
            }
            Value::Object(m)
        }
    })
}
