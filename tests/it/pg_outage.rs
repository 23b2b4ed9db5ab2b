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
    let _ready = d.spawn_listening();

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
    let ready = d.spawn_listening();
    wait_ready_status(&d, StatusCode::SERVICE_UNAVAILABLE, 10).await;
    pg.restart().expect("start the cluster again");
    let r = wait_ready_status(&d, StatusCode::OK, 60).await;
    ready.recv_timeout(Duration::from_secs(10)).expect("\"scimsync ready\" once the store is open");
    assert_eq!(r.body["checks"]["store"]["ok"], true, "{}", r.body);
    let id = d.create_user("late@example.com").await;
    assert_eq!(d.get(&format!("/Users/{id}")).await.status, StatusCode::OK);
    assert!(d.stop().success());
}

/// What one client task saw: every answer's status, the users it was told were created,
/// and per user the title numbers it sent and the last one acknowledged.
#[derive(Default)]
struct Seen {
    statuses: std::collections::BTreeMap<u16, u64>,
    /// Requests that got no HTTP answer at all (what failed, for the message).
    no_answer: Vec<String>,
    /// (id, userName) of every 201.
    created: Vec<(String, String)>,
    /// id -> (highest title number sent, highest acknowledged with a 200).
    titles: std::collections::HashMap<String, (u64, Option<u64>)>,
}

/// One IdP-like client: create a user, PATCH one of its users' title, and again, until
/// `stop`; a refused request is tried again a little later (with a new name or number: what
/// an IdP sends next is its own business; what matters is what each answer promised).
async fn client_load(
    d_http: reqwest::Client,
    base: String,
    token: String,
    w: usize,
    acked: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Seen {
    use std::sync::atomic::Ordering::Relaxed;
    let mut seen = Seen::default();
    let mut n = 0u64;
    while !stop.load(Relaxed) {
        n += 1;
        let (rb, patched) = if n % 2 == 1 || seen.created.is_empty() {
            let name = format!("load{w}-{n}@example.com");
            (d_http.post(format!("{base}/Users")).body(user_body(&name).to_string()), None)
        } else {
            let (id, _) = &seen.created[(n as usize / 2) % seen.created.len()];
            let body = patch_body(serde_json::json!([{"op": "replace", "path": "title", "value": n.to_string()}]));
            (d_http.patch(format!("{base}/Users/{id}")).body(body.to_string()), Some(id.clone()))
        };
        if let Some(id) = &patched {
            let e = seen.titles.entry(id.clone()).or_default();
            e.0 = e.0.max(n);
        }
        let rb = rb.bearer_auth(&token).header("content-type", "application/scim+json");
        let (status, body) = match rb.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                match r.text().await {
                    Ok(t) => (status, t),
                    Err(e) => {
                        seen.no_answer.push(format!("{status} with a body cut off: {e}"));
                        continue;
                    }
                }
            }
            Err(e) => {
                seen.no_answer.push(format!("{e:?}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        *seen.statuses.entry(status).or_default() += 1;
        match (status, &patched) {
            (201, None) => {
                let v: serde_json::Value = serde_json::from_str(&body).expect("a 201 carries the user");
                let id = v["id"].as_str().expect("id").to_string();
                seen.created.push((id, v["userName"].as_str().expect("userName").to_string()));
                acked.fetch_add(1, Relaxed);
            }
            (200, Some(id)) => {
                let e = seen.titles.get_mut(id).expect("sent");
                e.1 = Some(e.1.unwrap_or(0).max(n));
                acked.fetch_add(1, Relaxed);
            }
            // An IdP backs off after a refusal.
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    seen
}

/// Issue 14: "a test where the database goes away for 10 s under load: requests in flight
/// fail with 503 (never a 2xx that was not committed), the daemon recovers by itself,
/// nothing acknowledged is lost", and the changes reach the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_away_for_ten_seconds_under_load_loses_nothing_acknowledged() {
    // PostgreSQL only: a SQLite store has no database to lose (and this takes 10 s and more).
    if !on_postgres() {
        return;
    }
    let app = crate::app::ScimApp::start().await;
    let mut pg = testpg::TestPg::start().expect("a throw-away PostgreSQL");
    let db = pg.create_database().expect("a database");
    // A sync every 3 seconds: the scheduler meets the outage too and must survive it.
    let config = format!("{}[reconcile]\nschedule = \"*/3 * * * * *\"\n", crate::app::scim_target_config(&app.base));
    let mut d = Daemon::prepare_on_store(&config, pg_store_env(&pg, &db));
    d.spawn();
    wait_ready_status(&d, StatusCode::OK, 30).await;

    let load = Load::start(&d);
    load.wait_acked(40, "load before the outage").await;

    // The database goes away (fast shutdown: sessions are cut mid-transaction) for 10 s
    // while the load goes on; readiness is watched meanwhile.
    tokio::task::block_in_place(|| pg.stop());
    let mut ready_during = std::collections::BTreeSet::new();
    let away = tokio::time::Instant::now();
    while away.elapsed() < Duration::from_secs(10) {
        ready_during.insert(admin_get(&d, "/readyz").await.status.as_u16());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let acked_while_away = load.acked();
    tokio::task::block_in_place(|| pg.restart()).expect("start the cluster again");

    // No restart of the daemon: writes succeed again by themselves, and it is ready again.
    load.wait_acked(acked_while_away + 40, "load after the outage").await;
    wait_ready_status(&d, StatusCode::OK, 30).await;
    let all = load.finish().await;
    eprintln!("answers: {:?}; no answer: {}", all.statuses, all.no_answer.len());

    // Every refusal was a 503 (never a 500 or another error), and there were refusals: the
    // outage was felt. Every request got an HTTP answer.
    let others: Vec<_> = all.statuses.keys().filter(|s| ![200, 201, 503].contains(*s)).collect();
    assert!(others.is_empty(), "statuses other than 200/201/503: {:?}\nlog:\n{}", all.statuses, d.log());
    assert!(all.statuses.get(&503).is_some_and(|n| *n > 0), "no 503 during the outage: {:?}", all.statuses);
    assert!(all.no_answer.is_empty(), "requests without an HTTP answer: {:?}", all.no_answer);
    assert!(ready_during.contains(&503), "/readyz never said not ready while the database was away: {ready_during:?}");
    assert!(ready_during.iter().all(|s| [200, 503].contains(s)), "/readyz answered something else: {ready_during:?}");

    let expected_titles = check_acknowledged(&d, &all).await;

    // The worker and the scheduler lived through it: the queue drains to the app, nothing
    // dead-lettered, a sync runs on demand, and the app holds what the store holds.
    drained_without_dead(&d).await;
    // A scheduled run may be under way (409): the on-demand one goes after it.
    let mut last = String::new();
    for _ in 0..300 {
        let r = d.http.post(format!("{}/sync", d.admin_base)).header("x-requested-by", "tests").send().await.unwrap();
        let status = r.status();
        last = format!("{status}: {}", r.text().await.unwrap_or_default());
        if status != StatusCode::CONFLICT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(last.starts_with("200"), "POST /sync after the outage: {last}");
    // No run is left "running" by an end the store could not record; the outage shows as
    // failed runs.
    let runs = admin_get(&d, "/sync/runs").await;
    let runs = runs.body["runs"].as_array().expect("runs").clone();
    assert!(runs.iter().skip(1).all(|r| r["status"] != "running"), "a run left open: {runs:?}");
    app_holds(&app, &expected_titles).await;
    assert!(d.stop().success());
}

/// Four IdP-like clients ([`client_load`]) against one daemon, until [`Load::finish`].
struct Load {
    acked: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<Seen>>,
}

impl Load {
    fn start(d: &Daemon) -> Load {
        let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients = (0..4)
            .map(|w| {
                let (http, base, token) = (d.http.clone(), d.base.clone(), d.token.clone());
                tokio::spawn(client_load(http, base, token, w, acked.clone(), stop.clone()))
            })
            .collect();
        Load { acked, stop, clients }
    }

    /// Changes acknowledged so far (2xx).
    fn acked(&self) -> u64 {
        self.acked.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bounded wait (60 s) until at least `at_least` changes were acknowledged.
    async fn wait_acked(&self, at_least: u64, what: &str) {
        for _ in 0..1200 {
            if self.acked() >= at_least {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{what}: fewer than {at_least} acknowledged changes within 60 s");
    }

    /// Stop the clients; every client's answers, added up.
    async fn finish(self) -> Seen {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut all = Seen::default();
        for c in self.clients {
            let s = c.await.expect("client task");
            for (k, v) in s.statuses {
                *all.statuses.entry(k).or_default() += v;
            }
            all.no_answer.extend(s.no_answer);
            all.created.extend(s.created);
            all.titles.extend(s.titles);
        }
        all
    }
}

/// Everything acknowledged is in the store: each created user, each acknowledged title (or a
/// later one whose answer was a 503: "may or may not have committed"). Returns each user's
/// title as the store holds it, by userName.
async fn check_acknowledged(d: &Daemon, all: &Seen) -> std::collections::HashMap<String, Option<u64>> {
    let mut expected_titles = std::collections::HashMap::new();
    for (id, name) in &all.created {
        let r = d.get(&format!("/Users/{id}")).await;
        assert_eq!(r.status, StatusCode::OK, "acknowledged user {name} ({id}) lost: {}", r.body);
        let title = r.body["title"].as_str().map(|t| t.parse::<u64>().expect("a number"));
        if let Some(&(sent, Some(a))) = all.titles.get(id) {
            let t = title.unwrap_or_else(|| panic!("user {id}: acknowledged title {a} lost"));
            assert!(a <= t && t <= sent, "user {id}: title {t}, acknowledged {a}, highest sent {sent}");
        }
        expected_titles.insert(name.clone(), title);
    }
    expected_titles
}

/// The outbox drains to the app and nothing is dead-lettered.
async fn drained_without_dead(d: &Daemon) {
    d.wait_outbox_empty_within(120).await;
    let dead = d.cli(&["outbox", "list", "--dead"]);
    assert!(!dead.lines().skip(1).any(|l| l.contains("dead")), "dead-lettered changes:\n{dead}");
}

/// The app holds every user the store holds, with the store's title.
async fn app_holds(app: &crate::app::ScimApp, expected_titles: &std::collections::HashMap<String, Option<u64>>) {
    let in_app: std::collections::HashMap<String, serde_json::Value> = app
        .all("Users")
        .await
        .into_iter()
        .map(|u| (u["userName"].as_str().unwrap_or_default().to_string(), u))
        .collect();
    for (name, title) in expected_titles {
        let u = in_app.get(name).unwrap_or_else(|| panic!("acknowledged user {name} never reached the app"));
        let t = u["title"].as_str().map(|t| t.parse::<u64>().expect("a number"));
        assert_eq!(t, *title, "user {name}: the app's title differs from the store's");
    }
}

/// Issue 15, "what each failure does ... database failover": the primary crashes under load
/// and its synchronous standby is promoted (what Patroni or a managed service does). The
/// daemon is given both hosts (`host1:port1,host2:port2` with
/// `target_session_attrs=read-write`, libpq's multi-host form), so it finds the new primary by
/// itself: no restart, no config change. Meanwhile the IdP gets 503s (never a 500, never a
/// 2xx that was not committed), and with the standby synchronous nothing acknowledged before
/// the crash is lost; every change reaches the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failover_to_a_synchronous_standby_loses_nothing_acknowledged() {
    if !on_postgres() {
        return;
    }
    let app = crate::app::ScimApp::start().await;
    let mut primary = testpg::TestPg::start().expect("a throw-away PostgreSQL");
    let db = primary.create_database().expect("a database");
    let standby = tokio::task::block_in_place(|| primary.start_standby(true)).expect("a synchronous standby");
    let url = format!(
        "postgres://{}@127.0.0.1:{},127.0.0.1:{}/{db}?target_session_attrs=read-write",
        testpg::USER,
        primary.port(),
        standby.port()
    );
    let env = vec![
        ("SCIMSYNC_STORE__BACKEND".to_string(), "postgres".to_string()),
        ("SCIMSYNC_STORE__POSTGRES__URL".to_string(), url),
        ("SCIMSYNC_STORE__POSTGRES__PASSWORD".to_string(), testpg::PASSWORD.to_string()),
    ];
    let config = format!("{}[reconcile]\nschedule = \"*/3 * * * * *\"\n", crate::app::scim_target_config(&app.base));
    let mut d = Daemon::prepare_on_store(&config, env);
    d.spawn();
    wait_ready_status(&d, StatusCode::OK, 30).await;

    let load = Load::start(&d);
    load.wait_acked(40, "load before the failover").await;

    // The primary crashes; the failover manager notices after a few seconds and promotes the
    // standby. The load goes on throughout.
    tokio::task::block_in_place(|| primary.crash());
    let crashed = tokio::time::Instant::now();
    // (An answer already on its way when the server died may still be counted for a moment.)
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acked_at_crash = load.acked();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let acked_before_promotion = load.acked();
    tokio::task::block_in_place(|| standby.promote()).expect("promote the standby");
    let promoted = tokio::time::Instant::now();
    load.wait_acked(acked_before_promotion + 1, "the first write on the new primary").await;
    let first_write = promoted.elapsed();
    load.wait_acked(acked_before_promotion + 40, "load on the new primary").await;
    wait_ready_status(&d, StatusCode::OK, 30).await;
    let all = load.finish().await;
    let refused = all.statuses.get(&503).copied().unwrap_or(0);
    let answered: u64 = all.statuses.values().sum();
    eprintln!(
        "MEASURED database failover: first acknowledged write {:.2} s after the promotion ({:.2} s after the crash); \
         answers {:?} ({refused} of {answered} refused with 503); acknowledged in the 2.5 s without a primary: {}",
        first_write.as_secs_f64(),
        crashed.elapsed().as_secs_f64() - promoted.elapsed().as_secs_f64() + first_write.as_secs_f64(),
        all.statuses,
        acked_before_promotion - acked_at_crash,
    );

    // Every refusal was a 503, every request got an answer, and the outage was felt.
    let others: Vec<_> = all.statuses.keys().filter(|s| ![200, 201, 503].contains(*s)).collect();
    assert!(others.is_empty(), "statuses other than 200/201/503: {:?}\nlog:\n{}", all.statuses, d.log());
    assert!(refused > 0, "no 503 while there was no primary: {:?}", all.statuses);
    assert!(all.no_answer.is_empty(), "requests without an HTTP answer: {:?}", all.no_answer);
    // Nothing was acknowledged while no server could take a write.
    assert_eq!(acked_before_promotion, acked_at_crash, "a 2xx while there was no writable primary");

    // Everything acknowledged, before and after the failover, is in the new primary; the
    // queue drains to the app (the changes committed on the old primary included).
    let expected_titles = check_acknowledged(&d, &all).await;
    drained_without_dead(&d).await;
    app_holds(&app, &expected_titles).await;
    assert!(d.stop().success());
    drop(primary);
}
