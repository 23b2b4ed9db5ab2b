//! The admin listener: `/healthz`, `/readyz`, `/metrics`, the sync trigger and the drift
//! report (JSON and HTML), and the status page (`/`, `/status`, see
//! [`super::status_page`]), on its own address (`[admin]`).
//!
//! Owns: the admin routes, their optional bearer token, the readiness verdict. Must not
//! touch: SQL (the store answers typed questions), metric names (that is `telemetry`), the
//! app (readiness reports the last delivery outcome instead of calling it per probe).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

use super::Gate;
use crate::store::Store;
use crate::telemetry;

/// A probe must answer even when the store hangs: a check taking longer than this fails.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// What the admin handlers share.
pub struct OpsState {
    pub store: Store,
    /// The configured downstream target (`scim`, `webhook`, `dry-run`, `none`).
    pub target_kind: &'static str,
    /// The sync scheduler, when the target can be reconciled (it lists accounts).
    pub sync: Option<crate::reconcile::scheduler::SyncHandle>,
    /// The provisioning policy, for `GET /access/{user}` (empty when none is configured).
    pub policy: Arc<crate::policy::Policy>,
    /// Where deliveries go, for the status page: the kind and the app's URL without
    /// credentials (see `app::target_label`).
    pub target_label: String,
    /// When this daemon started (RFC 3339).
    pub started_at: String,
    /// This node, its role and the other live nodes.
    pub cluster: crate::cluster::Cluster,
}

impl OpsState {
    /// Whether the target can be reconciled: a scheduler runs only for one that lists.
    fn reconcilable(&self) -> crate::reconcile::report::Reconcilable {
        use crate::reconcile::report::Reconcilable;
        match self.sync {
            Some(_) => Reconcilable::Yes,
            None => Reconcilable::No { target: self.target_kind.to_string() },
        }
    }
}

/// Serve the admin routes on an already bound listener until `shutdown` is cancelled.
/// When `bearer_token` is set, every route but `/healthz` needs `Authorization: Bearer
/// <it>`. Until `gate` opens (the store is not open yet), `/healthz` is alive, `/readyz`
/// says why the daemon is not ready, `/metrics` and the status page answer without the
/// store, and the rest is a 503.
pub async fn serve(
    listener: TcpListener,
    bearer_token: Option<String>,
    gate: Arc<Gate<OpsState>>,
    shutdown: CancellationToken,
) {
    let bearer_token: Arc<Option<String>> = Arc::new(bearer_token);
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    let routes = warp::path::full().and(query).and(warp::method()).and(warp::header::headers_cloned()).then(
        move |path: warp::path::FullPath, query: String, method: Method, headers: HeaderMap| {
            let (gate, bearer) = (gate.clone(), bearer_token.clone());
            async move { handle(&gate, bearer.as_deref(), path.as_str(), &query, &method, &headers).await }
        },
    );
    warp::serve(routes).incoming(listener).graceful(async move { shutdown.cancelled().await }).run().await;
}

/// The admin routes, for the 404 text.
const ROUTES: &str =
    "/healthz, /readyz, /metrics, POST /sync, /sync/runs, /drift (JSON), /drift.html, /access/{user} (JSON), /status";

async fn handle(
    gate: &Gate<OpsState>,
    bearer_token: Option<&str>,
    path: &str,
    query: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Response {
    let path = path.trim_end_matches('/');
    let path = if path.is_empty() { "/" } else { path };
    let is_post = path == "/sync";
    let access_user = path.strip_prefix("/access/").filter(|u| !u.is_empty() && !u.contains('/'));
    if access_user.is_none()
        && !matches!(
            path,
            "/healthz" | "/readyz" | "/metrics" | "/sync" | "/sync/runs" | "/drift" | "/drift.html" | "/" | "/status"
        )
    {
        return text(StatusCode::NOT_FOUND, &format!("not found; the admin endpoints are {ROUTES}\n"));
    }
    let allowed = if is_post { method == Method::POST } else { method == Method::GET || method == Method::HEAD };
    if !allowed {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, if is_post { "use POST\n" } else { "use GET\n" });
        r.headers_mut().insert("allow", HeaderValue::from_static(if is_post { "POST" } else { "GET, HEAD" }));
        return r;
    }
    // Liveness stays open: a process supervisor probing it has no token, and it says nothing.
    if path == "/healthz" {
        return text(StatusCode::OK, "ok\n");
    }
    if !authorized(bearer_token, headers) {
        let mut r =
            text(StatusCode::UNAUTHORIZED, "authentication required: Authorization: Bearer <admin.bearer_token>\n");
        r.headers_mut().insert("www-authenticate", HeaderValue::from_static("Bearer realm=\"scimsync-admin\""));
        return r;
    }
    // A POST from a web page on the admin's machine must not start a confirmed repair: a
    // browser sends no custom header cross-origin without a CORS preflight (which we never
    // answer), so one is required.
    if is_post && !headers.contains_key("x-requested-by") {
        return text(
            StatusCode::FORBIDDEN,
            "POST needs an X-Requested-By header (any value), e.g. curl -X POST -H 'X-Requested-By: me' ...\n",
        );
    }
    let state = match gate.state().await {
        Ok(s) => s,
        Err(why) => return starting(path, &why),
    };
    let state = &*state;
    let param = |name: &str| -> Option<String> {
        serde_urlencoded::from_str::<Vec<(String, String)>>(query)
            .ok()?
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    };
    if let Some(user) = access_user {
        return access(state, user).await;
    }
    match path {
        "/readyz" => readyz(state).await,
        "/sync" => match param("confirm").map(|v| v.parse::<i64>()) {
            None => sync_now(state, None).await,
            Some(Ok(run)) => sync_now(state, Some(run)).await,
            Some(Err(_)) => json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "confirm takes the id of the run whose refused repair you reviewed, e.g. /sync?confirm=12 (see /sync/runs)"}),
            ),
        },
        "/sync/runs" => match state.store.sync().runs(50).await {
            Ok(runs) => json_response(StatusCode::OK, &json!({ "runs": runs })),
            Err(e) => store_error(e),
        },
        "/drift" | "/drift.html" => {
            let run_id = match param("run").map(|r| r.parse::<i64>()) {
                Some(Ok(id)) => Some(id),
                Some(Err(_)) => return text(StatusCode::BAD_REQUEST, "run must be a run id (a number)\n"),
                None => None,
            };
            drift(state, run_id, path == "/drift.html").await
        }
        "/metrics" => metrics(state).await,
        _ => status(state).await,
    }
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    let mut r = v.to_string().into_response();
    *r.status_mut() = status;
    r.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    r
}

fn store_error(e: crate::store::StoreError) -> Response {
    tracing::error!(error = %e, "admin: store read failed");
    json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({"error": "the store could not answer; see the log"}))
}

/// Run a sync now and answer with its result (the report is at `/drift?run=ID`).
///
/// Only the leader runs syncs (one runner: the scheduler, its busy check and the newest-report
/// rule of confirmations assume it). A follower answers 421 naming the leader and its admin
/// listener (`scimsync sync now` follows it there), or 503 while no node leads.
///
/// A confirmation that finds a run in progress waits for it, then is checked again: two
/// operators confirming the same refused run at once get one repair and one "already
/// confirmed by run M", never two repairs and never a bare "busy".
async fn sync_now(state: &OpsState, confirm: Option<i64>) -> Response {
    use crate::reconcile::scheduler::TriggerError;
    let Some(sync) = &state.sync else {
        return json_response(StatusCode::CONFLICT, &json!({"error": state.reconcilable().next_step()}));
    };
    let waiting_since = std::time::Instant::now();
    loop {
        // A confirmation names a refused report; anything else is refused before a run starts.
        if let Some(run) = confirm
            && let Err(why) = crate::reconcile::full_sync::confirmable(&state.store, run).await
        {
            return json_response(StatusCode::CONFLICT, &json!({ "error": why.to_string() }));
        }
        match sync.run_now(confirm).await {
            Ok(r) => return json_response(StatusCode::OK, &json!(r)),
            Err(TriggerError::Busy) if confirm.is_some() && waiting_since.elapsed() < CONFIRM_WAITS_FOR_RUN => {
                while sync.is_running() && waiting_since.elapsed() < CONFIRM_WAITS_FOR_RUN {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(TriggerError::Busy) => {
                return json_response(
                    StatusCode::CONFLICT,
                    &json!({"error": "a sync run is already in progress; its report will be at /drift when it ends"}),
                );
            }
            Err(TriggerError::NotLeader) => return not_the_leader(&state.cluster),
            Err(e) => return json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({"error": e.to_string()})),
        }
    }
}

/// How long a confirmation waits for a run in progress before it answers "busy".
const CONFIRM_WAITS_FOR_RUN: Duration = Duration::from_secs(600);

/// A follower asked to run a sync: 421 (Misdirected Request: this node cannot answer it)
/// naming the leader and its admin URL, or 503 while no node leads.
fn not_the_leader(cluster: &crate::cluster::Cluster) -> Response {
    match cluster.other_leader() {
        Some(l) if !l.admin.is_empty() => json_response(
            StatusCode::MISDIRECTED_REQUEST,
            &json!({
                "error": format!(
                    "node {} is a follower; the leader, node {}, runs syncs: ask its admin listener at {} \
                     (`scimsync sync now` follows it there by itself)",
                    cluster.node_id(), l.node_id, l.admin
                ),
                "leader": l.node_id,
                "leader_admin": l.admin,
            }),
        ),
        Some(l) => json_response(
            StatusCode::MISDIRECTED_REQUEST,
            &json!({
                "error": format!(
                    "node {} is a follower; the leader, node {}, runs syncs, and its admin listener is off \
                     (admin.listen): run the command on that node",
                    cluster.node_id(), l.node_id
                ),
                "leader": l.node_id,
            }),
        ),
        None => {
            let mut r = json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"error": format!(
                    "node {} is a follower and no node leads right now (an election is under way): try again in a few seconds",
                    cluster.node_id()
                )}),
            );
            r.headers_mut().insert("retry-after", HeaderValue::from_static("5"));
            r
        }
    }
}

async fn drift(state: &OpsState, run_id: Option<i64>, html: bool) -> Response {
    use crate::reconcile::report;
    let run = match state.store.sync().run(run_id).await {
        Ok(r) => r,
        Err(e) => return store_error(e),
    };
    let items = match &run {
        Some(r) => match state.store.sync().drift_items(r.id).await {
            Ok(i) => i,
            Err(e) => return store_error(e),
        },
        None => Vec::new(),
    };
    if html {
        let mut r = super::html::drift_report(run.as_ref(), &items, &state.reconcilable()).into_response();
        r.headers_mut().insert("content-type", HeaderValue::from_static("text/html; charset=utf-8"));
        return r;
    }
    // Say when a later run failed: the report shown is then older than the last attempt.
    let latest = state.store.sync().runs(1).await.ok().and_then(|r| r.into_iter().next());
    match run {
        Some(run) => {
            let mut body = report::to_json(&run, &items);
            if let Some(l) = latest.filter(|l| l.id != run.id && run_id.is_none()) {
                body["latest_run"] = json!(l);
            }
            json_response(StatusCode::OK, &body)
        }
        None if run_id.is_some() => json_response(StatusCode::NOT_FOUND, &json!({"error": "no such sync run"})),
        None => json_response(StatusCode::NOT_FOUND, &json!({"error": state.reconcilable().next_step()})),
    }
}

/// `GET /access/{user}`: one user's effective access (by id or userName, percent-encoded in
/// the path), the same report as `scimsync access USER --json`.
async fn access(state: &OpsState, user: &str) -> Response {
    let Ok(who) = percent_encoding::percent_decode_str(user).decode_utf8() else {
        return json_response(StatusCode::BAD_REQUEST, &json!({"error": "the user in /access/{user} is not UTF-8"}));
    };
    match crate::service::access::effective_access(&state.store, &state.policy, &who).await {
        Ok(Some(report)) => json_response(StatusCode::OK, &json!(report)),
        Ok(None) => {
            json_response(StatusCode::NOT_FOUND, &json!({"error": format!("no user with userName or id {who:?}")}))
        }
        Err(e) => store_error(e),
    }
}

fn authorized(expected: Option<&str>, headers: &HeaderMap) -> bool {
    let Some(expected) = expected else { return true };
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .unwrap_or("");
    bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
}

fn text(status: StatusCode, body: &str) -> Response {
    let mut r = body.to_string().into_response();
    *r.status_mut() = status;
    r.headers_mut().insert("content-type", HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// An admin route while the store is not open yet (`why` says where opening stands): not
/// ready, and nothing the store would have to answer.
fn starting(path: &str, why: &str) -> Response {
    let reason = format!("store: {why}");
    match path {
        "/readyz" => {
            tracing::warn!(reason, "readiness probe: not ready");
            let verdict = Readiness {
                ready: false,
                checks: json!({"store": {"ok": false, "error": why}}),
                reasons: vec![reason],
            };
            let mut r = json_response(StatusCode::SERVICE_UNAVAILABLE, &json!(verdict));
            r.headers_mut().insert("retry-after", HeaderValue::from_static("5"));
            r
        }
        "/metrics" => {
            telemetry::set_ready(false);
            let mut r = telemetry::encode_metrics().into_response();
            r.headers_mut().insert("content-type", HeaderValue::from_static(telemetry::METRICS_CONTENT_TYPE));
            r
        }
        "/" | "/status" => {
            let mut view = super::status_page::StatusView {
                generated_at: crate::model::now(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                ..Default::default()
            };
            view.health.ready = false;
            view.health.reasons = vec![reason];
            let mut r = super::status_page::render(&view).into_response();
            r.headers_mut().insert("content-type", HeaderValue::from_static("text/html; charset=utf-8"));
            r.headers_mut().insert("cache-control", HeaderValue::from_static("no-store"));
            r
        }
        _ => {
            let mut r = text(StatusCode::SERVICE_UNAVAILABLE, &format!("the daemon is starting: {why}\n"));
            r.headers_mut().insert("retry-after", HeaderValue::from_static("5"));
            r
        }
    }
}

/// Ready = the store takes a write (a transaction through the single writer) and its schema
/// is at this build's version. The target's state is reported, never fails readiness: an
/// app that is down must not get the daemon restarted, its changes queue up.
async fn readyz(state: &OpsState) -> Response {
    let verdict = readiness(state).await;
    if !verdict.ready {
        tracing::warn!(reasons = ?verdict.reasons, "readiness probe: not ready");
    }
    let mut r = serde_json::to_string(&verdict).unwrap_or_default().into_response();
    *r.status_mut() = if verdict.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    r.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    r
}

/// The readiness verdict with each check's detail: `/readyz`'s body, the status page's
/// health box and `scimsync_ready`.
#[derive(Debug, serde::Serialize)]
struct Readiness {
    ready: bool,
    /// One object per check (`store`, `migrations`, `target`, `deletion_guard`), as shown.
    checks: Value,
    /// Why not ready: one line per failed check (empty when ready).
    reasons: Vec<String>,
}

async fn readiness(state: &OpsState) -> Readiness {
    let mut reasons: Vec<String> = Vec::new();
    let store_check = match tokio::time::timeout(CHECK_TIMEOUT, state.store.admin().settings()).await {
        Ok(Ok(_)) => json!({"ok": true}),
        Ok(Err(e)) => {
            reasons.push(format!("store: not writable: {e}"));
            json!({"ok": false, "error": e.to_string()})
        }
        Err(_) => {
            reasons.push(format!("store: the writer did not answer within {}s", CHECK_TIMEOUT.as_secs()));
            json!({"ok": false, "error": "timeout"})
        }
    };
    let migrations_check = match tokio::time::timeout(CHECK_TIMEOUT, state.store.admin().schema_version()).await {
        Ok(Ok((current, expected))) if current == expected => {
            json!({"ok": true, "version": current})
        }
        Ok(Ok((current, expected))) => {
            reasons.push(format!("migrations: schema version {current}, this build needs {expected}"));
            json!({"ok": false, "version": current, "expected": expected})
        }
        Ok(Err(e)) => {
            reasons.push(format!("migrations: cannot read the schema version: {e}"));
            json!({"ok": false, "error": e.to_string()})
        }
        Err(_) => {
            reasons.push("migrations: the store did not answer in time".into());
            json!({"ok": false, "error": "timeout"})
        }
    };
    let target_check = match (state.target_kind, telemetry::last_delivery()) {
        ("none", _) => json!({"kind": "none", "reachable": Value::Null,
                              "detail": "no target configured; changes stay queued"}),
        (kind, None) => json!({"kind": kind, "reachable": Value::Null, "detail": "no delivery since start"}),
        (kind, Some(l)) => json!({
            "kind": kind,
            "reachable": l.outcome == telemetry::DeliveryOutcome::Success,
            "last_delivery": l.outcome.as_str(),
            "last_delivery_at": l.at,
        }),
    };
    // A tripped deletion guard is reported, not a reason to be unready: the API must keep
    // answering the IdP while an admin decides.
    let guard_check = match tokio::time::timeout(CHECK_TIMEOUT, state.store.outbox().guard_status()).await {
        Ok(Ok(g)) => json!({
            "tripped": g.tripped_at.is_some(),
            "tripped_at": g.tripped_at,
            "held": g.held,
            "detail": if g.tripped_at.is_some() {
                "deprovisioning is held; review with `scimsync outbox list --held`, then `outbox release --held` or `outbox discard --held --confirm`"
            } else { "not tripped" },
        }),
        Ok(Err(e)) => json!({"error": e.to_string()}),
        Err(_) => json!({"error": "timeout"}),
    };
    // The role is reported, never a reason to be unready: a follower serves the SCIM API.
    let cluster_check = cluster_check(&state.cluster);
    Readiness {
        ready: reasons.is_empty(),
        checks: json!({"store": store_check, "migrations": migrations_check, "target": target_check,
                       "deletion_guard": guard_check, "cluster": cluster_check}),
        reasons,
    }
}

/// `checks.cluster`: this node, its role, the leader, and the live nodes as last read.
fn cluster_check(c: &crate::cluster::Cluster) -> Value {
    let role = c.role();
    json!({
        "node": c.node_id(),
        "role": role.as_str(),
        "epoch": match role { crate::cluster::Role::Leader { epoch, .. } => Some(epoch), _ => None },
        "leader": c.leader(),
        "nodes": c.nodes().iter().map(|n| json!({
            "node": n.node_id, "listen": n.listen, "admin": n.admin, "version": n.version, "started_at": n.started_at,
            "heartbeat_age_seconds": n.heartbeat_age_seconds, "leader": n.leader,
        })).collect::<Vec<_>>(),
        // Another live process under this node's name: this one stays a follower.
        "duplicate": c.duplicate().map(|d| d.to_string()),
    })
}

/// Rows per table on the status page.
const STATUS_ROWS: usize = 20;
/// Sync runs on the status page.
const SYNC_RUN_ROWS: usize = 5;

/// One line for a sync run's summary: what was listed, how many differences, repairs.
fn run_summary(s: Option<&crate::model::drift::RunSummary>) -> String {
    let mut parts = Vec::new();
    if let Some(r) = s.and_then(|s| s.report.as_ref()) {
        parts.push(format!("listed {} users, {} groups", r.listed.users, r.listed.groups));
        parts.push(format!("{} difference(s)", r.total));
        if r.repair.queued_changes > 0 {
            parts.push(format!("{} repair change(s) queued", r.repair.queued_changes));
        }
    }
    if let Some(d) = s.and_then(|s| s.duration_seconds) {
        parts.push(format!("{d:.1} s"));
    }
    parts.join("; ")
}

/// The status page: the readiness verdict plus what the store says now. A part the store
/// cannot answer in time is shown empty, and the failure is one of the "not ready" reasons.
async fn status(state: &OpsState) -> Response {
    use super::status_page::{self as page, StatusView};
    let Readiness { ready, mut reasons, .. } = readiness(state).await;
    let store = &state.store;
    let read = async {
        let (depth, oldest) = store.outbox().depth().await?;
        let counts = store.outbox().counts().await?;
        let guard = store.outbox().guard_status().await?;
        let held = store.outbox().held_changes(STATUS_ROWS).await?;
        let recent = store.outbox().recent_attempts(STATUS_ROWS, false).await?;
        let failures = store.outbox().recent_attempts(STATUS_ROWS, true).await?;
        let changes = store.audit().list(crate::store::AuditQuery { limit: STATUS_ROWS, ..Default::default() }).await?;
        let runs = store.sync().runs(SYNC_RUN_ROWS).await?;
        let report = store.sync().run(None).await?;
        Ok::<_, crate::store::StoreError>((depth, oldest, counts, guard, held, recent, failures, changes, runs, report))
    };
    let mut view = StatusView {
        generated_at: crate::model::now(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        ..Default::default()
    };
    view.health.target_kind = state.target_kind.to_string();
    view.health.target = state.target_label.clone();
    view.not_reconcilable = state.reconcilable().why_not();
    view.started_at = state.started_at.clone();
    view.health.node = state.cluster.node_id().to_string();
    view.health.role = state.cluster.role().as_str().to_string();
    view.health.nodes = state
        .cluster
        .nodes()
        .into_iter()
        .map(|n| format!("{}{} ({})", n.node_id, if n.leader { ", leader" } else { "" }, n.listen))
        .collect();
    view.health.last_delivery = telemetry::last_delivery().map(|l| (l.outcome.as_str().to_string(), l.at.clone()));
    match tokio::time::timeout(CHECK_TIMEOUT, read).await {
        Ok(Ok((depth, oldest, counts, guard, held, recent, failures, changes, runs, report))) => {
            view.sync_runs = runs
                .into_iter()
                .map(|r| page::SyncRunRow {
                    outcome: match &r.error {
                        Some(e) => format!("{}: {e}", r.status),
                        None => r.status.clone(),
                    },
                    summary: run_summary(r.summary.as_ref()),
                    started_at: r.started_at,
                    finished_at: r.finished_at,
                })
                .collect();
            // The latest successful run's report, as /drift shows it.
            view.drift = report.map(|r| page::DriftSummary {
                generated_at: r.finished_at.unwrap_or(r.started_at),
                counts: r
                    .summary
                    .and_then(|s| s.report)
                    .map(|rep| rep.counts.pairs().into_iter().map(|(k, n)| (k.to_string(), n)).collect())
                    .unwrap_or_default(),
            });
            view.queue = page::Queue {
                depth,
                oldest_age_seconds: oldest.as_deref().map(|o| crate::model::age_of(o).as_secs()),
                dead: counts.iter().find(|(s, _)| s == "dead").map(|(_, n)| *n).unwrap_or(0),
            };
            view.guard = page::Guard { tripped_at: guard.tripped_at, held_total: guard.held, held };
            let rows = |v: Vec<crate::store::DeliveryAttempt>| -> Vec<page::DeliveryRow> {
                v.into_iter()
                    .map(|a| page::DeliveryRow {
                        outbox_id: a.outbox_id,
                        kind: a.kind,
                        resource_id: a.resource_id,
                        name: a.name,
                        op: a.op,
                        finished_at: a.finished_at,
                        outcome: a.outcome,
                        detail: a.detail,
                    })
                    .collect()
            };
            view.recent_deliveries = rows(recent);
            view.recent_failures = rows(failures);
            view.recent_changes = changes
                .into_iter()
                .rev()
                .map(|c| page::ChangeRow {
                    at: c.at,
                    actor: match (c.actor.as_str(), &c.token_id) {
                        ("token", Some(t)) => format!("token {t}"),
                        (a, _) => a.to_string(),
                    },
                    method: c.method,
                    resource: format!(
                        "{}{}{}",
                        c.resource_type,
                        c.resource_id.map(|i| format!(" {i}")).unwrap_or_default(),
                        c.resource_name.map(|n| format!(" ({n})")).unwrap_or_default()
                    ),
                    summary: c.summary,
                })
                .collect();
        }
        Ok(Err(e)) => reasons.push(format!("status: the store could not answer: {e}")),
        Err(_) => reasons.push("status: the store did not answer in time".into()),
    }
    view.health.ready = ready && reasons.is_empty();
    view.health.reasons = reasons;
    let mut r = page::render(&view).into_response();
    r.headers_mut().insert("content-type", HeaderValue::from_static("text/html; charset=utf-8"));
    r.headers_mut().insert("cache-control", HeaderValue::from_static("no-store"));
    r
}

/// Set the store gauges from what the store says now, then encode every metric. A store
/// that cannot answer leaves the gauges at their last values (the scrape still succeeds,
/// and `/readyz` says why). `scimsync_ready` is `/readyz`'s verdict, so an alert can tell
/// "up but not ready" from the scrape alone.
async fn metrics(state: &OpsState) -> Response {
    let ready = readiness(state).await.ready;
    telemetry::set_ready(ready);
    let store = &state.store;
    let mut g = telemetry::StoreGauges { database_size_bytes: store.admin().size_bytes(), ..Default::default() };
    let read = async {
        let (depth, oldest) = store.outbox().depth().await?;
        let counts = store.outbox().counts().await?;
        let guard = store.outbox().guard_status().await?;
        Ok::<_, crate::store::StoreError>((depth, oldest, counts, guard))
    };
    match tokio::time::timeout(CHECK_TIMEOUT, read).await {
        Ok(Ok((depth, oldest, counts, guard))) => {
            g.guard_held = Some((state.target_kind, guard.held));
            g.outbox_depth = depth;
            g.outbox_oldest_age = oldest.as_deref().map(crate::model::age_of).unwrap_or_default();
            g.outbox_dead = counts.iter().find(|(s, _)| s == "dead").map(|(_, n)| *n).unwrap_or(0);
            telemetry::set_store_gauges(&g);
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics: could not read the outbox"),
        Err(_) => tracing::warn!("metrics: the store did not answer in time"),
    }
    let mut r = telemetry::encode_metrics().into_response();
    r.headers_mut().insert("content-type", HeaderValue::from_static(telemetry::METRICS_CONTENT_TYPE));
    r
}
