//! The audit log on PostgreSQL: listing and pruning (records are written by each change's
//! transaction, see `resources::insert_audit`). The statements of the SQLite backend's
//! `audit` module; `COLLATE NOCASE` there (ASCII case folding) is `lower()` on both sides
//! here, which folds the same under the C locale the tests' clusters use.

use deadpool_postgres::GenericClient;
use serde_json::Value;

use crate::store::types::{AuditQuery, AuditRecord, StoreError};

/// Delete up to `batch` records older than `before`; returns how many went.
pub async fn prune(c: &impl GenericClient, before: &str, batch: usize) -> Result<usize, StoreError> {
    Ok(c.execute(
        "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE at < $1 ORDER BY id LIMIT $2)",
        &[&before, &(batch as i64)],
    )
    .await? as usize)
}

/// The most recent `q.limit` records matching `q`, oldest first.
pub async fn list(c: &impl GenericClient, q: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
    let rows = c
        .query(
            "SELECT id, at, actor, token_id, method, resource_type, resource_id, resource_name, version, request_id,
                    summary
               FROM audit_log
              WHERE ($1::text IS NULL OR at >= $1)
                AND ($2::text IS NULL OR lower(resource_type) = lower($2))
                AND ($3::text IS NULL OR resource_id = $3 OR lower(resource_name) = lower($3))
              ORDER BY id DESC LIMIT $4",
            &[&q.since, &q.resource_type, &q.resource, &(q.limit as i64)],
        )
        .await?;
    let mut out: Vec<AuditRecord> = rows
        .iter()
        .map(|r| {
            let summary: String = r.get(10);
            AuditRecord {
                id: r.get(0),
                at: r.get(1),
                actor: r.get(2),
                token_id: r.get(3),
                method: r.get(4),
                resource_type: r.get(5),
                resource_id: r.get(6),
                resource_name: r.get(7),
                version: r.get::<_, Option<i64>>(8).map(|v| v.max(0) as u64),
                request_id: r.get(9),
                summary: serde_json::from_str(&summary).unwrap_or(Value::String(summary)),
            }
        })
        .collect();
    out.reverse();
    Ok(out)
}
