//! The provisioning policy on PostgreSQL: the same policed writes on SQLite (the reference)
//! and on PostgreSQL give the same verdicts, word for word, and leave the same outbox rows
//! (access changes included); and concurrent policed writes on two stores of one database
//! (two nodes) pass exactly as many as the constraints allow.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use testpg::TestPg;

use super::*;
use crate::model::{MemberDelta, MemberRef, ResourceKind};
use crate::policy::{GroupRuleConfig, Policy, PolicyConfig, account::AccountPolicy};
use crate::store::{Load, NewAudit, NewResource, Store, Update};

fn audit() -> NewAudit {
    NewAudit::new("test", "TEST", "test")
}

fn attrs(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn m(id: &str) -> MemberRef {
    MemberRef { id: id.into(), kind: None, display: None }
}

/// Licence groups `{PLAN}-{PRODUCT}-{sub}` (one per user, `seats` on `sub_A`), role groups
/// by substring (one per user, at least one admin), and the account checks.
fn policy(seats: u64, account: AccountPolicy) -> Arc<Policy> {
    Arc::new(
        Policy::compile(&PolicyConfig {
            group_rules: vec![
                GroupRuleConfig {
                    regex: Some(r"^(?P<plan>.+)-(?P<product>[^-]+)-(?P<sub>sub_\w+)$".into()),
                    entitlement: Some("{sub}".into()),
                    class: Some("licence".into()),
                    case_sensitive: true,
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
            seats: [("sub_A".to_string(), seats)].into(),
            keep_at_least: [("admin".to_string(), 1)].into(),
            account,
            ..Default::default()
        })
        .unwrap(),
    )
}

fn user(id: &str, email: &str) -> NewResource {
    NewResource {
        kind: ResourceKind::User,
        id: id.into(),
        attrs: attrs(json!({"userName": id, "externalId": format!("x-{id}"), "emails": [{"value": email}]})),
        members: vec![],
    }
}

fn group(id: &str, name: &str, members: &[&str]) -> NewResource {
    NewResource {
        kind: ResourceKind::Group,
        id: id.into(),
        attrs: attrs(json!({"displayName": name})),
        members: members.iter().map(|id| m(id)).collect(),
    }
}

fn add(id: &str, members: &[&str]) -> Update {
    Update {
        kind: ResourceKind::Group,
        id: id.into(),
        expected_version: None,
        attrs: None,
        members: MemberDelta { add: members.iter().map(|id| m(id)).collect(), ..Default::default() },
    }
}

fn remove(id: &str, members: &[&str]) -> Update {
    Update {
        kind: ResourceKind::Group,
        id: id.into(),
        expected_version: None,
        attrs: None,
        members: MemberDelta { remove: members.iter().map(|s| s.to_string()).collect(), ..Default::default() },
    }
}

fn rename(id: &str, name: &str) -> Update {
    Update {
        kind: ResourceKind::Group,
        id: id.into(),
        expected_version: None,
        attrs: Some(attrs(json!({"displayName": name}))),
        members: MemberDelta::default(),
    }
}

fn set_user(id: &str, email: &str, active: bool) -> Update {
    let mut u = user(id, email).attrs;
    u.insert("active".into(), active.into());
    Update {
        kind: ResourceKind::User,
        id: id.into(),
        expected_version: None,
        attrs: Some(u),
        members: MemberDelta::default(),
    }
}

enum Step {
    Create(NewResource),
    Update(Update),
    Delete(ResourceKind, &'static str),
}

/// A step's outcome, comparable across the backends: `ok`, or the error's kind and text.
async fn apply(s: &Store, step: &Step) -> Result<(), String> {
    let r = match step {
        Step::Create(n) => s.resources().create(n.clone(), audit()).await.map(|_| ()),
        Step::Update(u) => s.resources().update(u.clone(), audit()).await.map(|_| ()),
        Step::Delete(kind, id) => s.resources().delete(*kind, id, None, audit()).await,
    };
    r.map_err(|e| match e {
        // The deletion's time differs between the backends' runs; the rest is compared.
        StoreError::Policy(t) => match (t.find(" was deleted at "), t.find(" and policy.account")) {
            (Some(a), Some(b)) => format!("policy: {}{}", &t[..a], &t[b..]),
            _ => format!("policy: {t}"),
        },
        StoreError::Unique { attribute, value } => format!("unique: {attribute} {value}"),
        e => format!("other: {e}"),
    })
}

/// Every outbox row (resource, op, version, payload) in id order.
async fn outbox(s: &Store, ids: &[&str]) -> Vec<(String, String, u64, Value)> {
    let mut out = Vec::new();
    for id in ids {
        for (op, v, p) in s.outbox().rows_of(id).await.unwrap() {
            out.push((id.to_string(), op, v, serde_json::from_str(&p).unwrap()));
        }
    }
    out
}

/// The same policed writes on both backends: every verdict the same (refusals word for
/// word, nothing of a refused write left behind), the same access changes queued, the same
/// audit trail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policed_writes_give_the_same_verdicts_and_outbox_as_on_sqlite() {
    let pg = TestPg::start().unwrap();
    let db = pg.create_database().unwrap();
    let p = super::fixture::open_pg(&pg, &db, 4).await;
    let (_dir, s) = super::fixture::open_sqlite();
    let policy = policy(2, AccountPolicy { unique_emails: true, reprovision_deleted: false, ..Default::default() });
    let s = s.with_policy(policy.clone());
    let p = Store::from_backend(Arc::new(p)).with_policy(policy);
    use ResourceKind::{Group, User};
    use Step::*;
    let reborn_by_external_id = NewResource {
        kind: User,
        id: "c3".into(),
        attrs: attrs(json!({"userName": "carol", "externalId": "x-c"})),
        members: vec![],
    };
    let steps: Vec<(&str, Step, bool)> = vec![
        ("create a", Create(user("a", "a@x.example")), true),
        ("create b", Create(user("b", "b@x.example")), true),
        ("create c", Create(user("c", "c@x.example")), true),
        ("create d", Create(user("d", "d@x.example")), true),
        ("a taken email", Create(user("e", "A@x.example")), false),
        ("email taken by an update", Update(set_user("d", "b@x.example", true)), false),
        ("the first admin", Create(group("admins", "Admins", &["a"])), true),
        ("an unmapped group", Create(group("staff", "Staff", &["a", "b", "c", "d"])), true),
        ("the member group", Create(group("members", "Members", &[])), true),
        ("licence group", Create(group("lic", "Ent-AWS-sub_A", &[])), true),
        ("other licence group", Create(group("lic2", "Pro-GCP-sub_B", &[])), true),
        ("two seats", Update(add("lic", &["a", "b"])), true),
        ("a third seat", Update(add("lic", &["c"])), false),
        ("a second licence", Update(add("lic2", &["a"])), false),
        ("a second role group", Update(add("members", &["a"])), false),
        ("the last admin removed", Update(remove("admins", &["a"])), false),
        ("a second admin", Update(add("admins", &["b"])), true),
        ("then the first may go", Update(remove("admins", &["a"])), true),
        ("members", Update(add("members", &["a", "c"])), true),
        ("the last admin deactivated", Update(set_user("b", "b@x.example", false)), false),
        ("the last admin deleted", Delete(User, "b"), false),
        ("the admin group deleted", Delete(Group, "admins"), false),
        ("a seat freed by deactivation", Update(set_user("a", "a@x.example", false)), true),
        ("the seat taken", Update(add("lic", &["c"])), true),
        ("no seat for a reactivation", Update(set_user("a", "a@x.example", true)), false),
        ("renamed out of the licence", Update(rename("lic", "Ent-AWS")), true),
        ("reactivated now", Update(set_user("a", "a@x.example", true)), true),
        ("renamed into it again, over the seats", Update(rename("lic", "Ent-AWS-sub_A")), false),
        ("unmapped rename", Update(rename("staff", "Everyone")), true),
        ("a member deleted", Delete(User, "c"), true),
        ("a deleted user back", Create(user("c", "c2@x.example")), false),
        ("by externalId", Create(NewResource { id: "c2".into(), ..user("c", "c3@x.example") }), false),
        ("by externalId alone", Create(reborn_by_external_id), false),
        ("a group renamed to admins", Update(rename("members", "Admins 2")), true),
        ("the old admin group deleted", Delete(Group, "admins"), true),
    ];
    for (what, step, want_ok) in &steps {
        let (a, b) = (apply(&s, step).await, apply(&p, step).await);
        assert_eq!(b, a, "{what}");
        assert_eq!(a.is_ok(), *want_ok, "{what}: {a:?}");
    }
    let ids = ["a", "b", "c", "c2", "c3", "d", "e", "admins", "staff", "members", "lic", "lic2"];
    let (a, b) = (outbox(&s, &ids).await, outbox(&p, &ids).await);
    assert_eq!(b, a);
    // Access changes were queued (a user's own version does not move for one).
    assert!(a.iter().any(|(_, _, _, p)| p["access_changed"] == json!(true)), "{a:?}");
    for id in ["a", "b", "d", "members", "lic"] {
        let kind = if id.len() == 1 { User } else { Group };
        let load = Load { members: true, groups: true };
        let (x, y) =
            (s.resources().get(kind, id, load).await.unwrap(), p.resources().get(kind, id, load).await.unwrap());
        let x = x.map(|r| (r.attrs, r.meta.version, r.members, r.groups));
        assert_eq!(y.map(|r| (r.attrs, r.meta.version, r.members, r.groups)), x, "{id}");
    }
    let trail = |s: &Store| {
        let s = s.clone();
        async move {
            let q = crate::store::AuditQuery { limit: 1000, ..Default::default() };
            s.audit()
                .list(q)
                .await
                .unwrap()
                .into_iter()
                .map(|a| (a.method, a.resource_id, a.version))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(trail(&p).await, trail(&s).await, "refused writes leave no audit record");
    s.close();
}

/// Two stores on one database (two nodes), each with a pool of connections: many users
/// grab a seat at once, each through a licence group of its own (so no row lock orders
/// them), and exactly `seats` pass; two admins leave their admin groups at once, and exactly
/// one may.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_seat_grabs_on_two_nodes_pass_exactly_as_many_as_there_are_seats() {
    const SEATS: u64 = 3;
    const USERS: usize = 16;
    let pg = TestPg::start().unwrap();
    let db = pg.create_database().unwrap();
    let policy = policy(SEATS, AccountPolicy::default());
    let nodes = [
        Store::from_backend(Arc::new(super::fixture::open_pg(&pg, &db, 8).await)).with_policy(policy.clone()),
        Store::from_backend(Arc::new(super::fixture::open_pg(&pg, &db, 8).await)).with_policy(policy),
    ];
    for i in 0..USERS {
        let n = &nodes[i % 2];
        n.resources().create(user(&format!("u{i}"), &format!("u{i}@x.example")), audit()).await.unwrap();
        n.resources().create(group(&format!("g{i}"), &format!("Plan{i}-X-sub_A"), &[]), audit()).await.unwrap();
    }
    for (g, u) in [("adm1", "u0"), ("adm2", "u1")] {
        nodes[0].resources().create(group(g, &format!("Admins {g}"), &[u]), audit()).await.unwrap();
    }
    let start = Arc::new(tokio::sync::Barrier::new(USERS + 2));
    let mut tasks = Vec::new();
    for i in 0..USERS {
        let (n, start) = (nodes[i % 2].clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            n.resources().update(add(&format!("g{i}"), &[&format!("u{i}")]), audit()).await.map(|_| ())
        }));
    }
    for (i, g) in ["adm1", "adm2"].into_iter().enumerate() {
        let (n, start) = (nodes[i].clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            n.resources().delete(ResourceKind::Group, g, None, audit()).await
        }));
    }
    let mut passed = (0, 0);
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(()) if i < USERS => passed.0 += 1,
            Ok(()) => passed.1 += 1,
            Err(StoreError::Policy(_)) => {}
            Err(e) => panic!("task {i}: {e}"),
        }
    }
    assert_eq!(passed, (SEATS, 1), "(seat grabs, admin group deletions) that passed");
    // And the database agrees: as many licence memberships as seats, one admin group left.
    let load = Load { members: true, groups: false };
    let offset = crate::store::Position::Offset(0);
    let groups = nodes[0].resources().list(ResourceKind::Group, None, None, offset, 100, load).await.unwrap().resources;
    let held: usize = groups
        .iter()
        .filter(|g| g.attrs["displayName"].as_str().unwrap().ends_with("-sub_A"))
        .map(|g| g.members.as_ref().unwrap().len())
        .sum();
    assert_eq!(held as u64, SEATS);
    assert_eq!(groups.iter().filter(|g| g.id.starts_with("adm")).count(), 1);
}

#[test]
fn the_policy_lock_is_not_the_migrations_lock() {
    for schema in ["scimsync", "tenant_a"] {
        assert_ne!(policy_facts::lock_key(schema), migrations::lock_key(schema));
    }
    assert_ne!(policy_facts::lock_key("scimsync"), policy_facts::lock_key("tenant_a"));
}
