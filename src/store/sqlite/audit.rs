//! The audit log: who changed what, when, and through which request.
//!
//! Rows are written by the writer thread in the same operation as the change they describe
//! ([`super::writer`]'s `Audited` operation): a change that rolls back takes its audit row
//! with it, and a committed change always has one. Summaries name what changed (attribute
//! names, PATCH paths, member counts), never values, so no secret is ever stored here.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::StoreError;
use crate::store::types::{AuditQuery, AuditRecord, NewAudit};

pub fn insert(
    conn: &Connection,
    a: &NewAudit,
    name: Option<&str>,
    version: Option<u64>,
    now: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO audit_log (at, actor, token_id, method, resource_type, resource_id, resource_name, version,
                                request_id, summary)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        now,
        a.actor,
        a.token_id,
        a.method,
        a.resource_type,
        a.resource_id,
        name,
        version.map(|v| v as i64),
        a.request_id,
        a.summary.to_string()
    ])?;
    Ok(())
}

/// The userName (users) or displayName (groups) of a stored resource, for the record.
pub fn resource_name(conn: &Connection, id: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT coalesce(json_extract(data, '$.userName'), json_extract(data, '$.displayName'))
               FROM resources WHERE id = ?1",
        )?
        .query_row([id], |r| r.get::<_, Option<String>>(0))
        .optional()?
        .flatten())
}

/// What an outbox row is about (before an operator drops it): `{outbox_id, type, id, op}`.
pub fn outbox_brief(conn: &Connection, outbox_id: i64) -> Result<Option<Value>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT resource_kind, resource_id, op, state FROM outbox WHERE id = ?1")?
        .query_row([outbox_id], |r| {
            Ok(serde_json::json!({
                "outbox_id": outbox_id,
                "type": r.get::<_, String>(0)?,
                "id": r.get::<_, String>(1)?,
                "op": r.get::<_, String>(2)?,
                "state": r.get::<_, String>(3)?,
            }))
        })
        .optional()?)
}

/// Delete up to `batch` records older than `before`; returns how many went. Called in a
/// loop by the pruner so that one huge backlog never holds the writer for long.
pub fn prune(conn: &Connection, before: &str, batch: usize) -> Result<usize, StoreError> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE at < ?1 ORDER BY id LIMIT ?2)",
        )?
        .execute(params![before, batch as i64])?)
}

pub fn list(conn: &Connection, q: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT id, at, actor, token_id, method, resource_type, resource_id, resource_name, version, request_id, summary
           FROM audit_log
          WHERE (?1 IS NULL OR at >= ?1)
            AND (?2 IS NULL OR resource_type = ?2 COLLATE NOCASE)
            AND (?3 IS NULL OR resource_id = ?3 OR resource_name = ?3 COLLATE NOCASE)
          ORDER BY id DESC LIMIT ?4",
    )?;
    let rows = st.query_map(params![q.since, q.resource_type, q.resource, q.limit as i64], |r| {
        let summary: String = r.get(10)?;
        Ok(AuditRecord {
            id: r.get(0)?,
            at: r.get(1)?,
            actor: r.get(2)?,
            token_id: r.get(3)?,
            method: r.get(4)?,
            resource_type: r.get(5)?,
            resource_id: r.get(6)?,
            resource_name: r.get(7)?,
            version: r.get::<_, Option<i64>>(8)?.map(|v| v.max(0) as u64),
            request_id: r.get(9)?,
            summary: serde_json::from_str(&summary).unwrap_or(Value::String(summary)),
        })
    })?;
    let mut out: Vec<AuditRecord> = rows.collect::<Result<_, _>>()?;
    out.reverse();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::migrations::apply(&mut c).unwrap();
        c
    }

    fn rec(id: &str) -> NewAudit {
        NewAudit {
            actor: "token".into(),
            token_id: Some("abcd1234".into()),
            method: "POST".into(),
            resource_type: "User".into(),
            resource_id: Some(id.into()),
            request_id: None,
            summary: json!({"attributes": ["userName"]}),
        }
    }

    #[test]
    fn prune_removes_only_older_records_in_batches() {
        let c = db();
        for (i, at) in
            ["2026-01-01T00:00:00.000Z", "2026-01-02T00:00:00.000Z", "2026-01-03T00:00:00.000Z"].iter().enumerate()
        {
            insert(&c, &rec(&format!("u{i}")), Some(&format!("user{i}")), Some(1), at).unwrap();
        }
        assert_eq!(prune(&c, "2026-01-03T00:00:00.000Z", 1).unwrap(), 1, "one batch of one");
        assert_eq!(prune(&c, "2026-01-03T00:00:00.000Z", 10).unwrap(), 1);
        assert_eq!(prune(&c, "2026-01-03T00:00:00.000Z", 10).unwrap(), 0);
        let left = list(&c, &AuditQuery { limit: 10, ..Default::default() }).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].resource_id.as_deref(), Some("u2"));
    }

    #[test]
    fn list_filters_and_keeps_the_most_recent() {
        let c = db();
        for i in 0..5 {
            let at = format!("2026-01-0{}T00:00:00.000Z", i + 1);
            insert(&c, &rec(&format!("u{i}")), Some(&format!("User{i}")), Some(1), &at).unwrap();
        }
        let q = |since: Option<&str>, resource: Option<&str>, limit| AuditQuery {
            since: since.map(String::from),
            resource_type: None,
            resource: resource.map(String::from),
            limit,
        };
        let ids = |v: Vec<AuditRecord>| v.into_iter().map(|r| r.resource_id.unwrap()).collect::<Vec<_>>();
        assert_eq!(ids(list(&c, &q(None, None, 2)).unwrap()), vec!["u3", "u4"], "the last two, oldest first");
        assert_eq!(ids(list(&c, &q(Some("2026-01-04T00:00:00.000Z"), None, 10)).unwrap()), vec!["u3", "u4"]);
        assert_eq!(ids(list(&c, &q(None, Some("u1"), 10)).unwrap()), vec!["u1"], "by id");
        assert_eq!(ids(list(&c, &q(None, Some("user2"), 10)).unwrap()), vec!["u2"], "by name, any case");
        let typed = AuditQuery { resource_type: Some("group".into()), limit: 10, ..Default::default() };
        assert!(list(&c, &typed).unwrap().is_empty());
    }
}
