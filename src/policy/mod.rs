//! Provisioning policy (issue 7): which groups grant which roles and entitlements
//! ([`rules`]), what a user's effective access is ([`access`]), and the constraints a
//! change must keep ([`constraints`]): exclusive classes, seats, keep-at-least-N holders.
//!
//! Owns: the `[policy]` configuration, compiling it once (errors name the key), and the pure
//! evaluation. Must not touch: SQLite, HTTP, the SCIM wire format. The store gathers the
//! facts (who is in which group, who is active) inside its writer transaction and asks this
//! module for a verdict, so concurrent requests cannot both pass a check.

pub mod access;
pub mod account;
pub mod constraints;
pub mod rules;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use access::{Access, Explanation};
pub use constraints::{Snapshot, UserFacts, Violation};
pub use rules::{Grant, GroupRule};

/// `[policy]` as written in TOML. Empty (the default): no rule, no constraint, no change of
/// behaviour.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// `[[policy.group_rules]]`: every rule whose pattern matches a group's `displayName`
    /// applies to the group's members.
    pub group_rules: Vec<GroupRuleConfig>,
    /// Roles from lowest to highest. When set, a user gets only the highest role its groups
    /// grant; when empty, every granted role.
    pub role_order: Vec<String>,
    /// The role of a user whose groups grant none; empty: no role.
    pub default_role: String,
    /// Entitlement value -> how many active users may hold it (licence seats).
    pub seats: BTreeMap<String, u64>,
    /// Role -> the fewest active users that must keep it (e.g. `admin = 1`: the last admin
    /// cannot be removed).
    pub keep_at_least: BTreeMap<String, u64>,
    /// `[policy.account]`: reactivation, immutable attributes, inactive users in lists.
    pub account: account::AccountPolicy,
}

/// One `[[policy.group_rules]]` entry. Exactly one of `exact`, `contains`, `glob`, `regex`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GroupRuleConfig {
    /// A label shown by `scimsync access` and in errors; default `rule N`.
    pub name: String,
    /// The whole group name.
    pub exact: Option<String>,
    /// A part of the group name.
    pub contains: Option<String>,
    /// A shell-style pattern: `*` any run of characters, `?` one character.
    pub glob: Option<String>,
    /// A regular expression (Rust `regex` syntax) searched in the name; anchor it with
    /// `^...$` for a whole-name match. Named groups (`(?P<sub>sub_\w+)`) can be used in
    /// `role` and `entitlement` as `{sub}`.
    pub regex: Option<String>,
    /// Case-sensitive match. Default false, as SCIM compares `displayName` (RFC 7643 §4.2:
    /// `caseExact` false).
    pub case_sensitive: bool,
    /// The role the rule grants.
    pub role: Option<String>,
    /// The entitlement the rule grants (a licence, a plan).
    pub entitlement: Option<String>,
    /// An exclusive class: a user may be in at most one group that a rule of this class
    /// matches (one licence, one role group).
    pub class: Option<String>,
}

/// The compiled policy: what the store and the worker are given.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub rules: Vec<GroupRule>,
    pub role_order: Vec<String>,
    pub default_role: Option<String>,
    pub seats: BTreeMap<String, u64>,
    pub keep_at_least: BTreeMap<String, u64>,
    pub account: account::AccountPolicy,
}

impl Policy {
    /// Compile and check `cfg`. Errors are (key, message) pairs, keys such as
    /// `policy.group_rules[2].regex`.
    pub fn compile(cfg: &PolicyConfig) -> Result<Policy, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let mut compiled = Vec::new();
        for (i, r) in cfg.group_rules.iter().enumerate() {
            match GroupRule::compile(i, r) {
                Ok(rule) => compiled.push(rule),
                Err(p) => problems.extend(p),
            }
        }
        let mut seen = std::collections::HashSet::new();
        for r in &cfg.role_order {
            if r.trim().is_empty() {
                problems.push(("policy.role_order".into(), "holds an empty role name".into()));
            } else if !seen.insert(r.as_str()) {
                problems.push(("policy.role_order".into(), format!("names role {r:?} twice")));
            }
        }
        if !cfg.role_order.is_empty() {
            for rule in &compiled {
                if let Some(role) = rule.literal_role()
                    && !cfg.role_order.iter().any(|r| r == role)
                {
                    problems.push((
                        format!("{}.role", rule.key),
                        format!("role {role:?} is not in policy.role_order; add it there so it has a rank"),
                    ));
                }
            }
            if !cfg.default_role.is_empty() && !cfg.role_order.contains(&cfg.default_role) {
                problems.push((
                    "policy.default_role".into(),
                    format!(
                        "{:?} is not in policy.role_order; add it there or leave default_role empty",
                        cfg.default_role
                    ),
                ));
            }
        }
        for (role, n) in &cfg.keep_at_least {
            if *n == 0 {
                problems
                    .push((format!("policy.keep_at_least.{role}"), "must be at least 1 (or remove the key)".into()));
            }
            let granted = compiled.iter().any(|r| r.may_grant_role(role));
            if !granted {
                problems.push((
                    format!("policy.keep_at_least.{role}"),
                    format!("no rule in policy.group_rules grants role {role:?}, so nobody could ever hold it"),
                ));
            }
        }
        for ent in cfg.seats.keys() {
            if !compiled.iter().any(|r| r.may_grant_entitlement(ent)) {
                problems.push((
                    format!("policy.seats.{ent}"),
                    format!("no rule in policy.group_rules can grant entitlement {ent:?}"),
                ));
            }
        }
        for attr in &cfg.account.immutable_attributes {
            let ok = crate::scim::filter::parse_path(attr).ok().and_then(|mut p| {
                crate::scim::schema::resolve_path(crate::model::ResourceKind::User, &mut p).ok()?;
                (p.filter.is_none() && p.attr.sub.is_none()).then_some(())
            });
            if ok.is_none() {
                problems.push((
                    "policy.account.immutable_attributes".into(),
                    format!("{attr:?} is not a top-level User attribute (e.g. \"userName\", \"externalId\")"),
                ));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Policy {
            rules: compiled,
            role_order: cfg.role_order.clone(),
            default_role: (!cfg.default_role.is_empty()).then(|| cfg.default_role.clone()),
            seats: cfg.seats.clone(),
            keep_at_least: cfg.keep_at_least.clone(),
            account: cfg.account.clone(),
        })
    }

    /// No rule: the policy changes nothing (and the store skips gathering facts).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.default_role.is_none()
    }

    /// Whether the store has anything to check or derive: group rules, a default role, or
    /// an account policy enforced in the writer (unique emails, no re-provisioning).
    pub fn needs_store(&self) -> bool {
        !self.is_empty() || self.account.unique_emails || !self.account.reprovision_deleted
    }

    /// Whether a group of this name is mapped by any rule.
    pub fn is_mapped(&self, group_name: &str) -> bool {
        self.rules.iter().any(|r| r.is_match(group_name))
    }

    /// Every grant the rules give a group of this name, in rule order.
    pub fn grants(&self, group_name: &str) -> Vec<Grant> {
        self.rules.iter().enumerate().filter_map(|(i, r)| r.grant(i, group_name)).collect()
    }

    /// The rank of a role in `role_order` (higher wins); unknown roles rank below all.
    fn rank(&self, role: &str) -> Option<usize> {
        self.role_order.iter().position(|r| r == role)
    }

    /// One line per rule, for `scimsync check-config`.
    pub fn describe(&self) -> Vec<String> {
        let mut out: Vec<String> = self.rules.iter().map(GroupRule::describe).collect();
        if !self.role_order.is_empty() {
            out.push(format!("role order (lowest to highest): {}", self.role_order.join(" < ")));
        }
        if let Some(d) = &self.default_role {
            out.push(format!("default role (no mapped group): {d}"));
        }
        for (e, n) in &self.seats {
            out.push(format!("seats: {e:?} at most {n} active holder(s)"));
        }
        for (r, n) in &self.keep_at_least {
            out.push(format!("keep at least {n} active holder(s) of role {r:?}"));
        }
        let a = &cfg_account_lines(&self.account);
        out.extend(a.iter().cloned());
        out
    }
}

fn cfg_account_lines(a: &account::AccountPolicy) -> Vec<String> {
    let mut out = Vec::new();
    if a.reactivation != account::Reactivation::Allow {
        out.push(format!("account: reactivation through SCIM is {:?}", a.reactivation).to_lowercase());
    }
    if !a.immutable_attributes.is_empty() {
        out.push(format!("account: immutable after create: {}", a.immutable_attributes.join(", ")));
    }
    if a.unique_emails {
        out.push("account: a user's email addresses must be unique among users".into());
        if a.existing_email_on_create == account::ExistingEmail::ReturnExisting {
            out.push("account: a create with a taken email address returns the existing account".into());
        }
    }
    if !a.reprovision_deleted {
        out.push("account: a deleted user is not provisioned again (same userName or externalId)".into());
    }
    if !a.list_inactive_users {
        out.push("account: inactive users are left out of GET /Users".into());
    }
    out
}
