//! The facts the provisioning policy needs, read inside the writer's transaction: who is in
//! which mapped group, and who is active. A write under a policy reads them before and after
//! the operation (in the operation's savepoint), asks `policy::constraints` for a verdict,
//! and queues a user update for every user whose effective access changed. Because the one
//! writer runs operations one after another, two concurrent requests cannot both pass a
//! check that only one of them may pass (the last seat, the last admin).
//!
//! SQL only; the evaluation is `crate::policy`'s.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{Connection, OptionalExtension};

use super::writer::WriteOp;
use super::{StoreError, resources};
use crate::model::ResourceKind;
use crate::policy::{Policy, Snapshot, UserFacts, constraints};

/// Every user in a group some rule maps (or only those of `only`), with its mapped groups
/// and `active` flag.
pub fn snapshot(conn: &Connection, policy: &Policy, only: Option<&BTreeSet<String>>) -> Result<Snapshot, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT seq, id, coalesce(json_extract(data, '$.displayName'), '') FROM resources WHERE kind = 'Group'",
    )?;
    let groups: Vec<(i64, String, String)> =
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<Result<_, _>>()?;
    let mapped: BTreeMap<i64, (String, String)> =
        groups.into_iter().filter(|(_, _, name)| policy.is_mapped(name)).map(|(s, id, n)| (s, (id, n))).collect();
    let mut snap = Snapshot::default();
    if mapped.is_empty() {
        return Ok(snap);
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
    let rows = st.query_map(rusqlite::params![list, only], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, Option<i64>>(3)?))
    })?;
    for row in rows {
        let (gseq, uid, user_name, active) = row?;
        let u = snap.users.entry(uid).or_insert_with(|| UserFacts {
            user_name,
            // `active` absent means active (RFC 7643 §4.1.1 leaves it to us; we provision
            // such users as active); JSON false reads back as 0.
            active: active != Some(0),
            groups: Vec::new(),
        });
        if let Some((gid, name)) = mapped.get(&gseq) {
            u.groups.push((gid.clone(), name.clone()));
        }
    }
    Ok(snap)
}

/// Whether `op` can change what the policy looks at (memberships of mapped groups, the
/// `active` flag of their members), so writes that cannot are not slowed by the snapshots.
/// A new user is in no group yet; a user update matters only when it flips `active`; a
/// group write only when the group is mapped before or after it (members of unmapped
/// groups count for nothing: nested groups are not expanded).
fn relevant(conn: &Connection, policy: &Policy, op: &WriteOp) -> Result<bool, StoreError> {
    let name_of = |id: &str| -> Result<Option<String>, StoreError> {
        Ok(conn
            .prepare_cached(
                "SELECT json_extract(data, '$.displayName') FROM resources WHERE id = ?1 AND kind = 'Group'",
            )?
            .query_row([id], |r| r.get::<_, Option<String>>(0))
            .optional()?
            .flatten())
    };
    let mapped = |v: Option<&str>| v.is_some_and(|n| policy.is_mapped(n));
    Ok(match op {
        WriteOp::Create(n) => {
            n.kind == ResourceKind::Group
                && !n.members.is_empty()
                && mapped(n.attrs.get("displayName").and_then(|v| v.as_str()))
        }
        WriteOp::Update(u) if u.kind == ResourceKind::User => {
            let Some(attrs) = &u.attrs else { return Ok(false) };
            let new_active = attrs.get("active") != Some(&serde_json::Value::Bool(false));
            // JSON false reads back as 0; absent (NULL) is active.
            let old: Option<Option<i64>> = conn
                .prepare_cached("SELECT json_extract(data, '$.active') FROM resources WHERE id = ?1 AND kind = 'User'")?
                .query_row([&u.id], |r| r.get(0))
                .optional()?;
            match old {
                None => false,
                Some(a) => (a != Some(0)) != new_active,
            }
        }
        WriteOp::Update(u) => {
            mapped(name_of(&u.id)?.as_deref())
                || mapped(u.attrs.as_ref().and_then(|a| a.get("displayName")).and_then(|v| v.as_str()))
        }
        WriteOp::Delete { kind: ResourceKind::Group, id, .. } => mapped(name_of(id)?.as_deref()),
        WriteOp::Delete { kind: ResourceKind::User, id, .. } => {
            let names: Vec<String> = conn
                .prepare_cached(
                    "SELECT coalesce(json_extract(g.data, '$.displayName'), '') FROM group_members gm
                     JOIN resources g ON g.seq = gm.group_seq JOIN resources u ON u.seq = gm.member_seq
                     WHERE u.id = ?1",
                )?
                .query_map([id], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            names.iter().any(|n| policy.is_mapped(n))
        }
        _ => false,
    })
}

/// `policy.account.reprovision_deleted = false`: a create may not bring back a deleted user
/// (same userName, any case, or same externalId).
fn was_deleted(conn: &Connection, n: &super::NewResource) -> Result<(), StoreError> {
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
        Some((who, when)) => Err(StoreError::Policy(format!(
            "the account {who:?} was deleted at {when} and policy.account.reprovision_deleted = false refuses \
             to provision it again; an administrator must restore it in the app (or allow re-provisioning)"
        ))),
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

/// The users whose facts `op` can change: the members a group write adds or removes (all
/// of its members when it is renamed, replaced, created or deleted), or the user itself.
fn affected(conn: &Connection, op: &WriteOp) -> Result<BTreeSet<String>, StoreError> {
    let members_of = |id: &str| -> Result<Vec<String>, StoreError> {
        Ok(conn
            .prepare_cached(
                "SELECT m.id FROM group_members gm JOIN resources g ON g.seq = gm.group_seq
                 JOIN resources m ON m.seq = gm.member_seq WHERE g.id = ?1 AND g.kind = 'Group'",
            )?
            .query_map([id], |r| r.get(0))?
            .collect::<Result<_, _>>()?)
    };
    let mut out = BTreeSet::new();
    match op {
        WriteOp::Create(n) => out.extend(n.members.iter().map(|m| m.id.clone())),
        WriteOp::Update(u) if u.kind == ResourceKind::Group => {
            let renamed = match u.attrs.as_ref() {
                None => false,
                Some(a) => {
                    let new = a.get("displayName").and_then(|v| v.as_str()).map(str::to_string);
                    let old: Option<String> = conn
                        .prepare_cached("SELECT json_extract(data, '$.displayName') FROM resources WHERE id = ?1")?
                        .query_row([&u.id], |r| r.get(0))
                        .optional()?
                        .flatten();
                    new != old
                }
            };
            if renamed || u.members.replace.is_some() {
                out.extend(members_of(&u.id)?);
            }
            out.extend(u.members.replace.iter().flatten().map(|m| m.id.clone()));
            out.extend(u.members.add.iter().map(|m| m.id.clone()));
            out.extend(u.members.remove.iter().cloned());
        }
        WriteOp::Update(u) => {
            out.insert(u.id.clone());
        }
        WriteOp::Delete { kind: ResourceKind::Group, id, .. } => out.extend(members_of(id)?),
        WriteOp::Delete { id, .. } => {
            out.insert(id.clone());
        }
        _ => {}
    }
    Ok(out)
}

/// Run `op` under `policy`: refuse it (nothing applied: the caller's savepoint rolls back)
/// when it breaks a constraint, and queue an update of every user whose access changed.
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
    let email_check = match &op {
        WriteOp::Create(n) if policy.account.unique_emails && n.kind == ResourceKind::User => Some(n.id.clone()),
        WriteOp::Update(u) if policy.account.unique_emails && u.kind == ResourceKind::User && u.attrs.is_some() => {
            Some(u.id.clone())
        }
        _ => None,
    };
    if let WriteOp::Create(n) = &op
        && n.kind == ResourceKind::User
        && !policy.account.reprovision_deleted
    {
        was_deleted(conn, n)?;
    }
    if policy.is_empty() || !relevant(conn, policy, &op)? {
        let out = run(conn, op)?;
        if let Some(id) = email_check {
            unique_emails(conn, &id)?;
        }
        return Ok(out);
    }
    let touched = affected(conn, &op)?;
    let before = snapshot(conn, policy, Some(&touched))?;
    let out = run(conn, op)?;
    let after = snapshot(conn, policy, Some(&touched))?;
    let verdict = if constraints::needs_counts(policy, &before, &after) {
        let all_after = snapshot(conn, policy, None)?;
        let all_before = constraints::splice(&all_after, &touched, &before);
        constraints::evaluate(policy, &all_before, &all_after)
    } else {
        constraints::evaluate(policy, &before, &after)
    };
    for id in verdict.map_err(|v| StoreError::Policy(v.to_string()))? {
        resources::enqueue_access_change(conn, &id, now)?;
    }
    if let Some(id) = email_check {
        unique_emails(conn, &id)?;
    }
    Ok(out)
}
