//! Use-cases: apply one SCIM command. Each write is one store operation, which commits the
//! resource rows and the outbox row together before it returns; the HTTP reply is built
//! from what the store returned, after the commit.
//!
//! Owns: the transaction boundary and the read-modify-write of PUT and PATCH (optimistic:
//! the write names the version it was computed from and is retried if another write got in
//! first). Must not touch: warp types, reqwest, SQL.

pub mod access;
mod audit_summary;

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::Notify;

use crate::model::query::Filter;
use crate::model::{MemberDelta, Resource, ResourceKind};
use crate::policy::account::{AccountPolicy, Refusal};
use crate::scim::patch::{self, PatchError};
use crate::scim::{ScimError, ScimType, bulk, cursor, filter, list, resource, schema};
use crate::store::{
    ListPart, Load, Modified, ModifyFn, NewAudit, NewResource, Page, Position, Store, StoreError, TokenInfo, Update,
};

/// Errors of a use-case: a protocol error to show the IdP as it is, or a failure that
/// `http` turns into 503/500 without showing internals.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Scim(#[from] ScimError),
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { kind, id } => ScimError::not_found(format!("{kind} {id} not found")).into(),
            StoreError::Unique { attribute, value } => {
                ScimError::uniqueness(format!("{attribute} {value:?} is already in use")).into()
            }
            StoreError::VersionMismatch { expected, current } => ScimError::precondition_failed(format!(
                "resource is at version {} but the request was based on {}",
                resource::etag(current),
                resource::etag(expected)
            ))
            .into(),
            StoreError::UnknownMember(id) => {
                ScimError::invalid_value(format!("members: {id:?} is not the id of an existing user or group")).into()
            }
            // A policy constraint (RFC 7644 §3.12: 409 when the service provider refuses a
            // change that conflicts with its state). No scimType: `uniqueness` would tell an
            // IdP that the resource exists already (Entra then tries to match it), which is
            // not what happened; the detail says which constraint and what to do.
            StoreError::Policy(detail) => ScimError::new(409, None, detail).into(),
            StoreError::Closed => ServiceError::Unavailable("shutting down".into()),
            StoreError::Unavailable(why) => ServiceError::Unavailable(format!("the store is unavailable ({why})")),
            StoreError::Internal(m) => ServiceError::Internal(m),
        }
    }
}

/// A PATCH whose member filter needs the group's member list, which a one-step
/// read-modify-write does not load: the caller falls back to reading it first.
#[derive(Debug, thiserror::Error)]
#[error("the PATCH needs the group's member list")]
struct NeedsMemberList;

/// Where a change came from, for the audit log: the authenticated token and the IdP's own
/// request id, when it sent one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Origin {
    pub token_id: String,
    pub request_id: Option<String>,
}

impl Origin {
    fn audit(&self, method: &str, kind: ResourceKind, id: Option<&str>, summary: Value) -> NewAudit {
        NewAudit {
            actor: "token".into(),
            token_id: Some(self.token_id.clone()),
            method: method.into(),
            resource_type: kind.as_str().into(),
            resource_id: id.map(str::to_string),
            request_id: self.request_id.clone(),
            summary,
        }
    }
}

/// The resource a bulk operation applied to: its type and id.
type Target = (ResourceKind, String);

/// Optimistic retries of a read-modify-write before giving up (503, retry later).
const MAX_ATTEMPTS: u64 = 32;

/// A short, growing pause between optimistic retries so concurrent writers to one resource
/// spread out instead of colliding again at once.
async fn backoff(attempt: u64) {
    if attempt > 0 {
        tokio::time::sleep(std::time::Duration::from_micros(200 * attempt)).await;
    }
}

/// List settings from the config.
#[derive(Debug, Clone)]
pub struct ListLimits {
    pub default_page_size: u32,
    pub max_page_size: u32,
}

#[derive(Clone)]
pub struct Service {
    store: Store,
    limits: ListLimits,
    /// Woken after every committed change so the outbox worker delivers without polling delay.
    wake: Arc<Notify>,
    /// `[policy.account]`: reactivation, immutable attributes, inactive users in lists.
    account: AccountPolicy,
}

/// A list query after validation: filter resolved against the schema, page bounded.
pub struct ListRequest {
    pub filter: Option<String>,
    /// `sortBy` and `sortOrder` as sent (RFC 7644 §3.4.2.3).
    pub sort_by: Option<String>,
    pub sort_order: Option<String>,
    pub start_index: u64,
    pub count: Option<u32>,
    pub load: Load,
    /// RFC 9865: the `cursor` sent (`Some("")`: the first page by cursor).
    pub cursor: Option<String>,
    /// Whether `startIndex` was sent: a request pages by index or by cursor, not both.
    pub start_index_given: bool,
}

/// A page as listed, and (paged by cursor, RFC 9865) the cursor of the next page.
#[derive(Debug)]
pub struct Listed {
    pub page: Page,
    /// `None`: paged by index. `Some(None)`: by cursor, the last page. `Some(Some(c))`: by
    /// cursor, `c` asks for the next page.
    pub next_cursor: Option<Option<String>>,
}

impl Service {
    pub fn new(store: Store, limits: ListLimits, wake: Arc<Notify>) -> Self {
        Service { store, limits, wake, account: AccountPolicy::default() }
    }

    /// This service with the account policies of `[policy.account]` applied to user updates
    /// and lists.
    pub fn with_account_policy(mut self, account: AccountPolicy) -> Self {
        self.account = account;
        self
    }

    /// A user update checked against the account policy (`ignore`d reactivations are undone
    /// in `new`).
    fn check_account(
        &self,
        kind: ResourceKind,
        old: &serde_json::Map<String, Value>,
        new: &mut serde_json::Map<String, Value>,
    ) -> Result<(), ServiceError> {
        if kind != ResourceKind::User {
            return Ok(());
        }
        self.account.check_update(old, new).map_err(|r| {
            let detail = r.detail();
            match r {
                // RFC 7644 §3.12: "mutability", the modification is incompatible with the
                // attribute's mutability (immutable, with an existing value).
                Refusal::Immutable { .. } => ScimError::mutability(detail).into(),
                // A policy refusal of the account's state, like the constraints: 409.
                Refusal::Reactivation => ScimError::new(409, None, detail).into(),
            }
        })
    }

    fn committed<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if r.is_ok() {
            self.wake.notify_one();
        }
        r
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub async fn authenticate(&self, token: &str) -> Result<Option<TokenInfo>, ServiceError> {
        Ok(self.store.tokens().verify(token).await?)
    }

    pub async fn create(&self, origin: &Origin, kind: ResourceKind, body: Value) -> Result<Resource, ServiceError> {
        let parsed = resource::parse_input(kind, body)?;
        let new = NewResource {
            kind,
            // Time-ordered (UUID v7, RFC 9562 §5.7): a new id sorts after the ones before
            // it, so every index on resource ids (the resources' own, the outbox's, the
            // audit log's) grows at its right edge instead of dirtying a random leaf page
            // per create. Ids stay opaque to clients (RFC 7643 §3.1); v4 ids already
            // issued stay valid.
            id: uuid::Uuid::now_v7().to_string(),
            attrs: parsed.attrs,
            members: parsed.members.unwrap_or_default(),
        };
        let summary = audit_summary::created(&new.attrs, new.members.len());
        let audit = origin.audit("POST", kind, Some(&new.id), summary);
        match self.store.resources().create(new, audit).await {
            // Idempotent create (policy.account.existing_email_on_create = "return_existing"):
            // the account that has the address is the answer, unchanged.
            Err(StoreError::Unique { attribute: "emails", value }) if self.returns_existing(kind) => {
                let text = format!("emails.value eq {}", Value::String(value.clone()));
                let filter = parse_filter(kind, &text)?;
                let page = self
                    .store
                    .resources()
                    .list(kind, Some(filter), None, Position::Offset(0), 1, Load::default())
                    .await?;
                match page.resources.into_iter().next() {
                    Some(existing) => Ok(existing),
                    None => Err(StoreError::Unique { attribute: "emails", value }.into()),
                }
            }
            r => Ok(self.committed(r)?),
        }
    }

    fn returns_existing(&self, kind: ResourceKind) -> bool {
        kind == ResourceKind::User
            && self.store.policy().is_some_and(|p| {
                p.account.unique_emails
                    && p.account.existing_email_on_create == crate::policy::account::ExistingEmail::ReturnExisting
            })
    }

    pub async fn get(&self, kind: ResourceKind, id: &str, load: Load) -> Result<Resource, ServiceError> {
        self.store
            .resources()
            .get(kind, id, load)
            .await?
            .ok_or_else(|| ScimError::not_found(format!("{} {id} not found", kind.as_str())).into())
    }

    /// PUT (RFC 7644 §3.5.1): the body replaces every client-settable attribute. The
    /// write-only `password`, which the IdP cannot read back, is kept when not sent; a
    /// group's `members` are replaced by the list sent (none when the key is absent).
    pub async fn replace(
        &self,
        origin: &Origin,
        kind: ResourceKind,
        id: &str,
        body: Value,
        if_match: Option<u64>,
    ) -> Result<Resource, ServiceError> {
        let parsed = Arc::new(resource::parse_input(kind, body)?);
        let (svc, who, p) = (self.clone(), origin.clone(), parsed.clone());
        let compute: ModifyFn = Arc::new(move |cur: &Resource| Ok(svc.replaced(&who, cur, &p, if_match)?));
        if let Some(done) = self.in_one_step(kind, id, compute).await {
            return done;
        }
        for attempt in 0..MAX_ATTEMPTS {
            backoff(attempt).await;
            let cur = self.get(kind, id, Load::default()).await?;
            let (upd, audit) = self.replaced(origin, &cur, &parsed, if_match)?;
            if let Some(done) = self.commit_read_modify_write(upd, audit, if_match).await {
                return done;
            }
        }
        Err(ServiceError::Unavailable("the resource is changing too fast; retry".into()))
    }

    /// The write a PUT makes of `cur` and its audit record (pure: no I/O).
    fn replaced(
        &self,
        origin: &Origin,
        cur: &Resource,
        parsed: &resource::Parsed,
        if_match: Option<u64>,
    ) -> Result<(Update, NewAudit), ServiceError> {
        let kind = cur.kind;
        check_if_match(if_match, cur.meta.version)?;
        let mut attrs = parsed.attrs.clone();
        if let (None, Some(pw)) = (attrs.get("password"), cur.attrs.get("password")) {
            attrs.insert("password".into(), pw.clone());
        }
        self.check_account(kind, &cur.attrs, &mut attrs)?;
        let members = match (kind, &parsed.members) {
            (ResourceKind::Group, m) => {
                MemberDelta { replace: Some(m.clone().unwrap_or_default()), ..Default::default() }
            }
            _ => MemberDelta::default(),
        };
        let summary = audit_summary::replaced(&cur.attrs, &attrs, &members);
        let upd =
            Update { kind, id: cur.id.clone(), expected_version: Some(cur.meta.version), attrs: Some(attrs), members };
        let audit = origin.audit("PUT", kind, Some(&cur.id), summary);
        Ok((upd, audit))
    }

    /// Commit an update computed from the version read. `None`: the resource moved on since
    /// (and no If-Match pins a version), so the caller reads it again and recomputes.
    async fn commit_read_modify_write(
        &self,
        upd: Update,
        audit: NewAudit,
        if_match: Option<u64>,
    ) -> Option<Result<Resource, ServiceError>> {
        match self.committed(self.store.resources().update(upd, audit).await) {
            Err(StoreError::VersionMismatch { .. }) if if_match.is_none() => None,
            other => Some(other.map_err(Into::into)),
        }
    }

    /// PATCH (RFC 7644 §3.5.2): every operation applies, or none does.
    pub async fn patch(
        &self,
        origin: &Origin,
        kind: ResourceKind,
        id: &str,
        body: Value,
        if_match: Option<u64>,
    ) -> Result<Resource, ServiceError> {
        let ops = Arc::new(patch::parse_request(kind, &body)?);
        let (svc, who, o) = (self.clone(), origin.clone(), ops.clone());
        let compute: ModifyFn = Arc::new(move |cur: &Resource| match svc.patched(&who, cur, &o, if_match, None)? {
            Some(change) => Ok(change),
            None => Err(Box::new(NeedsMemberList)),
        });
        if let Some(done) = self.in_one_step(kind, id, compute).await {
            return done;
        }
        for attempt in 0..MAX_ATTEMPTS {
            backoff(attempt).await;
            let cur = self.get(kind, id, Load::default()).await?;
            let change = match self.patched(origin, &cur, &ops, if_match, None)? {
                Some(change) => change,
                None => {
                    // A member filter other than `value eq`: evaluate it over the current list.
                    let full = self.get(kind, id, Load { members: true, groups: false }).await?;
                    if full.meta.version != cur.meta.version {
                        continue;
                    }
                    let members = full.members.unwrap_or_default();
                    self.patched(origin, &cur, &ops, if_match, Some(&members))?
                        .ok_or_else(|| patch_error(PatchError::NeedsMemberList))?
                }
            };
            let (upd, audit) = change;
            if let Some(done) = self.commit_read_modify_write(upd, audit, if_match).await {
                return done;
            }
        }
        Err(ServiceError::Unavailable("the resource is changing too fast; retry".into()))
    }

    /// A read-modify-write computed and written where the store reads the resource, when
    /// the store offers that (`None`: it does not, or the computation needs what a one-step
    /// write does not load — a group's member list — and the caller's loop reads it).
    async fn in_one_step(
        &self,
        kind: ResourceKind,
        id: &str,
        compute: ModifyFn,
    ) -> Option<Result<Resource, ServiceError>> {
        match self.store.resources().modify(kind, id, compute).await {
            Ok(None) => None,
            Ok(Some(Modified::Written(r))) => {
                self.wake.notify_one();
                Some(Ok(r))
            }
            Ok(Some(Modified::Refused(why))) => {
                if why.is::<NeedsMemberList>() {
                    return None;
                }
                Some(Err(match why.downcast::<ServiceError>() {
                    Ok(e) => *e,
                    Err(other) => ServiceError::Internal(other.to_string()),
                }))
            }
            Err(e) => Some(Err(e.into())),
        }
    }

    /// The write a PATCH makes of `cur` and its audit record (pure: no I/O). `Ok(None)`:
    /// a member filter other than `value eq` needs the group's member list, and `members`
    /// was not given.
    fn patched(
        &self,
        origin: &Origin,
        cur: &Resource,
        ops: &[patch::PatchOp],
        if_match: Option<u64>,
        members: Option<&[crate::model::Member]>,
    ) -> Result<Option<(Update, NewAudit)>, ServiceError> {
        let kind = cur.kind;
        check_if_match(if_match, cur.meta.version)?;
        let mut attrs = cur.attrs.clone();
        let effect = match patch::apply(kind, &mut attrs, ops, members) {
            Err(PatchError::NeedsMemberList) if members.is_none() => return Ok(None),
            other => other.map_err(patch_error)?,
        };
        let mut attrs = resource::normalize(kind, attrs)?;
        self.check_account(kind, &cur.attrs, &mut attrs)?;
        let attrs = (attrs != cur.attrs).then_some(attrs);
        // A membership-only change needs no version check: the store applies member
        // deltas atomically and they commute, so concurrent member adds to one big group
        // (an IdP pushing a group) never conflict. Attribute changes were computed from
        // the version read, so they must land on that version.
        let expected_version = if attrs.is_some() || if_match.is_some() { Some(cur.meta.version) } else { None };
        let summary = audit_summary::patched(ops, &cur.attrs, attrs.as_ref(), &effect.members);
        let upd = Update { kind, id: cur.id.clone(), expected_version, attrs, members: effect.members };
        let audit = origin.audit("PATCH", kind, Some(&cur.id), summary);
        Ok(Some((upd, audit)))
    }

    pub async fn delete(
        &self,
        origin: &Origin,
        kind: ResourceKind,
        id: &str,
        if_match: Option<u64>,
    ) -> Result<(), ServiceError> {
        let audit = origin.audit("DELETE", kind, Some(id), Value::Object(Default::default()));
        Ok(self.committed(self.store.resources().delete(kind, id, if_match, audit).await)?)
    }

    /// A page of resources (RFC 7644 §3.4.2): `filter` parsed and checked against the
    /// schema, `sortBy`/`sortOrder` resolved (§3.4.2.3), `count` capped at the configured
    /// maximum, `startIndex` 1-based.
    ///
    /// With `cursor` (RFC 9865 §2) the page starts after the position the cursor names, in
    /// creation order, and the answer carries the next page's cursor; `startIndex` and
    /// `sortBy` are refused with it (`400 invalidValue`): a cursor walk is in creation order,
    /// which is what keeps it exact while resources come and go.
    pub async fn list(&self, kind: ResourceKind, req: ListRequest) -> Result<Listed, ServiceError> {
        let filter = match &req.filter {
            Some(text) if !text.trim().is_empty() => Some(parse_filter(kind, text)?),
            _ => None,
        };
        let filter = self.visible(kind, filter)?;
        let sort = list::parse_sort(kind, req.sort_by.as_deref(), req.sort_order.as_deref())?;
        let (offset, count) = self.page(&req);
        let Some(text) = &req.cursor else {
            let page =
                self.store.resources().list(kind, filter, sort, Position::Offset(offset), count, req.load).await?;
            return Ok(Listed { page, next_cursor: None });
        };
        if req.start_index_given {
            return Err(ScimError::invalid_value("a request pages by cursor or by startIndex, not both").into());
        }
        if sort.is_some() {
            return Err(ScimError::invalid_value(
                "cursor paging lists in creation order; to sort, page by startIndex instead",
            )
            .into());
        }
        let fingerprint = cursor::fingerprint(kind, req.filter.as_deref());
        let now = crate::model::unix_now();
        let at = cursor::decode(text, fingerprint, now)?;
        let page = self.store.resources().list(kind, filter, None, Position::After(at.after), count, req.load).await?;
        let next = page.next_after.map(|after| cursor::encode(after, fingerprint, now));
        Ok(Listed { page, next_cursor: Some(next) })
    }

    /// `filter` narrowed to what lists show: without `list_inactive_users`, inactive users are
    /// left out of every list and search (`not (active eq false)`: users without `active`
    /// are active, RFC 7643 §4.1.1).
    fn visible(&self, kind: ResourceKind, filter: Option<Filter>) -> Result<Option<Filter>, ServiceError> {
        if kind != ResourceKind::User || self.account.list_inactive_users {
            return Ok(filter);
        }
        let active = parse_filter(kind, "not (active eq false)")?;
        Ok(Some(match filter {
            Some(f) => Filter::And(Box::new(f), Box::new(active)),
            None => active,
        }))
    }

    /// `POST /.search` at the root (RFC 7644 §3.4.3): users and groups as one list, users
    /// first unless sorted. An attribute only one resource type has is no error: in the
    /// filter, that type matches nothing; as `sortBy`, its resources have no value (so
    /// they sort last ascending). Naming an attribute neither type has is still an error.
    /// `req.load` applies per row: `members` to groups, `groups` to users.
    pub async fn search_all(&self, req: ListRequest) -> Result<Page, ServiceError> {
        let kinds = [ResourceKind::User, ResourceKind::Group];
        let descending = list::parse_sort_order(req.sort_order.as_deref())?;
        let sort_by = req.sort_by.as_deref().map(str::trim).filter(|s| !s.is_empty());
        let mut parts = Vec::new();
        let mut sort_errors = Vec::new();
        let mut filter_errors = Vec::new();
        for kind in kinds {
            let filter = match &req.filter {
                Some(text) if !text.trim().is_empty() => match parse_filter(kind, text) {
                    Ok(f) => Some(f),
                    Err(e)
                        if e.scim_type == Some(ScimType::InvalidFilter) && e.detail.contains("unknown attribute") =>
                    {
                        filter_errors.push(e);
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                },
                _ => None,
            };
            let sort_path = match sort_by {
                Some(text) => match list::parse_sort_by(kind, text) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        sort_errors.push(e);
                        None
                    }
                },
                None => None,
            };
            let filter = self.visible(kind, filter)?;
            parts.push(ListPart { kind, filter, sort_path });
        }
        if let Some(e) = (sort_errors.len() == kinds.len()).then(|| sort_errors.swap_remove(0)) {
            return Err(e.into());
        }
        if filter_errors.len() == kinds.len() {
            // Unknown to every type: each type matches nothing.
            return Ok(Page { total: 0, resources: Vec::new(), next_after: None });
        }
        if req.cursor.is_some() {
            return Err(ScimError::invalid_value(
                "cursor paging is offered per resource type (/Users, /Groups and their /.search); page the root \
                 /.search by startIndex",
            )
            .into());
        }
        let (offset, count) = self.page(&req);
        Ok(self
            .store
            .resources()
            .list_many(parts, sort_by.map(|_| descending), Position::Offset(offset), count, req.load)
            .await?)
    }

    /// `POST /Bulk` (RFC 7644 §3.7): run the operations one by one, each through the same
    /// use-case as its single request (so each commits its resource rows and outbox row in
    /// its own transaction: bulk is not atomic, and an acknowledged operation stays done
    /// whatever happens to the next), substituting `bulkId` references as the POSTs they
    /// name finish (§3.7.2). Stops once `failOnErrors` operations have failed; the
    /// operations not run are left out of the result (§3.7.3).
    pub async fn bulk(&self, origin: &Origin, req: &bulk::BulkRequest) -> Vec<bulk::OpResult<ServiceError>> {
        let mut sched = bulk::Scheduler::new(req);
        let mut results = Vec::with_capacity(req.entries.len());
        let mut errors = 0u32;
        while let Some(step) = sched.next_step() {
            let (index, outcome) = match step {
                bulk::Step::Fail(i, e) => (i, Err((None, ServiceError::from(e)))),
                bulk::Step::Run(i) => match &req.entries[i].op {
                    Err(e) => (i, Err((None, ServiceError::from(e.clone())))),
                    Ok(op) => (i, self.bulk_op(origin, &op.resolved(|b| sched.resolve(b))).await),
                },
            };
            let entry = &req.entries[index];
            let (target, outcome) = match outcome {
                Ok((target, status, version)) => (Some(target), Ok((status, version))),
                Err((target, e)) => (target, Err(e)),
            };
            let created = match (&outcome, &target) {
                (Ok((201, _)), Some((_, id))) => Some(id.clone()),
                _ => None,
            };
            sched.finished(req, index, created);
            errors += outcome.is_err() as u32;
            results.push(bulk::OpResult {
                index,
                method: entry.method.clone(),
                bulk_id: entry.bulk_id.clone(),
                target,
                outcome,
            });
            if req.fail_on_errors.is_some_and(|n| errors >= n) {
                break;
            }
        }
        results
    }

    /// One bulk operation with its references resolved: the target, status and version,
    /// or the error (with the target when the path named one).
    async fn bulk_op(
        &self,
        origin: &Origin,
        op: &bulk::Operation,
    ) -> Result<(Target, u16, Option<u64>), (Option<Target>, ServiceError)> {
        let t = op.target().map_err(|e| (None, e.into()))?;
        let status = op.method.success_status();
        let data = || op.data.clone().unwrap_or(Value::Null);
        // `version` works as `If-Match` (§3.7); one that is no ETag of ours cannot match.
        let if_match = match &op.version {
            None => None,
            Some(v) => match resource::parse_etag(v) {
                Some(n) => Some(n),
                None => {
                    let e = ScimError::precondition_failed(format!("version {v:?} is not a current ETag"));
                    return Err((t.id.clone().map(|id| (t.kind, id)), e.into()));
                }
            },
        };
        let res = match (op.method, &t.id) {
            (bulk::Method::Post, _) => {
                self.create(origin, t.kind, data()).await.map(|r| ((t.kind, r.id), Some(r.meta.version)))
            }
            (bulk::Method::Put, Some(id)) => {
                self.replace(origin, t.kind, id, data(), if_match).await.map(|r| ((t.kind, r.id), Some(r.meta.version)))
            }
            (bulk::Method::Patch, Some(id)) => {
                self.patch(origin, t.kind, id, data(), if_match).await.map(|r| ((t.kind, r.id), Some(r.meta.version)))
            }
            (bulk::Method::Delete, Some(id)) => {
                self.delete(origin, t.kind, id, if_match).await.map(|()| ((t.kind, id.clone()), None))
            }
            (_, None) => Err(ServiceError::Internal("bulk operation without a resource id".into())),
        };
        match res {
            Ok((target, version)) => Ok((target, status, version)),
            Err(e) => Err((t.id.map(|id| (t.kind, id)), e)),
        }
    }

    /// 0-based offset and bounded count of a list request (RFC 7644 §3.4.2.4).
    fn page(&self, req: &ListRequest) -> (u64, u32) {
        let count = req.count.unwrap_or(self.limits.default_page_size).min(self.limits.max_page_size);
        (req.start_index.max(1) - 1, count)
    }
}

fn parse_filter(kind: ResourceKind, text: &str) -> Result<Filter, ScimError> {
    let mut f = filter::parse_filter(text).map_err(ScimError::from)?;
    schema::resolve_filter(kind, &mut f)?;
    Ok(f)
}

fn check_if_match(if_match: Option<u64>, current: u64) -> Result<(), ScimError> {
    match if_match {
        Some(v) if v != current => Err(ScimError::precondition_failed(format!(
            "If-Match {} does not match the current version {}",
            resource::etag(v),
            resource::etag(current)
        ))),
        _ => Ok(()),
    }
}

fn patch_error(e: PatchError) -> ServiceError {
    match e {
        PatchError::Scim(s) => ServiceError::Scim(s),
        PatchError::NeedsMemberList => ServiceError::Internal("patch engine asked twice for the member list".into()),
    }
}
