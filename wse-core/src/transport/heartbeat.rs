//! Liveness of the peer: ping it when it has been quiet, give it up when it has been silent.

use std::time::Duration;

use tokio::time::Instant;

/// Close code and reason for a peer that went silent past the heartbeat timeout. 1011, so
/// that a `wse` client with reconnect enabled, alive after all, comes back.
pub const HEARTBEAT_TIMEOUT: (u16, &str) = (1011, "wse.heartbeat-timeout");

/// Liveness of the peer: ping it when it has been quiet for `interval`, give it up when
/// nothing at all (data, ping, pong) came from it for `timeout`.
///
/// Pings are WebSocket control frames: browsers and every WebSocket library answer them on
/// their own, so a `wse` peer needs nothing to take part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// How long the peer may be quiet before it is pinged; also how often the check runs.
    pub interval: Duration,
    /// How long the peer may be silent before the connection is closed with
    /// [`HEARTBEAT_TIMEOUT`].
    pub timeout: Duration,
}

impl Default for Heartbeat {
    /// Pings after 25 s of quiet (under the usual 30–60 s idle timeouts of proxies), gives up
    /// after 60 s of silence.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(25),
            timeout: Duration::from_secs(60),
        }
    }
}

impl Heartbeat {
    /// Checks the settings, for the builders that take a heartbeat.
    ///
    /// # Panics
    /// If the interval is zero or longer than the timeout.
    pub fn checked(self) -> Self {
        assert!(
            !self.interval.is_zero() && self.interval <= self.timeout,
            "the heartbeat interval must be positive and within the timeout"
        );
        self
    }
}

/// What the heartbeat asks for at a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pulse {
    /// The peer was heard recently: nothing to do.
    Alive,
    /// The peer has been quiet: ping it.
    Ping,
    /// The peer has been silent too long: close.
    Dead,
}

/// The heartbeat of one connection, owned by its read loop.
#[derive(Debug)]
pub struct Liveness {
    heartbeat: Heartbeat,
    /// When the peer was last known to be alive, to the precision of a tick.
    last_heard: Instant,
    /// Whether anything came since the last tick: a flag, so that hearing costs no clock
    /// read per message.
    heard_since_tick: bool,
    ticker: tokio::time::Interval,
}

impl Liveness {
    /// Starts watching a peer heard from just now.
    pub fn new(heartbeat: Heartbeat) -> Self {
        let mut ticker =
            tokio::time::interval_at(super::deadline(heartbeat.interval), heartbeat.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            heartbeat,
            last_heard: Instant::now(),
            heard_since_tick: false,
            ticker,
        }
    }

    /// Something came from the peer.
    pub fn heard(&mut self) {
        self.heard_since_tick = true;
    }

    /// Waits for the next check and says what to do. Cancel-safe.
    pub async fn tick(&mut self) -> Pulse {
        let now = self.ticker.tick().await;
        if std::mem::take(&mut self.heard_since_tick) {
            self.last_heard = now;
        }
        let quiet = now.saturating_duration_since(self.last_heard);
        if quiet >= self.heartbeat.timeout {
            Pulse::Dead
        } else if quiet >= self.heartbeat.interval {
            Pulse::Ping
        } else {
            Pulse::Alive
        }
    }
}

/// Waits for the next heartbeat check, or forever without a heartbeat.
pub async fn pulse(liveness: &mut Option<Liveness>) -> Pulse {
    match liveness {
        Some(liveness) => liveness.tick().await,
        None => std::future::pending().await,
    }
}
