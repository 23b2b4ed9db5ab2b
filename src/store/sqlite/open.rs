//! Opening connections: the data directory, the database file and the pragmas every
//! connection runs with.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

use super::StoreError;

pub const DB_FILE: &str = "scimsync.db";

/// Create the data directory (0700: it holds token hashes and personal data) and return the
/// database path.
pub fn prepare_dir(dir: &Path) -> Result<PathBuf, StoreError> {
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Internal(format!("cannot create data directory {}: {e}", dir.display())))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
    }
    Ok(dir.join(DB_FILE))
}

/// Open a connection with our pragmas:
/// - `journal_mode=WAL`: readers never block the writer nor the writer them;
/// - `synchronous=FULL`: in WAL mode, each commit is fsynced before `COMMIT` returns, so a
///   2xx is never sent for a change a power cut could lose (NORMAL would only protect
///   against application crashes, not OS crashes);
/// - `foreign_keys=ON`: memberships and emails follow their resources;
/// - `busy_timeout`: a second process (the CLI) waits instead of failing at once;
/// - `temp_store=MEMORY`: statements and savepoints (the writer's, when it runs a batch
///   again after a failure) journal each page they touch into a sub-journal first. That journal
///   lives in memory only up to 64 KiB and then spills to a temporary file, which a create
///   with its outbox and audit rows (table and index leaves) exceeds: every
///   batch then opened, wrote (a `pwrite` per page) and deleted a file, a fifth of the
///   writer's CPU. In memory it costs a page copy. Nothing durable lives there (it is
///   discarded at `RELEASE`); the WAL and its fsync are unchanged.
pub fn connect(path: &Path, busy_timeout_seconds: u64) -> Result<Connection, StoreError> {
    configure_library();
    let conn = Connection::open(path)
        .map_err(|e| StoreError::Internal(format!("cannot open database {}: {e}", path.display())))?;
    conn.busy_timeout(Duration::from_secs(busy_timeout_seconds))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Internal(format!("could not enable WAL (journal_mode is {mode})")));
    }
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;")?;
    plan_without_bound_values(&conn)?;
    super::filter_sql::register_functions(&conn)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Process-wide SQLite settings, made once before the first connection opens (SQLite only
/// accepts them before it initialises; later calls are refused and change nothing):
/// - no memory statistics (`SQLITE_CONFIG_MEMSTATUS`, on by default): with them, every
///   allocation SQLite makes takes a process-wide mutex to count itself, for a
///   `sqlite3_memory_used` we never read. SQLite's own recommended options turn it off.
pub fn configure_library() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: `sqlite3_config` is called before any connection exists in this process
        // (every connection opens through here or `reader`, which call this first); if
        // SQLite was initialised anyway it answers SQLITE_MISUSE and changes nothing.
        let rc = unsafe { rusqlite::ffi::sqlite3_config(rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS, 0 as std::ffi::c_int) };
        if rc != rusqlite::ffi::SQLITE_OK {
            tracing::debug!(rc, "SQLite was already initialised: memory statistics stay on");
        }
    });
}

/// Plan statements without looking at the values bound to them (SQLite's "query planner
/// stability guarantee"). Otherwise SQLite plans a statement with `LIMIT ?` using the
/// bound limit, which marks the statement as expired at every bind: each execution of a
/// cached list query (`... LIMIT ? OFFSET ?`) was compiled again, ~18 % of the daemon's
/// CPU in a `userName eq` lookup. Our plans come from the indexes, not from values.
pub fn plan_without_bound_values(conn: &Connection) -> Result<(), StoreError> {
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(())
}

/// The pragmas a test reads back, so a misspelt pragma cannot silently do nothing.
pub fn read_pragmas(conn: &Connection) -> Result<Vec<(String, String)>, StoreError> {
    let mut out = Vec::new();
    for name in ["journal_mode", "synchronous", "foreign_keys", "busy_timeout", "temp_store"] {
        let v: rusqlite::types::Value = conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))?;
        let s = match v {
            rusqlite::types::Value::Integer(i) => i.to_string(),
            rusqlite::types::Value::Text(t) => t,
            other => format!("{other:?}"),
        };
        out.push((name.to_string(), s));
    }
    Ok(out)
}
