//! `loadgen reconcile`: the full sync's diff at scale, in process.
//!
//! Setup (timed apart): a fresh store with N users and G groups (group 0 the largest), every
//! change delivered "virtually" (claimed and completed as a successful delivery with an app
//! id and the applied attributes, as the outbox worker records them). Then one
//! `full_sync::run` (report mode) against an in-memory app listing that builds each page on
//! demand, with deterministic drift injected; the run's wall time, its drift counts (checked
//! against what was injected) and the process's peak RSS during the run are printed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};
use tokio::task::JoinSet;

use scimsync::config::ReconcileConfig;
use scimsync::model::ResourceKind;
use scimsync::model::drift::{Cause, Change, DriftKind};
use scimsync::reconcile::ReconcileError;
use scimsync::reconcile::full_sync::{self, Listing, Trigger};
use scimsync::store::{Completion, NewAudit, NewResource, Store, StoreOptions};

use super::{GROUP_SCHEMA, USER_SCHEMA};

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const TITLES: [&str; 7] = ["Engineer", "Analyst", "Manager", "Designer", "Accountant", "Recruiter", "Director"];
const DEPARTMENTS: [&str; 5] = ["Engineering", "Finance", "Sales", "People", "Operations"];
/// Users created (and then delivered) per round of setup.
const SETUP_CHUNK: usize = 2000;

#[derive(clap::Args, Debug)]
pub struct ReconcileArgs {
    /// Users in the store
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    users: usize,

    /// Groups in the store
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    groups: usize,

    /// Members of group 0 (users 0..N); the other groups get 20-60 members each
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    largest: usize,

    /// Accounts per page of the app's listing
    #[arg(long, value_name = "N", default_value_t = 1000)]
    page_size: usize,

    /// Full sync runs, one after the other (the second compares with the first's report)
    #[arg(long, value_name = "N", default_value_t = 1)]
    runs: usize,

    /// Seed of ids, group members and which accounts drift
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,

    /// Store directory [default: a temp dir]. When it already holds a store set up by an
    /// earlier run with the same sizes and seed, setup is skipped (for profiling)
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Print only the final JSON line on stdout
    #[arg(long)]
    json: bool,
}

fn mix(x: u64) -> u64 {
    // splitmix64
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// How one user differs in the app.
#[derive(Debug, Clone, Copy, PartialEq)]
enum UserDrift {
    /// One attribute edited by hand: 0 title, 1 name.familyName, 2 the email, 3 department.
    Edit(u8),
    /// `active` set to false by hand.
    Deactivated,
}

/// Everything the setup and the listing derive from: sizes, ids and the injected drift.
/// Small (a few thousand entries), never the listing itself.
struct Plan {
    users: usize,
    groups: usize,
    largest: usize,
    seed: u64,
    user_drift: HashMap<usize, UserDrift>,
    /// Sorted.
    missing_users: Vec<usize>,
    orphan_users: usize,
    /// Sorted.
    missing_groups: Vec<usize>,
    orphan_groups: usize,
    /// Members the app dropped from a group: group -> user indices.
    dropped: HashMap<usize, HashSet<usize>>,
}

/// What a run should report, from the plan alone.
#[derive(Debug, Default)]
struct Expected {
    counts: BTreeMap<&'static str, u64>,
    listed_users: u64,
    listed_groups: u64,
}

impl Plan {
    fn new(users: usize, groups: usize, largest: usize, seed: u64) -> Plan {
        let mut ctr = 0u64;
        let mut next = |bound: usize| {
            ctr += 1;
            (mix(seed.wrapping_mul(0x1000_0001) ^ ctr) % bound as u64) as usize
        };
        let mut taken = HashSet::new();
        let mut pick = |n: usize, bound: usize, lo: usize, next: &mut dyn FnMut(usize) -> usize| {
            let mut v = Vec::with_capacity(n);
            while v.len() < n {
                let i = lo + next(bound - lo);
                if taken.insert((bound, i)) {
                    v.push(i);
                }
            }
            v
        };
        let edits = pick(users / 100, users, 0, &mut next);
        let deactivated = pick((users / 1000).max(1), users, 0, &mut next);
        let mut missing_users = pick((users / 1000).max(1), users, 0, &mut next);
        missing_users.sort_unstable();
        let mut user_drift = HashMap::new();
        for (k, i) in edits.iter().enumerate() {
            user_drift.insert(*i, UserDrift::Edit((k % 4) as u8));
        }
        for i in &deactivated {
            user_drift.insert(*i, UserDrift::Deactivated);
        }
        // Groups: never group 0 (the largest stays listed, with drops).
        let mut missing_groups = pick((groups / 1000).max(1), groups, 1, &mut next);
        missing_groups.sort_unstable();
        let mut dropped: HashMap<usize, HashSet<usize>> = HashMap::new();
        let mut big = HashSet::new();
        while big.len() < 5.min(largest) {
            big.insert(next(largest));
        }
        dropped.insert(0, big);
        for g in pick(4.min(groups.saturating_sub(1 + missing_groups.len())), groups, 1, &mut next) {
            let members = group_members(seed, users, largest, g);
            dropped.insert(g, [members[next(members.len())]].into_iter().collect());
        }
        Plan {
            users,
            groups,
            largest,
            seed,
            user_drift,
            missing_users,
            orphan_users: (users / 1000).max(1),
            missing_groups,
            orphan_groups: (groups / 1000).max(1),
            dropped,
        }
    }

    fn expected(&self) -> Expected {
        let mut e = Expected::default();
        let edits = self.user_drift.values().filter(|d| matches!(d, UserDrift::Edit(_))).count() as u64;
        let deactivated = self.user_drift.len() as u64 - edits;
        let mut memberships = 0;
        for g in 0..self.groups {
            if self.missing_groups.binary_search(&g).is_ok() {
                continue;
            }
            let want = self.members(g);
            if want.iter().any(|u| self.member_hidden(g, *u)) {
                memberships += 1;
            }
        }
        e.counts.insert("missing_in_app", (self.missing_users.len() + self.missing_groups.len()) as u64);
        e.counts.insert("orphaned_in_app", (self.orphan_users + self.orphan_groups) as u64);
        e.counts.insert("attribute_mismatch", edits);
        e.counts.insert("active_mismatch", deactivated);
        e.counts.insert("membership_mismatch", memberships);
        e.counts.insert("stuck_provision", 0);
        e.listed_users = (self.users - self.missing_users.len() + self.orphan_users) as u64;
        e.listed_groups = (self.groups - self.missing_groups.len() + self.orphan_groups) as u64;
        e
    }

    fn members(&self, g: usize) -> Vec<usize> {
        group_members(self.seed, self.users, self.largest, g)
    }

    /// The app does not list user `u` among group `g`'s members: dropped there by hand, or
    /// the user is gone from the app altogether.
    fn member_hidden(&self, g: usize, u: usize) -> bool {
        self.missing_users.binary_search(&u).is_ok() || self.dropped.get(&g).is_some_and(|d| d.contains(&u))
    }
}

/// Group 0: users 0..largest; the others 20-60 users spread over all of them.
fn group_members(seed: u64, users: usize, largest: usize, g: usize) -> Vec<usize> {
    if g == 0 {
        return (0..largest.min(users)).collect();
    }
    let h = mix(seed ^ ((g as u64) << 24) ^ 0x0067_726f_7570);
    let n = 20 + (h % 41) as usize;
    let mut v: Vec<usize> = (0..n as u64).map(|k| (mix(h ^ k) % users as u64) as usize).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// A UUID-shaped id, random-looking (so the index on ids is filled as with real UUIDs),
/// whose last 12 hex digits are the kind (0 user, 1 group) and the index.
fn our_id(seed: u64, group: bool, i: usize) -> String {
    let h = mix(seed ^ ((group as u64) << 56) ^ (i as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{}{:011x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        8 + ((h >> 12) & 3),
        (h >> 40) & 0xfff,
        group as u8,
        i
    )
}

fn app_id(our: &str) -> String {
    format!("app-{our}")
}

/// The user as the IdP pushes it.
fn idp_user(i: usize) -> Value {
    json!({
        "schemas": [USER_SCHEMA, ENTERPRISE],
        "userName": format!("user{i}@example.com"),
        "externalId": format!("ext-{i}"),
        "name": {"givenName": format!("G{i}"), "familyName": format!("F{i}")},
        "displayName": format!("G{i} F{i}"),
        "emails": [{"value": format!("user{i}@example.com"), "type": "work", "primary": true}],
        "title": TITLES[i % TITLES.len()],
        "active": true,
        ENTERPRISE: {"department": DEPARTMENTS[i % DEPARTMENTS.len()], "employeeNumber": format!("{i}")}
    })
}

fn meta(kind: &str, id: &str) -> Value {
    json!({"resourceType": kind, "created": "2026-01-05T09:00:00Z", "lastModified": "2026-03-01T12:30:00Z",
           "version": "W/\"3\"", "location": format!("https://app.example.com/scim/v2/{kind}s/{id}")})
}

impl Plan {
    /// User `i` as the app lists it: what we sent, what the app adds, and the drift.
    fn app_user(&self, i: usize) -> Value {
        let mut v = idp_user(i);
        let id = app_id(&our_id(self.seed, false, i));
        v["name"]["formatted"] = json!(format!("G{i} F{i}"));
        v["meta"] = meta("User", &id);
        v["id"] = json!(id);
        match self.user_drift.get(&i) {
            Some(UserDrift::Edit(0)) => v["title"] = json!("Edited by hand"),
            Some(UserDrift::Edit(1)) => v["name"]["familyName"] = json!("Renamed"),
            Some(UserDrift::Edit(2)) => v["emails"][0]["value"] = json!(format!("moved{i}@example.org")),
            Some(UserDrift::Edit(_)) => v[ENTERPRISE]["department"] = json!("Moved"),
            Some(UserDrift::Deactivated) => v["active"] = json!(false),
            None => {}
        }
        v
    }

    fn app_orphan_user(&self, j: usize) -> Value {
        let id = format!("app-orphan-user-{j}");
        json!({"schemas": [USER_SCHEMA], "id": id, "userName": format!("stranger{j}@example.net"),
               "name": {"givenName": "S", "familyName": format!("{j}")},
               "emails": [{"value": format!("stranger{j}@example.net"), "type": "work", "primary": true}],
               "active": true, "meta": meta("User", &id)})
    }

    fn app_group(&self, g: usize) -> Value {
        let id = app_id(&our_id(self.seed, true, g));
        let members: Vec<Value> = self
            .members(g)
            .into_iter()
            .filter(|u| !self.member_hidden(g, *u))
            .map(|u| json!({"value": app_id(&our_id(self.seed, false, u)), "display": format!("user{u}@example.com")}))
            .collect();
        json!({"schemas": [GROUP_SCHEMA], "id": id, "displayName": format!("group-{g}"),
               "externalId": format!("gext-{g}"), "members": members, "meta": meta("Group", &id)})
    }

    fn app_orphan_group(&self, j: usize) -> Value {
        let id = format!("app-orphan-group-{j}");
        json!({"schemas": [GROUP_SCHEMA], "id": id, "displayName": format!("stranger-group-{j}"),
               "members": [{"value": app_id(&our_id(self.seed, false, j))}], "meta": meta("Group", &id)})
    }
}

/// The app's listing, each page built when asked for (ordered: our accounts the app has,
/// in creation order, then the app's own).
struct AppListing {
    plan: Arc<Plan>,
    page_size: usize,
    /// Time spent building pages (the bench's own work, inside the run's time).
    build_nanos: std::sync::atomic::AtomicU64,
}

impl AppListing {
    fn make_page(&self, kind: ResourceKind, start: u64) -> (Vec<Value>, Option<u64>) {
        let p = &self.plan;
        let (n, missing, orphans) = match kind {
            ResourceKind::User => (p.users, &p.missing_users, p.orphan_users),
            ResourceKind::Group => (p.groups, &p.missing_groups, p.orphan_groups),
        };
        let present = n - missing.len();
        let total = present + orphans;
        let first = start.saturating_sub(1) as usize;
        if first >= total {
            return (Vec::new(), None);
        }
        let end = (first + self.page_size.max(1)).min(total);
        let mut out = Vec::with_capacity(end - first);
        let mut pos = first;
        if pos < present {
            // The index of the pos-th account not missing.
            let mut i = pos;
            for &m in missing.iter() {
                if m <= i {
                    i += 1;
                } else {
                    break;
                }
            }
            while pos < end.min(present) {
                if missing.binary_search(&i).is_err() {
                    out.push(match kind {
                        ResourceKind::User => p.app_user(i),
                        ResourceKind::Group => p.app_group(i),
                    });
                    pos += 1;
                }
                i += 1;
            }
        }
        while pos < end {
            let j = pos - present;
            out.push(match kind {
                ResourceKind::User => p.app_orphan_user(j),
                ResourceKind::Group => p.app_orphan_group(j),
            });
            pos += 1;
        }
        (out, (end < total).then_some(end as u64 + 1))
    }
}

impl Listing for AppListing {
    async fn page(&self, kind: ResourceKind, at: Option<&str>) -> Result<(Vec<Value>, Option<String>), ReconcileError> {
        let start = at.map_or(Ok(1), |s| s.parse::<u64>().map_err(|_| ReconcileError::BadPageToken(s.to_string())))?;
        let clock = Instant::now();
        let (page, next) = self.make_page(kind, start);
        self.build_nanos.fetch_add(clock.elapsed().as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok((page, next.map(|n| n.to_string())))
    }

    /// Never needed: every listed group carries its members (the sync reads a group on its
    /// own only when an app leaves them out of lists). An error, so a change that starts
    /// calling it shows up instead of measuring something else.
    async fn get(&self, kind: ResourceKind, app_id: &str) -> Result<Option<Value>, ReconcileError> {
        Err(ReconcileError::Other(format!(
            "the bench listing does not serve single reads ({}/{app_id})",
            kind.segment()
        )))
    }
}

// ---------------------------------------------------------------------------
// Setup

/// Create resources concurrently (the single writer batches them), then deliver every
/// outbox row "virtually": claim and complete as a successful delivery that recorded the
/// app id and what was applied, as the outbox worker does.
async fn create_and_deliver(store: &Store, items: Vec<(ResourceKind, String, Value)>) -> Result<()> {
    let mut set = JoinSet::new();
    for (kind, id, body) in items {
        let store = store.clone();
        set.spawn(async move {
            let parsed = scimsync::scim::resource::parse_input(kind, body).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let new = NewResource { kind, id, attrs: parsed.attrs, members: parsed.members.unwrap_or_default() };
            let r =
                store.resources().create(new, NewAudit::new("bench", "POST", kind.as_str())).await.context("create")?;
            Ok::<_, anyhow::Error>((r.id.clone(), (r.meta.version, scimsync::downstream::representation(&r))))
        });
    }
    let mut applied: HashMap<String, (u64, Map<String, Value>)> = HashMap::new();
    while let Some(r) = set.join_next().await {
        let (id, a) = r.context("create task")??;
        applied.insert(id, a);
    }
    let applied = Arc::new(std::sync::Mutex::new(applied));
    loop {
        let lease = scimsync::model::time_after(std::time::Duration::from_secs(600));
        let claimed = store.outbox().claim(SETUP_CHUNK, 16, lease, None).await.context("claim")?;
        if claimed.bundles.is_empty() {
            break;
        }
        let mut set = JoinSet::new();
        for b in claimed.bundles {
            let store = store.clone();
            let applied = applied.clone();
            set.spawn(async move {
                let id = b.head().resource_id.clone();
                let a = applied.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                let done =
                    Completion::Success { id_map: Some(Some(app_id(&id))), applied: a, note: None, recreated: false };
                store.outbox().complete(&b, scimsync::model::now(), done).await.context("complete")
            });
        }
        while let Some(r) = set.join_next().await {
            r.context("complete task")??;
        }
    }
    Ok(())
}

async fn setup(store: &Store, plan: &Plan) -> Result<()> {
    let seed = plan.seed;
    for lo in (0..plan.users).step_by(SETUP_CHUNK) {
        let hi = (lo + SETUP_CHUNK).min(plan.users);
        let items = (lo..hi).map(|i| (ResourceKind::User, our_id(seed, false, i), idp_user(i))).collect();
        create_and_deliver(store, items).await?;
    }
    let chunk = 200;
    for lo in (0..plan.groups).step_by(chunk) {
        let hi = (lo + chunk).min(plan.groups);
        let items = (lo..hi)
            .map(|g| {
                let members: Vec<Value> = plan
                    .members(g)
                    .into_iter()
                    .map(|u| json!({"value": our_id(seed, false, u), "type": "User"}))
                    .collect();
                let body = json!({"schemas": [GROUP_SCHEMA], "displayName": format!("group-{g}"),
                                  "externalId": format!("gext-{g}"), "members": members});
                (ResourceKind::Group, our_id(seed, true, g), body)
            })
            .collect();
        create_and_deliver(store, items).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Memory

/// A `kB` field of /proc/self/status.
fn status_kib(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    line[field.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()
}

/// Reset the kernel's peak-RSS mark (VmHWM) to the current RSS.
fn reset_peak() -> Result<()> {
    std::fs::write("/proc/self/clear_refs", "5").context("resetting VmHWM through /proc/self/clear_refs")
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_memory() {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: glibc's malloc_trim only returns free heap memory to the kernel.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}

/// CPU time of the whole process (all threads), user + system, in seconds.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // After the command name in parentheses: state is field 3, utime 14 and stime 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // USER_HZ is 100 on Linux.
    (ticks(14) + ticks(15)) as f64 / 100.0
}

fn mb(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

// ---------------------------------------------------------------------------

pub async fn run(args: ReconcileArgs) -> Result<()> {
    if args.users < 100 || args.groups < 2 || args.largest == 0 || args.largest > args.users {
        bail!("need --users >= 100, --groups >= 2 and 0 < --largest <= --users");
    }
    let say = |s: String| {
        if args.json {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    };
    let tmp;
    let dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir().context("temp dir")?;
            tmp.path().to_path_buf()
        }
    };
    let reuse = dir.join("scimsync.db").exists();
    let store =
        Store::open(&StoreOptions { data_dir: dir.clone(), busy_timeout_seconds: 5, readers: 4, max_batch: 256 })
            .map_err(|e| anyhow::anyhow!("opening the store in {}: {e}", dir.display()))?;
    let plan = Arc::new(Plan::new(args.users, args.groups, args.largest, args.seed));
    let expected = plan.expected();
    say(format!(
        "scimsync reconcile bench: users={} groups={} largest={} page_size={} store={}",
        args.users,
        args.groups,
        args.largest,
        args.page_size,
        dir.display()
    ));

    let clock = Instant::now();
    if !reuse {
        setup(&store, &plan).await?;
    }
    let setup_secs = clock.elapsed().as_secs_f64();
    let memberships: usize = (0..plan.groups).map(|g| plan.members(g).len()).sum();
    if reuse {
        say(format!("setup: reusing the store in {} (its earlier reports count as the previous run)", dir.display()));
    } else {
        say(format!(
            "setup: {} users, {} groups ({memberships} memberships) created and delivered in {setup_secs:.1} s (not timed below)",
            plan.users, plan.groups
        ));
    }
    say(format!(
        "injected: {} attribute edits, {} deactivated, {} users and {} groups missing in the app, \
         {} orphan users and {} orphan groups, members dropped from {} groups (plus groups of missing users)",
        plan.user_drift.values().filter(|d| matches!(d, UserDrift::Edit(_))).count(),
        plan.user_drift.values().filter(|d| **d == UserDrift::Deactivated).count(),
        plan.missing_users.len(),
        plan.missing_groups.len(),
        plan.orphan_users,
        plan.orphan_groups,
        plan.dropped.len()
    ));

    let listing = AppListing { plan: plan.clone(), page_size: args.page_size, build_nanos: Default::default() };
    let cfg = ReconcileConfig { schedule: String::new(), ..ReconcileConfig::default() };
    let mut runs_json = Vec::new();
    let mut mismatches = 0;
    for n in 1..=args.runs.max(1) {
        release_free_memory();
        let rss_before = status_kib("VmRSS").unwrap_or(0);
        reset_peak()?;
        listing.build_nanos.store(0, std::sync::atomic::Ordering::Relaxed);
        let cpu0 = cpu_seconds();
        let clock = Instant::now();
        let res = full_sync::run(&store, &listing, &cfg, false, Trigger::Manual, None)
            .await
            .map_err(|e| anyhow::anyhow!("full sync: {e}"))?;
        let secs = clock.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        let peak = status_kib("VmHWM").unwrap_or(0);
        let build = listing.build_nanos.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e9;
        if res.status != "ok" {
            bail!("run {n} {}: {}", res.status, res.error.unwrap_or_default());
        }
        let Some(s) = res.summary.report.as_ref() else {
            bail!("run {n}: a completed run without a report");
        };
        say(format!(
            "run {n}: {secs:.2} s wall, {:.0} users/s ({:.0} accounts/s), RSS before {:.1} MB, peak during the run {:.1} MB",
            plan.users as f64 / secs,
            (plan.users + plan.groups) as f64 / secs,
            mb(rss_before),
            mb(peak)
        ));
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        say(format!(
            "  CPU {cpu:.2} s (user+sys, all threads), of which building the listing's pages {build:.2} s; load average {}",
            load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
        ));
        let listed = (s.listed.users, s.listed.groups);
        say(format!("  listed: {} users, {} groups", listed.0, listed.1));
        if listed != (expected.listed_users, expected.listed_groups) {
            mismatches += 1;
            say(format!(
                "  MISMATCH listed: expected {} users, {} groups",
                expected.listed_users, expected.listed_groups
            ));
        }
        for (kind, want) in &expected.counts {
            let got = DriftKind::parse(kind).map(|k| s.counts.get(k)).unwrap_or(0);
            let flag = if got == *want {
                String::new()
            } else {
                mismatches += 1;
                format!("  <-- MISMATCH: injected {want}")
            };
            say(format!("  {kind:<20} {got:>6}{flag}"));
        }
        say(format!("  total {}, new {}, resolved {}", s.total, s.new, s.resolved));
        // Causes: every injected difference was delivered first, then changed in the app.
        let items = store.sync().drift_items(res.run_id).await.map_err(|e| anyhow::anyhow!("drift items: {e}"))?;
        let mut causes: BTreeMap<String, u64> = BTreeMap::new();
        for it in items.iter().filter(|i| i.change != Change::Resolved) {
            *causes.entry(format!("{}/{}", it.kind.as_str(), it.cause.as_str())).or_default() += 1;
            let delivered_then_edited =
                matches!(it.kind, DriftKind::AttributeMismatch | DriftKind::ActiveMismatch | DriftKind::MissingInApp);
            if delivered_then_edited && it.cause != Cause::EditedInApp {
                mismatches += 1;
                say(format!(
                    "  MISMATCH cause: {} {} {:?} is {}, expected edited_in_app",
                    it.kind.as_str(),
                    it.name,
                    it.attribute,
                    it.cause.as_str()
                ));
            }
        }
        runs_json.push(json!({
            "run": n,
            "wall_seconds": (secs * 1000.0).round() / 1000.0,
            "users_per_second": (plan.users as f64 / secs).round(),
            "cpu_seconds": (cpu * 100.0).round() / 100.0,
            "listing_build_seconds": (build * 1000.0).round() / 1000.0,
            "rss_before_mb": mb(rss_before),
            "peak_rss_mb": mb(peak),
            "summary": s,
            "causes": causes,
        }));
    }
    store.close();
    let out = json!({
        "bench": "scimsync-reconcile",
        "users": plan.users,
        "groups": plan.groups,
        "largest": plan.largest,
        "page_size": args.page_size,
        "setup_seconds": (setup_secs * 10.0).round() / 10.0,
        "expected": {"counts": expected.counts, "listed_users": expected.listed_users, "listed_groups": expected.listed_groups},
        "runs": runs_json,
        "mismatches": mismatches,
    });
    println!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_pages_cover_every_account_once_and_skip_the_missing() {
        let plan = Arc::new(Plan::new(2_000, 20, 300, 7));
        let listing = AppListing { plan: plan.clone(), page_size: 333, build_nanos: Default::default() };
        let mut ids = HashSet::new();
        let mut start = Some(1);
        while let Some(s) = start {
            let (page, next) = listing.make_page(ResourceKind::User, s);
            assert!(page.len() == 333 || next.is_none());
            for v in page {
                assert!(ids.insert(v["id"].as_str().unwrap().to_string()));
            }
            start = next;
        }
        let e = plan.expected();
        assert_eq!(ids.len() as u64, e.listed_users);
        for m in &plan.missing_users {
            assert!(!ids.contains(&app_id(&our_id(7, false, *m))));
        }
        assert_eq!(ids.iter().filter(|i| i.starts_with("app-orphan")).count(), plan.orphan_users);
        assert!(e.counts["membership_mismatch"] >= 1);
    }

    #[test]
    fn ids_are_distinct_and_carry_kind_and_index() {
        let a = our_id(1, false, 12345);
        assert_eq!(a.len(), 36);
        assert!(a.ends_with("-000000003039"), "{a}");
        assert_ne!(our_id(1, false, 1), our_id(1, true, 1));
    }
}
