//! The facts the provisioning policy needs, read inside the writer's transaction: who is in
//! which mapped group, and who is active. A write under a policy reads them before and after
//! the operation (in the same writer operation), asks `policy::constraints` for a verdict,
//! and queues a user update for every user whose effective access changed. Because the one
//! writer runs operations one after another, two concurrent requests cannot both pass a
//! check that only one of them may pass (the last seat, the last admin).
//!
//! SQL only: what to read and what it means is `store::types::policed`'s (shared with the
//! PostgreSQL backend), the evaluation `crate::policy`'s.

use std::collections::BTreeSet;

use rusqlite::{Connection, OptionalExtension};

use super::writer::WriteOp;
use super::{StoreError, resources};
use crate::policy::{Policy, Snapshot, constraints};
use crate::store::types::{
    Need, NewResource, PolicedWrite, Prior, deleted_refusal, mapped_groups, snapshot_from, verdict,
};

/// Every user in a group some rule maps (or only those of `only`), with its mapped groups
/// and `active` flag.
pub fn snapshot(conn: &Connection, policy: &Policy, only: Option<&BTreeSet<String>>) -> Result<Snapshot, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT seq, id, coalesce(json_extract(data, '$.displayName'), '') FROM resources WHERE kind = 'Group'",
    )?;
    let groups: Vec<(i64, String, String)> =
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<Result<_, _>>()?;
    let mapped = mapped_groups(policy, groups);
    if mapped.is_empty() {
        return Ok(Snapshot::default());
    }
    let seqs: Vec<i64> = mapped.keys().copied().collect();
    let list = serde_json::to_string(&seqs).map_err(|e| StoreError::Internal(e.to_string()))?;
    // With `only`, start from those users (CROSS JOIN keeps SQLite from walking a big
    // group's whole member list to find them); without, from the mapped groups.
    let only = only.map(serde_json::to_string).transpose().map_err(|e| StoreError::Internal(e.to_string()))?;
    let sql = if only.is_some() {
        "SELECT gm.group_seq, u.id, coalesce(json_extract(u.data, '$.userName'), ''), json_extract(u.data, '$.active')
         FROM json_each(?2) AS o CROSS JOIN resources u ON u.id = o.value CROSS JOIN group_members gm ON gm.member_seq = u.seq
         WHERE u.kind = 'User' AND gm.group_seq IN (SELECT value FROM json_each(?1))
         ORDER BY gm.member_seq, gm.group_seq"
    } else {
        "SELECT gm.group_seq, u.id, coalesce(json_extract(u.data, '$.userName'), ''), json_extract(u.data, '$.active')
         FROM group_members gm JOIN resources u ON u.seq = gm.member_seq
         WHERE u.kind = 'User' AND gm.group_seq IN (SELECT value FROM json_each(?1)) AND ?2 IS NULL
         ORDER BY gm.member_seq, gm.group_seq"
    };
    let mut st = conn.prepare_cached(sql)?;
    let rows = st
        .query_map(rusqlite::params![list, only], |r| {
            // JSON false reads back as 0; absent (NULL) is active.
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<i64>>(3)? != Some(0),
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(snapshot_from(&mapped, rows))
}

/// What `w`'s relevance depends on, read before it runs.
fn read_prior(conn: &Connection, need: Need<'_>) -> Result<Prior, StoreError> {
    Ok(match need {
        Need::Nothing => Prior::Nothing,
        Need::GroupName(id) => Prior::GroupName(
            conn.prepare_cached(
                "SELECT json_extract(data, '$.displayName') FROM resources WHERE id = ?1 AND kind = 'Group'",
            )?
            .query_row([id], |r| r.get::<_, Option<String>>(0))
            .optional()?
            .flatten(),
        ),
        Need::UserActive(id) => {
            // JSON false reads back as 0; absent (NULL) is active.
            let old: Option<Option<i64>> = conn
                .prepare_cached("SELECT json_extract(data, '$.active') FROM resources WHERE id = ?1 AND kind = 'User'")?
                .query_row([id], |r| r.get(0))
                .optional()?;
            Prior::UserActive(old.map(|a| a != Some(0)))
        }
        Need::UserGroupNames(id) => Prior::UserGroupNames(
            conn.prepare_cached(
                "SELECT coalesce(json_extract(g.data, '$.displayName'), '') FROM group_members gm
                 JOIN resources g ON g.seq = gm.group_seq JOIN resources u ON u.seq = gm.member_seq
                 WHERE u.id = ?1",
            )?
            .query_map([id], |r| r.get(0))?
            .collect::<Result<_, _>>()?,
        ),
    })
}

/// The ids of the members of group `id`.
fn members_of(conn: &Connection, id: &str) -> Result<Vec<String>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT m.id FROM group_members gm JOIN resources g ON g.seq = gm.group_seq
             JOIN resources m ON m.seq = gm.member_seq WHERE g.id = ?1 AND g.kind = 'Group'",
        )?
        .query_map([id], |r| r.get(0))?
        .collect::<Result<_, _>>()?)
}

/// `policy.account.reprovision_deleted = false`: a create may not bring back a deleted user
/// (same userName, any case, or same externalId).
fn was_deleted(conn: &Connection, n: &NewResource) -> Result<(), StoreError> {
    let name = n.attrs.get("userName").and_then(serde_json::Value::as_str).map(crate::model::fold_case);
    let ext = n.attrs.get("externalId").and_then(serde_json::Value::as_str);
    let hit: Option<(String, String)> = conn
        .prepare_cached(
            "SELECT coalesce(user_name_ci, external_id), deleted_at FROM deleted_accounts
             WHERE (?1 IS NOT NULL AND user_name_ci = ?1) OR (?2 IS NOT NULL AND external_id = ?2)
             ORDER BY deleted_at DESC LIMIT 1",
        )?
        .query_row(rusqlite::params![name, ext], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match hit {
        Some((who, when)) => Err(deleted_refusal(&who, &when)),
        None => Ok(()),
    }
}

/// `policy.account.unique_emails`: no other user may have an email address of this one
/// (compared without case, as stored in `resource_emails`).
fn unique_emails(conn: &Connection, user_id: &str) -> Result<(), StoreError> {
    let taken: Option<String> = conn
        .prepare_cached(
            "SELECT mine.value_ci FROM resources me
             JOIN resource_emails mine ON mine.resource_seq = me.seq
             JOIN resource_emails other ON other.value_ci = mine.value_ci AND other.resource_seq != me.seq
             JOIN resources o ON o.seq = other.resource_seq AND o.kind = 'User'
             WHERE me.id = ?1 LIMIT 1",
        )?
        .query_row([user_id], |r| r.get(0))
        .optional()?;
    match taken {
        Some(value) => Err(StoreError::Unique { attribute: "emails", value }),
        None => Ok(()),
    }
}

/// Run `op` under `policy`: refuse it (nothing applied: the writer rolls the operation back)
/// when it breaks a constraint, and queue an update of every user whose access changed (see
/// `store::types::policed` for the order of the checks).
///
/// Cost: the facts of the users the write touches are read before and after it; only when
/// it could take a seat or drop a kept role's holders (the only checks that need counts
/// over everyone) are the facts of every member of a mapped group read, once, after the
/// write (the state before is that, with the touched users' earlier facts put back).
pub fn apply_under<T>(
    conn: &Connection,
    policy: &Policy,
    op: WriteOp,
    now: &str,
    run: impl FnOnce(&Connection, WriteOp) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let w = match &op {
        WriteOp::Create(n) => PolicedWrite::Create(n),
        WriteOp::Update(u) => PolicedWrite::Update(u),
        WriteOp::Delete { kind, id, .. } => PolicedWrite::Delete { kind: *kind, id },
        _ => return run(conn, op),
    };
    let email_check = w.email_check(policy).map(str::to_string);
    if let Some(n) = w.reprovision_check(policy) {
        was_deleted(conn, n)?;
    }
    let mut touched = None;
    if !policy.is_empty() {
        let prior = read_prior(conn, w.needs())?;
        if w.relevant(policy, &prior) {
            let members = match w.members_needed(&prior) {
                Some(group) => members_of(conn, group)?,
                None => Vec::new(),
            };
            let ids = w.affected(members);
            let before = snapshot(conn, policy, Some(&ids))?;
            touched = Some((ids, before));
        }
    }
    let out = run(conn, op)?;
    if let Some((ids, before)) = touched {
        let after = snapshot(conn, policy, Some(&ids))?;
        let all_after = match constraints::needs_counts(policy, &before, &after) {
            true => Some(snapshot(conn, policy, None)?),
            false => None,
        };
        for id in verdict(policy, &ids, &before, &after, all_after.as_ref())? {
            resources::enqueue_access_change(conn, &id, now)?;
        }
    }
    if let Some(id) = email_check {
        unique_emails(conn, &id)?;
    }
    Ok(out)
}
