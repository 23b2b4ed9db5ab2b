//! Whole provisioning sequences as real IdPs send them.
//! Shapes: Okta "SCIM 2.0 protocol reference" (developer.okta.com/docs/api/openapi/okta-scim/guides/scim-20)
//! and Microsoft "Tutorial: Develop and plan provisioning for a SCIM endpoint in Microsoft Entra ID"
//! (learn.microsoft.com/entra/identity/app-provisioning/use-scim-to-provision-users-and-groups).

use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn okta_user_and_group_lifecycle() {
    let d = Daemon::start();
    // 1. Okta checks whether the user exists.
    let r = d.get(&(filter_q("/Users", "userName eq \"test.user@okta.local\"") + "&startIndex=1&count=100")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["totalResults"], 0);
    // 2. Create.
    let r = d
        .post(
            "/Users",
            json!({
                "schemas": [USER], "userName": "test.user@okta.local",
                "name": {"givenName": "Test", "familyName": "User"},
                "emails": [{"primary": true, "value": "test.user@okta.local", "type": "work"}],
                "displayName": "Test User", "locale": "en-US", "externalId": "00ujl29u0le5T6Aj10h7",
                "groups": [], "password": "1mz050nq", "active": true
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    // 3. Retrieve.
    assert_eq!(d.get(&format!("/Users/{id}")).await.body["userName"], "test.user@okta.local");
    // 4. Update with PUT (Okta's App Integration Wizard apps send every change as PUT).
    let mut full = d.get(&format!("/Users/{id}")).await.body;
    full["name"]["familyName"] = json!("Changed");
    let r = d.put(&format!("/Users/{id}"), full.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["name"]["familyName"], "Changed");
    // 5. Deactivate with PATCH.
    let r = d
        .patch(
            &format!("/Users/{id}"),
            json!({"schemas": [PATCH_OP],
        "Operations": [{"op": "replace", "value": {"active": false}}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["active"], false);
    // Reactivate via PUT too.
    full["active"] = json!(true);
    assert_eq!(d.put(&format!("/Users/{id}"), full).await.body["active"], true);
    // 6. Group push with members (Okta omits member `type`).
    let r = d
        .post(
            "/Groups",
            json!({"schemas": [GROUP], "displayName": "Test SCIMv2",
        "members": [{"value": id, "display": "test.user@okta.local"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let gid = r.body["id"].as_str().unwrap().to_string();
    // 7. Rename + member removal by filter path.
    let r = d
        .patch(
            &format!("/Groups/{gid}"),
            json!({"schemas": [PATCH_OP], "Operations": [
                {"op": "replace", "value": {"id": gid, "displayName": "Test SCIMv2 renamed"}},
                {"op": "remove", "path": format!("members[value eq \"{id}\"]")}
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let g = d.get(&format!("/Groups/{gid}")).await.body;
    assert_eq!(g["displayName"], "Test SCIMv2 renamed");
    assert!(g.get("members").is_none());
    // 8. Delete.
    assert_eq!(d.delete(&format!("/Groups/{gid}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(d.delete(&format!("/Users/{id}")).await.status, StatusCode::NO_CONTENT);
    d.get(&format!("/Users/{id}")).await.assert_error(404, None);
}

#[tokio::test]
async fn entra_default_dialect() {
    let d = Daemon::start();
    // Test-connection probe: a filter on a random attribute value must give an empty 200.
    let r = d.get(&filter_q("/Users", "userName eq \"non-existent user 2d2a\"")).await;
    assert_eq!((r.status, r.body["totalResults"].clone()), (StatusCode::OK, json!(0)));
    let r = d.get(&filter_q("/Groups", "displayName eq \"non-existent group\"")).await;
    assert_eq!((r.status, r.body["totalResults"].clone()), (StatusCode::OK, json!(0)));
    let r = d
        .post(
            "/Users",
            json!({
                "schemas": [USER, ENTERPRISE], "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
                "userName": "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1", "active": true,
                "emails": [{"primary": true, "type": "work", "value": "Test_User_fd0ea19b@testuser.com"}],
                "meta": {"resourceType": "User"},
                "name": {"formatted": "givenName familyName", "familyName": "familyName", "givenName": "givenName"},
                "roles": [], ENTERPRISE: {"department": "Eng", "manager": "some-manager-id"}
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(r.body[ENTERPRISE]["manager"]["value"], "some-manager-id");
    // Capitalised ops and string booleans.
    let r = d.patch(&format!("/Users/{id}"), json!({"schemas": [PATCH_OP], "Operations": [
        {"op": "Replace", "path": "active", "value": "False"},
        {"op": "Add", "path": "emails[type eq \"work\"].value", "value": "new@testuser.com"},
        {"op": "Replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "Sales"}
    ]})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["active"], false);
    assert_eq!(r.body["emails"][0]["value"], "new@testuser.com");
    assert_eq!(r.body[ENTERPRISE]["department"], "Sales");
    // Groups: create empty, add members, remove with path "members" and a value list.
    let r = d
        .post(
            "/Groups",
            json!({"schemas": [GROUP], "externalId": "8aa1a0c0", "displayName": "Group1DisplayName", "members": []}),
        )
        .await;
    let gid = r.body["id"].as_str().unwrap().to_string();
    let r = d
        .patch(
            &format!("/Groups/{gid}"),
            json!({"schemas": [PATCH_OP], "Operations": [
        {"op": "Add", "path": "members", "value": [{"$ref": null, "value": id}]}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let r = d.get(&filter_q("/Groups", &format!("id eq \"{gid}\" and members[value eq \"{id}\"]"))).await;
    assert_eq!(r.body["totalResults"], 1);
    let r = d
        .patch(
            &format!("/Groups/{gid}"),
            json!({"schemas": [PATCH_OP], "Operations": [
        {"op": "Remove", "path": "members", "value": [{"$ref": null, "value": id}]}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let r = d.get(&filter_q("/Groups", &format!("id eq \"{gid}\" and members[value eq \"{id}\"]"))).await;
    assert_eq!(r.body["totalResults"], 0);
    assert_eq!(d.delete(&format!("/Users/{id}")).await.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn entra_aadoptscim062020_dialect() {
    let d = Daemon::start();
    let id = d.create_user("flag@example.com").await;
    let r = d
        .patch(
            &format!("/Users/{id}?aadOptscim062020"),
            json!({"schemas": [PATCH_OP], "Operations": [
            {"op": "replace", "value": {
                "active": false,
                "name.givenName": "Flagged",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber": "42"
            }}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["active"], false);
    assert_eq!(r.body["name"]["givenName"], "Flagged");
    assert_eq!(r.body[ENTERPRISE]["employeeNumber"], "42");
    let gid = d.create_group("Flag group", &[&id]).await;
    let r = d
        .patch(
            &format!("/Groups/{gid}?aadOptscim062020"),
            json!({"schemas": [PATCH_OP], "Operations": [
        {"op": "remove", "path": format!("members[value eq \"{id}\"]")}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert!(d.get(&format!("/Groups/{gid}")).await.body.get("members").is_none());
}
