//! Test support: a real daemon process on 127.0.0.1:0, a token made with the real CLI, and
//! a small SCIM client. Waits are bounded and fail with a message; nothing sleeps and hopes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
pub const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
pub const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// A test HTTP client. The crate's reqwest uses rustls without a built-in crypto provider
/// (the daemon installs ring); tests install the same before building a client.
pub fn client() -> reqwest::Client {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client")
}

/// A test server (an app, a proxy, a token endpoint) on a thread and runtime of its own,
/// on a free loopback port. A test's own thread blocks while the CLI helpers wait for the
/// binary; a server run from it would answer late, and a daemon would see an app that
/// stalls. `serve` gets the bound listener; the server stops when the guard is dropped.
pub fn serve_apart<F, Fut>(serve: F) -> (u16, ServedApart)
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a test server");
    listener.set_nonblocking(true).expect("non-blocking listener");
    let port = listener.local_addr().expect("addr").port();
    let stop = tokio_util::sync::CancellationToken::new();
    let st = stop.clone();
    std::thread::Builder::new()
        .name(format!("test-server-{port}"))
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("server runtime");
            // Returning drops the runtime, and with it the server's open connections.
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("server listener");
                tokio::select! {
                    _ = serve(listener) => {}
                    _ = st.cancelled() => {}
                }
            });
        })
        .expect("server thread");
    (port, ServedApart(stop))
}

/// Stops a [`serve_apart`] server when dropped.
pub struct ServedApart(tokio_util::sync::CancellationToken);

impl Drop for ServedApart {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_scimsync")
}

/// A running daemon. Killed (SIGKILL) on drop; `stop()` asks it to shut down cleanly.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub base: String,
    /// `http://127.0.0.1:PORT` of the admin listener (/healthz, /readyz, /metrics).
    pub admin_base: String,
    pub token: String,
    pub child: Option<Child>,
    pub http: reqwest::Client,
    /// Everything the daemon wrote to stderr (its log), across restarts; also echoed.
    log: std::sync::Arc<std::sync::Mutex<String>>,
    extra_config: String,
    /// `SCIMSYNC_*` variables set for the daemon and the CLI (settings outside the
    /// sections `extra_config` can add to).
    env: Vec<(String, String)>,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// Assert a SCIM error (RFC 7644 §3.12) with this status and scimType.
    #[track_caller]
    pub fn assert_error(&self, status: u16, scim_type: Option<&str>) {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.body);
        assert_eq!(self.body["schemas"], json!([ERROR]), "not a SCIM error body: {}", self.body);
        assert_eq!(self.body["status"], json!(status.to_string()), "status must be a string: {}", self.body);
        assert_eq!(self.body.get("scimType").and_then(Value::as_str), scim_type, "scimType: {}", self.body);
        assert!(self.body["detail"].as_str().is_some_and(|d| !d.is_empty()), "detail missing: {}", self.body);
        assert_eq!(self.header("content-type"), Some("application/scim+json"));
    }
}

/// The one switch that runs the suite on the PostgreSQL store: `SCIMSYNC_TEST_STORE=postgres`
/// gives every daemon a fresh database of one throw-away cluster for the whole run
/// (`testpg::TestPg::shared`, stopped and removed after the run by its reaper); unset or
/// `sqlite`, the embedded default in the daemon's temp dir.
pub fn store_backend_env() -> Vec<(String, String)> {
    if on_postgres() {
        let pg = testpg::TestPg::shared().expect("a throw-away PostgreSQL for SCIMSYNC_TEST_STORE=postgres");
        pg_store_env(pg, &pg.create_database().expect("a database for this daemon"))
    } else {
        Vec::new()
    }
}

/// Whether this run's daemons use the PostgreSQL store (`SCIMSYNC_TEST_STORE=postgres`).
/// The marker for a test that means something on one backend only: it returns early on
/// the other, with a comment saying why, e.g.
/// `if on_postgres() { return; } // reads the SQLite file itself`.
pub fn on_postgres() -> bool {
    match std::env::var("SCIMSYNC_TEST_STORE").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("SCIMSYNC_TEST_STORE={other:?}: sqlite or postgres"),
    }
}

/// The daemon's settings for database `db` of cluster `pg` (for a test with a cluster of
/// its own, which it stops and starts).
pub fn pg_store_env(pg: &testpg::TestPg, db: &str) -> Vec<(String, String)> {
    vec![
        ("SCIMSYNC_STORE__BACKEND".into(), "postgres".into()),
        ("SCIMSYNC_STORE__POSTGRES__URL".into(), pg.url_without_password(db)),
        ("SCIMSYNC_STORE__POSTGRES__PASSWORD".into(), testpg::PASSWORD.into()),
    ]
}

impl Daemon {
    /// Run one data-changing statement on the daemon's store, whichever backend this run
    /// uses (`sqlite` on its file, `postgres` in its database and schema), as a test's way
    /// to make state no API makes (a record aged past its retention). Returns the rows
    /// changed. The daemon should be stopped, as an operator's hand edit would need.
    pub fn store_sql(&self, sqlite: &str, postgres: &str) -> usize {
        if on_postgres() {
            let database = self.pg_database();
            let pg = testpg::TestPg::shared().expect("the suite's PostgreSQL");
            let sql = format!(
                "SET search_path TO scimsync; WITH changed AS ({postgres} RETURNING 1) SELECT count(*) FROM changed"
            );
            pg.psql(&database, &sql).expect("store SQL").trim().parse().expect("a count")
        } else {
            let db =
                rusqlite::Connection::open(self.data_dir().join("scimsync.db")).expect("open the daemon's database");
            db.execute(sqlite, []).expect("store SQL")
        }
    }

    /// Everything the store holds, as bytes to search: every file of the data directory on
    /// SQLite, a `pg_dump` of the daemon's database on PostgreSQL.
    pub fn store_dump(&self) -> Vec<u8> {
        if on_postgres() {
            let database = self.pg_database();
            let pg = testpg::TestPg::shared().expect("the suite's PostgreSQL");
            let out = std::process::Command::new(pg.bin_dir().join("pg_dump"))
                .args(["-h", "127.0.0.1", "-U", testpg::USER, "-d", &database, "-p", &pg.port().to_string()])
                .env("PGPASSWORD", testpg::PASSWORD)
                .output()
                .expect("pg_dump");
            assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));
            out.stdout
        } else {
            let mut raw = Vec::new();
            for entry in std::fs::read_dir(self.data_dir()).unwrap() {
                raw.extend(std::fs::read(entry.unwrap().path()).unwrap());
            }
            raw
        }
    }

    /// The daemon's database on the suite's PostgreSQL cluster.
    fn pg_database(&self) -> String {
        let url = self
            .env
            .iter()
            .find(|(k, _)| k == "SCIMSYNC_STORE__POSTGRES__URL")
            .map(|(_, v)| v.clone())
            .expect("a PostgreSQL daemon has a URL");
        url.rsplit('/').next().and_then(|d| d.split('?').next()).expect("a database in the URL").to_string()
    }

    pub fn start() -> Daemon {
        Self::start_with("")
    }

    /// Start with extra TOML appended to the config (sections beyond [server]/[store]/[log]).
    pub fn start_with(extra_config: &str) -> Daemon {
        Self::start_with_env(extra_config, &[])
    }

    /// Start with extra TOML and `SCIMSYNC_*` environment variables.
    pub fn start_with_env(extra_config: &str, env: &[(&str, &str)]) -> Daemon {
        Self::start_seeded(extra_config, env, None)
    }

    /// Start on a copy of an existing database file (a restored backup).
    pub fn start_restored(db: &Path) -> Daemon {
        Self::start_seeded("", &[], Some(db))
    }

    fn start_seeded(extra_config: &str, env: &[(&str, &str)], db: Option<&Path>) -> Daemon {
        // A test that names its backend (`SCIMSYNC_STORE__BACKEND`) keeps it.
        let named = env.iter().any(|(k, _)| *k == "SCIMSYNC_STORE__BACKEND");
        let mut d = Self::prepare(extra_config, env, db, if named { Vec::new() } else { store_backend_env() });
        d.spawn();
        d
    }

    /// A daemon on a store of the test's choosing (a cluster of its own, which it stops and
    /// starts: [`pg_store_env`]), its config written and a token made, but not started:
    /// the test calls [`spawn`](Self::spawn), with the database up or not.
    pub fn prepare_on_store(extra_config: &str, store_env: Vec<(String, String)>) -> Daemon {
        Self::prepare(extra_config, &[], None, store_env)
    }

    fn prepare(
        extra_config: &str,
        env: &[(&str, &str)],
        db: Option<&Path>,
        store_env: Vec<(String, String)>,
    ) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut d = Daemon {
            dir,
            base: String::new(),
            admin_base: String::new(),
            token: String::new(),
            child: None,
            http: client(),
            log: Default::default(),
            extra_config: extra_config.to_string(),
            // The admin listener's default port (9090) would collide between parallel tests.
            // Load tests go far beyond the default per-token rate limit: tests of the limit
            // set their own (a later variable of the same name wins).
            // A test that configures the limit in the file gets no such variable.
            // Deprovisionings would wait out the deletion guard's delay (2 minutes by
            // default) in every test that deletes: tests of the delay set it in the file.
            env: [
                ("SCIMSYNC_ADMIN__LISTEN", "127.0.0.1:0"),
                ("SCIMSYNC_SERVER__RATE_LIMIT__REQUESTS_PER_SECOND", "0"),
                ("SCIMSYNC_OUTBOX__DELETION_GUARD__DELAY_SECONDS", "0"),
            ]
            .into_iter()
            .filter(|(k, _)| !(k.contains("RATE_LIMIT") && extra_config.contains("[server.rate_limit]")))
            .filter(|(k, _)| !(k.contains("DELAY_SECONDS") && extra_config.contains("delay_seconds")))
            .chain(env.iter().copied())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain(store_env)
            .collect(),
        };
        d.write_config();
        if let Some(db) = db {
            std::fs::create_dir_all(d.data_dir()).expect("data dir");
            std::fs::copy(db, d.data_dir().join("scimsync.db")).expect("copy the database");
        }
        d.token = d.cli(&["token", "create", "--label", "tests"]).trim().to_string();
        assert!(d.token.starts_with("scimsync_"), "token create printed {:?}", d.token);
        d
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("scimsync.toml")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The daemon's store, opened through the library as the daemon opens it (SQLite in its
    /// data directory, or its PostgreSQL database), to look at what the API does not show.
    pub async fn open_store(&self) -> scimsync::store::Store {
        let var = |k: &str| self.env.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        if var("SCIMSYNC_STORE__BACKEND").as_deref() == Some("postgres") {
            let opts = scimsync::store::PgOptions {
                url: var("SCIMSYNC_STORE__POSTGRES__URL").expect("the daemon's PostgreSQL URL"),
                password: var("SCIMSYNC_STORE__POSTGRES__PASSWORD"),
                pool_size: 2,
                connect_timeout: Duration::from_secs(10),
                statement_timeout: Duration::from_secs(30),
                ca_file: None,
                schema: "scimsync".into(),
            };
            let never = tokio_util::sync::CancellationToken::new();
            scimsync::store::Store::open_postgres(&opts, &Default::default(), &never)
                .await
                .expect("open the daemon's PostgreSQL store")
        } else {
            scimsync::store::Store::open(&scimsync::store::StoreOptions {
                data_dir: self.data_dir(),
                busy_timeout_seconds: 5,
                readers: 1,
                max_batch: 1,
            })
            .expect("open the daemon's SQLite store")
        }
    }

    /// The resource ids whose changes the deletion guard holds, as `outbox list --held`
    /// shows them.
    pub fn held_ids(&self) -> Vec<String> {
        self.cli(&["outbox", "list", "--held"])
            .lines()
            .filter_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                (cols.get(1) == Some(&"held")).then(|| cols[3].to_string())
            })
            .collect()
    }

    /// Replace the extra TOML (takes effect at the next `spawn`).
    pub fn set_extra_config(&mut self, extra_config: &str) {
        self.extra_config = extra_config.to_string();
        self.write_config();
    }

    fn write_config(&self) {
        let cfg = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[store]\ndata_dir = \"{}\"\n[log]\nlevel = \"warn\"\n{}",
            self.data_dir().display(),
            self.extra_config
        );
        std::fs::write(self.config_path(), cfg).expect("write config");
    }

    /// Replace the extra TOML and rewrite the config file (the running daemon reads it on SIGHUP).
    pub fn rewrite_config(&mut self, extra_config: &str) {
        self.extra_config = extra_config.to_string();
        self.write_config();
    }

    /// The daemon's log so far (all runs).
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Bounded wait until the log has `count` lines containing `needle`; fails with the log.
    pub async fn wait_log(&self, needle: &str, count: usize) {
        for _ in 0..600 {
            if self.log().lines().filter(|l| l.contains(needle)).count() >= count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{count} log line(s) with {needle:?} did not appear within 30 s; log:\n{}", self.log());
    }

    /// Send a signal (`TERM`, `HUP`, ...) to the daemon process.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("daemon running").id().to_string();
        let st = Command::new("kill").args([&format!("-{name}"), &pid]).status().expect("run kill");
        assert!(st.success(), "kill -{name} {pid} failed");
    }

    /// Bounded wait for the daemon to exit; returns its status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("daemon running");
        for _ in 0..600 {
            if let Some(st) = c.try_wait().expect("wait") {
                return st;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        panic!("daemon did not exit within 30 s");
    }

    /// Run a CLI subcommand against this daemon's config; returns stdout, panics on failure.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = self.cli_raw(args);
        assert!(out.status.success(), "scimsync {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf8")
    }

    pub fn cli_raw(&self, args: &[&str]) -> std::process::Output {
        self.cli_command(args).output().expect("run scimsync")
    }

    /// A CLI subcommand against this daemon's config, not yet run (to set up its stdio).
    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("--config").arg(self.config_path()).args(args).envs(self.env.iter().cloned());
        c
    }

    /// Start (or restart) the daemon process and wait until it is ready: its store open (the
    /// "scimsync ready" line that follows the "listening on" lines).
    pub fn spawn(&mut self) {
        let ready = self.spawn_listening();
        if ready.recv_timeout(Duration::from_secs(60)).is_err() {
            panic!("daemon did not print \"scimsync ready\" within 60 s; log:\n{}", self.log());
        }
    }

    /// Start (or restart) the daemon process and wait only for its "listening on" lines (a
    /// PostgreSQL store may still be connecting); the receiver hears "scimsync ready".
    pub fn spawn_listening(&mut self) -> mpsc::Receiver<()> {
        let mut child = Command::new(bin())
            .args(["--config", self.config_path().to_str().expect("utf8"), "serve"])
            .envs(self.env.iter().cloned())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn scimsync");
        let stderr = child.stderr.take().expect("stderr");
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("{line}");
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The admin line follows the SCIM line at once (same flush).
                if let Some(url) = line.strip_prefix("scimsync listening on ") {
                    let _ = tx.send(url.trim().to_string());
                } else if let Some(url) = line.strip_prefix("scimsync admin listening on ") {
                    let _ = tx.send(url.trim().to_string());
                } else if line == "scimsync ready" {
                    let _ = ready_tx.send(());
                }
            }
        });
        self.base =
            rx.recv_timeout(Duration::from_secs(30)).expect("daemon did not print its listening line within 30 s");
        self.admin_base = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("daemon did not print its admin listening line within 30 s");
        self.child = Some(child);
        ready_rx
    }

    /// SIGKILL: no chance to flush or clean up, like a power cut to the process.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.wait_exit()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn req(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        self.req_with(method, path, body, &[]).await
    }

    pub async fn req_with(&self, method: Method, path: &str, body: Option<Value>, headers: &[(&str, &str)]) -> Resp {
        let mut rb = self.http.request(method, self.url(path)).bearer_auth(&self.token);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.header("content-type", "application/scim+json").body(b.to_string());
        }
        send(rb).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.req(Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.req(Method::POST, path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: Value) -> Resp {
        self.req(Method::PUT, path, Some(body)).await
    }
    pub async fn patch(&self, path: &str, body: Value) -> Resp {
        self.req(Method::PATCH, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> Resp {
        self.req(Method::DELETE, path, None).await
    }

    /// Bounded wait until `outbox list` reports nothing waiting (held rows do not count);
    /// fails with what is still queued.
    pub async fn wait_outbox_empty(&self) {
        self.wait_outbox_empty_within(30).await
    }

    /// [`wait_outbox_empty`](Self::wait_outbox_empty) for a queue whose size a test does
    /// not bound (load until a signal): a liveness limit, not a speed check.
    pub async fn wait_outbox_empty_within(&self, seconds: u64) {
        let mut last = String::new();
        for _ in 0..seconds * 20 {
            // Off the test's thread: tasks a test runs beside the wait (a load writer, a
            // watcher) keep going while the CLI runs.
            let mut list = self.cli_command(&["outbox", "list"]);
            let out = tokio::task::spawn_blocking(move || list.output()).await.expect("join").expect("run scimsync");
            assert!(out.status.success(), "scimsync outbox list failed: {}", String::from_utf8_lossy(&out.stderr));
            last = String::from_utf8(out.stdout).expect("utf8");
            if last.starts_with("0 change(s) waiting") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("outbox did not drain within {seconds} s:\n{last}");
    }

    /// Create a user and return its id.
    pub async fn create_user(&self, user_name: &str) -> String {
        let r = self.post("/Users", user_body(user_name)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body["id"].as_str().expect("id").to_string()
    }

    pub async fn create_group(&self, name: &str, members: &[&str]) -> String {
        let members: Vec<Value> = members.iter().map(|m| json!({"value": m})).collect();
        let r = self.post("/Groups", json!({"schemas": [GROUP], "displayName": name, "members": members})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body["id"].as_str().expect("id").to_string()
    }
}

pub async fn send(rb: reqwest::RequestBuilder) -> Resp {
    let resp = rb.send().await.expect("request failed to reach the daemon");
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    Resp { status, headers, body }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn user_body(user_name: &str) -> Value {
    json!({
        "schemas": [USER],
        "userName": user_name,
        "name": {"givenName": "Given", "familyName": "Family"},
        "emails": [{"value": user_name, "type": "work", "primary": true}],
        "active": true
    })
}

pub fn patch_body(ops: Value) -> Value {
    json!({"schemas": [PATCH_OP], "Operations": ops})
}

pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Path helpers for readability.
pub fn filter_q(endpoint: &str, filter: &str) -> String {
    format!("{endpoint}?filter={}", enc(filter))
}

#[allow(dead_code)]
pub fn exists(p: &Path) -> bool {
    p.exists()
}
