//! `wse-bench`: measures wse-rs and, in the same run and under the same load, the raw
//! tokio-tungstenite transport, so every figure is a ratio to the transport limit.
//!
//! ```text
//! cargo run --release -p wse-bench -- all
//! cargo run --release -p wse-bench -- rpc --connections 50 --in-flight 16 --duration 5
//! cargo run --release -p wse-bench -- cluster   # needs redis-server on the PATH
//! ```
//!
//! Each server under test runs in a fresh process of its own (`wse-bench serve …`), so its
//! memory is its own and a run never inherits another's allocator state. See BENCHMARKS.md.
//!
//! # Layout
//!
//! - `serve`: the servers under test (wse-rs bench application, alone or a node of a cluster
//!   over Redis; raw echo, raw fan-out).
//! - `redis`: the cluster mode's own `redis-server`, on a free port.
//! - `report`: the table on stdout and the JSON file.
//!
//! The load generator is the `wse-load` crate, the same code for wse-rs and the baselines
//! (and for `wse bench` against any server), every reply checked: connections made by
//! tokio-tungstenite (upgrade, then the wse handshake), then the RPC callers, the fan-out
//! receivers and the sends to a user on one thread of their own, speaking frames by hand
//! so that the generator takes as little as it can of the cores it shares with the server;
//! and the CPU time of a server and of the generator itself, from `/proc`.

use std::net::SocketAddr;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

mod redis;
mod report;
mod serve;

use redis::RedisServer;
use report::{Report, Row};
use serve::{Cluster, SECRET, Target};
use wse_load::{self as load, Audience, Call, Codec, Dial, Fanout, Hello, Login, Relay, Rpc};

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
    /// Delivery to N receivers: the time until the last has one broadcast, and messages/s
    /// of a few broadcasts; and, as figures that last milliseconds, broadcasts to a few
    /// receivers and sends to one user's devices.
    Fanout(FanoutArgs),
    /// Two wse-rs nodes joined over a Redis of its own against one node: sends to a user
    /// from one node to the other against the same within one node (latency one at a time,
    /// and messages/s), and handshakes/s with the cluster-wide admission against the
    /// in-memory one. Needs `redis-server`.
    Cluster(ClusterArgs),
    /// Every mode with its defaults (the cluster mode too: needs `redis-server`).
    All,
    /// Runs one server under test (used by the other modes; prints `listening ADDR`).
    Serve {
        /// What to serve.
        #[arg(long, value_enum)]
        target: Target,
        /// Port on 127.0.0.1 (0 picks a free one).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Joins a cluster over the Redis at URL (`redis://127.0.0.1:PORT/`; wse-rs targets
        /// only): the servers started with the same Redis and prefix are its nodes.
        #[arg(long, value_name = "URL", value_parser = redis_url)]
        redis: Option<String>,
        /// The key and channel prefix of that cluster.
        #[arg(
            long,
            value_name = "P",
            default_value = "wse-bench",
            requires = "redis",
            value_parser = non_empty
        )]
        redis_prefix: String,
    },
}

/// `--redis`: a Redis URL the cluster can use (TCP, no TLS).
fn redis_url(value: &str) -> Result<String, String> {
    match value.strip_prefix("redis://") {
        Some(rest) if !rest.is_empty() => Ok(value.to_owned()),
        _ => Err("expected a Redis URL such as redis://127.0.0.1:6390/".to_owned()),
    }
}

fn non_empty(value: &str) -> Result<String, String> {
    if value.is_empty() {
        Err("expected a non-empty prefix".to_owned())
    } else {
        Ok(value.to_owned())
    }
}

#[derive(Debug, Clone, Args)]
struct RpcArgs {
    /// Connections (C).
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Calls in flight per connection (K).
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    /// Seconds measured for each server, after half a second of warm-up per round.
    #[arg(long, default_value_t = 6)]
    duration: u64,
    /// Rounds the measurement is split into, the servers taking turns, so that a change in
    /// the machine's speed (shared cores) weighs on the baseline and wse-rs alike.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// A wse server to measure instead of starting wse-rs (e.g. the JS `wse` 4.x), which
    /// must serve `add {a, b}` and accept any identity.
    #[arg(long)]
    url: Option<String>,
    /// Also measure wse-rs (JSON) counting into a Prometheus recorder, without and with the
    /// call latency histogram, against wse-rs without a recorder.
    #[arg(long)]
    metrics: bool,
}

#[derive(Debug, Clone, Args)]
struct HandshakeArgs {
    /// Cycles in all (N).
    #[arg(long, default_value_t = 5_000)]
    cycles: usize,
    /// Cycles at a time (K).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Rounds the cycles are split into, the servers taking turns.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
}

#[derive(Debug, Clone, Args)]
struct MemoryArgs {
    /// Idle connections held (N).
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
}

#[derive(Debug, Clone, Args)]
struct FanoutArgs {
    /// Receivers of the small broadcast run.
    #[arg(long, default_value_t = 50)]
    receivers: usize,
    /// Broadcasts of the small broadcast run, and sends to one user.
    #[arg(long, default_value_t = 100)]
    rounds: usize,
    /// Devices of the one user sent to.
    #[arg(long, default_value_t = 10)]
    devices: usize,
    /// Receivers of the reach runs: one broadcast (the time to the last receiver), and
    /// `--reach-rounds` broadcasts (messages/s).
    #[arg(long, default_value_t = 10_000)]
    reach: usize,
    /// Broadcasts of the reach throughput run.
    #[arg(long, default_value_t = 3)]
    reach_rounds: usize,
    /// Members of the room of the room run, and the broadcast it is compared with.
    #[arg(long, default_value_t = 1_000)]
    room_members: usize,
    /// Connections held in all during the room run: the members, and the rest in no room.
    #[arg(long, default_value_t = 10_000)]
    room_among: usize,
    /// Sends to the room (and broadcasts to as many) of the room run.
    #[arg(long, default_value_t = 20)]
    room_rounds: usize,
    /// Times each figure is measured, the servers taking turns: messages/s adds them up, the
    /// time to the last takes the median (one run takes milliseconds, and the shared machine
    /// jitters).
    #[arg(long, default_value_t = 5)]
    repeat: u32,
}

#[derive(Debug, Clone, Args)]
struct ClusterArgs {
    /// Sends to a user measured one at a time, for the latency, per subject in all (within
    /// 4,000 a round, as below).
    #[arg(long, default_value_t = 2_000)]
    sends: usize,
    /// Sends to a user measured in flight together, for messages/s, per subject in all. A
    /// round's share stays within 4,000: a node of a cluster queues at most 4,096 sends for
    /// publishing (wse-redis's default), and within one node they are delivered, so
    /// answered, faster than it publishes them.
    #[arg(long, default_value_t = 9_000)]
    pipelined: usize,
    /// Sends in flight together.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Handshake cycles in all (N), per server.
    #[arg(long, default_value_t = 5_000)]
    cycles: usize,
    /// Handshake cycles at a time (K).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Rounds the measurements are split into, the subjects taking turns.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// The `redis-server` program to run (on a free port of 127.0.0.1, nothing kept on disk).
    #[arg(long, value_name = "PATH", default_value = "redis-server")]
    redis_server: String,
}

/// The most sends to a user a relay run of the cluster mode makes in flight together: within
/// one node they are answered faster than the node publishes them, and wse-redis queues at
/// most 4,096 for publishing (`RedisConfig::queue`) before a send fails.
const PUBLISH_BURST: usize = 4_000;

/// A server under test in a process of its own; killed on drop.
struct Spawned {
    child: Child,
    addr: SocketAddr,
}

impl Spawned {
    async fn start(target: Target) -> Result<Self, String> {
        Self::start_with_cluster(target, None).await
    }

    /// Starts `target`, a node of `cluster` when given.
    async fn start_with_cluster(target: Target, cluster: Option<&Cluster>) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut command = Command::new(exe);
        command.args(["serve", "--target"]).arg(
            clap::ValueEnum::to_possible_value(&target)
                .map_or_else(String::new, |v| v.get_name().to_owned()),
        );
        if let Some(cluster) = cluster {
            command
                .args(["--redis", &cluster.redis])
                .args(["--redis-prefix", &cluster.prefix]);
        }
        let mut child = command
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

    /// The server's process id, while it runs.
    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Resident memory of the server process, in KiB.
    fn rss_kib(&self) -> Result<u64, String> {
        let pid = self.pid().ok_or("the server has exited")?;
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

/// How a connection to the wse-rs bench application gets ready: any string identity is that
/// user.
fn named() -> Hello {
    Hello::Wse(Login::named())
}

async fn rpc(args: &RpcArgs, report: &mut Report) -> Result<(), String> {
    let rounds = args.rounds.max(1);
    let warmup = Duration::from_millis(500);
    let slice = Duration::from_secs(args.duration) / rounds;
    let (c, k) = (args.connections, args.in_flight);
    let echo = Spawned::start(Target::Echo).await?;
    let wse = match &args.url {
        Some(_) => None,
        None => Some(Spawned::start(Target::Wse).await?),
    };
    let url = args
        .url
        .clone()
        .or_else(|| wse.as_ref().map(Spawned::url))
        .ok_or("no server")?;
    let subject = if args.url.is_some() {
        "server at --url"
    } else {
        "wse-rs"
    };
    // The baseline first, then each codec of the server under test.
    // Each with the id of the server's process, whose CPU time is measured.
    let mut subjects = vec![(
        "raw echo (JSON frames)".to_owned(),
        dial(echo.url(), Codec::Json, Hello::None),
        echo.pid(),
    )];
    for codec in [Codec::Json, Codec::Msgpack] {
        if args.url.is_none() || codec == Codec::Json {
            subjects.push((
                format!("{subject} ({codec:?})"),
                dial(url.clone(), codec, named()),
                wse.as_ref().and_then(Spawned::pid),
            ));
        }
    }
    // The cost of the metrics: each compared with wse-rs (JSON) without a recorder.
    let mut counted = Vec::new();
    if args.metrics && args.url.is_none() {
        for (target, name) in [
            (
                Target::WseMetrics,
                "wse-rs with metrics (JSON; ratio to wse-rs without)",
            ),
            (
                Target::WseMetricsLatency,
                "wse-rs with metrics and call latency (JSON; ratio to wse-rs without)",
            ),
        ] {
            let server = Spawned::start(target).await?;
            subjects.push((
                name.to_owned(),
                dial(server.url(), Codec::Json, named()),
                server.pid(),
            ));
            counted.push(server);
        }
    }
    let calls = Rpc {
        connections: c,
        in_flight: k,
        warmup,
        duration: slice,
        call: Call::add(),
    };
    let mut runs: Vec<Option<load::RpcRun>> = subjects.iter().map(|_| None).collect();
    for _ in 0..rounds {
        for ((_, dial, pid), total) in subjects.iter().zip(&mut runs) {
            let run = load::rpc(dial, &calls, *pid).await?;
            match total {
                Some(total) => total.merge(run)?,
                None => *total = Some(run),
            }
        }
    }
    let shape = format!("C={c} K={k}");
    let runs: Vec<_> = subjects.iter().zip(runs.iter().flatten()).collect();
    let ((name, _, _), baseline) = runs.first().ok_or("no baseline run")?;
    report.rpc(name, &shape, baseline, None);
    let (measured, with_metrics) = runs[1..].split_at(runs.len() - 1 - counted.len());
    for ((name, _, _), run) in measured {
        report.rpc(name, &shape, run, Some(baseline));
    }
    if let Some((_, without_metrics)) = measured.first() {
        for ((name, _, _), run) in with_metrics {
            report.rpc(name, &shape, run, Some(without_metrics));
        }
    }
    Ok(())
}

async fn handshake(args: &HandshakeArgs, report: &mut Report) -> Result<(), String> {
    let (n, k) = (args.cycles, args.concurrency);
    // Every round does at least one cycle.
    let rounds = (args.rounds as usize).clamp(1, n.max(1));
    let shape = format!("N={n} K={k}");
    let subjects = [
        (
            Target::Echo,
            Hello::None,
            "raw echo (connect, a frame each way, close)",
        ),
        (Target::Wse, named(), "wse-rs"),
        (
            Target::WseHmac,
            Hello::Wse(Login::named().hmac_secret(SECRET)),
            "wse-rs + HMAC challenge",
        ),
    ];
    let mut servers = Vec::with_capacity(subjects.len());
    for (target, _, _) in &subjects {
        servers.push(Spawned::start(*target).await?);
    }
    // The servers take turns, each round a share of the cycles.
    let mut elapsed = vec![Duration::ZERO; subjects.len()];
    let mut done = vec![0; subjects.len()];
    for round in 0..rounds {
        let cycles = n / rounds + usize::from(round < n % rounds);
        for (i, ((_, hello, _), server)) in subjects.iter().zip(&servers).enumerate() {
            let d = dial(server.url(), Codec::Json, hello.clone());
            elapsed[i] += load::handshakes(&d, cycles, k, None).await?;
            done[i] += cycles;
        }
    }
    let rates: Vec<f64> = elapsed
        .iter()
        .zip(done)
        .map(|(elapsed, done)| done as f64 / elapsed.as_secs_f64())
        .collect();
    for (i, (_, _, name)) in subjects.iter().enumerate() {
        let row = Row::new("handshake", name, &shape, "handshakes/s", rates[i]);
        report.push(if i == 0 { row } else { row.against(rates[0]) });
    }
    Ok(())
}

async fn memory(args: &MemoryArgs, report: &mut Report) -> Result<(), String> {
    let n = args.connections;
    let shape = format!("N={n}");
    let mut baseline = None;
    for (target, hello, name) in [
        (Target::Echo, Hello::None, "raw echo (8 KiB read buffer)"),
        (Target::Wse, named(), "wse-rs (authenticated)"),
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

/// How a fan-out figure sums up its repetitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Summary {
    /// The median time until the last receiver has every message, in ms.
    MedianTime,
    /// Messages delivered per second, over all repetitions.
    Rate,
}

async fn fanout(args: &FanoutArgs, report: &mut Report) -> Result<(), String> {
    // The reach figures first: the time to the last of N, and messages/s to N. The small
    // ones last milliseconds and are noisy: figures to read beside the raw server's, not to
    // hold to a target.
    let figures = [
        (
            format!("1 broadcast to {}", args.reach),
            args.reach,
            1,
            Audience::Everyone,
            Summary::MedianTime,
        ),
        (
            format!("{} broadcasts to {}", args.reach_rounds, args.reach),
            args.reach,
            args.reach_rounds,
            Audience::Everyone,
            Summary::Rate,
        ),
        (
            format!("{} broadcasts to {}", args.rounds, args.receivers),
            args.receivers,
            args.rounds,
            Audience::Everyone,
            Summary::Rate,
        ),
        (
            format!("{} sends to a user's {} devices", args.rounds, args.devices),
            args.devices,
            args.rounds,
            Audience::OneUser,
            Summary::Rate,
        ),
    ];
    let subjects = [
        (Target::Fanout, Hello::None, "raw broadcast"),
        (Target::Wse, named(), "wse-rs"),
    ];
    for (shape, receivers, rounds, audience, summary) in figures {
        // Each subject's time for every repetition, and its server's CPU time in all.
        let mut times = subjects.each_ref().map(|_| Vec::<Duration>::new());
        let mut server_cpu = subjects.each_ref().map(|_| Duration::ZERO);
        for _ in 0..args.repeat.max(1) {
            for (((target, hello, _), times), cpu) in
                subjects.iter().zip(&mut times).zip(&mut server_cpu)
            {
                // A fresh server each time: no run inherits another's connections.
                let server = Spawned::start(*target).await?;
                let d = dial(server.url(), Codec::Json, hello.clone());
                let shape = Fanout {
                    receivers,
                    rounds,
                    audience,
                    trigger: None,
                };
                let (time, spent) = load::fanout(&d, &shape, server.pid(), None).await?;
                times.push(time);
                *cpu += spent.server.unwrap_or_default();
            }
        }
        // The server's CPU per message delivered, over every repetition.
        let delivered = (receivers * rounds * args.repeat.max(1) as usize) as f64;
        let cpu_per_message = server_cpu.map(|cpu| cpu.as_secs_f64() * 1e6 / delivered);
        let values = times.map(|mut times| match summary {
            Summary::MedianTime => {
                times.sort();
                times[times.len() / 2].as_secs_f64() * 1000.0
            }
            Summary::Rate => {
                let total: Duration = times.iter().sum();
                (receivers * rounds * times.len()) as f64 / total.as_secs_f64()
            }
        });
        for (i, (_, _, name)) in subjects.iter().enumerate() {
            let row = match summary {
                Summary::MedianTime => {
                    Row::new("fanout", name, &shape, "ms to the last (median)", values[i])
                        .lower_is_better()
                }
                Summary::Rate => Row::new("fanout", name, &shape, "messages/s", values[i]),
            };
            report.push(if i == 0 { row } else { row.against(values[0]) });
            let cpu = Row::new(
                "fanout",
                name,
                &shape,
                "server CPU us/message",
                cpu_per_message[i],
            )
            .lower_is_better();
            report.push(if i == 0 {
                cpu
            } else {
                cpu.against(cpu_per_message[0])
            });
        }
    }
    rooms(args, report).await
}

/// A send to a room of M members among N connections, against a broadcast to M connections
/// (all there are), both wse-rs: what finding a room's members costs beside reaching them.
async fn rooms(args: &FanoutArgs, report: &mut Report) -> Result<(), String> {
    let members = args.room_members;
    let shape = format!("{} sends to {members}", args.room_rounds);
    let subjects = [
        ("wse-rs broadcast (all connected)", Audience::Everyone),
        (
            &*format!("wse-rs room (of {})", args.room_among),
            Audience::Room {
                bystanders: args.room_among.saturating_sub(members),
            },
        ),
    ];
    let mut times = subjects.map(|_| Duration::ZERO);
    let mut server_cpu = subjects.map(|_| Duration::ZERO);
    for _ in 0..args.repeat.max(1) {
        for (((_, audience), time), cpu) in subjects.iter().zip(&mut times).zip(&mut server_cpu) {
            let server = Spawned::start(Target::Wse).await?;
            let d = dial(server.url(), Codec::Json, named());
            let shape = Fanout {
                receivers: members,
                rounds: args.room_rounds,
                audience: *audience,
                trigger: None,
            };
            let (took, spent) = load::fanout(&d, &shape, server.pid(), None).await?;
            *time += took;
            *cpu += spent.server.unwrap_or_default();
        }
    }
    let delivered = (members * args.room_rounds * args.repeat.max(1) as usize) as f64;
    let rates = times.map(|time| delivered / time.as_secs_f64());
    let cpu_per_message = server_cpu.map(|cpu| cpu.as_secs_f64() * 1e6 / delivered);
    for (i, (name, _)) in subjects.iter().enumerate() {
        let rate = Row::new("fanout", name, &shape, "messages/s", rates[i]);
        let cpu = Row::new(
            "fanout",
            name,
            &shape,
            "server CPU us/message",
            cpu_per_message[i],
        )
        .lower_is_better();
        if i == 0 {
            report.push(rate);
            report.push(cpu);
        } else {
            report.push(rate.against(rates[0]));
            report.push(cpu.against(cpu_per_message[0]));
        }
    }
    Ok(())
}

/// Two wse-rs nodes, A and B, joined over a `redis-server` of the harness's own, and one
/// wse-rs server alone (in memory): sends to a user from A to B against the same within A
/// (and, for reference, within the server alone), then handshakes/s against A against the
/// server alone. The subjects take turns, each round a share of every figure.
async fn cluster(args: &ClusterArgs, report: &mut Report) -> Result<(), String> {
    let redis = RedisServer::start(&args.redis_server).await?;
    // The nodes end before their Redis, whatever the outcome.
    let measured = cluster_on(&redis, args, report).await;
    redis.stop().await;
    measured
}

/// [`cluster`], on `redis`.
async fn cluster_on(
    redis: &RedisServer,
    args: &ClusterArgs,
    report: &mut Report,
) -> Result<(), String> {
    // Every round measures at least one of each.
    let fewest = args.sends.min(args.pipelined).min(args.cycles).max(1);
    let rounds = (args.rounds as usize).clamp(1, fewest);
    let share = |n: usize, round: usize| n / rounds + usize::from(round < n % rounds);
    if share(args.sends.max(args.pipelined), 0) > PUBLISH_BURST {
        return Err(format!(
            "--sends or --pipelined in {rounds} rounds make more than {PUBLISH_BURST} sends in \
             a round: within one node, sends can outrun their publishing, and a node queues \
             at most 4,096 of them; give more --rounds"
        ));
    }
    let cluster = Cluster {
        redis: redis.url(),
        prefix: format!("wse-bench-{}", std::process::id()),
    };
    let a = Spawned::start_with_cluster(Target::Wse, Some(&cluster)).await?;
    let b = Spawned::start_with_cluster(Target::Wse, Some(&cluster)).await?;
    let alone = Spawned::start(Target::Wse).await?;
    let wse = |server: &Spawned| dial(server.url(), Codec::Json, named());
    // Both nodes hear every send to a user (it is published to every node), and Redis
    // passes it on: their CPU time is the cluster's.
    let in_cluster: Vec<u32> = [a.pid(), b.pid(), redis.pid()]
        .into_iter()
        .flatten()
        .collect();
    // The baseline first.
    let subjects = [
        (
            "within node A (a node of 2 over Redis)",
            Relay {
                sender: wse(&a),
                receiver: wse(&a),
                barrier: Some(wse(&b)),
                servers: in_cluster.clone(),
            },
        ),
        (
            "node A to node B, over Redis",
            Relay {
                sender: wse(&a),
                receiver: wse(&b),
                barrier: Some(wse(&b)),
                servers: in_cluster,
            },
        ),
        (
            "within one node alone (in memory)",
            Relay {
                sender: wse(&alone),
                receiver: wse(&alone),
                barrier: None,
                servers: alone.pid().into_iter().collect(),
            },
        ),
    ];
    let mut sequential: Vec<Option<load::RelayRun>> = subjects.iter().map(|_| None).collect();
    let mut pipelined: Vec<Option<load::RelayRun>> = subjects.iter().map(|_| None).collect();
    let merge = |total: &mut Option<load::RelayRun>, run| match total {
        Some(total) => total.merge(run),
        None => {
            *total = Some(run);
            Ok(())
        }
    };
    for round in 0..rounds {
        for (i, (_, relay)) in subjects.iter().enumerate() {
            let run = load::relay(relay, 1, 50, share(args.sends, round)).await?;
            merge(&mut sequential[i], run)?;
            let in_flight = args.in_flight.max(1);
            let run = load::relay(
                relay,
                in_flight,
                4 * in_flight,
                share(args.pipelined, round),
            )
            .await?;
            merge(&mut pipelined[i], run)?;
        }
    }
    let one_at_a_time = format!("1 in flight, {} sends", args.sends);
    let together = format!(
        "{} in flight, {} sends",
        args.in_flight.max(1),
        args.pipelined
    );
    let runs: Vec<_> = sequential
        .iter()
        .flatten()
        .zip(pipelined.iter().flatten())
        .collect();
    let (baseline, others) = runs.split_first().ok_or("no baseline run")?;
    let names: Vec<_> = subjects.iter().map(|(name, _)| *name).collect();
    report.relay(
        names[0],
        (&one_at_a_time, baseline.0),
        (&together, baseline.1),
        None,
    );
    for (name, (sequential, pipelined)) in names[1..].iter().zip(others) {
        report.relay(
            name,
            (&one_at_a_time, sequential),
            (&together, pipelined),
            Some(*baseline),
        );
    }

    // Handshakes: the admission in memory (the baseline), then in Redis.
    let (n, k) = (args.cycles, args.concurrency);
    let servers = [
        ("wse-rs alone (admission in memory)", &alone),
        ("wse-rs node A (admission in Redis)", &a),
    ];
    let mut elapsed = [Duration::ZERO; 2];
    let mut done = [0; 2];
    for round in 0..rounds {
        let cycles = share(n, round);
        for (i, (_, server)) in servers.iter().enumerate() {
            elapsed[i] += load::handshakes(&wse(server), cycles, k, None).await?;
            done[i] += cycles;
        }
    }
    let shape = format!("N={n} K={k}");
    let rates: Vec<f64> = elapsed
        .iter()
        .zip(done)
        .map(|(elapsed, done)| done as f64 / elapsed.as_secs_f64())
        .collect();
    for (i, (name, _)) in servers.iter().enumerate() {
        let row = Row::new("cluster", name, &shape, "handshakes/s", rates[i]);
        report.push(if i == 0 { row } else { row.against(rates[0]) });
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
        Mode::Cluster(args) => cluster(&args, &mut report).await?,
        Mode::All => {
            let cluster_args = ClusterArgs {
                sends: 2_000,
                pipelined: 9_000,
                in_flight: 64,
                cycles: 5_000,
                concurrency: 16,
                rounds: 3,
                redis_server: "redis-server".to_owned(),
            };
            // Before a minute of the others, rather than after.
            redis::check(&cluster_args.redis_server).await?;
            rpc(
                &RpcArgs {
                    connections: 50,
                    in_flight: 16,
                    duration: 6,
                    rounds: 3,
                    url: None,
                    metrics: true,
                },
                &mut report,
            )
            .await?;
            handshake(
                &HandshakeArgs {
                    cycles: 5_000,
                    concurrency: 16,
                    rounds: 3,
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
                    reach_rounds: 3,
                    room_members: 1_000,
                    room_among: 10_000,
                    room_rounds: 20,
                    repeat: 5,
                },
                &mut report,
            )
            .await?;
            cluster(&cluster_args, &mut report).await?;
        }
        Mode::Serve {
            target,
            port,
            redis,
            redis_prefix,
        } => {
            let cluster = redis.map(|redis| Cluster {
                redis,
                prefix: redis_prefix,
            });
            serve::run(target, SocketAddr::from(([127, 0, 0, 1], port)), cluster)
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
            if let Some(path) = json
                && let Err(error) = std::fs::write(&path, report.json())
            {
                eprintln!("cannot write {}: {error}", path.display());
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("benchmark failed: {error}");
            ExitCode::FAILURE
        }
    }
}
