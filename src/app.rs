//! Wiring: open the store, start the HTTP server (later: outbox worker, scheduler), and
//! shut them down in order — stop accepting HTTP and finish in-flight requests, then close
//! the store's writer last so every acknowledged change is committed.
//!
//! Owns: start and shutdown order. Must not touch: protocol rules, SQL, routing details.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use std::time::Duration;

use tokio::sync::Notify;

use crate::config::{Config, DeprovisionConfig, TargetKind, UpdateMethodConfig};
use crate::downstream::scim_target::{Auth, Deprovision, ScimTarget, ScimTargetOptions, UpdateMethod};
use crate::downstream::webhook_target::WebhookTarget;
use crate::downstream::{Target, Throttle, dry_run::DryRun};
use crate::http::ops_api::{self, OpsState};
use crate::http::{self, ApiState, Gate};
use crate::outbox_worker::{self, WorkerOptions};
use crate::service::{ListLimits, Service};
use crate::store::{NewAudit, NewToken, OpenProgress, Store, StoreError, StoreOptions};

pub fn store_options(cfg: &Config) -> StoreOptions {
    StoreOptions {
        data_dir: cfg.store.data_dir.clone(),
        busy_timeout_seconds: cfg.store.busy_timeout_seconds,
        readers: cfg.store.readers,
        max_batch: cfg.store.max_batch,
    }
}

/// How to reach the PostgreSQL store, from `[store.postgres]`.
pub fn pg_options(cfg: &Config) -> crate::store::PgOptions {
    let p = &cfg.store.postgres;
    crate::store::PgOptions {
        url: p.url.0.clone(),
        password: (!p.password.expose().is_empty()).then(|| p.password.expose().to_string()),
        pool_size: p.pool_size,
        connect_timeout: Duration::from_secs(p.connect_timeout_seconds),
        statement_timeout: Duration::from_secs(p.statement_timeout_seconds),
        ca_file: (!p.ca_file.as_os_str().is_empty()).then(|| p.ca_file.clone()),
        schema: p.schema.clone(),
    }
}

/// Open the configured store: the embedded SQLite one in `store.data_dir`, or PostgreSQL
/// (`[store.postgres]`), whose open is retried with backoff while the database cannot be
/// reached, until it answers or `give_up` fires.
pub async fn open_store(cfg: &Config, give_up: &CancellationToken) -> Result<Store, StoreError> {
    open_store_reporting(cfg, &OpenProgress::default(), give_up).await
}

/// [`open_store`], recording in `progress` where opening stands (for `/readyz` while a
/// PostgreSQL is down at start); it says "open" once the store is.
pub async fn open_store_reporting(
    cfg: &Config,
    progress: &OpenProgress,
    give_up: &CancellationToken,
) -> Result<Store, StoreError> {
    match cfg.store.backend {
        crate::config::StoreBackend::Sqlite => {
            let store = Store::open(&store_options(cfg))?;
            progress.mark_open();
            Ok(store)
        }
        crate::config::StoreBackend::Postgres => Store::open_postgres(&pg_options(cfg), progress, give_up).await,
    }
}

/// The listeners, served from before the store opens (see [`serve_listeners`]).
pub struct Serving {
    api: Arc<Gate<ApiState>>,
    ops: Arc<Gate<OpsState>>,
    scim: tokio::task::JoinHandle<()>,
    admin: Option<tokio::task::JoinHandle<()>>,
    grace: Duration,
    /// The admin listener's URL as other nodes and operators reach it (empty when it is
    /// off): a wildcard address is shown as this host's name.
    admin_url: String,
}

impl Serving {
    /// Wait for both listeners to finish after `shutdown` (the SCIM one drains within
    /// `server.shutdown_grace_seconds`; a scrape still running on the admin one gets the
    /// same budget, not more).
    async fn finish(self) {
        let _ = self.scim.await;
        if let Some(a) = self.admin
            && tokio::time::timeout(self.grace, a).await.is_err()
        {
            tracing::warn!("admin listener still busy at the shutdown deadline; leaving it");
        }
        tracing::info!("http server stopped");
    }

    /// The daemon stopped (SIGTERM) before its store opened: nothing else runs yet.
    pub async fn stop_before_open(self) {
        self.finish().await;
    }
}

/// Serve both listeners at once, before the store is open: until [`run`] opens their
/// gates, `/healthz` is alive, `/readyz` answers 503 with where opening the store stands
/// (`progress`), and the SCIM API answers 503 SCIM errors with `Retry-After`. Both stop at
/// `shutdown`: the admin listener with the SCIM one, so readiness and metrics stay
/// answerable while in-flight requests finish.
pub fn serve_listeners(
    cfg: &Config,
    listener: TcpListener,
    admin: Option<TcpListener>,
    progress: &OpenProgress,
    live: &crate::reload::Live,
    shutdown: &CancellationToken,
) -> Serving {
    let api = Arc::new(Gate::new(progress.clone()));
    let ops = Arc::new(Gate::new(progress.clone()));
    let grace = Duration::from_secs(cfg.server.shutdown_grace_seconds);
    let admin_url = admin.as_ref().and_then(|l| l.local_addr().ok()).map(advertised_url).unwrap_or_default();
    let admin = admin.map(|l| {
        let bearer = (!cfg.admin.bearer_token.is_empty()).then(|| cfg.admin.bearer_token.expose().to_string());
        tokio::spawn(ops_api::serve(l, bearer, ops.clone(), shutdown.clone()))
    });
    let scim = tokio::spawn(http::serve(listener, api.clone(), live.tls.clone(), shutdown.clone(), grace));
    Serving { api, ops, scim, admin, grace, admin_url }
}

/// `http://ADDR` of a bound listener as another host reaches it: a wildcard address (every
/// interface) is replaced by this host's name.
fn advertised_url(addr: std::net::SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        return format!("http://{host}:{}", addr.port());
    }
    format!("http://{addr}")
}

/// On a fresh install there is no token and no IdP could connect: make one, to be shown once.
pub async fn bootstrap_token(store: &Store) -> Result<Option<NewToken>, StoreError> {
    if store.tokens().list().await?.iter().any(|t| t.revoked_at.is_none()) {
        return Ok(None);
    }
    let audit = NewAudit {
        actor: "daemon".into(),
        token_id: None,
        method: "token create".into(),
        resource_type: "token".into(),
        resource_id: None,
        request_id: None,
        summary: serde_json::json!({"reason": "first start: no active token"}),
    };
    Ok(Some(store.tokens().create("bootstrap", audit).await?))
}

/// Audit records pruned per transaction: small enough that the writer (and so every SCIM
/// write) never waits long behind a prune.
const AUDIT_PRUNE_BATCH: usize = 1000;

/// Delete audit records older than `audit.retention_days`, at start and then every
/// `audit.prune_interval_seconds`, until `stop`.
pub async fn prune_audit(store: Store, retention_days: u64, interval: Duration, stop: CancellationToken) {
    if retention_days == 0 {
        return;
    }
    loop {
        let before = crate::model::time_before(Duration::from_secs(retention_days * 86_400));
        match store.audit().prune(&before, AUDIT_PRUNE_BATCH).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(records = n, before, "audit log: expired records deleted"),
            Err(e) => tracing::warn!(error = %e, "audit log: pruning failed; will try again"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

pub async fn bind(cfg: &Config) -> std::io::Result<TcpListener> {
    let addr: SocketAddr = cfg
        .server
        .listen
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("server.listen: {e}")))?;
    TcpListener::bind(addr).await
}

/// The admin listener (`admin.listen`), or `None` when it is disabled (`""`).
pub async fn bind_admin(cfg: &Config) -> std::io::Result<Option<TcpListener>> {
    if cfg.admin.listen.is_empty() {
        return Ok(None);
    }
    let addr: SocketAddr = cfg
        .admin
        .listen
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("admin.listen: {e}")))?;
    TcpListener::bind(addr).await.map(Some)
}

/// Which app deliveries go to, as the store records it: `dry-run`, or the kind and base URL.
pub fn target_identity(cfg: &Config) -> String {
    match cfg.target.kind {
        TargetKind::DryRun => crate::store::DRY_RUN.to_string(),
        TargetKind::Scim => format!("scim {}", cfg.target.scim.base_url.trim_end_matches('/')),
        TargetKind::Webhook => format!("webhook {}", cfg.target.webhook.base_url.trim_end_matches('/')),
        TargetKind::None => "none".to_string(),
    }
}

/// The configured downstream target, or `None` for the embedded default (keep queuing).
/// Where deliveries go, in words for the status page: the kind and the app's URL, with any
/// user name or password in the URL left out.
pub fn target_label(cfg: &Config) -> String {
    let url = |u: &str| match reqwest::Url::parse(u) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.to_string()
        }
        Err(_) => u.to_string(),
    };
    match cfg.target.kind {
        TargetKind::None => "none (changes stay queued)".into(),
        TargetKind::DryRun => "dry-run (nothing is sent to an app)".into(),
        TargetKind::Scim => format!("scim {}", url(&cfg.target.scim.base_url)),
        TargetKind::Webhook => format!("webhook {}", url(&cfg.target.webhook.base_url)),
    }
}

/// Whether the configured target can be reconciled (it lists the app's accounts), for the
/// commands that read reports without a running daemon.
pub fn reconcilable(cfg: &Config) -> crate::reconcile::report::Reconcilable {
    use crate::reconcile::report::Reconcilable;
    match build_target(cfg) {
        Ok(Some(t)) if t.can_list() => Reconcilable::Yes,
        _ => Reconcilable::No { target: cfg.target.kind.as_str().to_string() },
    }
}

pub fn build_target(cfg: &Config) -> Result<Option<Target>, String> {
    let throttle = Throttle::new(cfg.outbox.rate_limit_per_second, cfg.outbox.rate_limit_burst);
    Ok(match cfg.target.kind {
        TargetKind::None => None,
        TargetKind::Webhook => Some(Target::Webhook(WebhookTarget::new(cfg.target.webhook.options(throttle)?)?)),
        TargetKind::DryRun => {
            let f = &cfg.target.dry_run.file;
            let path = if f.is_absolute() { f.clone() } else { cfg.store.data_dir.join(f) };
            Some(Target::DryRun(DryRun { path }))
        }
        TargetKind::Scim => {
            let s = &cfg.target.scim;
            let auth = if !s.oauth_token_url.is_empty() {
                Auth::ClientCredentials {
                    token_url: s.oauth_token_url.clone(),
                    client_id: s.oauth_client_id.clone(),
                    client_secret: s.oauth_client_secret.expose().to_string(),
                    scope: s.oauth_scope.clone(),
                }
            } else if !s.bearer_token.is_empty() {
                Auth::Bearer(s.bearer_token.expose().to_string())
            } else if !s.basic_user.is_empty() {
                Auth::Basic { user: s.basic_user.clone(), password: s.basic_password.expose().to_string() }
            } else {
                Auth::None
            };
            Some(Target::Scim(ScimTarget::new(ScimTargetOptions {
                base_url: s.base_url.clone(),
                auth,
                update_method: match s.update_method {
                    UpdateMethodConfig::Put => UpdateMethod::Put,
                    UpdateMethodConfig::Patch => UpdateMethod::Patch,
                },
                deprovision: match s.deprovision {
                    DeprovisionConfig::Deactivate => Deprovision::Deactivate,
                    DeprovisionConfig::Delete => Deprovision::Delete,
                },
                max_members_per_patch: s.max_members_per_patch,
                page_size: s.page_size,
                request_timeout: Duration::from_secs(s.request_timeout_seconds),
                throttle,
                ca_file: (!s.ca_file.as_os_str().is_empty()).then(|| s.ca_file.clone()),
            })?))
        }
    })
}

/// Start everything on the open store and open the listeners' gates; run until `shutdown`
/// is cancelled, then stop in order. `live` holds what a SIGHUP can change (rate limits,
/// the TLS certificate, the outbox's retry settings).
pub async fn run(
    cfg: &Config,
    store: Store,
    serving: Serving,
    base_url: String,
    shutdown: CancellationToken,
    live: &crate::reload::Live,
    ready: impl FnOnce(),
) -> Result<(), crate::cluster::DuplicateNode> {
    // The policy goes with the store handle: every resource write through it is checked in
    // the writer's transaction, and the worker renders effective access from it.
    let store = match crate::policy::Policy::compile(&cfg.policy) {
        Ok(p) => store.with_policy(Arc::new(p)),
        Err(e) => {
            // validate() ran at load, so this is a bug, not an operator's mistake.
            tracing::error!(problems = ?e, "provisioning policy does not compile; running without it");
            store
        }
    };
    let wake = Arc::new(Notify::new());
    let service = Service::new(
        store.clone(),
        ListLimits { default_page_size: cfg.scim.default_page_size, max_page_size: cfg.scim.max_page_size },
        wake.clone(),
    )
    .with_account_policy(cfg.policy.account.clone());
    // The worker stops claiming at SIGTERM, while HTTP finishes its requests: both drain at
    // once within the one `server.shutdown_grace_seconds` budget. Changes accepted by the
    // finishing requests stay queued for the next start (never lost); deliveries at hand are
    // finished and recorded. The scheduler stops at SIGTERM too: a sync run is abandoned
    // (closed as interrupted at the next start), and the repairs it queued are in the outbox.
    // This node in the cluster: on PostgreSQL several daemons share the store and one,
    // elected through a lease in the database, runs what must run once; on SQLite the one
    // daemon always leads. Every node serves the SCIM API and the admin listener.
    // Held until the daemon exits: its lock tells a restarted daemon that took this id that
    // the earlier process is gone.
    let identity = crate::cluster::node_id(&cfg.cluster.node_name, &cfg.store.data_dir);
    let reclaim = identity.held.is_some();
    let _node_id_lock = identity.held;
    // This process, and the last one under this name from this data directory (dead: the
    // file's lock is ours), whose fresh heartbeat row is no twin.
    let instance = crate::cluster::instance(&identity.id, &cfg.store.data_dir);
    let _instance_lock = instance.held;
    let reclaim = reclaim || _instance_lock.is_some() && instance.predecessor.is_some();
    let node = crate::store::NodeInfo {
        node_id: identity.id,
        listen: base_url.clone(),
        admin: serving.admin_url.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        instance: instance.id,
    };
    let election_stop = shutdown.child_token();
    let timing = cluster_timing(&cfg.cluster);
    let (cluster, election) =
        match crate::cluster::start(store.clone(), node, timing, instance.predecessor, reclaim, election_stop.clone())
            .await
        {
            Ok(started) => started,
            Err(twin) => {
                // Nothing started yet but the listeners (their gates still closed).
                shutdown.cancel();
                serving.stop_before_open().await;
                tokio::task::spawn_blocking(move || store.close()).await.ok();
                return Err(twin);
            }
        };
    tracing::info!(node = cluster.node_id(), role = cluster.role().as_str(), "cluster: node started");
    // Ready only now: a twin under this node's name was refused above, before systemd (or a
    // script) was told the daemon started, so a refusal is a failed start, not a crash.
    ready();
    let duties = match build_target(cfg) {
        Ok(Some(target)) => {
            let target = Arc::new(target);
            // What a dry run marked delivered never reached an app: on a real target after a
            // dry run, everything is queued for it again (once: a second node finds the
            // target recorded).
            record_target(cfg, &store).await;
            Some(LeaderDuties::new(cfg, target))
        }
        Ok(None) => {
            let queued = store.outbox().depth().await.map(|d| d.0).unwrap_or(0);
            tracing::warn!(
                queued,
                "no downstream target configured (target.kind = \"none\"): changes are stored and queued, not provisioned"
            );
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "downstream target could not be set up; changes stay queued");
            None
        }
    };
    let sync_handle = duties.as_ref().and_then(|d| d.sync.as_ref().map(|(h, _)| h.clone()));
    // What only the leader runs, started at each leadership term and stopped at its end: the
    // outbox worker (recovering leases first), the sync scheduler, audit retention. SIGTERM
    // ends the term: the worker stops claiming while HTTP finishes its requests (both drain
    // within `server.shutdown_grace_seconds`); changes accepted meanwhile stay queued for
    // the next leader, deliveries at hand are finished and recorded; a sync run in progress
    // is abandoned (closed as interrupted) and the repairs it queued are in the outbox.
    let leader = Leader {
        cfg: cfg.clone(),
        store: store.clone(),
        duties,
        wake: wake.clone(),
        outbox: live.outbox.clone(),
        cluster: cluster.clone(),
    };
    // A node that leads from the start (SQLite; the first PostgreSQL node) starts the
    // leader's work before the gates open, so `POST /sync` finds the scheduler running.
    let first = match cluster.role() {
        crate::cluster::Role::Leader { epoch, term } => Some(leader.start_term(epoch, term, &shutdown)),
        crate::cluster::Role::Follower => None,
    };
    let leading = tokio::spawn(lead(leader, first, cluster.clone(), shutdown.clone()));
    serving.api.open(Arc::new(ApiState {
        service,
        base_url,
        max_body_bytes: cfg.server.max_body_bytes,
        group_patch_returns_resource: cfg.scim.group_patch_returns_resource,
        max_page_size: cfg.scim.max_page_size,
        default_page_size: cfg.scim.default_page_size,
        bulk_max_operations: cfg.scim.bulk_max_operations,
        bulk_max_payload_bytes: cfg.scim.bulk_max_payload_bytes,
        rate_limits: live.rate_limits.clone(),
    }));
    serving.ops.open(Arc::new(OpsState {
        store: store.clone(),
        target_kind: cfg.target.kind.as_str(),
        sync: sync_handle,
        cluster: cluster.clone(),
        policy: Arc::new(crate::policy::Policy::compile(&cfg.policy).unwrap_or_default()),
        target_label: target_label(cfg),
        started_at: crate::model::now(),
    }));
    serving.finish().await;
    // The leader's work stops with the shutdown token; then the lease goes, so another node
    // takes over at its next try rather than at the lease's deadline.
    let _ = leading.await;
    election_stop.cancel();
    let _ = election.await;
    crate::cluster::release(&store, &cluster).await;
    // The writer goes last: it commits whatever the finished requests queued, then stops.
    tokio::task::spawn_blocking(move || store.close()).await.ok();
    tracing::info!("store closed");
    Ok(())
}

/// The election's timings from `[cluster]` (validated at load).
pub fn cluster_timing(c: &crate::config::ClusterConfig) -> crate::cluster::Timing {
    crate::cluster::Timing {
        lease_ttl: Duration::from_secs(c.lease_ttl_seconds),
        renew_every: Duration::from_secs(c.renew_every_seconds),
        fence_margin: Duration::from_secs(c.fence_margin_seconds),
    }
}

/// Record which target deliveries go to; after a dry run everything is queued for the real
/// target.
async fn record_target(cfg: &Config, store: &Store) {
    match store.sync().target_switch(&target_identity(cfg)).await {
        Ok(t) if t.requeued > 0 => tracing::warn!(
            requeued = t.requeued,
            forgotten_dry_run_ids = t.forgotten,
            target = %target_identity(cfg),
            "the store's deliveries so far went to the dry-run target, not to an app: every user and group \
             is queued for this target (found by name where the app has it, else created)"
        ),
        Ok(t) => {
            if let Some(prev) = t.previous.filter(|p| *p != target_identity(cfg) && p != crate::store::DRY_RUN) {
                tracing::warn!(
                    previous = %prev,
                    target = %target_identity(cfg),
                    "the target changed since the last start: the app ids on record belong to the previous \
                     app; run a full sync to see what this app lacks (`scimsync sync now`)"
                );
            }
        }
        Err(e) => tracing::error!(error = %e, "could not record the delivery target"),
    }
}

/// What the leader runs for a configured target: the worker, and the scheduler when the
/// target can be reconciled (its handle stays the same across terms).
struct LeaderDuties {
    target: Arc<crate::downstream::Target>,
    /// The scheduler's handle and inbox, and its settings: (reconcile config, deactivates).
    sync: Option<(crate::reconcile::scheduler::SyncHandle, crate::reconcile::scheduler::Inbox)>,
    reconcile: crate::config::ReconcileConfig,
    deactivates: bool,
}

impl LeaderDuties {
    fn new(cfg: &Config, target: Arc<crate::downstream::Target>) -> LeaderDuties {
        // Whether the app is left holding deactivated accounts rather than none: a SCIM
        // target set to deactivate, a REST app that gets no user_delete.
        let deactivates = match cfg.target.kind {
            TargetKind::Webhook => !cfg.target.webhook.events.contains_key("user_delete"),
            _ => cfg.target.scim.deprovision == DeprovisionConfig::Deactivate,
        };
        // A REST app without a delete event cannot have an orphan deleted: repair switches
        // users off instead (through user_update) and leaves groups alone, as never_delete
        // says, rather than "queue" a delete that sends nothing.
        let mut reconcile = cfg.reconcile.clone();
        if cfg.target.kind == TargetKind::Webhook {
            for (event, kind) in [("user_delete", "users"), ("group_delete", "groups")] {
                if !cfg.target.webhook.events.contains_key(event) && !reconcile.never_delete.iter().any(|t| t == kind) {
                    reconcile.never_delete.push(kind.to_string());
                }
            }
        }
        let sync = if target.can_list() {
            Some(crate::reconcile::scheduler::channel())
        } else {
            tracing::info!(
                target = target.name(),
                "reconciliation off: this target cannot list the app's accounts (for a webhook target, configure [target.webhook.list])"
            );
            None
        };
        LeaderDuties { target, sync, reconcile, deactivates }
    }
}

/// What the leader runs, and what it needs to start it at each term.
struct Leader {
    cfg: Config,
    store: Store,
    duties: Option<LeaderDuties>,
    wake: Arc<Notify>,
    /// The outbox's live settings (SIGHUP), for each term's worker.
    outbox: Arc<tokio::sync::watch::Sender<WorkerOptions>>,
    /// Asked by the worker right before each send (`Cluster::may_act_as_leader`).
    cluster: crate::cluster::Cluster,
}

/// One leadership term: its epoch and this process's term number, the token that ends it,
/// its tasks.
struct Term {
    epoch: i64,
    term: u64,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Leader {
    /// Start the leader's work for the term of `epoch`: the worker (it recovers leases
    /// first), the scheduler (it closes runs left running), audit retention.
    fn start_term(&self, epoch: i64, term: u64, shutdown: &CancellationToken) -> Term {
        let stop = shutdown.child_token();
        tracing::info!(epoch, term, "cluster: starting the leader's work");
        let mut tasks = Vec::new();
        if let Some(d) = &self.duties {
            let cluster = self.cluster.clone();
            let opts = WorkerOptions {
                updates: Some(self.outbox.subscribe()),
                may_send: Some(outbox_worker::SendGate(Arc::new(move || cluster.may_act_as_leader()))),
                ..WorkerOptions::from_config(&self.cfg)
            };
            let (store, wake) = (self.store.clone(), self.wake.clone());
            tasks.push(tokio::spawn(outbox_worker::run(store, d.target.clone(), opts, wake, stop.clone())));
            if let Some((_, inbox)) = &d.sync {
                tasks.push(crate::reconcile::scheduler::start(
                    self.store.clone(),
                    d.target.clone(),
                    d.reconcile.clone(),
                    d.deactivates,
                    self.wake.clone(),
                    inbox,
                    stop.clone(),
                ));
            }
        }
        tasks.push(tokio::spawn(prune_audit(
            self.store.clone(),
            self.cfg.audit.retention_days,
            Duration::from_secs(self.cfg.audit.prune_interval_seconds),
            stop.clone(),
        )));
        Term { epoch, term, stop, tasks }
    }
}

/// Run the leader's work during each leadership term of this node (`first`: the term
/// already started), until `shutdown`.
async fn lead(leader: Leader, mut first: Option<Term>, cluster: crate::cluster::Cluster, shutdown: CancellationToken) {
    use crate::cluster::Role;
    let mut role = cluster.subscribe();
    loop {
        let term = match first.take() {
            Some(t) => t,
            None => {
                // Wait to lead.
                let (epoch, term) = loop {
                    if let Role::Leader { epoch, term } = *role.borrow_and_update() {
                        break (epoch, term);
                    }
                    tokio::select! {
                        r = role.changed() => if r.is_err() { return },
                        _ = shutdown.cancelled() => return,
                    }
                };
                leader.start_term(epoch, term, &shutdown)
            }
        };
        // Lead until this term ends: another epoch, a follower, or shutdown.
        loop {
            if *role.borrow_and_update() != (Role::Leader { epoch: term.epoch, term: term.term }) {
                break;
            }
            tokio::select! {
                r = role.changed() => if r.is_err() { break },
                _ = term.stop.cancelled() => break,
            }
        }
        term.stop.cancel();
        if shutdown.is_cancelled() {
            // A clean stop: deliveries at hand finish and are recorded, then the lease is
            // released (nobody else leads before that).
            for t in term.tasks {
                let _ = t.await;
            }
            return;
        }
        // Fenced: the lease may go to another node soon (`cluster::FENCE_MARGIN` after this
        // at the earliest). Abort at once rather than finish: a delivery still in flight would
        // reach the app while the next leader re-sends the same row and the ones after it,
        // out of order. The aborted rows stay in flight; the next leader's recover re-queues
        // them (same Idempotency-Key). A sync run cut here is closed by the next scheduler.
        tracing::warn!(epoch = term.epoch, "cluster: no longer leader; aborting the leader's work");
        for t in term.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}
