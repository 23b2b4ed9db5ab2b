//! The status page on the admin listener (`/` and `/status`): one self-contained HTML page
//! (inline CSS, no script, no external asset) for an operator's browser.
//!
//! Owns: what the page shows. It is rendered by a pure function from a plain
//! [`StatusView`], which `ops_api` fills from the store; a new section is a new field and a
//! few lines here. The markup is a maud template sharing the page shell and escaping with
//! the drift report ([`super::html`]): text from outside (resource names, error details,
//! reasons) is escaped by the template, never by hand.

use maud::{Markup, html};
use serde_json::Value;

use super::html::{name_cell, outcome_class, page};
use crate::reconcile::diff::DriftKind;

/// Everything the page shows. Plain data: build it anywhere, render it with [`render`].
#[derive(Debug, Clone, Default)]
pub struct StatusView {
    /// When the page was built (RFC 3339).
    pub generated_at: String,
    pub version: String,
    pub health: Health,
    pub queue: Queue,
    pub guard: Guard,
    /// The latest delivery attempts, newest first.
    pub recent_deliveries: Vec<DeliveryRow>,
    /// The latest failed attempts (retry or permanent), newest first.
    pub recent_failures: Vec<DeliveryRow>,
    /// The latest reconciliation runs, newest first; empty until the first run.
    pub sync_runs: Vec<SyncRunRow>,
    /// The latest drift report's counts; `None` until a report exists.
    pub drift: Option<DriftSummary>,
    /// The latest audit records, newest first.
    pub recent_changes: Vec<ChangeRow>,
    /// Why the target cannot be reconciled (`dry-run`, `none`, a webhook target that cannot
    /// list); `None` when it can.
    pub not_reconcilable: Option<String>,
    /// When this daemon started (RFC 3339): attempts before it may have gone to another
    /// target, so only later ones are attributed to the current one.
    pub started_at: String,
}

#[derive(Debug, Clone, Default)]
pub struct Health {
    pub ready: bool,
    /// Why not ready (empty when ready).
    pub reasons: Vec<String>,
    /// `scim`, `webhook`, `dry-run`, `none`.
    pub target_kind: String,
    /// Where deliveries go: the kind and the app's URL (no credentials), e.g.
    /// `scim https://app.example.com/scim/v2`, or `dry-run (nothing is sent)`.
    pub target: String,
    /// The last delivery's outcome and time, when there was one since start.
    pub last_delivery: Option<(String, String)>,
    /// This node's id and role (`leader`, `follower`); empty when not known.
    pub node: String,
    pub role: String,
    /// The live nodes, one line each.
    pub nodes: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Queue {
    /// Changes waiting for delivery (pending, retrying, in flight).
    pub depth: u64,
    /// Age of the oldest of them, in seconds.
    pub oldest_age_seconds: Option<u64>,
    pub dead: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Guard {
    pub tripped_at: Option<String>,
    /// All held changes (`held` lists at most a page of them).
    pub held_total: u64,
    pub held: Vec<HeldRow>,
}

/// A held change as the store reads it (the same fields the page shows).
pub use crate::store::HeldChange as HeldRow;

#[derive(Debug, Clone, Default)]
pub struct DeliveryRow {
    pub outbox_id: i64,
    pub kind: String,
    pub resource_id: String,
    pub name: Option<String>,
    pub op: String,
    pub finished_at: String,
    pub outcome: String,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct SyncRunRow {
    pub started_at: String,
    pub finished_at: Option<String>,
    /// e.g. `ok`, `failed`, `stopped by the safety limit`.
    pub outcome: String,
    pub summary: String,
}

#[derive(Debug, Clone, Default)]
pub struct DriftSummary {
    pub generated_at: String,
    /// (difference kind, how many), in display order.
    pub counts: Vec<(String, u64)>,
}

#[derive(Debug, Clone, Default)]
pub struct ChangeRow {
    pub at: String,
    pub actor: String,
    pub method: String,
    pub resource: String,
    /// The audit record's summary (attribute names, operations, member counts; never
    /// values), put into words by the page.
    pub summary: Value,
}

/// `3d 4h`, `5m 12s`, `42s`.
pub fn human_age(seconds: u64) -> String {
    let (d, h, m, s) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60, seconds % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// "what changed" in words, from an audit summary: `deactivated; changed active, title`,
/// `created with userName, emails; 3 member(s)`, `members: 2 added, 1 removed`.
pub fn what_changed(method: &str, summary: &Value) -> String {
    let list = |key: &str| -> Vec<String> {
        summary[key].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect()
    };
    let mut parts: Vec<String> = Vec::new();
    if summary["deactivated"] == true {
        parts.push("deactivated".into());
    }
    if summary["reactivated"] == true {
        parts.push("reactivated".into());
    }
    let created = list("attributes");
    if !created.is_empty() {
        parts.push(format!("created with {}", created.join(", ")));
    }
    let ops = list("operations");
    if !ops.is_empty() {
        parts.push(ops.join(", "));
    }
    let changed = list("changed");
    if !changed.is_empty() && ops.is_empty() {
        parts.push(format!("changed {}", changed.join(", ")));
    }
    let m = &summary["members"];
    let mut members = Vec::new();
    for (key, word) in [("replaced_with", "set to"), ("added", "added"), ("removed", "removed")] {
        if let Some(n) = m[key].as_u64() {
            members.push(if key == "replaced_with" { format!("{word} {n}") } else { format!("{n} {word}") });
        }
    }
    if !members.is_empty() {
        parts.push(format!("members: {}", members.join(", ")));
    }
    // Anything else (operator actions: a reason, a count) as plain `key: value` pairs.
    if let Some(o) = summary.as_object() {
        let known = ["deactivated", "reactivated", "attributes", "operations", "changed", "members"];
        for (k, v) in o.iter().filter(|(k, _)| !known.contains(&k.as_str())) {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Array(a) if a.iter().all(Value::is_string) => {
                    a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")
                }
                Value::Array(a) => format!("{} item(s)", a.len()),
                other => other.to_string(),
            };
            parts.push(format!("{}: {v}", k.replace('_', " ")));
        }
    }
    if parts.is_empty() && method.eq_ignore_ascii_case("DELETE") {
        parts.push("deleted".into());
    }
    parts.join("; ")
}

/// The whole page.
pub fn render(v: &StatusView) -> String {
    let body = html! {
        p class="muted" {
            "version " (v.version) " · generated " span id="generated-at" { (v.generated_at) } " · refreshes every 30 s"
        }
        (health(v))
        (queue(&v.queue))
        (guard(&v.guard))
        (deliveries(v, "recent-deliveries", "Recent deliveries", "no delivery attempt yet", &v.recent_deliveries))
        (deliveries(v, "recent-failures", "Recent failures", "no failed delivery", &v.recent_failures))
        (sync_runs(v))
        (drift(v))
        (changes(&v.recent_changes))
    };
    page("scimsync status", Some(30), body)
}

/// Open drift items in the latest report.
fn drift_total(v: &StatusView) -> u64 {
    v.drift.as_ref().map(|d| d.counts.iter().map(|(_, n)| n).sum()).unwrap_or(0)
}

fn health(v: &StatusView) -> Markup {
    let h = &v.health;
    let drift = drift_total(v);
    html! {
        h2 { "Health" }
        dl {
            dt { "readiness" }
            dd id="readiness" class=(if h.ready { "ok" } else { "bad" }) { (if h.ready { "ready" } else { "not ready" }) }
            @if !h.node.is_empty() {
                dt { "this node" }
                dd id="node" { (h.node) " (" span id="role" { (h.role) } ")" }
                dt { "live nodes" }
                dd id="nodes" { (h.nodes.join("; ")) }
            }
            dt { "target" }
            dd id="target-kind" { (h.target_kind) }
            dt { "delivering to" }
            dd id="target" { (h.target) }
            dt { "last delivery" }
            dd id="last-delivery" {
                @match &h.last_delivery {
                    Some((outcome, at)) => { (outcome) " at " (at) },
                    None => "none since start",
                }
            }
            dt { "drift" }
            @if let Some(why) = &v.not_reconcilable {
                dd id="drift-state" class="muted" { (why) }
            } @else if v.drift.is_none() {
                dd id="drift-state" class="muted" { "no report yet" }
            } @else if drift > 0 {
                dd id="drift-state" class="warn" { (drift) " difference(s) between the IdP and the app in the latest report: " a href="drift.html" { "see the drift report" } }
            } @else {
                dd id="drift-state" class="ok" { "none in the latest report" }
            }
        }
        @if !h.reasons.is_empty() {
            ul id="not-ready-reasons" {
                @for r in &h.reasons { li class="bad" { (r) } }
            }
        }
    }
}

fn queue(q: &Queue) -> Markup {
    html! {
        h2 { "Queue" }
        dl {
            dt { "waiting" }
            dd id="queue-depth" { (q.depth) }
            dt { "oldest waiting" }
            dd id="queue-oldest" { (q.oldest_age_seconds.map(human_age).unwrap_or_else(|| "-".into())) }
            dt { "dead-lettered" }
            dd id="queue-dead" class=(if q.dead > 0 { "bad" } else { "" }) { (q.dead) }
        }
    }
}

fn guard(g: &Guard) -> Markup {
    html! {
        h2 { "Deletion guard" }
        @if let Some(at) = &g.tripped_at {
            div class="box" {
                span id="guard-state" class="warn" { "tripped" } " at " (at) ": "
                span id="guard-held" { (g.held_total) } " deprovisioning change(s) held. Review, then "
                code { "scimsync outbox release --held" } " or " code { "scimsync outbox discard --held --confirm" } "."
            }
        } @else {
            p { span id="guard-state" class="ok" { "not tripped" } "; " span id="guard-held" { (g.held_total) } " change(s) held." }
        }
        @if !g.held.is_empty() {
            table id="held" {
                thead { tr { th class="num" { "#" } th { "resource" } th { "change" } th { "accepted" } } }
                tbody {
                    @for r in &g.held {
                        tr {
                            td class="num" { (r.outbox_id) }
                            td { (name_cell(&r.kind, &r.resource_id, r.name.as_deref())) }
                            td { (r.op) }
                            td class="t" { (r.created_at) }
                        }
                    }
                }
            }
            @if g.held_total > g.held.len() as u64 {
                p class="muted" { "and " (g.held_total - g.held.len() as u64) " more" }
            }
        }
    }
}

fn deliveries(v: &StatusView, id: &str, title: &str, empty: &str, rows: &[DeliveryRow]) -> Markup {
    html! {
        h2 { (title) }
        @if rows.is_empty() {
            p id=(id) class="muted" { (empty) }
        } @else {
            table id=(id) {
                thead { tr { th { "finished" } th class="num" { "#" } th { "resource" } th { "change" } th { "to" } th { "outcome" } th { "detail" } } }
                tbody {
                    @for r in rows {
                        tr {
                            td class="t" { (r.finished_at) }
                            td class="num" { (r.outbox_id) }
                            td { (name_cell(&r.kind, &r.resource_id, r.name.as_deref())) }
                            td { (r.op) }
                            // Timestamps share one RFC 3339 form, so they compare as text.
                            @if r.finished_at >= v.started_at {
                                td class="target" { (v.health.target) }
                            } @else {
                                td class="target muted" { "before this start" }
                            }
                            td class=(outcome_class(&r.outcome)) { (r.outcome) }
                            td { (r.detail.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
    }
}

fn sync_runs(v: &StatusView) -> Markup {
    html! {
        h2 { "Last sync runs" }
        @if v.sync_runs.is_empty() {
            p id="sync-runs" class="muted" {
                @match &v.not_reconcilable {
                    Some(why) => (why),
                    None => { "no sync run yet; run " code { "scimsync sync now" } " or wait for " code { "reconcile.schedule" } },
                }
            }
        } @else {
            table id="sync-runs" {
                thead { tr { th { "started" } th { "finished" } th { "outcome" } th { "summary" } } }
                tbody {
                    @for r in &v.sync_runs {
                        tr {
                            td class="t" { (r.started_at) }
                            td class="t" { (r.finished_at.as_deref().unwrap_or("running")) }
                            td { (r.outcome) }
                            td { (r.summary) }
                        }
                    }
                }
            }
        }
    }
}

fn drift(v: &StatusView) -> Markup {
    html! {
        h2 { "Latest drift summary" }
        @match &v.drift {
            None => p id="drift" class="muted" {
                @match &v.not_reconcilable {
                    Some(why) => (why),
                    None => "no drift report yet (no sync run yet)",
                }
            },
            Some(d) => {
                p class="muted" { "report of " (d.generated_at) " · " a href="drift.html" { "the whole report" } }
                @let total = drift_total(v);
                @if total == 0 {
                    p id="drift" class="ok" { "no drift" }
                } @else {
                    p id="drift-total" class="box" {
                        b { (total) " difference(s)" } " between what the IdP says and what the app has; "
                        a href="drift.html" { "see the drift report" } "."
                    }
                    table id="drift" {
                        thead { tr { th { "difference" } th class="num" { "count" } } }
                        tbody {
                            @for (kind, n) in &d.counts {
                                tr class=[(*n > 0).then_some("warn")] {
                                    td { (DriftKind::parse(kind).map(DriftKind::title).unwrap_or(kind)) }
                                    td class="num" { (n) }
                                }
                            }
                        }
                    }
                }
            },
        }
    }
}

fn changes(rows: &[ChangeRow]) -> Markup {
    html! {
        h2 { "Recent changes" }
        @if rows.is_empty() {
            p id="recent-changes" class="muted" { "no change recorded" }
        } @else {
            table id="recent-changes" {
                thead { tr { th { "time" } th { "by" } th { "method" } th { "resource" } th { "what changed" } } }
                tbody {
                    @for r in rows {
                        tr {
                            td class="t" { (r.at) }
                            td { (r.actor) }
                            td class="t" { (r.method) }
                            td { (r.resource) }
                            td { (what_changed(&r.method, &r.summary)) }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_text_is_escaped_everywhere() {
        let evil = "<script>alert(1)</script>\"'&";
        let row = DeliveryRow {
            outbox_id: 1,
            kind: evil.into(),
            resource_id: evil.into(),
            name: Some(evil.into()),
            op: evil.into(),
            finished_at: evil.into(),
            outcome: evil.into(),
            detail: Some(evil.into()),
        };
        let v = StatusView {
            generated_at: evil.into(),
            version: evil.into(),
            health: Health {
                ready: false,
                reasons: vec![evil.into()],
                target_kind: evil.into(),
                target: evil.into(),
                last_delivery: Some((evil.into(), evil.into())),
                node: evil.into(),
                role: evil.into(),
                nodes: vec![evil.into()],
            },
            queue: Queue::default(),
            guard: Guard {
                tripped_at: Some(evil.into()),
                held_total: 1,
                held: vec![HeldRow {
                    outbox_id: 2,
                    kind: evil.into(),
                    resource_id: evil.into(),
                    name: Some(evil.into()),
                    op: evil.into(),
                    created_at: evil.into(),
                }],
            },
            recent_deliveries: vec![row.clone()],
            recent_failures: vec![row],
            sync_runs: vec![SyncRunRow {
                started_at: evil.into(),
                finished_at: Some(evil.into()),
                outcome: evil.into(),
                summary: evil.into(),
            }],
            drift: Some(DriftSummary { generated_at: evil.into(), counts: vec![(evil.into(), 3)] }),
            recent_changes: vec![ChangeRow {
                at: evil.into(),
                actor: evil.into(),
                method: evil.into(),
                resource: evil.into(),
                summary: serde_json::json!({"changed": [evil], evil: evil}),
            }],
            not_reconcilable: None,
            started_at: String::new(),
        };
        let page = render(&v);
        assert!(!page.contains("<script"), "unescaped text in:\n{page}");
        assert!(!page.contains("\"'&"), "unescaped quotes or ampersand");
        // version, generated: 2; health: target kind, target, 2 x last delivery, reason,
        // node, role, nodes: 8;
        // guard: tripped at, held row (name, kind, id, op, time): 6; deliveries: 2 tables x
        // (time, name, kind, id, op, target, outcome, detail): 16; sync run: 4; drift: 2;
        // changes: 4 + the summary's attribute, key and value: 7.
        assert_eq!(page.matches("&lt;script&gt;").count(), 45);
    }

    #[test]
    fn empty_sections_say_so() {
        let page = render(&StatusView { version: "1".into(), ..Default::default() });
        for text in
            ["no sync run yet", "no drift report yet", "no delivery attempt yet", "no failed delivery", "not ready"]
        {
            assert!(page.contains(text), "missing {text:?}");
        }
        assert!(!page.contains("<table"), "no table without rows");
        for link in ["href=\"drift.html\"", "href=\"metrics\"", "href=\"readyz\""] {
            assert!(page.contains(link), "{link} missing");
        }
    }

    #[test]
    fn drift_stands_out_in_plain_labels() {
        let v = StatusView {
            drift: Some(DriftSummary {
                generated_at: "t".into(),
                counts: vec![("missing_in_app".into(), 0), ("orphaned_in_app".into(), 8)],
            }),
            ..Default::default()
        };
        let page = render(&v);
        assert!(page.contains("<tr class=\"warn\"><td>Orphaned in the app (unknown to the IdP)</td>"), "{page}");
        assert!(page.contains("<tr><td>Missing in the app</td>"), "{page}");
        assert!(!page.contains("missing_in_app") && !page.contains("orphaned_in_app"), "{page}");
        assert!(page.contains("<dd id=\"drift-state\" class=\"warn\">8 difference(s)"), "{page}");
    }

    #[test]
    fn a_target_that_cannot_be_listed_is_named_instead_of_sync_now() {
        let why = crate::reconcile::report::Reconcilable::No { target: "dry-run".into() }.why_not();
        let page = render(&StatusView { not_reconcilable: why, ..Default::default() });
        assert!(page.contains("the dry-run target cannot list"), "{page}");
        assert!(!page.contains("sync now"), "{page}");
        let page = render(&StatusView::default());
        assert!(page.contains("scimsync sync now"), "{page}");
    }

    #[test]
    fn what_changed_reads_as_words() {
        use serde_json::json;
        assert_eq!(
            what_changed(
                "PATCH",
                &json!({"deactivated": true, "operations": ["replace active"], "changed": ["active"]})
            ),
            "deactivated; replace active"
        );
        assert_eq!(what_changed("PUT", &json!({"changed": ["title", "name"]})), "changed title, name");
        assert_eq!(
            what_changed("POST", &json!({"attributes": ["userName", "emails"], "members": {"added": 3}})),
            "created with userName, emails; members: 3 added"
        );
        assert_eq!(what_changed("DELETE", &json!({})), "deleted");
        assert_eq!(what_changed("token create", &json!({"reason": "first start"})), "reason: first start");
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(human_age(42), "42s");
        assert_eq!(human_age(312), "5m 12s");
        assert_eq!(human_age(3 * 3600 + 60), "3h 1m");
        assert_eq!(human_age(2 * 86_400 + 7200), "2d 2h");
    }
}
