//! The admin listener's HTML: one template set for the status page ([`super::status_page`])
//! and the drift report (`/drift.html`), written with maud. Every interpolated value is
//! escaped by maud's `html!` (the one escaping path); nothing here builds markup from
//! strings. Self-contained pages: inline CSS, no script, no external asset.
//!
//! Owns: the page shell (head, CSS, the links between the admin pages), the shared pieces
//! (a resource's name cell, outcome colours), and the drift report page. Must not touch:
//! the store (pages are rendered from plain data), warp.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::model::drift::{Change, shown};
use crate::reconcile::diff::DriftKind;
use crate::reconcile::report::{self, Reconcilable};
use crate::store::{DriftRow, SyncRun};

const CSS: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;max-width:80em}\
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.6em 0 .4em;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;width:100%;margin:.3em 0 1em}th,td{text-align:left;padding:.25em .6em;\
border-bottom:1px solid #eee;vertical-align:top}th{background:#f6f6f6}caption{text-align:left;color:#666;\
padding:.2em 0}.num{text-align:right;font-variant-numeric:tabular-nums}\
.ok{color:#17692c;font-weight:600}.bad{color:#a4161a;font-weight:600}.warn{color:#9a6700;font-weight:600}\
tr.warn td{background:#fff8e5}.muted{color:#666}.box{border:1px solid #e3c06b;background:#fff8e5;\
padding:.5em .8em;margin:.5em 0}.box.bad{border-color:#c00;background:#fee}\
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dt{color:#555}dd{margin:0}\
code{font-size:.95em}.t{white-space:nowrap}nav{margin:.2em 0 1em}nav a{margin-right:1em}";

/// A whole page: head, CSS, the links between the admin pages, then `body`. `refresh`:
/// seconds between automatic reloads.
pub fn page(title: &str, refresh: Option<u32>, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width";
                @if let Some(s) = refresh {
                    meta http-equiv="refresh" content=(s);
                }
                title { (title) }
                style { (PreEscaped(CSS)) }
            }
            body {
                h1 { (title) }
                // Relative links: they work wherever the admin listener is mounted.
                nav id="links" {
                    a href="status" { "Status" }
                    a href="drift.html" { "Drift report" }
                    a href="metrics" { "Metrics" }
                    a href="readyz" { "Readiness (JSON)" }
                }
                (body)
            }
        }
    }
    .into_string()
}

/// A user's or group's name, then its type and id, muted; the id alone when the name is
/// gone.
pub fn name_cell(kind: &str, id: &str, name: Option<&str>) -> Markup {
    html! {
        @match name {
            Some(n) => { (n) " " span class="muted" { (kind) " " (id) } }
            None => { span class="muted" { (kind) } " " (id) }
        }
    }
}

/// The CSS class for a delivery outcome.
pub fn outcome_class(outcome: &str) -> &'static str {
    match outcome {
        "success" => "ok",
        "permanent" => "bad",
        _ => "warn",
    }
}

/// The drift report page (`/drift.html`): a run's counts by kind (non-zero ones stand
/// out), then its open items grouped by kind, in the report's words.
pub fn drift_report(run: Option<&SyncRun>, items: &[DriftRow], reconcilable: &Reconcilable) -> String {
    let body = html! {
        @if let Some(why) = reconcilable.why_not() {
            p id="not-reconcilable" class="box" { (why) }
        }
        @match run {
            None => p id="no-run" { (reconcilable.next_step()) },
            Some(run) => (drift_run(run, items)),
        }
    };
    page("scimsync drift report", None, body)
}

fn drift_run(run: &SyncRun, items: &[DriftRow]) -> Markup {
    let s = run.summary.as_ref().and_then(|s| s.report.as_ref());
    let count = |k: DriftKind| s.map(|s| s.counts.get(k)).unwrap_or(0);
    let open = |k: DriftKind| -> Vec<&DriftRow> {
        items.iter().filter(|r| r.kind == k && r.change != Change::Resolved).collect()
    };
    html! {
        p id="run" {
            "Run " b { (run.id) } " (" (run.trigger) ") started " (run.started_at) ", status " b { (run.status) } ". "
            "Listed in the app: " span id="listed-users" { (shown(s.map(|s| s.listed.users))) } " users, "
            span id="listed-groups" { (shown(s.map(|s| s.listed.groups))) } " groups. "
            (shown(s.map(|s| s.total))) " item(s), " (shown(s.map(|s| s.new))) " new, "
            (shown(s.map(|s| s.resolved))) " resolved."
        }
        @if let Some(reason) = s.and_then(|s| s.repair.refused.as_deref()) {
            p class="box bad" id="refused" { (reason) }
        }
        table id="counts" {
            thead { tr { th { "Difference" } th class="num" { "Items" } } }
            tbody {
                @for kind in DriftKind::ALL {
                    @let n = count(kind);
                    tr class=[(n > 0).then_some("warn")] {
                        td { (kind.title()) }
                        td class="num" data-kind=(kind.as_str()) { (n) }
                    }
                }
            }
        }
        @for kind in DriftKind::ALL {
            @let rows = open(kind);
            @if !rows.is_empty() {
                h2 { (kind.title()) " (" (rows.len()) ")" }
                table class="items" data-kind=(kind.as_str()) {
                    thead { tr { th { "Change" } th { "Type" } th { "Name" } th { "Cause" } th { "Repair" } th { "Detail" } } }
                    tbody {
                        @for r in rows {
                            tr class=(r.change.as_str()) {
                                td { (r.change.as_str()) }
                                td { (r.resource_kind.as_str()) }
                                td class="name" { (r.name) }
                                td { (r.cause.as_str()) }
                                td { (r.repair.as_str()) }
                                td { (report::clip(&report::detail(r), 300)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn run() -> SyncRun {
        SyncRun {
            id: 7,
            trigger: "manual".into(),
            started_at: "2026-11-23T10:00:00Z".into(),
            finished_at: Some("2026-11-23T10:00:01Z".into()),
            status: "ok".into(),
            error: None,
            summary: Some(serde_json::from_value(json!({"listed": {"users": 3, "groups": 1}, "counts": {"attribute_mismatch": 1, "orphaned_in_app": 0},
                            "total": 1, "new": 1, "resolved": 0,
                            "repair": {"refused": "repair refused: <too many>", "queued_changes": 0}}))
            .unwrap()),
        }
    }

    fn row(name: &str) -> DriftRow {
        DriftRow {
            kind: DriftKind::AttributeMismatch,
            resource_kind: crate::model::ResourceKind::User,
            resource_id: Some("r".into()),
            app_id: Some("x".into()),
            name: name.into(),
            attribute: Some("title".into()),
            ours: json!("<b>CEO</b>"),
            app: json!("Boss"),
            cause: crate::model::drift::Cause::EditedInApp,
            change: Change::New,
            repair: crate::model::drift::Repair::None,
            fingerprint: "f".into(),
        }
    }

    #[test]
    fn drift_page_escapes_and_uses_the_report_words() {
        let h = drift_report(Some(&run()), &[row("<script>x</script>")], &Reconcilable::Yes);
        assert!(h.contains("<td class=\"name\">&lt;script&gt;x&lt;/script&gt;</td>"), "{h}");
        assert!(!h.contains("<script>") && !h.contains("<b>CEO"), "{h}");
        assert!(h.contains("repair refused: &lt;too many&gt;"));
        assert!(h.contains("<tr class=\"warn\"><td>Attribute mismatch</td>"), "non-zero counts stand out: {h}");
        assert!(h.contains("<tr><td>Orphaned in the app (unknown to the IdP)</td>"), "{h}");
        for link in ["href=\"status\"", "href=\"metrics\"", "href=\"readyz\""] {
            assert!(h.contains(link), "{link} missing");
        }
    }

    #[test]
    fn without_a_run_the_page_says_what_the_target_allows() {
        let h = drift_report(None, &[], &Reconcilable::Yes);
        assert!(h.contains("run <code>") || h.contains("run `scimsync sync now`"), "{h}");
        let h = drift_report(None, &[], &Reconcilable::No { target: "dry-run".into() });
        assert!(
            h.contains("the dry-run target cannot list the app&#39;s accounts")
                || h.contains("the dry-run target cannot list the app's accounts"),
            "{h}"
        );
        assert!(!h.contains("sync now"), "{h}");
    }
}
