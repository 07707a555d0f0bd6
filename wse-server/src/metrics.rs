//! What the server counts, through the [`metrics`](https://docs.rs/metrics) facade: the
//! application installs the recorder (a Prometheus exporter, say), before it builds the
//! server.
//!
//! Every handle is taken once, when the server is built, so that counting a frame costs an
//! atomic add on a handle: no lock, no look-up of a name, no allocation.
//!
//! | name | kind | labels |
//! | --- | --- | --- |
//! | `wse_connections` | gauge | |
//! | `wse_users` | gauge | |
//! | `wse_handshakes_total` | counter | `outcome` |
//! | `wse_messages_received_total`, `wse_messages_sent_total` | counter | |
//! | `wse_bytes_received_total`, `wse_bytes_sent_total` | counter | |
//! | `wse_closes_total` | counter | `code` |
//! | `wse_slow_consumers_total` | counter | |
//! | `wse_rate_limited_total` | counter | |
//! | `wse_outbound_queue_high_water` | gauge | |
//! | `wse_calls_total` | counter | `procedure`, `outcome` |
//! | `wse_call_seconds` | histogram | `procedure` (with [`Builder::call_latency`](crate::Builder::call_latency)) |
//!
//! A call's `procedure` label is a registered procedure's name, or `-` for any other name a
//! peer sends: peers cannot grow the number of series.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use rustc_hash::FxHashMap;
use wse_core::CallOutcome;

use crate::events::Rejection;

/// The close codes counted under their own label; any other is `other`.
const CLOSE_CODES: [u16; 12] = [
    1000, 1001, 1002, 1005, 1006, 1007, 1008, 1009, 1011, 1012, 1013, 4000,
];

/// How a handshake ended, as its `outcome` label says it.
const OUTCOMES: [&str; 14] = [
    "accepted",
    "not_authorized",
    "user_limit",
    "unavailable",
    "protocol_error",
    "no_common_protocol",
    "timeout",
    "gone",
    "upgrade_failed",
    "origin_not_allowed",
    "denied",
    "too_many_connections",
    "too_many_from_address",
    "auth_throttled",
];

/// The server's metric handles.
pub(crate) struct Metrics {
    connections: Gauge,
    users: Gauge,
    handshakes: [Counter; OUTCOMES.len()],
    messages_received: Counter,
    messages_sent: Counter,
    bytes_received: Counter,
    bytes_sent: Counter,
    closes: [Counter; CLOSE_CODES.len()],
    other_closes: Counter,
    slow_consumers: Counter,
    rate_limited: Counter,
    high_water: Gauge,
    /// The largest queue seen so far, so that the gauge is set only when it grows.
    deepest: AtomicUsize,
    /// Each registered procedure's call handles, read without a lock.
    calls: ArcSwap<FxHashMap<Box<str>, Arc<CallMetrics>>>,
    /// The call handles of every name that is not a registered procedure.
    unregistered: Arc<CallMetrics>,
}

/// One procedure's handles: a counter per outcome, and the latency histogram.
struct CallMetrics {
    outcomes: [Counter; CallOutcome::ALL.len()],
    seconds: Histogram,
}

impl CallMetrics {
    fn new(procedure: &str) -> Self {
        Self {
            outcomes: CallOutcome::ALL.map(|outcome| {
                counter!(
                    "wse_calls_total",
                    "procedure" => procedure.to_owned(),
                    "outcome" => outcome.as_str(),
                )
            }),
            seconds: histogram!("wse_call_seconds", "procedure" => procedure.to_owned()),
        }
    }
}

impl Metrics {
    /// Takes every handle from the recorder installed now.
    pub(crate) fn new() -> Self {
        Self {
            connections: gauge!("wse_connections"),
            users: gauge!("wse_users"),
            handshakes: OUTCOMES
                .map(|outcome| counter!("wse_handshakes_total", "outcome" => outcome)),
            messages_received: counter!("wse_messages_received_total"),
            messages_sent: counter!("wse_messages_sent_total"),
            bytes_received: counter!("wse_bytes_received_total"),
            bytes_sent: counter!("wse_bytes_sent_total"),
            closes: CLOSE_CODES
                .map(|code| counter!("wse_closes_total", "code" => code.to_string())),
            other_closes: counter!("wse_closes_total", "code" => "other"),
            slow_consumers: counter!("wse_slow_consumers_total"),
            rate_limited: counter!("wse_rate_limited_total"),
            high_water: gauge!("wse_outbound_queue_high_water"),
            deepest: AtomicUsize::new(0),
            calls: ArcSwap::default(),
            unregistered: Arc::new(CallMetrics::new("-")),
        }
    }

    /// Takes the call handles of `procedure` (once: a name registered again keeps its
    /// series).
    pub(crate) fn procedure_registered(&self, procedure: &str) {
        if self.calls.load().contains_key(procedure) {
            return;
        }
        let handles = Arc::new(CallMetrics::new(procedure));
        self.calls.rcu(|calls| {
            let mut calls = FxHashMap::clone(calls);
            calls
                .entry(procedure.into())
                .or_insert_with(|| Arc::clone(&handles));
            calls
        });
    }

    /// A call of `procedure` ended with `outcome` after `elapsed`.
    pub(crate) fn call_ended(&self, procedure: &str, outcome: CallOutcome, elapsed: Duration) {
        let calls = self.calls.load();
        let handles = calls.get(procedure).unwrap_or(&self.unregistered);
        if let Some(at) = CallOutcome::ALL.iter().position(|o| *o == outcome) {
            handles.outcomes[at].increment(1);
        }
        if !elapsed.is_zero() {
            handles.seconds.record(elapsed.as_secs_f64());
        }
    }

    /// A connection was accepted, and `evicted` connections of this node were taken out to
    /// make room for it.
    pub(crate) fn accepted(&self, user_joined: bool, evicted: usize) {
        self.handshakes[0].increment(1);
        self.connections.increment(1.0 - evicted as f64);
        if user_joined {
            self.users.increment(1.0);
        }
    }

    /// A listed connection was taken out again.
    pub(crate) fn released(&self, user_left: bool) {
        self.connections.decrement(1.0);
        if user_left {
            self.users.decrement(1.0);
        }
    }

    pub(crate) fn rejected(&self, reason: &Rejection) {
        if let Some(at) = OUTCOMES.iter().position(|o| *o == outcome(reason)) {
            self.handshakes[at].increment(1);
        }
    }

    pub(crate) fn received(&self, messages: u64, bytes: u64) {
        self.messages_received.increment(messages);
        self.bytes_received.increment(bytes);
    }

    /// A batch of `frames` frames of `bytes` bytes in all was written: as many as the queue
    /// held.
    pub(crate) fn sent(&self, frames: usize, bytes: usize) {
        self.messages_sent.increment(frames as u64);
        self.bytes_sent.increment(bytes as u64);
        // Read first: the shared line is written only when a queue deeper than any before
        // is seen, which soon is never.
        if frames > self.deepest.load(Ordering::Relaxed) {
            let before = self.deepest.fetch_max(frames, Ordering::Relaxed);
            if frames > before {
                self.high_water.set(frames as f64);
            }
        }
    }

    pub(crate) fn closed(&self, code: u16) {
        match CLOSE_CODES.iter().position(|c| *c == code) {
            Some(at) => self.closes[at].increment(1),
            None => self.other_closes.increment(1),
        }
    }

    pub(crate) fn slow_consumer(&self) {
        self.slow_consumers.increment(1);
    }

    pub(crate) fn rate_limited(&self) {
        self.rate_limited.increment(1);
    }
}

/// The `outcome` label of a handshake refused for `reason`.
fn outcome(reason: &Rejection) -> &'static str {
    match reason {
        Rejection::NotAuthorized => "not_authorized",
        Rejection::UserLimit => "user_limit",
        Rejection::Unavailable(_) => "unavailable",
        Rejection::ProtocolError(_) => "protocol_error",
        Rejection::NoCommonProtocol { .. } => "no_common_protocol",
        Rejection::HandshakeTimeout => "timeout",
        Rejection::Gone => "gone",
        Rejection::Upgrade(_) => "upgrade_failed",
        Rejection::OriginNotAllowed(_) => "origin_not_allowed",
        Rejection::Denied(_) => "denied",
        Rejection::TooManyConnections => "too_many_connections",
        Rejection::TooManyFromAddress => "too_many_from_address",
        Rejection::AuthThrottled => "auth_throttled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_its_own_handshake_series() {
        let reasons = [
            Rejection::Upgrade(String::new()),
            Rejection::OriginNotAllowed(String::new()),
            Rejection::Denied(401),
            Rejection::NoCommonProtocol {
                offered: Vec::new(),
                supported: Vec::new(),
            },
            Rejection::ProtocolError(String::new()),
            Rejection::NotAuthorized,
            Rejection::HandshakeTimeout,
            Rejection::Gone,
            Rejection::TooManyConnections,
            Rejection::TooManyFromAddress,
            Rejection::AuthThrottled,
            Rejection::UserLimit,
            Rejection::Unavailable(String::new()),
        ];
        let mut seen: Vec<_> = reasons.iter().map(outcome).collect();
        assert!(
            seen.iter().all(|label| OUTCOMES.contains(label)),
            "{seen:?}"
        );
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), reasons.len(), "two reasons share a label");
        assert_eq!(OUTCOMES.len(), reasons.len() + 1, "and `accepted`");
    }
}
