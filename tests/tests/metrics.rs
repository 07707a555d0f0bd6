//! The server's metrics move with handshakes, calls, messages and closes.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde_json::{Value, json};
use wse_server::{Connection, Decision, NoArgs, Server};
use wse_tests::{Codec, PATIENCE, Raw, start};

/// The metrics seen so far. The debugging recorder hands each value over once (a counter, and
/// a gauge moved up and down, as the change since the last look), so they are added up here.
struct Totals {
    snapshotter: Snapshotter,
    seen: HashMap<String, f64>,
}

impl Totals {
    fn new(snapshotter: Snapshotter) -> Self {
        Self {
            snapshotter,
            seen: HashMap::new(),
        }
    }

    /// The total of the metric `name` with exactly the labels `labels`.
    fn value(&mut self, name: &str, labels: &[(&str, &str)]) -> f64 {
        for (key, .., value) in self.snapshotter.snapshot().into_vec() {
            let key = key.key();
            let mut id = key.name().to_owned();
            for label in key.labels() {
                id += &format!(" {}={}", label.key(), label.value());
            }
            let value = match value {
                DebugValue::Counter(count) => count as f64,
                DebugValue::Gauge(gauge) => gauge.into_inner(),
                DebugValue::Histogram(values) => values.len() as f64,
            };
            *self.seen.entry(id).or_default() += value;
        }
        let mut id = name.to_owned();
        for (key, value) in labels {
            id += &format!(" {key}={value}");
        }
        self.seen.get(&id).copied().unwrap_or_default()
    }

    /// Waits until the metric reaches `expected` (a close is counted once the closing
    /// handshake ends, after the client saw it).
    async fn reaches(&mut self, name: &str, labels: &[(&str, &str)], expected: f64) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.value(name, labels) != expected {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} {labels:?}: {}, not {expected}",
                self.value(name, labels)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test]
async fn counters_and_gauges_move_with_handshakes_messages_and_closes() {
    let recorder = DebuggingRecorder::new();
    let mut totals = Totals::new(recorder.snapshotter());
    // The server takes its handles when it is built, and a procedure's when it is
    // registered: from this recorder.
    let server = metrics::with_local_recorder(&recorder, || {
        let server = Server::builder(|handshake| async move {
            match handshake.identity.as_str() {
                Some("mallory") | None => Decision::refuse(),
                Some(user) => Decision::accept(user, Value::Null),
            }
        })
        .conn_per_user(2)
        .call_latency(true)
        .build();
        server
            .register("ping", |_: Connection, NoArgs| async { Ok("pong") })
            .unwrap();
        server
    });
    let server = start(server).await;

    let mut ann = Raw::login_identity(server.addr(), Codec::Json, "ann").await;
    let mut phone = Raw::login_identity(server.addr(), Codec::Json, "ann").await;
    let mut bob = Raw::login_identity(server.addr(), Codec::Json, "bob").await;
    let mut mallory = Raw::connect(server.addr(), Codec::Json).await;
    mallory
        .send(&json!(["~wse:hi", {"identity": "mallory"}, null]))
        .await;
    mallory.expect_close(1000, "wse.not-authorized").await;
    totals
        .reaches("wse_handshakes_total", &[("outcome", "accepted")], 3.0)
        .await;
    totals
        .reaches(
            "wse_handshakes_total",
            &[("outcome", "not_authorized")],
            1.0,
        )
        .await;
    totals.reaches("wse_connections", &[], 3.0).await;
    totals.reaches("wse_users", &[], 2.0).await;

    let received = totals.value("wse_messages_received_total", &[]);
    let sent = totals.value("wse_messages_sent_total", &[]);
    for stamp in ["1", "2", "3"] {
        ann.expect_reply(
            &json!(["ping", null, stamp]),
            &json!(["~wse:response", "pong", stamp]),
        )
        .await;
    }
    totals
        .reaches("wse_messages_received_total", &[], received + 3.0)
        .await;
    totals
        .reaches("wse_messages_sent_total", &[], sent + 3.0)
        .await;
    totals
        .reaches(
            "wse_calls_total",
            &[("procedure", "ping"), ("outcome", "ok")],
            3.0,
        )
        .await;
    totals
        .reaches("wse_call_seconds", &[("procedure", "ping")], 3.0)
        .await;
    // A name that is not registered is counted under `-`, whatever the peer sends.
    ann.send(&json!(["no-such-procedure", null, "4"])).await;
    assert_eq!(ann.frame().await[0], "~wse:response-err");
    totals
        .reaches(
            "wse_calls_total",
            &[("procedure", "-"), ("outcome", "not_registered")],
            1.0,
        )
        .await;
    assert!(totals.value("wse_bytes_received_total", &[]) > 0.0);
    assert!(totals.value("wse_outbound_queue_high_water", &[]) >= 1.0);

    // A third device of ann closes the oldest: one connection fewer, and a close of 1000.
    let _laptop = Raw::login_identity(server.addr(), Codec::Json, "ann").await;
    ann.expect_close(1000, "wse.clients-concurrency").await;
    totals.reaches("wse_connections", &[], 3.0).await;
    bob.close(4001, "bye").await;
    phone.close(1000, "wse.by-client").await;
    totals.reaches("wse_connections", &[], 1.0).await;
    totals.reaches("wse_users", &[], 1.0).await;
    totals
        .reaches("wse_closes_total", &[("code", "other")], 1.0)
        .await;
    totals
        .reaches("wse_closes_total", &[("code", "1000")], 2.0)
        .await;
}
