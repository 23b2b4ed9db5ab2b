//! The embedded backend: SQLite (rusqlite, bundled) in one file under the data directory.
//!
//! Owns: the schema and its migrations, the pragmas, the single writer thread, the reader
//! connections and every SQLite statement. Must not touch: HTTP (server or client), the SCIM
//! wire format, cron.
//!
//! Durability: every write goes through one writer thread ([`writer`]) that commits a batch of
//! concurrent operations per transaction (one that fails rolls back alone), with
//! `synchronous=FULL` in WAL mode, so when a call returns `Ok` its change (and its outbox row)
//! is on disk. One writer also gives the face's ordering promise for free: outbox ids grow
//! in commit order. rusqlite never runs on a tokio worker thread.

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
mod token_cache;
mod tokens;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

pub use backup::BackupReport;

use super::face::{AdminStore, AuditStore, ClusterStore, OutboxStore, ResourceStore, SyncStore, TokenStore};
use super::types::*;
use crate::model::{Resource, ResourceKind};
use crate::policy::Policy;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Internal(e.to_string())
    }
}

/// The SQLite store: the writer thread and two reader pools.
pub struct SqliteStore {
    writer: writer::WriterHandle,
    readers: reader::ReaderPool,
    /// The full sync's readers, with a large page cache (see [`reader::BULK_CACHE_KIB`]);
    /// the request path's readers keep SQLite's default.
    bulk_readers: reader::ReaderPool,
    /// Verified tokens, so a request's auth check needs no reader (see [`token_cache`]).
    token_cache: token_cache::TokenCache,
    /// The database file, for its size (metrics); the WAL sits beside it.
    path: PathBuf,
}

impl SqliteStore {
    /// Open (creating when missing) the database in `data_dir`, apply migrations, start the
    /// writer thread and the reader connections.
    pub fn open(opts: &StoreOptions) -> Result<SqliteStore, StoreError> {
        let path = open::prepare_dir(&opts.data_dir)?;
        let mut conn = open::connect(&path, opts.busy_timeout_seconds)?;
        migrations::apply(&mut conn)?;
        let writer = writer::WriterHandle::start(conn, opts.max_batch)?;
        let readers = reader::ReaderPool::open(&path, opts.readers, opts.busy_timeout_seconds, None)?;
        // Two: the sync matches the next page while it diffs this one.
        let bulk_readers = reader::ReaderPool::open(&path, 2, opts.busy_timeout_seconds, Some(reader::BULK_CACHE_KIB))?;
        let token_cache = token_cache::TokenCache::new(&path);
        Ok(SqliteStore { writer, readers, bulk_readers, token_cache, path })
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

    async fn write(&self, op: writer::WriteOp) -> Result<writer::WriteOutput, StoreError> {
        self.writer.submit(op).await
    }

    /// `op` and its audit record as one operation: both commit or neither does.
    async fn audited(&self, op: writer::WriteOp, audit: NewAudit) -> Result<writer::WriteOutput, StoreError> {
        self.writer.submit(writer::WriteOp::Audited { op: Box::new(op), audit: Box::new(audit) }).await
    }
}

/// A resource write checked against `policy` in the same operation (an empty policy is none).
fn policed(op: writer::WriteOp, policy: Option<&Arc<Policy>>) -> writer::WriteOp {
    match policy.filter(|p| p.needs_store()) {
        Some(p) => writer::WriteOp::Policed { op: Box::new(op), policy: p.clone() },
        None => op,
    }
}

/// The schema version of an opened SQLite database (for `store::copy`).
pub(super) fn schema_version(conn: &rusqlite::Connection) -> Result<u64, StoreError> {
    migrations::current(conn)
}

/// The SQLite schema version this build migrates to.
pub(super) fn expected_schema_version() -> u64 {
    migrations::expected()
}

fn unexpected(o: writer::WriteOutput) -> StoreError {
    StoreError::Internal(format!("writer returned an unexpected output: {o:?}"))
}

#[async_trait]
impl ResourceStore for SqliteStore {
    async fn create(
        &self,
        new: NewResource,
        audit: NewAudit,
        policy: Option<&Arc<Policy>>,
    ) -> Result<Resource, StoreError> {
        match self.audited(policed(writer::WriteOp::Create(new), policy), audit).await? {
            writer::WriteOutput::Resource(r) => Ok(*r),
            other => Err(unexpected(other)),
        }
    }

    async fn update(&self, upd: Update, audit: NewAudit, policy: Option<&Arc<Policy>>) -> Result<Resource, StoreError> {
        match self.audited(policed(writer::WriteOp::Update(upd), policy), audit).await? {
            writer::WriteOutput::Resource(r) => Ok(*r),
            other => Err(unexpected(other)),
        }
    }

    /// On the writer thread: the read, the computation and the write are one step of its
    /// batch, so a PATCH makes one thread hop instead of two (a reader, then the writer) and
    /// never retries on a version that moved.
    async fn modify(
        &self,
        kind: ResourceKind,
        id: &str,
        modify: ModifyFn,
        policy: Option<&Arc<Policy>>,
    ) -> Result<Option<Modified>, StoreError> {
        let op = writer::WriteOp::Modify(Box::new(writer::Modify {
            kind,
            id: id.to_string(),
            modify: writer::Computation(modify),
            policy: policy.filter(|p| p.needs_store()).cloned(),
        }));
        match self.write(op).await? {
            writer::WriteOutput::Resource(r) => Ok(Some(Modified::Written(*r))),
            writer::WriteOutput::Refused(why) => Ok(Some(Modified::Refused(why))),
            other => Err(unexpected(other)),
        }
    }

    async fn delete(
        &self,
        kind: ResourceKind,
        id: &str,
        expected_version: Option<u64>,
        audit: NewAudit,
        policy: Option<&Arc<Policy>>,
    ) -> Result<(), StoreError> {
        let op = policed(writer::WriteOp::Delete { kind, id: id.to_string(), expected_version }, policy);
        match self.audited(op, audit).await? {
            writer::WriteOutput::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    async fn get(&self, kind: ResourceKind, id: &str, load: Load) -> Result<Option<Resource>, StoreError> {
        let id = id.to_string();
        self.readers.run(move |c| resources::get(c, kind, &id, load)).await
    }

    async fn list(
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
}

#[async_trait]
impl OutboxStore for SqliteStore {
    async fn recover(&self) -> Result<usize, StoreError> {
        match self.write(writer::WriteOp::OutboxRecover).await? {
            writer::WriteOutput::Changed(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    async fn claim(
        &self,
        limit: usize,
        max_rows: usize,
        lease_until: String,
        guard: Option<GuardPolicy>,
    ) -> Result<Claimed, StoreError> {
        match self.write(writer::WriteOp::OutboxClaim { limit, max_rows, lease_until, guard }).await? {
            writer::WriteOutput::Claimed(c) => Ok(c),
            other => Err(unexpected(other)),
        }
    }

    async fn complete(&self, bundle: &Bundle, started_at: String, completion: Completion) -> Result<(), StoreError> {
        let head = bundle.head();
        let op = writer::WriteOp::OutboxComplete {
            kind: head.kind,
            resource_id: head.resource_id.clone(),
            ids: bundle.rows.iter().map(|r| r.id).collect(),
            started_at,
            completion,
        };
        match self.write(op).await? {
            writer::WriteOutput::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    async fn release_held(&self, audit: NewAudit) -> Result<usize, StoreError> {
        match self.audited(writer::WriteOp::OutboxReleaseHeld, audit).await? {
            writer::WriteOutput::Changed(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    async fn discard_held(&self, audit: NewAudit) -> Result<Vec<OutboxRow>, StoreError> {
        match self.audited(writer::WriteOp::OutboxDiscardHeld, audit).await? {
            writer::WriteOutput::Rows(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn retry_dead(&self, id: Option<i64>, audit: NewAudit) -> Result<usize, StoreError> {
        match self.audited(writer::WriteOp::OutboxRetryDead(id), audit).await? {
            writer::WriteOutput::Changed(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    async fn drop_row(&self, id: i64, audit: NewAudit) -> Result<bool, StoreError> {
        match self.audited(writer::WriteOp::OutboxDrop(id), audit).await? {
            writer::WriteOutput::Changed(n) => Ok(n > 0),
            other => Err(unexpected(other)),
        }
    }

    async fn resync(&self, kind: ResourceKind, id: &str, audit: NewAudit) -> Result<i64, StoreError> {
        match self.audited(writer::WriteOp::Resync { kind, id: id.to_string() }, audit).await? {
            writer::WriteOutput::Changed(n) => Ok(n as i64),
            other => Err(unexpected(other)),
        }
    }

    async fn list(&self, state: Option<OutboxState>, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        self.readers.run(move |c| outbox::list(c, state, limit)).await
    }

    async fn get(&self, id: i64) -> Result<Option<(OutboxRow, Vec<Attempt>)>, StoreError> {
        self.readers.run(move |c| outbox::get(c, id)).await
    }

    async fn depth(&self) -> Result<(u64, Option<String>), StoreError> {
        self.readers.run(outbox::depth).await
    }

    async fn counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.readers.run(resources::outbox_counts).await
    }

    async fn rows_of(&self, resource_id: &str) -> Result<Vec<(String, u64, String)>, StoreError> {
        let id = resource_id.to_string();
        self.readers.run(move |c| resources::outbox_for(c, &id)).await
    }

    async fn guard_status(&self) -> Result<GuardStatus, StoreError> {
        self.readers.run(outbox::guard_status).await
    }

    async fn held_changes(&self, limit: usize) -> Result<Vec<HeldChange>, StoreError> {
        self.readers.run(move |c| status::held(c, limit)).await
    }

    async fn recent_attempts(&self, limit: usize, failures_only: bool) -> Result<Vec<DeliveryAttempt>, StoreError> {
        self.readers.run(move |c| status::recent_attempts(c, limit, failures_only)).await
    }

    async fn app_id(&self, resource_id: &str) -> Result<Option<String>, StoreError> {
        let id = resource_id.to_string();
        self.readers.run(move |c| outbox::app_id(c, &id)).await
    }

    async fn has_undelivered(&self, resource_id: &str) -> Result<bool, StoreError> {
        let id = resource_id.to_string();
        self.readers.run(move |c| outbox::has_undelivered(c, &id)).await
    }
}

#[async_trait]
impl SyncStore for SqliteStore {
    async fn match_page(&self, kind: ResourceKind, keys: Vec<AppKey>) -> Result<Vec<PageMatch>, StoreError> {
        self.bulk_readers.run(move |c| sync::match_page(c, kind, &keys)).await
    }

    async fn all_ids(&self, kind: ResourceKind) -> Result<Vec<(String, String)>, StoreError> {
        self.bulk_readers.run(move |c| sync::all_ids(c, kind)).await
    }

    async fn load_unmatched(&self, kind: ResourceKind, ids: Vec<String>) -> Result<Vec<Matched>, StoreError> {
        self.bulk_readers.run(move |c| sync::load_unmatched(c, kind, &ids)).await
    }

    async fn names_for_app_ids(&self, app_ids: Vec<String>) -> Result<Vec<Option<(String, String)>>, StoreError> {
        self.bulk_readers.run(move |c| sync::names_for_app_ids(c, &app_ids)).await
    }

    async fn stuck(&self, older_than: String, limit: usize) -> Result<Vec<Stuck>, StoreError> {
        self.readers.run(move |c| sync::stuck(c, &older_than, limit)).await
    }

    async fn run_start(&self, trigger: &str) -> Result<i64, StoreError> {
        match self.write(writer::WriteOp::SyncRunStart(trigger.to_string())).await? {
            writer::WriteOutput::Changed(n) => Ok(n as i64),
            other => Err(unexpected(other)),
        }
    }

    async fn run_finish(&self, id: i64, finish: RunFinish) -> Result<(), StoreError> {
        match self.write(writer::WriteOp::SyncRunFinish { id, finish: Box::new(finish) }).await? {
            writer::WriteOutput::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    async fn close_running(&self, reason: &str) -> Result<usize, StoreError> {
        match self.write(writer::WriteOp::SyncCloseRunning(reason.to_string())).await? {
            writer::WriteOutput::Changed(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    async fn runs(&self, limit: usize) -> Result<Vec<SyncRun>, StoreError> {
        self.readers.run(move |c| sync::runs(c, limit)).await
    }

    async fn run(&self, id: Option<i64>) -> Result<Option<SyncRun>, StoreError> {
        self.readers.run(move |c| sync::run(c, id)).await
    }

    async fn drift_items(&self, run_id: i64) -> Result<Vec<DriftRow>, StoreError> {
        self.readers.run(move |c| sync::items(c, run_id)).await
    }

    async fn repair(&self, run_id: i64, ops: Vec<RepairOp>) -> Result<Vec<RepairResult>, StoreError> {
        match self.write(writer::WriteOp::SyncRepair { run_id, ops }).await? {
            writer::WriteOutput::Repaired(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn requeue_dead(&self) -> Result<Vec<i64>, StoreError> {
        match self.write(writer::WriteOp::SyncRequeueDead).await? {
            writer::WriteOutput::Ids(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    async fn target_switch(&self, identity: &str) -> Result<TargetSwitch, StoreError> {
        match self.write(writer::WriteOp::TargetSwitch(identity.to_string())).await? {
            writer::WriteOutput::TargetSwitched(t) => Ok(t),
            other => Err(unexpected(other)),
        }
    }
}

#[async_trait]
impl TokenStore for SqliteStore {
    async fn create(&self, label: &str, mut audit: NewAudit) -> Result<NewToken, StoreError> {
        let tok = generate_token(label)?;
        audit.resource_id = Some(tok.public.id.clone());
        if let Some(o) = audit.summary.as_object_mut() {
            o.insert("label".into(), label.into());
        }
        match self.audited(writer::WriteOp::TokenCreate(tok.clone()), audit).await? {
            writer::WriteOutput::Done => Ok(tok.public),
            other => Err(unexpected(other)),
        }
    }

    async fn revoke(&self, id: &str, audit: NewAudit) -> Result<bool, StoreError> {
        match self.audited(writer::WriteOp::TokenRevoke(id.to_string()), audit).await? {
            writer::WriteOutput::Changed(0) => Ok(false),
            writer::WriteOutput::Changed(_) => {
                // After the commit, before answering: a running daemon's cache must forget
                // the token before `token revoke` says it is done.
                self.token_cache.revoked(id, &crate::model::now())?;
                Ok(true)
            }
            other => Err(unexpected(other)),
        }
    }

    async fn list(&self) -> Result<Vec<TokenInfo>, StoreError> {
        self.readers.run(tokens::list).await
    }

    async fn verify(&self, presented: &str) -> Result<Option<TokenInfo>, StoreError> {
        let seen = self.token_cache.observe();
        if let Some(hit) = seen.and_then(|seen| self.token_cache.get(presented, seen)) {
            return Ok(hit);
        }
        let owned = presented.to_string();
        let Some(row) = self.readers.run(move |c| tokens::lookup(c, &owned)).await? else { return Ok(None) };
        let verified = tokens::check(presented, &row);
        if let (Some(seen), Some(_)) = (seen, &verified) {
            self.token_cache.put(seen, row);
        }
        Ok(verified)
    }
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn list(&self, q: AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        self.readers.run(move |c| audit::list(c, &q)).await
    }

    async fn prune(&self, before: &str, batch: usize) -> Result<usize, StoreError> {
        let batch = batch.max(1);
        let mut total = 0;
        loop {
            match self.write(writer::WriteOp::AuditPrune { before: before.to_string(), batch }).await? {
                writer::WriteOutput::Changed(n) => {
                    total += n;
                    if n < batch {
                        return Ok(total);
                    }
                }
                other => return Err(unexpected(other)),
            }
        }
    }
}

#[async_trait]
impl AdminStore for SqliteStore {
    async fn schema_version(&self) -> Result<(u64, u64), StoreError> {
        self.readers.run(|c| Ok((migrations::current(c)?, migrations::expected()))).await
    }

    /// Pragmas as SQLite reports them on the writer's connection; going through the writer
    /// thread, the call also proves that thread is alive.
    async fn settings(&self) -> Result<Vec<(String, String)>, StoreError> {
        match self.write(writer::WriteOp::ReadPragmas).await? {
            writer::WriteOutput::Pragmas(p) => Ok(p),
            other => Err(unexpected(other)),
        }
    }

    /// The database file plus its write-ahead log (missing files count 0).
    fn size_bytes(&self) -> u64 {
        let mut wal = self.path.as_os_str().to_owned();
        wal.push("-wal");
        [self.path.as_path(), Path::new(&wal)].iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum()
    }

    fn close(&self) {
        self.writer.close();
    }
}

/// One process owns the file (SQLite locks it), so the cluster is that one node, which
/// always leads: nothing to record, nothing to fence.
#[async_trait]
impl ClusterStore for SqliteStore {
    fn shared(&self) -> bool {
        false
    }

    async fn heartbeat(
        &self,
        _node: &NodeInfo,
        _fresh: std::time::Duration,
    ) -> Result<Option<ClusterNode>, StoreError> {
        Ok(None)
    }

    async fn acquire_or_renew(
        &self,
        _node_id: &str,
        _ttl: std::time::Duration,
        _reclaim: bool,
    ) -> Result<Option<i64>, StoreError> {
        Ok(Some(1))
    }

    async fn release(&self, _node_id: &str) -> Result<(), StoreError> {
        Ok(())
    }

    async fn live_nodes(&self, _within: std::time::Duration) -> Result<Vec<ClusterNode>, StoreError> {
        Ok(Vec::new())
    }

    async fn lease(&self) -> Result<Option<Lease>, StoreError> {
        Ok(None)
    }

    async fn prune_nodes(&self, _older_than: std::time::Duration) -> Result<u64, StoreError> {
        Ok(0)
    }
}
