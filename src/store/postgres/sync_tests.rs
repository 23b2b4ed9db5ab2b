//! Reconciliation's store on PostgreSQL held to SQLite's: the same writes and deliveries,
//! sync runs with their drift reports, a repair of every kind against dead, held and pending
//! rows, the matching of an app's listing and a switch from the dry run to a real target
//! leave the same answers, rows, attempts and audit records on both backends (ids included,
//! times left out).

use std::time::Duration;

use serde_json::{Map, Value, json};
use testpg::TestPg;

use super::*;
use crate::model::drift::{Cause, Change, DriftKind, DriftRow, Listed, Repair, RunReport, RunSummary};
use crate::model::{MemberDelta, MemberRef, ResourceKind};
use crate::store::face::{AuditStore, OutboxStore, ResourceStore, SyncStore};
use crate::store::{
    AppKey, AuditQuery, Completion, GuardPolicy, Matched, NewAudit, NewResource, OutboxRow, OutboxState, PageMatch,
    RepairOp, RunFinish, Store, SyncRun, Update,
};

fn audit(method: &str) -> NewAudit {
    NewAudit::new("test", method, "Users")
}

fn attrs(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

/// A row without the times each backend stamps.
fn row(r: &OutboxRow) -> Value {
    json!({
        "id": r.id, "type": r.kind.as_str(), "resource": r.resource_id, "op": r.op.as_str(), "version": r.version,
        "payload": r.payload.to_json(), "state": r.state.as_str(), "attempts": r.attempts,
        "last_error": r.last_error, "done": r.done_at.is_some(), "coalesced_into": r.coalesced_into,
    })
}

/// Every outbox row with its attempts.
async fn outbox(o: &dyn OutboxStore) -> Value {
    let mut all = o.list(None, 1000).await.unwrap();
    all.extend(o.list(Some(OutboxState::Done), 1000).await.unwrap());
    all.sort_by_key(|r| r.id);
    let mut out = Vec::new();
    for r in &all {
        let (_, attempts) = o.get(r.id).await.unwrap().unwrap();
        out.push(json!([row(r), attempts.iter().map(|a| (a.outcome.clone(), a.detail.clone())).collect::<Vec<_>>()]));
    }
    Value::Array(out)
}

fn run(r: &SyncRun) -> Value {
    json!([r.id, r.trigger, r.finished_at.is_some(), r.status, r.error, r.summary])
}

fn matched(m: &Matched) -> Value {
    json!({
        "id": m.resource.id, "version": m.resource.meta.version, "attrs": m.resource.attrs,
        "mapped": m.mapped_app_id, "applied": m.applied, "applied_current": m.applied_current,
        "pending": m.pending, "members": m.members.as_ref().map(|ms| ms.iter()
            .map(|x| json!([x.id, x.app_id, x.name])).collect::<Vec<_>>()),
    })
}

fn page(p: &[PageMatch]) -> Value {
    p.iter()
        .map(|m| match m {
            PageMatch::Ours(m) => matched(m),
            PageMatch::Deprovisioning => json!("deprovisioning"),
            PageMatch::Unknown => json!("unknown"),
        })
        .collect()
}

/// Everything reconciliation reads, times left out.
async fn snapshot(s: &dyn SyncStore, o: &dyn OutboxStore) -> Value {
    let runs: Vec<Value> = s.runs(100).await.unwrap().iter().map(run).collect();
    let mut items = Vec::new();
    for r in s.runs(100).await.unwrap() {
        items.push(json!([r.id, s.drift_items(r.id).await.unwrap()]));
    }
    let stuck: Vec<Value> = s
        .stuck("9999-01-01T00:00:00.000Z".into(), 100)
        .await
        .unwrap()
        .iter()
        .map(|x| json!([x.outbox_id, x.kind.as_str(), x.resource_id, x.name, x.op, x.state, x.attempts, x.last_error]))
        .collect();
    json!({
        "runs": runs, "items": items, "current": s.run(None).await.unwrap().as_ref().map(run),
        "stuck": stuck, "outbox": outbox(o).await,
        "users": s.all_ids(ResourceKind::User).await.unwrap(), "groups": s.all_ids(ResourceKind::Group).await.unwrap(),
    })
}

/// One step on both backends, answers compared.
macro_rules! both {
    ($what:expr, $sqlite:expr, $pg:expr, $s:ident, $call:expr) => {{
        let a = {
            let $s: &dyn SyncStore = $sqlite.sync();
            $call
        };
        let b = {
            let $s: &dyn SyncStore = &$pg;
            $call
        };
        assert_eq!(a, b, "{}: answers differ (left SQLite, right PostgreSQL)", $what);
        a
    }};
}

/// Claim every due row on both backends and end each bundle as `done` says for its
/// resource; the claims must agree.
async fn deliver(s: &Store, p: &PgStore, done: impl Fn(&str) -> Completion) {
    let lease = crate::model::time_after(Duration::from_secs(600));
    let guard = || GuardPolicy {
        // Any deprovisioning trips it: it is held.
        threshold_count: 0,
        threshold_share: 1.0,
        share_min_count: 1000,
        window_start: "2000-01-01T00:00:00.000Z".into(),
        delayed_after: None,
    };
    let a = s.outbox().claim(100, 10, lease.clone(), Some(guard())).await.unwrap();
    let b = OutboxStore::claim(p, 100, 10, lease, Some(guard())).await.unwrap();
    let ids = |c: &crate::store::Claimed| {
        c.bundles.iter().map(|b| b.rows.iter().map(|r| r.id).collect::<Vec<_>>()).collect::<Vec<_>>()
    };
    assert_eq!((ids(&a), a.held), (ids(&b), b.held), "claims differ");
    for (sb, pb) in a.bundles.iter().zip(&b.bundles) {
        let c = done(&sb.head().resource_id);
        s.outbox().complete(sb, crate::model::now(), c.clone()).await.unwrap();
        OutboxStore::complete(p, pb, crate::model::now(), c).await.unwrap();
    }
}

fn drift(kind: DriftKind, id: &str, repair: Repair) -> DriftRow {
    DriftRow {
        kind,
        resource_kind: ResourceKind::User,
        resource_id: Some(id.into()),
        app_id: Some(format!("app-{id}")),
        name: format!("{id}@example.com"),
        attribute: (kind == DriftKind::AttributeMismatch).then(|| "title".into()),
        ours: json!({"title": "ours"}),
        app: json!(["app", 1]),
        cause: Cause::EditedInApp,
        change: Change::New,
        repair,
        fingerprint: format!("fp-{id}"),
    }
}

fn summary(total: u64) -> RunSummary {
    RunSummary {
        report: Some(RunReport { listed: Listed::default(), total, new: total, resolved: 0, ..RunReport::default() }),
        duration_seconds: Some(1.5),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_repairs_matching_and_the_target_switch_leave_the_same_store_as_on_sqlite() {
    let pg = TestPg::start().unwrap();
    let db = pg.create_database().unwrap();
    let p = super::fixture::open_pg(&pg, &db, 4).await;
    let (_dir, s) = super::fixture::open_sqlite();
    let compare = |what: &'static str| {
        let (s, p) = (&s, &p);
        async move {
            assert_eq!(snapshot(s.sync(), s.outbox()).await, snapshot(p, p).await, "{what}: store differs");
        }
    };

    // The daemon starts on the dry run.
    both!("dry run", s, p, x, x.target_switch(crate::store::DRY_RUN).await.unwrap());

    // Six users (u6 with an externalId), two groups.
    let user = |id: &str, extra: Value| {
        let mut a = attrs(json!({"userName": format!("{id}@example.com")}));
        a.extend(attrs(extra));
        NewResource { kind: ResourceKind::User, id: id.into(), attrs: a, members: vec![] }
    };
    let member = |id: &str| MemberRef { id: id.into(), kind: None, display: None };
    let mut writes = Vec::new();
    for id in ["u1", "u2", "u3", "u4", "u5"] {
        writes.push(user(id, json!({})));
    }
    writes.push(user("u6", json!({"externalId": "ext-6"})));
    for (id, name, members) in [("g1", "Staff", vec![member("u1"), member("u2")]), ("g2", "Ops", vec![member("u3")])] {
        writes.push(NewResource {
            kind: ResourceKind::Group,
            id: id.into(),
            attrs: attrs(json!({"displayName": name})),
            members,
        });
    }
    for w in writes {
        s.resources().create(w.clone(), audit("POST")).await.unwrap();
        ResourceStore::create(&p, w, audit("POST"), None).await.unwrap();
    }

    // First deliveries: most provisioned (with what was applied), some dead (one gave up,
    // one refused), one retrying.
    let first = |id: &str| -> Completion {
        match id {
            "u3" => Completion::Dead { error: "gave up after 5 attempts: HTTP 503".into() },
            "u4" | "g2" => Completion::Dead { error: "HTTP 400: refused".into() },
            "u5" => Completion::Retry {
                next_attempt_at: crate::model::time_after(Duration::from_secs(600)),
                error: "HTTP 503".into(),
            },
            _ => {
                let applied =
                    if id.starts_with('u') { json!({"userName": format!("{id}@example.com")}) } else { json!({}) };
                Completion::Success {
                    id_map: Some(Some(format!("app-{id}"))),
                    applied: Some((1, attrs(applied))),
                    note: None,
                    recreated: false,
                }
            }
        }
    };
    deliver(&s, &p, first).await;
    compare("after the first deliveries").await;

    // u1 changes (not delivered yet); g1 loses u2 and that member change dies; u6 is
    // deactivated, which the deletion guard holds.
    let upd = |kind, id: &str, a: Option<Value>, members: MemberDelta| Update {
        kind,
        id: id.into(),
        expected_version: None,
        attrs: a.map(attrs),
        members,
    };
    let changes = [
        upd(ResourceKind::Group, "g1", None, MemberDelta { add: vec![], remove: vec!["u2".into()], replace: None }),
        upd(
            ResourceKind::User,
            "u6",
            Some(json!({"userName": "u6@example.com", "externalId": "ext-6", "active": false})),
            MemberDelta::default(),
        ),
    ];
    for c in changes {
        s.resources().update(c.clone(), audit("PATCH")).await.unwrap();
        ResourceStore::update(&p, c, audit("PATCH"), None).await.unwrap();
    }
    deliver(&s, &p, |_| Completion::Dead { error: "gave up after 3 attempts: HTTP 502".into() }).await;
    let title = upd(
        ResourceKind::User,
        "u1",
        Some(json!({"userName": "u1@example.com", "title": "Boss"})),
        MemberDelta::default(),
    );
    s.resources().update(title.clone(), audit("PATCH")).await.unwrap();
    ResourceStore::update(&p, title, audit("PATCH"), None).await.unwrap();
    compare("after the changes").await;

    // Sync runs: one finished with its report, one left running and closed, one failed.
    let r1 = both!("run start", s, p, x, x.run_start("schedule").await.unwrap());
    let items = vec![
        drift(DriftKind::AttributeMismatch, "u1", Repair::Queued),
        drift(DriftKind::MissingInApp, "u4", Repair::Blocked),
    ];
    let finish = |status: &str, items: Vec<DriftRow>, keep_since: &str| RunFinish {
        status: status.into(),
        error: (status == "failed").then(|| "the app did not answer".into()),
        summary: if status == "ok" { summary(items.len() as u64) } else { RunSummary::default() },
        items,
        keep_since: keep_since.into(),
    };
    both!(
        "run finish",
        s,
        p,
        x,
        x.run_finish(r1, finish("ok", items.clone(), "2000-01-01T00:00:00.000Z")).await.unwrap()
    );
    let r2 = both!("second run", s, p, x, x.run_start("manual").await.unwrap());
    both!("close running", s, p, x, x.close_running("shutting down").await.unwrap());
    let r3 = both!("third run", s, p, x, x.run_start("manual").await.unwrap());
    // A run start closes the one a crash left running.
    let r4 = both!("fourth run", s, p, x, x.run_start("schedule").await.unwrap());
    both!("r3 closed", s, p, x, x.run(Some(r3)).await.unwrap().map(|r| run(&r)));
    both!("failed run", s, p, x, x.run_finish(r4, finish("failed", vec![], "2000-01-01T00:00:00.000Z")).await.unwrap());
    both!("runs", s, p, x, x.runs(10).await.unwrap().iter().map(run).collect::<Vec<_>>());
    both!("current", s, p, x, x.run(None).await.unwrap().map(|r| run(&r)));
    both!("r2", s, p, x, x.run(Some(r2)).await.unwrap().map(|r| run(&r)));
    assert_eq!(both!("items", s, p, x, x.drift_items(r1).await.unwrap()), items);
    both!("no run", s, p, x, x.run(Some(999)).await.unwrap().map(|r| run(&r)));
    compare("after the runs").await;

    // A repair of every kind.
    let resync = |id: &str, forget: bool, deprovision: bool| RepairOp::Resync {
        kind: ResourceKind::User,
        id: id.into(),
        forget_app_id: forget,
        deprovision,
    };
    let orphan = |app_id: &str, name: &str| RepairOp::Orphan {
        kind: ResourceKind::User,
        app_id: app_id.into(),
        name: name.into(),
        deactivate_only: app_id == "x8",
        record: Some(json!({"id": app_id, "userName": name})),
    };
    let ops = vec![
        // Dead (refused) create: queued, superseding it.
        resync("u4", true, false),
        // A retry on its way.
        resync("u5", false, false),
        // A pending change on its way.
        resync("u1", false, false),
        // Held by the guard.
        resync("u6", false, true),
        // Gone.
        resync("nope", false, false),
        // A dead member-only change: superseded by the member repair.
        RepairOp::Members {
            group_id: "g1".into(),
            add: vec![],
            remove: vec!["u2".into()],
            remove_app_ids: vec!["app-x".into()],
        },
        // A dead create is not members-only: blocked.
        RepairOp::Members { group_id: "g2".into(), add: vec!["u3".into()], remove: vec![], remove_app_ids: vec![] },
        // A stranger; twice in one repair (the second does not see the first as on its way).
        orphan("x9", "stranger"),
        orphan("x9", "stranger"),
        orphan("x8", "other"),
        // Ours by name, or by its app id: moot.
        orphan("x7", "U2@Example.com"),
        orphan("app-u2", "renamed"),
    ];
    let results = both!("repair", s, p, x, x.repair(r1, ops.clone()).await.unwrap());
    let kinds: Vec<&str> = results
        .iter()
        .map(|r| match r {
            crate::store::RepairResult::Queued { superseded } if superseded.is_empty() => "queued",
            crate::store::RepairResult::Queued { .. } => "queued, superseding",
            crate::store::RepairResult::OnItsWay { .. } => "on its way",
            crate::store::RepairResult::Blocked { state, .. } if state == "held" => "blocked by held",
            crate::store::RepairResult::Blocked { .. } => "blocked",
            crate::store::RepairResult::Moot => "moot",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "queued, superseding",
            "on its way",
            "on its way",
            "blocked by held",
            "moot",
            "queued, superseding",
            "blocked",
            "queued",
            "queued",
            "queued",
            "moot",
            "moot"
        ]
    );
    // Again: what was queued is on its way now; nothing queued, no audit record.
    both!("repair again", s, p, x, x.repair(r1, ops[..1].iter().chain(&ops[7..8]).cloned().collect()).await.unwrap());
    compare("after the repairs").await;

    // The dead rows that gave up are queued again; the refused one stays dead.
    let requeued = both!("requeue dead", s, p, x, x.requeue_dead().await.unwrap());
    assert!(!requeued.is_empty());
    compare("after requeue_dead").await;

    // Matching a listing: by app id, by name (an account mapped elsewhere is a duplicate), by
    // externalId, unknown, and one of ours twice.
    let key = |app_id: &str, name: &str, ext: Option<&str>| AppKey {
        app_id: app_id.into(),
        name: name.into(),
        external_id: ext.map(str::to_string),
    };
    let users = vec![
        key("app-u1", "u1@example.com", None),
        key("dup-u2", "U2@example.com", None),
        key("app-u3-new", "u3@example.com", None),
        key("z6", "renamed", Some("ext-6")),
        key("zz", "nobody", None),
        key("app-u1", "u1@example.com", None),
    ];
    both!("match users", s, p, x, page(&x.match_page(ResourceKind::User, users.clone()).await.unwrap()));
    let groups = vec![key("app-g1", "Staff", None), key("g2-app", "ops", None), key("g9", "Nobody", None)];
    both!("match groups", s, p, x, page(&x.match_page(ResourceKind::Group, groups.clone()).await.unwrap()));
    let ids: Vec<String> = ["u2", "u4", "u5", "nope", "u1"].map(String::from).to_vec();
    both!(
        "load unmatched",
        s,
        p,
        x,
        x.load_unmatched(ResourceKind::User, ids.clone()).await.unwrap().iter().map(matched).collect::<Vec<_>>()
    );
    both!(
        "names",
        s,
        p,
        x,
        x.names_for_app_ids(["app-u1", "app-g1", "x9", "none"].map(String::from).to_vec()).await.unwrap()
    );

    // A user we deleted after it was provisioned: its removal is on its way.
    s.resources().delete(ResourceKind::User, "u2", None, audit("DELETE")).await.unwrap();
    ResourceStore::delete(&p, ResourceKind::User, "u2", None, audit("DELETE"), None).await.unwrap();
    let listed = vec![key("app-u2", "u2@example.com", None)];
    let deprovisioning =
        both!("match deleted", s, p, x, page(&x.match_page(ResourceKind::User, listed.clone()).await.unwrap()));
    assert_eq!(deprovisioning, json!(["deprovisioning"]));

    // Pruning: only the newest successful run stays.
    let r5 = both!("fifth run", s, p, x, x.run_start("schedule").await.unwrap());
    both!("prune", s, p, x, x.run_finish(r5, finish("failed", vec![], "9999-01-01T00:00:00.000Z")).await.unwrap());
    assert_eq!(both!("kept", s, p, x, x.runs(10).await.unwrap().iter().map(|r| r.id).collect::<Vec<_>>()), [r1]);
    compare("after the pruning").await;

    // The real target: every resource queued again, users first; once.
    let switched = both!("switch", s, p, x, x.target_switch("scim https://app.example.com/scim/v2").await.unwrap());
    assert_eq!(switched.requeued, 7, "{switched:?}");
    both!("switch again", s, p, x, x.target_switch("scim https://app.example.com/scim/v2").await.unwrap());
    compare("after the target switch").await;

    let audits = |a: Vec<crate::store::AuditRecord>| {
        a.into_iter()
            .filter(|r| r.actor != "test")
            .map(|r| json!([r.actor, r.method, r.resource_type, r.resource_id, r.resource_name, r.version, r.summary]))
            .collect::<Vec<_>>()
    };
    let q = || AuditQuery { limit: 1000, ..Default::default() };
    let (a, b) = (audits(s.audit().list(q()).await.unwrap()), audits(AuditStore::list(&p, q()).await.unwrap()));
    assert_eq!(a, b, "audit records differ");
    assert_eq!(a.len(), 2, "one repair and one switch: {a:?}");
    s.close();
}

/// A repair cannot race the IdP: it locks the resource before it weighs its open outbox
/// rows, so with an IdP write to that resource in progress it waits, then sees the write's
/// change (and supersedes it with the whole current state, at the new version) instead of
/// queuing beside it from a stale read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_waits_for_an_idp_write_in_progress_on_its_resource() {
    let pg = TestPg::start().unwrap();
    let db = pg.create_database().unwrap();
    let p = super::fixture::open_pg(&pg, &db, 4).await;
    let user = NewResource {
        kind: ResourceKind::User,
        id: "u1".into(),
        attrs: attrs(json!({"userName": "alice"})),
        members: vec![],
    };
    ResourceStore::create(&p, user, audit("POST"), None).await.unwrap();
    let lease = crate::model::time_after(Duration::from_secs(600));
    let claimed = OutboxStore::claim(&p, 10, 10, lease, None).await.unwrap();
    let dead = claimed.bundles[0].head().id;
    OutboxStore::complete(&p, &claimed.bundles[0], crate::model::now(), Completion::Dead { error: "HTTP 400".into() })
        .await
        .unwrap();
    let run = p.run_start("manual").await.unwrap();

    // The IdP's write, in its transaction: u1's row locked, its change queued, not committed.
    let mut idp = p.conn().await.unwrap();
    let tx = idp.transaction().await.unwrap();
    let upd = Update {
        kind: ResourceKind::User,
        id: "u1".into(),
        expected_version: None,
        attrs: Some(attrs(json!({"userName": "alice", "title": "Boss"}))),
        members: MemberDelta::default(),
    };
    resources::update(&tx, upd, &crate::model::now()).await.unwrap();
    let idp_row: i64 = tx.query_one("SELECT max(id) FROM outbox", &[]).await.unwrap().get(0);

    let repair = {
        let p = p.clone();
        let op =
            RepairOp::Resync { kind: ResourceKind::User, id: "u1".into(), forget_app_id: false, deprovision: false };
        tokio::spawn(async move { p.repair(run, vec![op]).await })
    };
    // Bounded wait until the repair's session waits for the row lock.
    let watcher = p.conn().await.unwrap();
    for i in 0.. {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting == 1 {
            break;
        }
        assert!(!repair.is_finished(), "the repair did not wait for the IdP's write: {:?}", repair.await);
        assert!(i < 2400, "the repair neither finished nor waited for a lock");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tx.commit().await.unwrap();

    let results = repair.await.unwrap().unwrap();
    assert_eq!(results, vec![crate::store::RepairResult::Queued { superseded: vec![dead, idp_row] }]);
    let (row, _) = OutboxStore::get(&p, idp_row + 1).await.unwrap().expect("the repair's row");
    assert_eq!((row.resource_id.as_str(), row.version, row.payload.resync), ("u1", 2, true));
    let (idp, attempts) = OutboxStore::get(&p, idp_row).await.unwrap().unwrap();
    assert_eq!((idp.state, idp.coalesced_into), (OutboxState::Done, Some(row.id)));
    assert_eq!(attempts.last().map(|a| a.outcome.as_str()), Some("superseded"));
}
