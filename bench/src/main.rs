//! `loadgen`: a load generator for the scimsync daemon.
//!
//! It either starts the release daemon binary itself (in a temp dir, with a
//! fresh token) or targets an already running daemon (`--url`/`--token`), then
//! runs fixed-count phases with N concurrent workers and prints throughput and
//! latency percentiles per phase, plus the daemon's peak RSS.

use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

const SCIM_JSON: &str = "application/scim+json";
const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// How many distinct error bodies are kept and printed.
const MAX_ERROR_SAMPLES: usize = 8;
/// Error bodies are cut to this many characters.
const MAX_ERROR_BODY: usize = 300;

mod cpu;
mod delivery;
mod reconcile;
mod soak;

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    args_conflicts_with_subcommands = true,
    about = "Load generator for the scimsync SCIM 2.0 daemon",
    long_about = "Load generator for the scimsync SCIM 2.0 daemon.\n\n\
        By default it starts target/release/scimsync itself (build it first with \
        `cargo build --release --bin scimsync`) with a throwaway config and data dir. \
        With --url and --token it targets an already running daemon instead.\n\n\
        `loadgen delivery` measures delivery to the downstream app instead (see \
        `loadgen delivery --help`); `loadgen reconcile` measures the full sync's diff \
        (see `loadgen reconcile --help`)."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    bench: Args,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// End-to-end delivery: IdP push -> daemon -> outbox -> app; throughput and
    /// latency from the daemon's 2xx to the app's acknowledgement
    Delivery(delivery::DeliveryArgs),
    /// Reconciliation at scale, in process: a store of N users and G groups diffed
    /// against an app listing with injected drift; wall time and peak memory
    Reconcile(reconcile::ReconcileArgs),
    /// Writes against a growing history: PATCH and lookup rounds for N minutes, printing
    /// throughput, p99, RSS and store size per minute (flat is the goal)
    Soak(soak::SoakArgs),
}

#[derive(clap::Args, Debug)]
struct Args {
    /// Daemon binary to start [default: target/release/scimsync]
    #[arg(long, value_name = "PATH", conflicts_with = "url")]
    bin: Option<PathBuf>,

    /// Base URL of an already running daemon, e.g. http://127.0.0.1:8080/scim/v2
    #[arg(long, value_name = "BASE", requires = "token")]
    url: Option<String>,

    /// Bearer token for --url
    #[arg(long, value_name = "T", requires = "url")]
    token: Option<String>,

    /// Concurrent workers (and at most as many HTTP connections)
    #[arg(long, value_name = "N", default_value_t = 32)]
    connections: usize,

    /// Users to create (phase create_users)
    #[arg(long, value_name = "N", default_value_t = 20000)]
    users: usize,

    /// Requests in each of the lookup_username and patch_users phases
    #[arg(long, value_name = "N", default_value_t = 20000)]
    ops: usize,

    /// Members to add to one group, one per request (capped at the users created)
    #[arg(long, value_name = "N", default_value_t = 10000)]
    group_members: usize,

    /// Page requests (count=100) in phase list_pages
    #[arg(long, value_name = "N", default_value_t = 2000)]
    pages: usize,

    /// Width of the group-size buckets in the group_add_members breakdown
    #[arg(long, value_name = "N", default_value_t = 1000)]
    bucket_size: usize,

    /// First user number i (userName user{i}@example.com); use a fresh range
    /// when running repeatedly against the same --url daemon
    #[arg(long, value_name = "N", default_value_t = 0)]
    user_offset: usize,

    /// Seed for the random picks in the lookup/patch/page phases
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,

    /// Per-request timeout in seconds (a timeout counts as an error)
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    timeout: u64,

    /// Print only the final JSON line on stdout
    #[arg(long)]
    json: bool,

    /// Forward the started daemon's stdout/stderr to stderr (it logs every
    /// non-2xx request at warn level, so this can be a lot)
    #[arg(long, conflicts_with = "url")]
    daemon_output: bool,

    /// Store the started daemon runs on: `sqlite` (the embedded default) or `postgres` (a
    /// throw-away cluster on loopback with default settings, started and removed by loadgen;
    /// Debian's postgresql, scripts/pg-env.sh)
    #[arg(long, value_name = "KIND", default_value = "sqlite", conflicts_with = "url")]
    store: String,
}

/// `[store]` keys for every daemon this run starts (the `--store` choice), set once in
/// `real_main` before the first start.
static STORE_TOML: std::sync::OnceLock<String> = std::sync::OnceLock::new();

// ---------------------------------------------------------------------------
// Error collection

#[derive(Default)]
struct ErrorLog {
    samples: Vec<ErrorSample>,
    /// Errors whose text was not among the kept samples.
    other: usize,
}

struct ErrorSample {
    phase: &'static str,
    text: String,
    count: usize,
}

type Errors = Arc<Mutex<ErrorLog>>;

fn record_error(errors: &Errors, phase: &'static str, text: String) {
    let mut log = errors.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = log.samples.iter_mut().find(|s| s.phase == phase && s.text == text) {
        s.count += 1;
    } else if log.samples.len() < MAX_ERROR_SAMPLES {
        log.samples.push(ErrorSample { phase, text, count: 1 });
    } else {
        log.other += 1;
    }
}

// ---------------------------------------------------------------------------
// HTTP helpers

fn truncate(s: &str, max: usize) -> String {
    let s = s.trim();
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn transport_error(what: &str, e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect error"
    } else {
        "transport error"
    };
    let e = e.without_url();
    // The source chain (hyper/io details) is where the actual cause is.
    append_sources(format!("{what}: {kind}: {e}"), &e)
}

fn append_sources(mut msg: String, e: &reqwest::Error) -> String {
    let mut cur = std::error::Error::source(e);
    while let Some(s) = cur {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg.push_str(": ");
            msg.push_str(&t);
        }
        cur = s.source();
    }
    msg
}

/// Sends a request, reads the whole body, and checks the status against
/// `expect`. `what` names the request in error messages (no per-request ids,
/// so identical failures collapse into one sample).
async fn send(req: reqwest::RequestBuilder, what: &str, expect: &[u16]) -> Result<Vec<u8>, String> {
    let resp = req.send().await.map_err(|e| transport_error(what, e))?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| transport_error(what, e))?.to_vec();
    if expect.contains(&status.as_u16()) {
        Ok(body)
    } else {
        Err(format!(
            "{what}: HTTP {} (expected {}): {}",
            status.as_u16(),
            expect.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("/"),
            truncate(&String::from_utf8_lossy(&body), MAX_ERROR_BODY)
        ))
    }
}

fn parse_json(what: &str, body: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(body).map_err(|e| {
        format!("{what}: response is not JSON ({e}): {}", truncate(&String::from_utf8_lossy(body), MAX_ERROR_BODY))
    })
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn pct_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// splitmix64: a stateless, deterministic "random" number per (seed, i).
fn rand_at(seed: u64, i: usize) -> u64 {
    let mut z = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------------------
// Phases

struct Sample {
    index: usize,
    latency: Duration,
    ok: bool,
}

struct PhaseResult {
    name: &'static str,
    elapsed: Duration,
    samples: Vec<Sample>,
}

#[derive(Clone, Copy)]
struct Stats {
    requests: usize,
    errors: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn stats<'a>(samples: impl Iterator<Item = &'a Sample>) -> Stats {
    let mut lat = Vec::new();
    let mut errors = 0;
    for s in samples {
        lat.push(s.latency);
        if !s.ok {
            errors += 1;
        }
    }
    lat.sort_unstable();
    // Nearest-rank percentile.
    let pct = |p: f64| -> Duration {
        if lat.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * lat.len() as f64).ceil() as usize;
        lat[rank.clamp(1, lat.len()) - 1]
    };
    Stats { requests: lat.len(), errors, p50: pct(50.0), p99: pct(99.0), max: lat.last().copied().unwrap_or_default() }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Runs `total` requests `f(0..total)` with `workers` concurrent workers that
/// take request indices from a shared counter.
async fn run_phase<F, Fut>(name: &'static str, total: usize, workers: usize, errors: &Errors, f: F) -> PhaseResult
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    run_phase_paced(name, total, workers, None, errors, f).await
}

/// [`run_phase`], optionally paced: with `rate` (requests per second), request
/// `i` is not sent before `start + i / rate`. The wait is not part of its latency.
async fn run_phase_paced<F, Fut>(
    name: &'static str,
    total: usize,
    workers: usize,
    rate: Option<f64>,
    errors: &Errors,
    f: F,
) -> PhaseResult
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let rate = rate.filter(|r| r.is_finite() && *r > 0.0);
    let f = Arc::new(f);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..workers.clamp(1, total.max(1)) {
        let f = Arc::clone(&f);
        let next = Arc::clone(&next);
        let errors = Arc::clone(errors);
        handles.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    break;
                }
                if let Some(r) = rate {
                    tokio::time::sleep_until((start + Duration::from_secs_f64(index as f64 / r)).into()).await;
                }
                let t0 = Instant::now();
                let res = f(index).await;
                let latency = t0.elapsed();
                let ok = match res {
                    Ok(()) => true,
                    Err(e) => {
                        record_error(&errors, name, e);
                        false
                    }
                };
                samples.push(Sample { index, latency, ok });
            }
            samples
        }));
    }
    let mut samples = Vec::with_capacity(total);
    for h in handles {
        match h.await {
            Ok(s) => samples.extend(s),
            Err(e) => record_error(errors, name, format!("worker task failed: {e}")),
        }
    }
    PhaseResult { name, elapsed: start.elapsed(), samples }
}

struct Reporter {
    json_only: bool,
    phases: Vec<Value>,
    buckets: Vec<Value>,
    /// The spawned daemon's pid, to charge each phase its CPU time (none for `--url`).
    cpu_pid: Option<u32>,
    /// The daemon's CPU time when the current phase started.
    cpu_mark: Option<cpu::CpuTime>,
}

impl Reporter {
    fn new(json_only: bool, cpu_pid: Option<u32>) -> Self {
        Reporter {
            json_only,
            phases: Vec::new(),
            buckets: Vec::new(),
            cpu_pid,
            cpu_mark: cpu_pid.and_then(cpu::sample),
        }
    }

    /// A phase starts now: its CPU time is counted from here.
    fn mark(&mut self) {
        self.cpu_mark = self.cpu_pid.and_then(cpu::sample);
    }

    fn line(&self, s: impl AsRef<str>) {
        if self.json_only {
            eprintln!("{}", s.as_ref());
        } else {
            println!("{}", s.as_ref());
        }
    }

    /// Report a finished phase; with a spawned daemon, also its CPU time per request since
    /// [`Reporter::mark`] (or the previous phase): whole process / writer thread.
    fn phase(&mut self, p: &PhaseResult) {
        let st = stats(p.samples.iter());
        let secs = p.elapsed.as_secs_f64();
        let rps = if secs > 0.0 { st.requests as f64 / secs } else { 0.0 };
        let now = self.cpu_pid.and_then(cpu::sample);
        let cpu = self.cpu_mark.zip(now).map(|(a, b)| a.us_per_request(&b, st.requests));
        self.cpu_mark = now;
        if !self.json_only {
            println!(
                "{:<18} requests {:>7}  errors {:>6}  {:>9.1} req/s  p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms{}",
                p.name,
                st.requests,
                st.errors,
                rps,
                ms(st.p50),
                ms(st.p99),
                ms(st.max),
                cpu.map(|(t, w)| format!("  cpu/req {t:>6.1} us (writer {w:>5.1} us)")).unwrap_or_default()
            );
        }
        self.phases.push(json!({
            "cpu_us_per_req": cpu.map(|c| round2(c.0)),
            "writer_cpu_us_per_req": cpu.map(|c| round2(c.1)),
            "phase": p.name,
            "requests": st.requests,
            "errors": st.errors,
            "elapsed_s": round2(secs),
            "rps": round2(rps),
            "p50_ms": round2(ms(st.p50)),
            "p99_ms": round2(ms(st.p99)),
            "max_ms": round2(ms(st.max)),
        }));
    }

    fn buckets(&mut self, p: &PhaseResult, width: usize) {
        let width = width.max(1);
        let total = p.samples.iter().map(|s| s.index + 1).max().unwrap_or(0);
        let nbuckets = total.div_ceil(width);
        for b in 0..nbuckets {
            let (from, to) = (b * width, ((b + 1) * width).min(total));
            let st = stats(p.samples.iter().filter(|s| s.index >= from && s.index < to));
            if !self.json_only {
                println!(
                    "  members {:>6}-{:<6}  requests {:>7}  errors {:>6}  p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
                    from,
                    to,
                    st.requests,
                    st.errors,
                    ms(st.p50),
                    ms(st.p99),
                    ms(st.max)
                );
            }
            self.buckets.push(json!({
                "members_from": from,
                "members_to": to,
                "requests": st.requests,
                "errors": st.errors,
                "p50_ms": round2(ms(st.p50)),
                "p99_ms": round2(ms(st.p99)),
                "max_ms": round2(ms(st.max)),
            }));
        }
    }
}

// ---------------------------------------------------------------------------
// Daemon management

struct Daemon {
    child: tokio::process::Child,
    pid: u32,
    log: DaemonLog,
    /// The binary and its config, for CLI calls (`outbox list`) against the same data dir.
    bin: PathBuf,
    cfg: PathBuf,
    _dir: tempfile::TempDir,
}

/// The daemon's stdout and stderr: forwarded to our stderr with `--daemon-output`,
/// otherwise only counted, with the last lines kept for error messages.
#[derive(Clone)]
struct DaemonLog {
    /// Prefix of forwarded and quoted lines, e.g. `scimsync`.
    name: &'static str,
    forward: bool,
    inner: Arc<Mutex<(VecDeque<String>, usize)>>,
}

const DAEMON_LOG_TAIL: usize = 50;

impl DaemonLog {
    fn new(name: &'static str, forward: bool) -> Self {
        Self { name, forward, inner: Arc::default() }
    }

    fn push(&self, line: String) {
        if self.forward {
            eprintln!("[{}] {line}", self.name);
        }
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.0.len() == DAEMON_LOG_TAIL {
            g.0.pop_front();
        }
        g.0.push_back(line);
        g.1 += 1;
    }

    fn drain<R: tokio::io::AsyncRead + Unpin + Send + 'static>(&self, r: R) {
        let log = self.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                log.push(l);
            }
        });
    }

    fn lines(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).1
    }

    fn tail(&self) -> String {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0.iter().map(|l| format!("  [{}] {l}", self.name)).collect::<Vec<_>>().join("\n")
    }
}

fn default_bin() -> PathBuf {
    let rel = Path::new("target/release/scimsync");
    if rel.exists() {
        return rel.to_path_buf();
    }
    // Built into the same target dir as loadgen (also with CARGO_TARGET_DIR set).
    if let Some(sib) = std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join("scimsync")))
        && sib.is_file()
    {
        return sib;
    }
    // `cargo run -p scimsync-bench` from anywhere: the workspace target dir.
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/scimsync");
    if ws.exists() {
        return ws;
    }
    rel.to_path_buf()
}

fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Starts the daemon with a throwaway config; `extra_cfg` (TOML) is appended to it.
async fn start_daemon(bin: &Path, forward: bool, extra_cfg: &str) -> Result<(Daemon, String, String)> {
    if !bin.is_file() {
        bail!(
            "daemon binary {} not found.\n\
             Build it first with:  cargo build --release --bin scimsync\n\
             (or pass --bin PATH, or --url BASE --token T for a running daemon)",
            bin.display()
        );
    }
    let bin = bin.canonicalize().with_context(|| format!("resolving {}", bin.display()))?;
    let dir = tempfile::Builder::new().prefix("scimsync-bench-").tempdir().context("creating temp dir")?;
    let data_dir = dir.path().join("data");
    let cfg_path = dir.path().join("scimsync.toml");
    let cfg = format!(
        // The per-token rate limit is off: the bench measures capacity, not the limiter.
        "[server]\nlisten = \"127.0.0.1:0\"\n[server.rate_limit]\nrequests_per_second = 0\n[store]\ndata_dir = {}\n{}[log]\nlevel = \"warn\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{extra_cfg}",
        toml_str(&data_dir.to_string_lossy()),
        STORE_TOML.get().map(String::as_str).unwrap_or_default()
    );
    std::fs::write(&cfg_path, cfg).context("writing config")?;

    // 1. Token.
    let out = tokio::process::Command::new(&bin)
        .args(["token", "create", "--config"])
        .arg(&cfg_path)
        .args(["--label", "bench"])
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {} token create", bin.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "`{} token create` failed ({}):\nstdout: {}\nstderr: {}",
            bin.display(),
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let token = stdout
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .context("`token create` printed no token on stdout")?
        .to_string();

    // 2. Serve.
    let mut child = tokio::process::Command::new(&bin)
        .arg("serve")
        .arg("--config")
        .arg(&cfg_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning {} serve", bin.display()))?;
    let pid = child.id().context("daemon exited immediately")?;

    let log = DaemonLog::new("scimsync", forward);
    log.drain(child.stderr.take().expect("piped stderr"));

    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    // The listening line, then `scimsync ready` once the store is open (on PostgreSQL the
    // listeners answer 503 "starting" until then).
    let mut listening: Option<String> = None;
    let base = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, lines.next_line()).await {
            Err(_) => bail!(
                "daemon did not print `scimsync listening on ...` and `scimsync ready` within 30 s; its output so far:\n{}",
                log.tail()
            ),
            Ok(Err(e)) => bail!("reading daemon stdout: {e}"),
            Ok(Ok(None)) => {
                let status = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                // Let the stderr reader catch up so the reason is in the tail.
                tokio::time::sleep(Duration::from_millis(200)).await;
                bail!(
                    "daemon exited before listening (status: {}); its output:\n{}",
                    match status {
                        Ok(Ok(s)) => s.to_string(),
                        _ => "unknown".into(),
                    },
                    log.tail()
                )
            }
            Ok(Ok(Some(l))) => {
                if l.trim() == "scimsync ready"
                    && let Some(base) = listening.take()
                {
                    break base;
                }
                if listening.is_none()
                    && let Some(pos) = l.find("scimsync listening on ")
                {
                    listening =
                        Some(l[pos + "scimsync listening on ".len()..].trim().trim_end_matches('/').to_string());
                    continue;
                }
                log.push(l);
            }
        }
    };
    // Keep draining stdout so the daemon never blocks on a full pipe.
    log.drain(lines.into_inner());

    Ok((Daemon { child, pid, log, bin, cfg: cfg_path, _dir: dir }, base, token))
}

/// Peak resident set size (VmHWM) in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

impl Daemon {
    /// The daemon's data directory (the store and its WAL).
    fn data_dir(&self) -> PathBuf {
        self._dir.path().join("data")
    }
}

async fn stop_daemon(mut d: Daemon) {
    let _ = d.child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(5), d.child.wait()).await;
    // TempDir removed on drop.
}

// ---------------------------------------------------------------------------
// The benchmark

struct Ctx {
    client: reqwest::Client,
    base: Arc<str>,
    errors: Errors,
}

async fn run_bench(args: &Args, ctx: &Ctx, rep: &mut Reporter) -> Result<Value> {
    let conns = args.connections.max(1);
    let mut extra = serde_json::Map::new();

    // 1. create_users
    let ids: Arc<Vec<OnceLock<String>>> = Arc::new((0..args.users).map(|_| OnceLock::new()).collect());
    {
        let (client, base, ids, off) = (ctx.client.clone(), ctx.base.clone(), ids.clone(), args.user_offset);
        rep.mark();
        let p = run_phase("create_users", args.users, conns, &ctx.errors, move |k| {
            let (client, base, ids) = (client.clone(), base.clone(), ids.clone());
            async move {
                let body = user_body(k + off);
                let what = "POST /Users";
                let resp = send(client.post(format!("{base}/Users")).body(body.to_string()), what, &[201]).await?;
                let v = parse_json(what, &resp)?;
                match v.get("id").and_then(Value::as_str) {
                    Some(id) => {
                        let _ = ids[k].set(id.to_string());
                        Ok(())
                    }
                    None => Err(format!(
                        "{what}: 201 without a string \"id\": {}",
                        truncate(&String::from_utf8_lossy(&resp), MAX_ERROR_BODY)
                    )),
                }
            }
        })
        .await;
        rep.phase(&p);
    }
    // (user number i, id) of the users that exist.
    let users: Arc<Vec<(usize, String)>> = Arc::new(
        ids.iter().enumerate().filter_map(|(k, id)| id.get().map(|id| (k + args.user_offset, id.clone()))).collect(),
    );
    extra.insert("users_created".into(), json!(users.len()));
    if users.is_empty() {
        rep.line("no users were created; skipping the remaining phases");
        return Ok(Value::Object(extra));
    }

    // 2. lookup_username
    {
        let (client, base, users, seed) = (ctx.client.clone(), ctx.base.clone(), users.clone(), args.seed);
        rep.mark();
        let p = run_phase("lookup_username", args.ops, conns, &ctx.errors, move |k| {
            let (client, base) = (client.clone(), base.clone());
            let i = users[(rand_at(seed ^ 0x10, k) % users.len() as u64) as usize].0;
            async move {
                let filter = format!("userName eq \"user{i}@example.com\"");
                let what = "GET /Users?filter=userName eq";
                let resp =
                    send(client.get(format!("{base}/Users?filter={}", pct_encode(&filter))), what, &[200]).await?;
                let v = parse_json(what, &resp)?;
                match v.get("totalResults").and_then(Value::as_u64) {
                    Some(1) => Ok(()),
                    other => Err(format!(
                        "{what}: totalResults {} (expected 1)",
                        other.map_or("missing".to_string(), |n| n.to_string())
                    )),
                }
            }
        })
        .await;
        rep.phase(&p);
    }

    // 3. patch_users
    {
        let (client, base, users, seed) = (ctx.client.clone(), ctx.base.clone(), users.clone(), args.seed);
        rep.mark();
        let p = run_phase("patch_users", args.ops, conns, &ctx.errors, move |k| {
            let client = client.clone();
            let id = &users[(rand_at(seed ^ 0x20, k) % users.len() as u64) as usize].1;
            let url = format!("{base}/Users/{id}");
            // Alternate: users start active, so the first patch sets false.
            let body = json!({
                "schemas": [PATCH_SCHEMA],
                "Operations": [{"op": "replace", "path": "active", "value": k % 2 == 1}]
            });
            async move { send(client.patch(url).body(body.to_string()), "PATCH /Users/{id}", &[200]).await.map(|_| ()) }
        })
        .await;
        rep.phase(&p);
    }

    // 4. list_pages
    {
        let (client, base, n, seed) = (ctx.client.clone(), ctx.base.clone(), users.len(), args.seed);
        rep.mark();
        let p = run_phase("list_pages", args.pages, conns, &ctx.errors, move |k| {
            let client = client.clone();
            let start = 1 + rand_at(seed ^ 0x30, k) % n as u64;
            let url = format!("{base}/Users?startIndex={start}&count=100");
            async move { send(client.get(url), "GET /Users?startIndex&count=100", &[200]).await.map(|_| ()) }
        })
        .await;
        rep.phase(&p);
    }

    // 4b. list_positions: what a page costs at the start and at the end of the directory, one
    // request at a time (median of 25), and a whole walk by index and by cursor (RFC 9865),
    // as an IdP importing every user does.
    {
        let n = users.len() as u64;
        let timed = |url: String| {
            let client = ctx.client.clone();
            async move {
                let mut ms = Vec::with_capacity(25);
                for _ in 0..25 {
                    let t = std::time::Instant::now();
                    send(client.get(&url), "GET /Users page", &[200]).await?;
                    ms.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                ms.sort_by(f64::total_cmp);
                Ok::<f64, String>(ms[ms.len() / 2])
            }
        };
        let base = &ctx.base;
        let last_start = n.saturating_sub(99).max(1);
        let positions = async {
            let first = timed(format!("{base}/Users?startIndex=1&count=100")).await?;
            let last = timed(format!("{base}/Users?startIndex={last_start}&count=100")).await?;
            let t = std::time::Instant::now();
            let (mut start, mut index_pages) = (1u64, 0u64);
            while start <= n {
                send(ctx.client.get(format!("{base}/Users?startIndex={start}&count=100")), "walk by index", &[200])
                    .await?;
                index_pages += 1;
                start += 100;
            }
            let index_secs = t.elapsed().as_secs_f64();
            let t = std::time::Instant::now();
            let (mut cursor, mut cursor_pages, mut seen) = (String::new(), 0u64, 0u64);
            loop {
                let what = "walk by cursor";
                let body =
                    send(ctx.client.get(format!("{base}/Users?count=100&cursor={cursor}")), what, &[200]).await?;
                let v = parse_json(what, &body)?;
                cursor_pages += 1;
                seen += v["Resources"].as_array().map_or(0, |a| a.len() as u64);
                match v["nextCursor"].as_str() {
                    Some(c) => cursor = c.to_string(),
                    None => break,
                }
            }
            let cursor_secs = t.elapsed().as_secs_f64();
            Ok::<_, String>((first, last, index_pages, index_secs, cursor_pages, cursor_secs, seen))
        };
        match positions.await {
            Ok((first, last, index_pages, index_secs, cursor_pages, cursor_secs, seen)) => {
                rep.line(format!(
                    "list_positions  first page p50 {first:.2} ms, last page (startIndex={last_start}) p50 {last:.2} ms"
                ));
                rep.line(format!(
                    "list_walk       by index {index_pages} pages in {index_secs:.2} s ({:.0} pages/s), by cursor \
                     {cursor_pages} pages in {cursor_secs:.2} s ({:.0} pages/s, {seen} users)",
                    index_pages as f64 / index_secs,
                    cursor_pages as f64 / cursor_secs
                ));
                extra.insert(
                    "list_positions".into(),
                    json!({"first_page_p50_ms": round2(first), "last_page_p50_ms": round2(last),
                           "walk_index_pages": index_pages, "walk_index_pages_per_s": round2(index_pages as f64 / index_secs),
                           "walk_cursor_pages": cursor_pages, "walk_cursor_pages_per_s": round2(cursor_pages as f64 / cursor_secs),
                           "walk_cursor_users": seen}),
                );
            }
            Err(e) => {
                rep.line(format!("list_positions failed: {e}"));
                record_error(&ctx.errors, "list_positions", e);
            }
        }
    }

    // 5. group_add_members
    let members = args.group_members.min(users.len());
    let what = "POST /Groups";
    let created = async {
        let resp = send(
            ctx.client
                .post(format!("{}/Groups", ctx.base))
                .body(json!({"schemas": [GROUP_SCHEMA], "displayName": "bench-big"}).to_string()),
            what,
            &[201],
        )
        .await?;
        let v = parse_json(what, &resp)?;
        v.get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("{what}: 201 without a string \"id\""))
    }
    .await;
    let gid = match created {
        Ok(gid) => gid,
        Err(e) => {
            rep.line(format!("group create failed, skipping group_add_members: {e}"));
            record_error(&ctx.errors, "group_add_members", e);
            return Ok(Value::Object(extra));
        }
    };
    let failed_adds = {
        let (client, base, users, gid2) = (ctx.client.clone(), ctx.base.clone(), users.clone(), gid.clone());
        let url: Arc<str> = format!("{base}/Groups/{gid2}").into();
        rep.mark();
        let p = run_phase("group_add_members", members, conns, &ctx.errors, move |k| {
            let (client, url) = (client.clone(), url.clone());
            let body = json!({
                "schemas": [PATCH_SCHEMA],
                "Operations": [{"op": "add", "path": "members", "value": [{"value": users[k].1}]}]
            });
            async move {
                send(client.patch(&*url).body(body.to_string()), "PATCH /Groups/{id} add member", &[200, 204])
                    .await
                    .map(|_| ())
            }
        })
        .await;
        rep.phase(&p);
        rep.buckets(&p, args.bucket_size);
        stats(p.samples.iter()).errors
    };
    // Sanity check (not timed): did every add land?
    let check = send(ctx.client.get(format!("{}/Groups/{gid}", ctx.base)), "GET /Groups/{id}", &[200])
        .await
        .and_then(|b| parse_json("GET /Groups/{id}", &b));
    match check {
        Ok(v) => {
            let n = v.get("members").and_then(Value::as_array).map_or(0, |m| m.len());
            // Each successful add added a distinct user, so anything else means
            // lost or duplicated updates.
            let ok_adds = members - failed_adds;
            let flag = if n == ok_adds { "" } else { "  <-- MISMATCH" };
            rep.line(format!("group bench-big has {n} members ({ok_adds} of {members} adds succeeded){flag}"));
            extra.insert("group_members_final".into(), json!(n));
            extra.insert("group_adds_succeeded".into(), json!(ok_adds));
        }
        Err(e) => {
            rep.line(format!("could not read back the group: {e}"));
            record_error(&ctx.errors, "group_check", e);
        }
    }
    extra.insert("group_members_expected".into(), json!(members));
    Ok(Value::Object(extra))
}

fn main() -> std::process::ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: error: starting the tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let res = match cli.cmd {
        Some(Cmd::Delivery(d)) => rt.block_on(delivery::run(d)),
        Some(Cmd::Reconcile(r)) => rt.block_on(reconcile::run(r)),
        Some(Cmd::Soak(a)) => rt.block_on(soak::run(a)),
        None => rt.block_on(real_main(cli.bench)),
    };
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The IdP side's HTTP client: bearer token, SCIM content type, one pool.
fn idp_client(token: &str, connections: usize, timeout_secs: u64) -> Result<reqwest::Client> {
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).context("token is not a valid header value")?,
    );
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
    reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(connections.max(1))
        .timeout(Duration::from_secs(timeout_secs.max(1)))
        .build()
        .context("building HTTP client")
}

/// The user the IdP pushes as number `i` (also used by `delivery`).
fn user_body(i: usize) -> Value {
    json!({
        "schemas": [USER_SCHEMA],
        "userName": format!("user{i}@example.com"),
        "externalId": format!("ext-{i}"),
        "name": {"givenName": format!("G{i}"), "familyName": format!("F{i}")},
        "emails": [{"value": format!("user{i}@example.com"), "type": "work", "primary": true}],
        "active": true
    })
}

async fn real_main(args: Args) -> Result<()> {
    // Kept until the end of the run: dropping it stops the cluster.
    let pg = match args.store.as_str() {
        "sqlite" => None,
        "postgres" => {
            let pg = testpg::TestPg::start()
                .map_err(|e| anyhow::anyhow!("a PostgreSQL cluster for --store postgres: {e}"))?;
            let db = pg.create_database().map_err(|e| anyhow::anyhow!("{e}"))?;
            let _ =
                STORE_TOML.set(format!("backend = \"postgres\"\n[store.postgres]\nurl = {}\n", toml_str(&pg.url(&db))));
            Some((pg, db))
        }
        other => bail!("--store {other}: sqlite or postgres"),
    };
    let (daemon, base, token) = match (&args.url, &args.token) {
        (Some(url), Some(token)) => (None, url.trim_end_matches('/').to_string(), token.clone()),
        _ => {
            let bin = args.bin.clone().unwrap_or_else(default_bin);
            let (d, base, token) = start_daemon(&bin, args.daemon_output, "").await?;
            (Some(d), base, token)
        }
    };

    let client = idp_client(&token, args.connections, args.timeout)?;

    let ctx = Ctx { client, base: base.clone().into(), errors: Arc::default() };
    let mut rep = Reporter::new(args.json, daemon.as_ref().map(|d| d.pid));
    rep.line(format!(
        "scimsync bench: {base}  connections={} users={} ops={} pages={} group_members={}",
        args.connections, args.users, args.ops, args.pages, args.group_members
    ));

    let result = run_bench(&args, &ctx, &mut rep).await;

    let rss_kib = daemon.as_ref().and_then(|d| peak_rss_kib(d.pid));
    // The store and its WAL after the run (issue 19 asks what a million users cost on disk).
    let store_mb = daemon.as_ref().map(|d| {
        let bytes: u64 = ["scimsync.db", "scimsync.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(d.data_dir().join(f)).ok())
            .map(|m| m.len())
            .sum();
        round2(bytes as f64 / 1_048_576.0)
    });
    // On PostgreSQL: the database's size as the server counts it (tables, indexes, TOAST).
    let store_mb = match &pg {
        Some((pg, db)) => pg
            .psql(db, "SELECT pg_database_size(current_database())")
            .ok()
            .and_then(|b| b.trim().parse::<u64>().ok())
            .map(|b| round2(b as f64 / 1_048_576.0)),
        None => store_mb,
    };
    let daemon_log_lines = daemon.as_ref().map(|d| d.log.lines());
    if let Some(d) = daemon {
        stop_daemon(d).await;
    }
    let extra = result?;

    let rss_mb = rss_kib.map(|k| round2(k as f64 / 1024.0));
    match rss_mb {
        Some(mb) => rep.line(format!("daemon peak RSS: {mb:.1} MB")),
        None if args.url.is_some() => rep.line("daemon peak RSS: n/a (external daemon)"),
        None => rep.line("daemon peak RSS: n/a (could not read /proc/PID/status)"),
    }

    if let Some(mb) = store_mb {
        rep.line(format!("store size (database + WAL): {mb:.1} MB"));
    }

    if let Some(n) = daemon_log_lines.filter(|&n| n > 0 && !args.daemon_output) {
        rep.line(format!("daemon wrote {n} log lines (see them with --daemon-output)"));
    }

    let log = ctx.errors.lock().unwrap_or_else(|e| e.into_inner());
    let mut error_samples = Vec::new();
    if !log.samples.is_empty() {
        rep.line("first distinct errors:");
        for s in &log.samples {
            rep.line(format!("  [{}] x{} {}", s.phase, s.count, s.text));
            error_samples.push(json!({"phase": s.phase, "count": s.count, "error": s.text}));
        }
        if log.other > 0 {
            rep.line(format!("  ... and {} more errors of other kinds", log.other));
        }
    }

    let out = json!({
        "bench": "scimsync",
        "target": if args.url.is_some() { "external" } else { "spawned" },
        "connections": args.connections,
        "users": args.users,
        "ops": args.ops,
        "pages": args.pages,
        "group_members": args.group_members,
        "phases": rep.phases,
        "group_buckets": rep.buckets,
        "summary": extra,
        "daemon_peak_rss_mb": rss_mb,
        "store_mb": store_mb,
        "error_samples": error_samples,
    });
    println!("{out}");
    Ok(())
}
