//! [`PgStore`] behind the store's face: each group's operations as one PostgreSQL
//! transaction (writes) or one statement on a pooled connection (reads), with the audit
//! record of an operator's action completed and written in the action's transaction, as
//! the SQLite backend's writer does.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::{PgStore, audit, migrations, outbox, policy_facts, resource_name, resources, sync, tokens};
use crate::model::{Resource, ResourceKind};
use crate::policy::Policy;
use crate::store::face::{AdminStore, AuditStore, OutboxStore, ResourceStore, SyncStore, TokenStore};
use crate::store::types::*;

/// Add `key: value` to an audit record's summary object.
fn note(audit: &mut NewAudit, key: &str, value: Value) {
    if let Some(o) = audit.summary.as_object_mut() {
        o.insert(key.into(), value);
    }
}

/// The summary of an action that dropped rows: how many, and what each was about.
fn note_rows(audit: &mut NewAudit, rows: &[OutboxRow]) {
    let list: Vec<Value> = rows
        .iter()
        .map(|r| serde_json::json!({"outbox_id": r.id, "type": r.kind.as_str(), "id": r.resource_id, "op": r.op.as_str()}))
        .collect();
    note(audit, "count", list.len().into());
    note(audit, "changes", list.into());
}

#[async_trait]
impl ResourceStore for PgStore {
    /// The resource, its emails, members, outbox row and audit record, in one transaction,
    /// checked against `policy` in it (`policy_facts`).
    async fn create(
        &self,
        new: NewResource,
        audit: NewAudit,
        policy: Option<&Arc<Policy>>,
    ) -> Result<Resource, StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        let now = crate::model::now();
        let check = policy_facts::begin(&tx, policy.map(|p| &**p), PolicedWrite::Create(&new), &self.schema).await?;
        let created = resources::create(&tx, new, &now).await?;
        check.finish(&tx, &now).await?;
        resources::insert_audit(&tx, &audit, resource_name(&created), Some(created.meta.version), &now).await?;
        tx.commit().await?;
        Ok(created)
    }

    /// In one transaction that first locks the resource's row (after the policy's lock, when
    /// the write may need the policy's checks: `policy_facts`).
    async fn update(&self, upd: Update, audit: NewAudit, policy: Option<&Arc<Policy>>) -> Result<Resource, StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        let now = crate::model::now();
        let check = policy_facts::begin(&tx, policy.map(|p| &**p), PolicedWrite::Update(&upd), &self.schema).await?;
        let updated = resources::update(&tx, upd, &now).await?;
        check.finish(&tx, &now).await?;
        resources::insert_audit(&tx, &audit, resource_name(&updated), Some(updated.meta.version), &now).await?;
        tx.commit().await?;
        Ok(updated)
    }

    /// The resource goes with its outbox row (the tombstone) and audit record, in one
    /// transaction, checked against `policy` in it.
    async fn delete(
        &self,
        kind: ResourceKind,
        id: &str,
        expected_version: Option<u64>,
        audit: NewAudit,
        policy: Option<&Arc<Policy>>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        let now = crate::model::now();
        let check =
            policy_facts::begin(&tx, policy.map(|p| &**p), PolicedWrite::Delete { kind, id }, &self.schema).await?;
        let name = resources::resource_name(&tx, id).await?;
        resources::delete(&tx, kind, id, expected_version, &now).await?;
        check.finish(&tx, &now).await?;
        resources::insert_audit(&tx, &audit, name.as_deref(), None, &now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get(&self, kind: ResourceKind, id: &str, load: Load) -> Result<Option<Resource>, StoreError> {
        resources::get(&self.conn().await?, kind, id, load).await
    }

    /// Read in one repeatable-read snapshot so the total and the page agree; sorted as on
    /// SQLite (the differential test compares sorted pages too).
    async fn list(
        &self,
        parts: Vec<ListPart>,
        descending: Option<bool>,
        position: Position,
        count: u32,
        load: Load,
    ) -> Result<Page, StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let parts: Vec<resources::Part<'_>> = parts
            .iter()
            .map(|p| resources::Part { kind: p.kind, filter: p.filter.as_ref(), sort_path: p.sort_path.as_ref() })
            .collect();
        let page = resources::list(&tx, &parts, descending, position, count, load).await?;
        tx.commit().await?;
        Ok(page)
    }
}

#[async_trait]
impl OutboxStore for PgStore {
    async fn recover(&self) -> Result<usize, StoreError> {
        // Only the leader re-queues rows in flight: a stale one would re-queue the rows the
        // new leader is delivering.
        let fence = self.fence.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        if !super::cluster::still_leader(&tx, &fence).await? {
            return Ok(0);
        }
        let n = outbox::recover_leases(&tx, &crate::model::now()).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn claim(
        &self,
        limit: usize,
        max_rows: usize,
        lease_until: String,
        guard: Option<GuardPolicy>,
    ) -> Result<Claimed, StoreError> {
        let fence = self.fence.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        // Fencing: a node that lost the lease (partitioned, paused) claims nothing, even
        // before it notices; the lease row stays locked until this claim commits.
        if !super::cluster::still_leader(&tx, &fence).await? {
            return Ok(Claimed::default());
        }
        let claimed = outbox::claim(&tx, limit, max_rows, &crate::model::now(), &lease_until, guard.as_ref()).await?;
        tx.commit().await?;
        Ok(claimed)
    }

    async fn complete(&self, bundle: &Bundle, started_at: String, completion: Completion) -> Result<(), StoreError> {
        let head = bundle.head();
        let ids: Vec<i64> = bundle.rows.iter().map(|r| r.id).collect();
        let fence = self.fence.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        // Fencing, as for the claim: a delivery that ends after this node lost the lease (it
        // was paused or cut off mid-delivery) records nothing. The new leader re-queued its
        // rows at the start of its term and owns them now: a late "retry" would queue a
        // delivered row again, a late "done" would free the rows behind one it is delivering.
        if !super::cluster::still_leader(&tx, &fence).await? {
            tracing::warn!(
                outbox_id = head.id,
                "outbox: a delivery ended after this node lost the leader lease; its outcome is not \
                 recorded (the new leader delivers the row)"
            );
            return Ok(());
        }
        let now = crate::model::now();
        outbox::complete(&tx, head.kind, &head.resource_id, &ids, &started_at, &completion, &now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn release_held(&self, mut audit: NewAudit) -> Result<usize, StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        let now = crate::model::now();
        let n = outbox::release_held(&tx).await?;
        note(&mut audit, "count", n.into());
        resources::insert_audit(&tx, &audit, None, None, &now).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn discard_held(&self, mut audit: NewAudit) -> Result<Vec<OutboxRow>, StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        let now = crate::model::now();
        let rows = outbox::discard_held(&tx).await?;
        note_rows(&mut audit, &rows);
        resources::insert_audit(&tx, &audit, None, None, &now).await?;
        tx.commit().await?;
        Ok(rows)
    }

    async fn retry_dead(&self, id: Option<i64>, mut audit: NewAudit) -> Result<usize, StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        let now = crate::model::now();
        let n = outbox::retry_dead(&tx, id, &now).await?;
        // Retrying nothing is no action, and leaves no record.
        if n > 0 {
            note(&mut audit, "count", n.into());
            resources::insert_audit(&tx, &audit, None, None, &now).await?;
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn drop_row(&self, id: i64, mut audit: NewAudit) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        let now = crate::model::now();
        if let Some(brief) = outbox::brief(&tx, id).await? {
            note(&mut audit, "change", brief);
        }
        let n = outbox::drop_row(&tx, id).await?;
        if n > 0 {
            note(&mut audit, "count", n.into());
            resources::insert_audit(&tx, &audit, None, None, &now).await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn resync(&self, kind: ResourceKind, id: &str, mut audit: NewAudit) -> Result<i64, StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        let now = crate::model::now();
        let name = resources::resource_name(&tx, id).await?;
        let outbox_id = outbox::resync(&tx, kind, id, &now).await?;
        note(&mut audit, "outbox_id", outbox_id.into());
        resources::insert_audit(&tx, &audit, name.as_deref(), None, &now).await?;
        tx.commit().await?;
        Ok(outbox_id)
    }

    async fn list(&self, state: Option<OutboxState>, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        outbox::list(&self.conn().await?, state, limit).await
    }

    async fn get(&self, id: i64) -> Result<Option<(OutboxRow, Vec<Attempt>)>, StoreError> {
        outbox::get(&self.conn().await?, id).await
    }

    async fn depth(&self) -> Result<(u64, Option<String>), StoreError> {
        outbox::depth(&self.conn().await?).await
    }

    async fn counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        outbox::counts(&self.conn().await?).await
    }

    async fn rows_of(&self, resource_id: &str) -> Result<Vec<(String, u64, String)>, StoreError> {
        outbox::rows_of(&self.conn().await?, resource_id).await
    }

    async fn guard_status(&self) -> Result<GuardStatus, StoreError> {
        outbox::guard_status(&self.conn().await?).await
    }

    async fn held_changes(&self, limit: usize) -> Result<Vec<HeldChange>, StoreError> {
        outbox::held(&self.conn().await?, limit).await
    }

    async fn recent_attempts(&self, limit: usize, failures_only: bool) -> Result<Vec<DeliveryAttempt>, StoreError> {
        outbox::recent_attempts(&self.conn().await?, limit, failures_only).await
    }

    async fn app_id(&self, resource_id: &str) -> Result<Option<String>, StoreError> {
        outbox::app_id(&self.conn().await?, resource_id).await
    }

    async fn has_undelivered(&self, resource_id: &str) -> Result<bool, StoreError> {
        outbox::has_undelivered(&self.conn().await?, resource_id).await
    }
}

#[async_trait]
impl AuditStore for PgStore {
    async fn list(&self, q: AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        audit::list(&self.conn().await?, &q).await
    }

    async fn prune(&self, before: &str, batch: usize) -> Result<usize, StoreError> {
        let batch = batch.max(1);
        let mut total = 0;
        loop {
            // One short transaction per batch, so writers are never held long.
            let n = audit::prune(&self.conn().await?, before, batch).await?;
            total += n;
            if n < batch {
                return Ok(total);
            }
        }
    }
}

#[async_trait]
impl TokenStore for PgStore {
    async fn create(&self, label: &str, mut audit: NewAudit) -> Result<NewToken, StoreError> {
        let tok = generate_token(label)?;
        audit.resource_id = Some(tok.public.id.clone());
        note(&mut audit, "label", label.into());
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        let now = crate::model::now();
        tokens::insert(&tx, &tok, &now).await?;
        resources::insert_audit(&tx, &audit, None, None, &now).await?;
        tx.commit().await?;
        Ok(tok.public)
    }

    async fn revoke(&self, id: &str, mut audit: NewAudit) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        let now = crate::model::now();
        let n = tokens::revoke(&tx, id, &now).await?;
        // Revoking an unknown or revoked token is no action, and leaves no record.
        if n > 0 {
            note(&mut audit, "count", n.into());
            resources::insert_audit(&tx, &audit, None, None, &now).await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn list(&self) -> Result<Vec<TokenInfo>, StoreError> {
        tokens::list(&self.conn().await?).await
    }

    async fn verify(&self, presented: &str) -> Result<Option<TokenInfo>, StoreError> {
        tokens::verify(&self.conn().await?, presented).await
    }
}

#[async_trait]
impl SyncStore for PgStore {
    async fn match_page(&self, kind: ResourceKind, keys: Vec<AppKey>) -> Result<Vec<PageMatch>, StoreError> {
        sync::match_page(&self.conn().await?, kind, &keys).await
    }

    async fn all_ids(&self, kind: ResourceKind) -> Result<Vec<(String, String)>, StoreError> {
        sync::all_ids(&self.conn().await?, kind).await
    }

    async fn load_unmatched(&self, kind: ResourceKind, ids: Vec<String>) -> Result<Vec<Matched>, StoreError> {
        sync::load_unmatched(&self.conn().await?, kind, &ids).await
    }

    async fn names_for_app_ids(&self, app_ids: Vec<String>) -> Result<Vec<Option<(String, String)>>, StoreError> {
        sync::names_for_app_ids(&self.conn().await?, &app_ids).await
    }

    async fn stuck(&self, older_than: String, limit: usize) -> Result<Vec<Stuck>, StoreError> {
        sync::stuck(&self.conn().await?, &older_than, limit).await
    }

    async fn run_start(&self, trigger: &str) -> Result<i64, StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        let id = sync::run_start(&tx, trigger, &crate::model::now()).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn run_finish(&self, id: i64, finish: RunFinish) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        sync::run_finish(&tx, id, &finish, &crate::model::now()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn close_running(&self, reason: &str) -> Result<usize, StoreError> {
        sync::close_running(&self.conn().await?, reason, &crate::model::now()).await
    }

    async fn runs(&self, limit: usize) -> Result<Vec<SyncRun>, StoreError> {
        sync::runs(&self.conn().await?, limit).await
    }

    async fn run(&self, id: Option<i64>) -> Result<Option<SyncRun>, StoreError> {
        sync::run(&self.conn().await?, id).await
    }

    async fn drift_items(&self, run_id: i64) -> Result<Vec<DriftRow>, StoreError> {
        sync::items(&self.conn().await?, run_id).await
    }

    async fn repair(&self, run_id: i64, ops: Vec<RepairOp>) -> Result<Vec<RepairResult>, StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        let results = sync::repair(&tx, &ops, run_id, &crate::model::now()).await?;
        tx.commit().await?;
        Ok(results)
    }

    async fn requeue_dead(&self) -> Result<Vec<i64>, StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        let ids = sync::requeue_dead(&tx, &crate::model::now()).await?;
        tx.commit().await?;
        Ok(ids)
    }

    async fn target_switch(&self, identity: &str) -> Result<TargetSwitch, StoreError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        let out = sync::target_switch(&tx, identity, &crate::model::now()).await?;
        tx.commit().await?;
        Ok(out)
    }
}

#[async_trait]
impl AdminStore for PgStore {
    /// Also refreshes the value [`AdminStore::size_bytes`] returns.
    async fn schema_version(&self) -> Result<(u64, u64), StoreError> {
        let conn = self.conn().await?;
        let current = migrations::current(&conn, &self.schema).await?;
        self.refresh_size(&**conn).await?;
        Ok((current, migrations::expected()))
    }

    /// The session settings every connection runs with, as the server reports them (on a
    /// pooled connection: every connection writes). Also refreshes the value
    /// [`AdminStore::size_bytes`] returns.
    async fn settings(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read_settings().await
    }

    /// The schema's tables with their indexes and TOAST, as of the last `settings()` or
    /// `schema_version()` call (0 before the first): the method is synchronous and the
    /// query is not, and `/readyz` calls `settings()` often enough to keep it fresh.
    fn size_bytes(&self) -> u64 {
        self.size.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Close the pool: waiting and later checkouts fail with an error; a transaction under
    /// way finishes on the connection it holds.
    fn close(&self) {
        self.pool.close();
    }
}
