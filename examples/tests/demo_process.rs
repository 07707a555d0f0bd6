//! The demo binary as a process: it prints where it listens, and a client survives the
//! server being killed (SIGKILL) mid-call: the pending call fails with the disconnect code at
//! once, the client reconnects with backoff when the server comes back, and calls work again.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use wse_client::{CallError, Client, Reconnect, Status};

const PATIENCE: Duration = Duration::from_secs(20);

/// Starts the demo binary with `args`; returns the process and its plain and HMAC addresses.
async fn demo(args: &[&str]) -> (Child, SocketAddr, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_demo"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the demo binary");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .expect("the demo prints where it listens")
        .expect("read stdout")
        .expect("a first line");
    let addresses: Vec<SocketAddr> = line
        .split_whitespace()
        .filter_map(|word| {
            word.trim_start_matches("ws://")
                .trim_end_matches(')')
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(addresses.len(), 2, "{line}");
    (child, addresses[0], addresses[1])
}

#[tokio::test]
async fn the_demo_binary_serves_both_ports() {
    let (_child, plain, hmac) = demo(&["--port", "0"]).await;
    let client = Client::builder(format!("ws://{plain}")).build();
    let welcome = client
        .connect(json!("secret"), json!({"user_id": "ann"}))
        .await
        .unwrap();
    assert_eq!(welcome, json!({"cid": "ann", "meta": {"user_id": "ann"}}));
    let hmac_client = Client::builder(format!("ws://{hmac}"))
        .hmac_secret("s3cret")
        .build();
    let welcome = hmac_client
        .connect(json!("secret"), json!({"user_id": "ann"}))
        .await
        .unwrap();
    assert_eq!(welcome["cra"], json!(true));
}

#[tokio::test]
async fn a_client_survives_the_server_being_killed_mid_call() {
    let (mut child, plain, _) = demo(&["--port", "0"]).await;
    let client = Client::builder(format!("ws://{plain}"))
        .reconnect(Reconnect {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(400),
            jitter: Duration::from_millis(50),
        })
        .build();
    client
        .connect(json!("secret"), json!({"user_id": "ann"}))
        .await
        .unwrap();
    let pending = tokio::spawn(client.call::<Value, _>("delay", &json!({"ms": 5000, "value": 1})));
    tokio::time::sleep(Duration::from_millis(100)).await;

    child.kill().await.expect("SIGKILL the demo");
    let killed = Instant::now();
    let failed = tokio::time::timeout(Duration::from_secs(1), pending)
        .await
        .expect("the pending call fails within 1 s")
        .unwrap();
    assert_eq!(failed, Err(CallError::Disconnected));
    assert!(killed.elapsed() < Duration::from_secs(1));

    let mut status = client.status_changes();
    tokio::time::timeout(PATIENCE, status.wait_for(|s| *s == Status::Reconnecting))
        .await
        .expect("the client waits to reconnect")
        .unwrap();

    // The server returns on the same port.
    let (_child, again, _) = demo(&["--port", &plain.port().to_string(), "--hmac-port", "0"]).await;
    assert_eq!(again, plain);
    tokio::time::timeout(PATIENCE, status.wait_for(|s| *s == Status::Ready))
        .await
        .expect("the client reconnects by itself")
        .unwrap();
    let sum: i64 = client.call("add", &json!({"a": 2, "b": 3})).await.unwrap();
    assert_eq!(sum, 5);
}
