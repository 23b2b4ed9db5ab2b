//! The outbox state machine on PostgreSQL: the statements of the SQLite backend's
//! `outbox` module in PostgreSQL's dialect, with the same states, bundles, deletion guard and
//! completions (that module's header says why each exists). Each function runs inside the
//! caller's transaction.
//!
//! What differs, and why: several transactions may run at once here (there is no single
//! writer), so a claim locks the head rows it takes (`FOR UPDATE SKIP LOCKED`: a second
//! claimer skips them instead of delivering them twice) and the guard's evaluation locks the
//! guard's row, so two claims cannot both trip it or both miss a trip.

use deadpool_postgres::GenericClient;
use serde_json::Value;
use tokio_postgres::Row;

use super::locks;
use crate::model::{ChangeOp, OutboxPayload, ResourceKind};
use crate::store::types::{
    Attempt, Bundle, Claimed, Completion, DeliveryAttempt, GuardPolicy, GuardStatus, GuardTrip, HeldChange, OutboxRow,
    OutboxState, StoreError, guard_trips,
};

const ROW_COLS: &str = "id, resource_kind, resource_id, op, version, payload::text, state, attempts, next_attempt_at, \
                        last_error, created_at, done_at, coalesced_into";

/// The marker the store puts on deprovisioning rows (user DELETE, user deactivated, group
/// DELETE): JSON `true` under `deprovision`.
const DEPROVISION: &str = "payload @> '{\"deprovision\": true}'::jsonb";

fn row(r: &Row) -> OutboxRow {
    let kind: String = r.get(1);
    let op: String = r.get(3);
    let payload: String = r.get(5);
    let state: String = r.get(6);
    let id: i64 = r.get(0);
    OutboxRow {
        id,
        kind: ResourceKind::parse(&kind).unwrap_or(ResourceKind::User),
        resource_id: r.get(2),
        op: match op.as_str() {
            "create" => ChangeOp::Create,
            "delete" => ChangeOp::Delete,
            _ => ChangeOp::Update,
        },
        version: r.get::<_, i64>(4) as u64,
        payload: OutboxPayload::from_json(&payload).unwrap_or_else(|e| {
            tracing::warn!(outbox_id = id, error = %e, "undecodable outbox payload read as empty");
            OutboxPayload::default()
        }),
        state: OutboxState::parse(&state),
        attempts: r.get::<_, i64>(7) as u32,
        next_attempt_at: r.get(8),
        last_error: r.get(9),
        created_at: r.get(10),
        done_at: r.get(11),
        coalesced_into: r.get(12),
    }
}

/// Queue one change (in the caller's transaction, after the change itself). A
/// deprovisioning first shares the deletion guard's lock, so that no claim can let it
/// through between counting the deprovisionings and picking the rows (see [`claim`]).
pub async fn enqueue(
    c: &impl GenericClient,
    kind: ResourceKind,
    id: &str,
    op: ChangeOp,
    version: u64,
    payload: &OutboxPayload,
    now: &str,
) -> Result<i64, StoreError> {
    if payload.deprovision {
        locks::shared(c, locks::Purpose::DeletionGuard).await?;
    }
    let row = c
        .query_one(
            "INSERT INTO outbox (resource_kind, resource_id, op, version, payload, created_at)
             VALUES ($1, $2, $3, $4, $5::text::jsonb, $6) RETURNING id",
            &[&kind.as_str(), &id, &op.as_str(), &(version as i64), &payload.to_json(), &now],
        )
        .await?;
    Ok(row.get(0))
}

/// Queue an update, coalesced into the resource's newest row when that row is an update
/// nobody has tried to deliver yet and both changes are plain: the SQLite backend's
/// `enqueue_update` (its doc comment says why). The caller holds the resource's row lock, so
/// no other write changes the newest row under it; a claim can (it sets the row in flight
/// without that lock), so the UPDATE repeats the row's conditions, and when a claim took the
/// row in the meantime (READ COMMITTED re-checks them on the row's newest version after
/// waiting for the claim) the change gets a row of its own. Without that second check the
/// merged change was written into a row already on its way to the app, and lost.
pub async fn enqueue_update(
    c: &impl GenericClient,
    kind: ResourceKind,
    id: &str,
    version: u64,
    payload: &OutboxPayload,
    now: &str,
) -> Result<(), StoreError> {
    if payload.is_plain_change() {
        let newest = c
            .query_opt(
                "SELECT id, payload::text FROM outbox
                 WHERE resource_id = $1 AND state <> 'done' AND id = (
                     SELECT max(id) FROM outbox WHERE resource_id = $1 AND state <> 'done')
                   AND op = 'update' AND state = 'pending' AND attempts = 0",
                &[&id],
            )
            .await?;
        let merged = newest.and_then(|r| {
            let older = OutboxPayload::from_json(&r.get::<_, String>(1)).ok()?;
            Some((r.get::<_, i64>(0), older.coalesce(payload)?))
        });
        if let Some((row, merged)) = merged {
            let coalesced = c
                .execute(
                    "UPDATE outbox SET version = $2, payload = $3::text::jsonb
                     WHERE id = $1 AND state = 'pending' AND attempts = 0",
                    &[&row, &(version as i64), &merged.to_json()],
                )
                .await?;
            if coalesced == 1 {
                return Ok(());
            }
        }
    }
    enqueue(c, kind, id, ChangeOp::Update, version, payload, now).await.map(|_| ())
}

/// At start, nothing of ours can be in flight: rows left so by a crash are due again at once.
pub async fn recover_leases(c: &impl GenericClient, now: &str) -> Result<usize, StoreError> {
    Ok(c.execute("UPDATE outbox SET state = 'retry', next_attempt_at = $1 WHERE state = 'in_flight'", &[&now]).await?
        as usize)
}

/// Evaluate the deletion guard before a claim (see the SQLite backend's `apply_guard`).
async fn apply_guard(
    c: &impl GenericClient,
    policy: &GuardPolicy,
    now: &str,
) -> Result<(Option<GuardTrip>, usize), StoreError> {
    let g = c.query_one("SELECT tripped_at, reset_after_id FROM deletion_guard WHERE id = 1 FOR UPDATE", &[]).await?;
    let (tripped_at, reset_after): (Option<String>, i64) = (g.get(0), g.get(1));
    let waiting: bool = c
        .query_one(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM outbox WHERE state IN ('pending', 'retry') AND id > $1 AND {DEPROVISION})"
            ),
            &[&reset_after],
        )
        .await?
        .get(0);
    if !waiting {
        return Ok((None, 0));
    }
    let mut trip = None;
    if tripped_at.is_none() {
        let count: i64 = c
            .query_one(
                &format!("SELECT count(*) FROM outbox WHERE created_at >= $1 AND id > $2 AND {DEPROVISION}"),
                &[&policy.window_start, &reset_after],
            )
            .await?
            .get(0);
        let provisioned: i64 =
            c.query_one("SELECT count(*) FROM id_map WHERE resource_kind = 'User'", &[]).await?.get(0);
        if !guard_trips(policy, count as u64, provisioned as u64) {
            return Ok((None, 0));
        }
        c.execute("UPDATE deletion_guard SET tripped_at = $1, trip_count = $2 WHERE id = 1", &[&now, &count]).await?;
        trip = Some(GuardTrip { count: count as u64, provisioned: provisioned as u64 });
    }
    let held = c
        .execute(
            &format!(
                "UPDATE outbox SET state = 'held', next_attempt_at = NULL, lease_until = NULL
                 WHERE state IN ('pending', 'retry') AND id > $1 AND {DEPROVISION}"
            ),
            &[&reset_after],
        )
        .await?;
    Ok((trip, held as usize))
}

/// The guard's state and how many rows it holds.
pub async fn guard_status(c: &impl GenericClient) -> Result<GuardStatus, StoreError> {
    let g = c.query_one("SELECT tripped_at, trip_count FROM deletion_guard WHERE id = 1", &[]).await?;
    let held: i64 = c.query_one("SELECT count(*) FROM outbox WHERE state = 'held'", &[]).await?.get(0);
    Ok(GuardStatus {
        tripped_at: g.get(0),
        trip_count: g.get::<_, Option<i64>>(1).map(|c| c as u64),
        held: held as u64,
    })
}

/// Reset the guard after an operator's decision: what was accepted so far no longer counts.
async fn reset_guard(c: &impl GenericClient) -> Result<(), StoreError> {
    c.execute(
        "UPDATE deletion_guard SET tripped_at = NULL, trip_count = NULL,
                reset_after_id = (SELECT coalesce(max(id), 0) FROM outbox) WHERE id = 1",
        &[],
    )
    .await?;
    Ok(())
}

/// Operator: deliver the held rows (each resource's in commit order) and reset the guard.
pub async fn release_held(c: &impl GenericClient) -> Result<usize, StoreError> {
    let n = c.execute("UPDATE outbox SET state = 'pending', next_attempt_at = NULL WHERE state = 'held'", &[]).await?;
    reset_guard(c).await?;
    Ok(n as usize)
}

/// Operator: drop the held rows for good and reset the guard; returns what was dropped.
pub async fn discard_held(c: &impl GenericClient) -> Result<Vec<OutboxRow>, StoreError> {
    let rows = c
        .query(&format!("DELETE FROM outbox WHERE state = 'held' RETURNING {ROW_COLS}"), &[])
        .await?
        .iter()
        .map(row)
        .collect::<Vec<_>>();
    reset_guard(c).await?;
    let mut rows = rows;
    rows.sort_by_key(|r| r.id);
    Ok(rows)
}

/// Claim up to `limit` bundles whose head is due, leasing them until `lease_until` (see the
/// SQLite backend's `claim`).
///
/// With a guard policy the claim first takes the deletion guard's lock alone: it waits for
/// every transaction queueing a deprovisioning to end, and holds new ones off until it
/// commits. Without it, a deprovisioning committed between the guard's count (one
/// statement) and the pick of due rows (a later statement, which under READ COMMITTED sees
/// it) went out uncounted: the guard let threshold + 1 through. The SQLite backend needs no
/// lock: its single writer runs the claim between two writes.
pub async fn claim(
    c: &impl GenericClient,
    limit: usize,
    max_rows_per_bundle: usize,
    now: &str,
    lease_until: &str,
    guard: Option<&GuardPolicy>,
) -> Result<Claimed, StoreError> {
    let (tripped, held) = match guard {
        Some(policy) => {
            locks::exclusive(c, locks::Purpose::DeletionGuard).await?;
            apply_guard(c, policy, now).await?
        }
        None => (None, 0),
    };
    let delayed_after = guard.and_then(|g| g.delayed_after.clone());
    let heads = c
        .query(
            &format!(
                "SELECT o.id, o.resource_id FROM outbox o
                 WHERE ((o.state IN ('pending', 'retry') AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= $1))
                        OR (o.state = 'in_flight' AND o.lease_until <= $1))
                   AND ($3::text IS NULL OR o.created_at <= $3 OR NOT {})
                   AND NOT EXISTS (SELECT 1 FROM outbox p
                                   WHERE p.resource_id = o.resource_id AND p.state <> 'done' AND p.id < o.id)
                 ORDER BY o.id LIMIT $2
                 FOR UPDATE OF o SKIP LOCKED",
                DEPROVISION.replace("payload", "o.payload")
            ),
            &[&now, &(limit as i64), &delayed_after],
        )
        .await?;
    let mut bundles = Vec::with_capacity(heads.len());
    for h in heads {
        let (head_id, resource_id): (i64, String) = (h.get(0), h.get(1));
        // The bundle's rows, locked and read as they are now: a write coalescing a change
        // into one of them holds its lock until it commits, and a row read without the lock
        // could go out without the change merged into it meanwhile. A row a write holds is
        // skipped, not waited for (no lock-order cycle with writes), and the bundle ends
        // before it: the rest leave with a later claim, in order.
        let wanted: Vec<i64> = c
            .query(
                "SELECT id FROM outbox
                 WHERE resource_id = $1 AND state <> 'done' AND (id = $2 OR (id > $2 AND state = 'pending'))
                 ORDER BY id LIMIT $3",
                &[&resource_id, &head_id, &(max_rows_per_bundle.max(1) as i64)],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let locked: std::collections::HashMap<i64, OutboxRow> = c
            .query(
                &format!(
                    "SELECT {ROW_COLS} FROM outbox
                     WHERE id = ANY($1) AND state <> 'done' AND (id = $2 OR state = 'pending')
                     FOR UPDATE SKIP LOCKED"
                ),
                &[&wanted, &head_id],
            )
            .await?
            .iter()
            .map(|r| {
                let r = row(r);
                (r.id, r)
            })
            .collect();
        let mut locked = locked;
        let mut rows: Vec<OutboxRow> = wanted.iter().map_while(|id| locked.remove(id)).collect();
        // A deprovisioning still in its delay is not coalesced into an earlier change: it
        // leaves on its own once counted (or is held by the guard).
        if let Some(after) = delayed_after.as_deref()
            && let Some(cut) = rows.iter().skip(1).position(|r| r.payload.deprovision && r.created_at.as_str() > after)
        {
            rows.truncate(cut + 1);
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        c.execute("UPDATE outbox SET state = 'in_flight', lease_until = $2 WHERE id = ANY($1)", &[&ids, &lease_until])
            .await?;
        if !rows.is_empty() {
            bundles.push(Bundle { rows });
        }
    }
    Ok(Claimed { bundles, tripped, held })
}

/// Record the end of a delivery of the bundle made of `ids` (head first).
pub async fn complete(
    c: &impl GenericClient,
    kind: ResourceKind,
    resource_id: &str,
    ids: &[i64],
    started_at: &str,
    completion: &Completion,
    now: &str,
) -> Result<(), StoreError> {
    let Some(&head) = ids.first() else { return Ok(()) };
    let rest: Vec<i64> = ids[1..].to_vec();
    let (outcome, detail) = match completion {
        Completion::Success { note, .. } => ("success", note.as_deref()),
        Completion::Skipped { reason } => ("success", Some(reason.as_str())),
        Completion::Retry { error, .. } => ("retry", Some(error.as_str())),
        Completion::Dead { error } => ("permanent", Some(error.as_str())),
        Completion::Waiting { reason, .. } => ("waiting", Some(reason.as_str())),
    };
    c.execute(
        "INSERT INTO outbox_attempts (outbox_id, started_at, finished_at, outcome, detail) VALUES ($1, $2, $3, $4, $5)",
        &[&head, &started_at, &now, &outcome, &detail],
    )
    .await?;
    // Rows behind the head go back to pending unless the bundle was delivered.
    let release_rest =
        "UPDATE outbox SET state = 'pending', lease_until = NULL WHERE id = ANY($1) AND state = 'in_flight'";
    match completion {
        Completion::Skipped { .. } => {
            c.execute(
                "UPDATE outbox SET state = 'done', done_at = $2, lease_until = NULL, last_error = NULL WHERE id = ANY($1)",
                &[&ids, &now],
            )
            .await?;
        }
        Completion::Success { id_map, applied, recreated, .. } => {
            if *recreated && kind == ResourceKind::User {
                requeue_memberships(c, resource_id, now).await?;
            }
            c.execute(
                "UPDATE outbox SET state = 'done', done_at = $2, lease_until = NULL, attempts = attempts + 1,
                        last_error = NULL WHERE id = $1",
                &[&head, &now],
            )
            .await?;
            c.execute(
                "UPDATE outbox SET state = 'done', done_at = $2, lease_until = NULL, coalesced_into = $3
                 WHERE id = ANY($1)",
                &[&rest, &now, &head],
            )
            .await?;
            match id_map {
                Some(Some(app_id)) => {
                    c.execute(
                        "INSERT INTO id_map (resource_id, resource_kind, app_id, updated_at) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (resource_id) DO UPDATE SET app_id = excluded.app_id, updated_at = excluded.updated_at",
                        &[&resource_id, &kind.as_str(), app_id, &now],
                    )
                    .await?;
                }
                Some(None) => {
                    c.execute("DELETE FROM id_map WHERE resource_id = $1", &[&resource_id]).await?;
                }
                None => {}
            }
            if let (Some((version, attrs)), Some(Some(_)) | None) = (applied, id_map) {
                c.execute(
                    "UPDATE id_map SET applied = $2, applied_version = $3 WHERE resource_id = $1",
                    &[&resource_id, &Value::Object(attrs.clone()).to_string(), &(*version as i64)],
                )
                .await?;
            }
        }
        Completion::Retry { next_attempt_at, error } => {
            c.execute(
                "UPDATE outbox SET state = 'retry', next_attempt_at = $2, lease_until = NULL, attempts = attempts + 1,
                        last_error = $3 WHERE id = $1",
                &[&head, next_attempt_at, error],
            )
            .await?;
            c.execute(release_rest, &[&rest]).await?;
        }
        Completion::Waiting { next_attempt_at, reason } => {
            c.execute(
                "UPDATE outbox SET state = 'retry', next_attempt_at = $2, lease_until = NULL, last_error = $3 WHERE id = $1",
                &[&head, next_attempt_at, reason],
            )
            .await?;
            c.execute(release_rest, &[&rest]).await?;
        }
        Completion::Dead { error } => {
            c.execute(
                "UPDATE outbox SET state = 'dead', lease_until = NULL, attempts = attempts + 1, last_error = $2,
                        done_at = $3 WHERE id = $1",
                &[&head, error, &now],
            )
            .await?;
            c.execute(release_rest, &[&rest]).await?;
        }
    }
    Ok(())
}

/// A user the app had lost is back under a new app id: queue a member add of it for every
/// group it is in, so the app's groups point at the new account.
async fn requeue_memberships(c: &impl GenericClient, user_id: &str, now: &str) -> Result<(), StoreError> {
    let groups = c
        .query(
            "SELECT g.id, g.version FROM resources u
             JOIN group_members gm ON gm.member_seq = u.seq
             JOIN resources g ON g.seq = gm.group_seq
             WHERE u.id = $1",
            &[&user_id],
        )
        .await?;
    let payload = OutboxPayload::members(vec![user_id.to_string()], Vec::new());
    for g in groups {
        let (group, version): (String, i64) = (g.get(0), g.get(1));
        enqueue(c, ResourceKind::Group, &group, ChangeOp::Update, version as u64, &payload, now).await?;
    }
    Ok(())
}

/// Put dead rows back in the queue: one (`Some(id)`) or all.
pub async fn retry_dead(c: &impl GenericClient, id: Option<i64>, now: &str) -> Result<usize, StoreError> {
    Ok(c.execute(
        "UPDATE outbox SET state = 'retry', next_attempt_at = $2, done_at = NULL, attempts = 0
         WHERE state = 'dead' AND ($1::bigint IS NULL OR id = $1)",
        &[&id, &now],
    )
    .await? as usize)
}

/// Remove a row an operator decided will never be delivered (not in flight).
pub async fn drop_row(c: &impl GenericClient, id: i64) -> Result<usize, StoreError> {
    Ok(c.execute("DELETE FROM outbox WHERE id = $1 AND state != 'in_flight'", &[&id]).await? as usize)
}

pub async fn list(
    c: &impl GenericClient,
    state: Option<OutboxState>,
    limit: usize,
) -> Result<Vec<OutboxRow>, StoreError> {
    let rows = c
        .query(
            &format!(
                "SELECT {ROW_COLS} FROM outbox
                 WHERE ($1::text IS NULL OR state = $1) AND ($1::text IS NOT NULL OR state != 'done')
                 ORDER BY id LIMIT $2"
            ),
            &[&state.map(OutboxState::as_str), &(limit as i64)],
        )
        .await?;
    Ok(rows.iter().map(row).collect())
}

pub async fn get(c: &impl GenericClient, id: i64) -> Result<Option<(OutboxRow, Vec<Attempt>)>, StoreError> {
    let Some(r) = c.query_opt(&format!("SELECT {ROW_COLS} FROM outbox WHERE id = $1"), &[&id]).await? else {
        return Ok(None);
    };
    let attempts = c
        .query(
            "SELECT started_at, finished_at, outcome, detail FROM outbox_attempts WHERE outbox_id = $1 ORDER BY id",
            &[&id],
        )
        .await?
        .iter()
        .map(|a| Attempt { started_at: a.get(0), finished_at: a.get(1), outcome: a.get(2), detail: a.get(3) })
        .collect();
    Ok(Some((row(&r), attempts)))
}

pub async fn app_id(c: &impl GenericClient, resource_id: &str) -> Result<Option<String>, StoreError> {
    Ok(c.query_opt("SELECT app_id FROM id_map WHERE resource_id = $1", &[&resource_id]).await?.map(|r| r.get(0)))
}

/// Whether the resource still has changes waiting (so a group naming it should wait).
pub async fn has_undelivered(c: &impl GenericClient, resource_id: &str) -> Result<bool, StoreError> {
    Ok(c.query_one(
        "SELECT EXISTS (SELECT 1 FROM outbox WHERE resource_id = $1 AND state <> 'done'
                            AND state IN ('pending', 'retry', 'in_flight', 'dead'))",
        &[&resource_id],
    )
    .await?
    .get(0))
}

/// (depth of undelivered rows, created_at of the oldest), for status and metrics.
pub async fn depth(c: &impl GenericClient) -> Result<(u64, Option<String>), StoreError> {
    let r = c
        .query_one("SELECT count(*), min(created_at) FROM outbox WHERE state IN ('pending', 'retry', 'in_flight')", &[])
        .await?;
    Ok((r.get::<_, i64>(0) as u64, r.get(1)))
}

/// Number of rows in each state.
pub async fn counts(c: &impl GenericClient) -> Result<Vec<(String, u64)>, StoreError> {
    let rows = c.query("SELECT state, count(*) FROM outbox GROUP BY state ORDER BY state", &[]).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get::<_, i64>(1) as u64)).collect())
}

/// The rows of one resource, oldest first: (op, version, payload JSON).
pub async fn rows_of(c: &impl GenericClient, resource_id: &str) -> Result<Vec<(String, u64, String)>, StoreError> {
    let rows = c
        .query("SELECT op, version, payload::text FROM outbox WHERE resource_id = $1 ORDER BY id", &[&resource_id])
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get::<_, i64>(1) as u64, r.get(2))).collect())
}

/// The name of outbox row `o`'s resource: from the resource itself, or (once deleted) from
/// the audit record of its deletion (see the SQLite backend's `status`).
const NAME_OF: &str = "coalesce(
    (SELECT coalesce(r.data ->> 'userName', r.data ->> 'displayName') FROM resources r WHERE r.id = o.resource_id),
    (SELECT a.resource_name FROM audit_log a
      WHERE a.resource_id = o.resource_id AND a.method = 'DELETE' AND a.resource_name IS NOT NULL
      ORDER BY a.id DESC LIMIT 1))";

/// The latest `limit` attempts (all, or only those that did not succeed), newest first.
pub async fn recent_attempts(
    c: &impl GenericClient,
    limit: usize,
    failures_only: bool,
) -> Result<Vec<DeliveryAttempt>, StoreError> {
    let rows = c
        .query(
            &format!(
                "SELECT o.id, o.resource_kind, o.resource_id, {NAME_OF}, o.op, t.started_at, t.finished_at, t.outcome,
                        t.detail
                 FROM outbox_attempts t JOIN outbox o ON o.id = t.outbox_id
                 WHERE NOT $2 OR t.outcome IN ('retry', 'permanent')
                 ORDER BY t.id DESC LIMIT $1"
            ),
            &[&(limit as i64), &failures_only],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| DeliveryAttempt {
            outbox_id: r.get(0),
            kind: r.get(1),
            resource_id: r.get(2),
            name: r.get(3),
            op: r.get(4),
            started_at: r.get(5),
            finished_at: r.get(6),
            outcome: r.get(7),
            detail: r.get(8),
        })
        .collect())
}

/// The first `limit` held changes, in commit order.
pub async fn held(c: &impl GenericClient, limit: usize) -> Result<Vec<HeldChange>, StoreError> {
    let rows = c
        .query(
            &format!(
                "SELECT o.id, o.resource_kind, o.resource_id, {NAME_OF}, o.op, o.created_at
                 FROM outbox o WHERE o.state = 'held' ORDER BY o.id LIMIT $1"
            ),
            &[&(limit as i64)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| HeldChange {
            outbox_id: r.get(0),
            kind: r.get(1),
            resource_id: r.get(2),
            name: r.get(3),
            op: r.get(4),
            created_at: r.get(5),
        })
        .collect())
}

/// Queue a full re-delivery of one resource (locking its row, so the new row is in commit
/// order with the resource's other changes); returns the new outbox id.
pub async fn resync(c: &impl GenericClient, kind: ResourceKind, id: &str, now: &str) -> Result<i64, StoreError> {
    let version: i64 = c
        .query_opt("SELECT version FROM resources WHERE id = $1 AND kind = $2 FOR UPDATE", &[&id, &kind.as_str()])
        .await?
        .ok_or_else(|| StoreError::NotFound { kind: kind.as_str(), id: id.to_string() })?
        .get(0);
    let payload = OutboxPayload { attributes_changed: true, resync: true, ..OutboxPayload::default() };
    enqueue(c, kind, id, ChangeOp::Update, version as u64, &payload, now).await
}

/// What an outbox row is about (before an operator drops it): `{outbox_id, type, id, op, state}`.
pub async fn brief(c: &impl GenericClient, outbox_id: i64) -> Result<Option<Value>, StoreError> {
    Ok(c.query_opt("SELECT resource_kind, resource_id, op, state FROM outbox WHERE id = $1", &[&outbox_id]).await?.map(
        |r| {
            serde_json::json!({
                "outbox_id": outbox_id,
                "type": r.get::<_, String>(0),
                "id": r.get::<_, String>(1),
                "op": r.get::<_, String>(2),
                "state": r.get::<_, String>(3),
            })
        },
    ))
}
