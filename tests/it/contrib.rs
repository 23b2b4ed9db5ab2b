//! The ops kit in `contrib/` (issue 17): the Prometheus alert rules pass `promtool check
//! rules` and their unit tests (`promtool test rules`, a case per alert that must fire and
//! series that must not), each alert has a runbook paragraph in the README, the Grafana
//! dashboard's queries are valid PromQL, and every metric and label the rules and the
//! dashboard name exists in the real daemon's `/metrics` after real traffic.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::StatusCode;
use serde_json::Value;

use crate::app::{ScimApp, scim_target_config};
use crate::support::*;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

const RULES: &str = "contrib/prometheus/scimsync-alerts.yml";
const RULE_TESTS: &str = "contrib/prometheus/scimsync-alerts.test.yml";
const DASHBOARD: &str = "contrib/grafana/scimsync.json";

/// The alerts issue 17 asks for, by the name the rules give them.
const ALERTS: [&str; 9] = [
    "ScimsyncDown",
    "ScimsyncNotReady",
    "ScimsyncDeletionGuardTripped",
    "ScimsyncDeadLetters",
    "ScimsyncOutboxStale",
    "ScimsyncNoSuccessfulSync",
    "ScimsyncDrift",
    "ScimsyncApiErrors",
    "ScimsyncTokenRateLimited",
];

fn promtool() -> PathBuf {
    let p = PathBuf::from("/usr/bin/promtool");
    assert!(
        p.exists(),
        "promtool is needed for the alert-rule tests and /usr/bin/promtool is missing: \
         run scripts/promtool-env.sh (it installs Debian's prometheus package)"
    );
    p
}

fn run_promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new(promtool()).args(args).current_dir(dir).output().expect("run promtool");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// The rules file as (alert name, PromQL expression, the rule's whole text). The file is
/// ours and keeps one layout: `- alert: NAME`, then `expr: ...` on one line or `expr: |`
/// with the expression indented below.
fn alert_rules() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(repo(RULES)).unwrap();
    let mut rules = Vec::new();
    for block in text.split("- alert: ").skip(1) {
        let name = block.lines().next().unwrap().trim().to_string();
        let mut lines = block.lines().skip(1);
        let mut expr = String::new();
        while let Some(line) = lines.next() {
            let Some(rest) = line.trim_start().strip_prefix("expr:") else { continue };
            if rest.trim() == "|" {
                let indent = |l: &str| l.len() - l.trim_start().len();
                let first = lines.next().unwrap();
                let depth = indent(first);
                expr.push_str(first.trim());
                for l in lines.by_ref().take_while(|l| indent(l) >= depth && !l.trim().is_empty()) {
                    expr.push(' ');
                    expr.push_str(l.trim());
                }
            } else {
                expr = rest.trim().to_string();
            }
            break;
        }
        assert!(!expr.is_empty(), "no expr for {name}");
        rules.push((name, expr, block.to_string()));
    }
    rules
}

/// Every PromQL query of the dashboard (panels, panels inside rows, template variables), with
/// Grafana's variables replaced by what Prometheus would get.
fn dashboard_queries() -> Vec<(String, String)> {
    let d: Value = serde_json::from_str(&std::fs::read_to_string(repo(DASHBOARD)).unwrap()).expect("dashboard JSON");
    fn panels(v: &Value, out: &mut Vec<(String, String)>) {
        for p in v.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                let legend = t["legendFormat"].as_str().unwrap_or_default();
                out.push((t["expr"].as_str().expect("a target has an expr").to_string(), legend.to_string()));
            }
            panels(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&d["panels"], &mut out);
    for var in d["templating"]["list"].as_array().unwrap() {
        if let Some(q) = var["query"]["query"].as_str() {
            // label_values(METRIC{...}, LABEL) is Grafana's, not PromQL: check the selector.
            let inner = q.strip_prefix("label_values(").and_then(|r| r.strip_suffix(')')).expect(q);
            let (selector, label) = inner.rsplit_once(',').unwrap();
            out.push((selector.trim().to_string(), format!("{{{{{}}}}}", label.trim())));
        }
    }
    out.into_iter()
        .map(|(e, l)| {
            let e = e.replace("$__rate_interval", "5m").replace("$job", ".*").replace("$instance", ".*");
            (e, l)
        })
        .collect()
}

fn metric_names(expr: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\bscimsync_[a-z0-9_]+").unwrap();
    re.find_iter(expr).map(|m| m.as_str().to_string()).collect()
}

/// The label names an expression relies on: in selectors, `by (...)` / `without (...)`, and
/// the legend or annotation templates given with it. Prometheus adds job and instance;
/// histograms have le.
fn label_names(expr: &str, templates: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let matcher = regex::Regex::new(r#"([a-z_]+)\s*(?:=~|!~|!=|=)\s*""#).unwrap();
    let grouping = regex::Regex::new(r"\b(?:by|without)\s*\(([^)]*)\)").unwrap();
    let template = regex::Regex::new(r"\{\{\s*(?:\$labels\.)?([a-z_]+)\s*\}\}").unwrap();
    for c in matcher.captures_iter(expr) {
        out.insert(c[1].to_string());
    }
    for c in grouping.captures_iter(expr) {
        out.extend(c[1].split(',').map(|l| l.trim().to_string()).filter(|l| !l.is_empty()));
    }
    for c in template.captures_iter(templates) {
        out.insert(c[1].to_string());
    }
    for implicit in ["job", "instance", "le"] {
        out.remove(implicit);
    }
    out
}

#[test]
fn alert_rules_pass_promtool_and_each_has_a_test_and_a_runbook() {
    let dir = repo("contrib/prometheus");
    let checked = run_promtool(&["check", "rules", "scimsync-alerts.yml"], &dir);
    assert!(checked.contains(&format!("SUCCESS: {} rules found", ALERTS.len())), "{checked}");
    let tested = run_promtool(&["test", "rules", "scimsync-alerts.test.yml"], &dir);
    assert!(tested.contains("SUCCESS"), "{tested}");

    let rules = alert_rules();
    let names: Vec<&str> = rules.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ALERTS, "the alerts in {RULES}");
    let tests = std::fs::read_to_string(repo(RULE_TESTS)).unwrap();
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    for name in ALERTS {
        // A test evaluates the alert at least twice: once where it must not fire, once where
        // it must (exp_alerts with labels).
        let evals = tests.matches(&format!("alertname: {name}\n")).count();
        assert!(evals >= 2, "{name}: {evals} evaluation(s) in {RULE_TESTS}");
        assert!(
            tests.split("- name: ").any(|t| t.contains(&format!("alertname: {name}\n")) && t.contains("exp_labels")),
            "{name} has no case where it must fire"
        );
        assert!(readme.contains(&format!("**`{name}`**")), "README.md has no runbook paragraph for {name}");
    }
}

/// The dashboard is well-formed for Grafana (unique panel ids, positions, a query each), has
/// the panels issue 17 lists, and every query parses as PromQL: promtool checks them as
/// recording rules.
#[test]
fn dashboard_queries_are_valid_promql_and_cover_the_issue() {
    let d: Value = serde_json::from_str(&std::fs::read_to_string(repo(DASHBOARD)).unwrap()).unwrap();
    assert_eq!(d["uid"], "scimsync");
    let mut ids = BTreeSet::new();
    let mut titles = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        assert!(ids.insert(p["id"].as_u64().expect("panel id")), "duplicate panel id {}", p["id"]);
        for k in ["h", "w", "x", "y"] {
            assert!(p["gridPos"][k].is_u64(), "panel {} lacks gridPos.{k}", p["title"]);
        }
        if p["type"] != "row" {
            assert!(p["targets"].as_array().is_some_and(|t| !t.is_empty()), "panel {} has no query", p["title"]);
            titles.push(p["title"].as_str().unwrap().to_string());
        }
    }
    for want in [
        "Requests by route",
        "Latency p99 by route",
        "Deliveries by outcome",
        "Outbox depth",
        "Outbox oldest change age",
        "Drift by kind",
        "Deletion guard: held deprovisionings",
        "Sync runs",
    ] {
        assert!(titles.iter().any(|t| t == want), "no panel {want:?} in {titles:?}");
    }

    let queries = dashboard_queries();
    assert!(queries.len() >= titles.len(), "{queries:?}");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (expr, _)) in queries.iter().enumerate() {
        // A JSON string is a valid YAML double-quoted scalar.
        rules.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::to_string(expr).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dashboard-rules.yml"), &rules).unwrap();
    let out = run_promtool(&["check", "rules", "dashboard-rules.yml"], dir.path());
    assert!(out.contains(&format!("SUCCESS: {} rules found", queries.len())), "{out}\n{rules}");
}

/// Every metric the rules and the dashboard name is in `/metrics` with samples, and carries
/// every label they group by, match on or print, after real traffic: a user delivered to a
/// real SCIM app, a full sync run, a SIGHUP reload, a token over its rate limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_in_the_rules_and_dashboard_exists_after_real_traffic() {
    let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut want = |expr: &str, templates: &str, origin: &str| {
        let names = metric_names(expr);
        let labels = label_names(expr, templates);
        // A label is wanted from the metrics of its expression: at least one must carry it,
        // so it is recorded under the whole group and checked below.
        let key = names.iter().cloned().collect::<Vec<_>>().join(" ");
        if names.is_empty() {
            assert!(expr.starts_with("up{"), "{origin}: no scimsync metric in {expr:?}");
            return;
        }
        wanted.entry(key).or_default().extend(labels);
    };
    for (name, expr, block) in alert_rules() {
        want(&expr, &block, &name);
    }
    for (expr, legend) in dashboard_queries() {
        want(&expr, &legend, "dashboard");
    }
    let all: BTreeSet<String> = wanted.keys().flat_map(|k| k.split(' ').map(String::from)).collect();
    assert!(all.len() >= 14, "suspiciously few metrics found in the rules and dashboard: {all:?}");

    let app = ScimApp::start().await;
    let mut d = Daemon::start_with_env(
        &format!("{}[reconcile]\nschedule = \"\"\n", scim_target_config(&app.base)),
        &[("SCIMSYNC_SERVER__RATE_LIMIT__REQUESTS_PER_SECOND", "1"), ("SCIMSYNC_SERVER__RATE_LIMIT__BURST", "3")],
    );
    d.create_user("metrics@example.com").await;
    d.wait_outbox_empty().await;
    let r = d.http.post(format!("{}/sync", d.admin_base)).header("x-requested-by", "tests").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The test config logs at warn: the reload shows in its own counter.
    d.signal("HUP");
    let scrape =
        || async { d.http.get(format!("{}/metrics", d.admin_base)).send().await.unwrap().text().await.unwrap() };
    let mut reloaded = false;
    for _ in 0..600 {
        if scrape().await.contains("scimsync_config_reloads_total{outcome=\"success\"} 1") {
            reloaded = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(reloaded, "the SIGHUP reload was not counted within 30 s; log:\n{}", d.log());
    let mut limited = false;
    for _ in 0..50 {
        if d.get("/Users?count=0").await.status == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
    }
    assert!(limited, "50 quick requests at 1/s with a burst of 3 never met the limit");
    let text = scrape().await;

    // Sample lines by metric name: `name{labels} value` or `name value`.
    let mut samples: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        samples.entry(&line[..end]).or_default().push(line);
    }
    let missing: Vec<&String> = all.iter().filter(|m| !samples.contains_key(m.as_str())).collect();
    assert!(missing.is_empty(), "named in {RULES} or {DASHBOARD} but not in /metrics: {missing:?}\n{text}");
    for (group, labels) in &wanted {
        for label in labels {
            let carried = group.split(' ').any(|m| {
                samples[m].iter().any(|l| l.contains(&format!("{{{label}=\"")) || l.contains(&format!(",{label}=\"")))
            });
            assert!(carried, "label {label:?} is used with {group} but none of them carries it:\n{text}");
        }
    }
    assert!(d.stop().success());
}
