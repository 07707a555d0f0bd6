//! CPU time of a process, read from `/proc`: what a server under test and the load generator
//! itself each spend per call.
//!
//! A server's figure is the time each of its threads spent on a CPU
//! (`/proc/<pid>/task/*/schedstat`, in nanoseconds), precise over a window of milliseconds.
//! The generator's is `utime + stime` of `/proc/self/stat`, which also counts threads that
//! have exited, in clock ticks (`USER_HZ`, 100 a second on Linux), so a window of a second or
//! more keeps the rounding under 1 %.

use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::error::LoadError;
use crate::load::Failure;

/// Which process a CPU time is read for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Process {
    /// This process: the load generator.
    Generator,
    /// Another process, by id: a server under test.
    Other(u32),
}

/// CPU time (user + system, every thread) that `process` has used since it started.
///
/// # Errors
/// When `/proc` cannot be read or parsed (not Linux, or the process has exited).
pub(crate) fn used(process: Process) -> Result<Duration, Failure> {
    if let Process::Other(pid) = process {
        // Nanoseconds rather than ticks, for windows of a few milliseconds (a broadcast);
        // a server's threads (tokio's workers) live as long as it does.
        if let Some(used) = threads_on_cpu(pid) {
            return Ok(used);
        }
    }
    let path = match process {
        Process::Generator => "/proc/self/stat".to_owned(),
        Process::Other(pid) => format!("/proc/{pid}/stat"),
    };
    let stat =
        std::fs::read_to_string(&path).map_err(|e| LoadError::local(format!("{path}: {e}")))?;
    let ticks =
        ticks_in(&stat).ok_or_else(|| LoadError::local(format!("{path}: no utime and stime")))?;
    Ok(Duration::from_secs_f64(
        ticks as f64 / ticks_per_second() as f64,
    ))
}

/// The time every live thread of `pid` has spent on a CPU, from `/proc/<pid>/task/*/schedstat`
/// (its first field, in nanoseconds); `None` where the kernel keeps no schedstat.
fn threads_on_cpu(pid: u32) -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let schedstat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += schedstat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// `utime + stime` of a `/proc/<pid>/stat` line, in clock ticks.
fn ticks_in(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces or parentheses of its
    // own: the fields are counted from the last `)`. After it comes field 3 (state), so utime
    // (field 14) and stime (field 15) are the 12th and 13th.
    let (_, after_name) = stat.rsplit_once(')')?;
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second of `/proc`'s times (`USER_HZ`), asked once of `getconf CLK_TCK`.
///
/// Without `getconf` (a minimal container) this is 100: Linux fixes `USER_HZ` at 100 on every
/// architecture but alpha, whatever the kernel's own tick rate.
fn ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100)
    })
}

/// CPU time used by the server under test and by the generator, at one instant.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    /// The server's, when it is a process of ours (not a server at `--url`).
    server: Option<Duration>,
    /// The generator's, where `/proc` tells it (Linux).
    generator: Option<Duration>,
}

impl Sample {
    /// Reads both now; `server` is the server's process id when known.
    ///
    /// # Errors
    /// When `/proc` cannot be read (see [`used`]).
    pub(crate) fn now(server: Option<u32>) -> Result<Self, Failure> {
        Self::of(server.as_slice())
    }

    /// Reads both now, the server's as the sum over the processes `servers` (the nodes of a
    /// cluster and its Redis); none when `servers` is empty.
    ///
    /// # Errors
    /// When `/proc` cannot be read (see [`used`]).
    pub(crate) fn of(servers: &[u32]) -> Result<Self, Failure> {
        let mut server = None;
        for &pid in servers {
            *server.get_or_insert(Duration::ZERO) += used(Process::Other(pid))?;
        }
        Ok(Self {
            server,
            // Only a figure beside the load's own: a machine without `/proc` still runs it.
            generator: used(Process::Generator).ok(),
        })
    }

    /// The CPU time each used from `earlier` until this sample.
    pub(crate) fn since(self, earlier: Self) -> Spent {
        Spent {
            server: self
                .server
                .zip(earlier.server)
                .map(|(now, then)| now.saturating_sub(then)),
            generator: self
                .generator
                .zip(earlier.generator)
                .map(|(now, then)| now.saturating_sub(then)),
        }
    }
}

/// CPU time used over a measured window, by the server and by the generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spent {
    /// The server's, when it is a process of this machine whose id the load was given.
    pub server: Option<Duration>,
    /// The generator's (this whole process), where `/proc` tells it (Linux).
    pub generator: Option<Duration>,
}

impl Spent {
    /// Adds another window's (another round of the same load).
    pub fn add(&mut self, other: Self) {
        self.server = self.server.zip(other.server).map(|(a, b)| a + b);
        self.generator = self.generator.zip(other.generator).map(|(a, b)| a + b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_counted_after_the_last_parenthesis() {
        // A command name with a space and a parenthesis of its own; utime 1234, stime 56.
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194304 100 0 0 0 1234 56 0 0 20 0 3 0 5 0 0";
        assert_eq!(ticks_in(stat), Some(1290));
        assert_eq!(ticks_in("42 (truncated"), None);
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        let spin = (0..1_000_000u64).fold(0u64, |sum, i| sum.wrapping_add(i * i));
        assert!(spin > 0);
        assert!(used(Process::Generator).is_ok());
    }
}
