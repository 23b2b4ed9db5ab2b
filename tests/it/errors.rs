//! Every error is an RFC 7644 §3.12 body with the right status and scimType; nothing
//! half-applies.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn malformed_json_is_invalid_syntax() {
    let d = Daemon::start();
    let rb = d
        .http
        .post(d.url("/Users"))
        .bearer_auth(&d.token)
        .header("content-type", "application/json")
        .body("{\"userName\": ");
    send(rb).await.assert_error(400, Some("invalidSyntax"));
    let rb = d.http.post(d.url("/Users")).bearer_auth(&d.token).body("");
    send(rb).await.assert_error(400, Some("invalidSyntax"));
    d.post("/Users", json!(["not", "an", "object"])).await.assert_error(400, Some("invalidSyntax"));
}

#[tokio::test]
async fn both_content_types_are_accepted() {
    let d = Daemon::start();
    for (i, ct) in ["application/scim+json", "application/json", "application/json; charset=utf-8"].iter().enumerate() {
        let rb = d
            .http
            .post(d.url("/Users"))
            .bearer_auth(&d.token)
            .header("content-type", *ct)
            .body(user_body(&format!("ct{i}")).to_string());
        assert_eq!(send(rb).await.status, StatusCode::CREATED, "{ct}");
    }
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let d = Daemon::start_with("");
    let big = "x".repeat(1024 * 1024 + 10);
    let r = d.post("/Users", json!({"schemas": [USER], "userName": "big", "title": big})).await;
    r.assert_error(413, None);
    assert_eq!(d.get("/Users").await.body["totalResults"], 0);
}

#[tokio::test]
async fn invalid_values_and_missing_required() {
    let d = Daemon::start();
    d.post("/Users", json!({"schemas": [USER], "displayName": "no userName"}))
        .await
        .assert_error(400, Some("invalidValue"));
    d.post("/Users", json!({"schemas": [USER], "userName": "x", "active": "perhaps"}))
        .await
        .assert_error(400, Some("invalidValue"));
    d.post("/Groups", json!({"schemas": [GROUP]})).await.assert_error(400, Some("invalidValue"));
    let r = d.get("/Users?count=many").await;
    r.assert_error(400, Some("invalidValue"));
}

#[tokio::test]
async fn invalid_filters_say_where() {
    let d = Daemon::start();
    for f in [
        "userName eq",
        "userName eqq \"x\"",
        "(userName eq \"x\"",
        "userName eq \"x\" and",
        "\"x\" eq userName",
        "foo eq \"x\"",
    ] {
        let r = d.get(&filter_q("/Users", f)).await;
        r.assert_error(400, Some("invalidFilter"));
    }
    let r = d.get(&filter_q("/Users", "userName eqq \"x\"")).await;
    assert!(r.body["detail"].as_str().unwrap().contains("column"), "detail should say where: {}", r.body);
}

#[tokio::test]
async fn patch_errors_have_precise_scim_types_and_apply_nothing() {
    let d = Daemon::start();
    let id = d.create_user("pe@example.com").await;
    let path = format!("/Users/{id}");
    let cases = [
        (
            json!({"schemas": [PATCH_OP], "Operations": [{"op": "frobnicate", "path": "title", "value": "x"}]}),
            "invalidSyntax",
        ),
        (json!({"schemas": [PATCH_OP]}), "invalidSyntax"),
        (patch_body(json!([{"op": "replace", "path": "title[", "value": "x"}])), "invalidPath"),
        (patch_body(json!([{"op": "replace", "path": "noSuchAttribute", "value": "x"}])), "invalidPath"),
        (patch_body(json!([{"op": "remove"}])), "noTarget"),
        (
            patch_body(
                json!([{"op": "replace", "path": "emails[type eq \"fax\" and value co \"@\"]", "value": {"value": "x"}}]),
            ),
            "noTarget",
        ),
        (patch_body(json!([{"op": "replace", "path": "groups", "value": [{"value": "g"}]}])), "mutability"),
        (
            patch_body(
                json!([{"op": "replace", "path": "title", "value": "T"}, {"op": "replace", "path": "active", "value": "maybe"}]),
            ),
            "invalidValue",
        ),
    ];
    for (body, scim_type) in cases {
        let r = d.patch(&path, body.clone()).await;
        r.assert_error(400, Some(scim_type));
        let after = d.get(&path).await.body;
        assert!(after.get("title").is_none(), "half-applied PATCH {body}");
        assert_eq!(after["meta"]["version"], "W/\"1\"", "{body}");
    }
}

#[tokio::test]
async fn unknown_endpoints_and_methods() {
    let d = Daemon::start();
    d.get("/Nope").await.assert_error(404, None);
    d.get("/Users/does-not-exist").await.assert_error(404, None);
    d.put("/Users/does-not-exist", user_body("x")).await.assert_error(404, None);
    d.patch("/Users/does-not-exist", patch_body(json!([{"op": "add", "path": "title", "value": "x"}])))
        .await
        .assert_error(404, None);
    d.req(Method::DELETE, "/Users", None).await.assert_error(405, None);
    d.req(Method::GET, "/Users/.search", None).await.assert_error(405, None);
    let r = send(d.http.get(format!("{}/", d.base.trim_end_matches("/scim/v2")))).await;
    r.assert_error(404, None);
    d.post("/Bulk", json!({})).await.assert_error(400, Some("invalidSyntax"));
    d.post("/Me", json!({})).await.assert_error(501, None);
}
