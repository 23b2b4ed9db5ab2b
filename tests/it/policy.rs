//! Provisioning policy (issue 7) through the SCIM API, with the request shapes Okta and
//! Entra send (tests/fixtures/okta/group-membership-patch.json, entra/add-members.json,
//! entra/default-remove-member.json, okta/deactivate-user-patch.json): licence groups named
//! `{PLAN}-{PRODUCT}-{SUBSCRIPTION}`, role groups found by substring with the last admin
//! kept, exact role groups where the highest wins, and the result arriving at a real app.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::app::{ScimApp, scim_target_config};
use crate::support::*;

pub(crate) const SUB: &str = "sub_1RqpMYGCs0LNOzY9UszOGJkL";
const LICENCE: &str = "Enterprise Plan-AWS-sub_1RqpMYGCs0LNOzY9UszOGJkL";

/// The licence app: one licence group per user, two seats on the subscription.
pub(crate) fn licence_policy(seats: u64) -> String {
    format!(
        r#"
[[policy.group_rules]]
name = "licences"
regex = '^(?P<plan>.+)-(?P<product>[^-]+)-(?P<sub>sub_\w+)$'
case_sensitive = true
entitlement = "{{sub}}"
class = "licence"
[policy.seats]
{SUB} = {seats}
"#
    )
}

/// The role app: "admin" / "member" anywhere in the name (any case), one role group per
/// user, at least one admin.
const ROLE_POLICY: &str = r#"
[[policy.group_rules]]
name = "admins"
contains = "admin"
role = "admin"
class = "role"
[[policy.group_rules]]
name = "members"
contains = "member"
role = "member"
class = "role"
[policy.keep_at_least]
admin = 1
"#;

/// Okta's create-user body.
fn okta_user(user_name: &str) -> Value {
    json!({
        "schemas": [USER], "userName": user_name,
        "name": {"givenName": "Test", "familyName": "User"},
        "emails": [{"primary": true, "value": user_name, "type": "work"}],
        "displayName": user_name, "externalId": format!("ext-{user_name}"), "groups": [], "active": true
    })
}

async fn user(d: &Daemon, user_name: &str) -> String {
    let r = d.post("/Users", okta_user(user_name)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

/// Okta group push: the group created empty, then its members added by PATCH.
async fn okta_push(d: &Daemon, name: &str, members: &[&str]) -> (String, Resp) {
    let r = d.post("/Groups", json!({"schemas": [GROUP], "displayName": name, "members": []})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let gid = r.body["id"].as_str().unwrap().to_string();
    if members.is_empty() {
        return (gid, r);
    }
    let r = okta_add(d, &gid, members).await;
    (gid, r)
}

/// Okta: `add` of `members` with `value` and `display`.
async fn okta_add(d: &Daemon, gid: &str, members: &[&str]) -> Resp {
    let value: Vec<Value> = members.iter().map(|m| json!({"value": m, "display": m})).collect();
    d.patch(&format!("/Groups/{gid}"), patch_body(json!([{"op": "add", "path": "members", "value": value}]))).await
}

/// Okta: `remove` with a `members[value eq "..."]` path.
async fn okta_remove(d: &Daemon, gid: &str, member: &str) -> Resp {
    d.patch(
        &format!("/Groups/{gid}"),
        patch_body(json!([{"op": "remove", "path": format!("members[value eq \"{member}\"]")}])),
    )
    .await
}

/// Entra: `Add` / `Remove` of `members` with a value list.
async fn entra_members(d: &Daemon, gid: &str, op: &str, members: &[&str]) -> Resp {
    let value: Vec<Value> = members.iter().map(|m| json!({"value": m})).collect();
    d.patch(&format!("/Groups/{gid}"), patch_body(json!([{"op": op, "path": "members", "value": value}]))).await
}

async fn member_ids(d: &Daemon, gid: &str) -> Vec<String> {
    let r = d.get(&format!("/Groups/{gid}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let mut ids: Vec<String> =
        r.body["members"].as_array().into_iter().flatten().map(|m| m["value"].as_str().unwrap().to_string()).collect();
    ids.sort();
    ids
}

fn sorted(ids: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// A policy refusal: 409, no scimType, a detail naming the constraint.
fn assert_refused(r: &Resp, needle: &str) {
    r.assert_error(409, None);
    let detail = r.body["detail"].as_str().unwrap();
    assert!(detail.contains(needle), "detail {detail:?} should mention {needle:?}");
}

#[tokio::test]
async fn licence_groups_grant_the_subscription_one_per_user_within_seats() {
    let d = Daemon::start_with(&licence_policy(2));
    let (a, b, c, e) = (
        user(&d, "a@x.test").await,
        user(&d, "b@x.test").await,
        user(&d, "c@x.test").await,
        user(&d, "e@x.test").await,
    );
    // Group push with members: the regex captures the subscription id.
    let (lic, r) = okta_push(&d, LICENCE, &[&a]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let out = d.cli(&["access", "a@x.test"]);
    assert!(out.contains(&format!("effective entitlements: {SUB}")), "{out}");
    assert!(out.contains("rule \"licences\" (regex"), "{out}");
    // A second licence group for the same user: refused, and the group stays empty.
    let (other, r) = okta_push(&d, "Team Plan-GCP-sub_9ZZZ", &[&a]).await;
    assert_refused(&r, "exclusive class \"licence\"");
    assert!(r.body["detail"].as_str().unwrap().contains("a@x.test"), "{}", r.body);
    assert!(member_ids(&d, &other).await.is_empty());
    // A second seat is free...
    assert_eq!(entra_members(&d, &lic, "Add", &[&b]).await.status, StatusCode::NO_CONTENT);
    // ...then the seats are exhausted: adding two more in one PATCH applies neither.
    let r = entra_members(&d, &lic, "Add", &[&c, &e]).await;
    assert_refused(&r, "2 seat(s)");
    assert_eq!(member_ids(&d, &lic).await, sorted(&[&a, &b]));
    // Okta's two-operation PATCH (remove one, add another) frees a seat and takes it: the
    // constraint holds on the result, not half-way.
    let r = d
        .patch(
            &format!("/Groups/{lic}"),
            patch_body(json!([
                {"op": "remove", "path": format!("members[value eq \"{b}\"]")},
                {"op": "add", "path": "members", "value": [{"value": c, "display": "c@x.test"}]}
            ])),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(member_ids(&d, &lic).await, sorted(&[&a, &c]));
    // A deactivated holder frees its seat.
    let r = d.patch(&format!("/Users/{c}"), patch_body(json!([{"op": "replace", "value": {"active": false}}]))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(okta_add(&d, &lic, &[&e]).await.status, StatusCode::NO_CONTENT);
    // Reactivating it now would take a third seat: refused.
    let r = d.patch(&format!("/Users/{c}"), patch_body(json!([{"op": "replace", "value": {"active": true}}]))).await;
    assert_refused(&r, "2 seat(s)");
    assert_eq!(d.get(&format!("/Users/{c}")).await.body["active"], false);
}

#[tokio::test]
async fn concurrent_adds_never_exceed_the_seats() {
    let d = Daemon::start_with(&licence_policy(2));
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(user(&d, &format!("u{i}@x.test")).await);
    }
    let (lic, _) = okta_push(&d, LICENCE, &[]).await;
    let results = futures_util::future::join_all(ids.iter().map(|id| {
        let (d, lic) = (&d, &lic);
        async move { okta_add(d, lic, &[id.as_str()]).await }
    }))
    .await;
    let ok = results.iter().filter(|r| r.status == StatusCode::NO_CONTENT).count();
    let refused = results.iter().filter(|r| r.status == StatusCode::CONFLICT).count();
    assert_eq!((ok, refused), (2, 6), "{:?}", results.iter().map(|r| r.status).collect::<Vec<_>>());
    assert_eq!(member_ids(&d, &lic).await.len(), 2);
}

/// Issue 18: effective access for machines. `scimsync access --json` and the admin
/// listener's `GET /access/{user}` (behind the admin token) give the same stable shape.
#[tokio::test]
async fn access_report_is_the_same_json_from_the_cli_and_the_admin_listener() {
    const ADMIN: &str = "admin-token-0123456789";
    let d = Daemon::start_with_env(&licence_policy(2), &[("SCIMSYNC_ADMIN__BEARER_TOKEN", ADMIN)]);
    let a = user(&d, "a@x.test").await;
    let (_, r) = okta_push(&d, LICENCE, &[&a]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let (_, r) = okta_push(&d, "Unmapped people", &[&a]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let cli: Value = serde_json::from_str(&d.cli(&["access", "A@X.test", "--json"])).expect("access --json is JSON");
    assert_eq!(cli["user"], json!({"id": a, "userName": "a@x.test", "active": true}));
    assert_eq!(cli["policy_configured"], true);
    let groups = cli["groups"].as_array().unwrap();
    let lic = groups.iter().find(|g| g["name"] == LICENCE).expect("the licence group");
    assert_eq!(
        lic["matched_rules"],
        json!([{"index": 0, "label": "licences", "kind": "regex",
                "pattern": r"^(?P<plan>.+)-(?P<product>[^-]+)-(?P<sub>sub_\w+)$",
                "role": null, "entitlement": SUB, "class": "licence"}])
    );
    let other = groups.iter().find(|g| g["name"] == "Unmapped people").expect("the other group");
    assert_eq!(other["matched_rules"], json!([]));
    assert_eq!(cli["roles"], json!([]));
    assert_eq!(
        cli["entitlements"],
        json!([{"value": SUB, "constraints": [{"kind": "seats", "limit": 2, "key": format!("policy.seats.{SUB}"),
                "detail": format!("entitlement \"{SUB}\" has 2 seat(s)")}]}])
    );
    assert_eq!(cli["exclusive_classes"][0]["class"], "licence");
    assert!(cli["why"].is_array());

    let url = format!("{}/access/{}", d.admin_base, enc("a@x.test"));
    let r = d.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "the admin token guards /access");
    let r = d.http.get(&url).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.json::<Value>().await.unwrap(), cli, "the route and the CLI agree");
    let by_id = d.http.get(format!("{}/access/{a}", d.admin_base)).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(by_id.json::<Value>().await.unwrap(), cli);
    let r = d.http.get(format!("{}/access/nobody", d.admin_base)).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "no user with userName or id \"nobody\"");
    let out = d.cli_raw(&["access", "nobody", "--json"]);
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn role_move_must_remove_before_it_adds() {
    let d = Daemon::start_with(ROLE_POLICY);
    let (alice, carol, dave) =
        (user(&d, "alice@x.test").await, user(&d, "carol@x.test").await, user(&d, "dave@x.test").await);
    let (admins, r) = okta_push(&d, "LocalStack-Admins-Prod", &[&alice]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let (members, r) = okta_push(&d, "LocalStack-Members-Prod", &[&carol, &dave]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let (admins2, _) = okta_push(&d, "XD5-XD5-LA1000_AuthLocalstackAdmin", &[]).await;
    // Remove, then add: works.
    assert_eq!(entra_members(&d, &members, "Remove", &[&carol]).await.status, StatusCode::NO_CONTENT);
    assert_eq!(entra_members(&d, &admins2, "Add", &[&carol]).await.status, StatusCode::NO_CONTENT);
    assert!(d.cli(&["access", &carol]).contains("effective roles: admin"));
    // Add, then remove: the add is refused while dave is still a member.
    let r = entra_members(&d, &admins, "Add", &[&dave]).await;
    assert_refused(&r, "exclusive class \"role\"");
    assert!(r.body["detail"].as_str().unwrap().contains("LocalStack-Members-Prod"), "{}", r.body);
    assert_eq!(member_ids(&d, &admins).await, vec![alice.clone()]);
    assert!(d.cli(&["access", "dave@x.test"]).contains("effective roles: member"));
}

#[tokio::test]
async fn the_last_admin_cannot_be_removed_by_any_route() {
    let d = Daemon::start_with(ROLE_POLICY);
    let alice = user(&d, "alice@x.test").await;
    let bob = user(&d, "bob@x.test").await;
    let (admins, r) = okta_push(&d, "LocalStack-Admins-Prod", &[&alice]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let (_, r) = okta_push(&d, "Members", &[&bob]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let routes: Vec<(&str, Resp)> = vec![
        ("member PATCH (Okta)", okta_remove(&d, &admins, &alice).await),
        ("member PATCH (Entra)", entra_members(&d, &admins, "Remove", &[&alice]).await),
        (
            "group PUT",
            d.put(
                &format!("/Groups/{admins}"),
                json!({"schemas": [GROUP], "displayName": "LocalStack-Admins-Prod", "members": []}),
            )
            .await,
        ),
        (
            "group rename",
            d.patch(
                &format!("/Groups/{admins}"),
                patch_body(json!([{"op": "replace", "path": "displayName", "value": "LocalStack-Prod"}])),
            )
            .await,
        ),
        ("group DELETE", d.delete(&format!("/Groups/{admins}")).await),
        (
            "user deactivation",
            d.patch(&format!("/Users/{alice}"), patch_body(json!([{"op": "replace", "value": {"active": false}}])))
                .await,
        ),
        ("user DELETE", d.delete(&format!("/Users/{alice}")).await),
    ];
    for (route, r) in &routes {
        assert_eq!(r.status, StatusCode::CONFLICT, "{route}: {}", r.body);
        assert_refused(r, "role \"admin\" must keep at least 1");
        assert!(r.body["detail"].as_str().unwrap().contains("alice@x.test"), "{route}: {}", r.body);
    }
    // Nothing was applied by any of them.
    assert_eq!(member_ids(&d, &admins).await, vec![alice.clone()]);
    let u = d.get(&format!("/Users/{alice}")).await;
    assert_eq!((u.status, &u.body["active"]), (StatusCode::OK, &json!(true)));
    // With a second admin, the first may go (and bob leaves the member group first).
    assert_eq!(okta_remove(&d, &member_group_id(&d, "Members").await, &bob).await.status, StatusCode::NO_CONTENT);
    assert_eq!(okta_add(&d, &admins, &[&bob]).await.status, StatusCode::NO_CONTENT);
    assert_eq!(d.delete(&format!("/Users/{alice}")).await.status, StatusCode::NO_CONTENT);
}

async fn member_group_id(d: &Daemon, name: &str) -> String {
    let r = d.get(&filter_q("/Groups", &format!("displayName eq \"{name}\""))).await;
    r.body["Resources"][0]["id"].as_str().unwrap().to_string()
}

/// The third app: exact names, highest role wins, default role; the effective access
/// reaches the real app as SCIM `roles` / `entitlements`, and follows membership changes
/// and renames.
#[tokio::test]
async fn highest_role_wins_and_arrives_at_the_app() {
    let app = ScimApp::start().await;
    let cfg = format!(
        "{}{}",
        scim_target_config(&app.base),
        r#"
[policy]
role_order = ["viewer", "editor", "owner"]
default_role = "viewer"
[[policy.group_rules]]
exact = "App Viewers"
role = "viewer"
[[policy.group_rules]]
exact = "App Editors"
role = "editor"
[[policy.group_rules]]
exact = "App Owners"
role = "owner"
case_sensitive = true
[[policy.group_rules]]
regex = '^(?P<plan>.+)-(?P<product>[^-]+)-(?P<sub>sub_\w+)$'
entitlement = "{product}:{sub}"
"#
    );
    let d = Daemon::start_with(&cfg);
    let u = user(&d, "ada@x.test").await;
    d.wait_outbox_empty().await;
    let roles = |v: &Value| -> Vec<String> {
        v["roles"].as_array().into_iter().flatten().map(|r| r["value"].as_str().unwrap().to_string()).collect()
    };
    let ents = |v: &Value| -> Vec<String> {
        v["entitlements"].as_array().into_iter().flatten().map(|r| r["value"].as_str().unwrap().to_string()).collect()
    };
    let at_app = app.user_by_name("ada@x.test").await.expect("provisioned");
    assert_eq!(roles(&at_app), vec!["viewer"], "default role: {at_app}");
    let mut groups = Vec::new();
    for g in ["App Viewers", "App Owners", "App Editors"] {
        let (gid, r) = okta_push(&d, g, &[&u]).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        groups.push(gid);
    }
    let (_, r) = okta_push(&d, LICENCE, &[&u]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    d.wait_outbox_empty().await;
    let at_app = app.user_by_name("ada@x.test").await.unwrap();
    assert_eq!(roles(&at_app), vec!["owner"], "{at_app}");
    assert_eq!(ents(&at_app), vec![format!("AWS:{SUB}")], "{at_app}");
    let out = d.cli(&["access", "ada@x.test"]);
    assert!(out.contains("the highest by policy.role_order wins: owner"), "{out}");
    // Out of the owners group: editor.
    assert_eq!(okta_remove(&d, &groups[1], &u).await.status, StatusCode::NO_CONTENT);
    d.wait_outbox_empty().await;
    assert_eq!(roles(&app.user_by_name("ada@x.test").await.unwrap()), vec!["editor"]);
    // The editors group renamed so no rule matches: viewer. (A group change that moves a
    // user's access queues the user's update in the same transaction.)
    let r = d
        .patch(
            &format!("/Groups/{}", groups[2]),
            patch_body(json!([{"op": "replace", "path": "displayName", "value": "Old Editors"}])),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.body);
    d.wait_outbox_empty().await;
    assert_eq!(roles(&app.user_by_name("ada@x.test").await.unwrap()), vec!["viewer"]);
    // Case matters for the owners rule (case_sensitive = true).
    let (_, r) = okta_push(&d, "app owners", &[&u]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(d.cli(&["access", &u]).contains("\"app owners\": no rule matches"));
}

#[tokio::test]
async fn check_config_shows_the_rules_and_bad_rules_stop_the_start() {
    let d = Daemon::start_with(ROLE_POLICY);
    let out = d.cli(&["check-config"]);
    assert!(
        out.contains("\"admins\": contains \"admin\" (case-insensitive) -> role admin, exclusive class role"),
        "{out}"
    );
    assert!(out.contains("keep at least 1 active holder(s) of role \"admin\""), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[[policy.group_rules]]\nregex = \"(?P<x>a\"\nrole = \"r\"\n").unwrap();
    let out =
        std::process::Command::new(bin()).args(["--config", path.to_str().unwrap(), "check-config"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("policy.group_rules[0].regex: is not a valid pattern"), "{err}");
    assert!(err.contains("bad.toml"), "the source is named: {err}");
}

#[tokio::test]
async fn account_policies_immutable_attributes_refused_reactivation_hidden_inactive_users() {
    let d = Daemon::start_with(
        "[policy.account]\nimmutable_attributes = [\"userName\", \"externalId\"]\nreactivation = \"refuse\"\n\
         list_inactive_users = false\nunique_emails = true\n",
    );
    let id = user(&d, "ada@x.test").await;
    let path = format!("/Users/{id}");
    // Okta's PUT with the whole user: another userName is refused, a title is not.
    let mut full = d.get(&path).await.body;
    full["userName"] = json!("grace@x.test");
    let r = d.put(&path, full.clone()).await;
    r.assert_error(400, Some("mutability"));
    assert!(r.body["detail"].as_str().unwrap().contains("userName"), "{}", r.body);
    full["userName"] = json!("ADA@x.test");
    full["title"] = json!("Engineer");
    assert_eq!(d.put(&path, full).await.status, StatusCode::OK, "a case change is no change of userName");
    // Entra's PATCH replacing externalId, and one removing it.
    let r = d.patch(&path, patch_body(json!([{"op": "Replace", "path": "externalId", "value": "other"}]))).await;
    r.assert_error(400, Some("mutability"));
    let r = d.patch(&path, patch_body(json!([{"op": "remove", "path": "externalId"}]))).await;
    r.assert_error(400, Some("mutability"));
    assert_eq!(d.get(&path).await.body["externalId"], "ext-ada@x.test");
    // Deactivation (Okta's shape) is fine; reactivation through SCIM is refused.
    let off = patch_body(json!([{"op": "replace", "value": {"active": false}}]));
    assert_eq!(d.patch(&path, off).await.status, StatusCode::OK);
    let on = patch_body(json!([{"op": "replace", "value": {"active": true}}]));
    let r = d.patch(&path, on).await;
    r.assert_error(409, None);
    assert!(r.body["detail"].as_str().unwrap().contains("policy.account.reactivation"), "{}", r.body);
    assert_eq!(d.get(&path).await.body["active"], false);
    // Lists leave the inactive user out (filters too); a GET by id still finds it.
    let other = user(&d, "bob@x.test").await;
    let list = d.get("/Users").await.body;
    assert_eq!(list["totalResults"], 1, "{list}");
    assert_eq!(list["Resources"][0]["id"], json!(other));
    assert_eq!(d.get(&filter_q("/Users", "userName eq \"ada@x.test\"")).await.body["totalResults"], 0);
    assert_eq!(d.get(&path).await.status, StatusCode::OK);
    // Searches by POST too, per type and across types (RFC 7644 §3.4.3).
    let search = |filter: Option<&str>| {
        let mut b = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"]});
        if let Some(f) = filter {
            b["filter"] = json!(f);
        }
        b
    };
    let r = d.post("/Users/.search", search(Some("userName sw \"ada\""))).await;
    assert_eq!((r.status, r.body["totalResults"].clone()), (StatusCode::OK, json!(0)), "{}", r.body);
    let r = d.post("/.search", search(None)).await;
    let names: Vec<&str> =
        r.body["Resources"].as_array().unwrap().iter().filter_map(|u| u["userName"].as_str()).collect();
    assert_eq!(names, vec!["bob@x.test"], "{}", r.body);
    // Unique emails: a create, or an update, taking another user's address (any case) is
    // refused as a uniqueness conflict and applies nothing.
    let mut dup = okta_user("carol@x.test");
    dup["emails"] = json!([{"value": "BOB@x.test", "type": "work", "primary": true}]);
    let r = d.post("/Users", dup).await;
    r.assert_error(409, Some("uniqueness"));
    assert!(r.body["detail"].as_str().unwrap().contains("bob@x.test"), "{}", r.body);
    assert_eq!(d.get(&filter_q("/Users", "userName eq \"carol@x.test\"")).await.body["totalResults"], 0);
    let r = d
        .patch(
            &format!("/Users/{other}"),
            patch_body(json!([{"op": "add", "path": "emails", "value": [{"value": "ada@x.test", "type": "home"}]}])),
        )
        .await;
    r.assert_error(409, Some("uniqueness"));
    assert_eq!(d.get(&format!("/Users/{other}")).await.body["emails"].as_array().unwrap().len(), 1);
}

/// Issue 7 item 4, the last two account policies: a create with a taken email address can
/// return the existing account (idempotent create), and a deleted user can be kept from
/// coming back through the IdP.
#[tokio::test]
async fn idempotent_create_by_email_and_no_reprovisioning_of_deleted_users() {
    let d = Daemon::start_with(
        "[policy.account]\nunique_emails = true\nexisting_email_on_create = \"return_existing\"\n\
         reprovision_deleted = false\n",
    );
    // The IdP's create timed out and it sends it again under another userName with the same
    // address: the existing account is the answer, and there is still one account.
    let first = d.post("/Users", user_body("Ada@x.test")).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let mut again = user_body("ada.lovelace@x.test");
    again["emails"] = json!([{"value": "ADA@x.test", "type": "work", "primary": true}]);
    let r = d.post("/Users", again).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["id"], first.body["id"], "the existing account, not a new one");
    assert_eq!(r.body["userName"], "Ada@x.test");
    assert_eq!(d.get("/Users").await.body["totalResults"], 1);

    // Deleted, then pushed again by userName (any case) or by externalId: refused.
    let mut grace = user_body("grace@x.test");
    grace["externalId"] = json!("emp-42");
    let g = d.post("/Users", grace).await;
    assert_eq!(g.status, StatusCode::CREATED);
    assert_eq!(d.delete(&format!("/Users/{}", g.body["id"].as_str().unwrap())).await.status, StatusCode::NO_CONTENT);
    let r = d.post("/Users", user_body("GRACE@x.test")).await;
    r.assert_error(409, None);
    assert!(r.body["detail"].as_str().unwrap().contains("policy.account.reprovision_deleted"), "{}", r.body);
    let mut by_ext = user_body("g.hopper@x.test");
    by_ext["externalId"] = json!("emp-42");
    d.post("/Users", by_ext).await.assert_error(409, None);
    // Someone new is welcome.
    assert_eq!(d.post("/Users", user_body("new@x.test")).await.status, StatusCode::CREATED);
    assert_eq!(d.get("/Users").await.body["totalResults"], 2);
}

/// The defaults: a taken email is a conflict only when unique_emails is on, and a deleted
/// user may come back.
#[tokio::test]
async fn by_default_a_deleted_user_may_be_provisioned_again_and_a_taken_email_conflicts() {
    let d = Daemon::start_with("[policy.account]\nunique_emails = true\n");
    let a = d.post("/Users", user_body("ada@x.test")).await;
    let mut dup = user_body("other@x.test");
    dup["emails"] = json!([{"value": "ada@x.test"}]);
    d.post("/Users", dup).await.assert_error(409, Some("uniqueness"));
    assert_eq!(d.delete(&format!("/Users/{}", a.body["id"].as_str().unwrap())).await.status, StatusCode::NO_CONTENT);
    assert_eq!(d.post("/Users", user_body("ada@x.test")).await.status, StatusCode::CREATED);
}
