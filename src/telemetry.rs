//! Logging set-up (tracing-subscriber): readable text by default, JSON lines by config,
//! always to stderr so that stdout carries only what a script may read (the first-run token,
//! the listening line, `token create` output); and every metric's name and registry (below).
//!
//! Owns: the log subscriber, metric names, the registry, one helper per notable event.
//! Must not touch: the store or HTTP; callers hand in what they measured.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Install the global subscriber. `RUST_LOG`, when set, overrides `log.level` (a debugging
/// aid that needs no config edit).
pub fn init(cfg: &LogConfig) {
    let from_env = std::env::var("RUST_LOG").ok().and_then(|v| EnvFilter::try_new(v).ok());
    let overridden = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| EnvFilter::try_new(&cfg.level).unwrap_or_else(|_| EnvFilter::new("info")));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // The handle's type names the formatter, which differs between text and JSON: keep a
    // closure that swaps the filter instead.
    let reload: LogReload = match cfg.format {
        LogFormat::Json => {
            let b = builder.json().flatten_event(true).with_current_span(false).with_filter_reloading();
            let h = b.reload_handle();
            if b.try_init().is_err() {
                return;
            }
            Box::new(move |f| h.reload(f).map_err(|e| e.to_string()))
        }
        LogFormat::Text => {
            let b = builder.with_ansi(false).with_filter_reloading();
            let h = b.reload_handle();
            if b.try_init().is_err() {
                return;
            }
            Box::new(move |f| h.reload(f).map_err(|e| e.to_string()))
        }
    };
    let _ = LOG_RELOAD.set((reload, overridden));
}

type LogReload = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// How to swap the log filter, and whether `RUST_LOG` pinned it at start.
static LOG_RELOAD: std::sync::OnceLock<(LogReload, bool)> = std::sync::OnceLock::new();

/// What [`set_log_level`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum LogLevelChange {
    Applied,
    /// `RUST_LOG` was set at start and keeps precedence over `log.level`.
    PinnedByRustLog,
}

/// Swap the log filter of the running process (SIGHUP). The directive was validated with
/// the configuration.
pub fn set_log_level(level: &str) -> Result<LogLevelChange, String> {
    let Some((reload, pinned)) = LOG_RELOAD.get() else {
        return Err("logging was not initialised by this process".into());
    };
    if *pinned {
        return Ok(LogLevelChange::PinnedByRustLog);
    }
    let filter = EnvFilter::try_new(level).map_err(|e| format!("log.level {level:?}: {e}"))?;
    reload(filter).map(|()| LogLevelChange::Applied)
}

// ---------------------------------------------------------------------------------------
// Metrics. This module owns every metric's name, help text and the one registry; the rest
// of the crate moves them only through the helpers below, one per notable event, so names
// and label values stay bounded and in one place (vector's instrumentation spec: `_total`,
// `_seconds`, base units, bounded labels). Gauges that describe the store are set at scrape
// time from values the caller reads (see [`set_store_gauges`]), never kept up to date by
// hand.

use std::sync::atomic::AtomicU64;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// The content type of [`encode_metrics`]' output (OpenMetrics text, which Prometheus reads).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    target: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    /// The token id (8 hex digits, never the secret); bounded by the tokens an operator made.
    token: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    /// This node's id (one per process: bounded).
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

struct Metrics {
    registry: Registry,
    scim_requests: Family<RequestLabels, Counter>,
    scim_request_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    deliveries: Family<OutcomeLabels, Counter>,
    delivery_duration: Histogram,
    outbox_depth: Gauge,
    outbox_oldest_age: FloatGauge,
    outbox_dead: Gauge,
    database_size: Gauge,
    guard_held: Family<TargetLabels, Gauge>,
    rate_limited: Family<TokenLabels, Counter>,
    config_reloads: Family<OutcomeLabels, Counter>,
    sync_runs: Family<OutcomeLabels, Counter>,
    sync_duration: Histogram,
    sync_last_success: FloatGauge,
    drift_items: Family<KindLabels, Gauge>,
    ready: Gauge,
    node_leader: Family<NodeLabels, Gauge>,
    last_delivery: Mutex<Option<LastDelivery>>,
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~16 s: a SCIM request is milliseconds, a slow app's delivery seconds.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::default();
    let scim_requests = Family::<RequestLabels, Counter>::default();
    // The encoder appends `_total` to counters.
    registry.register(
        "scimsync_scim_requests",
        "SCIM API requests by templated route, method and status",
        scim_requests.clone(),
    );
    let scim_request_duration =
        Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
    registry.register(
        "scimsync_scim_request_duration_seconds",
        "SCIM API request latency by templated route, body read to response",
        scim_request_duration.clone(),
    );
    let deliveries = Family::<OutcomeLabels, Counter>::default();
    registry.register(
        "scimsync_deliveries",
        "Outbox deliveries by outcome: success, retry, dead, waiting (for a dependency)",
        deliveries.clone(),
    );
    let delivery_duration = latency_histogram();
    registry.register(
        "scimsync_delivery_duration_seconds",
        "Time to deliver one outbox bundle to the app, preparation included",
        delivery_duration.clone(),
    );
    let outbox_depth = Gauge::default();
    registry.register(
        "scimsync_outbox_depth",
        "Undelivered outbox rows (pending, retry, in flight)",
        outbox_depth.clone(),
    );
    let outbox_oldest_age = FloatGauge::default();
    registry.register(
        "scimsync_outbox_oldest_age_seconds",
        "Age of the oldest undelivered outbox row; 0 when the outbox is empty",
        outbox_oldest_age.clone(),
    );
    let outbox_dead = Gauge::default();
    registry.register(
        "scimsync_outbox_dead",
        "Dead-lettered outbox rows waiting for an operator (`scimsync outbox list --dead`)",
        outbox_dead.clone(),
    );
    let database_size = Gauge::default();
    registry.register(
        "scimsync_database_size_bytes",
        "Size of the SQLite database and its write-ahead log",
        database_size.clone(),
    );
    let guard_held = Family::<TargetLabels, Gauge>::default();
    registry.register(
        "scimsync_deletion_guard_held",
        "Deprovisioning changes held by the accidental-deletion guard, by target (release or discard with `scimsync outbox`)",
        guard_held.clone(),
    );
    let rate_limited = Family::<TokenLabels, Counter>::default();
    registry.register(
        "scimsync_rate_limited_requests",
        "SCIM API requests refused with 429 by the per-token rate limit, by token id",
        rate_limited.clone(),
    );
    let config_reloads = Family::<OutcomeLabels, Counter>::default();
    registry.register(
        "scimsync_config_reloads",
        "Configuration reloads on SIGHUP by outcome: success, error (the previous settings stay)",
        config_reloads.clone(),
    );
    let sync_runs = Family::<OutcomeLabels, Counter>::default();
    registry.register("scimsync_sync_runs", "Full sync runs by outcome: ok, failed", sync_runs.clone());
    // 10 ms .. ~20 min: a full sync lists the whole app.
    let sync_duration = Histogram::new(exponential_buckets(0.01, 2.0, 18));
    registry.register("scimsync_sync_duration_seconds", "Duration of full sync runs", sync_duration.clone());
    let sync_last_success = FloatGauge::default();
    registry.register(
        "scimsync_sync_last_success_timestamp_seconds",
        "Unix time the last successful full sync finished; 0 before the first",
        sync_last_success.clone(),
    );
    let drift_items = Family::<KindLabels, Gauge>::default();
    registry.register(
        "scimsync_drift_items",
        "Items of the latest drift report by kind (`scimsync drift`)",
        drift_items.clone(),
    );
    let ready = Gauge::default();
    registry.register(
        "scimsync_ready",
        "1 when the daemon is ready (what /readyz answers 200 for), 0 otherwise; set at each scrape",
        ready.clone(),
    );
    let node_leader = Family::<NodeLabels, Gauge>::default();
    registry.register(
        "scimsync_node_leader",
        "1 while this node leads the cluster (delivers, runs the scheduler and retention), 0 as a follower",
        node_leader.clone(),
    );
    registry.register(
        "scimsync_build",
        "The running scimsync's version",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );
    Metrics {
        registry,
        scim_requests,
        scim_request_duration,
        deliveries,
        delivery_duration,
        outbox_depth,
        outbox_oldest_age,
        outbox_dead,
        database_size,
        guard_held,
        node_leader,
        rate_limited,
        config_reloads,
        sync_runs,
        sync_duration,
        sync_last_success,
        drift_items,
        ready,
        last_delivery: Mutex::new(None),
    }
});

/// How one delivery ended, as far as metrics and readiness care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Success,
    Retry,
    Dead,
    /// Not sent: waiting for a dependency (a group member not provisioned yet).
    Waiting,
}

impl DeliveryOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Success => "success",
            DeliveryOutcome::Retry => "retry",
            DeliveryOutcome::Dead => "dead",
            DeliveryOutcome::Waiting => "waiting",
        }
    }
}

/// The most recent delivery that reached a verdict about the app (waiting ones do not).
#[derive(Debug, Clone)]
pub struct LastDelivery {
    pub outcome: DeliveryOutcome,
    /// RFC 3339.
    pub at: String,
}

/// A SCIM request was answered. `route` is the templated route (`/Users/{id}`), never a
/// raw path, so label values stay bounded.
pub fn scim_request(route: &'static str, method: &str, status: u16, elapsed: Duration) {
    let method = match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        _ => "other",
    };
    let m = &*METRICS;
    m.scim_requests.get_or_create(&RequestLabels { route, method, status }).inc();
    m.scim_request_duration.get_or_create(&RouteLabels { route }).observe(elapsed.as_secs_f64());
}

/// The outbox worker finished one delivery (the log line is the worker's: it has the ids).
pub fn delivery(outcome: DeliveryOutcome, elapsed: Duration) {
    let m = &*METRICS;
    m.deliveries.get_or_create(&OutcomeLabels { outcome: outcome.as_str() }).inc();
    m.delivery_duration.observe(elapsed.as_secs_f64());
    if outcome != DeliveryOutcome::Waiting
        && let Ok(mut l) = m.last_delivery.lock()
    {
        *l = Some(LastDelivery { outcome, at: crate::model::now() });
    }
}

/// A request was refused by the per-token rate limit (the request line logs it too).
pub fn rate_limited(token_id: &str) {
    METRICS.rate_limited.get_or_create(&TokenLabels { token: token_id.to_string() }).inc();
}

/// A SIGHUP reload finished (`ok`: the new settings are in force; otherwise the old stay).
pub fn config_reload(ok: bool) {
    METRICS.config_reloads.get_or_create(&OutcomeLabels { outcome: if ok { "success" } else { "error" } }).inc();
}

/// The last delivery with a verdict, for `/readyz` (no request to the app per probe).
pub fn last_delivery() -> Option<LastDelivery> {
    METRICS.last_delivery.lock().ok().and_then(|l| l.clone())
}

/// What the store looks like right now; read by the scrape handler.
#[derive(Debug, Clone, Default)]
pub struct StoreGauges {
    pub outbox_depth: u64,
    pub outbox_oldest_age: Duration,
    pub outbox_dead: u64,
    pub database_size_bytes: u64,
    /// (target kind, rows the deletion guard holds).
    pub guard_held: Option<(&'static str, u64)>,
}

pub fn set_store_gauges(g: &StoreGauges) {
    let m = &*METRICS;
    m.outbox_depth.set(g.outbox_depth.min(i64::MAX as u64) as i64);
    m.outbox_oldest_age.set(g.outbox_oldest_age.as_secs_f64());
    m.outbox_dead.set(g.outbox_dead.min(i64::MAX as u64) as i64);
    m.database_size.set(g.database_size_bytes.min(i64::MAX as u64) as i64);
    if let Some((target, held)) = g.guard_held {
        m.guard_held.get_or_create(&TargetLabels { target }).set(held.min(i64::MAX as u64) as i64);
    }
}

/// The readiness verdict, for alerting on "up but not ready" (Prometheus scrapes /metrics,
/// not /readyz): set by the scrape handler from the same checks as `/readyz`.
pub fn set_ready(ready: bool) {
    METRICS.ready.set(i64::from(ready));
}

/// This node became the cluster's leader (`true`) or a follower.
pub fn set_node_leader(node: &str, leader: bool) {
    METRICS.node_leader.get_or_create(&NodeLabels { node: node.to_string() }).set(i64::from(leader));
}

/// A full sync run ended. `drift`: the report's counts by kind (only for a run that got one).
pub fn sync_run(ok: bool, elapsed: Duration, drift: &[(&'static str, u64)]) {
    let m = &*METRICS;
    m.sync_runs.get_or_create(&OutcomeLabels { outcome: if ok { "ok" } else { "failed" } }).inc();
    m.sync_duration.observe(elapsed.as_secs_f64());
    if ok {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        m.sync_last_success.set(t.as_secs_f64());
        for (kind, n) in drift {
            m.drift_items.get_or_create(&KindLabels { kind }).set((*n).min(i64::MAX as u64) as i64);
        }
    }
}

/// Every metric in the text exposition format ([`METRICS_CONTENT_TYPE`]).
pub fn encode_metrics() -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &METRICS.registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_named_and_move() {
        // The registry is process-wide: a route no other test uses keeps the counts exact.
        scim_request("/Test/{id}", "GET", 200, Duration::from_millis(3));
        scim_request("/Test/{id}", "BREW", 405, Duration::from_millis(3));
        delivery(DeliveryOutcome::Retry, Duration::from_millis(30));
        set_store_gauges(&StoreGauges { outbox_depth: 7, ..Default::default() });
        rate_limited("0badc0de");
        config_reload(false);
        set_ready(true);
        let text = encode_metrics();
        for needle in [
            "scimsync_scim_requests_total{route=\"/Test/{id}\",method=\"GET\",status=\"200\"} 1",
            "scimsync_scim_requests_total{route=\"/Test/{id}\",method=\"other\",status=\"405\"} 1",
            "scimsync_scim_request_duration_seconds_count{route=\"/Test/{id}\"} 2",
            "scimsync_deliveries_total{outcome=\"retry\"} ",
            "scimsync_delivery_duration_seconds_count ",
            "scimsync_outbox_depth 7",
            "scimsync_outbox_oldest_age_seconds 0",
            "scimsync_outbox_dead 0",
            "scimsync_database_size_bytes 0",
            "scimsync_build_info{version=\"",
            "scimsync_rate_limited_requests_total{token=\"0badc0de\"} 1",
            "scimsync_config_reloads_total{outcome=\"error\"} 1",
            "scimsync_ready 1",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert!(last_delivery().is_some());
        assert!(text.ends_with("# EOF\n"), "an OpenMetrics exposition ends with # EOF");
    }
}
