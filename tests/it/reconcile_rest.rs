//! Reconciliation of a REST/webhook target (issue 5: "compare attribute by attribute through
//! the same mapping the provisioner uses"): the app is a real HTTP server on loopback
//! (`rest_app`) provisioned through a field mapping, edited behind our back, listed back in
//! each paging style, and compared in its own field names.

use serde_json::{Value, json};

use crate::reconcile::{report, sync, sync_raw};
use crate::rest_app::{RestApp, Style};
use crate::support::*;

const SECRET: &str = "rest-secret";

const USER_FIELDS: &str = r#"login = { from = "userName", transform = "lowercase" }
email = 'emails[type eq "work"].value'
first_name = "name.givenName"
disabled = { from = "active", transform = "not" }
"#;

/// A webhook target for `app` with a field mapping and the given `[target.webhook.list]` body.
fn config(app: &RestApp, list: &str, reconcile: &str) -> String {
    config_with_fields(app, USER_FIELDS, list, reconcile)
}

fn config_with_fields(app: &RestApp, user_fields: &str, list: &str, reconcile: &str) -> String {
    format!(
        r#"[target]
kind = "webhook"
[target.webhook]
base_url = "{base}"
secret = "{SECRET}"
id_field = "data.id"
[target.webhook.user_fields]
{user_fields}[target.webhook.group_fields]
name = "displayName"
[target.webhook.events.user_create]
method = "POST"
path = "/users"
[target.webhook.events.user_update]
method = "PUT"
path = "/users/{{app_id}}"
[target.webhook.events.user_delete]
method = "DELETE"
path = "/users/{{app_id}}"
[target.webhook.events.group_create]
method = "POST"
path = "/teams"
[target.webhook.events.group_update]
method = "PUT"
path = "/teams/{{app_id}}"
[target.webhook.events.members_add]
method = "POST"
path = "/teams/{{app_id}}/members"
[target.webhook.events.members_remove]
method = "POST"
path = "/teams/{{app_id}}/members/remove"
[target.webhook.list]
items = "data"
{list}
[outbox]
poll_interval_seconds = 0.05
retry_base_seconds = 0.05
retry_max_seconds = 1
[reconcile]
schedule = ""
{reconcile}"#,
        base = app.base
    )
}

/// Open items of the latest report as (kind, name, attribute, cause).
async fn open_items(d: &Daemon) -> (Value, Vec<(String, String, String, String)>) {
    let (full, items) = report(d).await;
    (full, items.into_iter().map(|(k, n, a, c, _)| (k, n, a, c)).collect())
}

fn item(k: &str, n: &str, a: &str, c: &str) -> (String, String, String, String) {
    (k.into(), n.into(), a.into(), c.into())
}

/// An account created in the app by hand, unknown to the IdP; its app id.
fn stray(app: &RestApp, login: &str) -> String {
    app.insert("users", json!({"login": login, "email": login, "disabled": false}).as_object().unwrap().clone())
}

#[tokio::test]
async fn rest_app_edits_are_reported_in_its_field_names_and_repaired() {
    // Users paged by cursor; team lists leave members out, so each team is read on its own.
    let app = RestApp::start(Style::Cursor, false).await;
    let list =
        "users = \"/users\"\ngroups = \"/teams\"\ngroup = \"/teams/{app_id}\"\npaging = \"cursor\"\npage_size = 2\n";
    let mut d = Daemon::start_with(&config(&app, list, ""));
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(d.create_user(&format!("U{i}@example.com")).await);
    }
    d.create_group("eng", &[&ids[0], &ids[1], &ids[2]]).await;
    d.wait_outbox_empty().await;
    assert_eq!(app.all("users").len(), 5);
    // Deliveries of different users run in parallel, so the app's order is not ours.
    let logins: Vec<Value> = app.all("users").iter().map(|u| u["login"].clone()).collect();
    assert!(logins.contains(&json!("u0@example.com")), "provisioned through the mapping: {logins:?}");

    let run = sync(&d).await;
    assert_eq!(run["status"], "ok", "{run}");
    assert_eq!(run["summary"]["total"], 0, "a freshly provisioned app has no drift: {run}");
    assert_eq!(run["summary"]["listed"], json!({"users": 5, "groups": 1}), "{run}");

    // The app's admin renames one, disables one, deletes one, adds a stray account and
    // drops a member.
    let uid = |n: &str| app.id_of("users", "login", n);
    app.edit("users", &uid("u0@example.com"), |r| {
        r.insert("login".into(), json!("renamed@example.com"));
    });
    app.edit("users", &uid("u2@example.com"), |r| {
        r.insert("disabled".into(), json!(true));
    });
    app.remove("users", &uid("u3@example.com"));
    let stray_id = stray(&app, "stray@example.com");
    let u1 = uid("u1@example.com");
    let team = app.id_of("teams", "name", "eng");
    app.edit("teams", &team, |t| t["members"].as_array_mut().unwrap().retain(|m| m != &json!(u1)));

    let run = sync(&d).await;
    assert_eq!(run["status"], "ok", "{run}");
    let (full, items) = open_items(&d).await;
    assert_eq!(
        items,
        vec![
            item("active_mismatch", "U2@example.com", "disabled", "edited_in_app"),
            item("attribute_mismatch", "U0@example.com", "login", "edited_in_app"),
            item("membership_mismatch", "eng", "members", "edited_in_app"),
            item("missing_in_app", "U3@example.com", "", "edited_in_app"),
            item("orphaned_in_app", "stray@example.com", "", "edited_in_app"),
        ],
        "{full:#}"
    );
    let find = |kind: &str| full["items"].as_array().unwrap().iter().find(|i| i["kind"] == kind).unwrap().clone();
    let login = find("attribute_mismatch");
    assert_eq!((login["ours"].as_str(), login["app"].as_str()), (Some("u0@example.com"), Some("renamed@example.com")));
    assert_eq!(
        (find("active_mismatch")["ours"].clone(), find("active_mismatch")["app"].clone()),
        (json!(false), json!(true))
    );
    assert_eq!(find("orphaned_in_app")["app_id"], stray_id);
    assert_eq!(find("membership_mismatch")["ours"]["missing_in_app"][0]["name"], "U1@example.com");
    let missing = find("missing_in_app");
    assert_eq!(missing["ours"]["login"], "u3@example.com", "the missing account as the app would get it: {missing}");
    assert_eq!(app.all("users").len(), 5, "report mode changes nothing in the app");

    // Repair: the fixes go out through the same events; the next run is clean.
    assert!(d.stop().success());
    d.set_extra_config(&config(
        &app,
        list,
        "[reconcile.repair]\nmissing_in_app = \"repair\"\norphaned_in_app = \"repair\"\nattribute_mismatch = \"repair\"\n\
         active_mismatch = \"repair\"\nmembership_mismatch = \"repair\"\n\
         [reconcile.safety]\nmax_deprovision_count = 1\nmax_deprovision_share = 1.0\n",
    ));
    d.spawn();
    let run = sync(&d).await;
    assert_eq!(run["summary"]["repair"]["queued_items"], 5, "{run}");
    d.wait_outbox_empty().await;
    let run = sync(&d).await;
    assert_eq!(run["summary"]["total"], 0, "{run}");
    assert_eq!(run["summary"]["resolved"], 5, "{run}");
    let users = app.all("users");
    let by_login = |n: &str| users.iter().find(|u| u["login"] == n).cloned();
    assert!(by_login("u0@example.com").is_some() && by_login("renamed@example.com").is_none(), "{users:#?}");
    assert_eq!(by_login("u2@example.com").unwrap()["disabled"], false);
    assert!(by_login("u3@example.com").is_some(), "missing user provisioned again: {users:#?}");
    assert!(by_login("stray@example.com").is_none(), "the orphan deleted (user_delete is configured)");
    let members = app.all("teams")[0]["members"].clone();
    assert!(members.as_array().unwrap().contains(&json!(u1)), "{members}");
}

/// Every paging style reads every page: a population over several pages plus one account
/// added in the app (last in its order) gives exactly that one orphan; nothing is reported
/// missing (an early stop would), and the run ends (a loop would not).
#[tokio::test]
async fn every_paging_style_reads_the_whole_list() {
    for (style, list) in [
        (Style::Offset, "paging = \"offset\"\n"),
        (Style::Page, "paging = \"page\"\nsize_param = \"per_page\"\n"),
        (Style::Link, "paging = \"link\"\n"),
        (Style::Cursor, "paging = \"cursor\"\n"),
    ] {
        // Team lists carry members here: no single reads needed.
        let app = RestApp::start(style, true).await;
        let list = format!("users = \"/users\"\ngroups = \"/teams\"\npage_size = 3\n{list}");
        let d = Daemon::start_with(&config(&app, &list, ""));
        let mut ids = Vec::new();
        for i in 0..7 {
            ids.push(d.create_user(&format!("p{i}@example.com")).await);
        }
        d.create_group("all", &[&ids[0], &ids[6]]).await;
        d.wait_outbox_empty().await;
        stray(&app, "zz-last@example.com");
        let run = sync(&d).await;
        assert_eq!(run["status"], "ok", "{style:?}: {run}");
        assert_eq!(run["summary"]["listed"], json!({"users": 8, "groups": 1}), "{style:?}: {run}");
        let (full, items) = open_items(&d).await;
        assert_eq!(
            items,
            vec![item("orphaned_in_app", "zz-last@example.com", "", "edited_in_app")],
            "{style:?}: {full:#}"
        );
    }
}

/// A listing the daemon cannot read fails the run with a reason that names the setting; a
/// configuration that cannot work is refused at start with the key named.
#[tokio::test]
async fn a_wrong_list_setting_fails_the_run_or_the_config_with_the_key_named() {
    let app = RestApp::start(Style::Offset, true).await;
    let mut d = Daemon::start_with(
        &config(&app, "users = \"/users\"\nitems = \"records\"\n", "").replace("items = \"data\"\n", ""),
    );
    d.create_user("x@example.com").await;
    d.wait_outbox_empty().await;
    let run = sync_raw(&d).await;
    assert_eq!(run["status"], "failed", "{run}");
    let err = run["error"].as_str().unwrap_or_default();
    assert!(err.contains("\"records\"") && err.contains("target.webhook.list.items"), "{err}");
    // Records without the configured id field: the run fails rather than match nothing.
    assert!(d.stop().success());
    d.set_extra_config(&config(&app, "users = \"/users\"\nid = \"uuid\"\n", ""));
    d.spawn();
    let run = sync_raw(&d).await;
    assert_eq!(run["status"], "failed", "{run}");
    let err = run["error"].as_str().unwrap_or_default();
    assert!(err.contains("has no id at \"uuid\" (target.webhook.list.id)"), "{err}");

    for (list, key) in [
        ("users = \"/users\"\npaging = \"sideways\"\n", "list.paging"),
        ("groups = \"/teams\"\n", "list.users"),
        ("users = \"/users\"\ngroup = \"/teams/one\"\n", "list.group"),
    ] {
        std::fs::write(
            d.config_path(),
            format!("[store]\ndata_dir = \"{}\"\n{}", d.data_dir().display(), config(&app, list, "")),
        )
        .unwrap();
        let out = d.cli_raw(&["check-config"]);
        assert_eq!(out.status.code(), Some(2), "{list}: {}", String::from_utf8_lossy(&out.stdout));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("target.webhook") && err.contains(key), "{list}: {err}");
    }
}

/// Under `never_delete = ["users"]`, or for an app that takes no user_delete, an orphan in
/// a REST app is switched off through user_update, not deleted: the record as the app listed
/// it with only the mapped inactive state changed (`disabled: true`; its other fields kept,
/// though the update replaces the record); once off it is no longer drift.
#[tokio::test]
async fn an_orphan_is_switched_off_when_it_may_not_or_cannot_be_deleted() {
    for (case, reconcile, events_cut) in [
        ("never_delete", "never_delete = [\"users\"]\n", ""),
        (
            "no user_delete event",
            "",
            "[target.webhook.events.user_delete]\nmethod = \"DELETE\"\npath = \"/users/{app_id}\"\n",
        ),
    ] {
        let app = RestApp::start(Style::Offset, true).await;
        let reconcile = format!(
            "{reconcile}[reconcile.repair]\norphaned_in_app = \"repair\"\n\
             [reconcile.safety]\nmax_deprovision_count = 5\nmax_deprovision_share = 1.0\n"
        );
        let cfg = config(&app, "users = \"/users\"\n", &reconcile).replace(events_cut, "");
        if !events_cut.is_empty() {
            assert!(!cfg.contains("user_delete"), "{case}: the event is cut from the config");
        }
        let d = Daemon::start_with(&cfg);
        d.create_user("kept@example.com").await;
        d.wait_outbox_empty().await;
        let stray_id = stray(&app, "stray@example.com");
        app.edit("users", &stray_id, |r| {
            r.insert("nickname".into(), json!("Stray Cat"));
        });
        let run = sync(&d).await;
        assert_eq!(run["summary"]["repair"]["queued_items"], 1, "{case}: {run}");
        d.wait_outbox_empty().await;
        let rec = app.all("users").into_iter().find(|u| u["id"] == stray_id.as_str()).expect("the orphan is kept");
        assert_eq!(rec["disabled"], true, "{case}: switched off: {rec}");
        assert_eq!(
            (rec["login"].as_str(), rec["email"].as_str(), rec["nickname"].as_str()),
            (Some("stray@example.com"), Some("stray@example.com"), Some("Stray Cat")),
            "{case}: nothing else changed: {rec}"
        );
        let run = sync(&d).await;
        assert_eq!(run["summary"]["total"], 0, "{case}: an orphan already off is not drift: {run}");
    }
}

/// Apps page badly: one that caps the page size below what was asked is still read whole
/// (only an empty page ends an offset list), one that rate-limits a page is asked again
/// after its `Retry-After`; one that ignores the paging parameters, hands
/// out a cursor twice, or links or redirects the next request to another origin fails the
/// run with the reason instead of looping or sending its credentials elsewhere.
#[tokio::test]
async fn paging_that_misbehaves_is_read_whole_or_fails_the_run() {
    use crate::rest_app::Quirk;
    for (style, paging, quirk, failure) in [
        (Style::Offset, "offset", Quirk::CapsPageAt(2), None),
        (Style::Offset, "offset", Quirk::RateLimitsOnce, None),
        (Style::Offset, "offset", Quirk::IgnoresPaging, Some("the app does not page as configured")),
        (Style::Cursor, "cursor", Quirk::CursorCycle, Some("a second time; the list would not end")),
        (Style::Link, "link", Quirk::ForeignLink, Some("leaves the app's origin; not followed")),
        (
            Style::Offset,
            "offset",
            Quirk::RedirectsAway,
            Some("redirect to http://localhost:1/api/users leaves the app's origin"),
        ),
    ] {
        let app = RestApp::start(style, true).await;
        let list = format!("users = \"/users\"\npaging = \"{paging}\"\npage_size = 3\n");
        let d = Daemon::start_with(&config(&app, &list, ""));
        for i in 0..7 {
            d.create_user(&format!("q{i}@example.com")).await;
        }
        d.wait_outbox_empty().await;
        stray(&app, "zz-last@example.com");
        app.state.lock().unwrap().quirk = quirk;
        let run = sync_raw(&d).await;
        match failure {
            None => {
                assert_eq!(run["status"], "ok", "{quirk:?}: {run}");
                assert_eq!(run["summary"]["listed"]["users"], 8, "{quirk:?}: {run}");
                let (full, items) = open_items(&d).await;
                assert_eq!(
                    items,
                    vec![item("orphaned_in_app", "zz-last@example.com", "", "edited_in_app")],
                    "{full:#}"
                );
            }
            Some(why) => {
                assert_eq!(run["status"], "failed", "{quirk:?}: {run}");
                let err = run["error"].as_str().unwrap_or_default();
                assert!(err.contains(why), "{quirk:?}: {err}");
            }
        }
    }
}

/// Nested output fields compare and report one by one: a changed field beside the nested
/// active state is an attribute mismatch named by its dotted path, not an active-state one;
/// the active field itself is.
#[tokio::test]
async fn nested_fields_are_compared_and_named_one_by_one() {
    let app = RestApp::start(Style::Offset, true).await;
    let fields = r#"login = "userName"
"profile.first_name" = "name.givenName"
"status.disabled" = { from = "active", transform = "not" }
"status.plan" = { constant = "pro" }
"#;
    let d = Daemon::start_with(&config_with_fields(&app, fields, "users = \"/users\"\n", ""));
    d.create_user("nest@example.com").await;
    d.wait_outbox_empty().await;
    let rec = &app.all("users")[0];
    assert_eq!(rec["status"], json!({"disabled": false, "plan": "pro"}), "{rec}");
    assert_eq!(sync(&d).await["summary"]["total"], 0);

    let id = app.id_of("users", "login", "nest@example.com");
    app.edit("users", &id, |r| {
        r["profile"]["first_name"] = json!("Changed");
        r["status"]["plan"] = json!("free");
    });
    sync(&d).await;
    let (full, items) = open_items(&d).await;
    assert_eq!(
        items,
        vec![
            item("attribute_mismatch", "nest@example.com", "profile.first_name", "edited_in_app"),
            item("attribute_mismatch", "nest@example.com", "status.plan", "edited_in_app"),
        ],
        "{full:#}"
    );
    app.edit("users", &id, |r| {
        r["status"]["disabled"] = json!(true);
    });
    sync(&d).await;
    let (full, items) = open_items(&d).await;
    assert!(
        items.contains(&item("active_mismatch", "nest@example.com", "status.disabled", "edited_in_app")),
        "{full:#}"
    );
    assert_eq!(items.len(), 3, "{full:#}");
}
