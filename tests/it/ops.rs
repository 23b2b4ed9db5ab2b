//! The admin listener: liveness, readiness (and when it flips), Prometheus metrics that
//! move as requests flow, its bearer token, and `scimsync healthcheck`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::*;

async fn admin_get(d: &Daemon, path: &str, token: Option<&str>) -> Resp {
    let mut rb = d.http.get(format!("{}{path}", d.admin_base));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    send(rb).await
}

async fn scrape(d: &Daemon) -> String {
    let r = admin_get(d, "/metrics", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.header("content-type").is_some_and(|c| c.contains("text")), "{:?}", r.header("content-type"));
    r.body.as_str().expect("metrics are text").to_string()
}

/// The value of one sample, `name{labels}` written exactly as exposed; 0 when absent (a
/// labelled counter appears with its first event).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap_or_else(|_| panic!("{series}: not a number: {v:?}")))
        .unwrap_or(0.0)
}

fn healthcheck(d: &Daemon, args: &[&str]) -> (i32, String) {
    let mut full = vec!["healthcheck"];
    full.extend_from_slice(args);
    let out = d.cli_raw(&full);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().expect("exit code"), text)
}

#[tokio::test]
async fn healthz_and_readyz_answer() {
    let d = Daemon::start();
    let r = admin_get(&d, "/healthz", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, Value::String("ok\n".into()));

    let r = admin_get(&d, "/readyz", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["ready"], true, "{}", r.body);
    assert_eq!(r.body["checks"]["store"]["ok"], true, "{}", r.body);
    assert_eq!(r.body["checks"]["migrations"]["ok"], true, "{}", r.body);
    assert_eq!(r.body["checks"]["target"]["kind"], "none", "{}", r.body);
    assert_eq!(r.body["reasons"], serde_json::json!([]), "{}", r.body);

    assert_eq!(admin_get(&d, "/nope", None).await.status, StatusCode::NOT_FOUND);
    // The SCIM listener does not serve the admin routes.
    assert_eq!(d.http.get(d.url("/../../healthz")).send().await.unwrap().status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn metrics_move_as_requests_flow() {
    let d = Daemon::start_with("[target]\nkind = \"dry-run\"\n");
    let before = scrape(&d).await;
    for needle in [
        "scimsync_build_info{version=\"",
        "scimsync_outbox_depth ",
        "scimsync_outbox_oldest_age_seconds ",
        "scimsync_outbox_dead ",
        "scimsync_database_size_bytes ",
    ] {
        assert!(before.contains(needle), "missing {needle:?} in:\n{before}");
    }
    assert!(sample(&before, "scimsync_database_size_bytes") > 0.0, "{before}");

    let created = r#"scimsync_scim_requests_total{route="/Users",method="POST",status="201"}"#;
    let read = r#"scimsync_scim_requests_total{route="/Users/{id}",method="GET",status="200"}"#;
    let missing = r#"scimsync_scim_requests_total{route="/Users/{id}",method="GET",status="404"}"#;
    let latency = r#"scimsync_scim_request_duration_seconds_count{route="/Users"}"#;
    let delivered = r#"scimsync_deliveries_total{outcome="success"}"#;

    let a = d.create_user("metrics-a@example.com").await;
    d.create_user("metrics-b@example.com").await;
    assert_eq!(d.get(&format!("/Users/{a}")).await.status, StatusCode::OK);
    assert_eq!(d.get("/Users/no-such-id").await.status, StatusCode::NOT_FOUND);

    // Deliveries run in the background: wait (bounded) until both have been made.
    let mut after = String::new();
    for _ in 0..300 {
        after = scrape(&d).await;
        if sample(&after, delivered) >= sample(&before, delivered) + 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sample(&after, created) - sample(&before, created), 2.0, "{after}");
    assert_eq!(sample(&after, read) - sample(&before, read), 1.0, "{after}");
    assert_eq!(sample(&after, missing) - sample(&before, missing), 1.0, "{after}");
    assert!(sample(&after, latency) >= 2.0, "{after}");
    assert!(sample(&after, delivered) >= 2.0, "deliveries did not show up:\n{after}");
    assert!(sample(&after, "scimsync_delivery_duration_seconds_count") >= 2.0, "{after}");
    // Ids never become label values.
    assert!(!after.contains(&a), "a resource id leaked into a label:\n{after}");

    let r = admin_get(&d, "/readyz", None).await;
    assert_eq!(r.body["checks"]["target"]["kind"], "dry-run", "{}", r.body);
    assert_eq!(r.body["checks"]["target"]["reachable"], true, "{}", r.body);
    assert_eq!(r.body["checks"]["target"]["last_delivery"], "success", "{}", r.body);
}

#[tokio::test]
async fn outbox_gauges_are_read_at_scrape() {
    // No target: changes stay queued, so the depth is exactly what was accepted.
    let d = Daemon::start();
    assert_eq!(sample(&scrape(&d).await, "scimsync_outbox_depth"), 0.0);
    d.create_user("q1@example.com").await;
    d.create_user("q2@example.com").await;
    let text = scrape(&d).await;
    assert_eq!(sample(&text, "scimsync_outbox_depth"), 2.0, "{text}");
    assert!(sample(&text, "scimsync_outbox_oldest_age_seconds") >= 0.0, "{text}");
    assert_eq!(sample(&text, "scimsync_outbox_dead"), 0.0, "{text}");
}

const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

#[tokio::test]
async fn a_bearer_token_protects_everything_but_healthz() {
    let d = Daemon::start_with(&format!("[admin]\nbearer_token = \"{ADMIN_TOKEN}\"\n"));
    assert_eq!(admin_get(&d, "/healthz", None).await.status, StatusCode::OK);
    for path in ["/readyz", "/metrics"] {
        let r = admin_get(&d, path, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(r.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")), "{path}");
        assert_eq!(admin_get(&d, path, Some("wrong-token-0123456789")).await.status, StatusCode::UNAUTHORIZED);
        // The SCIM token is not the admin token.
        assert_eq!(admin_get(&d, path, Some(&d.token)).await.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(admin_get(&d, path, Some(ADMIN_TOKEN)).await.status, StatusCode::OK, "{path}");
    }
    // healthcheck sends the configured token.
    let (code, out) = healthcheck(&d, &["--url", &d.admin_base]);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn healthcheck_exit_codes() {
    let d = Daemon::start();
    let (code, out) = healthcheck(&d, &["--url", &d.admin_base]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ready"), "{out}");

    // Nothing listening there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (code, out) = healthcheck(&d, &["--url", &url, "--timeout-seconds", "2"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not ready"), "{out}");
}

/// Another process holding SQLite's write lock (a stuck CLI, a backup tool) makes the store
/// unwritable for the daemon: readiness must say so, and recover when the lock goes. (Making
/// the file read-only would prove nothing when tests run as root, and the daemon's open
/// connection keeps writing anyway.)
#[tokio::test]
async fn readiness_flips_when_the_store_is_unwritable() {
    // SQLite only: it takes the SQLite file's write lock (tests/it/pg_outage.rs stops a
    // PostgreSQL instead).
    if on_postgres() {
        return;
    }
    let d = Daemon::start_with_env("", &[("SCIMSYNC_STORE__BUSY_TIMEOUT_SECONDS", "1")]);
    assert_eq!(admin_get(&d, "/readyz", None).await.status, StatusCode::OK);

    let db = d.data_dir().join("scimsync.db");
    let conn = rusqlite::Connection::open(&db).expect("open the daemon's database");
    conn.execute_batch("BEGIN EXCLUSIVE").expect("take the write lock");

    let r = admin_get(&d, "/readyz", None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(r.body["ready"], false, "{}", r.body);
    assert_eq!(r.body["checks"]["store"]["ok"], false, "{}", r.body);
    let reasons = r.body["reasons"].to_string();
    assert!(reasons.contains("store: not writable"), "{reasons}");
    let (code, out) = healthcheck(&d, &["--url", &d.admin_base]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("store: not writable"), "{out}");
    // Liveness is not readiness: the process is fine.
    assert_eq!(admin_get(&d, "/healthz", None).await.status, StatusCode::OK);

    conn.execute_batch("ROLLBACK").expect("release the lock");
    let r = admin_get(&d, "/readyz", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

#[tokio::test]
async fn systemd_notifications_ready_watchdog_stopping() {
    // The daemon speaks sd_notify(3) to NOTIFY_SOCKET: a datagram socket this test owns,
    // standing in for systemd.
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let mut d =
        Daemon::start_with_env("", &[("NOTIFY_SOCKET", sock_path.to_str().unwrap()), ("WATCHDOG_USEC", "200000")]);
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let mut wait_for = |needle: &str, seen: &mut String| {
        while !seen.contains(needle) {
            let n = sock.recv(&mut buf).unwrap_or_else(|e| panic!("no {needle} from the daemon: {e}; got {seen:?}"));
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    wait_for("READY=1", &mut seen);
    assert!(seen.contains("STATUS=serving SCIM on http://127.0.0.1:"), "{seen:?}");
    wait_for("WATCHDOG=1", &mut seen);
    // `systemctl reload` (ExecReload sends SIGHUP) waits for READY=1 after RELOADING=1.
    d.signal("HUP");
    wait_for("RELOADING=1", &mut seen);
    assert!(seen.contains("MONOTONIC_USEC="), "systemd 253+ needs MONOTONIC_USEC with RELOADING=1: {seen:?}");
    // Each notification is its own datagram: what follows RELOADING=1 must include READY=1.
    let mut after = seen.split("RELOADING=1").nth(1).unwrap_or_default().to_string();
    wait_for("READY=1", &mut after);
    assert!(d.stop().success());
    wait_for("STOPPING=1", &mut seen);
}

/// "Serves metrics that a Prometheus scrape accepts" (issue 6): the exposition, after real
/// traffic and a sync run, parses with the Prometheus project's own strict OpenMetrics
/// parser (prometheus-client, installed by scripts/python-env.sh), and the families we
/// document are there.
#[tokio::test]
async fn metrics_parse_with_the_prometheus_openmetrics_parser() {
    use std::io::Write;
    let app = crate::app::ScimApp::start().await;
    let d = Daemon::start_with(&format!("{}[reconcile]\nschedule = \"\"\n", crate::app::scim_target_config(&app.base)));
    d.create_user("scrape@example.com").await;
    d.wait_outbox_empty().await;
    let r = d.http.post(format!("{}/sync", d.admin_base)).header("x-requested-by", "tests").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = d.http.get(format!("{}/metrics", d.admin_base)).send().await.unwrap().text().await.unwrap();
    let py = crate::app::venv().join("bin/python");
    let mut child = std::process::Command::new(&py)
        .args([
            "-c",
            "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as p\n\
             for f in p(sys.stdin.read()):\n    print(f.name, f.type, len(f.samples))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the venv's python (scripts/python-env.sh)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let families = String::from_utf8(out.stdout).unwrap();
    for (name, kind) in [
        ("scimsync_scim_requests", "counter"),
        ("scimsync_scim_request_duration_seconds", "histogram"),
        ("scimsync_deliveries", "counter"),
        ("scimsync_outbox_depth", "gauge"),
        ("scimsync_sync_runs", "counter"),
        ("scimsync_sync_duration_seconds", "histogram"),
        ("scimsync_sync_last_success_timestamp_seconds", "gauge"),
        ("scimsync_drift_items", "gauge"),
        ("scimsync_database_size_bytes", "gauge"),
    ] {
        let line = families
            .lines()
            .find(|l| l.split(' ').next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in:\n{families}"));
        assert!(line.split(' ').nth(1) == Some(kind), "{line}");
        assert!(line.split(' ').nth(2).is_some_and(|n| n != "0"), "{name} has samples: {line}");
    }
}
