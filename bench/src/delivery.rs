//! `loadgen delivery`: the end-to-end delivery benchmark.
//!
//! The IdP side (this process) pushes N users to a daemon it starts with a SCIM
//! target; the outbox worker delivers them to the app. The app is either the real
//! `scim2-server` (Python) behind a recording proxy in this process, or a fast
//! in-process receiver that records itself. Each delivery is keyed by the
//! `userName` of the app's `POST /Users`; its latency is the time from the
//! daemon's 201 to the IdP (the change is committed) to the app's 201 for that
//! user (the change is applied), so the figures cover the outbox wake-up, claim,
//! job building, the daemon's find-or-create requests and the app itself.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use warp::Filter;
use warp::http::{HeaderMap, Method, Response, StatusCode};

use super::*;

const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
/// The bearer token the daemon is configured with for the app (both apps check it).
const APP_TOKEN: &str = "bench-app-token";

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum App {
    /// The real scim2-server (Python, from the repo's .venv), behind a recording proxy
    #[value(name = "scim2-server")]
    Scim2Server,
    /// A minimal SCIM-ish HTTP server inside loadgen that records arrivals itself
    Receiver,
}

impl App {
    fn name(self) -> &'static str {
        match self {
            App::Scim2Server => "scim2-server",
            App::Receiver => "receiver",
        }
    }
}

#[derive(clap::Args, Debug)]
pub(crate) struct DeliveryArgs {
    /// The downstream app the daemon provisions
    #[arg(long, value_enum, default_value_t = App::Receiver)]
    app: App,

    /// Users pushed (POST /Users), each delivered to the app once
    #[arg(long, value_name = "N", default_value_t = 2000)]
    users: usize,

    /// Concurrent IdP-side workers pushing users
    #[arg(long, value_name = "N", default_value_t = 32)]
    connections: usize,

    /// The daemon's outbox.concurrency (deliveries in flight at once)
    #[arg(long, value_name = "N", default_value_t = 8)]
    concurrency: usize,

    /// Pace the pushes at this many per second (0: as fast as the daemon takes them).
    /// Unpaced, a slow app builds a backlog and latency measures the backlog.
    #[arg(long, value_name = "R", default_value_t = 0.0)]
    push_rate: f64,

    /// Daemon binary to start [default: target/release/scimsync]
    #[arg(long, value_name = "PATH")]
    bin: Option<PathBuf>,

    /// scim2-server executable [default: from the venv that scripts/python-env.sh prints]
    #[arg(long, value_name = "PATH")]
    scim2_server: Option<PathBuf>,

    /// Per-request timeout in seconds, for the pushes and the proxy's requests to the app
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    timeout: u64,

    /// Give up waiting for deliveries after this many seconds in all
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    drain_timeout: u64,

    /// Give up waiting for deliveries when none arrived for this many seconds
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    stall_timeout: u64,

    /// Print only the final JSON line on stdout
    #[arg(long)]
    json: bool,

    /// Forward the started daemon's stdout/stderr to stderr
    #[arg(long)]
    daemon_output: bool,

    /// Forward scim2-server's stdout/stderr (one line per request) to stderr
    #[arg(long)]
    app_output: bool,
}

// ---------------------------------------------------------------------------
// What the app side saw

/// The kinds of request the daemon sends to a SCIM app, as reported.
fn classify(method: &Method, path: &str, query: &str) -> &'static str {
    let users = path.trim_end_matches('/').ends_with("/Users");
    match *method {
        Method::GET if users && query.contains("filter=") => match filter_attr(query) {
            Some(("userName", _)) => "GET /Users?filter=userName",
            Some(("externalId", _)) => "GET /Users?filter=externalId",
            _ => "GET /Users?filter=other",
        },
        Method::POST if users => "POST /Users",
        Method::PUT if path.contains("/Users/") => "PUT /Users/{id}",
        Method::PATCH if path.contains("/Users/") => "PATCH /Users/{id}",
        Method::DELETE => "DELETE",
        _ => "other",
    }
}

/// Decodes `%XX` and `+` of a query component; invalid escapes are kept as they are.
fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `(attribute, value)` of a `filter=ATTR eq "VALUE"` query.
fn filter_attr(query: &str) -> Option<(&'static str, String)> {
    let f = query.split('&').find_map(|kv| kv.strip_prefix("filter="))?;
    let f = pct_decode(f);
    let (attr, rest) = f.split_once(" eq ")?;
    let attr = match attr.trim() {
        a if a.eq_ignore_ascii_case("userName") => "userName",
        a if a.eq_ignore_ascii_case("externalId") => "externalId",
        _ => return None,
    };
    let v: String = serde_json::from_str(rest.trim()).ok()?;
    Some((attr, v))
}

#[derive(Default)]
struct KindStats {
    count: usize,
    non_2xx: usize,
    /// Arrival to answer, as seen at the front (the app's service time behind the proxy).
    service: Vec<Duration>,
}

#[derive(Default)]
struct RecState {
    /// userName -> the first request of the daemon about it (its lookup).
    first_seen: HashMap<String, Instant>,
    /// userName -> when the app acknowledged its create (2xx to `POST /Users`).
    acks: HashMap<String, Instant>,
    duplicate_creates: usize,
    kinds: BTreeMap<&'static str, KindStats>,
    /// Distinct non-2xx answers: (text, count).
    errors: Vec<(String, usize)>,
    other_errors: usize,
}

struct Front {
    backend: Backend,
    rec: Mutex<RecState>,
    next_id: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

enum Backend {
    /// Answer locally.
    Receiver,
    /// Forward to the app at this origin (`http://127.0.0.1:PORT`), same path and query.
    Forward { client: reqwest::Client, origin: String },
}

impl Front {
    fn lock(&self) -> std::sync::MutexGuard<'_, RecState> {
        self.rec.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn scim_error(status: u16, detail: &str) -> (u16, Bytes) {
    let body = json!({"schemas": [ERROR_SCHEMA], "status": status.to_string(), "detail": detail});
    (status, Bytes::from(body.to_string()))
}

/// The fast receiver: just enough of a SCIM app for the daemon's user deliveries.
fn receive(front: &Front, method: &Method, path: &str, query: &str, headers: &HeaderMap, body: &[u8]) -> (u16, Bytes) {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {APP_TOKEN}")) {
        return scim_error(401, "missing or wrong bearer token");
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return scim_error(404, "not under /v2");
    };
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    match (method.clone(), parts.as_slice()) {
        (Method::GET, ["Users"]) => {
            let _ = query;
            let v = json!({"schemas": [LIST_SCHEMA], "totalResults": 0, "itemsPerPage": 0, "startIndex": 1, "Resources": []});
            (200, Bytes::from(v.to_string()))
        }
        (Method::POST, ["Users"]) => match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(mut m)) => {
                let id = format!("r{}", front.next_id.fetch_add(1, Ordering::Relaxed));
                m.insert("id".into(), Value::String(id));
                (201, Bytes::from(Value::Object(m).to_string()))
            }
            _ => scim_error(400, "body is not a JSON object"),
        },
        (Method::PUT | Method::PATCH, ["Users", id]) => {
            (200, Bytes::from(json!({"schemas": [USER_SCHEMA], "id": id}).to_string()))
        }
        (Method::DELETE, ["Users", _]) => (204, Bytes::new()),
        _ => scim_error(404, "the receiver does not serve this"),
    }
}

async fn forward(
    client: &reqwest::Client,
    origin: &str,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> (u16, Option<String>, Bytes) {
    let url = if query.is_empty() { format!("{origin}{path}") } else { format!("{origin}{path}?{query}") };
    let mut rb = client.request(method.clone(), url).body(body);
    for (k, v) in headers {
        if k != "host" && k != "content-length" && k != "connection" {
            rb = rb.header(k, v);
        }
    }
    match rb.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
            match resp.bytes().await {
                Ok(b) => (status, ct, b),
                Err(e) => {
                    let (s, b) = scim_error(502, &transport_error("proxy: reading the app's answer", e));
                    (s, None, b)
                }
            }
        }
        Err(e) => {
            let (s, b) = scim_error(502, &transport_error("proxy: sending to the app", e));
            (s, None, b)
        }
    }
}

async fn handle(
    front: Arc<Front>,
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Bytes> {
    let arrived = Instant::now();
    let n = front.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    front.max_in_flight.fetch_max(n, Ordering::Relaxed);
    let kind = classify(&method, &path, &query);
    let user_name = match kind {
        "GET /Users?filter=userName" => filter_attr(&query).map(|(_, v)| v),
        "POST /Users" => serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("userName").and_then(Value::as_str).map(str::to_string)),
        _ => None,
    };
    if let Some(u) = &user_name {
        front.lock().first_seen.entry(u.clone()).or_insert(arrived);
    }
    let (status, ct, rbody) = match &front.backend {
        Backend::Receiver => {
            let (s, b) = receive(&front, &method, &path, &query, &headers, &body);
            (s, None, b)
        }
        Backend::Forward { client, origin } => forward(client, origin, &method, &path, &query, &headers, body).await,
    };
    let done = Instant::now();
    front.in_flight.fetch_sub(1, Ordering::Relaxed);
    {
        let mut st = front.lock();
        let ok = (200..300).contains(&status);
        let k = st.kinds.entry(kind).or_default();
        k.count += 1;
        k.service.push(done - arrived);
        if !ok {
            k.non_2xx += 1;
            let text = format!("{kind}: HTTP {status}: {}", truncate(&String::from_utf8_lossy(&rbody), MAX_ERROR_BODY));
            if let Some(e) = st.errors.iter_mut().find(|e| e.0 == text) {
                e.1 += 1;
            } else if st.errors.len() < MAX_ERROR_SAMPLES {
                st.errors.push((text, 1));
            } else {
                st.other_errors += 1;
            }
        }
        if kind == "POST /Users"
            && ok
            && let Some(u) = user_name
        {
            if let std::collections::hash_map::Entry::Vacant(e) = st.acks.entry(u) {
                e.insert(done);
            } else {
                st.duplicate_creates += 1;
            }
        }
    }
    let mut r = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY))
        .header("content-type", ct.unwrap_or_else(|| SCIM_JSON.to_string()));
    if status == 201 {
        r = r.header("location", format!("{path}/created"));
    }
    r.body(rbody).unwrap_or_else(|_| Response::new(Bytes::new()))
}

/// Serves the front (receiver or proxy) on a free loopback port until `stop` fires.
async fn serve_front(front: Arc<Front>, stop: tokio::sync::oneshot::Receiver<()>) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding the app front")?;
    let addr = listener.local_addr().context("app front address")?;
    let route = warp::any()
        .and(warp::method())
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::body::bytes())
        .then(move |method: Method, path: warp::path::FullPath, query: String, headers: HeaderMap, body: Bytes| {
            handle(front.clone(), method, path.as_str().to_string(), query, headers, body)
        });
    tokio::spawn(async move {
        warp::serve(route)
            .incoming(listener)
            .graceful(async move {
                let _ = stop.await;
            })
            .run()
            .await;
    });
    Ok(addr)
}

// ---------------------------------------------------------------------------
// scim2-server

struct AppProc {
    child: tokio::process::Child,
    log: DaemonLog,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The scim2-server executable: `--scim2-server`, else the repo's venv (created or
/// refreshed by `scripts/python-env.sh`, which prints its path).
async fn scim2_server_path(given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = given {
        if !p.is_file() {
            bail!("--scim2-server {}: no such file", p.display());
        }
        return Ok(p);
    }
    let script = repo_root().join("scripts/python-env.sh");
    let out = tokio::time::timeout(
        Duration::from_secs(600),
        tokio::process::Command::new(&script).stdin(Stdio::null()).kill_on_drop(true).output(),
    )
    .await
    .map_err(|_| anyhow::anyhow!("{} did not finish within 600 s", script.display()))?
    .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}):\n{}\n(or pass --scim2-server PATH)",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let venv = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let exe = Path::new(&venv).join("bin/scim2-server");
    if !exe.is_file() {
        bail!("{} is missing (venv printed by {}); pass --scim2-server PATH", exe.display(), script.display());
    }
    Ok(exe)
}

async fn start_scim2_server(exe: &Path, forward_output: bool) -> Result<(AppProc, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free port for scim2-server")?
        .port();
    let mut child = tokio::process::Command::new(exe)
        .args(["--hostname", "127.0.0.1", "--port", &port.to_string(), "--bearer-token", APP_TOKEN])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning {}", exe.display()))?;
    let log = DaemonLog::new("scim2-server", forward_output);
    if let Some(o) = child.stdout.take() {
        log.drain(o);
    }
    if let Some(e) = child.stderr.take() {
        log.drain(e);
    }
    let origin = format!("http://127.0.0.1:{port}");
    let probe = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().context("building HTTP client")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            bail!("scim2-server exited before serving ({status}); its output:\n{}", log.tail());
        }
        if let Ok(r) = probe.get(format!("{origin}/v2/ServiceProviderConfig")).bearer_auth(APP_TOKEN).send().await
            && r.status().is_success()
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("scim2-server did not answer on {origin}/v2 within 30 s; its output:\n{}", log.tail());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((AppProc { child, log }, origin))
}

// ---------------------------------------------------------------------------
// The run

/// Nearest-rank percentiles of signed milliseconds (an app may acknowledge before
/// the IdP side has read the daemon's 2xx).
fn pcts(mut v: Vec<f64>) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[(((p / 100.0) * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    Some((at(50.0), at(99.0), v[v.len() - 1]))
}

fn signed_ms(later: Instant, earlier: Instant) -> f64 {
    if later >= earlier { ms(later - earlier) } else { -ms(earlier - later) }
}

fn pct_json(p: Option<(f64, f64, f64)>) -> Value {
    match p {
        Some((a, b, c)) => json!({"p50_ms": round2(a), "p99_ms": round2(b), "max_ms": round2(c)}),
        None => Value::Null,
    }
}

fn pct_text(p: Option<(f64, f64, f64)>) -> String {
    match p {
        Some((a, b, c)) => format!("p50 {a:>9.2} ms  p99 {b:>9.2} ms  max {c:>9.2} ms"),
        None => "n/a".into(),
    }
}

/// `scimsync outbox list` against the daemon's data dir: what is still queued and why.
async fn outbox_list(d: &Daemon) -> String {
    let run = tokio::process::Command::new(&d.bin)
        .args(["outbox", "list", "--config"])
        .arg(&d.cfg)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(10), run).await {
        Err(_) => "(`scimsync outbox list` did not finish within 10 s)".into(),
        Ok(Err(e)) => format!("(could not run `scimsync outbox list`: {e})"),
        Ok(Ok(o)) => {
            let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            let lines: Vec<&str> = text.lines().collect();
            let mut s = lines.iter().take(15).map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n");
            if lines.len() > 15 {
                s.push_str(&format!("\n  ... {} more lines", lines.len() - 15));
            }
            s
        }
    }
}

pub(crate) async fn run(args: DeliveryArgs) -> Result<()> {
    let users = args.users.max(1);
    let mut rep = Reporter::new(args.json, None);

    // 1. The app, and the front the daemon talks to.
    let (mut app_proc, backend) = match args.app {
        App::Receiver => (None, Backend::Receiver),
        App::Scim2Server => {
            let exe = scim2_server_path(args.scim2_server.clone()).await?;
            let (p, origin) = start_scim2_server(&exe, args.app_output).await?;
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(args.timeout.max(1)))
                .pool_max_idle_per_host(64)
                .build()
                .context("building the proxy's HTTP client")?;
            (Some(p), Backend::Forward { client, origin })
        }
    };
    let front = Arc::new(Front {
        backend,
        rec: Mutex::default(),
        next_id: AtomicU64::new(1),
        in_flight: AtomicUsize::new(0),
        max_in_flight: AtomicUsize::new(0),
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let addr = serve_front(front.clone(), stop_rx).await?;
    let app_base = format!("http://{addr}/v2");

    // 2. The daemon, provisioning through the front.
    let bin = args.bin.clone().unwrap_or_else(default_bin);
    let extra = format!(
        "[target]\nkind = \"scim\"\n[target.scim]\nbase_url = {}\nbearer_token = {}\n\
         [outbox]\npoll_interval_seconds = 0.05\nconcurrency = {}\n",
        toml_str(&app_base),
        toml_str(APP_TOKEN),
        args.concurrency.max(1)
    );
    let (mut daemon, base, token) = start_daemon(&bin, args.daemon_output, &extra).await?;
    let client = idp_client(&token, args.connections, args.timeout)?;
    let errors: Errors = Arc::default();
    let app_desc = match args.app {
        App::Scim2Server => "scim2-server (behind a recording proxy)",
        App::Receiver => "in-process receiver",
    };
    rep.line(format!(
        "scimsync delivery bench: {base} -> {app_base}  app={app_desc} users={users} connections={} outbox.concurrency={}{}",
        args.connections,
        args.concurrency.max(1),
        if args.push_rate > 0.0 { format!(" push_rate={}/s", args.push_rate) } else { String::new() }
    ));

    // 3. Push.
    let pushed_at: Arc<Vec<OnceLock<Instant>>> = Arc::new((0..users).map(|_| OnceLock::new()).collect());
    let push = {
        let (client, base, pushed_at) = (client.clone(), Arc::<str>::from(base.as_str()), pushed_at.clone());
        let rate = (args.push_rate > 0.0).then_some(args.push_rate);
        run_phase_paced("push_users", users, args.connections.max(1), rate, &errors, move |k| {
            let (client, base, pushed_at) = (client.clone(), base.clone(), pushed_at.clone());
            async move {
                let what = "POST /Users";
                let resp =
                    send(client.post(format!("{base}/Users")).body(user_body(k).to_string()), what, &[201]).await;
                // The change is committed once the 201 is here: stamp before parsing.
                let at = Instant::now();
                let resp = resp?;
                let v = parse_json(what, &resp)?;
                if v.get("id").and_then(Value::as_str).is_none() {
                    return Err(format!(
                        "{what}: 201 without a string \"id\": {}",
                        truncate(&String::from_utf8_lossy(&resp), MAX_ERROR_BODY)
                    ));
                }
                let _ = pushed_at[k].set(at);
                Ok(())
            }
        })
        .await
    };
    rep.phase(&push);
    let pushed: Vec<(String, Instant)> = pushed_at
        .iter()
        .enumerate()
        .filter_map(|(k, t)| t.get().map(|t| (format!("user{k}@example.com"), *t)))
        .collect();

    // 4. Wait for the app to have them all (bounded).
    let started_wait = Instant::now();
    let mut last_count = 0;
    let mut last_progress = Instant::now();
    let mut last_line = Instant::now();
    let mut gave_up: Option<String> = None;
    loop {
        let delivered = {
            let st = front.lock();
            pushed.iter().filter(|(u, _)| st.acks.contains_key(u)).count()
        };
        if delivered >= pushed.len() {
            break;
        }
        if delivered > last_count {
            last_count = delivered;
            last_progress = Instant::now();
        }
        if let Ok(Some(status)) = daemon.child.try_wait() {
            gave_up = Some(format!("the daemon exited ({status}) with {delivered} of {} delivered", pushed.len()));
            break;
        }
        if let Some(Ok(Some(status))) = app_proc.as_mut().map(|p| p.child.try_wait()) {
            gave_up = Some(format!("scim2-server exited ({status}) with {delivered} of {} delivered", pushed.len()));
            break;
        }
        if started_wait.elapsed() > Duration::from_secs(args.drain_timeout) {
            gave_up = Some(format!(
                "gave up after --drain-timeout {} s with {delivered} of {} delivered",
                args.drain_timeout,
                pushed.len()
            ));
            break;
        }
        if last_progress.elapsed() > Duration::from_secs(args.stall_timeout) {
            gave_up = Some(format!(
                "gave up: no delivery for --stall-timeout {} s, {delivered} of {} delivered",
                args.stall_timeout,
                pushed.len()
            ));
            break;
        }
        if last_line.elapsed() >= Duration::from_secs(5) {
            eprintln!(
                "  ... {delivered} of {} delivered after {:.0} s",
                pushed.len(),
                started_wait.elapsed().as_secs_f64()
            );
            last_line = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let outbox = if gave_up.is_some() { Some(outbox_list(&daemon).await) } else { None };

    // 5. Measure.
    let rss_kib = peak_rss_kib(daemon.pid);
    let daemon_log_lines = daemon.log.lines();
    let app_tail = app_proc.as_ref().map(|p| p.log.tail());
    stop_daemon(daemon).await;
    if let Some(mut p) = app_proc {
        let _ = p.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), p.child.wait()).await;
    }
    let _ = stop_tx.send(());

    let st = front.lock();
    let mut lat = Vec::new();
    let mut queue = Vec::new();
    let mut in_app = Vec::new();
    let mut acked_before_2xx = 0;
    let mut last_ack: Option<Instant> = None;
    for (u, push_t) in &pushed {
        let Some(&ack) = st.acks.get(u) else { continue };
        let l = signed_ms(ack, *push_t);
        if l < 0.0 {
            acked_before_2xx += 1;
        }
        lat.push(l);
        if let Some(&first) = st.first_seen.get(u) {
            queue.push(signed_ms(first, *push_t));
            in_app.push(signed_ms(ack, first));
        }
        last_ack = Some(last_ack.map_or(ack, |a: Instant| a.max(ack)));
    }
    let delivered = lat.len();
    let first_push = pushed.iter().map(|(_, t)| *t).min();
    let span = match (first_push, last_ack) {
        (Some(f), Some(l)) if l > f => (l - f).as_secs_f64(),
        _ => 0.0,
    };
    let delivered_rate = if span > 0.0 { delivered as f64 / span } else { 0.0 };
    let push_stats = stats(push.samples.iter());
    let push_secs = push.elapsed.as_secs_f64();
    let push_rate = if push_secs > 0.0 { pushed.len() as f64 / push_secs } else { 0.0 };
    let (p_lat, p_queue, p_app) = (pcts(lat), pcts(queue), pcts(in_app));

    rep.line(format!("delivered {delivered} of {} pushed ({} push errors)", pushed.len(), push_stats.errors));
    if delivered != pushed.len() || st.duplicate_creates > 0 {
        rep.line(format!(
            "MISMATCH: {} pushed, {delivered} delivered, {} duplicate creates in the app",
            pushed.len(),
            st.duplicate_creates
        ));
    }
    if let Some(why) = &gave_up {
        rep.line(format!("INCOMPLETE: {why}"));
        if let Some(o) = &outbox {
            rep.line(format!("daemon's outbox at that point (`scimsync outbox list`):\n{o}"));
        }
    }
    rep.line(format!("pushes/s    {push_rate:>9.1}  (IdP side, {} pushes in {push_secs:.2} s)", pushed.len()));
    rep.line(format!("delivered/s {delivered_rate:>9.1}  (first daemon 201 -> last app ack: {span:.2} s)"));
    rep.line(format!("latency daemon 2xx -> app ack:         {}", pct_text(p_lat)));
    rep.line(format!("  daemon 2xx -> first request to app:  {}", pct_text(p_queue)));
    rep.line(format!("  first request to app -> app ack:     {}", pct_text(p_app)));
    if acked_before_2xx > 0 {
        rep.line(format!(
            "  ({acked_before_2xx} acks came before loadgen had read the daemon's 2xx: negative latencies)"
        ));
    }
    let svc_label = match args.app {
        App::Scim2Server => "app service time (via proxy)",
        App::Receiver => "receiver handling time",
    };
    let mut kinds_json = serde_json::Map::new();
    rep.line(format!(
        "requests to the app (max {} in flight at once; {svc_label}):",
        front.max_in_flight.load(Ordering::Relaxed)
    ));
    for (k, ks) in &st.kinds {
        let p = pcts(ks.service.iter().map(|d| ms(*d)).collect());
        rep.line(format!("  {k:<30} {:>7}  non-2xx {:>5}  {}", ks.count, ks.non_2xx, pct_text(p)));
        kinds_json
            .insert((*k).to_string(), json!({"requests": ks.count, "non_2xx": ks.non_2xx, "service": pct_json(p)}));
    }
    let rss_mb = rss_kib.map(|k| round2(k as f64 / 1024.0));
    match rss_mb {
        Some(mb) => rep.line(format!("daemon peak RSS: {mb:.1} MB")),
        None => rep.line("daemon peak RSS: n/a (could not read /proc/PID/status)"),
    }
    if daemon_log_lines > 0 && !args.daemon_output {
        rep.line(format!("daemon wrote {daemon_log_lines} log lines (see them with --daemon-output)"));
    }
    let mut error_samples = Vec::new();
    {
        let log = errors.lock().unwrap_or_else(|e| e.into_inner());
        let app_errs = st.errors.iter().map(|(t, n)| ("app", t, *n));
        let push_errs = log.samples.iter().map(|s| (s.phase, &s.text, s.count));
        let all: Vec<_> = push_errs.chain(app_errs).collect();
        if !all.is_empty() {
            rep.line("first distinct errors:");
            for (phase, text, n) in all {
                rep.line(format!("  [{phase}] x{n} {text}"));
                error_samples.push(json!({"phase": phase, "count": n, "error": text}));
            }
        }
        if gave_up.is_some()
            && let Some(t) = app_tail.filter(|t| !t.is_empty())
        {
            rep.line(format!("scim2-server's last output:\n{t}"));
        }
    }

    let out = json!({
        "bench": "scimsync-delivery",
        "app": args.app.name(),
        "users": users,
        "connections": args.connections,
        "outbox_concurrency": args.concurrency.max(1),
        "push_rate_limit": if args.push_rate > 0.0 { json!(args.push_rate) } else { Value::Null },
        "pushed": pushed.len(),
        "push_errors": push_stats.errors,
        "push_rps": round2(push_rate),
        "push_p50_ms": round2(ms(push_stats.p50)),
        "push_p99_ms": round2(ms(push_stats.p99)),
        "delivered": delivered,
        "duplicate_creates": st.duplicate_creates,
        "complete": gave_up.is_none() && delivered == pushed.len(),
        "delivered_per_s": round2(delivered_rate),
        "delivery_span_s": round2(span),
        "latency": pct_json(p_lat),
        "latency_to_first_app_request": pct_json(p_queue),
        "latency_first_app_request_to_ack": pct_json(p_app),
        "app_requests": kinds_json,
        "app_max_in_flight": front.max_in_flight.load(Ordering::Relaxed),
        "daemon_peak_rss_mb": rss_mb,
        "error_samples": error_samples,
    });
    println!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_decoded() {
        let q = "filter=userName%20eq%20%22user7%40example.com%22";
        assert_eq!(filter_attr(q), Some(("userName", "user7@example.com".to_string())));
        assert_eq!(filter_attr("filter=externalId+eq+%22ext-7%22"), Some(("externalId", "ext-7".to_string())));
        assert_eq!(filter_attr("count=1"), None);
        assert_eq!(pct_decode("a%2"), "a%2");
        assert_eq!(pct_decode("%41%zz"), "A%zz");
    }

    #[test]
    fn percentiles_of_signed_values() {
        assert_eq!(pcts(vec![]), None);
        assert_eq!(pcts(vec![-1.0, 3.0, 2.0, 1.0]), Some((1.0, 3.0, 3.0)));
    }
}
