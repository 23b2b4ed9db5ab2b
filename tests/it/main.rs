//! The one integration-test binary: every test starts the real `scimsync` binary on an
//! ephemeral loopback port with a temporary data directory and talks HTTP to it.

mod app;
mod support;

mod audit;
mod auth;
mod backup;
mod bulk;
mod cli;
mod cluster;
mod cluster_chaos;
mod cluster_ops;
mod cluster_partition;
mod contrib;
mod discovery;
mod docs;
mod durability;
mod errors;
mod filter_diff;
mod filter_oracle;
mod fuzzed;
mod groups;
mod guard;
mod hardening;
mod idp_flows;
mod lifecycle;
mod ops;
mod paging;
mod pg_outage;
mod policy;
mod provisioning;
mod quirks;
mod reconcile;
mod reconcile_rest;
mod rest_app;
mod sorting;
mod status_page;
mod store_copy;
mod upgrade;
mod users;
mod webhook;
