//! Who owns a run: the host, pid and process start of the runner process that created it, and
//! a heartbeat it refreshes while it trains. A run still RUNNING or SCHEDULED whose owner is
//! provably gone (its process on this host no longer exists, or its pid now belongs to another
//! process, or the host rebooted) or whose heartbeat from another host is stale was killed:
//! every command that writes to a store marks such runs KILLED, and read-only commands show
//! them as killed without writing.

use std::time::Duration;

/// The running process, as recorded with each run it creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub host: String,
    pub pid: i64,
    /// `<boot id>/<start time in clock ticks since boot>`: a pid alone is reused.
    pub process_start: String,
}

/// What is known of a run's owner now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// Gone, with the reason shown to the user and recorded as `runner.killed_reason`.
    Gone(String),
}

/// How long a heartbeat from another host (or a run recorded by an older runner, which had no
/// owner) may be silent before the run counts as killed: `RUNNER_STALE_AFTER` seconds, default
/// 600. A live runner beats every [`HEARTBEAT_EVERY`].
pub fn stale_after() -> Duration {
    std::env::var("RUNNER_STALE_AFTER")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(600))
}

pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Field 22 of /proc/PID/stat: the process's start time in clock ticks since boot.
fn start_ticks(pid: i64) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after its end.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

impl Owner {
    pub fn current() -> Owner {
        let pid = std::process::id() as i64;
        Owner {
            host: host_name(),
            pid,
            process_start: format!("{}/{}", boot_id(), start_ticks(pid).unwrap_or(0)),
        }
    }

    /// Whether this owner still runs, judged from this host at `now_ms`, with its last heartbeat.
    pub fn liveness(&self, heartbeat_ms: i64, now_ms: i64) -> Liveness {
        if self.host == host_name() {
            return self.local_liveness();
        }
        stale_heartbeat(&format!("host {}", self.host), heartbeat_ms, now_ms)
    }

    fn local_liveness(&self) -> Liveness {
        let (boot, ticks) = self.process_start.split_once('/').unwrap_or(("", ""));
        if boot != boot_id() {
            return Liveness::Gone(format!(
                "process gone: host {} restarted since pid {} started",
                self.host, self.pid
            ));
        }
        match start_ticks(self.pid) {
            None => Liveness::Gone(format!(
                "process gone: pid {} no longer runs on {}",
                self.pid, self.host
            )),
            Some(t) if t.to_string() != ticks => Liveness::Gone(format!(
                "process gone: pid {} on {} is now another process",
                self.pid, self.host
            )),
            Some(_) => Liveness::Alive,
        }
    }
}

/// A run whose last sign of life (heartbeat, or start for runs that have none) is older than
/// [`stale_after`].
pub fn stale_heartbeat(whose: &str, last_ms: i64, now_ms: i64) -> Liveness {
    let silent = Duration::from_millis((now_ms - last_ms).max(0) as u64);
    if silent > stale_after() {
        Liveness::Gone(format!(
            "heartbeat stale: no sign of life from {whose} for {} s (RUNNER_STALE_AFTER is {} s)",
            silent.as_secs(),
            stale_after().as_secs()
        ))
    } else {
        Liveness::Alive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_dead_pid_is_gone() {
        let me = Owner::current();
        assert_eq!(me.liveness(0, 0), Liveness::Alive);
        let reused = Owner {
            process_start: format!("{}/1", boot_id()),
            ..me.clone()
        };
        assert!(
            matches!(reused.liveness(0, 0), Liveness::Gone(r) if r.contains("another process"))
        );
        let rebooted = Owner {
            process_start: "another-boot/1".into(),
            ..me.clone()
        };
        assert!(matches!(rebooted.liveness(0, 0), Liveness::Gone(r) if r.contains("restarted")));
        let child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i64;
        let mut child = child;
        child.wait().unwrap();
        let gone = Owner { pid, ..me };
        assert!(matches!(gone.liveness(0, 0), Liveness::Gone(r) if r.contains("no longer runs")));
    }

    #[test]
    fn another_hosts_run_is_gone_only_when_its_heartbeat_is_stale() {
        let other = Owner {
            host: "some-other-host".into(),
            pid: 1,
            process_start: "x/1".into(),
        };
        let now = 10_000_000;
        assert_eq!(other.liveness(now - 5_000, now), Liveness::Alive);
        assert!(
            matches!(other.liveness(now - 3_600_000, now), Liveness::Gone(r) if r.contains("heartbeat stale"))
        );
    }
}
