//! Read-only questions the status page asks: recent delivery attempts and the changes the
//! deletion guard holds, each with a human name for its resource.

use rusqlite::{Connection, params};

use super::StoreError;
use crate::store::types::{DeliveryAttempt, HeldChange};

/// The name of outbox row `o`'s resource: from the resource itself, or (once deleted) from
/// the audit record of its deletion. A resource row goes only with a DELETE, audited in the
/// same transaction with the name the resource had, so that record is the latest one that
/// names it; only DELETE records are indexed by resource id (`audit_log_deleted`, migration
/// 0007), which keeps random-id index writes off every other write.
const NAME_OF: &str = "coalesce(
    (SELECT coalesce(json_extract(r.data, '$.userName'), json_extract(r.data, '$.displayName'))
       FROM resources r WHERE r.id = o.resource_id),
    (SELECT a.resource_name FROM audit_log a
      WHERE a.resource_id = o.resource_id AND a.method = 'DELETE' AND a.resource_name IS NOT NULL
      ORDER BY a.id DESC LIMIT 1))";

/// The latest `limit` attempts (all, or only those that did not succeed), newest first.
pub fn recent_attempts(
    conn: &Connection,
    limit: usize,
    failures_only: bool,
) -> Result<Vec<DeliveryAttempt>, StoreError> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT o.id, o.resource_kind, o.resource_id, {NAME_OF}, o.op, t.started_at, t.finished_at, t.outcome, t.detail
           FROM outbox_attempts t JOIN outbox o ON o.id = t.outbox_id
          WHERE (?1 = 0 OR t.outcome IN ('retry', 'permanent'))
          ORDER BY t.id DESC LIMIT ?2"
    ))?;
    let rows = st.query_map(params![failures_only as i64, limit as i64], |r| {
        Ok(DeliveryAttempt {
            outbox_id: r.get(0)?,
            kind: r.get(1)?,
            resource_id: r.get(2)?,
            name: r.get(3)?,
            op: r.get(4)?,
            started_at: r.get(5)?,
            finished_at: r.get(6)?,
            outcome: r.get(7)?,
            detail: r.get(8)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The first `limit` held changes, in commit order.
pub fn held(conn: &Connection, limit: usize) -> Result<Vec<HeldChange>, StoreError> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT o.id, o.resource_kind, o.resource_id, {NAME_OF}, o.op, o.created_at
           FROM outbox o WHERE o.state = 'held' ORDER BY o.id LIMIT ?1"
    ))?;
    let rows = st.query_map([limit as i64], |r| {
        Ok(HeldChange {
            outbox_id: r.get(0)?,
            kind: r.get(1)?,
            resource_id: r.get(2)?,
            name: r.get(3)?,
            op: r.get(4)?,
            created_at: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ResourceKind;
    use crate::store::sqlite::{audit, resources};
    use crate::store::{NewAudit, NewResource};

    fn record(method: &str, id: &str) -> NewAudit {
        NewAudit {
            actor: "token".into(),
            token_id: Some("abcd1234".into()),
            method: method.into(),
            resource_type: "User".into(),
            resource_id: Some(id.into()),
            request_id: None,
            summary: serde_json::json!({}),
        }
    }

    /// A held deletion of a user whose row is gone is named from the delete's audit record,
    /// through the partial index of DELETE records (not a scan of the whole log).
    #[test]
    fn a_deleted_resource_is_named_from_its_delete_record() {
        let mut c = Connection::open_in_memory().unwrap();
        crate::store::sqlite::migrations::apply(&mut c).unwrap();
        let now = "2026-01-01T00:00:00.000Z";
        let attrs = serde_json::json!({"userName": "alice@example.com"}).as_object().unwrap().clone();
        let new = NewResource { kind: ResourceKind::User, id: "u1".into(), attrs, members: Vec::new() };
        resources::create(&c, new, now).unwrap();
        audit::insert(&c, &record("POST", "u1"), Some("alice@example.com"), Some(1), now).unwrap();
        let name = audit::resource_name(&c, "u1").unwrap();
        resources::delete(&c, ResourceKind::User, "u1", None, now).unwrap();
        audit::insert(&c, &record("DELETE", "u1"), name.as_deref(), None, now).unwrap();
        c.execute("UPDATE outbox SET state = 'held' WHERE op = 'delete'", []).unwrap();

        let held = held(&c, 10).unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!((held[0].resource_id.as_str(), held[0].name.as_deref()), ("u1", Some("alice@example.com")));

        let plan: Vec<String> = c
            .prepare(&format!("EXPLAIN QUERY PLAN SELECT {NAME_OF} FROM outbox o WHERE o.id = 1"))
            .unwrap()
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(plan.iter().any(|p| p.contains("audit_log_deleted")), "{plan:?}");
        assert!(!plan.iter().any(|p| p.starts_with("SCAN a")), "{plan:?}");
    }
}
