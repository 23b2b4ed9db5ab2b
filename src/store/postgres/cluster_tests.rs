//! The leader lease with two stores on one database, as two daemons would hold them: one
//! leader at a time, a takeover once the lease expired (expired here by moving the
//! database's clock-based deadline, not by waiting), and the fence: a node whose lease was
//! taken claims nothing.

use std::time::Duration;

use serde_json::json;
use testpg::TestPg;

use crate::model::ResourceKind;
use crate::store::face::{ClusterStore, OutboxStore, ResourceStore};
use crate::store::{NewAudit, NewResource, NodeInfo};

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
fn expire(pg: &TestPg, db: &str) {
    pg.psql(db, "UPDATE scimsync.leader_lease SET expires_at = now() - interval '1 second'").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_an_expired_lease_goes_to_the_other_node() {
    let pg = TestPg::start().unwrap();
    let db = pg.create_database().unwrap();
    let a = super::fixture::open_pg(&pg, &db, 2).await;
    let b = super::fixture::open_pg(&pg, &db, 2).await;

    assert_eq!(a.acquire_or_renew("a", TTL).await.unwrap(), Some(1), "a free lease is taken");
    assert_eq!(b.acquire_or_renew("b", TTL).await.unwrap(), None, "a held lease is not");
    assert_eq!(a.acquire_or_renew("a", TTL).await.unwrap(), Some(1), "renewing keeps the epoch");
    assert_eq!(b.acquire_or_renew("b", TTL).await.unwrap(), None);

    expire(&pg, &db);
    assert_eq!(b.acquire_or_renew("b", TTL).await.unwrap(), Some(2), "an expired lease is taken, a new epoch");
    assert_eq!(a.acquire_or_renew("a", TTL).await.unwrap(), None, "the old leader does not get it back");

    // Released at shutdown: the other node need not wait for the deadline.
    b.release("b").await.unwrap();
    assert_eq!(a.acquire_or_renew("a", TTL).await.unwrap(), Some(3));

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
        let new = NewResource {
            kind: ResourceKind::User,
            id: id.into(),
            attrs: json!({"userName": format!("{id}@example.com")}).as_object().unwrap().clone(),
            members: vec![],
        };
        ResourceStore::create(&a, new, NewAudit::new("test", "POST", "User"), None).await.unwrap();
    }
    let lease_until = || crate::model::time_after(Duration::from_secs(300));

    assert_eq!(a.acquire_or_renew("a", TTL).await.unwrap(), Some(1));
    let first = a.claim(1, 10, lease_until(), None).await.unwrap();
    assert_eq!(first.bundles.len(), 1, "the leader claims");

    // a is partitioned (it renews no more) and its lease expires; b takes over.
    expire(&pg, &db);
    assert_eq!(b.acquire_or_renew("b", TTL).await.unwrap(), Some(2));
    let stale = a.claim(10, 10, lease_until(), None).await.unwrap();
    assert!(stale.bundles.is_empty(), "a stale leader's claim claims nothing: {stale:?}");
    assert_eq!(a.recover().await.unwrap(), 0, "nor does it re-queue the new leader's rows");
    // Told it lost the lease, it stays fenced (not "unfenced" for want of a lease).
    assert_eq!(a.acquire_or_renew("a", TTL).await.unwrap(), None);
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
    assert_eq!(a.acquire_or_renew("y", TTL).await.unwrap(), Some(1));
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
    let new = NewResource {
        kind: ResourceKind::User,
        id: "u1".into(),
        attrs: json!({"userName": "u1@example.com"}).as_object().unwrap().clone(),
        members: vec![],
    };
    ResourceStore::create(&a, new, NewAudit::new("test", "POST", "User"), None).await.unwrap();
    assert_eq!(a.acquire_or_renew("a", TTL).await.unwrap(), Some(1));
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
    assert_eq!(a.acquire_or_renew("a", TTL).await.unwrap(), Some(1), "the leader renews");
    zombie.join().unwrap();
    assert_eq!(a.recover().await.unwrap(), 1, "once the lock is gone, recover re-queues the row");
}
