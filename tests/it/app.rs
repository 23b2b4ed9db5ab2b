//! The downstream app for provisioning tests: the real, independent `scim2-server` (Python,
//! from PyPI, installed into `.venv/` by `scripts/python-env.sh`), reached through a small
//! switchable proxy so a test can make the app fail, throttle, hang or come back.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::support::{ServedApart, serve_apart};
use serde_json::Value;
use warp::Filter;
use warp::http::{HeaderMap, Method, StatusCode};

pub const APP_TOKEN: &str = "app-secret-token";

pub fn venv() -> &'static PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(root.join("scripts/python-env.sh")).output().expect("run scripts/python-env.sh");
        assert!(out.status.success(), "python-env.sh failed: {}", String::from_utf8_lossy(&out.stderr));
        PathBuf::from(String::from_utf8(out.stdout).expect("utf8").trim())
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A scim2-server process on a free loopback port. Killed on drop.
pub struct ScimApp {
    child: Child,
    /// `http://127.0.0.1:PORT/v2`
    pub base: String,
    http: reqwest::Client,
}

impl ScimApp {
    pub async fn start() -> ScimApp {
        let port = free_port();
        let child = Command::new(venv().join("bin/scim2-server"))
            .args(["--hostname", "127.0.0.1", "--port", &port.to_string(), "--bearer-token", APP_TOKEN])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start scim2-server");
        let app = ScimApp { child, base: format!("http://127.0.0.1:{port}/v2"), http: crate::support::client() };
        for _ in 0..300 {
            if let Ok(r) =
                app.http.get(format!("{}/ServiceProviderConfig", app.base)).bearer_auth(APP_TOKEN).send().await
                && r.status().is_success()
            {
                return app;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("scim2-server did not come up on port {port} within 15 s");
    }

    /// Every resource of an endpoint (`Users`/`Groups`) as the app holds it, page by page
    /// (scim2-server bounds a page by its `maxResults`, so one request is not enough once a
    /// test has created more than a page of accounts).
    pub async fn all(&self, endpoint: &str) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let r = self
                .http
                .get(format!("{}/{endpoint}?startIndex={}&count=500", self.base, out.len() + 1))
                .bearer_auth(APP_TOKEN)
                .send()
                .await
                .expect("app reachable");
            let v: Value = r.json().await.expect("json");
            let page = v["Resources"].as_array().cloned().unwrap_or_default();
            let total = v["totalResults"].as_u64().expect("a list response carries totalResults") as usize;
            let empty = page.is_empty();
            out.extend(page);
            if out.len() >= total || empty {
                return out;
            }
        }
    }

    pub async fn user_by_name(&self, user_name: &str) -> Option<Value> {
        self.all("Users").await.into_iter().find(|u| u["userName"] == user_name)
    }
}

impl Drop for ScimApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the proxy does with the next requests.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Forward,
    /// Answer every request with this status (and `Retry-After` seconds when given).
    Fail {
        status: u16,
        retry_after: Option<u64>,
    },
    /// Wait this long, then forward.
    Slow(Duration),
    /// Forward reads (GET); answer every write with this status, as an app that refuses a
    /// provision (a missing licence) while it still lists its accounts.
    FailWrites(u16),
}

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub idempotency_key: Option<String>,
    pub at: std::time::Instant,
    /// The request's body as text (what the app was told: a title's version, a userName).
    pub body: String,
}

/// A loopback HTTP proxy in front of the app whose behaviour a test switches mid-run.
pub struct Proxy {
    pub base: String,
    mode: Arc<Mutex<Mode>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Every request as it arrives (status 0), answered or not: a request whose sender died
    /// before the answer is in here only.
    arrived: Arc<Mutex<Vec<Seen>>>,
    _server: ServedApart,
}

impl Proxy {
    /// The proxy runs apart from the test's thread ([`serve_apart`]): a proxy that answered
    /// late would also stamp the requests' arrival late, as if the daemon had sent them late.
    pub async fn start(upstream: &str) -> Proxy {
        let mode = Arc::new(Mutex::new(Mode::Forward));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Mutex::new(Vec::new()));
        let (m, s, a, up) = (mode.clone(), seen.clone(), arrived.clone(), upstream.trim_end_matches("/v2").to_string());
        let (port, server) = serve_apart(move |listener| Proxy::serve(listener, m, s, a, up));
        Proxy { base: format!("http://127.0.0.1:{port}/v2"), mode, seen, arrived, _server: server }
    }

    /// Serve the proxy on `listener` until dropped.
    async fn serve(
        listener: tokio::net::TcpListener,
        m: Arc<Mutex<Mode>>,
        s: Arc<Mutex<Vec<Seen>>>,
        a: Arc<Mutex<Vec<Seen>>>,
        up: String,
    ) {
        let client = crate::support::client();
        let route = warp::any()
            .and(warp::method())
            .and(warp::path::full())
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .then(
                move |method: Method,
                      path: warp::path::FullPath,
                      query: String,
                      headers: HeaderMap,
                      body: bytes::Bytes| {
                    let (m, s, a, up, client) = (m.clone(), s.clone(), a.clone(), up.clone(), client.clone());
                    async move {
                        let mode = m.lock().unwrap().clone();
                        let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_string);
                        let arrived = std::time::Instant::now();
                        let record = |status: u16| Seen {
                            method: method.to_string(),
                            path: format!(
                                "{}{}",
                                path.as_str(),
                                if query.is_empty() { String::new() } else { format!("?{query}") }
                            ),
                            status,
                            idempotency_key: key.clone(),
                            at: arrived,
                            body: String::from_utf8_lossy(&body).into_owned(),
                        };
                        a.lock().unwrap().push(record(0));
                        let mode = match mode {
                            Mode::FailWrites(status) if method != Method::GET => {
                                Mode::Fail { status, retry_after: None }
                            }
                            Mode::FailWrites(_) => Mode::Forward,
                            other => other,
                        };
                        if let Mode::Fail { status, retry_after } = mode {
                            s.lock().unwrap().push(record(status));
                            let mut r = warp::http::Response::builder().status(status);
                            if let Some(ra) = retry_after {
                                r = r.header("retry-after", ra.to_string());
                            }
                            return r.body(bytes::Bytes::from_static(b"{\"detail\":\"switched off\"}")).unwrap();
                        }
                        if let Mode::Slow(d) = mode {
                            tokio::time::sleep(d).await;
                        }
                        let url = format!(
                            "{up}{}{}",
                            path.as_str(),
                            if query.is_empty() { String::new() } else { format!("?{query}") }
                        );
                        let mut rb = client.request(method.clone(), url).body(body.clone());
                        for (k, v) in headers.iter() {
                            if k != "host" && k != "content-length" {
                                rb = rb.header(k, v);
                            }
                        }
                        let (status, rbody) = match rb.send().await {
                            Ok(resp) => (resp.status().as_u16(), resp.bytes().await.unwrap_or_default()),
                            Err(_) => (502, bytes::Bytes::new()),
                        };
                        s.lock().unwrap().push(record(status));
                        warp::http::Response::builder()
                            .status(StatusCode::from_u16(status).unwrap())
                            .header("content-type", "application/scim+json")
                            .body(rbody)
                            .unwrap()
                    }
                },
            );
        warp::serve(route).incoming(listener).run().await;
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Every request as it arrived, answered or not (status 0).
    pub fn arrived(&self) -> Vec<Seen> {
        self.arrived.lock().unwrap().clone()
    }
}

/// Daemon config for a SCIM target at `base`, with fast retries so tests finish quickly.
pub fn scim_target_config(base: &str) -> String {
    format!(
        "[target]\nkind = \"scim\"\n[target.scim]\nbase_url = \"{base}\"\nbearer_token = \"{APP_TOKEN}\"\n\
         request_timeout_seconds = 5\n\
         [outbox]\npoll_interval_seconds = 0.05\nretry_base_seconds = 0.05\nretry_max_seconds = 1\nlease_seconds = 10\n"
    )
}
