//! What an outbox row says about its change: the payload the store writes in the change's
//! transaction and the worker reads when it builds the delivery.
//!
//! Owns: the payload's fields and their JSON shape on disk. Must not touch: SQL (the store
//! reads a few keys in SQL: `deprovision`, `tombstone`, `attributes_changed`, `resync`; their
//! names and JSON types here must not change), delivery.
//!
//! Compatibility: every field is optional and unknown keys are ignored, so the rows queued by
//! any earlier release decode as they are (no migration): they are the same flat JSON object,
//! written key by key before this type existed. A row that does not decode at all (never
//! written by a release) reads as the empty payload, as it did before.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The payload of one outbox row. Absent keys mean "no" / "none"; `false`, `None` and empty
/// lists are not written, so each writer's rows keep the keys they always had.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OutboxPayload {
    /// The resource's attributes changed: the app gets an attribute update, not only a
    /// member delta. (Read in SQL by the repair's "members only" check.)
    #[serde(skip_serializing_if = "is_false")]
    pub attributes_changed: bool,
    /// Send the whole current state (a group with all its members), as for a create: a
    /// repair or a delivery-target switch. (Read in SQL by the "members only" check.)
    #[serde(skip_serializing_if = "is_false")]
    pub resync: bool,
    /// A deprovisioning (delete, deactivation, orphan): the deletion guard counts and may
    /// hold it. (Read in SQL by the guard and the claim.)
    #[serde(skip_serializing_if = "is_false")]
    pub deprovision: bool,
    /// What identified a deleted resource (`userName`, `externalId`, `displayName`), since
    /// its row is gone: the provisioner may need it to find the app's account. Written as an
    /// object even when empty: its presence marks a deletion to SQL readers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tombstone: Option<Map<String, Value>>,
    /// An orphan to switch off: the account as the app listed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_record: Option<Map<String, Value>>,
    /// Group members added and removed by this change (our ids), in commit order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members_added: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members_removed: Vec<String>,
    /// A repair removing members the app has and we do not know: named by the app's ids.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members_removed_app_ids: Vec<String>,
    /// Deprovision by deactivation even when the target deletes (an orphan repair under a
    /// never-delete policy).
    #[serde(skip_serializing_if = "is_false")]
    pub deactivate_only: bool,
    /// Provenance, for the operator (`outbox show` prints the payload); no code path
    /// branches on these. The deprovisioning of an app account we never created.
    #[serde(skip_serializing_if = "is_false")]
    pub orphan: bool,
    /// The sync run whose repair queued this row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair_run: Option<i64>,
    /// Queued because the user's effective access (roles, entitlements) changed.
    #[serde(skip_serializing_if = "is_false")]
    pub access_changed: bool,
    /// Queued because the delivery target changed from dry-run to a real app.
    #[serde(skip_serializing_if = "is_false")]
    pub target_switch: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl OutboxPayload {
    /// Decode a stored payload. Rows that do not decode read as the empty payload (a plain
    /// change with nothing more to say), as earlier releases read them; the caller logs.
    pub fn from_json(s: &str) -> Result<OutboxPayload, serde_json::Error> {
        serde_json::from_str(s)
    }

    /// The JSON stored in the row.
    pub fn to_json(&self) -> String {
        // A struct of strings, bools, integers and JSON maps always serialises.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// A change to a group's members and nothing else.
    pub fn members(added: Vec<String>, removed: Vec<String>) -> OutboxPayload {
        OutboxPayload { members_added: added, members_removed: removed, ..OutboxPayload::default() }
    }
}

/// Most member ids a coalesced payload carries (added and removed together). Coalescing
/// rewrites the row's payload at every change, so a bigger delta would make each member
/// change of a hot group cost more as its queue grows; past this a new row starts.
pub const MAX_COALESCED_MEMBERS: usize = 32;

impl OutboxPayload {
    /// Whether a plain change: attributes, members, or effective access, and nothing the
    /// deletion guard, a repair, a resync or an operator reads on its own row. Only such
    /// changes are coalesced at enqueue (see [`OutboxPayload::coalesce`]).
    pub fn is_plain_change(&self) -> bool {
        let OutboxPayload {
            attributes_changed: _,
            resync,
            deprovision,
            tombstone,
            app_record,
            members_added: _,
            members_removed: _,
            members_removed_app_ids,
            deactivate_only,
            orphan,
            repair_run,
            access_changed: _,
            target_switch,
        } = self;
        !(*resync
            || *deprovision
            || tombstone.is_some()
            || app_record.is_some()
            || !members_removed_app_ids.is_empty()
            || *deactivate_only
            || *orphan
            || repair_run.is_some()
            || *target_switch)
    }

    /// This (older, undelivered) change and `later` as one change, as the outbox worker folds
    /// the rows of a bundle: attributes changed if either did, and the member deltas net out
    /// with the later change winning for a member both name. `None` when either is not a
    /// plain change or the net member delta would exceed [`MAX_COALESCED_MEMBERS`].
    pub fn coalesce(&self, later: &OutboxPayload) -> Option<OutboxPayload> {
        if !self.is_plain_change() || !later.is_plain_change() {
            return None;
        }
        let mut out = self.clone();
        out.attributes_changed |= later.attributes_changed;
        out.access_changed |= later.access_changed;
        for id in &later.members_added {
            out.members_removed.retain(|x| x != id);
            if !out.members_added.contains(id) {
                out.members_added.push(id.clone());
            }
        }
        for id in &later.members_removed {
            out.members_added.retain(|x| x != id);
            if !out.members_removed.contains(id) {
                out.members_removed.push(id.clone());
            }
        }
        (out.members_added.len() + out.members_removed.len() <= MAX_COALESCED_MEMBERS).then_some(out)
    }
}

impl std::fmt::Display for OutboxPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Every shape a writer of the previous release put on disk, decoded field by field.
    #[test]
    fn rows_of_the_previous_release_decode() {
        let p = OutboxPayload::from_json(
            r#"{"deprovision": true, "orphan": true, "deactivate_only": false,
                "tombstone": {"userName": "x@example.com"}, "repair_run": 7,
                "app_record": {"id": "a1", "userName": "x@example.com"}}"#,
        )
        .unwrap();
        assert!(p.deprovision && p.orphan && !p.deactivate_only);
        assert_eq!(p.tombstone.unwrap()["userName"], json!("x@example.com"));
        assert_eq!(p.app_record.unwrap()["id"], json!("a1"));
        assert_eq!(p.repair_run, Some(7));
        let p = OutboxPayload::from_json(
            r#"{"members_added": ["a"], "members_removed": [], "members_removed_app_ids": ["z"], "repair_run": 3}"#,
        )
        .unwrap();
        assert_eq!(
            (p.members_added, p.members_removed, p.members_removed_app_ids),
            (vec!["a".to_string()], vec![], vec!["z".to_string()])
        );
        let p =
            OutboxPayload::from_json(r#"{"attributes_changed": true, "resync": true, "target_switch": true}"#).unwrap();
        assert!(p.attributes_changed && p.resync && p.target_switch);
        let p = OutboxPayload::from_json(r#"{"attributes_changed": true, "access_changed": true}"#).unwrap();
        assert!(p.attributes_changed && p.access_changed);
        // Keys no release wrote are ignored, not an error.
        assert_eq!(OutboxPayload::from_json(r#"{"future": 1}"#).unwrap(), OutboxPayload::default());
    }

    /// The keys SQL reads keep their names and JSON types, and a delete's empty tombstone is
    /// still written (its presence marks the deletion).
    #[test]
    fn the_shape_on_disk_is_unchanged() {
        let delete = OutboxPayload { tombstone: Some(Map::new()), deprovision: true, ..Default::default() };
        assert_eq!(
            serde_json::from_str::<Value>(&delete.to_json()).unwrap(),
            json!({"tombstone": {}, "deprovision": true})
        );
        assert_eq!(OutboxPayload::default().to_json(), "{}");
        assert_eq!(
            serde_json::from_str::<Value>(&OutboxPayload::members(vec!["u".into()], vec![]).to_json()).unwrap(),
            json!({"members_added": ["u"]})
        );
        let resync =
            OutboxPayload { attributes_changed: true, resync: true, repair_run: Some(2), ..Default::default() };
        assert_eq!(
            serde_json::from_str::<Value>(&resync.to_json()).unwrap(),
            json!({"attributes_changed": true, "resync": true, "repair_run": 2})
        );
    }

    #[test]
    fn plain_changes_coalesce_as_the_worker_folds_them() {
        let attrs = OutboxPayload { attributes_changed: true, ..Default::default() };
        let access = OutboxPayload { attributes_changed: true, access_changed: true, ..Default::default() };
        let merged = attrs.coalesce(&access).unwrap();
        assert!(merged.attributes_changed && merged.access_changed);
        // Members: the later change wins for a member both name.
        let a = OutboxPayload::members(vec!["x".into(), "y".into()], vec!["z".into()]);
        let b = OutboxPayload::members(vec!["z".into()], vec!["x".into()]);
        let m = a.coalesce(&b).unwrap();
        assert_eq!(m.members_added, vec!["y".to_string(), "z".to_string()]);
        assert_eq!(m.members_removed, vec!["x".to_string()]);
        assert!(!m.attributes_changed);
    }

    #[test]
    fn what_a_row_says_on_its_own_is_never_coalesced() {
        let plain = OutboxPayload { attributes_changed: true, ..Default::default() };
        let own_row = [
            OutboxPayload { deprovision: true, ..plain.clone() },
            OutboxPayload { resync: true, ..plain.clone() },
            OutboxPayload { tombstone: Some(Map::new()), ..plain.clone() },
            OutboxPayload { app_record: Some(Map::new()), ..plain.clone() },
            OutboxPayload { members_removed_app_ids: vec!["a".into()], ..plain.clone() },
            OutboxPayload { deactivate_only: true, ..plain.clone() },
            OutboxPayload { orphan: true, ..plain.clone() },
            OutboxPayload { repair_run: Some(1), ..plain.clone() },
            OutboxPayload { target_switch: true, ..plain.clone() },
        ];
        for p in &own_row {
            assert_eq!(plain.coalesce(p), None, "{p}");
            assert_eq!(p.coalesce(&plain), None, "{p}");
        }
    }

    #[test]
    fn a_coalesced_member_delta_is_bounded() {
        let ids = |r: std::ops::Range<usize>| r.map(|i| format!("m{i}")).collect::<Vec<_>>();
        let full = OutboxPayload::members(ids(0..MAX_COALESCED_MEMBERS), vec![]);
        assert_eq!(full.coalesce(&OutboxPayload::members(ids(100..101), vec![])), None);
        // Naming a member already in the delta does not grow it.
        let again = full.coalesce(&OutboxPayload::members(vec![], ids(0..1))).unwrap();
        assert_eq!(again.members_added.len() + again.members_removed.len(), MAX_COALESCED_MEMBERS);
    }
}
