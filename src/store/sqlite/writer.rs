//! The single writer: one thread owns the write connection and takes typed operations over
//! a channel. It drains whatever is queued (up to `max_batch`) into one transaction, each
//! operation in its own savepoint so one failing operation rolls back alone, commits once
//! (one fsync for the batch: group commit) and only then answers every caller.

use std::sync::Mutex;
use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::{audit, outbox, resources, sync, tokens};
use crate::model::{Resource, ResourceKind};
use crate::store::types::{
    Claimed, Completion, GeneratedToken, GuardPolicy, Load, ModifyFn, NewAudit, NewResource, OutboxRow, Refusal,
    RepairOp, RepairResult, StoreError, TargetSwitch, Update,
};

#[derive(Debug)]
pub enum WriteOp {
    Create(NewResource),
    Update(Update),
    Delete {
        kind: ResourceKind,
        id: String,
        expected_version: Option<u64>,
    },
    TokenCreate(GeneratedToken),
    TokenRevoke(String),
    ReadPragmas,
    OutboxRecover,
    OutboxClaim {
        limit: usize,
        max_rows: usize,
        lease_until: String,
        guard: Option<GuardPolicy>,
    },
    OutboxComplete {
        kind: ResourceKind,
        resource_id: String,
        ids: Vec<i64>,
        started_at: String,
        completion: Completion,
    },
    OutboxRetryDead(Option<i64>),
    OutboxDrop(i64),
    OutboxReleaseHeld,
    OutboxDiscardHeld,
    Resync {
        kind: ResourceKind,
        id: String,
    },
    /// Another operation plus its audit record, in the same savepoint: both commit or
    /// neither does (a rejected change leaves no audit row).
    Audited {
        op: Box<WriteOp>,
        audit: Box<NewAudit>,
    },
    /// Delete up to `batch` audit records older than `before`.
    AuditPrune {
        before: String,
        batch: usize,
    },
    /// A resource write (`Create`, `Update`, `Delete`) checked against the provisioning
    /// policy in the same savepoint (see `policy_facts`).
    Policed {
        op: Box<WriteOp>,
        policy: std::sync::Arc<crate::policy::Policy>,
    },
    SyncRunStart(String),
    SyncRunFinish {
        id: i64,
        finish: Box<crate::store::RunFinish>,
    },
    SyncRepair {
        run_id: i64,
        ops: Vec<RepairOp>,
    },
    SyncRequeueDead,
    SyncCloseRunning(String),
    /// Deliveries go to this target now (`delivery_target::switch`).
    TargetSwitch(String),
    /// A read-modify-write: read the resource, compute the change, write it audited (and
    /// policed) as `Audited { Update }` would, all in one savepoint.
    Modify(Box<Modify>),
}

/// A read-modify-write for the writer (`ResourceStore::modify`).
#[derive(Debug)]
pub struct Modify {
    pub kind: ResourceKind,
    pub id: String,
    pub modify: Computation,
    pub policy: Option<std::sync::Arc<crate::policy::Policy>>,
}

/// The caller's computation, which has no `Debug` of its own.
pub struct Computation(pub ModifyFn);

impl std::fmt::Debug for Computation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Computation")
    }
}

#[derive(Debug)]
pub enum WriteOutput {
    Resource(Box<Resource>),
    Done,
    Changed(usize),
    Pragmas(Vec<(String, String)>),
    Claimed(Claimed),
    Rows(Vec<OutboxRow>),
    Ids(Vec<i64>),
    Repaired(Vec<RepairResult>),
    TargetSwitched(TargetSwitch),
    /// A `Modify`'s computation refused: nothing written.
    Refused(Refusal),
}

struct Job {
    op: WriteOp,
    reply: oneshot::Sender<Result<WriteOutput, StoreError>>,
}

// `Job` is what every write sends; `Close` is sent once. Boxing the job to even out the sizes
// would cost an allocation per write for nothing.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Job(Job),
    Close,
}

pub struct WriterHandle {
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl WriterHandle {
    pub fn start(conn: Connection, max_batch: usize) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("scimsync-writer".into())
            .spawn(move || run(conn, rx, max_batch.max(1)))
            .map_err(|e| StoreError::Internal(format!("cannot start writer thread: {e}")))?;
        Ok(WriterHandle { tx: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)) })
    }

    pub async fn submit(&self, op: WriteOp) -> Result<WriteOutput, StoreError> {
        let (reply, rx) = oneshot::channel();
        {
            let guard = self.tx.lock().map_err(|_| StoreError::Closed)?;
            let tx = guard.as_ref().ok_or(StoreError::Closed)?;
            tx.send(Msg::Job(Job { op, reply })).map_err(|_| StoreError::Closed)?;
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Ask the writer to stop once everything queued so far is committed, and wait for it.
    pub fn close(&self) {
        if let Some(tx) = self.tx.lock().ok().and_then(|mut g| g.take()) {
            let _ = tx.send(Msg::Close);
        }
        if let Some(t) = self.thread.lock().ok().and_then(|mut g| g.take()) {
            let _ = t.join();
        }
    }
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        self.close();
    }
}

fn run(mut conn: Connection, rx: mpsc::Receiver<Msg>, max_batch: usize) {
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    let mut closing = false;
    while !closing {
        match rx.recv() {
            Ok(Msg::Job(j)) => batch.push(j),
            Ok(Msg::Close) | Err(_) => break,
        }
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(Msg::Job(j)) => batch.push(j),
                Ok(Msg::Close) => {
                    closing = true;
                    break;
                }
                Err(_) => break,
            }
        }
        commit_batch(&mut conn, &mut batch);
    }
    // Checkpoint so the WAL does not have to be replayed at next start; failure is harmless.
    let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
    tracing::debug!("store writer stopped");
}

fn commit_batch(conn: &mut Connection, batch: &mut Vec<Job>) {
    let mut results: Vec<Result<WriteOutput, StoreError>> = Vec::with_capacity(batch.len());
    let outcome = (|| -> Result<(), StoreError> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for job in batch.iter_mut() {
            let op = std::mem::replace(&mut job.op, WriteOp::ReadPragmas);
            // Cached statements: `execute_batch` would parse these three again for every
            // operation.
            tx.prepare_cached("SAVEPOINT op")?.execute([])?;
            // A bug in one operation must not take the writer (and every later write) down:
            // a panic becomes that operation's error and its savepoint is rolled back.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| apply(&tx, op))).unwrap_or_else(|p| {
                let what =
                    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned());
                tracing::error!(panic = what.as_deref().unwrap_or("?"), "store operation panicked");
                Err(StoreError::Internal("store operation panicked".into()))
            });
            if r.is_err() {
                tx.prepare_cached("ROLLBACK TO op")?.execute([])?;
            }
            tx.prepare_cached("RELEASE op")?.execute([])?;
            results.push(r);
        }
        tx.commit()?;
        Ok(())
    })();
    match outcome {
        Ok(()) => {
            for (job, r) in batch.drain(..).zip(results) {
                let _ = job.reply.send(r);
            }
        }
        Err(e) => {
            // Nothing of this batch is on disk: every caller gets the error, none a 2xx.
            tracing::error!(error = %e, batch = batch.len(), "store commit failed");
            for job in batch.drain(..) {
                let _ = job.reply.send(Err(StoreError::Internal(format!("commit failed: {e}"))));
            }
        }
    }
}

fn apply(conn: &Connection, op: WriteOp) -> Result<WriteOutput, StoreError> {
    let now = crate::model::now();
    match op {
        WriteOp::Create(new) => resources::create(conn, new, &now).map(|r| WriteOutput::Resource(Box::new(r))),
        WriteOp::Update(upd) => resources::update(conn, upd, &now).map(|r| WriteOutput::Resource(Box::new(r))),
        WriteOp::Delete { kind, id, expected_version } => {
            resources::delete(conn, kind, &id, expected_version, &now).map(|_| WriteOutput::Done)
        }
        WriteOp::TokenCreate(t) => tokens::insert(conn, &t, &now).map(|_| WriteOutput::Done),
        WriteOp::TokenRevoke(id) => tokens::revoke(conn, &id, &now).map(WriteOutput::Changed),
        WriteOp::ReadPragmas => super::open::read_pragmas(conn).map(WriteOutput::Pragmas),
        WriteOp::OutboxRecover => outbox::recover_leases(conn, &now).map(WriteOutput::Changed),
        WriteOp::OutboxClaim { limit, max_rows, lease_until, guard } => {
            outbox::claim(conn, limit, max_rows, &now, &lease_until, guard.as_ref()).map(WriteOutput::Claimed)
        }
        WriteOp::OutboxComplete { kind, resource_id, ids, started_at, completion } => {
            outbox::complete(conn, kind, &resource_id, &ids, &started_at, &completion, &now).map(|_| WriteOutput::Done)
        }
        WriteOp::OutboxRetryDead(id) => outbox::retry_dead(conn, id, &now).map(WriteOutput::Changed),
        WriteOp::OutboxDrop(id) => outbox::drop_row(conn, id).map(WriteOutput::Changed),
        WriteOp::OutboxReleaseHeld => outbox::release_held(conn).map(WriteOutput::Changed),
        WriteOp::OutboxDiscardHeld => outbox::discard_held(conn).map(WriteOutput::Rows),
        WriteOp::Policed { op, policy } => super::policy_facts::apply_under(conn, &policy, *op, &now, apply),
        WriteOp::Resync { kind, id } => {
            resources::resync(conn, kind, &id, &now).map(|n| WriteOutput::Changed(n as usize))
        }
        WriteOp::Audited { op, audit } => apply_audited(conn, *op, *audit, &now),
        WriteOp::AuditPrune { before, batch } => audit::prune(conn, &before, batch).map(WriteOutput::Changed),
        WriteOp::SyncRunStart(trigger) => {
            sync::run_start(conn, &trigger, &now).map(|id| WriteOutput::Changed(id as usize))
        }
        WriteOp::SyncRunFinish { id, finish } => sync::run_finish(conn, id, &finish, &now).map(|_| WriteOutput::Done),
        WriteOp::SyncRepair { run_id, ops } => sync::repair(conn, &ops, run_id, &now).map(WriteOutput::Repaired),
        WriteOp::SyncRequeueDead => sync::requeue_dead(conn, &now).map(WriteOutput::Ids),
        WriteOp::SyncCloseRunning(reason) => sync::close_running(conn, &reason, &now).map(WriteOutput::Changed),
        WriteOp::TargetSwitch(identity) => {
            super::delivery_target::switch(conn, &identity, &now).map(WriteOutput::TargetSwitched)
        }
        WriteOp::Modify(m) => modify(conn, *m, &now),
    }
}

/// Read the resource inside this batch's transaction (so it sees the batch's earlier
/// writes), let the caller compute its change from it, and write that like any audited
/// update. The resource cannot move between the read and the write: this thread is the
/// only writer.
fn modify(conn: &Connection, m: Modify, now: &str) -> Result<WriteOutput, StoreError> {
    let Modify { kind, id, modify, policy } = m;
    let cur = resources::get(conn, kind, &id, Load::default())?
        .ok_or_else(|| StoreError::NotFound { kind: kind.as_str(), id: id.clone() })?;
    let (upd, audit) = match (modify.0)(&cur) {
        Ok(change) => change,
        Err(why) => return Ok(WriteOutput::Refused(why)),
    };
    if upd.kind != kind || upd.id != id {
        return Err(StoreError::Internal("a read-modify-write changed another resource than it read".into()));
    }
    let op = WriteOp::Update(upd);
    let op = match policy {
        Some(policy) => WriteOp::Policed { op: Box::new(op), policy },
        None => op,
    };
    apply_audited(conn, op, audit, now)
}

/// Run `op`, then write its audit record completed with what the change produced: the
/// resource's version and name, or what an operator's action affected.
fn apply_audited(conn: &Connection, op: WriteOp, mut a: NewAudit, now: &str) -> Result<WriteOutput, StoreError> {
    // A deleted resource has no row left to name it afterwards; a dropped outbox row neither.
    // A policed write is audited like the write it wraps.
    let inner = match &op {
        WriteOp::Policed { op, .. } => op.as_ref(),
        other => other,
    };
    let name_before = match inner {
        WriteOp::Delete { id, .. } | WriteOp::Resync { id, .. } => audit::resource_name(conn, id)?,
        _ => None,
    };
    if let WriteOp::OutboxDrop(id) = &op
        && let (Some(brief), Some(o)) = (audit::outbox_brief(conn, *id)?, a.summary.as_object_mut())
    {
        o.insert("change".into(), brief);
    }
    let is_resync = matches!(op, WriteOp::Resync { .. });
    // Revoking an unknown token, dropping an unknown row, retrying nothing: no action, no record.
    let noop_if_zero = matches!(op, WriteOp::TokenRevoke(_) | WriteOp::OutboxDrop(_) | WriteOp::OutboxRetryDead(_));
    let out = apply(conn, op)?;
    if noop_if_zero && matches!(out, WriteOutput::Changed(0)) {
        return Ok(out);
    }
    let (name, version) = match &out {
        WriteOutput::Resource(r) => {
            let name = ["userName", "displayName"].iter().find_map(|k| r.attrs.get(*k).and_then(|v| v.as_str()));
            (name.map(str::to_string), Some(r.meta.version))
        }
        WriteOutput::Rows(rows) => {
            let list: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| {
                    serde_json::json!({"outbox_id": r.id, "type": r.kind.as_str(), "id": r.resource_id, "op": r.op.as_str()})
                })
                .collect();
            if let Some(o) = a.summary.as_object_mut() {
                o.insert("count".into(), list.len().into());
                o.insert("changes".into(), list.into());
            }
            (None, None)
        }
        WriteOutput::Changed(n) => {
            // A resync answers with the outbox id it queued; the others with a row count.
            let key = if is_resync { "outbox_id" } else { "count" };
            if let Some(o) = a.summary.as_object_mut() {
                o.insert(key.into(), (*n).into());
            }
            (name_before, None)
        }
        _ => (name_before, None),
    };
    audit::insert(conn, &a, name.as_deref(), version, now)?;
    Ok(out)
}
