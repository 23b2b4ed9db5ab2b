//! The audit log (issue 6): every accepted change is recorded with the token id, method,
//! resource, what changed by name and the IdP's request id, in the same transaction as the
//! change; rejected changes leave nothing; operator actions are recorded; old records are
//! pruned; `scimsync audit` filters.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::app::{ScimApp, scim_target_config};
use crate::support::*;

/// `scimsync audit --json` with extra arguments: one record per line.
fn audit(d: &Daemon, args: &[&str]) -> Vec<Value> {
    let mut full = vec!["audit", "--json"];
    full.extend_from_slice(args);
    d.cli(&full)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit --json printed {l:?}: {e}")))
        .collect()
}

/// The records of changes IdPs sent (the harness's own `token create` is an operator's).
fn idp(records: Vec<Value>) -> Vec<Value> {
    records.into_iter().filter(|r| r["actor"] == "token").collect()
}

fn token_id(d: &Daemon) -> String {
    d.token.split('_').nth(1).expect("token id").to_string()
}

fn methods(records: &[Value]) -> Vec<&str> {
    records.iter().map(|r| r["method"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn changes_over_http_are_recorded_with_token_and_request_id() {
    let d = Daemon::start();
    let tid = token_id(&d);
    let entra = [("client-request-id", "entra-7f1c")];
    let r = d.req_with(Method::POST, "/Users", Some(user_body("alice@example.com")), &entra).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let alice = r.body["id"].as_str().unwrap().to_string();
    let okta = [("X-Okta-Request-Id", "okta-req-42")];
    let patch = patch_body(json!([
        {"op": "replace", "path": "active", "value": false},
        {"op": "replace", "path": "password", "value": "Sup3r-Secret!"}
    ]));
    let r = d.req_with(Method::PATCH, &format!("/Users/{alice}"), Some(patch), &okta).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let mut put = user_body("alice@example.com");
    put["title"] = json!("Engineer");
    assert_eq!(d.put(&format!("/Users/{alice}"), put).await.status, StatusCode::OK);
    let group = d.create_group("Engineering", &[&alice]).await;
    assert_eq!(d.delete(&format!("/Users/{alice}")).await.status, StatusCode::NO_CONTENT);

    let all = idp(audit(&d, &[]));
    assert_eq!(methods(&all), vec!["POST", "PATCH", "PUT", "POST", "DELETE"], "{all:#?}");
    for r in &all {
        assert_eq!(r["actor"], "token");
        assert_eq!(r["token_id"], tid.as_str(), "the authenticated token's id: {r}");
    }
    let (create, patched, put, group_rec, delete) = (&all[0], &all[1], &all[2], &all[3], &all[4]);
    assert_eq!(create["request_id"], "entra-7f1c");
    assert_eq!(create["resource_type"], "User");
    assert_eq!(create["resource_id"], alice.as_str());
    assert_eq!(create["resource_name"], "alice@example.com");
    assert_eq!(create["version"], 1);
    assert!(create["summary"]["attributes"].as_array().unwrap().contains(&json!("userName")), "{create}");
    assert_eq!(patched["request_id"], "okta-req-42");
    assert_eq!(patched["summary"]["operations"], json!(["replace active", "replace password"]));
    assert_eq!(patched["summary"]["changed"], json!(["active", "password"]));
    assert_eq!(put["request_id"], Value::Null, "no request id header: none recorded");
    assert_eq!(put["summary"]["changed"], json!(["active", "title"]), "{put}");
    assert_eq!(group_rec["resource_type"], "Group");
    assert_eq!(group_rec["resource_id"], group.as_str());
    assert_eq!(group_rec["resource_name"], "Engineering");
    assert_eq!(group_rec["summary"]["members"], json!({"added": 1}));
    assert_eq!(delete["resource_name"], "alice@example.com", "named although the row is gone");
    let text = d.cli(&["audit"]);
    assert!(!text.contains("Sup3r-Secret"), "a password value reached the audit log:\n{text}");
    assert!(text.contains("request-id=entra-7f1c") && text.contains(&format!("token:{tid}")), "{text}");

    // Filters: by resource (type/id, id, name in any case), by time, and the limit.
    let by_path = audit(&d, &["--resource", &format!("Users/{alice}")]);
    assert_eq!(methods(&by_path), vec!["POST", "PATCH", "PUT", "DELETE"]);
    assert_eq!(audit(&d, &["--resource", "ALICE@example.com"]).len(), 4, "by userName, any case");
    assert!(audit(&d, &["--resource", &format!("Groups/{alice}")]).is_empty(), "the type must match");
    assert_eq!(methods(&audit(&d, &["--resource", "Engineering"])), vec!["POST"]);
    assert_eq!(methods(&audit(&d, &["--limit", "2"])), vec!["POST", "DELETE"], "the most recent, oldest first");
    assert_eq!(idp(audit(&d, &["--since", "1h"])).len(), 5);
    assert!(audit(&d, &["--since", "2999-01-01T00:00:00Z"]).is_empty());
    let bad = d.cli_raw(&["audit", "--since", "yesterday"]);
    assert_eq!(bad.status.code(), Some(2), "a bad --since is a usage error");

    // Bulk: each operation is recorded on its own, with the request's id.
    let bulk = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": [
        {"method": "POST", "path": "/Users", "bulkId": "b1", "data": user_body("bob@example.com")},
        {"method": "POST", "path": "/Users", "bulkId": "b2", "data": user_body("carol@example.com")}
    ]});
    let r = d.req_with(Method::POST, "/Bulk", Some(bulk), &[("X-Request-Id", "bulk-1")]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let recent = audit(&d, &["--limit", "2"]);
    let names: Vec<&str> = recent.iter().map(|r| r["resource_name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["bob@example.com", "carol@example.com"]);
    assert!(recent.iter().all(|r| r["request_id"] == "bulk-1"), "{recent:#?}");
}

#[tokio::test]
async fn rejected_changes_leave_no_audit_record() {
    let d = Daemon::start();
    let id = d.create_user("dave@example.com").await;
    let before = audit(&d, &[]).len();
    assert_eq!(idp(audit(&d, &[])).len(), 1);
    // 409: the userName is taken.
    d.post("/Users", user_body("DAVE@example.com")).await.assert_error(409, Some("uniqueness"));
    // 400: a PATCH whose second operation is invalid applies nothing.
    let half = patch_body(json!([
        {"op": "replace", "path": "title", "value": "x"},
        {"op": "replace", "path": "active", "value": "perhaps"}
    ]));
    assert_eq!(d.patch(&format!("/Users/{id}"), half).await.status, StatusCode::BAD_REQUEST);
    // 412: If-Match names an old version.
    let r = d
        .req_with(Method::PUT, &format!("/Users/{id}"), Some(user_body("dave@example.com")), &[("If-Match", "W/\"9\"")])
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "{}", r.body);
    // 404: nothing to delete.
    assert_eq!(d.delete("/Users/no-such-user").await.status, StatusCode::NOT_FOUND);
    // 401: no valid token, no record.
    let r = send(d.http.post(d.url("/Users")).bearer_auth("scimsync_00000000_nope").json(&user_body("e@x.com"))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(audit(&d, &[]).len(), before, "{:#?}", audit(&d, &[]));
}

#[tokio::test]
async fn records_past_retention_are_pruned() {
    let mut d = Daemon::start_with("[audit]\nretention_days = 30\nprune_interval_seconds = 3600\n");
    let old = d.create_user("old@example.com").await;
    let new = d.create_user("new@example.com").await;
    assert!(d.stop().success());
    // Age one record past the retention, as if it had been written 40 days ago.
    let n = d.store_sql(
        &format!(
            "UPDATE audit_log SET at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-40 days') WHERE resource_id = '{old}'"
        ),
        &format!(
            "UPDATE audit_log SET at = to_char((now() - interval '40 days') AT TIME ZONE 'UTC', \
             'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') WHERE resource_id = '{old}'"
        ),
    );
    assert_eq!(n, 1);
    // The daemon prunes at start.
    d.spawn();
    let mut left = Vec::new();
    for _ in 0..200 {
        left = idp(audit(&d, &[]));
        if left.len() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let ids: Vec<&str> = left.iter().map(|r| r["resource_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![new.as_str()], "only the expired record is pruned");
}

#[tokio::test]
async fn operator_actions_are_recorded() {
    let app = ScimApp::start().await;
    let guard = "[outbox.deletion_guard]\nthreshold_count = 2\nthreshold_share = 1.0\n";
    let d = Daemon::start_with(&format!("{}{guard}", scim_target_config(&app.base)));
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(d.create_user(&format!("op{i}@example.com")).await);
    }
    d.wait_outbox_empty().await;
    for id in &ids[..5] {
        assert_eq!(d.delete(&format!("/Users/{id}")).await.status, StatusCode::NO_CONTENT);
    }
    d.wait_outbox_empty().await;
    let held: Vec<String> = d.held_ids();
    assert!(!held.is_empty(), "the guard holds some deletions");

    // Without --confirm nothing is discarded and nothing recorded.
    let operator = |d: &Daemon| -> Vec<Value> {
        // The harness created the daemon's token with the CLI before start: skip that one.
        audit(d, &[]).into_iter().filter(|r| r["actor"] == "cli").skip(1).collect()
    };
    assert_eq!(d.cli_raw(&["outbox", "discard", "--held"]).status.code(), Some(2));
    assert!(operator(&d).is_empty(), "{:#?}", operator(&d));
    d.cli(&["outbox", "discard", "--held", "--confirm"]);
    let recs = operator(&d);
    assert_eq!(recs.len(), 1, "{recs:#?}");
    let rec = &recs[0];
    assert_eq!(rec["method"], "outbox discard --held");
    assert_eq!(rec["token_id"], Value::Null);
    assert_eq!(rec["summary"]["count"], held.len());
    let discarded: Vec<&str> =
        rec["summary"]["changes"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(discarded, held.iter().map(String::as_str).collect::<Vec<_>>(), "each dropped change is named");

    // Release, token create and revoke are recorded too (never the token's secret).
    d.cli(&["outbox", "release", "--held"]);
    let secret = d.cli(&["token", "create", "--label", "okta-prod"]).trim().to_string();
    let new_id = secret.split('_').nth(1).unwrap().to_string();
    d.cli(&["token", "revoke", &new_id]);
    let cli = operator(&d);
    assert_eq!(methods(&cli), vec!["outbox discard --held", "outbox release --held", "token create", "token revoke"]);
    assert_eq!(cli[1]["summary"]["count"], 0, "nothing was left to release");
    assert_eq!(cli[2]["resource_id"], new_id.as_str());
    assert_eq!(cli[2]["summary"]["label"], "okta-prod");
    assert_eq!(cli[3]["resource_id"], new_id.as_str());
    assert!(!d.cli(&["audit"]).contains(&secret), "the token secret is never recorded");
}

#[tokio::test]
async fn resync_and_drop_are_recorded_and_no_ops_are_not() {
    // No target: changes stay queued, so the row to drop cannot be delivered first.
    let d = Daemon::start();
    let id = d.create_user("gus@example.com").await;
    let operator =
        |d: &Daemon| -> Vec<Value> { audit(d, &[]).into_iter().filter(|r| r["actor"] == "cli").skip(1).collect() };
    d.cli(&["resync", "user", &id]);
    let list = d.cli(&["outbox", "list"]);
    let queued: Vec<i64> = list
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.get(1) == Some(&"pending")).then(|| cols[0].parse().expect("outbox id"))
        })
        .collect();
    assert_eq!(queued.len(), 2, "the create and the resync:\n{list}");
    d.cli(&["outbox", "drop", &queued[1].to_string(), "--confirm"]);
    // Nothing to act on: exit 1, and no record.
    assert_eq!(d.cli_raw(&["outbox", "drop", "999999", "--confirm"]).status.code(), Some(1));
    assert_eq!(d.cli_raw(&["token", "revoke", "00000000"]).status.code(), Some(1));
    assert_eq!(d.cli_raw(&["outbox", "retry", "--all-dead"]).status.code(), Some(0));
    let recs = operator(&d);
    assert_eq!(methods(&recs), vec!["resync", "outbox drop"], "{recs:#?}");
    assert_eq!(recs[0]["resource_type"], "User");
    assert_eq!(recs[0]["resource_id"], id.as_str());
    assert_eq!(recs[0]["resource_name"], "gus@example.com");
    assert_eq!(recs[0]["summary"]["outbox_id"], queued[1], "{:#?}", recs[0]);
    assert_eq!(recs[1]["resource_id"], queued[1].to_string());
    let change = &recs[1]["summary"]["change"];
    assert_eq!((change["id"].as_str(), change["op"].as_str()), (Some(id.as_str()), Some("update")), "{change}");
}
