//! `scimsync backup` (issue 6): an online copy taken while the daemon is under write load
//! holds every change acknowledged before it started, passes its own checks, and a daemon
//! started on it (the documented restore) serves the data.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_load_restores_every_acknowledged_change() {
    let d = Daemon::start();
    if on_postgres() {
        // PostgreSQL's own tools back it up: the command says so and writes nothing.
        let path = d.dir.path().join("backup.db");
        let out = d.cli_raw(&["backup", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{stderr}");
        assert!(stderr.contains("pg_dump --schema=scimsync"), "{stderr}");
        assert!(!path.exists(), "no file written");
        return;
    }
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    // A writer that keeps creating users; an id is recorded only once its 201 arrived.
    let load = {
        let (http, url, token, acked, stop) =
            (d.http.clone(), d.url("/Users"), d.token.clone(), acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.is_cancelled() {
                let r =
                    send(http.post(&url).bearer_auth(&token).json(&user_body(&format!("load{i}@example.com")))).await;
                assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
                acked.lock().unwrap().push(r.body["id"].as_str().unwrap().to_string());
                i += 1;
            }
            i
        })
    };
    let mut waited = 0;
    while acked.lock().unwrap().len() < 30 {
        waited += 1;
        assert!(waited < 600, "the load made fewer than 30 users in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before: Vec<String> = acked.lock().unwrap().clone();
    let path = d.dir.path().join("backup.db");
    let out = tokio::task::block_in_place(|| d.cli(&["backup", path.to_str().unwrap()]));
    let after_backup = acked.lock().unwrap().len();
    // Let the load go on a little after the backup, then stop it.
    let mut waited = 0;
    while acked.lock().unwrap().len() < after_backup + 5 {
        waited += 1;
        assert!(waited < 600, "the load stalled after the backup");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    let total = load.await.expect("load task");
    assert!(out.contains("integrity check ok"), "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the copy holds personal data: owner-only");
    }
    assert!(total > before.len(), "writes went on during and after the backup");

    // The copy holds every user acknowledged before the backup started.
    let copy = rusqlite::Connection::open(&path).expect("open the copy");
    let mut missing = Vec::new();
    for id in &before {
        let n: i64 = copy.query_row("SELECT count(*) FROM resources WHERE id = ?1", [id], |r| r.get(0)).unwrap();
        if n != 1 {
            missing.push(id.clone());
        }
    }
    assert!(missing.is_empty(), "acknowledged before the backup but missing from it: {missing:?}");
    let users: i64 = copy.query_row("SELECT count(*) FROM resources WHERE kind = 'User'", [], |r| r.get(0)).unwrap();
    assert!(out.contains(&format!("{users} users")), "the summary counts what the copy holds: {out}");
    let outbox: i64 = copy.query_row("SELECT count(*) FROM outbox", [], |r| r.get(0)).unwrap();
    assert_eq!(outbox, users, "each create's outbox row is in the copy with it");
    drop(copy);
    // The backup refuses to overwrite.
    assert_eq!(d.cli_raw(&["backup", path.to_str().unwrap()]).status.code(), Some(1));

    // Restore: a daemon started on the copy serves every acknowledged user.
    let restored = Daemon::start_restored(&path);
    for id in &before {
        let r = restored.get(&format!("/Users/{id}")).await;
        assert_eq!(r.status, StatusCode::OK, "user {id} after restore: {}", r.body);
    }
    let list = restored.get("/Users?count=0").await;
    assert_eq!(list.body["totalResults"], users, "{}", list.body);
}
