//! CPU time and resident memory of a process, from `/proc` (Linux).

use std::time::Duration;

/// Linux reports CPU times in USER_HZ ticks, 100 per second on every
/// architecture Prism runs on.
const TICKS_PER_SEC: f64 = 100.0;

#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// User + system CPU time.
    pub cpu: Duration,
    /// Resident set size, bytes.
    pub rss: u64,
}

/// `pid` of `self` for this process.
pub fn sample(pid: Option<u32>) -> anyhow::Result<Sample> {
    let dir = match pid {
        Some(p) => format!("/proc/{p}"),
        None => "/proc/self".to_owned(),
    };
    let stat = std::fs::read_to_string(format!("{dir}/stat"))?;
    // The command name (field 2) may hold spaces: count fields after its ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow::anyhow!("{dir}/stat: no ')'"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11, 12.
    let ticks: u64 = fields
        .get(11)
        .and_then(|u| u.parse::<u64>().ok())
        .zip(fields.get(12).and_then(|s| s.parse::<u64>().ok()))
        .map(|(u, s)| u + s)
        .ok_or_else(|| anyhow::anyhow!("{dir}/stat: no utime/stime"))?;
    let status = std::fs::read_to_string(format!("{dir}/status"))?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(Sample {
        cpu: Duration::from_secs_f64(ticks as f64 / TICKS_PER_SEC),
        rss: rss_kb * 1024,
    })
}

/// The pid of the newest process whose command name is `comm`.
pub fn find(comm: &str) -> Option<u32> {
    let mut found: Option<(u64, u32)> = None;
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(c) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
            continue;
        };
        if c.trim_end() != comm {
            continue;
        }
        // Field 22: start time; the newest wins.
        let start = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let rest = s.rsplit_once(')')?.1.to_owned();
                rest.split_whitespace().nth(19)?.parse::<u64>().ok()
            })
            .unwrap_or(0);
        if found.is_none_or(|(s, _)| start >= s) {
            found = Some((start, pid));
        }
    }
    found.map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_itself() {
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        let s = super::sample(None).unwrap();
        assert!(s.rss > 1 << 20, "rss {}", s.rss);
        let me = super::sample(Some(std::process::id())).unwrap();
        assert!(me.cpu >= s.cpu);
    }
}
