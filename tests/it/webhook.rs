//! The REST/webhook target against a real HTTP receiver on loopback that verifies the
//! HMAC signature the way an app would.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use warp::Filter;
use warp::http::HeaderMap;

use crate::support::*;

const SECRET: &str = "webhook-shared-secret";

#[derive(Debug, Clone)]
struct Received {
    event: String,
    method: String,
    path: String,
    body: Value,
    signature_ok: bool,
}

/// A receiver that checks `X-Scimsync-Signature` independently (its own HMAC code path:
/// hmac + sha2 from the test, not the daemon's `sign`), and answers creates with an id.
async fn receiver() -> (String, Arc<Mutex<Vec<Received>>>) {
    use hmac::{Hmac, Mac};
    let got: Arc<Mutex<Vec<Received>>> = Arc::default();
    let g = got.clone();
    let route = warp::any()
        .and(warp::method())
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and(warp::body::bytes())
        .map(move |method: warp::http::Method, path: warp::path::FullPath, headers: HeaderMap, body: bytes::Bytes| {
            let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            let ts = h("x-scimsync-timestamp");
            let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
            mac.update(format!("{ts}.").as_bytes());
            mac.update(&body);
            let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
            let mut g = g.lock().unwrap();
            let n = g.len();
            g.push(Received {
                event: h("x-scimsync-event"),
                method: method.to_string(),
                path: path.as_str().to_string(),
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                signature_ok: h("x-scimsync-signature") == want,
            });
            warp::reply::json(&json!({"data": {"id": format!("app-{n}")}}))
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    (format!("http://127.0.0.1:{port}/api"), got)
}

#[tokio::test]
async fn webhook_events_are_mapped_signed_and_use_the_app_id() {
    let (base, got) = receiver().await;
    let cfg = format!(
        r#"[target]
kind = "webhook"
[target.webhook]
base_url = "{base}"
secret = "{SECRET}"
id_field = "data.id"
[target.webhook.user_fields]
login = {{ from = "userName", transform = "lowercase" }}
email = "emails[type eq \"work\"].value"
disabled = {{ from = "active", transform = "not" }}
plan = {{ constant = "enterprise" }}
[target.webhook.events.user_create]
method = "POST"
path = "/users"
[target.webhook.events.user_update]
method = "PUT"
path = "/users/{{app_id}}"
[target.webhook.events.user_delete]
method = "DELETE"
path = "/users/{{app_id}}"
[target.webhook.events.group_create]
method = "POST"
path = "/teams"
[target.webhook.events.members_add]
method = "POST"
path = "/teams/{{app_id}}/members"
[outbox]
poll_interval_seconds = 0.05
"#
    );
    let d = Daemon::start_with(&cfg);
    let u = d.create_user("Hook@Example.com").await;
    d.patch(&format!("/Users/{u}"), patch_body(json!([{"op": "replace", "path": "active", "value": false}]))).await;
    d.create_group("Team", &[&u]).await;
    d.delete(&format!("/Users/{u}")).await;
    let mut events = Vec::new();
    for _ in 0..400 {
        events = got.lock().unwrap().clone();
        if events.iter().any(|e| e.event == "user_delete") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(events.iter().all(|e| e.signature_ok), "every request must carry a valid signature: {events:#?}");
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names.first(), Some(&"user_create"), "{names:?}");
    let create = &events[0];
    assert_eq!((create.method.as_str(), create.path.as_str()), ("POST", "/api/users"));
    assert_eq!(create.body["login"], "hook@example.com");
    assert_eq!(create.body["email"], "Hook@Example.com");
    assert_eq!(create.body["plan"], "enterprise");
    assert!(create.body.get("userName").is_none(), "only mapped fields are sent");
    // Later calls use the id the app returned at create (data.id = app-0).
    let delete = events.iter().find(|e| e.event == "user_delete").expect("user_delete sent");
    assert_eq!((delete.method.as_str(), delete.path.as_str()), ("DELETE", "/api/users/app-0"));
    let add = events.iter().find(|e| e.event == "members_add").expect("members_add sent");
    assert_eq!(add.body["members"], json!(["app-0"]));
    assert!(add.path.starts_with("/api/teams/app-") && add.path.ends_with("/members"), "{}", add.path);
    // The deactivation was either coalesced into the create or sent as an update with disabled=true.
    if let Some(upd) = events.iter().find(|e| e.event == "user_update") {
        assert_eq!(upd.body["disabled"], true);
        assert_eq!(upd.path, "/api/users/app-0");
    } else {
        assert_eq!(create.body["disabled"], true);
    }
}

#[tokio::test]
async fn webhook_config_errors_name_the_key() {
    let d = Daemon::start();
    std::fs::write(
        d.config_path(),
        format!(
            "[store]\ndata_dir = \"{}\"\n[target]\nkind = \"webhook\"\n[target.webhook]\nbase_url = \"http://127.0.0.1:1\"\nsecret = \"s\"\n\
             [target.webhook.user_fields]\nlogin = \"noSuchAttribute\"\n[target.webhook.events.user_create]\nmethod = \"POST\"\npath = \"/u\"\n",
            d.data_dir().display()
        ),
    )
    .unwrap();
    let out = d.cli_raw(&["check-config"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("target.webhook") && err.contains("login") && err.contains("noSuchAttribute"), "{err}");
}
