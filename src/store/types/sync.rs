//! What reconciliation exchanges with the store: the app's accounts matched to ours, stuck
//! changes, sync runs and their drift rows, the corrective changes a repair queues and what
//! became of them, and the delivery target's identity.

use serde_json::{Map, Value, json};

use super::NewAudit;
use crate::model::{OutboxPayload, Resource, ResourceKind};

/// One account as the app lists it, reduced to what matching needs.
#[derive(Debug, Clone)]
pub struct AppKey {
    pub app_id: String,
    /// `userName` (users) or `displayName` (groups).
    pub name: String,
    pub external_id: Option<String>,
}

/// What an app account is to us.
#[derive(Debug, Clone)]
pub enum PageMatch {
    /// One of our resources.
    Ours(Box<Matched>),
    /// One we deleted (or deprovisioned) whose removal is still on its way to the app: not
    /// an orphan, and not to be removed twice.
    Deprovisioning,
    /// Not ours: an orphan (or a duplicate of an account matched already).
    Unknown,
}

/// One of our resources matched to an app account.
#[derive(Debug, Clone)]
pub struct Matched {
    pub resource: Resource,
    /// The app id our id map holds for it (may differ from the listed one when matched by name).
    pub mapped_app_id: Option<String>,
    /// The attributes of the version we last delivered, when recorded and older than
    /// `resource`'s version.
    pub applied: Option<Map<String, Value>>,
    /// What we last delivered is `resource`'s current version: what was applied is its
    /// representation, so `applied` is not loaded (saves parsing one JSON per account).
    pub applied_current: bool,
    /// Changes for it are still queued, retrying, held or dead: "not applied yet".
    pub pending: bool,
    /// Groups only: every member with its app id when provisioned.
    pub members: Option<Vec<MemberInfo>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MemberInfo {
    pub id: String,
    pub app_id: Option<String>,
    pub name: String,
}

/// An outbox row that did not reach the app as it should have.
#[derive(Debug, Clone)]
pub struct Stuck {
    pub outbox_id: i64,
    pub kind: ResourceKind,
    pub resource_id: String,
    pub name: String,
    pub op: String,
    pub state: String,
    pub attempts: u32,
    pub created_at: String,
    pub last_error: Option<String>,
}

/// A sync run as recorded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SyncRun {
    pub id: i64,
    pub trigger: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub status: String,
    pub error: Option<String>,
    /// `None` while the run is under way (or when the stored JSON does not read).
    pub summary: Option<RunSummary>,
}

pub use crate::model::drift::{DriftRow, RunSummary};

/// A corrective change a repair queues (one transaction for the whole repair).
#[derive(Debug, Clone, PartialEq)]
pub enum RepairOp {
    /// Send the whole current state again; `forget_app_id` when the app lost the account,
    /// so the worker finds or creates it instead of updating a dead id.
    /// `deprovision`: the state sent deactivates the account in the app.
    Resync { kind: ResourceKind, id: String, forget_app_id: bool, deprovision: bool },
    /// Add and remove group members in the app: ours by our id, strangers by the app's id.
    Members { group_id: String, add: Vec<String>, remove: Vec<String>, remove_app_ids: Vec<String> },
    /// Deprovision an account the IdP does not know. `deactivate_only`: never delete it;
    /// `record`: the account as the app listed it, for apps that switch an account off by
    /// sending it back whole (a REST app's PUT) rather than one attribute.
    Orphan { kind: ResourceKind, app_id: String, name: String, deactivate_only: bool, record: Option<Value> },
}

/// The resource id an orphan's deprovisioning travels under in the outbox.
pub fn orphan_id(kind: ResourceKind, app_id: &str) -> String {
    format!("orphan:{}:{app_id}", kind.as_str())
}

/// What became of one corrective change of a repair (one per [`RepairOp`], in order): the
/// drift report says this, never "queued" for a change that cannot be delivered.
#[derive(Debug, Clone, PartialEq)]
pub enum RepairResult {
    /// Queued. `superseded`: dead-lettered rows (and the rows they blocked) of the same
    /// resource that this change makes obsolete: marked done, coalesced into it, with an
    /// attempt saying why, so they no longer block it.
    Queued { superseded: Vec<i64> },
    /// Not queued: a change of this resource is on its way (pending, retrying or in
    /// flight) and will deliver the current state; queuing another would duplicate it.
    OnItsWay { outbox_id: i64 },
    /// Not queued: a change of this resource is held by the deletion guard, or
    /// dead-lettered with content this repair would not send; it blocks the resource until
    /// an operator acts on it.
    Blocked { outbox_id: i64, state: String },
    /// Nothing to do any more: the resource is gone, or the "orphan" is ours by now.
    Moot,
}

impl RepairResult {
    pub fn queued(&self) -> bool {
        matches!(self, RepairResult::Queued { .. })
    }
}

/// The identity of the dry-run target (a real target's is its kind and base URL).
pub const DRY_RUN: &str = "dry-run";

/// What [`switch`] did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TargetSwitch {
    /// The target the store delivered to before, when known.
    pub previous: Option<String>,
    /// Resources queued again for the new target (after a dry run).
    pub requeued: u64,
    /// App ids a dry run of an older release had recorded, forgotten.
    pub forgotten: u64,
}

/// How a sync run ended, with its report, as [`crate::store::SyncStore::run_finish`] records it.
#[derive(Debug, Clone)]
pub struct RunFinish {
    /// `ok` or `failed`.
    pub status: String,
    pub error: Option<String>,
    pub summary: RunSummary,
    pub items: Vec<DriftRow>,
    /// Runs started before this (stored RFC 3339 format) are pruned with their items.
    pub keep_since: String,
}

/// An undelivered outbox row of a resource as a repair weighs it: (outbox id, state, whether
/// the row only changes group members).
pub type OpenRow = (i64, String, bool);

/// Decide whether a corrective change for a resource can be queued given its open rows
/// (oldest first). `covers`: whether the change makes a dead row obsolete (a resync sends
/// the whole current state and covers every row; a member repair covers rows that only
/// changed members). Dead rows it covers are superseded together with the rows they
/// blocked (`Ok`: their ids); without a dead row, an open row means the change is on its
/// way already. Both backends decide with this one function.
pub fn admit(rows: &[OpenRow], covers: impl Fn(bool) -> bool) -> Result<Vec<i64>, RepairResult> {
    let Some((first, _, _)) = rows.first() else { return Ok(Vec::new()) };
    if let Some((id, state, _)) = rows.iter().find(|(_, s, _)| s == "held" || s == "in_flight") {
        return Err(if state == "held" {
            RepairResult::Blocked { outbox_id: *id, state: state.clone() }
        } else {
            RepairResult::OnItsWay { outbox_id: *id }
        });
    }
    if !rows.iter().any(|(_, s, _)| s == "dead") {
        return Err(RepairResult::OnItsWay { outbox_id: *first });
    }
    if let Some((id, state, _)) = rows.iter().find(|(_, _, members_only)| !covers(*members_only)) {
        return Err(RepairResult::Blocked { outbox_id: *id, state: state.clone() });
    }
    Ok(rows.iter().map(|(id, _, _)| *id).collect())
}

/// The attempt detail a superseded row gets.
pub fn superseded_detail(by: i64, run_id: i64) -> String {
    format!(
        "superseded by outbox {by}, queued by the repair of sync run {run_id}: it sends the current state, which \
         makes this change obsolete"
    )
}

impl RepairOp {
    /// The outbox payload of this corrective change, queued by the repair of run `run_id`.
    pub fn payload(&self, run_id: i64) -> OutboxPayload {
        match self {
            RepairOp::Resync { deprovision, .. } => OutboxPayload {
                attributes_changed: true,
                resync: true,
                // A deactivation like any other: the deletion guard counts and may hold it.
                deprovision: *deprovision,
                repair_run: Some(run_id),
                ..OutboxPayload::default()
            },
            RepairOp::Members { add, remove, remove_app_ids, .. } => OutboxPayload {
                members_removed_app_ids: remove_app_ids.clone(),
                repair_run: Some(run_id),
                ..OutboxPayload::members(add.clone(), remove.clone())
            },
            RepairOp::Orphan { kind, name, deactivate_only, record, .. } => {
                let name_key = if *kind == ResourceKind::User { "userName" } else { "displayName" };
                OutboxPayload {
                    deprovision: true,
                    orphan: true,
                    deactivate_only: *deactivate_only,
                    tombstone: Some(Map::from_iter([(name_key.to_string(), Value::String(name.clone()))])),
                    app_record: record.as_ref().and_then(Value::as_object).cloned(),
                    repair_run: Some(run_id),
                    ..OutboxPayload::default()
                }
            }
        }
    }
}

/// What a repair did, op by op, for its audit record: both backends feed it the same way
/// and write the record it builds in the repair's transaction.
#[derive(Debug, Default)]
pub struct RepairLog {
    entries: Vec<Value>,
    superseded: Vec<i64>,
}

impl RepairLog {
    /// Note an op that was queued (or not: only queued ops' superseded rows are listed).
    pub fn record(&mut self, op: &RepairOp, result: &RepairResult) {
        let superseded = match result {
            RepairResult::Queued { superseded } => superseded.clone(),
            _ => Vec::new(),
        };
        self.superseded.extend(&superseded);
        let mut entry = match op {
            RepairOp::Resync { kind, id, deprovision, .. } => {
                json!({"op": "resync", "type": kind.as_str(), "id": id, "deactivates": deprovision})
            }
            RepairOp::Members { group_id, add, remove, remove_app_ids } => json!({"op": "members", "id": group_id,
                "add": add.len(), "remove": remove.len() + remove_app_ids.len()}),
            RepairOp::Orphan { kind, app_id, name, deactivate_only, .. } => json!({"op": "deprovision_orphan",
                "type": kind.as_str(), "app_id": app_id, "name": name, "deactivate_only": deactivate_only}),
        };
        if !superseded.is_empty() {
            entry["superseded_outbox_ids"] = json!(superseded);
        }
        self.entries.push(entry);
    }

    /// The audit record of the repair of run `run_id`: the audit log says what the
    /// reconciler changed and why (its run), like any operator. `None` when nothing was
    /// queued (no action, no record).
    pub fn audit(mut self, run_id: i64, results: &[RepairResult]) -> Option<NewAudit> {
        let n = results.iter().filter(|r| r.queued()).count();
        if n == 0 {
            return None;
        }
        let total = self.entries.len();
        self.entries.truncate(1000);
        Some(NewAudit {
            actor: "reconcile".into(),
            token_id: None,
            method: "repair".into(),
            resource_type: "sync_run".into(),
            resource_id: Some(run_id.to_string()),
            request_id: None,
            summary: json!({"queued": n, "changes": self.entries, "listed_changes": self.entries.len(),
                            "total_changes": total, "superseded": self.superseded.len()}),
        })
    }
}

/// The payload of a resource queued again for a real target after a dry run.
pub fn target_switch_payload() -> OutboxPayload {
    OutboxPayload { attributes_changed: true, resync: true, target_switch: true, ..OutboxPayload::default() }
}

/// The audit record of a switch from the dry run to the real target `identity`.
pub fn target_switch_audit(identity: &str, out: &TargetSwitch) -> NewAudit {
    NewAudit {
        actor: "system".into(),
        token_id: None,
        method: "target_switch".into(),
        resource_type: "outbox".into(),
        resource_id: None,
        request_id: None,
        summary: json!({"from": DRY_RUN, "to": identity, "requeued": out.requeued, "forgotten_dry_run_ids": out.forgotten}),
    }
}
