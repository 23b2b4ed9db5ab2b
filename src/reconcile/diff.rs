//! The pure three-way diff behind drift reports.
//!
//! For each account it takes *desired* (what the IdP told us, as the representation we
//! provision), *applied* (what we last delivered successfully, when known) and *actual* (what
//! the app lists), as comparable JSON objects built by the caller through the same
//! representation the provisioner sends. Three values let a report tell "edited in the app by
//! hand" (we delivered the desired value, the app shows another) from "not applied yet" (the
//! desired value is still queued, retrying or dead-lettered).
//!
//! Comparison is tolerant of what apps add on their own: objects compare on the keys we
//! send (an app's extra sub-attributes, `primary: false` defaults, `meta`, are not drift),
//! multi-valued attributes compare as sets, and names and emails compare case-insensitively
//! (RFC 7643 §4.1.1: `userName` and `emails.value` are `caseExact: false`).

use std::collections::BTreeSet;

use serde_json::{Map, Value};

pub use crate::model::drift::{Cause, DriftItem, DriftKind};

/// One account as the IdP wants it.
#[derive(Debug, Clone)]
pub struct Desired<'a> {
    pub resource_id: &'a str,
    pub name: &'a str,
    pub attrs: &'a Map<String, Value>,
    /// What we last delivered, if recorded.
    pub applied: Option<&'a Map<String, Value>>,
    /// Changes are still queued or failing for it.
    pub pending: bool,
    /// Group members as app ids (groups only); members not provisioned yet are left out.
    pub members: Option<&'a BTreeSet<String>>,
}

/// One account as the app lists it.
#[derive(Debug, Clone)]
pub struct Actual<'a> {
    pub app_id: &'a str,
    pub name: &'a str,
    pub attrs: &'a Map<String, Value>,
    pub members: Option<&'a BTreeSet<String>>,
}

/// Attributes never compared: ours alone (`password`), read-only or the app's own
/// (`id`, `meta`, `groups`), protocol (`schemas`), or compared apart (`members`).
pub const NEVER_COMPARED: &[&str] = &["schemas", "id", "meta", "password", "groups", "members"];

/// Attributes whose strings compare case-insensitively.
const CASE_INSENSITIVE: &[&str] = &["userName", "emails", "displayName"];

/// The vocabulary of the objects compared: SCIM attribute names for a SCIM app, the mapped
/// output fields for a REST app whose records are compared through its field mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Fields {
    /// The field that decides who can log in (reported as an active-state mismatch).
    pub active: Option<String>,
    /// An absent `active` means active (RFC 7643 §4.1.1 leaves it to the provider; SCIM apps
    /// default it on). Off for mapped fields: a mapping sends what it sends.
    pub absent_active_is_true: bool,
    /// Fields whose strings compare case-insensitively.
    pub case_insensitive: Vec<String>,
}

impl Fields {
    /// SCIM's names: `active`, and `userName`, `emails`, `displayName` case-insensitive
    /// (RFC 7643 §4.1.1 and §4.1.2: `caseExact: false`).
    pub fn scim() -> Fields {
        Fields {
            active: Some("active".into()),
            absent_active_is_true: true,
            case_insensitive: CASE_INSENSITIVE.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn is_active(&self, key: &str) -> bool {
        self.active.as_deref() == Some(key)
    }
}

/// Whether the app's value `app` holds our value `ours` for attribute `key`: objects on our
/// keys, arrays as sets of such matches, strings case-insensitively where the schema says so,
/// and absent, null and empty as one.
pub fn holds(key: &str, ours: &Value, app: &Value) -> bool {
    let ci = CASE_INSENSITIVE.contains(&key);
    covers(ours, app, ci)
}

fn holds_in(fields: &Fields, key: &str, ours: &Value, app: &Value) -> bool {
    covers(ours, app, fields.case_insensitive.iter().any(|c| c == key))
}

fn empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.iter().all(empty),
        Value::Object(o) => o.values().all(empty),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

fn covers(ours: &Value, app: &Value, ci: bool) -> bool {
    if empty(ours) {
        return empty(app);
    }
    match (ours, app) {
        (Value::String(a), Value::String(b)) => {
            if ci {
                // Without allocating: this runs for every name and email of every account.
                a.chars().flat_map(char::to_lowercase).eq(b.chars().flat_map(char::to_lowercase))
            } else {
                a == b
            }
        }
        (Value::Object(a), Value::Object(b)) => a.iter().all(|(k, v)| covers(v, b.get(k).unwrap_or(&Value::Null), ci)),
        (Value::Array(a), Value::Array(b)) => {
            let a: Vec<&Value> = a.iter().filter(|v| !empty(v)).collect();
            let b: Vec<&Value> = b.iter().filter(|v| !empty(v)).collect();
            if a.len() != b.len() {
                return false;
            }
            // Each of ours matched to a distinct one of theirs (small arrays: quadratic is fine).
            let mut used = vec![false; b.len()];
            a.iter().all(|x| {
                let found = b.iter().enumerate().position(|(i, y)| !used[i] && covers(x, y, ci));
                if let Some(i) = found {
                    used[i] = true;
                }
                found.is_some()
            })
        }
        // A single value where the app keeps a one-element list, or the reverse.
        (Value::Array(a), other) | (other, Value::Array(a)) if a.len() == 1 => covers(&a[0], other, ci),
        (a, b) => a == b,
    }
}

/// The differences between one desired account and the app account it matched, in SCIM's
/// vocabulary. `ignore`: attributes the operator excluded from comparison.
pub fn compare(d: &Desired<'_>, a: &Actual<'_>, ignore: &[String]) -> Vec<DriftItem> {
    compare_with(d, a, ignore, &Fields::scim())
}

/// [`compare`] in the vocabulary `fields` names.
pub fn compare_with(d: &Desired<'_>, a: &Actual<'_>, ignore: &[String], fields: &Fields) -> Vec<DriftItem> {
    let mut keys: BTreeSet<&str> = d.attrs.keys().map(String::as_str).collect();
    if let Some(applied) = d.applied {
        keys.extend(applied.keys().map(String::as_str));
    }
    let mut out = Vec::new();
    let null = Value::Null;
    // `active` first: it is the one that decides who can log in.
    let mut ordered: Vec<&str> =
        keys.into_iter().filter(|k| !NEVER_COMPARED.contains(k) && !ignore.iter().any(|i| i == k)).collect();
    ordered.sort_by_key(|k| !fields.is_active(k));
    let default_active = Value::Bool(true);
    for key in ordered {
        // By reference: values are copied only into a reported difference.
        let absent = if fields.is_active(key) && fields.absent_active_is_true { &default_active } else { &null };
        let (ours, app) = (d.attrs.get(key).unwrap_or(absent), a.attrs.get(key).unwrap_or(absent));
        if holds_in(fields, key, ours, app) {
            continue;
        }
        let cause = if d.pending {
            Cause::NotAppliedYet
        } else {
            match d.applied {
                None => Cause::Unknown,
                Some(m) if holds_in(fields, key, ours, m.get(key).unwrap_or(&null)) => Cause::EditedInApp,
                Some(_) => Cause::NotAppliedYet,
            }
        };
        out.push(DriftItem {
            kind: if fields.is_active(key) { DriftKind::ActiveMismatch } else { DriftKind::AttributeMismatch },
            resource_id: Some(d.resource_id.to_string()),
            app_id: Some(a.app_id.to_string()),
            name: d.name.to_string(),
            attribute: Some(key.to_string()),
            ours: ours.clone(),
            app: app.clone(),
            cause,
        });
    }
    if let (Some(want), Some(have)) = (d.members, a.members) {
        let missing: Vec<&String> = want.difference(have).collect();
        let extra: Vec<&String> = have.difference(want).collect();
        if !missing.is_empty() || !extra.is_empty() {
            out.push(DriftItem {
                kind: DriftKind::MembershipMismatch,
                resource_id: Some(d.resource_id.to_string()),
                app_id: Some(a.app_id.to_string()),
                name: d.name.to_string(),
                attribute: Some("members".into()),
                ours: serde_json::json!({ "missing_in_app": missing }),
                app: serde_json::json!({ "extra_in_app": extra }),
                // Nothing queued and delivered before: every member change reached the app.
                cause: account_cause(d),
            });
        }
    }
    out
}

/// A desired account the app does not have.
pub fn missing(d: &Desired<'_>) -> DriftItem {
    DriftItem {
        kind: DriftKind::MissingInApp,
        resource_id: Some(d.resource_id.to_string()),
        app_id: None,
        name: d.name.to_string(),
        attribute: None,
        ours: Value::Object(d.attrs.clone()),
        app: Value::Null,
        // Delivered once and gone now: removed in the app. Never delivered: not applied yet.
        cause: account_cause(d),
    }
}

/// The cause of a difference that is about the whole account (its presence, its members)
/// rather than one value: still queued, else delivered before (so changed in the app), else
/// no record.
fn account_cause(d: &Desired<'_>) -> Cause {
    if d.pending {
        Cause::NotAppliedYet
    } else if d.applied.is_some() {
        Cause::EditedInApp
    } else {
        Cause::Unknown
    }
}

/// An app account the IdP does not know.
pub fn orphan(a: &Actual<'_>) -> DriftItem {
    DriftItem {
        kind: DriftKind::OrphanedInApp,
        resource_id: None,
        app_id: Some(a.app_id.to_string()),
        name: a.name.to_string(),
        attribute: None,
        ours: Value::Null,
        app: Value::Object(a.attrs.clone()),
        cause: Cause::EditedInApp,
    }
}

/// How this run's report relates to the previous one: for each current fingerprint, whether
/// it is new; and the previous fingerprints no longer present (resolved), in their order.
pub fn changes<'a>(current: &'a [String], previous: &'a [String]) -> (Vec<bool>, Vec<usize>) {
    let prev: std::collections::HashSet<&str> = previous.iter().map(String::as_str).collect();
    let cur: std::collections::HashSet<&str> = current.iter().map(String::as_str).collect();
    let is_new = current.iter().map(|f| !prev.contains(f.as_str())).collect();
    let resolved = previous.iter().enumerate().filter(|(_, f)| !cur.contains(f.as_str())).map(|(i, _)| i).collect();
    (is_new, resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn desired<'a>(id: &'a str, attrs: &'a Map<String, Value>, applied: Option<&'a Map<String, Value>>) -> Desired<'a> {
        Desired { resource_id: id, name: id, attrs, applied, pending: false, members: None }
    }

    fn actual<'a>(id: &'a str, attrs: &'a Map<String, Value>) -> Actual<'a> {
        Actual { app_id: id, name: id, attrs, members: None }
    }

    #[test]
    fn three_way_cause() {
        let ours = obj(json!({"userName": "alice", "title": "CEO", "active": true}));
        let app = obj(json!({"userName": "ALICE", "title": "Boss", "active": false, "meta": {"x": 1}}));
        // Delivered what we want; the app shows otherwise: edited in the app.
        let items = compare(&desired("a", &ours, Some(&ours)), &actual("x", &app), &[]);
        let got: Vec<_> = items.iter().map(|i| (i.kind, i.attribute.as_deref().unwrap(), i.cause)).collect();
        assert_eq!(
            got,
            vec![
                (DriftKind::ActiveMismatch, "active", Cause::EditedInApp),
                (DriftKind::AttributeMismatch, "title", Cause::EditedInApp),
            ]
        );
        assert_eq!((&items[1].ours, &items[1].app), (&json!("CEO"), &json!("Boss")));
        // Last delivered an older title: not applied yet.
        let old = obj(json!({"userName": "alice", "title": "Boss", "active": false}));
        let items = compare(&desired("a", &ours, Some(&old)), &actual("x", &app), &[]);
        assert!(items.iter().all(|i| i.cause == Cause::NotAppliedYet), "{items:?}");
        // Nothing recorded: unknown. Queued: not applied yet, whatever was recorded.
        assert!(compare(&desired("a", &ours, None), &actual("x", &app), &[]).iter().all(|i| i.cause == Cause::Unknown));
        let mut d = desired("a", &ours, Some(&ours));
        d.pending = true;
        assert!(compare(&d, &actual("x", &app), &[]).iter().all(|i| i.cause == Cause::NotAppliedYet));
        // Ignored attributes are not compared.
        let items = compare(&desired("a", &ours, None), &actual("x", &app), &["title".to_string()]);
        assert_eq!(items.len(), 1);
    }

    #[test]
    fn what_apps_add_on_their_own_is_not_drift() {
        let ours = obj(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "Dana@Example.com",
            "name": {"givenName": "Dana"},
            "emails": [{"value": "Dana@Example.com", "type": "work"}, {"value": "d@home.example"}],
            "phoneNumbers": [],
            "nickName": null
        }));
        let app = obj(json!({
            "id": "x", "meta": {"resourceType": "User"},
            "userName": "dana@example.com",
            "name": {"givenName": "Dana", "formatted": "Dana"},
            "emails": [{"value": "d@home.example", "primary": false}, {"value": "dana@example.com", "type": "work", "primary": true}],
            "active": true
        }));
        let items = compare(&desired("d", &ours, None), &actual("x", &app), &[]);
        assert!(items.is_empty(), "{items:?}");
        // But a lost email, a changed sub-attribute or a dropped attribute is.
        let app2 = obj(json!({"userName": "dana@example.com", "name": {"givenName": "Dan"},
                              "emails": [{"value": "dana@example.com", "type": "work"}]}));
        let items = compare(&desired("d", &ours, None), &actual("x", &app2), &[]);
        let attrs: Vec<_> = items.iter().map(|i| i.attribute.clone().unwrap()).collect();
        assert_eq!(attrs, vec!["emails", "name"]);
    }

    #[test]
    fn an_attribute_we_removed_but_the_app_kept_is_drift() {
        let ours = obj(json!({"userName": "e"}));
        let applied = obj(json!({"userName": "e", "title": "Dev"}));
        let app = obj(json!({"userName": "e", "title": "Dev"}));
        let items = compare(&desired("e", &ours, Some(&applied)), &actual("x", &app), &[]);
        assert_eq!(items.len(), 1);
        assert_eq!((items[0].attribute.as_deref(), items[0].cause), (Some("title"), Cause::NotAppliedYet));
    }

    #[test]
    fn membership_differences_name_both_sides() {
        let g = obj(json!({"displayName": "Eng"}));
        let want: BTreeSet<String> = ["u1", "u2"].iter().map(|s| s.to_string()).collect();
        let have: BTreeSet<String> = ["u2", "u3"].iter().map(|s| s.to_string()).collect();
        let d = Desired { members: Some(&want), ..desired("g", &g, None) };
        let a = Actual { members: Some(&have), ..actual("ag", &g) };
        let items = compare(&d, &a, &[]);
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].kind, DriftKind::MembershipMismatch);
        assert_eq!(items[0].ours, json!({"missing_in_app": ["u1"]}));
        assert_eq!(items[0].app, json!({"extra_in_app": ["u3"]}));
    }

    #[test]
    fn missing_orphan_and_report_changes() {
        let u = obj(json!({"userName": "m"}));
        assert_eq!(missing(&desired("m", &u, Some(&u))).cause, Cause::EditedInApp);
        assert_eq!(missing(&desired("m", &u, None)).cause, Cause::Unknown);
        let o = orphan(&actual("z", &u));
        assert_eq!(
            (o.kind, o.app_id.as_deref(), o.resource_id.as_deref()),
            (DriftKind::OrphanedInApp, Some("z"), None)
        );
        assert_eq!(o.fingerprint("User"), "orphaned_in_app|User|z|");
        let cur = vec!["a".to_string(), "b".to_string()];
        let prev = vec!["b".to_string(), "c".to_string()];
        assert_eq!(changes(&cur, &prev), (vec![true, false], vec![1]));
    }

    #[test]
    fn kinds_round_trip() {
        for k in DriftKind::ALL {
            assert_eq!(DriftKind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), json!(k.as_str()));
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn json_value() -> impl Strategy<Value = Value> {
            let key = prop_oneof![
                Just("value".to_string()),
                Just("type".to_string()),
                Just("primary".to_string()),
                Just("userName".to_string()),
                Just("emails".to_string()),
                Just("active".to_string()),
                "[a-zA-Z]{1,6}",
            ];
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i32>().prop_map(Value::from),
                "[a-zA-Z0-9@ .]{0,8}".prop_map(Value::String),
            ];
            leaf.prop_recursive(3, 24, 4, move |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::vec((key.clone(), inner), 0..4)
                        .prop_map(|kv| Value::Object(kv.into_iter().collect())),
                ]
            })
        }

        fn object() -> impl Strategy<Value = Map<String, Value>> {
            prop::collection::vec(("[a-zA-Z]{1,6}|userName|emails|active|members", json_value()), 0..6)
                .prop_map(|kv| kv.into_iter().collect())
        }

        proptest! {
            /// An account always holds itself: no drift between equal states, whatever the shape.
            #[test]
            fn equal_states_have_no_drift(a in object()) {
                let d = Desired { resource_id: "r", name: "n", attrs: &a, applied: Some(&a), pending: false, members: None };
                let items = compare(&d, &Actual { app_id: "x", name: "n", attrs: &a, members: None }, &[]);
                prop_assert!(items.is_empty(), "{items:?}");
            }

            /// Arbitrary pairs never panic, and every item names a compared attribute with
            /// values the two sides really do not share.
            #[test]
            fn arbitrary_pairs_report_real_differences(a in object(), b in object(), applied in proptest::option::of(object())) {
                let d = Desired { resource_id: "r", name: "n", attrs: &a, applied: applied.as_ref(), pending: false, members: None };
                for it in compare(&d, &Actual { app_id: "x", name: "n", attrs: &b, members: None }, &[]) {
                    let key = it.attribute.clone().unwrap();
                    prop_assert!(!NEVER_COMPARED.contains(&key.as_str()));
                    prop_assert!(!holds(&key, &it.ours, &it.app), "{key}: {} vs {}", it.ours, it.app);
                }
            }
        }
    }
}
