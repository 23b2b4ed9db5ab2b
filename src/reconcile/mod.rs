//! Reconciliation: compare what the IdP wants (our store), what we last applied, and what
//! the app has; report the differences as drift and, where policy says so, repair them.
//!
//! Owns: the schedule ([`scheduler`]), the full-sync orchestration ([`full_sync`]), the pure
//! three-way diff ([`diff`]), the repair policy and safety limit ([`plan`]) and the report's
//! human forms ([`report`]). Must not touch: warp, SQL strings.

pub mod diff;
pub mod error;
pub mod full_sync;
pub mod plan;
pub mod report;
pub mod scheduler;

pub use error::ReconcileError;
