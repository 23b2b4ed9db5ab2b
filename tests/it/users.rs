//! /Users: CRUD, filters, pagination, projections, ETags (RFC 7644 §3.3–§3.6, §3.14).

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn create_get_replace_delete() {
    let d = Daemon::start();
    let r = d
        .post(
            "/Users",
            json!({
                "schemas": [USER, ENTERPRISE],
                "userName": "bjensen@example.com",
                "externalId": "ext-1",
                "id": "client-chosen-id-is-ignored",
                "password": "t1meMa$heen",
                "name": {"givenName": "Barbara", "familyName": "Jensen"},
                "emails": [{"value": "bjensen@example.com", "type": "work", "primary": true}],
                ENTERPRISE: {"employeeNumber": "701984", "department": "Tour Operations"}
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    assert_ne!(id, "client-chosen-id-is-ignored");
    assert_eq!(r.header("location"), Some(d.url(&format!("/Users/{id}")).as_str()));
    assert_eq!(r.header("etag"), Some("W/\"1\""));
    assert_eq!(r.header("content-type"), Some("application/scim+json"));
    assert_eq!(r.body["meta"]["resourceType"], "User");
    assert_eq!(r.body["meta"]["location"], d.url(&format!("/Users/{id}")));
    assert_eq!(r.body["meta"]["version"], "W/\"1\"");
    assert_eq!(r.body["schemas"], json!([USER, ENTERPRISE]));
    assert_eq!(r.body[ENTERPRISE]["department"], "Tour Operations");
    assert!(r.body.get("password").is_none(), "password must never be returned");

    let g = d.get(&format!("/Users/{id}")).await;
    assert_eq!(g.status, StatusCode::OK);
    assert_eq!(g.body["userName"], "bjensen@example.com");
    assert_eq!(g.body["externalId"], "ext-1");
    assert!(g.body.get("password").is_none());

    // PUT replaces all attributes (title disappears, name changes).
    let p = d
        .put(
            &format!("/Users/{id}"),
            json!({
                "schemas": [USER], "userName": "bjensen@example.com", "name": {"givenName": "Babs"}, "active": false
            }),
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert_eq!(p.body["name"], json!({"givenName": "Babs"}));
    assert_eq!(p.body["active"], false);
    assert!(p.body.get(ENTERPRISE).is_none());
    assert_eq!(p.header("etag"), Some("W/\"2\""));

    assert_eq!(d.delete(&format!("/Users/{id}")).await.status, StatusCode::NO_CONTENT);
    d.get(&format!("/Users/{id}")).await.assert_error(404, None);
    d.delete(&format!("/Users/{id}")).await.assert_error(404, None);
}

#[tokio::test]
async fn password_is_not_stored_in_clear() {
    let d = Daemon::start();
    let r = d.post("/Users", json!({"schemas": [USER], "userName": "p", "password": "correct horse battery"})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    drop(d.get("/Users").await);
    let raw = d.store_dump();
    let needle = b"correct horse battery";
    assert!(!raw.windows(needle.len()).any(|w| w == needle), "password found in the store");
    // The search can find: the user it was sent with is in the same bytes.
    assert!(raw.windows(b"userName".len()).any(|w| w == b"userName"), "the dump holds the users");
}

#[tokio::test]
async fn user_name_is_unique_case_insensitively() {
    let d = Daemon::start();
    d.create_user("Alice@Example.com").await;
    d.post("/Users", user_body("alice@example.COM")).await.assert_error(409, Some("uniqueness"));
    // Renaming another user onto the name is refused too, and changes nothing.
    let bob = d.create_user("bob@example.com").await;
    let r = d
        .patch(
            &format!("/Users/{bob}"),
            patch_body(json!([{"op": "replace", "path": "userName", "value": "ALICE@example.com"}])),
        )
        .await;
    r.assert_error(409, Some("uniqueness"));
    assert_eq!(d.get(&format!("/Users/{bob}")).await.body["userName"], "bob@example.com");
}

#[tokio::test]
async fn filters_on_indexed_attributes() {
    let d = Daemon::start();
    let a = d.create_user("alice@example.com").await;
    let r = d.post("/Users", json!({"schemas": [USER], "userName": "bob@example.com", "externalId": "EXT-B",
        "displayName": "Bob Builder", "emails": [{"value": "bob@work.example", "type": "work"}, {"value": "bob@home.example", "type": "home"}]})).await;
    let b = r.body["id"].as_str().unwrap().to_string();
    let ids = |r: &Resp| -> Vec<String> {
        r.body["Resources"].as_array().unwrap().iter().map(|u| u["id"].as_str().unwrap().to_string()).collect()
    };
    for (filter, want) in [
        ("userName eq \"ALICE@example.com\"".to_string(), vec![a.clone()]),
        (format!("id eq \"{b}\""), vec![b.clone()]),
        ("externalId eq \"EXT-B\"".to_string(), vec![b.clone()]),
        ("externalId eq \"ext-b\"".to_string(), vec![]), // externalId is caseExact
        ("displayName eq \"bob builder\"".to_string(), vec![b.clone()]),
        ("emails.value eq \"BOB@home.example\"".to_string(), vec![b.clone()]),
        ("emails[type eq \"work\"].value eq \"bob@work.example\"".to_string(), vec![b.clone()]),
        ("emails[type eq \"work\" and value eq \"bob@home.example\"]".to_string(), vec![]),
        ("userName eq \"alice@example.com\" and active eq true".to_string(), vec![a.clone()]),
        ("userName eq \"nobody\"".to_string(), vec![]),
        ("userName sw \"b\"".to_string(), vec![b.clone()]),
        ("userName co \"EXAMPLE\"".to_string(), vec![a.clone(), b.clone()]),
        ("externalId pr".to_string(), vec![b.clone()]),
        ("not (externalId pr)".to_string(), vec![a.clone()]),
    ] {
        let r = d.get(&filter_q("/Users", &filter)).await;
        assert_eq!(r.status, StatusCode::OK, "{filter}: {}", r.body);
        assert_eq!(ids(&r), want, "{filter}");
        assert_eq!(r.body["totalResults"], want.len(), "{filter}");
    }
}

#[tokio::test]
async fn pagination_is_exact_and_stable() {
    let d = Daemon::start();
    let mut ids = Vec::new();
    for i in 0..25 {
        ids.push(d.create_user(&format!("u{i:02}@example.com")).await);
    }
    let mut seen = Vec::new();
    let mut start = 1;
    loop {
        let r = d.get(&format!("/Users?startIndex={start}&count=10")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body["totalResults"], 25);
        assert_eq!(r.body["startIndex"], start);
        assert_eq!(r.body["schemas"], json!(["urn:ietf:params:scim:api:messages:2.0:ListResponse"]));
        let page = r.body["Resources"].as_array().unwrap();
        assert_eq!(r.body["itemsPerPage"], page.len());
        if page.is_empty() {
            break;
        }
        seen.extend(page.iter().map(|u| u["id"].as_str().unwrap().to_string()));
        start += 10;
    }
    assert_eq!(seen, ids, "pages must cover every user once, in a stable order");
    let r = d.get("/Users?count=0").await;
    assert_eq!(r.body["totalResults"], 25);
    assert_eq!(r.body["Resources"], json!([]));
    // count above the maximum is capped, not an error.
    let r = d.get("/Users?count=100000").await;
    assert_eq!(r.body["itemsPerPage"], 25);
}

#[tokio::test]
async fn max_page_size_is_configurable() {
    let d = Daemon::start_with("[scim]\nmax_page_size = 5\ndefault_page_size = 2\n");
    for i in 0..7 {
        d.create_user(&format!("p{i}")).await;
    }
    assert_eq!(d.get("/Users").await.body["itemsPerPage"], 2);
    assert_eq!(d.get("/Users?count=50").await.body["itemsPerPage"], 5);
    let spc = d.get("/ServiceProviderConfig").await;
    assert_eq!(spc.body["filter"]["maxResults"], 5);
}

#[tokio::test]
async fn attributes_and_excluded_attributes() {
    let d = Daemon::start();
    let id = d.create_user("proj@example.com").await;
    let r = d.get(&format!("/Users/{id}?attributes=userName,name.givenName")).await;
    assert_eq!(
        r.body,
        json!({"schemas": [USER], "id": id, "userName": "proj@example.com", "name": {"givenName": "Given"}})
    );
    let r = d.get(&format!("/Users/{id}?excludedAttributes=emails,meta")).await;
    assert!(r.body.get("emails").is_none() && r.body.get("meta").is_none());
    assert_eq!(r.body["userName"], "proj@example.com");
    let r = d.get(&filter_q("/Users", "userName eq \"proj@example.com\"").replace("?", "?attributes=userName&")).await;
    assert_eq!(r.body["Resources"][0], json!({"schemas": [USER], "id": id, "userName": "proj@example.com"}));
}

#[tokio::test]
async fn etags_if_match_and_if_none_match() {
    let d = Daemon::start();
    let id = d.create_user("etag@example.com").await;
    let path = format!("/Users/{id}");
    let r = d.req_with(Method::GET, &path, None, &[("if-none-match", "W/\"1\"")]).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    let stale = d
        .req_with(
            Method::PATCH,
            &path,
            Some(patch_body(json!([{"op": "replace", "path": "active", "value": false}]))),
            &[("if-match", "W/\"7\"")],
        )
        .await;
    stale.assert_error(412, None);
    assert_eq!(d.get(&path).await.body["active"], true, "a failed If-Match must change nothing");
    let ok = d
        .req_with(
            Method::PATCH,
            &path,
            Some(patch_body(json!([{"op": "replace", "path": "active", "value": false}]))),
            &[("if-match", "W/\"1\"")],
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(ok.header("etag"), Some("W/\"2\""));
    d.req_with(Method::DELETE, &path, None, &[("if-match", "W/\"1\"")]).await.assert_error(412, None);
    let r = d.req_with(Method::GET, &path, None, &[("if-none-match", "W/\"1\"")]).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn patch_user_answers_200_with_the_resource() {
    let d = Daemon::start();
    let id = d.create_user("patch@example.com").await;
    let r = d
        .patch(
            &format!("/Users/{id}"),
            patch_body(json!([
                {"op": "replace", "path": "name.familyName", "value": "Smith"},
                {"op": "add", "path": "title", "value": "Engineer"},
                {"op": "remove", "path": "emails"}
            ])),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["name"], json!({"givenName": "Given", "familyName": "Smith"}));
    assert_eq!(r.body["title"], "Engineer");
    assert!(r.body.get("emails").is_none());
    assert_eq!(r.body["meta"]["version"], "W/\"2\"");
    // A no-op PATCH keeps the version.
    let r = d
        .patch(&format!("/Users/{id}"), patch_body(json!([{"op": "replace", "path": "title", "value": "Engineer"}])))
        .await;
    assert_eq!(r.body["meta"]["version"], "W/\"2\"");
}
