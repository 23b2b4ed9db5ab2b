//! Several daemons on one store act as one bridge (issue 15): this node's election loop.
//!
//! Owns: this node's identity, its heartbeat, taking and keeping the leader lease, and the
//! role it publishes ([`Role`], through a `watch` channel) for the wiring to start and stop
//! what only the leader runs. Must not touch: SQL (the lease's statements are the store's,
//! `store::ClusterStore`), what a leader runs (that is `app`).
//!
//! The lease lives in the database and is timed by the database's clock: a node takes it
//! when it is free or expired, then renews it every [`RENEW_EVERY`] for [`LEASE_TTL`].
//!
//! **Bound on takeover**: a killed leader's lease expires at most [`LEASE_TTL`] after its
//! last renewal, and a follower tries every [`RENEW_EVERY`]: another node leads within
//! `LEASE_TTL + RENEW_EVERY` (20 s), plus a statement's time. A leader that stops cleanly
//! releases the lease, and another node leads within `RENEW_EVERY`.
//!
//! **Fencing** (a partitioned or paused leader stops before another starts):
//! 1. the leader gives up its role as soon as a renewal fails, and when its own monotonic
//!    clock passes its last successful renewal's *start* + `LEASE_TTL` − [`FENCE_MARGIN`]
//!    without a renewal: since the database set the deadline after that start, the node
//!    stops at least `FENCE_MARGIN` before the lease can go to another node;
//! 2. the outbox claim (what sends to the app) checks, in its own transaction, that the
//!    lease this node holds is still unexpired and of the same epoch, and locks it until the
//!    claim commits: a stale leader that did not notice yet claims nothing. Rows it claimed
//!    before may be delivered twice (the new leader re-queues them), with the same
//!    Idempotency-Key; the stale leader's outcome for them is not recorded (the same check
//!    in `complete`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::{ClusterNode, NodeInfo, Store};

/// How long a lease lasts without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(15);
/// How often the leader renews and a follower tries to take the lease; also the heartbeat.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
/// How long before the lease's deadline (by the node's own clock) a leader that could not
/// renew stops acting: room for clock-rate differences and for stopping.
pub const FENCE_MARGIN: Duration = Duration::from_secs(3);
/// A node is live while its last heartbeat is at most this old.
pub const LIVE_WITHIN: Duration = LEASE_TTL;

/// What this node is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It holds the lease of this epoch: it delivers and runs what runs once.
    Leader { epoch: i64 },
    /// Another node leads, or none can be known (the database is away).
    Follower,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader { .. } => "leader",
            Role::Follower => "follower",
        }
    }
}

/// This node's view of the cluster; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    node: Arc<NodeInfo>,
    role: watch::Receiver<Role>,
    /// Whether other daemons can share the store (PostgreSQL), and so there is an election.
    shared: bool,
    /// The live nodes as last read (empty on a store no other daemon can share).
    nodes: Arc<Mutex<Vec<ClusterNode>>>,
}

impl Cluster {
    pub fn node_id(&self) -> &str {
        &self.node.node_id
    }

    pub fn role(&self) -> Role {
        *self.role.borrow()
    }

    /// A receiver of role changes (the wiring starts and stops the leader's work on them).
    pub fn subscribe(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// The live nodes as last read: on a store no other daemon can share, this node alone.
    pub fn nodes(&self) -> Vec<ClusterNode> {
        if !self.shared {
            return vec![ClusterNode {
                node_id: self.node.node_id.clone(),
                listen: self.node.listen.clone(),
                version: self.node.version.clone(),
                started_at: String::new(),
                heartbeat_age_seconds: 0.0,
                leader: true,
            }];
        }
        self.nodes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The leader's id as last read, if a live node holds the lease.
    pub fn leader(&self) -> Option<String> {
        if let Role::Leader { .. } = self.role() {
            return Some(self.node.node_id.clone());
        }
        self.nodes().into_iter().find(|n| n.leader).map(|n| n.node_id)
    }
}

/// This node's id and, when the id is the one kept in the data directory, the open file whose
/// lock says a live process uses it (keep it for the life of the process).
pub struct NodeIdentity {
    pub id: String,
    pub held: Option<std::fs::File>,
}

/// This node's id: `configured`; else the id kept in `data_dir/node-id` (made once: the host
/// name and a random suffix), so that a daemon restarted after a crash is the same node and
/// takes its own lease back at once instead of waiting for it to expire. The file is locked
/// (`flock`) while the process runs: the lock goes only with the process, so a node that
/// takes back a lease under this id knows the earlier holder is dead. When the file cannot be
/// kept or another live process holds it (two daemons on one data directory), the host name
/// and the process id (a new node at each start; takeover waits for the old lease).
pub fn node_id(configured: &str, data_dir: &std::path::Path) -> NodeIdentity {
    if !configured.trim().is_empty() {
        return NodeIdentity { id: configured.trim().to_string(), held: None };
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    match kept_id(&host, data_dir) {
        Ok(Some((id, file))) => NodeIdentity { id, held: Some(file) },
        Ok(None) => {
            tracing::warn!(dir = %data_dir.display(), "cluster: another process holds this data directory's node id; \
                           using a new id for this run");
            NodeIdentity { id: format!("{host}-{}", std::process::id()), held: None }
        }
        Err(e) => {
            tracing::warn!(dir = %data_dir.display(), error = %e, "cluster: cannot keep a node id in the data directory; \
                           using a new id for this run");
            NodeIdentity { id: format!("{host}-{}", std::process::id()), held: None }
        }
    }
}

/// The id in `data_dir/node-id`, made when missing, and the file holding its lock; `None`
/// when another live process holds it.
fn kept_id(host: &str, data_dir: &std::path::Path) -> std::io::Result<Option<(String, std::fs::File)>> {
    use std::io::{Read, Seek, Write};
    std::fs::create_dir_all(data_dir)?;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(data_dir.join("node-id"))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
        Err(std::fs::TryLockError::Error(e)) => return Err(e),
    }
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    let id = text.trim().to_string();
    if !id.is_empty() {
        return Ok(Some((id, file)));
    }
    let mut suffix = [0u8; 4];
    getrandom::fill(&mut suffix).map_err(|e| std::io::Error::other(format!("no randomness: {e}")))?;
    let id = format!("{host}-{}", suffix.iter().map(|b| format!("{b:02x}")).collect::<String>());
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{id}")?;
    file.sync_all()?;
    Ok(Some((id, file)))
}

/// Start the election loop for `node` on `store`, until `shutdown`. The lease is not released
/// here: the wiring releases it ([`release`]) once the leader's work has stopped.
///
/// `reclaim`: this node's id is known to be free of any other live process (the data
/// directory's lock, [`NodeIdentity::held`]), so a lease held under it is a dead process's
/// and is taken back at once. Without it (a configured `node_name`), such a lease is left to
/// expire: a second live daemon given the same name must not lead beside the first.
pub async fn start(
    store: Store,
    node: NodeInfo,
    reclaim: bool,
    shutdown: CancellationToken,
) -> (Cluster, tokio::task::JoinHandle<()>) {
    let shared = store.cluster().shared();
    let (tx, rx) = watch::channel(Role::Follower);
    let cluster = Cluster { node: Arc::new(node), role: rx, shared, nodes: Arc::default() };
    // The first round before returning: a node that can lead at once (SQLite, or the first
    // PostgreSQL node) leads from the start, with no window in which nothing delivers.
    let mut state = Election { deadline: None, reclaim };
    state.round(&store, &cluster, &tx).await;
    let task = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            loop {
                let wait = match (tx.borrow().to_owned(), state.deadline) {
                    // Wake at the fencing deadline if a renewal hangs past it.
                    (Role::Leader { .. }, Some(d)) => (Instant::now() + RENEW_EVERY).min(d),
                    _ => Instant::now() + RENEW_EVERY,
                };
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep_until(wait) => {}
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = state.round(&store, &cluster, &tx) => {}
                }
            }
            tracing::debug!("cluster: election loop stopped");
        })
    };
    (cluster, task)
}

/// Give the lease up (at shutdown, after the leader's work stopped) so another node takes
/// over at its next try instead of at the lease's deadline.
pub async fn release(store: &Store, cluster: &Cluster) {
    if !cluster.shared || !matches!(cluster.role(), Role::Leader { .. }) {
        return;
    }
    match tokio::time::timeout(RENEW_EVERY, store.cluster().release(cluster.node_id())).await {
        Ok(Ok(())) => tracing::info!(node = cluster.node_id(), "cluster: leader lease released"),
        Ok(Err(e)) => tracing::warn!(error = %e, "cluster: could not release the leader lease; it expires by itself"),
        Err(_) => tracing::warn!("cluster: releasing the leader lease timed out; it expires by itself"),
    }
    telemetry_role(cluster.node_id(), Role::Follower);
}

struct Election {
    /// When this node must stop acting as leader unless it renews (its own monotonic clock).
    deadline: Option<Instant>,
    /// Whether a lease held under this node's id by an earlier process may be taken back.
    reclaim: bool,
}

impl Election {
    /// One round: try to take or renew the lease (bounded by the fencing deadline while
    /// leading), publish the role, then heartbeat and read the live nodes.
    async fn round(&mut self, store: &Store, cluster: &Cluster, tx: &watch::Sender<Role>) {
        let node = &cluster.node;
        let started = Instant::now();
        let bound = match (*tx.borrow(), self.deadline) {
            (Role::Leader { .. }, Some(d)) => d,
            _ => started + LEASE_TTL,
        };
        let role = match tokio::time::timeout_at(
            bound,
            store.cluster().acquire_or_renew(&node.node_id, LEASE_TTL, self.reclaim),
        )
        .await
        {
            Ok(Ok(Some(epoch))) => {
                self.deadline = Some(started + LEASE_TTL - FENCE_MARGIN);
                Role::Leader { epoch }
            }
            Ok(Ok(None)) => {
                self.deadline = None;
                Role::Follower
            }
            Ok(Err(e)) => {
                if matches!(*tx.borrow(), Role::Leader { .. }) {
                    tracing::warn!(error = %e, "cluster: could not renew the leader lease; stepping down");
                } else {
                    tracing::debug!(error = %e, "cluster: could not try for the leader lease");
                }
                self.deadline = None;
                Role::Follower
            }
            Err(_) => {
                if matches!(*tx.borrow(), Role::Leader { .. }) {
                    tracing::warn!("cluster: the leader lease was not renewed in time; stepping down");
                }
                self.deadline = None;
                Role::Follower
            }
        };
        let changed = tx.send_if_modified(|r| {
            let changed = *r != role;
            *r = role;
            changed
        });
        if changed {
            match role {
                Role::Leader { epoch } => tracing::info!(node = %node.node_id, epoch, "cluster: this node leads"),
                Role::Follower => tracing::info!(node = %node.node_id, "cluster: this node follows"),
            }
        }
        telemetry_role(&node.node_id, role);
        if !cluster.shared {
            return;
        }
        let beat = async {
            store.cluster().heartbeat(node).await?;
            store.cluster().live_nodes(LIVE_WITHIN).await
        };
        match tokio::time::timeout(RENEW_EVERY, beat).await {
            Ok(Ok(nodes)) => *cluster.nodes.lock().unwrap_or_else(|p| p.into_inner()) = nodes,
            Ok(Err(e)) => tracing::debug!(error = %e, "cluster: heartbeat failed"),
            Err(_) => tracing::debug!("cluster: heartbeat timed out"),
        }
    }
}

fn telemetry_role(node: &str, role: Role) {
    crate::telemetry::set_node_leader(node, matches!(role, Role::Leader { .. }));
}

#[cfg(test)]
mod tests {
    use super::node_id;

    /// The kept id survives a restart (the file is made once), is not shared with a second
    /// live process on the same data directory, and a configured name wins.
    #[test]
    fn the_node_id_is_kept_and_held_by_one_process() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = node_id("", &data);
        assert!(first.held.is_some());
        let twin = node_id("", &data);
        assert!(twin.held.is_none(), "a second process on the same data directory does not share the id");
        assert_ne!(twin.id, first.id);
        let id = first.id.clone();
        drop(first);
        let restarted = node_id("", &data);
        assert_eq!(restarted.id, id, "a restart is the same node");
        assert!(restarted.held.is_some());
        assert_eq!(node_id(" bridge-1 ", &data).id, "bridge-1");
    }
}
