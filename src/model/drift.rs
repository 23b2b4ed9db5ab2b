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

/// How many items of each kind a report holds (stored as an object keyed by the
/// [`DriftKind`] words, in [`DriftKind::ALL`] order; a kind an old report lacks reads as 0).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KindCounts {
    pub missing_in_app: u64,
    pub orphaned_in_app: u64,
    pub attribute_mismatch: u64,
    pub active_mismatch: u64,
    pub membership_mismatch: u64,
    pub stuck_provision: u64,
}

impl KindCounts {
    pub fn get(&self, kind: DriftKind) -> u64 {
        match kind {
            DriftKind::MissingInApp => self.missing_in_app,
            DriftKind::OrphanedInApp => self.orphaned_in_app,
            DriftKind::AttributeMismatch => self.attribute_mismatch,
            DriftKind::ActiveMismatch => self.active_mismatch,
            DriftKind::MembershipMismatch => self.membership_mismatch,
            DriftKind::StuckProvision => self.stuck_provision,
        }
    }

    pub fn add(&mut self, kind: DriftKind) {
        let n = match kind {
            DriftKind::MissingInApp => &mut self.missing_in_app,
            DriftKind::OrphanedInApp => &mut self.orphaned_in_app,
            DriftKind::AttributeMismatch => &mut self.attribute_mismatch,
            DriftKind::ActiveMismatch => &mut self.active_mismatch,
            DriftKind::MembershipMismatch => &mut self.membership_mismatch,
            DriftKind::StuckProvision => &mut self.stuck_provision,
        };
        *n += 1;
    }

    /// `(word, count)` for every kind, in [`DriftKind::ALL`] order.
    pub fn pairs(&self) -> Vec<(&'static str, u64)> {
        DriftKind::ALL.iter().map(|k| (k.as_str(), self.get(*k))).collect()
    }
}

/// How many accounts the run listed in the app.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed {
    pub users: u64,
    pub groups: u64,
}

/// What the run's repair did. A field an older report lacks (`superseded_dead`,
/// `on_its_way`, `blocked`, `deprovisioning` came later) reads as 0 / `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RepairSummary {
    /// Items whose repair the store queued.
    pub queued_items: u64,
    /// Changes queued (an item may need more than one).
    pub queued_changes: u64,
    /// Dead-lettered changes a queued repair replaced.
    pub superseded_dead: u64,
    pub on_its_way: u64,
    pub blocked: u64,
    /// Deactivations and deletions the plan wanted.
    pub deprovisions: u64,
    pub protected: u64,
    /// Why the safety limit refused the repair (`null` when it did not).
    pub refused: Option<String>,
    /// What confirming this report approves: kept only when the repair was refused
    /// (`null` otherwise).
    pub deprovisioning: Option<Vec<String>>,
}

/// What a completed run found and did (absent from a failed run's summary). `listed`,
/// `total`, `new` and `resolved` tell a completed run's summary from a failed one's; the
/// rest reads as empty when missing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReport {
    pub listed: Listed,
    #[serde(default)]
    pub counts: KindCounts,
    /// Items found (resolved ones not included).
    pub total: u64,
    pub new: u64,
    pub resolved: u64,
    #[serde(default)]
    pub repair: RepairSummary,
    #[serde(default)]
    pub requeued_dead: u64,
    /// The run whose refused repair this run confirmed (`null` when none).
    #[serde(default)]
    pub confirmed: Option<i64>,
}

/// A sync run's summary, stored as JSON in `sync_runs.summary` and shown by `drift --json`,
/// `GET /drift`, `sync runs`, the drift and status pages. A failed run has only
/// `duration_seconds`; a completed run has the [`RunReport`] fields first, then
/// `duration_seconds`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// `None` for a failed run (its JSON has none of these fields).
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub report: Option<RunReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
}

impl RunSummary {
    /// Whether the safety limit refused this run's repair.
    pub fn refused(&self) -> Option<&str> {
        self.report.as_ref().and_then(|r| r.repair.refused.as_deref())
    }
}

/// A summary number as the pages and the CLI print it: the JSON text, `null` when the run
/// has no report (still running, or failed).
pub fn shown<T: Into<Value>>(v: Option<T>) -> String {
    v.map(Into::into).unwrap_or(Value::Null).to_string()
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

    /// A completed run's summary is stored byte for byte as the `json!` it replaced: same
    /// fields, same order, `null` for an absent refusal, approval list and confirmation.
    #[test]
    fn run_summary_writes_the_stored_shape() {
        let mut counts = KindCounts::default();
        counts.add(DriftKind::AttributeMismatch);
        counts.add(DriftKind::StuckProvision);
        counts.add(DriftKind::StuckProvision);
        let summary = RunSummary {
            report: Some(RunReport {
                listed: Listed { users: 5, groups: 1 },
                counts,
                total: 3,
                new: 2,
                resolved: 1,
                repair: RepairSummary { queued_items: 1, queued_changes: 2, protected: 1, ..Default::default() },
                requeued_dead: 4,
                confirmed: None,
            }),
            duration_seconds: Some(0.25),
        };
        let want = r#"{"listed":{"users":5,"groups":1},"counts":{"missing_in_app":0,"orphaned_in_app":0,"attribute_mismatch":1,"active_mismatch":0,"membership_mismatch":0,"stuck_provision":2},"total":3,"new":2,"resolved":1,"repair":{"queued_items":1,"queued_changes":2,"superseded_dead":0,"on_its_way":0,"blocked":0,"deprovisions":0,"protected":1,"refused":null,"deprovisioning":null},"requeued_dead":4,"confirmed":null,"duration_seconds":0.25}"#;
        assert_eq!(serde_json::to_string(&summary).unwrap(), want);
        assert_eq!(serde_json::from_str::<RunSummary>(want).unwrap(), summary);
        let refused = RunSummary {
            report: Some(RunReport {
                repair: RepairSummary {
                    refused: Some("repair refused".into()),
                    deprovisioning: Some(vec!["User|u1".into()]),
                    ..Default::default()
                },
                confirmed: Some(9),
                ..Default::default()
            }),
            duration_seconds: Some(1.0),
        };
        let text = serde_json::to_string(&refused).unwrap();
        assert!(
            text.contains(r#""refused":"repair refused","deprovisioning":["User|u1"]},"requeued_dead":0,"confirmed":9,"duration_seconds":1.0}"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<RunSummary>(&text).unwrap().refused(), Some("repair refused"));
    }

    /// A failed run's summary is only its duration, and reads back without a report.
    #[test]
    fn failed_run_summary_is_only_the_duration() {
        let failed = RunSummary { report: None, duration_seconds: Some(0.012) };
        assert_eq!(serde_json::to_string(&failed).unwrap(), r#"{"duration_seconds":0.012}"#);
        let read: RunSummary = serde_json::from_str(r#"{"duration_seconds":0.012}"#).unwrap();
        assert_eq!(read, failed);
        assert_eq!(read.refused(), None);
        assert_eq!(
            serde_json::from_str::<RunSummary>(r#"{"duration_seconds":3}"#).unwrap().duration_seconds,
            Some(3.0)
        );
    }

    /// Summaries stored by earlier releases still read: the first release's shape (no
    /// `superseded_dead`, `on_its_way`, `blocked`, `deprovisioning`; counts without every
    /// kind), and a refused one from before the approval list was kept.
    #[test]
    fn old_run_summaries_still_read() {
        let first = r#"{"listed":{"users":3,"groups":1},"counts":{"missing_in_app":1,"orphaned_in_app":0,"attribute_mismatch":2,"active_mismatch":0,"membership_mismatch":0},"total":3,"new":3,"resolved":0,"repair":{"queued_items":3,"queued_changes":4,"deprovisions":0,"protected":0,"refused":null},"requeued_dead":0,"confirmed":null,"duration_seconds":0.031}"#;
        let s: RunSummary = serde_json::from_str(first).unwrap();
        let r = s.report.as_ref().expect("a completed run's report");
        assert_eq!((r.listed.users, r.listed.groups, r.total, r.new, r.resolved), (3, 1, 3, 3, 0));
        assert_eq!(r.counts.get(DriftKind::AttributeMismatch), 2);
        assert_eq!(r.counts.get(DriftKind::StuckProvision), 0);
        assert_eq!((r.repair.queued_items, r.repair.queued_changes, r.repair.superseded_dead), (3, 4, 0));
        assert_eq!((r.repair.on_its_way, r.repair.blocked, r.repair.deprovisioning.as_ref()), (0, 0, None));
        assert_eq!(s.duration_seconds, Some(0.031));
        assert_eq!(s.refused(), None);

        let refused = r#"{"listed":{"users":10,"groups":0},"counts":{"orphaned_in_app":6},"total":6,"new":6,"resolved":0,"repair":{"queued_items":0,"queued_changes":0,"deprovisions":6,"protected":0,"refused":"repair refused: it would deactivate or delete 6 account(s)"},"requeued_dead":0,"confirmed":null,"duration_seconds":0.5}"#;
        let s: RunSummary = serde_json::from_str(refused).unwrap();
        assert_eq!(s.refused(), Some("repair refused: it would deactivate or delete 6 account(s)"));
        let r = s.report.unwrap();
        assert_eq!((r.counts.get(DriftKind::OrphanedInApp), r.repair.deprovisions), (6, 6));
        assert_eq!(r.repair.deprovisioning, None);
    }
}
