//! The REST/webhook target against a real HTTP receiver on loopback that verifies the
//! HMAC signature the way an app would.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use warp::Filter;
use warp::http::HeaderMap;

use crate::support::*;

const SECRET: &str = "webhook-shared-secret";

#[derive(Debug, Clone)]
struct Received {
    event: String,
    method: String,
    path: String,
    body: Value,
    signature_ok: bool,
}

/// A receiver that checks `X-Scimsync-Signature` independently (its own HMAC code path:
/// hmac + sha2 from the test, not the daemon's `sign`), and answers creates with an id.
async fn receiver() -> (String, Arc<Mutex<Vec<Received>>>, ServedApart) {
    use hmac::{Hmac, Mac};
    let got: Arc<Mutex<Vec<Received>>> = Arc::default();
    let g = got.clone();
    let route = warp::any()
        .and(warp::method())
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and(warp::body::bytes())
        .map(move |method: warp::http::Method, path: warp::path::FullPath, headers: HeaderMap, body: bytes::Bytes| {
            let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            let ts = h("x-scimsync-timestamp");
            let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
            mac.update(format!("{ts}.").as_bytes());
            mac.update(&body);
            let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
            let mut g = g.lock().unwrap();
            let n = g.len();
            g.push(Received {
                event: h("x-scimsync-event"),
                method: method.to_string(),
                path: path.as_str().to_string(),
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                signature_ok: h("x-scimsync-signature") == want,
            });
            warp::reply::json(&json!({"data": {"id": format!("app-{n}")}}))
        });
    let (port, server) = serve_apart(move |listener| async move { warp::serve(route).incoming(listener).run().await });
    (format!("http://127.0.0.1:{port}/api"), got, server)
}

#[tokio::test]
async fn webhook_events_are_mapped_signed_and_use_the_app_id() {
    let (base, got, _receiver) = receiver().await;
    let cfg = format!(
        r#"[target]
kind = "webhook"
[target.webhook]
base_url = "{base}"
secret = "{SECRET}"
id_field = "data.id"
[target.webhook.user_fields]
login = {{ from = "userName", transform = "lowercase" }}
email = "emails[type eq \"work\"].value"
disabled = {{ from = "active", transform = "not" }}
plan = {{ constant = "enterprise" }}
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
[target.webhook.events.members_add]
method = "POST"
path = "/teams/{{app_id}}/members"
[outbox]
poll_interval_seconds = 0.05
"#
    );
    let d = Daemon::start_with(&cfg);
    let u = d.create_user("Hook@Example.com").await;
    d.patch(&format!("/Users/{u}"), patch_body(json!([{"op": "replace", "path": "active", "value": false}]))).await;
    d.create_group("Team", &[&u]).await;
    // Delete the user only once the membership has reached the app: deleting it earlier
    // legitimately removes it from the group before the group is delivered.
    let wait_for = |event: &'static str| {
        let got = got.clone();
        async move {
            for _ in 0..1200 {
                if got.lock().unwrap().iter().any(|e| e.event == event) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("no {event} within 30 s: {:#?}", got.lock().unwrap());
        }
    };
    wait_for("members_add").await;
    d.delete(&format!("/Users/{u}")).await;
    wait_for("user_delete").await;
    let events = got.lock().unwrap().clone();
    assert!(events.iter().all(|e| e.signature_ok), "every request must carry a valid signature: {events:#?}");
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names.first(), Some(&"user_create"), "{names:?}");
    let create = &events[0];
    assert_eq!((create.method.as_str(), create.path.as_str()), ("POST", "/api/users"));
    assert_eq!(create.body["login"], "hook@example.com");
    assert_eq!(create.body["email"], "Hook@Example.com");
    assert_eq!(create.body["plan"], "enterprise");
    assert!(create.body.get("userName").is_none(), "only mapped fields are sent");
    // Later calls use the id the app returned at create (data.id = app-0).
    let delete = events.iter().find(|e| e.event == "user_delete").expect("user_delete sent");
    assert_eq!((delete.method.as_str(), delete.path.as_str()), ("DELETE", "/api/users/app-0"));
    let add = events.iter().find(|e| e.event == "members_add").expect("members_add sent");
    assert_eq!(add.body["members"], json!(["app-0"]));
    assert!(add.path.starts_with("/api/teams/app-") && add.path.ends_with("/members"), "{}", add.path);
    // The deactivation was either coalesced into the create or sent as an update with disabled=true.
    if let Some(upd) = events.iter().find(|e| e.event == "user_update") {
        assert_eq!(upd.body["disabled"], true);
        assert_eq!(upd.path, "/api/users/app-0");
    } else {
        assert_eq!(create.body["disabled"], true);
    }
}

#[tokio::test]
async fn webhook_config_errors_name_the_key() {
    let d = Daemon::start();
    std::fs::write(
        d.config_path(),
        format!(
            "[store]\ndata_dir = \"{}\"\n[target]\nkind = \"webhook\"\n[target.webhook]\nbase_url = \"http://127.0.0.1:1\"\nsecret = \"s\"\n\
             [target.webhook.user_fields]\nlogin = \"noSuchAttribute\"\n[target.webhook.events.user_create]\nmethod = \"POST\"\npath = \"/u\"\n",
            d.data_dir().display()
        ),
    )
    .unwrap();
    let out = d.cli_raw(&["check-config"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("target.webhook") && err.contains("login") && err.contains("noSuchAttribute"), "{err}");
}

/// A private CA and a certificate for 127.0.0.1 signed by it (PEM of the CA, server config).
fn private_ca() -> (String, std::sync::Arc<tokio_rustls::rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "scimsync test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf_params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let cfg = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    (ca.pem(), std::sync::Arc::new(cfg))
}

/// A TLS front for a plain-HTTP receiver: terminates TLS and copies bytes both ways.
async fn tls_front(plain: &str, cfg: std::sync::Arc<tokio_rustls::rustls::ServerConfig>) -> (String, ServedApart) {
    let upstream = plain.trim_start_matches("http://").split('/').next().unwrap().to_string();
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    let (port, server) = serve_apart(move |listener| async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    (format!("https://127.0.0.1:{port}/api"), server)
}

fn https_config(base: &str, ca_file: Option<&std::path::Path>) -> String {
    let ca = ca_file.map(|p| format!("ca_file = \"{}\"\n", p.display())).unwrap_or_default();
    format!(
        "[target]\nkind = \"webhook\"\n[target.webhook]\nbase_url = \"{base}\"\nsecret = \"{SECRET}\"\n{ca}\
         [target.webhook.events.user_create]\nmethod = \"POST\"\npath = \"/users\"\n\
         [outbox]\npoll_interval_seconds = 0.05\nretry_base_seconds = 0.05\nretry_max_seconds = 1\n"
    )
}

#[tokio::test]
async fn https_targets_verify_the_certificate_against_a_configured_ca() {
    let (plain, got, _receiver) = receiver().await;
    let (ca_pem, server_cfg) = private_ca();
    let (https, _front) = tls_front(&plain, server_cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();

    // Without the private CA the certificate is not trusted: nothing is delivered, and the
    // outbox says why.
    let untrusting = Daemon::start_with(&https_config(&https, None));
    untrusting.create_user("tls-untrusted@example.com").await;
    let mut listing = String::new();
    for _ in 0..200 {
        listing = untrusting.cli(&["outbox", "list"]);
        if listing.contains("retry") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(listing.contains("retry") && listing.to_lowercase().contains("certificate"), "{listing}");
    assert!(got.lock().unwrap().is_empty(), "nothing may reach an untrusted endpoint");

    // With it, delivery works over TLS.
    let trusting = Daemon::start_with(&https_config(&https, Some(&ca_file)));
    trusting.create_user("tls@example.com").await;
    for _ in 0..1200 {
        if got.lock().unwrap().iter().any(|e| e.body["userName"] == "tls@example.com") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let events = got.lock().unwrap().clone();
    assert!(events.iter().any(|e| e.body["userName"] == "tls@example.com" && e.signature_ok), "{events:#?}");
    assert!(!events.iter().any(|e| e.body["userName"] == "tls-untrusted@example.com"));
}

/// Under a provisioning policy the effective role and entitlements are attributes like any
/// other: a webhook app gets them through its field mapping.
#[tokio::test]
async fn webhook_gets_effective_access_as_mapped_fields() {
    let (base, got, _receiver) = receiver().await;
    let cfg = format!(
        r#"[target]
kind = "webhook"
[target.webhook]
base_url = "{base}"
secret = "{SECRET}"
id_field = "data.id"
[target.webhook.user_fields]
login = "userName"
role = "roles.value"
licences = "entitlements"
[target.webhook.events.user_create]
method = "POST"
path = "/users"
[target.webhook.events.user_update]
method = "PUT"
path = "/users/{{app_id}}"
[outbox]
poll_interval_seconds = 0.05
[policy]
role_order = ["member", "admin"]
default_role = "member"
[[policy.group_rules]]
contains = "admin"
role = "admin"
[[policy.group_rules]]
regex = '^(?P<plan>[^-]+)-'
entitlement = "{{plan}}"
"#
    );
    let d = Daemon::start_with(&cfg);
    let u = d.create_user("hooked@example.com").await;
    // Delivered before any group exists: the default role, no licence.
    d.wait_outbox_empty().await;
    let events = got.lock().unwrap().clone();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].event, "user_create");
    assert_eq!(events[0].body["role"], "member", "the default role before the group: {events:#?}");
    assert!(events[0].body.get("licences").is_none_or(|l| l.is_null() || l == &json!([])), "{events:#?}");
    // Joining the group changes the user's effective access: the app gets an update.
    d.create_group("Pro-Admins", &[&u]).await;
    d.wait_outbox_empty().await;
    let events = got.lock().unwrap().clone();
    let last = events.iter().rev().find(|e| e.event.starts_with("user_")).expect("a user event");
    assert_eq!(last.event, "user_update", "{events:#?}");
    assert_eq!(last.body["role"], "admin", "{events:#?}");
    assert_eq!(last.body["licences"], json!([{"value": "Pro"}]), "{events:#?}");
}
