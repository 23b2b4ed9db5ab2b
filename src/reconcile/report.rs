//! The drift report in the forms people read: a plain-text table for the terminal (counts
//! first, then items grouped by kind) and stable JSON for scripts; the HTML page is the
//! admin listener's (`http::html`, one template set with the status page), from the same
//! words ([`detail`], [`DriftKind::title`]). Also what every surface says about whether
//! the configured target can be reconciled at all ([`Reconcilable`]). Pure.

use serde_json::{Value, json};

use super::diff::DriftKind;
use crate::model::drift::{Change, shown};
use crate::store::{DriftRow, SyncRun};

/// The stable JSON form: `{"run": {...}, "items": [...]}`.
pub fn to_json(run: &SyncRun, items: &[DriftRow]) -> Value {
    json!({ "run": run, "items": items })
}

fn value_text(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n.saturating_sub(1)).collect::<String>())
    }
}

/// Whether the configured target can be reconciled: one answer, so that `sync now`,
/// `drift`, `/drift.html` and the status page say the same thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconcilable {
    Yes,
    /// The target (`dry-run`, `none`, a webhook target without `[target.webhook.list]`)
    /// cannot list the app's accounts.
    No {
        target: String,
    },
}

impl Reconcilable {
    /// Why there is nothing to reconcile, or `None` when there is.
    pub fn why_not(&self) -> Option<String> {
        match self {
            Reconcilable::Yes => None,
            Reconcilable::No { target } if target == "none" => Some(
                "no target is configured (target.kind = \"none\"), so there is no app to list and nothing to \
                 reconcile"
                    .into(),
            ),
            Reconcilable::No { target } => Some(format!(
                "the {target} target cannot list the app's accounts, so it cannot be reconciled and no drift \
                 report is made (target.kind = \"scim\", or \"webhook\" with [target.webhook.list], can be)"
            )),
        }
    }

    /// What to do while there is no report yet.
    pub fn next_step(&self) -> String {
        self.why_not().unwrap_or_else(|| {
            "no sync run has finished yet; run `scimsync sync now` (or wait for reconcile.schedule)".into()
        })
    }
}

/// What the report says about one item, in words.
pub fn detail(r: &DriftRow) -> String {
    match r.kind {
        DriftKind::MissingInApp => "not in the app".into(),
        DriftKind::OrphanedInApp => format!("app id {}", r.app_id.as_deref().unwrap_or("?")),
        DriftKind::MembershipMismatch => {
            let names = |v: &Value, key: &str| -> Vec<String> {
                v[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| m["name"].as_str().map(str::to_string).unwrap_or_else(|| value_text(&m["app_id"])))
                    .collect()
            };
            let missing = names(&r.ours, "missing_in_app");
            let extra = names(&r.app, "extra_in_app");
            let mut parts = Vec::new();
            if !missing.is_empty() {
                parts.push(format!("missing: {}", missing.join(", ")));
            }
            if !extra.is_empty() {
                parts.push(format!("extra: {}", extra.join(", ")));
            }
            parts.join("; ")
        }
        DriftKind::StuckProvision if r.ours["state"] == "held" => format!(
            "outbox #{} {}: held by the deletion guard (scimsync outbox release --held | discard --held --confirm)",
            value_text(&r.ours["outbox_id"]),
            value_text(&r.ours["op"])
        ),
        DriftKind::StuckProvision => format!(
            "outbox #{} {} {} after {} attempt(s): {}",
            value_text(&r.ours["outbox_id"]),
            value_text(&r.ours["op"]),
            value_text(&r.ours["state"]),
            value_text(&r.ours["attempts"]),
            value_text(&r.app["last_error"])
        ),
        _ => format!(
            "{}: ours {} / app {}",
            r.attribute.as_deref().unwrap_or("?"),
            value_text(&r.ours),
            value_text(&r.app)
        ),
    }
}

/// The terminal table.
pub fn to_text(run: &SyncRun, items: &[DriftRow]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Sync run {} ({}) started {} — {}{}\n",
        run.id,
        run.trigger,
        run.started_at,
        run.status,
        run.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
    ));
    if run.status != "ok" {
        return out;
    }
    let s = run.summary.as_ref().and_then(|s| s.report.as_ref());
    out.push_str(&format!(
        "Listed in the app: {} users, {} groups. Drift: {} item(s), {} new, {} resolved since the previous report.\n",
        shown(s.map(|s| s.listed.users)),
        shown(s.map(|s| s.listed.groups)),
        shown(s.map(|s| s.total)),
        shown(s.map(|s| s.new)),
        shown(s.map(|s| s.resolved))
    ));
    let queued = s.map(|s| s.repair.queued_changes).unwrap_or(0);
    if let Some(reason) = s.and_then(|s| s.repair.refused.as_deref()) {
        out.push_str(&format!("\n!! {reason}\n"));
    } else if queued > 0 {
        out.push_str(&format!("Repair queued {queued} change(s).\n"));
    }
    out.push('\n');
    for kind in DriftKind::ALL {
        let n = s.map(|s| s.counts.get(kind)).unwrap_or(0);
        out.push_str(&format!("  {:<22} {n:>6}\n", kind.as_str()));
    }
    for kind in DriftKind::ALL {
        let rows: Vec<&DriftRow> = items.iter().filter(|r| r.kind == kind && r.change != Change::Resolved).collect();
        if rows.is_empty() {
            continue;
        }
        out.push_str(&format!("\n{} ({})\n", kind.title(), rows.len()));
        out.push_str(&format!(
            "  {:<8} {:<6} {:<32} {:<16} {:<14} {}\n",
            "CHANGE", "TYPE", "NAME", "CAUSE", "REPAIR", "DETAIL"
        ));
        for r in rows {
            out.push_str(&format!(
                "  {:<8} {:<6} {:<32} {:<16} {:<14} {}\n",
                r.change.as_str(),
                r.resource_kind.as_str(),
                clip(&r.name, 32),
                r.cause.as_str(),
                r.repair.as_str(),
                clip(&detail(r), 120)
            ));
        }
    }
    let resolved: Vec<&DriftRow> = items.iter().filter(|r| r.change == Change::Resolved).collect();
    if !resolved.is_empty() {
        out.push_str(&format!("\nResolved since the previous report ({})\n", resolved.len()));
        for r in resolved {
            out.push_str(&format!("  {:<22} {:<6} {}\n", r.kind.as_str(), r.resource_kind.as_str(), clip(&r.name, 60)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> SyncRun {
        SyncRun {
            id: 7,
            trigger: "manual".into(),
            started_at: "2026-11-23T10:00:00Z".into(),
            finished_at: Some("2026-11-23T10:00:01Z".into()),
            status: "ok".into(),
            error: None,
            summary: Some(serde_json::from_value(json!({"listed": {"users": 3, "groups": 1}, "counts": {"attribute_mismatch": 1, "orphaned_in_app": 1},
                            "total": 2, "new": 1, "resolved": 1,
                            "repair": {"refused": "repair refused: <too many>", "queued_changes": 0}}))
            .unwrap()),
        }
    }

    fn row(kind: &str, name: &str, change: &str) -> DriftRow {
        DriftRow {
            kind: DriftKind::parse(kind).unwrap(),
            resource_kind: crate::model::ResourceKind::User,
            resource_id: Some("r".into()),
            app_id: Some("x".into()),
            name: name.into(),
            attribute: Some("title".into()),
            ours: json!("CEO"),
            app: json!("Boss"),
            cause: crate::model::drift::Cause::EditedInApp,
            change: Change::parse(change).unwrap(),
            repair: crate::model::drift::Repair::None,
            fingerprint: "f".into(),
        }
    }

    #[test]
    fn text_has_counts_first_then_groups() {
        let t =
            to_text(&run(), &[row("attribute_mismatch", "alice", "new"), row("missing_in_app", "gone", "resolved")]);
        let counts = t.find("attribute_mismatch          1").expect(&t);
        let group = t.find("Attribute mismatch (1)").expect(&t);
        assert!(counts < group, "{t}");
        assert!(t.contains("title: ours CEO / app Boss"), "{t}");
        assert!(t.contains("!! repair refused"), "{t}");
        assert!(t.contains("Resolved since the previous report (1)"), "{t}");
    }

    #[test]
    fn every_surface_gets_one_answer_about_reconciliation() {
        assert!(Reconcilable::Yes.why_not().is_none());
        assert!(Reconcilable::Yes.next_step().contains("scimsync sync now"));
        let dry = Reconcilable::No { target: "dry-run".into() };
        assert!(dry.next_step().contains("the dry-run target cannot list the app's accounts"), "{}", dry.next_step());
        assert!(!dry.next_step().contains("sync now"));
        let none = Reconcilable::No { target: "none".into() };
        assert!(none.next_step().contains("no target is configured"));
    }
}
