//! Provisioning into a real app: the independent `scim2-server` on loopback, behind a
//! switchable proxy. Every lifecycle event must reach the app, in order, once in effect,
//! through outages and crashes.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::app::{Mode, Proxy, ScimApp, scim_target_config};
use crate::support::*;

fn member_names(app_group: &Value, app_users: &[Value]) -> Vec<String> {
    let mut names: Vec<String> = app_group["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| app_users.iter().find(|u| u["id"] == m["value"]))
        .map(|u| u["userName"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn every_lifecycle_event_reaches_the_app() {
    let app = ScimApp::start().await;
    let d = Daemon::start_with(&scim_target_config(&app.base));
    // create
    let alice = d.create_user("alice@example.com").await;
    let bob = d.create_user("bob@example.com").await;
    let carol = d.create_user("carol@example.com").await;
    // update
    d.patch(
        &format!("/Users/{alice}"),
        patch_body(json!([{"op": "replace", "path": "name.familyName", "value": "Liddell"}])),
    )
    .await;
    // deactivate
    d.patch(&format!("/Users/{bob}"), patch_body(json!([{"op": "replace", "path": "active", "value": false}]))).await;
    // group create with members, rename, member add / remove
    let g = d.create_group("Engineering", &[&alice, &bob]).await;
    d.patch(&format!("/Groups/{g}"), patch_body(json!([{"op": "replace", "path": "displayName", "value": "Eng"}])))
        .await;
    d.patch(
        &format!("/Groups/{g}"),
        patch_body(json!([{"op": "add", "path": "members", "value": [{"value": carol}]}])),
    )
    .await;
    d.patch(
        &format!("/Groups/{g}"),
        patch_body(json!([{"op": "remove", "path": format!("members[value eq \"{bob}\"]")}])),
    )
    .await;
    let doomed = d.create_group("Temporary", &[&carol]).await;
    d.wait_outbox_empty().await;

    let users = app.all("Users").await;
    assert_eq!(users.len(), 3, "{users:#?}");
    let a = app.user_by_name("alice@example.com").await.expect("alice in the app");
    assert_eq!(a["name"]["familyName"], "Liddell");
    assert_eq!(a["active"], true);
    assert_eq!(app.user_by_name("bob@example.com").await.unwrap()["active"], false);
    let groups = app.all("Groups").await;
    let eng = groups.iter().find(|g| g["displayName"] == "Eng").expect("renamed group in the app");
    assert_eq!(member_names(eng, &users), vec!["alice@example.com", "carol@example.com"]);
    assert!(groups.iter().any(|g| g["displayName"] == "Temporary"));

    // group delete, user deactivation on delete (the default deprovision mode)
    assert_eq!(d.delete(&format!("/Groups/{doomed}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(d.delete(&format!("/Users/{carol}")).await.status, StatusCode::NO_CONTENT);
    d.wait_outbox_empty().await;
    let groups = app.all("Groups").await;
    assert!(!groups.iter().any(|g| g["displayName"] == "Temporary"), "deleted group still in the app");
    assert_eq!(app.user_by_name("carol@example.com").await.expect("deactivated, not deleted")["active"], false);
}

#[tokio::test]
async fn deprovision_by_deletion_and_adoption_of_existing_accounts() {
    let app = ScimApp::start().await;
    // An account that already exists in the app is adopted, not duplicated.
    let pre = crate::support::client()
        .post(format!("{}/Users", app.base))
        .bearer_auth(crate::app::APP_TOKEN)
        .json(&json!({"schemas": [USER], "userName": "existing@example.com", "title": "old"}))
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), StatusCode::CREATED);
    let cfg = scim_target_config(&app.base)
        .replace("request_timeout_seconds = 5\n", "request_timeout_seconds = 5\ndeprovision = \"delete\"\n");
    let d = Daemon::start_with(&cfg);
    let r = d.post("/Users", json!({"schemas": [USER], "userName": "existing@example.com", "title": "new"})).await;
    let id = r.body["id"].as_str().unwrap().to_string();
    d.wait_outbox_empty().await;
    let users = app.all("Users").await;
    assert_eq!(users.len(), 1, "adopted, not duplicated: {users:#?}");
    assert_eq!(users[0]["title"], "new");
    d.delete(&format!("/Users/{id}")).await;
    d.wait_outbox_empty().await;
    assert!(app.all("Users").await.is_empty(), "deprovision = delete removes the account");
}

#[tokio::test]
async fn outage_delays_but_loses_nothing_and_keeps_order() {
    let app = ScimApp::start().await;
    let proxy = Proxy::start(&app.base).await;
    let d = Daemon::start_with(&scim_target_config(&proxy.base));
    proxy.set(Mode::Fail { status: 503, retry_after: None });
    // The IdP keeps pushing during the outage, and every push is acknowledged.
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(d.create_user(&format!("o{i}@example.com")).await);
    }
    for (i, id) in ids.iter().enumerate() {
        let r = d
            .patch(
                &format!("/Users/{id}"),
                patch_body(json!([{"op": "replace", "path": "title", "value": format!("v1-{i}")}])),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        d.patch(
            &format!("/Users/{id}"),
            patch_body(json!([{"op": "replace", "path": "title", "value": format!("v2-{i}")}])),
        )
        .await;
    }
    let g = d.create_group("During outage", &ids.iter().map(String::as_str).collect::<Vec<_>>()).await;
    // Bounded wait until the worker has really hit the outage a few times.
    for _ in 0..200 {
        if proxy.seen().iter().filter(|s| s.status == 503).count() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(proxy.seen().iter().filter(|s| s.status == 503).count() >= 5, "the worker never tried during the outage");
    assert!(app.all("Users").await.is_empty());
    // Throttling with Retry-After is honoured too (the next try waits at least ~1 s).
    proxy.set(Mode::Fail { status: 429, retry_after: Some(1) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.set(Mode::Forward);
    d.wait_outbox_empty().await;

    let users = app.all("Users").await;
    assert_eq!(users.len(), 10, "every user exactly once");
    for (i, _) in ids.iter().enumerate() {
        let u = users.iter().find(|u| u["userName"] == format!("o{i}@example.com")).unwrap();
        assert_eq!(u["title"], format!("v2-{i}"), "the latest state wins (coalesced, in order)");
    }
    let groups = app.all("Groups").await;
    assert_eq!(groups.len(), 1);
    assert_eq!(member_names(&groups[0], &users).len(), 10);
    // Users are created before the group that names them.
    let seen = proxy.seen();
    let first_group_post =
        seen.iter().position(|s| s.method == "POST" && s.path.ends_with("/Groups") && s.status == 201).unwrap();
    let last_user_post =
        seen.iter().rposition(|s| s.method == "POST" && s.path.ends_with("/Users") && s.status == 201).unwrap();
    assert!(last_user_post < first_group_post, "a membership must wait for its users");
    assert!(seen.iter().all(|s| s.idempotency_key.is_some()), "every request carries an idempotency key");
    let _ = g;
}

#[tokio::test]
async fn sigkill_while_delivering_then_everything_arrives() {
    let app = ScimApp::start().await;
    let proxy = Proxy::start(&app.base).await;
    let mut d = Daemon::start_with(&scim_target_config(&proxy.base));
    // Slow app: deliveries are in flight when the daemon dies.
    proxy.set(Mode::Slow(Duration::from_millis(400)));
    let mut names = Vec::new();
    for i in 0..12 {
        let n = format!("k{i}@example.com");
        d.create_user(&n).await;
        names.push(n);
    }
    for _ in 0..100 {
        if !proxy.seen().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.kill9();
    proxy.set(Mode::Forward);
    d.spawn();
    d.wait_outbox_empty().await;
    let users = app.all("Users").await;
    let mut got: Vec<String> = users.iter().map(|u| u["userName"].as_str().unwrap().to_string()).collect();
    got.sort();
    names.sort();
    assert_eq!(got, names, "every acknowledged user delivered exactly once after the crash");
}

#[tokio::test]
async fn permanent_errors_are_dead_lettered_visible_and_retryable() {
    let app = ScimApp::start().await;
    let proxy = Proxy::start(&app.base).await;
    let d = Daemon::start_with(&scim_target_config(&proxy.base));
    proxy.set(Mode::Fail { status: 400, retry_after: None });
    let id = d.create_user("rejected@example.com").await;
    let mut dead = String::new();
    for _ in 0..200 {
        dead = d.cli(&["outbox", "list", "--dead"]);
        if dead.contains(&id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(dead.contains(&id) && dead.contains("dead") && dead.contains("400"), "{dead}");
    let row_id = dead.lines().find(|l| l.contains(&id)).unwrap().split_whitespace().next().unwrap().to_string();
    let show = d.cli(&["outbox", "show", &row_id]);
    assert!(show.contains("permanent"), "attempts are recorded: {show}");
    // A later change to the same resource waits behind the dead one (order is kept).
    d.patch(&format!("/Users/{id}"), patch_body(json!([{"op": "replace", "path": "title", "value": "after"}]))).await;
    proxy.set(Mode::Forward);
    d.cli(&["outbox", "retry", &row_id]);
    d.wait_outbox_empty().await;
    assert_eq!(app.user_by_name("rejected@example.com").await.unwrap()["title"], "after");
    // Drop needs confirmation.
    let out = d.cli_raw(&["outbox", "drop", &row_id]);
    assert!(!out.status.success());
}

#[tokio::test]
async fn dry_run_records_what_would_be_sent() {
    let d = Daemon::start_with("[target]\nkind = \"dry-run\"\n[outbox]\npoll_interval_seconds = 0.05\n");
    let u = d.create_user("dry@example.com").await;
    d.create_group("Dry", &[&u]).await;
    d.wait_outbox_empty().await;
    let log = std::fs::read_to_string(d.data_dir().join("dry-run.jsonl")).expect("dry-run log");
    let lines: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert_eq!(lines[0]["representation"]["userName"], "dry@example.com");
    assert_eq!(lines[1]["members_added"], json!([u]));
}

#[tokio::test]
async fn resync_pushes_a_resource_again() {
    let app = ScimApp::start().await;
    let d = Daemon::start_with(&scim_target_config(&app.base));
    let u = d.create_user("again@example.com").await;
    d.wait_outbox_empty().await;
    // Someone edits the account in the app by hand; a resync puts our state back.
    let app_user = app.user_by_name("again@example.com").await.unwrap();
    let app_id = app_user["id"].as_str().unwrap();
    crate::support::client()
        .patch(format!("{}/Users/{app_id}", app.base))
        .bearer_auth(crate::app::APP_TOKEN)
        .json(&json!({"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "active", "value": false}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(app.user_by_name("again@example.com").await.unwrap()["active"], false);
    d.cli(&["resync", "user", &u]);
    d.wait_outbox_empty().await;
    assert_eq!(app.user_by_name("again@example.com").await.unwrap()["active"], true);
    assert_eq!(d.cli_raw(&["resync", "user", "nope"]).status.code(), Some(1));
}

#[tokio::test]
async fn a_throttling_app_pauses_all_deliveries() {
    // 429 + Retry-After from the app pauses the whole worker, so 20 queued users do not turn
    // into 20 more 429s while the app asked for quiet.
    let app = ScimApp::start().await;
    let proxy = Proxy::start(&app.base).await;
    let d = Daemon::start_with(&scim_target_config(&proxy.base));
    proxy.set(Mode::Fail { status: 429, retry_after: Some(3) });
    for i in 0..20 {
        d.create_user(&format!("t{i}@example.com")).await;
    }
    // Wait for the first 429, then count what arrived within 2.5 s of it (inside the 3 s
    // pause it started; the creates themselves may take longer than that on a slow store).
    let mut first = None;
    for _ in 0..1000 {
        first = proxy.seen().iter().map(|s| s.at).min();
        if first.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first = first.expect("the worker never reached the app");
    let window = first + Duration::from_millis(2500);
    tokio::time::sleep_until(window.into()).await;
    let throttled = proxy.seen().iter().filter(|s| s.status == 429 && s.at < window).count();
    assert!(
        throttled <= 4,
        "only the deliveries already in flight (concurrency 4) may hit the app during the pause; saw {throttled}"
    );
    proxy.set(Mode::Forward);
    d.wait_outbox_empty().await;
    assert_eq!(app.all("Users").await.len(), 20);
}

#[tokio::test]
async fn requests_to_the_app_respect_the_rate_limit() {
    let app = ScimApp::start().await;
    let proxy = Proxy::start(&app.base).await;
    let cfg = scim_target_config(&proxy.base) + "rate_limit_per_second = 5\nrate_limit_burst = 1\n";
    let d = Daemon::start_with(&cfg);
    for i in 0..4 {
        d.create_user(&format!("r{i}@example.com")).await;
    }
    d.wait_outbox_empty().await;
    let seen = proxy.seen();
    assert!(seen.len() >= 8, "a lookup and a create per user: {}", seen.len());
    // A token bucket of 5/s with burst 1 admits one request per 200 ms. Single gaps can look
    // shorter when the previous request was itself delayed on its way to the proxy, so check
    // the whole span: n requests need at least (n - 1) * 200 ms (10 % slack for timestamping).
    let (first, last) = (seen.iter().map(|s| s.at).min().unwrap(), seen.iter().map(|s| s.at).max().unwrap());
    let span = last.duration_since(first);
    let min = Duration::from_millis(180) * (seen.len() as u32 - 1);
    assert!(span >= min, "{} requests in {span:?} under a 5/s limit (at least {min:?} expected)", seen.len());
}

#[tokio::test]
async fn oauth2_client_credentials_are_fetched_cached_and_refreshed_on_401() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use warp::Filter;
    let app = ScimApp::start().await;
    // A token endpoint (RFC 6749 §4.4) that checks the client's Basic credentials. Its first
    // token is one the app rejects, so the daemon must refresh on the app's 401.
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let token_route = warp::post().and(warp::header::optional::<String>("authorization")).and(warp::body::bytes()).map(
        move |auth: Option<String>, body: bytes::Bytes| {
            let want = format!("Basic {}", base64_std("client-1:s3cret"));
            let form = String::from_utf8_lossy(&body).to_string();
            if auth.as_deref() != Some(want.as_str()) || !form.contains("grant_type=client_credentials") {
                return warp::reply::with_status(
                    warp::reply::json(&json!({"error": "invalid_client"})),
                    warp::http::StatusCode::UNAUTHORIZED,
                );
            }
            let n = c.fetch_add(1, Ordering::SeqCst);
            let token = if n == 0 { "stale-token" } else { crate::app::APP_TOKEN };
            warp::reply::with_status(
                warp::reply::json(&json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600})),
                warp::http::StatusCode::OK,
            )
        },
    );
    let (port, _token_server) =
        serve_apart(move |listener| async move { warp::serve(token_route).incoming(listener).run().await });
    let cfg = scim_target_config(&app.base).replace(
        &format!("bearer_token = \"{}\"\n", crate::app::APP_TOKEN),
        &format!(
            "oauth_token_url = \"http://127.0.0.1:{port}/oauth/token\"\noauth_client_id = \"client-1\"\noauth_client_secret = \"s3cret\"\n"
        ),
    );
    assert!(cfg.contains("oauth_token_url") && !cfg.contains("bearer_token"));
    let d = Daemon::start_with(&cfg);
    for i in 0..5 {
        d.create_user(&format!("oauth{i}@example.com")).await;
    }
    d.wait_outbox_empty().await;
    assert_eq!(app.all("Users").await.len(), 5);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one token, refreshed once after the 401, then cached");
}

fn base64_std(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test]
async fn listing_the_app_pages_at_the_configured_size() {
    use scimsync::downstream::scim_target::{Auth, Deprovision, ScimTarget, ScimTargetOptions, UpdateMethod};
    let app = ScimApp::start().await;
    let proxy = Proxy::start(&app.base).await;
    for i in 0..120 {
        let r = crate::support::client()
            .post(format!("{}/Users", app.base))
            .bearer_auth(crate::app::APP_TOKEN)
            .json(&json!({"schemas": [USER], "userName": format!("p{i}@example.com")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let target = ScimTarget::new(ScimTargetOptions {
        base_url: proxy.base.clone(),
        auth: Auth::Bearer(crate::app::APP_TOKEN.into()),
        update_method: UpdateMethod::Put,
        deprovision: Deprovision::Deactivate,
        max_members_per_patch: 100,
        page_size: 50,
        request_timeout: Duration::from_secs(5),
        throttle: scimsync::downstream::Throttle::off(),
        ca_file: None,
    })
    .unwrap();
    let mut pages = Vec::new();
    let mut names = std::collections::HashSet::new();
    let mut start = Some(1);
    let mut n = 0;
    while let Some(s) = start {
        let (page, next) = target.list_page(scimsync::model::ResourceKind::User, s).await.unwrap();
        pages.push(page.len());
        n += page.len();
        names.extend(page.iter().map(|u| u["userName"].as_str().unwrap().to_string()));
        start = next;
    }
    assert_eq!(n, 120);
    assert_eq!(names.len(), 120, "every user once");
    assert_eq!(pages, vec![50, 50, 20]);
    assert!(
        proxy.seen().iter().all(|s| s.path.contains("count=50")),
        "every list call asks for the configured page size"
    );
}
