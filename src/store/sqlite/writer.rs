//! The single writer: one thread owns the write connection and takes typed operations over
//! a channel. It drains whatever is queued (up to `max_batch`) into one transaction, commits
//! once (one fsync for the batch: group commit) and only then answers every caller.
//!
//! One failing operation must roll back alone. Savepoints do that, at a price: SQLite copies
//! every page an operation touches into the savepoint's sub-journal first, and a create
//! touches a dozen (its table and index leaves, the outbox's, the audit log's): 12 % of the
//! writer's time per create. Failures are rare (a duplicate `userName`, a stale `If-Match`, a
//! policy refusal), so a batch first runs bare, with a copy of each operation kept; only when
//! one of them fails is the batch rolled back whole and run again from the copies, each in
//! its own savepoint, exactly as before. A batch of one needs no copy: rolled back, it
//! leaves nothing. `tests::a_batch_commits_what_its_operations_one_by_one_would` holds the
//! two ways to the same results and the same rows.

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

#[derive(Debug, Clone)]
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
    /// Another operation plus its audit record, as one operation: both commit or
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
    /// policy in the same operation (see `policy_facts`).
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
    /// policed) as `Audited { Update }` would, all as one operation.
    Modify(Box<Modify>),
}

/// A read-modify-write for the writer (`ResourceStore::modify`).
#[derive(Debug, Clone)]
pub struct Modify {
    pub kind: ResourceKind,
    pub id: String,
    pub modify: Computation,
    pub policy: Option<std::sync::Arc<crate::policy::Policy>>,
}

/// The caller's computation, which has no `Debug` of its own.
#[derive(Clone)]
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
    let ops: Vec<WriteOp> = batch.iter_mut().map(|j| std::mem::replace(&mut j.op, WriteOp::ReadPragmas)).collect();
    let copies: Option<Vec<WriteOp>> = (ops.len() > 1).then(|| ops.clone());
    let outcome = match run_bare(conn, ops) {
        Ok(Bare::Committed(results)) => Ok(results),
        Ok(Bare::Failed(at, e)) => match copies {
            // The only operation: rolled back, it left nothing, as its savepoint would have.
            None => Ok(vec![Err(e)]),
            Some(ops) => run_in_savepoints(conn, ops, Some((at, e))),
        },
        Err(e) => Err(e),
    };
    match outcome {
        Ok(results) => {
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

/// How a batch run without savepoints ended.
enum Bare {
    /// Every operation succeeded and the batch is committed; their results in order.
    Committed(Vec<Result<WriteOutput, StoreError>>),
    /// The operation at this position failed with this error: the whole batch is rolled
    /// back.
    Failed(usize, StoreError),
}

/// Run `ops` in one transaction without savepoints, stopping at the first that fails.
/// `Err`: the transaction itself failed (begin, commit or rollback).
fn run_bare(conn: &mut Connection, ops: Vec<WriteOp>) -> Result<Bare, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(ops.len());
    for (at, op) in ops.into_iter().enumerate() {
        match guarded(&tx, op) {
            Ok(out) => results.push(Ok(out)),
            Err(e) => {
                // `finish` rolls back, and is a no-op when an I/O error already ended the
                // transaction (SQLite rolls back by itself then).
                tx.finish()?;
                return Ok(Bare::Failed(at, e));
            }
        }
    }
    tx.commit()?;
    Ok(Bare::Committed(results))
}

/// Run `ops` in one transaction, each in its own savepoint: one that fails rolls back
/// alone and the others commit.
///
/// `failed` is the operation a bare run stopped at and its error. It is not run again:
/// the operations before it ran in the same order on the same state, so it would meet the
/// same state and fail the same way, having done its work (and logged its panic) twice.
fn run_in_savepoints(
    conn: &mut Connection,
    ops: Vec<WriteOp>,
    mut failed: Option<(usize, StoreError)>,
) -> Result<Vec<Result<WriteOutput, StoreError>>, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(ops.len());
    for (at, op) in ops.into_iter().enumerate() {
        if let Some((_, e)) = failed.take_if(|(failed_at, _)| *failed_at == at) {
            results.push(Err(e));
            continue;
        }
        // Cached statements: `execute_batch` would parse these three again for every
        // operation.
        tx.prepare_cached("SAVEPOINT op")?.execute([])?;
        let r = guarded(&tx, op);
        if r.is_err() {
            tx.prepare_cached("ROLLBACK TO op")?.execute([])?;
        }
        tx.prepare_cached("RELEASE op")?.execute([])?;
        results.push(r);
    }
    tx.commit()?;
    Ok(results)
}

/// `apply`, with a panic turned into this operation's error: a bug in one operation must
/// not take the writer (and every later write) down.
fn guarded(conn: &Connection, op: WriteOp) -> Result<WriteOutput, StoreError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| apply(conn, op))).unwrap_or_else(|p| {
        let what = p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned());
        tracing::error!(panic = what.as_deref().unwrap_or("?"), "store operation panicked");
        Err(StoreError::Internal("store operation panicked".into()))
    })
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

#[cfg(test)]
mod tests {
    //! A batch run bare (and run again in savepoints when one of its operations fails) must
    //! end where running its operations one at a time, each in its own savepoint, ends:
    //! the same answer to each caller and the same rows. A differential property test over
    //! random mixes of writes that succeed and writes that fail half-way (a group whose
    //! second member is unknown fails after its row and first member are written).
    use super::*;
    use crate::model::MemberRef;
    use crate::store::types::Update;
    use proptest::prelude::*;
    use serde_json::json;

    #[derive(Debug, Clone)]
    enum Op {
        CreateUser { id: u8, name: u8, email: bool },
        CreateGroup { id: u8, members: Vec<u8> },
        Update { id: u8, expected: Option<u8>, title: u8 },
        AddMembers { group: u8, members: Vec<u8> },
        Delete { id: u8, user: bool },
        Modify { id: u8, refuse: bool },
        Panic,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..6, 0u8..4, any::<bool>()).prop_map(|(id, name, email)| Op::CreateUser { id, name, email }),
            2 => (0u8..3, proptest::collection::vec(0u8..8, 0..3)).prop_map(|(id, members)| Op::CreateGroup { id, members }),
            3 => (0u8..7, proptest::option::of(1u8..4), 0u8..3).prop_map(|(id, expected, title)| Op::Update { id, expected, title }),
            2 => (0u8..3, proptest::collection::vec(0u8..8, 1..3)).prop_map(|(group, members)| Op::AddMembers { group, members }),
            2 => (0u8..7, any::<bool>()).prop_map(|(id, user)| Op::Delete { id, user }),
            2 => (0u8..7, any::<bool>()).prop_map(|(id, refuse)| Op::Modify { id, refuse }),
            1 => Just(Op::Panic),
        ]
    }

    fn user_id(n: u8) -> String {
        format!("u{n}")
    }

    fn member(n: u8) -> MemberRef {
        MemberRef { id: user_id(n), kind: Some(ResourceKind::User), display: None }
    }

    fn write_op(op: &Op) -> WriteOp {
        let audit = |kind: &str| Box::new(NewAudit::new("test", "TEST", kind));
        let attrs = |v: serde_json::Value| v.as_object().unwrap().clone();
        let inner = match op {
            Op::CreateUser { id, name, email } => {
                let mut a = json!({"userName": format!("name{name}")});
                if *email {
                    a["emails"] = json!([{"value": format!("n{name}@x.test"), "type": "work"}]);
                }
                WriteOp::Create(NewResource {
                    kind: ResourceKind::User,
                    id: user_id(*id),
                    attrs: attrs(a),
                    members: Vec::new(),
                })
            }
            Op::CreateGroup { id, members } => WriteOp::Create(NewResource {
                kind: ResourceKind::Group,
                id: format!("g{id}"),
                attrs: attrs(json!({"displayName": format!("group {id}")})),
                members: members.iter().map(|m| member(*m)).collect(),
            }),
            Op::Update { id, expected, title } => WriteOp::Update(Update {
                kind: ResourceKind::User,
                id: user_id(*id),
                expected_version: expected.map(u64::from),
                attrs: Some(attrs(json!({"userName": format!("name{id}"), "title": format!("t{title}")}))),
                members: Default::default(),
            }),
            Op::AddMembers { group, members } => WriteOp::Update(Update {
                kind: ResourceKind::Group,
                id: format!("g{group}"),
                expected_version: None,
                attrs: None,
                members: crate::model::MemberDelta {
                    add: members.iter().map(|m| member(*m)).collect(),
                    ..Default::default()
                },
            }),
            Op::Delete { id, user } => WriteOp::Delete {
                kind: if *user { ResourceKind::User } else { ResourceKind::Group },
                id: if *user { user_id(*id) } else { format!("g{id}") },
                expected_version: None,
            },
            Op::Modify { id, refuse } => {
                let refuse = *refuse;
                return WriteOp::Modify(Box::new(Modify {
                    kind: ResourceKind::User,
                    id: user_id(*id),
                    modify: Computation(std::sync::Arc::new(move |cur: &Resource| {
                        if refuse {
                            return Err("refused".into());
                        }
                        let mut attrs = cur.attrs.clone();
                        let n = attrs.get("n").and_then(|v| v.as_u64()).unwrap_or(0);
                        attrs.insert("n".into(), json!(n + 1));
                        Ok((Update::attributes_of(cur, attrs), NewAudit::new("test", "PATCH", "User")))
                    })),
                    policy: None,
                }));
            }
            // A bug: a computation that panics.
            Op::Panic => {
                return WriteOp::Modify(Box::new(Modify {
                    kind: ResourceKind::User,
                    id: user_id(0),
                    modify: Computation(std::sync::Arc::new(|_: &Resource| panic!("a bug"))),
                    policy: None,
                }));
            }
        };
        WriteOp::Audited { op: Box::new(inner), audit: audit("User") }
    }

    fn fresh() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = super::super::open::prepare_dir(dir.path()).unwrap();
        let mut conn = super::super::open::connect(&path, 5).unwrap();
        super::super::migrations::apply(&mut conn).unwrap();
        (dir, conn)
    }

    /// Run `ops` through `commit_batch` as one batch; each caller's answer, as text.
    fn run_batch(conn: &mut Connection, ops: Vec<WriteOp>) -> Vec<String> {
        let mut batch = Vec::new();
        let mut answers = Vec::new();
        for op in ops {
            let (reply, rx) = oneshot::channel();
            batch.push(Job { op, reply });
            answers.push(rx);
        }
        commit_batch(conn, &mut batch);
        answers.into_iter().map(|mut rx| masked(&format!("{:?}", rx.try_recv().expect("answered")))).collect()
    }

    /// Timestamps differ between two runs; everything else must not.
    fn masked(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = String::with_capacity(s.len());
        let mut i = 0;
        while i < b.len() {
            let stamp = b.len() - i >= 20
                && b[i..i + 4].iter().all(u8::is_ascii_digit)
                && b[i + 4] == b'-'
                && b[i + 10] == b'T'
                && b[i + 13] == b':';
            if stamp {
                let end = s[i..].find('Z').map(|z| i + z + 1).unwrap_or(b.len());
                out.push_str("<time>");
                i = end;
            } else {
                let c = s[i..].chars().next().unwrap();
                out.push(c);
                i += c.len_utf8();
            }
        }
        out
    }

    /// Every row of every table, timestamps masked.
    fn rows(conn: &Connection) -> Vec<String> {
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut out = Vec::new();
        for t in tables {
            let mut st = conn.prepare(&format!("SELECT * FROM \"{t}\" ORDER BY 1, 2")).unwrap();
            let n = st.column_count();
            let mut q = st.query([]).unwrap();
            while let Some(r) = q.next().unwrap() {
                let vals: Vec<String> =
                    (0..n).map(|i| format!("{:?}", r.get::<_, rusqlite::types::Value>(i).unwrap())).collect();
                out.push(masked(&format!("{t}: {}", vals.join(", "))));
            }
        }
        out
    }

    /// The operation a bare batch stopped at is not run again in the replay: its work (a
    /// computation, a panic and its log line) happens once, and its answer is the first run's.
    #[test]
    fn the_failed_operation_runs_once() {
        let (_d, mut conn) = fresh();
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = calls.clone();
        let panicking = WriteOp::Modify(Box::new(Modify {
            kind: ResourceKind::User,
            id: user_id(0),
            modify: Computation(std::sync::Arc::new(move |_: &Resource| {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                panic!("a bug")
            })),
            policy: None,
        }));
        let create = |id| write_op(&Op::CreateUser { id, name: id, email: false });
        let answers = run_batch(&mut conn, vec![create(0), panicking, create(1)]);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1, "{answers:?}");
        assert!(answers[0].starts_with("Ok(Resource"), "{answers:?}");
        assert!(answers[1].contains("store operation panicked"), "{answers:?}");
        assert!(answers[2].starts_with("Ok(Resource"), "{answers:?}");
        let users: i64 = conn.query_row("SELECT count(*) FROM resources", [], |r| r.get(0)).unwrap();
        assert_eq!(users, 2, "both creates committed");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn a_batch_commits_what_its_operations_one_by_one_would(
            setup in proptest::collection::vec(op(), 0..6),
            batch in proptest::collection::vec(op(), 1..10),
        ) {
            let (_d1, mut batched) = fresh();
            let (_d2, mut one_by_one) = fresh();
            for conn in [&mut batched, &mut one_by_one] {
                for op in &setup {
                    run_in_savepoints(conn, vec![write_op(op)], None).unwrap();
                }
            }
            let got = run_batch(&mut batched, batch.iter().map(write_op).collect());
            let want: Vec<String> = batch
                .iter()
                .map(|op| {
                    let r = run_in_savepoints(&mut one_by_one, vec![write_op(op)], None).unwrap().pop().unwrap();
                    masked(&format!("{r:?}"))
                })
                .collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(rows(&batched), rows(&one_by_one));
        }
    }
}
