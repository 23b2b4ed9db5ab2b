//! Which target the delivered changes went to, and what changes when that target changes.
//!
//! A dry run "delivers" into a log file: what it marks done never reached an app. When the
//! daemon starts on a real target after a dry run, every resource is queued for that app
//! again (its whole state, as a resync), so switching from `dry-run` to `scim` or `webhook`
//! provisions everything the IdP pushed, by itself. Stores written by releases whose dry run
//! recorded app ids `dry-run-<id>` are recognised by those ids, which are forgotten.
//!
//! Owns: the SQL of `delivery_target` and of that switch. Must not touch: HTTP, config.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use crate::model::{ChangeOp, ResourceKind};
use crate::store::types::{DRY_RUN, TargetSwitch, target_switch_audit, target_switch_payload};

/// Record that deliveries now go to `identity`; after a dry run, queue every resource for the
/// real target (users first, so groups find their members provisioned) in this transaction.
pub fn switch(conn: &Connection, identity: &str, now: &str) -> Result<TargetSwitch, StoreError> {
    let recorded: Option<String> = conn
        .prepare_cached("SELECT identity FROM delivery_target WHERE id = 1")?
        .query_row([], |r| r.get(0))
        .optional()?;
    // Before this table existed a dry run recorded `dry-run-<id>` as the app's id.
    let legacy_dry_run = recorded.is_none()
        && conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM id_map WHERE app_id LIKE 'dry-run-%')")?
            .query_row([], |r| r.get::<_, bool>(0))?;
    let previous = recorded.clone().or_else(|| legacy_dry_run.then(|| DRY_RUN.to_string()));
    let mut out = TargetSwitch { previous: previous.clone(), ..TargetSwitch::default() };
    if identity != DRY_RUN && previous.as_deref() == Some(DRY_RUN) {
        out.forgotten = conn.prepare_cached("DELETE FROM id_map WHERE app_id LIKE 'dry-run-%'")?.execute([])? as u64;
        let all: Vec<(String, String, i64)> = conn
            .prepare_cached("SELECT kind, id, version FROM resources ORDER BY kind = 'Group', seq")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        let payload = target_switch_payload();
        for (kind, id, version) in &all {
            let kind = ResourceKind::parse(kind).unwrap_or(ResourceKind::User);
            super::resources::enqueue(conn, kind, id, ChangeOp::Update, *version as u64, &payload, now)?;
        }
        out.requeued = all.len() as u64;
        let audit = target_switch_audit(identity, &out);
        super::audit::insert(conn, &audit, None, None, now)?;
    }
    if recorded.as_deref() != Some(identity) {
        conn.prepare_cached(
            "INSERT INTO delivery_target (id, identity, since) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET identity = excluded.identity, since = excluded.since",
        )?
        .execute(params![identity, now])?;
    }
    Ok(out)
}
