//! The outbox state machine: `pending -> in_flight (lease) -> done | retry | dead`.
//!
//! Changes to one resource leave in commit order: only the oldest undelivered row of a
//! resource can be claimed, and a claim takes it together with every newer pending row of
//! that resource (a *bundle*), so the provisioner sends the current state once instead of
//! each intermediate one (coalescing). A dead row blocks the rows behind it until an
//! operator retries or drops it: nothing is skipped silently.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::StoreError;
use crate::model::{ChangeOp, ResourceKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxState {
    Pending,
    InFlight,
    Done,
    Retry,
    Dead,
}

impl OutboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::InFlight => "in_flight",
            OutboxState::Done => "done",
            OutboxState::Retry => "retry",
            OutboxState::Dead => "dead",
        }
    }
    fn parse(s: &str) -> OutboxState {
        match s {
            "in_flight" => OutboxState::InFlight,
            "done" => OutboxState::Done,
            "retry" => OutboxState::Retry,
            "dead" => OutboxState::Dead,
            _ => OutboxState::Pending,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    /// Commit order, and the idempotency key sent to the app.
    pub id: i64,
    pub kind: ResourceKind,
    pub resource_id: String,
    pub op: ChangeOp,
    pub version: u64,
    pub payload: Value,
    pub state: OutboxState,
    pub attempts: u32,
    pub next_attempt_at: Option<String>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub done_at: Option<String>,
    pub coalesced_into: Option<i64>,
}

/// One recorded delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub started_at: String,
    pub finished_at: String,
    pub outcome: String,
    pub detail: Option<String>,
}

/// The rows of one resource claimed together, oldest first.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub rows: Vec<OutboxRow>,
}

impl Bundle {
    pub fn head(&self) -> &OutboxRow {
        &self.rows[0]
    }
}

/// How a delivery ended, as the worker decided.
#[derive(Debug, Clone)]
pub enum Completion {
    /// Applied; every row of the bundle is done. `id_map` records what the app calls the
    /// resource now (`Some(None)`: forget it, the app account is gone).
    Success { id_map: Option<Option<String>> },
    /// Failed but may succeed later: the head row waits until `next_attempt_at`.
    Retry { next_attempt_at: String, error: String },
    /// Not deliverable without a change of data or config: the head row is dead-lettered.
    Dead { error: String },
    /// A dependency is not there yet (a member not provisioned): try again later without
    /// counting an attempt.
    Waiting { next_attempt_at: String, reason: String },
}

const ROW_COLS: &str = "id, resource_kind, resource_id, op, version, payload, state, attempts, next_attempt_at, \
                        last_error, created_at, done_at, coalesced_into";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
    let kind: String = r.get(1)?;
    let op: String = r.get(3)?;
    let payload: String = r.get(5)?;
    let state: String = r.get(6)?;
    Ok(OutboxRow {
        id: r.get(0)?,
        kind: ResourceKind::parse(&kind).unwrap_or(ResourceKind::User),
        resource_id: r.get(2)?,
        op: match op.as_str() {
            "create" => ChangeOp::Create,
            "delete" => ChangeOp::Delete,
            _ => ChangeOp::Update,
        },
        version: r.get::<_, i64>(4)? as u64,
        payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
        state: OutboxState::parse(&state),
        attempts: r.get::<_, i64>(7)? as u32,
        next_attempt_at: r.get(8)?,
        last_error: r.get(9)?,
        created_at: r.get(10)?,
        done_at: r.get(11)?,
        coalesced_into: r.get(12)?,
    })
}

/// At start, nothing can be in flight: rows left so by a crash are due again at once.
pub fn recover_leases(conn: &Connection, now: &str) -> Result<usize, StoreError> {
    Ok(conn
        .prepare_cached("UPDATE outbox SET state = 'retry', next_attempt_at = ?1 WHERE state = 'in_flight'")?
        .execute([now])?)
}

/// Claim up to `limit` bundles whose head is due, leasing them until `lease_until`. A
/// lease that expired (a delivery that hung past its deadline) is due again.
pub fn claim(
    conn: &Connection,
    limit: usize,
    max_rows_per_bundle: usize,
    now: &str,
    lease_until: &str,
) -> Result<Vec<Bundle>, StoreError> {
    let heads: Vec<(i64, String)> = {
        let mut st = conn.prepare_cached(
            "SELECT o.id, o.resource_id FROM outbox o
             WHERE ((o.state IN ('pending', 'retry') AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= ?1))
                    OR (o.state = 'in_flight' AND o.lease_until <= ?1))
               AND NOT EXISTS (SELECT 1 FROM outbox p
                               WHERE p.resource_id = o.resource_id AND p.id < o.id
                                 AND p.state IN ('pending', 'retry', 'in_flight', 'dead'))
             ORDER BY o.id LIMIT ?2",
        )?;
        let rows = st.query_map(params![now, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut bundles = Vec::with_capacity(heads.len());
    for (head_id, resource_id) in heads {
        let mut st = conn.prepare_cached(&format!(
            "SELECT {ROW_COLS} FROM outbox
             WHERE resource_id = ?1 AND (id = ?2 OR (id > ?2 AND state = 'pending'))
             ORDER BY id LIMIT ?3"
        ))?;
        let rows: Vec<OutboxRow> = st
            .query_map(params![resource_id, head_id, max_rows_per_bundle.max(1) as i64], row)?
            .collect::<Result<_, _>>()?;
        let mut mark = conn.prepare_cached("UPDATE outbox SET state = 'in_flight', lease_until = ?2 WHERE id = ?1")?;
        for r in &rows {
            mark.execute(params![r.id, lease_until])?;
        }
        if !rows.is_empty() {
            bundles.push(Bundle { rows });
        }
    }
    Ok(bundles)
}

/// Record the end of a delivery of the bundle made of `ids` (head first).
pub fn complete(
    conn: &Connection,
    kind: ResourceKind,
    resource_id: &str,
    ids: &[i64],
    started_at: &str,
    completion: &Completion,
    now: &str,
) -> Result<(), StoreError> {
    let Some(&head) = ids.first() else { return Ok(()) };
    let (outcome, detail) = match completion {
        Completion::Success { .. } => ("success", None),
        Completion::Retry { error, .. } => ("retry", Some(error.as_str())),
        Completion::Dead { error } => ("permanent", Some(error.as_str())),
        Completion::Waiting { reason, .. } => ("waiting", Some(reason.as_str())),
    };
    conn.prepare_cached(
        "INSERT INTO outbox_attempts (outbox_id, started_at, finished_at, outcome, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![head, started_at, now, outcome, detail])?;
    // Rows behind the head go back to pending unless the bundle was delivered.
    let release_rest = |conn: &Connection| -> Result<(), StoreError> {
        let mut st = conn.prepare_cached(
            "UPDATE outbox SET state = 'pending', lease_until = NULL WHERE id = ?1 AND state = 'in_flight'",
        )?;
        for id in &ids[1..] {
            st.execute([id])?;
        }
        Ok(())
    };
    match completion {
        Completion::Success { id_map } => {
            conn.prepare_cached(
                "UPDATE outbox SET state = 'done', done_at = ?2, lease_until = NULL, attempts = attempts + 1,
                        last_error = NULL WHERE id = ?1",
            )?
            .execute(params![head, now])?;
            let mut st = conn.prepare_cached(
                "UPDATE outbox SET state = 'done', done_at = ?2, lease_until = NULL, coalesced_into = ?3 WHERE id = ?1",
            )?;
            for id in &ids[1..] {
                st.execute(params![id, now, head])?;
            }
            match id_map {
                Some(Some(app_id)) => {
                    conn.prepare_cached(
                        "INSERT INTO id_map (resource_id, resource_kind, app_id, updated_at) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (resource_id) DO UPDATE SET app_id = excluded.app_id, updated_at = excluded.updated_at",
                    )?
                    .execute(params![resource_id, kind.as_str(), app_id, now])?;
                }
                Some(None) => {
                    conn.prepare_cached("DELETE FROM id_map WHERE resource_id = ?1")?.execute([resource_id])?;
                }
                None => {}
            }
        }
        Completion::Retry { next_attempt_at, error } => {
            conn.prepare_cached(
                "UPDATE outbox SET state = 'retry', next_attempt_at = ?2, lease_until = NULL, attempts = attempts + 1,
                        last_error = ?3 WHERE id = ?1",
            )?
            .execute(params![head, next_attempt_at, error])?;
            release_rest(conn)?;
        }
        Completion::Waiting { next_attempt_at, reason } => {
            conn.prepare_cached(
                "UPDATE outbox SET state = 'retry', next_attempt_at = ?2, lease_until = NULL, last_error = ?3 WHERE id = ?1",
            )?
            .execute(params![head, next_attempt_at, reason])?;
            release_rest(conn)?;
        }
        Completion::Dead { error } => {
            conn.prepare_cached(
                "UPDATE outbox SET state = 'dead', lease_until = NULL, attempts = attempts + 1, last_error = ?2,
                        done_at = ?3 WHERE id = ?1",
            )?
            .execute(params![head, error, now])?;
            release_rest(conn)?;
        }
    }
    Ok(())
}

/// Put dead rows back in the queue: one (`Some(id)`) or all.
pub fn retry_dead(conn: &Connection, id: Option<i64>, now: &str) -> Result<usize, StoreError> {
    let sql = "UPDATE outbox SET state = 'retry', next_attempt_at = ?2, done_at = NULL, attempts = 0
               WHERE state = 'dead' AND (?1 IS NULL OR id = ?1)";
    Ok(conn.prepare_cached(sql)?.execute(params![id, now])?)
}

/// Remove a row an operator decided will never be delivered (not in flight).
pub fn drop_row(conn: &Connection, id: i64) -> Result<usize, StoreError> {
    Ok(conn.prepare_cached("DELETE FROM outbox WHERE id = ?1 AND state != 'in_flight'")?.execute([id])?)
}

pub fn list(conn: &Connection, state: Option<OutboxState>, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {ROW_COLS} FROM outbox WHERE (?1 IS NULL OR state = ?1) AND (?1 IS NOT NULL OR state != 'done')
         ORDER BY id LIMIT ?2"
    ))?;
    let rows = st.query_map(params![state.map(OutboxState::as_str), limit as i64], row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn get(conn: &Connection, id: i64) -> Result<Option<(OutboxRow, Vec<Attempt>)>, StoreError> {
    let Some(r) = conn
        .prepare_cached(&format!("SELECT {ROW_COLS} FROM outbox WHERE id = ?1"))?
        .query_row([id], row)
        .optional()?
    else {
        return Ok(None);
    };
    let mut st = conn.prepare_cached(
        "SELECT started_at, finished_at, outcome, detail FROM outbox_attempts WHERE outbox_id = ?1 ORDER BY id",
    )?;
    let attempts = st
        .query_map([id], |r| {
            Ok(Attempt { started_at: r.get(0)?, finished_at: r.get(1)?, outcome: r.get(2)?, detail: r.get(3)? })
        })?
        .collect::<Result<_, _>>()?;
    Ok(Some((r, attempts)))
}

pub fn app_id(conn: &Connection, resource_id: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT app_id FROM id_map WHERE resource_id = ?1")?
        .query_row([resource_id], |r| r.get(0))
        .optional()?)
}

/// Whether the resource still has changes waiting (so a group naming it should wait).
pub fn has_undelivered(conn: &Connection, resource_id: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM outbox WHERE resource_id = ?1 AND state IN ('pending', 'retry', 'in_flight', 'dead'))",
        )?
        .query_row([resource_id], |r| r.get(0))?)
}

/// (depth of undelivered rows, created_at of the oldest), for status and metrics.
pub fn depth(conn: &Connection) -> Result<(u64, Option<String>), StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT count(*), min(created_at) FROM outbox WHERE state IN ('pending', 'retry', 'in_flight')",
        )?
        .query_row([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?)
}
