//! The PostgreSQL store (issue 14), for teams that run the bridge on a database they already
//! run highly available. Being built: every group of the store's face is here (`face.rs`),
//! with the provisioning policy's checks in each resource write's transaction
//! (`policy_facts.rs`: policed writes serialised by one advisory lock, across daemons).
//!
//! Owns: the PostgreSQL connection pool and every PostgreSQL statement. Must not touch: HTTP,
//! the SCIM wire format, cron (as the rest of `store`).
//!
//! There is no writer thread here: each store write is one PostgreSQL transaction on a pooled
//! connection, and PostgreSQL orders concurrent ones (a write locks its resource's row first,
//! so one resource's outbox rows get ids in commit order). Every connection starts with
//! `synchronous_commit=on` (so a returned commit is on the server's disk, whatever the
//! server's default), the configured `statement_timeout`, `search_path` = the schema, and
//! `idle_in_transaction_session_timeout` = [`IDLE_IN_TRANSACTION_TIMEOUT`].

mod audit;
mod cluster;
mod face;
pub mod filter_sql;
mod locks;
mod migrations;
mod outbox;
mod policy_facts;
mod resources;
mod sync;
mod tls;
mod tokens;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_util::sync::CancellationToken;

use super::StoreError;
use crate::model::Resource;

/// How long the server lets a session sit idle inside a transaction before it ends the session
/// (`idle_in_transaction_session_timeout`). A daemon stalled in the middle of a transaction (a
/// paused process, a frozen VM, a machine out of CPU) would otherwise hold that transaction's
/// row locks for as long as it stalls: an outbox claim's lock on the leader lease (`FOR
/// SHARE`) blocks every other node's takeover, and its locks on outbox rows block the IdP
/// writes on the other nodes that touch them, so the whole cluster stalls with one node. Ended
/// by the server, the stalled transaction rolls back (a claim made under a lease that may have
/// gone commits nothing) and the locks go. Well under the leader lease's 15 s, far above the
/// milliseconds between two statements of one of our transactions. `scimsync store copy`'s
/// one long transaction turns it off.
pub const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach the database; built from `config::PostgresConfig` by the wiring.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// libpq-style URL or key=value string.
    pub url: String,
    /// Overrides a password in the URL when set.
    pub password: Option<String>,
    pub pool_size: usize,
    /// Bounds each connection attempt (TCP, TLS, authentication) and each wait for a pooled
    /// connection.
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    /// Extra CA certificates (PEM) for the server's certificate.
    pub ca_file: Option<PathBuf>,
    /// A plain identifier (lower-case letters, digits, `_`): it is written into DDL.
    pub schema: String,
}

/// Where opening the store stands, for `/readyz` and the logs while the database is down at
/// start: how many attempts failed and the last reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenState {
    pub ready: bool,
    pub failed_attempts: u32,
    pub last_error: Option<String>,
}

/// Shared view of [`OpenState`]: [`PgStore::open`] updates it, readiness reads it.
#[derive(Debug, Clone, Default)]
pub struct OpenProgress(Arc<Mutex<OpenState>>);

impl OpenProgress {
    pub fn snapshot(&self) -> OpenState {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    /// Where opening stands, in words for `/readyz`, the SCIM API's 503s and the logs:
    /// `connecting to PostgreSQL (attempt 3, last error: ...)`, or `open`.
    pub fn describe(&self) -> String {
        let s = self.snapshot();
        match (s.ready, &s.last_error) {
            (true, _) => "open".into(),
            (false, None) => format!("connecting to PostgreSQL (attempt {})", s.failed_attempts + 1),
            (false, Some(e)) => {
                format!("connecting to PostgreSQL (attempt {}, last error: {e})", s.failed_attempts + 1)
            }
        }
    }
    /// The store is open: for a store that opens at once (SQLite), whose progress nobody
    /// else records.
    pub fn mark_open(&self) {
        self.update(|s| {
            s.ready = true;
            s.last_error = None;
        });
    }
    fn update(&self, f: impl FnOnce(&mut OpenState)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// First and longest wait between attempts to reach a database that is down at start.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Handle to the PostgreSQL store; cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    schema: Arc<str>,
    /// The schema's size on disk as last read (`AdminStore::size_bytes` is synchronous, the
    /// query is not): refreshed by each `settings()` and `schema_version()` call.
    size: Arc<std::sync::atomic::AtomicU64>,
    /// The leader lease this store last held (see `cluster.rs`): every outbox claim checks it
    /// is still held, in the claim's own transaction.
    fence: Arc<Mutex<cluster::Fence>>,
}

/// Why one attempt to open failed: worth another try (the server is down, starting, or
/// unreachable) or not (refused credentials, no such database, a bad option).
enum Attempt {
    Retry(String),
    Fail(StoreError),
}

impl PgStore {
    /// Open the store: connect, create the schema and run the migrations (once, under an
    /// advisory lock, however many daemons start together), then build the pool.
    ///
    /// A database that cannot be reached is tried again with backoff (each attempt bounded by
    /// `connect_timeout`, each failure logged and recorded in `progress`) until it answers or
    /// `cancel` fires ([`StoreError::Closed`]). What another attempt cannot fix fails at once
    /// with a message saying what to do: a wrong password, an unknown role or database, a
    /// schema newer than this build.
    pub async fn open(
        opts: &PgOptions,
        progress: &OpenProgress,
        cancel: &CancellationToken,
    ) -> Result<PgStore, StoreError> {
        check_schema_name(&opts.schema)?;
        let config = connection_config(opts)?;
        let tls = tls::MakeRustls::new(opts.ca_file.as_deref()).map_err(StoreError::Internal)?;
        let mut wait = RETRY_FIRST;
        loop {
            match Self::open_once(opts, &config, &tls).await {
                Ok(store) => {
                    progress.update(|s| {
                        s.ready = true;
                        s.last_error = None;
                    });
                    return Ok(store);
                }
                Err(Attempt::Fail(e)) => {
                    progress.update(|s| s.last_error = Some(e.to_string()));
                    return Err(e);
                }
                Err(Attempt::Retry(reason)) => {
                    progress.update(|s| {
                        s.failed_attempts += 1;
                        s.last_error = Some(reason.clone());
                    });
                    tracing::warn!(
                        error = %reason,
                        retry_in_seconds = wait.as_secs_f64(),
                        "PostgreSQL store not reachable; trying again"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = cancel.cancelled() => return Err(StoreError::Closed),
                    }
                    wait = (wait * 2).min(RETRY_MAX);
                }
            }
        }
    }

    async fn open_once(
        opts: &PgOptions,
        config: &tokio_postgres::Config,
        tls: &tls::MakeRustls,
    ) -> Result<PgStore, Attempt> {
        // Migrations on a connection of their own: the session advisory lock they hold goes
        // with it, whatever happens, instead of staying on a pooled connection.
        let (mut client, connection) = config.connect(tls.clone()).await.map_err(classify)?;
        let connection = tokio::spawn(connection);
        // No statement timeout on this connection: waiting for another daemon's migrations,
        // or a migration rewriting a large table, may take longer than a request may.
        let migrated = match client.batch_execute("SET statement_timeout = 0").await {
            Ok(()) => migrations::apply(&mut client, &opts.schema).await,
            Err(e) => Err(e.into()),
        };
        drop(client);
        let _ = connection.await;
        migrated.map_err(Attempt::Fail)?;

        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            // Fast: a pooled connection is checked with `is_closed` only; a connection the
            // server dropped fails its statement, and the next checkout gets a new one.
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(opts.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(opts.connect_timeout))
            .create_timeout(Some(opts.connect_timeout))
            .build()
            .map_err(|e| Attempt::Fail(StoreError::Internal(format!("cannot build the PostgreSQL pool: {e}"))))?;
        Ok(PgStore { pool, schema: opts.schema.as_str().into(), size: Arc::default(), fence: Arc::default() })
    }

    /// A pooled connection, for the store's own tools (`store::copy`).
    pub(in crate::store) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.conn().await
    }

    /// A pooled connection; [`StoreError::Closed`] once the store was closed, as on SQLite;
    /// [`StoreError::Unavailable`] when the database cannot give one (down, full).
    async fn conn(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Closed => StoreError::Closed,
            // The driver's error with its cause ("Connection refused"), not only "error
            // connecting to server".
            deadpool_postgres::PoolError::Backend(e) => {
                StoreError::Unavailable(format!("no PostgreSQL connection: {}", describe(&e)))
            }
            e => StoreError::Unavailable(format!("no PostgreSQL connection: {e}")),
        })
    }

    /// The schema version this build migrates to.
    pub fn expected_schema_version() -> u64 {
        migrations::expected()
    }

    /// Read the bytes the schema's tables take (with their indexes and TOAST) into the value
    /// [`AdminStore::size_bytes`](crate::store::AdminStore::size_bytes) returns.
    async fn refresh_size(&self, c: &impl tokio_postgres::GenericClient) -> Result<(), StoreError> {
        let bytes: i64 = c
            .query_one(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relkind = 'r'",
                &[&&*self.schema],
            )
            .await?
            .get(0);
        self.size.store(bytes.max(0) as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// The session settings every connection must run with, as the server reports them, so a
    /// test can read them back (a misspelt option would otherwise silently do nothing).
    pub async fn read_settings(&self) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.conn().await?;
        self.refresh_size(&**conn).await?;
        let mut out = Vec::new();
        for name in [
            "synchronous_commit",
            "search_path",
            "statement_timeout",
            "application_name",
            "idle_in_transaction_session_timeout",
        ] {
            let row = conn.query_one(&format!("SHOW {name}"), &[]).await?;
            out.push((name.to_string(), row.get::<_, String>(0)));
        }
        Ok(out)
    }
}

/// The name an audit record gives a resource: its userName, else its displayName.
fn resource_name(r: &Resource) -> Option<&str> {
    ["userName", "displayName"].iter().find_map(|k| r.attrs.get(*k).and_then(|v| v.as_str()))
}

/// Validate the schema name again here: it is written into SQL (config checks it too, but
/// the store must not depend on that).
fn check_schema_name(schema: &str) -> Result<(), StoreError> {
    let plain = !schema.is_empty()
        && schema.len() <= 63
        && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && schema.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain { Ok(()) } else { Err(StoreError::Internal(format!("{schema:?} is not a plain schema name"))) }
}

/// The driver's configuration: the URL, the password, and the options every session starts
/// with (sent in the start-up packet: no extra round trip, and no pooled connection can miss
/// them).
fn connection_config(opts: &PgOptions) -> Result<tokio_postgres::Config, StoreError> {
    let mut config: tokio_postgres::Config = opts
        .url
        .parse()
        .map_err(|e| StoreError::Internal(format!("store.postgres.url is not a PostgreSQL connection URL: {e}")))?;
    if let Some(password) = &opts.password {
        config.password(password.as_bytes());
    }
    config.connect_timeout(opts.connect_timeout);
    if config.get_application_name().is_none() {
        config.application_name("scimsync");
    }
    let ours = format!(
        "-c synchronous_commit=on -c statement_timeout={} -c search_path={} -c idle_in_transaction_session_timeout={}",
        opts.statement_timeout.as_millis().max(1),
        opts.schema,
        IDLE_IN_TRANSACTION_TIMEOUT.as_millis()
    );
    let options = match config.get_options() {
        Some(theirs) if !theirs.trim().is_empty() => format!("{theirs} {ours}"),
        _ => ours,
    };
    config.options(options);
    Ok(config)
}

/// Sort a failed connection attempt: an unreachable, starting or overloaded server is worth
/// another try; what the server refused on purpose is not.
fn classify(e: tokio_postgres::Error) -> Attempt {
    let text = describe(&e);
    match e.code() {
        None => Attempt::Retry(text),
        Some(code)
            if [
                SqlState::CANNOT_CONNECT_NOW,
                SqlState::TOO_MANY_CONNECTIONS,
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
            ]
            .contains(code) =>
        {
            Attempt::Retry(text)
        }
        Some(code) => {
            let hint = if *code == SqlState::INVALID_PASSWORD || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            {
                " (check store.postgres.password / SCIMSYNC_STORE__POSTGRES__PASSWORD and the user in store.postgres.url)"
            } else if *code == SqlState::INVALID_CATALOG_NAME {
                " (create the database, or fix the database name in store.postgres.url)"
            } else {
                ""
            };
            Attempt::Fail(StoreError::Internal(format!("PostgreSQL refused the connection: {text}{hint}")))
        }
    }
}

/// The driver's error with its cause (`db error: FATAL: password authentication failed ...`,
/// `error connecting to server: Connection refused`): its `Display` alone may say only
/// "db error".
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let c = cause.to_string();
        if !s.contains(&c) {
            s = format!("{s}: {c}");
        }
        source = cause.source();
    }
    s
}

impl From<tokio_postgres::Error> for StoreError {
    /// A lost connection or a server that is going away is `Unavailable` (503: retry), not
    /// `Internal` (500): the IdP must try again, and nothing was acknowledged.
    fn from(e: tokio_postgres::Error) -> Self {
        if unavailable(&e) { StoreError::Unavailable(describe(&e)) } else { StoreError::Internal(describe(&e)) }
    }
}

/// Whether an error says the server cannot be reached now rather than that the statement is
/// wrong: the connection closed or broke (an I/O error under it), class 08 (connection
/// exception), 57P01-57P03 (shut down, crashed, cannot connect now), 53300 (too many
/// connections), 57014 (the statement timeout: a server too slow to answer now), 40P01 and
/// 40001 (the server rolled the transaction back to break a deadlock or a serialization
/// conflict with a concurrent one: the same request succeeds when tried again).
fn unavailable(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        None => {
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                if cause.is::<std::io::Error>() {
                    return true;
                }
                source = cause.source();
            }
            false
        }
        Some(code) if *code == SqlState::QUERY_CANCELED => true,
        Some(code) => {
            let c = code.code();
            c.starts_with("08")
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::TOO_MANY_CONNECTIONS,
                    SqlState::T_R_DEADLOCK_DETECTED,
                    SqlState::T_R_SERIALIZATION_FAILURE,
                ]
                .contains(code)
        }
    }
}

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod diff_tests;
#[cfg(test)]
mod fixture;
#[cfg(test)]
mod outbox_tests;
#[cfg(test)]
mod policy_tests;
#[cfg(test)]
mod sync_tests;
#[cfg(test)]
mod tests;
