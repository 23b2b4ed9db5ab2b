//! The outbox on PostgreSQL held to SQLite's: the same writes, claims (with the deletion
//! guard tripping and holding), completions of every kind and operator actions on both
//! backends leave the same rows, attempts, guard state, id map and audit records.

use std::time::Duration;

use serde_json::{Value, json};
use testpg::TestPg;

use crate::model::ResourceKind;
use crate::model::{MemberDelta, MemberRef};
use crate::store::face::{AuditStore, OutboxStore, ResourceStore, TokenStore};
use crate::store::{AuditQuery, Claimed, Completion, GuardPolicy, NewAudit, NewResource, OutboxRow, OutboxState};

fn audit(method: &str) -> NewAudit {
    NewAudit::new("test", method, "outbox")
}

/// What a row is, without the times each backend stamps.
fn row(r: &OutboxRow) -> Value {
    json!({
        "id": r.id, "type": r.kind.as_str(), "resource": r.resource_id, "op": r.op.as_str(), "version": r.version,
        "payload": r.payload.to_json(), "state": r.state.as_str(), "attempts": r.attempts,
        "last_error": r.last_error, "done": r.done_at.is_some(), "coalesced_into": r.coalesced_into,
        "next_attempt_at": r.next_attempt_at.is_some(),
    })
}

fn claimed(c: &Claimed) -> Value {
    json!({
        "bundles": c.bundles.iter().map(|b| b.rows.iter().map(row).collect::<Vec<_>>()).collect::<Vec<_>>(),
        "tripped": c.tripped.as_ref().map(|t| (t.count, t.provisioned)),
        "held": c.held,
    })
}

/// Everything an operator or the status page can read of the outbox, times left out.
async fn snapshot(o: &dyn OutboxStore, ids: &[&str]) -> Value {
    let rows: Vec<Value> = o.list(None, 1000).await.unwrap().iter().map(row).collect();
    let done: Vec<Value> = o.list(Some(OutboxState::Done), 1000).await.unwrap().iter().map(row).collect();
    let mut attempts = Vec::new();
    for r in o.list(None, 1000).await.unwrap().iter().chain(o.list(Some(OutboxState::Done), 1000).await.unwrap().iter())
    {
        let (_, a) = o.get(r.id).await.unwrap().unwrap();
        attempts.push(json!([r.id, a.iter().map(|a| (a.outcome.clone(), a.detail.clone())).collect::<Vec<_>>()]));
    }
    let guard = o.guard_status().await.unwrap();
    let held: Vec<Value> = o
        .held_changes(100)
        .await
        .unwrap()
        .iter()
        .map(|h| json!([h.outbox_id, h.kind, h.resource_id, h.name, h.op]))
        .collect();
    let recent: Vec<Value> = o
        .recent_attempts(100, false)
        .await
        .unwrap()
        .iter()
        .map(|a| json!([a.outbox_id, a.kind, a.resource_id, a.name, a.op, a.outcome, a.detail]))
        .collect();
    let failures = o.recent_attempts(100, true).await.unwrap().len();
    let mut per_resource = Vec::new();
    for id in ids {
        per_resource.push(json!([
            id,
            o.app_id(id).await.unwrap(),
            o.has_undelivered(id).await.unwrap(),
            o.rows_of(id).await.unwrap().iter().map(|(op, v, _)| (op.clone(), *v)).collect::<Vec<_>>(),
        ]));
    }
    json!({
        "rows": rows, "done": done, "attempts": attempts,
        "guard": [guard.tripped_at.is_some(), guard.trip_count, guard.held],
        "held": held, "recent": recent, "failures": failures,
        "depth": o.depth().await.unwrap().0, "counts": o.counts().await.unwrap(),
        "resources": per_resource,
    })
}

/// One step on both backends, answers compared, then everything readable compared.
macro_rules! both {
    ($what:expr, $sqlite:expr, $pg:expr, $o:ident, $call:expr) => {{
        let a = {
            let $o: &dyn OutboxStore = $sqlite.outbox();
            $call
        };
        let b = {
            let $o: &dyn OutboxStore = &$pg;
            $call
        };
        assert_eq!(a, b, "{}: answers differ (left SQLite, right PostgreSQL)", $what);
        a
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_completions_and_operator_actions_leave_the_same_outbox_as_on_sqlite() {
    let pg = TestPg::start().unwrap();
    let db = pg.create_database().unwrap();
    let p = super::fixture::open_pg(&pg, &db, 4).await;
    let (_dir, s) = super::fixture::open_sqlite();
    let ids = ["u1", "u2", "u3", "u4", "u5", "u6", "g1"];
    let compare = |what: &'static str| {
        let (s, p) = (&s, &p);
        async move {
            assert_eq!(snapshot(s.outbox(), &ids).await, snapshot(p, &ids).await, "{what}: outbox differs");
        }
    };

    // Writes: six users, a group of two, a user changed twice, three users deleted.
    let user = |id: &str| NewResource {
        kind: ResourceKind::User,
        id: id.into(),
        attrs: json!({"userName": format!("{id}@example.com")}).as_object().unwrap().clone(),
        members: vec![],
    };
    for id in &ids[..6] {
        s.resources().create(user(id), audit("POST")).await.unwrap();
        ResourceStore::create(&p, user(id), audit("POST"), None).await.unwrap();
    }
    let members = vec![
        MemberRef { id: "u1".into(), kind: None, display: None },
        MemberRef { id: "u2".into(), kind: None, display: None },
    ];
    let group = NewResource {
        kind: ResourceKind::Group,
        id: "g1".into(),
        attrs: json!({"displayName": "Staff"}).as_object().unwrap().clone(),
        members,
    };
    s.resources().create(group.clone(), audit("POST")).await.unwrap();
    ResourceStore::create(&p, group, audit("POST"), None).await.unwrap();
    for n in 0..2 {
        let upd = crate::store::Update {
            kind: ResourceKind::User,
            id: "u1".into(),
            expected_version: None,
            attrs: Some(json!({"userName": "u1@example.com", "title": format!("t{n}")}).as_object().unwrap().clone()),
            members: MemberDelta::default(),
        };
        s.resources().update(upd.clone(), audit("PATCH")).await.unwrap();
        ResourceStore::update(&p, upd, audit("PATCH"), None).await.unwrap();
    }
    for id in ["u3", "u4", "u5"] {
        s.resources().delete(ResourceKind::User, id, None, audit("DELETE")).await.unwrap();
        ResourceStore::delete(&p, ResourceKind::User, id, None, audit("DELETE"), None).await.unwrap();
    }
    compare("after the writes").await;

    // A claim with a guard that trips on the three deletions: they are held, the rest leased.
    let lease = crate::model::time_after(Duration::from_secs(600));
    let guard = || GuardPolicy {
        threshold_count: 2,
        threshold_share: 1.0,
        share_min_count: 1000,
        window_start: "2000-01-01T00:00:00.000Z".into(),
        delayed_after: None,
    };
    let c = both!("claim", s, p, o, claimed(&o.claim(100, 10, lease.clone(), Some(guard())).await.unwrap()));
    compare("after the tripping claim").await;
    // Leased rows are not claimed again.
    both!("claim again", s, p, o, claimed(&o.claim(100, 10, lease.clone(), Some(guard())).await.unwrap()));

    // Each bundle ends a different way.
    let sc = s.outbox().list(Some(OutboxState::InFlight), 100).await.unwrap();
    let pc = OutboxStore::list(&p, Some(OutboxState::InFlight), 100).await.unwrap();
    assert_eq!(sc.iter().map(row).collect::<Vec<_>>(), pc.iter().map(row).collect::<Vec<_>>());
    let bundles = c["bundles"].as_array().unwrap().len();
    assert!(bundles >= 4, "{c}");
    let completions = |i: usize, id: &str| match i % 5 {
        0 => Completion::Success {
            id_map: Some(Some(format!("app-{id}"))),
            applied: Some((1, json!({"userName": id}).as_object().unwrap().clone())),
            note: Some("found by userName".into()),
            recreated: false,
        },
        1 => Completion::Retry { next_attempt_at: lease.clone(), error: "HTTP 503".into() },
        2 => Completion::Dead { error: "HTTP 400: bad".into() },
        3 => Completion::Waiting { next_attempt_at: lease.clone(), reason: "member u9 not provisioned".into() },
        _ => Completion::Skipped { reason: "protected".into() },
    };
    let group_bundles = |rows: Vec<OutboxRow>| {
        let mut out: Vec<crate::store::Bundle> = Vec::new();
        for r in rows {
            match out.last_mut() {
                Some(b) if b.head().resource_id == r.resource_id => b.rows.push(r),
                _ => out.push(crate::store::Bundle { rows: vec![r] }),
            }
        }
        out
    };
    for (i, (sb, pb)) in group_bundles(sc).iter().zip(group_bundles(pc).iter()).enumerate() {
        let done = completions(i, &sb.head().resource_id);
        s.outbox().complete(sb, crate::model::now(), done.clone()).await.unwrap();
        p.complete(pb, crate::model::now(), done).await.unwrap();
    }
    compare("after the completions").await;

    // Operator actions, each audited.
    both!("retry dead", s, p, o, o.retry_dead(None, audit("outbox retry")).await.unwrap());
    both!("retry nothing", s, p, o, o.retry_dead(Some(999), audit("outbox retry")).await.unwrap());
    both!("resync", s, p, o, o.resync(ResourceKind::User, "u2", audit("outbox resync")).await.unwrap());
    let unknown = both!(
        "resync unknown",
        s,
        p,
        o,
        o.resync(ResourceKind::User, "nope", audit("outbox resync")).await.map_err(|e| e.to_string())
    );
    assert!(unknown.is_err(), "{unknown:?}");
    let undelivered = s.outbox().list(Some(OutboxState::Retry), 100).await.unwrap();
    let victim = undelivered.first().expect("a row to drop").id;
    both!("drop", s, p, o, o.drop_row(victim, audit("outbox drop")).await.unwrap());
    both!("drop again", s, p, o, o.drop_row(victim, audit("outbox drop")).await.unwrap());
    compare("after the operator's actions").await;
    both!(
        "discard held",
        s,
        p,
        o,
        o.discard_held(audit("outbox discard")).await.unwrap().iter().map(row).collect::<Vec<_>>()
    );
    both!("release held (none left)", s, p, o, o.release_held(audit("outbox release")).await.unwrap());
    compare("after the guard's reset").await;

    // A crash leaves leases: recovery makes them due again.
    both!("claim after reset", s, p, o, claimed(&o.claim(100, 10, lease.clone(), Some(guard())).await.unwrap()));
    both!("recover", s, p, o, o.recover().await.unwrap());
    compare("after recovery").await;

    // Tokens: each backend verifies what it issued, in constant time, until revoked; the
    // issue and the revocation are audited, revoking twice is no action.
    for (name, t) in [("SQLite", s.tokens()), ("PostgreSQL", &p as &dyn TokenStore)] {
        let tok = t.create("okta", NewAudit::new("test", "token create", "token")).await.unwrap();
        assert_eq!(t.verify(&tok.token).await.unwrap().map(|i| i.id), Some(tok.id.clone()), "{name}");
        // The last hex digit changed (to another digit: a fixed one would equal it 1 time in 16).
        let last = if tok.token.ends_with('0') { '1' } else { '0' };
        let forged = format!("{}{last}", &tok.token[..tok.token.len() - 1]);
        assert_eq!(t.verify(&forged).await.unwrap(), None, "{name}");
        assert_eq!(t.verify("not-a-token").await.unwrap(), None, "{name}");
        assert!(t.revoke(&tok.id, NewAudit::new("test", "token revoke", "token")).await.unwrap(), "{name}");
        assert!(!t.revoke(&tok.id, NewAudit::new("test", "token revoke", "token")).await.unwrap(), "{name}");
        assert_eq!(t.verify(&tok.token).await.unwrap(), None, "{name}: a revoked token still works");
        let listed = t.list().await.unwrap();
        assert_eq!(listed.len(), 1, "{name}");
        assert!(listed[0].revoked_at.is_some(), "{name}");
    }
    let token_audits = |a: Vec<crate::store::AuditRecord>| {
        a.into_iter()
            .filter(|r| r.resource_type == "token")
            .map(|r| (r.method, r.summary.get("label").cloned(), r.summary.get("count").cloned()))
            .collect::<Vec<_>>()
    };
    let q = || AuditQuery { limit: 1000, ..Default::default() };
    assert_eq!(
        token_audits(s.audit().list(q()).await.unwrap()),
        token_audits(AuditStore::list(&p, q()).await.unwrap())
    );
    assert_eq!(token_audits(s.audit().list(q()).await.unwrap()).len(), 2);

    let audits = |a: Vec<crate::store::AuditRecord>| {
        a.into_iter()
            .filter(|r| r.resource_type == "outbox")
            .map(|r| json!([r.actor, r.method, r.resource_type, r.resource_id, r.resource_name, r.version, r.summary]))
            .collect::<Vec<_>>()
    };
    assert_eq!(audits(s.audit().list(q()).await.unwrap()), audits(AuditStore::list(&p, q()).await.unwrap()));
    s.close();
}

/// A PostgreSQL store (on a cluster of its own, kept alive by the first value) holding users
/// `u0`..`u{n-1}`, shared by concurrent tasks.
async fn store_with_users(n: usize) -> (TestPg, std::sync::Arc<super::PgStore>) {
    let pg = TestPg::start().unwrap();
    let db = pg.create_database().unwrap();
    let p = std::sync::Arc::new(super::fixture::open_pg(&pg, &db, 8).await);
    for i in 0..n {
        let new = NewResource {
            kind: ResourceKind::User,
            id: format!("u{i}"),
            attrs: json!({"userName": format!("u{i}@example.com")}).as_object().unwrap().clone(),
            members: vec![],
        };
        ResourceStore::create(&*p, new, audit("POST"), None).await.unwrap();
    }
    (pg, p)
}

/// Deletions committed while claims run cannot slip past the deletion guard: however the
/// commits interleave with a claim's statements, no more deprovisionings are claimed than
/// the threshold lets through. (Without the guard's lock, one committed between the count
/// and the pick of due rows went out uncounted: threshold + 1 reached the app.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deletions_never_slip_past_the_deletion_guard() {
    const USERS: usize = 48;
    const THRESHOLD: u64 = 3;
    let (_pg, p) = store_with_users(USERS).await;
    let guard = || GuardPolicy {
        threshold_count: THRESHOLD,
        threshold_share: 1.0,
        share_min_count: 1000,
        window_start: "2000-01-01T00:00:00.000Z".into(),
        delayed_after: None,
    };
    let lease = || crate::model::time_after(Duration::from_secs(600));
    // Deliver the creates, so only deletions are left to claim.
    loop {
        let c = p.claim(100, 10, lease(), Some(guard())).await.unwrap();
        if c.bundles.is_empty() {
            break;
        }
        for b in &c.bundles {
            p.complete(b, crate::model::now(), Completion::Skipped { reason: "test".into() }).await.unwrap();
        }
    }
    let deleters: Vec<_> = (0..6)
        .map(|t| {
            let p = p.clone();
            tokio::spawn(async move {
                for i in (t..USERS).step_by(6) {
                    ResourceStore::delete(&*p, ResourceKind::User, &format!("u{i}"), None, audit("DELETE"), None)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let mut claimed_deletions = 0;
    let mut done = false;
    while !done {
        done = deleters.iter().all(|d| d.is_finished());
        let c = p.claim(100, 10, lease(), Some(guard())).await.unwrap();
        for b in &c.bundles {
            claimed_deletions += b.rows.iter().filter(|r| r.payload.deprovision).count() as u64;
            p.complete(b, crate::model::now(), Completion::Skipped { reason: "test".into() }).await.unwrap();
        }
    }
    for d in deleters {
        d.await.unwrap();
    }
    let status = p.guard_status().await.unwrap();
    assert!(status.tripped_at.is_some(), "{USERS} deletions trip the guard");
    assert!(claimed_deletions <= THRESHOLD, "{claimed_deletions} deletions let through, the threshold is {THRESHOLD}");
    assert_eq!(status.held + claimed_deletions, USERS as u64, "every other deletion is held");
}

/// Member adds coalesced into a group's queued update while claims take rows in flight:
/// every added member leaves in some claimed row (a merge into a row already read by a
/// claim, or already on its way, lost it: the app never got that member).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_adds_coalesced_while_claims_run_are_all_delivered() {
    const USERS: usize = 96;
    let (_pg, p) = store_with_users(USERS).await;
    let group = NewResource {
        kind: ResourceKind::Group,
        id: "g".into(),
        attrs: json!({"displayName": "G"}).as_object().unwrap().clone(),
        members: vec![],
    };
    ResourceStore::create(&*p, group, audit("POST"), None).await.unwrap();
    let lease = || crate::model::time_after(Duration::from_secs(600));
    let success = || Completion::Success { id_map: None, applied: None, note: None, recreated: false };
    loop {
        let c = p.claim(100, 10, lease(), None).await.unwrap();
        if c.bundles.is_empty() {
            break;
        }
        for b in &c.bundles {
            p.complete(b, crate::model::now(), success()).await.unwrap();
        }
    }
    let adders: Vec<_> = (0..4)
        .map(|t| {
            let p = p.clone();
            tokio::spawn(async move {
                for i in (t..USERS).step_by(4) {
                    let upd = crate::store::Update {
                        kind: ResourceKind::Group,
                        id: "g".into(),
                        expected_version: None,
                        attrs: None,
                        members: MemberDelta {
                            add: vec![MemberRef { id: format!("u{i}"), kind: None, display: None }],
                            ..MemberDelta::default()
                        },
                    };
                    ResourceStore::update(&*p, upd, audit("PATCH"), None).await.unwrap();
                }
            })
        })
        .collect();
    let mut delivered = std::collections::BTreeSet::new();
    loop {
        let writing = !adders.iter().all(|a| a.is_finished());
        let c = p.claim(100, 10, lease(), None).await.unwrap();
        for b in &c.bundles {
            for r in &b.rows {
                delivered.extend(r.payload.members_added.iter().cloned());
            }
            p.complete(b, crate::model::now(), success()).await.unwrap();
        }
        if !writing && c.bundles.is_empty() {
            break;
        }
    }
    for a in adders {
        a.await.unwrap();
    }
    let want: std::collections::BTreeSet<String> = (0..USERS).map(|i| format!("u{i}")).collect();
    let lost: Vec<&String> = want.difference(&delivered).collect();
    assert!(lost.is_empty(), "{} member adds never left the outbox: {lost:?}", lost.len());
}
