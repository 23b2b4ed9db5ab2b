//! The fuzz crate: scimsync's protocol layer, compiled on its own, and the checks each fuzz
//! target makes ([`checks`]).
//!
//! Why compile `src/model` and `src/scim` here instead of depending on the `scimsync` crate:
//! the fuzz build instruments every crate it compiles, and the whole daemon (tokio, warp,
//! rusqlite's bundled SQLite, clap, ...) took over four minutes to build that way on the
//! two-core CI machine, for code the targets never reach. `scim` is pure and depends on
//! `model` alone (docs/ARCHITECTURE.md), so these two modules compile with a handful of small crates,
//! and this build doubles as a check that `scim` stays pure: if `scim` starts using another
//! crate, add it to `fuzz/Cargo.toml` (same version as the root `Cargo.toml`), and if it
//! starts using another scimsync module, it has broken the layering.

#[path = "../../src/model/mod.rs"]
pub mod model;
#[path = "../../src/scim/mod.rs"]
pub mod scim;

pub mod checks;

/// The code under test, as [`checks`] names it (`tests/it/fuzzed.rs` points it at the real
/// `scimsync` crate instead).
mod sut {
    pub use crate::{model, scim};
}
