//! /Groups: members must exist, `display` filled in, PATCH membership deltas answer 204,
//! deleting a user removes it from its groups.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

fn member_ids(group: &Value) -> Vec<String> {
    group["members"]
        .as_array()
        .map(|a| a.iter().map(|m| m["value"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn create_with_members_fills_display_and_ref() {
    let d = Daemon::start();
    let u = d.create_user("m1@example.com").await;
    let r =
        d.post("/Groups", json!({"schemas": [GROUP], "displayName": "Engineering", "members": [{"value": u}]})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let m = &r.body["members"][0];
    assert_eq!(m["value"], u);
    assert_eq!(m["display"], "m1@example.com");
    assert_eq!(m["type"], "User");
    assert_eq!(m["$ref"], d.url(&format!("/Users/{u}")));
    let gid = r.body["id"].as_str().unwrap();
    // The user's read-only `groups` shows the membership.
    let user = d.get(&format!("/Users/{u}")).await;
    assert_eq!(user.body["groups"][0]["value"], gid);
    assert_eq!(user.body["groups"][0]["display"], "Engineering");
}

#[tokio::test]
async fn unknown_member_is_invalid_value_and_nothing_is_written() {
    let d = Daemon::start();
    let u = d.create_user("known@example.com").await;
    let r = d
        .post(
            "/Groups",
            json!({"schemas": [GROUP], "displayName": "G", "members": [{"value": u}, {"value": "no-such-id"}]}),
        )
        .await;
    r.assert_error(400, Some("invalidValue"));
    assert!(r.body["detail"].as_str().unwrap().contains("no-such-id"));
    assert_eq!(d.get("/Groups").await.body["totalResults"], 0, "the failed create must leave nothing behind");
    let gid = d.create_group("G", &[]).await;
    let r = d
        .patch(
            &format!("/Groups/{gid}"),
            patch_body(json!([
                {"op": "add", "path": "members", "value": [{"value": u}]},
                {"op": "add", "path": "members", "value": [{"value": "ghost"}]}
            ])),
        )
        .await;
    r.assert_error(400, Some("invalidValue"));
    assert!(d.get(&format!("/Groups/{gid}")).await.body.get("members").is_none(), "PATCH must be all or nothing");
}

#[tokio::test]
async fn member_patches_answer_204_and_compose() {
    let d = Daemon::start();
    let a = d.create_user("a@example.com").await;
    let b = d.create_user("b@example.com").await;
    let c = d.create_user("c@example.com").await;
    let gid = d.create_group("Team", &[&a]).await;
    let path = format!("/Groups/{gid}");
    let r = d
        .patch(&path, patch_body(json!([{"op": "add", "path": "members", "value": [{"value": b}, {"value": c}]}])))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(member_ids(&d.get(&path).await.body), vec![a.clone(), b.clone(), c.clone()]);
    // Adding an existing member is a no-op, not an error.
    let r = d.patch(&path, patch_body(json!([{"op": "add", "path": "members", "value": [{"value": a}]}]))).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    // Remove by filter path (Okta / Entra aadOptscim062020).
    let r = d.patch(&path, patch_body(json!([{"op": "remove", "path": format!("members[value eq \"{b}\"]")}]))).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(member_ids(&d.get(&path).await.body), vec![a.clone(), c.clone()]);
    // Replace the whole list.
    let r = d.patch(&path, patch_body(json!([{"op": "replace", "path": "members", "value": [{"value": b}]}]))).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(member_ids(&d.get(&path).await.body), vec![b.clone()]);
    // Asking for attributes gets 200 with the group.
    let r = d
        .patch(
            &format!("{path}?attributes=members"),
            patch_body(json!([{"op": "add", "path": "members", "value": [{"value": c}]}])),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(member_ids(&r.body), vec![b.clone(), c.clone()]);
    // Remove all members.
    let r = d.patch(&path, patch_body(json!([{"op": "remove", "path": "members"}]))).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(d.get(&path).await.body.get("members").is_none());
}

/// A member filter other than `value eq` is evaluated over the group's member list, which the
/// store's one-step PATCH does not load: that PATCH reads the list first (and still honours
/// If-Match).
#[tokio::test]
async fn a_member_filter_that_needs_the_member_list_applies() {
    let d = Daemon::start();
    let a = d.create_user("fa@example.com").await;
    let b = d.create_user("fb@example.com").await;
    let inner = d.create_group("Inner", &[]).await;
    let gid = d.create_group("Outer", &[&a, &b, &inner]).await;
    let path = format!("/Groups/{gid}");
    let r = d.patch(&path, patch_body(json!([{"op": "remove", "path": "members[type eq \"User\"]"}]))).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(member_ids(&d.get(&path).await.body), vec![inner.clone()]);
    // If-Match still applies on that path: a stale version changes nothing.
    let body = patch_body(json!([{"op": "remove", "path": "members[type eq \"Group\"]"}]));
    let stale = d.req_with(reqwest::Method::PATCH, &path, Some(body), &[("If-Match", "W/\"1\"")]).await;
    stale.assert_error(412, None);
    assert_eq!(member_ids(&d.get(&path).await.body), vec![inner]);
}

#[tokio::test]
async fn group_patch_can_be_configured_to_return_the_group() {
    let d = Daemon::start_with("[scim]\ngroup_patch_returns_resource = true\n");
    let gid = d.create_group("Cfg", &[]).await;
    let r = d
        .patch(
            &format!("/Groups/{gid}"),
            patch_body(json!([{"op": "replace", "path": "displayName", "value": "Renamed"}])),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["displayName"], "Renamed");
}

#[tokio::test]
async fn filters_and_excluded_members() {
    let d = Daemon::start();
    let u = d.create_user("f@example.com").await;
    let g1 = d.create_group("Alpha", &[&u]).await;
    let _g2 = d.create_group("Beta", &[]).await;
    let r = d.get(&filter_q("/Groups", "displayName eq \"alpha\"")).await;
    assert_eq!(r.body["totalResults"], 1);
    let r = d.get(&filter_q("/Groups", &format!("members.value eq \"{u}\""))).await;
    assert_eq!(r.body["Resources"][0]["id"], g1);
    let r = d.get(&filter_q("/Groups", &format!("id eq \"{g1}\" and members[value eq \"{u}\"]"))).await;
    assert_eq!(r.body["totalResults"], 1, "{}", r.body);
    let r = d.get(&(filter_q("/Groups", &format!("id eq \"{g1}\"")) + "&excludedAttributes=members")).await;
    assert!(r.body["Resources"][0].get("members").is_none());
    assert_eq!(r.body["Resources"][0]["displayName"], "Alpha");
    let r = d.get(&format!("/Groups/{g1}?excludedAttributes=members")).await;
    assert!(r.body.get("members").is_none());
}

#[tokio::test]
async fn deleting_a_user_removes_it_from_groups() {
    let d = Daemon::start();
    let a = d.create_user("gone@example.com").await;
    let b = d.create_user("stays@example.com").await;
    let gid = d.create_group("G", &[&a, &b]).await;
    let before = d.get(&format!("/Groups/{gid}")).await.body["meta"]["version"].clone();
    assert_eq!(d.delete(&format!("/Users/{a}")).await.status, StatusCode::NO_CONTENT);
    let g = d.get(&format!("/Groups/{gid}")).await;
    assert_eq!(member_ids(&g.body), vec![b]);
    assert_ne!(g.body["meta"]["version"], before, "the group changed, so must its version");
}

#[tokio::test]
async fn ten_thousand_member_group_patch_stays_small() {
    // Membership is stored as rows: a PATCH to a big group neither echoes nor rewrites it.
    let d = Daemon::start();
    let gid = d.create_group("Big", &[]).await;
    let mut ids = Vec::new();
    for i in 0..300 {
        ids.push(d.create_user(&format!("big{i}@example.com")).await);
    }
    let chunk: Vec<Value> = ids.iter().map(|id| json!({"value": id})).collect();
    let r =
        d.patch(&format!("/Groups/{gid}"), patch_body(json!([{"op": "add", "path": "members", "value": chunk}]))).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.body, Value::Null);
    assert_eq!(member_ids(&d.get(&format!("/Groups/{gid}")).await.body).len(), 300);
}

#[tokio::test]
async fn concurrent_member_adds_to_one_group_all_land() {
    // An IdP pushing a big group sends many member PATCHes at once; membership deltas
    // commute, so none may be refused or lost.
    let d = Daemon::start();
    let gid = d.create_group("Concurrent", &[]).await;
    let mut users = Vec::new();
    for i in 0..40 {
        users.push(d.create_user(&format!("c{i}@example.com")).await);
    }
    let mut tasks = Vec::new();
    for u in users.clone() {
        let (http, url, token) = (d.http.clone(), d.url(&format!("/Groups/{gid}")), d.token.clone());
        tasks.push(tokio::spawn(async move {
            let body = patch_body(json!([{"op": "add", "path": "members", "value": [{"value": u}]}]));
            send(
                http.patch(url)
                    .bearer_auth(token)
                    .header("content-type", "application/scim+json")
                    .body(body.to_string()),
            )
            .await
            .status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::NO_CONTENT);
    }
    let mut got = member_ids(&d.get(&format!("/Groups/{gid}")).await.body);
    got.sort();
    users.sort();
    assert_eq!(got, users);
}
