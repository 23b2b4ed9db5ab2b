//! What reconciliation needs from the store, on PostgreSQL: the statements of the SQLite
//! backend's `sync` and `delivery_target` modules in PostgreSQL's dialect (those modules'
//! comments say why each exists). The pure decisions (`admit`, the payloads, the repair's
//! audit record) are shared with SQLite in `store::types::sync`. Each write runs inside the
//! caller's transaction.
//!
//! What differs, and why: several transactions run at once here (there is no single writer).
//! - A repair locks each resource it reads (`SELECT ... FOR UPDATE`) before it weighs the
//!   resource's open outbox rows, so it cannot race the IdP: a concurrent write to that
//!   resource waits, and the repair's row gets its id in commit order.
//! - SQLite's repair ignores rows newer than the highest outbox id at its start (its own);
//!   here an id taken before that read may commit after it, so the repair ignores exactly the
//!   rows it queued itself instead.
//! - A target switch locks `delivery_target` (two daemons starting together switch one after
//!   the other, so everything is queued once) and, after a dry run, every resource's row.

use std::collections::{HashMap, HashSet};

use deadpool_postgres::GenericClient;
use serde_json::Value;
use tokio_postgres::Row;

use super::{outbox, resources};
use crate::model::drift::{Cause, Change, DriftKind, Repair};
use crate::model::{ChangeOp, ResourceKind, fold_case};
use crate::store::types::{
    AppKey, DRY_RUN, DriftRow, Matched, MemberInfo, OpenRow, PageMatch, RepairLog, RepairOp, RepairResult, RunFinish,
    StoreError, Stuck, SyncRun, TargetSwitch, admit, orphan_id, superseded_detail, target_switch_audit,
    target_switch_payload,
};

async fn id_by_name(c: &impl GenericClient, kind: ResourceKind, key: &AppKey) -> Result<Option<String>, StoreError> {
    let sql = match kind {
        ResourceKind::User => "SELECT id FROM resources WHERE kind = 'User' AND user_name_ci = $1",
        ResourceKind::Group => {
            "SELECT id FROM resources WHERE kind = 'Group' AND display_name_ci = $1 ORDER BY seq LIMIT 1"
        }
    };
    if let Some(r) = c.query_opt(sql, &[&fold_case(&key.name)]).await? {
        return Ok(Some(r.get(0)));
    }
    let Some(ext) = &key.external_id else { return Ok(None) };
    Ok(c.query_opt(
        "SELECT id FROM resources WHERE kind = $1 AND external_id = $2 ORDER BY seq LIMIT 1",
        &[&kind.as_str(), ext],
    )
    .await?
    .map(|r| r.get(0)))
}

/// Match one page of the app's listing (see the SQLite backend's `match_page`).
pub async fn match_page(
    c: &impl GenericClient,
    kind: ResourceKind,
    keys: &[AppKey],
) -> Result<Vec<PageMatch>, StoreError> {
    let app_ids: Vec<&str> = keys.iter().map(|k| k.app_id.as_str()).collect();
    let mut by_app: HashMap<String, String> = HashMap::with_capacity(keys.len());
    for r in c
        .query(
            "SELECT im.app_id, im.resource_id FROM id_map im WHERE im.resource_kind = $1 AND im.app_id = ANY($2)",
            &[&kind.as_str(), &app_ids],
        )
        .await?
    {
        by_app.insert(r.get(0), r.get(1));
    }
    let mut ids: Vec<Option<String>> = Vec::with_capacity(keys.len());
    for key in keys {
        ids.push(match by_app.get(&key.app_id).cloned() {
            Some(id) => Some(id),
            None => id_by_name(c, kind, key).await?,
        });
    }
    let wanted: Vec<&str> = ids.iter().flatten().map(String::as_str).collect();
    let mut loaded = load_many(c, kind, &wanted).await?;
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
            let undelivered: bool = c
                .query_one("SELECT EXISTS (SELECT 1 FROM outbox WHERE resource_id = $1 AND state != 'done')", &[id])
                .await?
                .get(0);
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

/// Resources with their mapping, applied attributes, pending flag and (groups) members.
async fn load_many(
    c: &impl GenericClient,
    kind: ResourceKind,
    ids: &[&str],
) -> Result<HashMap<String, Matched>, StoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let resources = resources::get_many(c, kind, ids).await?;
    // (app id, applied version, applied attributes unless that version is the current one)
    let mut mappings: HashMap<String, (String, Option<u64>, Option<String>)> = HashMap::with_capacity(ids.len());
    for r in c
        .query("SELECT resource_id, app_id, applied_version, applied FROM id_map WHERE resource_id = ANY($1)", &[&ids])
        .await?
    {
        let id: String = r.get(0);
        let version = r.get::<_, Option<i64>>(2).map(|v| v as u64);
        let current = version.is_some() && resources.get(&id).map(|res| res.meta.version) == version;
        let applied: Option<String> = if current { None } else { r.get(3) };
        mappings.insert(id, (r.get(1), version, applied));
    }
    let pending: HashSet<String> = c
        .query(
            "SELECT DISTINCT resource_id FROM outbox
             WHERE resource_id = ANY($1) AND state IN ('pending', 'retry', 'in_flight', 'dead')",
            &[&ids],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
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
        let members = if kind == ResourceKind::Group { Some(members_of(c, &id).await?) } else { None };
        let pending = pending.contains(&id);
        out.insert(id, Matched { resource, mapped_app_id, applied, applied_current, pending, members });
    }
    Ok(out)
}

async fn members_of(c: &impl GenericClient, group_id: &str) -> Result<Vec<MemberInfo>, StoreError> {
    let rows = c
        .query(
            "SELECT m.id, im.app_id, coalesce(m.data ->> 'userName', m.data ->> 'displayName', m.id)
             FROM resources g JOIN group_members gm ON gm.group_seq = g.seq JOIN resources m ON m.seq = gm.member_seq
             LEFT JOIN id_map im ON im.resource_id = m.id
             WHERE g.id = $1 ORDER BY gm.member_seq",
            &[&group_id],
        )
        .await?;
    Ok(rows.iter().map(|r| MemberInfo { id: r.get(0), app_id: r.get(1), name: r.get(2) }).collect())
}

/// Every resource of a kind as `(id, name)`, in creation order.
pub async fn all_ids(c: &impl GenericClient, kind: ResourceKind) -> Result<Vec<(String, String)>, StoreError> {
    let sql = match kind {
        ResourceKind::User => {
            "SELECT id, coalesce(data ->> 'userName', id) FROM resources WHERE kind = 'User' ORDER BY seq"
        }
        ResourceKind::Group => {
            "SELECT id, coalesce(data ->> 'displayName', id) FROM resources WHERE kind = 'Group' ORDER BY seq"
        }
    };
    Ok(c.query(sql, &[]).await?.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Full detail of resources the app lacks, in the order asked.
pub async fn load_unmatched(
    c: &impl GenericClient,
    kind: ResourceKind,
    ids: &[String],
) -> Result<Vec<Matched>, StoreError> {
    let wanted: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut loaded = load_many(c, kind, &wanted).await?;
    Ok(ids.iter().filter_map(|id| loaded.remove(id)).collect())
}

/// `(our id, name)` for app ids we know, in the order asked.
pub async fn names_for_app_ids(
    c: &impl GenericClient,
    app_ids: &[String],
) -> Result<Vec<Option<(String, String)>>, StoreError> {
    let st = c
        .prepare(
            "SELECT r.id, coalesce(r.data ->> 'userName', r.data ->> 'displayName', r.id)
             FROM id_map im JOIN resources r ON r.id = im.resource_id
             WHERE im.resource_kind IN ('User', 'Group') AND im.app_id = $1 LIMIT 1",
        )
        .await?;
    let mut out = Vec::with_capacity(app_ids.len());
    for a in app_ids {
        out.push(c.query_opt(&st, &[a]).await?.map(|r| (r.get(0), r.get(1))));
    }
    Ok(out)
}

/// Outbox rows that are dead, held, or still undelivered after `older_than` (RFC 3339).
pub async fn stuck(c: &impl GenericClient, older_than: &str, limit: usize) -> Result<Vec<Stuck>, StoreError> {
    let rows = c
        .query(
            "SELECT o.id, o.resource_kind, o.resource_id, o.op, o.state, o.attempts, o.created_at, o.last_error,
                    coalesce(r.data ->> 'userName', r.data ->> 'displayName',
                             o.payload -> 'tombstone' ->> 'userName', o.payload -> 'tombstone' ->> 'displayName',
                             o.resource_id)
             FROM outbox o LEFT JOIN resources r ON r.id = o.resource_id
             WHERE o.state IN ('dead', 'held') OR (o.state IN ('pending', 'retry', 'in_flight') AND o.created_at < $1)
             ORDER BY o.id LIMIT $2",
            &[&older_than, &(limit as i64)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let kind: String = r.get(1);
            Stuck {
                outbox_id: r.get(0),
                kind: ResourceKind::parse(&kind).unwrap_or(ResourceKind::User),
                resource_id: r.get(2),
                op: r.get(3),
                state: r.get(4),
                attempts: r.get::<_, i64>(5) as u32,
                created_at: r.get(6),
                last_error: r.get(7),
                name: r.get(8),
            }
        })
        .collect())
}

/// Close runs left `running` as failed with `reason`.
pub async fn close_running(c: &impl GenericClient, reason: &str, now: &str) -> Result<usize, StoreError> {
    Ok(c.execute(
        "UPDATE sync_runs SET status = 'failed', finished_at = $1, error = $2 WHERE status = 'running'",
        &[&now, &reason],
    )
    .await? as usize)
}

/// Start a run. Runs left `running` by a crash are closed as failed first.
pub async fn run_start(c: &impl GenericClient, trigger: &str, now: &str) -> Result<i64, StoreError> {
    close_running(c, "interrupted (the daemon stopped during the run)", now).await?;
    Ok(c.query_one(
        "INSERT INTO sync_runs (trigger, started_at, status) VALUES ($1, $2, 'running') RETURNING id",
        &[&trigger, &now],
    )
    .await?
    .get(0))
}

/// Finish a run with its report; prune runs older than `keep_since` (the newest successful
/// run always stays).
pub async fn run_finish(c: &impl GenericClient, id: i64, finish: &RunFinish, now: &str) -> Result<(), StoreError> {
    let RunFinish { status, error, summary, items, keep_since } = finish;
    let summary = serde_json::to_string(summary).map_err(|e| StoreError::Internal(e.to_string()))?;
    c.execute(
        "UPDATE sync_runs SET status = $2, error = $3, summary = $4, finished_at = $5 WHERE id = $1",
        &[&id, status, error, &summary, &now],
    )
    .await?;
    let st = c
        .prepare(
            "INSERT INTO drift_items (run_id, seq, kind, resource_kind, resource_id, app_id, name, attribute, ours, app,
                                      cause, change, repair, fingerprint)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .await?;
    for (seq, it) in items.iter().enumerate() {
        c.execute(
            &st,
            &[
                &id,
                &(seq as i64),
                &it.kind.as_str(),
                &it.resource_kind.as_str(),
                &it.resource_id,
                &it.app_id,
                &it.name,
                &it.attribute,
                &it.ours.to_string(),
                &it.app.to_string(),
                &it.cause.as_str(),
                &it.change.as_str(),
                &it.repair.as_str(),
                &it.fingerprint,
            ],
        )
        .await?;
    }
    c.execute(
        "DELETE FROM sync_runs WHERE started_at < $1 AND status != 'running'
           AND id IS DISTINCT FROM (SELECT max(id) FROM sync_runs WHERE status = 'ok')",
        &[keep_since],
    )
    .await?;
    Ok(())
}

const RUN_COLS: &str = "id, trigger, started_at, finished_at, status, error, summary";

fn run_row(r: &Row) -> SyncRun {
    let summary: Option<String> = r.get(6);
    SyncRun {
        id: r.get(0),
        trigger: r.get(1),
        started_at: r.get(2),
        finished_at: r.get(3),
        status: r.get(4),
        error: r.get(5),
        summary: summary.and_then(|s| serde_json::from_str(&s).ok()),
    }
}

/// Recent runs, newest first.
pub async fn runs(c: &impl GenericClient, limit: usize) -> Result<Vec<SyncRun>, StoreError> {
    let rows =
        c.query(&format!("SELECT {RUN_COLS} FROM sync_runs ORDER BY id DESC LIMIT $1"), &[&(limit as i64)]).await?;
    Ok(rows.iter().map(run_row).collect())
}

/// One run; `None` id: the newest finished successfully (the current report).
pub async fn run(c: &impl GenericClient, id: Option<i64>) -> Result<Option<SyncRun>, StoreError> {
    let sql = format!(
        "SELECT {RUN_COLS} FROM sync_runs
         WHERE ($1::bigint IS NOT NULL AND id = $1) OR ($1::bigint IS NULL AND status = 'ok')
         ORDER BY id DESC LIMIT 1"
    );
    Ok(c.query_opt(&sql, &[&id]).await?.as_ref().map(run_row))
}

/// A report column holding one of a record enum's words; any other text is a corrupt row,
/// an error rather than a guess.
fn word<T>(r: &Row, i: usize, parse: fn(&str) -> Option<T>) -> Result<T, StoreError> {
    let s: String = r.get(i);
    parse(&s).ok_or_else(|| StoreError::Internal(format!("unknown word {s:?} in a drift_items column")))
}

pub async fn items(c: &impl GenericClient, run_id: i64) -> Result<Vec<DriftRow>, StoreError> {
    let rows = c
        .query(
            "SELECT kind, resource_kind, resource_id, app_id, name, attribute, ours, app, cause, change, repair,
                    fingerprint
             FROM drift_items WHERE run_id = $1 ORDER BY seq",
            &[&run_id],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let ours: String = r.get(6);
            let app: String = r.get(7);
            Ok(DriftRow {
                kind: word(r, 0, DriftKind::parse)?,
                resource_kind: word(r, 1, ResourceKind::parse)?,
                resource_id: r.get(2),
                app_id: r.get(3),
                name: r.get(4),
                attribute: r.get(5),
                ours: serde_json::from_str(&ours).unwrap_or(Value::Null),
                app: serde_json::from_str(&app).unwrap_or(Value::Null),
                cause: word(r, 8, Cause::parse)?,
                change: word(r, 9, Change::parse)?,
                repair: word(r, 10, Repair::parse)?,
                fingerprint: r.get(11),
            })
        })
        .collect()
}

/// The rows of `id` not delivered yet, but for those this repair queued (`ours`), oldest
/// first. `->>` reads a missing key and JSON `null` alike as NULL, as SQLite's
/// `json_extract` does.
async fn open_rows(c: &impl GenericClient, id: &str, ours: &[i64]) -> Result<Vec<OpenRow>, StoreError> {
    let rows = c
        .query(
            "SELECT id, state, op = 'update' AND payload ->> 'attributes_changed' IS NULL
                    AND payload ->> 'resync' IS NULL AND payload ->> 'tombstone' IS NULL
                    AND payload ->> 'deprovision' IS NULL
             FROM outbox WHERE resource_id = $1 AND state != 'done' AND NOT (id = ANY($2)) ORDER BY id",
            &[&id, &ours],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
}

/// Mark `rows` as superseded by outbox row `by`: done, coalesced into it, with an attempt.
async fn supersede(c: &impl GenericClient, rows: &[i64], by: i64, run_id: i64, now: &str) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let detail = superseded_detail(by, run_id);
    c.execute(
        "UPDATE outbox SET state = 'done', done_at = $2, lease_until = NULL, next_attempt_at = NULL,
                coalesced_into = $3 WHERE id = ANY($1)",
        &[&rows, &now, &by],
    )
    .await?;
    for id in rows {
        c.execute(
            "INSERT INTO outbox_attempts (outbox_id, started_at, finished_at, outcome, detail)
             VALUES ($1, $2, $2, 'superseded', $3)",
            &[id, &now, &detail],
        )
        .await?;
    }
    Ok(())
}

/// The version of resource `id`, its row locked until the transaction ends (`None`: gone).
async fn lock_version(c: &impl GenericClient, id: &str) -> Result<Option<i64>, StoreError> {
    Ok(c.query_opt("SELECT version FROM resources WHERE id = $1 FOR UPDATE", &[&id]).await?.map(|r| r.get(0)))
}

/// Queue the corrective rows of a repair; returns what became of each op, in order (see the
/// SQLite backend's `repair` for the rules).
pub async fn repair(
    c: &impl GenericClient,
    ops: &[RepairOp],
    run_id: i64,
    now: &str,
) -> Result<Vec<RepairResult>, StoreError> {
    let mut results = Vec::with_capacity(ops.len());
    let mut log = RepairLog::default();
    // Rows this repair queues never count as "on its way".
    let mut queued: Vec<i64> = Vec::new();
    for op in ops {
        let result = match op {
            RepairOp::Resync { kind, id, forget_app_id, .. } => {
                let Some(v) = lock_version(c, id).await? else {
                    results.push(RepairResult::Moot);
                    continue;
                };
                let obsolete = match admit(&open_rows(c, id, &queued).await?, |_| true) {
                    Ok(rows) => rows,
                    Err(r) => {
                        results.push(r);
                        continue;
                    }
                };
                if *forget_app_id {
                    c.execute("DELETE FROM id_map WHERE resource_id = $1", &[id]).await?;
                }
                let by = outbox::enqueue(c, *kind, id, ChangeOp::Update, v as u64, &op.payload(run_id), now).await?;
                queued.push(by);
                supersede(c, &obsolete, by, run_id, now).await?;
                RepairResult::Queued { superseded: obsolete }
            }
            RepairOp::Members { group_id, .. } => {
                let Some(v) = lock_version(c, group_id).await? else {
                    results.push(RepairResult::Moot);
                    continue;
                };
                let obsolete = match admit(&open_rows(c, group_id, &queued).await?, |members_only| members_only) {
                    Ok(rows) => rows,
                    Err(r) => {
                        results.push(r);
                        continue;
                    }
                };
                let by = outbox::enqueue(
                    c,
                    ResourceKind::Group,
                    group_id,
                    ChangeOp::Update,
                    v as u64,
                    &op.payload(run_id),
                    now,
                )
                .await?;
                queued.push(by);
                supersede(c, &obsolete, by, run_id, now).await?;
                RepairResult::Queued { superseded: obsolete }
            }
            RepairOp::Orphan { kind, app_id, name, .. } => {
                let id = orphan_id(*kind, app_id);
                let ours: bool = c
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM id_map im JOIN resources r ON r.id = im.resource_id
                                        WHERE im.resource_kind = $1 AND im.app_id = $2)
                             OR EXISTS (SELECT 1 FROM resources WHERE kind = $1
                                        AND coalesce(user_name_ci, display_name_ci) = $3)",
                        &[&kind.as_str(), app_id, &fold_case(name)],
                    )
                    .await?
                    .get(0);
                if ours {
                    results.push(RepairResult::Moot);
                    continue;
                }
                // An orphan's deprovisioning that is dead stays visible: nothing supersedes it.
                if let Some((outbox_id, state, _)) = open_rows(c, &id, &queued).await?.into_iter().next() {
                    results.push(if state == "dead" || state == "held" {
                        RepairResult::Blocked { outbox_id, state }
                    } else {
                        RepairResult::OnItsWay { outbox_id }
                    });
                    continue;
                }
                c.execute(
                    "INSERT INTO id_map (resource_id, resource_kind, app_id, updated_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (resource_id) DO UPDATE SET app_id = excluded.app_id, updated_at = excluded.updated_at",
                    &[&id, &kind.as_str(), app_id, &now],
                )
                .await?;
                let by = outbox::enqueue(c, *kind, &id, ChangeOp::Delete, 0, &op.payload(run_id), now).await?;
                queued.push(by);
                RepairResult::Queued { superseded: Vec::new() }
            }
        };
        log.record(op, &result);
        results.push(result);
    }
    if let Some(audit) = log.audit(run_id, &results) {
        resources::insert_audit(c, &audit, None, None, now).await?;
    }
    Ok(results)
}

/// Re-queue dead-lettered rows that gave up on a passing failure (see the SQLite backend's
/// `requeue_dead`); returns their ids, in order.
pub async fn requeue_dead(c: &impl GenericClient, now: &str) -> Result<Vec<i64>, StoreError> {
    let mut ids: Vec<i64> = c
        .query(
            "UPDATE outbox SET state = 'retry', next_attempt_at = $1, done_at = NULL, attempts = 0
             WHERE state = 'dead' AND last_error ILIKE '%gave up%' RETURNING id",
            &[&now],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Record that deliveries now go to `identity`; after a dry run, queue every resource for the
/// real target (users first) in this transaction (see the SQLite backend's
/// `delivery_target::switch`).
pub async fn target_switch(c: &impl GenericClient, identity: &str, now: &str) -> Result<TargetSwitch, StoreError> {
    // Two daemons starting together switch one after the other; readers are not blocked.
    c.execute("LOCK TABLE delivery_target IN EXCLUSIVE MODE", &[]).await?;
    let recorded: Option<String> =
        c.query_opt("SELECT identity FROM delivery_target WHERE id = 1", &[]).await?.map(|r| r.get(0));
    // Before this table existed a dry run recorded `dry-run-<id>` as the app's id.
    let legacy_dry_run = recorded.is_none()
        && c.query_one("SELECT EXISTS (SELECT 1 FROM id_map WHERE app_id ILIKE 'dry-run-%')", &[])
            .await?
            .get::<_, bool>(0);
    let previous = recorded.clone().or_else(|| legacy_dry_run.then(|| DRY_RUN.to_string()));
    let mut out = TargetSwitch { previous: previous.clone(), ..TargetSwitch::default() };
    if identity != DRY_RUN && previous.as_deref() == Some(DRY_RUN) {
        out.forgotten = c.execute("DELETE FROM id_map WHERE app_id ILIKE 'dry-run-%'", &[]).await?;
        // Each resource's row locked, so its new row is in commit order with the IdP's writes.
        let all =
            c.query("SELECT kind, id, version FROM resources ORDER BY kind = 'Group', seq FOR UPDATE", &[]).await?;
        let payload = target_switch_payload();
        for r in &all {
            let (kind, id, version): (String, String, i64) = (r.get(0), r.get(1), r.get(2));
            let kind = ResourceKind::parse(&kind).unwrap_or(ResourceKind::User);
            outbox::enqueue(c, kind, &id, ChangeOp::Update, version as u64, &payload, now).await?;
        }
        out.requeued = all.len() as u64;
        resources::insert_audit(c, &target_switch_audit(identity, &out), None, None, now).await?;
    }
    if recorded.as_deref() != Some(identity) {
        c.execute(
            "INSERT INTO delivery_target (id, identity, since) VALUES (1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET identity = excluded.identity, since = excluded.since",
            &[&identity, &now],
        )
        .await?;
    }
    Ok(out)
}
