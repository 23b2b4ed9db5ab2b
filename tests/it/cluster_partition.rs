//! Issue 15, fencing: a leader cut off from the database stops acting as leader before
//! another node starts. Node A reaches PostgreSQL through a TCP relay the test can cut (a
//! partition: packets stop, connections stay open, as when a switch dies), node B directly.
//! A's app is a black hole that takes a delivery and never answers, so A has a delivery in
//! flight when it is cut off; the test checks that A abandons it before B, the new leader,
//! delivers the same change to the real app, and that A rejoins as a follower once the
//! partition heals.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::app::{Proxy, ScimApp, scim_target_config};
use crate::cluster::{admin_get, node, wait_cluster};
use crate::support::*;

/// A TCP relay to `upstream` that the test can cut (nothing passes either way; connections,
/// old and new, hang) and heal (the connections held through the cut are closed, as TCP
/// would time them out; new ones pass again).
struct Relay {
    port: u16,
    cut: watch::Sender<bool>,
}

impl Relay {
    async fn start(upstream: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the relay");
        let port = listener.local_addr().expect("addr").port();
        let (cut, _) = watch::channel(false);
        let watch_cut = cut.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream, watch_cut.subscribe()));
            }
        });
        Relay { port, cut }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

/// Relay one connection until either side closes, or until a cut it lived through heals.
async fn relay(mut client: TcpStream, upstream: u16, mut cut: watch::Receiver<bool>) {
    // A connection opened during a cut hangs until it heals, then is closed.
    if *cut.borrow_and_update() {
        let _ = cut.wait_for(|c| !*c).await;
        return;
    }
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await else { return };
    let (mut a, mut b) = ([0u8; 16384], [0u8; 16384]);
    loop {
        if *cut.borrow_and_update() {
            let _ = cut.wait_for(|c| !*c).await;
            return;
        }
        tokio::select! {
            n = client.read(&mut a) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if server.write_all(&a[..n]).await.is_err() { return },
            },
            n = server.read(&mut b) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if client.write_all(&b[..n]).await.is_err() { return },
            },
            _ = cut.changed() => {}
        }
    }
}

/// An app that accepts a request and never answers; it records when each connection brought
/// data and when its client closed it.
#[derive(Default)]
struct BlackHoleLog {
    /// (when the first bytes came, when the client closed the connection)
    connections: Vec<(Instant, Option<Instant>)>,
}

async fn black_hole() -> (String, Arc<Mutex<BlackHoleLog>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the black hole");
    let port = listener.local_addr().expect("addr").port();
    let log = Arc::new(Mutex::new(BlackHoleLog::default()));
    let l = log.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let l = l.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut slot = None;
                loop {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            if slot.is_none() {
                                let mut log = l.lock().unwrap();
                                log.connections.push((Instant::now(), None));
                                slot = Some(log.connections.len() - 1);
                            }
                        }
                    }
                }
                if let Some(i) = slot {
                    l.lock().unwrap().connections[i].1 = Some(Instant::now());
                }
            });
        }
    });
    (format!("http://127.0.0.1:{port}/v2"), log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_abandons_its_delivery_before_another_node_delivers() {
    // It runs its own cluster: once per suite is enough (the PostgreSQL run).
    if !on_postgres() {
        return;
    }
    let pg = testpg::TestPg::start().expect("a throw-away PostgreSQL");
    let db = pg.create_database().expect("a database");
    let relay = Relay::start(pg.port()).await;
    let (hole, hole_log) = black_hole().await;
    let app = ScimApp::start().await;
    let proxy_b = Proxy::start(&app.base).await;

    // A: through the relay; its app never answers (and A would wait a minute for it).
    let mut env_a = pg_store_env(&pg, &db);
    env_a[1].1 = format!("postgres://{}@127.0.0.1:{}/{db}", testpg::USER, relay.port);
    env_a.push(("SCIMSYNC_CLUSTER__NODE_NAME".into(), "node-a".into()));
    let config_a = format!(
        "[target]\nkind = \"scim\"\n[target.scim]\nbase_url = \"{hole}\"\nbearer_token = \"t\"\n\
         request_timeout_seconds = 60\n[outbox]\npoll_interval_seconds = 0.05\nlease_seconds = 120\n"
    );
    let mut a = Daemon::prepare_on_store(&config_a, env_a);
    a.spawn();
    let b = node(&pg, &db, "node-b", &scim_target_config(&proxy_b.base));
    let both = |c: &Value| c["nodes"].as_array().is_some_and(|n| n.len() == 2);
    wait_cluster(&b, "node-b sees node-a lead", 30, |c| both(c) && c["leader"] == "node-a").await;

    // A change reaches A's app and hangs there, in flight.
    b.create_user("x@example.com").await;
    for _ in 0..300 {
        if !hole_log.lock().unwrap().connections.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(hole_log.lock().unwrap().connections.len(), 1, "node-a did not deliver\nlog:\n{}", a.log());

    // The partition: A can no longer reach the database.
    let cut = Instant::now();
    relay.set_cut(true);

    // B takes over (the lease expires: ~15 s), recovers the row A had in flight and delivers
    // it to the real app.
    wait_cluster(&b, "node-b takes over", 90, |c| c["role"] == "leader").await;
    let took_over = cut.elapsed();
    let mut delivered = None;
    for _ in 0..600 {
        delivered =
            proxy_b.seen().into_iter().find(|s| s.method == "POST" && s.path.ends_with("/Users") && s.status == 201);
        if delivered.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delivered = delivered.unwrap_or_else(|| panic!("node-b never delivered the change\nlog:\n{}", b.log()));

    // A gave its delivery up (closed the connection) before B's delivery arrived: never two
    // nodes sending at once.
    let (_, closed) = hole_log.lock().unwrap().connections[0];
    let closed = closed.unwrap_or_else(|| {
        panic!("node-a still holds its delivery after node-b delivered the same change\nlog:\n{}", a.log())
    });
    eprintln!(
        "MEASURED partition: node-a abandoned its delivery {:.1} s after the cut; node-b led {:.1} s after it \
         and delivered {:.1} s after it ({:.1} s after node-a stopped)",
        closed.duration_since(cut).as_secs_f64(),
        took_over.as_secs_f64(),
        delivered.at.duration_since(cut).as_secs_f64(),
        delivered.at.duration_since(closed).as_secs_f64(),
    );
    assert!(closed < delivered.at, "node-a was still delivering when node-b delivered");
    assert!(a.log().contains("no longer leader"), "node-a did not say it stepped down\nlog:\n{}", a.log());

    // The partition heals: A rejoins as a follower and delivers nothing more.
    relay.set_cut(false);
    // (Its /readyz may answer 503 for a moment while its pool replaces the connections the
    // partition broke; the cluster view is in the body either way.)
    let mut last = Value::Null;
    for _ in 0..600 {
        last = admin_get(&a, "/readyz").await.body;
        let c = &last["checks"]["cluster"];
        if c["role"] == "follower" && c["leader"] == "node-b" && both(c) && last["ready"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last["ready"], true, "node-a did not rejoin within 60 s: {last}\nlog:\n{}", a.log());
    assert_eq!(last["checks"]["cluster"]["role"], "follower", "{last}");
    b.wait_outbox_empty().await;
    assert_eq!(hole_log.lock().unwrap().connections.len(), 1, "node-a delivered again after the partition");
    let users = app.all("Users").await;
    assert_eq!(users.len(), 1, "the app holds one account: {users:?}");
    assert_eq!(users[0]["userName"], "x@example.com");
    drop(a);
}
