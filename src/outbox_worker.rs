//! The outbox worker: claims due bundles, builds each [`Job`] from the store, hands it to the
//! target, and records the outcome — done, retry with backoff, waiting for a dependency, or
//! dead-lettered — together with the attempt. Deliveries to different resources run in
//! parallel up to the configured concurrency; one resource's changes go in commit order.
//!
//! Owns: claiming, delivering, recording attempts, backoff. Must not touch: warp, SCIM
//! parsing, building request payloads (that is `downstream`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::downstream::{Job, Outcome, Target};
use crate::model::{ChangeOp, OutboxPayload, ResourceKind, age_of, now, time_after, time_before};
use crate::store::{Bundle, Completion, GuardPolicy, Load, Store, StoreError};
use crate::telemetry::DeliveryOutcome;

/// Whether a delivery may be sent now (see [`WorkerOptions::may_send`]).
#[derive(Clone)]
pub struct SendGate(pub Arc<dyn Fn() -> bool + Send + Sync>);

impl std::fmt::Debug for SendGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SendGate")
    }
}

/// Retry and flow-control policy, from `[outbox]` in the config.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Deliveries in flight at once (different resources).
    pub concurrency: usize,
    /// How often to look for due rows when nothing wakes the worker.
    pub poll_interval: Duration,
    /// A delivery not finished after this long is considered lost and claimed again.
    pub lease: Duration,
    /// Attempts before a row is dead-lettered.
    pub max_attempts: u32,
    /// A row older than this is dead-lettered at its next failure.
    pub max_age: Duration,
    /// Backoff: full jitter over `base * 2^attempts`, capped at `max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// The longest `Retry-After` honoured (an app asking for a day is clamped).
    pub retry_after_max: Duration,
    /// Most rows of one resource coalesced into one delivery.
    pub max_rows_per_bundle: usize,
    /// How long a waiting delivery (a member not provisioned yet) waits before a retry.
    pub wait_interval: Duration,
    /// The accidental-deletion guard; `None`: off, every deprovisioning is delivered.
    pub deletion_guard: Option<DeletionGuard>,
    /// At shutdown, how long deliveries at hand may take to finish (capped by the lease);
    /// the rest are aborted and delivered again at the next start.
    pub shutdown_grace: Duration,
    /// New options sent on a configuration reload (SIGHUP), taken between claims. The
    /// concurrency stays as started (the permits are sized once).
    pub updates: Option<tokio::sync::watch::Receiver<WorkerOptions>>,
    /// Accounts never deprovisioned in the app (`reconcile.protected`, lowercased): their
    /// deletions are not sent and their deactivations are sent as active.
    pub protected: Vec<String>,
    /// Asked right before each delivery is sent: `false` when this node may no longer act
    /// as leader (several nodes on one store); the delivery is then not sent and nothing is
    /// recorded: the row stays in flight for the next leader. `None`: always send.
    pub may_send: Option<SendGate>,
}

/// The accidental-deletion guard's thresholds (`[outbox.deletion_guard]`): more
/// deprovisioning changes within `window` than `threshold_count`, or more than
/// `threshold_share` of the provisioned users once there are `share_min_count` of them,
/// trips it; then deprovisioning changes are held for an operator. Each deprovisioning waits
/// `delay` before delivery, so a burst is counted whole before any of it reaches the app.
#[derive(Debug, Clone)]
pub struct DeletionGuard {
    pub threshold_count: u64,
    pub threshold_share: f64,
    pub share_min_count: u64,
    pub window: Duration,
    pub delay: Duration,
}

impl DeletionGuard {
    fn policy(&self) -> GuardPolicy {
        GuardPolicy {
            threshold_count: self.threshold_count,
            threshold_share: self.threshold_share,
            share_min_count: self.share_min_count,
            window_start: time_before(self.window),
            delayed_after: (!self.delay.is_zero()).then(|| time_before(self.delay)),
        }
    }
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            concurrency: 4,
            poll_interval: Duration::from_millis(500),
            lease: Duration::from_secs(300),
            max_attempts: 20,
            max_age: Duration::from_secs(3 * 24 * 3600),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(600),
            retry_after_max: Duration::from_secs(3600),
            max_rows_per_bundle: 100,
            wait_interval: Duration::from_secs(2),
            deletion_guard: None,
            shutdown_grace: Duration::from_secs(30),
            updates: None,
            protected: Vec::new(),
            may_send: None,
        }
    }
}

impl WorkerOptions {
    /// The worker's settings from `[outbox]` (and the shutdown grace, the protected
    /// accounts); SIGHUP sends a fresh copy (see `reload`).
    pub fn from_config(cfg: &Config) -> WorkerOptions {
        let o = &cfg.outbox;
        WorkerOptions {
            concurrency: o.concurrency,
            poll_interval: Duration::from_secs_f64(o.poll_interval_seconds),
            lease: Duration::from_secs(o.lease_seconds),
            max_attempts: o.max_attempts,
            max_age: Duration::from_secs(o.max_age_seconds),
            retry_base: Duration::from_secs_f64(o.retry_base_seconds),
            retry_max: Duration::from_secs(o.retry_max_seconds),
            retry_after_max: Duration::from_secs(o.retry_after_max_seconds),
            deletion_guard: o.deletion_guard.enabled.then(|| DeletionGuard {
                threshold_count: o.deletion_guard.threshold_count,
                threshold_share: o.deletion_guard.threshold_share,
                share_min_count: o.deletion_guard.share_min_count,
                window: Duration::from_secs(o.deletion_guard.window_seconds),
                delay: Duration::from_secs(o.deletion_guard.delay_seconds),
            }),
            shutdown_grace: Duration::from_secs(cfg.server.shutdown_grace_seconds),
            protected: cfg.reconcile.protected.iter().map(|p| p.to_lowercase()).collect(),
            ..WorkerOptions::default()
        }
    }
}

/// Run until `shutdown`; then stop claiming and wait (up to the lease) for deliveries at hand.
pub async fn run(
    store: Store,
    target: Arc<Target>,
    mut opts: WorkerOptions,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    match store.outbox().recover().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(rows = n, "outbox: re-queued deliveries interrupted by a crash or kill"),
        Err(e) => tracing::error!(error = %e, "outbox: could not recover leases"),
    }
    let permits = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let mut tasks: JoinSet<()> = JoinSet::new();
    // When the app says "slow down" (429/503 with Retry-After), every delivery pauses, not
    // only the one that was told: otherwise the other resources keep hammering it. Tasks set
    // the pause the moment they hear it; bundles claimed meanwhile go back unsent.
    let pause = Arc::new(std::sync::Mutex::new(None::<tokio::time::Instant>));
    let paused = |pause: &std::sync::Mutex<Option<tokio::time::Instant>>| {
        pause.lock().ok().and_then(|p| *p).filter(|until| tokio::time::Instant::now() < *until)
    };
    tracing::info!(target = target.name(), concurrency = opts.concurrency, "outbox worker started");
    // Claims failed in a row (the store unavailable): how long to wait before the next.
    let mut claim_failures: u32 = 0;
    loop {
        while tasks.try_join_next().is_some() {}
        if shutdown.is_cancelled() {
            break;
        }
        if let Some(rx) = opts.updates.as_mut().filter(|rx| rx.has_changed().unwrap_or(false)) {
            let mut new = rx.borrow_and_update().clone();
            new.concurrency = opts.concurrency;
            new.updates = opts.updates.take();
            new.may_send = opts.may_send.take();
            opts = new;
            tracing::info!("outbox: new retry and timing settings in force");
        }
        if let Some(until) = paused(&pause) {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = shutdown.cancelled() => {}
            }
            continue;
        }
        let free = permits.available_permits();
        let mut claimed = 0;
        if free > 0 {
            let lease_until = time_after(opts.lease);
            let guard = opts.deletion_guard.as_ref().map(DeletionGuard::policy);
            match store.outbox().claim(free, opts.max_rows_per_bundle, lease_until, guard).await {
                Ok(crate::store::Claimed { bundles, tripped, held }) => {
                    if let Some(t) = tripped {
                        tracing::warn!(
                            deprovisionings = t.count,
                            provisioned_users = t.provisioned,
                            held,
                            "deletion guard tripped: deprovisioning changes are held, not delivered; \
                             review with `scimsync outbox list --held`, then `scimsync outbox release --held` \
                             or `scimsync outbox discard --held --confirm`"
                        );
                    } else if held > 0 {
                        tracing::info!(held, "deletion guard: more deprovisioning changes held");
                    }
                    claimed = bundles.len();
                    for b in bundles {
                        if let Some(until) = paused(&pause) {
                            let wait = until.saturating_duration_since(tokio::time::Instant::now());
                            let back = Completion::Waiting {
                                next_attempt_at: time_after(wait),
                                reason: "paused: the app asked to slow down".into(),
                            };
                            if let Err(e) = store.outbox().complete(&b, now(), back).await {
                                tracing::error!(error = %e, "outbox: could not release a claim during a pause");
                            }
                            continue;
                        }
                        let Ok(permit) = permits.clone().acquire_owned().await else { break };
                        let (store, target, opts, pause) = (store.clone(), target.clone(), opts.clone(), pause.clone());
                        tasks.spawn(async move {
                            if let Some(after) = deliver_bundle(&store, &target, &opts, b).await {
                                let until = tokio::time::Instant::now() + after.min(opts.retry_after_max);
                                if let Ok(mut p) = pause.lock()
                                    && p.is_none_or(|cur| cur < until)
                                {
                                    tracing::warn!(
                                        seconds = after.as_secs_f64(),
                                        "outbox: the app asked to slow down; pausing deliveries"
                                    );
                                    *p = Some(until);
                                }
                            }
                            drop(permit);
                        });
                    }
                }
                Err(StoreError::Closed) => break,
                Err(e) => {
                    // A store that is away (a PostgreSQL restarting) is asked again with
                    // backoff, not every poll interval, and logged at each doubling only.
                    claim_failures += 1;
                    let wait = claim_backoff(opts.poll_interval, claim_failures);
                    if claim_failures.is_power_of_two() {
                        tracing::error!(
                            error = %e,
                            failures = claim_failures,
                            retry_in_seconds = wait.as_secs_f64(),
                            "outbox: claim failed; trying again"
                        );
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.cancelled() => {}
                    }
                    continue;
                }
            }
            if claim_failures > 0 {
                tracing::info!(failures = claim_failures, "outbox: the store answers again; claiming");
                claim_failures = 0;
            }
        }
        if claimed == 0 || permits.available_permits() == 0 {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(opts.poll_interval) => {}
                _ = shutdown.cancelled() => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
    }
    if !tasks.is_empty() {
        tracing::info!(deliveries = tasks.len(), "outbox: stopped claiming; finishing the deliveries at hand");
    }
    let deadline = tokio::time::sleep(opts.lease.min(opts.shutdown_grace));
    tokio::pin!(deadline);
    while !tasks.is_empty() {
        tokio::select! {
            _ = tasks.join_next() => {}
            _ = &mut deadline => {
                tracing::warn!(left = tasks.len(), "outbox: deliveries still running at the shutdown deadline; they will be retried");
                tasks.abort_all();
                break;
            }
        }
    }
    tracing::info!("outbox worker stopped");
}

/// Longest wait between claims while the store fails them.
const CLAIM_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The wait after `failures` failed claims in a row: the poll interval, doubled per
/// failure, at most [`CLAIM_BACKOFF_MAX`] (and never less than the poll interval).
fn claim_backoff(poll_interval: Duration, failures: u32) -> Duration {
    let doubled = poll_interval.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    doubled.min(CLAIM_BACKOFF_MAX).max(poll_interval)
}

/// Deliver one bundle and record the outcome; returns the app's Retry-After, if it sent one.
async fn deliver_bundle(store: &Store, target: &Target, opts: &WorkerOptions, bundle: Bundle) -> Option<Duration> {
    let started = now();
    let clock = std::time::Instant::now();
    let head = bundle.head().clone();
    let mut pause = None;
    let completion = match build_job(store, &bundle, false).await {
        Err(e) => Completion::Retry { next_attempt_at: time_after(opts.retry_base), error: format!("store: {e}") },
        Ok(Prepared::Waiting(reason)) => {
            if age_of(&head.created_at) > opts.max_age {
                Completion::Dead { error: format!("gave up waiting: {reason}") }
            } else {
                Completion::Waiting { next_attempt_at: time_after(opts.wait_interval), reason }
            }
        }
        Ok(Prepared::Job(job)) if job.is_delete() && is_protected(opts, &job) => {
            tracing::warn!(outbox_id = head.id, resource = %head.resource_id,
                "protected account (reconcile.protected): its deletion is not sent to the app");
            Completion::Skipped { reason: "not sent: protected account (reconcile.protected)".into() }
        }
        Ok(Prepared::Job(mut job)) => {
            if is_protected(opts, &job) {
                keep_active(&mut job);
            }
            if opts.may_send.as_ref().is_some_and(|gate| !(gate.0)()) {
                // A stale leader (paused past its fencing deadline) must not send: the next
                // leader re-queues the row (still in flight) and sends it, in order.
                tracing::warn!(outbox_id = head.id, resource = %head.resource_id,
                    "outbox: this node may no longer act as leader; the delivery is left to the next leader");
                return None;
            }
            let mut outcome = target.deliver(&job).await;
            let mut note = None;
            let mut recreating = false;
            if let Outcome::Gone { error } = &outcome {
                // Deleted in the app behind our back: what the 404 says is true, so act on it
                // now instead of repeating the request for ever. Forget the stale app id and
                // send the whole current state (the target finds the account by name or
                // creates it); a deprovisioning of an account already gone is done.
                let stale = job.app_id.clone().unwrap_or_default();
                if job.current.is_none() {
                    note = Some(format!("{error}: already gone in the app, nothing left to remove"));
                    outcome = Outcome::Done { app_id: None };
                } else {
                    tracing::warn!(outbox_id = head.id, resource = %head.resource_id, app_id = %stale,
                        "the app no longer has this account; finding or creating it again");
                    note = Some(format!(
                        "{error}: forgot the stale app id {stale:?} and sent the whole current state again"
                    ));
                    recreating = true;
                    match build_job(store, &bundle, true).await {
                        Ok(Prepared::Job(mut again)) => {
                            if is_protected(opts, &again) {
                                keep_active(&mut again);
                            }
                            outcome = target.deliver(&again).await;
                            if let Outcome::Gone { error } = &outcome {
                                outcome = Outcome::Retry { after: None, error: error.clone() };
                            }
                            job = again;
                        }
                        Ok(Prepared::Waiting(reason)) => {
                            outcome =
                                Outcome::Retry { after: None, error: format!("{error}; recreating it waits: {reason}") }
                        }
                        Err(e) => outcome = Outcome::Retry { after: None, error: format!("{error}; store: {e}") },
                    }
                }
            }
            if let Outcome::Retry { after: Some(a), .. } = &outcome {
                pause = Some(*a);
            }
            let sent = !matches!(outcome, Outcome::Recorded { .. });
            let mut c = decide(opts, head.attempts, &head.created_at, outcome);
            if let (Completion::Success { note: n, recreated, .. }, Some(text)) = (&mut c, note) {
                *n = Some(text);
                *recreated = recreating;
            }
            // Remember what the app was sent: the drift report's third side.
            if let (Completion::Success { applied, .. }, Some(cur)) = (&mut c, &job.current)
                && job.attrs_changed
                && sent
            {
                *applied = Some((cur.meta.version, crate::downstream::representation(cur)));
            }
            c
        }
    };
    match &completion {
        Completion::Skipped { .. } => {}
        Completion::Success { .. } => tracing::info!(
            outbox_id = head.id, resource = %head.resource_id, kind = head.kind.as_str(), rows = bundle.rows.len(), "delivered"
        ),
        Completion::Retry { error, next_attempt_at } => tracing::warn!(
            outbox_id = head.id, resource = %head.resource_id, attempt = head.attempts + 1, next = %next_attempt_at, error = %error, "delivery failed; will retry"
        ),
        Completion::Dead { error } => tracing::error!(
            outbox_id = head.id, resource = %head.resource_id, error = %error, "delivery dead-lettered; see `scimsync outbox list --dead`"
        ),
        Completion::Waiting { reason, .. } => {
            tracing::debug!(outbox_id = head.id, reason = %reason, "delivery waiting")
        }
    }
    crate::telemetry::delivery(
        match &completion {
            Completion::Success { .. } | Completion::Skipped { .. } => DeliveryOutcome::Success,
            Completion::Retry { .. } => DeliveryOutcome::Retry,
            Completion::Dead { .. } => DeliveryOutcome::Dead,
            Completion::Waiting { .. } => DeliveryOutcome::Waiting,
        },
        clock.elapsed(),
    );
    if let Err(e) = store.outbox().complete(&bundle, started, completion).await {
        // The lease will expire and the bundle will be delivered again: at-least-once.
        tracing::error!(outbox_id = head.id, error = %e, "could not record the delivery outcome");
    }
    pause
}

/// Whether the job's account is one of `reconcile.protected` (by userName / displayName, or
/// the name a deleted one had).
fn is_protected(opts: &WorkerOptions, job: &Job) -> bool {
    if opts.protected.is_empty() {
        return false;
    }
    let name = match &job.current {
        Some(r) => r.display_name().to_lowercase(),
        None => ["userName", "displayName"]
            .iter()
            .find_map(|k| job.tombstone.get(*k).and_then(|v| v.as_str()))
            .unwrap_or_default()
            .to_lowercase(),
    };
    opts.protected.contains(&name)
}

/// A protected user's deactivation is sent as active: the app keeps its break-glass admin.
fn keep_active(job: &mut Job) {
    if let Some(cur) = &mut job.current
        && cur.kind == ResourceKind::User
        && cur.attrs.get("active") == Some(&serde_json::Value::Bool(false))
    {
        tracing::warn!(resource = %cur.id, "protected account (reconcile.protected): kept active in the app");
        cur.attrs.insert("active".into(), serde_json::Value::Bool(true));
    }
}

/// Map a target outcome to what the outbox records, applying the retry policy.
fn decide(opts: &WorkerOptions, attempts_before: u32, created_at: &str, outcome: Outcome) -> Completion {
    match outcome {
        Outcome::Done { app_id } => {
            Completion::Success { id_map: Some(app_id), applied: None, note: None, recreated: false }
        }
        Outcome::Recorded { note } => {
            Completion::Success { id_map: None, applied: None, note: Some(note), recreated: false }
        }
        Outcome::Permanent { error } => Completion::Dead { error },
        // Handled by the delivery (find or create again); reaching here it failed again.
        Outcome::Gone { error } => decide(opts, attempts_before, created_at, Outcome::Retry { after: None, error }),
        Outcome::Retry { after, error } => {
            let attempts = attempts_before + 1;
            if attempts >= opts.max_attempts {
                return Completion::Dead { error: format!("{error} (gave up after {attempts} attempts)") };
            }
            if age_of(created_at) > opts.max_age {
                return Completion::Dead {
                    error: format!("{error} (gave up: older than {}s)", opts.max_age.as_secs()),
                };
            }
            let delay =
                backoff(opts, attempts_before).max(after.map(|a| a.min(opts.retry_after_max)).unwrap_or_default());
            Completion::Retry { next_attempt_at: time_after(delay), error }
        }
    }
}

/// Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"): a uniformly random
/// delay in `[0, min(max, base * 2^attempt)]`, so clients that failed together spread out.
pub fn backoff(opts: &WorkerOptions, attempts_before: u32) -> Duration {
    let exp = opts.retry_base.saturating_mul(1u32.checked_shl(attempts_before.min(30)).unwrap_or(u32::MAX));
    let cap = exp.min(opts.retry_max);
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    let frac = (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64;
    cap.mul_f64(frac)
}

// Built and consumed once per delivery, on the stack of one task.
#[allow(clippy::large_enum_variant)]
enum Prepared {
    Job(Job),
    Waiting(String),
}

/// Gather what the target needs: the current state, the app's ids, the net member delta.
/// `afresh`: the app lost the account under the id we hold; send the whole current state
/// (a group with all its members) without that id, as for a resync.
async fn build_job(store: &Store, bundle: &Bundle, afresh: bool) -> Result<Prepared, StoreError> {
    let head = bundle.head();
    let kind = head.kind;
    let ops: Vec<ChangeOp> = bundle.rows.iter().map(|r| r.op).collect();
    let resync = afresh || bundle.rows.iter().any(|r| r.payload.resync);
    let created_here = ops.contains(&ChangeOp::Create) || resync;
    let current = store
        .resources()
        .get(kind, &head.resource_id, Load { members: kind == ResourceKind::Group && created_here, groups: false })
        .await?;
    let mut current = current;
    if let (ResourceKind::User, Some(user)) = (kind, current.as_mut()) {
        // Under a provisioning policy the app gets the user's effective roles and
        // entitlements (computed from its groups now), replacing whatever the IdP sent.
        if let Some(access) = store.resources().effective_access(&head.resource_id).await? {
            access.insert_into(&mut user.attrs);
        }
    }
    let app_id = if afresh { None } else { store.outbox().app_id(&head.resource_id).await? };
    let Folded { attrs_changed, tombstone, app_record, deactivate_only, mut added, mut removed } =
        fold(bundle.rows.iter().map(|r| &r.payload));
    let attrs_changed = attrs_changed || created_here;
    // A group new to the app gets its whole current member list.
    if let Some(members) = current.as_ref().and_then(|c| c.members.as_ref()) {
        added = members.iter().map(|m| m.id.clone()).collect();
        removed.clear();
    }
    let mut member_app_ids = HashMap::new();
    let mut missing = Vec::new();
    let wanted: HashSet<&String> = added.iter().chain(removed.iter()).collect();
    for id in wanted {
        if let Some(app) = id.strip_prefix(APP_MEMBER) {
            member_app_ids.insert(id.clone(), app.to_string());
            continue;
        }
        match store.outbox().app_id(id).await? {
            Some(a) => {
                member_app_ids.insert(id.clone(), a);
            }
            // A member still on its way to the app: the group waits for it. One with nothing
            // pending and no app id (deleted since) is simply skipped.
            None if added.contains(id) && store.outbox().has_undelivered(id).await? => missing.push(id.clone()),
            // Delivered between the two reads (its app id and its delivered state commit
            // together): read the id again, or the member would be skipped for good.
            None => {
                if let Some(a) = store.outbox().app_id(id).await? {
                    member_app_ids.insert(id.clone(), a);
                }
            }
        }
    }
    if current.is_some() && !missing.is_empty() {
        return Ok(Prepared::Waiting(format!("{} member(s) not provisioned yet, e.g. {}", missing.len(), missing[0])));
    }
    Ok(Prepared::Job(Job {
        kind,
        resource_id: head.resource_id.clone(),
        idempotency_key: head.id.to_string(),
        ops,
        current,
        app_id,
        tombstone,
        app_record,
        members_added: added,
        members_removed: removed,
        member_app_ids,
        attrs_changed,
        deactivate_only,
    }))
}

/// What a bundle's payloads say together, before the store is asked anything.
#[derive(Debug, Default, PartialEq)]
struct Folded {
    attrs_changed: bool,
    tombstone: serde_json::Map<String, serde_json::Value>,
    app_record: Option<serde_json::Map<String, serde_json::Value>>,
    deactivate_only: bool,
    /// Net membership change over the coalesced rows, in commit order; members named by
    /// the app's id carry [`APP_MEMBER`].
    added: Vec<String>,
    removed: Vec<String>,
}

/// Fold the payloads of a bundle, oldest first: the last tombstone and app record win, the
/// member deltas net out.
fn fold<'a>(payloads: impl IntoIterator<Item = &'a OutboxPayload>) -> Folded {
    let mut f = Folded::default();
    for p in payloads {
        f.attrs_changed |= p.attributes_changed;
        if let Some(t) = &p.tombstone {
            f.tombstone = t.clone();
        }
        if let Some(a) = &p.app_record {
            f.app_record = Some(a.clone());
        }
        for id in &p.members_added {
            f.removed.retain(|x| x != id);
            if !f.added.contains(id) {
                f.added.push(id.clone());
            }
        }
        for id in &p.members_removed {
            f.added.retain(|x| x != id);
            if !f.removed.contains(id) {
                f.removed.push(id.clone());
            }
        }
        // A repair removing members the app has and we do not know: named by the app's id.
        for app in &p.members_removed_app_ids {
            f.removed.push(format!("{APP_MEMBER}{app}"));
        }
        f.deactivate_only |= p.deactivate_only;
    }
    f
}

/// Prefix of a member named by the app's id rather than ours (repair of strangers).
const APP_MEMBER: &str = "app:";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_back_off_while_the_store_fails_them() {
        let poll = Duration::from_millis(50);
        assert_eq!(claim_backoff(poll, 1), poll);
        assert_eq!(claim_backoff(poll, 2), poll * 2);
        assert_eq!(claim_backoff(poll, 4), poll * 8);
        assert_eq!(claim_backoff(poll, 10), CLAIM_BACKOFF_MAX);
        assert_eq!(claim_backoff(poll, u32::MAX), CLAIM_BACKOFF_MAX);
        // A poll interval above the cap is kept: backing off never polls faster.
        assert_eq!(claim_backoff(Duration::from_secs(10), 3), Duration::from_secs(10));
    }

    #[test]
    fn backoff_is_bounded_and_jittered() {
        let o = WorkerOptions {
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            ..Default::default()
        };
        for attempt in 0..40 {
            let d = backoff(&o, attempt);
            assert!(d <= Duration::from_secs(60), "attempt {attempt}: {d:?}");
            assert!(d <= Duration::from_secs(1) * 2u32.saturating_pow(attempt.min(20)), "attempt {attempt}: {d:?}");
        }
        let samples: HashSet<u128> = (0..20).map(|_| backoff(&o, 5).as_micros()).collect();
        assert!(samples.len() > 10, "full jitter must spread delays: {samples:?}");
    }

    #[test]
    fn decide_applies_the_policy() {
        let o = WorkerOptions { max_attempts: 3, retry_after_max: Duration::from_secs(10), ..Default::default() };
        let fresh = now();
        assert!(matches!(
            decide(&o, 0, &fresh, Outcome::Done { app_id: Some("x".into()) }),
            Completion::Success { .. }
        ));
        assert!(matches!(decide(&o, 0, &fresh, Outcome::Permanent { error: "400".into() }), Completion::Dead { .. }));
        assert!(matches!(
            decide(&o, 0, &fresh, Outcome::Retry { after: None, error: "503".into() }),
            Completion::Retry { .. }
        ));
        assert!(matches!(
            decide(&o, 2, &fresh, Outcome::Retry { after: None, error: "503".into() }),
            Completion::Dead { .. }
        ));
        // Retry-After is honoured but clamped.
        let Completion::Retry { next_attempt_at, .. } =
            decide(&o, 0, &fresh, Outcome::Retry { after: Some(Duration::from_secs(86400)), error: "429".into() })
        else {
            panic!("expected retry")
        };
        assert!(next_attempt_at <= time_after(Duration::from_secs(11)), "{next_attempt_at}");
        assert!(next_attempt_at >= time_after(Duration::from_secs(9)), "{next_attempt_at}");
        let old = "2000-01-01T00:00:00.000Z";
        assert!(matches!(
            decide(&o, 0, old, Outcome::Retry { after: None, error: "x".into() }),
            Completion::Dead { .. }
        ));
    }

    /// The previous release's reader, key by key on the raw JSON, kept to prove the typed
    /// payload folds to the same job.
    fn legacy_fold(rows: &[serde_json::Value]) -> (Folded, bool) {
        let mut f = Folded::default();
        let resync = rows.iter().any(|p| p.get("resync").is_some());
        for p in rows {
            if p.get("attributes_changed").is_some() {
                f.attrs_changed = true;
            }
            if let Some(t) = p.get("tombstone").and_then(|t| t.as_object()) {
                f.tombstone = t.clone();
            }
            if let Some(a) = p.get("app_record").and_then(|a| a.as_object()) {
                f.app_record = Some(a.clone());
            }
            for id in p.get("members_added").and_then(|v| v.as_array()).into_iter().flatten().filter_map(|v| v.as_str())
            {
                f.removed.retain(|x| x != id);
                if !f.added.iter().any(|x| x == id) {
                    f.added.push(id.to_string());
                }
            }
            for id in
                p.get("members_removed").and_then(|v| v.as_array()).into_iter().flatten().filter_map(|v| v.as_str())
            {
                f.added.retain(|x| x != id);
                if !f.removed.iter().any(|x| x == id) {
                    f.removed.push(id.to_string());
                }
            }
            for app in p
                .get("members_removed_app_ids")
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str())
            {
                f.removed.push(format!("{APP_MEMBER}{app}"));
            }
            f.deactivate_only |= p.get("deactivate_only").and_then(|v| v.as_bool()).unwrap_or(false);
        }
        (f, resync)
    }

    /// One payload exactly as a writer of the previous release put it on disk (every key any
    /// writer used), chosen by `shape`; `ids` and `flags` fill it in.
    fn old_row(shape: u8, ids: &[String], n: i64, flags: [bool; 3]) -> serde_json::Value {
        use serde_json::json;
        let (some, other) = ids.split_at(ids.len() / 2);
        match shape % 9 {
            // resources::create
            0 if some.is_empty() => json!({}),
            0 => json!({"members_added": some}),
            // resources::update
            1 => {
                let mut m = serde_json::Map::new();
                if flags[0] {
                    m.insert("attributes_changed".into(), json!(true));
                }
                if flags[1] {
                    m.insert("deprovision".into(), json!(true));
                }
                if !some.is_empty() {
                    m.insert("members_added".into(), json!(some));
                }
                if !other.is_empty() {
                    m.insert("members_removed".into(), json!(other));
                }
                serde_json::Value::Object(m)
            }
            // resources::delete (a tombstone may be empty)
            2 if flags[0] => {
                json!({"tombstone": {"userName": format!("u{n}"), "externalId": "x"}, "deprovision": true})
            }
            2 => json!({"tombstone": {}, "deprovision": true}),
            // resources::enqueue_access_change
            3 => json!({"attributes_changed": true, "access_changed": true}),
            // delivery_target (dry-run -> real app)
            4 => json!({"attributes_changed": true, "resync": true, "target_switch": true}),
            // outbox::requeue_memberships
            5 => json!({"members_added": ids.iter().take(1).collect::<Vec<_>>()}),
            // sync::repair, resync
            6 if flags[1] => json!({"attributes_changed": true, "resync": true, "repair_run": n, "deprovision": true}),
            6 => json!({"attributes_changed": true, "resync": true, "repair_run": n}),
            // sync::repair, members (empty lists were written too)
            7 => json!({"members_added": some, "members_removed": other,
                        "members_removed_app_ids": if flags[2] { vec![format!("app{n}")] } else { vec![] },
                        "repair_run": n}),
            // sync::repair, orphan
            _ => {
                let mut v = json!({"deprovision": true, "orphan": true, "deactivate_only": flags[0],
                                   "tombstone": {"userName": format!("o{n}")}, "repair_run": n});
                if flags[1] {
                    v["app_record"] = json!({"id": format!("app{n}"), "userName": format!("o{n}"), "active": true});
                }
                v
            }
        }
    }

    proptest::proptest! {
        /// Bundles of rows written by the previous release fold to the same job through the
        /// typed payload as through the old key-by-key reader; and a row re-written by this
        /// release shows the keys SQL reads (`deprovision`, `tombstone`, `attributes_changed`,
        /// `resync`) exactly as the old row did.
        #[test]
        fn old_rows_fold_to_the_same_job(
            rows in proptest::collection::vec(
                (0u8..9, proptest::collection::vec("[a-d]", 0..5), 0i64..1000, proptest::array::uniform3(proptest::bool::ANY)),
                1..6,
            )
        ) {
            let raw: Vec<serde_json::Value> =
                rows.iter().map(|(shape, ids, n, flags)| old_row(*shape, ids, *n, *flags)).collect();
            let typed: Vec<OutboxPayload> =
                raw.iter().map(|v| OutboxPayload::from_json(&v.to_string()).expect("an old row decodes")).collect();
            let (legacy, legacy_resync) = legacy_fold(&raw);
            proptest::prop_assert_eq!(fold(&typed), legacy);
            proptest::prop_assert_eq!(typed.iter().any(|p| p.resync), legacy_resync);
            for (old, p) in raw.iter().zip(&typed) {
                let new: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
                for key in ["tombstone", "attributes_changed", "resync"] {
                    proptest::prop_assert_eq!(new.get(key).is_some(), old.get(key).is_some(), "{} in {}", key, old);
                }
                proptest::prop_assert_eq!(new.get("deprovision"), old.get("deprovision"), "{}", old);
                proptest::prop_assert_eq!(OutboxPayload::from_json(&p.to_json()).unwrap(), p.clone());
            }
        }
    }

    proptest::proptest! {
        /// The store folds a plain change into a row nobody tried to deliver yet
        /// (`OutboxPayload::coalesce`, starting a new row when it declines): the job is the
        /// one the worker builds from the rows left unfolded, behind whatever row heads the
        /// bundle (members compared as sets: the order within a delta is not a change).
        #[test]
        fn coalesced_rows_fold_to_the_same_job(
            head in (proptest::bool::ANY, proptest::collection::vec("[a-e]", 0..3), proptest::collection::vec("[a-e]", 0..3)),
            rows in proptest::collection::vec(
                (proptest::bool::ANY, proptest::collection::vec("[a-h]", 0..4), proptest::collection::vec("[a-h]", 0..4)),
                1..12,
            )
        ) {
            let plain = |(attrs, add, remove): &(bool, Vec<String>, Vec<String>)| OutboxPayload {
                attributes_changed: *attrs,
                ..OutboxPayload::members(add.clone(), remove.clone())
            };
            let head = plain(&head);
            let each: Vec<OutboxPayload> = rows.iter().map(plain).collect();
            let mut queued: Vec<OutboxPayload> = Vec::new();
            for p in &each {
                match queued.last().and_then(|last| last.coalesce(p)) {
                    Some(merged) => *queued.last_mut().unwrap() = merged,
                    None => queued.push(p.clone()),
                }
            }
            let sorted = |mut f: Folded| {
                f.added.sort();
                f.removed.sort();
                f
            };
            let one_by_one = sorted(fold(std::iter::once(&head).chain(&each)));
            let coalesced = sorted(fold(std::iter::once(&head).chain(&queued)));
            proptest::prop_assert_eq!(coalesced, one_by_one);
        }
    }

    /// A node that may no longer act as leader (its send gate closed: paused past its fencing
    /// deadline) sends nothing and records nothing: the claimed row stays in flight, and the
    /// next term's worker (the next leader) re-queues it and delivers it once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_closed_send_gate_sends_nothing_and_leaves_the_row_to_the_next_leader() {
        use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
        let dir = tempfile::tempdir().unwrap();
        let options = crate::store::StoreOptions {
            data_dir: dir.path().to_path_buf(),
            busy_timeout_seconds: 5,
            readers: 2,
            max_batch: 64,
        };
        let store = Store::open(&options).unwrap();
        let new = crate::store::NewResource {
            kind: ResourceKind::User,
            id: "u1".into(),
            attrs: serde_json::json!({"userName": "u1@example.com"}).as_object().unwrap().clone(),
            members: vec![],
        };
        store.resources().create(new, crate::store::NewAudit::new("test", "POST", "User")).await.unwrap();
        let log = dir.path().join("sent.jsonl");
        let target = Arc::new(Target::DryRun(crate::downstream::dry_run::DryRun { path: log.clone() }));
        let open = Arc::new(AtomicBool::new(false));
        let gate = open.clone();
        let opts = WorkerOptions {
            poll_interval: Duration::from_millis(20),
            may_send: Some(SendGate(Arc::new(move || gate.load(SeqCst)))),
            ..WorkerOptions::default()
        };
        let in_state = |state: &'static str| {
            let store = store.clone();
            async move { store.outbox().counts().await.unwrap().into_iter().find(|(s, _)| s == state).map_or(0, |(_, n)| n) }
        };

        let stop = CancellationToken::new();
        let worker =
            tokio::spawn(run(store.clone(), target.clone(), opts.clone(), Arc::new(Notify::new()), stop.clone()));
        for _ in 0..200 {
            if in_state("in_flight").await == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(in_state("in_flight").await, 1, "claimed, and left in flight");
        assert!(!log.exists(), "nothing was sent with the gate closed");
        stop.cancel();
        worker.await.unwrap();

        open.store(true, SeqCst);
        let stop = CancellationToken::new();
        let worker = tokio::spawn(run(store.clone(), target, opts, Arc::new(Notify::new()), stop.clone()));
        for _ in 0..500 {
            if in_state("done").await == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        worker.await.unwrap();
        assert_eq!(in_state("done").await, 1, "the next term delivered it");
        assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 1, "sent once");
        store.close();
    }
}
