//! The leader lease with two stores on one database, as two daemons would hold them: one
//! leader at a time, a takeover once the lease expired (expired here by moving the
//! database's clock-based deadline, not by waiting), and the fence: a node whose lease was
//! taken claims nothing.

use std::time::Duration;

use serde_json::json;
use testpg::TestPg;

use crate::model::ResourceKind;
use crate::store::face::{ClusterStore, OutboxStore, ResourceStore};
use crate::store::{Completion, NewAudit, NewResource, NodeInfo};

const TTL: Duration = Duration::from_secs(15);

fn node(id: &str) -> NodeInfo {
    NodeInfo {
        node_id: id.into(),
        listen: format!("127.0.0.1:{}", id.len()),
        admin: format!("http://127.0.0.1:9{}", id.len()),
        version: "test".into(),
        instance: format!("process of {id}"),
    }
}

/// The lease's deadline passes now (what 15 s of silence from its holder would do).
/// A user `id` (userName `id@example.com`), so the outbox holds a row to claim.
async fn create_user(store: &super::PgStore, id: &str) {
    let new = NewResource {
        kind: ResourceKind::User,
        id: id.into(),
        attrs: json!({"userName": format!("{id}@example.com")}).as_object().unwrap().clone(),
        members: vec![],
    };
    ResourceStore::create(store, new, NewAudit::new("test", "POST", "User"), None).await.unwrap();
}

fn expire(pg: &TestPg, db: &str) {
    pg.psql(db, "UPDATE scimsync.leader_lease SET expires_at = now() - interval '1 second'").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_an_expired_lease_goes_to_the_other_node() {
    let pg = TestPg::start().unwrap();
    let db = pg.create_database().unwrap();
    let a = super::fixture::open_pg(&pg, &db, 2).await;
    let b = super::fixture::open_pg(&pg, &db, 2).await;

    assert_eq!(a.acquire_or_renew("a", TTL, false).await.unwrap(), Some(1), "a free lease is taken");
    assert_eq!(b.acquire_or_renew("b", TTL, false).await.unwrap(), None, "a held lease is not");
    assert_eq!(a.acquire_or_renew("a", TTL, false).await.unwrap(), Some(1), "renewing keeps the epoch");
    assert_eq!(b.acquire_or_renew("b", TTL, false).await.unwrap(), None);

    expire(&pg, &db);
    assert_eq!(b.acquire_or_renew("b", TTL, false).await.unwrap(), Some(2), "an expired lease is taken, a new epoch");
    assert_eq!(a.acquire_or_renew("a", TTL, false).await.unwrap(), None, "the old leader does not get it back");

    // Released at shutdown: the other node need not wait for the deadline.
    b.release("b").await.unwrap();
    assert_eq!(a.acquire_or_renew("a", TTL, false).await.unwrap(), Some(3));

    assert_eq!(a.heartbeat(&node("a"), TTL).await.unwrap(), None);
    assert_eq!(b.heartbeat(&node("b"), TTL).await.unwrap(), None);
    let nodes = a.live_nodes(TTL).await.unwrap();
    let seen: Vec<(&str, bool)> = nodes.iter().map(|n| (n.node_id.as_str(), n.leader)).collect();
    assert_eq!(seen, [("a", true), ("b", false)]);
    assert!(nodes.iter().all(|n| n.version == "test" && n.started_at.ends_with('Z')), "{nodes:?}");
    assert_eq!(nodes[1].admin, "http://127.0.0.1:91");
    let lease = a.lease().await.unwrap().unwrap();
    assert_eq!((lease.holder.as_str(), lease.epoch), ("a", 3));
    assert!(lease.expires_in_seconds > 0.0 && lease.expires_in_seconds <= 15.0, "{lease:?}");
    // A node silent for longer than the window is not live.
    pg.psql(&db, "UPDATE scimsync.cluster_nodes SET heartbeat_at = now() - interval '1 minute' WHERE node_id = 'b'")
        .unwrap();
    let live: Vec<String> = a.live_nodes(TTL).await.unwrap().into_iter().map(|n| n.node_id).collect();
    assert_eq!(live, ["a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_was_taken_claims_and_recovers_nothing() {
    let pg = TestPg::start().unwrap();
    let db = pg.create_database().unwrap();
    let a = super::fixture::open_pg(&pg, &db, 2).await;
    let b = super::fixture::open_pg(&pg, &db, 2).await;
    for id in ["u1", "u2"] {
        create_user(&a, id).await;
    }
    let lease_until = || crate::model::time_after(Duration::from_secs(300));

    assert_eq!(a.acquire_or_renew("a", TTL, false).await.unwrap(), Some(1));
    let first = a.claim(1, 10, lease_until(), None).await.unwrap();
    assert_eq!(first.bundles.len(), 1, "the leader claims");

    // a is partitioned (it renews no more) and its lease expires; b takes over.
    expire(&pg, &db);
    assert_eq!(b.acquire_or_renew("b", TTL, false).await.unwrap(), Some(2));
    let stale = a.claim(10, 10, lease_until(), None).await.unwrap();
    assert!(stale.bundles.is_empty(), "a stale leader's claim claims nothing: {stale:?}");
    assert_eq!(a.recover().await.unwrap(), 0, "nor does it re-queue the new leader's rows");
    // Told it lost the lease, it stays fenced (not "unfenced" for want of a lease).
    assert_eq!(a.acquire_or_renew("a", TTL, false).await.unwrap(), None);
    assert!(a.claim(10, 10, lease_until(), None).await.unwrap().bundles.is_empty());

    // The new leader re-queues what a had in flight, and delivers everything.
    assert_eq!(b.recover().await.unwrap(), 1);
    let claimed = b.claim(10, 10, lease_until(), None).await.unwrap();
    let mut ids: Vec<String> = claimed.bundles.iter().map(|b| b.head().resource_id.clone()).collect();
    ids.sort();
    assert_eq!(ids, ["u1", "u2"]);
}

/// Two live processes under one node name: the second is refused (its heartbeat writes
/// nothing and names the first), the first keeps beating; once the first is silent for the
/// freshness window, or the caller knows it is dead (`fresh` zero), the name is taken over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_live_process_under_one_name_is_refused_and_old_rows_are_pruned() {
    let pg = TestPg::start().unwrap();
    let db = pg.create_database().unwrap();
    let a = super::fixture::open_pg(&pg, &db, 2).await;
    let first = node("x");
    let twin = NodeInfo { instance: "another process".into(), listen: "elsewhere".into(), ..node("x") };
    assert_eq!(a.heartbeat(&first, TTL).await.unwrap(), None);
    let other = a.heartbeat(&twin, TTL).await.unwrap().expect("refused: the name is live");
    assert_eq!(
        (other.node_id.as_str(), other.listen.as_str(), other.instance.as_str()),
        ("x", "127.0.0.1:1", "process of x")
    );
    assert_eq!(a.heartbeat(&first, TTL).await.unwrap(), None, "the first process keeps its name");
    let again = a.heartbeat(&twin, TTL).await.unwrap().unwrap();
    assert_ne!(again.heartbeat_at, other.heartbeat_at, "a live process's heartbeat moves");
    // The first falls silent past the window: the name goes to the newcomer, its clock anew.
    pg.psql(&db, "UPDATE scimsync.cluster_nodes SET heartbeat_at = now() - interval '1 minute', started_at = now() - interval '1 day'")
        .unwrap();
    let silent = a.live_nodes(Duration::from_secs(10 * 86_400)).await.unwrap().remove(0).started_at;
    assert_eq!(a.heartbeat(&twin, TTL).await.unwrap(), None);
    let nodes = a.live_nodes(TTL).await.unwrap();
    assert_eq!(nodes[0].listen, "elsewhere");
    assert!(nodes[0].started_at > silent, "a new process's start: {} after {silent}", nodes[0].started_at);
    assert_eq!(a.heartbeat(&first, TTL).await.unwrap().map(|n| n.listen), Some("elsewhere".into()));
    assert_eq!(a.heartbeat(&first, Duration::ZERO).await.unwrap(), None, "fresh zero: taken whatever");

    // Pruning forgets the long-silent rows, never the lease's holder.
    assert_eq!(a.acquire_or_renew("y", TTL, false).await.unwrap(), Some(1));
    for id in ["y", "z"] {
        assert_eq!(a.heartbeat(&node(id), TTL).await.unwrap(), None);
    }
    pg.psql(&db, "UPDATE scimsync.cluster_nodes SET heartbeat_at = now() - interval '2 days' WHERE node_id <> 'x'")
        .unwrap();
    assert_eq!(a.prune_nodes(Duration::from_secs(86_400)).await.unwrap(), 1, "z goes; y holds the lease");
    let left: Vec<String> =
        a.live_nodes(Duration::from_secs(10 * 86_400)).await.unwrap().into_iter().map(|n| n.node_id).collect();
    assert_eq!(left, ["x", "y"]);
}

/// A vanished node's transaction still holds an outbox row: the leader's recover (a fenced
/// transaction, holding the lease row FOR SHARE, which its own renewals would wait behind)
/// gives up on the lock in seconds instead of waiting for that transaction, and the leader
/// renews at once after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_transaction_does_not_wait_on_a_vanished_nodes_locks() {
    let pg = std::sync::Arc::new(TestPg::start().unwrap());
    let db = pg.create_database().unwrap();
    let a = super::fixture::open_pg(&pg, &db, 2).await;
    create_user(&a, "u1").await;
    assert_eq!(a.acquire_or_renew("a", TTL, false).await.unwrap(), Some(1));
    let lease_until = crate::model::time_after(Duration::from_secs(300));
    assert_eq!(a.claim(1, 10, lease_until, None).await.unwrap().bundles.len(), 1);
    // The "vanished" session: it locked the row and says nothing more for 8 s.
    let zombie = std::thread::spawn({
        let (pg, db) = (pg.clone(), db.clone());
        move || {
            pg.psql(&db, "BEGIN; SELECT 1 FROM scimsync.outbox FOR UPDATE; SELECT pg_sleep(8); COMMIT;").unwrap();
        }
    });
    let holding = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(8)%' AND state = 'active' \
                   AND pid <> pg_backend_pid()";
    for _ in 0..100 {
        if pg.psql(&db, holding).unwrap().trim() == "1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pg.psql(&db, holding).unwrap().trim(), "1", "the zombie holds the row");
    let r = a.recover().await;
    assert!(r.is_err(), "recover gave up on the lock: {r:?}");
    assert_eq!(pg.psql(&db, holding).unwrap().trim(), "1", "...while the zombie still held it");
    assert_eq!(a.acquire_or_renew("a", TTL, false).await.unwrap(), Some(1), "the leader renews");
    zombie.join().unwrap();
    assert_eq!(a.recover().await.unwrap(), 1, "once the lock is gone, recover re-queues the row");
}

/// A leader stalled in the middle of a claim (SIGSTOP, a frozen VM), with the lease row locked
/// by the claim's fence check, does not block the takeover for as long as it stalls: the
/// server ends its idle transaction after `IDLE_IN_TRANSACTION_TIMEOUT`, the other node takes
/// the expired lease, and the stalled claim commits nothing when its node wakes up. (Found by
/// `tests/it/cluster_chaos.rs`: without the timeout, the takeover and the other nodes' writes
/// waited for the paused leader.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stalled_inside_a_claim_does_not_block_the_takeover() {
    let pg = TestPg::start().unwrap();
    let db = pg.create_database().unwrap();
    let a = super::fixture::open_pg(&pg, &db, 2).await;
    let b = super::fixture::open_pg(&pg, &db, 2).await;
    // A short lease, so that it is expired by the time b tries.
    assert_eq!(a.acquire_or_renew("a", Duration::from_secs(1), false).await.unwrap(), Some(1));
    let mut conn = a.conn().await.unwrap();
    let tx = conn.transaction().await.unwrap();
    assert!(super::cluster::still_leader(&tx, &Some(("a".into(), 1))).await.unwrap(), "the fence holds the lease row");
    // a stalls here; b waits for the lease, and gets it once the server ended a's transaction
    // (the fixture's statement_timeout, 60 s, is what would end b's wait otherwise).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(b.acquire_or_renew("b", TTL, false).await.unwrap(), Some(2), "b takes the expired lease");
    // a wakes up: its transaction is gone, nothing it does in it commits.
    let after = tx.execute("UPDATE outbox SET state = state WHERE false", &[]).await;
    assert!(after.is_err() || tx.commit().await.is_err(), "the stalled transaction was ended by the server");
}

/// The lease is held by a process, not by a name: a second live daemon given the same
/// `node_name` (a copied config) does not lead beside the first, and a restart under a
/// configured name waits for its earlier lease to expire, unless it knows the earlier process
/// is gone (`reclaim`: the data directory's lock on the kept node id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_not_shared_by_two_processes_with_one_name() {
    let pg = TestPg::start().unwrap();
    let db = pg.create_database().unwrap();
    let first = super::fixture::open_pg(&pg, &db, 2).await;
    let twin = super::fixture::open_pg(&pg, &db, 2).await;
    assert_eq!(first.acquire_or_renew("bridge-1", TTL, false).await.unwrap(), Some(1));
    assert_eq!(twin.acquire_or_renew("bridge-1", TTL, false).await.unwrap(), None, "the twin does not lead too");
    assert_eq!(first.acquire_or_renew("bridge-1", TTL, false).await.unwrap(), Some(1), "the first still renews");

    // A restart that knows the earlier process is gone takes the lease back at once, in the
    // same epoch; the earlier holder (were it alive) renews nothing more.
    let restarted = super::fixture::open_pg(&pg, &db, 2).await;
    assert_eq!(restarted.acquire_or_renew("bridge-1", TTL, true).await.unwrap(), Some(1));
    assert_eq!(restarted.acquire_or_renew("bridge-1", TTL, false).await.unwrap(), Some(1), "then renews it");

    // Expired, the name's lease goes to whichever process asks, in a new epoch; the one whose
    // epoch it was does not get it back by name.
    expire(&pg, &db);
    assert_eq!(twin.acquire_or_renew("bridge-1", TTL, false).await.unwrap(), Some(2));
    assert_eq!(restarted.acquire_or_renew("bridge-1", TTL, false).await.unwrap(), None);
    assert_eq!(first.acquire_or_renew("bridge-1", TTL, false).await.unwrap(), None);
}

/// A stale leader's delivery that ends after another node took over records nothing: the
/// new leader re-queued the row and delivered it, and the stale outcome (here a retry: its
/// request timed out while it was paused) must not put the row back in the queue, nor mark
/// it dead or done over the new leader's record. (Seen in `tests/it/cluster_chaos.rs`: a
/// leader resumed after SIGSTOP recorded "will retry" for a row already delivered.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_leaders_late_outcome_is_not_recorded() {
    let pg = TestPg::start().unwrap();
    let db = pg.create_database().unwrap();
    let a = super::fixture::open_pg(&pg, &db, 2).await;
    let b = super::fixture::open_pg(&pg, &db, 2).await;
    create_user(&a, "u1").await;
    let lease_until = || crate::model::time_after(Duration::from_secs(300));
    assert_eq!(a.acquire_or_renew("a", TTL, false).await.unwrap(), Some(1));
    let stale = a.claim(1, 10, lease_until(), None).await.unwrap().bundles.pop().expect("a claims the row");

    // a stalls mid-delivery; b takes over, re-queues the row and delivers it.
    expire(&pg, &db);
    assert_eq!(b.acquire_or_renew("b", TTL, false).await.unwrap(), Some(2));
    assert_eq!(b.recover().await.unwrap(), 1);
    let fresh = b.claim(1, 10, lease_until(), None).await.unwrap().bundles.pop().expect("b claims the row");
    let done = Completion::Success { id_map: Some(Some("app-1".into())), applied: None, note: None, recreated: false };
    b.complete(&fresh, crate::model::now(), done).await.unwrap();

    // a wakes up and records its outcome: nothing changes.
    let retry = Completion::Retry { next_attempt_at: crate::model::now(), error: "timed out".into() };
    a.complete(&stale, crate::model::now(), retry).await.unwrap();
    let state = pg.psql(&db, &format!("SELECT state FROM scimsync.outbox WHERE id = {}", stale.head().id)).unwrap();
    assert_eq!(state, "done", "the new leader's record stands");
    assert!(b.claim(10, 10, lease_until(), None).await.unwrap().bundles.is_empty(), "nothing to deliver again");
}
