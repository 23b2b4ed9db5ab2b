//! `loadgen soak`: whether a write's cost and the daemon's memory stay flat as history grows.
//!
//! Starts the daemon with no target (so the outbox keeps every change, as on a host whose app
//! is down or not configured yet; `--drain` gives it a target that answers at once instead),
//! creates `--users` users, then runs PATCH and lookup rounds back to back for `--minutes`,
//! printing per minute: PATCH/s and p99, the daemon's CPU time per PATCH (whole process and
//! writer thread), lookups/s and p99, the daemon's RSS and the size of
//! the database with its WAL. A flat line is the goal (issue 19, item 4). At the end, per
//! measure: the first and last minute, the least-squares trend and the range, and the writer
//! thread's share of a PATCH's CPU (the store's cost against work that does not depend on
//! the store, so a machine that speeds up or slows down does not move it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;

use crate::{
    PATCH_SCHEMA, Reporter, default_bin, idp_client, round2, run_phase, send, start_daemon, stats, stop_daemon,
    user_body,
};

#[derive(clap::Args, Debug)]
pub(crate) struct SoakArgs {
    /// Daemon binary to start [default: target/release/scimsync]
    #[arg(long, value_name = "PATH")]
    bin: Option<std::path::PathBuf>,
    /// Users created before the rounds start
    #[arg(long, value_name = "N", default_value_t = 10000)]
    users: usize,
    /// How long the rounds run
    #[arg(long, value_name = "MIN", default_value_t = 15)]
    minutes: u64,
    /// Concurrent workers
    #[arg(long, value_name = "N", default_value_t = 32)]
    connections: usize,
    /// Requests in each PATCH round and each lookup round
    #[arg(long, value_name = "N", default_value_t = 2000)]
    round: usize,
    /// Give the daemon a dry-run target, so the outbox drains as fast as it fills
    /// (default: no target, every change stays queued)
    #[arg(long)]
    drain: bool,
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn store_bytes(data_dir: &std::path::Path) -> u64 {
    ["scimsync.db", "scimsync.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(data_dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

pub(crate) async fn run(args: SoakArgs) -> Result<()> {
    let bin = args.bin.clone().unwrap_or_else(default_bin);
    let extra = if args.drain { "[target]\nkind = \"dry-run\"\n[outbox]\npoll_interval_seconds = 0.05\n" } else { "" };
    let (daemon, base, token) = start_daemon(&bin, false, extra).await?;
    let data_dir = daemon.data_dir();
    let client = idp_client(&token, args.connections, 60)?;
    let errors: crate::Errors = Arc::default();
    let mut rep = Reporter::new(false, None);
    rep.line(format!(
        "scimsync soak: {base}  users={} minutes={} round={} connections={} outbox={}",
        args.users,
        args.minutes,
        args.round,
        args.connections,
        if args.drain { "draining (dry-run target)" } else { "held (no target)" }
    ));
    let ids: Arc<Vec<std::sync::OnceLock<String>>> = Arc::new((0..args.users).map(|_| Default::default()).collect());
    {
        let (client, base, ids) = (client.clone(), base.clone(), ids.clone());
        let p = run_phase("create_users", args.users, args.connections, &errors, move |k| {
            let (client, base, ids) = (client.clone(), base.clone(), ids.clone());
            async move {
                let body =
                    send(client.post(format!("{base}/Users")).body(user_body(k).to_string()), "POST", &[201]).await?;
                let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
                let _ = ids[k].set(v["id"].as_str().unwrap_or_default().to_string());
                Ok(())
            }
        })
        .await;
        rep.phase(&p);
    }
    let ids: Arc<Vec<String>> = Arc::new(ids.iter().filter_map(|i| i.get().cloned()).collect());
    rep.line("minute  patch/s  patch p99 ms  cpu us/patch  writer us  lookup/s  lookup p99 ms  rss MB  store MB");
    let start = Instant::now();
    let mut minutes = Vec::new();
    let mut round_no = 0usize;
    for minute in 1..=args.minutes {
        let (mut patches, mut patch_time, mut lookups, mut lookup_time) =
            (Vec::new(), Duration::ZERO, Vec::new(), Duration::ZERO);
        // The daemon's CPU time during the PATCH rounds only (lookups excluded).
        let mut patch_cpu = crate::cpu::CpuTime::default();
        while start.elapsed() < Duration::from_secs(minute * 60) {
            round_no += 1;
            let cpu0 = crate::cpu::sample(daemon.pid);
            let (c, b, ids2, r) = (client.clone(), base.clone(), ids.clone(), round_no);
            let p = run_phase("patch", args.round, args.connections, &errors, move |k| {
                let (c, b) = (c.clone(), b.clone());
                let id = ids2[(k * 7919 + r * 104729) % ids2.len()].clone();
                async move {
                    let body = json!({"schemas": [PATCH_SCHEMA], "Operations": [
                        {"op": "replace", "path": "title", "value": format!("t{r}-{k}")}]});
                    send(c.patch(format!("{b}/Users/{id}")).body(body.to_string()), "PATCH", &[200]).await.map(|_| ())
                }
            })
            .await;
            patch_time += p.elapsed;
            if let (Some(a), Some(b)) = (cpu0, crate::cpu::sample(daemon.pid)) {
                patch_cpu.total += b.total - a.total;
                patch_cpu.writer += b.writer - a.writer;
            }
            patches.extend(p.samples);
            let (c, b, n) = (client.clone(), base.clone(), ids.len());
            let p = run_phase("lookup", args.round, args.connections, &errors, move |k| {
                let (c, b) = (c.clone(), b.clone());
                let i = (k * 31 + r * 17) % n;
                async move {
                    let f = crate::pct_encode(&format!("userName eq \"user{i}@example.com\""));
                    send(c.get(format!("{b}/Users?filter={f}")), "lookup", &[200]).await.map(|_| ())
                }
            })
            .await;
            lookup_time += p.elapsed;
            lookups.extend(p.samples);
        }
        let (ps, ls) = (stats(patches.iter()), stats(lookups.iter()));
        let prate = ps.requests as f64 / patch_time.as_secs_f64().max(1e-9);
        let lrate = ls.requests as f64 / lookup_time.as_secs_f64().max(1e-9);
        let rss = rss_kib(daemon.pid).map(|k| k as f64 / 1024.0).unwrap_or(0.0);
        let db = store_bytes(&data_dir) as f64 / 1_048_576.0;
        let (cpu_us, writer_us) = crate::cpu::CpuTime::default().us_per_request(&patch_cpu, ps.requests);
        rep.line(format!(
            "{minute:>6}  {prate:>7.0}  {:>12.2}  {cpu_us:>12.1}  {writer_us:>9.1}  {lrate:>8.0}  {:>13.2}  {rss:>6.1}  {db:>8.1}",
            crate::ms(ps.p99),
            crate::ms(ls.p99)
        ));
        minutes.push(json!({"minute": minute, "patch_rps": round2(prate), "patch_p99_ms": round2(crate::ms(ps.p99)),
                            "patch_cpu_us": round2(cpu_us), "patch_writer_cpu_us": round2(writer_us),
                            "lookup_rps": round2(lrate), "lookup_p99_ms": round2(crate::ms(ls.p99)),
                            "rss_mb": round2(rss), "store_mb": round2(db), "errors": ps.errors + ls.errors}));
    }
    stop_daemon(daemon).await;
    // Flat or not: the last minute against the first, and the least-squares line through
    // every minute (one noisy minute at either end moves the first figure, not the second),
    // beside the minute-to-minute range for scale.
    rep.line("measure          first     last   change   trend over the run   range of minutes");
    // The share of a PATCH's CPU spent by the store's writer thread: the rest (HTTP, JSON,
    // the PATCH itself) does the same work every minute whatever the store holds, so a
    // faster or slower machine moves both parts alike and this ratio only moves when the
    // store's own cost does.
    let writer_share = |m: &serde_json::Value| {
        let (w, t) = (m["patch_writer_cpu_us"].as_f64()?, m["patch_cpu_us"].as_f64()?);
        (t > 0.0).then(|| round2(100.0 * w / t))
    };
    let mut summary = serde_json::Map::new();
    for (key, label) in [
        ("patch_rps", "patch/s"),
        ("patch_cpu_us", "cpu us/patch"),
        ("writer_share_pct", "writer share %"),
        ("rss_mb", "rss MB"),
    ] {
        let ys: Vec<f64> = minutes
            .iter()
            .filter_map(|m| if key == "writer_share_pct" { writer_share(m) } else { m[key].as_f64() })
            .collect();
        let Some(f) = flatness(&ys) else { continue };
        rep.line(format!(
            "{label:<13} {:>8.1} {:>8.1} {:>+7.1} % {:>+9.1} % {:>17.1}–{:.1}",
            f.first, f.last, f.change_pct, f.trend_pct, f.min, f.max
        ));
        summary.insert(
            key.into(),
            json!({"first": f.first, "last": f.last, "change_pct": round2(f.change_pct),
                   "trend_pct": round2(f.trend_pct), "min": f.min, "max": f.max}),
        );
    }
    println!(
        "{}",
        json!({"bench": "soak", "users": args.users, "drain": args.drain, "minutes": minutes, "summary": summary})
    );
    Ok(())
}

/// How one per-minute series moved over a run.
#[derive(Debug, PartialEq)]
struct Flatness {
    first: f64,
    last: f64,
    /// The last minute against the first, in %.
    change_pct: f64,
    /// The least-squares line's rise from the first minute to the last, in % of the series'
    /// mean.
    trend_pct: f64,
    min: f64,
    max: f64,
}

fn flatness(ys: &[f64]) -> Option<Flatness> {
    let (&first, &last) = (ys.first()?, ys.last()?);
    let n = ys.len() as f64;
    let mean_x = (n - 1.0) / 2.0;
    let mean_y = ys.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (i, y) in ys.iter().enumerate() {
        let dx = i as f64 - mean_x;
        sxy += dx * (y - mean_y);
        sxx += dx * dx;
    }
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let pct = |v: f64, of: f64| if of != 0.0 { 100.0 * v / of } else { 0.0 };
    Some(Flatness {
        first,
        last,
        change_pct: pct(last - first, first),
        trend_pct: pct(slope * (n - 1.0), mean_y),
        min: ys.iter().copied().fold(f64::INFINITY, f64::min),
        max: ys.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    })
}

#[cfg(test)]
mod tests {
    use super::flatness;

    #[test]
    fn a_straight_line_is_its_own_trend_and_noise_around_a_flat_line_is_none() {
        let rising = flatness(&[100.0, 105.0, 110.0, 115.0, 120.0]).unwrap();
        assert_eq!((rising.change_pct, rising.min, rising.max), (20.0, 100.0, 120.0));
        assert!((rising.trend_pct - 100.0 * 20.0 / 110.0).abs() < 1e-9, "{rising:?}");
        // Low at the start, high at the end, flat in between: the ends say +40 %, the
        // line through every minute much less.
        let mut ys = vec![80.0];
        ys.extend([100.0; 10]);
        ys.push(112.0);
        let noisy = flatness(&ys).unwrap();
        assert!((noisy.change_pct - 40.0).abs() < 1e-9);
        assert!((noisy.trend_pct - 13.63).abs() < 0.01, "{noisy:?}");
        assert_eq!(flatness(&[]), None);
        assert_eq!(flatness(&[5.0]).unwrap().trend_pct, 0.0);
    }
}
