//! Issue 15 under chaos: three nodes on one PostgreSQL store take IdP load through a load
//! balancer while one node after another is SIGKILLed and restarted, or paused (the leader
//! among them);
//! every acknowledged change must reach the real app once, in per-resource order. And a killed
//! leader's scheduled full sync is run by another node. Both print the failover figures
//! (`MEASURED …`): leader takeover, delivery resumption, the IdP-visible error rate.
//!
//! PostgreSQL only, on a cluster of the test's own: the SQLite run skips them (a SQLite store
//! has one node, and they take a minute and more: once per CI run is enough).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::app::{Proxy, Seen, scim_target_config};
use crate::cluster::{admin_get, cluster_and_app, cluster_of, node, wait_cluster};
use crate::support::*;

/// Where the load balancer sends: each node's SCIM base and a token (any node's token works
/// on every node: tokens are in the shared store). A killed node keeps its old address until
/// it is restarted (a balancer without health checks: the IdP sees the refusals).
type Backends = Arc<RwLock<Vec<(String, String)>>>;

/// What the IdP saw.
#[derive(Default)]
struct Stats {
    /// Every attempt sent to a node.
    attempts: AtomicU64,
    /// Attempts that failed in a way the IdP sees: no answer (connection refused or cut) or a 5xx.
    errors: AtomicU64,
    /// Operations that needed at least one retry.
    retried_ops: AtomicU64,
    /// Operations (each ends acknowledged).
    ops: AtomicU64,
    /// Creates answered 409 after an attempt whose outcome was unknown (the user found by
    /// name), and deletes answered 404 so: the IdP's own earlier attempt had been committed.
    resolved: AtomicU64,
    /// The longest time one attempt took (a request to a paused node waits for it).
    slowest_ms: AtomicU64,
    /// The errors by kind, for the report.
    kinds: Mutex<BTreeMap<String, u64>>,
}

/// An IdP behind a round-robin load balancer with retry on another node.
struct Lb {
    backends: Backends,
    next: AtomicUsize,
    http: reqwest::Client,
    stats: Stats,
}

/// An operation's end: its answer, and whether an earlier attempt's outcome is unknown (it may
/// have been committed: a retried create may meet its own user).
struct Answer {
    status: u16,
    body: Value,
    uncertain: bool,
}

impl Lb {
    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let mut uncertain = false;
        for attempt in 0..1200 {
            let (base, token) = {
                let b = self.backends.read().unwrap();
                b[self.next.fetch_add(1, Relaxed) % b.len()].clone()
            };
            self.stats.attempts.fetch_add(1, Relaxed);
            let mut rb = self.http.request(method.clone(), format!("{base}{path}")).bearer_auth(&token);
            if let Some(b) = &body {
                rb = rb.header("content-type", "application/scim+json").body(b.to_string());
            }
            let sent = Instant::now();
            let outcome = match rb.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    match r.text().await {
                        Ok(t) if status < 500 => {
                            let body = if t.is_empty() {
                                Value::Null
                            } else {
                                serde_json::from_str(&t).unwrap_or(Value::String(t))
                            };
                            Ok((status, body))
                        }
                        Ok(t) => Err(format!("{status} {}", t.chars().take(120).collect::<String>())),
                        Err(_) => Err(format!("{status} with its body cut off")),
                    }
                }
                Err(e) if e.is_connect() => Err("connection refused".to_string()),
                Err(e) if e.is_timeout() => Err("timed out".to_string()),
                Err(_) => Err("connection cut".to_string()),
            };
            self.stats.slowest_ms.fetch_max(sent.elapsed().as_millis() as u64, Relaxed);
            match outcome {
                Ok((status, body)) => {
                    self.stats.ops.fetch_add(1, Relaxed);
                    if attempt > 0 {
                        self.stats.retried_ops.fetch_add(1, Relaxed);
                    }
                    return Answer { status, body, uncertain };
                }
                Err(kind) => {
                    self.stats.errors.fetch_add(1, Relaxed);
                    // A refused connection sent nothing; anything else may have been committed.
                    uncertain |= kind != "connection refused";
                    let key = if kind.starts_with('5') { kind[..3].to_string() } else { kind };
                    *self.stats.kinds.lock().unwrap().entry(key).or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            }
        }
        panic!("{method} {path}: no node answered in 1200 attempts");
    }
}

/// One user as the IdP knows it from acknowledged answers.
#[derive(Debug, Clone)]
struct UserModel {
    name: String,
    id: String,
    /// The last acknowledged title version (0: none sent).
    title: u32,
    deleted: bool,
    /// The group (index) it was added to; such a user is never deleted.
    group: Option<usize>,
}

fn title_patch(v: u32) -> Value {
    patch_body(json!([{"op": "replace", "path": "title", "value": format!("v{v}")}]))
}

/// One IdP worker: creates users, walks each user's title through v1, v2, … (one request of a
/// user at a time: the next only after the previous was acknowledged), adds some users to the
/// groups and deletes others, until `stop`; the operation at hand is finished first.
async fn idp_worker(lb: Arc<Lb>, w: usize, groups: Vec<String>, stop: Arc<AtomicBool>) -> Vec<UserModel> {
    let mut users: Vec<UserModel> = Vec::new();
    let mut step = 0usize;
    let mut turn = 0usize;
    while !stop.load(Relaxed) {
        step += 1;
        let live: Vec<usize> = (0..users.len()).filter(|&i| !users[i].deleted).collect();
        if step % 4 == 1 || live.len() < 3 {
            let name = format!("chaos-{w}-{step}@example.com");
            let a = lb.send(Method::POST, "/Users", Some(user_body(&name))).await;
            let id = match a.status {
                201 => a.body["id"].as_str().expect("a 201 carries the id").to_string(),
                // Our own earlier attempt was committed: find the user, as an IdP does.
                409 if a.uncertain => {
                    lb.stats.resolved.fetch_add(1, Relaxed);
                    let f = lb.send(Method::GET, &filter_q("/Users", &format!("userName eq \"{name}\"")), None).await;
                    assert_eq!(f.status, 200, "{}", f.body);
                    f.body["Resources"][0]["id"].as_str().expect("the user the 409 meant").to_string()
                }
                s => panic!("create {name}: {s} {}", a.body),
            };
            users.push(UserModel { name, id, title: 0, deleted: false, group: None });
        } else if step % 11 == 3 {
            // Into a group: a user not yet in one.
            let Some(&i) = live.iter().find(|&&i| users[i].group.is_none() && i % 3 == 0) else { continue };
            let g = (w + step) % groups.len();
            let body = patch_body(json!([{"op": "add", "path": "members", "value": [{"value": users[i].id}]}]));
            let a = lb.send(Method::PATCH, &format!("/Groups/{}", groups[g]), Some(body)).await;
            assert!(matches!(a.status, 200 | 204), "add {} to group {g}: {} {}", users[i].name, a.status, a.body);
            users[i].group = Some(g);
        } else if step % 13 == 7 {
            // Delete a user never put in a group, once it had a few titles.
            let Some(&i) = live.iter().find(|&&i| users[i].group.is_none() && i % 3 != 0 && users[i].title >= 2) else {
                continue;
            };
            let a = lb.send(Method::DELETE, &format!("/Users/{}", users[i].id), None).await;
            assert!(
                a.status == 204 || (a.status == 404 && a.uncertain),
                "delete {}: {} {}",
                users[i].name,
                a.status,
                a.body
            );
            if a.status == 404 {
                lb.stats.resolved.fetch_add(1, Relaxed);
            }
            users[i].deleted = true;
        } else {
            turn += 1;
            let i = live[turn % live.len()];
            let v = users[i].title + 1;
            let a = lb.send(Method::PATCH, &format!("/Users/{}", users[i].id), Some(title_patch(v))).await;
            assert!(matches!(a.status, 200 | 204), "title v{v} of {}: {} {}", users[i].name, a.status, a.body);
            users[i].title = v;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    users
}

/// The live node that leads now (by each node's own role), if any; `paused` is not asked.
/// Read from `/readyz` whatever its status: a node may be briefly unready while a stalled
/// node's transaction holds rows its requests wait for.
async fn leader_of(nodes: &[Daemon], paused: Option<usize>) -> Option<usize> {
    for (i, d) in nodes.iter().enumerate() {
        if d.child.is_some()
            && Some(i) != paused
            && admin_get(d, "/readyz").await.body["checks"]["cluster"]["role"] == "leader"
        {
            return Some(i);
        }
    }
    None
}

/// Bounded wait until a live node leads; its index. `seconds` only catches "never".
async fn wait_leader(nodes: &[Daemon], paused: Option<usize>, seconds: u64) -> usize {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(seconds) {
        if let Some(i) = leader_of(nodes, paused).await {
            return i;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no node leads within {seconds} s");
}

/// The first request that reached the app after `since` (not a sync's list GET when
/// `deliveries_only`): the new leader delivers again.
fn first_after(proxy: &Proxy, since: Instant, deliveries_only: bool) -> Option<Instant> {
    proxy
        .arrived()
        .iter()
        .filter(|s| s.at > since && !(deliveries_only && s.method == "GET" && s.path.contains("startIndex")))
        .map(|s| s.at)
        .min()
}

/// Restart a killed node on the same data directory and name (the same node) and publish its
/// new address to the balancer.
fn restart(nodes: &mut [Daemon], i: usize, backends: &Backends) {
    tokio::task::block_in_place(|| nodes[i].spawn());
    backends.write().unwrap()[i] = (nodes[i].base.clone(), nodes[i].token.clone());
}

/// A title version from a value `vN`.
fn version(v: &Value) -> Option<u32> {
    v.as_str()?.strip_prefix('v')?.parse().ok()
}

/// The title versions a request to the app carried (a PUT's or POST's representation, a
/// PATCH's replace of the whole resource or of `title`).
fn titles_in(body: &Value) -> Vec<u32> {
    let mut out: Vec<u32> = version(&body["title"]).into_iter().collect();
    for op in body["Operations"].as_array().into_iter().flatten() {
        if op["path"] == "title" {
            out.extend(version(&op["value"]));
        }
        out.extend(version(&op["value"]["title"]));
    }
    out
}

fn ms(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Issue 15, item 5: IdP load spread over three nodes while one node is SIGKILLed every few
/// seconds and restarted (the leader three times, once held down until another node takes
/// over) or paused (the leader, until another node takes over):
/// every acknowledged change is in the store and reaches the real app in per-resource order,
/// with no duplicate account or member.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_under_idp_load_lose_nothing_while_nodes_are_killed() {
    // PostgreSQL only (see the module's doc).
    if !on_postgres() {
        return;
    }
    let (pg, db, app, proxy) = cluster_and_app().await;
    // The IdP deletes users by the dozen: the deletion guard would hold them (its own tests
    // are elsewhere).
    let target =
        format!("{}[outbox.deletion_guard]\nenabled = false\ndelay_seconds = 0\n", scim_target_config(&proxy.base));
    // Nodes without a node_name: each keeps its id in its data directory, and a restart (the
    // same directory, the earlier process gone) is the same node and takes its lease back.
    let mut nodes: Vec<Daemon> = (0..3)
        .map(|_| {
            let mut d = Daemon::prepare_on_store(&target, pg_store_env(&pg, &db));
            d.spawn();
            d
        })
        .collect();
    let three = |c: &Value| c["nodes"].as_array().is_some_and(|n| n.len() == 3);
    wait_cluster(&nodes[2], "the third node sees all three", 30, three).await;
    let backends: Backends = Arc::new(RwLock::new(nodes.iter().map(|d| (d.base.clone(), d.token.clone())).collect()));
    let groups: Vec<String> = (0..3).map(|g| format!("chaos-group-{g}")).collect();
    let mut group_ids = Vec::new();
    for g in &groups {
        group_ids.push(nodes[0].create_group(g, &[]).await);
    }

    let lb =
        Arc::new(Lb { backends: backends.clone(), next: AtomicUsize::new(0), http: client(), stats: Stats::default() });
    let stop = Arc::new(AtomicBool::new(false));
    let load_started = Instant::now();
    let workers: Vec<_> =
        (0..4).map(|w| tokio::spawn(idp_worker(lb.clone(), w, group_ids.clone(), stop.clone()))).collect();

    // The killer: (the leader or a follower, how long it stays down). The leader is killed
    // three times, twice restarted at once (it takes its own lease back), once held down
    // until another node took over (its restart makes it a follower); and paused once.
    #[derive(Debug)]
    enum Down {
        Briefly,
        UntilTakeover,
        /// SIGSTOP until another node took over, then SIGCONT: a stale leader comes back
        /// with deliveries it had at hand.
        Paused,
    }
    let plan = [
        (true, Down::Briefly),
        (false, Down::Briefly),
        (true, Down::UntilTakeover),
        (false, Down::Briefly),
        (true, Down::Paused),
        (false, Down::Briefly),
        (true, Down::Briefly),
        (false, Down::Briefly),
    ];
    let mut leader_kills: Vec<(Instant, String)> = Vec::new();
    let mut takeovers: Vec<Duration> = Vec::new();
    let mut follower_turn = 0;
    for (k, (leader, down)) in plan.iter().enumerate() {
        tokio::time::sleep(Duration::from_secs(4)).await;
        let l = wait_leader(&nodes, None, 60).await;
        let victim = if *leader {
            l
        } else {
            follower_turn += 1;
            (l + 1 + follower_turn % 2) % nodes.len()
        };
        if let Down::Paused = down {
            eprintln!("chaos: pause {k}: SIGSTOP node {victim} (the leader) at +{}", ms(load_started.elapsed()));
            nodes[victim].signal("STOP");
            let paused = Instant::now();
            leader_kills.push((paused, format!("{down:?}")));
            wait_leader(&nodes, Some(victim), 90).await;
            takeovers.push(paused.elapsed());
            eprintln!("MEASURED chaos: leader takeover by another node after SIGSTOP: {}", ms(paused.elapsed()));
            // The new leader delivers for a while; then the old one wakes up.
            tokio::time::sleep(Duration::from_secs(2)).await;
            nodes[victim].signal("CONT");
            continue;
        }
        eprintln!(
            "chaos: kill {k}: SIGKILL node {} ({}) at +{}",
            victim,
            if victim == l { "the leader" } else { "a follower" },
            ms(load_started.elapsed())
        );
        nodes[victim].kill9();
        let killed = Instant::now();
        if victim == l {
            leader_kills.push((killed, format!("{down:?}")));
        }
        match down {
            Down::Briefly => tokio::time::sleep(Duration::from_secs(1)).await,
            Down::UntilTakeover => {
                let n = wait_leader(&nodes, Some(victim), 90).await;
                assert_ne!(n, victim);
                takeovers.push(killed.elapsed());
                eprintln!("MEASURED chaos: leader takeover by another node after SIGKILL: {}", ms(killed.elapsed()));
            }
            Down::Paused => unreachable!("handled above"),
        }
        restart(&mut nodes, victim, &backends);
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Relaxed);
    let mut model: Vec<UserModel> = Vec::new();
    for w in workers {
        model.extend(w.await.expect("an IdP worker"));
    }
    let load_time = load_started.elapsed();

    // Quiet: the leader drains what is queued.
    let l = wait_leader(&nodes, None, 60).await;
    let drain = Instant::now();
    nodes[l].wait_outbox_empty_within(180).await;
    eprintln!("chaos: the outbox drained {} after the load stopped", ms(drain.elapsed()));

    // (a) Every acknowledged change is in the store, read back through the API.
    let d = &nodes[l];
    for u in &model {
        let r = d.get(&format!("/Users/{}", u.id)).await;
        if u.deleted {
            assert_eq!(r.status.as_u16(), 404, "{} was deleted: {}", u.name, r.body);
            continue;
        }
        assert_eq!(r.status.as_u16(), 200, "{}: {}", u.name, r.body);
        assert_eq!(r.body["userName"], u.name.as_str());
        assert_eq!(version(&r.body["title"]).unwrap_or(0), u.title, "{}'s title in the store: {}", u.name, r.body);
    }
    let r = d.get(&format!("{}&count=1", filter_q("/Users", "userName sw \"chaos-\""))).await;
    let live = model.iter().filter(|u| !u.deleted).count();
    assert_eq!(r.body["totalResults"].as_u64(), Some(live as u64), "no user the IdP did not create: {}", r.body);
    let mut want_members: Vec<BTreeSet<String>> = vec![BTreeSet::new(); groups.len()];
    for u in &model {
        if let Some(g) = u.group {
            want_members[g].insert(u.name.clone());
        }
    }
    for (g, gid) in group_ids.iter().enumerate() {
        let r = d.get(&format!("/Groups/{gid}")).await;
        let ids: BTreeSet<String> = r.body["members"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| m["value"].as_str().unwrap().to_string())
            .collect();
        let want: BTreeSet<String> = model.iter().filter(|u| u.group == Some(g)).map(|u| u.id.clone()).collect();
        assert_eq!(ids, want, "group {g}'s members in the store");
    }

    // (b) The app holds exactly the store's users (deleted ones deactivated) and members.
    let app_users = app.all("Users").await;
    let mut by_name: HashMap<String, Vec<&Value>> = HashMap::new();
    for u in &app_users {
        by_name.entry(u["userName"].as_str().unwrap().to_string()).or_default().push(u);
    }
    assert_eq!(by_name.len(), app_users.len(), "an account twice in the app");
    let app_name: HashMap<String, String> = app_users
        .iter()
        .map(|u| (u["id"].as_str().unwrap().to_string(), u["userName"].as_str().unwrap().to_string()))
        .collect();
    // A user created and deleted while no node delivered (during a takeover) is skipped: the
    // app never needed it.
    let mut never_sent = 0;
    for u in &model {
        let Some(a) = by_name.get(&u.name).map(|a| a[0]) else {
            assert!(u.deleted, "{} never reached the app", u.name);
            never_sent += 1;
            continue;
        };
        assert_eq!(a["active"], json!(!u.deleted), "{}'s active in the app: {a}", u.name);
        if !u.deleted {
            assert_eq!(version(&a["title"]).unwrap_or(0), u.title, "{}'s title in the app: {a}", u.name);
        }
    }
    assert_eq!(app_users.len(), model.len() - never_sent, "the app's accounts are the IdP's users");
    for g in app.all("Groups").await {
        let gi = groups.iter().position(|n| g["displayName"] == n.as_str()).expect("only the test's groups");
        let values: Vec<String> =
            g["members"].as_array().into_iter().flatten().map(|m| m["value"].as_str().unwrap().to_string()).collect();
        let names: BTreeSet<String> = values.iter().map(|v| app_name[v].clone()).collect();
        assert_eq!(names.len(), values.len(), "a member twice in group {gi} at the app: {values:?}");
        assert_eq!(names, want_members[gi], "group {gi}'s members at the app");
    }

    // (c) Per-resource order: each user's title versions reach the app never going back.
    let arrived = proxy.arrived();
    let name_of_path = |s: &Seen| -> Option<String> {
        let id = s.path.strip_prefix("/v2/Users/")?;
        app_name.get(id.split('?').next()?).cloned()
    };
    let mut sequences: HashMap<String, Vec<u32>> = HashMap::new();
    for s in &arrived {
        let body: Value = serde_json::from_str(&s.body).unwrap_or(Value::Null);
        let name = match s.method.as_str() {
            "POST" if s.path.ends_with("/Users") => body["userName"].as_str().map(str::to_string),
            "PUT" | "PATCH" => name_of_path(s),
            _ => None,
        };
        if let Some(name) = name {
            sequences.entry(name).or_default().extend(titles_in(&body));
        }
    }
    for (name, seq) in &sequences {
        assert!(seq.is_sorted(), "{name}'s titles went back at the app: {seq:?}");
    }
    // The record is complete: each live user's last version is the last to arrive.
    for u in model.iter().filter(|u| !u.deleted && u.title > 0) {
        assert_eq!(sequences.get(&u.name).and_then(|s| s.last()), Some(&u.title), "{}'s titles at the app", u.name);
    }
    // Deliveries sent again after a kill (a write whose Idempotency-Key arrived before).
    let mut keys: HashMap<&str, usize> = HashMap::new();
    for s in arrived.iter().filter(|s| s.method != "GET") {
        *keys.entry(s.idempotency_key.as_deref().unwrap_or("")).or_default() += 1;
    }
    let again = keys.values().filter(|n| **n > 1).count();

    // (d) Each account was created once at the app: one 201 per userName at most, and an
    // account with none was created by a POST whose answer the proxy could not record (its
    // sender, the leader, was killed: the next leader found the account and adopted it).
    let user_of = |s: &Seen| -> String {
        let body: Value = serde_json::from_str(&s.body).unwrap_or(Value::Null);
        body["userName"].as_str().or(body["displayName"].as_str()).unwrap_or("").to_string()
    };
    let mut created: HashMap<String, usize> = HashMap::new();
    for s in proxy.seen().iter().filter(|s| s.method == "POST" && s.status == 201) {
        *created.entry(user_of(s)).or_default() += 1;
    }
    let twice: Vec<_> = created.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "created twice at the app: {twice:?}");
    let mut posted: HashMap<String, usize> = HashMap::new();
    for s in arrived.iter().filter(|s| s.method == "POST") {
        *posted.entry(user_of(s)).or_default() += 1;
    }
    let mut answered: HashMap<String, usize> = HashMap::new();
    for s in proxy.seen().iter().filter(|s| s.method == "POST") {
        *answered.entry(user_of(s)).or_default() += 1;
    }
    let mut adopted = 0;
    for u in &model {
        if !created.contains_key(&u.name) && by_name.contains_key(&u.name) {
            let unanswered = posted.get(&u.name).unwrap_or(&0) - answered.get(&u.name).unwrap_or(&0);
            assert!(unanswered > 0, "{} is in the app but was never created there: {:?}", u.name, by_name[&u.name]);
            adopted += 1;
        }
    }

    // The figures.
    let s = &lb.stats;
    let (attempts, errors) = (s.attempts.load(Relaxed), s.errors.load(Relaxed));
    let patches = model.iter().map(|u| u.title as usize).sum::<usize>();
    eprintln!(
        "MEASURED chaos: {} s of load, {} operations ({} users, {patches} title changes, {} deleted), {} kills and pauses ({} of the leader)",
        load_time.as_secs(),
        s.ops.load(Relaxed),
        model.len(),
        model.iter().filter(|u| u.deleted).count(),
        plan.len(),
        leader_kills.len()
    );
    eprintln!(
        "MEASURED chaos: IdP-visible errors: {errors} of {attempts} requests ({:.2} %), {} of {} operations needed a retry; by kind: {:?}; the slowest request: {:.1} s",
        100.0 * errors as f64 / attempts.max(1) as f64,
        s.retried_ops.load(Relaxed),
        s.ops.load(Relaxed),
        s.kinds.lock().unwrap(),
        s.slowest_ms.load(Relaxed) as f64 / 1000.0
    );
    eprintln!(
        "MEASURED chaos: {} retried operations met their own earlier, committed attempt (409 on a create, 404 on a \
         delete); {again} deliveries reached the app again after a kill (same Idempotency-Key), {adopted} \
         accounts created by a leader killed before the answer (adopted by the next), {never_sent} users \
         created and deleted while no node delivered (never sent), {} title versions reached the app",
        s.resolved.load(Relaxed),
        sequences.values().map(Vec::len).sum::<usize>()
    );
    for (at, down) in &leader_kills {
        let first = first_after(&proxy, *at, false).expect("deliveries resumed after a leader's kill");
        eprintln!(
            "MEASURED chaos: leader killed ({down}): first delivery by the next leader after {}",
            ms(first - *at)
        );
    }
    for t in &takeovers {
        eprintln!("MEASURED chaos: takeover {}", ms(*t));
    }
}

/// Issue 15, item 5: the leader killed, another node runs the next scheduled full sync within
/// the bound (`LEASE_TTL + RENEW_EVERY` and a schedule period), and no two runs overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leaders_scheduled_sync_is_run_by_another_node() {
    // PostgreSQL only (see the module's doc).
    if !on_postgres() {
        return;
    }
    let (pg, db, app, proxy) = cluster_and_app().await;
    // A full sync every 3 seconds.
    let config = format!("{}[reconcile]\nschedule = \"*/3 * * * * *\"\n", scim_target_config(&proxy.base));
    let mut nodes: Vec<Daemon> = ["node-a", "node-b"].iter().map(|n| node(&pg, &db, n, &config)).collect();
    wait_cluster(&nodes[1], "node-b sees node-a lead", 30, |c| c["leader"] == "node-a").await;
    nodes[0].create_user("before@example.com").await;
    let runs = || -> Vec<Vec<String>> {
        pg.psql(
            &db,
            "SELECT id, trigger, started_at, coalesce(finished_at, ''), status FROM scimsync.sync_runs ORDER BY id",
        )
        .expect("the sync runs")
        .lines()
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect()
    };
    // The leader runs the schedule.
    let start = Instant::now();
    while runs().iter().filter(|r| r[4] != "running").count() < 2 {
        assert!(start.elapsed() < Duration::from_secs(30), "no two scheduled runs on the leader: {:?}", runs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    nodes[0].kill9();
    let killed = Instant::now();
    let before = runs().last().map(|r| r[0].parse::<i64>().unwrap()).unwrap_or(0);
    nodes[1].create_user("after@example.com").await;
    // Another node leads and runs the next sync; 90 s only catches "never".
    let took = loop {
        if runs().iter().any(|r| r[0].parse::<i64>().unwrap() > before && r[4] != "running") {
            break killed.elapsed();
        }
        assert!(killed.elapsed() < Duration::from_secs(90), "no sync after the leader's kill: {:?}", runs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let c = cluster_of(&nodes[1]).await;
    assert_eq!((c["role"].as_str(), c["leader"].as_str()), (Some("leader"), Some("node-b")), "{c}");
    eprintln!("MEASURED leader killed → next full sync by another node: {}", ms(took));
    if let Some(first) = first_after(&proxy, killed, true) {
        eprintln!("MEASURED leader killed → first delivery by the new leader: {}", ms(first - killed));
    }
    nodes[1].wait_outbox_empty().await;
    assert!(app.user_by_name("after@example.com").await.is_some(), "the new leader delivered");
    // A few more runs on the new leader, then: no two runs overlap, and no tick ran twice.
    let n = runs().len();
    while runs().iter().filter(|r| r[4] != "running").count() < n + 2 {
        assert!(killed.elapsed() < Duration::from_secs(120), "the new leader's schedule: {:?}", runs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = runs();
    let done: Vec<&Vec<String>> = all.iter().filter(|r| r[4] != "running").collect();
    for w in done.windows(2) {
        assert!(w[0][3] <= w[1][2], "runs overlap: {:?} and {:?}\nall: {all:?}", w[0], w[1]);
    }
    let mut ticks = BTreeSet::new();
    for r in done.iter().filter(|r| r[1] == "schedule") {
        // The 3-second tick a scheduled run belongs to (its start, floored).
        let t = chrono::DateTime::parse_from_rfc3339(&r[2]).expect("an RFC 3339 start").timestamp();
        assert!(ticks.insert(t / 3), "two scheduled runs for one tick: {r:?}\nall: {all:?}");
    }
}
