//! The sync schedule: a cron expression (the `cron` crate, seconds first, UTC), on-demand
//! runs (`scimsync sync now`, `POST /sync` on the admin listener), one run at a time.
//!
//! A run missed while the daemon was down is caught up once at start, not once per missed
//! time; times missed during a long run are skipped for the next one after it.
//!
//! With several daemons on one store only the leader runs the scheduler (issue 15): the
//! wiring starts it for each leadership term on one [`Inbox`], so the [`SyncHandle`] the admin
//! listener holds stays the same across terms; on a follower it answers
//! [`TriggerError::NotLeader`].

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::full_sync::{self, RunResult, Trigger};
use crate::config::ReconcileConfig;
use crate::downstream::Target;
use crate::store::Store;

/// Why an on-demand run did not happen.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error("a sync run is already in progress")]
    Busy,
    #[error("the scheduler has stopped")]
    Stopped,
    #[error("this node is not the cluster's leader; ask the leader (see /readyz: checks.cluster.leader)")]
    NotLeader,
    #[error("the run could not be recorded: {0}")]
    Store(#[from] crate::store::StoreError),
}

type Reply = oneshot::Sender<Result<RunResult, TriggerError>>;
/// A request for a run: the confirmed run's id, and where the result goes.
type Request = (Option<i64>, Reply);

/// Ask the scheduler for runs; cheap to clone.
#[derive(Clone)]
pub struct SyncHandle {
    tx: mpsc::Sender<Request>,
    running: Arc<AtomicBool>,
    /// Whether a scheduler runs on this node now (it leads).
    active: Arc<AtomicBool>,
}

/// The scheduler's side of a [`SyncHandle`], taken by one scheduler task at a time.
#[derive(Clone)]
pub struct Inbox {
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Request>>>,
    running: Arc<AtomicBool>,
    active: Arc<AtomicBool>,
}

/// A handle and the inbox schedulers started later take its requests from.
pub fn channel() -> (SyncHandle, Inbox) {
    let (tx, rx) = mpsc::channel(1);
    let running = Arc::new(AtomicBool::new(false));
    let active = Arc::new(AtomicBool::new(false));
    let handle = SyncHandle { tx, running: running.clone(), active: active.clone() };
    (handle, Inbox { rx: Arc::new(tokio::sync::Mutex::new(rx)), running, active })
}

impl SyncHandle {
    /// Run a sync now and wait for its result. `confirm`: the refused run whose report an
    /// operator reviewed; its deprovisionings may go past the safety limit.
    pub async fn run_now(&self, confirm: Option<i64>) -> Result<RunResult, TriggerError> {
        if !self.active.load(Ordering::SeqCst) {
            return Err(TriggerError::NotLeader);
        }
        if self.running.load(Ordering::SeqCst) {
            return Err(TriggerError::Busy);
        }
        let (tx, rx) = oneshot::channel();
        self.tx.try_send((confirm, tx)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => TriggerError::Busy,
            mpsc::error::TrySendError::Closed(_) => TriggerError::Stopped,
        })?;
        rx.await.map_err(|_| TriggerError::Stopped)?
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }
}

/// Start a scheduler task taking the requests of `inbox` (after the previous one on it
/// stopped), until `shutdown`.
pub fn start(
    store: Store,
    target: Arc<Target>,
    cfg: ReconcileConfig,
    deactivates: bool,
    wake: Arc<Notify>,
    inbox: &Inbox,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let inbox = inbox.clone();
    // Active from now (the previous scheduler on this inbox has stopped: terms do not
    // overlap), so a request sent at once is taken when the task starts, not refused.
    inbox.active.store(true, Ordering::SeqCst);
    tokio::spawn(async move {
        let mut rx = inbox.rx.clone().lock_owned().await;
        run(store, target, cfg, deactivates, wake, &mut rx, inbox.running.clone(), shutdown).await;
        inbox.active.store(false, Ordering::SeqCst);
    })
}

fn next_after(
    schedule: Option<&cron::Schedule>,
    t: chrono::DateTime<chrono::Utc>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    schedule?.after(&t).next()
}

/// Whether a scheduled time fell between the last run's start and now: a run was missed.
pub fn missed(
    schedule: &cron::Schedule,
    last_start: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    schedule.after(&last_start).next().is_some_and(|t| t <= now)
}

#[allow(clippy::too_many_arguments)]
async fn run(
    store: Store,
    target: Arc<Target>,
    cfg: ReconcileConfig,
    deactivates: bool,
    wake: Arc<Notify>,
    rx: &mut mpsc::Receiver<Request>,
    running: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let schedule = if cfg.schedule.trim().is_empty() { None } else { cron::Schedule::from_str(&cfg.schedule).ok() };
    tracing::info!(schedule = %cfg.schedule, "sync scheduler started");
    if let Ok(n @ 1..) = store.sync().close_running("interrupted (the daemon stopped during the run)").await {
        tracing::warn!(runs = n, "sync: a run was interrupted when the daemon last stopped");
    }
    // The last run failed on the store (a PostgreSQL away): its end may not be recorded.
    let store_failed = AtomicBool::new(false);
    let once = |trigger: Trigger, confirm: Option<i64>| {
        let (store, target, cfg, wake, running, shutdown) = (&store, &target, &cfg, &wake, &running, &shutdown);
        let store_failed = &store_failed;
        async move {
            running.store(true, Ordering::SeqCst);
            // One run at a time here, so after a run that failed on the store, a run still
            // open is that one, whose end could not be recorded: close it, or it shows as
            // running until the next start.
            if store_failed.load(Ordering::SeqCst)
                && let Ok(n) = store.sync().close_running("interrupted: its end could not be recorded").await
            {
                store_failed.store(false, Ordering::SeqCst);
                if n > 0 {
                    tracing::warn!(runs = n, "sync: closed a run whose end could not be recorded");
                }
            }
            // Shutdown does not wait for a run over a large app: the run is dropped between
            // two steps (a repair is one transaction: queued whole or not at all) and
            // recorded as interrupted.
            let r = tokio::select! {
                r = full_sync::run(store, target.as_ref(), cfg, deactivates, trigger, confirm) => r,
                _ = shutdown.cancelled() => {
                    let _ = store.sync().close_running("interrupted by shutdown").await;
                    running.store(false, Ordering::SeqCst);
                    return Err(TriggerError::Stopped);
                }
            };
            running.store(false, Ordering::SeqCst);
            // Repairs and re-queued dead letters are waiting in the outbox.
            wake.notify_one();
            let r = r.map_err(TriggerError::from);
            if matches!(r, Err(TriggerError::Store(_))) {
                store_failed.store(true, Ordering::SeqCst);
            }
            r
        }
    };
    // Catch up once on a run missed while we were down.
    if let Some(s) = &schedule {
        let last = store.sync().runs(1).await.ok().and_then(|r| r.into_iter().next());
        if let Some(last) = last {
            let started = chrono::DateTime::parse_from_rfc3339(&last.started_at).map(|t| t.with_timezone(&chrono::Utc));
            if started.is_ok_and(|t| missed(s, t, chrono::Utc::now())) {
                tracing::info!(last = %last.started_at, "sync: a scheduled run was missed while stopped; catching up once");
                if let Err(e) = once(Trigger::CatchUp, None).await {
                    tracing::error!(error = %e, "sync: catch-up run failed");
                }
            }
        }
    }
    loop {
        let next = next_after(schedule.as_ref(), chrono::Utc::now());
        let sleep = match next {
            Some(t) => (t - chrono::Utc::now()).to_std().unwrap_or_default(),
            None => std::time::Duration::from_secs(86_400 * 365),
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(sleep), if next.is_some() => {
                if let Err(e) = once(Trigger::Schedule, None).await {
                    tracing::error!(error = %e, "sync: scheduled run failed");
                }
            }
            req = rx.recv() => {
                let Some((confirm, reply)) = req else { break };
                let r = once(Trigger::Manual, confirm).await;
                let _ = reply.send(r);
            }
        }
    }
    tracing::info!("sync scheduler stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_missed_run_is_detected_once() {
        let s = cron::Schedule::from_str("0 */30 * * * *").unwrap();
        let at = |h, m| chrono::Utc.with_ymd_and_hms(2026, 11, 23, h, m, 0).unwrap();
        assert!(!missed(&s, at(10, 0), at(10, 29)), "the next time has not come");
        assert!(missed(&s, at(10, 0), at(10, 31)));
        // Down for hours: still one catch-up (the loop then waits for the next time).
        assert!(missed(&s, at(10, 0), at(15, 7)));
        assert_eq!(next_after(Some(&s), at(15, 7)), Some(at(15, 30)));
        assert_eq!(next_after(None, at(15, 7)), None);
    }
}
