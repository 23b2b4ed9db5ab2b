//! The store's contract, held through the [`Store`] handle on every backend behind it (each
//! test runs on SQLite and on PostgreSQL, a throw-away cluster each): concurrent writes,
//! versions, paging, the deletion guard, sync runs and repairs. SQLite only: the RFC 9865
//! walks (a property test: a cluster per case costs too much for now) and old stored run
//! summaries (written with rusqlite). The provisioning policy's checks are held to SQLite's
//! in `postgres/policy_tests.rs`.

use super::*;
use crate::model::ResourceKind;
use crate::model::query::{AttrPath, Filter};
use serde_json::json;

/// The audit record every write carries (the face has one audited path).
fn audit() -> NewAudit {
    NewAudit::new("test", "TEST", "test")
}

fn queued(results: Vec<RepairResult>) -> usize {
    results.iter().filter(|r| r.queued()).count()
}

fn open(dir: &std::path::Path) -> Store {
    Store::open(&StoreOptions { data_dir: dir.to_path_buf(), busy_timeout_seconds: 5, readers: 2, max_batch: 64 })
        .unwrap()
}

/// A PostgreSQL store on a throw-away cluster, and what keeps the cluster alive.
async fn open_postgres() -> (Store, testpg::TestPg) {
    let pg = testpg::TestPg::start().unwrap();
    let db = pg.create_database().unwrap();
    let opts = postgres::PgOptions {
        url: pg.url_without_password(&db),
        password: Some(testpg::PASSWORD.into()),
        pool_size: 8,
        // Also bounds each wait for a pooled connection: the paging test's burst of 2600
        // concurrent creates queues for the 8 connections longer than 10 s on a busy machine
        // (SQLite's writer queues without a bound).
        connect_timeout: std::time::Duration::from_secs(120),
        statement_timeout: std::time::Duration::from_secs(60),
        ca_file: None,
        schema: "scimsync".into(),
    };
    let p =
        postgres::PgStore::open(&opts, &postgres::OpenProgress::default(), &tokio_util::sync::CancellationToken::new())
            .await
            .unwrap();
    (Store::from_backend(Arc::new(p)), pg)
}

/// `on_both_backends!(name)` runs `async fn name(store: Store)` as two tests,
/// `name::sqlite` and `name::postgres`.
macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let dir = tempfile::tempdir().unwrap();
                super::$name(super::open(dir.path())).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let (store, _cluster) = super::open_postgres().await;
                super::$name(store).await;
            }
        }
    };
}

fn user(id: &str, name: &str) -> NewResource {
    NewResource {
        kind: ResourceKind::User,
        id: id.into(),
        attrs: json!({"userName": name}).as_object().unwrap().clone(),
        members: vec![],
    }
}

on_both_backends!(a_failing_operation_in_a_batch_fails_alone);
async fn a_failing_operation_in_a_batch_fails_alone(store: Store) {
    // Submitted together, these land in the same batch: the duplicate must fail with
    // a uniqueness error while every other create commits.
    let mut handles = Vec::new();
    for i in 0..40 {
        let s = store.clone();
        let name = if i == 20 { "dup".to_string() } else { format!("u{i}") };
        handles.push(tokio::spawn(async move { s.resources().create(user(&format!("id{i}"), &name), audit()).await }));
    }
    let first_dup = store.resources().create(user("first", "DUP"), audit()).await;
    let mut unique_errors = 0;
    for h in handles {
        match h.await.unwrap() {
            Ok(_) => {}
            Err(StoreError::Unique { attribute: "userName", .. }) => unique_errors += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(unique_errors + first_dup.is_err() as usize, 1, "exactly one of the two 'dup' creates fails");
    let page = store
        .resources()
        .list(ResourceKind::User, None, None, Position::Offset(0), 100, Load::default())
        .await
        .unwrap();
    assert_eq!(page.total, 40);
    // Every committed create has exactly one outbox row; the failed one has none.
    let counts = store.outbox().counts().await.unwrap();
    assert_eq!(counts, vec![("pending".to_string(), 40)]);
    store.close();
}

on_both_backends!(version_checks_and_not_found);
async fn version_checks_and_not_found(store: Store) {
    store.resources().create(user("a", "a"), audit()).await.unwrap();
    let upd = |v| Update {
        kind: ResourceKind::User,
        id: "a".into(),
        expected_version: Some(v),
        attrs: Some(json!({"userName": "a", "title": "t"}).as_object().unwrap().clone()),
        members: Default::default(),
    };
    assert!(matches!(
        store.resources().update(upd(5), audit()).await,
        Err(StoreError::VersionMismatch { expected: 5, current: 1 })
    ));
    assert_eq!(store.resources().update(upd(1), audit()).await.unwrap().meta.version, 2);
    // The same attributes again: no change, no new version, no outbox row.
    assert_eq!(
        store.resources().update(Update { expected_version: None, ..upd(0) }, audit()).await.unwrap().meta.version,
        2
    );
    assert_eq!(store.outbox().rows_of("a").await.unwrap().len(), 2);
    assert!(matches!(
        store.resources().delete(ResourceKind::Group, "a", None, audit()).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(store.resources().get(ResourceKind::User, "nope", Load::default()).await.unwrap().is_none());
    store.close();
    assert!(matches!(store.resources().create(user("b", "b"), audit()).await, Err(StoreError::Closed)));
}

/// Ids of every user in creation order, read through the filtered path (a filter that
/// matches every user: counted and paged by OFFSET, not through the kept counts).
async fn all_users_by_offset(store: &Store) -> Vec<String> {
    let path = AttrPath {
        name: "userName".into(),
        info: crate::model::query::AttrInfo { resolved: true, ..Default::default() },
        ..Default::default()
    };
    let every = Filter::Present(path);
    let page = store
        .resources()
        .list(ResourceKind::User, Some(every), None, Position::Offset(0), u32::MAX, Load::default())
        .await
        .unwrap();
    page.resources.into_iter().map(|r| r.id).collect()
}

async fn create_users(store: &Store, ids: impl Iterator<Item = String>) {
    let writes: Vec<_> = ids
        .map(|id| {
            let s = store.clone();
            tokio::spawn(async move {
                s.resources().create(user(&id, &format!("{id}@example.com")), audit()).await.unwrap()
            })
        })
        .collect();
    for w in writes {
        w.await.unwrap();
    }
}

on_both_backends!(unfiltered_pages_seek_through_the_blocks);
/// Unfiltered pages by offset seek through `rank_blocks` and the total is the kept count:
/// both agree with the filtered path (OFFSET over the rows) after deletes that thin some
/// blocks and empty a whole one, and after creates that follow them.
async fn unfiltered_pages_seek_through_the_blocks(store: Store) {
    create_users(&store, (0..2600).map(|i| format!("u{i:05}"))).await;
    let mut gone = Vec::new();
    for i in (0..2600).filter(|i| i % 7 == 3 || (1020..2060).contains(i) || *i >= 2590) {
        let id = format!("u{i:05}");
        store.resources().delete(ResourceKind::User, &id, None, audit()).await.unwrap();
        gone.push(id);
    }
    create_users(&store, (0..30).map(|i| format!("v{i:05}"))).await;
    let want = all_users_by_offset(&store).await;
    assert_eq!(want.len(), 2600 - gone.len() + 30);
    for offset in [0u64, 1, 99, 877, 878, 1023, 1024, 1025, 1500, 2047, 2048, want.len() as u64 - 5, want.len() as u64]
    {
        for count in [1u32, 7, 100] {
            let page = store
                .resources()
                .list(ResourceKind::User, None, None, Position::Offset(offset), count, Load::default())
                .await
                .unwrap();
            assert_eq!(page.total, want.len() as u64, "the kept count");
            let got: Vec<String> = page.resources.into_iter().map(|r| r.id).collect();
            let end = (offset as usize + count as usize).min(want.len());
            let expect = want.get(offset as usize..end).unwrap_or_default();
            assert_eq!(got, expect, "offset {offset}, count {count}");
        }
    }
    store.close();
}

mod walks {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        /// RFC 9865 walks: paging after a position returns every user that existed for
        /// the whole walk exactly once and nothing twice, while users are created and
        /// deleted between pages; and a walk by offset with nothing changing returns
        /// every user exactly once.
        #[test]
        fn a_cursor_walk_sees_every_survivor_exactly_once(
            initial in 1usize..80,
            count in 1u32..12,
            churn in proptest::collection::vec((any::<bool>(), 0usize..1000), 0..60),
        ) {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let store = open(dir.path());
                create_users(&store, (0..initial).map(|i| format!("a{i:04}"))).await;
                let mut alive: Vec<String> = (0..initial).map(|i| format!("a{i:04}")).collect();
                let mut deleted = std::collections::HashSet::new();
                let mut seen: Vec<String> = Vec::new();
                let mut churn = churn.into_iter();
                let mut after = 0;
                let mut created = 0;
                for _ in 0..10_000 {
                    let page = store
                        .resources()
        .list(ResourceKind::User, None, None, Position::After(after), count, Load::default())
                        .await
                        .unwrap();
                    assert!(page.resources.len() <= count as usize);
                    seen.extend(page.resources.iter().map(|r| r.id.clone()));
                    // Between pages the IdP creates and deletes.
                    for (create, pick) in churn.by_ref().take(2) {
                        if create || alive.is_empty() {
                            let id = format!("b{created:04}");
                            created += 1;
                            store.resources().create(user(&id, &format!("{id}@example.com")), audit()).await.unwrap();
                            alive.push(id);
                        } else {
                            let id = alive.remove(pick % alive.len());
                            store.resources().delete(ResourceKind::User, &id, None, audit()).await.unwrap();
                            deleted.insert(id);
                        }
                    }
                    match page.next_after {
                        Some(a) => after = a,
                        None => break,
                    }
                }
                let mut once = std::collections::HashSet::new();
                for id in &seen {
                    assert!(once.insert(id.clone()), "{id} seen twice: {seen:?}");
                }
                for i in 0..initial {
                    let id = format!("a{i:04}");
                    if !deleted.contains(&id) {
                        assert!(once.contains(&id), "{id} existed throughout but was not seen: {seen:?}");
                    }
                }
                // A walk by offset over a quiet store: each exactly once, in order.
                let want = all_users_by_offset(&store).await;
                let mut by_index = Vec::new();
                let mut offset = 0u64;
                loop {
                    let page = store
                        .resources()
        .list(ResourceKind::User, None, None, Position::Offset(offset), count, Load::default())
                        .await
                        .unwrap();
                    if page.resources.is_empty() {
                        break;
                    }
                    offset += page.resources.len() as u64;
                    by_index.extend(page.resources.into_iter().map(|r| r.id));
                }
                assert_eq!(by_index, want);
                store.close();
            });
        }
    }
}

/// What a write answers is what a read returns afterwards: the SQLite writer builds a
/// created user's reply from what it wrote instead of reading the row back, so this holds
/// that shortcut to the read path for any attributes (nested objects and arrays, numbers
/// of every kind, escapes, non-ASCII text), several creates per batch.
mod replies {
    use super::*;
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            "\\PC{0,12}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-zA-Z:.]{1,10}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
        #[test]
        fn a_created_user_reads_back_as_its_create_answered(
            users in proptest::collection::vec(proptest::collection::btree_map("[a-zA-Z]{1,8}", json_value(), 0..6), 1..6),
        ) {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let store = open(dir.path());
                let mut creates = Vec::new();
                for (i, extra) in users.into_iter().enumerate() {
                    let mut attrs: serde_json::Map<String, serde_json::Value> = extra.into_iter().collect();
                    attrs.insert("userName".into(), format!("user{i}").into());
                    let new = NewResource { kind: ResourceKind::User, id: format!("u{i}"), attrs, members: vec![] };
                    let s = store.clone();
                    // Concurrent, so several land in one writer batch.
                    creates.push(tokio::spawn(async move { s.resources().create(new, audit()).await }));
                }
                for c in creates {
                    let created = c.await.unwrap().unwrap();
                    let read = store
                        .resources()
                        .get(ResourceKind::User, &created.id, Load { members: true, groups: true })
                        .await
                        .unwrap()
                        .unwrap();
                    assert_eq!(created, read);
                }
                store.close();
            });
        }
    }
}

on_both_backends!(a_deprovisioning_waits_out_its_delay);
/// The deprovisioning delay: a deprovisioning accepted within the delay is neither claimed
/// nor coalesced into an earlier change of its resource; other changes flow; once the
/// delay has passed it is delivered.
async fn a_deprovisioning_waits_out_its_delay(store: Store) {
    let lease = || crate::model::time_after(std::time::Duration::from_secs(60));
    let policy = |delayed_after: &str| {
        Some(GuardPolicy {
            threshold_count: 100,
            threshold_share: 1.0,
            share_min_count: u64::MAX,
            window_start: "2000-01-01T00:00:00.000Z".into(),
            delayed_after: Some(delayed_after.into()),
        })
    };
    store.resources().create(user("a", "a"), audit()).await.unwrap();
    store.resources().create(user("b", "b"), audit()).await.unwrap();
    store.resources().delete(ResourceKind::User, "a", None, audit()).await.unwrap();
    // "now - delay" is before every row: the delete of a waits, a's create and b's go.
    let c = store.outbox().claim(10, 10, lease(), policy("2000-01-01T00:00:00.000Z")).await.unwrap();
    let got: Vec<(String, usize)> = c.bundles.iter().map(|b| (b.head().resource_id.clone(), b.rows.len())).collect();
    assert_eq!(got, vec![("a".to_string(), 1), ("b".to_string(), 1)], "the delete is not coalesced into a's create");
    for b in &c.bundles {
        store
            .outbox()
            .complete(
                b,
                crate::model::now(),
                Completion::Success { id_map: Some(Some("x".into())), applied: None, note: None, recreated: false },
            )
            .await
            .unwrap();
    }
    let c = store.outbox().claim(10, 10, lease(), policy("2000-01-01T00:00:00.000Z")).await.unwrap();
    assert!(c.bundles.is_empty(), "still in its delay: {:?}", c.bundles);
    // The delay has passed.
    let c = store.outbox().claim(10, 10, lease(), policy("9999-01-01T00:00:00.000Z")).await.unwrap();
    assert_eq!(c.bundles.len(), 1);
    assert_eq!(c.bundles[0].head().op, crate::model::ChangeOp::Delete);
    store.close();
}

on_both_backends!(deletion_guard_holds_cancels_and_releases);
/// The guard's state machine: trip, hold, joining the held set, cancellation by a
/// re-create and a reactivation, release.
async fn deletion_guard_holds_cancels_and_releases(store: Store) {
    let policy = || {
        Some(GuardPolicy {
            threshold_count: 2,
            threshold_share: 1.0,
            share_min_count: u64::MAX,
            window_start: "2000-01-01T00:00:00.000Z".into(),
            delayed_after: None,
        })
    };
    let lease = || crate::model::time_after(std::time::Duration::from_secs(60));
    let deliver_all = |store: Store| async move {
        let c = store.outbox().claim(100, 10, lease(), policy()).await.unwrap();
        for b in &c.bundles {
            let app = Some(Some(format!("app-{}", b.head().resource_id)));
            store
                .outbox()
                .complete(
                    b,
                    crate::model::now(),
                    Completion::Success { id_map: app, applied: None, note: None, recreated: false },
                )
                .await
                .unwrap();
        }
        c
    };
    for i in 0..6 {
        store.resources().create(user(&format!("g{i}"), &format!("g{i}")), audit()).await.unwrap();
    }
    assert_eq!(deliver_all(store.clone()).await.bundles.len(), 6);
    for i in 0..4 {
        store.resources().delete(ResourceKind::User, &format!("g{i}"), None, audit()).await.unwrap();
    }
    let c = deliver_all(store.clone()).await;
    assert_eq!(c.tripped, Some(GuardTrip { count: 4, provisioned: 6 }));
    assert_eq!((c.held, c.bundles.len()), (4, 0), "every deprovisioning is held once tripped");
    // Re-created with the same userName (any case): that deletion is cancelled.
    store.resources().create(user("new0", "G0"), audit()).await.unwrap();
    assert_eq!(store.outbox().guard_status().await.unwrap().held, 3);
    // A deactivation while tripped joins the held set; a later change of it waits behind.
    let set = |active: bool, title: &str| Update {
        kind: ResourceKind::User,
        id: "g4".into(),
        expected_version: None,
        attrs: Some(json!({"userName": "g4", "active": active, "title": title}).as_object().unwrap().clone()),
        members: Default::default(),
    };
    store.resources().update(set(false, "a"), audit()).await.unwrap();
    store.resources().update(set(false, "b"), audit()).await.unwrap();
    let c = deliver_all(store.clone()).await;
    assert_eq!(c.tripped, None, "already tripped");
    assert_eq!(c.held, 1);
    let ids: Vec<&str> = c.bundles.iter().map(|b| b.head().resource_id.as_str()).collect();
    assert_eq!(ids, vec!["new0"], "the held deactivation blocks g4's later change");
    // Reactivated: the held deactivation is cancelled and g4's changes flow.
    store.resources().update(set(true, "c"), audit()).await.unwrap();
    let st = store.outbox().guard_status().await.unwrap();
    assert_eq!((st.held, st.tripped_at.is_some()), (3, true));
    let c = deliver_all(store.clone()).await;
    assert_eq!(c.bundles.len(), 1);
    // Title b was never attempted (it waited behind the held row): the reactivation was
    // folded into its row at enqueue.
    assert_eq!(c.bundles[0].rows.len(), 1, "title b and the reactivation, coalesced");
    assert!(c.bundles[0].rows[0].payload.attributes_changed && !c.bundles[0].rows[0].payload.deprovision);
    // Release: delivered, and the guard reset (the released ones no longer count).
    assert_eq!(store.outbox().release_held(audit()).await.unwrap(), 3);
    let st = store.outbox().guard_status().await.unwrap();
    assert_eq!((st.held, st.tripped_at), (0, None));
    let c = deliver_all(store.clone()).await;
    assert_eq!((c.bundles.len(), c.held, c.tripped), (3, 0, None));
    assert!(c.bundles.iter().all(|b| b.head().op == crate::model::ChangeOp::Delete));
    store.close();
}

on_both_backends!(sync_runs_retention_and_repair_rechecks);
/// Sync runs and repairs: retention keeps the newest successful report, runs left
/// running are closed, and a repair never duplicates a change already on its way nor
/// removes an "orphan" that is one of ours.
async fn sync_runs_retention_and_repair_rechecks(store: Store) {
    let finish = |id, status: &'static str| {
        let s = store.clone();
        async move {
            // keep_since in the future: everything older is prunable.
            let finish = RunFinish {
                status: status.into(),
                error: None,
                summary: RunSummary::default(),
                items: Vec::new(),
                keep_since: "9999-01-01T00:00:00.000Z".into(),
            };
            s.sync().run_finish(id, finish).await.unwrap()
        }
    };
    let a = store.sync().run_start("manual").await.unwrap();
    finish(a, "ok").await;
    let b = store.sync().run_start("manual").await.unwrap();
    finish(b, "failed").await;
    let ids: Vec<i64> = store.sync().runs(10).await.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![a], "old runs pruned, the newest successful one kept");
    let c = store.sync().run_start("schedule").await.unwrap();
    assert_eq!(store.sync().close_running("interrupted by shutdown").await.unwrap(), 1);
    let r = store.sync().run(Some(c)).await.unwrap().unwrap();
    assert_eq!((r.status.as_str(), r.error.as_deref()), ("failed", Some("interrupted by shutdown")));

    store.resources().create(user("u1", "alice"), audit()).await.unwrap();
    let resync =
        || RepairOp::Resync { kind: ResourceKind::User, id: "u1".into(), forget_app_id: false, deprovision: false };
    // u1's create is still queued: a resync would duplicate it.
    assert_eq!(queued(store.sync().repair(c, vec![resync()]).await.unwrap()), 0);
    let claimed =
        store.outbox().claim(10, 10, crate::model::time_after(std::time::Duration::from_secs(60)), None).await.unwrap();
    for b in &claimed.bundles {
        store
            .outbox()
            .complete(
                b,
                crate::model::now(),
                Completion::Success {
                    id_map: Some(Some("app-u1".into())),
                    applied: None,
                    note: None,
                    recreated: false,
                },
            )
            .await
            .unwrap();
    }
    assert_eq!(queued(store.sync().repair(c, vec![resync()]).await.unwrap()), 1);
    let orphan = |app_id: &str, name: &str| RepairOp::Orphan {
        kind: ResourceKind::User,
        app_id: app_id.into(),
        name: name.into(),
        deactivate_only: false,
        record: None,
    };
    // Mapped to u1, or named like one of ours: not an orphan (any more).
    assert_eq!(
        queued(store.sync().repair(c, vec![orphan("app-u1", "someone"), orphan("x9", "ALICE")]).await.unwrap()),
        0
    );
    // A real orphan, once: the second repair finds its deprovisioning queued.
    assert_eq!(queued(store.sync().repair(c, vec![orphan("x7", "mallory")]).await.unwrap()), 1);
    assert_eq!(queued(store.sync().repair(c, vec![orphan("x7", "mallory")]).await.unwrap()), 0);
    store.close();
}

on_both_backends!(a_repair_supersedes_the_dead_rows_it_makes_obsolete);
/// A refused provision (dead row) does not block the repair that sends the whole state:
/// the repair supersedes it (and the row it blocked) and says so in their attempts; a
/// member repair supersedes only rows that changed members; a held row blocks.
async fn a_repair_supersedes_the_dead_rows_it_makes_obsolete(store: Store) {
    let lease = || crate::model::time_after(std::time::Duration::from_secs(60));
    store.resources().create(user("u1", "alice"), audit()).await.unwrap();
    let claimed = store.outbox().claim(10, 10, lease(), None).await.unwrap();
    let dead = claimed.bundles[0].head().id;
    store
        .outbox()
        .complete(&claimed.bundles[0], crate::model::now(), Completion::Dead { error: "HTTP 400".into() })
        .await
        .unwrap();
    let run = store.sync().run_start("manual").await.unwrap();
    let resync = || {
        vec![RepairOp::Resync { kind: ResourceKind::User, id: "u1".into(), forget_app_id: true, deprovision: false }]
    };
    let r = store.sync().repair(run, resync()).await.unwrap();
    assert_eq!(r, vec![RepairResult::Queued { superseded: vec![dead] }]);
    let (row, attempts) = store.outbox().get(dead).await.unwrap().unwrap();
    assert_eq!(row.state, OutboxState::Done);
    assert!(row.coalesced_into.is_some_and(|c| c > dead), "{row:?}");
    let last = attempts.last().unwrap();
    assert_eq!(last.outcome, "superseded");
    assert!(last.detail.as_deref().unwrap().contains(&format!("sync run {run}")), "{last:?}");
    // The repair's own row is on its way now: a second repair does not duplicate it.
    let again = store.sync().repair(run, resync()).await.unwrap();
    assert!(matches!(again[0], RepairResult::OnItsWay { .. }), "{again:?}");

    // A group whose attribute change is dead: a member repair does not cover it.
    let mut attrs = serde_json::Map::new();
    attrs.insert("displayName".into(), json!("staff"));
    store
        .resources()
        .create(NewResource { kind: ResourceKind::Group, id: "g1".into(), attrs, members: vec![] }, audit())
        .await
        .unwrap();
    let claimed = store.outbox().claim(10, 10, lease(), None).await.unwrap();
    for b in &claimed.bundles {
        store.outbox().complete(b, crate::model::now(), Completion::Dead { error: "HTTP 400".into() }).await.unwrap();
    }
    let members =
        RepairOp::Members { group_id: "g1".into(), add: vec!["u1".into()], remove: vec![], remove_app_ids: vec![] };
    let r = store.sync().repair(run, vec![members.clone()]).await.unwrap();
    assert!(matches!(&r[0], RepairResult::Blocked { state, .. } if state == "dead"), "{r:?}");
    // With a resync of the group first, the member repair queues behind it.
    let both = vec![
        RepairOp::Resync { kind: ResourceKind::Group, id: "g1".into(), forget_app_id: false, deprovision: false },
        members,
    ];
    let r = store.sync().repair(run, both).await.unwrap();
    assert!(r.iter().all(RepairResult::queued), "{r:?}");
    store.close();
}

#[test]
fn guard_trip_rule() {
    let p = GuardPolicy {
        threshold_count: 50,
        threshold_share: 0.2,
        share_min_count: 10,
        window_start: String::new(),
        delayed_after: None,
    };
    assert!(!guard_trips(&p, 50, 10_000), "the count must be exceeded");
    assert!(guard_trips(&p, 51, 10_000));
    assert!(!guard_trips(&p, 9, 20), "below share_min_count the share does not apply");
    assert!(guard_trips(&p, 10, 20), "10 of 20 is above 20 %");
    assert!(!guard_trips(&p, 10, 50), "exactly 20 % does not exceed it");
    assert!(guard_trips(&p, 10, 0), "nothing provisioned: any share is too much once over the minimum");
}

/// Run summaries stored by earlier releases (raw rows, their exact JSON) read as
/// [`RunSummary`](crate::model::drift::RunSummary): the first release's shape, a failed
/// run's `{duration_seconds}`, and a row whose JSON does not read (`None`, as a running
/// run's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_stored_run_summaries_read_back() {
    use crate::model::drift::{DriftKind, RunSummary};
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = store.sync().run_start("manual").await.unwrap();
        let keep = "1970-01-01T00:00:00.000Z".to_string();
        let finish = RunFinish {
            status: "ok".into(),
            error: None,
            summary: RunSummary::default(),
            items: Vec::new(),
            keep_since: keep,
        };
        store.sync().run_finish(id, finish).await.unwrap();
        ids.push(id);
    }
    store.close();
    drop(store);
    let old = r#"{"listed":{"users":10,"groups":2},"counts":{"missing_in_app":0,"orphaned_in_app":6,"attribute_mismatch":0,"active_mismatch":0,"membership_mismatch":0},"total":6,"new":6,"resolved":0,"repair":{"queued_items":0,"queued_changes":0,"deprovisions":6,"protected":0,"refused":"repair refused: it would deactivate or delete 6 account(s)"},"requeued_dead":0,"confirmed":null,"duration_seconds":0.042}"#;
    let conn = rusqlite::Connection::open(Store::database_path(dir.path())).unwrap();
    for (id, json) in ids.iter().zip([old, r#"{"duration_seconds":0.007}"#, "{not json"]) {
        conn.execute("UPDATE sync_runs SET summary = ?2 WHERE id = ?1", rusqlite::params![id, json]).unwrap();
    }
    drop(conn);

    let store = open(dir.path());
    let s = store.sync().run(Some(ids[0])).await.unwrap().unwrap().summary.expect("the old summary reads");
    assert_eq!(s.refused(), Some("repair refused: it would deactivate or delete 6 account(s)"));
    let r = s.report.as_ref().unwrap();
    assert_eq!((r.listed.users, r.listed.groups, r.total, r.new, r.repair.deprovisions), (10, 2, 6, 6, 6));
    assert_eq!((r.counts.get(DriftKind::OrphanedInApp), r.counts.get(DriftKind::StuckProvision)), (6, 0));
    assert_eq!((r.repair.superseded_dead, r.repair.on_its_way, r.repair.blocked), (0, 0, 0));
    assert_eq!((r.repair.deprovisioning.as_ref(), r.confirmed, s.duration_seconds), (None, None, Some(0.042)));
    let failed = store.sync().run(Some(ids[1])).await.unwrap().unwrap().summary;
    assert_eq!(failed, Some(RunSummary { report: None, duration_seconds: Some(0.007) }));
    assert_eq!(store.sync().run(Some(ids[2])).await.unwrap().unwrap().summary, None);
    store.close();
}

/// A user's `title` as a number (0 when unset), for the read-modify-write test.
fn title_of(r: &crate::model::Resource) -> u64 {
    r.attrs.get("title").and_then(|t| t.as_str()).and_then(|t| t.parse().ok()).unwrap_or(0)
}

/// `modify` on SQLite: the computation sees the resource as it is when the writer reaches
/// it, so concurrent read-modify-writes never lose one another's change and never retry;
/// a refusal writes nothing; each change has its outbox row and its audit record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_read_modify_write_in_one_step() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.resources().create(user("m", "m"), audit()).await.unwrap();
    let bump = || -> ModifyFn {
        std::sync::Arc::new(|cur: &crate::model::Resource| {
            let mut attrs = cur.attrs.clone();
            attrs.insert("title".into(), json!((title_of(cur) + 1).to_string()));
            Ok((Update::attributes_of(cur, attrs), audit()))
        })
    };
    let mut handles = Vec::new();
    for _ in 0..20 {
        let s = store.clone();
        let f = bump();
        handles.push(tokio::spawn(async move { s.resources().modify(ResourceKind::User, "m", f).await }));
    }
    for h in handles {
        assert!(matches!(h.await.unwrap(), Ok(Some(Modified::Written(_)))));
    }
    let now = store.resources().get(ResourceKind::User, "m", Load::default()).await.unwrap().unwrap();
    assert_eq!((title_of(&now), now.meta.version), (20, 21), "no change lost, one version each");

    let refuse: ModifyFn = std::sync::Arc::new(|_| Err("not today".into()));
    match store.resources().modify(ResourceKind::User, "m", refuse).await {
        Ok(Some(Modified::Refused(why))) => assert_eq!(why.to_string(), "not today"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let after = store.resources().get(ResourceKind::User, "m", Load::default()).await.unwrap().unwrap();
    assert_eq!(after.meta.version, 21, "a refusal writes nothing");
    // The create and 20 changes; nothing for the refusal. The audit log likewise. (The
    // outbox folds the queued updates into one row while nobody tried to deliver it.)
    let q = AuditQuery { since: None, resource_type: None, resource: Some("m".into()), limit: 100 };
    assert_eq!(store.audit().list(q).await.unwrap().len(), 21);
    assert!(!store.outbox().rows_of("m").await.unwrap().is_empty());

    assert!(matches!(
        store.resources().modify(ResourceKind::User, "nope", bump()).await,
        Err(StoreError::NotFound { .. })
    ));
    store.close();
}
