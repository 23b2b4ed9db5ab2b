//! The outbox state machine: `pending -> in_flight (lease) -> done | retry | dead`.
//!
//! Changes to one resource leave in commit order: only the oldest undelivered row of a
//! resource can be claimed, and a claim takes it together with every newer pending row of
//! that resource (a *bundle*), so the provisioner sends the current state once instead of
//! each intermediate one (coalescing). A dead row blocks the rows behind it until an
//! operator retries or drops it: nothing is skipped silently.
//!
//! The accidental-deletion guard lives here too (see [`GuardPolicy`]): deprovisioning rows
//! (payload `deprovision: true`) are counted over a window when claimed, and once the guard
//! has tripped they go to `held` instead of being delivered, blocking the rows behind them,
//! until an operator releases or discards them.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::StoreError;
use crate::model::{ChangeOp, OutboxPayload, ResourceKind};
use crate::store::types::{
    Attempt, Bundle, Claimed, Completion, GuardPolicy, GuardStatus, GuardTrip, OutboxRow, OutboxState, guard_trips,
};

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
        payload: OutboxPayload::from_json(&payload).unwrap_or_else(|e| {
            tracing::warn!(outbox_id = r.get::<_, i64>(0).unwrap_or_default(), error = %e, "undecodable outbox payload read as empty");
            OutboxPayload::default()
        }),
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

/// The marker the store puts on deprovisioning rows (user DELETE, user deactivated, group
/// DELETE); JSON `true` reads as 1.
const DEPROVISION: &str = "json_extract(payload, '$.deprovision') = 1";

/// Evaluate the deletion guard before a claim: trip it if the deprovisioning changes accepted
/// within the window exceed the policy, and while it is tripped move every waiting
/// deprovisioning row to `held`. Rows up to `reset_after_id` were decided on by an operator
/// and are neither counted nor held again.
///
/// The waiting deprovisionings are read through `outbox_waiting_deprovisions`, named with
/// `INDEXED BY`: without statistics SQLite prefers `outbox_due`, which walks every waiting
/// row's JSON, so that each claim cost as much as the backlog was long.
fn apply_guard(conn: &Connection, policy: &GuardPolicy, now: &str) -> Result<(Option<GuardTrip>, usize), StoreError> {
    let (tripped_at, reset_after): (Option<String>, i64) = conn
        .prepare_cached("SELECT tripped_at, reset_after_id FROM deletion_guard WHERE id = 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let waiting: bool = conn
        .prepare_cached(&format!(
            "SELECT EXISTS (SELECT 1 FROM outbox INDEXED BY outbox_waiting_deprovisions
                            WHERE state IN ('pending', 'retry') AND id > ?1 AND {DEPROVISION})"
        ))?
        .query_row([reset_after], |r| r.get(0))?;
    if !waiting {
        return Ok((None, 0));
    }
    let mut trip = None;
    if tripped_at.is_none() {
        let count = conn
            .prepare_cached(&format!(
                "SELECT count(*) FROM outbox WHERE created_at >= ?1 AND id > ?2 AND {DEPROVISION}"
            ))?
            .query_row(params![policy.window_start, reset_after], |r| r.get::<_, i64>(0))? as u64;
        let provisioned = conn
            .prepare_cached("SELECT count(*) FROM id_map WHERE resource_kind = 'User'")?
            .query_row([], |r| r.get::<_, i64>(0))? as u64;
        if !guard_trips(policy, count, provisioned) {
            return Ok((None, 0));
        }
        conn.prepare_cached("UPDATE deletion_guard SET tripped_at = ?1, trip_count = ?2 WHERE id = 1")?
            .execute(params![now, count as i64])?;
        trip = Some(GuardTrip { count, provisioned });
    }
    let held = conn
        .prepare_cached(&format!(
            "UPDATE outbox INDEXED BY outbox_waiting_deprovisions SET state = 'held', next_attempt_at = NULL,
                    lease_until = NULL
             WHERE state IN ('pending', 'retry') AND id > ?1 AND {DEPROVISION}"
        ))?
        .execute([reset_after])?;
    Ok((trip, held))
}

/// The guard's state and how many rows it holds.
pub fn guard_status(conn: &Connection) -> Result<GuardStatus, StoreError> {
    let (tripped_at, trip_count): (Option<String>, Option<i64>) = conn
        .prepare_cached("SELECT tripped_at, trip_count FROM deletion_guard WHERE id = 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let held: i64 =
        conn.prepare_cached("SELECT count(*) FROM outbox WHERE state = 'held'")?.query_row([], |r| r.get(0))?;
    Ok(GuardStatus { tripped_at, trip_count: trip_count.map(|c| c as u64), held: held as u64 })
}

/// Reset the guard after an operator's decision: what was accepted so far no longer counts.
fn reset_guard(conn: &Connection) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE deletion_guard SET tripped_at = NULL, trip_count = NULL,
                reset_after_id = (SELECT coalesce(max(id), 0) FROM outbox) WHERE id = 1",
    )?
    .execute([])?;
    Ok(())
}

/// Operator: deliver the held rows (each resource's in commit order) and reset the guard.
pub fn release_held(conn: &Connection) -> Result<usize, StoreError> {
    let n = conn
        .prepare_cached("UPDATE outbox SET state = 'pending', next_attempt_at = NULL WHERE state = 'held'")?
        .execute([])?;
    reset_guard(conn)?;
    Ok(n)
}

/// Operator: drop the held rows for good and reset the guard; returns what was dropped.
pub fn discard_held(conn: &Connection) -> Result<Vec<OutboxRow>, StoreError> {
    let rows: Vec<OutboxRow> = conn
        .prepare_cached(&format!("SELECT {ROW_COLS} FROM outbox WHERE state = 'held' ORDER BY id"))?
        .query_map([], row)?
        .collect::<Result<_, _>>()?;
    conn.prepare_cached("DELETE FROM outbox WHERE state = 'held'")?.execute([])?;
    reset_guard(conn)?;
    Ok(rows)
}

/// Claim up to `limit` bundles whose head is due, leasing them until `lease_until`. A
/// lease that expired (a delivery that hung past its deadline) is due again. With a guard
/// policy, the deletion guard is evaluated first (see [`apply_guard`]).
pub fn claim(
    conn: &Connection,
    limit: usize,
    max_rows_per_bundle: usize,
    now: &str,
    lease_until: &str,
    guard: Option<&GuardPolicy>,
) -> Result<Claimed, StoreError> {
    let (tripped, held) = match guard {
        Some(policy) => apply_guard(conn, policy, now)?,
        None => (None, 0),
    };
    let delayed_after = guard.and_then(|g| g.delayed_after.as_deref());
    // Each state's due rows in commit order (`outbox_due` is (state, id)), merged: SQLite
    // walks the three in id order and stops at the limit. One scan with `state IN (...) OR
    // ...` collected every due row of the backlog and sorted them before the limit applied,
    // so each claim cost as much as the backlog was long. A row is a head when no older row
    // of its resource is undelivered (`!= 'done'`: pending, retry, in flight, dead or held).
    let heads: Vec<(i64, String)> = {
        let arm = |state_due: &str| {
            format!(
                "SELECT o.id, o.resource_id FROM outbox o
                 WHERE {state_due}
                   AND (?3 IS NULL OR o.created_at <= ?3 OR NOT coalesce({}, 0))
                   AND NOT EXISTS (SELECT 1 FROM outbox p
                                   WHERE p.resource_id = o.resource_id AND p.state != 'done' AND p.id < o.id)",
                DEPROVISION.replace("payload", "o.payload")
            )
        };
        let mut st = conn.prepare_cached(&format!(
            "{} UNION ALL {} UNION ALL {} ORDER BY 1 LIMIT ?2",
            arm("o.state = 'pending' AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= ?1)"),
            arm("o.state = 'retry' AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= ?1)"),
            arm("o.state = 'in_flight' AND o.lease_until <= ?1"),
        ))?;
        let rows = st.query_map(params![now, limit as i64, delayed_after], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut bundles = Vec::with_capacity(heads.len());
    for (head_id, resource_id) in heads {
        let mut st = conn.prepare_cached(&format!(
            "SELECT {ROW_COLS} FROM outbox
             WHERE resource_id = ?1 AND state != 'done' AND (id = ?2 OR (id > ?2 AND state = 'pending'))
             ORDER BY id LIMIT ?3"
        ))?;
        let mut rows: Vec<OutboxRow> = st
            .query_map(params![resource_id, head_id, max_rows_per_bundle.max(1) as i64], row)?
            .collect::<Result<_, _>>()?;
        // A deprovisioning still in its delay is not coalesced into an earlier change: it
        // leaves on its own once counted (or is held by the guard).
        if let Some(after) = delayed_after
            && let Some(cut) = rows.iter().skip(1).position(|r| r.payload.deprovision && r.created_at.as_str() > after)
        {
            rows.truncate(cut + 1);
        }
        let mut mark = conn.prepare_cached("UPDATE outbox SET state = 'in_flight', lease_until = ?2 WHERE id = ?1")?;
        for r in &rows {
            mark.execute(params![r.id, lease_until])?;
        }
        if !rows.is_empty() {
            bundles.push(Bundle { rows });
        }
    }
    Ok(Claimed { bundles, tripped, held })
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
        Completion::Success { note, .. } => ("success", note.as_deref()),
        Completion::Skipped { reason } => ("success", Some(reason.as_str())),
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
        Completion::Skipped { .. } => {
            let mut st = conn.prepare_cached(
                "UPDATE outbox SET state = 'done', done_at = ?2, lease_until = NULL, last_error = NULL WHERE id = ?1",
            )?;
            for id in ids {
                st.execute(params![id, now])?;
            }
        }
        Completion::Success { id_map, applied, recreated, .. } => {
            if *recreated && kind == ResourceKind::User {
                requeue_memberships(conn, resource_id, now)?;
            }
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
            if let (Some((version, attrs)), Some(Some(_)) | None) = (applied, id_map) {
                conn.prepare_cached("UPDATE id_map SET applied = ?2, applied_version = ?3 WHERE resource_id = ?1")?
                    .execute(params![resource_id, Value::Object(attrs.clone()).to_string(), *version as i64])?;
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

/// A user the app had lost is back under a new app id: queue a member add of it for every
/// group it is in, so the app's groups point at the new account.
fn requeue_memberships(conn: &Connection, user_id: &str, now: &str) -> Result<(), StoreError> {
    let groups: Vec<(String, i64)> = conn
        .prepare_cached(
            "SELECT g.id, g.version FROM resources u
             JOIN group_members gm ON gm.member_seq = u.seq
             JOIN resources g ON g.seq = gm.group_seq
             WHERE u.id = ?1",
        )?
        .query_map([user_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let payload = OutboxPayload::members(vec![user_id.to_string()], Vec::new());
    for (group, version) in groups {
        super::resources::enqueue(conn, ResourceKind::Group, &group, ChangeOp::Update, version as u64, &payload, now)?;
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
            "SELECT EXISTS (SELECT 1 FROM outbox WHERE resource_id = ?1 AND state != 'done'
                                AND state IN ('pending', 'retry', 'in_flight', 'dead'))",
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use rusqlite::trace::{TraceEvent, TraceEventCodes};
    use serde_json::json;

    use super::*;
    use crate::model::{MemberDelta, MemberRef};
    use crate::store::sqlite::{resources, sync};
    use crate::store::{NewResource, Update};

    fn store() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let mut c = crate::store::sqlite::open::connect(&dir.path().join("t.db"), 5).unwrap();
        crate::store::sqlite::migrations::apply(&mut c).unwrap();
        (dir, c)
    }

    fn new(kind: ResourceKind, id: &str, attrs: serde_json::Value) -> NewResource {
        NewResource { kind, id: id.into(), attrs: attrs.as_object().unwrap().clone(), members: vec![] }
    }

    fn set(c: &Connection, id: &str, attrs: serde_json::Value) {
        let upd = Update {
            kind: ResourceKind::User,
            id: id.into(),
            expected_version: None,
            attrs: Some(attrs.as_object().unwrap().clone()),
            members: MemberDelta::default(),
        };
        resources::update(c, upd, &crate::model::now()).unwrap();
    }

    fn members(c: &Connection, group: &str, add: &[&str], remove: &[&str]) {
        let upd = Update {
            kind: ResourceKind::Group,
            id: group.into(),
            expected_version: None,
            attrs: None,
            members: MemberDelta {
                replace: None,
                add: add.iter().map(|m| MemberRef { id: m.to_string(), kind: None, display: None }).collect(),
                remove: remove.iter().map(|m| m.to_string()).collect(),
            },
        };
        resources::update(c, upd, &crate::model::now()).unwrap();
    }

    /// (op, version, payload, state) of a resource's rows, oldest first.
    fn rows(c: &Connection, id: &str) -> Vec<(String, u64, OutboxPayload, String)> {
        c.prepare("SELECT op, version, payload, state FROM outbox WHERE resource_id = ?1 ORDER BY id")
            .unwrap()
            .query_map([id], |r| {
                let p: String = r.get(2)?;
                Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, OutboxPayload::from_json(&p).unwrap(), r.get(3)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn lease() -> String {
        crate::model::time_after(std::time::Duration::from_secs(60))
    }

    /// A held queue holds about a row per resource: a plain update is folded into the
    /// resource's newest row while nobody has tried to deliver it, and only then.
    #[test]
    fn an_update_is_coalesced_into_a_row_never_attempted() {
        let (_dir, c) = store();
        let now = crate::model::now();
        resources::create(&c, new(ResourceKind::User, "u1", json!({"userName": "a"})), &now).unwrap();
        set(&c, "u1", json!({"userName": "a", "title": "t1"}));
        set(&c, "u1", json!({"userName": "a", "title": "t2"}));
        set(&c, "u1", json!({"userName": "a", "title": "t3"}));
        let r = rows(&c, "u1");
        // The create keeps its own row; the three updates are one row at the last version.
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!((r[0].0.as_str(), r[0].1), ("create", 1));
        assert_eq!((r[1].0.as_str(), r[1].1, r[1].2.attributes_changed), ("update", 4, true));

        // A deactivation is a deprovisioning: its own row, and nothing is folded into it.
        set(&c, "u1", json!({"userName": "a", "title": "t3", "active": false}));
        set(&c, "u1", json!({"userName": "a", "title": "t4", "active": false}));
        let r = rows(&c, "u1");
        assert_eq!(r.len(), 4, "{r:?}");
        assert!(r[2].2.deprovision && !r[3].2.deprovision, "{r:?}");

        // Claimed (in flight): a change gets a new row; after a failed delivery the rows
        // behind the head are pending again and never attempted as a head: a change is
        // folded into the newest of them, while the head keeps its attempt.
        let claimed = claim(&c, 10, 10, &now, &lease(), None).unwrap();
        assert_eq!(claimed.bundles[0].rows.len(), 4);
        set(&c, "u1", json!({"userName": "a", "title": "t5", "active": false}));
        assert_eq!(rows(&c, "u1").len(), 5);
        let ids: Vec<i64> = claimed.bundles[0].rows.iter().map(|r| r.id).collect();
        let retry = Completion::Retry { next_attempt_at: now.clone(), error: "HTTP 503".into() };
        complete(&c, ResourceKind::User, "u1", &ids, &now, &retry, &now).unwrap();
        set(&c, "u1", json!({"userName": "a", "title": "t6", "active": false}));
        let r = rows(&c, "u1");
        assert_eq!(r.len(), 5, "{r:?}");
        assert_eq!((r[4].1, r[4].3.as_str()), (8, "pending"));
        assert_eq!(r[0].3, "retry");
        // The next claim takes them all, in order, the head first.
        let claimed = claim(&c, 10, 10, &now, &lease(), None).unwrap();
        let got: Vec<i64> = claimed.bundles[0].rows.iter().map(|r| r.id).collect();
        assert_eq!(got, ids.iter().copied().chain([ids[3] + 1]).collect::<Vec<_>>());
    }

    /// Member changes fold as the worker folds a bundle (the later change wins for a member
    /// both name); a resync or a repair keeps its own row.
    #[test]
    fn member_changes_coalesce_and_repairs_keep_their_rows() {
        let (_dir, c) = store();
        let now = crate::model::now();
        for u in ["m1", "m2"] {
            resources::create(&c, new(ResourceKind::User, u, json!({"userName": u})), &now).unwrap();
        }
        resources::create(&c, new(ResourceKind::Group, "g", json!({"displayName": "G"})), &now).unwrap();
        members(&c, "g", &["m1"], &[]);
        members(&c, "g", &["m2"], &[]);
        members(&c, "g", &[], &["m1"]);
        let r = rows(&c, "g");
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[1].2.members_added, vec!["m2".to_string()]);
        assert_eq!(r[1].2.members_removed, vec!["m1".to_string()]);
        assert_eq!(r[1].1, 4);

        resources::resync(&c, ResourceKind::Group, "g", &now).unwrap();
        members(&c, "g", &["m1"], &[]);
        let r = rows(&c, "g");
        assert_eq!(r.len(), 4, "a resync and the change after it keep their rows: {r:?}");
        assert!(r[2].2.resync && !r[3].2.resync);
    }

    static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

    fn record(e: TraceEvent<'_>) {
        if let TraceEvent::Stmt(st, _) = e {
            SEEN.lock().unwrap().push(st.sql().to_string());
        }
    }

    /// Delivered rows are kept and are not in `outbox_open_by_resource`; every statement
    /// that looks up a resource's outbox rows must still find them through it, or a write
    /// would walk the resource's whole history. Neither may the deletion guard's check nor
    /// the claim's search for heads walk the whole backlog. Run the writes and the worker's
    /// steps with a statement trace, then ask SQLite how it plans each statement seen.
    #[test]
    fn a_resource_s_rows_are_found_through_the_open_rows_index() {
        let (_dir, c) = store();
        c.trace_v2(TraceEventCodes::SQLITE_TRACE_STMT, Some(record));
        let now = crate::model::now();
        resources::create(&c, new(ResourceKind::User, "u1", json!({"userName": "a"})), &now).unwrap();
        set(&c, "u1", json!({"userName": "a", "title": "t1"}));
        resources::create(&c, new(ResourceKind::Group, "g", json!({"displayName": "G"})), &now).unwrap();
        members(&c, "g", &["u1"], &[]);
        let claimed = claim(&c, 10, 10, &now, &lease(), None).unwrap();
        assert!(has_undelivered(&c, "u1").unwrap());
        for b in &claimed.bundles {
            let ids: Vec<i64> = b.rows.iter().map(|r| r.id).collect();
            let done =
                Completion::Success { id_map: Some(Some("x".into())), applied: None, note: None, recreated: false };
            complete(&c, b.head().kind, &b.head().resource_id, &ids, &now, &done, &now).unwrap();
        }
        set(&c, "u1", json!({"userName": "a", "title": "t2"}));
        // The deletion guard's questions before a claim, tripping it so it holds a row.
        set(&c, "u1", json!({"userName": "a", "title": "t2", "active": false}));
        let guard = GuardPolicy {
            threshold_count: 0,
            threshold_share: 1.0,
            share_min_count: u64::MAX,
            window_start: "2000-01-01T00:00:00.000Z".into(),
            delayed_after: None,
        };
        assert_eq!(claim(&c, 10, 10, &now, &lease(), Some(&guard)).unwrap().held, 1);
        let run = sync::run_start(&c, "manual", &now).unwrap();
        let op = crate::store::RepairOp::Resync {
            kind: ResourceKind::User,
            id: "u1".into(),
            forget_app_id: false,
            deprovision: false,
        };
        sync::repair(&c, &[op], run, &now).unwrap();
        c.trace_v2(TraceEventCodes::empty(), None);

        let seen: Vec<String> = std::mem::take(&mut *SEEN.lock().unwrap());
        let lookups: Vec<&String> = seen
            .iter()
            .filter(|s| (s.contains("FROM outbox") || s.contains("UPDATE outbox")) && s.contains("resource_id = "))
            .collect();
        assert!(lookups.len() >= 5, "the trace saw the lookups: {seen:#?}");
        let guard_reads: Vec<&String> = seen
            .iter()
            .filter(|s| s.contains("WHERE state IN ('pending', 'retry') AND id > ?1 AND json_extract"))
            .collect();
        assert_eq!(guard_reads.len(), 2, "the guard's question and its hold: {seen:#?}");
        let plan_of = |sql: &str| {
            let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            // Planned with its parameters unbound (NULL), as QPSG plans every statement.
            let mut raw = st.raw_query();
            let mut plan = Vec::new();
            while let Some(r) = raw.next().unwrap() {
                plan.push(r.get::<_, String>(3).unwrap());
            }
            plan
        };
        let uses = |sql: &str, index: &str| {
            let plan = plan_of(sql);
            assert!(plan.iter().any(|l| l.contains(index)), "{sql}\n{plan:#?}");
        };
        // The claim's heads: read in commit order up to the limit, never collected and sorted.
        let heads: Vec<&String> = seen.iter().filter(|s| s.contains("UNION ALL")).collect();
        assert!(!heads.is_empty(), "{seen:#?}");
        for sql in heads {
            let plan = plan_of(sql);
            assert!(plan.iter().all(|l| !l.contains("TEMP B-TREE")), "{sql}\n{plan:#?}");
            assert_eq!(plan.iter().filter(|l| l.contains("outbox_open_by_resource")).count(), 3, "{plan:#?}");
        }
        for sql in guard_reads {
            uses(sql, "outbox_waiting_deprovisions");
        }
        for sql in lookups {
            uses(sql, "outbox_open_by_resource");
        }
    }
}
