//! A 2xx means committed: data survives a clean restart and a SIGKILL, and every accepted
//! change has its outbox row.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::app::{Mode, Proxy, ScimApp, scim_target_config};
use crate::support::*;

#[tokio::test]
async fn data_survives_a_clean_restart() {
    let mut d = Daemon::start();
    let u = d.create_user("persist@example.com").await;
    let g = d.create_group("Persisted", &[&u]).await;
    let status = d.stop();
    assert!(status.success(), "SIGTERM must exit 0, got {status:?}");
    d.spawn();
    let r = d.get(&format!("/Groups/{g}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["members"][0]["value"], u);
    assert_eq!(d.get(&format!("/Users/{u}")).await.body["userName"], "persist@example.com");
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() {
    let mut d = Daemon::start();
    // Many concurrent writers, so that group commit batches them; every 201 must survive.
    let mut tasks = Vec::new();
    for w in 0..8 {
        let http = d.http.clone();
        let (base, token) = (d.base.clone(), d.token.clone());
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..40 {
                let rb = http
                    .post(format!("{base}/Users"))
                    .bearer_auth(&token)
                    .header("content-type", "application/scim+json")
                    .body(user_body(&format!("w{w}-{i}@example.com")).to_string());
                let r = send(rb).await;
                assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
                acked.push(r.body["id"].as_str().unwrap().to_string());
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    d.kill9();
    d.spawn();
    let r = d.get("/Users?count=0").await;
    assert_eq!(r.body["totalResults"], acked.len());
    for id in acked.iter().step_by(17) {
        assert_eq!(d.get(&format!("/Users/{id}")).await.status, StatusCode::OK, "user {id} lost after SIGKILL");
    }
}

#[tokio::test]
async fn kill_during_load_loses_no_acknowledged_change() {
    let mut d = Daemon::start();
    let http = d.http.clone();
    let (base, token) = (d.base.clone(), d.token.clone());
    let writer = tokio::spawn(async move {
        let mut acked = Vec::new();
        for i in 0..100_000 {
            let rb = http
                .post(format!("{base}/Users"))
                .bearer_auth(&token)
                .header("content-type", "application/scim+json")
                .body(user_body(&format!("load{i}@example.com")).to_string());
            match rb.send().await {
                Ok(r) if r.status() == StatusCode::CREATED => {
                    let v: serde_json::Value = match r.json().await {
                        Ok(v) => v,
                        Err(_) => break,
                    };
                    acked.push(v["id"].as_str().unwrap().to_string());
                }
                _ => break, // the daemon died under us: stop
            }
        }
        acked
    });
    // Kill once some writes have been acknowledged (bounded wait).
    let mut n = 0;
    for _ in 0..400 {
        n = d.get("/Users?count=0").await.body["totalResults"].as_u64().unwrap();
        if n >= 50 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(n >= 50, "the writer made no progress");
    d.kill9();
    let acked = writer.await.unwrap();
    d.spawn();
    for id in &acked {
        assert_eq!(d.get(&format!("/Users/{id}")).await.status, StatusCode::OK, "acknowledged user {id} lost");
    }
}

#[tokio::test]
async fn every_change_has_its_outbox_row() {
    let d = Daemon::start();
    let u = d.create_user("ob@example.com").await;
    let g = d.create_group("OB", &[]).await;
    d.patch(&format!("/Users/{u}"), patch_body(json!([{"op": "replace", "path": "active", "value": false}]))).await;
    d.patch(&format!("/Groups/{g}"), patch_body(json!([{"op": "add", "path": "members", "value": [{"value": u}]}])))
        .await;
    assert_eq!(d.delete(&format!("/Users/{u}")).await.status, StatusCode::NO_CONTENT);
    // Read the outbox through the library's store API on the daemon's store.
    let store = d.open_store().await;
    let user_rows = store.outbox().rows_of(&u).await.unwrap();
    let ops: Vec<(&str, u64)> = user_rows.iter().map(|(op, v, _)| (op.as_str(), *v)).collect();
    assert_eq!(ops, vec![("create", 1), ("update", 2), ("delete", 3)]);
    let group_rows = store.outbox().rows_of(&g).await.unwrap();
    assert_eq!(group_rows.len(), 2);
    assert!(group_rows[1].2.contains(&u), "member delta recorded: {}", group_rows[1].2);
    let pragmas = store.admin().settings().await.unwrap();
    let get = |k: &str| pragmas.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap();
    if on_postgres() {
        // A returned commit is on the server's disk, whatever the server's default.
        assert_eq!(get("synchronous_commit"), "on");
        store.close();
        return;
    }
    assert_eq!(get("journal_mode"), "wal");
    assert_eq!(get("synchronous"), "2", "synchronous must be FULL (2)");
    assert_eq!(get("foreign_keys"), "1");
    assert_eq!(get("busy_timeout"), "5000");
    assert_eq!(get("temp_store"), "2", "savepoint sub-journals in memory (MEMORY = 2)");
    store.close();
}

/// A delivery in flight when the daemon is killed is sent again after the restart under the
/// same Idempotency-Key (the outbox id), so an app that saw the first attempt can tell it is
/// the same change; and the user arrives.
#[tokio::test]
async fn a_delivery_cut_by_sigkill_is_sent_again_with_the_same_idempotency_key() {
    let app = ScimApp::start().await;
    let proxy = Proxy::start(&app.base).await;
    // The app hangs: the delivery is in flight, unanswered, when the daemon dies.
    proxy.set(Mode::Slow(Duration::from_secs(60)));
    let mut d = Daemon::start_with(&scim_target_config(&proxy.base));
    d.create_user("cut@example.com").await;
    // Every request of a delivery carries its key: the lookup by userName (GET) that comes
    // first, and the POST that creates the account.
    let posts = || -> Vec<(String, Option<String>)> {
        proxy
            .arrived()
            .into_iter()
            .filter(|s| s.path.contains("/Users"))
            .map(|s| (s.method, s.idempotency_key))
            .collect()
    };
    for _ in 0..300 {
        if !posts().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cut = posts();
    let first = cut.first().cloned().expect("the delivery did not reach the app within 15 s").1.expect("a key");
    d.kill9();
    proxy.set(Mode::Forward);
    d.spawn();
    d.wait_outbox_empty().await;
    let keys = posts();
    assert!(keys[cut.len()..].iter().any(|(m, _)| m == "POST"), "the cut delivery was not sent again: {keys:?}");
    assert!(keys.iter().all(|(_, k)| k.as_deref() == Some(first.as_str())), "keys differ: {keys:?}");
    assert!(app.user_by_name("cut@example.com").await.is_some(), "the user never reached the app");
}
