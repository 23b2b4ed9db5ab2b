//! The command line as an operator meets it on day one (issue 18): every command that
//! prints stops quietly when its reader goes away (`| head`), and commands that read the
//! store never create one where there is none.

use std::process::{Command, Stdio};

use crate::app::{ScimApp, scim_target_config};
use crate::reconcile::sync;
use crate::support::*;

/// Run with stdout a pipe whose reader is already closed: the first write fails with EPIPE,
/// every time (a reader that closes after N bytes only does once the output is larger
/// than the pipe's buffer).
fn into_closed_pipe(mut cmd: Command) -> std::process::Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let child = cmd.stdout(writer).stderr(Stdio::piped()).spawn().expect("run scimsync");
    child.wait_with_output().expect("wait")
}

#[tokio::test]
async fn every_printing_command_stops_quietly_when_the_reader_closes_the_pipe() {
    let app = ScimApp::start().await;
    let d = Daemon::start_with(&format!("{}[reconcile]\nschedule = \"\"\n", scim_target_config(&app.base)));
    d.create_user("pipe@x.test").await;
    d.wait_outbox_empty().await;
    sync(&d).await;
    let commands: &[&[&str]] = &[
        &["drift"],
        &["drift", "--json"],
        &["token", "list"],
        &["outbox", "list"],
        &["outbox", "list", "--dead"],
        &["outbox", "show", "1"],
        &["sync", "runs"],
        &["audit"],
        &["audit", "--json"],
        &["access", "pipe@x.test"],
        &["access", "pipe@x.test", "--json"],
        &["check-config"],
        &["--help"],
        &["drift", "--help"],
    ];
    for args in commands {
        // Each prints something when its reader stays: the pipe test is not vacuous.
        let full = d.cli_raw(args);
        assert!(!full.stdout.is_empty(), "scimsync {args:?} printed nothing to test with");
        let out = into_closed_pipe(d.cli_command(args));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "scimsync {args:?} into a closed pipe: {:?}, stderr: {stderr}",
            out.status
        );
        assert!(!stderr.contains("panicked") && !stderr.to_lowercase().contains("broken pipe"), "{args:?}: {stderr}");
    }
    // A one-time secret is the exception: a token that cannot be printed is an error that
    // says so, not a quiet success.
    let out = into_closed_pipe(d.cli_command(&["token", "create", "--label", "lost"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("was created but could not be printed") && !stderr.contains("panicked"), "{stderr}");
    // And through a real shell pipe, as the issue ran it.
    let script = format!("{:?} --config {:?} drift --json | head -c 70 >/dev/null", bin(), d.config_path());
    let out = Command::new("sh").args(["-c", &format!("set -o pipefail 2>/dev/null; {script}")]).output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A reading command pointed at a directory without a store says where it looked and which
/// configuration sent it there, exits non-zero, and leaves no store behind.
#[test]
fn reading_commands_never_create_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nowhere");
    let cfg = dir.path().join("scimsync.toml");
    std::fs::write(&cfg, format!("[store]\ndata_dir = {:?}\n", data.display().to_string())).unwrap();
    let commands: &[&[&str]] = &[
        &["drift"],
        &["drift", "--json"],
        &["token", "list"],
        &["token", "revoke", "0123abcd"],
        &["outbox", "list"],
        &["outbox", "show", "1"],
        &["outbox", "retry", "--all-dead"],
        &["sync", "runs"],
        &["audit"],
        &["access", "someone"],
        &["resync", "user", "x"],
    ];
    for args in commands {
        let out = Command::new(bin()).arg("--config").arg(&cfg).args(*args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "scimsync {args:?}: {stderr}");
        assert!(stderr.contains(&format!("no store at {}", data.join("scimsync.db").display())), "{args:?}: {stderr}");
        assert!(stderr.contains(&format!("the config file {}", cfg.display())), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed {:?}", String::from_utf8_lossy(&out.stdout));
        assert!(!data.exists(), "scimsync {args:?} created {}", data.display());
    }
    // Without a config file: the built-in default, ./scimsync-data, named as such.
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["drift"])
        .current_dir(empty.path())
        .env_remove("SCIMSYNC_STORE__DATA_DIR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("built-in defaults") && stderr.contains("scimsync-data/scimsync.db"), "{stderr}");
    assert!(!empty.path().join("scimsync-data").exists(), "drift created ./scimsync-data");
    // Creating a token before the first start still prepares a store.
    let out = Command::new(bin()).arg("--config").arg(&cfg).args(["token", "create"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(data.join("scimsync.db").exists());
    let out = Command::new(bin()).arg("--config").arg(&cfg).args(["token", "list"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A misspelt table is an error for `check-config` and `serve` alike, with the nearest key,
/// and every other mistake in the file on its own line; nothing starts.
#[test]
fn check_config_and_serve_reject_unknown_keys_with_the_nearest_one() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("scimsync.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = \"1 MB\"\n[store]\ndata_dir = {:?}\n\
             [admin]\nlisten = \"\"\n[targt]\nkind = \"scim\"\n[reconcile]\nschedule = \"hourly\"\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    for cmd in ["check-config", "serve"] {
        let out = Command::new(bin()).arg("--config").arg(&cfg).arg(cmd).output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(2), "{cmd}: {stdout}{stderr}");
        assert!(!stdout.contains("configuration OK") && !stdout.contains("listening"), "{cmd}: {stdout}");
        for needle in [
            "targt: unknown key (did you mean `target`?)",
            "server.max_body_bytes: must be a whole number of bytes (0 or more), not the text \"1 MB\"",
            "reconcile.schedule: \"hourly\" is not a cron expression",
        ] {
            assert!(stderr.contains(needle), "{cmd}: {needle:?} missing in:\n{stderr}");
        }
        let schedule = stderr.lines().filter(|l| l.contains("reconcile.schedule")).count();
        assert_eq!(schedule, 1, "the cron error is one line:\n{stderr}");
        assert!(!dir.path().join("data").exists(), "{cmd} created the store");
    }
}

/// A PostgreSQL store that cannot be reached: every command that opens the store fails and
/// says so, without creating a SQLite store instead (with a provisioning policy or without);
/// `check-config` shows the settings with every password redacted.
#[test]
fn a_postgres_store_that_cannot_be_reached_fails_commands_clearly_and_check_config_redacts_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("scimsync.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"\"\n[store]\ndata_dir = {:?}\nbackend = \"postgres\"\n\
             [store.postgres]\nurl = \"postgres://scimsync:url-s3cret@127.0.0.1:1/scimsync\"\nschema = \"tenant_a\"\n\
             connect_timeout_seconds = 1\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    // A command gives up on a database it cannot reach (after three connect timeouts), says
    // which store, never shows the password, and never falls back to a SQLite store.
    for args in [&["token", "list"][..], &["outbox", "list"], &["audit"]] {
        let out = Command::new(bin()).arg("--config").arg(&cfg).args(args).output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stdout}{stderr}");
        assert!(stderr.contains("cannot open the PostgreSQL store (schema \"tenant_a\")"), "{args:?}: {stderr}");
        assert!(!stderr.contains("url-s3cret"), "{args:?}: {stderr}");
        assert!(!dir.path().join("data").exists(), "{args:?} created a SQLite store");
    }
    // `backup` is SQLite's: on PostgreSQL it points at pg_dump.
    let out = Command::new(bin()).arg("--config").arg(&cfg).args(["backup", "/tmp/x.db"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pg_dump --schema=tenant_a"));
    // A provisioning policy runs on PostgreSQL too (issue 14): with one, a command goes on
    // to open the store, as without.
    let with_policy = dir.path().join("policy.toml");
    let text = std::fs::read_to_string(&cfg).unwrap()
        + "[[policy.group_rules]]\nname = \"admins\"\nexact = \"Admins\"\nrole = \"admin\"\n";
    std::fs::write(&with_policy, text).unwrap();
    let out = Command::new(bin()).arg("--config").arg(&with_policy).args(["token", "list"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot open the PostgreSQL store (schema \"tenant_a\")"), "{stderr}");
    let out = Command::new(bin())
        .arg("--config")
        .arg(&cfg)
        .arg("check-config")
        .env("SCIMSYNC_STORE__POSTGRES__URL", "postgres://scimsync@127.0.0.1:1/scimsync")
        .env("SCIMSYNC_STORE__POSTGRES__PASSWORD", "env-s3cret")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("\"backend\": \"postgres\""), "{stdout}");
    assert!(stdout.contains("\"schema\": \"tenant_a\""), "{stdout}");
    assert!(stdout.contains("\"password\": \"<redacted>\""), "{stdout}");
    assert!(!stdout.contains("env-s3cret") && !stdout.contains("url-s3cret"), "{stdout}");
    // And a password inside the URL is shown redacted, not dropped.
    let out = Command::new(bin()).arg("--config").arg(&cfg).arg("check-config").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("postgres://scimsync:<redacted>@127.0.0.1:1/scimsync"), "{stdout}");
    assert!(!stdout.contains("url-s3cret"), "{stdout}");
}

/// A sync run still going has no report yet: `sync runs` says it is running instead of
/// printing `null item(s)` and a `null` duration.
#[tokio::test]
async fn a_running_sync_is_listed_as_running() {
    let app = ScimApp::start().await;
    let proxy = crate::app::Proxy::start(&app.base).await;
    let d = Daemon::start_with(&format!("{}[reconcile]\nschedule = \"\"\n", scim_target_config(&proxy.base)));
    // The app answers slowly, so the run's listing takes a while.
    proxy.set(crate::app::Mode::Slow(std::time::Duration::from_secs(3)));
    let (http, url) = (d.http.clone(), format!("{}/sync", d.admin_base));
    let run = tokio::spawn(async move { http.post(url).header("x-requested-by", "tests").send().await });
    let mut listed = String::new();
    for _ in 0..200 {
        listed = d.cli(&["sync", "runs"]);
        if listed.contains("running") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let line = listed.lines().find(|l| l.contains("running")).unwrap_or_else(|| panic!("no running run:\n{listed}"));
    assert!(!line.contains("null"), "{line}");
    assert!(line.trim_end().ends_with("running"), "{line}");
    proxy.set(crate::app::Mode::Forward);
    let _ = run.await;
}
