//! Discovery endpoints (RFC 7644 §4, RFC 7643 §5–§8).

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn service_provider_config_resource_types_schemas() {
    let d = Daemon::start();
    let spc = d.get("/ServiceProviderConfig").await;
    assert_eq!(spc.status, StatusCode::OK);
    assert_eq!(spc.body["schemas"], json!(["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"]));
    assert_eq!(spc.body["patch"]["supported"], true);
    assert_eq!(spc.body["filter"]["supported"], true);
    assert_eq!(spc.body["filter"]["maxResults"], 1000);
    assert_eq!(spc.body["etag"]["supported"], true);
    assert_eq!(spc.body["sort"]["supported"], true);
    assert_eq!(spc.body["authenticationSchemes"][0]["type"], "oauthbearertoken");

    let rt = d.get("/ResourceTypes").await;
    assert_eq!(rt.body["totalResults"], 2);
    let user = d.get("/ResourceTypes/User").await;
    assert_eq!(user.body["endpoint"], "/Users");
    assert_eq!(user.body["schemaExtensions"][0]["schema"], ENTERPRISE);
    d.get("/ResourceTypes/Nope").await.assert_error(404, None);

    let schemas = d.get("/Schemas").await;
    let ids: Vec<&str> =
        schemas.body["Resources"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    for want in [USER, GROUP, ENTERPRISE] {
        assert!(ids.contains(&want), "{want} missing from /Schemas: {ids:?}");
    }
    let user_schema = d.get(&format!("/Schemas/{USER}")).await;
    assert_eq!(user_schema.status, StatusCode::OK);
    let attrs = user_schema.body["attributes"].as_array().unwrap();
    let user_name = attrs.iter().find(|a| a["name"] == "userName").unwrap();
    assert_eq!(user_name["uniqueness"], "server");
    assert_eq!(user_name["required"], true);
    assert_eq!(user_schema.body["meta"]["location"], d.url(&format!("/Schemas/{USER}")));
    d.get("/Schemas/urn:nope").await.assert_error(404, None);
}

#[tokio::test]
async fn other_methods_on_discovery_are_405() {
    let d = Daemon::start();
    for path in
        ["/ServiceProviderConfig", "/ResourceTypes", "/Schemas", "/ResourceTypes/User", &format!("/Schemas/{USER}")]
    {
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            let r = d.req(m.clone(), path, Some(json!({}))).await;
            r.assert_error(405, None);
        }
    }
}

#[tokio::test]
async fn search_endpoints() {
    let d = Daemon::start();
    let u = d.create_user("search@example.com").await;
    let g = d.create_group("Searchers", &[&u]).await;
    let r = d
        .post(
            "/Users/.search",
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                "filter": "userName eq \"search@example.com\"", "attributes": ["userName"]
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["Resources"][0], json!({"schemas": [USER], "id": u, "userName": "search@example.com"}));
    let r = d.post("/.search", json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"]})).await;
    assert_eq!(r.body["totalResults"], 2, "{}", r.body);
    let r = d.post("/.search", json!({"filter": "displayName eq \"Searchers\""})).await;
    assert_eq!(r.body["Resources"][0]["id"], g, "{}", r.body);
    let r = d.post("/Groups/.search", json!({"filter": "displayName eq \"Searchers\""})).await;
    assert_eq!(r.body["totalResults"], 1);
}

#[tokio::test]
async fn unknown_query_parameters_are_ignored() {
    // Entra appends ?aadOptscim062020 to the base URL.
    let d = Daemon::start();
    let r = d.get("/Users?aadOptscim062020").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = d.get(&(filter_q("/Users", "userName eq \"x\"") + "&aadOptscim062020&foo=bar")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["totalResults"], 0);
}
