//! Child processes that die with the bench, and what `/proc` says about them.

use std::time::Duration;

use anyhow::Context;
use rustix::process::{kill_process, Pid, Signal};
use tokio::process::Child;

/// A child process that is killed when this is dropped (on error paths too).
pub struct Guard {
    child: Child,
    pid: u32,
}

impl Guard {
    /// `command` must have been built with `kill_on_drop(true)`.
    pub fn new(child: Child) -> anyhow::Result<Self> {
        let pid = child.id().context("the child exited at once")?;
        Ok(Self { child, pid })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the process has exited (and how), without waiting.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub async fn stop(mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        if let Some(pid) = Pid::from_raw(self.pid as i32) {
            let _ = kill_process(pid, Signal::TERM);
        }
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// What a process has used so far.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// Peak resident set (VmHWM), in MiB.
    pub peak_rss_mb: f64,
    /// User plus system CPU time, in seconds.
    pub cpu_s: f64,
}

pub fn usage(pid: u32) -> anyhow::Result<Usage> {
    Ok(Usage {
        peak_rss_mb: peak_rss_mb(pid)?,
        cpu_s: cpu_seconds(pid)?,
    })
}

fn peak_rss_mb(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/PID/status")?;
    Ok(kib / 1024.0)
}

pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let ticks = parse_cpu_ticks(&stat).context("unexpected /proc/PID/stat")?;
    Ok(ticks.own as f64 / rustix::param::clock_ticks_per_second() as f64)
}

/// The CPU seconds of every process named `comm` (e.g. `postgres`), with those of its
/// children that have exited (a server's finished connections): compare two readings.
pub fn cpu_seconds_of(comm: &str) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let ticks: u64 = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim_end() == comm)
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|stat| parse_cpu_ticks(&stat))
        .map(|t| t.own + t.children)
        .sum();
    ticks as f64 / rustix::param::clock_ticks_per_second() as f64
}

/// Clock ticks of CPU of a process, and of its children it has waited for.
#[derive(Debug, PartialEq, Eq)]
struct CpuTicks {
    own: u64,
    children: u64,
}

/// utime + stime (fields 14 and 15) and cutime + cstime (16 and 17), counted after the
/// command name, which may hold spaces.
fn parse_cpu_ticks(stat: &str) -> Option<CpuTicks> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let mut next = || -> Option<u64> { fields.next()?.parse().ok() };
    let (utime, stime, cutime, cstime) = (next()?, next()?, next()?, next()?);
    Some(CpuTicks {
        own: utime + stime,
        children: cutime + cstime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_skip_a_command_name_with_spaces() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 1";
        assert_eq!(
            parse_cpu_ticks(stat),
            Some(CpuTicks {
                own: 300,
                children: 10
            })
        );
    }

    #[test]
    fn this_process_has_a_peak_rss() {
        let usage = usage(std::process::id()).unwrap();
        assert!(usage.peak_rss_mb > 0.0);
    }
}
