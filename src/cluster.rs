//! Several daemons on one store act as one bridge (issue 15): this node's election loop.
//!
//! Owns: this node's identity, its heartbeat, taking and keeping the leader lease, and the
//! role it publishes ([`Role`], through a `watch` channel) for the wiring to start and stop
//! what only the leader runs. Must not touch: SQL (the lease's statements are the store's,
//! `store::ClusterStore`), what a leader runs (that is `app`).
//!
//! The lease lives in the database and is timed by the database's clock: a node takes it
//! when it is free or expired, then renews it every `renew_every` for `lease_ttl`
//! ([`Timing`]: `[cluster]` settings, by default [`LEASE_TTL`], [`RENEW_EVERY`],
//! [`FENCE_MARGIN`]).
//!
//! **Bound on takeover**: a killed leader's lease expires at most `lease_ttl` after its
//! last renewal, and a follower tries every `renew_every`: another node leads within
//! `lease_ttl + renew_every` (20 s by default), plus a statement's time. A leader that stops
//! cleanly releases the lease, and another node leads within `renew_every`.
//!
//! **One process per node name**: the lease is held by a node *name*, so two live processes
//! under one name would both lead. Each process beats with a random instance id; a process
//! whose name another live process beats under refuses to start ([`start`] fails), and one
//! that finds its name taken while running stays a follower and says so at each round.
//!
//! **Fencing** (a partitioned or paused leader stops before another starts):
//! 1. the leader gives up its role as soon as a renewal fails, and when its own monotonic
//!    clock passes its last successful renewal's *start* + `lease_ttl` − `fence_margin`
//!    without a renewal: since the database set the deadline after that start, the node
//!    stops at least `fence_margin` before the lease can go to another node;
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

/// How long a lease lasts without renewal (default of `[cluster] lease_ttl_seconds`).
pub const LEASE_TTL: Duration = Duration::from_secs(15);
/// How often the leader renews and a follower tries to take the lease; also the heartbeat
/// (default of `[cluster] renew_every_seconds`).
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
/// How long before the lease's deadline (by the node's own clock) a leader that could not
/// renew stops acting: room for clock-rate differences and for stopping (default of
/// `[cluster] fence_margin_seconds`).
pub const FENCE_MARGIN: Duration = Duration::from_secs(3);
/// A node not heard from for this long is forgotten (its row pruned by the leader), so the
/// list of nodes does not grow with every host that ever ran.
pub const FORGET_AFTER: Duration = Duration::from_secs(86_400);
/// How often the leader prunes forgotten nodes.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The election's timings (`[cluster]`; `config` validates `2 × renew_every < lease_ttl`
/// and `1 s ≤ fence_margin ≤ lease_ttl − 2 × renew_every`, so a leader renews at least
/// once, with room for one slow statement, before its own fencing deadline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub lease_ttl: Duration,
    pub renew_every: Duration,
    pub fence_margin: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing { lease_ttl: LEASE_TTL, renew_every: RENEW_EVERY, fence_margin: FENCE_MARGIN }
    }
}

impl Timing {
    /// A node is live while its last heartbeat is at most this old.
    pub fn live_within(&self) -> Duration {
        self.lease_ttl
    }
}

/// What this node is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It holds the lease of this epoch: it delivers and runs what runs once. `term` counts
    /// this process's terms: a node that steps down and takes its own lease back (same
    /// epoch: no other node held it meanwhile) starts a new term, which the wiring sees as
    /// a change even when it missed the follower in between.
    Leader { epoch: i64, term: u64 },
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

/// Two live processes under one node name: what [`start`] refuses with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "another live scimsync process runs as node {node:?} on this store (it beat {age:.1} s ago; its SCIM \
     listener is {listen}, started {started_at}): two processes under one name would both lead. Give each \
     node its own [cluster] node_name, or its own store.data_dir (a copied data directory copies its \
     node-id file: delete node-id in the copy)"
)]
pub struct DuplicateNode {
    pub node: String,
    pub listen: String,
    pub started_at: String,
    pub age: f64,
}

impl DuplicateNode {
    fn of(other: &ClusterNode) -> DuplicateNode {
        DuplicateNode {
            node: other.node_id.clone(),
            listen: other.listen.clone(),
            started_at: other.started_at.clone(),
            age: other.heartbeat_age_seconds,
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
    /// Set while another live process beats under this node's name (this one then stays a
    /// follower): shown by `/readyz`.
    duplicate: Arc<Mutex<Option<DuplicateNode>>>,
    timing: Timing,
    /// While leading: when this node must stop acting as leader unless it renews (its own
    /// monotonic clock), for [`Cluster::may_act_as_leader`].
    fence_deadline: Arc<Mutex<Option<Instant>>>,
}

impl Cluster {
    /// Whether this node may still act as leader by its own clock: it leads and its fencing
    /// deadline has not passed. The role alone can lag: a process paused (SIGSTOP, a frozen
    /// VM) past its deadline wakes with every timer due at once, and a delivery task may run
    /// before the election loop that would demote it. The outbox worker asks right before it
    /// sends a delivery, so a woken stale leader does not send a change the new leader may
    /// already have sent, with later ones after it. Always true on a store no other daemon
    /// shares.
    pub fn may_act_as_leader(&self) -> bool {
        if !self.shared {
            return true;
        }
        matches!(self.role(), Role::Leader { .. })
            && self.fence_deadline.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|d| Instant::now() < d)
    }

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

    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// Another live process under this node's name, when one was seen at the last round.
    pub fn duplicate(&self) -> Option<DuplicateNode> {
        self.duplicate.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The live nodes as last read: on a store no other daemon can share, this node alone.
    pub fn nodes(&self) -> Vec<ClusterNode> {
        if !self.shared {
            return vec![ClusterNode {
                node_id: self.node.node_id.clone(),
                listen: self.node.listen.clone(),
                admin: self.node.admin.clone(),
                version: self.node.version.clone(),
                instance: self.node.instance.clone(),
                started_at: String::new(),
                heartbeat_at: String::new(),
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

    /// The leader as last read, when another node leads (its row: admin URL, version...).
    pub fn other_leader(&self) -> Option<ClusterNode> {
        if let Role::Leader { .. } = self.role() {
            return None;
        }
        self.nodes().into_iter().find(|n| n.leader && n.node_id != self.node.node_id)
    }
}

/// This process under its node name: a random id of its own, and the id of the last process
/// that ran under the same name from the same data directory. That file
/// (`data_dir/node-instance`, which names its host and directory too) is locked while the
/// process runs, so a fresh heartbeat of the predecessor's instance is a crashed process's
/// (the lock went with it), not a live twin's. A copied data directory is another place:
/// its process knows no predecessor and waits a fresh row out like any newcomer.
pub struct Instance {
    pub id: String,
    pub predecessor: Option<String>,
    /// The locked file (keep it for the life of the process); `None` when it cannot be kept.
    pub held: Option<std::fs::File>,
}

/// This process's [`Instance`] under `node_id`, recorded in `data_dir/node-instance`.
pub fn instance(node_id: &str, data_dir: &std::path::Path) -> Instance {
    let mut b = [0u8; 8];
    let id = match getrandom::fill(&mut b) {
        Ok(()) => b.iter().map(|x| format!("{x:02x}")).collect(),
        Err(_) => format!("pid-{}-{:?}", std::process::id(), std::time::SystemTime::now()),
    };
    match record_instance(node_id, &id, data_dir) {
        Ok((predecessor, file)) => Instance { id, predecessor, held: Some(file) },
        Err(e) => {
            tracing::debug!(error = %e, "cluster: cannot record this process in the data directory");
            Instance { id, predecessor: None, held: None }
        }
    }
}

/// Lock `data_dir/node-instance`, read the predecessor under `node_id`, write `id`.
fn record_instance(
    node_id: &str,
    id: &str,
    data_dir: &std::path::Path,
) -> std::io::Result<(Option<String>, std::fs::File)> {
    use std::io::{Read, Seek, Write};
    let Some(mut file) = open_locked(data_dir, "node-instance")? else {
        return Err(std::io::Error::other("another process on this data directory holds it"));
    };
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    // The place: a copy of the file elsewhere (another directory or host) names a process
    // this lock says nothing about.
    let place = format!(
        "{} {}",
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim(),
        std::fs::canonicalize(data_dir)?.display()
    );
    let mut lines = text.lines();
    let predecessor = match (lines.next(), lines.next(), lines.next()) {
        (Some(p), Some(n), Some(i)) if p == place && n == node_id && !i.is_empty() => Some(i.to_string()),
        _ => None,
    };
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{place}\n{node_id}\n{id}")?;
    file.sync_all()?;
    Ok((predecessor, file))
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

/// `data_dir/name`, made when missing, opened for reading and writing and locked (`flock`,
/// held until the file is dropped: the lock goes with the process); `None` when another
/// live process holds the lock.
fn open_locked(data_dir: &std::path::Path, name: &str) -> std::io::Result<Option<std::fs::File>> {
    std::fs::create_dir_all(data_dir)?;
    let file =
        std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(data_dir.join(name))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// The id in `data_dir/node-id`, made when missing, and the file holding its lock; `None`
/// when another live process holds it.
fn kept_id(host: &str, data_dir: &std::path::Path) -> std::io::Result<Option<(String, std::fs::File)>> {
    use std::io::{Read, Seek, Write};
    let Some(mut file) = open_locked(data_dir, "node-id")? else { return Ok(None) };
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
/// First the node claims its name ([`claim_name`]): `Err` when another live process beats
/// under it. `predecessor`: the instance of the last process under this name from this
/// data directory ([`Instance`]), known dead: a fresh row of it does not count.
///
/// `reclaim`: this node's id is known to be free of any other live process (the data
/// directory's lock, [`NodeIdentity::held`] or [`Instance::held`]), so a lease held under it
/// is a dead process's and is taken back at once. Without it, such a lease is left to
/// expire: a second live daemon given the same name must not lead beside the first (the
/// store renews only the epoch this process holds).
pub async fn start(
    store: Store,
    node: NodeInfo,
    timing: Timing,
    predecessor: Option<String>,
    reclaim: bool,
    shutdown: CancellationToken,
) -> Result<(Cluster, tokio::task::JoinHandle<()>), DuplicateNode> {
    let shared = store.cluster().shared();
    if shared {
        claim_name(&store, &node, timing, predecessor.as_deref(), &shutdown).await?;
    }
    let (tx, rx) = watch::channel(Role::Follower);
    let cluster = Cluster {
        node: Arc::new(node),
        role: rx,
        shared,
        nodes: Arc::default(),
        duplicate: Arc::default(),
        timing,
        fence_deadline: Arc::default(),
    };
    // The first round before returning: a node that can lead at once (SQLite, or the first
    // PostgreSQL node) leads from the start, with no window in which nothing delivers.
    let mut state = Election { deadline: None, terms: 0, pruned: None, reclaim };
    state.round(&store, &cluster, &tx).await;
    let task = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            loop {
                let wait = match (tx.borrow().to_owned(), state.deadline) {
                    // Wake at the fencing deadline if a renewal hangs past it.
                    (Role::Leader { .. }, Some(d)) => (Instant::now() + timing.renew_every).min(d),
                    _ => Instant::now() + timing.renew_every,
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
    Ok((cluster, task))
}

/// Take this node's name in the store before trying for the lease. A fresh row of another
/// process under the name is the remains of this data directory's crashed predecessor
/// (its instance is `predecessor`: taken at once), or else a live twin or a predecessor
/// this process cannot vouch for: wait and watch it. Its heartbeat moving means a live
/// twin (refuse at once); a row that stays fresh past `live_within + renew_every` was
/// beaten again meanwhile (a twin too); a row that goes stale is taken. When the database
/// does not answer, the election loop's heartbeats check again later.
async fn claim_name(
    store: &Store,
    node: &NodeInfo,
    timing: Timing,
    predecessor: Option<&str>,
    shutdown: &CancellationToken,
) -> Result<(), DuplicateNode> {
    let give_up = Instant::now() + timing.live_within() + timing.renew_every;
    let mut first: Option<String> = None;
    let mut fresh = timing.live_within();
    loop {
        match tokio::time::timeout(timing.renew_every, store.cluster().heartbeat(node, fresh)).await {
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(other))) if predecessor == Some(other.instance.as_str()) => {
                tracing::info!(node = %node.node_id, "cluster: taking over the node name from this data directory's previous process");
                fresh = Duration::ZERO;
                continue;
            }
            Ok(Ok(Some(other))) => {
                let moved = first.as_ref().is_some_and(|f| *f != other.heartbeat_at);
                if moved || Instant::now() >= give_up {
                    return Err(DuplicateNode::of(&other));
                }
                if first.is_none() {
                    tracing::warn!(
                        node = %node.node_id,
                        age_seconds = other.heartbeat_age_seconds,
                        "cluster: another process beat under this node name recently; \
                         waiting to see whether it is alive"
                    );
                    first = Some(other.heartbeat_at);
                }
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cluster: could not claim the node name yet");
                return Ok(());
            }
            Err(_) => return Ok(()),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Give the lease up (at shutdown, after the leader's work stopped) so another node takes
/// over at its next try instead of at the lease's deadline.
pub async fn release(store: &Store, cluster: &Cluster) {
    if !cluster.shared || !matches!(cluster.role(), Role::Leader { .. }) {
        return;
    }
    match tokio::time::timeout(cluster.timing.renew_every, store.cluster().release(cluster.node_id())).await {
        Ok(Ok(())) => tracing::info!(node = cluster.node_id(), "cluster: leader lease released"),
        Ok(Err(e)) => tracing::warn!(error = %e, "cluster: could not release the leader lease; it expires by itself"),
        Err(_) => tracing::warn!("cluster: releasing the leader lease timed out; it expires by itself"),
    }
    telemetry_role(cluster.node_id(), Role::Follower);
}

struct Election {
    /// When this node must stop acting as leader unless it renews (its own monotonic clock).
    deadline: Option<Instant>,
    /// Terms this process has led ([`Role::Leader`]'s `term`).
    terms: u64,
    /// When this node (as leader) last pruned forgotten nodes.
    pruned: Option<Instant>,
    /// Whether a lease held under this node's id by an earlier process may be taken back.
    reclaim: bool,
}

/// What the bounded part of a round found.
enum Outcome {
    Lease(Result<Option<i64>, crate::store::StoreError>),
    /// Another live process beats under this node's name: no try for the lease.
    Duplicate(DuplicateNode),
}

impl Election {
    /// One round: heartbeat (claiming the name: another live process under it keeps this
    /// node a follower), then try to take or renew the lease, both bounded by the fencing
    /// deadline while leading; publish the role; then read the live nodes, and prune
    /// forgotten ones now and then when leading.
    async fn round(&mut self, store: &Store, cluster: &Cluster, tx: &watch::Sender<Role>) {
        let node = &cluster.node;
        let timing = cluster.timing;
        let started = Instant::now();
        let bound = match (*tx.borrow(), self.deadline) {
            (Role::Leader { .. }, Some(d)) => d,
            _ => started + timing.lease_ttl,
        };
        let attempt = async {
            if cluster.shared {
                match store.cluster().heartbeat(node, timing.live_within()).await {
                    Ok(Some(other)) => return Outcome::Duplicate(DuplicateNode::of(&other)),
                    Ok(None) => {}
                    // The lease's statement says whether the database answers.
                    Err(e) => tracing::debug!(error = %e, "cluster: heartbeat failed"),
                }
            }
            Outcome::Lease(store.cluster().acquire_or_renew(&node.node_id, timing.lease_ttl, self.reclaim).await)
        };
        let was_leader = matches!(*tx.borrow(), Role::Leader { .. });
        let role = match tokio::time::timeout_at(bound, attempt).await {
            Ok(Outcome::Duplicate(d)) => {
                tracing::error!("cluster: {d}; this node stays a follower until the other process stops");
                *cluster.duplicate.lock().unwrap_or_else(|p| p.into_inner()) = Some(d);
                self.deadline = None;
                Role::Follower
            }
            Ok(Outcome::Lease(r)) => {
                *cluster.duplicate.lock().unwrap_or_else(|p| p.into_inner()) = None;
                match r {
                    Ok(Some(epoch)) => {
                        self.deadline = Some(started + timing.lease_ttl - timing.fence_margin);
                        match *tx.borrow() {
                            Role::Leader { epoch: e, term } if e == epoch => Role::Leader { epoch, term },
                            _ => {
                                self.terms += 1;
                                Role::Leader { epoch, term: self.terms }
                            }
                        }
                    }
                    Ok(None) => {
                        self.deadline = None;
                        Role::Follower
                    }
                    Err(e) => {
                        if was_leader {
                            tracing::warn!(error = %e, "cluster: could not renew the leader lease; stepping down");
                        } else {
                            tracing::debug!(error = %e, "cluster: could not try for the leader lease");
                        }
                        self.deadline = None;
                        Role::Follower
                    }
                }
            }
            Err(_) => {
                if was_leader {
                    tracing::warn!("cluster: the leader lease was not renewed in time; stepping down");
                }
                self.deadline = None;
                Role::Follower
            }
        };
        // The deadline first: a role published as leader always comes with its deadline.
        *cluster.fence_deadline.lock().unwrap_or_else(|p| p.into_inner()) = self.deadline;
        let changed = tx.send_if_modified(|r| {
            let changed = *r != role;
            *r = role;
            changed
        });
        if changed {
            match role {
                Role::Leader { epoch, term } => {
                    tracing::info!(node = %node.node_id, epoch, term, "cluster: this node leads")
                }
                Role::Follower => tracing::info!(node = %node.node_id, "cluster: this node follows"),
            }
        }
        telemetry_role(&node.node_id, role);
        if !cluster.shared {
            return;
        }
        match tokio::time::timeout(timing.renew_every, store.cluster().live_nodes(timing.live_within())).await {
            Ok(Ok(nodes)) => *cluster.nodes.lock().unwrap_or_else(|p| p.into_inner()) = nodes,
            Ok(Err(e)) => tracing::debug!(error = %e, "cluster: reading the live nodes failed"),
            Err(_) => tracing::debug!("cluster: reading the live nodes timed out"),
        }
        if matches!(role, Role::Leader { .. }) && self.pruned.is_none_or(|p| p.elapsed() >= PRUNE_EVERY) {
            self.pruned = Some(Instant::now());
            match tokio::time::timeout(timing.renew_every, store.cluster().prune_nodes(FORGET_AFTER)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!(forgotten = n, "cluster: forgot nodes not heard from for a day"),
                Ok(Err(e)) => tracing::debug!(error = %e, "cluster: pruning old nodes failed"),
                Err(_) => tracing::debug!("cluster: pruning old nodes timed out"),
            }
        }
    }
}

fn telemetry_role(node: &str, role: Role) {
    crate::telemetry::set_node_leader(node, matches!(role, Role::Leader { .. }));
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Role, Timing, instance, node_id, start};
    use crate::store::{NodeInfo, PgOptions, Store};

    /// A leader whose renewal hangs past its fencing deadline steps down; when it takes its
    /// own lease back (the same epoch: no other node took it) that is a new term, so the
    /// wiring restarts the leader's work even if it never saw the follower in between.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stepping_down_and_retaking_the_same_epoch_is_a_new_term() {
        let pg = testpg::TestPg::start().unwrap();
        let db = pg.create_database().unwrap();
        let opts = PgOptions {
            url: pg.url_without_password(&db),
            password: Some(testpg::PASSWORD.into()),
            pool_size: 2,
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(60),
            ca_file: None,
            schema: "scimsync".into(),
        };
        let never = tokio_util::sync::CancellationToken::new();
        let store = Store::open_postgres(&opts, &Default::default(), &never).await.unwrap();
        let node = NodeInfo {
            node_id: "n".into(),
            listen: String::new(),
            admin: String::new(),
            version: "test".into(),
            instance: "i".into(),
        };
        let timing = Timing {
            lease_ttl: Duration::from_secs(3),
            renew_every: Duration::from_secs(1),
            fence_margin: Duration::from_secs(1),
        };
        let stop = tokio_util::sync::CancellationToken::new();
        let (cluster, task) = start(store, node, timing, None, false, stop.clone()).await.unwrap();
        assert_eq!(cluster.role(), Role::Leader { epoch: 1, term: 1 });
        let mut roles = cluster.subscribe();
        roles.borrow_and_update();
        // Another session holds the lease row for 4 s: the renewal hangs past the deadline.
        let blocker = std::thread::spawn(move || {
            pg.psql(&db, "BEGIN; SELECT 1 FROM scimsync.leader_lease FOR UPDATE; SELECT pg_sleep(4); COMMIT;").unwrap();
            pg
        });
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !matches!(seen.last(), Some(Role::Leader { term: 2.., .. })) {
            tokio::time::timeout_at(deadline, roles.changed()).await.expect("roles within 30 s").unwrap();
            seen.push(*roles.borrow_and_update());
        }
        assert_eq!(seen, [Role::Follower, Role::Leader { epoch: 1, term: 2 }]);
        stop.cancel();
        task.await.unwrap();
        drop(blocker.join().unwrap());
    }

    /// What a process's exit does to its lock. Unlocked explicitly: a test binary's other
    /// tests fork (to run psql), and a child that has not exec'd yet shares the open file,
    /// so closing it alone would leave the lock held for a moment.
    fn exit(i: super::Instance) {
        if let Some(f) = &i.held {
            f.unlock().unwrap();
        }
    }

    /// Each process records its instance under its name in the data directory: the next
    /// process under the same name there knows its predecessor (and may take its fresh row);
    /// a process under another name, or beside a live one, knows none.
    #[test]
    fn a_process_knows_its_predecessor_from_its_own_data_directory_only() {
        let dir = tempfile::tempdir().unwrap();
        let first = instance("bridge-1", dir.path());
        assert_eq!(first.predecessor, None);
        assert!(first.held.is_some());
        let beside = instance("bridge-1", dir.path());
        assert_eq!((beside.predecessor, beside.held.is_none()), (None, true), "the file is held by a live process");
        let id = first.id.clone();
        exit(first);
        let next = instance("bridge-1", dir.path());
        assert_eq!(next.predecessor.as_deref(), Some(id.as_str()));
        assert_ne!(next.id, id);
        exit(next);
        let other = instance("bridge-2", dir.path());
        assert_eq!(other.predecessor, None, "another name's process is not ours");
        exit(other);
        // A copy of the directory (here while its process runs, as a copy of a live node's
        // data directory would be) is another place: its process knows no predecessor.
        let live = instance("bridge-1", dir.path());
        assert!(live.held.is_some());
        let copy = tempfile::tempdir().unwrap();
        std::fs::copy(dir.path().join("node-instance"), copy.path().join("node-instance")).unwrap();
        assert_eq!(instance("bridge-1", copy.path()).predecessor, None);
        exit(live);
        assert!(instance("bridge-1", dir.path()).predecessor.is_some());
    }

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
