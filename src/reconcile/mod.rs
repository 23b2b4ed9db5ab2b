//! Reconciliation: compare what the IdP wants (our store), what we last applied, and what
//! the app has, and report the differences as drift.
//!
//! Owns: the pure three-way diff ([`diff`]); later the schedule, the full-sync orchestration,
//! reports and the repair policy. Must not touch: warp, SQL strings.

pub mod diff;
