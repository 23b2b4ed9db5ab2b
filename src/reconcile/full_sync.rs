//! One full sync run: list the app page by page, match each account to our state, diff,
//! add stuck provisions, plan the repair, and store the report with what is new and what was
//! resolved since the previous one.
//!
//! Memory is bounded by the page size plus the set of our ids seen (not by the app's size):
//! pages are matched through the store one at a time, and our resources the listing did not
//! show are loaded in chunks at the end.

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::time::Instant;

use serde_json::{Map, Value, json};

use super::ReconcileError;
use super::diff::{self, Actual, Cause, Desired, DriftItem, DriftKind};
use super::plan::{self, Fix, Found, Repair};
use crate::config::ReconcileConfig;
use crate::model::ResourceKind;
use crate::model::drift::{Change, KindCounts, Listed, RepairSummary, RunReport, RunSummary};
use crate::store::{AppKey, DriftRow, Matched, PageMatch, RunFinish, Store};

/// Where the app's accounts come from, and how its records read: the downstream target in
/// the daemon (a SCIM app, or a REST app through its field mapping), a listing in memory in
/// the benchmark. The provided methods are SCIM's reading; a REST listing overrides them.
pub trait Listing: Sync {
    /// One page: `at` is where it starts (`None`: the first page; otherwise a token the
    /// previous page returned: a SCIM `startIndex`, an offset, a cursor, a next link), and
    /// the token of the next page (`None`: this was the last).
    fn page(
        &self,
        kind: ResourceKind,
        at: Option<&str>,
    ) -> impl Future<Output = Result<(Vec<Value>, Option<String>), ReconcileError>> + Send;
    /// One account by the app's id (`None`: gone).
    fn get(
        &self,
        kind: ResourceKind,
        app_id: &str,
    ) -> impl Future<Output = Result<Option<Value>, ReconcileError>> + Send;

    /// Whether the app's accounts of `kind` are listed at all (a REST app may have no groups).
    fn lists(&self, _kind: ResourceKind) -> bool {
        true
    }

    /// Whether [`get`](Listing::get) can read a group whose listing left its members out.
    fn can_get(&self, _kind: ResourceKind) -> bool {
        true
    }

    /// The app's id, name and `externalId` of one of its records.
    fn key(&self, kind: ResourceKind, record: &Value) -> AppKey {
        scim_key(kind, record)
    }

    /// Whether an app account is switched off.
    fn inactive(&self, _kind: ResourceKind, record: &Value) -> bool {
        record.get("active") == Some(&Value::Bool(false))
    }

    /// A group record's members as app ids, when the record carries them.
    fn members(&self, record: &Value) -> Option<BTreeSet<String>> {
        app_members(record)
    }

    /// What the app should hold for our attributes `attrs`, in the app's vocabulary; `None`:
    /// the attributes themselves (SCIM), compared without a copy.
    fn desired(&self, _kind: ResourceKind, _attrs: &Map<String, Value>) -> Option<Map<String, Value>> {
        None
    }

    /// An app record in the vocabulary of [`desired`](Listing::desired); `None`: as listed.
    fn record_view(&self, _kind: ResourceKind, _record: &Value) -> Option<Map<String, Value>> {
        None
    }

    /// The vocabulary records compare in.
    fn fields(&self, _kind: ResourceKind) -> diff::Fields {
        diff::Fields::scim()
    }
}

impl Listing for crate::downstream::Target {
    async fn page(&self, kind: ResourceKind, at: Option<&str>) -> Result<(Vec<Value>, Option<String>), ReconcileError> {
        use crate::downstream::Target;
        match self {
            Target::Scim(t) => {
                let start = match at {
                    None => 1,
                    Some(s) => s.parse::<u64>().map_err(|_| ReconcileError::BadPageToken(s.to_string()))?,
                };
                let (page, next) = patiently(|| t.list_page(kind, start)).await?;
                Ok((page, next.map(|n| n.to_string())))
            }
            Target::Webhook(t) => patiently(|| t.list_page(kind, at)).await,
            _ => Err(ReconcileError::CannotRead { target: self.name(), verb: "list" }),
        }
    }

    async fn get(&self, kind: ResourceKind, app_id: &str) -> Result<Option<Value>, ReconcileError> {
        use crate::downstream::Target;
        match self {
            Target::Scim(t) => patiently(|| t.get_one(kind, app_id)).await,
            Target::Webhook(t) => patiently(|| t.get_one(kind, app_id)).await,
            _ => Err(ReconcileError::CannotRead { target: self.name(), verb: "read" }),
        }
    }

    fn lists(&self, kind: ResourceKind) -> bool {
        match self {
            crate::downstream::Target::Webhook(t) => t.lists(kind),
            t => t.can_list(),
        }
    }

    fn can_get(&self, kind: ResourceKind) -> bool {
        match self {
            crate::downstream::Target::Webhook(t) => t.can_get(kind),
            _ => true,
        }
    }

    fn key(&self, kind: ResourceKind, record: &Value) -> AppKey {
        match self {
            crate::downstream::Target::Webhook(t) => {
                let (app_id, name, external_id) = t.record_key(kind, record);
                AppKey { app_id, name, external_id }
            }
            _ => scim_key(kind, record),
        }
    }

    fn inactive(&self, kind: ResourceKind, record: &Value) -> bool {
        match self {
            crate::downstream::Target::Webhook(t) => t.record_inactive(kind, record),
            _ => record.get("active") == Some(&Value::Bool(false)),
        }
    }

    fn members(&self, record: &Value) -> Option<BTreeSet<String>> {
        match self {
            crate::downstream::Target::Webhook(t) => t.record_members(record),
            _ => app_members(record),
        }
    }

    fn desired(&self, kind: ResourceKind, attrs: &Map<String, Value>) -> Option<Map<String, Value>> {
        match self {
            crate::downstream::Target::Webhook(t) => Some(t.view(kind, attrs)),
            _ => None,
        }
    }

    fn record_view(&self, kind: ResourceKind, record: &Value) -> Option<Map<String, Value>> {
        match self {
            crate::downstream::Target::Webhook(t) => t.record_view(kind, record),
            _ => None,
        }
    }

    fn fields(&self, kind: ResourceKind) -> diff::Fields {
        match self {
            crate::downstream::Target::Webhook(t) => {
                let v = t.vocabulary(kind);
                diff::Fields { active: v.active, absent_active_is_true: v.scim, case_insensitive: v.case_insensitive }
            }
            _ => diff::Fields::scim(),
        }
    }
}

/// Reads of a listing that the app asks to retry (429, 503, a dropped connection) are tried
/// again, at the time it names (`Retry-After`, at most 30 s) or after 0.5, 1, 2 s: one
/// rate-limited page must not fail a run over a large app. A refusal that will not change
/// (a 4xx) fails at once; so does the fourth failure, with its reason.
async fn patiently<T, F, Fut>(read: F) -> Result<T, ReconcileError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, crate::downstream::Outcome>>,
{
    const ATTEMPTS: u32 = 4;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match read().await {
            Ok(v) => return Ok(v),
            Err(crate::downstream::Outcome::Retry { after, error }) if attempt < ATTEMPTS => {
                let wait = after.unwrap_or(std::time::Duration::from_millis(500 << (attempt - 1)));
                let wait = wait.min(std::time::Duration::from_secs(30));
                tracing::info!(attempt, wait_ms = wait.as_millis() as u64, error = %error, "sync: the app asked to retry a read");
                tokio::time::sleep(wait).await;
            }
            Err(o @ crate::downstream::Outcome::Retry { .. }) => {
                return Err(ReconcileError::AppGaveUp { error: outcome_text(o), attempts: ATTEMPTS });
            }
            Err(o) => return Err(ReconcileError::App(outcome_text(o))),
        }
    }
}

fn outcome_text(o: crate::downstream::Outcome) -> String {
    match o {
        crate::downstream::Outcome::Retry { error, .. }
        | crate::downstream::Outcome::Permanent { error }
        | crate::downstream::Outcome::Gone { error } => error,
        crate::downstream::Outcome::Done { .. } | crate::downstream::Outcome::Recorded { .. } => {
            "unexpected answer".into()
        }
    }
}

/// How a run was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    CatchUp,
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::CatchUp => "catch_up",
            Trigger::Manual => "manual",
        }
    }
}

/// What a finished run reports back (the report itself is in the store).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunResult {
    pub run_id: i64,
    pub status: String,
    pub error: Option<String>,
    pub summary: RunSummary,
}

/// Run one full sync and record it. Errors of the app or the store end the run as `failed`
/// with the reason; they are returned in the result, not as `Err`, except when even
/// recording the run failed.
/// `deactivates`: the target deprovisions users by deactivation, so an orphaned user that is
/// already inactive is in the state a repair would leave it in, and is not drift.
pub async fn run<L: Listing>(
    store: &Store,
    listing: &L,
    cfg: &ReconcileConfig,
    deactivates: bool,
    trigger: Trigger,
    confirm: Option<i64>,
) -> Result<RunResult, crate::store::StoreError> {
    let clock = Instant::now();
    let run_id = store.sync().run_start(trigger.as_str()).await?;
    tracing::info!(run = run_id, trigger = trigger.as_str(), "sync run started");
    let outcome = collect(store, listing, cfg, deactivates, confirm, run_id).await;
    let keep_since = shift_secs(cfg.report_retention_days.min(36_500) * 86_400);
    let result = match outcome {
        Ok((rows, report)) => {
            let counts = report.counts.pairs();
            let summary =
                RunSummary { report: Some(report), duration_seconds: Some(round3(clock.elapsed().as_secs_f64())) };
            let finish =
                RunFinish { status: "ok".into(), error: None, summary: summary.clone(), items: rows, keep_since };
            store.sync().run_finish(run_id, finish).await?;
            crate::telemetry::sync_run(true, clock.elapsed(), &counts);
            let logged = serde_json::to_string(&summary).unwrap_or_default();
            tracing::info!(run = run_id, summary = %logged, "sync run finished");
            RunResult { run_id, status: "ok".into(), error: None, summary }
        }
        Err(error) => {
            let error = error.to_string();
            let summary = RunSummary { report: None, duration_seconds: Some(round3(clock.elapsed().as_secs_f64())) };
            let finish = RunFinish {
                status: "failed".into(),
                error: Some(error.clone()),
                summary: summary.clone(),
                items: Vec::new(),
                keep_since,
            };
            store.sync().run_finish(run_id, finish).await?;
            crate::telemetry::sync_run(false, clock.elapsed(), &[]);
            tracing::warn!(run = run_id, error = %error, "sync run failed");
            RunResult { run_id, status: "failed".into(), error: Some(error), summary }
        }
    };
    Ok(result)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

type Collected = (Vec<DriftRow>, RunReport);

async fn collect<L: Listing>(
    store: &Store,
    listing: &L,
    cfg: &ReconcileConfig,
    deactivates: bool,
    confirm: Option<i64>,
    run_id: i64,
) -> Result<Collected, ReconcileError> {
    let confirmed = match confirm {
        Some(id) => Some(confirmable(store, id).await?),
        None => None,
    };
    let mut found: Vec<Found> = Vec::new();
    let mut listed = [0u64; 2];
    for (slot, kind) in [ResourceKind::User, ResourceKind::Group].into_iter().enumerate() {
        if !listing.lists(kind) {
            continue;
        }
        listed[slot] = diff_kind(store, listing, cfg, deactivates, kind, &mut found).await?;
    }
    // Stuck provisions: gathered before dead rows are re-queued, so the report shows them.
    let older = shift_secs(cfg.stuck_after_seconds);
    let stuck = store.sync().stuck(older, 10_000).await?;
    let requeued: HashSet<i64> =
        if cfg.requeue_dead { store.sync().requeue_dead().await?.into_iter().collect() } else { HashSet::new() };
    let stuck_start = found.len();
    for s in &stuck {
        found.push(Found {
            item: DriftItem {
                kind: DriftKind::StuckProvision,
                resource_id: Some(s.resource_id.clone()),
                app_id: None,
                name: s.name.clone(),
                attribute: None,
                ours: json!({"outbox_id": s.outbox_id, "op": s.op, "state": s.state, "attempts": s.attempts,
                             "queued_at": s.created_at}),
                app: json!({"last_error": s.last_error}),
                cause: Cause::NotAppliedYet,
            },
            resource_kind: s.kind,
            fix: None,
        });
    }
    // The previous report: the base of new/resolved, and which repairs were tried already.
    let previous: Vec<DriftRow> = match store.sync().run(None).await? {
        Some(prev) => {
            store.sync().drift_items(prev.id).await?.into_iter().filter(|r| r.change != Change::Resolved).collect()
        }
        None => Vec::new(),
    };
    let tried: HashSet<String> =
        previous.iter().filter(|r| r.repair == Repair::Queued).map(|r| r.fingerprint.clone()).collect();
    let total_listed = listed[0] + listed[1];
    let mut p = plan::plan(cfg, &found[..stuck_start], total_listed, confirmed.as_ref(), &tried, run_id);
    for s in &stuck {
        p.repair.push(if requeued.contains(&s.outbox_id) { Repair::Requeued } else { Repair::None });
    }
    let results = if p.ops.is_empty() { Vec::new() } else { store.sync().repair(run_id, p.ops.clone()).await? };
    let queued = results.iter().filter(|r| r.queued()).count();
    let superseded: usize = results
        .iter()
        .map(|r| match r {
            crate::store::RepairResult::Queued { superseded } => superseded.len(),
            _ => 0,
        })
        .sum();
    // The report says what the store did with each change, not what the plan hoped for.
    for (r, op) in p.repair.iter_mut().zip(&p.op_of) {
        if let (Repair::Queued, Some(k)) = (*r, op) {
            *r = match results.get(*k) {
                Some(crate::store::RepairResult::Queued { .. }) => Repair::Queued,
                Some(crate::store::RepairResult::OnItsWay { .. }) => Repair::OnItsWay,
                Some(crate::store::RepairResult::Blocked { .. }) => Repair::Blocked,
                Some(crate::store::RepairResult::Moot) | None => Repair::None,
            };
        }
    }
    // Compare with the previous report.
    let rows: Vec<DriftRow> = found
        .iter()
        .zip(&p.repair)
        .map(|(f, r)| DriftRow {
            kind: f.item.kind,
            resource_kind: f.resource_kind,
            resource_id: f.item.resource_id.clone(),
            app_id: f.item.app_id.clone(),
            name: f.item.name.clone(),
            attribute: f.item.attribute.clone(),
            ours: f.item.ours.clone(),
            app: f.item.app.clone(),
            cause: f.item.cause,
            // Compared with the previous report below.
            change: Change::New,
            repair: *r,
            fingerprint: f.item.fingerprint(f.resource_kind.as_str()),
        })
        .collect();
    let cur_fp: Vec<String> = rows.iter().map(|r| r.fingerprint.clone()).collect();
    let prev_fp: Vec<String> = previous.iter().map(|r| r.fingerprint.clone()).collect();
    let (is_new, resolved) = diff::changes(&cur_fp, &prev_fp);
    let mut rows = rows;
    for (r, new) in rows.iter_mut().zip(&is_new) {
        r.change = if *new { Change::New } else { Change::Ongoing };
    }
    let new_count = is_new.iter().filter(|n| **n).count();
    for i in &resolved {
        let mut r = previous[*i].clone();
        r.change = Change::Resolved;
        r.repair = Repair::None;
        rows.push(r);
    }
    let mut counts = KindCounts::default();
    for f in &found {
        counts.add(f.item.kind);
    }
    let with = |want: Repair| p.repair.iter().filter(|r| **r == want).count() as u64;
    let report = RunReport {
        listed: Listed { users: listed[0], groups: listed[1] },
        counts,
        total: found.len() as u64,
        new: new_count as u64,
        resolved: resolved.len() as u64,
        repair: RepairSummary {
            queued_items: with(Repair::Queued),
            queued_changes: queued as u64,
            superseded_dead: superseded as u64,
            on_its_way: with(Repair::OnItsWay),
            blocked: with(Repair::Blocked),
            deprovisions: p.deprovisions,
            protected: with(Repair::Protected),
            // What confirming this report approves (kept only when it was refused).
            deprovisioning: p.refused.is_some().then(|| p.deprovisioning.clone()),
            refused: p.refused.clone(),
        },
        requeued_dead: requeued.len() as u64,
        confirmed: confirm,
    };
    Ok((rows, report))
}

/// What confirming run `run_id` approves: the deprovisionings its refused repair listed.
/// An error (the reason) when that run does not exist or did not refuse a repair.
pub async fn confirmable(store: &Store, run_id: i64) -> Result<plan::Confirmed, ReconcileError> {
    let Some(run) = store.sync().run(Some(run_id)).await? else {
        return Err(ReconcileError::NoSuchRun(run_id));
    };
    let Some(refused) = run.summary.and_then(|s| s.report).map(|r| r.repair).filter(|r| r.refused.is_some()) else {
        return Err(ReconcileError::NothingRefused(run_id));
    };
    // Only the newest report can be confirmed: an older one may describe an app that has
    // changed since, and a confirmation used once (its run is then the newest) cannot be
    // replayed.
    let latest = store.sync().run(None).await?.map(|r| r.id);
    if latest != Some(run_id) {
        // Said first when it is so: "already done" is the answer a second confirmation wants.
        let later = store.sync().runs(50).await?;
        if let Some(by) = later.iter().find(|r| {
            r.id > run_id
                && r.status == "ok"
                && r.summary.as_ref().and_then(|s| s.report.as_ref()).and_then(|r| r.confirmed) == Some(run_id)
        }) {
            return Err(ReconcileError::AlreadyConfirmed { run_id, by: by.id });
        }
        let latest = latest.map(|l| l.to_string()).unwrap_or_default();
        return Err(ReconcileError::NotLatest { run_id, latest });
    }
    let approved = refused.deprovisioning.unwrap_or_default().into_iter().collect();
    Ok(plan::Confirmed { run_id, approved })
}

/// A failure while listing one resource type, named by its endpoint (`Users`, `Groups`).
fn listing_failed(kind: ResourceKind, source: ReconcileError) -> ReconcileError {
    ReconcileError::Listing { what: kind.segment(), source: Box::new(source) }
}

/// Now minus `secs`, in the store's time format.
fn shift_secs(secs: u64) -> String {
    crate::model::time_before(std::time::Duration::from_secs(secs.min(100 * 365 * 86_400)))
}

/// A SCIM record's id, name and `externalId`.
fn scim_key(kind: ResourceKind, v: &Value) -> AppKey {
    let app_id = match v.get("id") {
        Some(Value::String(s)) => s.clone(),
        // RFC 7643 §3.1 says a string; some apps send their row number.
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    AppKey {
        app_id,
        name: app_name(kind, v),
        external_id: v.get("externalId").and_then(Value::as_str).map(str::to_string),
    }
}

/// The name an app account is matched and shown by.
fn app_name(kind: ResourceKind, v: &Value) -> String {
    let key = if kind == ResourceKind::User { "userName" } else { "displayName" };
    v.get(key).and_then(Value::as_str).unwrap_or_default().to_string()
}

fn app_members(v: &Value) -> Option<BTreeSet<String>> {
    let members = v.get("members")?.as_array()?;
    Some(members.iter().filter_map(|m| m.get("value").and_then(Value::as_str)).map(str::to_string).collect())
}

/// A listed group's members. Apps may leave `members` out of list responses (it is costly):
/// then the group is read on its own; if that has none either, the group is empty. `None`:
/// the app can tell neither way (a REST app without a single-group read), so membership is
/// not compared.
async fn group_members<L: Listing>(
    listing: &L,
    v: &Value,
    app_id: &str,
) -> Result<Option<BTreeSet<String>>, ReconcileError> {
    if let Some(m) = listing.members(v) {
        return Ok(Some(m));
    }
    if !listing.can_get(ResourceKind::Group) {
        return Ok(None);
    }
    let one = listing
        .get(ResourceKind::Group, app_id)
        .await
        .map_err(|err| ReconcileError::ReadingGroup { app_id: app_id.to_string(), source: Box::new(err) })?;
    Ok(Some(one.as_ref().and_then(|g| listing.members(g)).unwrap_or_default()))
}

/// Desired members as app ids, for those provisioned.
fn desired_members(m: &Matched) -> Option<BTreeSet<String>> {
    m.members.as_ref().map(|ms| ms.iter().filter_map(|x| x.app_id.clone()).collect())
}

/// A user's attributes with its effective roles and entitlements, when a provisioning policy
/// derives them (the worker sends those, and records them as applied, so leaving them out
/// would report every managed user as drifted); `None`: the attributes as stored are what the
/// app should hold.
async fn desired_access(
    store: &Store,
    res: &crate::model::Resource,
) -> Result<Option<Map<String, Value>>, crate::store::StoreError> {
    if res.kind != ResourceKind::User {
        return Ok(None);
    }
    let Some(access) = store.resources().effective_access(&res.id).await? else { return Ok(None) };
    let mut ours = res.attrs.clone();
    access.insert_into(&mut ours);
    Ok(Some(ours))
}

/// List one kind and diff it; returns how many accounts the app listed.
async fn diff_kind<L: Listing>(
    store: &Store,
    listing: &L,
    cfg: &ReconcileConfig,
    deactivates: bool,
    kind: ResourceKind,
    found: &mut Vec<Found>,
) -> Result<u64, ReconcileError> {
    let never_delete_users = cfg.never_delete.iter().any(|t| t == "users");
    let mut seen: HashSet<String> = HashSet::new();
    let mut seen_app: HashSet<String> = HashSet::new();
    let mut listed = 0u64;
    // One page listed and matched through the store, ready to diff.
    let fetch = |at: Option<String>| async move {
        let (page, next) = listing.page(kind, at.as_deref()).await.map_err(|err| listing_failed(kind, err))?;
        let keys: Vec<AppKey> = page.iter().map(|v| listing.key(kind, v)).collect();
        // A record without an id can be neither matched nor repaired (an orphan with the
        // empty id would be deleted at `Users/`): the listing is wrong, the run fails.
        if let Some(bad) = keys.iter().position(|k| k.app_id.is_empty()) {
            let record = crate::downstream::truncate(&page[bad].to_string(), 200);
            return Err(listing_failed(kind, ReconcileError::RecordWithoutId(record.to_string())));
        }
        let matched = store.sync().match_page(kind, keys.clone()).await?;
        Ok::<_, ReconcileError>((page, keys, matched, next))
    };
    let fields = listing.fields(kind);
    // Page tokens seen: an app that hands out a token twice (a cursor cycle) would keep the
    // run going forever.
    let mut tokens: HashSet<String> = HashSet::new();
    let mut current = Some(fetch(None).await?);
    while let Some((page, keys, matched, next)) = current.take() {
        listed += page.len() as u64;
        if let Some(t) = &next
            && !tokens.insert(t.clone())
        {
            return Err(listing_failed(kind, ReconcileError::RepeatedPageToken(t.clone())));
        }
        // The next page is listed and matched (the app's and the store's time) while this
        // one is diffed (ours): two pages in memory at most.
        let ahead = async {
            match next {
                Some(s) => fetch(Some(s)).await.map(Some),
                None => Ok(None),
            }
        };
        let work = async {
            // A page of nothing but accounts listed already: the app ignores the paging
            // parameters and would hand out the same records forever.
            if !page.is_empty() && keys.iter().all(|k| seen_app.contains(&k.app_id)) {
                return Err(listing_failed(kind, ReconcileError::PagingIgnored));
            }
            for ((v, key), m) in page.iter().zip(&keys).zip(matched) {
                // Offset paging shifts when accounts come and go during the listing: the same
                // account may show up twice. Once is enough (and a live account is never
                // taken for a duplicate of itself).
                if !seen_app.insert(key.app_id.clone()) {
                    continue;
                }
                let empty = Map::new();
                let attrs = v.as_object().unwrap_or(&empty);
                let have =
                    if kind == ResourceKind::Group { group_members(listing, v, &key.app_id).await? } else { None };
                let actual = Actual { app_id: &key.app_id, name: &key.name, attrs, members: have.as_ref() };
                let m = match m {
                    PageMatch::Ours(m) => m,
                    // Our deletion of it is on its way: not an orphan, nothing to do twice.
                    PageMatch::Deprovisioning => continue,
                    PageMatch::Unknown => {
                        let inactive = listing.inactive(kind, v);
                        if kind == ResourceKind::User && inactive && (deactivates || never_delete_users) {
                            continue;
                        }
                        found.push(Found { item: diff::orphan(&actual), resource_kind: kind, fix: Some(Fix::Orphan) });
                        continue;
                    }
                };
                if !seen.insert(m.resource.id.clone()) {
                    // A second app account with the name of one of ours: a duplicate in the app.
                    found.push(Found { item: diff::orphan(&actual), resource_kind: kind, fix: Some(Fix::Orphan) });
                    continue;
                }
                // The representation we send is the attributes plus `schemas` minus
                // `password`, both never compared: compare the attributes themselves rather
                // than a copy per account (the report's values are copied only on a
                // difference) — unless a policy adds the user's effective access.
                let with_access = desired_access(store, &m.resource).await?;
                let ours = with_access.as_ref().unwrap_or(&m.resource.attrs);
                // A REST app is compared through its field mapping: ours and what we
                // applied, both as the bodies the provisioner sends.
                let ours_view = listing.desired(kind, ours);
                let ours = ours_view.as_ref().unwrap_or(ours);
                let applied_view = match (&ours_view, m.applied_current, &m.applied) {
                    (Some(_), false, Some(a)) => listing.desired(kind, a),
                    _ => None,
                };
                let applied = if m.applied_current { Some(ours) } else { applied_view.as_ref().or(m.applied.as_ref()) };
                let want = desired_members(&m);
                let name = m.resource.display_name().to_string();
                let desired = Desired {
                    resource_id: &m.resource.id,
                    name: &name,
                    attrs: ours,
                    applied,
                    pending: m.pending,
                    members: want.as_ref(),
                };
                // The app's record in the same vocabulary (a REST app: its mapped fields).
                let record_view = listing.record_view(kind, v);
                let compared = Actual { attrs: record_view.as_ref().unwrap_or(attrs), ..actual.clone() };
                for mut item in diff::compare_with(&desired, &compared, &cfg.ignore_attributes, &fields) {
                    let fix = if item.kind == DriftKind::MembershipMismatch {
                        Some(member_fix(store, cfg, &m, have.as_ref(), &mut item).await?)
                    } else {
                        // Whatever the app calls it (`disabled`, `status`), a repair of an
                        // active-state mismatch switches the account off when ours is off.
                        let deactivates = item.kind == DriftKind::ActiveMismatch
                            && m.resource.attrs.get("active") == Some(&Value::Bool(false));
                        Some(Fix::Resync { forget_app_id: false, deactivates })
                    };
                    found.push(Found { item, resource_kind: kind, fix });
                }
            }
            Ok::<(), ReconcileError>(())
        };
        // `ahead` first: it starts the next page's store work before this page's diff runs.
        let (ahead, work) = tokio::join!(ahead, work);
        work?;
        current = ahead?;
    }
    // Ours that the app did not list: missing there.
    let all = store.sync().all_ids(kind).await?;
    let unseen: Vec<String> = all.into_iter().filter(|(id, _)| !seen.contains(id)).map(|(id, _)| id).collect();
    for chunk in unseen.chunks(500) {
        for m in store.sync().load_unmatched(kind, chunk.to_vec()).await? {
            let with_access = desired_access(store, &m.resource).await?;
            let ours = with_access.as_ref().unwrap_or(&m.resource.attrs);
            let ours_view = listing.desired(kind, ours);
            let ours = ours_view.as_ref().unwrap_or(ours);
            let name = m.resource.display_name().to_string();
            let d = Desired {
                resource_id: &m.resource.id,
                name: &name,
                attrs: ours,
                // Only whether it was applied matters for a missing account's cause.
                applied: if m.applied_current { Some(ours) } else { m.applied.as_ref() },
                pending: m.pending,
                members: None,
            };
            let mut item = diff::missing(&d);
            // Keep the report readable: the attributes, not the schemas list.
            if let Value::Object(o) = &mut item.ours {
                o.remove("schemas");
            }
            let fix = Fix::Resync { forget_app_id: m.mapped_app_id.is_some(), deactivates: false };
            found.push(Found { item, resource_kind: kind, fix: Some(fix) });
        }
    }
    Ok(listed)
}

/// The member fix of a group, and the report's values rewritten with names a human knows.
async fn member_fix(
    store: &Store,
    cfg: &ReconcileConfig,
    m: &Matched,
    have: Option<&BTreeSet<String>>,
    item: &mut DriftItem,
) -> Result<Fix, ReconcileError> {
    let members = m.members.as_deref().unwrap_or_default();
    let have = have.cloned().unwrap_or_default();
    let want: HashSet<&str> = members.iter().filter_map(|x| x.app_id.as_deref()).collect();
    let missing: Vec<&crate::store::MemberInfo> =
        members.iter().filter(|x| x.app_id.as_deref().is_some_and(|a| !have.contains(a))).collect();
    let extra: Vec<String> = have.iter().filter(|a| !want.contains(a.as_str())).cloned().collect();
    let known = store.sync().names_for_app_ids(extra.clone()).await?;
    let mut remove = Vec::new();
    let mut remove_app_ids = Vec::new();
    let mut extra_named = Vec::new();
    for (app_id, k) in extra.iter().zip(known) {
        match k {
            // A break-glass account stays in the app's groups too (an admins group, say).
            Some((_, name)) if plan::is_protected(cfg, &name) => {
                extra_named.push(json!({"name": name, "app_id": app_id, "protected": true}));
            }
            Some((id, name)) => {
                remove.push(id);
                extra_named.push(json!({"name": name, "app_id": app_id}));
            }
            None => {
                remove_app_ids.push(app_id.clone());
                extra_named.push(json!({"name": Value::Null, "app_id": app_id}));
            }
        }
    }
    item.ours =
        json!({"missing_in_app": missing.iter().map(|x| json!({"name": x.name, "id": x.id})).collect::<Vec<_>>()});
    item.app = json!({"extra_in_app": extra_named});
    Ok(Fix::Members { add: missing.iter().map(|x| x.id.clone()).collect(), remove, remove_app_ids })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Meta, Resource};

    /// `diff_kind` compares a resource's attributes instead of its representation: they may
    /// differ only in attributes the diff never compares.
    #[test]
    fn representation_differs_from_the_attributes_only_where_the_diff_never_looks() {
        let attrs = json!({"userName": "a", "password": "secret", "title": "t",
                           "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "d"}});
        let r = Resource {
            kind: ResourceKind::User,
            id: "id".into(),
            meta: Meta { version: 1, created: String::new(), last_modified: String::new() },
            attrs: attrs.as_object().unwrap().clone(),
            members: None,
            groups: None,
        };
        let rep = crate::downstream::representation(&r);
        let compared = |m: &Map<String, Value>| -> Vec<(String, Value)> {
            m.iter()
                .filter(|(k, _)| !diff::NEVER_COMPARED.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        assert_eq!(compared(&rep), compared(&r.attrs));
        assert_ne!(rep, r.attrs, "the representation does add schemas and drop the password");
    }

    /// Confirming a refused repair whose summary an earlier release wrote (no approval
    /// list) approves nothing; a failed run's summary (`{duration_seconds}`) has nothing to
    /// confirm. (The store reads those rows as the type: `store`'s tests.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn confirming_an_old_refused_summary() {
        use crate::store::StoreOptions;
        let dir = tempfile::tempdir().unwrap();
        let opts =
            StoreOptions { data_dir: dir.path().to_path_buf(), busy_timeout_seconds: 5, readers: 2, max_batch: 64 };
        let store = Store::open(&opts).unwrap();
        let old = r#"{"listed":{"users":10,"groups":2},"counts":{"orphaned_in_app":6},"total":6,"new":6,"resolved":0,"repair":{"queued_items":0,"queued_changes":0,"deprovisions":6,"protected":0,"refused":"repair refused: it would deactivate or delete 6 account(s)"},"requeued_dead":0,"confirmed":null,"duration_seconds":0.042}"#;
        let keep = || "1970-01-01T00:00:00.000Z".to_string();
        let failed = store.sync().run_start("manual").await.unwrap();
        let failed_summary = serde_json::from_str(r#"{"duration_seconds":0.007}"#).unwrap();
        let finish = |status: &str, error: Option<&str>, summary| RunFinish {
            status: status.into(),
            error: error.map(String::from),
            summary,
            items: Vec::new(),
            keep_since: keep(),
        };
        store.sync().run_finish(failed, finish("failed", Some("boom"), failed_summary)).await.unwrap();
        assert!(matches!(confirmable(&store, failed).await, Err(ReconcileError::NothingRefused(id)) if id == failed));
        let refused = store.sync().run_start("schedule").await.unwrap();
        store.sync().run_finish(refused, finish("ok", None, serde_json::from_str(old).unwrap())).await.unwrap();
        let c = confirmable(&store, refused).await.unwrap();
        assert_eq!((c.run_id, c.approved.len()), (refused, 0));
        store.close();
    }
}
