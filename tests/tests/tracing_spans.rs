//! Log lines carry their connection's span (connection id, remote address, codec, user) and
//! their call's (procedure, stamp).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use wse_server::{Connection, Decision, Server};
use wse_tests::{Codec, Raw, start, within};

/// Every line the subscriber writes, kept for the test to read.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

// One thread: the subscriber set for this test is the one every task of the server sees.
#[tokio::test(flavor = "current_thread")]
async fn a_handlers_log_line_carries_its_connection_and_its_call() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let server = Server::builder(|handshake| async move {
        match handshake.identity.as_str() {
            Some(user) => Decision::accept(user, Value::Null),
            None => Decision::refuse(),
        }
    })
    .build();
    server
        .register("note", |_: Connection, text: String| async move {
            tracing::info!(%text, "noted");
            Ok(true)
        })
        .unwrap();
    server
        .register("note_later", |_: Connection, text: String| async move {
            tokio::task::yield_now().await;
            tracing::info!(%text, "noted later");
            Ok(true)
        })
        .unwrap();
    let server = start(server).await;
    let mut raw = Raw::login_identity(server.addr(), Codec::Json, "ann").await;
    within(
        "note",
        raw.expect_reply(
            &json!(["note", "hello", "s1"]),
            &json!(["~wse:response", true, "s1"]),
        ),
    )
    .await;
    within(
        "note later",
        raw.expect_reply(
            &json!(["note_later", "again", "s2"]),
            &json!(["~wse:response", true, "s2"]),
        ),
    )
    .await;

    let text = captured.text();
    for (message, stamp) in [("noted", "s1"), ("noted later", "s2")] {
        let line = text
            .lines()
            .find(|line| line.contains(message) && line.contains(stamp))
            .unwrap_or_else(|| panic!("no line for {message:?} in:\n{text}"));
        assert!(line.contains("wse_connection{connection=c"), "{line}");
        assert!(line.contains("codec=wse-default-json"), "{line}");
        assert!(line.contains("user=ann"), "{line}");
        assert!(line.contains("wse_call{procedure=note"), "{line}");
        assert!(line.contains(&format!("stamp={stamp}}}")), "{line}");
    }
}
