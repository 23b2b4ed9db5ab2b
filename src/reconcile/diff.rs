//! The pure three-way diff behind drift reports.
//!
//! For each account it takes *desired* (what the IdP told us, as the representation we
//! provision), *applied* (what we last delivered successfully, when known) and *actual* (what
//! the app lists), already mapped to comparable JSON objects by the caller through the same
//! mapping the provisioner uses. Three values let a report tell "edited in the app by hand"
//! (actual differs from what we applied) from "not applied yet" (applied differs from desired).

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;
use serde_json::{Map, Value};

/// What kind of difference an item is (the drift report groups by these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// The IdP has it, the app does not.
    MissingInApp,
    /// The app has an account the IdP does not know.
    OrphanedInApp,
    /// An attribute differs.
    AttributeMismatch,
    /// `active` differs (reported apart: it decides who can log in).
    ActiveMismatch,
    /// Group members missing in the app or extra there.
    MembershipMismatch,
}

/// Why the app differs from what the IdP wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// We delivered the desired value and the app now shows something else: changed in the app.
    EditedInApp,
    /// The desired value has not been delivered yet (queued, retrying or dead-lettered).
    NotAppliedYet,
    /// No record of what we applied (adopted account, or before delivery history existed).
    Unknown,
}

/// One difference, with both values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftItem {
    pub kind: DriftKind,
    /// Our id, when the IdP knows the account.
    pub resource_id: Option<String>,
    /// The app's id, when the app has it.
    pub app_id: Option<String>,
    /// A name a human recognises: userName / displayName.
    pub name: String,
    /// The attribute for attribute and active mismatches.
    pub attribute: Option<String>,
    pub ours: Value,
    pub app: Value,
    pub cause: Cause,
}

/// One account as the IdP wants it.
#[derive(Debug, Clone)]
pub struct Desired<'a> {
    pub resource_id: &'a str,
    pub app_id: Option<&'a str>,
    pub name: &'a str,
    pub attrs: &'a Map<String, Value>,
    /// What we last delivered, if recorded.
    pub applied: Option<&'a Map<String, Value>>,
    /// Group members as app ids (groups only).
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

/// Compare attributes a case-insensitive app may echo in another case (`userName`, emails)
/// without reporting noise: strings compare case-insensitively for these keys.
const CASE_INSENSITIVE: &[&str] = &["userName", "emails", "displayName"];

fn equal(key: &str, a: &Value, b: &Value) -> bool {
    if CASE_INSENSITIVE.contains(&key) {
        return lower(a) == lower(b);
    }
    a == b
}

fn lower(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(s.to_lowercase()),
        Value::Array(a) => Value::Array(a.iter().map(lower).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), lower(v))).collect()),
        other => other.clone(),
    }
}

/// Diff every desired account against the app's listing. Matching: by app id (from our id
/// map), else by name (case-insensitive). `compare` lists the attributes to compare (the
/// ones the mapping sends); `members` are compared when both sides have them.
pub fn diff(desired: &[Desired<'_>], actual: &[Actual<'_>], compare: &[&str]) -> Vec<DriftItem> {
    let by_id: HashMap<&str, usize> = actual.iter().enumerate().map(|(i, a)| (a.app_id, i)).collect();
    let by_name: HashMap<String, usize> = actual.iter().enumerate().map(|(i, a)| (a.name.to_lowercase(), i)).collect();
    let mut matched = vec![false; actual.len()];
    let mut out = Vec::new();
    for d in desired {
        let idx = d.app_id.and_then(|id| by_id.get(id)).or_else(|| by_name.get(&d.name.to_lowercase())).copied();
        let Some(i) = idx else {
            out.push(DriftItem {
                kind: DriftKind::MissingInApp,
                resource_id: Some(d.resource_id.to_string()),
                app_id: d.app_id.map(str::to_string),
                name: d.name.to_string(),
                attribute: None,
                ours: Value::Object(d.attrs.clone()),
                app: Value::Null,
                cause: if d.applied.is_some() { Cause::EditedInApp } else { Cause::NotAppliedYet },
            });
            continue;
        };
        matched[i] = true;
        let a = &actual[i];
        for key in compare {
            let ours = d.attrs.get(*key).cloned().unwrap_or(Value::Null);
            let app = a.attrs.get(*key).cloned().unwrap_or(Value::Null);
            if equal(key, &ours, &app) {
                continue;
            }
            let applied = d.applied.map(|m| m.get(*key).cloned().unwrap_or(Value::Null));
            let cause = match applied {
                None => Cause::Unknown,
                Some(v) if equal(key, &v, &ours) => Cause::EditedInApp,
                Some(_) => Cause::NotAppliedYet,
            };
            out.push(DriftItem {
                kind: if *key == "active" { DriftKind::ActiveMismatch } else { DriftKind::AttributeMismatch },
                resource_id: Some(d.resource_id.to_string()),
                app_id: Some(a.app_id.to_string()),
                name: d.name.to_string(),
                attribute: Some(key.to_string()),
                ours,
                app,
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
                    cause: Cause::Unknown,
                });
            }
        }
    }
    for (i, a) in actual.iter().enumerate() {
        if !matched[i] {
            out.push(DriftItem {
                kind: DriftKind::OrphanedInApp,
                resource_id: None,
                app_id: Some(a.app_id.to_string()),
                name: a.name.to_string(),
                attribute: None,
                ours: Value::Null,
                app: Value::Object(a.attrs.clone()),
                cause: Cause::Unknown,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn every_kind_with_both_values_and_cause() {
        let alice = obj(json!({"userName": "alice", "title": "CEO", "active": true}));
        let alice_applied = alice.clone();
        let bob = obj(json!({"userName": "bob", "title": "Dev", "active": true}));
        let bob_applied = obj(json!({"userName": "bob", "title": "Intern", "active": true}));
        let carol = obj(json!({"userName": "carol", "active": true}));
        let app_alice = obj(json!({"userName": "ALICE", "title": "Boss", "active": false}));
        let app_bob = obj(json!({"userName": "bob", "title": "Intern", "active": true}));
        let app_mallory = obj(json!({"userName": "mallory", "active": true}));
        let desired = vec![
            Desired {
                resource_id: "a",
                app_id: Some("x1"),
                name: "alice",
                attrs: &alice,
                applied: Some(&alice_applied),
                members: None,
            },
            Desired {
                resource_id: "b",
                app_id: None,
                name: "bob",
                attrs: &bob,
                applied: Some(&bob_applied),
                members: None,
            },
            Desired { resource_id: "c", app_id: None, name: "carol", attrs: &carol, applied: None, members: None },
        ];
        let actual = vec![
            Actual { app_id: "x1", name: "ALICE", attrs: &app_alice, members: None },
            Actual { app_id: "x2", name: "bob", attrs: &app_bob, members: None },
            Actual { app_id: "x3", name: "mallory", attrs: &app_mallory, members: None },
        ];
        let items = diff(&desired, &actual, &["userName", "title", "active"]);
        let summary: Vec<(DriftKind, &str, Option<&str>, Cause)> =
            items.iter().map(|i| (i.kind, i.name.as_str(), i.attribute.as_deref(), i.cause)).collect();
        assert_eq!(
            summary,
            vec![
                (DriftKind::AttributeMismatch, "alice", Some("title"), Cause::EditedInApp),
                (DriftKind::ActiveMismatch, "alice", Some("active"), Cause::EditedInApp),
                (DriftKind::AttributeMismatch, "bob", Some("title"), Cause::NotAppliedYet),
                (DriftKind::MissingInApp, "carol", None, Cause::NotAppliedYet),
                (DriftKind::OrphanedInApp, "mallory", None, Cause::Unknown),
            ]
        );
        assert_eq!((&items[0].ours, &items[0].app), (&json!("CEO"), &json!("Boss")));
    }

    #[test]
    fn membership_differences_name_both_sides() {
        let g = obj(json!({"displayName": "Eng"}));
        let want: BTreeSet<String> = ["u1", "u2"].iter().map(|s| s.to_string()).collect();
        let have: BTreeSet<String> = ["u2", "u3"].iter().map(|s| s.to_string()).collect();
        let items = diff(
            &[Desired {
                resource_id: "g",
                app_id: Some("ag"),
                name: "Eng",
                attrs: &g,
                applied: None,
                members: Some(&want),
            }],
            &[Actual { app_id: "ag", name: "Eng", attrs: &g, members: Some(&have) }],
            &["displayName"],
        );
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].kind, DriftKind::MembershipMismatch);
        assert_eq!(items[0].ours, json!({"missing_in_app": ["u1"]}));
        assert_eq!(items[0].app, json!({"extra_in_app": ["u3"]}));
    }

    #[test]
    fn no_drift_when_equal_modulo_case_of_names() {
        let u = obj(json!({"userName": "Dana@Example.com", "active": true}));
        let a = obj(json!({"userName": "dana@example.com", "active": true}));
        let items = diff(
            &[Desired {
                resource_id: "d",
                app_id: None,
                name: "Dana@Example.com",
                attrs: &u,
                applied: None,
                members: None,
            }],
            &[Actual { app_id: "x", name: "dana@example.com", attrs: &a, members: None }],
            &["userName", "active"],
        );
        assert!(items.is_empty(), "{items:?}");
    }
}
