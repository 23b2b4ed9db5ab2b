//! Online backup: a consistent copy of the database while the daemon runs, with SQLite's
//! backup API on a connection of our own.
//!
//! The copy is taken in one backup step, inside one read transaction: in WAL mode that
//! reads a snapshot (everything committed before it started) without blocking the daemon's
//! writer, and it never restarts under write load the way a paced, many-step backup does
//! when the source changes between steps. The copy is written beside the destination,
//! checked (`integrity_check`), synced, and only then renamed into place.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::StoreError;

/// What a finished backup holds, for the operator (and the tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    pub path: PathBuf,
    pub bytes: u64,
    pub schema_version: u64,
    pub users: u64,
    pub groups: u64,
    pub memberships: u64,
    /// Outbox changes not yet delivered (pending, retry, in flight, held, dead).
    pub undelivered: u64,
    pub tokens: u64,
    pub audit_records: u64,
}

/// How long one busy source (a checkpoint holding a lock) is waited for, in total.
const BUSY_WAIT: Duration = Duration::from_secs(30);

/// Copy the database at `db` to `dest` (which must not exist) and verify the copy.
pub fn run(db: &Path, dest: &Path, busy_timeout_seconds: u64) -> Result<BackupReport, StoreError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| StoreError::Internal(format!("{what}: {e}"));
    if !db.exists() {
        return Err(StoreError::Internal(format!("no database at {} (check store.data_dir)", db.display())));
    }
    if dest.exists() {
        return Err(StoreError::Internal(format!("{} already exists; choose a new path", dest.display())));
    }
    let mut partial = dest.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let _ = std::fs::remove_file(&partial);
    // Read-write without CREATE: a wrong path fails instead of making an empty database,
    // and a WAL database opens even when its -shm file has to be created. Nothing is written.
    let src = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| fail(&format!("cannot open {}", db.display()), &e))?;
    src.busy_timeout(Duration::from_secs(busy_timeout_seconds))?;
    let result = (|| {
        // Token hashes and personal data: private from the first byte, like the data directory.
        let file =
            std::fs::File::create(&partial).map_err(|e| fail(&format!("cannot create {}", partial.display()), &e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| fail(&format!("cannot restrict {}", partial.display()), &e))?;
        }
        drop(file);
        let mut dst =
            Connection::open(&partial).map_err(|e| fail(&format!("cannot create {}", partial.display()), &e))?;
        {
            let backup = Backup::new(&src, &mut dst)?;
            let started = std::time::Instant::now();
            loop {
                match backup.step(-1)? {
                    StepResult::Done => break,
                    StepResult::More => continue,
                    StepResult::Busy | StepResult::Locked if started.elapsed() < BUSY_WAIT => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    other => return Err(StoreError::Internal(format!("backup did not finish: {other:?}"))),
                }
            }
        }
        // One self-contained file: no -wal beside it to forget when copying it elsewhere.
        dst.query_row("PRAGMA journal_mode = DELETE", [], |r| r.get::<_, String>(0))?;
        let report = verify(&dst, dest)?;
        drop(dst);
        std::fs::File::open(&partial).and_then(|f| f.sync_all()).map_err(|e| fail("cannot sync the copy", &e))?;
        std::fs::rename(&partial, dest).map_err(|e| fail(&format!("cannot rename to {}", dest.display()), &e))?;
        if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::File::open(dir).and_then(|f| f.sync_all());
        }
        let bytes = std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
        Ok(BackupReport { bytes, ..report })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// `integrity_check` must say `ok`; then count what the copy holds.
fn verify(c: &Connection, dest: &Path) -> Result<BackupReport, StoreError> {
    let check: Vec<String> =
        c.prepare("PRAGMA integrity_check")?.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    if check != ["ok"] {
        return Err(StoreError::Internal(format!("the copy failed integrity_check: {}", check.join("; "))));
    }
    let count =
        |sql: &str| -> Result<u64, StoreError> { Ok(c.query_row(sql, [], |r| r.get::<_, i64>(0))?.max(0) as u64) };
    Ok(BackupReport {
        path: dest.to_path_buf(),
        bytes: 0,
        schema_version: count("PRAGMA user_version")?,
        users: count("SELECT count(*) FROM resources WHERE kind = 'User'")?,
        groups: count("SELECT count(*) FROM resources WHERE kind = 'Group'")?,
        memberships: count("SELECT count(*) FROM group_members")?,
        undelivered: count("SELECT count(*) FROM outbox WHERE state <> 'done'")?,
        tokens: count("SELECT count(*) FROM tokens WHERE revoked_at IS NULL")?,
        audit_records: count("SELECT count(*) FROM audit_log")?,
    })
}
