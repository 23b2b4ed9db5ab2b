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

/// The user an access report is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportUser {
    pub id: String,
    #[serde(rename = "userName")]
    pub user_name: String,
    pub active: bool,
}

/// One user's effective access with everything that decided it: the stable shape of
/// `scimsync access --json` and the admin listener's `GET /access/{user}`. Pure data, built
/// by [`Policy::report`]; the prose of `scimsync access` is [`AccessReport::to_text`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessReport {
    pub user: ReportUser,
    /// Whether `[policy]` has any rule; without one no role or entitlement is derived.
    pub policy_configured: bool,
    /// The user's groups, each with the rules that matched it (none: no rule matches).
    pub groups: Vec<ReportGroup>,
    pub roles: Vec<Bounded>,
    pub entitlements: Vec<Bounded>,
    /// Exclusive classes the user's groups belong to: at most one group of each may be added.
    pub exclusive_classes: Vec<ClassBound>,
    /// Why the roles are what they are (role order, default role) and notes (inactive user).
    pub why: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportGroup {
    pub name: String,
    pub matched_rules: Vec<MatchedRule>,
}

/// A rule that matched a group, and what it granted that group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatchedRule {
    /// Position in `policy.group_rules`, from 0.
    pub index: usize,
    pub label: String,
    /// `exact`, `contains`, `glob` or `regex`.
    pub kind: String,
    pub pattern: String,
    pub role: Option<String>,
    pub entitlement: Option<String>,
    pub class: Option<String>,
}

/// An effective role or entitlement and the constraints that bound it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bounded {
    pub value: String,
    pub constraints: Vec<Constraint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Constraint {
    /// `seats` (at most `limit` active holders) or `keep_at_least` (at least `limit`).
    pub kind: &'static str,
    pub limit: u64,
    /// The setting it comes from, e.g. `policy.seats.Pro`.
    pub key: String,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassBound {
    pub class: String,
    /// How many of the user's groups are in the class.
    pub groups: usize,
    /// At most this many may be added (always 1).
    pub limit: u64,
    pub detail: String,
}

impl Policy {
    /// The full report for one user in groups with these names.
    pub fn report<'a>(&self, user: ReportUser, group_names: impl IntoIterator<Item = &'a str>) -> AccessReport {
        let ex = self.explain(group_names);
        let groups: Vec<ReportGroup> = ex
            .groups
            .iter()
            .map(|g| ReportGroup {
                name: g.name.clone(),
                matched_rules: g
                    .grants
                    .iter()
                    .map(|grant| {
                        let rule = &self.rules[grant.rule];
                        MatchedRule {
                            index: grant.rule,
                            label: rule.label.clone(),
                            kind: rule.kind.as_str().to_string(),
                            pattern: rule.pattern.clone(),
                            role: grant.role.clone(),
                            entitlement: grant.entitlement.clone(),
                            class: grant.class.clone(),
                        }
                    })
                    .collect(),
            })
            .collect();
        let roles = ex
            .access
            .roles
            .iter()
            .map(|r| Bounded {
                value: r.clone(),
                constraints: self
                    .keep_at_least
                    .get(r)
                    .map(|n| Constraint {
                        kind: "keep_at_least",
                        limit: *n,
                        key: format!("policy.keep_at_least.{r}"),
                        detail: format!("role {r:?} must keep at least {n} active holder(s)"),
                    })
                    .into_iter()
                    .collect(),
            })
            .collect();
        let entitlements = ex
            .access
            .entitlements
            .iter()
            .map(|e| Bounded {
                value: e.clone(),
                constraints: self
                    .seats
                    .get(e)
                    .map(|n| Constraint {
                        kind: "seats",
                        limit: *n,
                        key: format!("policy.seats.{e}"),
                        detail: format!("entitlement {e:?} has {n} seat(s)"),
                    })
                    .into_iter()
                    .collect(),
            })
            .collect();
        let mut classes: std::collections::BTreeMap<&str, usize> = Default::default();
        for g in &ex.groups {
            let cs: BTreeSet<&str> = g.grants.iter().filter_map(|x| x.class.as_deref()).collect();
            for c in cs {
                *classes.entry(c).or_default() += 1;
            }
        }
        let exclusive_classes = classes
            .into_iter()
            .map(|(c, n)| ClassBound {
                class: c.to_string(),
                groups: n,
                limit: 1,
                detail: format!("exclusive class {c:?}: in {n} group(s) of it (at most 1 may be added)"),
            })
            .collect();
        let mut why = ex.reasons;
        if !user.active {
            why.push("an inactive user counts toward no seat and no keep_at_least minimum".into());
        }
        AccessReport { user, policy_configured: !self.is_empty(), groups, roles, entitlements, exclusive_classes, why }
    }
}

impl AccessReport {
    /// The prose of `scimsync access USER`.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let u = &self.user;
        let _ = writeln!(o, "user {:?} (id {}), {}", u.user_name, u.id, if u.active { "active" } else { "inactive" });
        if !self.policy_configured {
            o.push_str(
                "no provisioning policy is configured ([policy] in the config): no roles or entitlements are derived\n",
            );
            return o;
        }
        let _ = writeln!(o, "groups ({}):", self.groups.len());
        for g in &self.groups {
            if g.matched_rules.is_empty() {
                let _ = writeln!(o, "  {:?}: no rule matches", g.name);
            }
            for m in &g.matched_rules {
                let mut what = Vec::new();
                if let Some(r) = &m.role {
                    what.push(format!("role {r:?}"));
                }
                if let Some(e) = &m.entitlement {
                    what.push(format!("entitlement {e:?}"));
                }
                if let Some(c) = &m.class {
                    what.push(format!("exclusive class {c:?}"));
                }
                let _ = writeln!(
                    o,
                    "  {:?}: rule {:?} ({} {:?}) grants {}",
                    g.name,
                    m.label,
                    m.kind,
                    m.pattern,
                    what.join(", ")
                );
            }
        }
        let show = |v: &[Bounded]| {
            if v.is_empty() {
                "(none)".to_string()
            } else {
                v.iter().map(|b| b.value.as_str()).collect::<Vec<_>>().join(", ")
            }
        };
        let _ = writeln!(o, "effective roles: {}", show(&self.roles));
        let _ = writeln!(o, "effective entitlements: {}", show(&self.entitlements));
        for r in &self.why {
            let _ = writeln!(o, "why: {r}");
        }
        for c in &self.exclusive_classes {
            let _ = writeln!(o, "constraint: {}", c.detail);
        }
        for c in self.entitlements.iter().chain(&self.roles).flat_map(|b| &b.constraints) {
            let _ = writeln!(o, "constraint: {} ({})", c.detail, c.key);
        }
        o
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

    #[test]
    fn report_names_rules_constraints_and_reasons() {
        let p = Policy::compile(&PolicyConfig {
            group_rules: vec![
                GroupRuleConfig {
                    exact: Some("Viewers".into()),
                    role: Some("viewer".into()),
                    class: Some("tier".into()),
                    ..Default::default()
                },
                GroupRuleConfig {
                    exact: Some("Owners".into()),
                    role: Some("owner".into()),
                    class: Some("tier".into()),
                    ..Default::default()
                },
                GroupRuleConfig { contains: Some("pro".into()), entitlement: Some("Pro".into()), ..Default::default() },
            ],
            role_order: vec!["viewer".into(), "owner".into()],
            seats: [("Pro".to_string(), 3)].into(),
            keep_at_least: [("owner".to_string(), 1)].into(),
            ..Default::default()
        })
        .unwrap();
        let user = ReportUser { id: "u1".into(), user_name: "ann".into(), active: false };
        let r = p.report(user, ["Viewers", "Owners", "pro-users", "Other"]);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["user"], json!({"id": "u1", "userName": "ann", "active": false}));
        assert_eq!(v["groups"][1]["matched_rules"][0]["role"], "owner");
        assert_eq!(v["groups"][3]["matched_rules"], json!([]));
        assert_eq!(
            v["roles"],
            json!([{"value": "owner", "constraints": [{"kind": "keep_at_least", "limit": 1,
            "key": "policy.keep_at_least.owner", "detail": "role \"owner\" must keep at least 1 active holder(s)"}]}])
        );
        assert_eq!(v["entitlements"][0]["constraints"][0]["kind"], "seats");
        assert_eq!(v["exclusive_classes"][0]["groups"], 2);
        assert!(r.why.iter().any(|w| w.contains("wins: owner")), "{:?}", r.why);
        assert!(r.why.iter().any(|w| w.contains("inactive")), "{:?}", r.why);
        let t = r.to_text();
        for s in ["effective roles: owner", "effective entitlements: Pro", "policy.seats.Pro", "no rule matches"] {
            assert!(t.contains(s), "{s:?} missing in:\n{t}");
        }
    }
}
