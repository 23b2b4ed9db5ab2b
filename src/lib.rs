//! scimsync: a SCIM 2.0 bridge. Identity providers push changes to its SCIM API; it stores
//! the desired state in SQLite and (in later modules) provisions the downstream app through
//! a durable outbox and reconciles drift.
//!
//! Map (arrows point one way: `http -> service -> {scim, model, store}`; `scim -> model`;
//! `store -> model`):
//! - [`cli`]: subcommands; [`app`]: start and shutdown order; [`config`]: figment layers;
//!   [`telemetry`]: logging and every metric; [`shutdown`]: signals to one cancellation token;
//!   [`reload`]: SIGHUP re-reads the configuration and applies what can change live.
//! - [`model`]: domain types and the neutral query AST.
//! - [`scim`]: RFC 7643/7644, pure — schema, filter, path, patch, list, resource JSON, errors.
//! - [`service`]: use-cases; the transaction boundary.
//! - [`policy`]: pure provisioning policy — group rules, effective access, constraints.
//! - [`store`]: rusqlite — migrations, pragmas, single writer, readers, resources, outbox, tokens.
//! - [`http`]: warp — routes, auth, error rendering; the admin listener (health, metrics).
//! - [`outbox_worker`]: claims outbox rows and delivers them through a [`downstream`] target
//!   (reqwest: the app's SCIM API, or dry-run).

pub mod app;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod downstream;
pub mod http;
pub mod model;
pub mod outbox_worker;
pub mod policy;
pub mod reconcile;
pub mod reload;
pub mod scim;
pub mod service;
pub mod shutdown;
pub mod store;
pub mod systemd;
pub mod telemetry;
