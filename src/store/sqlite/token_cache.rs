//! The tokens this process has verified, so that a request's bearer-token check does not
//! cost a trip to a reader thread: that hop (a wake-up of a blocking thread and one of the
//! runtime on the way back) was about a third of the thread switches of a write request.
//!
//! A token is revoked by another process (`scimsync token revoke` while the daemon runs), so
//! the cache cannot be told directly. Every revoke through this backend that changed a row
//! appends a line to a marker file beside the database (`scimsync.db-revoked`) after its
//! commit and before it returns; each check looks at that file (one `stat`, no thread hop)
//! and forgets every entry when the file's identity, size or modification time changed
//! since the entries were read. So once `token revoke` has returned, a running daemon
//! refuses the token at its next request, as it did when every check read the database.
//!
//! Only active tokens are kept, under their public id with their stored hash: the presented
//! token is still compared with that hash in constant time. When the marker cannot be
//! looked at (an error other than "absent"), the cache is bypassed.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::tokens;
use crate::store::types::{StoreError, TokenInfo, presented_id};

/// More active tokens than this is not a deployment we know of; past it the cache starts
/// over rather than grow.
const MAX_ENTRIES: usize = 256;

/// What the marker file looked like: any revoke since changes it (it only grows, and a
/// recreated file has a new inode or modification time).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Seen {
    Absent,
    File { dev: u64, ino: u64, len: u64, mtime: i64, mtime_nsec: i64 },
}

pub struct TokenCache {
    marker: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    /// The marker as it was when `entries` were read; `None`: nothing read yet.
    seen: Option<Seen>,
    entries: HashMap<String, (TokenInfo, Vec<u8>)>,
}

/// The marker file of the database at `db`.
pub fn marker_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-revoked");
    PathBuf::from(name)
}

impl TokenCache {
    pub fn new(db: &Path) -> TokenCache {
        TokenCache { marker: marker_path(db), inner: Mutex::new(Inner { seen: None, entries: HashMap::new() }) }
    }

    /// The marker's state now; `None` when it cannot be told (then do not use the cache).
    pub fn observe(&self) -> Option<Seen> {
        match std::fs::metadata(&self.marker) {
            Ok(m) => Some(Seen::File {
                dev: m.dev(),
                ino: m.ino(),
                len: m.len(),
                mtime: m.mtime(),
                mtime_nsec: m.mtime_nsec(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(Seen::Absent),
            Err(_) => None,
        }
    }

    /// The answer for `presented` if its token is known as of `seen`: `Some(Some(info))`
    /// valid, `Some(None)` not this token's secret; `None` when it must be read.
    pub fn get(&self, presented: &str, seen: Seen) -> Option<Option<TokenInfo>> {
        let id = presented_id(presented)?;
        let mut inner = self.inner.lock().ok()?;
        if inner.seen != Some(seen) {
            inner.entries.clear();
            inner.seen = Some(seen);
        }
        inner.entries.get(id).map(|row| tokens::check(presented, row))
    }

    /// Remember an active token's row, read after the marker was seen as `seen`. Kept only
    /// if nothing newer was seen meanwhile: a revoke after that look has changed the marker,
    /// so the entry is dropped at the next check.
    pub fn put(&self, seen: Seen, row: (TokenInfo, Vec<u8>)) {
        if row.0.revoked_at.is_some() {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else { return };
        if inner.seen != Some(seen) {
            return;
        }
        if inner.entries.len() >= MAX_ENTRIES {
            inner.entries.clear();
        }
        inner.entries.insert(row.0.id.clone(), row);
    }

    /// After a revoke committed in this process: forget everything here, and tell every
    /// other process that uses the database through the marker.
    pub fn revoked(&self, id: &str, now: &str) -> Result<(), StoreError> {
        if let Ok(mut inner) = self.inner.lock() {
            inner.entries.clear();
            inner.seen = None;
        }
        let append = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.marker)?;
            f.write_all(format!("{now} {id}\n").as_bytes())
        };
        append().map_err(|e| {
            StoreError::Internal(format!(
                "token {id} is revoked in the store, but a running daemon may accept it until it restarts: \
                 cannot append to {}: {e}",
                self.marker.display()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, token: &str) -> (TokenInfo, Vec<u8>) {
        let info = TokenInfo { id: id.into(), label: "t".into(), created_at: "now".into(), revoked_at: None };
        (info, crate::store::types::token_hash(token))
    }

    #[test]
    fn a_revoke_by_another_process_empties_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("scimsync.db");
        let daemon = TokenCache::new(&db);
        let cli = TokenCache::new(&db);
        let token = "scimsync_0000abcd_secret";
        let seen = daemon.observe().unwrap();
        assert_eq!(seen, Seen::Absent);
        assert_eq!(daemon.get(token, seen), None, "nothing read yet");
        daemon.put(seen, row("0000abcd", token));
        assert_eq!(daemon.get(token, seen).unwrap().unwrap().id, "0000abcd");
        assert_eq!(daemon.get("scimsync_0000abcd_wrong", seen), Some(None), "another secret for the id");

        cli.revoked("0000abcd", "t1").unwrap();
        let after = daemon.observe().unwrap();
        assert_ne!(after, seen);
        assert_eq!(daemon.get(token, after), None, "must be read again");
        // A row read before the revoke, put back under the old look, is not kept.
        daemon.put(seen, row("0000abcd", token));
        assert_eq!(daemon.get(token, after), None);

        // A second revoke changes the marker again.
        daemon.put(after, row("0000abcd", token));
        cli.revoked("0000abcd", "t2").unwrap();
        assert_ne!(daemon.observe().unwrap(), after);
    }

    #[test]
    fn revoked_rows_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TokenCache::new(&dir.path().join("scimsync.db"));
        let token = "scimsync_0000abcd_secret";
        let seen = cache.observe().unwrap();
        let _ = cache.get(token, seen);
        let (mut info, hash) = row("0000abcd", token);
        info.revoked_at = Some("t".into());
        cache.put(seen, (info, hash));
        assert_eq!(cache.get(token, seen), None);
    }
}
