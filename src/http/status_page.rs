//! The status page on the admin listener (`/` and `/status`): one self-contained HTML page
//! (inline CSS, no script, no external asset) for an operator's browser.
//!
//! Owns: the page's layout and escaping. The page is rendered by a pure function from a
//! plain [`StatusView`], which `ops_api` fills from the store; a new section is a new field
//! and a few lines here. Every piece of text from outside (resource names, error details,
//! reasons) goes through [`esc`]: templates that escape by default were considered (maud,
//! minijinja), but the page is a handful of tables, and one escaping function with a test
//! costs no dependency and no build time.

use std::fmt::Write;

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
}

#[derive(Debug, Clone, Default)]
pub struct Health {
    pub ready: bool,
    /// Why not ready (empty when ready).
    pub reasons: Vec<String>,
    /// `scim`, `webhook`, `dry-run`, `none`.
    pub target_kind: String,
    /// The last delivery's outcome and time, when there was one since start.
    pub last_delivery: Option<(String, String)>,
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
    pub summary: String,
}

/// HTML-escape text for element content and double-quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
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

const CSS: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;max-width:80em}\
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.6em 0 .4em;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.25em .6em;border-bottom:1px solid #eee;\
vertical-align:top}th{background:#f6f6f6}.num{text-align:right;font-variant-numeric:tabular-nums}\
.ok{color:#17692c;font-weight:600}.bad{color:#a4161a;font-weight:600}.warn{color:#9a6700;font-weight:600}\
.muted{color:#666}.box{border:1px solid #e3c06b;background:#fff8e5;padding:.5em .8em;margin:.5em 0}\
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dt{color:#555}dd{margin:0}\
code{font-size:.95em}.t{white-space:nowrap}";

/// The whole page.
pub fn render(v: &StatusView) -> String {
    let mut h = String::with_capacity(8 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <meta http-equiv=\"refresh\" content=\"30\"><title>scimsync status</title><style>{CSS}</style></head><body>\
         <h1>scimsync status</h1><p class=\"muted\">version {} · generated <span id=\"generated-at\">{}</span> · \
         refreshes every 30 s</p>",
        esc(&v.version),
        esc(&v.generated_at)
    );
    health(&mut h, &v.health);
    queue(&mut h, &v.queue);
    guard(&mut h, &v.guard);
    deliveries(&mut h, "recent-deliveries", "Recent deliveries", "no delivery attempt yet", &v.recent_deliveries);
    deliveries(&mut h, "recent-failures", "Recent failures", "no failed delivery", &v.recent_failures);
    sync_runs(&mut h, &v.sync_runs);
    drift(&mut h, v.drift.as_ref());
    changes(&mut h, &v.recent_changes);
    h.push_str("</body></html>\n");
    h
}

fn health(h: &mut String, v: &Health) {
    let (class, word) = if v.ready { ("ok", "ready") } else { ("bad", "not ready") };
    let _ = write!(
        h,
        "<h2>Health</h2><dl><dt>readiness</dt><dd id=\"readiness\" class=\"{class}\">{word}</dd>\
         <dt>target</dt><dd id=\"target-kind\">{}</dd><dt>last delivery</dt><dd id=\"last-delivery\">{}</dd></dl>",
        esc(&v.target_kind),
        match &v.last_delivery {
            Some((outcome, at)) => format!("{} at {}", esc(outcome), esc(at)),
            None => "none since start".into(),
        }
    );
    if !v.reasons.is_empty() {
        h.push_str("<ul id=\"not-ready-reasons\">");
        for r in &v.reasons {
            let _ = write!(h, "<li class=\"bad\">{}</li>", esc(r));
        }
        h.push_str("</ul>");
    }
}

fn queue(h: &mut String, q: &Queue) {
    let _ = write!(
        h,
        "<h2>Queue</h2><dl><dt>waiting</dt><dd id=\"queue-depth\">{}</dd>\
         <dt>oldest waiting</dt><dd id=\"queue-oldest\">{}</dd>\
         <dt>dead-lettered</dt><dd id=\"queue-dead\" class=\"{}\">{}</dd></dl>",
        q.depth,
        q.oldest_age_seconds.map(human_age).unwrap_or_else(|| "-".into()),
        if q.dead > 0 { "bad" } else { "" },
        q.dead
    );
}

fn name_cell(kind: &str, id: &str, name: Option<&str>) -> String {
    match name {
        Some(n) => format!("{} <span class=\"muted\">{} {}</span>", esc(n), esc(kind), esc(id)),
        None => format!("<span class=\"muted\">{}</span> {}", esc(kind), esc(id)),
    }
}

fn guard(h: &mut String, g: &Guard) {
    h.push_str("<h2>Deletion guard</h2>");
    match &g.tripped_at {
        Some(at) => {
            let _ = write!(
                h,
                "<div class=\"box\"><span id=\"guard-state\" class=\"warn\">tripped</span> at {}: \
                 <span id=\"guard-held\">{}</span> deprovisioning change(s) held. Review, then \
                 <code>scimsync outbox release --held</code> or <code>scimsync outbox discard --held --confirm</code>.</div>",
                esc(at),
                g.held_total
            );
        }
        None => {
            let _ = write!(
                h,
                "<p><span id=\"guard-state\" class=\"ok\">not tripped</span>; \
                 <span id=\"guard-held\">{}</span> change(s) held.</p>",
                g.held_total
            );
        }
    }
    if g.held.is_empty() {
        return;
    }
    h.push_str(
        "<table id=\"held\"><thead><tr><th class=\"num\">#</th><th>resource</th><th>change</th><th>accepted</th></tr>\
         </thead><tbody>",
    );
    for r in &g.held {
        let _ = write!(
            h,
            "<tr><td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"t\">{}</td></tr>",
            r.outbox_id,
            name_cell(&r.kind, &r.resource_id, r.name.as_deref()),
            esc(&r.op),
            esc(&r.created_at)
        );
    }
    h.push_str("</tbody></table>");
    if g.held_total > g.held.len() as u64 {
        let _ = write!(h, "<p class=\"muted\">and {} more</p>", g.held_total - g.held.len() as u64);
    }
}

fn deliveries(h: &mut String, id: &str, title: &str, empty: &str, rows: &[DeliveryRow]) {
    let _ = write!(h, "<h2>{title}</h2>");
    if rows.is_empty() {
        let _ = write!(h, "<p id=\"{id}\" class=\"muted\">{empty}</p>");
        return;
    }
    let _ = write!(
        h,
        "<table id=\"{id}\"><thead><tr><th>finished</th><th class=\"num\">#</th><th>resource</th><th>change</th>\
         <th>outcome</th><th>detail</th></tr></thead><tbody>"
    );
    for r in rows {
        let class = match r.outcome.as_str() {
            "success" => "ok",
            "permanent" => "bad",
            _ => "warn",
        };
        let _ = write!(
            h,
            "<tr><td class=\"t\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{}</td><td>{}</td></tr>",
            esc(&r.finished_at),
            r.outbox_id,
            name_cell(&r.kind, &r.resource_id, r.name.as_deref()),
            esc(&r.op),
            esc(&r.outcome),
            esc(r.detail.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</tbody></table>");
}

fn sync_runs(h: &mut String, runs: &[SyncRunRow]) {
    h.push_str("<h2>Last sync runs</h2>");
    if runs.is_empty() {
        h.push_str("<p id=\"sync-runs\" class=\"muted\">no sync run yet</p>");
        return;
    }
    h.push_str(
        "<table id=\"sync-runs\"><thead><tr><th>started</th><th>finished</th><th>outcome</th><th>summary</th></tr>\
         </thead><tbody>",
    );
    for r in runs {
        let _ = write!(
            h,
            "<tr><td class=\"t\">{}</td><td class=\"t\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.started_at),
            esc(r.finished_at.as_deref().unwrap_or("running")),
            esc(&r.outcome),
            esc(&r.summary)
        );
    }
    h.push_str("</tbody></table>");
}

fn drift(h: &mut String, d: Option<&DriftSummary>) {
    h.push_str("<h2>Latest drift summary</h2>");
    let Some(d) = d else {
        h.push_str("<p id=\"drift\" class=\"muted\">no drift report yet (no sync run yet)</p>");
        return;
    };
    let _ = write!(h, "<p class=\"muted\">report of {}</p>", esc(&d.generated_at));
    if d.counts.iter().all(|(_, n)| *n == 0) {
        h.push_str("<p id=\"drift\" class=\"ok\">no drift</p>");
        return;
    }
    h.push_str("<table id=\"drift\"><thead><tr><th>difference</th><th class=\"num\">count</th></tr></thead><tbody>");
    for (kind, n) in &d.counts {
        let _ = write!(h, "<tr><td>{}</td><td class=\"num\">{n}</td></tr>", esc(kind));
    }
    h.push_str("</tbody></table>");
}

fn changes(h: &mut String, rows: &[ChangeRow]) {
    h.push_str("<h2>Recent changes</h2>");
    if rows.is_empty() {
        h.push_str("<p id=\"recent-changes\" class=\"muted\">no change recorded</p>");
        return;
    }
    h.push_str(
        "<table id=\"recent-changes\"><thead><tr><th>time</th><th>by</th><th>method</th><th>resource</th>\
         <th>what changed</th></tr></thead><tbody>",
    );
    for r in rows {
        let _ = write!(
            h,
            "<tr><td class=\"t\">{}</td><td>{}</td><td class=\"t\">{}</td><td>{}</td><td><code>{}</code></td></tr>",
            esc(&r.at),
            esc(&r.actor),
            esc(&r.method),
            esc(&r.resource),
            esc(&r.summary)
        );
    }
    h.push_str("</tbody></table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_every_special_character() {
        assert_eq!(esc(r#"<a href="x">&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;");
        assert_eq!(esc("plain ünïcode"), "plain ünïcode");
    }

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
                last_delivery: Some((evil.into(), evil.into())),
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
                summary: evil.into(),
            }],
        };
        let page = render(&v);
        assert!(!page.contains("<script"), "unescaped text in:\n{page}");
        assert!(!page.contains("\"'&"), "unescaped quotes or ampersand");
        // version, generated: 2; health: target, 2 x last delivery, reason: 4; guard: tripped
        // at, held row (name, kind, id, op, time): 6; deliveries: 2 tables x (time, name,
        // kind, id, op, outcome, detail): 14; sync run: 4; drift: 2; changes: 5.
        assert_eq!(page.matches("&lt;script&gt;").count(), 37);
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
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(human_age(42), "42s");
        assert_eq!(human_age(312), "5m 12s");
        assert_eq!(human_age(3 * 3600 + 60), "3h 1m");
        assert_eq!(human_age(2 * 86_400 + 7200), "2d 2h");
    }
}
