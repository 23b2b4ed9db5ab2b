//! The drift report's records: what kind of difference an item is, why, what the repair
//! did with it, how it compares with the previous report, and the stored row itself.
//! `reconcile` makes them, the store keeps them, the report pages and the CLI show them:
//! all as these types (the store turns the enums into their `as_str` words in its columns
//! and back).
//!
//! Owns: the records and their words. Must not touch: SQL, the diff itself.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ResourceKind;

/// What kind of difference an item is (the drift report groups by these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// The IdP has it, the app does not.
    MissingInApp,
    /// The app has an account the IdP does not know.
    OrphanedInApp,
    /// An attribute differs.
    AttributeMismatch,
    /// `active` differs (reported apart: it decides who can log in).
    ActiveMismatch,
    /// Group members missing in the app or extra there.
    MembershipMismatch,
    /// A change that has not reached the app: dead-lettered, held by the deletion guard, or
    /// queued for longer than the configured threshold.
    StuckProvision,
}

impl DriftKind {
    pub const ALL: [DriftKind; 6] = [
        DriftKind::MissingInApp,
        DriftKind::OrphanedInApp,
        DriftKind::AttributeMismatch,
        DriftKind::ActiveMismatch,
        DriftKind::MembershipMismatch,
        DriftKind::StuckProvision,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DriftKind::MissingInApp => "missing_in_app",
            DriftKind::OrphanedInApp => "orphaned_in_app",
            DriftKind::AttributeMismatch => "attribute_mismatch",
            DriftKind::ActiveMismatch => "active_mismatch",
            DriftKind::MembershipMismatch => "membership_mismatch",
            DriftKind::StuckProvision => "stuck_provision",
        }
    }

    pub fn parse(s: &str) -> Option<DriftKind> {
        DriftKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// A heading a human reads.
    pub fn title(self) -> &'static str {
        match self {
            DriftKind::MissingInApp => "Missing in the app",
            DriftKind::OrphanedInApp => "Orphaned in the app (unknown to the IdP)",
            DriftKind::AttributeMismatch => "Attribute mismatch",
            DriftKind::ActiveMismatch => "Active-state mismatch",
            DriftKind::MembershipMismatch => "Membership mismatch",
            DriftKind::StuckProvision => "Stuck provisioning",
        }
    }
}

/// Why the app differs from what the IdP wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// We delivered the desired value and the app now shows something else: changed in the app.
    EditedInApp,
    /// The desired value has not been delivered yet (queued, retrying or dead-lettered).
    NotAppliedYet,
    /// No record of what we applied (adopted account, or before delivery history existed).
    Unknown,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::EditedInApp => "edited_in_app",
            Cause::NotAppliedYet => "not_applied_yet",
            Cause::Unknown => "unknown",
        }
    }
    pub fn parse(s: &str) -> Option<Cause> {
        [Cause::EditedInApp, Cause::NotAppliedYet, Cause::Unknown].into_iter().find(|c| c.as_str() == s)
    }
}

/// One difference, with both values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftItem {
    pub kind: DriftKind,
    /// Our id, when the IdP knows the account.
    pub resource_id: Option<String>,
    /// The app's id, when the app has it.
    pub app_id: Option<String>,
    /// A name a human recognises: userName / displayName.
    pub name: String,
    /// The attribute for attribute and active mismatches.
    pub attribute: Option<String>,
    pub ours: Value,
    pub app: Value,
    pub cause: Cause,
}

impl DriftItem {
    /// What identifies "the same problem" across runs: kind, account and attribute, not the
    /// values (a value that changes while still wrong is the same drift, ongoing).
    pub fn fingerprint(&self, resource_kind: &str) -> String {
        let who = self.resource_id.as_deref().or(self.app_id.as_deref()).unwrap_or(&self.name);
        format!("{}|{resource_kind}|{who}|{}", self.kind.as_str(), self.attribute.as_deref().unwrap_or(""))
    }
}

/// What a repair does with one item (stored in the report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Repair {
    /// Report-only for this kind (or nothing to repair).
    None,
    Queued,
    /// A protected account would have been deactivated or deleted.
    Protected,
    /// Deleting this type is disabled.
    NeverDelete,
    /// The run hit the safety limit: nothing was repaired.
    RefusedLimit,
    /// A dead-lettered change put back in the queue.
    Requeued,
    /// Repaired by the previous run, delivered, and still different: the app does not keep
    /// the value (add it to `ignore_attributes`, or fix it in the app). Not queued again, so a
    /// repair never loops.
    NoEffect,
    /// Not queued: a change of this resource is already on its way to the app and
    /// delivers the current state (a second one would duplicate it).
    OnItsWay,
    /// Not queued: a change held by the deletion guard, or dead-lettered with content the
    /// repair would not send, blocks the resource until an operator acts (see the stuck item).
    Blocked,
}

impl Repair {
    pub fn as_str(self) -> &'static str {
        match self {
            Repair::None => "none",
            Repair::Queued => "queued",
            Repair::Protected => "protected",
            Repair::NeverDelete => "never_delete",
            Repair::RefusedLimit => "refused_limit",
            Repair::Requeued => "requeued",
            Repair::NoEffect => "no_effect",
            Repair::OnItsWay => "on_its_way",
            Repair::Blocked => "blocked",
        }
    }
    pub const ALL: [Repair; 9] = [
        Repair::None,
        Repair::Queued,
        Repair::Protected,
        Repair::NeverDelete,
        Repair::RefusedLimit,
        Repair::Requeued,
        Repair::NoEffect,
        Repair::OnItsWay,
        Repair::Blocked,
    ];
    pub fn parse(s: &str) -> Option<Repair> {
        Repair::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// How an item compares with the previous report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Not in the previous report.
    New,
    /// In the previous report too.
    Ongoing,
    /// In the previous report, gone now (kept in this report, with no repair).
    Resolved,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::New => "new",
            Change::Ongoing => "ongoing",
            Change::Resolved => "resolved",
        }
    }
    pub fn parse(s: &str) -> Option<Change> {
        [Change::New, Change::Ongoing, Change::Resolved].into_iter().find(|c| c.as_str() == s)
    }
}

/// One item of a stored report: a [`DriftItem`] with the resource type it is about, what the
/// repair did, how it compares with the previous report, and its fingerprint. The JSON form
/// (`scimsync drift --json`, `/drift`) spells the enums as their `as_str` words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftRow {
    pub kind: DriftKind,
    pub resource_kind: ResourceKind,
    pub resource_id: Option<String>,
    pub app_id: Option<String>,
    pub name: String,
    pub attribute: Option<String>,
    pub ours: Value,
    pub app: Value,
    pub cause: Cause,
    pub change: Change,
    pub repair: Repair,
    pub fingerprint: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The words stored in the report's columns and shown in its JSON are the `as_str`
    /// words, and each parses back.
    #[test]
    fn words_round_trip() {
        for k in DriftKind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
            assert_eq!(DriftKind::parse(k.as_str()), Some(k));
        }
        for r in Repair::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
            assert_eq!(Repair::parse(r.as_str()), Some(r));
        }
        for c in [Cause::EditedInApp, Cause::NotAppliedYet, Cause::Unknown] {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
            assert_eq!(Cause::parse(c.as_str()), Some(c));
        }
        for c in [Change::New, Change::Ongoing, Change::Resolved] {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
            assert_eq!(Change::parse(c.as_str()), Some(c));
        }
        assert_eq!(serde_json::to_value(ResourceKind::Group).unwrap(), ResourceKind::Group.as_str());
    }
}
