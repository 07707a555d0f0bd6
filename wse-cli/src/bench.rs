//! `wse bench`: the loads of `wse-bench` (the `wse-load` crate) against any server that
//! speaks the protocol, with a progress bar while they run and a summary at the end.

use std::fmt::Write;
use std::future::Future;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::Value;
use wse_load::{
    Audience, Call, Codec, Dial, Fanout, Hello, LoadError, Login, Progress, Rpc, RpcRun, Trigger,
};

use crate::{Failure, Server, duration, fail, json, seconds};

/// The loads `wse bench` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Load {
    /// Calls per second and their latency.
    Rpc,
    /// Handshakes per second.
    Handshake,
    /// Messages per second to many receivers.
    Fanout,
}

/// The loads to run and their shapes. Every load is bounded in count (or, for rpc, in
/// time), and the whole run by `--max-time`.
#[derive(Debug, Args)]
pub(crate) struct Shape {
    /// The loads to run, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "rpc,handshake,fanout",
        value_name = "LOAD,..."
    )]
    loads: Vec<Load>,
    /// rpc: connections (C).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    connections: u32,
    /// rpc: calls in flight per connection (K).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=4_096))]
    in_flight: u32,
    /// rpc: seconds measured.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0, value_parser = seconds)]
    duration: f64,
    /// rpc: seconds the calls run before they are measured.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.5, value_parser = seconds)]
    warmup: f64,
    /// rpc: the procedure called. It must answer every call alike: each answer is checked
    /// byte for byte against the first ones.
    #[arg(long, value_name = "NAME", default_value = "add")]
    rpc_procedure: String,
    /// rpc: its arguments, as JSON.
    #[arg(long, value_name = "JSON", default_value = r#"{"a": 1, "b": 2}"#, value_parser = json)]
    rpc_args: Value,
    /// handshake: connect → welcome → close cycles in all (N).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    cycles: u32,
    /// handshake: cycles at a time (K).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1_024))]
    concurrency: u32,
    /// fanout: connections that receive every round.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    receivers: u32,
    /// fanout: rounds, each one call of the fan-out procedure that must reach every receiver
    /// once.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    rounds: u32,
    /// fanout: the procedure that sends one message to every connection.
    #[arg(long, value_name = "NAME", default_value = "broadcast")]
    fanout_procedure: String,
    /// fanout: its arguments, as JSON; a string that is exactly "{round}" is replaced by the
    /// round's number. When the "payload" argument is exactly "{round}", each receiver checks
    /// that it gets every round once; otherwise it counts the messages.
    #[arg(
        long,
        value_name = "JSON",
        default_value = r#"{"type": "tick", "payload": "{round}"}"#,
        value_parser = json
    )]
    fanout_args: Value,
    /// Seconds the whole run may take; past them it stops with exit code 4.
    #[arg(long, value_name = "SECONDS", default_value_t = 300.0, value_parser = seconds)]
    max_time: f64,
    /// Print the results as one JSON object (and no progress bar).
    #[arg(long)]
    json: bool,
}

/// What `--json` prints: each load's figures, the loads not run left out.
#[derive(Debug, Default, Serialize)]
struct Summary {
    url: String,
    codec: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rpc: Option<RpcSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    handshake: Option<HandshakeSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fanout: Option<FanoutSummary>,
}

#[derive(Debug, Serialize)]
struct RpcSummary {
    procedure: String,
    connections: u32,
    in_flight: u32,
    /// Calls answered in the measured window.
    calls: u64,
    seconds: f64,
    calls_per_second: f64,
    latency_ms: Latency,
}

/// Call latency percentiles, in milliseconds.
#[derive(Debug, Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

#[derive(Debug, Serialize)]
struct HandshakeSummary {
    cycles: u32,
    concurrency: u32,
    seconds: f64,
    handshakes_per_second: f64,
}

#[derive(Debug, Serialize)]
struct FanoutSummary {
    procedure: String,
    receivers: u32,
    rounds: u32,
    /// Messages delivered: every round to every receiver.
    messages: u64,
    /// From the first trigger until the last receiver had every round.
    seconds: f64,
    messages_per_second: f64,
}

impl RpcSummary {
    fn new(shape: &Shape, run: &RpcRun) -> Self {
        let ms = |quantile: f64| run.latency.value_at_quantile(quantile) as f64 / 1000.0;
        Self {
            procedure: shape.rpc_procedure.clone(),
            connections: shape.connections,
            in_flight: shape.in_flight,
            calls: run.calls,
            seconds: run.window.as_secs_f64(),
            calls_per_second: run.rate(),
            latency_ms: Latency {
                p50: ms(0.5),
                p90: ms(0.9),
                p99: ms(0.99),
                p999: ms(0.999),
                max: run.latency.max() as f64 / 1000.0,
            },
        }
    }
}

impl Summary {
    /// The figures as a table with aligned columns.
    fn table(&self) -> String {
        let mut rows: Vec<(&str, String, f64, &str)> = Vec::new();
        if let Some(rpc) = &self.rpc {
            let shape = format!(
                "C={} K={} {}",
                rpc.connections, rpc.in_flight, rpc.procedure
            );
            rows.push(("rpc", shape.clone(), rpc.calls_per_second, "calls/s"));
            let latency = &rpc.latency_ms;
            for (value, unit) in [
                (latency.p50, "p50 ms"),
                (latency.p90, "p90 ms"),
                (latency.p99, "p99 ms"),
                (latency.p999, "p999 ms"),
                (latency.max, "max ms"),
            ] {
                rows.push(("rpc", shape.clone(), value, unit));
            }
        }
        if let Some(handshake) = &self.handshake {
            let shape = format!("N={} K={}", handshake.cycles, handshake.concurrency);
            rows.push((
                "handshake",
                shape,
                handshake.handshakes_per_second,
                "handshakes/s",
            ));
        }
        if let Some(fanout) = &self.fanout {
            let shape = format!(
                "{} × {} to {}",
                fanout.rounds, fanout.procedure, fanout.receivers
            );
            rows.push((
                "fanout",
                shape.clone(),
                fanout.messages_per_second,
                "messages/s",
            ));
            rows.push(("fanout", shape, fanout.seconds * 1000.0, "ms to the last"));
        }
        let width = rows
            .iter()
            .map(|(_, shape, _, _)| shape.chars().count())
            .max()
            .unwrap_or(0)
            .max(5);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<10} {:<width$} {:>14} unit",
            "load", "shape", "value"
        );
        for (load, shape, value, unit) in rows {
            let _ = writeln!(out, "{load:<10} {shape:<width$} {value:>14.2} {unit}");
        }
        out
    }
}

/// The exit code of a load that failed, its message on stderr.
fn load_failed(load: Load, error: &LoadError) -> ExitCode {
    let failure = Failure::from(error.kind());
    let name = load
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_owned());
    fail(failure, &format!("{name}: {error}"), None)
}

/// A progress bar on stderr, hidden when stderr is not a terminal or the output is JSON.
fn bar(quiet: bool, length: u64, prefix: &'static str) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(length).with_prefix(prefix);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:>9} [{elapsed_precise}] {wide_bar} {msg}")
    {
        bar.set_style(style);
    }
    bar
}

/// How often a progress bar is brought up to date.
const TICK: Duration = Duration::from_millis(100);

/// Runs `load` to its end, calling `update` every [`TICK`] meanwhile.
async fn ticking<T>(load: impl Future<Output = T>, mut update: impl FnMut()) -> T {
    let mut load = std::pin::pin!(load);
    let mut ticks = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            done = &mut load => return done,
            _ = ticks.tick() => update(),
        }
    }
}

/// Runs `wse bench`.
pub(crate) async fn run(server: &Server, shape: &Shape) -> ExitCode {
    if !server.url.starts_with("ws://") {
        return fail(
            Failure::Usage,
            "wse bench speaks plain ws:// only (its callers write frames on the raw socket)",
            None,
        );
    }
    // --timeout means here what it means for every subcommand: the welcome, and the answer.
    let mut login = Login::new(server.identity.clone(), server.meta.clone())
        .handshake_timeout(server.timeout());
    if let Some(secret) = &server.hmac_secret {
        login = login.hmac_secret(secret.as_bytes().to_vec());
    }
    let codec = if server.msgpack {
        Codec::Msgpack
    } else {
        Codec::Json
    };
    let dial = Dial {
        url: server.url.clone(),
        codec,
        hello: Hello::Wse(login),
    };
    let mut summary = Summary {
        url: server.url.clone(),
        codec: if server.msgpack { "msgpack" } else { "json" },
        ..Summary::default()
    };
    let max_time = duration(shape.max_time);
    let measured = tokio::time::timeout(
        max_time,
        measure(&dial, shape, server.timeout(), &mut summary),
    )
    .await;
    match measured {
        Ok(Ok(())) => {}
        Ok(Err(code)) => return code,
        Err(_) => {
            let message = format!("the bench did not finish within --max-time {max_time:?}");
            return fail(Failure::Timeout, &message, None);
        }
    }
    if shape.json {
        match serde_json::to_string(&summary) {
            Ok(json) => println!("{json}"),
            Err(error) => return fail(Failure::Other, &error.to_string(), None),
        }
    } else {
        print!("{}", summary.table());
    }
    ExitCode::SUCCESS
}

/// Runs each load of `shape` in turn into `summary`, each rpc call answered within
/// `answer_timeout`: the exit code of the first that fails.
async fn measure(
    dial: &Dial,
    shape: &Shape,
    answer_timeout: Duration,
    summary: &mut Summary,
) -> Result<(), ExitCode> {
    for &load in &shape.loads {
        match load {
            Load::Rpc => {
                let rpc = Rpc {
                    connections: shape.connections as usize,
                    in_flight: shape.in_flight as usize,
                    warmup: duration(shape.warmup),
                    duration: duration(shape.duration),
                    call: Call {
                        timeout: answer_timeout,
                        ..Call::new(&shape.rpc_procedure, shape.rpc_args.clone())
                    },
                };
                let total = rpc.warmup.saturating_add(rpc.duration);
                let bar = bar(shape.json, total.as_millis() as u64, "rpc");
                let started = tokio::time::Instant::now();
                let run = ticking(wse_load::rpc(dial, &rpc, None), || {
                    bar.set_position(started.elapsed().as_millis() as u64);
                })
                .await;
                bar.finish_and_clear();
                let run = run.map_err(|error| load_failed(load, &error))?;
                summary.rpc = Some(RpcSummary::new(shape, &run));
            }
            Load::Handshake => {
                let progress = Progress::new();
                let bar = bar(shape.json, u64::from(shape.cycles), "handshake");
                let cycles = wse_load::handshakes(
                    dial,
                    shape.cycles as usize,
                    shape.concurrency as usize,
                    Some(&progress),
                );
                let took = ticking(cycles, || bar.set_position(progress.done())).await;
                bar.finish_and_clear();
                let took = took.map_err(|error| load_failed(load, &error))?;
                summary.handshake = Some(HandshakeSummary {
                    cycles: shape.cycles,
                    concurrency: shape.concurrency,
                    seconds: took.as_secs_f64(),
                    handshakes_per_second: f64::from(shape.cycles) / took.as_secs_f64(),
                });
            }
            Load::Fanout => {
                let fanout = Fanout {
                    receivers: shape.receivers as usize,
                    rounds: shape.rounds as usize,
                    audience: Audience::Everyone,
                    trigger: Some(Trigger {
                        procedure: shape.fanout_procedure.clone(),
                        args: shape.fanout_args.clone(),
                    }),
                };
                let messages = u64::from(shape.receivers) * u64::from(shape.rounds);
                let progress = Progress::new();
                let bar = bar(shape.json, messages, "fanout");
                let reached = ticking(
                    wse_load::fanout(dial, &fanout, None, Some(&progress)),
                    || {
                        bar.set_position(progress.done());
                    },
                )
                .await;
                bar.finish_and_clear();
                let (took, _) = reached.map_err(|error| load_failed(load, &error))?;
                summary.fanout = Some(FanoutSummary {
                    procedure: shape.fanout_procedure.clone(),
                    receivers: shape.receivers,
                    rounds: shape.rounds,
                    messages,
                    seconds: took.as_secs_f64(),
                    messages_per_second: messages as f64 / took.as_secs_f64(),
                });
            }
        }
    }
    Ok(())
}
