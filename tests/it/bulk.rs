//! `POST /Bulk` (RFC 7644 §3.7): bulkId references, mixed methods, failOnErrors, the
//! §3.7.4 limits, and invalid operations failing alone.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

const BULK_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
const BULK_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:BulkResponse";

fn bulk(ops: Value) -> Value {
    json!({"schemas": [BULK_REQUEST], "Operations": ops})
}

fn ops(r: &Resp) -> Vec<Value> {
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["schemas"], json!([BULK_RESPONSE]));
    r.body["Operations"].as_array().expect("Operations").clone()
}

fn id_of(op: &Value) -> String {
    op["location"].as_str().expect("location").rsplit('/').next().unwrap().to_string()
}

#[tokio::test]
async fn user_and_group_linked_by_bulk_id() {
    let d = Daemon::start();
    // The group comes first and names the user by bulkId: it waits for the user's POST.
    let r = d
        .post(
            "/Bulk",
            bulk(json!([
                {"method": "POST", "path": "/Groups", "bulkId": "g1",
                 "data": {"schemas": [GROUP], "displayName": "Tour Guides", "members": [{"type": "User", "value": "bulkId:u1"}]}},
                {"method": "POST", "path": "/Users", "bulkId": "u1", "data": user_body("alice@example.com")}
            ])),
        )
        .await;
    let o = ops(&r);
    assert_eq!(o.len(), 2);
    assert_eq!(o[0]["method"], "POST");
    assert_eq!(o[0]["bulkId"], "g1");
    assert_eq!(o[0]["status"], "201", "status is a string (RFC 7644 §3.7.3): {}", o[0]);
    assert_eq!(o[1]["bulkId"], "u1");
    assert_eq!(o[1]["version"], "W/\"1\"");
    let (gid, uid) = (id_of(&o[0]), id_of(&o[1]));
    assert_eq!(o[1]["location"], d.url(&format!("/Users/{uid}")));
    let g = d.get(&format!("/Groups/{gid}")).await;
    assert_eq!(g.body["members"][0]["value"], uid, "{}", g.body);
    assert_eq!(g.body["members"][0]["display"], "alice@example.com");
    // The membership is visible from the user side too.
    let u = d.get(&format!("/Users/{uid}")).await;
    assert_eq!(u.body["groups"][0]["value"], gid);
}

#[tokio::test]
async fn mixed_methods_with_versions() {
    let d = Daemon::start();
    let keep = d.create_user("keep@example.com").await;
    let gone = d.create_user("gone@example.com").await;
    let gid = d.create_group("Team", &[]).await;
    let r = d
        .post(
            "/Bulk",
            bulk(json!([
                {"method": "POST", "path": "/Users", "bulkId": "n", "data": user_body("new@example.com")},
                {"method": "PUT", "path": format!("/Users/{keep}"), "version": "W/\"1\"",
                 "data": {"schemas": [USER], "userName": "keep@example.com", "title": "Boss"}},
                {"method": "PATCH", "path": format!("/Groups/{gid}"),
                 "data": patch_body(json!([{"op": "add", "path": "members", "value": [{"value": "bulkId:n"}, {"value": keep}]}]))},
                {"method": "DELETE", "path": format!("/Users/{gone}")},
                {"method": "PUT", "path": format!("/Users/{keep}"), "version": "W/\"1\"",
                 "data": {"schemas": [USER], "userName": "keep@example.com"}}
            ])),
        )
        .await;
    let o = ops(&r);
    let statuses: Vec<&str> = o.iter().map(|x| x["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["201", "200", "200", "204", "412"], "{}", r.body);
    assert_eq!(o[1]["version"], "W/\"2\"");
    assert_eq!(o[3]["location"], d.url(&format!("/Users/{gone}")));
    assert!(o[3].get("version").is_none());
    assert_eq!(o[4]["response"]["status"], "412", "a stale version fails like If-Match: {}", o[4]);
    assert_eq!(o[4]["location"], d.url(&format!("/Users/{keep}")));
    assert_eq!(d.get(&format!("/Users/{keep}")).await.body["title"], "Boss");
    d.get(&format!("/Users/{gone}")).await.assert_error(404, None);
    let members = d.get(&format!("/Groups/{gid}")).await.body["members"].as_array().unwrap().len();
    assert_eq!(members, 2);
}

#[tokio::test]
async fn fail_on_errors_stops_after_that_many_failures() {
    let d = Daemon::start();
    d.create_user("taken@example.com").await;
    let body = |fail_on_errors: Value| {
        json!({"schemas": [BULK_REQUEST], "failOnErrors": fail_on_errors, "Operations": [
            {"method": "POST", "path": "/Users", "bulkId": "a", "data": user_body("a@example.com")},
            {"method": "POST", "path": "/Users", "bulkId": "dup", "data": user_body("TAKEN@example.com")},
            {"method": "DELETE", "path": "/Users/no-such-id"},
            {"method": "POST", "path": "/Users", "bulkId": "b", "data": user_body("b@example.com")}
        ]})
    };
    let o = ops(&d.post("/Bulk", body(json!(1))).await);
    assert_eq!(o.len(), 2, "stops at the first error: {o:?}");
    assert_eq!(o[1]["status"], "409");
    assert_eq!(o[1]["response"]["scimType"], "uniqueness");
    assert!(o[1].get("location").is_none(), "a failed POST has no location");
    let r = d.get(&filter_q("/Users", "userName eq \"b@example.com\"")).await;
    assert_eq!(r.body["totalResults"], 0, "operations after the stop do not run");
    // Without failOnErrors every operation runs; the successful ones stay done.
    let o = ops(&d.post("/Bulk", json!({"Operations": body(json!(null))["Operations"]})).await);
    let statuses: Vec<&str> = o.iter().map(|x| x["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["409", "409", "404", "201"]);
    d.post("/Bulk", body(json!(0))).await.assert_error(400, Some("invalidValue"));
}

#[tokio::test]
async fn limits_are_advertised_and_enforced_with_413() {
    let d = Daemon::start_with("[scim]\nbulk_max_operations = 3\nbulk_max_payload_bytes = 4096\n");
    let spc = d.get("/ServiceProviderConfig").await;
    assert_eq!(spc.body["bulk"], json!({"supported": true, "maxOperations": 3, "maxPayloadSize": 4096}));
    let four: Vec<Value> = (0..4).map(|_| json!({"method": "DELETE", "path": "/Users/x"})).collect();
    let r = d.post("/Bulk", bulk(json!(four))).await;
    r.assert_error(413, None);
    assert!(r.body["detail"].as_str().unwrap().contains("maxOperations"), "{}", r.body);
    let big = json!([{"method": "POST", "path": "/Users", "bulkId": "x",
                      "data": {"userName": "x", "title": "t".repeat(5000)}}]);
    let r = d.post("/Bulk", bulk(big)).await;
    r.assert_error(413, None);
    assert!(r.body["detail"].as_str().unwrap().contains("maxPayloadSize (4096"), "{}", r.body);
    assert_eq!(d.get("/Users").await.body["totalResults"], 0);
}

#[tokio::test]
async fn bulk_payload_limit_replaces_the_general_body_limit() {
    // Bulk allows more than other endpoints: a body between the two limits is accepted on
    // /Bulk, refused elsewhere; above the bulk limit the error names maxPayloadSize.
    let d = Daemon::start_with_env(
        "[scim]\nbulk_max_payload_bytes = 16384\n",
        &[("SCIMSYNC_SERVER__MAX_BODY_BYTES", "2048")],
    );
    let title = "t".repeat(3000);
    let r = d
        .post(
            "/Bulk",
            bulk(
                json!([{"method": "POST", "path": "/Users", "bulkId": "x", "data": {"userName": "x", "title": title}}]),
            ),
        )
        .await;
    assert_eq!(ops(&r)[0]["status"], "201");
    d.post("/Users", json!({"userName": "y", "title": title})).await.assert_error(413, None);
    let r = d
        .post(
            "/Bulk",
            bulk(json!([{"method": "POST", "path": "/Users", "bulkId": "z", "data": {"userName": "z", "title": "t".repeat(20000)}}])),
        )
        .await;
    r.assert_error(413, None);
    assert!(r.body["detail"].as_str().unwrap().contains("maxPayloadSize"), "{}", r.body);
}

#[tokio::test]
async fn invalid_operations_and_references_fail_alone() {
    let d = Daemon::start();
    let r = d
        .post(
            "/Bulk",
            bulk(json!([
                {"method": "GET", "path": "/Users"},
                {"method": "POST", "path": "/Users", "data": user_body("no-bulk-id@example.com")},
                {"method": "POST", "path": "/Users", "bulkId": "bad", "data": {"schemas": [USER]}},
                {"method": "POST", "path": "/Groups", "bulkId": "g1",
                 "data": {"displayName": "G1", "members": [{"value": "bulkId:nobody"}]}},
                {"method": "POST", "path": "/Groups", "bulkId": "g2",
                 "data": {"displayName": "G2", "members": [{"value": "bulkId:bad"}]}},
                {"method": "POST", "path": "/Groups", "bulkId": "c1",
                 "data": {"displayName": "C1", "members": [{"value": "bulkId:c2"}]}},
                {"method": "POST", "path": "/Groups", "bulkId": "c2",
                 "data": {"displayName": "C2", "members": [{"value": "bulkId:c1"}]}},
                {"method": "POST", "path": "/Users", "bulkId": "ok", "data": user_body("ok@example.com")}
            ])),
        )
        .await;
    let o = ops(&r);
    let got: Vec<(&str, &str, Option<&str>)> = o
        .iter()
        .map(|x| {
            (x["method"].as_str().unwrap_or(""), x["status"].as_str().unwrap(), x["response"]["scimType"].as_str())
        })
        .collect();
    assert_eq!(
        got,
        [
            ("GET", "400", Some("invalidSyntax")),
            ("POST", "400", Some("invalidSyntax")),
            ("POST", "400", Some("invalidValue")),
            ("POST", "400", Some("invalidValue")),
            ("POST", "409", None),
            ("POST", "409", None),
            ("POST", "409", None),
            ("POST", "201", None),
        ],
        "{}",
        r.body
    );
    for x in &o[..7] {
        assert_eq!(x["response"]["schemas"], json!([ERROR]));
        assert!(x["response"]["detail"].as_str().is_some_and(|s| !s.is_empty()));
    }
    assert!(o[3]["response"]["detail"].as_str().unwrap().contains("bulkId:nobody"));
    assert!(o[5]["response"]["detail"].as_str().unwrap().contains("circular"));
    assert_eq!(d.get("/Groups").await.body["totalResults"], 0, "no group was created");
    assert_eq!(d.get("/Users").await.body["totalResults"], 1);
}

#[tokio::test]
async fn malformed_requests_and_other_methods() {
    let d = Daemon::start();
    d.post("/Bulk", json!({"schemas": [BULK_REQUEST]})).await.assert_error(400, Some("invalidSyntax"));
    d.post("/Bulk", json!({"schemas": [PATCH_OP], "Operations": []})).await.assert_error(400, Some("invalidSyntax"));
    d.req(Method::GET, "/Bulk", None).await.assert_error(405, None);
    let r = d.post("/Bulk", bulk(json!([]))).await;
    assert_eq!(ops(&r).len(), 0);
}
