//! What a listener serves while the daemon starts. The listeners are bound and served before
//! the store opens, so a PostgreSQL that is down at start gets answers (`/healthz` alive,
//! `/readyz` and the SCIM API 503 with the reason) instead of refused connections; the
//! handlers' state goes in once the store is open and the daemon wired.
//!
//! Owns: the "starting" verdict. Must not touch: the store itself (it reads only where
//! opening stands, [`OpenProgress`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::store::OpenProgress;

/// Between the store opening and the handlers' state going in, the daemon does a little
/// start-up work (recording the delivery target, spawning the worker): a request in that
/// window waits for it rather than getting a 503, for at most this long.
const WIRING_WAIT: Duration = Duration::from_secs(10);

/// The handlers' state, once there is one, and where opening the store stands until then.
pub struct Gate<T> {
    state: watch::Sender<Option<Arc<T>>>,
    progress: OpenProgress,
}

impl<T> Gate<T> {
    pub fn new(progress: OpenProgress) -> Gate<T> {
        Gate { state: watch::Sender::new(None), progress }
    }

    /// The store is open and the daemon wired: serve for real from now on.
    pub fn open(&self, state: Arc<T>) {
        self.state.send_replace(Some(state));
    }

    /// The handlers' state, or why there is none yet (`connecting to PostgreSQL (attempt 3,
    /// last error: ...)`).
    pub async fn state(&self) -> Result<Arc<T>, String> {
        if let Some(s) = self.state.borrow().as_ref() {
            return Ok(s.clone());
        }
        if !self.progress.snapshot().ready {
            return Err(self.progress.describe());
        }
        let mut rx = self.state.subscribe();
        match tokio::time::timeout(WIRING_WAIT, rx.wait_for(Option::is_some)).await {
            Ok(Ok(s)) => Ok(s.as_ref().expect("waited for Some").clone()),
            _ => Err("the store is open; the daemon is still starting".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starting_until_open_then_waiting_for_the_wiring_then_serving() {
        let progress = OpenProgress::default();
        let gate: Arc<Gate<u32>> = Arc::new(Gate::new(progress.clone()));
        // The store is not open: the answer is at once, and says where opening stands.
        assert_eq!(gate.state().await.unwrap_err(), "connecting to PostgreSQL (attempt 1)");
        // The store is open but the daemon not wired yet: a request waits for the state.
        progress.mark_open();
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.state().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "answered before the state went in");
        gate.open(Arc::new(7));
        assert_eq!(*waiting.await.unwrap().unwrap(), 7);
        assert_eq!(*gate.state().await.unwrap(), 7);
    }
}
