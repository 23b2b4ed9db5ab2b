//! What the cluster's bookkeeping passes across the store's face: a node as it registers
//! itself, and the nodes as the store knows them.

/// This node, as it registers itself with each heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Unique among the nodes on one store (`[cluster] node_name`, or hostname-pid).
    pub node_id: String,
    /// The SCIM API's address, for operators reading the list of nodes.
    pub listen: String,
    /// This build's version.
    pub version: String,
}

/// A node as the store knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterNode {
    pub node_id: String,
    pub listen: String,
    pub version: String,
    /// When it started (RFC 3339, the database's clock).
    pub started_at: String,
    /// Seconds since its last heartbeat, by the database's clock.
    pub heartbeat_age_seconds: f64,
    /// Whether it holds an unexpired leader lease.
    pub leader: bool,
}
