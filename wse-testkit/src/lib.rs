//! What the workspace's tests share across crates: a `redis-server` of a test's own, on a free
//! port of 127.0.0.1 (never the machine's Redis on 6379), that the test can kill and start
//! again on the same port.
//!
//! ```no_run
//! use wse_testkit::RedisServer;
//!
//! let mut redis = RedisServer::start();
//! let url = redis.url(); // redis://127.0.0.1:<port>/
//! redis.kill();          // SIGKILL: what it held is lost
//! redis.restart();       // empty, same port
//! ```

#![allow(clippy::expect_used)]

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a started `redis-server` may take to answer.
const STARTUP: Duration = Duration::from_secs(10);

/// A `redis-server` process; killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` on a free port of 127.0.0.1, keeping nothing on disk.
    ///
    /// # Panics
    /// With a message saying what to install when `redis-server` is not on the `PATH`.
    pub fn start() -> Self {
        ensure_redis_server();
        let port = free_port();
        let mut process = Self { port, child: None };
        process.restart();
        process
    }

    /// The URL clients connect to.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server at once (SIGKILL): what it held is lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty; waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start redis-server ({error}): the cluster tests start their own \
                     Redis; scripts/ensure-redis could not install it: install Redis 7"
                )
            });
        self.child = Some(child);
        wait_until_answering(SocketAddr::from(([127, 0, 0, 1], self.port)));
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `scripts/ensure-redis` once per test binary: it installs redis-server when it is
/// missing (the project's tests need nothing installed by hand).
fn ensure_redis_server() {
    static ENSURED: std::sync::Once = std::sync::Once::new();
    ENSURED.call_once(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/ensure-redis");
        match std::process::Command::new(script).status() {
            Ok(status) if status.success() => {}
            other => eprintln!("{script} did not install redis-server: {other:?}"),
        }
    });
}

/// A port of 127.0.0.1 free at the time of asking.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port on 127.0.0.1")
}

/// Waits until `PING` gets `+PONG`.
fn wait_until_answering(addr: SocketAddr) {
    use std::io::{Read, Write};
    let deadline = Instant::now() + STARTUP;
    while Instant::now() < deadline {
        if let Ok(mut tcp) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
        {
            let _ = tcp.set_read_timeout(Some(Duration::from_millis(500)));
            let mut answer = [0u8; 7];
            if tcp.write_all(b"PING\r\n").is_ok()
                && tcp.read_exact(&mut answer).is_ok()
                && &answer == b"+PONG\r\n"
            {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("redis-server on {addr} did not answer within {STARTUP:?}");
}
