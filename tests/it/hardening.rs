//! Operator workflows an outsider's tests found broken (issue 13), end to end against the real
//! `scim2-server` app: a provision the app refused is repaired once its cause is fixed; an
//! account deleted in the app behind our back is found or created again; a burst of
//! deprovisionings above the guard's threshold reaches the app with none of them; switching
//! from the dry-run target to a real one provisions everything the IdP pushed.

use std::time::Duration;

use serde_json::{Value, json};

use crate::app::{APP_TOKEN, Mode, Proxy, ScimApp, scim_target_config};
use crate::reconcile::{report, sync};
use crate::support::*;

/// Wait until `outbox list --dead` names `id`; returns the dead row's outbox id.
async fn wait_dead(d: &Daemon, id: &str) -> String {
    let mut dead = String::new();
    for _ in 0..400 {
        dead = d.cli(&["outbox", "list", "--dead"]);
        if let Some(line) = dead.lines().find(|l| l.contains(id)) {
            return line.split_whitespace().next().unwrap().to_string();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{id} was not dead-lettered:\n{dead}");
}

/// Change the app directly, as an admin in its UI would.
async fn app_delete(app: &ScimApp, path: &str) {
    let r = client().delete(format!("{}/{path}", app.base)).bearer_auth(APP_TOKEN).send().await.unwrap();
    assert!(r.status().is_success(), "DELETE {path} in the app: {}", r.status());
}

/// The refuse -> report -> fix -> repair -> clean workflow: the dead row of a refused create
/// used to block the repair that the report said was queued.
#[tokio::test]
async fn a_provision_the_app_refused_is_repaired_once_its_cause_is_fixed() {
    let app = ScimApp::start().await;
    let proxy = Proxy::start(&app.base).await;
    let base = format!("{}[reconcile]\nschedule = \"\"\n", scim_target_config(&proxy.base));
    let mut d = Daemon::start_with(&base);
    d.create_user("kept@example.com").await;
    d.wait_outbox_empty().await;

    // The app refuses the create (say, no licence left) but still lists its accounts.
    proxy.set(Mode::FailWrites(400));
    let id = d.create_user("refused@example.com").await;
    let dead_row = wait_dead(&d, &id).await;
    sync(&d).await;
    let (_, items) = report(&d).await;
    let refused: Vec<_> = items.iter().filter(|i| i.1 == "refused@example.com").collect();
    assert!(
        refused.iter().any(|i| i.0 == "missing_in_app" && i.4 == "none")
            && refused.iter().any(|i| i.0 == "stuck_provision"),
        "report mode: missing and stuck, nothing repaired: {items:?}"
    );

    // The operator fixes the cause in the app and turns repair on.
    proxy.set(Mode::Forward);
    assert!(d.stop().success());
    d.set_extra_config(&format!("{base}[reconcile.repair]\nmissing_in_app = \"repair\"\n"));
    d.spawn();
    let run = sync(&d).await;
    let (full, items) = report(&d).await;
    assert!(
        items.iter().any(|i| i.0 == "missing_in_app" && i.1 == "refused@example.com" && i.4 == "queued"),
        "{full:#}"
    );
    assert_eq!(run["summary"]["repair"]["superseded_dead"], 1, "{run}");
    // The dead row is superseded, and says by what.
    let show = d.cli(&["outbox", "show", &dead_row]);
    assert!(show.contains("state:       done") && show.contains("superseded by outbox"), "{show}");
    let audit = d.cli(&["audit", "--json"]);
    let rec: Value = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["actor"] == "reconcile")
        .expect("a reconcile audit record");
    assert_eq!(rec["summary"]["changes"][0]["superseded_outbox_ids"], json!([dead_row.parse::<i64>().unwrap()]));
    d.wait_outbox_empty().await;
    assert!(app.user_by_name("refused@example.com").await.is_some(), "the repaired account is in the app");
    let run = sync(&d).await;
    assert_eq!(run["summary"]["total"], 0, "the next report is clean: {run}");
}

/// A repair that cannot be delivered is not reported as queued: a group whose attribute
/// change is dead-lettered blocks a member repair, and the report says `blocked`.
#[tokio::test]
async fn a_member_repair_behind_a_dead_change_is_reported_blocked_not_queued() {
    let app = ScimApp::start().await;
    let proxy = Proxy::start(&app.base).await;
    let cfg = format!(
        "{}[reconcile]\nschedule = \"\"\n[reconcile.repair]\nmembership_mismatch = \"repair\"\n",
        scim_target_config(&proxy.base)
    );
    let d = Daemon::start_with(&cfg);
    let u = d.create_user("m1@example.com").await;
    let g = d.create_group("team", &[]).await;
    d.wait_outbox_empty().await;
    // The app refuses the rename and then the member add that follows it.
    proxy.set(Mode::FailWrites(400));
    let r = d
        .patch(&format!("/Groups/{g}"), patch_body(json!([{"op": "replace", "path": "displayName", "value": "team2"}])))
        .await;
    assert!(r.status.is_success(), "{}", r.status);
    wait_dead(&d, &g).await;
    let r = d
        .patch(&format!("/Groups/{g}"), patch_body(json!([{"op": "add", "path": "members", "value": [{"value": u}]}])))
        .await;
    assert!(r.status.is_success(), "{}", r.status);
    proxy.set(Mode::Forward);
    let run = sync(&d).await;
    let (full, items) = report(&d).await;
    let member = items.iter().find(|i| i.0 == "membership_mismatch").unwrap_or_else(|| panic!("{full:#}"));
    assert_eq!(member.4, "blocked", "{full:#}");
    assert_eq!(run["summary"]["repair"]["queued_changes"], 0, "{run}");
}

/// An account deleted in the app by hand is found or created again by the next update,
/// instead of the same request failing on 404 for ever; a group comes back with its members.
#[tokio::test]
async fn an_account_deleted_in_the_app_is_created_again() {
    let app = ScimApp::start().await;
    let d = Daemon::start_with(&scim_target_config(&app.base));
    let u = d.create_user("gone@example.com").await;
    let v = d.create_user("member@example.com").await;
    let g = d.create_group("crew", &[&v]).await;
    d.wait_outbox_empty().await;
    let old_id = app.user_by_name("gone@example.com").await.unwrap()["id"].as_str().unwrap().to_string();
    app_delete(&app, &format!("Users/{old_id}")).await;
    let groups = app.all("Groups").await;
    let group_app_id = groups.iter().find(|x| x["displayName"] == "crew").unwrap()["id"].as_str().unwrap().to_string();
    app_delete(&app, &format!("Groups/{group_app_id}")).await;

    let r =
        d.patch(&format!("/Users/{u}"), patch_body(json!([{"op": "replace", "path": "title", "value": "back"}]))).await;
    assert_eq!(r.status, 200);
    let r = d
        .patch(&format!("/Groups/{g}"), patch_body(json!([{"op": "add", "path": "members", "value": [{"value": u}]}])))
        .await;
    assert!(r.status.is_success(), "{}", r.status);
    d.wait_outbox_empty_within(30).await;

    let user = app.user_by_name("gone@example.com").await.expect("recreated in the app");
    assert_eq!(user["title"], "back");
    assert_ne!(user["id"], old_id.as_str(), "a new account, not the deleted id");
    let groups = app.all("Groups").await;
    let crew = groups.iter().find(|x| x["displayName"] == "crew").expect("group recreated");
    let members: Vec<String> =
        crew["members"].as_array().unwrap().iter().map(|m| m["value"].as_str().unwrap().to_string()).collect();
    let users = app.all("Users").await;
    let app_of = |n: &str| users.iter().find(|x| x["userName"] == n).unwrap()["id"].as_str().unwrap().to_string();
    // Delivered in parallel, the group may have been recreated before the user: the user's
    // recreation queues its memberships again, so the group ends up naming the new account.
    for name in ["gone@example.com", "member@example.com"] {
        assert!(members.contains(&app_of(name)), "the recreated group lacks {name}: {members:?}");
    }
    // The change's attempts say what happened.
    let shows: Vec<String> = (1..=8)
        .map(|n| String::from_utf8_lossy(&d.cli_raw(&["outbox", "show", &n.to_string()]).stdout).into_owned())
        .collect();
    for (who, what) in [(&u, "update /Users/"), (&g, "PATCH /Groups/")] {
        assert!(
            shows.iter().any(|s| s.contains(who.as_str())
                && s.contains(what)
                && s.contains("no longer has this")
                && s.contains("stale app id")),
            "no attempt of {who} records the recreation:\n{}",
            shows.join("\n")
        );
    }
}

/// The deprovisioning delay: a burst above the guard's share threshold, pushed as fast as the
/// IdP can, reaches the app with none of its deprovisionings (the guard counted it whole before
/// the first one's delay ended); a burst below it is delivered once the delay has passed.
#[tokio::test]
async fn a_burst_of_deprovisionings_is_held_whole_and_a_small_one_waits_its_delay() {
    let app = ScimApp::start().await;
    let guard = "[outbox.deletion_guard]\nthreshold_count = 1000\nthreshold_share = 0.2\nshare_min_count = 10\n\
                 delay_seconds = 10\n";
    let d = Daemon::start_with(&format!("{}{guard}", scim_target_config(&app.base)));
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push(d.create_user(&format!("b{i}@example.com")).await);
    }
    d.wait_outbox_empty().await;
    let inactive = || async { app.all("Users").await.iter().filter(|u| u["active"] == false).count() };

    // 13 of 50 (26 % > 20 %), all at once.
    let paths: Vec<String> = ids.iter().map(|id| format!("/Users/{id}")).collect();
    let burst = futures_util::future::join_all(paths[..13].iter().map(|p| d.delete(p))).await;
    assert!(burst.iter().all(|r| r.status == 204), "the IdP is answered as usual");
    let mut held = Vec::new();
    for _ in 0..400 {
        held = d.held_ids();
        if held.len() == 13 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(held.len(), 13, "every deprovisioning of the burst is held: {}", d.cli(&["outbox", "list"]));
    assert_eq!(inactive().await, 0, "none of the burst reached the app");

    // The operator discards them (the guard resets); a burst below the threshold flows after
    // its delay, not before.
    d.cli(&["outbox", "discard", "--held", "--confirm"]);
    let small = futures_util::future::join_all(paths[13..16].iter().map(|p| d.delete(p))).await;
    assert!(small.iter().all(|r| r.status == 204));
    d.wait_outbox_empty_within(60).await;
    assert_eq!(inactive().await, 3, "a small burst is delivered");
    assert!(d.held_ids().is_empty());
    // Each of them left no earlier than its delay after it was accepted.
    let parse = |s: &str| time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap();
    let mut checked = 0;
    for n in 1..=80 {
        let out = String::from_utf8_lossy(&d.cli_raw(&["outbox", "show", &n.to_string()]).stdout).into_owned();
        if !out.contains("change:      delete") || !out.contains("state:       done") {
            continue;
        }
        let field = |name: &str| out.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap().to_string();
        let waited = parse(&field("finished:")) - parse(&field("created:"));
        assert!(waited >= time::Duration::seconds(10), "delivered {waited} after it was accepted:\n{out}");
        checked += 1;
    }
    assert_eq!(checked, 3, "the three deletions of the small burst were checked");
}

/// Trying the dry-run target does not poison the real one: after the switch every user and
/// group the IdP pushed during the dry run reaches the app by itself, no `dry-run-` id is ever
/// sent to it (also for a store whose dry run, under an older release, recorded such ids),
/// and a report does not blame the app for what it never received.
#[tokio::test]
async fn switching_from_the_dry_run_to_a_real_target_provisions_everything() {
    let app = ScimApp::start().await;
    let proxy = Proxy::start(&app.base).await;
    let mut d = Daemon::start_with("[target]\nkind = \"dry-run\"\n[outbox]\npoll_interval_seconds = 0.05\n");
    let u1 = d.create_user("try1@example.com").await;
    let u2 = d.create_user("try2@example.com").await;
    d.create_group("tryers", &[&u1, &u2]).await;
    // Delivered before the PATCH: a create still queued when the update arrives is claimed
    // with it and logged as one create with the latest state.
    d.wait_outbox_empty().await;
    let r =
        d.patch(&format!("/Users/{u1}"), patch_body(json!([{"op": "replace", "path": "title", "value": "t"}]))).await;
    assert_eq!(r.status, 200);
    d.wait_outbox_empty().await;
    let log = std::fs::read_to_string(d.data_dir().join("dry-run.jsonl")).expect("dry-run log");
    assert!(log.lines().count() >= 3, "{log}");
    assert!(log.contains("\"action\":\"update\""), "an update is logged as one: {log}");
    assert!(!log.contains("dry-run-"), "no made-up app ids: {log}");
    assert!(d.stop().success());

    // A store left by an older release (SQLite: PostgreSQL stores start at this one): its
    // dry run recorded `dry-run-<id>` app ids.
    if !on_postgres() {
        let db = rusqlite::Connection::open(d.data_dir().join("scimsync.db")).unwrap();
        db.execute_batch(
            "DELETE FROM delivery_target;
             INSERT INTO id_map (resource_id, resource_kind, app_id, updated_at)
                 SELECT id, kind, 'dry-run-' || id, '2026-01-01T00:00:00.000Z' FROM resources;",
        )
        .unwrap();
    }

    // Switch to the real app, which refuses writes at first: what it never received is
    // reported as not applied yet, never as edited in the app.
    proxy.set(Mode::FailWrites(400));
    d.set_extra_config(&format!("{}[reconcile]\nschedule = \"\"\n", scim_target_config(&proxy.base)));
    d.spawn();
    d.wait_log("every user and group is queued for this target", 1).await;
    for id in [&u1, &u2] {
        wait_dead(&d, id).await;
    }
    sync(&d).await;
    let (full, items) = report(&d).await;
    let missing: Vec<_> = items.iter().filter(|i| i.0 == "missing_in_app").collect();
    assert_eq!(missing.len(), 3, "{full:#}");
    assert!(missing.iter().all(|i| i.3 == "not_applied_yet"), "{full:#}");

    // The app accepts writes again: everything arrives, by name, with its latest state.
    proxy.set(Mode::Forward);
    d.cli(&["outbox", "retry", "--all-dead"]);
    d.wait_outbox_empty_within(30).await;
    let user = app.user_by_name("try1@example.com").await.expect("provisioned after the switch");
    assert_eq!(user["title"], "t");
    assert!(app.user_by_name("try2@example.com").await.is_some());
    let groups = app.all("Groups").await;
    let g = groups.iter().find(|g| g["displayName"] == "tryers").expect("group provisioned");
    assert_eq!(g["members"].as_array().map(Vec::len), Some(2), "{g}");
    let run = sync(&d).await;
    assert_eq!(run["summary"]["total"], 0, "clean after the switch: {run}");
    let seen = proxy.seen();
    assert!(seen.iter().all(|s| !s.path.contains("dry-run-")), "a dry-run id reached the app: {seen:?}");
    // The switch is in the audit log.
    assert!(d.cli(&["audit"]).contains("target_switch"), "{}", d.cli(&["audit"]));
}
