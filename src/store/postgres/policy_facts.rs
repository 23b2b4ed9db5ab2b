//! The provisioning policy on PostgreSQL: the facts the policy needs (who is in which mapped
//! group, who is active, deleted accounts, email addresses) read with SQL on the write's own
//! transaction, before and after the write, as the SQLite backend's `policy_facts` reads
//! them in its writer's savepoint. What to read and what it means is
//! `store::types::policed`'s, the verdict `crate::policy`'s; only the SQL is here.
//!
//! Serialising: SQLite has one writer, so two requests can never both pass a check only one
//! of them may pass (the last seat, the last admin, one email address). Here every write is
//! its own transaction, on any node. So a policed write that may need a check
//! ([`PolicedWrite::needs_serialising`], decided from the request alone) first takes one
//! transaction-scoped advisory lock ([`POLICY_LOCK_PREFIX`]) before it reads anything:
//! such writes then run one at a time across every daemon on the database, each one's
//! statements (READ COMMITTED) seeing the ones committed before it. Taking it before any row
//! lock keeps the lock order one way (advisory, then rows), so it cannot deadlock with the
//! row locks writes take. The cost: under a policy with group rules, every group write,
//! user delete and user update with attributes waits for the one before it; user creates
//! wait only under an account policy (unique emails, no re-provisioning).

use std::collections::BTreeSet;

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::model::{OutboxPayload, ResourceKind, fold_case};
use crate::policy::{Policy, Snapshot, constraints};
use crate::store::types::{
    Need, NewResource, PolicedWrite, Prior, StoreError, deleted_refusal, mapped_groups, snapshot_from, verdict,
};

/// What the key of the advisory lock that serialises policed writes is made of, with the
/// schema name (FNV-1a, as the migrations' key, whose prefix differs): daemons on one schema
/// share it; stores in other schemas of the database do not wait for each other.
pub const POLICY_LOCK_PREFIX: &str = "scimsync policy:";

/// The policy lock's key for `schema`.
pub fn lock_key(schema: &str) -> i64 {
    super::migrations::advisory_key(POLICY_LOCK_PREFIX, schema)
}

async fn query(c: &impl GenericClient, sql: &str, p: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
    Ok(c.query(&c.prepare_cached(sql).await?, p).await?)
}

async fn query_opt(c: &impl GenericClient, sql: &str, p: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>, StoreError> {
    Ok(c.query_opt(&c.prepare_cached(sql).await?, p).await?)
}

/// `active` as the policy reads it: absent (or anything but JSON false) is active.
const ACTIVE: &str = "(u.data -> 'active') IS DISTINCT FROM 'false'::jsonb";

/// Every user in a group some rule maps (or only those of `only`), with its mapped groups
/// and `active` flag, in the order SQLite's reads them (by member, then group).
pub async fn snapshot(
    c: &impl GenericClient,
    policy: &Policy,
    only: Option<&BTreeSet<String>>,
) -> Result<Snapshot, StoreError> {
    let groups =
        query(c, "SELECT seq, id, coalesce(data ->> 'displayName', '') FROM resources WHERE kind = 'Group'", &[])
            .await?;
    let mapped = mapped_groups(policy, groups.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect());
    if mapped.is_empty() {
        return Ok(Snapshot::default());
    }
    let seqs: Vec<i64> = mapped.keys().copied().collect();
    let rows = match only {
        Some(ids) => {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            query(
                c,
                &format!(
                    "SELECT gm.group_seq, u.id, coalesce(u.data ->> 'userName', ''), {ACTIVE}
                     FROM resources u JOIN group_members gm ON gm.member_seq = u.seq
                     WHERE u.id = ANY($2) AND u.kind = 'User' AND gm.group_seq = ANY($1)
                     ORDER BY gm.member_seq, gm.group_seq"
                ),
                &[&seqs, &ids],
            )
            .await?
        }
        None => {
            query(
                c,
                &format!(
                    "SELECT gm.group_seq, u.id, coalesce(u.data ->> 'userName', ''), {ACTIVE}
                     FROM group_members gm JOIN resources u ON u.seq = gm.member_seq
                     WHERE u.kind = 'User' AND gm.group_seq = ANY($1)
                     ORDER BY gm.member_seq, gm.group_seq"
                ),
                &[&seqs],
            )
            .await?
        }
    };
    Ok(snapshot_from(&mapped, rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))))
}

/// What a write's relevance depends on, read before it runs.
async fn read_prior(c: &impl GenericClient, need: Need<'_>) -> Result<Prior, StoreError> {
    Ok(match need {
        Need::Nothing => Prior::Nothing,
        Need::GroupName(id) => Prior::GroupName(
            query_opt(c, "SELECT data ->> 'displayName' FROM resources WHERE id = $1 AND kind = 'Group'", &[&id])
                .await?
                .and_then(|r| r.get(0)),
        ),
        Need::UserActive(id) => Prior::UserActive(
            query_opt(c, &format!("SELECT {ACTIVE} FROM resources u WHERE u.id = $1 AND u.kind = 'User'"), &[&id])
                .await?
                .map(|r| r.get(0)),
        ),
        Need::UserGroupNames(id) => Prior::UserGroupNames(
            query(
                c,
                "SELECT coalesce(g.data ->> 'displayName', '') FROM group_members gm
                 JOIN resources g ON g.seq = gm.group_seq JOIN resources u ON u.seq = gm.member_seq
                 WHERE u.id = $1",
                &[&id],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect(),
        ),
    })
}

/// The ids of the members of group `id`.
async fn members_of(c: &impl GenericClient, id: &str) -> Result<Vec<String>, StoreError> {
    Ok(query(
        c,
        "SELECT m.id FROM group_members gm JOIN resources g ON g.seq = gm.group_seq
         JOIN resources m ON m.seq = gm.member_seq WHERE g.id = $1 AND g.kind = 'Group'",
        &[&id],
    )
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect())
}

/// `policy.account.reprovision_deleted = false`: a create may not bring back a deleted user
/// (same userName, any case, or same externalId).
async fn was_deleted(c: &impl GenericClient, n: &NewResource) -> Result<(), StoreError> {
    let name = n.attrs.get("userName").and_then(serde_json::Value::as_str).map(fold_case);
    let ext = n.attrs.get("externalId").and_then(serde_json::Value::as_str);
    let hit = query_opt(
        c,
        "SELECT coalesce(user_name_ci, external_id), deleted_at FROM deleted_accounts
         WHERE ($1::text IS NOT NULL AND user_name_ci = $1) OR ($2::text IS NOT NULL AND external_id = $2)
         ORDER BY deleted_at DESC LIMIT 1",
        &[&name, &ext],
    )
    .await?;
    match hit {
        Some(r) => Err(deleted_refusal(&r.get::<_, String>(0), &r.get::<_, String>(1))),
        None => Ok(()),
    }
}

/// `policy.account.unique_emails`: no other user may have an email address of this one
/// (compared without case, as stored in `resource_emails`).
async fn unique_emails(c: &impl GenericClient, user_id: &str) -> Result<(), StoreError> {
    let taken = query_opt(
        c,
        "SELECT mine.value_ci FROM resources me
         JOIN resource_emails mine ON mine.resource_seq = me.seq
         JOIN resource_emails other ON other.value_ci = mine.value_ci AND other.resource_seq <> me.seq
         JOIN resources o ON o.seq = other.resource_seq AND o.kind = 'User'
         WHERE me.id = $1 LIMIT 1",
        &[&user_id],
    )
    .await?;
    match taken {
        Some(r) => Err(StoreError::Unique { attribute: "emails", value: r.get(0) }),
        None => Ok(()),
    }
}

/// The effective access of a user changed: queue an attribute update so the app gets its new
/// roles and entitlements (the SQLite backend's `resources::enqueue_access_change`). The
/// user's row is locked first, as every other enqueue of an update holds its resource's row
/// (`outbox::enqueue_update` coalesces into the resource's newest row).
async fn enqueue_access_change(c: &impl GenericClient, id: &str, now: &str) -> Result<(), StoreError> {
    let version = query_opt(c, "SELECT version FROM resources WHERE id = $1 AND kind = 'User' FOR UPDATE", &[&id])
        .await?
        .map(|r| r.get::<_, i64>(0));
    if let Some(v) = version {
        let payload = OutboxPayload { attributes_changed: true, access_changed: true, ..OutboxPayload::default() };
        super::outbox::enqueue_update(c, ResourceKind::User, id, v as u64, &payload, now).await?;
    }
    Ok(())
}

/// A write's policy check, begun by [`begin`] before the write and finished by
/// [`Check::finish`] after it, in the same transaction.
pub struct Check<'p> {
    policy: Option<&'p Policy>,
    /// The user whose emails must be unique after the write.
    email: Option<String>,
    /// For a relevant write: the users it touches and their facts before it.
    touched: Option<(BTreeSet<String>, Snapshot)>,
}

/// Before `w` runs on `c` (a transaction that has done nothing yet): take the policy lock if
/// the write may need a check, refuse a deleted user coming back, and read the touched users'
/// facts. With no policy (or one the store has nothing to do for), nothing.
pub async fn begin<'p>(
    c: &impl GenericClient,
    policy: Option<&'p Policy>,
    w: PolicedWrite<'_>,
    schema: &str,
) -> Result<Check<'p>, StoreError> {
    let mut check = Check { policy: None, email: None, touched: None };
    let Some(policy) = policy.filter(|p| p.needs_store()) else { return Ok(check) };
    if !w.needs_serialising(policy) {
        // Nothing the write does can break a constraint or change anyone's access.
        return Ok(check);
    }
    c.execute(&c.prepare_cached("SELECT pg_advisory_xact_lock($1)").await?, &[&lock_key(schema)]).await?;
    check.policy = Some(policy);
    check.email = w.email_check(policy).map(str::to_string);
    if let Some(n) = w.reprovision_check(policy) {
        was_deleted(c, n).await?;
    }
    if policy.is_empty() {
        return Ok(check);
    }
    let prior = read_prior(c, w.needs()).await?;
    if w.relevant(policy, &prior) {
        let members = match w.members_needed(&prior) {
            Some(group) => members_of(c, group).await?,
            None => Vec::new(),
        };
        let ids = w.affected(members);
        let before = snapshot(c, policy, Some(&ids)).await?;
        check.touched = Some((ids, before));
    }
    Ok(check)
}

impl Check<'_> {
    /// After the write: the verdict (a refusal is [`StoreError::Policy`]; the caller's
    /// transaction then rolls back whole), an access-change update for every user whose
    /// access changed, and the unique email check.
    pub async fn finish(self, c: &impl GenericClient, now: &str) -> Result<(), StoreError> {
        let Some(policy) = self.policy else { return Ok(()) };
        if let Some((ids, before)) = self.touched {
            let after = snapshot(c, policy, Some(&ids)).await?;
            let all_after = match constraints::needs_counts(policy, &before, &after) {
                true => Some(snapshot(c, policy, None).await?),
                false => None,
            };
            for id in verdict(policy, &ids, &before, &after, all_after.as_ref())? {
                enqueue_access_change(c, &id, now).await?;
            }
        }
        if let Some(id) = self.email {
            unique_emails(c, &id).await?;
        }
        Ok(())
    }
}
