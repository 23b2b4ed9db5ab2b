//! The types that cross the store's face, whichever backend is behind it: what callers
//! hand in (new resources, updates, list queries, audit records) and what they get back
//! (pages, outbox rows, sync runs, tokens), and the one error enum of the layer.
//!
//! Owns: these records and the little pure logic that belongs to them (the deletion
//! guard's trip rule, token generation, the provisioning policy's part of a write). Must
//! not touch: SQL, any driver's types.

mod audit;
mod cluster;
mod outbox;
mod policed;
mod sync;
mod tokens;

pub use audit::{AuditQuery, AuditRecord, NewAudit};
pub use cluster::{ClusterNode, Lease, NodeInfo};
pub use outbox::{
    Attempt, Bundle, Claimed, Completion, DeliveryAttempt, GuardPolicy, GuardStatus, GuardTrip, HeldChange, OutboxRow,
    OutboxState, guard_trips,
};
pub use policed::{Need, PolicedWrite, Prior, deleted_refusal, mapped_groups, snapshot_from, verdict};
pub use sync::{
    AppKey, DRY_RUN, DriftRow, Matched, MemberInfo, OpenRow, PageMatch, RepairLog, RepairOp, RepairResult, RunFinish,
    RunSummary, Stuck, SyncRun, TargetSwitch, admit, orphan_id, superseded_detail, target_switch_audit,
    target_switch_payload,
};
pub use tokens::{
    GeneratedToken, NewToken, TOKEN_PREFIX, TokenInfo, generate_token, presented_id, token_hash, token_matches,
};

use std::path::PathBuf;

use crate::model::query::{AttrPath, Filter};
use crate::model::{MemberDelta, MemberRef, Resource, ResourceKind};

/// Store settings, taken from `config::StoreConfig` by `app`.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub data_dir: PathBuf,
    pub busy_timeout_seconds: u64,
    pub readers: usize,
    pub max_batch: usize,
}

/// Errors of the store layer. `Internal` carries text for the log only; `http` never shows it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    /// A uniqueness constraint: `attribute` names the offending attribute.
    #[error("{attribute} {value:?} is already taken")]
    Unique { attribute: &'static str, value: String },
    /// The resource changed since the caller read it (optimistic concurrency / If-Match).
    #[error("version mismatch: expected {expected}, current {current}")]
    VersionMismatch { expected: u64, current: u64 },
    /// The provisioning policy refuses the change; the text says which constraint and what
    /// to do (shown to the IdP as a 409 `detail`).
    #[error("{0}")]
    Policy(String),
    /// A group member that names no existing user or group.
    #[error("member {0:?} does not exist")]
    UnknownMember(String),
    /// The writer has stopped (shutdown in progress).
    #[error("the store is shutting down")]
    Closed,
    /// The database cannot be reached (a PostgreSQL server down, restarting or failing
    /// over; the connection lost mid-transaction). Nothing was acknowledged: the change may
    /// or may not have committed, so the caller answers 503 and the IdP retries.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("store failure: {0}")]
    Internal(String),
}

/// Which related data to load with a resource.
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    /// A group's members (skipped for `excludedAttributes=members`).
    pub members: bool,
    /// A user's groups.
    pub groups: bool,
}

/// A resource to create. The id is assigned by the caller (a UUID) so that the reply can
/// be built without another read.
#[derive(Debug, Clone)]
pub struct NewResource {
    pub kind: ResourceKind,
    pub id: String,
    pub attrs: serde_json::Map<String, serde_json::Value>,
    pub members: Vec<MemberRef>,
}

/// A change to an existing resource.
#[derive(Debug, Clone)]
pub struct Update {
    pub kind: ResourceKind,
    pub id: String,
    /// When set, the write fails with `VersionMismatch` unless the resource is still at
    /// this version: callers that read-modify-write pass the version they read.
    pub expected_version: Option<u64>,
    /// The new attribute object, or `None` to keep the attributes (membership-only change).
    pub attrs: Option<serde_json::Map<String, serde_json::Value>>,
    pub members: MemberDelta,
}

impl Update {
    /// New attributes for `cur`, written only on the version it was read at (a
    /// read-modify-write of the attributes alone).
    pub fn attributes_of(cur: &Resource, attrs: serde_json::Map<String, serde_json::Value>) -> Update {
        Update {
            kind: cur.kind,
            id: cur.id.clone(),
            expected_version: Some(cur.meta.version),
            attrs: Some(attrs),
            members: MemberDelta::default(),
        }
    }
}

/// Why a [`ModifyFn`] wrote nothing: the caller's own error (a failed `If-Match`, a PATCH
/// that does not apply, a refused account change), handed back to it as it was. Opaque to
/// the store, which only carries it; the caller downcasts it to its own type.
pub type Refusal = Box<dyn std::error::Error + Send + Sync>;

/// A read-modify-write's computation: given the resource as it is now (attributes, no
/// related rows), the change to make and its audit record, or a refusal. It runs where the
/// backend reads the resource, so it must be pure and quick: no I/O, no waiting. A backend
/// may run it more than once (SQLite's writer runs a batch again when one of its operations
/// fails), so it must give the same answer for the same resource.
pub type ModifyFn = std::sync::Arc<dyn Fn(&Resource) -> Result<(Update, NewAudit), Refusal> + Send + Sync>;

/// What [`crate::store::ResourceStore::modify`] did.
#[derive(Debug)]
pub enum Modified {
    /// The change is committed; the resource as written (users with their groups).
    Written(Resource),
    /// The computation refused; nothing was written.
    Refused(Refusal),
}

/// One resource type's share of a list query: its kind, its (resolved) filter, and the
/// attribute its resources are sorted by, if the list is sorted and the kind has it.
#[derive(Debug, Clone)]
pub struct ListPart {
    pub kind: ResourceKind,
    pub filter: Option<Filter>,
    pub sort_path: Option<AttrPath>,
}

/// One page of a list query.
#[derive(Debug, Clone)]
pub struct Page {
    pub total: u64,
    pub resources: Vec<Resource>,
    /// Paged by position ([`Position::After`]): where the next page starts (the creation
    /// order of this page's last resource), when there are more; `None` at the end.
    pub next_after: Option<i64>,
}

/// Where a page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Skip this many resources (`startIndex - 1`, RFC 7644 §3.4.2.4).
    Offset(u64),
    /// After the resource with this creation order (`seq`): cursor paging (RFC 9865), stable
    /// while resources are created and deleted. Lists in creation order only.
    After(i64),
}
