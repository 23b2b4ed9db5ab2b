//! The store: SQLite (rusqlite, bundled) holding resources, memberships, the outbox and
//! API tokens.
//!
//! Owns: the schema and its migrations, the pragmas, the single writer thread, the reader
//! connections and every SQL statement. Must not touch: HTTP (server or client), the SCIM wire
//! format, cron. Its public API is backend-neutral: typed operations in, `model` types out;
//! no rusqlite type or SQL text leaks past this module, so a PostgreSQL backend can be added
//! here alone.
//!
//! Durability: every write goes through one writer thread ([`writer`]) that commits a batch of
//! concurrent operations per transaction, each in its own savepoint, with
//! `synchronous=FULL` in WAL mode, so when a call returns `Ok` its change (and its outbox row)
//! is on disk. Callers build their 2xx reply only after that.

mod audit;
mod backup;
mod delivery_target;
mod filter_sql;
mod migrations;
mod open;
mod outbox;
mod policy_facts;
mod reader;
mod resources;
mod status;
mod sync;
mod tokens;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::model::query::{AttrPath, Filter, Sort};
use crate::model::{MemberDelta, MemberRef, Resource, ResourceKind};

pub use audit::{AuditQuery, AuditRecord, NewAudit};
pub use backup::BackupReport;
pub use delivery_target::{DRY_RUN, TargetSwitch};
pub use outbox::{
    Attempt, Bundle, Claimed, Completion, GuardPolicy, GuardStatus, GuardTrip, OutboxRow, OutboxState, guard_trips,
};
pub use status::{DeliveryAttempt, HeldChange};
pub use sync::{AppKey, DriftRow, Matched, MemberInfo, PageMatch, RepairOp, RepairResult, Stuck, SyncRun, orphan_id};
pub use tokens::{NewToken, TokenInfo};

/// Store settings, taken from `config::StoreConfig` by `app`.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub data_dir: PathBuf,
    pub busy_timeout_seconds: u64,
    pub readers: usize,
    pub max_batch: usize,
}

/// Errors of the store layer. `Internal` carries text for the log only; `http` never shows it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    /// A uniqueness constraint: `attribute` names the offending attribute.
    #[error("{attribute} {value:?} is already taken")]
    Unique { attribute: &'static str, value: String },
    /// The resource changed since the caller read it (optimistic concurrency / If-Match).
    #[error("version mismatch: expected {expected}, current {current}")]
    VersionMismatch { expected: u64, current: u64 },
    /// The provisioning policy refuses the change; the text says which constraint and what
    /// to do (shown to the IdP as a 409 `detail`).
    #[error("{0}")]
    Policy(String),
    /// A group member that names no existing user or group.
    #[error("member {0:?} does not exist")]
    UnknownMember(String),
    /// The writer has stopped (shutdown in progress).
    #[error("the store is shutting down")]
    Closed,
    #[error("store failure: {0}")]
    Internal(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Internal(e.to_string())
    }
}

/// Which related data to load with a resource.
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    /// A group's members (skipped for `excludedAttributes=members`).
    pub members: bool,
    /// A user's groups.
    pub groups: bool,
}

/// A resource to create. The id is assigned by the caller (a UUID) so that the reply can
/// be built without another read.
#[derive(Debug, Clone)]
pub struct NewResource {
    pub kind: ResourceKind,
    pub id: String,
    pub attrs: serde_json::Map<String, serde_json::Value>,
    pub members: Vec<MemberRef>,
}

/// A change to an existing resource.
#[derive(Debug, Clone)]
pub struct Update {
    pub kind: ResourceKind,
    pub id: String,
    /// When set, the write fails with `VersionMismatch` unless the resource is still at
    /// this version: callers that read-modify-write pass the version they read.
    pub expected_version: Option<u64>,
    /// The new attribute object, or `None` to keep the attributes (membership-only change).
    pub attrs: Option<serde_json::Map<String, serde_json::Value>>,
    pub members: MemberDelta,
}

/// One resource type's share of a list query: its kind, its (resolved) filter, and the
/// attribute its resources are sorted by, if the list is sorted and the kind has it.
#[derive(Debug, Clone)]
pub struct ListPart {
    pub kind: ResourceKind,
    pub filter: Option<Filter>,
    pub sort_path: Option<AttrPath>,
}

/// One page of a list query.
#[derive(Debug, Clone)]
pub struct Page {
    pub total: u64,
    pub resources: Vec<Resource>,
    /// Paged by position ([`Position::After`]): where the next page starts (the creation
    /// order of this page's last resource), when there are more; `None` at the end.
    pub next_after: Option<i64>,
}

/// Where a page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Skip this many resources (`startIndex - 1`, RFC 7644 §3.4.2.4).
    Offset(u64),
    /// After the resource with this creation order (`seq`): cursor paging (RFC 9865), stable
    /// while resources are created and deleted. Lists in creation order only.
    After(i64),
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    writer: Arc<writer::WriterHandle>,
    readers: Arc<reader::ReaderPool>,
    /// The full sync's readers, with a large page cache (see [`reader::BULK_CACHE_KIB`]);
    /// the request path's readers keep SQLite's default.
    bulk_readers: Arc<reader::ReaderPool>,
    /// The database file, for its size (metrics); the WAL sits beside it.
    path: Arc<PathBuf>,
    /// The provisioning policy resource writes are checked against; `None`: no policy.
    policy: Option<Arc<crate::policy::Policy>>,
}

impl Store {
    /// Open (creating when missing) the database in `data_dir`, apply migrations, start the
    /// writer thread and the reader connections.
    pub fn open(opts: &StoreOptions) -> Result<Store, StoreError> {
        let path = open::prepare_dir(&opts.data_dir)?;
        let mut conn = open::connect(&path, opts.busy_timeout_seconds)?;
        migrations::apply(&mut conn)?;
        let writer = writer::WriterHandle::start(conn, opts.max_batch)?;
        let readers = reader::ReaderPool::open(&path, opts.readers, opts.busy_timeout_seconds, None)?;
        // Two: the sync matches the next page while it diffs this one.
        let bulk = reader::ReaderPool::open(&path, 2, opts.busy_timeout_seconds, Some(reader::BULK_CACHE_KIB))?;
        Ok(Store {
            writer: Arc::new(writer),
            readers: Arc::new(readers),
            bulk_readers: Arc::new(bulk),
            path: Arc::new(path),
            policy: None,
        })
    }

    /// This handle with resource writes (create, update, delete) checked against `policy`
    /// inside the writer's transaction: a write that breaks a constraint fails with
    /// [`StoreError::Policy`] and applies nothing; users whose effective access changes get
    /// an update queued in the same transaction. An empty policy is no policy.
    pub fn with_policy(mut self, policy: Arc<crate::policy::Policy>) -> Store {
        self.policy = policy.needs_store().then_some(policy);
        self
    }

    /// The policy given to [`Store::with_policy`], if any.
    pub fn policy(&self) -> Option<&Arc<crate::policy::Policy>> {
        self.policy.as_ref()
    }

    /// The effective access (roles, entitlements) of one user as stored now, under the
    /// policy given to [`Store::with_policy`]: what the app should have. The outbox worker
    /// sends it; reconciliation can compare it with what the app lists. `None` when no
    /// policy derives access (no group rule, no default role) or there is no such user.
    pub async fn effective_access(&self, user_id: &str) -> Result<Option<crate::policy::Access>, StoreError> {
        let Some(policy) = self.policy.clone().filter(|p| !p.is_empty()) else { return Ok(None) };
        let Some(user) = self.get(ResourceKind::User, user_id, Load { members: false, groups: true }).await? else {
            return Ok(None);
        };
        let groups = user.groups.unwrap_or_default();
        Ok(Some(policy.access(groups.iter().map(|g| g.display.as_deref().unwrap_or("")))))
    }

    fn policed(&self, op: writer::WriteOp) -> writer::WriteOp {
        match &self.policy {
            Some(p) => writer::WriteOp::Policed { op: Box::new(op), policy: p.clone() },
            None => op,
        }
    }

    /// The database file a store in `data_dir` lives in (whether or not it exists yet).
    pub fn database_path(data_dir: &Path) -> PathBuf {
        data_dir.join(open::DB_FILE)
    }

    /// Copy the database in `data_dir` to `dest` with SQLite's online backup (safe while a
    /// daemon writes to it) and verify the copy. Blocking: call from a blocking thread.
    pub fn backup(data_dir: &Path, dest: &Path, busy_timeout_seconds: u64) -> Result<BackupReport, StoreError> {
        backup::run(&data_dir.join(open::DB_FILE), dest, busy_timeout_seconds)
    }

    /// Stop the writer after it has committed everything queued before this call.
    pub fn close(&self) {
        self.writer.close();
    }

    pub async fn create(&self, new: NewResource) -> Result<Resource, StoreError> {
        match self.writer.submit(self.policed(writer::WriteOp::Create(new))).await? {
            writer::WriteOutput::Resource(r) => Ok(*r),
            other => Err(unexpected(other)),
        }
    }

    pub async fn update(&self, upd: Update) -> Result<Resource, StoreError> {
        match self.writer.submit(self.policed(writer::WriteOp::Update(upd))).await? {
            writer::WriteOutput::Resource(r) => Ok(*r),
            other => Err(unexpected(other)),
        }
    }

    pub async fn delete(&self, kind: ResourceKind, id: &str, expected_version: Option<u64>) -> Result<(), StoreError> {
        match self
            .writer
            .submit(self.policed(writer::WriteOp::Delete { kind, id: id.to_string(), expected_version }))
            .await?
        {
            writer::WriteOutput::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// `create` with its audit record, committed together.
    pub async fn create_audited(&self, new: NewResource, audit: NewAudit) -> Result<Resource, StoreError> {
        match self.submit_audited(self.policed(writer::WriteOp::Create(new)), Some(audit)).await? {
            writer::WriteOutput::Resource(r) => Ok(*r),
            other => Err(unexpected(other)),
        }
    }

    /// `update` with its audit record, committed together.
    pub async fn update_audited(&self, upd: Update, audit: NewAudit) -> Result<Resource, StoreError> {
        match self.submit_audited(self.policed(writer::WriteOp::Update(upd)), Some(audit)).await? {
            writer::WriteOutput::Resource(r) => Ok(*r),
            other => Err(unexpected(other)),
        }
    }

    /// `delete` with its audit record, committed together.
    pub async fn delete_audited(
        &self,
        kind: ResourceKind,
        id: &str,
        expected_version: Option<u64>,
        audit: NewAudit,
    ) -> Result<(), StoreError> {
        let op = self.policed(writer::WriteOp::Delete { kind, id: id.to_string(), expected_version });
        match self.submit_audited(op, Some(audit)).await? {
            writer::WriteOutput::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    async fn submit_audited(
        &self,
        op: writer::WriteOp,
        audit: Option<NewAudit>,
    ) -> Result<writer::WriteOutput, StoreError> {
        match audit {
            Some(audit) => {
                self.writer.submit(writer::WriteOp::Audited { op: Box::new(op), audit: Box::new(audit) }).await
            }
            None => self.writer.submit(op).await,
        }
    }

    /// The latest `limit` delivery attempts (or only failed ones), newest first.
    pub async fn recent_attempts(&self, limit: usize, failures_only: bool) -> Result<Vec<DeliveryAttempt>, StoreError> {
        self.readers.run(move |c| status::recent_attempts(c, limit, failures_only)).await
    }

    /// The first `limit` changes the deletion guard holds, with their resources' names.
    pub async fn held_changes(&self, limit: usize) -> Result<Vec<HeldChange>, StoreError> {
        self.readers.run(move |c| status::held(c, limit)).await
    }

    /// Audit records, most recent `q.limit`, oldest first.
    pub async fn audit_list(&self, q: AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        self.readers.run(move |c| audit::list(c, &q)).await
    }

    /// Delete audit records older than `before` (stored RFC 3339 format), `batch` per
    /// transaction so the writer is never held long; returns how many went.
    pub async fn audit_prune(&self, before: &str, batch: usize) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let op = writer::WriteOp::AuditPrune { before: before.to_string(), batch: batch.max(1) };
            match self.writer.submit(op).await? {
                writer::WriteOutput::Changed(n) => {
                    total += n;
                    if n < batch.max(1) {
                        return Ok(total);
                    }
                }
                other => return Err(unexpected(other)),
            }
        }
    }

    pub async fn get(&self, kind: ResourceKind, id: &str, load: Load) -> Result<Option<Resource>, StoreError> {
        let id = id.to_string();
        self.readers.run(move |c| resources::get(c, kind, &id, load)).await
    }

    /// A page of resources matching `filter`: ordered by `sort` when given (RFC 7644
    /// §3.4.2.3; missing values last when ascending, first when descending; ties by
    /// creation), else in creation order. `offset` is 0-based; `count == 0` returns only
    /// the total.
    pub async fn list(
        &self,
        kind: ResourceKind,
        filter: Option<Filter>,
        sort: Option<Sort>,
        position: Position,
        count: u32,
        load: Load,
    ) -> Result<Page, StoreError> {
        let descending = sort.as_ref().map(|s| s.descending);
        let path = sort.map(|s| s.path);
        let part = ListPart { kind, filter, sort_path: path };
        self.list_many(vec![part], descending, position, count, load).await
    }

    /// One page over several resource types at once (the root `/.search`, RFC 7644 §3.4.3):
    /// unsorted (`descending == None`) in the order of `parts`, then creation order; sorted
    /// by each part's `sort_path` (a part without one sorts as having no value).
    pub async fn list_many(
        &self,
        parts: Vec<ListPart>,
        descending: Option<bool>,
        position: Position,
        count: u32,
        load: Load,
    ) -> Result<Page, StoreError> {
        self.readers
            .run(move |c| {
                let parts: Vec<resources::Part<'_>> = parts
                    .iter()
                    .map(|p| resources::Part {
                        kind: p.kind,
                        filter: p.filter.as_ref(),
                        sort_path: p.sort_path.as_ref(),
                    })
                    .collect();
                resources::list(c, &parts, descending, position, count, load)
            })
            .await
    }

    /// Number of outbox rows in each state, for tests and (later) metrics.
    pub async fn outbox_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.readers.run(resources::outbox_counts).await
    }

    /// The outbox rows of one resource, oldest first: (op, version, payload JSON).
    pub async fn outbox_for(&self, id: &str) -> Result<Vec<(String, u64, String)>, StoreError> {
        let id = id.to_string();
        self.readers.run(move |c| resources::outbox_for(c, &id)).await
    }

    /// At start: rows a crash left in flight are due again.
    pub async fn outbox_recover(&self) -> Result<usize, StoreError> {
        match self.writer.submit(writer::WriteOp::OutboxRecover).await? {
            writer::WriteOutput::Changed(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    /// Claim up to `limit` due bundles (see [`outbox`]), leased until `lease_until`, after
    /// evaluating the deletion guard when a policy is given.
    pub async fn outbox_claim(
        &self,
        limit: usize,
        max_rows: usize,
        lease_until: String,
        guard: Option<GuardPolicy>,
    ) -> Result<Claimed, StoreError> {
        match self.writer.submit(writer::WriteOp::OutboxClaim { limit, max_rows, lease_until, guard }).await? {
            writer::WriteOutput::Claimed(c) => Ok(c),
            other => Err(unexpected(other)),
        }
    }

    /// Deliver the rows the deletion guard holds and reset it. Returns how many.
    pub async fn outbox_release_held(&self) -> Result<usize, StoreError> {
        match self.writer.submit(writer::WriteOp::OutboxReleaseHeld).await? {
            writer::WriteOutput::Changed(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    /// Drop the rows the deletion guard holds and reset it. Returns the dropped rows.
    pub async fn outbox_discard_held(&self) -> Result<Vec<OutboxRow>, StoreError> {
        match self.writer.submit(writer::WriteOp::OutboxDiscardHeld).await? {
            writer::WriteOutput::Rows(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// `outbox_release_held`, recorded in the audit log (with how many rows) in the same
    /// transaction.
    pub async fn outbox_release_held_audited(&self, audit: NewAudit) -> Result<usize, StoreError> {
        match self.submit_audited(writer::WriteOp::OutboxReleaseHeld, Some(audit)).await? {
            writer::WriteOutput::Changed(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    /// `outbox_discard_held`, recorded in the audit log (with every dropped change) in the
    /// same transaction.
    pub async fn outbox_discard_held_audited(&self, audit: NewAudit) -> Result<Vec<OutboxRow>, StoreError> {
        match self.submit_audited(writer::WriteOp::OutboxDiscardHeld, Some(audit)).await? {
            writer::WriteOutput::Rows(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Whether the deletion guard is tripped, and how many rows it holds.
    pub async fn guard_status(&self) -> Result<GuardStatus, StoreError> {
        self.readers.run(outbox::guard_status).await
    }

    pub async fn outbox_complete(
        &self,
        bundle: &Bundle,
        started_at: String,
        completion: Completion,
    ) -> Result<(), StoreError> {
        let head = bundle.head();
        let op = writer::WriteOp::OutboxComplete {
            kind: head.kind,
            resource_id: head.resource_id.clone(),
            ids: bundle.rows.iter().map(|r| r.id).collect(),
            started_at,
            completion,
        };
        match self.writer.submit(op).await? {
            writer::WriteOutput::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Re-queue dead rows: one, or all with `None`. Returns how many.
    pub async fn outbox_retry_dead(&self, id: Option<i64>) -> Result<usize, StoreError> {
        match self.writer.submit(writer::WriteOp::OutboxRetryDead(id)).await? {
            writer::WriteOutput::Changed(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    pub async fn outbox_drop(&self, id: i64) -> Result<bool, StoreError> {
        match self.writer.submit(writer::WriteOp::OutboxDrop(id)).await? {
            writer::WriteOutput::Changed(n) => Ok(n > 0),
            other => Err(unexpected(other)),
        }
    }

    /// `outbox_retry_dead`, recorded in the audit log when something was re-queued.
    pub async fn outbox_retry_dead_audited(&self, id: Option<i64>, audit: NewAudit) -> Result<usize, StoreError> {
        match self.submit_audited(writer::WriteOp::OutboxRetryDead(id), Some(audit)).await? {
            writer::WriteOutput::Changed(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    /// `outbox_drop`, recorded in the audit log (with what the dropped change was about)
    /// when a row was dropped.
    pub async fn outbox_drop_audited(&self, id: i64, audit: NewAudit) -> Result<bool, StoreError> {
        match self.submit_audited(writer::WriteOp::OutboxDrop(id), Some(audit)).await? {
            writer::WriteOutput::Changed(n) => Ok(n > 0),
            other => Err(unexpected(other)),
        }
    }

    /// `resync`, recorded in the audit log.
    pub async fn resync_audited(&self, kind: ResourceKind, id: &str, audit: NewAudit) -> Result<i64, StoreError> {
        match self.submit_audited(writer::WriteOp::Resync { kind, id: id.to_string() }, Some(audit)).await? {
            writer::WriteOutput::Changed(n) => Ok(n as i64),
            other => Err(unexpected(other)),
        }
    }

    /// Queue a full re-delivery of one resource; returns the new outbox id.
    pub async fn resync(&self, kind: ResourceKind, id: &str) -> Result<i64, StoreError> {
        match self.writer.submit(writer::WriteOp::Resync { kind, id: id.to_string() }).await? {
            writer::WriteOutput::Changed(n) => Ok(n as i64),
            other => Err(unexpected(other)),
        }
    }

    /// Undelivered rows (all states but done when `state` is `None`), oldest first.
    pub async fn outbox_list(&self, state: Option<OutboxState>, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        self.readers.run(move |c| outbox::list(c, state, limit)).await
    }

    pub async fn outbox_get(&self, id: i64) -> Result<Option<(OutboxRow, Vec<Attempt>)>, StoreError> {
        self.readers.run(move |c| outbox::get(c, id)).await
    }

    /// Number of undelivered rows and the creation time of the oldest.
    pub async fn outbox_depth(&self) -> Result<(u64, Option<String>), StoreError> {
        self.readers.run(outbox::depth).await
    }

    /// Match a page of the app's listing to our resources (see [`sync::match_page`]).
    pub async fn sync_match_page(&self, kind: ResourceKind, keys: Vec<AppKey>) -> Result<Vec<PageMatch>, StoreError> {
        self.bulk_readers.run(move |c| sync::match_page(c, kind, &keys)).await
    }

    /// Every resource of a kind as `(id, name)`, in creation order.
    pub async fn sync_all_ids(&self, kind: ResourceKind) -> Result<Vec<(String, String)>, StoreError> {
        self.bulk_readers.run(move |c| sync::all_ids(c, kind)).await
    }

    /// Full detail of resources the listing did not match.
    pub async fn sync_load_unmatched(&self, kind: ResourceKind, ids: Vec<String>) -> Result<Vec<Matched>, StoreError> {
        self.bulk_readers.run(move |c| sync::load_unmatched(c, kind, &ids)).await
    }

    /// `(our id, name)` for app ids we know, in the order asked.
    pub async fn sync_names_for_app_ids(
        &self,
        app_ids: Vec<String>,
    ) -> Result<Vec<Option<(String, String)>>, StoreError> {
        self.bulk_readers.run(move |c| sync::names_for_app_ids(c, &app_ids)).await
    }

    /// Dead, held, and undelivered-since-`older_than` outbox rows (at most `limit`).
    pub async fn sync_stuck(&self, older_than: String, limit: usize) -> Result<Vec<Stuck>, StoreError> {
        self.readers.run(move |c| sync::stuck(c, &older_than, limit)).await
    }

    /// Record the start of a sync run; returns its id.
    pub async fn sync_run_start(&self, trigger: &str) -> Result<i64, StoreError> {
        match self.writer.submit(writer::WriteOp::SyncRunStart(trigger.to_string())).await? {
            writer::WriteOutput::Changed(n) => Ok(n as i64),
            other => Err(unexpected(other)),
        }
    }

    /// Record the end of a run with its report, pruning runs started before `keep_since`.
    pub async fn sync_run_finish(
        &self,
        id: i64,
        status: &str,
        error: Option<String>,
        summary: crate::model::drift::RunSummary,
        items: Vec<DriftRow>,
        keep_since: String,
    ) -> Result<(), StoreError> {
        let op = writer::WriteOp::SyncRunFinish { id, status: status.to_string(), error, summary, items, keep_since };
        match self.writer.submit(op).await? {
            writer::WriteOutput::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Deliveries go to the target named `identity` (`DRY_RUN`, or a real target's kind and
    /// base URL) from now on; after a dry run every resource is queued for the real target.
    pub async fn target_switch(&self, identity: &str) -> Result<TargetSwitch, StoreError> {
        match self.writer.submit(writer::WriteOp::TargetSwitch(identity.to_string())).await? {
            writer::WriteOutput::TargetSwitched(t) => Ok(t),
            other => Err(unexpected(other)),
        }
    }

    /// Close runs left `running` as failed with `reason`; returns how many.
    pub async fn sync_close_running(&self, reason: &str) -> Result<usize, StoreError> {
        match self.writer.submit(writer::WriteOp::SyncCloseRunning(reason.to_string())).await? {
            writer::WriteOutput::Changed(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    /// Recent sync runs, newest first.
    pub async fn sync_runs(&self, limit: usize) -> Result<Vec<SyncRun>, StoreError> {
        self.readers.run(move |c| sync::runs(c, limit)).await
    }

    /// A run by id, or (`None`) the newest successful one.
    pub async fn sync_run(&self, id: Option<i64>) -> Result<Option<SyncRun>, StoreError> {
        self.readers.run(move |c| sync::run(c, id)).await
    }

    pub async fn drift_items(&self, run_id: i64) -> Result<Vec<DriftRow>, StoreError> {
        self.readers.run(move |c| sync::items(c, run_id)).await
    }

    /// Queue a repair's corrective rows in one transaction; returns how many.
    pub async fn sync_repair(&self, run_id: i64, ops: Vec<RepairOp>) -> Result<Vec<RepairResult>, StoreError> {
        match self.writer.submit(writer::WriteOp::SyncRepair { run_id, ops }).await? {
            writer::WriteOutput::Repaired(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Put every dead-lettered row back in the queue; returns their outbox ids.
    pub async fn sync_requeue_dead(&self) -> Result<Vec<i64>, StoreError> {
        match self.writer.submit(writer::WriteOp::SyncRequeueDead).await? {
            writer::WriteOutput::Ids(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// The app's id for one of our resources, once provisioned.
    pub async fn app_id(&self, resource_id: &str) -> Result<Option<String>, StoreError> {
        let id = resource_id.to_string();
        self.readers.run(move |c| outbox::app_id(c, &id)).await
    }

    pub async fn has_undelivered(&self, resource_id: &str) -> Result<bool, StoreError> {
        let id = resource_id.to_string();
        self.readers.run(move |c| outbox::has_undelivered(c, &id)).await
    }

    pub async fn create_token(&self, label: &str) -> Result<NewToken, StoreError> {
        let tok = tokens::generate(label)?;
        match self.writer.submit(writer::WriteOp::TokenCreate(tok.clone())).await? {
            writer::WriteOutput::Done => Ok(tok.public),
            other => Err(unexpected(other)),
        }
    }

    /// `create_token`, recorded in the audit log (the new token's id, never its secret).
    pub async fn create_token_audited(&self, label: &str, mut audit: NewAudit) -> Result<NewToken, StoreError> {
        let tok = tokens::generate(label)?;
        audit.resource_id = Some(tok.public.id.clone());
        if let Some(o) = audit.summary.as_object_mut() {
            o.insert("label".into(), label.into());
        }
        match self.submit_audited(writer::WriteOp::TokenCreate(tok.clone()), Some(audit)).await? {
            writer::WriteOutput::Done => Ok(tok.public),
            other => Err(unexpected(other)),
        }
    }

    /// `revoke_token`, recorded in the audit log when a token was revoked.
    pub async fn revoke_token_audited(&self, id: &str, audit: NewAudit) -> Result<bool, StoreError> {
        match self.submit_audited(writer::WriteOp::TokenRevoke(id.to_string()), Some(audit)).await? {
            writer::WriteOutput::Changed(n) => Ok(n > 0),
            other => Err(unexpected(other)),
        }
    }

    pub async fn revoke_token(&self, id: &str) -> Result<bool, StoreError> {
        match self.writer.submit(writer::WriteOp::TokenRevoke(id.to_string())).await? {
            writer::WriteOutput::Changed(n) => Ok(n > 0),
            other => Err(unexpected(other)),
        }
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        self.readers.run(tokens::list).await
    }

    /// The active token matching `presented`, compared in constant time; `None` otherwise.
    pub async fn verify_token(&self, presented: &str) -> Result<Option<TokenInfo>, StoreError> {
        let presented = presented.to_string();
        self.readers.run(move |c| tokens::verify(c, &presented)).await
    }

    /// Schema version on disk and the version this build expects; equal once migrations ran.
    pub async fn schema_version(&self) -> Result<(u64, u64), StoreError> {
        self.readers.run(|c| Ok((migrations::current(c)?, migrations::expected()))).await
    }

    /// Bytes on disk: the database file plus its write-ahead log (missing files count 0).
    pub fn database_size_bytes(&self) -> u64 {
        let mut wal = self.path.as_os_str().to_owned();
        wal.push("-wal");
        [self.path.as_path(), Path::new(&wal)].iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum()
    }

    /// Pragmas as SQLite reports them on the writer's connection: (name, value).
    pub async fn writer_pragmas(&self) -> Result<Vec<(String, String)>, StoreError> {
        match self.writer.submit(writer::WriteOp::ReadPragmas).await? {
            writer::WriteOutput::Pragmas(p) => Ok(p),
            other => Err(unexpected(other)),
        }
    }
}

fn unexpected(o: writer::WriteOutput) -> StoreError {
    StoreError::Internal(format!("writer returned an unexpected output: {o:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn queued(results: Vec<RepairResult>) -> usize {
        results.iter().filter(|r| r.queued()).count()
    }

    fn open(dir: &std::path::Path) -> Store {
        Store::open(&StoreOptions { data_dir: dir.to_path_buf(), busy_timeout_seconds: 5, readers: 2, max_batch: 64 })
            .unwrap()
    }

    fn user(id: &str, name: &str) -> NewResource {
        NewResource {
            kind: ResourceKind::User,
            id: id.into(),
            attrs: json!({"userName": name}).as_object().unwrap().clone(),
            members: vec![],
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_operation_in_a_batch_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        // Submitted together, these land in the same batch: the duplicate must fail with
        // a uniqueness error while every other create commits.
        let mut handles = Vec::new();
        for i in 0..40 {
            let s = store.clone();
            let name = if i == 20 { "dup".to_string() } else { format!("u{i}") };
            handles.push(tokio::spawn(async move { s.create(user(&format!("id{i}"), &name)).await }));
        }
        let first_dup = store.create(user("first", "DUP")).await;
        let mut unique_errors = 0;
        for h in handles {
            match h.await.unwrap() {
                Ok(_) => {}
                Err(StoreError::Unique { attribute: "userName", .. }) => unique_errors += 1,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(unique_errors + first_dup.is_err() as usize, 1, "exactly one of the two 'dup' creates fails");
        let page = store.list(ResourceKind::User, None, None, Position::Offset(0), 100, Load::default()).await.unwrap();
        assert_eq!(page.total, 40);
        // Every committed create has exactly one outbox row; the failed one has none.
        let counts = store.outbox_counts().await.unwrap();
        assert_eq!(counts, vec![("pending".to_string(), 40)]);
        store.close();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn version_checks_and_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.create(user("a", "a")).await.unwrap();
        let upd = |v| Update {
            kind: ResourceKind::User,
            id: "a".into(),
            expected_version: Some(v),
            attrs: Some(json!({"userName": "a", "title": "t"}).as_object().unwrap().clone()),
            members: Default::default(),
        };
        assert!(matches!(store.update(upd(5)).await, Err(StoreError::VersionMismatch { expected: 5, current: 1 })));
        assert_eq!(store.update(upd(1)).await.unwrap().meta.version, 2);
        // The same attributes again: no change, no new version, no outbox row.
        assert_eq!(store.update(Update { expected_version: None, ..upd(0) }).await.unwrap().meta.version, 2);
        assert_eq!(store.outbox_for("a").await.unwrap().len(), 2);
        assert!(matches!(store.delete(ResourceKind::Group, "a", None).await, Err(StoreError::NotFound { .. })));
        assert!(store.get(ResourceKind::User, "nope", Load::default()).await.unwrap().is_none());
        store.close();
        assert!(matches!(store.create(user("b", "b")).await, Err(StoreError::Closed)));
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
            .list(ResourceKind::User, Some(every), None, Position::Offset(0), u32::MAX, Load::default())
            .await
            .unwrap();
        page.resources.into_iter().map(|r| r.id).collect()
    }

    async fn create_users(store: &Store, ids: impl Iterator<Item = String>) {
        let writes: Vec<_> = ids
            .map(|id| {
                let s = store.clone();
                tokio::spawn(async move { s.create(user(&id, &format!("{id}@example.com"))).await.unwrap() })
            })
            .collect();
        for w in writes {
            w.await.unwrap();
        }
    }

    /// Unfiltered pages by offset seek through `rank_blocks` and the total is the kept count:
    /// both agree with the filtered path (OFFSET over the rows) after deletes that thin some
    /// blocks and empty a whole one, and after creates that follow them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unfiltered_pages_seek_through_the_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        create_users(&store, (0..2600).map(|i| format!("u{i:05}"))).await;
        let mut gone = Vec::new();
        for i in (0..2600).filter(|i| i % 7 == 3 || (1020..2060).contains(i) || *i >= 2590) {
            let id = format!("u{i:05}");
            store.delete(ResourceKind::User, &id, None).await.unwrap();
            gone.push(id);
        }
        create_users(&store, (0..30).map(|i| format!("v{i:05}"))).await;
        let want = all_users_by_offset(&store).await;
        assert_eq!(want.len(), 2600 - gone.len() + 30);
        for offset in
            [0u64, 1, 99, 877, 878, 1023, 1024, 1025, 1500, 2047, 2048, want.len() as u64 - 5, want.len() as u64]
        {
            for count in [1u32, 7, 100] {
                let page = store
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
                                store.create(user(&id, &format!("{id}@example.com"))).await.unwrap();
                                alive.push(id);
                            } else {
                                let id = alive.remove(pick % alive.len());
                                store.delete(ResourceKind::User, &id, None).await.unwrap();
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

    /// The deprovisioning delay: a deprovisioning accepted within the delay is neither claimed
    /// nor coalesced into an earlier change of its resource; other changes flow; once the
    /// delay has passed it is delivered.
    #[tokio::test]
    async fn a_deprovisioning_waits_out_its_delay() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
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
        store.create(user("a", "a")).await.unwrap();
        store.create(user("b", "b")).await.unwrap();
        store.delete(ResourceKind::User, "a", None).await.unwrap();
        // "now - delay" is before every row: the delete of a waits, a's create and b's go.
        let c = store.outbox_claim(10, 10, lease(), policy("2000-01-01T00:00:00.000Z")).await.unwrap();
        let got: Vec<(String, usize)> =
            c.bundles.iter().map(|b| (b.head().resource_id.clone(), b.rows.len())).collect();
        assert_eq!(
            got,
            vec![("a".to_string(), 1), ("b".to_string(), 1)],
            "the delete is not coalesced into a's create"
        );
        for b in &c.bundles {
            store
                .outbox_complete(
                    b,
                    crate::model::now(),
                    Completion::Success { id_map: Some(Some("x".into())), applied: None, note: None, recreated: false },
                )
                .await
                .unwrap();
        }
        let c = store.outbox_claim(10, 10, lease(), policy("2000-01-01T00:00:00.000Z")).await.unwrap();
        assert!(c.bundles.is_empty(), "still in its delay: {:?}", c.bundles);
        // The delay has passed.
        let c = store.outbox_claim(10, 10, lease(), policy("9999-01-01T00:00:00.000Z")).await.unwrap();
        assert_eq!(c.bundles.len(), 1);
        assert_eq!(c.bundles[0].head().op, crate::model::ChangeOp::Delete);
        store.close();
    }

    /// The guard's state machine: trip, hold, joining the held set, cancellation by a
    /// re-create and a reactivation, release.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deletion_guard_holds_cancels_and_releases() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
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
            let c = store.outbox_claim(100, 10, lease(), policy()).await.unwrap();
            for b in &c.bundles {
                let app = Some(Some(format!("app-{}", b.head().resource_id)));
                store
                    .outbox_complete(
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
            store.create(user(&format!("g{i}"), &format!("g{i}"))).await.unwrap();
        }
        assert_eq!(deliver_all(store.clone()).await.bundles.len(), 6);
        for i in 0..4 {
            store.delete(ResourceKind::User, &format!("g{i}"), None).await.unwrap();
        }
        let c = deliver_all(store.clone()).await;
        assert_eq!(c.tripped, Some(GuardTrip { count: 4, provisioned: 6 }));
        assert_eq!((c.held, c.bundles.len()), (4, 0), "every deprovisioning is held once tripped");
        // Re-created with the same userName (any case): that deletion is cancelled.
        store.create(user("new0", "G0")).await.unwrap();
        assert_eq!(store.guard_status().await.unwrap().held, 3);
        // A deactivation while tripped joins the held set; a later change of it waits behind.
        let set = |active: bool, title: &str| Update {
            kind: ResourceKind::User,
            id: "g4".into(),
            expected_version: None,
            attrs: Some(json!({"userName": "g4", "active": active, "title": title}).as_object().unwrap().clone()),
            members: Default::default(),
        };
        store.update(set(false, "a")).await.unwrap();
        store.update(set(false, "b")).await.unwrap();
        let c = deliver_all(store.clone()).await;
        assert_eq!(c.tripped, None, "already tripped");
        assert_eq!(c.held, 1);
        let ids: Vec<&str> = c.bundles.iter().map(|b| b.head().resource_id.as_str()).collect();
        assert_eq!(ids, vec!["new0"], "the held deactivation blocks g4's later change");
        // Reactivated: the held deactivation is cancelled and g4's changes flow.
        store.update(set(true, "c")).await.unwrap();
        let st = store.guard_status().await.unwrap();
        assert_eq!((st.held, st.tripped_at.is_some()), (3, true));
        let c = deliver_all(store.clone()).await;
        assert_eq!(c.bundles.len(), 1);
        // Title b was never attempted (it waited behind the held row): the reactivation was
        // folded into its row at enqueue.
        assert_eq!(c.bundles[0].rows.len(), 1, "title b and the reactivation, coalesced");
        assert!(c.bundles[0].rows[0].payload.attributes_changed && !c.bundles[0].rows[0].payload.deprovision);
        // Release: delivered, and the guard reset (the released ones no longer count).
        assert_eq!(store.outbox_release_held().await.unwrap(), 3);
        let st = store.guard_status().await.unwrap();
        assert_eq!((st.held, st.tripped_at), (0, None));
        let c = deliver_all(store.clone()).await;
        assert_eq!((c.bundles.len(), c.held, c.tripped), (3, 0, None));
        assert!(c.bundles.iter().all(|b| b.head().op == crate::model::ChangeOp::Delete));
        store.close();
    }

    /// Sync runs and repairs: retention keeps the newest successful report, runs left
    /// running are closed, and a repair never duplicates a change already on its way nor
    /// removes an "orphan" that is one of ours.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sync_runs_retention_and_repair_rechecks() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let finish = |id, status: &'static str| {
            let s = store.clone();
            async move {
                // keep_since in the future: everything older is prunable.
                s.sync_run_finish(
                    id,
                    status,
                    None,
                    crate::model::drift::RunSummary::default(),
                    Vec::new(),
                    "9999-01-01T00:00:00.000Z".into(),
                )
                .await
                .unwrap()
            }
        };
        let a = store.sync_run_start("manual").await.unwrap();
        finish(a, "ok").await;
        let b = store.sync_run_start("manual").await.unwrap();
        finish(b, "failed").await;
        let ids: Vec<i64> = store.sync_runs(10).await.unwrap().iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![a], "old runs pruned, the newest successful one kept");
        let c = store.sync_run_start("schedule").await.unwrap();
        assert_eq!(store.sync_close_running("interrupted by shutdown").await.unwrap(), 1);
        let r = store.sync_run(Some(c)).await.unwrap().unwrap();
        assert_eq!((r.status.as_str(), r.error.as_deref()), ("failed", Some("interrupted by shutdown")));

        store.create(user("u1", "alice")).await.unwrap();
        let resync =
            || RepairOp::Resync { kind: ResourceKind::User, id: "u1".into(), forget_app_id: false, deprovision: false };
        // u1's create is still queued: a resync would duplicate it.
        assert_eq!(queued(store.sync_repair(c, vec![resync()]).await.unwrap()), 0);
        let claimed = store
            .outbox_claim(10, 10, crate::model::time_after(std::time::Duration::from_secs(60)), None)
            .await
            .unwrap();
        for b in &claimed.bundles {
            store
                .outbox_complete(
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
        assert_eq!(queued(store.sync_repair(c, vec![resync()]).await.unwrap()), 1);
        let orphan = |app_id: &str, name: &str| RepairOp::Orphan {
            kind: ResourceKind::User,
            app_id: app_id.into(),
            name: name.into(),
            deactivate_only: false,
            record: None,
        };
        // Mapped to u1, or named like one of ours: not an orphan (any more).
        assert_eq!(
            queued(store.sync_repair(c, vec![orphan("app-u1", "someone"), orphan("x9", "ALICE")]).await.unwrap()),
            0
        );
        // A real orphan, once: the second repair finds its deprovisioning queued.
        assert_eq!(queued(store.sync_repair(c, vec![orphan("x7", "mallory")]).await.unwrap()), 1);
        assert_eq!(queued(store.sync_repair(c, vec![orphan("x7", "mallory")]).await.unwrap()), 0);
        store.close();
    }

    /// A refused provision (dead row) does not block the repair that sends the whole state:
    /// the repair supersedes it (and the row it blocked) and says so in their attempts; a
    /// member repair supersedes only rows that changed members; a held row blocks.
    #[tokio::test]
    async fn a_repair_supersedes_the_dead_rows_it_makes_obsolete() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let lease = || crate::model::time_after(std::time::Duration::from_secs(60));
        store.create(user("u1", "alice")).await.unwrap();
        let claimed = store.outbox_claim(10, 10, lease(), None).await.unwrap();
        let dead = claimed.bundles[0].head().id;
        store
            .outbox_complete(&claimed.bundles[0], crate::model::now(), Completion::Dead { error: "HTTP 400".into() })
            .await
            .unwrap();
        let run = store.sync_run_start("manual").await.unwrap();
        let resync = || {
            vec![RepairOp::Resync {
                kind: ResourceKind::User,
                id: "u1".into(),
                forget_app_id: true,
                deprovision: false,
            }]
        };
        let r = store.sync_repair(run, resync()).await.unwrap();
        assert_eq!(r, vec![RepairResult::Queued { superseded: vec![dead] }]);
        let (row, attempts) = store.outbox_get(dead).await.unwrap().unwrap();
        assert_eq!(row.state, OutboxState::Done);
        assert!(row.coalesced_into.is_some_and(|c| c > dead), "{row:?}");
        let last = attempts.last().unwrap();
        assert_eq!(last.outcome, "superseded");
        assert!(last.detail.as_deref().unwrap().contains(&format!("sync run {run}")), "{last:?}");
        // The repair's own row is on its way now: a second repair does not duplicate it.
        let again = store.sync_repair(run, resync()).await.unwrap();
        assert!(matches!(again[0], RepairResult::OnItsWay { .. }), "{again:?}");

        // A group whose attribute change is dead: a member repair does not cover it.
        let mut attrs = serde_json::Map::new();
        attrs.insert("displayName".into(), json!("staff"));
        store.create(NewResource { kind: ResourceKind::Group, id: "g1".into(), attrs, members: vec![] }).await.unwrap();
        let claimed = store.outbox_claim(10, 10, lease(), None).await.unwrap();
        for b in &claimed.bundles {
            store.outbox_complete(b, crate::model::now(), Completion::Dead { error: "HTTP 400".into() }).await.unwrap();
        }
        let members =
            RepairOp::Members { group_id: "g1".into(), add: vec!["u1".into()], remove: vec![], remove_app_ids: vec![] };
        let r = store.sync_repair(run, vec![members.clone()]).await.unwrap();
        assert!(matches!(&r[0], RepairResult::Blocked { state, .. } if state == "dead"), "{r:?}");
        // With a resync of the group first, the member repair queues behind it.
        let both = vec![
            RepairOp::Resync { kind: ResourceKind::Group, id: "g1".into(), forget_app_id: false, deprovision: false },
            members,
        ];
        let r = store.sync_repair(run, both).await.unwrap();
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
            let id = store.sync_run_start("manual").await.unwrap();
            let keep = "1970-01-01T00:00:00.000Z".to_string();
            store.sync_run_finish(id, "ok", None, RunSummary::default(), Vec::new(), keep).await.unwrap();
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
        let s = store.sync_run(Some(ids[0])).await.unwrap().unwrap().summary.expect("the old summary reads");
        assert_eq!(s.refused(), Some("repair refused: it would deactivate or delete 6 account(s)"));
        let r = s.report.as_ref().unwrap();
        assert_eq!((r.listed.users, r.listed.groups, r.total, r.new, r.repair.deprovisions), (10, 2, 6, 6, 6));
        assert_eq!((r.counts.get(DriftKind::OrphanedInApp), r.counts.get(DriftKind::StuckProvision)), (6, 0));
        assert_eq!((r.repair.superseded_dead, r.repair.on_its_way, r.repair.blocked), (0, 0, 0));
        assert_eq!((r.repair.deprovisioning.as_ref(), r.confirmed, s.duration_seconds), (None, None, Some(0.042)));
        let failed = store.sync_run(Some(ids[1])).await.unwrap().unwrap().summary;
        assert_eq!(failed, Some(RunSummary { report: None, duration_seconds: Some(0.007) }));
        assert_eq!(store.sync_run(Some(ids[2])).await.unwrap().unwrap().summary, None);
        store.close();
    }
}
