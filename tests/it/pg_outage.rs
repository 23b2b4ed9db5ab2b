//! The PostgreSQL store when the database is not there (issue 14): down at start (the
//! daemon serves, says why it is not ready, and starts by itself once the database is up),
//! away for a while under load (503s, never a 2xx that was not committed, recovery without
//! a restart, nothing acknowledged lost). Each test runs its own cluster, which it stops and
//! starts; the shared one of the suite's PostgreSQL run is never stopped.

use std::time::Duration;

use reqwest::StatusCode;

use crate::support::*;

async fn admin_get(d: &Daemon, path: &str) -> Resp {
    send(d.http.get(format!("{}{path}", d.admin_base))).await
}

/// Bounded wait until `/readyz` answers `status`; fails with the last answer.
async fn wait_ready_status(d: &Daemon, status: StatusCode, seconds: u64) -> Resp {
    let mut last = None;
    for _ in 0..seconds * 10 {
        let r = admin_get(d, "/readyz").await;
        if r.status == status {
            return r;
        }
        last = Some(r.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("/readyz did not answer {status} within {seconds} s; last: {last:?}\nlog:\n{}", d.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_down_at_start_is_reported_and_waited_for() {
    let mut pg = testpg::TestPg::start().expect("a throw-away PostgreSQL");
    let db = pg.create_database().expect("a database");
    // The token is made (and the schema migrated) while the database is up.
    let mut d = Daemon::prepare_on_store("", pg_store_env(&pg, &db));
    pg.stop();
    d.spawn();

    // Alive, listening, not ready, and saying why (once the first attempt has failed).
    assert_eq!(admin_get(&d, "/healthz").await.status, StatusCode::OK);
    let mut r = admin_get(&d, "/readyz").await;
    for _ in 0..100 {
        if r.body["reasons"].to_string().contains("last error") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        r = admin_get(&d, "/readyz").await;
    }
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(r.body["ready"], false, "{}", r.body);
    assert_eq!(r.body["checks"]["store"]["ok"], false, "{}", r.body);
    let reason = r.body["reasons"][0].as_str().unwrap_or_default().to_string();
    assert!(reason.starts_with("store: connecting to PostgreSQL (attempt "), "{}", r.body);
    assert!(reason.contains("last error: "), "{}", r.body);

    // The IdP gets a SCIM 503 that tells it to come back, not a refused connection.
    let r = d.post("/Users", user_body("early@example.com")).await;
    r.assert_error(503, None);
    assert!(r.body["detail"].as_str().unwrap().contains("connecting to PostgreSQL"), "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("5"));
    let r = d.get("/Users").await;
    r.assert_error(503, None);

    // The status page says so too; the metrics say not ready.
    let page = admin_get(&d, "/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.as_str().unwrap().contains("connecting to PostgreSQL"), "{}", page.body);
    let metrics = admin_get(&d, "/metrics").await;
    assert!(metrics.body.as_str().unwrap().contains("scimsync_ready 0"), "{}", metrics.body);

    // SIGTERM while still connecting is a clean exit, not a hang.
    let status = d.stop();
    assert!(status.success(), "SIGTERM while connecting must exit 0, got {status:?}\nlog:\n{}", d.log());

    // Started again, still without its database; then the database comes up.
    d.spawn();
    wait_ready_status(&d, StatusCode::SERVICE_UNAVAILABLE, 10).await;
    pg.restart().expect("start the cluster again");
    let r = wait_ready_status(&d, StatusCode::OK, 60).await;
    assert_eq!(r.body["checks"]["store"]["ok"], true, "{}", r.body);
    let id = d.create_user("late@example.com").await;
    assert_eq!(d.get(&format!("/Users/{id}")).await.status, StatusCode::OK);
    assert!(d.stop().success());
}
