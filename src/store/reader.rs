//! Read connections. Each query runs on a blocking thread (never on a tokio worker) with a
//! connection taken from a small pool; in WAL mode these never wait for the writer.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use super::StoreError;

pub struct ReaderPool {
    conns: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl ReaderPool {
    pub fn open(path: &Path, n: usize, busy_timeout_seconds: u64) -> Result<Self, StoreError> {
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            let c = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
            )?;
            c.busy_timeout(std::time::Duration::from_secs(busy_timeout_seconds))?;
            c.set_prepared_statement_cache_capacity(64);
            conns.push(c);
        }
        Ok(ReaderPool { conns: Mutex::new(conns), permits: Semaphore::new(n) })
    }

    /// Run `f` with a read connection on a blocking thread.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let _permit = self.permits.acquire().await.map_err(|_| StoreError::Closed)?;
        let conn = self
            .conns
            .lock()
            .map_err(|_| StoreError::Internal("reader pool poisoned".into()))?
            .pop()
            .ok_or_else(|| StoreError::Internal("no reader connection free".into()))?;
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let r = f(&conn);
            (conn, r)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("reader task failed: {e}")))?;
        if let Ok(mut v) = self.conns.lock() {
            v.push(conn);
        }
        result
    }
}
