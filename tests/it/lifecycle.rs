//! The daemon's lifecycle under an operator's hands: SIGTERM under load loses no
//! acknowledged change and finishes what is in flight; SIGHUP applies new settings and
//! rotates tokens live; TLS with a generated certificate, swapped on SIGHUP; the per-token
//! rate limit.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;

use crate::app::{Mode, Proxy, ScimApp, scim_target_config};
use crate::support::*;

/// Bounded poll of `cond` (every 50 ms, up to 30 s), failing with `what`.
async fn until<F: FnMut() -> bool>(what: &str, mut cond: F) {
    for _ in 0..600 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn host_port(base: &str) -> String {
    base.split("://").nth(1).and_then(|r| r.split('/').next()).expect("host:port in base URL").to_string()
}

/// Read one HTTP/1.1 response off a raw socket (headers + Content-Length body).
fn read_response(s: &mut std::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return text;
            }
        }
        let n = s.read(&mut chunk).expect("read response");
        assert!(n > 0, "connection closed before a full response; got {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// SIGTERM in the middle of concurrent creates, with a delivery to the (slow) app at hand
/// and a request half-sent: the half-sent request is still answered 201, the delivery at
/// hand is finished and recorded (never sent twice), the daemon exits 0, and after a
/// restart every acknowledged user is in the store and reaches the app.
// Multi-threaded: the test blocks on raw sockets and the CLI while the proxy (in this
// runtime) must keep serving the daemon's deliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_nothing_and_finishes_what_is_in_flight() {
    let app = ScimApp::start().await;
    let proxy = Proxy::start(&app.base).await;
    proxy.set(Mode::Slow(Duration::from_millis(800)));
    let mut d = Daemon::start_with_env(
        &scim_target_config(&proxy.base),
        &[("SCIMSYNC_SERVER__SHUTDOWN_GRACE_SECONDS", "20"), ("SCIMSYNC_LOG__LEVEL", "info")],
    );

    // Concurrent IdP writers, each until the daemon stops answering.
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..4 {
        let (http, base, token, acked) = (d.http.clone(), d.base.clone(), d.token.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("term-{w}-{i}@example.com");
                let r = http
                    .post(format!("{base}/Users"))
                    .bearer_auth(&token)
                    .header("content-type", "application/scim+json")
                    .body(user_body(&name).to_string())
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == StatusCode::CREATED => {
                        let v: serde_json::Value = r.json().await.expect("a 201 carries the user");
                        acked.lock().unwrap().push((v["id"].as_str().unwrap().to_string(), name));
                    }
                    Ok(r) => {
                        let status = r.status();
                        assert!(
                            status == StatusCode::SERVICE_UNAVAILABLE,
                            "during shutdown only 503 is acceptable, got {status}: {}",
                            r.text().await.unwrap_or_default()
                        );
                        break;
                    }
                    Err(_) => break, // the listener is closed: the IdP would retry later
                }
            }
        }));
    }
    until("40 acknowledged creates", || acked.lock().unwrap().len() >= 40).await;
    let mut outbox = String::new();
    until("a delivery in flight to the slow app", || {
        outbox = d.cli(&["outbox", "list"]);
        outbox.contains("in_flight")
    })
    .await;

    // A request whose body is half sent when SIGTERM arrives. `Expect: 100-continue` makes
    // the daemon say when its handler has started reading the body, so the request is
    // provably in progress (not merely bytes in a socket buffer) before the signal.
    let addr = host_port(&d.base);
    let mut raw = std::net::TcpStream::connect(&addr).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = user_body("half-sent@example.com").to_string();
    let (first, rest) = body.split_at(body.len() / 2);
    write!(
        raw,
        "POST /scim/v2/Users HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/scim+json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        d.token,
        body.len()
    )
    .unwrap();
    let cont = read_response(&mut raw);
    assert!(cont.starts_with("HTTP/1.1 100"), "expected 100 Continue, got {cont}");
    raw.write_all(first.as_bytes()).unwrap();
    raw.flush().unwrap();

    d.signal("TERM");
    // The listener closes at once: wait for that before sending the rest, so the request
    // really is finished during the shutdown.
    until("the SCIM listener to close after SIGTERM", || std::net::TcpStream::connect(&addr).is_err()).await;
    raw.write_all(rest.as_bytes()).unwrap();
    let resp = read_response(&mut raw);
    assert!(resp.starts_with("HTTP/1.1 201"), "the in-flight request was not finished: {resp}");
    let half_sent_id =
        resp.split("\"id\":\"").nth(1).and_then(|r| r.split('"').next()).expect("the 201 carries the id").to_string();

    let status = d.wait_exit();
    assert!(status.success(), "SIGTERM must exit 0, got {status:?}; log:\n{}", d.log());
    for w in writers {
        w.await.expect("writer");
    }
    let mut acked = acked.lock().unwrap().clone();
    acked.push((half_sent_id, "half-sent@example.com".into()));

    // The deliveries at hand were finished and recorded, not abandoned mid-flight.
    let after = d.cli(&["outbox", "list"]);
    assert!(!after.contains("in_flight"), "a delivery was left in flight by a clean stop:\n{after}");
    assert!(d.log().contains("finishing the deliveries at hand"), "{}", d.log());

    proxy.set(Mode::Forward);
    d.spawn();
    for (id, name) in &acked {
        let r = d.get(&format!("/Users/{id}")).await;
        assert_eq!(r.status, StatusCode::OK, "acknowledged user {name} ({id}) lost over SIGTERM");
    }
    // The writers ran until the signal: how many users that is depends on the machine.
    d.wait_outbox_empty_within(300).await;
    let in_app: HashSet<String> =
        app.all("Users").await.iter().filter_map(|u| u["userName"].as_str().map(str::to_string)).collect();
    for (_, name) in &acked {
        assert!(in_app.contains(name), "acknowledged user {name} never reached the app");
    }
    // Each change reached the app once: a delivery finished at shutdown is not sent again.
    let mut posts: HashMap<String, usize> = HashMap::new();
    for s in proxy.seen().iter().filter(|s| s.method == "POST" && s.status < 300) {
        *posts.entry(s.idempotency_key.clone().unwrap_or_default()).or_default() += 1;
    }
    let twice: Vec<_> = posts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "changes created twice in the app: {twice:?}");
}

/// SIGHUP re-reads the file: the log level and the rate limit change at once; a setting that
/// needs a restart is named in a warning; a broken file is refused and the old settings stay.
#[tokio::test]
async fn sighup_applies_live_settings_and_refuses_a_broken_file() {
    let mut d = Daemon::start_with("[server.rate_limit]\nrequests_per_second = 0\n");
    for _ in 0..20 {
        assert_eq!(d.get("/Users?count=0").await.status, StatusCode::OK, "the limit is off");
    }
    // The start-up config says level = "warn": nothing at info so far.
    assert!(!d.log().contains("configuration reloaded"));

    d.rewrite_config(
        "[server.rate_limit]\nrequests_per_second = 1\nburst = 2\n[scim]\nmax_page_size = 500\ndefault_page_size = 50\n",
    );
    let with_info = |s: &str| s.replace("level = \"warn\"", "level = \"info\"");
    std::fs::write(d.config_path(), with_info(&std::fs::read_to_string(d.config_path()).unwrap())).unwrap();
    d.signal("HUP");
    d.wait_log("configuration reloaded", 1).await;
    let log = d.log();
    let reloaded = log.lines().find(|l| l.contains("configuration reloaded")).unwrap();
    for key in ["log.level", "server.rate_limit.requests_per_second", "server.rate_limit.burst"] {
        assert!(reloaded.contains(key), "{key} not reported as applied: {reloaded}");
    }
    for key in ["scim.max_page_size", "scim.default_page_size"] {
        assert!(
            log.lines().any(|l| l.contains("needs a restart") && l.contains(key)),
            "{key} not warned as needing a restart:\n{log}"
        );
    }
    // The new limit is in force: a quick run of requests meets 429.
    let mut limited = None;
    for _ in 0..50 {
        let r = d.get("/Users?count=0").await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("no 429 after the rate limit was set by SIGHUP");
    r.assert_error(429, None);
    // The process is the same one: nothing restarted.
    assert!(d.child.as_mut().unwrap().try_wait().unwrap().is_none());

    // A broken file is refused whole; the limit from before stays.
    let good = std::fs::read_to_string(d.config_path()).unwrap();
    std::fs::write(d.config_path(), good.replace("burst = 2", "burst = 0")).unwrap();
    d.signal("HUP");
    d.wait_log("configuration reload refused", 1).await;
    let log = d.log();
    let refused = log.lines().find(|l| l.contains("configuration reload refused")).unwrap();
    assert!(refused.contains("server.rate_limit.burst"), "the refusal names the key: {refused}");
    let mut saw_429 = false;
    for _ in 0..50 {
        if d.get("/Users?count=0").await.status == StatusCode::TOO_MANY_REQUESTS {
            saw_429 = true;
            break;
        }
    }
    assert!(saw_429, "the previous rate limit must stay after a refused reload");
    let metrics = d.http.get(format!("{}/metrics", d.admin_base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("scimsync_config_reloads_total{outcome=\"success\"} 1"), "{metrics}");
    assert!(metrics.contains("scimsync_config_reloads_total{outcome=\"error\"} 1"), "{metrics}");
}

/// Token rotation without a restart: create a new token, the IdP switches to it, revoke the
/// old one; the old gets 401 at once, the new keeps working; SIGHUP changes nothing of it.
#[tokio::test]
async fn sighup_and_token_rotation_need_no_restart() {
    let mut d = Daemon::start();
    let old = d.token.clone();
    let pid = d.child.as_ref().unwrap().id();
    assert_eq!(d.get("/Users?count=0").await.status, StatusCode::OK);

    let new = d.cli(&["token", "create", "--label", "rotated"]).trim().to_string();
    assert_ne!(new, old);
    d.token = new.clone();
    assert_eq!(d.get("/Users?count=0").await.status, StatusCode::OK, "the new token works at once");
    d.token = old.clone();
    assert_eq!(d.get("/Users?count=0").await.status, StatusCode::OK, "the old one still works until revoked");

    let old_id = &old["scimsync_".len().."scimsync_".len() + 8];
    d.cli(&["token", "revoke", old_id]);
    d.signal("HUP");
    let reloaded = "scimsync_config_reloads_total{outcome=\"success\"} 1";
    let mut metrics = String::new();
    for _ in 0..600 {
        metrics = d.http.get(format!("{}/metrics", d.admin_base)).send().await.unwrap().text().await.unwrap();
        if metrics.contains(reloaded) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(metrics.contains(reloaded), "the SIGHUP was not handled:\n{metrics}");
    let r = d.get("/Users?count=0").await;
    r.assert_error(401, None);
    d.token = new;
    assert_eq!(d.get("/Users?count=0").await.status, StatusCode::OK);
    let c = d.child.as_mut().unwrap();
    assert!(c.try_wait().unwrap().is_none(), "SIGHUP must not end the daemon");
    assert_eq!(c.id(), pid);
}

/// A client that trusts exactly this PEM certificate (fresh connection pool each time).
fn trusting(cert_pem: &str) -> reqwest::Client {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("pem")])
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

fn self_signed() -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("generate a certificate");
    (c.cert.pem(), c.key_pair.serialize_pem())
}

/// TLS with a generated certificate: the SCIM API answers over https to a client that trusts
/// it, not over plain http; after the files are replaced and SIGHUP sent, new connections
/// get the new certificate.
#[tokio::test]
async fn tls_serves_a_generated_certificate_and_reloads_it_on_sighup() {
    let certs = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let (cert1, key1) = self_signed();
    std::fs::write(&cert_path, &cert1).unwrap();
    std::fs::write(&key_path, &key1).unwrap();
    let mut d = Daemon::start_with(&format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert_path.display(),
        key_path.display()
    ));
    assert!(d.base.starts_with("https://127.0.0.1:"), "{}", d.base);
    d.http = trusting(&cert1);
    let u = d.create_user("tls@example.com").await;
    let r = d.get(&format!("/Users/{u}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body["meta"]["location"].as_str().unwrap().starts_with("https://"), "{}", r.body);
    // Plain HTTP to the TLS port gets no SCIM answer.
    let plain = client().get(d.url("/Users").replace("https://", "http://")).bearer_auth(&d.token).send().await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true), "plain HTTP must not be served");
    // A client that does not trust the certificate is refused at the handshake.
    let (other, _) = self_signed();
    assert!(trusting(&other).get(d.url("/Users")).bearer_auth(&d.token).send().await.is_err());

    // Renewal: replace the files, SIGHUP; new connections get the new certificate.
    let (cert2, key2) = self_signed();
    std::fs::write(&cert_path, &cert2).unwrap();
    std::fs::write(&key_path, &key2).unwrap();
    d.signal("HUP");
    let (url, token) = (d.url("/Users?count=0"), d.token.clone());
    let mut served_new = false;
    for _ in 0..600 {
        if trusting(&cert2).get(&url).bearer_auth(&token).send().await.is_ok_and(|r| r.status() == StatusCode::OK) {
            served_new = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served_new, "the new certificate was not served after SIGHUP; log:\n{}", d.log());
    assert!(trusting(&cert1).get(&url).bearer_auth(&token).send().await.is_err(), "the old certificate is gone");

    // A broken key file is refused; the current certificate stays.
    std::fs::write(&key_path, "not a key").unwrap();
    d.signal("HUP");
    d.wait_log("TLS certificate not reloaded", 1).await;
    let r = trusting(&cert2).get(&url).bearer_auth(&token).send().await.expect("still served");
    assert_eq!(r.status(), StatusCode::OK);
    // check-config explains the same problem before a restart would meet it.
    let out = d.cli_raw(&["check-config"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("server.tls.key_file"), "{text}");
    assert!(d.stop().success());
}

/// A token over its rate gets 429 + Retry-After and a SCIM error body; another token is not
/// affected; the rejection is counted per token.
#[tokio::test]
async fn rate_limit_is_per_token_with_retry_after() {
    let mut d = Daemon::start_with_env(
        "",
        &[("SCIMSYNC_SERVER__RATE_LIMIT__REQUESTS_PER_SECOND", "1"), ("SCIMSYNC_SERVER__RATE_LIMIT__BURST", "2")],
    );
    let mut limited = None;
    for _ in 0..50 {
        let r = d.get("/Users?count=0").await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let r = limited.expect("50 quick requests at 1/s with a burst of 2 never met the limit");
    r.assert_error(429, None);
    let retry_after: u64 = r.header("retry-after").expect("Retry-After").parse().expect("whole seconds");
    assert_eq!(retry_after, 1, "at 1 request/s the wait is at most a second, rounded up");
    assert!(r.body["detail"].as_str().unwrap().contains("retry after"), "{}", r.body);

    let limited_id = d.token["scimsync_".len().."scimsync_".len() + 8].to_string();
    d.token = d.cli(&["token", "create", "--label", "other-idp"]).trim().to_string();
    assert_eq!(d.get("/Users?count=0").await.status, StatusCode::OK, "another token has its own bucket");

    let metrics = d.http.get(format!("{}/metrics", d.admin_base)).send().await.unwrap().text().await.unwrap();
    let series = format!("scimsync_rate_limited_requests_total{{token=\"{limited_id}\"}} ");
    let n: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap_or_else(|| panic!("{series} missing:\n{metrics}"))
        .trim()
        .parse()
        .unwrap();
    assert!(n >= 1.0, "{metrics}");
}

/// The shipped unit files, `scimsync.service` and the template `scimsync@.service` (as an
/// instance, `scimsync@payroll.service`), are valid for systemd and hardened:
/// `systemd-analyze verify` accepts them and `systemd-analyze security --offline` rates their
/// exposure low. (`systemd-run` needs a running systemd, which test containers lack; the
/// install steps are in the README. `--man=no`: the man page the units name is generated and
/// installed by the package, whose install test checks it.)
#[test]
fn systemd_units_verify_and_are_hardened() {
    let Ok(out) = std::process::Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed: unit files not checked");
        return;
    };
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    for (file, unit_name) in
        [("scimsync.service", "scimsync.service"), ("scimsync@.service", "scimsync@payroll.service")]
    {
        let unit = std::fs::read_to_string(format!("{}/systemd/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        for needle in [
            "Type=notify\n",
            "WatchdogSec=",
            "ExecReload=/bin/kill -HUP $MAINPID",
            "DynamicUser=yes",
            "ExecStart=/usr/bin/scimsync serve --config /etc/scimsync/",
        ] {
            assert!(unit.contains(needle), "{file} lacks {needle:?}");
        }
        if file.contains('@') {
            for needle in [
                "--config /etc/scimsync/%i.toml\n",
                "SCIMSYNC_STORE__DATA_DIR=/var/lib/scimsync/%i\n",
                "StateDirectory=scimsync/%i\n",
            ] {
                assert!(unit.contains(needle), "{file} lacks {needle:?}");
            }
        }
        // verify checks that ExecStart exists: point it at the binary under test.
        let path = dir.path().join(unit_name);
        std::fs::write(&path, unit.replace("/usr/bin/scimsync", bin())).unwrap();
        let out =
            std::process::Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify {unit_name}: {stderr}");
        let out = std::process::Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let level: f64 = text
            .lines()
            .find_map(|l| l.split(&format!("Overall exposure level for {unit_name}:")).nth(1))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level in: {text}{}", String::from_utf8_lossy(&out.stderr)));
        assert!(
            level <= 2.0,
            "{unit_name}: exposure {level} (0 = locked down, 10 = unprotected); hardening lost?\n{text}"
        );
    }
}

/// The outbox's retry settings change on SIGHUP: a change failing against a broken app is
/// retried on and on under `max_attempts = 1000`; once a reload lowers it to 2, its next
/// failure dead-letters it, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_changes_outbox_retry_settings() {
    let app = ScimApp::start().await;
    let proxy = Proxy::start(&app.base).await;
    proxy.set(Mode::Fail { status: 500, retry_after: None });
    // scim_target_config ends inside [outbox]: the extra key lands there.
    let extra = |attempts: u32| format!("{}max_attempts = {attempts}\n", scim_target_config(&proxy.base));
    let mut d = Daemon::start_with(&extra(1000));
    d.create_user("retry-live@example.com").await;
    until("three failed delivery attempts", || proxy.seen().len() >= 3).await;
    let dead =
        |d: &Daemon| d.cli(&["outbox", "list", "--dead"]).lines().any(|l| l.split_whitespace().nth(1) == Some("dead"));
    assert!(!dead(&d), "dead-lettered before the reload");

    d.rewrite_config(&extra(2));
    d.signal("HUP");
    let mut is_dead = false;
    for _ in 0..600 {
        if dead(&d) {
            is_dead = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(is_dead, "outbox.max_attempts = 2 was not applied by SIGHUP; log:\n{}", d.log());
    assert!(!d.log().contains("needs a restart"), "outbox.max_attempts is live:\n{}", d.log());
}

/// The shutdown budget is a deadline: with a request whose body never completes and a
/// delivery stuck on a hanging app, the daemon still exits 0 once
/// `server.shutdown_grace_seconds` is over. The stuck request is closed unanswered (nothing
/// was acknowledged); the abandoned delivery is recovered at the next start and delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_deadline_cuts_off_what_hangs_and_loses_nothing() {
    let app = ScimApp::start().await;
    let proxy = Proxy::start(&app.base).await;
    proxy.set(Mode::Slow(Duration::from_secs(600)));
    let mut d = Daemon::start_with_env(
        &scim_target_config(&proxy.base).replace("request_timeout_seconds = 5", "request_timeout_seconds = 600"),
        &[("SCIMSYNC_SERVER__SHUTDOWN_GRACE_SECONDS", "1")],
    );
    let u = d.create_user("stuck@example.com").await;
    until("the delivery to hang in flight", || d.cli(&["outbox", "list"]).contains("in_flight")).await;

    let addr = host_port(&d.base);
    let mut raw = std::net::TcpStream::connect(&addr).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        raw,
        "POST /scim/v2/Users HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/scim+json\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n",
        d.token
    )
    .unwrap();
    assert!(read_response(&mut raw).starts_with("HTTP/1.1 100"));
    raw.write_all(b"{\"schemas\":").unwrap();

    let status = d.stop();
    assert!(status.success(), "exit {status:?}; log:\n{}", d.log());
    let log = d.log();
    assert!(log.contains("requests still running at the shutdown deadline"), "{log}");
    assert!(log.contains("deliveries still running at the shutdown deadline"), "{log}");
    let mut rest = Vec::new();
    let _ = raw.read_to_end(&mut rest);
    assert!(!String::from_utf8_lossy(&rest).contains("HTTP/1.1 2"), "the cut-off request must not be acknowledged");

    proxy.set(Mode::Forward);
    d.spawn();
    d.wait_outbox_empty().await;
    assert!(app.user_by_name("stuck@example.com").await.is_some(), "the abandoned delivery was not redone");
    assert_eq!(d.get(&format!("/Users/{u}")).await.status, StatusCode::OK);
    let r = d.get("/Users?count=0").await;
    assert_eq!(r.body["totalResults"], 1, "nothing from the cut-off request was stored");
}
