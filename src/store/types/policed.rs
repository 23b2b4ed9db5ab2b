//! The provisioning policy's part of a resource write, as both backends run it: which account
//! checks apply, which writes can change what the policy looks at (memberships of mapped
//! groups, the `active` flag of their members), which users a write touches, and the verdict
//! over their facts before and after. Each backend reads those facts with its own SQL
//! (`sqlite/policy_facts.rs`, `postgres/policy_facts.rs`) inside the write's transaction and
//! asks here what to read and what it means; the evaluation itself is `crate::policy`'s.
//!
//! The order, on both backends: account checks that need no write (no re-provisioning of a
//! deleted user) first; then, for a relevant write, the touched users' facts before it; the
//! write; their facts after it (and everyone's, when a seat or a kept role is at stake); the
//! verdict; an access-change update queued for each user whose access changed; the unique
//! email check last.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{NewResource, StoreError, Update};
use crate::model::ResourceKind;
use crate::policy::{Policy, Snapshot, UserFacts, constraints};

/// A resource write as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub enum PolicedWrite<'a> {
    Create(&'a NewResource),
    Update(&'a Update),
    Delete { kind: ResourceKind, id: &'a str },
}

/// What a write's relevance depends on in the store, to be read before the write runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need<'a> {
    /// The request alone decides.
    Nothing,
    /// The `displayName` of this group.
    GroupName(&'a str),
    /// Whether this user is active now (`None`: no such user).
    UserActive(&'a str),
    /// The `displayName`s of the groups this user is in (`""` for a group without one).
    UserGroupNames(&'a str),
}

/// What the backend read for a [`Need`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prior {
    Nothing,
    GroupName(Option<String>),
    UserActive(Option<bool>),
    UserGroupNames(Vec<String>),
}

fn new_name(attrs: Option<&serde_json::Map<String, Value>>) -> Option<&str> {
    attrs.and_then(|a| a.get("displayName")).and_then(Value::as_str)
}

fn new_active(attrs: &serde_json::Map<String, Value>) -> bool {
    // `active` absent means active (RFC 7643 §4.1.1 leaves it to us; we provision such users
    // as active).
    attrs.get("active") != Some(&Value::Bool(false))
}

impl<'a> PolicedWrite<'a> {
    /// The user whose email addresses must be unique among users after the write
    /// (`policy.account.unique_emails`).
    pub fn email_check(&self, policy: &Policy) -> Option<&'a str> {
        if !policy.account.unique_emails {
            return None;
        }
        match *self {
            PolicedWrite::Create(n) if n.kind == ResourceKind::User => Some(&n.id),
            PolicedWrite::Update(u) if u.kind == ResourceKind::User && u.attrs.is_some() => Some(&u.id),
            _ => None,
        }
    }

    /// The new user that must not be a deleted one come back
    /// (`policy.account.reprovision_deleted = false`), checked before the write.
    pub fn reprovision_check(&self, policy: &Policy) -> Option<&'a NewResource> {
        match *self {
            PolicedWrite::Create(n) if n.kind == ResourceKind::User && !policy.account.reprovision_deleted => Some(n),
            _ => None,
        }
    }

    /// Whether the write may need a check at all, judged from the request and the policy alone
    /// (no read): false only for a write that cannot change a fact the policy looks at and has
    /// no account check (a new user is in no group; a new group that no rule maps or that has
    /// no members; a user update without attributes). A backend without a single writer
    /// serialises the writes for which this is true, before it reads anything.
    pub fn needs_serialising(&self, policy: &Policy) -> bool {
        let rules = !policy.is_empty();
        match *self {
            PolicedWrite::Create(n) if n.kind == ResourceKind::User => {
                self.email_check(policy).is_some() || self.reprovision_check(policy).is_some()
            }
            PolicedWrite::Create(_) => rules && self.relevant(policy, &Prior::Nothing),
            PolicedWrite::Update(u) if u.kind == ResourceKind::User => {
                u.attrs.is_some() && (rules || policy.account.unique_emails)
            }
            PolicedWrite::Update(_) | PolicedWrite::Delete { kind: ResourceKind::Group, .. } => rules,
            // A deleted user's name goes into `deleted_accounts`, which a concurrent create
            // must see when deleted users may not come back.
            PolicedWrite::Delete { .. } => rules || !policy.account.reprovision_deleted,
        }
    }

    /// What [`Self::relevant`] and [`Self::affected`] need read first.
    pub fn needs(&self) -> Need<'a> {
        match *self {
            PolicedWrite::Create(_) => Need::Nothing,
            PolicedWrite::Update(u) if u.kind == ResourceKind::User => match u.attrs {
                Some(_) => Need::UserActive(&u.id),
                None => Need::Nothing,
            },
            PolicedWrite::Update(u) => Need::GroupName(&u.id),
            PolicedWrite::Delete { kind: ResourceKind::Group, id } => Need::GroupName(id),
            PolicedWrite::Delete { id, .. } => Need::UserGroupNames(id),
        }
    }

    /// Whether the write can change what the policy looks at, so writes that cannot are not
    /// slowed by the snapshots. A new user is in no group yet; a user update matters only
    /// when it flips `active`; a group write only when the group is mapped before or after
    /// it (members of unmapped groups count for nothing: nested groups are not expanded).
    /// Under a policy without rules nothing is.
    pub fn relevant(&self, policy: &Policy, prior: &Prior) -> bool {
        if policy.is_empty() {
            return false;
        }
        let mapped = |v: Option<&str>| v.is_some_and(|n| policy.is_mapped(n));
        match (*self, prior) {
            (PolicedWrite::Create(n), _) => {
                n.kind == ResourceKind::Group && !n.members.is_empty() && mapped(new_name(Some(&n.attrs)))
            }
            (PolicedWrite::Update(u), Prior::UserActive(old)) if u.kind == ResourceKind::User => {
                let Some(attrs) = &u.attrs else { return false };
                old.is_some_and(|was| was != new_active(attrs))
            }
            (PolicedWrite::Update(u), Prior::GroupName(old)) if u.kind == ResourceKind::Group => {
                mapped(old.as_deref()) || mapped(new_name(u.attrs.as_ref()))
            }
            (PolicedWrite::Delete { kind: ResourceKind::Group, .. }, Prior::GroupName(old)) => mapped(old.as_deref()),
            (PolicedWrite::Delete { kind: ResourceKind::User, .. }, Prior::UserGroupNames(names)) => {
                names.iter().any(|n| policy.is_mapped(n))
            }
            _ => false,
        }
    }

    /// The group whose current members the write touches (all of them when the group is
    /// renamed, its members replaced, or it is deleted), to be read before the write.
    pub fn members_needed(&self, prior: &Prior) -> Option<&'a str> {
        match (*self, prior) {
            (PolicedWrite::Update(u), Prior::GroupName(old)) if u.kind == ResourceKind::Group => {
                let renamed = match &u.attrs {
                    None => false,
                    Some(a) => a.get("displayName").and_then(Value::as_str) != old.as_deref(),
                };
                (renamed || u.members.replace.is_some()).then_some(u.id.as_str())
            }
            (PolicedWrite::Delete { kind: ResourceKind::Group, id }, _) => Some(id),
            _ => None,
        }
    }

    /// The users whose facts the write can change: the members a group write adds or removes
    /// (with `members`, the current ones [`Self::members_needed`] asked for), or the user
    /// itself.
    pub fn affected(&self, members: Vec<String>) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = members.into_iter().collect();
        match *self {
            PolicedWrite::Create(n) => out.extend(n.members.iter().map(|m| m.id.clone())),
            PolicedWrite::Update(u) if u.kind == ResourceKind::Group => {
                out.extend(u.members.replace.iter().flatten().map(|m| m.id.clone()));
                out.extend(u.members.add.iter().map(|m| m.id.clone()));
                out.extend(u.members.remove.iter().cloned());
            }
            PolicedWrite::Update(u) => {
                out.insert(u.id.clone());
            }
            PolicedWrite::Delete { kind: ResourceKind::Group, .. } => {}
            PolicedWrite::Delete { id, .. } => {
                out.insert(id.to_string());
            }
        }
        out
    }
}

/// The mapped groups among `groups` (seq, id, displayName), by seq.
pub fn mapped_groups(policy: &Policy, groups: Vec<(i64, String, String)>) -> BTreeMap<i64, (String, String)> {
    groups.into_iter().filter(|(_, _, name)| policy.is_mapped(name)).map(|(s, id, n)| (s, (id, n))).collect()
}

/// A snapshot from membership rows (group seq, user id, userName, active) of `mapped`
/// groups, in the order read (by member, then group).
pub fn snapshot_from(
    mapped: &BTreeMap<i64, (String, String)>,
    rows: impl IntoIterator<Item = (i64, String, String, bool)>,
) -> Snapshot {
    let mut snap = Snapshot::default();
    for (gseq, uid, user_name, active) in rows {
        let u = snap.users.entry(uid).or_insert_with(|| UserFacts { user_name, active, groups: Vec::new() });
        if let Some((gid, name)) = mapped.get(&gseq) {
            u.groups.push((gid.clone(), name.clone()));
        }
    }
    snap
}

/// The verdict on a relevant write: `before` and `after` are the touched users' facts;
/// `all_after`, everyone's after the write, is given when [`constraints::needs_counts`] says
/// the counts over everyone matter (the state before is then that, with the touched users'
/// earlier facts put back). `Ok`: the users whose access changed.
pub fn verdict(
    policy: &Policy,
    touched: &BTreeSet<String>,
    before: &Snapshot,
    after: &Snapshot,
    all_after: Option<&Snapshot>,
) -> Result<Vec<String>, StoreError> {
    match all_after {
        Some(all) => constraints::evaluate(policy, &constraints::splice(all, touched, before), all),
        None => constraints::evaluate(policy, before, after),
    }
    .map_err(|v| StoreError::Policy(v.to_string()))
}

/// The refusal of `policy.account.reprovision_deleted = false`: `who` (the userName, folded,
/// or the externalId) was deleted at `when`.
pub fn deleted_refusal(who: &str, when: &str) -> StoreError {
    StoreError::Policy(format!(
        "the account {who:?} was deleted at {when} and policy.account.reprovision_deleted = false refuses \
         to provision it again; an administrator must restore it in the app (or allow re-provisioning)"
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::{MemberDelta, MemberRef};
    use crate::policy::{GroupRuleConfig, PolicyConfig, account::AccountPolicy};

    fn policy(rules: bool, account: AccountPolicy) -> Policy {
        let group_rules = if rules {
            vec![GroupRuleConfig { contains: Some("admin".into()), role: Some("admin".into()), ..Default::default() }]
        } else {
            vec![]
        };
        Policy::compile(&PolicyConfig { group_rules, account, ..Default::default() }).unwrap()
    }

    fn attrs(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    /// A write the backends do not serialise must be one that no check could apply to,
    /// whatever the store holds: otherwise two nodes could both pass a check only one may.
    #[test]
    fn a_write_left_unserialised_has_nothing_to_check() {
        let m = |id: &str| MemberRef { id: id.into(), kind: None, display: None };
        let creates = [
            NewResource {
                kind: ResourceKind::User,
                id: "u".into(),
                attrs: attrs(json!({"userName": "u"})),
                members: vec![],
            },
            NewResource {
                kind: ResourceKind::Group,
                id: "g".into(),
                attrs: attrs(json!({"displayName": "Admins"})),
                members: vec![m("u")],
            },
            NewResource {
                kind: ResourceKind::Group,
                id: "h".into(),
                attrs: attrs(json!({"displayName": "Staff"})),
                members: vec![m("u")],
            },
            NewResource {
                kind: ResourceKind::Group,
                id: "e".into(),
                attrs: attrs(json!({"displayName": "Admins"})),
                members: vec![],
            },
        ];
        let updates = [
            Update {
                kind: ResourceKind::User,
                id: "u".into(),
                expected_version: None,
                attrs: None,
                members: MemberDelta::default(),
            },
            Update {
                kind: ResourceKind::User,
                id: "u".into(),
                expected_version: None,
                attrs: Some(attrs(json!({"userName": "u", "active": false}))),
                members: MemberDelta::default(),
            },
            Update {
                kind: ResourceKind::Group,
                id: "g".into(),
                expected_version: None,
                attrs: Some(attrs(json!({"displayName": "Admins"}))),
                members: MemberDelta { add: vec![m("v")], ..Default::default() },
            },
        ];
        let mut writes: Vec<PolicedWrite<'_>> = creates.iter().map(PolicedWrite::Create).collect();
        writes.extend(updates.iter().map(PolicedWrite::Update));
        writes.push(PolicedWrite::Delete { kind: ResourceKind::User, id: "u" });
        writes.push(PolicedWrite::Delete { kind: ResourceKind::Group, id: "g" });
        let priors = [
            Prior::Nothing,
            Prior::GroupName(Some("Admins".into())),
            Prior::GroupName(None),
            Prior::UserActive(Some(true)),
            Prior::UserActive(Some(false)),
            Prior::UserGroupNames(vec!["Admins".into()]),
        ];
        let mut serialised = 0;
        for rules in [false, true] {
            for (unique_emails, reprovision_deleted) in [(false, true), (true, true), (false, false)] {
                let account = AccountPolicy { unique_emails, reprovision_deleted, ..Default::default() };
                let p = policy(rules, account);
                for w in &writes {
                    if w.needs_serialising(&p) {
                        serialised += 1;
                        continue;
                    }
                    assert!(w.email_check(&p).is_none() && w.reprovision_check(&p).is_none(), "{w:?}");
                    for prior in &priors {
                        assert!(!w.relevant(&p, prior), "{w:?} under {prior:?}");
                    }
                }
            }
        }
        assert!(serialised > 0 && serialised < 6 * writes.len(), "{serialised}");
    }

    #[test]
    fn a_group_rename_touches_every_member_and_a_plain_add_only_the_added() {
        let m = |id: &str| MemberRef { id: id.into(), kind: None, display: None };
        let add = Update {
            kind: ResourceKind::Group,
            id: "g".into(),
            expected_version: None,
            attrs: Some(attrs(json!({"displayName": "Admins"}))),
            members: MemberDelta { add: vec![m("v")], remove: vec!["w".into()], ..Default::default() },
        };
        let w = PolicedWrite::Update(&add);
        assert_eq!(w.needs(), Need::GroupName("g"));
        let same_name = Prior::GroupName(Some("Admins".into()));
        assert_eq!(w.members_needed(&same_name), None);
        assert_eq!(w.affected(vec![]), ["v".to_string(), "w".to_string()].into());
        let renamed = Prior::GroupName(Some("Staff".into()));
        assert_eq!(w.members_needed(&renamed), Some("g"));
        assert_eq!(w.affected(vec!["a".into()]), ["a".to_string(), "v".to_string(), "w".to_string()].into());
        let p = policy(true, AccountPolicy::default());
        assert!(w.relevant(&p, &renamed), "renamed into a mapped name");
        let plain = Update { attrs: Some(attrs(json!({"displayName": "Staff"}))), ..add.clone() };
        assert!(!PolicedWrite::Update(&plain).relevant(&p, &Prior::GroupName(Some("Staff".into()))), "never mapped");
        assert!(PolicedWrite::Update(&plain).relevant(&p, &same_name), "mapped before the rename");
    }
}
