//! The command line: `serve`, `check-config`, `token create|list|revoke`, `outbox`, `resync`,
//! `access`, `healthcheck`, `audit`, `backup`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Loaded};
use crate::model::drift::{RunSummary, shown};
use crate::{app, shutdown, telemetry};

/// Standard output for the commands. `println!` panics when the reader has gone (`scimsync
/// drift --json | head -c 700`); these return the write error instead, and [`dispatch`]
/// ends the command quietly on a closed pipe, as a Unix tool does.
macro_rules! outln {
    ($($t:tt)*) => { writeln!(std::io::stdout(), $($t)*)? };
}
macro_rules! out {
    ($($t:tt)*) => { write!(std::io::stdout(), $($t)*)? };
}

/// scimsync keeps an application's accounts in step with your identity provider: IdPs
/// (Okta, Entra ID, OneLogin, ...) push SCIM 2.0 changes to it, it stores them durably in
/// SQLite and provisions the application.
#[derive(Debug, Parser)]
#[command(name = "scimsync", version, about, long_about = None)]
pub struct Cli {
    /// Config file (TOML). Default: ./scimsync.toml, else /etc/scimsync/scimsync.toml, else
    /// built-in defaults. SCIMSYNC_* environment variables override it (SCIMSYNC_SERVER__LISTEN=...).
    #[arg(long, short = 'c', global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: serve the SCIM API (default 127.0.0.1:8080, data in ./scimsync-data).
    /// On first start it creates an API token and prints it once.
    Serve,
    /// Load and validate the configuration, print the effective settings, and exit non-zero
    /// with an explanation if anything is wrong.
    CheckConfig,
    /// Manage the bearer tokens IdPs authenticate with. Tokens live in the store, so changes
    /// take effect at once in a running daemon.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Inspect and steer the outbox: the queue of changes waiting to reach the app.
    Outbox {
        #[command(subcommand)]
        action: OutboxAction,
    },
    /// Push one resource to the app now, whole (like an IdP's "provision on demand"). The
    /// running daemon's worker delivers it.
    Resync {
        /// `user` or `group`.
        kind: String,
        id: String,
    },
    /// Explain one user's effective access under `[policy]`: its groups, the rules that
    /// matched each, the roles and entitlements that result, the constraints that bound
    /// them, and why. The admin listener answers the same as JSON at `GET /access/{user}`.
    Access {
        /// The user's userName or id.
        user: String,
        /// Stable JSON (user, groups with matched_rules, roles, entitlements,
        /// exclusive_classes, why) instead of prose.
        #[arg(long)]
        json: bool,
    },
    /// Reconciliation: run a full sync now, or list past runs.
    Sync {
        #[command(subcommand)]
        action: SyncAction,
    },
    /// Print a drift report: the latest (or --run ID) as a table grouped by kind, counts
    /// first, or as JSON for scripts. Exit code 0 when the report is clean, 3 when it has
    /// drift, 1 when there is no report.
    Drift {
        /// A run id from `scimsync sync runs` (default: the latest successful run).
        #[arg(long)]
        run: Option<i64>,
        /// Stable JSON ({"run": ..., "items": [...]}) instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// List the cluster: every node on this store (name, role, whether live, last heartbeat,
    /// version, listeners), the leader and its epoch. Reads the store, as the daemons
    /// coordinate through it: it works from any host with the config, whether or not a
    /// daemon runs there.
    Status {
        /// Stable JSON ({"backend", "leader", "epoch", "lease_expires_in_seconds", "nodes": [...]}).
        #[arg(long)]
        json: bool,
    },
    /// Probe a running daemon's /readyz (for scripts and container health checks): exit 0
    /// when ready, 1 otherwise, printing the reasons. Sends admin.bearer_token when set.
    Healthcheck {
        /// The admin listener's URL, e.g. http://127.0.0.1:9090 (default: from admin.listen).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 5)]
        timeout_seconds: u64,
    },
    /// Show the audit log: accepted SCIM changes (token id, method, resource, what changed
    /// by name, the IdP's request id) and operator actions. The most recent --limit records
    /// matching the filters, oldest first.
    Audit {
        /// Only records since then: a duration back from now (`90s`, `15m`, `24h`, `7d`) or an
        /// RFC 3339 time (`2026-01-31T08:00:00Z`).
        #[arg(long, value_name = "DURATION|RFC3339")]
        since: Option<String>,
        /// Only one resource: `Users/ID`, `Groups/ID`, an id, or a userName / group
        /// displayName (any case).
        #[arg(long, value_name = "RESOURCE")]
        resource: Option<String>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Copy the database to PATH with SQLite's online backup, safe while the daemon runs,
    /// then verify the copy (integrity check, counts). PATH must not exist. See the README
    /// for the restore steps.
    Backup { path: PathBuf },
    /// Move the store to another backend: `store copy` copies the embedded SQLite store
    /// (store.data_dir) into an empty PostgreSQL schema.
    Store {
        #[command(subcommand)]
        action: StoreAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum StoreAction {
    /// Copy the SQLite store in store.data_dir into the empty PostgreSQL schema of
    /// [store.postgres] (or --to), in one transaction, keeping every id, and check the counts
    /// of every table and of the outbox's states before committing. Stop the daemon first:
    /// changes accepted during the copy would not be in it. The SQLite file is only read.
    Copy {
        /// The PostgreSQL URL to copy to (default: store.postgres.url); the password, schema
        /// and TLS settings come from [store.postgres].
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum OutboxAction {
    /// Undelivered changes, oldest first (or only dead-lettered ones, or only those the
    /// deletion guard holds).
    List {
        /// Only dead-lettered changes.
        #[arg(long, conflicts_with = "held")]
        dead: bool,
        /// Only changes the deletion guard holds.
        #[arg(long)]
        held: bool,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// One change with every delivery attempt.
    Show { id: i64 },
    /// Put a dead-lettered change (or all of them) back in the queue.
    Retry {
        id: Option<i64>,
        #[arg(long, conflicts_with = "id")]
        all_dead: bool,
    },
    /// Remove a change for good: it will never reach the app. Needs --confirm.
    Drop {
        id: i64,
        #[arg(long)]
        confirm: bool,
    },
    /// Deliver the deprovisioning changes the deletion guard holds (each resource's in commit
    /// order) and reset the guard.
    Release {
        /// The held changes (required: release acts on all of them).
        #[arg(long, required = true)]
        held: bool,
        /// Only this target's (`scim`, `webhook`, `dry-run`); a daemon has one target, so
        /// this is a safety check that the command acts where you think it does.
        #[arg(long, value_name = "T")]
        target: Option<String>,
    },
    /// Drop the deprovisioning changes the deletion guard holds (they never reach the app)
    /// and reset the guard. Needs --confirm.
    Discard {
        /// The held changes (required: discard acts on all of them).
        #[arg(long, required = true)]
        held: bool,
        /// Only this target's (see `release --target`).
        #[arg(long, value_name = "T")]
        target: Option<String>,
        /// Really drop them.
        #[arg(long)]
        confirm: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SyncAction {
    /// Ask the running daemon (its admin listener) to run a full sync now, wait for it, and
    /// print the report.
    Now {
        /// Repair past the safety limit this once: RUN_ID is the run whose refused report
        /// you reviewed (`scimsync drift --run RUN_ID`). Only the deprovisionings that report
        /// listed are confirmed; a run that would remove others is refused again.
        #[arg(long, value_name = "RUN_ID")]
        confirm: Option<i64>,
        /// The admin listener's URL (default: from admin.listen).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Give up waiting after this many seconds (the run goes on in the daemon).
        #[arg(long, default_value_t = 3600)]
        timeout_seconds: u64,
    },
    /// Recent runs: when, how started, how long, outcome, drift counts.
    Runs {
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Create a token and print it (only this once) on stdout.
    Create {
        /// A name to recognise the token by, e.g. "okta-prod".
        #[arg(long, default_value = "default")]
        label: String,
    },
    /// List tokens (ids and labels; never the secrets).
    List,
    /// Revoke a token by id (the 8 hex digits after `scimsync_`); it stops working at once.
    Revoke { id: String },
}

/// Run the parsed command; returns the process exit code.
pub fn dispatch(cli: Cli) -> Result<i32> {
    let loaded = match Config::load(cli.config.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("scimsync: configuration error:\n{e}");
            return Ok(2);
        }
    };
    // `serve` and `token create` print a secret shown only once: that must not vanish quietly.
    let shows_secret = matches!(cli.command, Command::Serve | Command::Token { action: TokenAction::Create { .. } });
    let result = match cli.command {
        Command::CheckConfig => check_config(&loaded),
        Command::Serve => runtime()?.block_on(serve(loaded)),
        Command::Token { action } => runtime()?.block_on(token(loaded, action)),
        Command::Outbox { action } => runtime()?.block_on(outbox(loaded, action)),
        Command::Resync { kind, id } => runtime()?.block_on(resync(loaded, &kind, &id)),
        Command::Access { user, json } => runtime()?.block_on(access(loaded, &user, json)),
        Command::Sync { action: SyncAction::Now { confirm, url, timeout_seconds } } => {
            runtime()?.block_on(sync_now(&loaded, confirm, url, timeout_seconds))
        }
        Command::Sync { action: SyncAction::Runs { limit } } => runtime()?.block_on(sync_runs(loaded, limit)),
        Command::Drift { run, json } => runtime()?.block_on(drift(loaded, run, json)),
        Command::Status { json } => runtime()?.block_on(cluster_status(loaded, json)),
        Command::Healthcheck { url, timeout_seconds } => {
            runtime()?.block_on(healthcheck(&loaded, url, timeout_seconds))
        }
        Command::Audit { since, resource, json, limit } => {
            runtime()?.block_on(audit(loaded, since.as_deref(), resource.as_deref(), json, limit))
        }
        Command::Backup { path } => backup(&loaded, &path),
        Command::Store { action: StoreAction::Copy { to } } => runtime()?.block_on(store_copy(&loaded, to)),
    };
    match result {
        // The reader went away (`| head`): what it wanted it has; stop without a word.
        Err(e) if !shows_secret && is_broken_pipe(&e) => Ok(0),
        other => other,
    }
}

/// Whether the error is a write to a pipe whose reader has closed it.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// An operator's action, for the audit log.
fn cli_audit(method: &str, resource_type: &str, resource_id: Option<&str>) -> crate::store::NewAudit {
    crate::store::NewAudit {
        resource_id: resource_id.map(str::to_string),
        ..crate::store::NewAudit::new("cli", method, resource_type)
    }
}

/// `--since`: a duration back from now (`90s`, `15m`, `24h`, `7d`) or an RFC 3339 time, as
/// our stored timestamp format.
fn parse_since(s: &str) -> Result<String, String> {
    let s = s.trim();
    if let Some(t) = crate::model::normalize_time(s) {
        return Ok(t);
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("--since {s:?}: write e.g. 15m, 24h, 7d or 2026-01-31T08:00:00Z"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("--since {s:?}: the unit must be s, m, h or d (e.g. 24h), or give an RFC 3339 time")),
    };
    let d = n.checked_mul(secs).ok_or_else(|| format!("--since {s:?} is too far back"))?;
    Ok(crate::model::time_before(std::time::Duration::from_secs(d)))
}

/// `--resource`: `Users/ID` / `Groups/ID` name a type and id; anything else an id or a name.
fn parse_resource(s: &str) -> (Option<String>, String) {
    match s.trim().split_once('/') {
        Some((t, id)) => match crate::model::ResourceKind::from_segment(t) {
            Some(k) => (Some(k.as_str().to_string()), id.to_string()),
            None => (None, s.trim().to_string()),
        },
        None => (None, s.trim().to_string()),
    }
}

async fn audit(loaded: Loaded, since: Option<&str>, resource: Option<&str>, json: bool, limit: usize) -> Result<i32> {
    let since = match since.map(parse_since).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return Ok(2);
        }
    };
    let (resource_type, resource) = match resource.map(parse_resource) {
        Some((t, r)) => (t, Some(r)),
        None => (None, None),
    };
    let store = open_for_cli(&loaded).await?;
    let q = crate::store::AuditQuery { since, resource_type, resource, limit: limit.max(1) };
    let records = store.audit().list(q).await;
    tokio::task::spawn_blocking(move || store.close()).await.ok();
    let mut out = std::io::stdout().lock();
    for r in records? {
        if json {
            writeln!(out, "{}", serde_json::to_string(&r)?)?;
        } else {
            let who = match (&r.actor[..], &r.token_id) {
                ("token", Some(t)) => format!("token:{t}"),
                (a, _) => a.to_string(),
            };
            let what = format!(
                "{}{}{}",
                r.resource_type,
                r.resource_id.as_deref().map(|i| format!("/{i}")).unwrap_or_default(),
                r.resource_name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default()
            );
            writeln!(
                out,
                "{}  {:<15} {:<14} {}  request-id={}  {}",
                r.at,
                who,
                r.method,
                what,
                r.request_id.as_deref().unwrap_or("-"),
                r.summary
            )?;
        }
    }
    Ok(0)
}

fn backup(loaded: &Loaded, path: &std::path::Path) -> Result<i32> {
    telemetry::init(&loaded.config.log);
    if loaded.config.store.backend == crate::config::StoreBackend::Postgres {
        eprintln!(
            "scimsync backup copies the embedded SQLite store; the PostgreSQL store is backed up with \
             PostgreSQL's own tools: `pg_dump --schema={} ...` (or your provider's backups)",
            loaded.config.store.postgres.schema
        );
        return Ok(2);
    }
    let cfg = &loaded.config.store;
    match crate::store::Store::backup(&cfg.data_dir, path, cfg.busy_timeout_seconds) {
        Ok(r) => {
            outln!("backup written to {} ({} bytes), integrity check ok", r.path.display(), r.bytes);
            outln!("schema version {}", r.schema_version);
            outln!(
                "{} users, {} groups, {} memberships, {} undelivered change(s), {} active token(s), {} audit record(s)",
                r.users,
                r.groups,
                r.memberships,
                r.undelivered,
                r.tokens,
                r.audit_records
            );
            Ok(0)
        }
        Err(e) => {
            eprintln!("backup failed: {e}");
            Ok(1)
        }
    }
}

/// `scimsync store copy`: SQLite (store.data_dir) into PostgreSQL ([store.postgres], or --to).
async fn store_copy(loaded: &Loaded, to: Option<String>) -> Result<i32> {
    telemetry::init(&loaded.config.log);
    let mut cfg = loaded.config.clone();
    if let Some(url) = to {
        cfg.store.postgres.url = crate::config::DatabaseUrl(url);
    }
    if cfg.store.postgres.url.0.trim().is_empty() {
        eprintln!("store copy: no PostgreSQL to copy to: pass --to postgres://... or set store.postgres.url");
        return Ok(2);
    }
    let opts = app::pg_options(&cfg);
    let schema = opts.schema.clone();
    match crate::store::copy::sqlite_to_postgres(&cfg.store.data_dir, &opts).await {
        Ok(r) => {
            outln!(
                "copied {} into the PostgreSQL schema {schema:?}; the SQLite file is unchanged",
                crate::store::Store::database_path(&cfg.store.data_dir).display()
            );
            for (table, n) in &r.tables {
                outln!("  {table:<18} {n:>9} rows");
            }
            let states: Vec<String> = r.outbox.iter().map(|(s, n)| format!("{s} {n}")).collect();
            outln!("outbox by state: {}", if states.is_empty() { "empty".to_string() } else { states.join(", ") });
            outln!("counts checked; set store.backend = \"postgres\" and start the daemon");
            Ok(0)
        }
        Err(e) => {
            eprintln!("store copy failed, nothing was written: {e}");
            Ok(1)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the tokio runtime")
}

fn warn_unknown(loaded: &Loaded) {
    for k in &loaded.unknown_keys {
        tracing::warn!(key = %k, "a SCIMSYNC_* environment variable sets an unknown configuration key: ignored");
    }
}

fn check_config(loaded: &Loaded) -> Result<i32> {
    match &loaded.file {
        Some(f) => outln!("config file: {}", f.display()),
        None => outln!("config file: none (built-in defaults and environment)"),
    }
    for k in &loaded.unknown_keys {
        outln!("warning: the environment sets unknown key {k}: ignored (SCIMSYNC_* variables are config keys)");
    }
    outln!("\neffective configuration:\n{}", toml_like(&loaded.config));
    if let Ok(policy) = crate::policy::Policy::compile(&loaded.config.policy) {
        let lines = policy.describe();
        if lines.is_empty() {
            outln!("\nprovisioning policy: none (groups are mirrored, no roles or licences derived)");
        } else {
            outln!("\nprovisioning policy:");
            for l in lines {
                outln!("  {l}");
            }
        }
    }
    let tls = &loaded.config.server.tls;
    if tls.enabled() {
        match crate::http::tls::CertStore::load(&tls.cert_file, &tls.key_file) {
            Ok(c) => outln!("TLS certificate: {}", c.describe()),
            Err(e) => {
                outln!("problem: {e}");
                return Ok(2);
            }
        }
    }
    outln!("configuration OK");
    Ok(0)
}

fn toml_like(cfg: &Config) -> String {
    // serde_json gives a faithful dump without another serializer dependency.
    serde_json::to_string_pretty(cfg).unwrap_or_default()
}

async fn serve(loaded: Loaded) -> Result<i32> {
    let cfg = loaded.config.clone();
    telemetry::init(&cfg.log);
    warn_unknown(&loaded);
    if let Some(f) = &loaded.file {
        tracing::info!(file = %f.display(), "configuration loaded");
    }
    // SQLite opens at once, or fails with its message before anything listens, as it always
    // has. A PostgreSQL may be down at start: the listeners come first and answer (503 with
    // the reason) while its open is retried, instead of a crash loop.
    let progress = crate::store::OpenProgress::default();
    let opened = match cfg.store.backend {
        crate::config::StoreBackend::Sqlite => Some(
            app::open_store_reporting(&cfg, &progress, &CancellationToken::new())
                .await
                .with_context(|| store_label(&cfg))?,
        ),
        crate::config::StoreBackend::Postgres => None,
    };
    let listener = app::bind(&cfg).await.with_context(|| format!("cannot listen on {}", cfg.server.listen))?;
    let admin =
        app::bind_admin(&cfg).await.with_context(|| format!("cannot listen on {} (admin.listen)", cfg.admin.listen))?;
    let live = crate::reload::Live::from_config(&cfg).map_err(anyhow::Error::msg)?;
    if let Some(t) = &live.tls {
        tracing::info!(certificate = %t.describe(), "TLS on the SCIM listener");
    }
    let admin_bound = admin.as_ref().map(|l| l.local_addr()).transpose()?;
    let bound = listener.local_addr()?;
    let base_url = cfg.scim_base_url(bound);
    // Signal handlers go in before the listening line: a script (or test) that signals the
    // daemon once it has printed must never meet the default action.
    let token = CancellationToken::new();
    shutdown::on_signals(token.clone());
    let hangups = shutdown::on_hangup();
    // The bootstrap token goes before the listening lines where the store is open already.
    if let Some(store) = &opened {
        announce_bootstrap(store, &base_url).await?;
    }
    let serving = app::serve_listeners(&cfg, listener, admin, &progress, &live, &token);
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "scimsync listening on {base_url}")?;
        // After the SCIM line: scripts that take the first "listening on" line get the SCIM API.
        if let Some(a) = admin_bound {
            writeln!(out, "scimsync admin listening on http://{a}")?;
        }
        out.flush()?;
    }
    let store = match opened {
        Some(store) => store,
        None => {
            let waiting = crate::systemd::starting(progress.clone(), token.clone());
            let opened = app::open_store_reporting(&cfg, &progress, &token).await;
            waiting.abort();
            match opened {
                Ok(store) => store,
                // SIGTERM while the database was still down: nothing to drain but the listeners.
                Err(crate::store::StoreError::Closed) if token.is_cancelled() => {
                    serving.stop_before_open().await;
                    tracing::info!("scimsync stopped before its store opened");
                    return Ok(0);
                }
                Err(e) => return Err(e).with_context(|| store_label(&cfg)),
            }
        }
    };
    if cfg.store.backend == crate::config::StoreBackend::Postgres {
        announce_bootstrap(&store, &base_url).await?;
    }
    tracing::info!(%bound, admin = ?admin_bound, base_url, data_dir = %cfg.store.data_dir.display(), "scimsync started");
    crate::reload::spawn(loaded.file.clone(), cfg.clone(), live.clone(), store.clone(), hangups, token.clone());
    crate::systemd::spawn_watchdog(store.clone(), token.clone());
    let serving_on = format!("serving SCIM on {base_url}");
    let ready = move || {
        crate::systemd::ready(&serving_on);
        // For scripts, as READY=1 is for systemd: the store is open and this node has claimed
        // its name (the listening lines may come long before, while a PostgreSQL is down at
        // start).
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "scimsync ready").and_then(|()| out.flush());
    };
    if let Err(twin) = app::run(&cfg, store, serving, base_url, token, &live, ready).await {
        tracing::error!("scimsync refused to start: {twin}");
        anyhow::bail!("refusing to start: {twin}");
    }
    tracing::info!("scimsync stopped");
    Ok(0)
}

/// On a fresh install (no token), make one and print it, to be shown only this once.
async fn announce_bootstrap(store: &crate::store::Store, base_url: &str) -> Result<()> {
    if let Some(t) = app::bootstrap_token(store).await? {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "No API token existed, so one was created (label \"bootstrap\"). It is shown only this once:\n\n    {}\n\n\
             In Okta or Entra ID, set the SCIM base URL / Tenant URL to {base_url}\n\
             and the bearer / secret token to the value above. Rotate with `scimsync token create` and\n\
             `scimsync token revoke {}`.\n",
            t.token, t.id
        )?;
        out.flush()?;
    }
    Ok(())
}

async fn token(loaded: Loaded, action: TokenAction) -> Result<i32> {
    telemetry::init(&loaded.config.log);
    // Creating a token before the first start is how an install is prepared, so `create`
    // may create the store; `list` and `revoke` only make sense on an existing one.
    let store = match action {
        TokenAction::Create { .. } => cli_store(&loaded.config).await?,
        _ => open_for_cli(&loaded).await?,
    };
    let code = match action {
        TokenAction::Create { label } => {
            let t = store.tokens().create(&label, cli_audit("token create", "token", None)).await?;
            eprintln!("created token {} (label {:?}); it is shown only this once:", t.id, t.label);
            writeln!(std::io::stdout(), "{}", t.token).with_context(|| {
                format!("token {} was created but could not be printed; revoke it (`scimsync token revoke {}`) and create another", t.id, t.id)
            })?;
            0
        }
        TokenAction::List => {
            outln!("{:<10} {:<24} {:<26} status", "id", "label", "created");
            for t in store.tokens().list().await? {
                let status = t.revoked_at.as_ref().map(|r| format!("revoked {r}")).unwrap_or_else(|| "active".into());
                outln!("{:<10} {:<24} {:<26} {status}", t.id, t.label, t.created_at);
            }
            0
        }
        TokenAction::Revoke { id } => {
            if store.tokens().revoke(&id, cli_audit("token revoke", "token", Some(&id))).await? {
                eprintln!("revoked token {id}");
                0
            } else {
                eprintln!("no active token with id {id:?} (see `scimsync token list`)");
                1
            }
        }
    };
    tokio::task::spawn_blocking(move || store.close()).await.ok();
    Ok(code)
}

/// Open the store for a command that reads it or changes what is in it. Such a command never
/// creates a store: in a directory without one it would report an empty world (0 changes
/// waiting, no run) while the daemon's store is elsewhere, e.g. `/var/lib/scimsync`.
async fn open_for_cli(loaded: &Loaded) -> Result<crate::store::Store> {
    telemetry::init(&loaded.config.log);
    let db = crate::store::Store::database_path(&loaded.config.store.data_dir);
    if loaded.config.store.backend == crate::config::StoreBackend::Sqlite && !db.exists() {
        anyhow::bail!("{}", no_store_message(loaded, &db));
    }
    cli_store(&loaded.config).await
}

/// A command's store: opened as the daemon opens it, but a PostgreSQL that cannot be reached
/// within three connect timeouts is an error (the daemon itself waits for it).
async fn cli_store(cfg: &crate::config::Config) -> Result<crate::store::Store> {
    let give_up = CancellationToken::new();
    let bound = cfg.store.postgres.connect_timeout_seconds.max(1) * 3;
    let timer = {
        let give_up = give_up.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(bound)).await;
            give_up.cancel();
        })
    };
    let store = app::open_store(cfg, &give_up).await.with_context(|| store_label(cfg));
    timer.abort();
    store
}

/// What "the store" is, for error messages.
fn store_label(cfg: &crate::config::Config) -> String {
    match cfg.store.backend {
        crate::config::StoreBackend::Sqlite => format!("cannot open the store in {}", cfg.store.data_dir.display()),
        crate::config::StoreBackend::Postgres => {
            format!("cannot open the PostgreSQL store (schema {:?})", cfg.store.postgres.schema)
        }
    }
}

/// Where a reading command looked, and which configuration told it to.
fn no_store_message(loaded: &Loaded, db: &std::path::Path) -> String {
    let config = match &loaded.file {
        Some(f) => format!("the config file {}", f.display()),
        None => format!(
            "the built-in defaults (no --config, and neither {} exists)",
            crate::config::DEFAULT_CONFIG_PATHS.join(" nor ")
        ),
    };
    let absolute = std::path::absolute(db).unwrap_or_else(|_| db.to_path_buf());
    format!(
        "no store at {} (store.data_dir = {:?}, from {config}); this command only reads or changes an \
         existing store and does not create one. Point it at the daemon's configuration with \
         `--config /etc/scimsync/scimsync.toml` (or set SCIMSYNC_STORE__DATA_DIR); `scimsync serve` creates the store",
        absolute.display(),
        loaded.config.store.data_dir.display().to_string()
    )
}

async fn outbox(loaded: Loaded, action: OutboxAction) -> Result<i32> {
    use crate::store::OutboxState;
    let store = open_for_cli(&loaded).await?;
    let code = match action {
        OutboxAction::List { dead, held, limit } => {
            let state = if dead {
                Some(OutboxState::Dead)
            } else if held {
                Some(OutboxState::Held)
            } else {
                None
            };
            let rows = store.outbox().list(state, limit).await?;
            let (depth, oldest) = store.outbox().depth().await?;
            outln!("{depth} change(s) waiting{}", oldest.map(|o| format!(", oldest from {o}")).unwrap_or_default());
            let guard = store.outbox().guard_status().await?;
            if let Some(at) = &guard.tripped_at {
                outln!(
                    "deletion guard TRIPPED at {at} ({} deprovisioning change(s) in the window): {} change(s) held; \
                     `scimsync outbox release --held` or `scimsync outbox discard --held --confirm`",
                    guard.trip_count.unwrap_or_default(),
                    guard.held
                );
            } else if guard.held > 0 {
                outln!("{} change(s) held by the deletion guard", guard.held);
            }
            outln!(
                "{:<8} {:<10} {:<7} {:<38} {:<9} {:>8}  last error",
                "id",
                "state",
                "op",
                "resource",
                "type",
                "attempts"
            );
            for r in rows {
                outln!(
                    "{:<8} {:<10} {:<7} {:<38} {:<9} {:>8}  {}",
                    r.id,
                    r.state.as_str(),
                    r.op.as_str(),
                    r.resource_id,
                    r.kind.as_str(),
                    r.attempts,
                    r.last_error.unwrap_or_default()
                );
            }
            0
        }
        OutboxAction::Show { id } => match store.outbox().get(id).await? {
            None => {
                eprintln!("no outbox row {id}");
                1
            }
            Some((r, attempts)) => {
                outln!("id:          {}", r.id);
                outln!("resource:    {} {}", r.kind.as_str(), r.resource_id);
                outln!("change:      {} (version {})", r.op.as_str(), r.version);
                outln!("state:       {}", r.state.as_str());
                outln!("created:     {}", r.created_at);
                if let Some(n) = &r.next_attempt_at {
                    outln!("next try:    {n}");
                }
                if let Some(d) = &r.done_at {
                    outln!("finished:    {d}");
                }
                if let Some(c) = r.coalesced_into {
                    outln!("delivered with: {c} (coalesced)");
                }
                if let Some(e) = &r.last_error {
                    outln!("last error:  {e}");
                }
                outln!("payload:     {}", r.payload);
                outln!("attempts ({}):", attempts.len());
                for a in attempts {
                    outln!(
                        "  {} .. {}  {:<9} {}",
                        a.started_at,
                        a.finished_at,
                        a.outcome,
                        a.detail.unwrap_or_default()
                    );
                }
                0
            }
        },
        OutboxAction::Retry { id, all_dead } => {
            if id.is_none() && !all_dead {
                eprintln!("say which: `scimsync outbox retry ID` or `scimsync outbox retry --all-dead`");
                2
            } else {
                let audit = cli_audit("outbox retry", "outbox", id.map(|i| i.to_string()).as_deref());
                let n = store.outbox().retry_dead(id, audit).await?;
                eprintln!("re-queued {n} dead change(s)");
                if n == 0 && id.is_some() { 1 } else { 0 }
            }
        }
        OutboxAction::Drop { id, confirm } => {
            if !confirm {
                eprintln!("dropping change {id} means it never reaches the app; run again with --confirm to do it");
                2
            } else if store.outbox().drop_row(id, cli_audit("outbox drop", "outbox", Some(&id.to_string()))).await? {
                tracing::warn!(outbox_id = id, "outbox row dropped by an operator");
                eprintln!("dropped change {id}");
                0
            } else {
                eprintln!("no droppable change {id} (unknown, or being delivered right now)");
                1
            }
        }
        OutboxAction::Release { target: Some(t), .. } | OutboxAction::Discard { target: Some(t), .. }
            if t != loaded.config.target.kind.as_str() =>
        {
            eprintln!("this daemon's target is {:?}, not {t:?}: nothing done", loaded.config.target.kind.as_str());
            2
        }
        OutboxAction::Release { .. } => {
            let n = store.outbox().release_held(cli_audit("outbox release --held", "outbox", None)).await?;
            tracing::warn!(rows = n, "deletion guard: held changes released by an operator; the guard is reset");
            eprintln!("released {n} held change(s); the running daemon delivers them, and the deletion guard is reset");
            0
        }
        OutboxAction::Discard { confirm, .. } => {
            if !confirm {
                let n = store.outbox().guard_status().await?.held;
                eprintln!(
                    "discarding means the {n} held change(s) never reach the app; run again with --confirm to do it"
                );
                2
            } else {
                // The audit record (with every dropped change) commits with the discard.
                let rows = store.outbox().discard_held(cli_audit("outbox discard --held", "outbox", None)).await?;
                for r in &rows {
                    tracing::warn!(
                        outbox_id = r.id,
                        resource = %r.resource_id,
                        kind = r.kind.as_str(),
                        op = r.op.as_str(),
                        "deletion guard: held change discarded by an operator"
                    );
                }
                tracing::warn!(rows = rows.len(), "deletion guard: held changes discarded; the guard is reset");
                eprintln!("discarded {} held change(s); the deletion guard is reset", rows.len());
                0
            }
        }
    };
    tokio::task::spawn_blocking(move || store.close()).await.ok();
    Ok(code)
}

async fn resync(loaded: Loaded, kind: &str, id: &str) -> Result<i32> {
    let Some(kind) = crate::model::ResourceKind::parse(kind.trim_end_matches('s')) else {
        eprintln!("kind must be `user` or `group`, not {kind:?}");
        return Ok(2);
    };
    let store = open_for_cli(&loaded).await?;
    let code = match store.outbox().resync(kind, id, cli_audit("resync", kind.as_str(), Some(id))).await {
        Ok(n) => {
            eprintln!("queued {} {id} for delivery (outbox {n})", kind.as_str());
            0
        }
        Err(crate::store::StoreError::NotFound { .. }) => {
            eprintln!("no {} with id {id}", kind.as_str());
            1
        }
        Err(e) => return Err(e.into()),
    };
    tokio::task::spawn_blocking(move || store.close()).await.ok();
    Ok(code)
}

/// Where `healthcheck` looks by default: admin.listen, with a wildcard address replaced by
/// loopback (a daemon listening on 0.0.0.0 is reachable on 127.0.0.1).
fn admin_url(cfg: &Config) -> Option<String> {
    let addr: std::net::SocketAddr = cfg.admin.listen.parse().ok()?;
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    Some(format!("http://{}", std::net::SocketAddr::new(ip, addr.port())))
}

/// A request to the admin listener, with admin.bearer_token when one is set.
fn admin_request(
    loaded: &Loaded,
    method: reqwest::Method,
    url: &str,
    timeout_seconds: u64,
) -> Result<reqwest::RequestBuilder> {
    let client = crate::downstream::http_client(std::time::Duration::from_secs(timeout_seconds.max(1)), None)
        .map_err(anyhow::Error::msg)?;
    let mut req = client.request(method, url);
    let token = &loaded.config.admin.bearer_token;
    if !token.is_empty() {
        req = req.bearer_auth(token.expose());
    }
    Ok(req)
}

async fn sync_now(loaded: &Loaded, confirm: Option<i64>, url: Option<String>, timeout_seconds: u64) -> Result<i32> {
    let Some(base) = url.or_else(|| admin_url(&loaded.config)) else {
        eprintln!("the admin listener is disabled (admin.listen = \"\"); enable it or pass --url");
        return Ok(1);
    };
    let query = confirm.map(|run| format!("?confirm={run}")).unwrap_or_default();
    let mut base = base;
    // A follower names the leader (421, `leader_admin`): follow it there, once.
    let mut followed = false;
    let (status, body) = loop {
        let url = format!("{}/sync{query}", base.trim_end_matches('/'));
        let req = admin_request(loaded, reqwest::Method::POST, &url, timeout_seconds)?
            .header("x-requested-by", "scimsync-cli");
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{url} did not answer (is the daemon running?): {}", crate::downstream::error_chain(&e));
                return Ok(1);
            }
        };
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
        match body["leader_admin"].as_str() {
            Some(leader) if status == reqwest::StatusCode::MISDIRECTED_REQUEST && !followed => {
                eprintln!(
                    "{} is a follower; asking the leader, node {}, at {leader}",
                    base,
                    body["leader"].as_str().unwrap_or("?")
                );
                base = leader.to_string();
                followed = true;
            }
            _ => break (status, body),
        }
    };
    if !status.is_success() {
        eprintln!("sync not run: {}", body["error"].as_str().unwrap_or("unexpected answer"));
        return Ok(1);
    }
    let run_id = body["run_id"].as_i64();
    if let Some(error) = body["error"].as_str().filter(|_| body["status"] != "ok") {
        eprintln!("sync run {} failed: {error}", run_id.unwrap_or_default());
    }
    let store = open_for_cli(loaded).await?;
    print_report(&store, run_id, false, &crate::reconcile::report::Reconcilable::Yes).await?;
    tokio::task::spawn_blocking(move || store.close()).await.ok();
    // The run's success, not the drift it found (`scimsync drift` exits 3 on drift); 4 when
    // the safety limit refused the repair, so a script notices.
    Ok(if body["status"] != "ok" {
        1
    } else if serde_json::from_value::<RunSummary>(body["summary"].clone()).is_ok_and(|s| s.refused().is_some()) {
        4
    } else {
        0
    })
}

/// `scimsync status`: the cluster as the store knows it (the lease row and the nodes'
/// heartbeats, both on the database's clock), including nodes gone silent but not yet
/// forgotten. Exit 0 when a live node leads, 1 otherwise.
async fn cluster_status(loaded: Loaded, json: bool) -> Result<i32> {
    let store = open_for_cli(&loaded).await?;
    let live_within = app::cluster_timing(&loaded.config.cluster).live_within();
    let lease = store.cluster().lease().await?;
    let nodes = store.cluster().live_nodes(crate::cluster::FORGET_AFTER).await?;
    tokio::task::spawn_blocking(move || store.close()).await.ok();
    let Some(lease) = lease else {
        // SQLite: one daemon on its own store, which always leads.
        if json {
            outln!("{}", serde_json::json!({"backend": "sqlite", "leader": null, "epoch": null, "nodes": []}));
        } else {
            outln!("store.backend = \"sqlite\": one daemon, which always leads (a cluster needs PostgreSQL)");
        }
        return Ok(0);
    };
    let leading = lease.expires_in_seconds > 0.0 && !lease.holder.is_empty();
    let live = |n: &crate::store::ClusterNode| n.heartbeat_age_seconds <= live_within.as_secs_f64();
    let role = |n: &crate::store::ClusterNode| match (live(n), n.leader) {
        (true, true) => "leader",
        (true, false) => "follower",
        (false, _) => "gone",
    };
    if json {
        let nodes: Vec<serde_json::Value> = nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "node": n.node_id, "role": role(n), "live": live(n), "leader": n.leader,
                    "heartbeat_age_seconds": (n.heartbeat_age_seconds * 10.0).round() / 10.0,
                    "version": n.version, "listen": n.listen, "admin": n.admin, "started_at": n.started_at,
                })
            })
            .collect();
        outln!(
            "{}",
            serde_json::json!({
                "backend": "postgres",
                "leader": leading.then_some(&lease.holder),
                "epoch": lease.epoch,
                "lease_expires_in_seconds": leading.then_some((lease.expires_in_seconds * 10.0).round() / 10.0),
                "nodes": nodes,
            })
        );
        return Ok(if leading { 0 } else { 1 });
    }
    let live_count = nodes.iter().filter(|n| live(n)).count();
    if leading {
        outln!(
            "cluster: {live_count} live node(s); leader {} (epoch {}, lease renewed, expires in {:.1} s)",
            lease.holder,
            lease.epoch,
            lease.expires_in_seconds
        );
    } else {
        outln!(
            "cluster: {live_count} live node(s); no node leads now (last leader {}, epoch {}): \
             an election is under way, or no daemon runs",
            if lease.holder.is_empty() { "none" } else { &lease.holder },
            lease.epoch
        );
    }
    if nodes.is_empty() {
        outln!("no node has run on this store in the last day");
        return Ok(if leading { 0 } else { 1 });
    }
    outln!(
        "{:<24} {:<9} {:>10}  {:<10} {:<28} {:<28} STARTED",
        "NODE",
        "ROLE",
        "HEARTBEAT",
        "VERSION",
        "SCIM",
        "ADMIN"
    );
    for n in &nodes {
        outln!(
            "{:<24} {:<9} {:>8.1} s  {:<10} {:<28} {:<28} {}",
            n.node_id,
            role(n),
            n.heartbeat_age_seconds,
            n.version,
            n.listen,
            if n.admin.is_empty() { "-" } else { &n.admin },
            n.started_at
        );
    }
    Ok(if leading { 0 } else { 1 })
}

async fn sync_runs(loaded: Loaded, limit: usize) -> Result<i32> {
    let store = open_for_cli(&loaded).await?;
    let runs = store.sync().runs(limit).await?;
    if runs.is_empty() {
        match app::reconcilable(&loaded.config).why_not() {
            Some(why) => outln!("no sync run: {why}"),
            None => outln!("no sync run yet; run `scimsync sync now` (or wait for reconcile.schedule)"),
        }
    } else {
        outln!("{:>6}  {:<9} {:<25} {:>9}  {:<7} DRIFT / ERROR", "RUN", "TRIGGER", "STARTED", "SECONDS", "STATUS");
    }
    for r in runs {
        let report = r.summary.as_ref().and_then(|s| s.report.as_ref());
        // A run still going has no report yet: say so rather than print nulls.
        let what = match (&r.error, report) {
            (Some(e), _) => e.clone(),
            (None, None) if r.status == "running" => "running".to_string(),
            (None, None) => "no report".to_string(),
            (None, Some(s)) => format!(
                "{} item(s), {} new, {} resolved{}",
                s.total,
                s.new,
                s.resolved,
                if r.summary.as_ref().and_then(|s| s.refused()).is_some() {
                    ", repair refused (safety limit)"
                } else {
                    ""
                }
            ),
        };
        let seconds = r.summary.as_ref().and_then(|s| s.duration_seconds);
        outln!(
            "{:>6}  {:<9} {:<25} {:>9}  {:<7} {}",
            r.id,
            r.trigger,
            r.started_at,
            seconds.map(|d| shown(Some(d))).unwrap_or_else(|| "-".to_string()),
            r.status,
            what
        );
    }
    tokio::task::spawn_blocking(move || store.close()).await.ok();
    Ok(0)
}

async fn drift(loaded: Loaded, run: Option<i64>, json: bool) -> Result<i32> {
    let store = open_for_cli(&loaded).await?;
    let reconcilable = app::reconcilable(&loaded.config);
    if let Some(why) = reconcilable.why_not() {
        // Older reports (from a target that could be listed) stay readable.
        eprintln!("note: {why}");
    }
    let code = print_report(&store, run, json, &reconcilable).await?;
    tokio::task::spawn_blocking(move || store.close()).await.ok();
    Ok(code)
}

/// Print a report; exit code 0 clean, 3 drift, 1 none.
async fn print_report(
    store: &crate::store::Store,
    run: Option<i64>,
    json: bool,
    reconcilable: &crate::reconcile::report::Reconcilable,
) -> Result<i32> {
    use crate::reconcile::report;
    let Some(r) = store.sync().run(run).await? else {
        if run.is_some() {
            eprintln!("no such sync run (see `scimsync sync runs`)");
        } else if reconcilable.why_not().is_none() {
            eprintln!("{}", reconcilable.next_step());
        }
        return Ok(1);
    };
    let items = store.sync().drift_items(r.id).await?;
    if run.is_none()
        && let Some(l) = store.sync().runs(1).await?.into_iter().next().filter(|l| l.id != r.id)
    {
        eprintln!(
            "note: the latest run ({}, started {}) {}: {}; this is the last successful report",
            l.id,
            l.started_at,
            l.status,
            l.error.as_deref().unwrap_or("no report")
        );
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&report::to_json(&r, &items))?);
    } else {
        out!("{}", report::to_text(&r, &items));
    }
    let open = items.iter().filter(|i| i.change != crate::model::drift::Change::Resolved).count();
    Ok(if r.status != "ok" {
        1
    } else if open > 0 {
        3
    } else {
        0
    })
}

async fn healthcheck(loaded: &Loaded, url: Option<String>, timeout_seconds: u64) -> Result<i32> {
    let Some(base) = url.or_else(|| admin_url(&loaded.config)) else {
        outln!("not ready: the admin listener is disabled (admin.listen = \"\"); pass --url");
        return Ok(1);
    };
    let base = base.trim_end_matches('/');
    let url = if base.ends_with("/readyz") { base.to_string() } else { format!("{base}/readyz") };
    let req = admin_request(loaded, reqwest::Method::GET, &url, timeout_seconds)?;
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            outln!("not ready: {url} did not answer: {}", crate::downstream::error_chain(&e));
            return Ok(1);
        }
    };
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    if status.is_success() && json["ready"] == serde_json::Value::Bool(true) {
        outln!("ready ({url})");
        return Ok(0);
    }
    outln!("not ready: {url} answered {status}");
    match json["reasons"].as_array() {
        Some(reasons) => {
            for r in reasons {
                outln!("  - {}", r.as_str().unwrap_or_default());
            }
        }
        None => outln!("  {}", body.trim()),
    }
    Ok(1)
}

/// `scimsync access USER`: the report is the policy's (pure), found and built by
/// [`crate::service::access::effective_access`], the same as `GET /access/{user}`.
async fn access(loaded: Loaded, who: &str, json: bool) -> Result<i32> {
    let policy = crate::policy::Policy::compile(&loaded.config.policy)
        .map_err(|e| anyhow::anyhow!("policy does not compile: {e:?}"))?;
    let store = open_for_cli(&loaded).await?;
    let report = crate::service::access::effective_access(&store, &policy, who).await;
    tokio::task::spawn_blocking({
        let store = store.clone();
        move || store.close()
    })
    .await
    .ok();
    let Some(report) = report? else {
        eprintln!("no user with userName or id {who:?}");
        return Ok(1);
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!("{}", report.to_text());
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_rfc3339() {
        assert_eq!(parse_since("2026-01-31T08:00:00+01:00").unwrap(), "2026-01-31T07:00:00.000Z");
        let ten_min_ago = parse_since("10m").unwrap();
        let (lo, hi) = (
            crate::model::time_before(std::time::Duration::from_secs(601)),
            crate::model::time_before(std::time::Duration::from_secs(599)),
        );
        assert!(lo <= ten_min_ago && ten_min_ago <= hi, "{lo} <= {ten_min_ago} <= {hi}");
        assert!(parse_since("7d").unwrap() < parse_since("24h").unwrap());
        for bad in ["", "h", "10w", "yesterday", "99999999999999999999d"] {
            assert!(parse_since(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn resource_names_a_type_and_id_or_an_id_or_name() {
        assert_eq!(parse_resource("Users/abc"), (Some("User".into()), "abc".into()));
        assert_eq!(parse_resource("groups/g1"), (Some("Group".into()), "g1".into()));
        assert_eq!(parse_resource("alice@example.com"), (None, "alice@example.com".into()));
        assert_eq!(parse_resource("dept/x"), (None, "dept/x".into()), "not a type: a name with a slash");
    }
}
