//! Several daemons on one PostgreSQL store (issue 15), as an operator and an IdP see them:
//! competing writes on two nodes are serialised by the database (ETags, userName
//! uniqueness, the policy's seats and keep-at-least hold exactly), a refused repair
//! confirmed on two nodes happens once, and the cluster is listed. Every node is a real
//! `scimsync` process on a throw-away PostgreSQL cluster of the test's own.
//!
//! Each race runs several rounds: one lucky interleaving must not hide a lost update.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

use crate::policy::{SUB, licence_policy};

/// A node on `db` with the extra configuration `extra` (no delivery target: these races are
/// about what the API accepts).
fn node(pg: &testpg::TestPg, db: &str, name: &str, extra: &str) -> Daemon {
    let mut env = pg_store_env(pg, db);
    env.push(("SCIMSYNC_CLUSTER__NODE_NAME".into(), name.into()));
    let mut d = Daemon::prepare_on_store(extra, env);
    d.spawn();
    d
}

/// Two nodes on one fresh database of their own cluster.
fn two_nodes(extra: &str) -> (testpg::TestPg, Daemon, Daemon) {
    let pg = testpg::TestPg::start().expect("a throw-away PostgreSQL");
    let db = pg.create_database().expect("a database");
    let a = node(&pg, &db, "node-a", extra);
    let b = node(&pg, &db, "node-b", extra);
    (pg, a, b)
}

/// Roles: any group named "*admin*" makes its members admins; at least one must stay.
const ROLE_POLICY: &str = r#"
[[policy.group_rules]]
name = "admins"
contains = "admin"
role = "admin"
class = "role"
[policy.keep_at_least]
admin = 1
"#;

async fn group(d: &Daemon, name: &str) -> String {
    let r = d.post("/Groups", json!({"schemas": [GROUP], "displayName": name, "members": []})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

/// Okta's member add (`add` of `members`).
async fn add(d: &Daemon, gid: &str, member: &str) -> Resp {
    d.patch(
        &format!("/Groups/{gid}"),
        patch_body(json!([{"op": "add", "path": "members", "value": [{"value": member}]}])),
    )
    .await
}

/// Okta's member remove (`remove` with a `members[value eq "..."]` path).
async fn remove(d: &Daemon, gid: &str, member: &str) -> Resp {
    d.patch(
        &format!("/Groups/{gid}"),
        patch_body(json!([{"op": "remove", "path": format!("members[value eq \"{member}\"]")}])),
    )
    .await
}

async fn members(d: &Daemon, gid: &str) -> Vec<String> {
    let r = d.get(&format!("/Groups/{gid}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["members"].as_array().into_iter().flatten().map(|m| m["value"].as_str().unwrap().to_string()).collect()
}

/// A policy refusal: 409, no scimType, a detail naming the constraint (as on one node).
fn assert_refused(r: &Resp, needle: &str) {
    r.assert_error(409, None);
    let detail = r.body["detail"].as_str().unwrap();
    assert!(detail.contains(needle), "detail {detail:?} should mention {needle:?}");
}

/// The statuses of `results`, for failure messages.
fn statuses(results: &[Resp]) -> Vec<u16> {
    results.iter().map(|r| r.status.as_u16()).collect()
}

/// Sixteen users grab three seats at once, half on each node, alternating between two
/// licence groups of the subscription (so the rows they lock differ: only the policy's
/// lock serialises them): exactly three pass, in every round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seat_grab_on_two_nodes_passes_exactly_the_seats() {
    // Its own PostgreSQL cluster: once per suite is enough (the PostgreSQL run).
    if !on_postgres() {
        return;
    }
    const SEATS: usize = 3;
    let (_pg, a, b) = two_nodes(&licence_policy(SEATS as u64));
    let mut users = Vec::new();
    for i in 0..16 {
        users.push(a.create_user(&format!("u{i}@x.test")).await);
    }
    let groups =
        [group(&a, &format!("Enterprise Plan-AWS-{SUB}")).await, group(&b, &format!("Team Plan-AWS-{SUB}")).await];
    for round in 0..4 {
        let results = futures_util::future::join_all(users.iter().enumerate().map(|(i, u)| {
            let d = if i % 2 == 0 { &a } else { &b };
            let g = &groups[(i / 2 + round) % 2];
            async move { add(d, g, u).await }
        }))
        .await;
        let passed = results.iter().filter(|r| r.status == StatusCode::NO_CONTENT).count();
        assert_eq!(passed, SEATS, "round {round}: {:?}", statuses(&results));
        for r in results.iter().filter(|r| r.status != StatusCode::NO_CONTENT) {
            assert_refused(r, &format!("{SEATS} seat(s)"));
        }
        // What the store holds agrees, read through either node.
        let mut held: Vec<String> = Vec::new();
        for (i, g) in groups.iter().enumerate() {
            held.extend(members(if i == 0 { &b } else { &a }, g).await);
        }
        assert_eq!(held.len(), SEATS, "round {round}: members {held:?}");
        // Free the seats for the next round.
        for (i, g) in groups.iter().enumerate() {
            for m in members(&a, g).await {
                assert_eq!(remove(if i == 0 { &a } else { &b }, g, &m).await.status, StatusCode::NO_CONTENT);
            }
        }
    }
}

/// Five admins in two admin groups; all five removed at once, split over both nodes and
/// both groups: exactly four pass and one admin stays, in every round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_removals_on_two_nodes_keep_at_least_one_admin() {
    // Its own PostgreSQL cluster: once per suite is enough (the PostgreSQL run).
    if !on_postgres() {
        return;
    }
    let (_pg, a, b) = two_nodes(ROLE_POLICY);
    let mut admins = Vec::new();
    for i in 0..5 {
        admins.push(a.create_user(&format!("admin{i}@x.test")).await);
    }
    let groups = [group(&a, "Admins-EU").await, group(&b, "Admins-US").await];
    let home = |i: usize| &groups[i % 2];
    for round in 0..4 {
        for (i, u) in admins.iter().enumerate() {
            let r = add(if i % 2 == 0 { &a } else { &b }, home(i), u).await;
            assert_eq!(r.status, StatusCode::NO_CONTENT, "round {round}: {}", r.body);
        }
        let results = futures_util::future::join_all(admins.iter().enumerate().map(|(i, u)| {
            let d = if (i + round) % 2 == 0 { &a } else { &b };
            let g = home(i);
            async move { remove(d, g, u).await }
        }))
        .await;
        let passed = results.iter().filter(|r| r.status == StatusCode::NO_CONTENT).count();
        assert_eq!(passed, admins.len() - 1, "round {round}: {:?}", statuses(&results));
        let refused: Vec<&Resp> = results.iter().filter(|r| r.status != StatusCode::NO_CONTENT).collect();
        assert_refused(refused[0], "role \"admin\" must keep at least 1");
        let left = members(&a, &groups[0]).await.len() + members(&b, &groups[1]).await.len();
        assert_eq!(left, 1, "round {round}: exactly one admin stays");
        // The next round adds every admin back (the one left is already there).
    }
}

/// The same user PATCHed on both nodes at once with the same ETag: one 2xx, one 412, and
/// the version moved by exactly one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_holds_across_nodes() {
    // Its own PostgreSQL cluster: once per suite is enough (the PostgreSQL run).
    if !on_postgres() {
        return;
    }
    let (_pg, a, b) = two_nodes("");
    let id = a.create_user("race@x.test").await;
    let path = format!("/Users/{id}");
    for round in 0..8 {
        let before = b.get(&path).await;
        let etag = before.header("etag").expect("an ETag").to_string();
        let patch =
            |title: &str| patch_body(json!([{"op": "replace", "path": "title", "value": format!("{title} {round}")}]));
        let if_match = [("if-match", etag.as_str())];
        let (ra, rb) = tokio::join!(
            a.req_with(Method::PATCH, &path, Some(patch("from a")), &if_match),
            b.req_with(Method::PATCH, &path, Some(patch("from b")), &if_match),
        );
        let mut got = [ra.status.as_u16(), rb.status.as_u16()];
        got.sort();
        assert_eq!(got, [200, 412], "round {round}: a {} {}, b {} {}", ra.status, ra.body, rb.status, rb.body);
        let (won, lost) = if ra.status == StatusCode::OK { (&ra, &rb) } else { (&rb, &ra) };
        lost.assert_error(412, None);
        // The winner's write is what both nodes read, one version on.
        let after = a.get(&path).await;
        assert_eq!(after.body["title"], won.body["title"], "round {round}");
        assert_eq!(after.header("etag"), won.header("etag"), "round {round}");
        assert_ne!(after.header("etag"), Some(etag.as_str()), "round {round}");
    }
}

/// The same userName POSTed on both nodes at once: one 201, one 409 `uniqueness`, one user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_name_uniqueness_holds_across_nodes() {
    // Its own PostgreSQL cluster: once per suite is enough (the PostgreSQL run).
    if !on_postgres() {
        return;
    }
    let (_pg, a, b) = two_nodes("");
    for round in 0..8 {
        let name = format!("twin{round}@x.test");
        // Case differs between the two: userName is unique case-insensitively (RFC 7643 §4.1.1).
        let (ra, rb) =
            tokio::join!(a.post("/Users", user_body(&name)), b.post("/Users", user_body(&name.to_uppercase())));
        let mut got = [ra.status.as_u16(), rb.status.as_u16()];
        got.sort();
        assert_eq!(got, [201, 409], "round {round}: a {} {}, b {} {}", ra.status, ra.body, rb.status, rb.body);
        let lost = if ra.status == StatusCode::CREATED { &rb } else { &ra };
        lost.assert_error(409, Some("uniqueness"));
        let listed = a.get(&filter_q("/Users", &format!("userName eq \"{name}\""))).await;
        assert_eq!(listed.body["totalResults"], json!(1), "round {round}: {}", listed.body);
    }
    let all: Value = b.get("/Users?count=100").await.body;
    assert_eq!(all["totalResults"], json!(8));
}

async fn admin_get(d: &Daemon, path: &str) -> Resp {
    send(d.http.get(format!("{}{path}", d.admin_base))).await
}

async fn post_admin(d: &Daemon, path: &str) -> Resp {
    send(d.http.post(format!("{}{path}", d.admin_base)).header("x-requested-by", "tests")).await
}

/// A scheduler-less reconcile that repairs orphans, with a safety limit of two.
fn repairing(target: &str) -> String {
    format!(
        "{target}[reconcile]\nschedule = \"\"\n[reconcile.repair]\norphaned_in_app = \"repair\"\n\
         [reconcile.safety]\nmax_deprovision_count = 2\nmax_deprovision_share = 1.0\n"
    )
}

/// Deprovisionings the app received (deactivations or deletes of users), by Idempotency-Key.
fn deprovisions(proxy: &crate::app::Proxy) -> Vec<String> {
    proxy
        .seen()
        .iter()
        .filter(|s| s.path.contains("/Users/") && ["PATCH", "PUT", "DELETE"].contains(&s.method.as_str()))
        .map(|s| s.idempotency_key.clone().unwrap_or_default())
        .collect()
}

/// `scimsync sync now --confirm RUN` through `d`'s admin listener, in a thread (two at once).
fn confirm_on(d: &Daemon, run: i64) -> std::thread::JoinHandle<std::process::Output> {
    let mut c = d.cli_command(&["sync", "now", "--confirm", &run.to_string(), "--url", &d.admin_base]);
    std::thread::spawn(move || c.output().expect("run scimsync"))
}

/// Issue 15: a refused repair confirmed on two nodes at once (the follower's CLI follows to
/// the leader) repairs once: one confirmation runs it, the other is told which run already
/// did; the app sees each deprovisioning once. Two rounds, the follower asked first in one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_repair_confirmed_on_two_nodes_at_once_happens_once() {
    // Its own PostgreSQL cluster: once per suite is enough (the PostgreSQL run).
    if !on_postgres() {
        return;
    }
    use crate::app::{APP_TOKEN, Proxy, ScimApp, scim_target_config};
    let app = ScimApp::start().await;
    let proxy = Proxy::start(&app.base).await;
    let (_pg, a, b) = two_nodes(&repairing(&scim_target_config(&proxy.base)));
    a.create_user("kept@x.test").await;
    a.wait_outbox_empty().await;
    // b knows a leads before it is asked (its view is a heartbeat old).
    for _ in 0..100 {
        if admin_get(&b, "/readyz").await.body["checks"]["cluster"]["leader"] == "node-a" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut strays = 0;
    for round in 0..2 {
        for i in 0..4 {
            let r = client()
                .post(format!("{}/Users", app.base))
                .bearer_auth(APP_TOKEN)
                .header("content-type", "application/scim+json")
                .body(user_body(&format!("stray{round}-{i}@x.test")).to_string())
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.status());
            strays += 1;
        }
        // A follower asked for a plain run names the leader: 421 with its admin URL.
        let r = post_admin(&b, "/sync").await;
        assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST, "{}", r.body);
        assert_eq!(
            (r.body["leader"].as_str(), r.body["leader_admin"].as_str()),
            (Some("node-a"), Some(a.admin_base.as_str()))
        );
        let refused = post_admin(&a, "/sync").await;
        assert_eq!(refused.status, StatusCode::OK, "{}", refused.body);
        assert!(refused.body["summary"]["repair"]["refused"].is_string(), "{}", refused.body);
        let run = refused.body["run_id"].as_i64().unwrap();
        let before = deprovisions(&proxy).len();

        let (first, second) = if round == 0 { (&b, &a) } else { (&a, &b) };
        let (x, y) = (confirm_on(first, run), confirm_on(second, run));
        let outs = [x.join().unwrap(), y.join().unwrap()];
        let text = |o: &std::process::Output| {
            format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
        };
        let ran: Vec<&std::process::Output> = outs.iter().filter(|o| o.status.success()).collect();
        assert_eq!(
            ran.len(),
            1,
            "round {round}: exactly one confirmation runs:\n{}\n---\n{}",
            text(&outs[0]),
            text(&outs[1])
        );
        assert!(text(ran[0]).contains("Repair queued 4 change(s)"), "round {round}: {}", text(ran[0]));
        let other = outs.iter().find(|o| !o.status.success()).unwrap();
        assert!(
            text(other).contains(&format!("run {run} was already confirmed by run")),
            "round {round}: the second is told it was done: {}",
            text(other)
        );
        // The follower's CLI followed to the leader.
        let on_b = if round == 0 { &outs[0] } else { &outs[1] };
        assert!(text(on_b).contains("is a follower; asking the leader, node node-a"), "round {round}: {}", text(on_b));

        a.wait_outbox_empty().await;
        let now = deprovisions(&proxy);
        assert_eq!(now.len() - before, 4, "round {round}: each stray deprovisioned once: {now:?}");
        let inactive = app.all("Users").await.iter().filter(|u| u["active"] == false).count();
        assert_eq!(inactive, strays, "round {round}");
        // Confirming it again later, on either node: already done.
        for d in [&a, &b] {
            let r = post_admin(d, &format!("/sync?confirm={run}")).await;
            assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
            assert!(r.body["error"].as_str().unwrap().contains("already confirmed by run"), "{}", r.body);
        }
    }
}

/// Short election timings (`[cluster]`): takeovers in seconds, not tens of seconds.
const QUICK: &str = "[cluster]\nlease_ttl_seconds = 6\nrenew_every_seconds = 2\nfence_margin_seconds = 1\n";

/// Bounded wait until the node's `/readyz` `checks.cluster` satisfies `check`.
async fn wait_cluster(d: &Daemon, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..600 {
        last = admin_get(d, "/readyz").await.body["checks"]["cluster"].clone();
        if check(&last) {
            return last;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{what}: not within 60 s; last checks.cluster: {last}\nlog:\n{}", d.log());
}

async fn metrics(d: &Daemon) -> String {
    admin_get(d, "/metrics").await.body.as_str().unwrap_or_default().to_string()
}

/// `scimsync status` lists the cluster from the store, from any node's config: the leader
/// and its epoch, each node's role, listeners and version; a stopped node shows as gone and
/// the other takes over (under `[cluster]` timings of 6 / 2 / 1 s). Each node's /metrics
/// counts its own deliveries: the follower's stay flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_the_cluster_and_the_timings_come_from_the_config() {
    // Its own PostgreSQL cluster: once per suite is enough (the PostgreSQL run).
    if !on_postgres() {
        return;
    }
    use crate::app::{Proxy, ScimApp, scim_target_config};
    let app = ScimApp::start().await;
    let proxy = Proxy::start(&app.base).await;
    let (_pg, mut a, b) = two_nodes(&format!("{}{QUICK}", scim_target_config(&proxy.base)));
    wait_cluster(&b, "b sees both nodes and the leader", |c| {
        c["nodes"].as_array().is_some_and(|n| n.len() == 2) && c["leader"] == "node-a"
    })
    .await;
    for i in 0..3 {
        b.create_user(&format!("m{i}@x.test")).await;
    }
    a.wait_outbox_empty().await;

    let out = b.cli(&["status"]);
    assert!(out.starts_with("cluster: 2 live node(s); leader node-a (epoch 1,"), "{out}");
    let row =
        |name: &str| out.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name}: {out}")).to_string();
    let (ra, rb) = (row("node-a"), row("node-b"));
    assert!(ra.contains(" leader ") && ra.contains(&a.admin_base) && ra.contains(&a.base), "{ra}");
    assert!(rb.contains(" follower ") && rb.contains(&b.admin_base) && rb.contains(env!("CARGO_PKG_VERSION")), "{rb}");
    let json: Value = serde_json::from_str(&a.cli(&["status", "--json"])).unwrap();
    assert_eq!(
        (json["backend"].as_str(), json["leader"].as_str(), json["epoch"].as_i64()),
        (Some("postgres"), Some("node-a"), Some(1))
    );
    let roles: Vec<(&str, &str)> = json["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["node"].as_str().unwrap(), n["role"].as_str().unwrap()))
        .collect();
    assert_eq!(roles, [("node-a", "leader"), ("node-b", "follower")]);

    // Per-node counters: the leader delivered the three creates, the follower nothing.
    assert!(metrics(&a).await.contains("scimsync_deliveries_total{outcome=\"success\"} 3"), "{}", metrics(&a).await);
    let mb = metrics(&b).await;
    assert!(!mb.contains("scimsync_deliveries_total{outcome=\"success\"}"), "the follower delivered: {mb}");
    assert!(mb.contains("scimsync_node_leader{node=\"node-b\"} 0"), "{mb}");

    // The leader dies; the follower takes over (lease 6 s + a try every 2 s).
    a.kill9();
    let killed = std::time::Instant::now();
    wait_cluster(&b, "b takes over", |c| c["role"] == "leader").await;
    eprintln!("MEASURED takeover with lease_ttl 6 s / renew 2 s: {:.1} s", killed.elapsed().as_secs_f64());
    // Once a's heartbeat is older than the lease, the listing calls it gone.
    let mut last = String::new();
    for _ in 0..300 {
        last = b.cli(&["status"]);
        if last.lines().any(|l| l.starts_with("node-a") && l.contains(" gone ")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(last.starts_with("cluster: 1 live node(s); leader node-b (epoch 2,"), "{last}");
    assert!(last.lines().any(|l| l.starts_with("node-a") && l.contains(" gone ")), "{last}");
    assert!(metrics(&b).await.contains("scimsync_node_leader{node=\"node-b\"} 1"));
}

/// Two live daemons under one node name would both lead: a second process under a live
/// name refuses to start, whether the name is configured twice or a data directory was
/// copied with its node-id; the first keeps leading. A crashed node restarted on its own
/// data directory is no twin: it takes its name and lease back at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_live_process_under_one_node_name_refuses_to_start() {
    // Its own PostgreSQL cluster: once per suite is enough (the PostgreSQL run).
    if !on_postgres() {
        return;
    }
    let pg = testpg::TestPg::start().expect("a throw-away PostgreSQL");
    let db = pg.create_database().expect("a database");
    // a keeps its id in its data directory (no node_name).
    let mut a = Daemon::prepare_on_store(QUICK, pg_store_env(&pg, &db));
    a.spawn();
    let ca = wait_cluster(&a, "a leads", |c| c["role"] == "leader").await;
    let name = ca["node"].as_str().unwrap().to_string();

    let refused = |twin: &mut Daemon, how: &str| {
        let ready = twin.spawn_listening();
        let st = twin.wait_exit();
        assert!(!st.success(), "{how}: the twin must not run; log:\n{}", twin.log());
        // Refused before it said it was ready (systemd sees a failed start, not a crash).
        assert!(ready.try_recv().is_err(), "{how}: the twin said \"scimsync ready\" before refusing");
        let log = twin.log();
        assert!(
            log.contains(&format!("refusing to start: another live scimsync process runs as node \"{name}\""))
                && log.contains("Give each node its own [cluster] node_name"),
            "{how}: log:\n{log}"
        );
    };
    // The same name configured on another "host".
    let mut env = pg_store_env(&pg, &db);
    env.push(("SCIMSYNC_CLUSTER__NODE_NAME".into(), name.clone()));
    let mut configured = Daemon::prepare_on_store(QUICK, env);
    refused(&mut configured, "configured twice");
    // a's data directory copied, node-id and all.
    let mut copied = Daemon::prepare_on_store(QUICK, pg_store_env(&pg, &db));
    std::fs::create_dir_all(copied.data_dir()).unwrap();
    for f in ["node-id", "node-instance"] {
        std::fs::copy(a.data_dir().join(f), copied.data_dir().join(f)).unwrap();
    }
    refused(&mut copied, "a copied data directory");
    let still = wait_cluster(&a, "a still leads", |c| c["role"] == "leader").await;
    assert_eq!((&still["epoch"], &still["duplicate"]), (&ca["epoch"], &Value::Null), "{still}");

    // a crashes and comes back on its own directory at once: not refused, and it leads in
    // the same epoch (its own lease: no other node took it meanwhile).
    a.kill9();
    a.spawn();
    let back = wait_cluster(&a, "a leads again", |c| c["role"] == "leader").await;
    assert_eq!((&back["node"], &back["epoch"]), (&ca["node"], &ca["epoch"]), "{back}");
    assert!(!a.log().contains("refusing to start"), "{}", a.log());
}

/// A TCP forwarder between one node and PostgreSQL that can cut the node off: while cut it
/// forwards nothing and holds every connection open (a partition, not a refusal: the
/// node's statements hang); healing closes what it held, and new connections go through.
struct Cut {
    port: u16,
    down: tokio::sync::watch::Sender<bool>,
}

impl Cut {
    async fn start(upstream: u16) -> Cut {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the cut");
        let port = listener.local_addr().unwrap().port();
        let (down, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut rx = rx.clone();
                tokio::spawn(async move {
                    if !*rx.borrow() {
                        let Ok(mut out) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else { return };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut out) => return,
                            _ = rx.wait_for(|d| *d) => {}
                        }
                        // Cut: hold both ends, silent, until healed.
                        let _ = rx.wait_for(|d| !*d).await;
                        drop(out);
                    } else {
                        let _ = rx.wait_for(|d| !*d).await;
                    }
                    drop(inbound);
                });
            }
        });
        Cut { port, down }
    }

    fn partition(&self) {
        self.down.send_replace(true);
    }

    fn heal(&self) {
        self.down.send_replace(false);
    }
}

/// Issue 15, fencing: the leader cut off from PostgreSQL stops delivering before the other
/// node starts (no delivery by the old leader arrives at the app after the new leader's
/// first), every change reaches the app, and when the partition heals the old leader
/// rejoins as a follower and delivers nothing more. Each node sends to the app through its
/// own proxy, so the app side tells who delivered what and when.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_database_stops_before_the_other_node_starts() {
    // Its own PostgreSQL cluster: once per suite is enough (the PostgreSQL run).
    if !on_postgres() {
        return;
    }
    use crate::app::{Proxy, ScimApp, scim_target_config};
    let app = ScimApp::start().await;
    let (via_a, via_b) = (Proxy::start(&app.base).await, Proxy::start(&app.base).await);
    let pg = testpg::TestPg::start().expect("a throw-away PostgreSQL");
    let db = pg.create_database().expect("a database");
    let cut = Cut::start(pg.port()).await;
    let node_on = |url: String, name: &str, target: &str| {
        let mut env: Vec<(String, String)> = pg_store_env(&pg, &db)
            .into_iter()
            .map(|(k, v)| if k == "SCIMSYNC_STORE__POSTGRES__URL" { (k, url.clone()) } else { (k, v) })
            .collect();
        env.push(("SCIMSYNC_CLUSTER__NODE_NAME".into(), name.into()));
        // A statement may hang as long as the partition lasts: the election's own bounds cut it.
        let mut d = Daemon::prepare_on_store(&format!("{}{QUICK}", scim_target_config(target)), env);
        d.spawn();
        d
    };
    let a = node_on(format!("postgres://postgres@127.0.0.1:{}/{db}", cut.port), "node-a", &via_a.base);
    let b = node_on(pg.url_without_password(&db), "node-b", &via_b.base);
    wait_cluster(&b, "b sees a lead", |c| {
        c["leader"] == "node-a" && c["nodes"].as_array().is_some_and(|n| n.len() == 2)
    })
    .await;
    let created = |p: &Proxy| p.arrived().iter().filter(|s| s.method == "POST" && s.path.ends_with("/Users")).count();
    let mut names = Vec::new();
    for i in 0..5 {
        names.push(format!("before{i}@x.test"));
        b.create_user(&names[i]).await;
    }
    b.wait_outbox_empty().await;
    assert_eq!((created(&via_a), created(&via_b)), (5, 0), "the leader delivers");

    // Changes keep coming (to b) while a is cut off.
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = {
        let (stop, b_base, token) = (stop.clone(), b.base.clone(), b.token.clone());
        tokio::spawn(async move {
            let mut made = Vec::new();
            let http = client();
            while !stop.is_cancelled() {
                let name = format!("during{}@x.test", made.len());
                let r = http
                    .post(format!("{b_base}/Users"))
                    .bearer_auth(&token)
                    .header("content-type", "application/scim+json")
                    .body(user_body(&name).to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::CREATED);
                made.push(name);
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            made
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    cut.partition();
    let cut_at = std::time::Instant::now();
    wait_cluster(&b, "b takes over", |c| c["role"] == "leader").await;
    eprintln!(
        "MEASURED takeover after partitioning the leader (6 s / 2 s / 1 s): {:.1} s",
        cut_at.elapsed().as_secs_f64()
    );
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    stop.cancel();
    names.extend(writer.await.unwrap());
    b.wait_outbox_empty().await;

    let last_by_a = via_a.arrived().iter().map(|s| s.at).max().expect("a delivered");
    let first_by_b = via_b.arrived().iter().map(|s| s.at).min().expect("b delivered");
    assert!(
        last_by_a < first_by_b,
        "the old leader delivered {:.3} s after the new leader's first delivery",
        (last_by_a - first_by_b).as_secs_f64()
    );
    eprintln!(
        "MEASURED gap between the old leader's last delivery and the new leader's first: {:.2} s",
        (first_by_b - last_by_a).as_secs_f64()
    );
    let mut got: Vec<String> =
        app.all("Users").await.iter().map(|u| u["userName"].as_str().unwrap().to_string()).collect();
    got.sort();
    names.sort();
    assert_eq!(got, names, "every change reached the app");
    assert!(a.log().contains("stepping down"), "a stepped down:\n{}", a.log());

    // Healed: a rejoins as a follower and sees b lead; what it now accepts, b delivers.
    cut.heal();
    let ca = wait_cluster(&a, "a rejoins as a follower", |c| c["role"] == "follower" && c["leader"] == "node-b").await;
    assert_eq!(ca["duplicate"], Value::Null, "{ca}");
    let before = created(&via_a);
    for i in 0..3 {
        let n = format!("after{i}@x.test");
        a.create_user(&n).await;
    }
    b.wait_outbox_empty().await;
    assert_eq!(created(&via_a), before, "the old leader delivers nothing after it rejoined");
    assert!(metrics(&a).await.contains("scimsync_node_leader{node=\"node-a\"} 0"));
}

/// On SQLite there is no cluster: `scimsync status` says so (and exits 0: the one daemon
/// always leads), in words and in JSON.
#[tokio::test]
async fn status_on_sqlite_says_there_is_one_daemon() {
    // SQLite whatever SCIMSYNC_TEST_STORE says: no store settings at all.
    let mut d = Daemon::prepare_on_store("", Vec::new());
    d.spawn();
    assert!(d.cli(&["status"]).contains("store.backend = \"sqlite\": one daemon, which always leads"));
    let json: Value = serde_json::from_str(&d.cli(&["status", "--json"])).unwrap();
    assert_eq!((json["backend"].as_str(), json["nodes"].as_array().map(Vec::len)), (Some("sqlite"), Some(0)));
}
