//! Several daemons on one schema (issue 15): the nodes' heartbeats (`cluster_nodes`) and
//! the one leader lease (`leader_lease`), both timed by the database's clock.
//!
//! Owns: the lease's statements and this store's fence (the lease it last held, which each
//! outbox claim checks in its own transaction). Must not touch: when to renew, what a
//! leader runs (that is `crate::cluster` and the wiring).

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;

use super::PgStore;
use crate::store::StoreError;
use crate::store::face::ClusterStore;
use crate::store::types::{ClusterNode, Lease, NodeInfo};

/// The lease this store may claim under: (node, epoch), with epoch [`NO_EPOCH`] once it lost
/// or released the lease; `None` while it never took part in an election (a store of the
/// CLI's tools, of a test of one store: not fenced).
pub(super) type Fence = Option<(String, i64)>;

/// How long a fenced transaction (a claim, a recover) may wait on any lock.
const FENCED_LOCK_WAIT: Duration = Duration::from_secs(2);

/// An epoch no lease has (epochs start at 1): the fence of a node that does not lead.
const NO_EPOCH: i64 = -1;

/// Whether the lease `fence` names is still held and unexpired, locking the lease row against
/// a takeover until the caller's transaction ends (`FOR SHARE`: a claim and a takeover are
/// serialised, so no claim commits under a lease that another node already took). A store
/// that never led (no fence: the CLI's tools, tests of one store) is not fenced.
///
/// The `FOR SHARE` also holds off this node's own renewals (an `UPDATE` of the row) while the
/// transaction lasts: the rest of it may wait on a lock for at most [`FENCED_LOCK_WAIT`]
/// (`lock_timeout`), so rows left locked by a vanished node (its transaction not yet ended
/// by the server) fail a claim or recover fast instead of stalling this node's renewals
/// past its fencing deadline. A failed recover is not lost: the claim takes rows whose
/// lease expired.
pub(super) async fn still_leader(c: &impl GenericClient, fence: &Fence) -> Result<bool, StoreError> {
    let Some((holder, epoch)) = fence else { return Ok(true) };
    c.batch_execute(&format!("SET LOCAL lock_timeout = {}", FENCED_LOCK_WAIT.as_millis())).await?;
    Ok(c.query_opt(
        "SELECT 1 FROM leader_lease WHERE id = 1 AND holder = $1 AND epoch = $2 AND expires_at > now() FOR SHARE",
        &[holder, epoch],
    )
    .await?
    .is_some())
}

fn interval(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[async_trait]
impl ClusterStore for PgStore {
    fn shared(&self) -> bool {
        true
    }

    async fn heartbeat(&self, node: &NodeInfo, fresh: Duration) -> Result<Option<ClusterNode>, StoreError> {
        let c = self.conn().await?;
        // One statement: the row is ours (same instance), stale, or new, and is written; or a
        // live other process owns it, and the conflict's WHERE leaves it as it is (no row
        // comes back). A new process under the name starts its row's clock again.
        let written = c
            .query_opt(
                "INSERT INTO cluster_nodes (node_id, listen, admin, version, instance) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (node_id) DO UPDATE
                 SET heartbeat_at = now(), listen = excluded.listen, admin = excluded.admin,
                     version = excluded.version, instance = excluded.instance,
                     started_at = CASE WHEN cluster_nodes.instance = excluded.instance
                                       THEN cluster_nodes.started_at ELSE now() END
                 WHERE cluster_nodes.instance = excluded.instance
                    OR cluster_nodes.heartbeat_at <= now() - make_interval(secs => $6)
                 RETURNING 1",
                &[&node.node_id, &node.listen, &node.admin, &node.version, &node.instance, &interval(fresh)],
            )
            .await?;
        if written.is_some() {
            return Ok(None);
        }
        let sql = format!("{NODE_SELECT} WHERE n.node_id = $1");
        Ok(c.query_opt(&sql, &[&node.node_id]).await?.as_ref().map(node_row))
    }

    async fn acquire_or_renew(&self, node_id: &str, ttl: Duration, reclaim: bool) -> Result<Option<i64>, StoreError> {
        // The epoch this store holds, if any: a lease under our id of another epoch is another
        // process's (a second daemon given the same node_name, or our own previous run, which
        // `reclaim` says is gone), never ours to renew by name alone.
        let held = match &*self.fence.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((holder, epoch)) if holder == node_id => *epoch,
            _ => NO_EPOCH,
        };
        let row = self
            .conn()
            .await?
            .query_opt(
                "UPDATE leader_lease
                 SET holder = $1,
                     epoch = CASE WHEN holder = $1 AND (epoch = $3 OR $4) THEN epoch ELSE epoch + 1 END,
                     expires_at = now() + make_interval(secs => $2)
                 WHERE id = 1 AND ((holder = $1 AND (epoch = $3 OR $4)) OR expires_at < now())
                 RETURNING epoch",
                &[&node_id, &interval(ttl), &held, &reclaim],
            )
            .await?;
        let epoch = row.map(|r| r.get::<_, i64>(0));
        // Once in an election, always fenced: a node that lost the lease keeps a fence no
        // lease matches (epoch -1), never none (which would claim unfenced).
        *self.fence.lock().unwrap_or_else(|p| p.into_inner()) = Some((node_id.to_string(), epoch.unwrap_or(NO_EPOCH)));
        Ok(epoch)
    }

    async fn release(&self, node_id: &str) -> Result<(), StoreError> {
        // Stop claiming first: even if the statement fails, this store claims nothing more.
        *self.fence.lock().unwrap_or_else(|p| p.into_inner()) = Some((node_id.to_string(), NO_EPOCH));
        self.conn()
            .await?
            .execute("UPDATE leader_lease SET expires_at = '-infinity' WHERE id = 1 AND holder = $1", &[&node_id])
            .await?;
        Ok(())
    }

    async fn live_nodes(&self, within: Duration) -> Result<Vec<ClusterNode>, StoreError> {
        let sql = format!("{NODE_SELECT} WHERE n.heartbeat_at > now() - make_interval(secs => $1) ORDER BY n.node_id");
        let rows = self.conn().await?.query(&sql, &[&interval(within)]).await?;
        Ok(rows.iter().map(node_row).collect())
    }

    async fn lease(&self) -> Result<Option<Lease>, StoreError> {
        let row = self
            .conn()
            .await?
            .query_one(
                "SELECT holder, epoch,
                        CASE WHEN expires_at = '-infinity' THEN -1e9
                             ELSE extract(epoch FROM expires_at - now())::float8 END
                 FROM leader_lease WHERE id = 1",
                &[],
            )
            .await?;
        Ok(Some(Lease { holder: row.get(0), epoch: row.get(1), expires_in_seconds: row.get(2) }))
    }

    async fn prune_nodes(&self, older_than: Duration) -> Result<u64, StoreError> {
        Ok(self
            .conn()
            .await?
            .execute(
                "DELETE FROM cluster_nodes
                 WHERE heartbeat_at < now() - make_interval(secs => $1)
                   AND node_id <> (SELECT holder FROM leader_lease WHERE id = 1)",
                &[&interval(older_than)],
            )
            .await?)
    }
}

/// A node's row with the lease (`node_row` reads it); the caller adds the WHERE.
const NODE_SELECT: &str = "SELECT n.node_id, n.listen, n.admin, n.version, n.instance,
        to_char(n.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
        to_char(n.heartbeat_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
        extract(epoch FROM now() - n.heartbeat_at)::float8,
        (l.holder = n.node_id AND l.expires_at > now())
 FROM cluster_nodes n CROSS JOIN leader_lease l";

fn node_row(r: &tokio_postgres::Row) -> ClusterNode {
    ClusterNode {
        node_id: r.get(0),
        listen: r.get(1),
        admin: r.get(2),
        version: r.get(3),
        instance: r.get(4),
        started_at: r.get(5),
        heartbeat_at: r.get(6),
        heartbeat_age_seconds: r.get::<_, f64>(7).max(0.0),
        leader: r.get(8),
    }
}
