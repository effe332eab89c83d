//! The `process_*` families, named as Prometheus' client libraries name
//! them (open and max file descriptors, resident and virtual memory, CPU
//! seconds, start time), read from `/proc/self` at scrape time. Off Linux,
//! or when `/proc` is not mounted, the families are left out.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One scrape's figures.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessStats {
    /// File descriptors open now.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// Resident set size, bytes.
    pub resident_memory_bytes: Option<u64>,
    /// Virtual memory size, bytes.
    pub virtual_memory_bytes: Option<u64>,
    /// User and system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// When the process started, seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

impl ProcessStats {
    /// Reads `/proc/self`; what cannot be read stays `None`.
    pub fn read() -> ProcessStats {
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| max_open_files(&l));
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|k| k * 1024)
        };
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let fields = stat.as_deref().and_then(stat_fields);
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        });
        ProcessStats {
            open_fds,
            max_fds,
            resident_memory_bytes: kib("VmRSS:"),
            virtual_memory_bytes: kib("VmSize:"),
            cpu_seconds: fields
                .as_ref()
                .filter(|_| ticks > 0.0)
                .map(|f| (f.utime + f.stime) as f64 / ticks),
            start_time_seconds: fields
                .as_ref()
                .zip(boot)
                .filter(|_| ticks > 0.0)
                .map(|(f, boot)| boot as f64 + f.starttime as f64 / ticks)
                .or_else(|| Some(fallback_start())),
        }
    }
}

/// When this scrape thinks the process started, when `/proc` cannot say.
fn fallback_start() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

struct StatFields {
    utime: u64,
    stime: u64,
    starttime: u64,
}

/// Fields 14, 15 and 22 of `/proc/self/stat`, counted after the command
/// name, which is in parentheses and may hold spaces.
fn stat_fields(stat: &str) -> Option<StatFields> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let get = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(StatFields {
        utime: get(14)?,
        stime: get(15)?,
        starttime: get(22)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_limits() {
        let stat = "1234 (frame hub) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 9000 123456 789 18446744073709551615";
        let f = stat_fields(stat).expect("fields");
        assert_eq!((f.utime, f.stime, f.starttime), (250, 50, 9000));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
    }

    #[test]
    fn reads_this_process() {
        let p = ProcessStats::read();
        assert!(p.open_fds.expect("open fds") >= 3);
        assert!(p.max_fds.expect("max fds") >= p.open_fds.expect("open fds"));
        assert!(p.resident_memory_bytes.expect("rss") > 1 << 20);
        assert!(p.cpu_seconds.expect("cpu") >= 0.0);
        let start = p.start_time_seconds.expect("start");
        let now = fallback_start();
        assert!(
            start <= now + 1.0 && start > now - 86400.0 * 365.0,
            "{start} vs {now}"
        );
    }
}
