//! Why a sync run (or a confirmation) failed: one error type for the reconcile layer, so a
//! caller can tell the store from the app from an operator's mistake. The text is what the
//! run records as its error and what the CLI and the admin API show.
//!
//! Owns: the reasons and their wording. Must not touch: anything else.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Reading or writing the store failed under the run.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The app answered a read with a failure that will not change by retrying (its reason).
    #[error("{0}")]
    App(String),
    /// The app kept asking to retry a read; its last reason.
    #[error("{error} (gave up after {attempts} attempts)")]
    AppGaveUp { error: String, attempts: u32 },
    /// The target has no way to read the app's accounts (`verb`: list, read).
    #[error("the {target} target cannot {verb} the app's accounts")]
    CannotRead { target: &'static str, verb: &'static str },
    /// A page token that is not ours to give (a SCIM `startIndex` that is not a number).
    #[error("bad page token {0:?}")]
    BadPageToken(String),
    /// Listing one resource type failed (`what`: `Users`, `Groups`).
    #[error("listing {what}: {source}")]
    Listing { what: &'static str, source: Box<ReconcileError> },
    /// Reading one group on its own failed.
    #[error("reading group {app_id}: {source}")]
    ReadingGroup { app_id: String, source: Box<ReconcileError> },
    /// A listed record carries no id.
    #[error("a record has no id: {0}")]
    RecordWithoutId(String),
    /// The app handed out a page token twice: the list would not end.
    #[error("the app returned the page token {0:?} a second time; the list would not end")]
    RepeatedPageToken(String),
    /// A page held only accounts listed already: the app ignores the paging parameters.
    #[error("a page held only accounts listed already; the app does not page as configured")]
    PagingIgnored,
    /// `--confirm` named a run that does not exist.
    #[error("there is no sync run {0} to confirm (see `scimsync sync runs`)")]
    NoSuchRun(i64),
    /// `--confirm` named a run whose repair was not refused.
    #[error("run {0} did not refuse a repair: confirm the run whose report says \"repair refused\"")]
    NothingRefused(i64),
    /// `--confirm` named a run older than the latest report.
    #[error(
        "run {run_id} is not the latest report (run {latest} is): review it with `scimsync drift` and confirm run {latest}"
    )]
    NotLatest { run_id: i64, latest: String },
    /// `--confirm` named a run whose refused repair a later run already confirmed: a
    /// confirmation is used once (two operators, or one retrying, never repair twice).
    #[error(
        "run {run_id} was already confirmed by run {by}, which queued its repair; nothing more to do (see `scimsync drift --run {by}`)"
    )]
    AlreadyConfirmed { run_id: i64, by: i64 },
    /// A listing's own failure, in its words (the benchmark's in-memory app).
    #[error("{0}")]
    Other(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts are what a failed run records and the CLI and admin API show: the same
    /// words the reasons had when they were strings.
    #[test]
    fn reasons_read_as_before() {
        let listing = |source| ReconcileError::Listing { what: "Users", source: Box::new(source) }.to_string();
        let cases = [
            (
                ReconcileError::Store(StoreError::Internal("disk".into())).to_string(),
                format!("store: {}", StoreError::Internal("disk".into())),
            ),
            (
                listing(ReconcileError::AppGaveUp { error: "HTTP 503".into(), attempts: 4 }),
                "listing Users: HTTP 503 (gave up after 4 attempts)".into(),
            ),
            (
                listing(ReconcileError::RecordWithoutId("{\"a\":1}".into())),
                "listing Users: a record has no id: {\"a\":1}".into(),
            ),
            (
                listing(ReconcileError::RepeatedPageToken("p2".into())),
                "listing Users: the app returned the page token \"p2\" a second time; the list would not end".into(),
            ),
            (
                listing(ReconcileError::PagingIgnored),
                "listing Users: a page held only accounts listed already; the app does not page as configured".into(),
            ),
            (
                ReconcileError::ReadingGroup {
                    app_id: "g1".into(),
                    source: Box::new(ReconcileError::App("gone".into())),
                }
                .to_string(),
                "reading group g1: gone".into(),
            ),
            (
                ReconcileError::CannotRead { target: "dry-run", verb: "list" }.to_string(),
                "the dry-run target cannot list the app's accounts".into(),
            ),
            (ReconcileError::BadPageToken("x".into()).to_string(), "bad page token \"x\"".into()),
            (
                ReconcileError::NoSuchRun(9).to_string(),
                "there is no sync run 9 to confirm (see `scimsync sync runs`)".into(),
            ),
            (
                ReconcileError::NothingRefused(9).to_string(),
                "run 9 did not refuse a repair: confirm the run whose report says \"repair refused\"".into(),
            ),
            (
                ReconcileError::NotLatest { run_id: 3, latest: "5".into() }.to_string(),
                "run 3 is not the latest report (run 5 is): review it with `scimsync drift` and confirm run 5".into(),
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }
}
