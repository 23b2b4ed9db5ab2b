//! The daemon's CPU time, read from `/proc`: what a request costs the server, a figure that
//! varies far less than requests/s on a machine whose cores are shared (issue 19, item 3).

use std::path::Path;

/// Clock ticks per second of `/proc/*/stat`'s `utime` and `stime` (`USER_HZ`): 100 on every
/// Linux architecture the daemon is built for.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds used so far: the whole process, and its store writer thread.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CpuTime {
    pub(crate) total: f64,
    pub(crate) writer: f64,
}

impl CpuTime {
    /// CPU time between `self` (earlier) and `later`, in microseconds per request.
    pub(crate) fn us_per_request(&self, later: &CpuTime, requests: usize) -> (f64, f64) {
        let n = requests.max(1) as f64;
        ((later.total - self.total) * 1e6 / n, (later.writer - self.writer) * 1e6 / n)
    }
}

/// `utime + stime` in seconds from a `stat` file. The command name (field 2) is in
/// parentheses and may hold spaces, so the fields are counted after its closing one.
fn stat_seconds(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11); // state is field 3; utime is field 14
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

/// The daemon's CPU time now, or `None` when `/proc` cannot be read (not Linux, or gone).
pub(crate) fn sample(pid: u32) -> Option<CpuTime> {
    let total = stat_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    let mut writer = 0.0;
    let tasks = Path::new("/proc").join(pid.to_string()).join("task");
    for t in std::fs::read_dir(tasks).ok()?.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() == "scimsync-writer" {
            writer += std::fs::read_to_string(t.path().join("stat")).ok().and_then(|s| stat_seconds(&s)).unwrap_or(0.0);
        }
    }
    Some(CpuTime { total, writer })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_and_stime_past_a_command_with_spaces() {
        let stat = "4242 (a b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0 100 200 300";
        assert_eq!(stat_seconds(stat), Some(3.0));
    }

    #[test]
    fn this_process_has_a_cpu_time() {
        let now = sample(std::process::id()).expect("/proc/self readable");
        assert!(now.total >= 0.0 && now.writer == 0.0);
    }
}
