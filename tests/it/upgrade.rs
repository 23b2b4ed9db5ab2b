//! An upgrade keeps what the previous release queued (issue 16): outbox rows written by it,
//! as raw JSON with every key any of its writers used, still decode and deliver.

use serde_json::{Value, json};

use crate::app::{APP_TOKEN, Proxy, ScimApp, scim_target_config};
use crate::support::*;

async fn in_app(app: &ScimApp, method: reqwest::Method, path: &str, body: Value) -> Value {
    let r = client()
        .request(method.clone(), format!("{}/{path}", app.base))
        .bearer_auth(APP_TOKEN)
        .header("content-type", "application/scim+json")
        .body(body.to_string())
        .send()
        .await
        .expect("app reachable");
    assert!(r.status().is_success(), "{method} {path} in the app: {}", r.status());
    r.json().await.unwrap_or(Value::Null)
}

/// The daemon is stopped, rows are put in its outbox the way the previous release wrote them
/// (a user's access change, a target-switch resync, a member repair naming a stranger by the
/// app's id, an orphan's deactivation with the app's record), and the daemon is started
/// again: each row is delivered under its own idempotency key and the app ends up as the rows
/// say.
#[tokio::test]
async fn outbox_rows_queued_by_the_previous_release_still_deliver() {
    if on_postgres() {
        // A SQLite file left by the previous release; PostgreSQL stores start at this one.
        return;
    }
    let app = ScimApp::start().await;
    let proxy = Proxy::start(&app.base).await;
    let mut d = Daemon::start_with(&format!("{}[reconcile]\nschedule = \"\"\n", scim_target_config(&proxy.base)));
    let a = d.create_user("old-a@example.com").await;
    let b = d.create_user("old-b@example.com").await;
    let g = d.create_group("Old", &[&a]).await;
    d.wait_outbox_empty().await;
    // An account we never created, also in the group: a repair removes it by the app's id
    // and deactivates it as an orphan.
    let stranger = in_app(
        &app,
        reqwest::Method::POST,
        "Users",
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "stranger@example.com", "active": true}),
    )
    .await;
    let stranger_id = stranger["id"].as_str().expect("app id").to_string();
    let app_group = app.all("Groups").await.into_iter().find(|x| x["displayName"] == "Old").expect("group in the app");
    let app_group_id = app_group["id"].as_str().unwrap().to_string();
    in_app(
        &app,
        reqwest::Method::PATCH,
        &format!("Groups/{app_group_id}"),
        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
               "Operations": [{"op": "add", "path": "members", "value": [{"value": stranger_id}]}]}),
    )
    .await;
    assert!(d.stop().success());

    let db = rusqlite::Connection::open(d.data_dir().join("scimsync.db")).expect("open the daemon's database");
    // The IdP's last word on both users, committed with the rows below as that release did.
    db.execute("UPDATE resources SET data = json_set(data, '$.title', 'v2') WHERE id IN (?1, ?2)", [&a, &b]).unwrap();
    let version = |id: &str| -> i64 {
        db.query_row("SELECT version FROM resources WHERE id = ?1", [id], |r| r.get(0)).expect("version")
    };
    let now = scimsync::model::now();
    let orphan = format!("orphan:User:{stranger_id}");
    let rows = [
        ("User", a.clone(), "update", version(&a), json!({"attributes_changed": true, "access_changed": true})),
        (
            "User",
            b.clone(),
            "update",
            version(&b),
            json!({"attributes_changed": true, "resync": true, "target_switch": true}),
        ),
        (
            "Group",
            g.clone(),
            "update",
            version(&g),
            json!({"members_added": [b], "members_removed": [a], "members_removed_app_ids": [stranger_id],
                   "repair_run": 1}),
        ),
        (
            "User",
            orphan.clone(),
            "delete",
            0,
            json!({"deprovision": true, "orphan": true, "deactivate_only": true,
                   "tombstone": {"userName": "stranger@example.com"}, "repair_run": 1, "app_record": stranger}),
        ),
    ];
    let mut ids = Vec::new();
    for (kind, id, op, version, payload) in &rows {
        db.execute(
            "INSERT INTO outbox (resource_kind, resource_id, op, version, payload, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![kind, id, op, version, payload.to_string(), now],
        )
        .unwrap();
        ids.push(db.last_insert_rowid().to_string());
    }
    db.execute(
        "INSERT INTO id_map (resource_id, resource_kind, app_id, updated_at) VALUES (?1, 'User', ?2, ?3)",
        [&orphan, &stranger_id, &now],
    )
    .unwrap();
    drop(db);

    d.spawn();
    d.wait_outbox_empty().await;
    let db = rusqlite::Connection::open(d.data_dir().join("scimsync.db")).unwrap();
    let undone: Vec<(i64, String, Option<String>)> = db
        .prepare("SELECT id, state, last_error FROM outbox WHERE state != 'done'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(undone.is_empty(), "every row delivered: {undone:?}");
    let keys: Vec<String> = proxy.seen().into_iter().filter_map(|s| s.idempotency_key).collect();
    for id in &ids {
        assert!(keys.contains(id), "row {id} went to the app under its own key: {keys:?}");
    }
    for name in ["old-a@example.com", "old-b@example.com"] {
        let user = app.user_by_name(name).await.expect(name);
        assert_eq!(user["title"], "v2", "{user}");
    }
    let group = app.all("Groups").await.into_iter().find(|x| x["displayName"] == "Old").unwrap();
    let members: Vec<&str> =
        group["members"].as_array().into_iter().flatten().filter_map(|m| m["value"].as_str()).collect();
    let app_b = app.user_by_name("old-b@example.com").await.unwrap()["id"].as_str().unwrap().to_string();
    assert_eq!(members, vec![app_b.as_str()], "{group}");
    let stranger = app.user_by_name("stranger@example.com").await.expect("deactivated, not deleted");
    assert_eq!(stranger["active"], false, "{stranger}");
}
