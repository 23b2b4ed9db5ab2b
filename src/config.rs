//! Configuration: embedded defaults, then a TOML file, then `SCIMSYNC_*` environment
//! variables (nested keys joined by `__`, e.g. `SCIMSYNC_SERVER__LISTEN`), merged by figment.
//!
//! Owns: reading configuration once, validating it with messages that name the key and
//! where its value came from, and warning about unknown keys. Must not touch: anything
//! else; no other module reads the environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Value as FValue};
use serde::{Deserialize, Serialize};

// The webhook target's settings are declared once, by the target that reads them; the
// secret newtype is shared vocabulary. Both keep their `config::` names.
pub use crate::downstream::webhook_settings::{WebhookConfig, WebhookEndpointConfig, WebhookListConfig};
pub use crate::model::Secret;

/// Where `serve` and the other subcommands look for a config file when `--config` is not
/// given, in order.
pub const DEFAULT_CONFIG_PATHS: [&str; 2] = ["./scimsync.toml", "/etc/scimsync/scimsync.toml"];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
#[derive(Default)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub scim: ScimConfig,
    pub log: LogConfig,
    pub target: TargetConfig,
    pub outbox: OutboxConfig,
    pub admin: AdminConfig,
    /// Provisioning policy (`[policy]`): group rules, role order, seats, keep-at-least.
    pub policy: crate::policy::PolicyConfig,
    pub reconcile: ReconcileConfig,
    pub audit: AuditConfig,
    pub cluster: ClusterConfig,
}

/// Several daemons on one PostgreSQL store (`[cluster]`): each serves the SCIM API, one
/// elected leader delivers and runs what must run once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name among the nodes on one store; empty: an id made once and kept in
    /// `store.data_dir/node-id` (the host name and a random suffix), so a restarted daemon is
    /// the same node and takes its own lease back at once.
    pub node_name: String,
    /// How long the leader lease lasts without renewal: a killed leader is replaced within
    /// `lease_ttl_seconds + renew_every_seconds`. Every node must use the same timings.
    pub lease_ttl_seconds: u64,
    /// How often the leader renews the lease, a follower tries for it, and every node beats.
    pub renew_every_seconds: u64,
    /// How long before the lease's deadline (by its own clock) a leader that could not renew
    /// stops delivering: room for clock-rate differences and for stopping.
    pub fence_margin_seconds: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_name: String::new(),
            lease_ttl_seconds: 15,
            renew_every_seconds: 5,
            fence_margin_seconds: 3,
        }
    }
}

/// The audit log (`scimsync audit`): every accepted SCIM change and operator action, kept
/// for `retention_days` and pruned in the background.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Records older than this many days are deleted; 0 keeps them forever.
    pub retention_days: u64,
    /// How often the daemon prunes old records (also once at start).
    pub prune_interval_seconds: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { retention_days: 365, prune_interval_seconds: 3600 }
    }
}

/// The admin listener: `/healthz`, `/readyz`, `/metrics`, on its own address so that it can
/// stay on loopback (or a management network) while the SCIM API faces the IdPs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener; empty disables it. Port 0 picks a free port (tests).
    pub listen: String,
    /// When set, every admin route but `/healthz` needs `Authorization: Bearer <this>`.
    pub bearer_token: Secret,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { listen: "127.0.0.1:9090".into(), bearer_token: Secret::default() }
    }
}

/// The downstream app. `kind = "none"` (the embedded default) keeps every change queued in
/// the outbox until a target is configured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TargetConfig {
    pub kind: TargetKind,
    pub scim: ScimTargetConfig,
    pub webhook: WebhookConfig,
    pub dry_run: DryRunConfig,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    None,
    Scim,
    Webhook,
    DryRun,
}

impl TargetKind {
    /// The name as configured (`kind = "..."`), as `--target` takes it and metrics label it.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::None => "none",
            TargetKind::Scim => "scim",
            TargetKind::Webhook => "webhook",
            TargetKind::DryRun => "dry-run",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ScimTargetConfig {
    /// The app's SCIM base URL, e.g. `https://app.example.com/scim/v2`.
    pub base_url: String,
    /// Bearer token for the app (takes precedence over basic auth when set).
    pub bearer_token: Secret,
    pub basic_user: String,
    pub basic_password: Secret,
    /// OAuth 2.0 client credentials: used when `oauth_token_url` is set.
    pub oauth_token_url: String,
    pub oauth_client_id: String,
    pub oauth_client_secret: Secret,
    pub oauth_scope: String,
    /// `put` (full replace) or `patch` (no-path replace) for user updates.
    pub update_method: UpdateMethodConfig,
    /// `deactivate` (active=false) or `delete` when the IdP deletes a user.
    pub deprovision: DeprovisionConfig,
    /// Largest member list sent in one group PATCH (some apps accept 100).
    pub max_members_per_patch: usize,
    /// Page size when listing the app's users and groups (some apps cap pages at 50).
    pub page_size: usize,
    pub request_timeout_seconds: u64,
    /// PEM bundle of extra CA certificates to trust (a private CA); empty: system roots only.
    pub ca_file: PathBuf,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UpdateMethodConfig {
    Put,
    Patch,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeprovisionConfig {
    Deactivate,
    Delete,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DryRunConfig {
    /// JSON-lines file for would-be deliveries; relative paths are inside `store.data_dir`.
    pub file: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxConfig {
    /// Deliveries in flight at once (to different resources; one resource is always serial).
    pub concurrency: usize,
    /// Look for due changes at least this often (new changes wake the worker at once).
    pub poll_interval_seconds: f64,
    /// A delivery still unfinished after this long is presumed lost and retried.
    pub lease_seconds: u64,
    /// Attempts before a change is dead-lettered (see `scimsync outbox list --dead`).
    pub max_attempts: u32,
    /// A change older than this is dead-lettered at its next failure.
    pub max_age_seconds: u64,
    /// Exponential backoff with full jitter: random delay up to base * 2^attempt, capped.
    pub retry_base_seconds: f64,
    pub retry_max_seconds: u64,
    /// The longest Retry-After (from a 429/503) that is honoured.
    pub retry_after_max_seconds: u64,
    /// Requests per second to the app (token bucket); 0: unlimited.
    pub rate_limit_per_second: u32,
    /// Requests allowed at once above the steady rate.
    pub rate_limit_burst: u32,
    /// The accidental-deletion guard (`[outbox.deletion_guard]`).
    pub deletion_guard: DeletionGuardConfig,
}

/// Hold deprovisioning changes (user DELETE, user deactivated, group DELETE) for an operator
/// when too many arrive at once: an IdP misconfiguration must not wipe the app in minutes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DeletionGuardConfig {
    /// On by default; `false` delivers every deprovisioning at once.
    pub enabled: bool,
    /// Trips when more deprovisioning changes than this arrive within the window.
    pub threshold_count: u64,
    /// Trips when they exceed this share (0..1] of the provisioned users...
    pub threshold_share: f64,
    /// ...once there are at least this many (so a 20-person company offboarding 3 does not).
    pub share_min_count: u64,
    /// The sliding window the changes are counted over.
    pub window_seconds: u64,
    /// How long a deprovisioning waits before it is delivered, so that a burst is counted
    /// whole before any of it reaches the app; 0: delivered at once (a burst smaller than
    /// the worker's head start then leaks past the guard).
    pub delay_seconds: u64,
}

impl Default for DeletionGuardConfig {
    fn default() -> Self {
        DeletionGuardConfig {
            enabled: true,
            threshold_count: 50,
            threshold_share: 0.2,
            share_min_count: 10,
            window_seconds: 3600,
            delay_seconds: 120,
        }
    }
}

/// Scheduled full sync: list the app, compare with what the IdP wants, write a drift report,
/// and (per kind, opt-in) repair.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ReconcileConfig {
    /// Cron expression with seconds (`sec min hour day-of-month month day-of-week [year]`, UTC),
    /// e.g. "0 */30 * * * *" for every 30 minutes; empty: no schedule (runs only on demand).
    pub schedule: String,
    /// A queued change older than this is reported as stuck.
    pub stuck_after_seconds: u64,
    /// Put dead-lettered changes back in the queue at each run (their cause may have cleared).
    pub requeue_dead: bool,
    /// Keep reports this long (the newest successful report is always kept).
    pub report_retention_days: u64,
    /// Attributes never compared (e.g. ones the app does not store).
    pub ignore_attributes: Vec<String>,
    /// Accounts (userName or group displayName, any case) that repair never deactivates or
    /// deletes, and that IdP deprovisioning never reaches: break-glass admins.
    pub protected: Vec<String>,
    /// Resource types repair never deletes: "users" (deactivated instead) and/or "groups"
    /// (left alone and reported).
    pub never_delete: Vec<String>,
    /// What to do per drift kind: "report" (default) or "repair".
    pub repair: RepairConfig,
    /// The safety limit of repair.
    pub safety: SafetyConfig,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            schedule: "0 */30 * * * *".into(),
            stuck_after_seconds: 3600,
            requeue_dead: true,
            report_retention_days: 30,
            ignore_attributes: Vec::new(),
            protected: Vec::new(),
            never_delete: Vec::new(),
            repair: RepairConfig::default(),
            safety: SafetyConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RepairMode {
    #[default]
    Report,
    Repair,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RepairConfig {
    /// Provision it again.
    pub missing_in_app: RepairMode,
    /// Deprovision it in the app (deactivate or delete, as `target.scim.deprovision` says).
    pub orphaned_in_app: RepairMode,
    /// Send our value again.
    pub attribute_mismatch: RepairMode,
    /// Send our `active` again.
    pub active_mismatch: RepairMode,
    /// Add the missing members and remove the extra ones.
    pub membership_mismatch: RepairMode,
}

/// A run whose repair would deactivate or delete more accounts than this repairs nothing and
/// says so in its report (`scimsync sync now --confirm RUN_ID` repairs what that report
/// listed, once).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SafetyConfig {
    pub max_deprovision_count: u64,
    /// Share (0..1] of the accounts the app listed.
    pub max_deprovision_share: f64,
}

impl Default for SafetyConfig {
    fn default() -> Self {
        SafetyConfig { max_deprovision_count: 10, max_deprovision_share: 0.05 }
    }
}

impl Default for TargetConfig {
    fn default() -> Self {
        TargetConfig {
            kind: TargetKind::None,
            scim: ScimTargetConfig::default(),
            webhook: WebhookConfig::default(),
            dry_run: DryRunConfig::default(),
        }
    }
}
impl Default for ScimTargetConfig {
    fn default() -> Self {
        ScimTargetConfig {
            base_url: String::new(),
            bearer_token: Secret::default(),
            basic_user: String::new(),
            basic_password: Secret::default(),
            oauth_token_url: String::new(),
            oauth_client_id: String::new(),
            oauth_client_secret: Secret::default(),
            oauth_scope: String::new(),
            update_method: UpdateMethodConfig::Put,
            deprovision: DeprovisionConfig::Deactivate,
            max_members_per_patch: 100,
            page_size: 100,
            request_timeout_seconds: 30,
            ca_file: PathBuf::new(),
        }
    }
}
impl Default for DryRunConfig {
    fn default() -> Self {
        DryRunConfig { file: PathBuf::from("dry-run.jsonl") }
    }
}
impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            concurrency: 4,
            poll_interval_seconds: 1.0,
            lease_seconds: 300,
            max_attempts: 20,
            max_age_seconds: 3 * 24 * 3600,
            retry_base_seconds: 1.0,
            retry_max_seconds: 600,
            retry_after_max_seconds: 3600,
            rate_limit_per_second: 0,
            rate_limit_burst: 10,
            deletion_guard: DeletionGuardConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the SCIM API listens on. Port 0 picks a free port (tests use it).
    pub listen: String,
    /// The URL IdPs reach us at, without `/scim/v2` (e.g. `https://scim.example.com`).
    /// Used for `meta.location` and `Location`. Empty: derived from `listen`.
    pub public_url: String,
    /// Largest accepted request body; larger ones get 413 (RFC 7644 §3.12 error body).
    pub max_body_bytes: u64,
    /// After SIGTERM: how long in-flight requests, then the deliveries at hand, may take
    /// before the daemon closes what is left and exits (both share this one budget, so it
    /// must stay below systemd's `TimeoutStopSec`).
    pub shutdown_grace_seconds: u64,
    /// TLS on the SCIM listener (`[server.tls]`); off unless both files are named.
    pub tls: TlsConfig,
    /// Per-token request rate limit on the SCIM API (`[server.rate_limit]`).
    pub rate_limit: RateLimitConfig,
}

/// TLS for hosts without a reverse proxy. The files are read at start and again on SIGHUP,
/// so a renewed certificate is served without a restart.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) matching the leaf certificate.
    pub key_file: PathBuf,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        !self.cert_file.as_os_str().is_empty() || !self.key_file.as_os_str().is_empty()
    }
}

/// A token bucket per API token: `requests_per_second` steady, `burst` at once. Over it the
/// IdP gets 429 with `Retry-After`. Changes on SIGHUP.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Steady requests per second allowed per token; 0 turns the limit off.
    pub requests_per_second: u32,
    /// Requests a token may make at once above the steady rate (the bucket's size).
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig { requests_per_second: 1000, burst: 2000 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Directory holding `scimsync.db` (created with mode 0700 when missing).
    pub data_dir: PathBuf,
    /// How long a connection waits on a lock before giving up.
    pub busy_timeout_seconds: u64,
    /// Read connections; reads never wait for the writer (WAL).
    pub readers: usize,
    /// Most writes committed together in one transaction (group commit).
    pub max_batch: usize,
    /// Which database holds the store: the embedded SQLite file in `data_dir` (default), or
    /// a PostgreSQL server (`[store.postgres]`) that ops already run highly available.
    pub backend: StoreBackend,
    /// The PostgreSQL server, when `backend = "postgres"`.
    pub postgres: PostgresConfig,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    #[default]
    Sqlite,
    Postgres,
}

/// `[store.postgres]`: where the PostgreSQL store lives and how the pool talks to it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// libpq-style connection URL (`postgres://user@host:5432/db?sslmode=require`) or
    /// key=value string. A password inside it is accepted but prints as `<redacted>`.
    pub url: DatabaseUrl,
    /// The password, kept out of the URL (e.g. `SCIMSYNC_STORE__POSTGRES__PASSWORD`).
    pub password: Secret,
    /// Connections in the pool: the most store operations running at once.
    pub pool_size: usize,
    /// Longest wait for one connection attempt (TCP, TLS and authentication).
    pub connect_timeout_seconds: u64,
    /// Longest a single statement may run before the server cancels it: a stuck query fails
    /// the request instead of holding a pooled connection and its locks for good.
    pub statement_timeout_seconds: u64,
    /// PEM bundle of extra CA certificates to trust for the server's certificate (a private
    /// CA); empty: the system's roots only.
    pub ca_file: PathBuf,
    /// The schema holding scimsync's tables, created when missing; several daemons can share
    /// one database with a schema each.
    pub schema: String,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: DatabaseUrl::default(),
            password: Secret::default(),
            pool_size: 16,
            connect_timeout_seconds: 10,
            statement_timeout_seconds: 30,
            ca_file: PathBuf::new(),
            schema: "scimsync".into(),
        }
    }
}

/// A database connection URL (or libpq key=value string) that may carry a password: `Debug`
/// and serialisation (so `check-config`) show it with the password as `<redacted>`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(pub String);

impl DatabaseUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The URL with any password replaced by `<redacted>`: in the user-info part of a URL
    /// (`postgres://user:PASSWORD@host`), as a `password=` query parameter, or as a libpq
    /// `password=` key (quoted or not).
    pub fn redacted(&self) -> String {
        let mut s = self.0.clone();
        if let Some(scheme_end) = s.find("://") {
            let rest_start = scheme_end + 3;
            let query = s[rest_start..].find('?').map_or(s.len(), |q| rest_start + q);
            // The last `@` before the query ends the user info: a password with an
            // unencoded `@` or `/` is still covered (too much redacted rather than too little).
            if let Some(at) = s[rest_start..query].rfind('@').map(|a| rest_start + a)
                && let Some(colon) = s[rest_start..at].find(':').map(|c| rest_start + c)
            {
                s.replace_range(colon + 1..at, "<redacted>");
            }
        }
        let password = regex::Regex::new(r"(?i)\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|[^&\s]*)").expect("a valid pattern");
        password.replace_all(&s, "password=<redacted>").into_owned()
    }
    /// Whether the URL itself carries a password (then `password` must stay empty).
    pub fn has_password(&self) -> bool {
        self.redacted() != self.0
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ScimConfig {
    /// Page size when the IdP sends no `count` (RFC 7644 §3.4.2.4).
    pub default_page_size: u32,
    /// Largest page we return whatever `count` asks; advertised as `filter.maxResults`.
    pub max_page_size: u32,
    /// Answer group PATCH with 200 and the group instead of 204. Off by default: Entra
    /// expects 204, and a 10,000-member group must not be echoed for every change.
    pub group_patch_returns_resource: bool,
    /// Most operations in one `POST /Bulk` (RFC 7644 §3.7.4); more is 413. Advertised as
    /// `bulk.maxOperations`.
    pub bulk_max_operations: u32,
    /// Largest `POST /Bulk` body in bytes (RFC 7644 §3.7.4); larger is 413. Advertised as
    /// `bulk.maxPayloadSize`. It replaces `server.max_body_bytes` for that one endpoint,
    /// so a bulk request always gets the bulk error that names the limit.
    pub bulk_max_payload_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing-subscriber `EnvFilter` directive: `info`, `warn`, `scimsync=debug`, ...
    pub level: String,
    /// `text` (readable) or `json` (one object per line, for log shippers).
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            public_url: String::new(),
            max_body_bytes: 1024 * 1024,
            shutdown_grace_seconds: 20,
            tls: TlsConfig::default(),
            rate_limit: RateLimitConfig::default(),
        }
    }
}
impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_dir: PathBuf::from("./scimsync-data"),
            busy_timeout_seconds: 5,
            readers: 4,
            max_batch: 256,
            backend: StoreBackend::Sqlite,
            postgres: PostgresConfig::default(),
        }
    }
}
impl Default for ScimConfig {
    fn default() -> Self {
        ScimConfig {
            default_page_size: 100,
            max_page_size: 1000,
            group_patch_returns_resource: false,
            bulk_max_operations: 1000,
            bulk_max_payload_bytes: 1024 * 1024,
        }
    }
}
impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into(), format: LogFormat::Text }
    }
}

/// A configuration problem, phrased for the operator: which key, where it came from, and
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist (given with --config)")]
    MissingFile(PathBuf),
    #[error("{0}")]
    Parse(String),
    /// Every problem found, one line each.
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

/// The loaded configuration plus what the operator should know about it.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// The file that was read, if any.
    pub file: Option<PathBuf>,
    /// `SCIMSYNC_*` environment variables that no option knows, as keys (with the nearest
    /// valid key when there is one): warned, not fatal. An unknown key in the file is an
    /// error instead.
    pub unknown_keys: Vec<String>,
}

impl Config {
    /// Read defaults, then the file (explicit, or the first of [`DEFAULT_CONFIG_PATHS`] that
    /// exists), then the environment; validate; report unknown keys.
    pub fn load(explicit: Option<&Path>) -> Result<Loaded, ConfigError> {
        Self::load_with_env(explicit, Env::prefixed("SCIMSYNC_").split("__"))
    }

    fn load_with_env(explicit: Option<&Path>, env: Env) -> Result<Loaded, ConfigError> {
        let file = match explicit {
            Some(p) if !p.exists() => return Err(ConfigError::MissingFile(p.to_path_buf())),
            Some(p) => Some(p.to_path_buf()),
            None => DEFAULT_CONFIG_PATHS.iter().map(PathBuf::from).find(|p| p.exists()),
        };
        let defaults = Figment::from(Serialized::defaults(Config::default()));
        let default_dict: Dict = defaults.extract().map_err(|e| ConfigError::Parse(e.to_string()))?;
        // Unknown keys are collected from the file and the environment separately: one in
        // the file is a mistake (a misspelt table would silently leave its settings at their
        // defaults) and an error; a `SCIMSYNC_*` variable may belong to something else on
        // the host (scripts use SCIMSYNC_BIN), so it is warned about, not fatal.
        let mut problems = Vec::new();
        let mut user = Figment::new();
        if let Some(f) = &file {
            let file_fig = Figment::from(Toml::file(f));
            let file_dict: Dict = file_fig.extract().map_err(|e| ConfigError::Parse(describe_figment_error(e)))?;
            let mut unknown = Vec::new();
            collect_unknown("", &file_dict, &default_dict, &mut unknown);
            for key in unknown {
                problems.push(format!(
                    "{key}: unknown key{} (in file {}; every key is in config.example.toml)",
                    suggestion(&key, &default_dict),
                    f.display()
                ));
            }
            user = user.merge(Toml::file(f));
        }
        let env_dict: Dict =
            Figment::from(env.clone()).extract().map_err(|e| ConfigError::Parse(describe_figment_error(e)))?;
        let mut unknown_keys = Vec::new();
        collect_unknown("", &env_dict, &default_dict, &mut unknown_keys);
        let unknown_keys = unknown_keys.into_iter().map(|k| format!("{k}{}", suggestion(&k, &default_dict))).collect();
        user = user.merge(env);
        let user_dict: Dict = user.extract::<Dict>().map_err(|e| ConfigError::Parse(describe_figment_error(e)))?;

        // Deserialising stops at the first wrong value. To report every one at once, each
        // is recorded and taken out (its default stands in), and the rest is tried again.
        let mut pruned = prune_unknown(&user_dict, &default_dict);
        let mut reported: Vec<String> = Vec::new();
        let config: Config = loop {
            match defaults.clone().merge(Serialized::defaults(&pruned)).extract::<Config>() {
                Ok(c) => break c,
                Err(e) => {
                    let mut progressed = false;
                    for e in e {
                        let key = e.path.join(".");
                        problems.push(describe_value_error(&e, &user));
                        reported.push(key);
                        progressed |= remove_path(&mut pruned, &e.path);
                    }
                    if !progressed || problems.len() > 200 {
                        return Err(ConfigError::Invalid(problems));
                    }
                }
            }
        };
        for (key, msg) in config.validate() {
            // A value already reported as the wrong type was replaced by its default:
            // judging the default would only confuse.
            if reported.iter().any(|r| key == *r || key.starts_with(&format!("{r}."))) {
                continue;
            }
            problems.push(match source_of(&user, &key) {
                Some(src) => format!("{key}: {msg} (set in {src})"),
                None => format!("{key}: {msg} (default value)"),
            });
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        Ok(Loaded { config, file, unknown_keys })
    }

    /// Every problem as (key, message with the fix). Empty when the config is usable.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        if self.server.listen.parse::<SocketAddr>().is_err() {
            p.push((
                "server.listen".into(),
                format!("{:?} is not an IP:port address; write e.g. \"127.0.0.1:8080\"", self.server.listen),
            ));
        }
        let public = &self.server.public_url;
        if !public.is_empty() && !public.starts_with("http://") && !public.starts_with("https://") {
            p.push((
                "server.public_url".into(),
                "must start with http:// or https:// (e.g. \"https://scim.example.com\"), or be empty".into(),
            ));
        }
        if self.server.max_body_bytes < 1024 {
            p.push(("server.max_body_bytes".into(), "must be at least 1024".into()));
        }
        p.extend(self.validate_server_ops());
        if self.store.data_dir.as_os_str().is_empty() {
            p.push(("store.data_dir".into(), "must name a directory".into()));
        }
        if self.store.readers == 0 || self.store.readers > 64 {
            p.push(("store.readers".into(), "must be between 1 and 64".into()));
        }
        if self.store.max_batch == 0 {
            p.push(("store.max_batch".into(), "must be at least 1".into()));
        }
        p.extend(self.validate_postgres());
        p.extend(self.validate_cluster());
        if !self.reconcile.schedule.trim().is_empty()
            && let Err(e) = self.reconcile.schedule.parse::<cron::Schedule>()
        {
            p.push((
                    "reconcile.schedule".into(),
                    format!(
                        "{:?} is not a cron expression ({}); write seconds first, e.g. \"0 */30 * * * *\", or \"\" for none",
                        self.reconcile.schedule,
                        // cron's error spans lines (the expression, a caret, the reason):
                        // the reason, on one line.
                        e.to_string()
                            .rsplit('^')
                            .next()
                            .unwrap_or_default()
                            .split_whitespace()
                            .collect::<Vec<_>>()
                            .join(" ")
                    ),
                ));
        }
        for t in &self.reconcile.never_delete {
            if t != "users" && t != "groups" {
                p.push(("reconcile.never_delete".into(), format!("{t:?}: the entries are \"users\" and \"groups\"")));
            }
        }
        let share = self.reconcile.safety.max_deprovision_share;
        if !(share > 0.0 && share <= 1.0) {
            p.push(("reconcile.safety.max_deprovision_share".into(), "must be in (0, 1]".into()));
        }
        if self.scim.max_page_size == 0 {
            p.push(("scim.max_page_size".into(), "must be at least 1".into()));
        }
        if self.scim.default_page_size == 0 || self.scim.default_page_size > self.scim.max_page_size {
            p.push((
                "scim.default_page_size".into(),
                format!("must be between 1 and scim.max_page_size ({})", self.scim.max_page_size),
            ));
        }
        if self.target.kind == TargetKind::Scim {
            let u = &self.target.scim.base_url;
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                p.push((
                    "target.scim.base_url".into(),
                    "must be the app's SCIM base URL, e.g. \"https://app.example.com/scim/v2\", when target.kind = \"scim\"".into(),
                ));
            }
            if self.target.scim.page_size == 0 || self.target.scim.page_size > 10_000 {
                p.push(("target.scim.page_size".into(), "must be between 1 and 10000".into()));
            }
            if self.target.scim.max_members_per_patch == 0 {
                p.push(("target.scim.max_members_per_patch".into(), "must be at least 1".into()));
            }
            if self.target.scim.request_timeout_seconds == 0 {
                p.push(("target.scim.request_timeout_seconds".into(), "must be at least 1".into()));
            }
        }
        if self.target.kind == TargetKind::Webhook {
            let w = &self.target.webhook;
            if !(w.base_url.starts_with("http://") || w.base_url.starts_with("https://")) {
                p.push(("target.webhook.base_url".into(), "must be an http:// or https:// URL".into()));
            }
            if w.secret.is_empty() {
                p.push((
                    "target.webhook.secret".into(),
                    "is required: the app verifies X-Scimsync-Signature with it".into(),
                ));
            }
            if w.events.is_empty() {
                p.push((
                    "target.webhook.events".into(),
                    "configure at least user_create (see config.example.toml)".into(),
                ));
            }
            if let Err(e) = w.options(crate::downstream::Throttle::off()) {
                p.push(("target.webhook".into(), e));
            }
        }
        let o = &self.outbox;
        if o.concurrency == 0 || o.concurrency > 256 {
            p.push(("outbox.concurrency".into(), "must be between 1 and 256".into()));
        }
        if !(o.poll_interval_seconds > 0.0 && o.poll_interval_seconds <= 3600.0) {
            p.push(("outbox.poll_interval_seconds".into(), "must be > 0 and at most 3600".into()));
        }
        // NaN is refused too.
        if o.retry_base_seconds.is_nan()
            || o.retry_base_seconds <= 0.0
            || (o.retry_max_seconds as f64) < o.retry_base_seconds
        {
            p.push(("outbox.retry_base_seconds".into(), "must be > 0 and not above outbox.retry_max_seconds".into()));
        }
        if o.max_attempts == 0 {
            p.push(("outbox.max_attempts".into(), "must be at least 1".into()));
        }
        if o.lease_seconds < 5 {
            p.push(("outbox.lease_seconds".into(), "must be at least 5 (longer than a request timeout)".into()));
        }
        let g = &o.deletion_guard;
        if !(g.threshold_share > 0.0 && g.threshold_share <= 1.0) {
            p.push((
                "outbox.deletion_guard.threshold_share".into(),
                "must be above 0 and at most 1 (a share of the provisioned users, e.g. 0.2)".into(),
            ));
        }
        if g.window_seconds == 0 {
            p.push((
                "outbox.deletion_guard.window_seconds".into(),
                "must be at least 1; to turn the guard off set outbox.deletion_guard.enabled = false".into(),
            ));
        }
        if g.delay_seconds > g.window_seconds {
            p.push((
                "outbox.deletion_guard.delay_seconds".into(),
                format!(
                    "must not be longer than window_seconds ({}): a deprovisioning must still be counted when its \
                     delay ends",
                    g.window_seconds
                ),
            ));
        }
        if self.audit.prune_interval_seconds == 0 {
            p.push((
                "audit.prune_interval_seconds".into(),
                "must be at least 1; to keep every record set audit.retention_days = 0".into(),
            ));
        }
        if self.audit.retention_days > 36_500 {
            p.push((
                "audit.retention_days".into(),
                "must be at most 36500 (100 years); 0 keeps records forever".into(),
            ));
        }
        if self.scim.bulk_max_operations == 0 || self.scim.bulk_max_operations > 100_000 {
            p.push(("scim.bulk_max_operations".into(), "must be between 1 and 100000".into()));
        }
        if self.scim.bulk_max_payload_bytes < 1024 || self.scim.bulk_max_payload_bytes > 256 * 1024 * 1024 {
            p.push((
                "scim.bulk_max_payload_bytes".into(),
                "must be between 1024 and 268435456 (256 MiB); the whole body is held in memory".into(),
            ));
        }
        if !self.admin.listen.is_empty() {
            match self.admin.listen.parse::<SocketAddr>() {
                Err(_) => p.push((
                    "admin.listen".into(),
                    format!(
                        "{:?} is not an IP:port address; write e.g. \"127.0.0.1:9090\", or \"\" to disable the admin listener",
                        self.admin.listen
                    ),
                )),
                Ok(a) if a.port() != 0 && self.server.listen.parse::<SocketAddr>().is_ok_and(|s| s == a) => p.push((
                    "admin.listen".into(),
                    "must differ from server.listen: the admin endpoints have their own listener".into(),
                )),
                Ok(_) => {}
            }
        }
        let admin_token = self.admin.bearer_token.expose();
        if !admin_token.is_empty() && (admin_token.len() < 16 || admin_token.chars().any(|c| c.is_whitespace())) {
            p.push((
                "admin.bearer_token".into(),
                "must be at least 16 characters without spaces (e.g. `openssl rand -hex 32`), or empty for none".into(),
            ));
        }
        if let Err(errs) = crate::policy::Policy::compile(&self.policy) {
            p.extend(errs);
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            p.push(("log.level".into(), format!("{:?} is not a valid level or filter; try \"info\"", self.log.level)));
        }
        p
    }

    /// `[store.postgres]`: the URL must parse (and is required when the backend is
    /// PostgreSQL), the password is set in one place, the schema is a plain identifier.
    /// The election's timings: a leader must renew at least once (with room for one slow
    /// statement) before its own fencing deadline, `lease_ttl - fence_margin` after a
    /// renewal started.
    fn validate_cluster(&self) -> Vec<(String, String)> {
        let c = &self.cluster;
        let mut p = Vec::new();
        if c.renew_every_seconds == 0 {
            p.push(("cluster.renew_every_seconds".into(), "must be at least 1".into()));
        }
        if c.lease_ttl_seconds <= 2 * c.renew_every_seconds {
            p.push((
                "cluster.lease_ttl_seconds".into(),
                format!(
                    "must be more than twice cluster.renew_every_seconds ({}), e.g. {}: a leader renews \
                     at least once before its lease can lapse",
                    c.renew_every_seconds,
                    3 * c.renew_every_seconds.max(1)
                ),
            ));
        } else if c.fence_margin_seconds == 0
            || c.fence_margin_seconds > c.lease_ttl_seconds - 2 * c.renew_every_seconds
        {
            p.push((
                "cluster.fence_margin_seconds".into(),
                format!(
                    "must be between 1 and lease_ttl_seconds - 2 x renew_every_seconds ({}): a leader that \
                     cannot renew stops this long before the lease can go to another node",
                    c.lease_ttl_seconds - 2 * c.renew_every_seconds
                ),
            ));
        }
        p
    }

    fn validate_postgres(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let pg = &self.store.postgres;
        if pg.url.is_empty() {
            if self.store.backend == StoreBackend::Postgres {
                p.push((
                    "store.postgres.url".into(),
                    "must be set when store.backend = \"postgres\"; write e.g. \
                     \"postgres://scimsync@db.example.com:5432/scimsync?sslmode=require\""
                        .into(),
                ));
            }
        } else if let Err(e) = pg.url.expose().parse::<tokio_postgres::Config>() {
            // The driver's message names the option, never its value (no password leaks).
            p.push((
                "store.postgres.url".into(),
                format!(
                    "is not a PostgreSQL connection URL ({e}); write e.g. \"postgres://scimsync@db.example.com:5432/scimsync\""
                ),
            ));
        } else if pg.url.has_password() && !pg.password.is_empty() {
            p.push((
                "store.postgres.password".into(),
                "is set and store.postgres.url carries a password too; keep one (preferably this key, from the \
                 environment: SCIMSYNC_STORE__POSTGRES__PASSWORD)"
                    .into(),
            ));
        }
        if !pg.ca_file.as_os_str().is_empty() && !pg.ca_file.is_file() {
            p.push((
                "store.postgres.ca_file".into(),
                format!("{} is not a readable file (a PEM bundle of CA certificates)", pg.ca_file.display()),
            ));
        }
        if pg.pool_size == 0 || pg.pool_size > 1024 {
            p.push(("store.postgres.pool_size".into(), "must be between 1 and 1024".into()));
        }
        if pg.connect_timeout_seconds == 0 || pg.connect_timeout_seconds > 3600 {
            p.push(("store.postgres.connect_timeout_seconds".into(), "must be between 1 and 3600".into()));
        }
        if pg.statement_timeout_seconds == 0 || pg.statement_timeout_seconds > 86_400 {
            p.push((
                "store.postgres.statement_timeout_seconds".into(),
                "must be between 1 and 86400: a statement must never hold a connection and its locks forever".into(),
            ));
        }
        let schema = &pg.schema;
        let identifier = schema.len() <= 63
            && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && schema.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !identifier || schema.starts_with("pg_") {
            p.push((
                "store.postgres.schema".into(),
                format!(
                    "{schema:?} is not a plain schema name: lower-case letters, digits and _, starting with a letter \
                     or _, at most 63 characters, not starting with pg_ (e.g. \"scimsync\")"
                ),
            ));
        }
        p
    }

    /// Shutdown budget, TLS files and rate limits (`[server]`, `[server.tls]`,
    /// `[server.rate_limit]`).
    fn validate_server_ops(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let s = &self.server;
        if s.shutdown_grace_seconds == 0 || s.shutdown_grace_seconds > 3600 {
            p.push((
                "server.shutdown_grace_seconds".into(),
                "must be between 1 and 3600 (keep it below systemd's TimeoutStopSec)".into(),
            ));
        }
        let t = &s.tls;
        if t.enabled() {
            for (key, path) in [("server.tls.cert_file", &t.cert_file), ("server.tls.key_file", &t.key_file)] {
                if path.as_os_str().is_empty() {
                    p.push((key.into(), "must be set too: TLS needs both a certificate and a key file".into()));
                } else if !path.is_file() {
                    p.push((key.into(), format!("{} is not a readable file", path.display())));
                }
            }
        }
        let r = &s.rate_limit;
        if r.requests_per_second > 0 && r.burst == 0 {
            p.push((
                "server.rate_limit.burst".into(),
                "must be at least 1 when server.rate_limit.requests_per_second is set (0 turns the limit off)".into(),
            ));
        }
        p
    }

    /// The SCIM base URL (`.../scim/v2`) for `meta.location`, given the bound address.
    pub fn scim_base_url(&self, bound: SocketAddr) -> String {
        let root = if self.server.public_url.is_empty() {
            let scheme = if self.server.tls.enabled() { "https" } else { "http" };
            format!("{scheme}://{bound}")
        } else {
            self.server.public_url.trim_end_matches('/').to_string()
        };
        format!("{root}/scim/v2")
    }
}

fn collect_unknown(prefix: &str, user: &Dict, known: &Dict, out: &mut Vec<String>) {
    for (k, v) in user {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match known.get(k) {
            None => out.push(key),
            // An empty table in the defaults is a map with free keys (webhook events, field
            // mappings, headers): everything under it is known.
            Some(FValue::Dict(_, kd)) if kd.is_empty() => {}
            Some(FValue::Dict(_, kd)) => {
                if let FValue::Dict(_, ud) = v {
                    collect_unknown(&key, ud, kd, out);
                }
            }
            Some(_) => {}
        }
    }
}

fn prune_unknown(user: &Dict, known: &Dict) -> Dict {
    let mut out = Dict::new();
    for (k, v) in user {
        match (known.get(k), v) {
            (None, _) => {}
            (Some(FValue::Dict(_, kd)), FValue::Dict(tag, ud)) if !kd.is_empty() => {
                out.insert(k.clone(), FValue::Dict(*tag, prune_unknown(ud, kd)));
            }
            (Some(_), v) => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

/// ` (did you mean `server.listen`?)` when a known key is near the unknown one: a sibling
/// within a small edit distance (`[targt]`, `listne`), or the same name in another table
/// (`data_dir` under `[server]`). Empty when nothing is near.
fn suggestion(key: &str, known: &Dict) -> String {
    let (parent, name) = key.rsplit_once('.').unwrap_or(("", key));
    let mut siblings = known;
    for part in parent.split('.').filter(|p| !p.is_empty()) {
        match siblings.get(part) {
            Some(FValue::Dict(_, d)) => siblings = d,
            _ => return String::new(),
        }
    }
    let prefix = if parent.is_empty() { String::new() } else { format!("{parent}.") };
    let near = siblings
        .keys()
        .map(|k| (edit_distance(&name.to_lowercase(), k), k))
        .filter(|(d, k)| *d <= (k.chars().count() / 3).clamp(1, 3))
        .min();
    if let Some((_, k)) = near {
        return format!(" (did you mean `{prefix}{k}`?)");
    }
    let mut all = Vec::new();
    known_paths("", known, &mut all);
    match all.iter().find(|p| p.rsplit('.').next() == Some(name)) {
        Some(p) => format!(" (did you mean `{p}`?)"),
        None => String::new(),
    }
}

/// Every key path of the defaults (`server.listen`, ...).
fn known_paths(prefix: &str, d: &Dict, out: &mut Vec<String>) {
    for (k, v) in d {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        if let FValue::Dict(_, inner) = v {
            known_paths(&key, inner, out);
        }
        out.push(key);
    }
}

/// Edits (insert, delete, substitute, swap two neighbours) from `a` to `b`: the optimal
/// string alignment distance. Keys are short, so the full table is cheap.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// Take the value at `path` out of `d` (descending into tables and lists); whether it was
/// there.
fn remove_path(d: &mut Dict, path: &[String]) -> bool {
    fn in_value(v: &mut FValue, path: &[String]) -> bool {
        match v {
            FValue::Dict(_, d) => remove_path(d, path),
            FValue::Array(_, items) => {
                let Some(i) = path.first().and_then(|p| p.parse::<usize>().ok()) else { return false };
                match (path.len(), items.get_mut(i)) {
                    (1, Some(_)) => {
                        items.remove(i);
                        true
                    }
                    (_, Some(item)) => in_value(item, &path[1..]),
                    _ => false,
                }
            }
            _ => false,
        }
    }
    match path {
        [] => false,
        [last] => d.remove(last).is_some(),
        [first, rest @ ..] => d.get_mut(first).is_some_and(|v| in_value(v, rest)),
    }
}

/// A value of the wrong type, in the configuration's words: `a whole number of bytes`, not
/// `u64`; `true or false`, not `a boolean`.
fn describe_value_error(e: &figment::Error, user: &Figment) -> String {
    use figment::error::Kind;
    let key = e.path.join(".");
    let what = match &e.kind {
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            format!("must be {}, not {}", expected_words(expected, &key), actual_words(actual))
        }
        Kind::UnknownVariant(v, allowed) => {
            let list = allowed.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ");
            let near = allowed.iter().map(|a| (edit_distance(v, a), a)).filter(|(d, _)| *d <= 2).min();
            match near {
                Some((_, a)) => format!("{v:?} is not one of {list} (did you mean \"{a}\"?)"),
                None => format!("{v:?} is not one of {list}"),
            }
        }
        Kind::ISizeOutOfRange(_) | Kind::USizeOutOfRange(_) => {
            format!("must be {}, and this one is out of range", expected_words("u64", &key))
        }
        other => other.to_string(),
    };
    let what = what.split_whitespace().collect::<Vec<_>>().join(" ");
    match source_of(user, &key) {
        Some(src) if !key.is_empty() => format!("{key}: {what} (set in {src})"),
        _ if !key.is_empty() => format!("{key}: {what}"),
        _ => what,
    }
}

/// What serde expected, as the config's documentation says it.
fn expected_words(expected: &str, key: &str) -> String {
    let name = key.rsplit('.').next().unwrap_or(key);
    let unit = ["bytes", "seconds", "days"]
        .iter()
        .find(|u| name.ends_with(&format!("_{u}")))
        .map(|u| format!(" of {u}"))
        .unwrap_or_default();
    match expected {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => format!("a whole number{unit} (0 or more)"),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => format!("a whole number{unit}"),
        "f32" | "f64" => format!("a number{unit} (e.g. 0.5)"),
        "a boolean" => "true or false".into(),
        "a string" | "path string" => "text in quotes".into(),
        "a sequence" => "a list in brackets, e.g. [\"a\", \"b\"]".into(),
        "a map" => "a table".into(),
        e if e.starts_with("struct ") => "a table".into(),
        other => other.into(),
    }
}

fn actual_words(actual: &figment::error::Actual) -> String {
    use figment::error::Actual;
    match actual {
        Actual::Str(s) => format!("the text {s:?}"),
        Actual::Bool(b) => b.to_string(),
        Actual::Signed(n) => n.to_string(),
        Actual::Unsigned(n) => n.to_string(),
        Actual::Float(n) => n.to_string(),
        Actual::Map => "a table".into(),
        Actual::Seq => "a list".into(),
        other => other.to_string(),
    }
}

fn source_of(fig: &Figment, key: &str) -> Option<String> {
    // `policy.group_rules[2].regex`: figment knows the array, not its element.
    let meta = fig.find_metadata(key).or_else(|| fig.find_metadata(key.split('[').next()?))?;
    Some(match &meta.source {
        Some(figment::Source::File(p)) => format!("file {}", p.display()),
        Some(other) => format!("{} {other}", meta.name),
        None => meta.name.to_string(),
    })
}

fn describe_figment_error(e: figment::Error) -> String {
    e.into_iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(toml: &str, env: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, toml).unwrap();
        // Env::prefixed reads the process environment; use a unique prefix per test instead
        // of mutating it, so tests can run in parallel.
        let prefix = format!("SCIMSYNC_TEST_{}_", std::process::id());
        let pairs: Vec<(String, String)> = env.iter().map(|(k, v)| (format!("{prefix}{k}"), v.to_string())).collect();
        for (k, v) in &pairs {
            // SAFETY: keys are unique to this test process and test; no other thread reads them.
            unsafe { std::env::set_var(k, v) };
        }
        let r = Config::load_with_env(Some(&path), Env::prefixed(&prefix).split("__"));
        for (k, _) in &pairs {
            unsafe { std::env::remove_var(k) };
        }
        r
    }

    #[test]
    fn defaults_are_valid() {
        assert!(Config::default().validate().is_empty());
    }

    #[test]
    fn example_config_loads_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let loaded = Config::load_with_env(Some(&path), Env::prefixed("SCIMSYNC_NOTHING_")).unwrap();
        assert!(loaded.unknown_keys.is_empty(), "unknown keys in example: {:?}", loaded.unknown_keys);
    }

    /// The commented `[policy]` examples are valid once uncommented (each rule kind, seats,
    /// keep_at_least), so the documentation cannot rot.
    #[test]
    fn example_policy_uncommented_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let section = &text[text.find("\n[policy]\n").expect("a [policy] section")..];
        let line = regex::Regex::new(r"^# (\[\[policy\.group_rules\]\]|[A-Za-z_0-9]+ = .*)$").unwrap();
        let uncommented: String = section
            .lines()
            .map(|l| line.captures(l).map_or(l, |c| c.get(1).unwrap().as_str()))
            .collect::<Vec<_>>()
            .join("\n");
        let l = load_str(&uncommented, &[]).unwrap();
        let p = crate::policy::Policy::compile(&l.config.policy).unwrap();
        let kinds: Vec<&str> = p.rules.iter().map(|r| r.kind.as_str()).collect();
        for k in ["exact", "contains", "glob", "regex"] {
            assert!(kinds.contains(&k), "no {k} rule in the example: {kinds:?}");
        }
        assert!(!p.seats.is_empty() && !p.keep_at_least.is_empty());
        assert!(Config::default().policy == crate::policy::PolicyConfig::default(), "no policy by default");
    }

    #[test]
    fn file_then_env_override() {
        let l = load_str(
            "[server]\nlisten = \"127.0.0.1:9999\"\n",
            &[("SCIM__MAX_PAGE_SIZE", "50"), ("SCIM__DEFAULT_PAGE_SIZE", "20")],
        )
        .unwrap();
        assert_eq!(l.config.server.listen, "127.0.0.1:9999");
        assert_eq!(l.config.scim.max_page_size, 50);
        assert_eq!(l.config.scim.default_page_size, 20);
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors_with_the_nearest_key() {
        let err = load_str(
            "[server]\nlisten = \"127.0.0.1:1\"\nlistne = \"x\"\ndata_dir = \"d\"\n[targt]\nkind = \"scim\"\n[nope]\na = 1\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        for line in [
            "server.listne: unknown key (did you mean `server.listen`?)",
            "server.data_dir: unknown key (did you mean `store.data_dir`?)",
            "targt: unknown key (did you mean `target`?)",
            "nope: unknown key (in file",
        ] {
            assert!(err.contains(line), "{line:?} missing in:\n{err}");
        }
        assert_eq!(err.lines().count(), 4, "{err}");
    }

    #[test]
    fn unknown_environment_keys_are_warned_not_fatal() {
        let l = load_str("", &[("SERVER__LISTNE", "x"), ("SOMETHING_ELSE", "y")]).unwrap();
        let mut k = l.unknown_keys.clone();
        k.sort();
        assert_eq!(k, vec!["server.listne (did you mean `server.listen`?)".to_string(), "something_else".to_string()]);
    }

    /// Every mistake in the file at once (not only the first), each on one line, in the
    /// configuration's words.
    #[test]
    fn every_error_is_reported_at_once_in_plain_words() {
        let err = load_str(
            "[server]\nmax_body_bytes = \"lots\"\nlisten = \"nowhere\"\n[scim]\nmax_page_size = -3\n\
             [outbox]\nretry_base_seconds = \"soon\"\n[outbox.deletion_guard]\nenabled = \"yes\"\n\
             [reconcile]\nschedule = \"every 5 minutes\"\n[log]\nformat = \"jsno\"\n[targt]\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "server.max_body_bytes: must be a whole number of bytes (0 or more), not the text \"lots\" (set in file",
            "scim.max_page_size: must be a whole number (0 or more), not -3",
            "outbox.retry_base_seconds: must be a number of seconds (e.g. 0.5), not the text \"soon\"",
            "outbox.deletion_guard.enabled: must be true or false, not the text \"yes\"",
            "log.format: \"jsno\" is not one of \"text\", \"json\" (did you mean \"json\"?)",
            "server.listen: \"nowhere\" is not an IP:port address",
            "reconcile.schedule: \"every 5 minutes\" is not a cron expression (The 'Seconds' field",
            "targt: unknown key (did you mean `target`?)",
        ] {
            assert!(err.contains(needle), "{needle:?} missing in:\n{err}");
        }
        assert_eq!(err.lines().count(), 8, "one line per problem:\n{err}");
        for word in ["u64", "f64", "a boolean", "invalid type"] {
            assert!(!err.contains(word), "{word:?} is serde's word, not the config's:\n{err}");
        }
    }

    #[test]
    fn invalid_value_names_key_and_source() {
        let err = load_str("[server]\nlisten = \"not an address\"\n", &[]).unwrap_err().to_string();
        assert!(err.contains("server.listen"), "{err}");
        assert!(err.contains("c.toml"), "{err}");
    }

    #[test]
    fn wrong_type_names_key() {
        let err = load_str("[scim]\nmax_page_size = \"many\"\n", &[]).unwrap_err().to_string();
        assert!(err.contains("scim.max_page_size"), "{err}");
    }

    #[test]
    fn page_sizes_checked_together() {
        let err = load_str("[scim]\nmax_page_size = 10\ndefault_page_size = 20\n", &[]).unwrap_err().to_string();
        assert!(err.contains("scim.default_page_size"), "{err}");
    }

    #[test]
    fn secrets_never_print() {
        let l = load_str("[target]\nkind = \"scim\"\n[target.scim]\nbase_url = \"http://127.0.0.1:1/scim/v2\"\nbearer_token = \"s3cret\"\n", &[])
            .unwrap();
        assert_eq!(l.config.target.scim.bearer_token.expose(), "s3cret");
        assert!(!format!("{:?}", l.config).contains("s3cret"));
        assert!(!serde_json::to_string(&l.config).unwrap().contains("s3cret"));
    }

    #[test]
    fn store_backend_defaults_to_sqlite_and_postgres_needs_a_url() {
        let l = load_str("", &[]).unwrap();
        assert_eq!(l.config.store.backend, StoreBackend::Sqlite);
        assert_eq!(l.config.store.postgres.schema, "scimsync");
        let err = load_str("[store]\nbackend = \"postgres\"\n", &[]).unwrap_err().to_string();
        assert!(err.contains("store.postgres.url: must be set when store.backend = \"postgres\""), "{err}");
        let err = load_str("[store]\nbackend = \"mysql\"\n", &[]).unwrap_err().to_string();
        assert!(err.contains("store.backend"), "{err}");
        let l = load_str(
            "[store]\nbackend = \"postgres\"\n[store.postgres]\nurl = \"postgres://scimsync@db.example.com/scimsync\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(l.config.store.backend, StoreBackend::Postgres);
    }

    #[test]
    fn postgres_settings_are_checked_and_name_their_key() {
        let err = load_str(
            "[store.postgres]\nurl = \"postgres://h:notaport/db\"\npool_size = 0\nconnect_timeout_seconds = 0\n\
             statement_timeout_seconds = 0\nschema = \"Bad-Name\"\nca_file = \"/nonexistent/ca.pem\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        for key in [
            "store.postgres.url: is not a PostgreSQL connection URL",
            "store.postgres.pool_size: must be between 1 and 1024",
            "store.postgres.connect_timeout_seconds: must be",
            "store.postgres.statement_timeout_seconds: must be",
            "store.postgres.schema: \"Bad-Name\" is not a plain schema name",
            "store.postgres.ca_file: /nonexistent/ca.pem is not a readable file",
        ] {
            assert!(err.contains(key), "{key} missing in:\n{err}");
        }
        for schema in ["pg_catalog", "1abc", "", &"a".repeat(64), "sch\u{e9}ma"] {
            let err = load_str(&format!("[store.postgres]\nschema = {schema:?}\n"), &[]).unwrap_err().to_string();
            assert!(err.contains("store.postgres.schema"), "{schema:?}: {err}");
        }
        for schema in ["scimsync", "_a", "tenant_2", &"a".repeat(63)] {
            assert!(load_str(&format!("[store.postgres]\nschema = {schema:?}\n"), &[]).is_ok(), "{schema:?}");
        }
        // One password, in one place.
        let err =
            load_str("[store.postgres]\nurl = \"postgres://u:pw@h/db\"\n", &[("STORE__POSTGRES__PASSWORD", "other")])
                .unwrap_err()
                .to_string();
        assert!(err.contains("store.postgres.password: is set and store.postgres.url carries a password"), "{err}");
        assert!(!err.contains("pw@") && !err.contains("other"), "{err}");
    }

    #[test]
    fn postgres_password_comes_from_the_environment_and_never_prints() {
        let l = load_str(
            "[store]\nbackend = \"postgres\"\n[store.postgres]\nurl = \"postgres://scimsync@db/scimsync\"\n",
            &[("STORE__POSTGRES__PASSWORD", "pg-s3cret")],
        )
        .unwrap();
        assert_eq!(l.config.store.postgres.password.expose(), "pg-s3cret");
        assert!(!format!("{:?}", l.config).contains("pg-s3cret"));
        assert!(!serde_json::to_string(&l.config).unwrap().contains("pg-s3cret"));
        // A password inside the URL is redacted too, and the URL still works for the driver.
        let l = load_str(
            "[store.postgres]\nurl = \"postgres://scimsync:url-s3cret@db:5432/scimsync?sslmode=require\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            l.config.store.postgres.url.expose(),
            "postgres://scimsync:url-s3cret@db:5432/scimsync?sslmode=require"
        );
        let shown = serde_json::to_string(&l.config).unwrap();
        assert!(!shown.contains("url-s3cret") && !format!("{:?}", l.config).contains("url-s3cret"), "{shown}");
        assert!(shown.contains("postgres://scimsync:<redacted>@db:5432/scimsync?sslmode=require"), "{shown}");
    }

    #[test]
    fn database_url_redaction_covers_every_place_a_password_can_be() {
        for (url, shown) in [
            ("postgres://u:p%40ss@h/db", "postgres://u:<redacted>@h/db"),
            (
                "postgresql://u:p@ss/word@h:5432/db?sslmode=require",
                "postgresql://u:<redacted>@h:5432/db?sslmode=require",
            ),
            (
                "postgres://u@h/db?sslmode=require&password=x%26y",
                "postgres://u@h/db?sslmode=require&password=<redacted>",
            ),
            ("postgres://u@h/db?Password=x", "postgres://u@h/db?password=<redacted>"),
            ("host=h user=u password=secret dbname=d", "host=h user=u password=<redacted> dbname=d"),
            ("host=h password = 'se cr\\'et' dbname=d", "host=h password=<redacted> dbname=d"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            ("host=h user=u", "host=h user=u"),
            ("", ""),
        ] {
            let u = DatabaseUrl(url.into());
            assert_eq!(u.redacted(), shown, "{url}");
            assert_eq!(u.has_password(), url != shown, "{url}");
        }
    }

    #[test]
    fn scim_target_needs_a_url() {
        let err = load_str("[target]\nkind = \"scim\"\n", &[]).unwrap_err().to_string();
        assert!(err.contains("target.scim.base_url"), "{err}");
    }

    #[test]
    fn bulk_limits_are_checked() {
        let err =
            load_str("[scim]\nbulk_max_operations = 0\nbulk_max_payload_bytes = 10\n", &[]).unwrap_err().to_string();
        assert!(err.contains("scim.bulk_max_operations"), "{err}");
        assert!(err.contains("scim.bulk_max_payload_bytes"), "{err}");
        let l = load_str("[scim]\nbulk_max_operations = 5\n", &[("SCIM__BULK_MAX_PAYLOAD_BYTES", "4096")]).unwrap();
        assert_eq!((l.config.scim.bulk_max_operations, l.config.scim.bulk_max_payload_bytes), (5, 4096));
    }

    /// The election's timings: a leader renews at least once before its lease can lapse,
    /// and its fencing margin fits between its last renewal and the lease's end.
    #[test]
    fn cluster_timings_are_checked() {
        let l =
            load_str("[cluster]\nlease_ttl_seconds = 30\nrenew_every_seconds = 10\nfence_margin_seconds = 5\n", &[])
                .unwrap();
        assert_eq!(
            (
                l.config.cluster.lease_ttl_seconds,
                l.config.cluster.renew_every_seconds,
                l.config.cluster.fence_margin_seconds
            ),
            (30, 10, 5)
        );
        for (toml, key) in [
            ("renew_every_seconds = 0", "cluster.renew_every_seconds"),
            ("lease_ttl_seconds = 10", "cluster.lease_ttl_seconds"),
            ("fence_margin_seconds = 0", "cluster.fence_margin_seconds"),
            ("fence_margin_seconds = 6", "cluster.fence_margin_seconds"),
        ] {
            let err = load_str(&format!("[cluster]\n{toml}\n"), &[]).unwrap_err().to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
        // The edge that still leaves room: 15 - 2 x 5 = 5.
        assert!(load_str("[cluster]\nfence_margin_seconds = 5\n", &[]).is_ok());
    }

    #[test]
    fn admin_settings_are_checked() {
        let err = load_str("[admin]\nlisten = \"nine\"\nbearer_token = \"short\"\n", &[]).unwrap_err().to_string();
        assert!(err.contains("admin.listen"), "{err}");
        assert!(err.contains("admin.bearer_token"), "{err}");
        assert!(!err.contains("short"), "a secret must not be echoed: {err}");
        let err = load_str("[server]\nlisten = \"127.0.0.1:7000\"\n[admin]\nlisten = \"127.0.0.1:7000\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("admin.listen"), "{err}");
        let l = load_str("[admin]\nlisten = \"\"\n", &[]).unwrap();
        assert!(l.config.admin.listen.is_empty());
        assert_eq!(Config::default().admin.listen, "127.0.0.1:9090");
    }

    #[test]
    fn deletion_guard_is_on_by_default_and_checked() {
        let l = load_str("", &[]).unwrap();
        let g = &l.config.outbox.deletion_guard;
        assert!(g.enabled);
        assert_eq!((g.threshold_count, g.share_min_count, g.window_seconds), (50, 10, 3600));
        let err = load_str("[outbox.deletion_guard]\nthreshold_share = 1.5\nwindow_seconds = 0\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("outbox.deletion_guard.threshold_share"), "{err}");
        assert!(err.contains("outbox.deletion_guard.window_seconds"), "{err}");
        let l = load_str("[outbox.deletion_guard]\nenabled = false\n", &[]).unwrap();
        assert!(!l.config.outbox.deletion_guard.enabled);
    }

    #[test]
    fn server_ops_settings_are_checked() {
        let d = Config::default();
        assert_eq!((d.server.rate_limit.requests_per_second, d.server.rate_limit.burst), (1000, 2000));
        assert!(!d.server.tls.enabled());
        let err = load_str(
            "[server]\nshutdown_grace_seconds = 0\n[server.tls]\ncert_file = \"/nonexistent.pem\"\n\
             [server.rate_limit]\nrequests_per_second = 5\nburst = 0\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        for key in
            ["server.shutdown_grace_seconds", "server.tls.cert_file", "server.tls.key_file", "server.rate_limit.burst"]
        {
            assert!(err.contains(key), "{key} missing in: {err}");
        }
        let l = load_str("[server.rate_limit]\nrequests_per_second = 0\nburst = 0\n", &[]).unwrap();
        assert_eq!(l.config.server.rate_limit.requests_per_second, 0);
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let e = Config::load(Some(Path::new("/nonexistent/scimsync.toml"))).unwrap_err();
        assert!(matches!(e, ConfigError::MissingFile(_)));
    }
}
