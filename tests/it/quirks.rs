//! Real IdP request shapes, replayed byte for byte from `tests/fixtures/{okta,entra}/` against
//! the real daemon, with the resulting state read back and compared exactly; and the golden
//! invalid inputs of `tests/fixtures/invalid/`, each with the status and `scimType` it must get.
//!
//! Each fixture names its source in `_source` (see the README.md of each folder). The
//! payloads keep the documents' ids; a test maps those ids to the ids our daemon handed out
//! by replacing the text, so the payload itself stays exactly as published.

use std::path::{Path, PathBuf};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures")
}

/// A fixture file with the documents' ids replaced by ours (`subs`: from -> to).
fn load(rel: &str, subs: &[(&str, &str)]) -> Value {
    let path = fixtures_dir().join(rel);
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for (from, to) in subs {
        text = text.replace(from, to);
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{rel} is not JSON: {e}"))
}

/// Send fixture `rel` and assert the status; returns the response body.
async fn send_fixture(d: &Daemon, rel: &str, subs: &[(&str, &str)], status: u16) -> Value {
    let fx = load(rel, subs);
    let method = Method::from_bytes(fx["method"].as_str().expect("method").as_bytes()).expect("method");
    let path = fx["path"].as_str().expect("path");
    let r = d.req(method, path, fx.get("body").cloned()).await;
    assert_eq!(
        r.status.as_u16(),
        status,
        "{rel} ({}) answered {}: {}",
        fx["_source"].as_str().unwrap_or("?"),
        r.status,
        r.body
    );
    r.body
}

async fn get(d: &Daemon, path: &str) -> Value {
    let r = d.get(path).await;
    assert_eq!(r.status, StatusCode::OK, "GET {path}: {}", r.body);
    r.body
}

fn member_ids(group: &Value) -> Vec<&str> {
    group["members"].as_array().map(|a| a.iter().map(|m| m["value"].as_str().unwrap()).collect()).unwrap_or_default()
}

fn ids(list: &Value) -> Vec<&str> {
    list["Resources"].as_array().expect("Resources").iter().map(|r| r["id"].as_str().unwrap()).collect()
}

// The ids in the documents' payloads.
const OKTA_USER: &str = "23a35c27-23d3-4c03-b4c5-6443c09e7173";
const OKTA_USER2: &str = "89bb1940-b905-4575-9e7f-6f887cfb368e";
const OKTA_GROUP: &str = "abf4dd94-a4c0-4f67-89c9-76b03340cb9b";
// `/Users/21\"` is the laravel-scim-server log's path, quote included so that it cannot
// match the start of a longer id.
const ENTRA_USER_IDS: [&str; 4] =
    ["/Users/21\"", "5171a35d82074e068ce2", "6764549bef60420686bc", "a0a0a0a0-bbbb-cccc-dddd-e1e1e1e1e1e1"];
const ENTRA_GROUP_IDS: [&str; 4] =
    ["40734ae655284ad3abcc", "fa2ce26709934589afc5", "a99962b9f99d4c4fac67", "cdb1ce18f65944079d37"];
const ENTRA_MEMBER_IDS: [&str; 3] = ["f648f8d5ea4e4cd38e9c", "u1091", "7f4bc1a3-285e-48ae-8202-5accb43efb0e"];

/// Map every Entra document user id to `user`.
fn entra_user_subs(user: &str) -> Vec<(&'static str, String)> {
    ENTRA_USER_IDS
        .iter()
        .map(|from| (*from, if from.starts_with('/') { format!("/Users/{user}\"") } else { user.to_string() }))
        .collect()
}

fn as_refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(a, b)| (*a, b.as_str())).collect()
}

/// Okta, "SCIM 2.0 protocol reference", User operations: existence check, create, read, PUT
/// update (OIN and AIW apps), PATCH deactivation, AIW deactivation by PUT.
#[tokio::test]
async fn okta_user_lifecycle_fixtures() {
    let d = Daemon::start();
    let r = send_fixture(&d, "okta/user-exists-check.json", &[], 200).await;
    assert_eq!((r["totalResults"].clone(), r["Resources"].clone()), (json!(0), json!([])));

    // Create: `groups: []` (read-only) is ignored, `password` is stored hashed and never
    // returned, `locale` and `externalId` kept as sent.
    let r = send_fixture(&d, "okta/create-user.json", &[], 201).await;
    let id = r["id"].as_str().unwrap().to_string();
    let s = [(OKTA_USER, id.as_str())];
    let u = send_fixture(&d, "okta/get-user.json", &s, 200).await;
    let mut want = json!({
        "schemas": [USER], "id": id, "externalId": "00ujl29u0le5T6Aj10h7", "userName": "test.user@okta.local",
        "name": {"givenName": "Test", "familyName": "User"},
        "emails": [{"primary": true, "value": "test.user@okta.local", "type": "work"}],
        "displayName": "Test User", "locale": "en-US", "active": true,
    });
    let strip_meta = |mut v: Value| {
        v.as_object_mut().unwrap().remove("meta");
        v
    };
    assert_eq!(strip_meta(u.clone()), want, "created user");
    let r = send_fixture(&d, "okta/user-exists-check.json", &[], 200).await;
    assert_eq!(ids(&r), vec![id.as_str()]);
    assert_eq!(send_fixture(&d, "okta/list-users-page.json", &[], 200).await["totalResults"], 1);

    // PUT replaces the resource (RFC 7644 §3.5.1): what the body omits is gone, the echoed
    // `id`, `groups: []` and `meta` are ignored, the write-only password is kept.
    let r = send_fixture(&d, "okta/update-user-put.json", &s, 200).await;
    want = json!({
        "schemas": [USER], "id": id, "userName": "test.user@okta.local",
        "name": {"givenName": "Another", "middleName": "Excited", "familyName": "User"},
        "emails": [{"primary": true, "value": "test.user@okta.local", "type": "work", "display": "test.user@okta.local"}],
        "active": true,
    });
    assert_eq!(strip_meta(r), want);
    assert_eq!(strip_meta(get(&d, &format!("/Users/{id}")).await), want);

    // Deactivation: OIN apps PATCH a path-less replace, AIW apps PUT the whole user.
    let r = send_fixture(&d, "okta/deactivate-user-patch.json", &s, 200).await;
    assert_eq!(r["active"], false);
    let mut reactivated = load("okta/update-user-put.json", &s)["body"].clone();
    reactivated["active"] = json!(true);
    assert_eq!(d.put(&format!("/Users/{id}"), reactivated).await.body["active"], true);
    send_fixture(&d, "okta/aiw-deactivate-user-put.json", &s, 200).await;
    want["active"] = json!(false);
    assert_eq!(strip_meta(get(&d, &format!("/Users/{id}")).await), want, "AIW deactivation by PUT");
}

/// Okta, "SCIM 2.0 protocol reference", Group operations: Group Push, rename with `id` in a
/// path-less value, membership PATCH (members without `type`), full replace, AIW PUT, delete.
#[tokio::test]
async fn okta_group_push_fixtures() {
    let d = Daemon::start();
    let u1 = send_fixture(&d, "okta/create-user.json", &[], 201).await["id"].as_str().unwrap().to_string();
    let u2 = d.create_user("second@okta.local").await;
    assert_eq!(send_fixture(&d, "okta/group-exists-check.json", &[], 200).await["totalResults"], 0);
    // Pushed under another name first, so the rename below changes something.
    let r = send_fixture(&d, "okta/create-group.json", &[("Test SCIMv2", "Okta old name")], 201).await;
    let gid = r["id"].as_str().unwrap().to_string();
    assert!(r.get("members").is_none(), "an empty member list is unassigned: {r}");
    let s = [(OKTA_USER, u1.as_str()), (OKTA_USER2, u2.as_str()), (OKTA_GROUP, gid.as_str())];
    let gpath = format!("/Groups/{gid}");

    // remove a non-member (no-op) + add a member without `type`.
    send_fixture(&d, "okta/group-membership-patch.json", &s, 204).await;
    let g = get(&d, &gpath).await;
    assert_eq!(
        g["members"],
        json!([{"value": u1, "$ref": d.url(&format!("/Users/{u1}")), "type": "User", "display": "test.user@okta.local"}])
    );
    // The same request again: adding a member twice and removing an absent one change nothing.
    let version = g["meta"]["version"].clone();
    send_fixture(&d, "okta/group-membership-patch.json", &s, 204).await;
    let g = get(&d, &gpath).await;
    assert_eq!(member_ids(&g), vec![u1.as_str()]);
    assert_eq!(g["meta"]["version"], version, "a no-op PATCH must not change the version");

    // Rename: the value carries the group's `id`, which is ignored; members are untouched.
    send_fixture(&d, "okta/rename-group-patch.json", &s, 204).await;
    let g = get(&d, &gpath).await;
    assert_eq!((g["displayName"].as_str(), member_ids(&g)), (Some("Test SCIMv2"), vec![u1.as_str()]));
    assert_eq!(ids(&send_fixture(&d, "okta/group-exists-check.json", &[], 200).await), vec![gid.as_str()]);

    send_fixture(&d, "okta/group-members-replace.json", &s, 204).await;
    assert_eq!(member_ids(&get(&d, &gpath).await), vec![u1.as_str(), u2.as_str()]);

    let r = send_fixture(&d, "okta/aiw-group-membership-put.json", &s, 200).await;
    assert_eq!((r["displayName"].as_str(), member_ids(&r)), (Some("Test SCIMv2"), vec![u1.as_str()]));
    let g = send_fixture(&d, "okta/get-group.json", &s, 200).await;
    assert_eq!(member_ids(&g), vec![u1.as_str()]);

    send_fixture(&d, "okta/delete-group.json", &s, 204).await;
    send_fixture(&d, "okta/get-group.json", &s, 404).await;
}

/// Entra "Test Connection" and its group lookup: a filter on a random value is an empty
/// 200 ListResponse, never a 404.
#[tokio::test]
async fn entra_test_connection_fixtures() {
    let d = Daemon::start();
    d.create_user("someone@example.com").await;
    d.create_group("Someone's group", &[]).await;
    for rel in [
        "entra/test-connection-user.json",
        "entra/test-connection-user-externalid.json",
        "entra/test-connection-group.json",
    ] {
        let r = send_fixture(&d, rel, &[], 200).await;
        assert_eq!(r["schemas"], json!(["urn:ietf:params:scim:api:messages:2.0:ListResponse"]), "{rel}");
        assert_eq!((r["totalResults"].clone(), r["Resources"].clone()), (json!(0), json!([])), "{rel}");
    }
}

/// Entra's matching query on `emails[type eq "work"].value` (issue #13): a value path
/// followed by `.value eq`, answered as `emails[type eq "work" and value eq "..."]`: the
/// address of a work email, in any case; not a user who has it as another type, nor one
/// whose work email is another address.
#[tokio::test]
async fn entra_matching_on_work_email() {
    let d = Daemon::start();
    let user = |name: &str, emails: Value| json!({"schemas": [USER], "userName": name, "emails": emails});
    let id = |r: Resp| {
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body["id"].as_str().unwrap().to_string()
    };
    let work = id(d.post("/Users", user("w", json!([{"type": "work", "value": "A@B.example"}]))).await);
    id(d.post("/Users", user("h", json!([{"type": "home", "value": "a@b.example"}]))).await);
    id(d.post(
        "/Users",
        user("x", json!([{"type": "home", "value": "a@b.example"}, {"type": "work", "value": "x@b.example"}])),
    )
    .await);
    id(d.post("/Users", user("n", json!([]))).await);
    let r = send_fixture(&d, "entra/get-user-by-work-email.json", &[], 200).await;
    assert_eq!(ids(&r), vec![work.as_str()], "{r}");
    assert_eq!(r["totalResults"], 1);
    let bracketed = d.get(&filter_q("/Users", r#"emails[type eq "work" and value eq "a@b.example"]"#)).await;
    assert_eq!(bracketed.body, r, "the same answer as the bracketed form");
    // Other sub-attributes and operators after the brackets, and what stays an error.
    let r = d.get(&filter_q("/Users", r#"emails[type eq "home"].value ew "@B.EXAMPLE""#)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["totalResults"], 2);
    d.get(&filter_q("/Users", r#"emails[type eq "work"].value eq 1"#)).await.assert_error(400, Some("invalidFilter"));
    d.get(&filter_q("/Users", r#"emails[type eq "work"].nope eq "x""#)).await.assert_error(400, Some("invalidFilter"));
    d.get(&filter_q("/Users", r#"emails[type eq "work"].value"#)).await.assert_error(400, Some("invalidFilter"));
}

/// Entra's default dialect (capitalised ops, string booleans) on one user: the tutorial's
/// create/query/update/disable/delete and the compatibility page's "without feature flag" shapes.
#[tokio::test]
async fn entra_default_dialect_user_fixtures() {
    let d = Daemon::start();
    let r = send_fixture(&d, "entra/create-user.json", &[], 201).await;
    let id = r["id"].as_str().unwrap().to_string();
    assert_eq!(r["schemas"], json!([USER]), "an empty enterprise part is no extension");
    assert!(r.get("roles").is_none(), "roles: [] is unassigned: {r}");
    assert_eq!(r["meta"]["resourceType"], "User");
    let subs = entra_user_subs(&id);
    let s = as_refs(&subs);
    let path = format!("/Users/{id}");

    assert_eq!(ids(&send_fixture(&d, "entra/get-user-by-query.json", &s, 200).await), vec![id.as_str()]);

    let r = send_fixture(&d, "entra/update-user-multi-valued.json", &s, 200).await;
    assert_eq!(r["emails"], json!([{"primary": true, "type": "work", "value": "updatedEmail@microsoft.com"}]));
    assert_eq!(
        r["name"],
        json!({"formatted": "givenName familyName", "familyName": "updatedFamilyName", "givenName": "givenName"})
    );

    assert_eq!(send_fixture(&d, "entra/default-add-single-value.json", &s, 200).await["nickName"], "Babs");

    // Six capitalised replaces, including externalId and a URN-qualified path.
    send_fixture(&d, "entra/default-replace-multiple.json", &s, 200).await;
    let u = get(&d, &path).await;
    assert_eq!(u["displayName"], "Pvlo");
    assert_eq!(u["emails"], json!([{"primary": true, "type": "work", "value": "TestBcwqnm@test.microsoft.com"}]));
    assert_eq!(u["name"], json!({"formatted": "givenName familyName", "familyName": "Pkqf", "givenName": "Gtfd"}));
    assert_eq!(u["externalId"], "Eqpj");
    assert_eq!(u[ENTERPRISE], json!({"employeeNumber": "Eqpj"}));
    assert_eq!(u["schemas"], json!([USER, ENTERPRISE]));
    let r = d.get(&filter_q("/Users", "externalId eq \"Eqpj\"")).await;
    assert_eq!(ids(&r.body), vec![id.as_str()], "the new externalId is what Entra matches on");

    // userName changes; the old one no longer finds the user, the new one does.
    let r = send_fixture(&d, "entra/update-user-username.json", &s, 200).await;
    assert_eq!(r["userName"], "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com");
    assert_eq!(send_fixture(&d, "entra/get-user-by-query.json", &s, 200).await["totalResults"], 0);
    let r = d.get(&filter_q("/Users", "userName eq \"5B50642D-79FC-4410-9E90-4C077CDD1A59@testuser.com\"")).await;
    assert_eq!(ids(&r.body), vec![id.as_str()]);

    // "False" is coerced by the schema type; so are the string booleans of emails[].primary.
    assert_eq!(send_fixture(&d, "entra/default-disable-user.json", &s, 200).await["active"], json!(false));
    d.patch(&path, patch_body(json!([{"op": "Replace", "path": "active", "value": "True"}]))).await;
    assert_eq!(send_fixture(&d, "entra/disable-user.json", &s, 200).await["active"], json!(false));
    let r = send_fixture(&d, "entra/default-string-primary.json", &s, 200).await;
    assert_eq!(
        r["emails"],
        json!([
            {"primary": false, "type": "work", "value": "TestBcwqnm@test.microsoft.com"},
            {"type": "home", "value": "angelita@mante.us", "primary": true}
        ])
    );

    send_fixture(&d, "entra/delete-user.json", &s, 204).await;
    d.get(&path).await.assert_error(404, None);
}

/// Entra with `?aadOptscim062020`: lower-case ops, real booleans, one path-less replace whose
/// value has dotted and URN-qualified keys.
#[tokio::test]
async fn entra_aadoptscim062020_user_fixtures() {
    let d = Daemon::start();
    let id = d.create_user("flag@example.com").await;
    let subs = entra_user_subs(&id);
    let s = as_refs(&subs);
    assert_eq!(send_fixture(&d, "entra/aadopt-add-single-value.json", &s, 200).await["nickName"], "Babs");
    send_fixture(&d, "entra/aadopt-replace-multiple.json", &s, 200).await;
    let u = get(&d, &format!("/Users/{id}")).await;
    assert_eq!(u["displayName"], "Bjfe");
    assert_eq!(u["name"], json!({"givenName": "Kkom", "familyName": "Unua"}));
    assert_eq!(u["emails"], json!([{"value": "TestMhvaes@test.microsoft.com", "type": "work", "primary": true}]));
    assert_eq!(u[ENTERPRISE], json!({"employeeNumber": "Aklq"}));
    assert_eq!(send_fixture(&d, "entra/aadopt-disable-user.json", &s, 200).await["active"], json!(false));
}

/// Entra create variants: the sample code's nulls and mistyped URN, the schema example's
/// bare-string manager and unknown extension, the validator's `"active": "True"`.
#[tokio::test]
async fn entra_create_variants_fixtures() {
    let d = Daemon::start();
    let r = send_fixture(&d, "entra/create-user-sample-code.json", &[], 201).await;
    let mut got = r.clone();
    let obj = got.as_object_mut().unwrap();
    obj.remove("meta");
    let id = obj.remove("id").unwrap();
    assert!(id.as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(
        got,
        json!({
            "schemas": [USER], "externalId": "jyoung", "userName": "jyoung@testuser.com", "active": true,
            "displayName": "Joy Young", "emails": [{"type": "work", "value": "jyoung@Contoso.com", "primary": true}],
            "name": {"familyName": "Young", "givenName": "Joy"}
        }),
        "nulls are unassigned, unknown top-level keys and the mistyped URN are ignored"
    );

    let r = send_fixture(&d, "entra/create-user-with-manager.json", &[], 201).await;
    assert_ne!(r["id"], "48af03ac28ad4fb88478", "id belongs to the server");
    assert_eq!(r[ENTERPRISE], json!({"manager": {"value": "123456"}}));
    assert_eq!(r["schemas"], json!([USER, ENTERPRISE]));
    assert!(r.get("urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User").is_none());
    assert_ne!(r["meta"]["created"], "2010-01-23T04:56:22Z", "meta belongs to the server");
    assert_eq!(r["meta"]["version"], "W/\"1\"");

    let r = send_fixture(&d, "entra/validator-post-string-true.json", &[], 201).await;
    assert_eq!(r["active"], json!(true));
}

/// Entra's manager in all three shapes: a list of one reference under the core-schema name
/// (tutorial Example 5), a bare id string, and the RFC's `{"value": id}`.
#[tokio::test]
async fn entra_manager_fixtures() {
    let d = Daemon::start();
    let boss = d.create_user("boss@example.com").await;
    let id = d.create_user("employee@example.com").await;
    let mut subs = entra_user_subs(&id);
    subs.push(("00aa00aa-bb11-cc22-dd33-44ee44ee44ee", boss.clone()));
    let s = as_refs(&subs);
    let r = send_fixture(&d, "entra/manager-add-reference-list.json", &s, 200).await;
    assert_eq!(r[ENTERPRISE]["manager"]["value"], boss.as_str());
    assert_eq!(r["schemas"], json!([USER, ENTERPRISE]));
    let r = send_fixture(&d, "entra/manager-add-bare-string.json", &s, 200).await;
    assert_eq!(r[ENTERPRISE], json!({"manager": {"value": "2c2f6fb8-254f-492e-b7fe-c09c5a61c8a2"}}));
    let mut s2 = s.clone();
    s2.push(("2c2f6fb8-254f-492e-b7fe-c09c5a61c8a2", boss.as_str()));
    send_fixture(&d, "entra/manager-add-object.json", &s2, 200).await;
    assert_eq!(get(&d, &format!("/Users/{id}")).await[ENTERPRISE], json!({"manager": {"value": boss}}));
}

/// Entra groups: create with a Microsoft schema URN, reads with excludedAttributes=members,
/// rename, member add/remove in both dialects (idempotent), the membership check filter.
#[tokio::test]
async fn entra_group_fixtures() {
    let d = Daemon::start();
    let u = d.create_user("member@example.com").await;
    let r = send_fixture(&d, "entra/create-group.json", &[], 201).await;
    let gid = r["id"].as_str().unwrap().to_string();
    assert_eq!(r["schemas"], json!([GROUP]));
    assert_eq!(
        (r["externalId"].as_str(), r["displayName"].as_str()),
        (Some("8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159"), Some("displayName"))
    );
    let mut subs: Vec<(&str, &str)> = ENTRA_GROUP_IDS.iter().map(|g| (*g, gid.as_str())).collect();
    subs.extend(ENTRA_MEMBER_IDS.iter().map(|m| (*m, u.as_str())));
    let s = subs.as_slice();
    let gpath = format!("/Groups/{gid}");

    let g = send_fixture(&d, "entra/get-group.json", s, 200).await;
    assert_eq!(g["displayName"], "displayName");
    let r = send_fixture(&d, "entra/get-group-by-displayname.json", s, 200).await;
    assert_eq!(ids(&r), vec![gid.as_str()]);

    assert_eq!(send_fixture(&d, "entra/update-group-displayname.json", s, 204).await, Value::Null);
    assert_eq!(get(&d, &gpath).await["displayName"], "1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName");

    assert_eq!(send_fixture(&d, "entra/group-membership-check.json", s, 200).await["totalResults"], 0);
    for _ in 0..2 {
        // The second Add of the same member is a no-op, not an error.
        send_fixture(&d, "entra/add-members.json", s, 204).await;
        assert_eq!(member_ids(&get(&d, &gpath).await), vec![u.as_str()]);
    }
    // Entra's membership check, in the valuePath form and in the `members eq` form.
    for rel in ["entra/group-membership-check.json", "entra/group-membership-check-members-eq.json"] {
        let r = send_fixture(&d, rel, s, 200).await;
        assert_eq!(ids(&r), vec![gid.as_str()], "{rel}");
        if rel.ends_with("check.json") {
            assert!(r["Resources"][0].get("members").is_none(), "excludedAttributes=members: {r}");
        }
    }
    for rel in ["entra/remove-members.json", "entra/default-remove-member.json", "entra/aadopt-remove-member.json"] {
        send_fixture(&d, "entra/add-members.json", s, 204).await;
        send_fixture(&d, rel, s, 204).await;
        assert!(get(&d, &gpath).await.get("members").is_none(), "{rel}");
        assert_eq!(send_fixture(&d, "entra/group-membership-check.json", s, 200).await["totalResults"], 0, "{rel}");
        // Removing again (the member is gone) is a no-op too.
        send_fixture(&d, rel, s, 204).await;
    }
    send_fixture(&d, "entra/delete-group.json", s, 204).await;
    d.get(&gpath).await.assert_error(404, None);
}

/// Filtered Add/Replace on a multi-valued element that does not exist yet creates it
/// (`phoneNumbers[type eq "mobile"]`, `addresses[type eq "work"]`, `emails[type eq "work"]`),
/// later operations on the same filter land in the same element, and removing a work email's
/// value removes that email.
#[tokio::test]
async fn entra_typed_slot_fixtures() {
    let d = Daemon::start();
    let id = d.create_user("slots@example.com").await;
    let subs = entra_user_subs(&id);
    let s = as_refs(&subs);
    let r = send_fixture(&d, "entra/default-mobile-phone-add.json", &s, 200).await;
    assert_eq!(r["phoneNumbers"], json!([{"type": "mobile", "value": "+1 555 0100"}]));
    let r = send_fixture(&d, "entra/addresses-add-by-type.json", &s, 200).await;
    let work = json!({"type": "work", "streetAddress": "Street", "locality": "Locality", "region": "Region",
                      "postalCode": "PostalCode", "country": "Country"});
    assert_eq!(r["addresses"], json!([work]));
    let r = send_fixture(&d, "entra/replace-email-address-department.json", &s, 200).await;
    assert_eq!(r["emails"], json!([{"value": "AdeleV2@REDACTED.onmicrosoft.com", "type": "work", "primary": true}]));
    let mut work = work;
    work["formatted"] = json!("18/2111");
    assert_eq!(r["addresses"], json!([work]));
    assert_eq!(r[ENTERPRISE], json!({"department": "Retail"}));

    let r = send_fixture(&d, "entra/remove-work-email-with-value.json", &s, 200).await;
    assert!(r.get("emails").is_none(), "the work email is gone, not left without a value: {r}");

    // A user created without emails gets its work email from a filtered add.
    let r = d.post("/Users", json!({"schemas": [USER], "userName": "noemail@example.com"})).await;
    let id2 = r.body["id"].as_str().unwrap().to_string();
    let subs2 = entra_user_subs(&id2);
    let r = send_fixture(&d, "entra/validator-add-work-email.json", &as_refs(&subs2), 200).await;
    assert_eq!(r["emails"], json!([{"type": "work", "value": "godfrey_stiedemann@vonruedenmueller.com"}]));
}

/// Every file in `tests/fixtures/invalid/`: the request, and the status and `scimType` it
/// must be refused with. Nothing they send may change the resources they aim at.
#[tokio::test]
async fn invalid_inputs_get_their_scim_errors() {
    let d = Daemon::start();
    let user = d.create_user("taken@example.com").await;
    let group = d.create_group("Target", &[&user]).await;
    let (uv, gv) = (
        get(&d, &format!("/Users/{user}")).await["meta"]["version"].clone(),
        get(&d, &format!("/Groups/{group}")).await["meta"]["version"].clone(),
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures_dir().join("invalid"))
        .expect("tests/fixtures/invalid")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "expected the golden invalid inputs, found {}", files.len());
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&file).unwrap().replace("{user}", &user).replace("{group}", &group);
        let fx: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let method = Method::from_bytes(fx["method"].as_str().unwrap().as_bytes()).unwrap();
        let path = fx["path"].as_str().unwrap();
        let r = match fx.get("raw_body").and_then(Value::as_str) {
            Some(raw) => {
                let rb = d
                    .http
                    .request(method, d.url(path))
                    .bearer_auth(&d.token)
                    .header("content-type", "application/scim+json")
                    .body(raw.to_string());
                send(rb).await
            }
            None => d.req(method, path, fx.get("body").cloned()).await,
        };
        let status = fx["status"].as_u64().unwrap() as u16;
        let scim_type = fx["scimType"].as_str();
        assert!(
            r.status.as_u16() == status && r.body.get("scimType").and_then(Value::as_str) == scim_type,
            "{name} ({}): want {status} {scim_type:?}, got {} {}",
            fx["_why"].as_str().unwrap_or(""),
            r.status,
            r.body
        );
        r.assert_error(status, scim_type);
    }
    assert_eq!(get(&d, &format!("/Users/{user}")).await["meta"]["version"], uv, "an invalid request changed the user");
    assert_eq!(
        get(&d, &format!("/Groups/{group}")).await["meta"]["version"],
        gv,
        "an invalid request changed the group"
    );
    assert_eq!(get(&d, "/Groups").await["totalResults"], 1);
    assert_eq!(get(&d, "/Users").await["totalResults"], 1);
}
