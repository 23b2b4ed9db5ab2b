//! Bearer tokens: required everywhere under /scim/v2, created and revoked live by the CLI.

use reqwest::StatusCode;

use crate::support::*;

#[tokio::test]
async fn missing_or_wrong_token_is_401_with_challenge() {
    let d = Daemon::start();
    for path in ["/Users", "/ServiceProviderConfig", "/Schemas", "/Groups/x"] {
        let r = send(d.http.get(d.url(path))).await;
        r.assert_error(401, None);
        assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"), "{path}");
    }
    let wrong = format!("{}0", &d.token[..d.token.len() - 1]);
    let wrong = if wrong == d.token { format!("{}1", &d.token[..d.token.len() - 1]) } else { wrong };
    send(d.http.get(d.url("/Users")).bearer_auth(&wrong)).await.assert_error(401, None);
    send(d.http.get(d.url("/Users")).bearer_auth("garbage")).await.assert_error(401, None);
    send(d.http.get(d.url("/Users")).basic_auth("user", Some("pw"))).await.assert_error(401, None);
}

#[tokio::test]
async fn tokens_rotate_without_restart() {
    let d = Daemon::start();
    let second = d.cli(&["token", "create", "--label", "rotation"]).trim().to_string();
    assert_ne!(second, d.token);
    let r = send(d.http.get(d.url("/Users")).bearer_auth(&second)).await;
    assert_eq!(r.status, StatusCode::OK, "a token created while the daemon runs works at once");
    // Both work during the overlap.
    assert_eq!(send(d.http.get(d.url("/Users")).bearer_auth(&d.token)).await.status, StatusCode::OK);
    let list = d.cli(&["token", "list"]);
    assert!(list.contains("rotation") && list.contains("tests"), "{list}");
    assert!(!list.contains(&second), "token list must never show secrets");
    let old_id = d.token.split('_').nth(1).unwrap().to_string();
    d.cli(&["token", "revoke", &old_id]);
    send(d.http.get(d.url("/Users")).bearer_auth(&d.token)).await.assert_error(401, None);
    assert_eq!(send(d.http.get(d.url("/Users")).bearer_auth(&second)).await.status, StatusCode::OK);
    let out = d.cli_raw(&["token", "revoke", "deadbeef"]);
    assert!(!out.status.success(), "revoking an unknown id must fail");
}
