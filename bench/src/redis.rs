//! A `redis-server` of the harness's own, for the cluster mode: on a free port of 127.0.0.1,
//! keeping nothing on disk, killed when dropped. Never a Redis the machine already runs.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// A failure of the harness, in words.
type Failure = String;

/// How long a started `redis-server` may take to answer `PING`.
const STARTUP: Duration = Duration::from_secs(10);

/// Ports tried: another process may take the free port found before `redis-server` binds it.
const ATTEMPTS: usize = 3;

/// A `redis-server` process; killed on drop.
#[derive(Debug)]
pub(crate) struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    /// Starts `program` (`redis-server`, or a path to it) on a free port of 127.0.0.1, with no
    /// snapshot and no append-only file, and waits until it answers.
    ///
    /// # Errors
    /// When the program cannot be run (saying how to install it), or does not answer within
    /// 10 s on any of three ports.
    pub(crate) async fn start(program: &str) -> Result<Self, Failure> {
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            let port = free_port().await?;
            let mut child = Command::new(program)
                .args(["--bind", "127.0.0.1", "--port"])
                .arg(port.to_string())
                .args(["--save", "", "--appendonly", "no"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|error| cannot_run(program, &error))?;
            match answering(&mut child, port).await {
                Ok(()) => return Ok(Self { child, port }),
                Err(error) => last = error,
            }
        }
        Err(format!("{program} did not start: {last}"))
    }

    /// The URL the nodes connect to.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server's process id, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the server and waits for it to exit.
    pub(crate) async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Whether `program` runs at all (`--version`).
///
/// # Errors
/// When it cannot be run, saying how to install it.
pub(crate) async fn check(program: &str) -> Result<(), Failure> {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .map(drop)
        .map_err(|error| cannot_run(program, &error))
}

fn cannot_run(program: &str, error: &std::io::Error) -> Failure {
    format!(
        "cannot run {program} ({error}): the cluster mode runs a Redis of its own; install it \
         (Debian: `apt-get install redis-server`) or name it with `cluster --redis-server PATH`"
    )
}

/// A port of 127.0.0.1 nobody listens on right now.
async fn free_port() -> Result<u16, Failure> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("no free port on 127.0.0.1: {e}"))?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

/// Waits until the server started as `child` answers `PING` on `port`, or exits.
async fn answering(child: &mut Child, port: u16) -> Result<(), Failure> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + STARTUP;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("it exited ({status}) on port {port}"));
        }
        if pong(addr).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill().await;
    Err(format!("no answer on port {port} within {STARTUP:?}"))
}

/// Whether `PING` on `addr` gets `+PONG` within half a second.
async fn pong(addr: SocketAddr) -> bool {
    let ping = async {
        let mut tcp = TcpStream::connect(addr).await.ok()?;
        tcp.write_all(b"PING\r\n").await.ok()?;
        let mut answer = [0u8; 7];
        tcp.read_exact(&mut answer).await.ok()?;
        Some(&answer == b"+PONG\r\n")
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), ping).await,
        Ok(Some(true))
    )
}
