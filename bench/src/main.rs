//! `wse-bench`: measures wse-rs and, in the same run and under the same load, the raw
//! tokio-tungstenite transport, so every figure is a ratio to the transport limit.
//!
//! ```text
//! cargo run --release -p wse-bench -- all
//! cargo run --release -p wse-bench -- rpc --connections 50 --in-flight 16 --duration 5
//! ```
//!
//! Each server under test runs in a fresh process of its own (`wse-bench serve …`), so its
//! memory is its own and a run never inherits another's allocator state. See BENCHMARKS.md.
//!
//! # Layout
//!
//! - `serve`: the servers under test (wse-rs bench application, raw echo, raw fan-out).
//! - `load`: the load generator (raw WebSocket clients, every reply checked).
//! - `report`: the table on stdout and the JSON file.

use std::net::SocketAddr;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

mod load;
mod report;
mod serve;

use load::{Audience, Codec, Dial, Hello};
use report::{Report, Row};
use serve::Target;

#[derive(Debug, Parser)]
#[command(about = "wse-rs benchmarks, as ratios to the raw tokio-tungstenite transport")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
    /// Also write the results as JSON to this file.
    #[arg(long, global = true)]
    json: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Calls/s and latency: C connections × K calls in flight, closed loop.
    Rpc(RpcArgs),
    /// Handshakes/s: connect → hi → welcome → close, with and without the HMAC challenge.
    Handshake(HandshakeArgs),
    /// Server memory per idle authenticated connection.
    Memory(MemoryArgs),
    /// Delivery: broadcast and send-to-a-user messages/s, and the time until the last of N
    /// has one broadcast.
    Fanout(FanoutArgs),
    /// Every mode with its defaults.
    All,
    /// Runs one server under test (used by the other modes; prints `listening ADDR`).
    Serve {
        /// What to serve.
        #[arg(long, value_enum)]
        target: Target,
        /// Port on 127.0.0.1 (0 picks a free one).
        #[arg(long, default_value_t = 0)]
        port: u16,
    },
}

#[derive(Debug, Clone, Args)]
struct RpcArgs {
    /// Connections (C).
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Calls in flight per connection (K).
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    /// Seconds measured, after a second of warm-up.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// A wse server to measure instead of starting wse-rs (e.g. the JS `wse` 4.x), which
    /// must serve `add {a, b}` and accept any identity.
    #[arg(long)]
    url: Option<String>,
}

#[derive(Debug, Clone, Args)]
struct HandshakeArgs {
    /// Cycles in all (N).
    #[arg(long, default_value_t = 5_000)]
    cycles: usize,
    /// Cycles at a time (K).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

#[derive(Debug, Clone, Args)]
struct MemoryArgs {
    /// Idle connections held (N).
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
}

#[derive(Debug, Clone, Args)]
struct FanoutArgs {
    /// Receivers of the throughput run.
    #[arg(long, default_value_t = 50)]
    receivers: usize,
    /// Broadcasts of the throughput run, and sends to one user.
    #[arg(long, default_value_t = 100)]
    rounds: usize,
    /// Devices of the one user sent to.
    #[arg(long, default_value_t = 10)]
    devices: usize,
    /// Receivers of the reach run (one broadcast).
    #[arg(long, default_value_t = 10_000)]
    reach: usize,
}

/// A server under test in a process of its own; killed on drop.
struct Spawned {
    child: Child,
    addr: SocketAddr,
}

impl Spawned {
    async fn start(target: Target) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .args(["serve", "--target"])
            .arg(
                clap::ValueEnum::to_possible_value(&target)
                    .map_or_else(String::new, |v| v.get_name().to_owned()),
            )
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the server: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let line = tokio::time::timeout(
            Duration::from_secs(10),
            BufReader::new(stdout).lines().next_line(),
        )
        .await
        .map_err(|_| "the server did not start")?
        .map_err(|e| e.to_string())?
        .ok_or("the server printed nothing")?;
        let addr = line
            .strip_prefix("listening ")
            .and_then(|addr| addr.parse().ok())
            .ok_or_else(|| format!("unexpected first line {line:?}"))?;
        Ok(Self { child, addr })
    }

    fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Resident memory of the server process, in KiB.
    fn rss_kib(&self) -> Result<u64, String> {
        let pid = self.child.id().ok_or("the server has exited")?;
        let status =
            std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| "no VmRSS".to_owned())
    }
}

fn dial(url: String, codec: Codec, hello: Hello) -> Dial {
    Dial { url, codec, hello }
}

async fn rpc(args: &RpcArgs, report: &mut Report) -> Result<(), String> {
    let (warmup, duration) = (Duration::from_secs(1), Duration::from_secs(args.duration));
    let (c, k) = (args.connections, args.in_flight);
    let echo = Spawned::start(Target::Echo).await?;
    let baseline = load::rpc(
        &dial(echo.url(), Codec::Json, Hello::None),
        c,
        k,
        warmup,
        duration,
    )
    .await?;
    drop(echo);
    let shape = format!("C={c} K={k}");
    report.rpc("raw echo (JSON frames)", &shape, &baseline, None);
    let wse = match &args.url {
        Some(_) => None,
        None => Some(Spawned::start(Target::Wse).await?),
    };
    let url = args
        .url
        .clone()
        .or_else(|| wse.as_ref().map(Spawned::url))
        .ok_or("no server")?;
    for codec in [Codec::Json, Codec::Msgpack] {
        if args.url.is_some() && codec == Codec::Msgpack {
            continue;
        }
        let run = load::rpc(
            &dial(url.clone(), codec, Hello::Wse),
            c,
            k,
            warmup,
            duration,
        )
        .await?;
        let subject = format!(
            "{} ({codec:?})",
            if args.url.is_some() {
                "server at --url"
            } else {
                "wse-rs"
            }
        );
        report.rpc(&subject, &shape, &run, Some(&baseline));
    }
    Ok(())
}

async fn handshake(args: &HandshakeArgs, report: &mut Report) -> Result<(), String> {
    let (n, k) = (args.cycles, args.concurrency);
    let shape = format!("N={n} K={k}");
    let echo = Spawned::start(Target::Echo).await?;
    let baseline = load::handshakes(&dial(echo.url(), Codec::Json, Hello::None), n, k).await?;
    drop(echo);
    let per_second = |elapsed: Duration| n as f64 / elapsed.as_secs_f64();
    report.push(Row::new(
        "handshake",
        "raw echo (connect, a frame each way, close)",
        &shape,
        "handshakes/s",
        per_second(baseline),
    ));
    for (target, hello, name) in [
        (Target::Wse, Hello::Wse, "wse-rs"),
        (Target::WseHmac, Hello::WseHmac, "wse-rs + HMAC challenge"),
    ] {
        let server = Spawned::start(target).await?;
        let elapsed = load::handshakes(&dial(server.url(), Codec::Json, hello), n, k).await?;
        report.push(
            Row::new(
                "handshake",
                name,
                &shape,
                "handshakes/s",
                per_second(elapsed),
            )
            .against(per_second(baseline)),
        );
    }
    Ok(())
}

async fn memory(args: &MemoryArgs, report: &mut Report) -> Result<(), String> {
    let n = args.connections;
    let shape = format!("N={n}");
    let mut baseline = None;
    for (target, hello, name) in [
        (Target::Echo, Hello::None, "raw echo (8 KiB read buffer)"),
        (Target::Wse, Hello::Wse, "wse-rs (authenticated)"),
    ] {
        let server = Spawned::start(target).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = server.rss_kib()?;
        let held = load::hold(&dial(server.url(), Codec::Json, hello), n, 64).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = server.rss_kib()?;
        let per_connection = after.saturating_sub(before) as f64 / n as f64;
        let row =
            Row::new("memory", name, &shape, "KiB/connection", per_connection).lower_is_better();
        report.push(match baseline {
            Some(baseline) => row.against(baseline),
            None => row,
        });
        baseline.get_or_insert(per_connection);
        drop(held);
    }
    Ok(())
}

async fn fanout(args: &FanoutArgs, report: &mut Report) -> Result<(), String> {
    // Each figure: (shape, unit, lower is better, how to measure it).
    let shapes = [
        format!("{} broadcasts to {}", args.rounds, args.receivers),
        format!("{} sends to a user's {} devices", args.rounds, args.devices),
        format!("1 broadcast to {}", args.reach),
    ];
    let mut baselines: Vec<f64> = Vec::new();
    for (target, hello, name) in [
        (Target::Fanout, Hello::None, "raw broadcast"),
        (Target::Wse, Hello::Wse, "wse-rs"),
    ] {
        let runs = [
            (args.receivers, args.rounds, Audience::Everyone),
            (args.devices, args.rounds, Audience::OneUser),
            (args.reach, 1, Audience::Everyone),
        ];
        for (index, (receivers, rounds, audience)) in runs.into_iter().enumerate() {
            // A fresh server for each figure: no run inherits another's connections.
            let server = Spawned::start(target).await?;
            let d = dial(server.url(), Codec::Json, hello);
            let elapsed = load::fanout(&d, receivers, rounds, audience).await?;
            drop(server);
            let row = if rounds == 1 {
                let ms = elapsed.as_secs_f64() * 1000.0;
                Row::new("fanout", name, &shapes[index], "ms to the last", ms).lower_is_better()
            } else {
                let rate = (receivers * rounds) as f64 / elapsed.as_secs_f64();
                Row::new("fanout", name, &shapes[index], "messages/s", rate)
            };
            match baselines.get(index) {
                Some(&baseline) => report.push(row.against(baseline)),
                None => {
                    baselines.push(row.value);
                    report.push(row);
                }
            }
        }
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<Report, String> {
    let mut report = Report::default();
    match cli.mode {
        Mode::Rpc(args) => rpc(&args, &mut report).await?,
        Mode::Handshake(args) => handshake(&args, &mut report).await?,
        Mode::Memory(args) => memory(&args, &mut report).await?,
        Mode::Fanout(args) => fanout(&args, &mut report).await?,
        Mode::All => {
            rpc(
                &RpcArgs {
                    connections: 50,
                    in_flight: 16,
                    duration: 5,
                    url: None,
                },
                &mut report,
            )
            .await?;
            handshake(
                &HandshakeArgs {
                    cycles: 5_000,
                    concurrency: 16,
                },
                &mut report,
            )
            .await?;
            memory(
                &MemoryArgs {
                    connections: 10_000,
                },
                &mut report,
            )
            .await?;
            fanout(
                &FanoutArgs {
                    receivers: 50,
                    rounds: 100,
                    devices: 10,
                    reach: 10_000,
                },
                &mut report,
            )
            .await?;
        }
        Mode::Serve { target, port } => {
            serve::run(target, SocketAddr::from(([127, 0, 0, 1], port)))
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(report)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json.clone();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(report) if report.is_empty() => ExitCode::SUCCESS,
        Ok(report) => {
            print!("{}", report.table());
            if let Some(path) = json {
                if let Err(error) = std::fs::write(&path, report.json()) {
                    eprintln!("cannot write {}: {error}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("benchmark failed: {error}");
            ExitCode::FAILURE
        }
    }
}
