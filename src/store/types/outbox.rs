//! The outbox as callers see it: rows and their states, claims and bundles, how a delivery
//! ended, the deletion guard's policy and state, and the status views of attempts and held
//! changes. The state machine itself is each backend's (it is SQL).

use serde_json::Value;

use crate::model::{ChangeOp, OutboxPayload, ResourceKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxState {
    Pending,
    InFlight,
    Done,
    Retry,
    Dead,
    /// Kept back by the tripped deletion guard until an operator decides.
    Held,
}

impl OutboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::InFlight => "in_flight",
            OutboxState::Done => "done",
            OutboxState::Retry => "retry",
            OutboxState::Dead => "dead",
            OutboxState::Held => "held",
        }
    }
    pub fn parse(s: &str) -> OutboxState {
        match s {
            "in_flight" => OutboxState::InFlight,
            "done" => OutboxState::Done,
            "retry" => OutboxState::Retry,
            "dead" => OutboxState::Dead,
            "held" => OutboxState::Held,
            _ => OutboxState::Pending,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    /// Commit order, and the idempotency key sent to the app.
    pub id: i64,
    pub kind: ResourceKind,
    pub resource_id: String,
    pub op: ChangeOp,
    pub version: u64,
    pub payload: OutboxPayload,
    pub state: OutboxState,
    pub attempts: u32,
    pub next_attempt_at: Option<String>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub done_at: Option<String>,
    pub coalesced_into: Option<i64>,
}

/// One recorded delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub started_at: String,
    pub finished_at: String,
    pub outcome: String,
    pub detail: Option<String>,
}

/// The rows of one resource claimed together, oldest first.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub rows: Vec<OutboxRow>,
}

impl Bundle {
    pub fn head(&self) -> &OutboxRow {
        &self.rows[0]
    }
}

/// When the deletion guard trips: more deprovisioning changes accepted within the window
/// than `threshold_count`, or (once there are at least `share_min_count` of them) more than
/// `threshold_share` of the provisioned users (`id_map` rows of kind User).
#[derive(Debug, Clone)]
pub struct GuardPolicy {
    pub threshold_count: u64,
    pub threshold_share: f64,
    pub share_min_count: u64,
    /// Start of the window (now - window), in the stored timestamp format.
    pub window_start: String,
    /// The deprovisioning delay: deprovisioning rows accepted after this (now - delay) are
    /// not delivered yet, so that a burst is counted whole before any of it leaves. `None`:
    /// no delay.
    pub delayed_after: Option<String>,
}

/// The guard tripped during this claim: what it counted.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardTrip {
    pub count: u64,
    pub provisioned: u64,
}

/// The guard as stored, for the CLI and status.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardStatus {
    pub tripped_at: Option<String>,
    pub trip_count: Option<u64>,
    pub held: u64,
}

/// What one claim produced.
#[derive(Debug, Clone, Default)]
pub struct Claimed {
    pub bundles: Vec<Bundle>,
    /// `Some` when the guard tripped in this claim (the worker logs it).
    pub tripped: Option<GuardTrip>,
    /// Rows moved to `held` in this claim.
    pub held: usize,
}

/// How a delivery ended, as the worker decided.
#[derive(Debug, Clone)]
pub enum Completion {
    /// Applied; every row of the bundle is done. `id_map` records what the app calls the
    /// resource now (`Some(None)`: forget it, the app account is gone).
    /// `applied`: the version and attributes the app was sent (recorded for the drift
    /// report's three-way comparison), when this delivery sent attributes.
    /// `note`: what the delivery had to do besides (an account the app had lost, recreated),
    /// recorded with the attempt. `recreated`: the app had lost the account and it was found
    /// or created again under `id_map`'s id: a user's group memberships in the app went with
    /// the old account, so each of its groups is queued to add it again.
    Success {
        id_map: Option<Option<String>>,
        applied: Option<(u64, serde_json::Map<String, Value>)>,
        note: Option<String>,
        recreated: bool,
    },
    /// Nothing to send by policy (a protected account's deletion): every row is done, and
    /// the attempt records why.
    Skipped { reason: String },
    /// Failed but may succeed later: the head row waits until `next_attempt_at`.
    Retry { next_attempt_at: String, error: String },
    /// Not deliverable without a change of data or config: the head row is dead-lettered.
    Dead { error: String },
    /// A dependency is not there yet (a member not provisioned): try again later without
    /// counting an attempt.
    Waiting { next_attempt_at: String, reason: String },
}

/// The trip rule, on its own so it can be tested without a database.
pub fn guard_trips(policy: &GuardPolicy, count: u64, provisioned: u64) -> bool {
    count > policy.threshold_count
        || (count >= policy.share_min_count && count as f64 > policy.threshold_share * provisioned as f64)
}

/// One delivery attempt with what it was about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryAttempt {
    pub outbox_id: i64,
    pub kind: String,
    pub resource_id: String,
    /// userName / displayName, when still known (see [`NAME_OF`]).
    pub name: Option<String>,
    pub op: String,
    pub started_at: String,
    pub finished_at: String,
    /// `success`, `retry`, `permanent`, `waiting`.
    pub outcome: String,
    pub detail: Option<String>,
}

/// One change the deletion guard holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldChange {
    pub outbox_id: i64,
    pub kind: String,
    pub resource_id: String,
    pub name: Option<String>,
    pub op: String,
    pub created_at: String,
}
