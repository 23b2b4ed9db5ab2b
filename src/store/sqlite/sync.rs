//! What reconciliation needs from the store: matching the app's listing to our resources,
//! what we last applied, stuck provisions, sync runs with their drift reports, and the
//! corrective outbox rows a repair queues.
//!
//! Owns: the SQL of those. Must not touch: the diff itself or the repair policy (both in
//! `reconcile`), HTTP.

use std::collections::{HashMap, HashSet};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::StoreError;
use crate::model::drift::{Cause, Change, DriftKind, Repair};
use crate::model::{ChangeOp, ResourceKind, fold_case};
use crate::store::types::{
    AppKey, DriftRow, Matched, MemberInfo, OpenRow, PageMatch, RepairLog, RepairOp, RepairResult, RunFinish, Stuck,
    SyncRun, admit, orphan_id, superseded_detail,
};

fn id_by_name(conn: &Connection, kind: ResourceKind, key: &AppKey) -> Result<Option<String>, StoreError> {
    let sql = match kind {
        ResourceKind::User => "SELECT id FROM resources WHERE kind = 'User' AND user_name_ci = ?1",
        ResourceKind::Group => {
            "SELECT id FROM resources WHERE kind = 'Group' AND display_name_ci = ?1 ORDER BY seq LIMIT 1"
        }
    };
    if let Some(id) = conn.prepare_cached(sql)?.query_row([fold_case(&key.name)], |r| r.get(0)).optional()? {
        return Ok(Some(id));
    }
    let Some(ext) = &key.external_id else { return Ok(None) };
    Ok(conn
        .prepare_cached("SELECT id FROM resources WHERE kind = ?1 AND external_id = ?2 ORDER BY seq LIMIT 1")?
        .query_row(params![kind.as_str(), ext], |r| r.get(0))
        .optional()?)
}

/// A list of strings as one JSON array parameter, for `IN (SELECT value FROM json_each(?))`:
/// one statement per page instead of one per row.
fn json_list<S: AsRef<str>>(items: &[S]) -> Result<String, StoreError> {
    let v: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    serde_json::to_string(&v).map_err(|e| StoreError::Internal(e.to_string()))
}

/// Match one page of the app's listing: by the app id in our id map, else by name, else by
/// `externalId`. An app account matched by name to a resource already mapped to another
/// app account is a duplicate, so it stays unmatched (and is reported as orphaned).
/// A page costs a handful of statements (ids by app id, resources, mappings, pending
/// changes, each for the whole page), plus one per account not in the id map.
pub fn match_page(conn: &Connection, kind: ResourceKind, keys: &[AppKey]) -> Result<Vec<PageMatch>, StoreError> {
    let app_ids: Vec<&str> = keys.iter().map(|k| k.app_id.as_str()).collect();
    let mut by_app: HashMap<String, String> = HashMap::with_capacity(keys.len());
    {
        let mut st = conn.prepare_cached(
            "SELECT im.app_id, im.resource_id FROM id_map im
             WHERE im.resource_kind = ?1 AND im.app_id IN (SELECT value FROM json_each(?2))",
        )?;
        let rows = st.query_map(params![kind.as_str(), json_list(&app_ids)?], |r| Ok((r.get(0)?, r.get(1)?)))?;
        for row in rows {
            let (app, id): (String, String) = row?;
            by_app.insert(app, id);
        }
    }
    let mut ids: Vec<Option<String>> = Vec::with_capacity(keys.len());
    for key in keys {
        ids.push(match by_app.get(&key.app_id).cloned() {
            Some(id) => Some(id),
            None => id_by_name(conn, kind, key)?,
        });
    }
    let wanted: Vec<&str> = ids.iter().flatten().map(String::as_str).collect();
    let mut loaded = load_many(conn, kind, &wanted)?;
    // The same resource matched twice (a duplicate by name) is handed out twice.
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for id in &wanted {
        *uses.entry(id).or_default() += 1;
    }
    let mut out = Vec::with_capacity(keys.len());
    for (key, id) in keys.iter().zip(&ids) {
        let Some(id) = id else {
            out.push(PageMatch::Unknown);
            continue;
        };
        let n = uses.get_mut(id.as_str()).map(|n| {
            *n -= 1;
            *n
        });
        let m = if n == Some(0) { loaded.remove(id) } else { loaded.get(id).cloned() };
        let Some(m) = m else {
            // Mapped, but deleted on our side: its deprovisioning is on its way (or held, or
            // dead: the stuck items say so).
            let undelivered = conn
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM outbox WHERE resource_id = ?1 AND state != 'done')")?
                .query_row([id], |r| r.get::<_, bool>(0))?;
            out.push(if undelivered { PageMatch::Deprovisioning } else { PageMatch::Unknown });
            continue;
        };
        if m.mapped_app_id.as_deref().is_some_and(|a| a != key.app_id) {
            out.push(PageMatch::Unknown);
            continue;
        }
        out.push(PageMatch::Ours(Box::new(m)));
    }
    Ok(out)
}

/// Resources with their mapping, applied attributes, pending flag and (groups) members:
/// one statement each for the whole set (members: one per group).
fn load_many(conn: &Connection, kind: ResourceKind, ids: &[&str]) -> Result<HashMap<String, Matched>, StoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let list = json_list(ids)?;
    let resources = super::resources::get_many(conn, kind, ids)?;
    // (app id, applied version, applied attributes unless that version is the current one)
    let mut mappings: HashMap<String, (String, Option<u64>, Option<String>)> = HashMap::with_capacity(ids.len());
    {
        let mut st = conn.prepare_cached(
            "SELECT resource_id, app_id, applied_version, applied FROM id_map
             WHERE resource_id IN (SELECT value FROM json_each(?1))",
        )?;
        let mut rows = st.query([&list])?;
        while let Some(r) = rows.next()? {
            let id: String = r.get(0)?;
            let version: Option<i64> = r.get(2)?;
            let version = version.map(|v| v as u64);
            let current = version.is_some() && resources.get(&id).map(|res| res.meta.version) == version;
            let applied: Option<String> = if current { None } else { r.get(3)? };
            mappings.insert(id, (r.get(1)?, version, applied));
        }
    }
    // `+state`: probe each resource's rows (few), never scan the queue, which can be long.
    let mut pending: HashSet<String> = HashSet::new();
    {
        let mut st = conn.prepare_cached(
            "SELECT DISTINCT resource_id FROM outbox
             WHERE resource_id IN (SELECT value FROM json_each(?1)) AND state != 'done'
               AND +state IN ('pending', 'retry', 'in_flight', 'dead')",
        )?;
        let rows = st.query_map([&list], |r| r.get(0))?;
        for row in rows {
            pending.insert(row?);
        }
    }
    let mut out = HashMap::with_capacity(resources.len());
    for (id, resource) in resources {
        let (mapped_app_id, applied, applied_current) = match mappings.remove(&id) {
            None => (None, None, false),
            Some((app, version, applied)) => {
                let current = version.is_some() && version == Some(resource.meta.version);
                let applied = applied.and_then(|a| match serde_json::from_str(&a) {
                    Ok(Value::Object(m)) => Some(m),
                    _ => None,
                });
                (Some(app), applied, current)
            }
        };
        let members = if kind == ResourceKind::Group { Some(members_of(conn, &id)?) } else { None };
        let pending = pending.contains(&id);
        out.insert(id, Matched { resource, mapped_app_id, applied, applied_current, pending, members });
    }
    Ok(out)
}

fn members_of(conn: &Connection, group_id: &str) -> Result<Vec<MemberInfo>, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT m.id, im.app_id, coalesce(json_extract(m.data, '$.userName'), json_extract(m.data, '$.displayName'), m.id)
         FROM resources g JOIN group_members gm ON gm.group_seq = g.seq JOIN resources m ON m.seq = gm.member_seq
         LEFT JOIN id_map im ON im.resource_id = m.id
         WHERE g.id = ?1 ORDER BY gm.member_seq",
    )?;
    let rows = st.query_map([group_id], |r| Ok(MemberInfo { id: r.get(0)?, app_id: r.get(1)?, name: r.get(2)? }))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Our resources of a kind that the listing did not match: `(id, name)` of all, in creation
/// order; the caller filters by the ids it saw (a set of ids, not of resources, in memory).
pub fn all_ids(conn: &Connection, kind: ResourceKind) -> Result<Vec<(String, String)>, StoreError> {
    let sql = match kind {
        ResourceKind::User => {
            "SELECT id, coalesce(json_extract(data, '$.userName'), id) FROM resources WHERE kind = 'User' ORDER BY seq"
        }
        ResourceKind::Group => {
            "SELECT id, coalesce(json_extract(data, '$.displayName'), id) FROM resources WHERE kind = 'Group' ORDER BY seq"
        }
    };
    let mut st = conn.prepare_cached(sql)?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Full detail of resources the app lacks (for the report and cause), in the order asked.
pub fn load_unmatched(conn: &Connection, kind: ResourceKind, ids: &[String]) -> Result<Vec<Matched>, StoreError> {
    let wanted: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut loaded = load_many(conn, kind, &wanted)?;
    Ok(ids.iter().filter_map(|id| loaded.remove(id)).collect())
}

/// Our (user) resources for app ids, to name the strangers in a group's member list:
/// `app_id -> (our id, userName)` for those we know.
pub fn names_for_app_ids(conn: &Connection, app_ids: &[String]) -> Result<Vec<Option<(String, String)>>, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT r.id, coalesce(json_extract(r.data, '$.userName'), json_extract(r.data, '$.displayName'), r.id)
         FROM id_map im JOIN resources r ON r.id = im.resource_id
         WHERE im.resource_kind IN ('User', 'Group') AND im.app_id = ?1",
    )?;
    let mut out = Vec::with_capacity(app_ids.len());
    for a in app_ids {
        out.push(st.query_row([a], |r| Ok((r.get(0)?, r.get(1)?))).optional()?);
    }
    Ok(out)
}

/// Outbox rows that are dead, held, or still undelivered after `older_than` (RFC 3339).
pub fn stuck(conn: &Connection, older_than: &str, limit: usize) -> Result<Vec<Stuck>, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT o.id, o.resource_kind, o.resource_id, o.op, o.state, o.attempts, o.created_at, o.last_error,
                coalesce(json_extract(r.data, '$.userName'), json_extract(r.data, '$.displayName'),
                         json_extract(o.payload, '$.tombstone.userName'), json_extract(o.payload, '$.tombstone.displayName'),
                         o.resource_id)
         FROM outbox o LEFT JOIN resources r ON r.id = o.resource_id
         WHERE o.state IN ('dead', 'held') OR (o.state IN ('pending', 'retry', 'in_flight') AND o.created_at < ?1)
         ORDER BY o.id LIMIT ?2",
    )?;
    let rows = st.query_map(params![older_than, limit as i64], |r| {
        let kind: String = r.get(1)?;
        Ok(Stuck {
            outbox_id: r.get(0)?,
            kind: ResourceKind::parse(&kind).unwrap_or(ResourceKind::User),
            resource_id: r.get(2)?,
            op: r.get(3)?,
            state: r.get(4)?,
            attempts: r.get::<_, i64>(5)? as u32,
            created_at: r.get(6)?,
            last_error: r.get(7)?,
            name: r.get(8)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Close runs left `running` (a crash, a kill, a shutdown mid-run) as failed with `reason`.
pub fn close_running(conn: &Connection, reason: &str, now: &str) -> Result<usize, StoreError> {
    Ok(conn
        .prepare_cached(
            "UPDATE sync_runs SET status = 'failed', finished_at = ?1, error = ?2 WHERE status = 'running'",
        )?
        .execute(params![now, reason])?)
}

/// Start a run. Runs left `running` by a crash are closed as failed first.
pub fn run_start(conn: &Connection, trigger: &str, now: &str) -> Result<i64, StoreError> {
    close_running(conn, "interrupted (the daemon stopped during the run)", now)?;
    conn.prepare_cached("INSERT INTO sync_runs (trigger, started_at, status) VALUES (?1, ?2, 'running')")?
        .execute(params![trigger, now])?;
    Ok(conn.last_insert_rowid())
}

/// Finish a run with its report; prune runs older than `keep_since` (the newest finished run
/// always stays, so "what changed since last time" has a base).
#[allow(clippy::too_many_arguments)]
pub fn run_finish(conn: &Connection, id: i64, finish: &RunFinish, now: &str) -> Result<(), StoreError> {
    let RunFinish { status, error, summary, items, keep_since } = finish;
    conn.prepare_cached("UPDATE sync_runs SET status = ?2, error = ?3, summary = ?4, finished_at = ?5 WHERE id = ?1")?
        .execute(params![
            id,
            status,
            error,
            serde_json::to_string(summary).map_err(|e| StoreError::Internal(e.to_string()))?,
            now
        ])?;
    let mut st = conn.prepare_cached(
        "INSERT INTO drift_items (run_id, seq, kind, resource_kind, resource_id, app_id, name, attribute, ours, app,
                                  cause, change, repair, fingerprint)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?;
    for (seq, it) in items.iter().enumerate() {
        st.execute(params![
            id,
            seq as i64,
            it.kind.as_str(),
            it.resource_kind.as_str(),
            it.resource_id,
            it.app_id,
            it.name,
            it.attribute,
            it.ours.to_string(),
            it.app.to_string(),
            it.cause.as_str(),
            it.change.as_str(),
            it.repair.as_str(),
            it.fingerprint
        ])?;
    }
    conn.prepare_cached(
        "DELETE FROM sync_runs WHERE started_at < ?1 AND status != 'running'
           AND id IS NOT (SELECT max(id) FROM sync_runs WHERE status = 'ok')",
    )?
    .execute([keep_since])?;
    Ok(())
}

const RUN_COLS: &str = "id, trigger, started_at, finished_at, status, error, summary";

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SyncRun> {
    let summary: Option<String> = r.get(6)?;
    Ok(SyncRun {
        id: r.get(0)?,
        trigger: r.get(1)?,
        started_at: r.get(2)?,
        finished_at: r.get(3)?,
        status: r.get(4)?,
        error: r.get(5)?,
        summary: summary.and_then(|s| serde_json::from_str(&s).ok()),
    })
}

/// Recent runs, newest first.
pub fn runs(conn: &Connection, limit: usize) -> Result<Vec<SyncRun>, StoreError> {
    let mut st = conn.prepare_cached(&format!("SELECT {RUN_COLS} FROM sync_runs ORDER BY id DESC LIMIT ?1"))?;
    let rows = st.query_map([limit as i64], run_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One run; `None` id: the newest finished successfully (the current report).
pub fn run(conn: &Connection, id: Option<i64>) -> Result<Option<SyncRun>, StoreError> {
    let sql = format!(
        "SELECT {RUN_COLS} FROM sync_runs WHERE (?1 IS NOT NULL AND id = ?1) OR (?1 IS NULL AND status = 'ok')
         ORDER BY id DESC LIMIT 1"
    );
    Ok(conn.prepare_cached(&sql)?.query_row([id], run_row).optional()?)
}

pub fn items(conn: &Connection, run_id: i64) -> Result<Vec<DriftRow>, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT kind, resource_kind, resource_id, app_id, name, attribute, ours, app, cause, change, repair, fingerprint
         FROM drift_items WHERE run_id = ?1 ORDER BY seq",
    )?;
    let rows = st.query_map([run_id], |r| {
        let ours: String = r.get(6)?;
        let app: String = r.get(7)?;
        Ok(DriftRow {
            kind: word(r, 0, DriftKind::parse)?,
            resource_kind: word(r, 1, ResourceKind::parse)?,
            resource_id: r.get(2)?,
            app_id: r.get(3)?,
            name: r.get(4)?,
            attribute: r.get(5)?,
            ours: serde_json::from_str(&ours).unwrap_or(Value::Null),
            app: serde_json::from_str(&app).unwrap_or(Value::Null),
            cause: word(r, 8, Cause::parse)?,
            change: word(r, 9, Change::parse)?,
            repair: word(r, 10, Repair::parse)?,
            fingerprint: r.get(11)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A report column holding one of a record enum's words (written by [`run_finish`] from
/// `as_str`); any other text is a corrupt row, an error rather than a guess.
fn word<T>(r: &rusqlite::Row<'_>, i: usize, parse: fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    let s: String = r.get(i)?;
    parse(&s).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("unknown word {s:?} in a drift_items column").into(),
        )
    })
}

/// The rows of `id` not delivered yet and older than this repair (`floor`), oldest first:
/// (outbox id, state, whether the row only changes group members).
fn open_rows(conn: &Connection, id: &str, floor: i64) -> Result<Vec<OpenRow>, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT id, state, op = 'update' AND json_extract(payload, '$.attributes_changed') IS NULL
                AND json_extract(payload, '$.resync') IS NULL AND json_extract(payload, '$.tombstone') IS NULL
                AND json_extract(payload, '$.deprovision') IS NULL
         FROM outbox WHERE resource_id = ?1 AND state != 'done' AND id <= ?2 ORDER BY id",
    )?;
    let rows = st.query_map(params![id, floor], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Mark `rows` as superseded by outbox row `by`: done, coalesced into it, with an attempt.
fn supersede(conn: &Connection, rows: &[i64], by: i64, run_id: i64, now: &str) -> Result<(), StoreError> {
    let detail = superseded_detail(by, run_id);
    let mut done = conn.prepare_cached(
        "UPDATE outbox SET state = 'done', done_at = ?2, lease_until = NULL, next_attempt_at = NULL,
                coalesced_into = ?3 WHERE id = ?1",
    )?;
    let mut attempt = conn.prepare_cached(
        "INSERT INTO outbox_attempts (outbox_id, started_at, finished_at, outcome, detail)
         VALUES (?1, ?2, ?2, 'superseded', ?3)",
    )?;
    for id in rows {
        done.execute(params![id, now, by])?;
        attempt.execute(params![id, now, detail])?;
    }
    Ok(())
}

/// Queue the corrective rows of a repair; returns what became of each op, in order.
/// Re-checked here, in the writer's transaction, so a repair never races the IdP or the
/// worker: nothing is queued for a resource that has a change on its way already (it would
/// duplicate it); a dead-lettered change that the repair makes obsolete is superseded (a
/// refused provision whose cause an operator fixed is repaired, not blocked by its own dead
/// row); and an "orphan" that is mapped to one of our resources or carries one of our names
/// by now (the IdP created it meanwhile, or the listing showed a live account twice) is left
/// alone. Several ops for one resource in one repair queue in order.
pub fn repair(conn: &Connection, ops: &[RepairOp], run_id: i64, now: &str) -> Result<Vec<RepairResult>, StoreError> {
    let mut results = Vec::with_capacity(ops.len());
    let mut log = RepairLog::default();
    // Rows this repair queues are newer than this: they never count as "on its way".
    let floor: i64 = conn.prepare_cached("SELECT coalesce(max(id), 0) FROM outbox")?.query_row([], |r| r.get(0))?;
    let version_of = |id: &str| -> Result<Option<i64>, StoreError> {
        Ok(conn
            .prepare_cached("SELECT version FROM resources WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?)
    };
    let last_id = || -> i64 { conn.last_insert_rowid() };
    for op in ops {
        let result = match op {
            RepairOp::Resync { kind, id, forget_app_id, .. } => {
                let Some(v) = version_of(id)? else {
                    results.push(RepairResult::Moot);
                    continue;
                };
                let obsolete = match admit(&open_rows(conn, id, floor)?, |_| true) {
                    Ok(rows) => rows,
                    Err(r) => {
                        results.push(r);
                        continue;
                    }
                };
                if *forget_app_id {
                    conn.prepare_cached("DELETE FROM id_map WHERE resource_id = ?1")?.execute([id])?;
                }
                super::resources::enqueue(conn, *kind, id, ChangeOp::Update, v as u64, &op.payload(run_id), now)?;
                supersede(conn, &obsolete, last_id(), run_id, now)?;
                RepairResult::Queued { superseded: obsolete }
            }
            RepairOp::Members { group_id, .. } => {
                let Some(v) = version_of(group_id)? else {
                    results.push(RepairResult::Moot);
                    continue;
                };
                let obsolete = match admit(&open_rows(conn, group_id, floor)?, |members_only| members_only) {
                    Ok(rows) => rows,
                    Err(r) => {
                        results.push(r);
                        continue;
                    }
                };
                super::resources::enqueue(
                    conn,
                    ResourceKind::Group,
                    group_id,
                    ChangeOp::Update,
                    v as u64,
                    &op.payload(run_id),
                    now,
                )?;
                supersede(conn, &obsolete, last_id(), run_id, now)?;
                RepairResult::Queued { superseded: obsolete }
            }
            RepairOp::Orphan { kind, app_id, name, .. } => {
                let id = orphan_id(*kind, app_id);
                let ours: bool = conn
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM id_map im JOIN resources r ON r.id = im.resource_id
                                        WHERE im.resource_kind = ?1 AND im.app_id = ?2)
                             OR EXISTS (SELECT 1 FROM resources WHERE kind = ?1
                                        AND coalesce(user_name_ci, display_name_ci) = ?3)",
                    )?
                    .query_row(params![kind.as_str(), app_id, fold_case(name)], |r| r.get(0))?;
                if ours {
                    results.push(RepairResult::Moot);
                    continue;
                }
                // An orphan's deprovisioning that is dead stays visible: nothing supersedes it.
                if let Some((outbox_id, state, _)) = open_rows(conn, &id, floor)?.into_iter().next() {
                    results.push(if state == "dead" || state == "held" {
                        RepairResult::Blocked { outbox_id, state }
                    } else {
                        RepairResult::OnItsWay { outbox_id }
                    });
                    continue;
                }
                conn.prepare_cached(
                    "INSERT INTO id_map (resource_id, resource_kind, app_id, updated_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (resource_id) DO UPDATE SET app_id = excluded.app_id, updated_at = excluded.updated_at",
                )?
                .execute(params![id, kind.as_str(), app_id, now])?;
                super::resources::enqueue(conn, *kind, &id, ChangeOp::Delete, 0, &op.payload(run_id), now)?;
                RepairResult::Queued { superseded: Vec::new() }
            }
        };
        log.record(op, &result);
        results.push(result);
    }
    if let Some(audit) = log.audit(run_id, &results) {
        super::audit::insert(conn, &audit, None, None, now)?;
    }
    Ok(results)
}

/// Re-queue dead-lettered rows that gave up on a passing failure (their retries or their
/// wait ran out: the worker's messages then say "gave up", see `outbox_worker::decide`):
/// their cause may have cleared. Rows the app refused outright (a permanent error) stay dead
/// until an operator acts; re-sending them every run would only flap the alerts. Returns
/// their ids.
pub fn requeue_dead(conn: &Connection, now: &str) -> Result<Vec<i64>, StoreError> {
    let ids: Vec<i64> = conn
        .prepare_cached("SELECT id FROM outbox WHERE state = 'dead' AND last_error LIKE '%gave up%' ORDER BY id")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut st = conn.prepare_cached(
        "UPDATE outbox SET state = 'retry', next_attempt_at = ?1, done_at = NULL, attempts = 0 WHERE id = ?2",
    )?;
    for id in &ids {
        st.execute(params![now, id])?;
    }
    Ok(ids)
}
