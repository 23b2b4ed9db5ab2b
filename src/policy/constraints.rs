//! Constraints: compare the facts before a change with the facts after it (both read inside
//! the writer's transaction) and refuse a change that introduces a violation. Only a
//! violation the change makes worse is refused, so tightening the config never locks the
//! IdP out of fixing the state it finds.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{Access, Grant, Policy};

/// One user's facts: whether it is active, and the mapped groups it is in (id, name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFacts {
    pub user_name: String,
    pub active: bool,
    pub groups: Vec<(String, String)>,
}

/// The users in mapped groups, by user id. Users in no mapped group are absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub users: BTreeMap<String, UserFacts>,
}

/// Why a change is refused; the message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error(
        "user {user:?} would be in {} groups of exclusive class {class:?} ({}); a user may be in one: remove it from the other group first",
        groups.len(),
        groups.iter().map(|g| format!("{g:?}")).collect::<Vec<_>>().join(", ")
    )]
    Exclusive { user: String, class: String, groups: Vec<String> },
    #[error(
        "entitlement {entitlement:?} has {seats} seat(s) (policy.seats) and this change would give it to {holders} active user(s) (new: {}); free a seat or raise the limit",
        new.iter().map(|u| format!("{u:?}")).collect::<Vec<_>>().join(", ")
    )]
    Seats { entitlement: String, seats: u64, holders: u64, new: Vec<String> },
    #[error(
        "role {role:?} must keep at least {min} active holder(s) (policy.keep_at_least) and this change would leave {left} (it removes it from {}); give the role to another user first",
        lost.iter().map(|u| format!("{u:?}")).collect::<Vec<_>>().join(", ")
    )]
    KeepAtLeast { role: String, min: u64, left: u64, lost: Vec<String> },
}

/// Holder ids by role or entitlement.
type Holders<'a> = BTreeMap<&'a str, BTreeSet<&'a str>>;

/// A snapshot evaluated once: each user's access and exclusive-class groups. Grants are
/// computed once per distinct group name (a 2,000-member group is one regex match, not
/// 2,000).
struct Evaluated<'a> {
    snap: &'a Snapshot,
    access: BTreeMap<&'a str, Access>,
    classes: BTreeMap<&'a str, BTreeMap<String, Vec<String>>>,
}

impl<'a> Evaluated<'a> {
    fn new(policy: &Policy, snap: &'a Snapshot) -> Self {
        let mut cache: HashMap<&str, Vec<Grant>> = HashMap::new();
        let mut access = BTreeMap::new();
        let mut classes = BTreeMap::new();
        for (id, u) in &snap.users {
            let mut grants = Vec::new();
            let mut by_class: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (_, name) in &u.groups {
                let g = cache.entry(name.as_str()).or_insert_with(|| policy.grants(name));
                let cs: BTreeSet<&String> = g.iter().filter_map(|x| x.class.as_ref()).collect();
                for c in cs {
                    by_class.entry(c.clone()).or_default().push(name.clone());
                }
                grants.extend(g.iter().cloned());
            }
            access.insert(id.as_str(), policy.resolve(&grants).0);
            classes.insert(id.as_str(), by_class);
        }
        Evaluated { snap, access, classes }
    }

    /// A user absent from the snapshot is in no mapped group.
    fn access_of(&self, policy: &Policy, id: &str) -> Access {
        self.access.get(id).cloned().unwrap_or_else(|| policy.access(std::iter::empty()))
    }

    /// Active users holding each role / entitlement.
    fn holders(&self) -> (Holders<'_>, Holders<'_>) {
        let mut roles: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        let mut ents: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (id, a) in &self.access {
            if !self.snap.users[*id].active {
                continue;
            }
            for r in &a.roles {
                roles.entry(r.as_str()).or_default().insert(id);
            }
            for e in &a.entitlements {
                ents.entry(e.as_str()).or_default().insert(id);
            }
        }
        (roles, ents)
    }
}

fn name_of<'a>(a: &'a Snapshot, b: &'a Snapshot, id: &'a str) -> &'a str {
    a.users.get(id).or_else(|| b.users.get(id)).map(|u| u.user_name.as_str()).unwrap_or(id)
}

/// Refuse the change from `before` to `after` if it breaks a constraint it did not break
/// already; otherwise the users (ids) whose effective access differs, whom the app must
/// hear of (users absent from `after` because they were deleted are the caller's to skip).
/// Checks run in a fixed order (classes, seats, holders) so the error is stable.
pub fn evaluate(policy: &Policy, before: &Snapshot, after: &Snapshot) -> Result<Vec<String>, Violation> {
    let (eb, ea) = (Evaluated::new(policy, before), Evaluated::new(policy, after));
    let none = BTreeMap::new();
    for (id, classes) in &ea.classes {
        let was = eb.classes.get(id).unwrap_or(&none);
        for (class, groups) in classes {
            let had = was.get(class).map_or(0, Vec::len);
            if groups.len() > 1 && groups.len() > had {
                return Err(Violation::Exclusive {
                    user: name_of(after, before, id).to_string(),
                    class: class.clone(),
                    groups: groups.clone(),
                });
            }
        }
    }
    let (roles_before, ents_before) = eb.holders();
    let (roles_after, ents_after) = ea.holders();
    let empty = BTreeSet::new();
    for (ent, seats) in &policy.seats {
        let now = ents_after.get(ent.as_str()).unwrap_or(&empty);
        let was = ents_before.get(ent.as_str()).unwrap_or(&empty);
        if now.len() as u64 > *seats && now.len() > was.len() {
            let new = now.difference(was).map(|id| name_of(after, before, id).to_string()).collect();
            return Err(Violation::Seats { entitlement: ent.clone(), seats: *seats, holders: now.len() as u64, new });
        }
    }
    for (role, min) in &policy.keep_at_least {
        let now = roles_after.get(role.as_str()).unwrap_or(&empty);
        let was = roles_before.get(role.as_str()).unwrap_or(&empty);
        if (now.len() as u64) < *min && now.len() < was.len() {
            let lost = was.difference(now).map(|id| name_of(before, after, id).to_string()).collect();
            return Err(Violation::KeepAtLeast { role: role.clone(), min: *min, left: now.len() as u64, lost });
        }
    }
    let ids: BTreeSet<&String> = before.users.keys().chain(after.users.keys()).collect();
    Ok(ids
        .into_iter()
        .filter(|id| eb.access_of(policy, id) != ea.access_of(policy, id))
        .map(|id| id.to_string())
        .collect())
}

/// Whether the change from `before` to `after` (facts of the touched users only) gives a
/// seat-limited entitlement more holders or a kept role fewer: only then do the seat and
/// keep-at-least checks need the counts over every user.
pub fn needs_counts(policy: &Policy, before: &Snapshot, after: &Snapshot) -> bool {
    if policy.seats.is_empty() && policy.keep_at_least.is_empty() {
        return false;
    }
    let (eb, ea) = (Evaluated::new(policy, before), Evaluated::new(policy, after));
    let ((rb, enb), (ra, ena)) = (eb.holders(), ea.holders());
    let n = |m: &BTreeMap<&str, BTreeSet<&str>>, k: &str| m.get(k).map_or(0, BTreeSet::len);
    policy.seats.keys().any(|e| n(&ena, e) > n(&enb, e)) || policy.keep_at_least.keys().any(|r| n(&ra, r) < n(&rb, r))
}

/// The whole state before a change, from the whole state after it and the touched users'
/// facts before it: everyone else is unchanged.
pub fn splice(all_after: &Snapshot, touched: &BTreeSet<String>, touched_before: &Snapshot) -> Snapshot {
    let mut users: BTreeMap<String, UserFacts> =
        all_after.users.iter().filter(|(id, _)| !touched.contains(*id)).map(|(k, v)| (k.clone(), v.clone())).collect();
    users.extend(touched_before.users.iter().map(|(k, v)| (k.clone(), v.clone())));
    Snapshot { users }
}

/// [`evaluate`]'s verdict alone.
pub fn check(policy: &Policy, before: &Snapshot, after: &Snapshot) -> Result<(), Violation> {
    evaluate(policy, before, after).map(|_| ())
}

/// [`evaluate`]'s changed users, ignoring any violation.
pub fn access_changed(policy: &Policy, before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let (eb, ea) = (Evaluated::new(policy, before), Evaluated::new(policy, after));
    let ids: BTreeSet<&String> = before.users.keys().chain(after.users.keys()).collect();
    ids.into_iter().filter(|id| eb.access_of(policy, id) != ea.access_of(policy, id)).map(|id| id.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::super::{GroupRuleConfig, PolicyConfig};
    use super::*;

    fn policy() -> Policy {
        Policy::compile(&PolicyConfig {
            group_rules: vec![
                GroupRuleConfig {
                    regex: Some(r"^(?P<plan>.+)-(?P<product>[^-]+)-(?P<sub>sub_\w+)$".into()),
                    entitlement: Some("{sub}".into()),
                    class: Some("licence".into()),
                    ..Default::default()
                },
                GroupRuleConfig {
                    contains: Some("admin".into()),
                    role: Some("admin".into()),
                    class: Some("role".into()),
                    ..Default::default()
                },
                GroupRuleConfig {
                    contains: Some("member".into()),
                    role: Some("member".into()),
                    class: Some("role".into()),
                    ..Default::default()
                },
            ],
            seats: [("sub_A".to_string(), 2)].into(),
            keep_at_least: [("admin".to_string(), 1)].into(),
            ..Default::default()
        })
        .unwrap()
    }

    fn snap(users: &[(&str, bool, &[&str])]) -> Snapshot {
        Snapshot {
            users: users
                .iter()
                .map(|(id, active, groups)| {
                    (
                        id.to_string(),
                        UserFacts {
                            user_name: format!("{id}@example.com"),
                            active: *active,
                            groups: groups.iter().map(|g| (format!("id-{g}"), g.to_string())).collect(),
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn exclusive_class() {
        let p = policy();
        let before = snap(&[("u", true, &["Ent-AWS-sub_A"])]);
        let after = snap(&[("u", true, &["Ent-AWS-sub_A", "Pro-GCP-sub_B"])]);
        let e = check(&p, &before, &after).unwrap_err();
        assert!(matches!(&e, Violation::Exclusive { class, .. } if class == "licence"), "{e}");
        assert!(e.to_string().contains("u@example.com"), "{e}");
        // Already two (config tightened later): removing one is fine, adding none is fine.
        assert_eq!(check(&p, &after, &after), Ok(()));
        assert_eq!(check(&p, &after, &before), Ok(()));
    }

    #[test]
    fn seats_count_active_users_only() {
        let p = policy();
        let two = snap(&[("a", true, &["E-X-sub_A"]), ("b", true, &["E-X-sub_A"]), ("c", false, &["E-X-sub_A"])]);
        let three = snap(&[("a", true, &["E-X-sub_A"]), ("b", true, &["E-X-sub_A"]), ("c", true, &["E-X-sub_A"])]);
        assert_eq!(check(&p, &snap(&[]), &two), Ok(()));
        let e = check(&p, &two, &three).unwrap_err();
        assert_eq!(
            e,
            Violation::Seats { entitlement: "sub_A".into(), seats: 2, holders: 3, new: vec!["c@example.com".into()] }
        );
    }

    #[test]
    fn last_admin_stays() {
        let p = policy();
        let one = snap(&[("a", true, &["Admins"]), ("m", true, &["Members"])]);
        for after in [
            snap(&[("m", true, &["Members"])]),
            snap(&[("a", false, &["Admins"]), ("m", true, &["Members"])]),
            snap(&[("a", true, &["Members"]), ("m", true, &["Members"])]),
        ] {
            let e = check(&p, &one, &after).unwrap_err();
            assert!(matches!(&e, Violation::KeepAtLeast { left: 0, .. }), "{e}");
        }
        // A second admin first, then the first may go.
        let two = snap(&[("a", true, &["Admins"]), ("m", true, &["Admins"])]);
        assert_eq!(check(&p, &two, &snap(&[("m", true, &["Admins"])])), Ok(()));
        // The role move: in one role group at a time.
        let e = check(&p, &one, &snap(&[("a", true, &["Admins"]), ("m", true, &["Members", "Admins"])])).unwrap_err();
        assert!(matches!(e, Violation::Exclusive { .. }));
    }

    #[test]
    fn counts_are_needed_only_for_growing_seats_or_shrinking_minimums() {
        let p = policy();
        let none = snap(&[]);
        assert!(needs_counts(&p, &none, &snap(&[("a", true, &["E-X-sub_A"])])), "a seat taken");
        assert!(!needs_counts(&p, &snap(&[("a", true, &["E-X-sub_A"])]), &none), "a seat freed");
        assert!(
            needs_counts(&p, &snap(&[("a", true, &["Admins"])]), &snap(&[("a", false, &["Admins"])])),
            "an admin lost"
        );
        assert!(!needs_counts(&p, &none, &snap(&[("a", true, &["Admins"]), ("b", true, &["Members"])])));
        // Splicing: the touched user's earlier facts replace its later ones; others stay.
        let all_after = snap(&[("a", true, &["Members"]), ("b", true, &["Admins"])]);
        let touched: BTreeSet<String> = ["a".to_string()].into();
        let before = splice(&all_after, &touched, &snap(&[("a", true, &["Admins"])]));
        assert_eq!(before, snap(&[("a", true, &["Admins"]), ("b", true, &["Admins"])]));
        let gone = splice(&all_after, &touched, &none);
        assert_eq!(gone, snap(&[("b", true, &["Admins"])]));
    }

    #[test]
    fn changed_access_is_found() {
        let p = policy();
        let before = snap(&[("a", true, &["Admins"]), ("b", true, &["Members"])]);
        let after = snap(&[("a", false, &["Admins"]), ("c", true, &["Members"])]);
        assert_eq!(access_changed(&p, &before, &after), vec!["b".to_string(), "c".to_string()]);
    }
}
