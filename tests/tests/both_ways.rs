//! Both ends writing large amounts to each other at once (issue 12: one socket driver for
//! both ends): while a write waits for the peer, each end goes on reading, so neither waits
//! for the other until one gives the other up as a slow consumer.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use wse_client::{Client, ClientEvent};
use wse_server::{Connection, Decision, Server};
use wse_tests::{start, within};

/// Messages each way, and their size: together far more than the sockets' buffers hold.
const MESSAGES: usize = 40;
const SIZE: usize = 512 << 10;

#[tokio::test]
async fn two_ends_that_write_at_once_both_get_everything() {
    let at_server = Arc::new(AtomicUsize::new(0));
    let server = Server::builder(|_| async { Decision::accept("ann", Value::Null) })
        .close_timeout(Duration::from_secs(2))
        .rate_limit(None)
        .build();
    let counted = Arc::clone(&at_server);
    server
        .on("blob", move |_: Connection, _: String| {
            counted.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    server
        .on("start", |conn: Connection, _: Value| {
            let blob = "s".repeat(SIZE);
            for _ in 0..MESSAGES {
                conn.send("blob", &blob).unwrap();
            }
        })
        .unwrap();
    let server = start(server).await;

    let at_client = Arc::new(AtomicUsize::new(0));
    let client = Client::builder(server.url())
        .close_timeout(Duration::from_secs(2))
        .build();
    let counted = Arc::clone(&at_client);
    client
        .on("blob", move |_, _: String| {
            counted.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    let mut events = client.events();
    within("connect", client.connect(json!("ann"), json!({})))
        .await
        .unwrap();

    // The server starts filling the socket towards the client while the client fills it
    // towards the server.
    client.send("start", &()).unwrap();
    let blob = "c".repeat(SIZE);
    for _ in 0..MESSAGES {
        client.send("blob", &blob).unwrap();
    }
    within("every message both ways", async {
        while at_server.load(Ordering::SeqCst) < MESSAGES
            || at_client.load(Ordering::SeqCst) < MESSAGES
        {
            if let Ok(ClientEvent::Closed { code, reason }) = events.try_recv() {
                panic!("closed with {code} {reason:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(client.status(), wse_client::Status::Ready);
    client.close("wse.by-client").await;
}
