//! What the `wse` binary's test files share: running it to its end, bounded.

#![allow(dead_code, unreachable_pub, clippy::expect_used)]

use std::ffi::OsStr;
use std::process::Output;
use std::time::Duration;

use tokio::process::Command;

/// How long any single wait may take.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Runs `wse` with `args` to its end (it must end by itself within [`PATIENCE`]).
pub async fn wse<S: AsRef<OsStr>>(args: &[S]) -> Output {
    let running = Command::new(env!("CARGO_BIN_EXE_wse"))
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(PATIENCE, running)
        .await
        .expect("wse ends by itself")
        .expect("wse runs")
}

/// Output bytes as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
