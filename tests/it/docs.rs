//! The docs agree with the code (issue 18, item 7): the README's grep for the first-start
//! token finds it in what the daemon prints, every `scimsync ...` command and flag the
//! README and config.example.toml name exists, no file points outside the repository,
//! the architecture document covers the modules there are, and logged latencies are
//! rounded.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The README tells an operator to find the first-start token with
/// `journalctl -u scimsync | grep -A3 '...'`: run that grep, as written, on what a first
/// start prints (journald records the daemon's stdout line by line).
#[test]
fn the_readme_grep_finds_the_first_start_token() {
    let readme = read("README.md");
    let line = readme.lines().find(|l| l.contains("journalctl") && l.contains("grep")).expect("the journalctl line");
    let grep = line.split('|').nth(1).expect("a pipe into grep").split('#').next().unwrap().trim();
    let args: Vec<String> = shell_words(grep);
    assert_eq!(args[0], "grep", "{line}");

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("scimsync.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"\"\n[store]\ndata_dir = {:?}\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let mut child = Command::new(bin())
        .arg("--config")
        .arg(&cfg)
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut printed = String::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            printed.push_str(&line);
            printed.push('\n');
            if line.starts_with("scimsync listening on") {
                let _ = tx.send(printed.clone());
            }
        }
    });
    let printed = rx.recv_timeout(Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();
    let printed = printed.expect("the daemon did not print its listening line within 30 s");

    let mut grep =
        Command::new(&args[0]).args(&args[1..]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(grep.stdin.as_mut().unwrap(), printed.as_bytes()).unwrap();
    let out = grep.wait_with_output().unwrap();
    let found = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "`{}` finds nothing in what the daemon printed:\n{printed}", args.join(" "));
    assert!(
        found.lines().any(|l| l.trim().starts_with("scimsync_")),
        "`{}` does not show the token:\n{found}",
        args.join(" ")
    );
}

/// `grep -A3 'so one was created'` -> ["grep", "-A3", "so one was created"].
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote = None;
    for c in s.chars() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            (_, c) => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Every `scimsync SUBCOMMAND [SUBCOMMAND] [--flag ...]` the README and the example config
/// show is one the binary has, with the flags it shows.
#[test]
fn every_command_and_flag_the_docs_show_exists() {
    let top = Command::new(bin()).arg("--help").output().unwrap();
    let top = String::from_utf8_lossy(&top.stdout).to_string();
    let subcommands: Vec<&str> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(subcommands.contains(&"drift") && subcommands.contains(&"access"), "{top}");
    let re =
        regex::Regex::new(r"\bscimsync((?: --?[a-z][a-z-]*(?: \S+)?)*) ([a-z][a-z-]+)((?: [^ `#|;)\n]+)*)").unwrap();
    let mut checked = 0;
    for file in ["README.md", "config.example.toml"] {
        let text = read(file);
        for c in re.captures_iter(&text) {
            let sub = &c[2];
            if !subcommands.contains(&sub) {
                continue;
            }
            let rest: Vec<&str> = c[3].split_whitespace().collect();
            // A nested subcommand (`token create`, `outbox list`) when the help names one.
            let help = |args: &[&str]| -> Option<String> {
                let out = Command::new(bin()).args(args).arg("--help").output().unwrap();
                out.status.success().then(|| String::from_utf8_lossy(&out.stdout).to_string())
            };
            let sub_help = help(&[sub]).unwrap_or_else(|| panic!("{file}: `scimsync {sub}` has no help"));
            let (cmd_help, shown) = match rest.first() {
                Some(second) if sub_help.contains(&format!("\n  {second} ")) => (
                    help(&[sub, second]).unwrap_or_else(|| panic!("{file}: scimsync {sub} {second}")),
                    format!("{sub} {second}"),
                ),
                _ => (sub_help, sub.to_string()),
            };
            for flag in rest.iter().chain(c[1].split_whitespace().collect::<Vec<_>>().iter()) {
                let Some(name) = flag.strip_prefix("--") else { continue };
                let name = name.split('=').next().unwrap();
                let global = top.contains(&format!("--{name}"));
                assert!(
                    global || cmd_help.contains(&format!("--{name}")),
                    "{file}: `scimsync {shown}` has no --{name} (in {:?})",
                    c.get(0).unwrap().as_str()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} commands found: the pattern no longer matches the docs");
}

/// Files in the repository never point outside it (a clone has no `../shared`).
#[test]
fn no_file_points_outside_the_repository() {
    let out = Command::new("git").args(["ls-files"]).current_dir(repo()).output();
    let files: Vec<PathBuf> = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).lines().map(|l| repo().join(l)).collect(),
        _ => ["README.md", "config.example.toml", "docs/ARCHITECTURE.md", "scripts/check-layers.sh"]
            .iter()
            .map(|f| repo().join(f))
            .collect(),
    };
    assert!(files.len() > 20, "{} files", files.len());
    let this = repo().join("tests/it/docs.rs");
    for f in files.iter().filter(|f| **f != this) {
        let Ok(text) = std::fs::read_to_string(f) else { continue };
        for needle in ["../shared", "shared/DESIGN.md", "shared/STYLE.md"] {
            assert!(!text.contains(needle), "{} points outside the repository: {needle}", f.display());
        }
    }
}

/// docs/ARCHITECTURE.md is linked from the README and names every module under src/.
#[test]
fn the_architecture_doc_is_linked_and_covers_every_module() {
    let readme = read("README.md");
    assert!(readme.contains("](docs/ARCHITECTURE.md)"), "the README links docs/ARCHITECTURE.md");
    let doc = read("docs/ARCHITECTURE.md");
    for section in ["## Layers", "## Who may use whom", "## The life of a change"] {
        assert!(doc.contains(section), "{section} missing");
    }
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(repo().join("src")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().trim_end_matches(".rs").to_string();
        if ["main", "lib"].contains(&name.as_str()) {
            continue;
        }
        if !doc.contains(&format!("`{name}`")) {
            missing.push(name);
        }
    }
    assert!(missing.is_empty(), "docs/ARCHITECTURE.md does not name these modules: {missing:?}");
}

/// Request log lines carry `latency_ms` rounded to the microsecond, not float noise.
#[tokio::test]
async fn logged_latencies_are_rounded() {
    let d = Daemon::start_with_env("", &[("SCIMSYNC_LOG__LEVEL", "info")]);
    for i in 0..5 {
        d.create_user(&format!("lat{i}@example.com")).await;
    }
    d.wait_log("latency_ms=", 5).await;
    let re = regex::Regex::new(r"latency_ms=(\S+)").unwrap();
    let values: Vec<String> = re.captures_iter(&d.log()).map(|c| c[1].to_string()).collect();
    assert!(values.len() >= 5, "{values:?}");
    for v in &values {
        let decimals = v.split('.').nth(1).map_or(0, str::len);
        assert!(v.parse::<f64>().is_ok() && decimals <= 3, "latency_ms={v} is not rounded (all: {values:?})");
    }
}
