//! When and how soon a client reconnects.

use std::time::Duration;

use wse_core::close_code;

/// Reconnect policy: exponential backoff with jitter, on the close codes of `PROTOCOL.md`
/// (1005, 1006, 1011, 1012, 1013, 1014 and 4000), never after a refusal or any other 1000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconnect {
    /// The delay before the first retry. Default: 1 s (as the `wse` JS client).
    pub initial: Duration,
    /// The longest delay between retries. Default: 30 s.
    pub max: Duration,
    /// A random extra delay of up to this much, so that clients dropped together do not all
    /// come back at once. Default: 1 s.
    pub jitter: Duration,
}

impl Default for Reconnect {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            jitter: Duration::from_secs(1),
        }
    }
}

impl Reconnect {
    /// The delay before retry number `attempt` (0 for the first).
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self
            .initial
            .saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX))
            .min(self.max);
        let jitter = self.jitter.mul_f64(rand::random::<f64>());
        base + jitter
    }

    /// Whether a connection that ended with `code` is worth retrying.
    pub fn retries_after(code: u16) -> bool {
        close_code::RECONNECT_ON.contains(&code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let policy = Reconnect {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
            jitter: Duration::from_millis(10),
        };
        for (attempt, base) in [(0, 100), (1, 200), (2, 400), (3, 500), (40, 500)] {
            let delay = policy.delay(attempt);
            assert!(delay >= Duration::from_millis(base), "{attempt}: {delay:?}");
            assert!(
                delay <= Duration::from_millis(base + 10),
                "{attempt}: {delay:?}"
            );
        }
    }

    #[test]
    fn retries_only_on_the_documented_codes() {
        for code in [1005, 1006, 1011, 1012, 1013, 1014, 4000] {
            assert!(Reconnect::retries_after(code));
        }
        for code in [1000, 1001, 1002, 1008, 1009, 4001] {
            assert!(!Reconnect::retries_after(code));
        }
    }
}
