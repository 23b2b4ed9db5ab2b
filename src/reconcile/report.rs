//! The drift report in the forms people read: a plain-text table for the terminal (counts
//! first, then items grouped by kind), stable JSON for scripts, and one HTML page (no
//! external assets) for the admin listener. Pure: a run and its rows in, text out.

use serde_json::{Value, json};

use super::diff::DriftKind;
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

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n.saturating_sub(1)).collect::<String>())
    }
}

/// What the report says about one item, in words.
fn detail(r: &DriftRow) -> String {
    match DriftKind::parse(&r.kind) {
        Some(DriftKind::MissingInApp) => "not in the app".into(),
        Some(DriftKind::OrphanedInApp) => format!("app id {}", r.app_id.as_deref().unwrap_or("?")),
        Some(DriftKind::MembershipMismatch) => {
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
        Some(DriftKind::StuckProvision) if r.ours["state"] == "held" => format!(
            "outbox #{} {}: held by the deletion guard (scimsync outbox release --held | discard --held --confirm)",
            value_text(&r.ours["outbox_id"]),
            value_text(&r.ours["op"])
        ),
        Some(DriftKind::StuckProvision) => format!(
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
    let s = &run.summary;
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
    out.push_str(&format!(
        "Listed in the app: {} users, {} groups. Drift: {} item(s), {} new, {} resolved since the previous report.\n",
        s["listed"]["users"], s["listed"]["groups"], s["total"], s["new"], s["resolved"]
    ));
    if let Some(reason) = s["repair"]["refused"].as_str() {
        out.push_str(&format!("\n!! {reason}\n"));
    } else if s["repair"]["queued_changes"].as_u64().unwrap_or(0) > 0 {
        out.push_str(&format!("Repair queued {} change(s).\n", s["repair"]["queued_changes"]));
    }
    out.push('\n');
    for kind in DriftKind::ALL {
        let n = s["counts"][kind.as_str()].as_u64().unwrap_or(0);
        out.push_str(&format!("  {:<22} {n:>6}\n", kind.as_str()));
    }
    for kind in DriftKind::ALL {
        let rows: Vec<&DriftRow> = items.iter().filter(|r| r.kind == kind.as_str() && r.change != "resolved").collect();
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
                r.change,
                r.resource_kind,
                clip(&r.name, 32),
                r.cause,
                r.repair,
                clip(&detail(r), 120)
            ));
        }
    }
    let resolved: Vec<&DriftRow> = items.iter().filter(|r| r.change == "resolved").collect();
    if !resolved.is_empty() {
        out.push_str(&format!("\nResolved since the previous report ({})\n", resolved.len()));
        for r in resolved {
            out.push_str(&format!("  {:<22} {:<6} {}\n", r.kind, r.resource_kind, clip(&r.name, 60)));
        }
    }
    out
}

/// Escape text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// The HTML page.
pub fn to_html(run: Option<&SyncRun>, items: &[DriftRow]) -> String {
    let mut b = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>scimsync drift report</title>\
         <style>body{font:14px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}\
         td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}th{background:#f3f3f3}\
         .refused{background:#fee;border:1px solid #c00;padding:.5em}.new{font-weight:bold}</style></head><body>\
         <h1>Drift report</h1>",
    );
    let Some(run) = run else {
        b.push_str("<p id=\"no-run\">No sync run has finished yet. Start one with <code>scimsync sync now</code>.</p></body></html>");
        return b;
    };
    let s = &run.summary;
    b.push_str(&format!(
        "<p id=\"run\">Run <b>{}</b> ({}) started {}, status <b>{}</b>. Listed in the app: <span id=\"listed-users\">{}</span> users, \
         <span id=\"listed-groups\">{}</span> groups. {} item(s), {} new, {} resolved.</p>",
        run.id,
        esc(&run.trigger),
        esc(&run.started_at),
        esc(&run.status),
        s["listed"]["users"],
        s["listed"]["groups"],
        s["total"],
        s["new"],
        s["resolved"]
    ));
    if let Some(reason) = s["repair"]["refused"].as_str() {
        b.push_str(&format!("<p class=\"refused\" id=\"refused\">{}</p>", esc(reason)));
    }
    b.push_str("<table id=\"counts\"><tr><th>Kind</th><th>Items</th></tr>");
    for kind in DriftKind::ALL {
        b.push_str(&format!(
            "<tr><td>{}</td><td data-kind=\"{}\">{}</td></tr>",
            kind.title(),
            kind.as_str(),
            s["counts"][kind.as_str()].as_u64().unwrap_or(0)
        ));
    }
    b.push_str("</table>");
    for kind in DriftKind::ALL {
        let rows: Vec<&DriftRow> = items.iter().filter(|r| r.kind == kind.as_str() && r.change != "resolved").collect();
        if rows.is_empty() {
            continue;
        }
        b.push_str(&format!(
            "<h2>{} ({})</h2><table class=\"items\" data-kind=\"{}\"><tr><th>Change</th><th>Type</th>\
                             <th>Name</th><th>Cause</th><th>Repair</th><th>Detail</th></tr>",
            kind.title(),
            rows.len(),
            kind.as_str()
        ));
        for r in rows {
            b.push_str(&format!(
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td class=\"name\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&r.change),
                esc(&r.change),
                esc(&r.resource_kind),
                esc(&r.name),
                esc(&r.cause),
                esc(&r.repair),
                esc(&clip(&detail(r), 300))
            ));
        }
        b.push_str("</table>");
    }
    b.push_str("</body></html>");
    b
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
            summary: json!({"listed": {"users": 3, "groups": 1}, "counts": {"attribute_mismatch": 1, "orphaned_in_app": 1},
                            "total": 2, "new": 1, "resolved": 1,
                            "repair": {"refused": "repair refused: <too many>", "queued_changes": 0}}),
        }
    }

    fn row(kind: &str, name: &str, change: &str) -> DriftRow {
        DriftRow {
            kind: kind.into(),
            resource_kind: "User".into(),
            resource_id: Some("r".into()),
            app_id: Some("x".into()),
            name: name.into(),
            attribute: Some("title".into()),
            ours: json!("CEO"),
            app: json!("Boss"),
            cause: "edited_in_app".into(),
            change: change.into(),
            repair: "none".into(),
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
    fn html_escapes_names() {
        let h = to_html(Some(&run()), &[row("attribute_mismatch", "<script>x</script>", "new")]);
        assert!(h.contains("&lt;script&gt;x&lt;/script&gt;"), "{h}");
        assert!(!h.contains("<script>"), "{h}");
        assert!(h.contains("repair refused: &lt;too many&gt;"));
        assert!(to_html(None, &[]).contains("No sync run has finished yet"));
    }
}
