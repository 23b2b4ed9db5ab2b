//! The status page on the admin listener (issue 6), loaded in headless Chromium: after real
//! deliveries, a failing one and deletions held by the guard (issue 9), the rendered page
//! shows the numbers and names an operator needs. Chromium comes from
//! `scripts/browser-env.sh`; without it these tests fail and say so.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;

use crate::app::{Mode, Proxy, ScimApp, scim_target_config};
use crate::support::*;

fn chromium() -> PathBuf {
    let p = PathBuf::from("/usr/bin/chromium");
    assert!(
        p.exists(),
        "headless Chromium is needed for the status page test and /usr/bin/chromium is missing: \
         run scripts/browser-env.sh (scripts/test.sh does) and try again"
    );
    p
}

/// The DOM Chromium built from `url`, serialized (`--dump-dom`). Bounded: fails after 60 s.
fn dump_dom(url: &str) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.path().display()),
            "--dump-dom",
            url,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).expect("read chromium output");
        s
    });
    for _ in 0..1200 {
        if let Some(st) = child.try_wait().expect("wait chromium") {
            assert!(st.success(), "chromium exited with {st}");
            return reader.join().expect("reader");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("chromium did not finish loading {url} within 60 s");
}

/// The text of the element `<tag id="id" ...>...</tag>` (first occurrence), tags included.
fn element<'a>(dom: &'a str, tag: &str, id: &str) -> &'a str {
    let start = dom.find(&format!("<{tag} id=\"{id}\"")).unwrap_or_else(|| panic!("no <{tag} id={id:?}> in:\n{dom}"));
    let end = dom[start..].find(&format!("</{tag}>")).expect("closing tag") + start;
    &dom[start..end]
}

/// The text content of the element with this id (tags stripped).
fn text_of(dom: &str, tag: &str, id: &str) -> String {
    let el = element(dom, tag, id);
    let mut out = String::new();
    let mut in_tag = false;
    for c in el.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_chromium_shows_queue_failures_and_held_deletions() {
    chromium();
    let app = ScimApp::start().await;
    let proxy = Proxy::start(&app.base).await;
    let guard = "[outbox.deletion_guard]\nthreshold_count = 2\nthreshold_share = 1.0\n";
    // fay's failing create is retried rarely: every retry is a row of the recent-deliveries
    // table (20 rows), and quick ones would push eve's success out of it while chromium loads.
    // No scheduled sync: it would make the test's own `POST /sync` busy.
    let target = scim_target_config(&proxy.base)
        .replace("retry_base_seconds = 0.05", "retry_base_seconds = 30")
        .replace("retry_max_seconds = 1\n", "retry_max_seconds = 600\n");
    let d = Daemon::start_with(&format!("{target}max_attempts = 1000\n{guard}[reconcile]\nschedule = \"\"\n"));
    let names = ["ann", "ben", "cat", "dan", "eve"];
    let mut ids = Vec::new();
    for n in names {
        ids.push(d.create_user(&format!("{n}@example.com")).await);
    }
    d.wait_outbox_empty().await;
    // eve is deactivated (Okta's PATCH): "what changed" must say so in words.
    let r = d
        .patch(
            &format!("/Users/{}", ids[4]),
            patch_body(serde_json::json!([{"op": "replace", "value": {"active": false}}])),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    d.wait_outbox_empty().await;
    for id in &ids[..4] {
        assert_eq!(d.delete(&format!("/Users/{id}")).await.status, StatusCode::NO_CONTENT);
    }
    d.wait_outbox_empty().await;
    let held_ids: Vec<String> = d.held_ids();
    assert!(!held_ids.is_empty(), "the guard holds some of the deletions");
    // A sync run now: its report shows the held deletions as drift (the app still has them).
    let sync = d.http.post(format!("{}/sync", d.admin_base)).header("X-Requested-By", "test").send().await.unwrap();
    assert_eq!(sync.status(), StatusCode::OK, "{}", sync.text().await.unwrap());
    let report: serde_json::Value =
        d.http.get(format!("{}/drift", d.admin_base)).send().await.unwrap().json().await.unwrap();
    let counts = report["run"]["summary"]["counts"].as_object().expect("counts").clone();
    assert!(counts.values().any(|n| n.as_u64() > Some(0)), "some drift: {report}");
    // The app now fails: the next change is retried, not delivered.
    proxy.set(Mode::Fail { status: 500, retry_after: None });
    d.create_user("fay@example.com").await;
    let status_url = format!("{}/status", d.admin_base);
    let mut page = String::new();
    for _ in 0..600 {
        page = d.http.get(&status_url).send().await.unwrap().text().await.unwrap();
        if page.contains("fay@example.com") && page.contains("id=\"recent-failures\"><thead>") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(page.contains("fay@example.com"), "the failing delivery never showed:\n{page}");

    let dom = tokio::task::block_in_place(|| dump_dom(&status_url));
    assert_eq!(text_of(&dom, "dd", "readiness"), "ready", "a failing app does not make the daemon unready");
    assert_eq!(text_of(&dom, "dd", "target-kind"), "scim");
    assert_eq!(text_of(&dom, "dd", "queue-depth"), "1", "only fay's create waits (held ones are not queued)");
    assert_ne!(text_of(&dom, "dd", "queue-oldest"), "-");
    assert_eq!(text_of(&dom, "span", "guard-state"), "tripped");
    assert_eq!(text_of(&dom, "span", "guard-held"), held_ids.len().to_string());
    let held = text_of(&dom, "table", "held");
    for (i, id) in ids[..4].iter().enumerate() {
        let name = format!("{}@example.com", names[i]);
        assert_eq!(held.contains(&name), held_ids.contains(id), "{name} held? table:\n{held}");
    }
    let failures = text_of(&dom, "table", "recent-failures");
    assert!(failures.contains("fay@example.com") && failures.contains("500"), "{failures}");
    let deliveries = text_of(&dom, "table", "recent-deliveries");
    assert!(deliveries.contains("eve@example.com") && deliveries.contains("success"), "{deliveries}");
    let runs = text_of(&dom, "table", "sync-runs");
    assert!(runs.contains(report["run"]["started_at"].as_str().unwrap()) && runs.contains("ok"), "{runs}");
    // Drift in the report's plain labels; a count that is not zero stands out, and so does
    // the total in the health section, with a link to the report.
    let drift = element(&dom, "table", "drift");
    let mut total = 0;
    for (kind, n) in &counts {
        let n = n.as_u64().unwrap();
        total += n;
        let label = match kind.as_str() {
            "missing_in_app" => "Missing in the app",
            "orphaned_in_app" => "Orphaned in the app (unknown to the IdP)",
            "attribute_mismatch" => "Attribute mismatch",
            "active_mismatch" => "Active-state mismatch",
            "membership_mismatch" => "Membership mismatch",
            "stuck_provision" => "Stuck provisioning",
            other => panic!("a kind the test does not know: {other}"),
        };
        let row = if n > 0 { "<tr class=\"warn\">" } else { "<tr>" };
        assert!(drift.contains(&format!("{row}<td>{label}</td><td class=\"num\">{n}</td>")), "{kind} {n} in {drift}");
        assert!(!drift.contains(kind.as_str()), "the raw kind {kind} is shown: {drift}");
    }
    assert!(total > 0);
    assert!(element(&dom, "dd", "drift-state").contains("class=\"warn\""), "drift must not read green");
    assert!(text_of(&dom, "dd", "drift-state").starts_with(&format!("{total} difference(s)")));
    assert!(text_of(&dom, "p", "drift-total").contains(&format!("{total} difference(s)")));
    // Links to the other admin pages.
    let links = element(&dom, "nav", "links");
    for href in ["drift.html", "metrics", "readyz"] {
        assert!(links.contains(&format!("href=\"{href}\"")), "no link to {href}: {links}");
    }
    // Each delivery says where it went.
    let target = text_of(&dom, "dd", "target");
    assert!(target.starts_with(&format!("scim {}", proxy.base)), "{target} vs {}", proxy.base);
    assert!(deliveries.contains(&target), "deliveries name their target: {deliveries}");
    // "what changed" in words: deletions, the deactivation, creations.
    let changes = text_of(&dom, "table", "recent-changes");
    assert!(changes.contains("DELETE") && changes.contains("fay@example.com"), "{changes}");
    assert!(changes.contains("deleted") && changes.contains("deactivated"), "{changes}");
    assert!(changes.contains("created with userName"), "{changes}");
    assert!(!changes.contains('{') && !changes.contains('"'), "no raw JSON: {changes}");
    assert!(!dom.contains("<script"), "the page needs no script");

    // The drift report page, from the same templates: plain labels, non-zero counts stand out.
    let report_dom = tokio::task::block_in_place(|| dump_dom(&format!("{}/drift.html", d.admin_base)));
    let report_counts = element(&report_dom, "table", "counts");
    for (kind, n) in &counts {
        let cell = format!("data-kind=\"{kind}\">{n}</td>");
        assert!(report_counts.contains(&cell), "{cell} in {report_counts}");
    }
    assert!(report_counts.contains("<tr class=\"warn\">"), "{report_counts}");
    assert!(element(&report_dom, "nav", "links").contains("href=\"status\""));
}

/// Issue 18 item 5: with the dry-run target, nothing tells the operator to run a sync it
/// cannot run: the status page, the drift report page, `/drift`, `drift`, `sync runs` and
/// `sync now` all say that this target cannot be listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_daemon_says_everywhere_that_it_cannot_be_reconciled() {
    chromium();
    let d = Daemon::start_with("[target]\nkind = \"dry-run\"\n");
    let said = "the dry-run target cannot list the app's accounts";
    let dom = tokio::task::block_in_place(|| dump_dom(&format!("{}/status", d.admin_base)));
    for (tag, id) in [("dd", "drift-state"), ("p", "sync-runs"), ("p", "drift")] {
        assert!(text_of(&dom, tag, id).contains(said), "{id}: {}", text_of(&dom, tag, id));
    }
    let report = tokio::task::block_in_place(|| dump_dom(&format!("{}/drift.html", d.admin_base)));
    assert!(text_of(&report, "p", "no-run").contains(said), "{report}");
    for page in [&dom, &report] {
        assert!(!page.contains("sync now"), "a dry run cannot be synced:\n{page}");
    }
    let r = d.http.get(format!("{}/drift", d.admin_base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.json::<serde_json::Value>().await.unwrap()["error"].as_str().unwrap().contains(said));
    let drift = d.cli_raw(&["drift"]);
    let stderr = String::from_utf8_lossy(&drift.stderr);
    assert!(stderr.contains(said) && !stderr.contains("sync now"), "{stderr}");
    assert_eq!(drift.status.code(), Some(1), "no report");
    let runs = d.cli(&["sync", "runs"]);
    assert!(runs.contains(said) && !runs.contains("sync now"), "{runs}");
    let now = d.cli_raw(&["sync", "now", "--url", &d.admin_base]);
    let stderr = String::from_utf8_lossy(&now.stderr);
    assert!(stderr.contains(said), "{stderr}");
    assert_eq!(now.status.code(), Some(1));
}

#[tokio::test]
async fn status_page_needs_the_admin_token_when_one_is_set() {
    let token = "status-page-admin-token-0123456789";
    let d = Daemon::start_with_env("", &[("SCIMSYNC_ADMIN__BEARER_TOKEN", token)]);
    for path in ["/", "/status"] {
        let url = format!("{}{path}", d.admin_base);
        let r = d.http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path} without the token");
        let r = d.http.get(&url).bearer_auth(token).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path} with the token");
        assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
        let body = r.text().await.unwrap();
        assert!(body.contains("<h1>scimsync status</h1>") && body.contains("nothing to reconcile"), "{body}");
    }
}
