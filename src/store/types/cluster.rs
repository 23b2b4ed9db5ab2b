//! What the cluster's bookkeeping passes across the store's face: a node as it registers
//! itself, the nodes as the store knows them, and the lease.

/// This node, as it registers itself with each heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Unique among the nodes on one store (`[cluster] node_name`, or hostname-pid).
    pub node_id: String,
    /// The SCIM API's address, for operators reading the list of nodes.
    pub listen: String,
    /// The admin listener's URL (empty when it is off): where a follower sends an operator
    /// who asked it to run a sync.
    pub admin: String,
    /// This build's version.
    pub version: String,
    /// A random id of this process: another process beating under the same `node_id`
    /// while this one lives is a second daemon with the same name.
    pub instance: String,
}

/// A node as the store knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterNode {
    pub node_id: String,
    pub listen: String,
    pub admin: String,
    pub version: String,
    /// The random id of the process that beat last under this node id.
    pub instance: String,
    /// When its process started (RFC 3339, the database's clock).
    pub started_at: String,
    /// Its last heartbeat (RFC 3339 with microseconds, the database's clock): a value that
    /// changes between two reads means a live process beats under this id.
    pub heartbeat_at: String,
    /// Seconds since its last heartbeat, by the database's clock.
    pub heartbeat_age_seconds: f64,
    /// Whether it holds an unexpired leader lease.
    pub leader: bool,
}

/// The leader lease as the store holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    /// The node that holds (or last held) it; empty when none ever did.
    pub holder: String,
    /// Grows at each change of holder.
    pub epoch: i64,
    /// Seconds until it expires (negative: expired that long ago), by the database's clock.
    pub expires_in_seconds: f64,
}
