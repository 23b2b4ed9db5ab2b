//! The accidental-deletion guard (issue 9) against the real `scim2-server` app: past the
//! threshold, deprovisioning changes are answered as usual but held, not delivered, until an
//! operator releases or discards them; re-creating or reactivating a user cancels its own.

use reqwest::StatusCode;
use serde_json::json;

use crate::app::{ScimApp, scim_target_config};
use crate::support::*;

fn config(app: &ScimApp, guard: &str) -> String {
    format!("{}[outbox.deletion_guard]\n{guard}", scim_target_config(&app.base))
}

async fn inactive_in_app(app: &ScimApp) -> usize {
    app.all("Users").await.iter().filter(|u| u["active"] == false).count()
}

async fn population(d: &Daemon, prefix: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(d.create_user(&format!("{prefix}{i}@example.com")).await);
    }
    d.wait_outbox_empty().await;
    ids
}

#[tokio::test]
async fn a_mass_deletion_is_held_across_a_restart_until_released() {
    let app = ScimApp::start().await;
    let mut d = Daemon::start_with(&config(&app, "threshold_count = 3\nthreshold_share = 1.0\n"));
    let ids = population(&d, "m", 10).await;
    assert_eq!(app.all("Users").await.len(), 10);
    for id in &ids[..8] {
        assert_eq!(d.delete(&format!("/Users/{id}")).await.status, StatusCode::NO_CONTENT, "the IdP is answered");
    }
    d.wait_outbox_empty().await;
    let delivered = inactive_in_app(&app).await;
    assert!(delivered <= 3, "nothing beyond the threshold reaches the app: {delivered} deactivated");
    let list = d.cli(&["outbox", "list", "--held"]);
    assert!(list.contains("deletion guard TRIPPED"), "{list}");
    let held_before = d.held_ids();
    assert_eq!(held_before.len() + delivered, 8, "{list}");
    assert!(held_before.iter().all(|h| ids[..8].contains(h)));
    // Visible to monitoring: the metric by target and the readiness detail (still ready).
    let metrics = d.http.get(format!("{}/metrics", d.admin_base)).send().await.unwrap().text().await.unwrap();
    let line = format!("scimsync_deletion_guard_held{{target=\"scim\"}} {}", held_before.len());
    assert!(metrics.contains(&line), "missing {line:?} in:\n{metrics}");
    let ready = d.http.get(format!("{}/readyz", d.admin_base)).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK, "a tripped guard does not make the daemon unready");
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready["checks"]["deletion_guard"]["tripped"], true, "{ready}");
    assert_eq!(ready["checks"]["deletion_guard"]["held"], held_before.len(), "{ready}");

    // A restart keeps them held, and other changes keep flowing meanwhile.
    assert!(d.stop().success());
    d.spawn();
    d.create_user("after-restart@example.com").await;
    d.wait_outbox_empty().await;
    assert!(app.user_by_name("after-restart@example.com").await.is_some(), "creates flow while tripped");
    assert_eq!(d.held_ids(), held_before, "held across the restart");
    assert_eq!(inactive_in_app(&app).await, delivered, "still nothing more deactivated");

    // Release: every held deprovisioning is delivered and the guard is reset.
    let wrong = d.cli_raw(&["outbox", "release", "--held", "--target", "webhook"]);
    assert_eq!(wrong.status.code(), Some(2), "another target's name is refused");
    assert_eq!(d.held_ids(), held_before, "nothing released by the refused command");
    d.cli(&["outbox", "release", "--held", "--target", "scim"]);
    d.wait_outbox_empty().await;
    assert_eq!(inactive_in_app(&app).await, 8, "released deprovisionings delivered");
    let list = d.cli(&["outbox", "list"]);
    assert!(d.held_ids().is_empty() && !list.contains("TRIPPED"), "{list}");
    // Reset: the next deletion counts from zero and flows.
    d.delete(&format!("/Users/{}", ids[8])).await;
    d.wait_outbox_empty().await;
    assert_eq!(inactive_in_app(&app).await, 9);
}

#[tokio::test]
async fn recreate_and_reactivation_cancel_and_discard_drops() {
    let app = ScimApp::start().await;
    let d = Daemon::start_with(&config(&app, "threshold_count = 2\nthreshold_share = 1.0\n"));
    let ids = population(&d, "c", 8).await;
    for id in &ids[..4] {
        d.delete(&format!("/Users/{id}")).await;
    }
    d.wait_outbox_empty().await;
    assert!(d.cli(&["outbox", "list"]).contains("TRIPPED"));
    let delivered = inactive_in_app(&app).await;
    assert!(delivered <= 2, "{delivered}");

    // While tripped: c4 is deactivated, c5 deleted; both join the held set...
    let off = patch_body(json!([{"op": "replace", "path": "active", "value": false}]));
    assert_eq!(d.patch(&format!("/Users/{}", ids[4]), off).await.status, StatusCode::OK);
    assert_eq!(d.delete(&format!("/Users/{}", ids[5])).await.status, StatusCode::NO_CONTENT);
    d.wait_outbox_empty().await;
    let h = d.held_ids();
    assert!(h.contains(&ids[4]) && h.contains(&ids[5]), "{h:?}");
    // ...then the IdP reactivates c4 and re-creates c5: both deprovisionings are cancelled.
    let on = patch_body(json!([{"op": "replace", "path": "active", "value": true}]));
    assert_eq!(d.patch(&format!("/Users/{}", ids[4]), on).await.status, StatusCode::OK);
    let c5 = d.create_user("c5@example.com").await;
    d.wait_outbox_empty().await;
    let h = d.held_ids();
    assert!(!h.contains(&ids[4]) && !h.contains(&ids[5]), "cancelled: {h:?}");
    assert_eq!(h.len() + delivered, 4, "the first four stay held");
    for name in ["c4@example.com", "c5@example.com"] {
        let u = app.user_by_name(name).await.expect("still in the app");
        assert_eq!(u["active"], true, "{name}'s deprovisioning never reached the app");
    }
    assert_eq!(app.all("Users").await.iter().filter(|u| u["userName"] == "c5@example.com").count(), 1);
    assert_eq!(d.get(&format!("/Users/{c5}")).await.status, StatusCode::OK);

    // Discard needs --confirm; then the held changes are gone for good, logged at warn.
    let out = d.cli_raw(&["outbox", "discard", "--held"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(d.held_ids().len(), h.len(), "nothing dropped without --confirm");
    let out = d.cli_raw(&["outbox", "discard", "--held", "--confirm"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("discarded") && err.contains("WARN"), "{err}");
    assert!(d.held_ids().is_empty());
    d.wait_outbox_empty().await;
    assert_eq!(inactive_in_app(&app).await, delivered, "discarded deprovisionings never reach the app");
    assert!(!d.cli(&["outbox", "list"]).contains("TRIPPED"), "discard resets the guard");
}

#[tokio::test]
async fn ordinary_offboarding_flows_with_the_default_guard() {
    let app = ScimApp::start().await;
    // The shipped defaults: a 10-person company offboarding 3 people at once is not a wipe-out.
    let d = Daemon::start_with(&scim_target_config(&app.base));
    let ids = population(&d, "o", 10).await;
    for id in &ids[..2] {
        assert_eq!(d.delete(&format!("/Users/{id}")).await.status, StatusCode::NO_CONTENT);
    }
    d.patch(&format!("/Users/{}", ids[2]), patch_body(json!([{"op": "replace", "path": "active", "value": false}])))
        .await;
    d.wait_outbox_empty().await;
    assert_eq!(inactive_in_app(&app).await, 3);
    assert!(d.held_ids().is_empty());
    assert!(!d.cli(&["outbox", "list"]).contains("TRIPPED"));
}

/// Issue 9 point 5 with issue 5's protected accounts: the IdP's deprovisioning of a
/// break-glass account never reaches the app (deletion not sent, deactivation sent as
/// active), while everyone else's flows as usual.
#[tokio::test]
async fn protected_accounts_are_never_deprovisioned_by_the_idp() {
    let app = ScimApp::start().await;
    let d = Daemon::start_with(&format!(
        "{}[reconcile]\nschedule = \"\"\nprotected = [\"BreakGlass@example.com\", \"keep@example.com\"]\n",
        scim_target_config(&app.base)
    ));
    let bg = d.create_user("breakglass@example.com").await;
    let keep = d.create_user("keep@example.com").await;
    let normal = d.create_user("normal@example.com").await;
    d.wait_outbox_empty().await;
    assert_eq!(d.delete(&format!("/Users/{bg}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(d.delete(&format!("/Users/{normal}")).await.status, StatusCode::NO_CONTENT);
    let off = patch_body(json!([{"op": "replace", "path": "active", "value": false}]));
    let r = d.patch(&format!("/Users/{keep}"), off).await;
    assert_eq!((r.status, &r.body["active"]), (StatusCode::OK, &json!(false)), "the IdP's state is stored as sent");
    d.wait_outbox_empty().await;
    let active = |u: Option<serde_json::Value>| u.expect("in the app")["active"].clone();
    assert_eq!(active(app.user_by_name("breakglass@example.com").await), json!(true), "deletion not sent");
    assert_eq!(active(app.user_by_name("keep@example.com").await), json!(true), "deactivation sent as active");
    assert_eq!(active(app.user_by_name("normal@example.com").await), json!(false), "others deprovisioned as usual");
}
