//! systemd integration (sd_notify(3)): `READY=1` once migrations ran and both listeners are
//! bound, `STATUS=` lines an operator sees in `systemctl status`, `RELOADING=1` / `READY=1`
//! around a SIGHUP reload, `STOPPING=1` at shutdown,
//! and watchdog pings while the store's writer still answers. Without `NOTIFY_SOCKET` (not
//! under systemd, or `Type=simple`) every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// Startup is finished: the service manager may start dependants.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// While the store is still opening (a PostgreSQL down at start), say where it stands in
/// `STATUS=` and push systemd's start timeout out (`EXTEND_TIMEOUT_USEC`), so a database
/// that takes longer than `TimeoutStartSec` to come back does not get the daemon killed and
/// restarted in a loop; `READY=1` follows once the store is open. Abort the task then.
pub fn starting(progress: crate::store::OpenProgress, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    const EVERY: Duration = Duration::from_secs(10);
    tokio::spawn(async move {
        loop {
            let extend = u32::try_from((EVERY * 3).as_micros()).unwrap_or(u32::MAX);
            notify(&[
                NotifyState::Status(&format!("starting: {}", progress.describe())),
                NotifyState::ExtendTimeoutUsec(extend),
            ]);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(EVERY) => {}
            }
        }
    })
}

pub fn status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

/// A SIGHUP reload starts (`systemctl reload` waits for the `READY=1` that [`reloaded`]
/// sends). `MONOTONIC_USEC` goes with it: systemd 253+ requires it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now, NotifyState::Status("reloading the configuration")]),
        Err(_) => notify(&[NotifyState::Reloading, NotifyState::Status("reloading the configuration")]),
    }
}

/// The reload is over (applied or refused): the service is ready again.
pub fn reloaded(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping: finishing requests and deliveries")]);
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// While `WatchdogSec=` is set, ping at half the interval — but only while a round trip
/// through the store's writer succeeds, so a wedged writer gets the daemon restarted instead
/// of a live-looking process that acknowledges nothing. Also refreshes `STATUS=` with the
/// queue depth.
pub fn spawn_watchdog(store: Store, shutdown: CancellationToken) {
    let interval = sd_notify::watchdog_enabled().map(|d| d / 2);
    tokio::spawn(async move {
        let tick = interval.unwrap_or(Duration::from_secs(30)).max(Duration::from_millis(50));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(tick) => {}
            }
            let healthy = matches!(tokio::time::timeout(tick, store.admin().settings()).await, Ok(Ok(_)));
            if interval.is_some() && healthy {
                notify(&[NotifyState::Watchdog]);
            } else if interval.is_some() {
                tracing::error!("store writer did not answer; withholding the systemd watchdog ping");
            }
            if let Ok(Ok((depth, _))) = tokio::time::timeout(tick, store.outbox().depth()).await {
                status(&format!("serving; {depth} change(s) queued for the app"));
            }
        }
    });
}
