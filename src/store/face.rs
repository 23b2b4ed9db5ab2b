//! The store's face: what the rest of the daemon may ask of a store, grouped by what the
//! callers do, as one trait per group. Each backend (`sqlite`, and later PostgreSQL)
//! implements every group; [`Backend`] is all of them, and the [`super::Store`] handle holds
//! one behind an `Arc<dyn Backend>`, so no caller knows which backend it runs on.
//!
//! The contract every implementation keeps (the store's tests hold each backend to it):
//! - **A write returns `Ok` only once it is durable**, together with everything that goes with
//!   it in the same transaction: the outbox row, the audit record, the policy's checks.
//!   A write that fails applies nothing.
//! - **One audited path**: every change an IdP or an operator makes carries its
//!   [`NewAudit`]; only the daemon's own bookkeeping (claims, completions, sync runs) is
//!   unaudited.
//! - **One resource's outbox rows are in commit order** (their ids grow in the order their
//!   transactions committed), which the worker's per-resource delivery order relies on.
//!
//! Traits use `async_trait` because the handle needs them as trait objects (`dyn`), which
//! native `async fn` in traits does not allow yet; the boxing costs one allocation per call,
//! noise beside a transaction.

use std::sync::Arc;

use async_trait::async_trait;

use super::types::*;
use crate::model::{Resource, ResourceKind};
use crate::policy::Policy;

/// SCIM resources: what the SCIM API, the CLI's `access` and the policy read and write.
#[async_trait]
pub trait ResourceStore: Send + Sync {
    /// Create a resource with its outbox row and `audit`, checked against `policy` in the
    /// same transaction (RFC 7644 §3.3). `Unique` when its userName (any case) is taken.
    async fn create(
        &self,
        new: NewResource,
        audit: NewAudit,
        policy: Option<&Arc<Policy>>,
    ) -> Result<Resource, StoreError>;

    /// Change a resource (attributes and/or members); `VersionMismatch` when
    /// `expected_version` is set and stale (RFC 7644 §3.14).
    async fn update(&self, upd: Update, audit: NewAudit, policy: Option<&Arc<Policy>>) -> Result<Resource, StoreError>;

    /// Read-modify-write in one step, where the backend can read the resource where it
    /// writes (SQLite's single writer: no second round trip, and nothing can get in
    /// between, so no version check can fail): `modify` is given the resource as it is,
    /// and its change is written as [`ResourceStore::update`] writes it, with the audit
    /// record and the policy's checks, in the same transaction. `NotFound` when there is
    /// no such resource.
    ///
    /// `Ok(None)`: not offered by this backend (the default; `modify` is dropped unrun):
    /// the caller reads with `get`, computes, and `update`s naming the version it read.
    async fn modify(
        &self,
        kind: ResourceKind,
        id: &str,
        modify: ModifyFn,
        policy: Option<&Arc<Policy>>,
    ) -> Result<Option<Modified>, StoreError> {
        let _ = (kind, id, modify, policy);
        Ok(None)
    }

    async fn delete(
        &self,
        kind: ResourceKind,
        id: &str,
        expected_version: Option<u64>,
        audit: NewAudit,
        policy: Option<&Arc<Policy>>,
    ) -> Result<(), StoreError>;

    async fn get(&self, kind: ResourceKind, id: &str, load: Load) -> Result<Option<Resource>, StoreError>;

    /// One page over one or several resource types (RFC 7644 §3.4.2, §3.4.3): unsorted
    /// (`descending == None`) in the order of `parts`, then creation order; sorted by each
    /// part's `sort_path`. `count == 0` returns only the total, which is always exact.
    async fn list(
        &self,
        parts: Vec<ListPart>,
        descending: Option<bool>,
        position: Position,
        count: u32,
        load: Load,
    ) -> Result<Page, StoreError>;
}

/// The outbox: the worker's claims and completions, the operator's decisions on stuck and
/// held changes, and the views the status page and metrics read.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// At start: rows a crash left in flight are due again. Returns how many.
    async fn recover(&self) -> Result<usize, StoreError>;

    /// Claim up to `limit` due bundles (at most `max_rows` rows), leased until
    /// `lease_until`, after evaluating the deletion guard when `guard` is given.
    async fn claim(
        &self,
        limit: usize,
        max_rows: usize,
        lease_until: String,
        guard: Option<GuardPolicy>,
    ) -> Result<Claimed, StoreError>;

    /// Record how the delivery of `bundle` ended, and its attempt.
    async fn complete(&self, bundle: &Bundle, started_at: String, completion: Completion) -> Result<(), StoreError>;

    /// Deliver the rows the deletion guard holds and reset it. Returns how many.
    async fn release_held(&self, audit: NewAudit) -> Result<usize, StoreError>;

    /// Drop the rows the deletion guard holds (recorded in the audit log) and reset it.
    async fn discard_held(&self, audit: NewAudit) -> Result<Vec<OutboxRow>, StoreError>;

    /// Re-queue dead rows: one, or all with `None`. Returns how many.
    async fn retry_dead(&self, id: Option<i64>, audit: NewAudit) -> Result<usize, StoreError>;

    /// Drop one undelivered row; `false` when there is no such row.
    async fn drop_row(&self, id: i64, audit: NewAudit) -> Result<bool, StoreError>;

    /// Queue a full re-delivery of one resource; returns the new outbox id.
    async fn resync(&self, kind: ResourceKind, id: &str, audit: NewAudit) -> Result<i64, StoreError>;

    /// Undelivered rows (all states but done when `state` is `None`), oldest first.
    async fn list(&self, state: Option<OutboxState>, limit: usize) -> Result<Vec<OutboxRow>, StoreError>;

    async fn get(&self, id: i64) -> Result<Option<(OutboxRow, Vec<Attempt>)>, StoreError>;

    /// Number of undelivered rows and the creation time of the oldest.
    async fn depth(&self) -> Result<(u64, Option<String>), StoreError>;

    /// Number of rows in each state.
    async fn counts(&self) -> Result<Vec<(String, u64)>, StoreError>;

    /// The rows of one resource, oldest first: (op, version, payload JSON).
    async fn rows_of(&self, resource_id: &str) -> Result<Vec<(String, u64, String)>, StoreError>;

    /// Whether the deletion guard is tripped, and how many rows it holds.
    async fn guard_status(&self) -> Result<GuardStatus, StoreError>;

    /// The first `limit` changes the deletion guard holds, with their resources' names.
    async fn held_changes(&self, limit: usize) -> Result<Vec<HeldChange>, StoreError>;

    /// The latest `limit` delivery attempts (or only failed ones), newest first.
    async fn recent_attempts(&self, limit: usize, failures_only: bool) -> Result<Vec<DeliveryAttempt>, StoreError>;

    /// The app's id for one of our resources, once provisioned.
    async fn app_id(&self, resource_id: &str) -> Result<Option<String>, StoreError>;

    /// Whether a change of this resource has not reached the app yet.
    async fn has_undelivered(&self, resource_id: &str) -> Result<bool, StoreError>;
}

/// Reconciliation: matching the app's listing to our resources, sync runs and their drift
/// reports, and the corrective changes a repair queues.
#[async_trait]
pub trait SyncStore: Send + Sync {
    /// Match a page of the app's listing to our resources.
    async fn match_page(&self, kind: ResourceKind, keys: Vec<AppKey>) -> Result<Vec<PageMatch>, StoreError>;

    /// Every resource of a kind as `(id, name)`, in creation order.
    async fn all_ids(&self, kind: ResourceKind) -> Result<Vec<(String, String)>, StoreError>;

    /// Full detail of resources the listing did not match.
    async fn load_unmatched(&self, kind: ResourceKind, ids: Vec<String>) -> Result<Vec<Matched>, StoreError>;

    /// `(our id, name)` for app ids we know, in the order asked.
    async fn names_for_app_ids(&self, app_ids: Vec<String>) -> Result<Vec<Option<(String, String)>>, StoreError>;

    /// Dead, held, and undelivered-since-`older_than` outbox rows (at most `limit`).
    async fn stuck(&self, older_than: String, limit: usize) -> Result<Vec<Stuck>, StoreError>;

    /// Record the start of a sync run; returns its id.
    async fn run_start(&self, trigger: &str) -> Result<i64, StoreError>;

    /// Record the end of a run with its report, pruning runs started before `keep_since`.
    async fn run_finish(&self, id: i64, finish: RunFinish) -> Result<(), StoreError>;

    /// Close runs left `running` as failed with `reason`; returns how many.
    async fn close_running(&self, reason: &str) -> Result<usize, StoreError>;

    /// Recent sync runs, newest first.
    async fn runs(&self, limit: usize) -> Result<Vec<SyncRun>, StoreError>;

    /// A run by id, or (`None`) the newest successful one.
    async fn run(&self, id: Option<i64>) -> Result<Option<SyncRun>, StoreError>;

    async fn drift_items(&self, run_id: i64) -> Result<Vec<DriftRow>, StoreError>;

    /// Queue a repair's corrective changes in one transaction; one result per op.
    async fn repair(&self, run_id: i64, ops: Vec<RepairOp>) -> Result<Vec<RepairResult>, StoreError>;

    /// Put every dead-lettered row back in the queue; returns their outbox ids.
    async fn requeue_dead(&self) -> Result<Vec<i64>, StoreError>;

    /// Deliveries go to the target named `identity` (`DRY_RUN`, or a real target's kind and
    /// base URL) from now on; after a dry run every resource is queued for the real target.
    async fn target_switch(&self, identity: &str) -> Result<TargetSwitch, StoreError>;
}

/// API tokens (the IdPs' bearer tokens).
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// A new token, recorded in the audit log (its id, never its secret).
    async fn create(&self, label: &str, audit: NewAudit) -> Result<NewToken, StoreError>;

    /// Revoke a token; `false` when there is no such active token.
    async fn revoke(&self, id: &str, audit: NewAudit) -> Result<bool, StoreError>;

    async fn list(&self) -> Result<Vec<TokenInfo>, StoreError>;

    /// The active token matching `presented`, compared in constant time; `None` otherwise.
    async fn verify(&self, presented: &str) -> Result<Option<TokenInfo>, StoreError>;
}

/// The audit log.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Audit records, most recent `q.limit`, oldest first.
    async fn list(&self, q: AuditQuery) -> Result<Vec<AuditRecord>, StoreError>;

    /// Delete records older than `before` (stored RFC 3339 format), `batch` per
    /// transaction so writers are never held long; returns how many went.
    async fn prune(&self, before: &str, batch: usize) -> Result<usize, StoreError>;
}

/// The store as a running component: health, schema, size, shutdown.
#[async_trait]
pub trait AdminStore: Send + Sync {
    /// Schema version in the database and the version this build expects; equal once
    /// migrations ran.
    async fn schema_version(&self) -> Result<(u64, u64), StoreError>;

    /// The durability settings as the database reports them on the connection writes use
    /// (name, value): a test reads them back, `/readyz` uses the call as a liveness probe of
    /// the write path.
    async fn settings(&self) -> Result<Vec<(String, String)>, StoreError>;

    /// Bytes the store takes on disk (0 when the backend cannot tell).
    fn size_bytes(&self) -> u64;

    /// Stop taking writes after everything queued before this call has committed.
    fn close(&self);
}

/// Several daemons on one store (issue 15): who is alive and who leads, through a lease the
/// database keeps by its own clock. A store only one process can open (SQLite) has a cluster
/// of one, whose only node always leads.
///
/// Fencing: once a node holds the lease, the store remembers its (node, epoch), and every
/// outbox claim through this store checks in its own transaction that the lease is still
/// that one and unexpired, so a node that lost the lease without noticing claims nothing.
#[async_trait]
pub trait ClusterStore: Send + Sync {
    /// Whether other processes can share this store (and so an election means anything).
    fn shared(&self) -> bool;

    /// Record `node` as alive now (insert or refresh its row), unless another process
    /// (another `instance`) beat under the same node id less than `fresh` ago: then nothing
    /// is written and that process's row is returned (two live daemons with one name).
    /// `fresh` zero takes the name whatever (the caller knows the other process is dead).
    async fn heartbeat(&self, node: &NodeInfo, fresh: std::time::Duration) -> Result<Option<ClusterNode>, StoreError>;

    /// Take the lease when it is free or expired, or renew it when this store holds it, for
    /// `ttl` from now by the database's clock. `Some(epoch)` when `node_id` leads (the epoch
    /// grows at each change of holder), `None` when another node does. A lease held under
    /// `node_id` by another process (a restart, or a second daemon given the same name) is
    /// not this store's: it is taken back before it expires only with `reclaim`, when the
    /// caller knows the earlier process with this id is gone (the data directory's lock).
    async fn acquire_or_renew(
        &self,
        node_id: &str,
        ttl: std::time::Duration,
        reclaim: bool,
    ) -> Result<Option<i64>, StoreError>;

    /// Give the lease up at once (at shutdown), when `node_id` holds it, so another node
    /// need not wait for it to expire; this store stops claiming.
    async fn release(&self, node_id: &str) -> Result<(), StoreError>;

    /// The nodes whose last heartbeat is at most `within` old, in order of their ids.
    async fn live_nodes(&self, within: std::time::Duration) -> Result<Vec<ClusterNode>, StoreError>;

    /// The leader lease as it stands (`None` on a store no other daemon can share).
    async fn lease(&self) -> Result<Option<Lease>, StoreError>;

    /// Forget the nodes not heard from for `older_than` (never the lease's holder), so the
    /// list of nodes does not grow with every host that ever ran; how many went.
    async fn prune_nodes(&self, older_than: std::time::Duration) -> Result<u64, StoreError>;
}

/// A store backend: every group of the face.
pub trait Backend:
    ResourceStore + OutboxStore + SyncStore + TokenStore + AuditStore + AdminStore + ClusterStore
{
}

impl<T: ResourceStore + OutboxStore + SyncStore + TokenStore + AuditStore + AdminStore + ClusterStore> Backend for T {}
