//! The command line: `serve`, `check-config`, `token create|list|revoke`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Loaded};
use crate::{app, shutdown, telemetry};

/// scimsync keeps an application's accounts in step with your identity provider: IdPs
/// (Okta, Entra ID, OneLogin, ...) push SCIM 2.0 changes to it, it stores them durably in
/// SQLite and provisions the application.
#[derive(Debug, Parser)]
#[command(name = "scimsync", version, about, long_about = None)]
pub struct Cli {
    /// Config file (TOML). Default: ./scimsync.toml, else /etc/scimsync/scimsync.toml, else
    /// built-in defaults. SCIMSYNC_* environment variables override it (SCIMSYNC_SERVER__LISTEN=...).
    #[arg(long, short = 'c', global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: serve the SCIM API (default 127.0.0.1:8080, data in ./scimsync-data).
    /// On first start it creates an API token and prints it once.
    Serve,
    /// Load and validate the configuration, print the effective settings, and exit non-zero
    /// with an explanation if anything is wrong.
    CheckConfig,
    /// Manage the bearer tokens IdPs authenticate with. Tokens live in the store, so changes
    /// take effect at once in a running daemon.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Create a token and print it (only this once) on stdout.
    Create {
        /// A name to recognise the token by, e.g. "okta-prod".
        #[arg(long, default_value = "default")]
        label: String,
    },
    /// List tokens (ids and labels; never the secrets).
    List,
    /// Revoke a token by id (the 8 hex digits after `scimsync_`); it stops working at once.
    Revoke { id: String },
}

/// Run the parsed command; returns the process exit code.
pub fn dispatch(cli: Cli) -> Result<i32> {
    let loaded = match Config::load(cli.config.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("scimsync: configuration error:\n{e}");
            return Ok(2);
        }
    };
    match cli.command {
        Command::CheckConfig => check_config(&loaded),
        Command::Serve => runtime()?.block_on(serve(loaded)),
        Command::Token { action } => runtime()?.block_on(token(loaded, action)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the tokio runtime")
}

fn warn_unknown(loaded: &Loaded) {
    for k in &loaded.unknown_keys {
        tracing::warn!(key = %k, "unknown configuration key ignored (typo? see config.example.toml)");
    }
}

fn check_config(loaded: &Loaded) -> Result<i32> {
    match &loaded.file {
        Some(f) => println!("config file: {}", f.display()),
        None => println!("config file: none (built-in defaults and environment)"),
    }
    for k in &loaded.unknown_keys {
        println!("warning: unknown key {k:?} is ignored; see config.example.toml for the valid keys");
    }
    println!("\neffective configuration:\n{}", toml_like(&loaded.config));
    println!("configuration OK");
    Ok(0)
}

fn toml_like(cfg: &Config) -> String {
    // serde_json gives a faithful dump without another serializer dependency.
    serde_json::to_string_pretty(cfg).unwrap_or_default()
}

async fn serve(loaded: Loaded) -> Result<i32> {
    let cfg = loaded.config.clone();
    telemetry::init(&cfg.log);
    warn_unknown(&loaded);
    if let Some(f) = &loaded.file {
        tracing::info!(file = %f.display(), "configuration loaded");
    }
    let store =
        app::open_store(&cfg).with_context(|| format!("cannot open the store in {}", cfg.store.data_dir.display()))?;
    let listener = app::bind(&cfg).await.with_context(|| format!("cannot listen on {}", cfg.server.listen))?;
    let bound = listener.local_addr()?;
    let base_url = cfg.scim_base_url(bound);
    let mut out = std::io::stdout().lock();
    if let Some(t) = app::bootstrap_token(&store).await? {
        writeln!(
            out,
            "No API token existed, so one was created (label \"bootstrap\"). It is shown only this once:\n\n    {}\n\n\
             In Okta or Entra ID, set the SCIM base URL / Tenant URL to {base_url}\n\
             and the bearer / secret token to the value above. Rotate with `scimsync token create` and\n\
             `scimsync token revoke {}`.\n",
            t.token, t.id
        )?;
    }
    writeln!(out, "scimsync listening on {base_url}")?;
    out.flush()?;
    drop(out);
    tracing::info!(%bound, base_url, data_dir = %cfg.store.data_dir.display(), "scimsync started");
    let token = CancellationToken::new();
    shutdown::on_signals(token.clone());
    app::run(&cfg, store, listener, base_url, token).await;
    tracing::info!("scimsync stopped");
    Ok(0)
}

async fn token(loaded: Loaded, action: TokenAction) -> Result<i32> {
    telemetry::init(&loaded.config.log);
    let store = app::open_store(&loaded.config)
        .with_context(|| format!("cannot open the store in {}", loaded.config.store.data_dir.display()))?;
    let code = match action {
        TokenAction::Create { label } => {
            let t = store.create_token(&label).await?;
            eprintln!("created token {} (label {:?}); it is shown only this once:", t.id, t.label);
            println!("{}", t.token);
            0
        }
        TokenAction::List => {
            println!("{:<10} {:<24} {:<26} status", "id", "label", "created");
            for t in store.list_tokens().await? {
                let status = t.revoked_at.as_ref().map(|r| format!("revoked {r}")).unwrap_or_else(|| "active".into());
                println!("{:<10} {:<24} {:<26} {status}", t.id, t.label, t.created_at);
            }
            0
        }
        TokenAction::Revoke { id } => {
            if store.revoke_token(&id).await? {
                eprintln!("revoked token {id}");
                0
            } else {
                eprintln!("no active token with id {id:?} (see `scimsync token list`)");
                1
            }
        }
    };
    tokio::task::spawn_blocking(move || store.close()).await.ok();
    Ok(code)
}
