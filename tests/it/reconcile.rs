//! Reconciliation (issue 5) against the real `scim2-server` app: provision a population,
//! edit the app behind our back, and check that a sync run reports exactly those edits, that
//! repair mode fixes them (the next run is clean), and that a mass deprovisioning beyond the
//! safety limit is refused until confirmed.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::app::{APP_TOKEN, ScimApp, scim_target_config};
use crate::support::*;

const REPAIR_ALL: &str = "[reconcile.repair]\nmissing_in_app = \"repair\"\norphaned_in_app = \"repair\"\n\
                          attribute_mismatch = \"repair\"\nactive_mismatch = \"repair\"\nmembership_mismatch = \"repair\"\n";

fn config(app: &ScimApp, reconcile: &str) -> String {
    format!("{}[reconcile]\nschedule = \"\"\n{reconcile}", scim_target_config(&app.base))
}

/// Change the app directly, as an admin in its UI would.
async fn app_req(app: &ScimApp, method: reqwest::Method, path: &str, body: Option<Value>) {
    let mut rb = client().request(method.clone(), format!("{}/{path}", app.base)).bearer_auth(APP_TOKEN);
    if let Some(b) = body {
        rb = rb.header("content-type", "application/scim+json").body(b.to_string());
    }
    let r = rb.send().await.expect("app reachable");
    assert!(r.status().is_success(), "{method} {path} in the app: {}", r.status());
}

fn app_id(app_users: &[Value], name: &str) -> String {
    app_users.iter().find(|u| u["userName"] == name || u["displayName"] == name).expect(name)["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Run a sync through the admin trigger; returns the run result, whatever its outcome.
pub async fn sync_raw(d: &Daemon) -> Value {
    let url = format!("{}/sync", d.admin_base);
    let r = d.http.post(url).header("x-requested-by", "tests").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

/// Run a sync that must succeed; returns the run result.
pub async fn sync(d: &Daemon) -> Value {
    let v = sync_raw(d).await;
    assert_eq!(v["status"], "ok", "{v}");
    v
}

/// The open items of the latest report as (kind, name, attribute, cause, repair).
pub async fn report(d: &Daemon) -> (Value, Vec<(String, String, String, String, String)>) {
    let r: Value = d.http.get(format!("{}/drift", d.admin_base)).send().await.unwrap().json().await.unwrap();
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let mut items: Vec<_> = r["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["change"] != "resolved")
        .map(|i| (s(&i["kind"]), s(&i["name"]), s(&i["attribute"]), s(&i["cause"]), s(&i["repair"])))
        .collect();
    items.sort();
    (r, items)
}

fn tuple(k: &str, n: &str, a: &str, c: &str, r: &str) -> (String, String, String, String, String) {
    (k.into(), n.into(), a.into(), c.into(), r.into())
}

#[tokio::test]
async fn edits_in_the_app_are_reported_exactly_and_repaired() {
    let app = ScimApp::start().await;
    let mut d = Daemon::start_with(&config(&app, ""));
    for i in 0..5 {
        d.create_user(&format!("u{i}@example.com")).await;
    }
    let ids: Vec<String> = {
        let r = d.get("/Users?count=10").await;
        let mut v: Vec<(String, String)> = r.body["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| (u["userName"].as_str().unwrap().to_string(), u["id"].as_str().unwrap().to_string()))
            .collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    };
    d.create_group("eng", &[&ids[0], &ids[1], &ids[2]]).await;
    d.wait_outbox_empty().await;

    // Clean before anyone touches the app.
    let run = sync(&d).await;
    assert_eq!(run["summary"]["total"], 0, "a freshly provisioned app has no drift: {run}");
    assert_eq!(run["summary"]["listed"], json!({"users": 5, "groups": 1}));
    // Nothing was refused: there is nothing to confirm, and no run starts.
    let r = d
        .http
        .post(format!("{}/sync?confirm={}", d.admin_base, run["run_id"]))
        .header("x-requested-by", "tests")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(r.text().await.unwrap().contains("did not refuse a repair"));

    // Edit the app by hand: rename one, deactivate one, delete one, add a stray account,
    // drop a member.
    let users = app.all("Users").await;
    let groups = app.all("Groups").await;
    let rename = json!({"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "userName", "value": "renamed@example.com"}]});
    app_req(&app, reqwest::Method::PATCH, &format!("Users/{}", app_id(&users, "u0@example.com")), Some(rename)).await;
    let off = json!({"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "active", "value": false}]});
    app_req(&app, reqwest::Method::PATCH, &format!("Users/{}", app_id(&users, "u2@example.com")), Some(off)).await;
    app_req(&app, reqwest::Method::DELETE, &format!("Users/{}", app_id(&users, "u3@example.com")), None).await;
    app_req(&app, reqwest::Method::POST, "Users", Some(user_body("stray@example.com"))).await;
    let u1 = app_id(&users, "u1@example.com");
    let drop =
        json!({"schemas": [PATCH_OP], "Operations": [{"op": "remove", "path": format!("members[value eq \"{u1}\"]")}]});
    app_req(&app, reqwest::Method::PATCH, &format!("Groups/{}", app_id(&groups, "eng")), Some(drop)).await;

    let run = sync(&d).await;
    let (full, items) = report(&d).await;
    assert_eq!(
        items,
        vec![
            tuple("active_mismatch", "u2@example.com", "active", "edited_in_app", "none"),
            tuple("attribute_mismatch", "u0@example.com", "userName", "edited_in_app", "none"),
            tuple("membership_mismatch", "eng", "members", "edited_in_app", "none"),
            tuple("missing_in_app", "u3@example.com", "", "edited_in_app", "none"),
            tuple("orphaned_in_app", "stray@example.com", "", "edited_in_app", "none"),
        ],
        "{full:#}"
    );
    assert_eq!(run["summary"]["new"], 5, "{run}");
    let member = full["items"].as_array().unwrap().iter().find(|i| i["kind"] == "membership_mismatch").unwrap();
    assert_eq!(member["ours"]["missing_in_app"][0]["name"], "u1@example.com", "{member}");
    let attr = full["items"].as_array().unwrap().iter().find(|i| i["kind"] == "attribute_mismatch").unwrap();
    assert_eq!(
        (attr["app"].as_str(), attr["ours"].as_str()),
        (Some("renamed@example.com"), Some("u0@example.com")),
        "{attr}"
    );

    // Humans: the CLI table (exit 3: drift) and the HTML page; monitoring: the metrics.
    let out = d.cli_raw(&["drift"]);
    assert_eq!(out.status.code(), Some(3));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("Orphaned in the app (unknown to the IdP) (1)") && table.contains("stray@example.com"),
        "{table}"
    );
    assert!(table.contains("missing: u1@example.com"), "{table}");
    let html = d.http.get(format!("{}/drift.html", d.admin_base)).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("<td class=\"name\">stray@example.com</td>"), "{html}");
    let metrics = d.http.get(format!("{}/metrics", d.admin_base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("scimsync_drift_items{kind=\"orphaned_in_app\"} 1"), "{metrics}");
    assert!(metrics.contains("scimsync_sync_runs_total{outcome=\"ok\"} 2"), "{metrics}");
    assert_eq!(app.all("Users").await.len(), 5, "report mode changes nothing in the app");

    // Repair mode: the same run queues the fixes, the worker delivers them, the next run is clean.
    assert!(d.stop().success());
    d.set_extra_config(&config(
        &app,
        &format!("{REPAIR_ALL}[reconcile.safety]\nmax_deprovision_count = 1\nmax_deprovision_share = 1.0\n"),
    ));
    d.spawn();
    let run = sync(&d).await;
    assert_eq!(run["summary"]["repair"]["queued_items"], 5, "{run}");
    // The audit log names what the reconciler queued, under its run.
    let audit: Vec<Value> =
        d.cli(&["audit", "--json"]).lines().map(|l| serde_json::from_str(l).expect("audit --json line")).collect();
    let rec = audit.iter().find(|r| r["actor"] == "reconcile").expect("a reconcile record");
    assert_eq!((rec["method"].as_str(), rec["summary"]["queued"].as_u64()), (Some("repair"), Some(5)), "{rec}");
    assert!(rec.to_string().contains("\"name\":\"stray@example.com\""), "{rec}");
    d.wait_outbox_empty().await;
    let run = sync(&d).await;
    assert_eq!(run["summary"]["total"], 0, "{run}");
    assert_eq!(run["summary"]["resolved"], 5, "{run}");
    let users = app.all("Users").await;
    let user = |n: &str| users.iter().find(|u| u["userName"] == n).cloned();
    assert!(user("u3@example.com").is_some(), "missing user provisioned again");
    assert_eq!(user("u2@example.com").unwrap()["active"], true);
    assert_eq!(
        user("stray@example.com").unwrap()["active"],
        false,
        "orphan deactivated (target deprovisions by deactivation)"
    );
    let runs = d.cli(&["sync", "runs"]);
    assert!(runs.contains("0 item(s), 0 new, 5 resolved"), "{runs}");
}

#[tokio::test]
async fn a_mass_deprovisioning_beyond_the_safety_limit_repairs_nothing_until_confirmed() {
    let app = ScimApp::start().await;
    let cfg = format!(
        "protected = [\"BreakGlass@example.com\"]\n{REPAIR_ALL}[reconcile.safety]\nmax_deprovision_count = 2\nmax_deprovision_share = 1.0\n"
    );
    let d = Daemon::start_with(&config(&app, &cfg));
    d.create_user("kept@example.com").await;
    d.wait_outbox_empty().await;
    for i in 0..4 {
        app_req(&app, reqwest::Method::POST, "Users", Some(user_body(&format!("stray{i}@example.com")))).await;
    }
    app_req(&app, reqwest::Method::POST, "Users", Some(user_body("breakglass@example.com"))).await;

    let run = sync(&d).await;
    let refused = run["summary"]["repair"]["refused"].as_str().expect("refused");
    assert!(refused.contains("4 account(s)") && refused.contains("scimsync sync now --confirm"), "{refused}");
    let (_, items) = report(&d).await;
    let repairs: Vec<(&str, &str)> = items.iter().map(|i| (i.1.as_str(), i.4.as_str())).collect();
    assert_eq!(
        repairs,
        vec![
            ("breakglass@example.com", "protected"),
            ("stray0@example.com", "refused_limit"),
            ("stray1@example.com", "refused_limit"),
            ("stray2@example.com", "refused_limit"),
            ("stray3@example.com", "refused_limit"),
        ]
    );
    d.wait_outbox_empty().await;
    assert!(app.all("Users").await.iter().all(|u| u["active"] != false), "nothing deprovisioned");
    let html = d.http.get(format!("{}/drift.html", d.admin_base)).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("id=\"refused\""), "{html}");

    let reviewed = run["run_id"].as_i64().expect("run id");
    assert!(refused.contains(&format!("--confirm {reviewed}")), "the message names the run to confirm: {refused}");
    let refused = d.cli_raw(&["sync", "now", "--url", &d.admin_base]);
    assert_eq!(refused.status.code(), Some(4), "a refused repair is its own exit code");

    // A confirmation names the reviewed report: not a bare yes, not a run that refused nothing.
    let post = |q: String| d.http.post(format!("{}/sync?{q}", d.admin_base)).header("x-requested-by", "tests").send();
    assert_eq!(post("confirm=true".into()).await.unwrap().status(), StatusCode::BAD_REQUEST);
    let r = post("confirm=999".into()).await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT, "no such run");
    assert!(r.text().await.unwrap().contains("there is no sync run 999"));

    // Only the newest report can be confirmed (the CLI run above made a newer one).
    let latest_id = || async {
        let runs: Value = d.http.get(format!("{}/sync/runs", d.admin_base)).send().await.unwrap().json().await.unwrap();
        runs["runs"][0]["id"].as_i64().unwrap()
    };
    let newest = latest_id().await;
    assert_ne!(newest, reviewed);
    let r = post(format!("confirm={reviewed}")).await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(r.text().await.unwrap().contains(&format!("is not the latest report (run {newest} is)")));

    // After the review one more stray shows up: confirming the report does not cover it.
    app_req(&app, reqwest::Method::POST, "Users", Some(user_body("stray4@example.com"))).await;
    let out = d.cli_raw(&["sync", "now", "--confirm", &newest.to_string(), "--url", &d.admin_base]);
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stdout));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("1 of them were not in the report of run {newest}")), "{text}");
    d.wait_outbox_empty().await;
    assert!(app.all("Users").await.iter().all(|u| u["active"] != false), "still nothing deprovisioned");

    // Confirming the report that lists all five: repaired, except the protected account.
    let latest = latest_id().await.to_string();
    let out = d.cli(&["sync", "now", "--confirm", &latest, "--url", &d.admin_base]);
    assert!(out.contains("Repair queued 5 change(s)"), "{out}");
    d.wait_outbox_empty().await;
    let users = app.all("Users").await;
    let inactive: Vec<&str> =
        users.iter().filter(|u| u["active"] == false).map(|u| u["userName"].as_str().unwrap()).collect();
    assert_eq!(inactive.len(), 5, "{inactive:?}");
    assert!(!inactive.contains(&"breakglass@example.com"));
    // Used once: the confirmed run is no longer the newest report.
    let r = post(format!("confirm={latest}")).await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn stuck_provisions_are_reported_requeued_and_a_failed_listing_fails_the_run() {
    use crate::app::{Mode, Proxy};
    let app = ScimApp::start().await;
    let proxy = Proxy::start(&app.base).await;
    // One attempt each, so failures are dead-lettered at once.
    let d = Daemon::start_with(&format!(
        "{}max_attempts = 1\n[reconcile]\nschedule = \"\"\n",
        scim_target_config(&proxy.base)
    ));
    // An outage (503): dead after its attempts ran out; its cause may clear.
    proxy.set(Mode::Fail { status: 503, retry_after: None });
    d.create_user("stuck@example.com").await;
    d.wait_outbox_empty().await;
    // A refusal (400): permanent; re-sending it every run would only flap the alerts.
    proxy.set(Mode::Fail { status: 400, retry_after: None });
    d.create_user("refused@example.com").await;
    d.wait_outbox_empty().await;
    // While the app fails, a sync run fails with the reason, and says so.
    proxy.set(Mode::Fail { status: 503, retry_after: None });
    // Without X-Requested-By (what a cross-site form would send): refused.
    let forged = d.http.post(format!("{}/sync?confirm=true", d.admin_base)).send().await.unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let r: Value = d
        .http
        .post(format!("{}/sync", d.admin_base))
        .header("x-requested-by", "tests")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "failed", "{r}");
    assert!(r["error"].as_str().unwrap().contains("HTTP 503"), "{r}");
    let runs = d.cli(&["sync", "runs"]);
    assert!(runs.contains("failed") && runs.contains("listing Users"), "{runs}");
    // The app is back: the run reports both dead letters as stuck and re-queues the outage's.
    proxy.set(Mode::Forward);
    sync(&d).await;
    let (full, items) = report(&d).await;
    assert_eq!(
        items,
        vec![
            tuple("missing_in_app", "refused@example.com", "", "not_applied_yet", "none"),
            tuple("missing_in_app", "stuck@example.com", "", "not_applied_yet", "none"),
            tuple("stuck_provision", "refused@example.com", "", "not_applied_yet", "none"),
            tuple("stuck_provision", "stuck@example.com", "", "not_applied_yet", "requeued"),
        ],
        "{full:#}"
    );
    d.wait_outbox_empty().await;
    assert!(app.user_by_name("stuck@example.com").await.is_some(), "the re-queued create was delivered");
    assert!(app.user_by_name("refused@example.com").await.is_none(), "the refused one stays dead");
    let run = sync(&d).await;
    assert_eq!((run["summary"]["total"].as_u64(), run["summary"]["resolved"].as_u64()), (Some(2), Some(2)), "{run}");
}

#[tokio::test]
async fn the_cron_schedule_runs_syncs_on_its_own() {
    let app = ScimApp::start().await;
    let d = Daemon::start_with(&format!("{}[reconcile]\nschedule = \"* * * * * *\"\n", scim_target_config(&app.base)));
    d.create_user("sched@example.com").await;
    let mut runs = String::new();
    for _ in 0..100 {
        runs = d.cli(&["sync", "runs"]);
        if runs.matches(" schedule ").count() >= 2 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no two scheduled runs within 10 s:\n{runs}");
}

#[tokio::test]
async fn a_run_missed_while_stopped_is_caught_up_once_at_start() {
    let app = ScimApp::start().await;
    let mut d = Daemon::start_with(&config(&app, ""));
    sync(&d).await;
    assert!(d.stop().success());
    // The last run is made three hours old: with an hourly schedule, three run times were
    // missed while stopped. One catch-up run, not three, and none of the schedule's own
    // (the next hour is minutes away at the earliest).
    let three_hours_ago = (time::OffsetDateTime::now_utc() - time::Duration::hours(3))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let set = format!("UPDATE sync_runs SET started_at = '{three_hours_ago}'");
    assert_eq!(d.store_sql(&set, &set), 1, "one run so far");
    d.set_extra_config(&format!("{}[reconcile]\nschedule = \"0 0 * * * *\"\n", scim_target_config(&app.base)));
    d.spawn();
    for _ in 0..100 {
        if d.cli(&["sync", "runs"]).contains(" catch_up ") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Let a second catch-up show itself if there were one.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let runs = d.cli(&["sync", "runs"]);
    assert_eq!(runs.matches(" catch_up ").count(), 1, "one catch-up run:\n{runs}");
    assert_eq!(runs.matches(" manual ").count(), 1, "{runs}");
}

/// Under a provisioning policy the app holds the effective roles and entitlements, which
/// are computed, not stored: a freshly provisioned app must still show no drift, and an
/// admin role removed in the app behind our back must.
#[tokio::test]
async fn effective_access_is_compared_without_false_drift() {
    let app = ScimApp::start().await;
    let policy = "[policy]\nrole_order = [\"member\", \"admin\"]\ndefault_role = \"member\"\n\
                  [[policy.group_rules]]\ncontains = \"admin\"\nrole = \"admin\"\n";
    let d = Daemon::start_with(&format!("{}{policy}", config(&app, "")));
    let u = d.create_user("ada@example.com").await;
    d.create_user("bob@example.com").await;
    d.create_group("Admins", &[&u]).await;
    d.wait_outbox_empty().await;
    let run = sync(&d).await;
    assert_eq!(run["summary"]["total"], 0, "no drift right after provisioning: {run}");
    let users = app.all("Users").await;
    let ada = app_id(&users, "ada@example.com");
    app_req(
        &app,
        reqwest::Method::PATCH,
        &format!("Users/{ada}"),
        Some(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "roles", "value": [{"value": "member"}]}]
        })),
    )
    .await;
    sync(&d).await;
    let (_, items) = report(&d).await;
    assert!(
        items.iter().any(|i| i.0 == "attribute_mismatch" && i.1 == "ada@example.com" && i.2 == "roles"),
        "{items:?}"
    );
}
