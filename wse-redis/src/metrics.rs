//! The backplane's metrics, through the `metrics` facade like the server's.
//!
//! | name | kind | labels |
//! | --- | --- | --- |
//! | `wse_redis_connected` | gauge | |
//! | `wse_redis_published_total` | counter | |
//! | `wse_redis_received_total` | counter | |
//! | `wse_redis_lost_total` | counter | `reason`: `publish_queue_full`, `publish_failed`, `receive_queue_full`, `malformed` |
//! | `wse_redis_relisted_total` | counter | |
//! | `wse_redis_nodes_gone_total` | counter | |

use metrics::{Counter, Gauge, counter, gauge};

/// Why messages between nodes were lost, as the `reason` label says it.
const LOST: [&str; 4] = [
    "publish_queue_full",
    "publish_failed",
    "receive_queue_full",
    "malformed",
];

pub(crate) struct Metrics {
    connected: Gauge,
    pub(crate) published: Counter,
    pub(crate) received: Counter,
    lost: [Counter; LOST.len()],
    pub(crate) relisted: Counter,
    pub(crate) nodes_gone: Counter,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        Self {
            connected: gauge!("wse_redis_connected"),
            published: counter!("wse_redis_published_total"),
            received: counter!("wse_redis_received_total"),
            lost: LOST.map(|reason| counter!("wse_redis_lost_total", "reason" => reason)),
            relisted: counter!("wse_redis_relisted_total"),
            nodes_gone: counter!("wse_redis_nodes_gone_total"),
        }
    }

    pub(crate) fn connected(&self, connected: bool) {
        self.connected.set(if connected { 1.0 } else { 0.0 });
    }

    /// The counter of messages lost for `reason`, one of [`LOST`].
    pub(crate) fn lost_counter(&self, reason: &str) -> Counter {
        LOST.iter()
            .position(|known| *known == reason)
            .map_or_else(Counter::noop, |at| self.lost[at].clone())
    }

    pub(crate) fn lost(&self, reason: &str, messages: u64) {
        self.lost_counter(reason).increment(messages);
    }
}
