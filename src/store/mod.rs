//! The store: resources, memberships, the outbox, sync runs, tokens and the audit log.
//!
//! Owns: the schema and its migrations, every SQL statement, the outbox state transitions.
//! Must not touch: HTTP (server or client), the SCIM wire format, cron.
//!
//! Layout: [`face`] is what callers may ask, one trait per group (resources, outbox, sync,
//! tokens, audit, admin); [`types`] the records that cross it and [`StoreError`]; each
//! backend implements the face in its own directory ([`sqlite`], the embedded default;
//! [`postgres`], being built) and
//! shares nothing with the others but those two files. [`Store`] is the handle the daemon
//! passes around: one backend behind an `Arc<dyn Backend>`, and the provisioning policy
//! resource writes are checked against. No driver type or SQL text leaks past this module.

pub mod copy;
pub mod face;
pub mod postgres;
mod sql_markers;
mod sqlite;
pub mod types;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use face::{AdminStore, AuditStore, Backend, ClusterStore, OutboxStore, ResourceStore, SyncStore, TokenStore};
pub use postgres::{OpenProgress, PgOptions};
pub use sqlite::BackupReport;
pub use types::*;

use crate::model::query::{Filter, Sort};
use crate::model::{Resource, ResourceKind};
use crate::policy::Policy;

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    /// The provisioning policy resource writes are checked against; `None`: no policy.
    policy: Option<Arc<Policy>>,
}

impl Store {
    /// Open (creating when missing) the embedded SQLite store in `opts.data_dir`, apply
    /// migrations, start its writer and readers.
    pub fn open(opts: &StoreOptions) -> Result<Store, StoreError> {
        Ok(Store::from_backend(Arc::new(sqlite::SqliteStore::open(opts)?)))
    }

    /// Open the PostgreSQL store (see [`postgres::PgStore::open`]): retried with backoff while
    /// the database cannot be reached, until it answers or `give_up` fires.
    pub async fn open_postgres(
        opts: &PgOptions,
        progress: &OpenProgress,
        give_up: &tokio_util::sync::CancellationToken,
    ) -> Result<Store, StoreError> {
        Ok(Store::from_backend(Arc::new(postgres::PgStore::open(opts, progress, give_up).await?)))
    }

    /// A handle on an opened backend, without a policy.
    pub fn from_backend(backend: Arc<dyn Backend>) -> Store {
        Store { backend, policy: None }
    }

    /// This handle with resource writes (create, update, delete) checked against `policy`
    /// inside the write's transaction: a write that breaks a constraint fails with
    /// [`StoreError::Policy`] and applies nothing; users whose effective access changes get
    /// an update queued in the same transaction. An empty policy is no policy.
    pub fn with_policy(mut self, policy: Arc<Policy>) -> Store {
        self.policy = policy.needs_store().then_some(policy);
        self
    }

    /// The policy given to [`Store::with_policy`], if any.
    pub fn policy(&self) -> Option<&Arc<Policy>> {
        self.policy.as_ref()
    }

    /// SCIM resources, with this handle's policy applied to writes.
    pub fn resources(&self) -> Resources<'_> {
        Resources { store: self }
    }

    pub fn outbox(&self) -> &dyn OutboxStore {
        &*self.backend
    }

    pub fn sync(&self) -> &dyn SyncStore {
        &*self.backend
    }

    pub fn tokens(&self) -> &dyn TokenStore {
        &*self.backend
    }

    pub fn audit(&self) -> &dyn AuditStore {
        &*self.backend
    }

    pub fn admin(&self) -> &dyn AdminStore {
        &*self.backend
    }

    /// The nodes sharing this store and the leader lease.
    pub fn cluster(&self) -> &dyn ClusterStore {
        &*self.backend
    }

    /// The database file an embedded store in `data_dir` lives in (whether or not it
    /// exists yet).
    pub fn database_path(data_dir: &Path) -> PathBuf {
        sqlite::SqliteStore::database_path(data_dir)
    }

    /// Copy the embedded store in `data_dir` to `dest` while a daemon may write to it, and
    /// verify the copy. Blocking: call from a blocking thread.
    pub fn backup(data_dir: &Path, dest: &Path, busy_timeout_seconds: u64) -> Result<BackupReport, StoreError> {
        sqlite::SqliteStore::backup(data_dir, dest, busy_timeout_seconds)
    }

    /// Stop taking writes after everything queued before this call has committed.
    pub fn close(&self) {
        self.backend.close();
    }
}

/// The resource group of a [`Store`], carrying the handle's policy to every write.
pub struct Resources<'a> {
    store: &'a Store,
}

impl Resources<'_> {
    fn backend(&self) -> &dyn ResourceStore {
        &*self.store.backend
    }

    pub async fn create(&self, new: NewResource, audit: NewAudit) -> Result<Resource, StoreError> {
        self.backend().create(new, audit, self.store.policy.as_ref()).await
    }

    pub async fn update(&self, upd: Update, audit: NewAudit) -> Result<Resource, StoreError> {
        self.backend().update(upd, audit, self.store.policy.as_ref()).await
    }

    /// Read-modify-write in one step where the backend offers it ([`ResourceStore::modify`]);
    /// `Ok(None)` where it does not.
    pub async fn modify(&self, kind: ResourceKind, id: &str, modify: ModifyFn) -> Result<Option<Modified>, StoreError> {
        self.backend().modify(kind, id, modify, self.store.policy.as_ref()).await
    }

    pub async fn delete(
        &self,
        kind: ResourceKind,
        id: &str,
        expected_version: Option<u64>,
        audit: NewAudit,
    ) -> Result<(), StoreError> {
        self.backend().delete(kind, id, expected_version, audit, self.store.policy.as_ref()).await
    }

    pub async fn get(&self, kind: ResourceKind, id: &str, load: Load) -> Result<Option<Resource>, StoreError> {
        self.backend().get(kind, id, load).await
    }

    /// A page of one resource type matching `filter`: ordered by `sort` when given (RFC 7644
    /// §3.4.2.3; missing values last when ascending, first when descending; ties by
    /// creation), else in creation order. `count == 0` returns only the total.
    pub async fn list(
        &self,
        kind: ResourceKind,
        filter: Option<Filter>,
        sort: Option<Sort>,
        position: Position,
        count: u32,
        load: Load,
    ) -> Result<Page, StoreError> {
        let descending = sort.as_ref().map(|s| s.descending);
        let part = ListPart { kind, filter, sort_path: sort.map(|s| s.path) };
        self.backend().list(vec![part], descending, position, count, load).await
    }

    /// One page over several resource types at once (the root `/.search`, RFC 7644 §3.4.3).
    pub async fn list_many(
        &self,
        parts: Vec<ListPart>,
        descending: Option<bool>,
        position: Position,
        count: u32,
        load: Load,
    ) -> Result<Page, StoreError> {
        self.backend().list(parts, descending, position, count, load).await
    }

    /// The effective access (roles, entitlements) of one user as stored now, under the
    /// handle's policy: what the app should have. The outbox worker sends it;
    /// reconciliation compares it with what the app lists. `None` when no policy derives
    /// access (no group rule, no default role) or there is no such user.
    pub async fn effective_access(&self, user_id: &str) -> Result<Option<crate::policy::Access>, StoreError> {
        let Some(policy) = self.store.policy.clone().filter(|p| !p.is_empty()) else { return Ok(None) };
        let Some(user) = self.get(ResourceKind::User, user_id, Load { members: false, groups: true }).await? else {
            return Ok(None);
        };
        let groups = user.groups.unwrap_or_default();
        Ok(Some(policy.access(groups.iter().map(|g| g.display.as_deref().unwrap_or("")))))
    }
}

#[cfg(test)]
mod tests;
