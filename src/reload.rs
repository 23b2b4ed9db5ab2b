//! SIGHUP: read the configuration file (and environment) again, apply what can change in a
//! running daemon, log at `info` what changed, and warn about each changed setting that only
//! takes effect after a restart. A configuration that does not load or validate is refused
//! whole: the daemon keeps running with the settings it has, and says why.
//!
//! Changes live: `log.level`, `[server.rate_limit]`, the TLS certificate and key (the files
//! are read again on every SIGHUP, so a renewed certificate needs no config change), and the
//! outbox's retry and timing settings and deletion guard (not its concurrency or its rate
//! limit towards the app).
//! API tokens need no reload at all: they live in the store and are checked per request, so
//! `scimsync token create` / `revoke` take effect at once.
//!
//! Owns: deciding what a reload changes. Must not touch: signals (see `shutdown`), protocol
//! rules, SQL.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::rate_limit::RateLimits;
use crate::http::tls::CertStore;
use crate::outbox_worker::WorkerOptions;
use crate::store::Store;

/// Settings of the running daemon that a reload can change in place.
#[derive(Clone, Debug)]
pub struct Live {
    pub rate_limits: RateLimits,
    /// The SCIM listener's certificate; `None` when it serves plain HTTP.
    pub tls: Option<Arc<CertStore>>,
    /// The outbox worker's retry and timing settings.
    pub outbox: Arc<tokio::sync::watch::Sender<WorkerOptions>>,
}

impl Live {
    /// Build from the start-up configuration; errors name the key (a certificate that does
    /// not load).
    pub fn from_config(cfg: &Config) -> Result<Live, String> {
        let t = &cfg.server.tls;
        let tls = if t.enabled() { Some(Arc::new(CertStore::load(&t.cert_file, &t.key_file)?)) } else { None };
        let outbox = Arc::new(tokio::sync::watch::Sender::new(WorkerOptions::from_config(cfg)));
        Ok(Live { rate_limits: RateLimits::new(&cfg.server.rate_limit), tls, outbox })
    }
}

/// Keys whose new value is applied by a reload (a trailing `.` covers a whole section).
/// Everything else is reported as needing a restart.
const LIVE_KEYS: [&str; 13] = [
    "log.level",
    "server.rate_limit.requests_per_second",
    "server.rate_limit.burst",
    "server.tls.cert_file",
    "server.tls.key_file",
    "outbox.poll_interval_seconds",
    "outbox.lease_seconds",
    "outbox.max_attempts",
    "outbox.max_age_seconds",
    "outbox.retry_base_seconds",
    "outbox.retry_max_seconds",
    "outbox.retry_after_max_seconds",
    "outbox.deletion_guard.",
];

fn is_live(key: &str) -> bool {
    LIVE_KEYS.iter().any(|k| if k.ends_with('.') { key.starts_with(k) } else { key == *k })
}

/// Reload on every message from `hangups` until `shutdown`.
pub fn spawn(
    file: Option<PathBuf>,
    running: Config,
    live: Live,
    store: Store,
    mut hangups: mpsc::Receiver<()>,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        let mut running = running;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                msg = hangups.recv() => if msg.is_none() { return },
            }
            tracing::info!(file = ?file.as_ref().map(|f| f.display().to_string()), "SIGHUP: reloading the configuration");
            crate::systemd::reloading();
            let ok = reload(file.clone(), &mut running, &live).await;
            crate::telemetry::config_reload(ok);
            crate::systemd::reloaded(if ok {
                "serving; configuration reloaded"
            } else {
                "serving; the last reload was refused (see the log), previous settings in force"
            });
            match store.tokens().list().await {
                Ok(t) => tracing::info!(
                    active_tokens = t.iter().filter(|t| t.revoked_at.is_none()).count(),
                    "API tokens are checked against the store on every request; no reload needed"
                ),
                Err(e) => tracing::warn!(error = %e, "could not list API tokens"),
            }
        }
    });
}

/// One reload. `running` is what is in force; only the live parts of it are updated, so a
/// setting that needs a restart is reported again at the next reload until it is restarted.
async fn reload(file: Option<PathBuf>, running: &mut Config, live: &Live) -> bool {
    let loaded = match tokio::task::spawn_blocking(move || Config::load(file.as_deref())).await {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "configuration reload refused; the running settings stay in force");
            return false;
        }
        Err(e) => {
            tracing::error!(error = %e, "configuration reload failed");
            return false;
        }
    };
    for k in &loaded.unknown_keys {
        tracing::warn!(key = %k, "a SCIMSYNC_* environment variable sets an unknown configuration key: ignored");
    }
    let new = loaded.config;
    let changed = changed_keys(running, &new);
    let mut ok = true;

    if new.log.level != running.log.level {
        match crate::telemetry::set_log_level(&new.log.level) {
            Ok(crate::telemetry::LogLevelChange::Applied) => running.log.level = new.log.level.clone(),
            Ok(crate::telemetry::LogLevelChange::PinnedByRustLog) => {
                tracing::warn!("log.level changed, but RUST_LOG was set at start and keeps precedence")
            }
            Err(e) => {
                ok = false;
                tracing::error!(error = %e, "log.level could not be applied");
            }
        }
    }
    if new.server.rate_limit != running.server.rate_limit {
        live.rate_limits.configure(&new.server.rate_limit);
        running.server.rate_limit = new.server.rate_limit.clone();
    }
    // The outbox worker's retry and timing settings; concurrency and the flow control towards
    // the app are fixed at start (reported below), and the shutdown budget is server-wide.
    let mut outbox = new.outbox.clone();
    outbox.concurrency = running.outbox.concurrency;
    outbox.rate_limit_per_second = running.outbox.rate_limit_per_second;
    outbox.rate_limit_burst = running.outbox.rate_limit_burst;
    if outbox != running.outbox {
        let mut cfg = running.clone();
        cfg.outbox = outbox.clone();
        live.outbox.send_replace(WorkerOptions::from_config(&cfg));
        running.outbox = outbox;
    }
    // Turning TLS on or off changes the listener: reported below as needing a restart.
    if let (Some(certs), true) = (&live.tls, new.server.tls.enabled()) {
        let before = certs.describe();
        match certs.reload(&new.server.tls.cert_file, &new.server.tls.key_file) {
            Ok(now) => {
                if now == before {
                    tracing::info!(certificate = %now, "TLS certificate re-read: unchanged");
                } else {
                    tracing::info!(certificate = %now, previous = %before, "TLS certificate reloaded");
                }
                running.server.tls = new.server.tls.clone();
            }
            Err(e) => {
                ok = false;
                tracing::error!(error = %e, "TLS certificate not reloaded; the previous one is still served");
            }
        }
    }

    let (applied, restart): (Vec<&String>, Vec<&String>) = changed
        .iter()
        .partition(|k| is_live(k) && (!k.starts_with("server.tls.") || live.tls.is_some() == new.server.tls.enabled()));
    for key in &restart {
        tracing::warn!(key = %key, "setting changed in the configuration but needs a restart to take effect");
    }
    if ok {
        tracing::info!(changed = ?applied, needs_restart = restart.len(), "configuration reloaded");
    } else {
        tracing::warn!(changed = ?applied, "configuration partly reloaded: see the error above");
    }
    ok
}

/// Dotted keys whose value differs. Secrets serialise as `<redacted>`, so a changed secret
/// is found by comparing its section and named as the section.
fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let mut a = BTreeMap::new();
    let mut b = BTreeMap::new();
    flatten("", &serde_json::to_value(old).unwrap_or_default(), &mut a);
    flatten("", &serde_json::to_value(new).unwrap_or_default(), &mut b);
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if old.admin.bearer_token != new.admin.bearer_token && !keys.iter().any(|k| k == "admin.bearer_token") {
        keys.push("admin.bearer_token".into());
    }
    if old.target != new.target && !keys.iter().any(|k| k.starts_with("target.")) {
        keys.push("target (a secret)".into());
    }
    keys
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_are_dotted_and_secrets_named_by_section() {
        let mut old = Config::default();
        old.target.scim.bearer_token = crate::config::Secret("one".into());
        old.admin.bearer_token = crate::config::Secret("one-secret-value-0123".into());
        let mut new = old.clone();
        new.log.level = "debug".into();
        new.server.rate_limit.burst = 7;
        new.outbox.concurrency = 9;
        new.target.scim.bearer_token = crate::config::Secret("s3cret".into());
        new.admin.bearer_token = crate::config::Secret("another-secret-value".into());
        let keys = changed_keys(&old, &new);
        assert_eq!(
            keys,
            vec![
                "log.level",
                "outbox.concurrency",
                "server.rate_limit.burst",
                "admin.bearer_token",
                "target (a secret)"
            ]
        );
        assert!(changed_keys(&old, &old).is_empty());
    }

    #[test]
    fn live_keys() {
        for k in ["log.level", "server.rate_limit.burst", "outbox.max_attempts", "outbox.deletion_guard.enabled"] {
            assert!(is_live(k), "{k}");
        }
        for k in ["log.format", "server.listen", "outbox.concurrency", "outbox.rate_limit_burst", "target (a secret)"] {
            assert!(!is_live(k), "{k}");
        }
    }
}
