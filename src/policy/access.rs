//! Effective access: from a user's group names to its roles and entitlements, with the
//! reasons (which rule, which group, the role order, the default role).

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::{Value, json};

use super::{Grant, Policy};

/// What a user may do in the app, as provisioned (SCIM `roles` and `entitlements`,
/// RFC 7643 §4.1.2). Sorted, so two computations compare equal when they agree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Access {
    pub roles: Vec<String>,
    pub entitlements: Vec<String>,
}

impl Access {
    /// `roles` and `entitlements` as SCIM multi-valued attributes (`[{"value": ...}]`); the
    /// single role when a role order is configured is marked primary.
    pub fn to_scim(&self) -> (Value, Value) {
        let single = self.roles.len() == 1;
        let roles = self
            .roles
            .iter()
            .map(|r| if single { json!({"value": r, "primary": true}) } else { json!({"value": r}) })
            .collect();
        let ents = self.entitlements.iter().map(|e| json!({"value": e})).collect();
        (Value::Array(roles), Value::Array(ents))
    }
}

impl Access {
    /// Put `roles` and `entitlements` into a user's SCIM attributes, replacing what the IdP
    /// sent: what the app is given (outbox worker) and what it should hold (reconciliation).
    pub fn insert_into(&self, attrs: &mut serde_json::Map<String, Value>) {
        let (roles, entitlements) = self.to_scim();
        attrs.insert("roles".into(), roles);
        attrs.insert("entitlements".into(), entitlements);
    }
}

/// One group of the user and what the rules gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupGrants {
    pub name: String,
    pub grants: Vec<Grant>,
}

/// Access with its reasons, for `scimsync access`.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub groups: Vec<GroupGrants>,
    pub access: Access,
    /// Sentences saying why: the role order, the default role.
    pub reasons: Vec<String>,
}

impl Policy {
    /// The effective access of a user in groups with these names.
    pub fn access<'a>(&self, group_names: impl IntoIterator<Item = &'a str>) -> Access {
        let grants: Vec<Grant> = group_names.into_iter().flat_map(|n| self.grants(n)).collect();
        self.resolve(&grants).0
    }

    /// Why: each group with the rules that matched it, and the resolution.
    pub fn explain<'a>(&self, group_names: impl IntoIterator<Item = &'a str>) -> Explanation {
        let groups: Vec<GroupGrants> =
            group_names.into_iter().map(|n| GroupGrants { name: n.to_string(), grants: self.grants(n) }).collect();
        let all: Vec<Grant> = groups.iter().flat_map(|g| g.grants.clone()).collect();
        let (access, reasons) = self.resolve(&all);
        Explanation { groups, access, reasons }
    }

    /// Roles by the order (highest wins) or all of them; the default when none; every
    /// entitlement.
    pub(crate) fn resolve(&self, grants: &[Grant]) -> (Access, Vec<String>) {
        let mut reasons = Vec::new();
        let granted: BTreeSet<&str> = grants.iter().filter_map(|g| g.role.as_deref()).collect();
        let entitlements: Vec<String> =
            grants.iter().filter_map(|g| g.entitlement.clone()).collect::<BTreeSet<_>>().into_iter().collect();
        let roles: Vec<String> = if granted.is_empty() {
            match &self.default_role {
                Some(d) => {
                    reasons.push(format!("no group grants a role, so the default role {d:?} (policy.default_role)"));
                    vec![d.clone()]
                }
                None => Vec::new(),
            }
        } else if self.role_order.is_empty() {
            granted.iter().map(|s| s.to_string()).collect()
        } else {
            // Highest rank wins; a role missing from the order (a captured value) ranks
            // below every listed one, ties broken by name so the result is stable.
            let best = granted
                .iter()
                .max_by(|a, b| self.rank(a).cmp(&self.rank(b)).then_with(|| b.cmp(a)))
                .map(|s| s.to_string())
                .into_iter()
                .collect::<Vec<_>>();
            if granted.len() > 1 {
                reasons.push(format!(
                    "groups grant roles {}; the highest by policy.role_order wins: {}",
                    granted.iter().map(|r| format!("{r:?}")).collect::<Vec<_>>().join(", "),
                    best.join("")
                ));
            }
            best
        };
        (Access { roles, entitlements }, reasons)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{GroupRuleConfig, PolicyConfig};
    use super::*;

    fn exact(name: &str, role: &str) -> GroupRuleConfig {
        GroupRuleConfig { exact: Some(name.into()), role: Some(role.into()), ..Default::default() }
    }

    #[test]
    fn highest_role_wins_and_default_applies() {
        let p = Policy::compile(&PolicyConfig {
            group_rules: vec![exact("Viewers", "viewer"), exact("Editors", "editor"), exact("Owners", "owner")],
            role_order: vec!["viewer".into(), "editor".into(), "owner".into()],
            default_role: "viewer".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(p.access(["Viewers", "Owners", "Editors"]).roles, vec!["owner"]);
        assert_eq!(p.access(["viewers", "EDITORS"]).roles, vec!["editor"]);
        assert_eq!(p.access(["Unmapped"]).roles, vec!["viewer"]);
        let e = p.explain(["Viewers", "Owners", "Other"]);
        assert_eq!(e.groups[2].grants, vec![]);
        assert!(e.reasons[0].contains("wins: owner"), "{:?}", e.reasons);
    }

    #[test]
    fn without_order_every_role_and_entitlement() {
        let p = Policy::compile(&PolicyConfig {
            group_rules: vec![
                GroupRuleConfig { contains: Some("admin".into()), role: Some("admin".into()), ..Default::default() },
                GroupRuleConfig { contains: Some("member".into()), role: Some("member".into()), ..Default::default() },
                GroupRuleConfig {
                    regex: Some(r"^(?P<plan>[^-]+)-".into()),
                    entitlement: Some("{plan}".into()),
                    ..Default::default()
                },
            ],
            ..Default::default()
        })
        .unwrap();
        let a = p.access(["Pro-admins", "Free-members"]);
        assert_eq!(a.roles, vec!["admin", "member"]);
        assert_eq!(a.entitlements, vec!["Free", "Pro"]);
        let (roles, ents) = a.to_scim();
        assert_eq!(roles, json!([{"value": "admin"}, {"value": "member"}]));
        assert_eq!(ents, json!([{"value": "Free"}, {"value": "Pro"}]));
        assert_eq!(p.access(std::iter::empty()), Access::default());
    }

    #[test]
    fn policy_level_checks_name_the_key() {
        let errs = Policy::compile(&PolicyConfig {
            group_rules: vec![exact("A", "admin"), exact("B", "boss")],
            role_order: vec!["member".into(), "admin".into(), "member".into()],
            default_role: "guest".into(),
            seats: [("Pro".to_string(), 3)].into(),
            keep_at_least: [("admin".to_string(), 0), ("root".to_string(), 1)].into(),
            ..Default::default()
        })
        .unwrap_err();
        let keys: Vec<&str> = errs.iter().map(|(k, _)| k.as_str()).collect();
        for k in [
            "policy.role_order",
            "policy.group_rules[1].role",
            "policy.default_role",
            "policy.keep_at_least.admin",
            "policy.keep_at_least.root",
            "policy.seats.Pro",
        ] {
            assert!(keys.contains(&k), "{k} missing from {errs:?}");
        }
    }
}
