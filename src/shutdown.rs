//! Signals become one `CancellationToken`, passed down to every component (SIGTERM, SIGINT),
//! and a stream of reload requests (SIGHUP); nothing else listens for signals.
//!
//! The handlers are registered before this returns, so a signal sent once the daemon has
//! printed its listening line is never met by the default action (which for SIGHUP and
//! SIGTERM would end the process without a clean shutdown).

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Cancel `token` on SIGTERM or SIGINT (Ctrl-C).
pub fn on_signals(token: CancellationToken) {
    let stop = stop_signal();
    tokio::spawn(async move {
        let name = stop.await;
        tracing::info!(signal = name, "shutdown requested");
        crate::systemd::stopping();
        token.cancel();
    });
}

/// One message per SIGHUP (several quick ones may arrive as one: a reload reads everything
/// anyway). On platforms without SIGHUP the stream stays silent.
pub fn on_hangup() -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(1);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        // A reload already waiting covers this one too.
                        let _ = tx.try_send(());
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP; reload by restarting"),
        }
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}

#[cfg(unix)]
fn stop_signal() -> impl std::future::Future<Output = &'static str> + Send {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
}

#[cfg(not(unix))]
fn stop_signal() -> impl std::future::Future<Output = &'static str> + Send {
    async {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
