//! The one integration-test binary: every test starts the real `scimsync` binary on an
//! ephemeral loopback port with a temporary data directory and talks HTTP to it.

mod support;

mod auth;
mod discovery;
mod durability;
mod errors;
mod fuzzed;
mod groups;
mod idp_flows;
mod users;
