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
    path: std::path::PathBuf,
    busy_timeout_seconds: u64,
    cache_kib: Option<u32>,
}

/// Page cache of the full sync's readers: a sync probes the id indexes all over, and at
/// 100k users they hold ~20 MB; with SQLite's default 2 MB most probes were a read from the
/// file (a fifth of the run's CPU). Grown only as used.
pub const BULK_CACHE_KIB: u32 = 16 * 1024;

fn open_reader(path: &Path, busy_timeout_seconds: u64, cache_kib: Option<u32>) -> Result<Connection, StoreError> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )?;
    c.busy_timeout(std::time::Duration::from_secs(busy_timeout_seconds))?;
    super::open::plan_without_bound_values(&c)?;
    super::filter_sql::register_functions(&c)?;
    if let Some(kib) = cache_kib {
        c.execute_batch(&format!("PRAGMA cache_size = -{kib}"))?;
    }
    c.set_prepared_statement_cache_capacity(64);
    Ok(c)
}

impl ReaderPool {
    /// `n` connections; `cache_kib`: page cache per connection (`None`: SQLite's default,
    /// 2 MB). A reader's cache is emptied whenever it starts reading after another
    /// connection committed, which under a stream of writes is nearly every request, so a
    /// large cache only pays for long runs of reads (the full sync), and costs memory (each
    /// connection fills its own) and time (emptying it) on the request path.
    pub fn open(path: &Path, n: usize, busy_timeout_seconds: u64, cache_kib: Option<u32>) -> Result<Self, StoreError> {
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            conns.push(open_reader(path, busy_timeout_seconds, cache_kib)?);
        }
        Ok(ReaderPool {
            conns: Mutex::new(conns),
            permits: Semaphore::new(n),
            path: path.to_path_buf(),
            busy_timeout_seconds,
            cache_kib,
        })
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
        let joined = tokio::task::spawn_blocking(move || {
            let r = f(&conn);
            (conn, r)
        })
        .await;
        let (conn, result) = match joined {
            Ok(done) => done,
            Err(e) => {
                // The query panicked and took its connection with it: open a replacement so
                // the pool does not shrink, and fail only this read.
                let fresh = open_reader(&self.path, self.busy_timeout_seconds, self.cache_kib)?;
                if let Ok(mut v) = self.conns.lock() {
                    v.push(fresh);
                }
                return Err(StoreError::Internal(format!("reader task failed: {e}")));
            }
        };
        if let Ok(mut v) = self.conns.lock() {
            v.push(conn);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_read_does_not_shrink_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        Connection::open(&path).unwrap().execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (x)").unwrap();
        let pool = ReaderPool::open(&path, 1, 1, None).unwrap();
        let r: Result<(), StoreError> = pool.run(|_| panic!("boom")).await;
        assert!(matches!(r, Err(StoreError::Internal(_))));
        // The only connection was lost with the panic; the pool replaced it.
        let n: i64 = pool.run(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)).await.unwrap();
        assert_eq!(n, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn page_cache_is_sized_per_pool() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        Connection::open(&path).unwrap().execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (x)").unwrap();
        let cache = |pool: ReaderPool| async move {
            pool.run(|c| Ok(c.query_row("PRAGMA cache_size", [], |r| r.get::<_, i64>(0))?)).await.unwrap()
        };
        assert_eq!(cache(ReaderPool::open(&path, 1, 1, None).unwrap()).await, -2000, "SQLite's default");
        assert_eq!(cache(ReaderPool::open(&path, 1, 1, Some(BULK_CACHE_KIB)).unwrap()).await, -16384);
    }

    /// A page query binds LIMIT and OFFSET; SQLite would plan with their values and so
    /// compile the cached statement again at every execution (see `open::plan_without_bound_values`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cached_statements_with_a_bound_limit_are_not_recompiled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        Connection::open(&path).unwrap().execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (x)").unwrap();
        let pool = ReaderPool::open(&path, 1, 1, None).unwrap();
        let reprepares = pool
            .run(|c| {
                let q = "SELECT x FROM t WHERE x = ?1 ORDER BY x LIMIT ?2 OFFSET ?3";
                for i in 0..5_i64 {
                    let mut st = c.prepare_cached(q)?;
                    let _: Vec<i64> =
                        st.query_map(rusqlite::params![i, 10 + i, i], |r| r.get(0))?.collect::<Result<_, _>>()?;
                }
                Ok(c.prepare_cached(q)?.get_status(rusqlite::StatementStatus::RePrepare))
            })
            .await
            .unwrap();
        assert_eq!(reprepares, 0);
    }
}
