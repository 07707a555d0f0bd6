//! Running the demo binary as a process, for the tests that drive it from outside.

#![allow(dead_code, unreachable_pub, clippy::expect_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long any single wait may take.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Fails the test if `future` takes longer than [`PATIENCE`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: nothing within {PATIENCE:?}"),
    }
}

/// Starts the demo binary with `args`; returns the process (killed on drop) and its plain
/// and HMAC addresses, read from the first line it prints.
pub async fn demo(args: &[&str]) -> (Child, SocketAddr, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_demo"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the demo binary");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = within("the demo to say where it listens", lines.next_line())
        .await
        .expect("read stdout")
        .expect("a first line: the demo exited before it listened");
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

/// Runs the demo binary with `args` to its end (it must end by itself).
pub async fn run_demo(args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_demo"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the demo binary");
    within("the demo to exit", child.wait_with_output())
        .await
        .expect("the demo's output")
}
