//! Read connections. Each connection lives on a thread of its own (never a tokio worker)
//! that runs the queries sent to it; in WAL mode these never wait for the writer.
//!
//! Why dedicated threads rather than `spawn_blocking`: a read is one hop to another thread
//! and one back either way, but tokio's blocking pool hands each task to whichever of its
//! (many, under load) idle threads the pool's condition variable wakes, behind the pool's
//! lock, and keeps those threads around; here a request wakes exactly the thread that owns
//! the free connection, and the pool has as many threads as connections.

use std::path::Path;
use std::sync::Mutex;
use std::sync::mpsc;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Semaphore, oneshot};

use super::StoreError;

/// A query and where its answer goes, run on a reader's thread with its connection.
type Job = Box<dyn FnOnce(&Connection) + Send>;

pub struct ReaderPool {
    /// The idle readers: the thread behind each takes jobs from its channel.
    idle: Mutex<Vec<mpsc::Sender<Job>>>,
    /// One per reader, so a caller waits here (asynchronously) rather than finding none.
    permits: Semaphore,
}

/// Page cache of the full sync's readers: a sync probes the id indexes all over, and at
/// 100k users they hold ~20 MB; with SQLite's default 2 MB most probes were a read from the
/// file (a fifth of the run's CPU). Grown only as used.
pub const BULK_CACHE_KIB: u32 = 16 * 1024;

fn open_reader(path: &Path, busy_timeout_seconds: u64, cache_kib: Option<u32>) -> Result<Connection, StoreError> {
    super::open::configure_library();
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

/// Start the thread that owns `conn`. It ends when its sender is dropped (the pool is).
fn spawn_reader(conn: Connection) -> Result<mpsc::Sender<Job>, StoreError> {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("scimsync-reader".into())
        .spawn(move || {
            for job in rx {
                // A panicking query fails only its own read (its answer's sender is dropped
                // on the way out); the connection and the thread stay in service.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&conn)));
            }
        })
        .map_err(|e| StoreError::Internal(format!("cannot start a reader thread: {e}")))?;
    Ok(tx)
}

impl ReaderPool {
    /// `n` connections; `cache_kib`: page cache per connection (`None`: SQLite's default,
    /// 2 MB). A reader's cache is emptied whenever it starts reading after another
    /// connection committed, which under a stream of writes is nearly every request, so a
    /// large cache only pays for long runs of reads (the full sync), and costs memory (each
    /// connection fills its own) and time (emptying it) on the request path.
    pub fn open(path: &Path, n: usize, busy_timeout_seconds: u64, cache_kib: Option<u32>) -> Result<Self, StoreError> {
        let mut idle = Vec::with_capacity(n);
        for _ in 0..n {
            idle.push(spawn_reader(open_reader(path, busy_timeout_seconds, cache_kib)?)?);
        }
        Ok(ReaderPool { idle: Mutex::new(idle), permits: Semaphore::new(n) })
    }

    /// Run `f` with a read connection on that connection's thread.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let _permit = self.permits.acquire().await.map_err(|_| StoreError::Closed)?;
        let reader = self
            .idle
            .lock()
            .map_err(|_| StoreError::Internal("reader pool poisoned".into()))?
            .pop()
            .ok_or_else(|| StoreError::Internal("no reader connection free".into()))?;
        // Declared after the permit, so dropped before it: the reader is idle again by the
        // time the next caller gets the permit, also when this future is dropped mid-read
        // (a client that went away); its thread finishes the query first.
        let lease = Lease { pool: self, reader: Some(reader) };
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |c: &Connection| {
            let _ = tx.send(f(c));
        });
        if lease.reader.as_ref().is_some_and(|r| r.send(job).is_err()) {
            return Err(StoreError::Internal("reader thread is gone".into()));
        }
        rx.await.map_err(|_| StoreError::Internal("reader task failed: the query panicked".into()))?
    }
}

/// A reader taken from the idle list, put back when dropped.
struct Lease<'a> {
    pool: &'a ReaderPool,
    reader: Option<mpsc::Sender<Job>>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let (Some(r), Ok(mut idle)) = (self.reader.take(), self.pool.idle.lock()) {
            idle.push(r);
        }
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
        // The panic failed only that read: the only connection is still in service.
        let n: i64 = pool.run(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)).await.unwrap();
        assert_eq!(n, 0);
    }

    /// A caller that stops waiting (its request was dropped) must not take the reader
    /// with it: with one reader, the next read would find none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_read_gives_its_reader_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        Connection::open(&path).unwrap().execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (x)").unwrap();
        let pool = ReaderPool::open(&path, 1, 1, None).unwrap();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        {
            let read = pool.run(move |_| {
                started_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                Ok(())
            });
            tokio::pin!(read);
            // Poll until the query runs on the reader's thread, then drop the caller.
            while started_rx.try_recv().is_err() {
                let _ = futures_poll_once(read.as_mut()).await;
                tokio::task::yield_now().await;
            }
        }
        release_tx.send(()).unwrap();
        let n: i64 = pool.run(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)).await.unwrap();
        assert_eq!(n, 0);
    }

    /// Poll `f` once; `Some` if it finished.
    async fn futures_poll_once<F: std::future::Future + Unpin>(mut f: F) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
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
