//! The results: a table on stdout and a JSON file, every figure next to its baseline.

use std::fmt::Write;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use wse_load::{RelayRun, RpcRun};

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    /// rpc, handshake, memory, fanout, cluster.
    pub(crate) mode: String,
    /// What was measured.
    pub(crate) subject: String,
    /// The load shape.
    pub(crate) shape: String,
    /// The unit.
    pub(crate) unit: String,
    /// The figure.
    pub(crate) value: f64,
    /// The baseline's figure in the same run, when this is not the baseline.
    pub(crate) baseline: Option<f64>,
    /// value / baseline.
    pub(crate) ratio: Option<f64>,
    /// Whether a smaller value is better (latency, memory).
    pub(crate) lower_is_better: bool,
    /// A figure reported for itself, compared with nothing: neither a baseline nor one
    /// measured against a baseline (the load generator's own CPU time).
    pub(crate) alone: bool,
}

impl Row {
    pub(crate) fn new(mode: &str, subject: &str, shape: &str, unit: &str, value: f64) -> Self {
        Self {
            mode: mode.to_owned(),
            subject: subject.to_owned(),
            shape: shape.to_owned(),
            unit: unit.to_owned(),
            value,
            baseline: None,
            ratio: None,
            lower_is_better: false,
            alone: false,
        }
    }

    pub(crate) fn against(mut self, baseline: f64) -> Self {
        self.baseline = Some(baseline);
        self.ratio = (baseline > 0.0).then(|| self.value / baseline);
        self
    }

    pub(crate) fn lower_is_better(mut self) -> Self {
        self.lower_is_better = true;
        self
    }

    /// Marks the figure as compared with nothing (see [`Row::alone`]).
    pub(crate) fn alone(mut self) -> Self {
        self.alone = true;
        self
    }
}

/// All rows of a run.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Report {
    rows: Vec<Row>,
}

/// The latency at `quantile`, in milliseconds (the histogram holds microseconds).
fn percentile_ms(latency: &Histogram<u64>, quantile: f64) -> f64 {
    latency.value_at_quantile(quantile) as f64 / 1000.0
}

/// Microseconds of CPU time per call answered in the measured window.
fn micros_per_call(cpu: Duration, run: &RpcRun) -> f64 {
    cpu.as_secs_f64() * 1e6 / run.calls.max(1) as f64
}

impl Report {
    /// Adds a figure.
    pub(crate) fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

    /// Whether nothing was measured (the `serve` mode).
    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Calls/s, latency percentiles and the server's CPU time per call of an RPC run, against
    /// the baseline's when given; and the generator's own CPU time per call, for itself.
    pub(crate) fn rpc(
        &mut self,
        subject: &str,
        shape: &str,
        run: &RpcRun,
        baseline: Option<&RpcRun>,
    ) {
        let rate = |run: &RpcRun| run.calls as f64 / run.window.as_secs_f64();
        if std::env::var_os("BENCH_DEBUG").is_some() {
            eprintln!(
                "{subject}: {} calls, mean {:.1} us, min {} us, max {} us, len {}",
                run.calls,
                run.latency.mean(),
                run.latency.min(),
                run.latency.max(),
                run.latency.len()
            );
        }
        let mut rows = vec![Row::new("rpc", subject, shape, "calls/s", rate(run))];
        for (name, quantile) in [("p50 ms", 0.5), ("p99 ms", 0.99), ("p999 ms", 0.999)] {
            rows.push(
                Row::new(
                    "rpc",
                    subject,
                    shape,
                    name,
                    percentile_ms(&run.latency, quantile),
                )
                .lower_is_better(),
            );
        }
        let server_cpu = |run: &RpcRun| run.cpu.server.map(|cpu| micros_per_call(cpu, run));
        if let Some(server_cpu) = server_cpu(run) {
            rows.push(
                Row::new("rpc", subject, shape, "server CPU us/call", server_cpu).lower_is_better(),
            );
        }
        if let Some(baseline) = baseline {
            let mut figures = vec![
                rate(baseline),
                percentile_ms(&baseline.latency, 0.5),
                percentile_ms(&baseline.latency, 0.99),
                percentile_ms(&baseline.latency, 0.999),
            ];
            figures.extend(server_cpu(baseline));
            // A row whose baseline figure is missing (a server at --url) is compared with
            // nothing rather than with the wrong figure.
            rows = rows
                .into_iter()
                .zip(figures.into_iter().map(Some).chain(std::iter::repeat(None)))
                .map(|(row, figure)| match figure {
                    Some(figure) => row.against(figure),
                    None => row.alone(),
                })
                .collect();
        }
        if let Some(generator) = run.cpu.generator {
            rows.push(
                Row::new(
                    "rpc",
                    subject,
                    shape,
                    "generator CPU us/call",
                    micros_per_call(generator, run),
                )
                .lower_is_better()
                .alone(),
            );
        }
        self.rows.extend(rows);
    }

    /// Sends to a user: the latency of sends one at a time (p50, p99); messages/s of sends
    /// in flight together as the receiver got them, and, in a cluster, until the sender's
    /// node had also published them all; and the servers' CPU time per message: each
    /// against the baseline's when given. (The generator's own CPU time is left out: a run
    /// lasts tens of milliseconds, a few of `/proc/self/stat`'s ticks.)
    pub(crate) fn relay(
        &mut self,
        subject: &str,
        one_at_a_time: (&str, &RelayRun),
        together: (&str, &RelayRun),
        baseline: Option<(&RelayRun, &RelayRun)>,
    ) {
        let (sequential_shape, sequential) = one_at_a_time;
        let (pipelined_shape, pipelined) = together;
        let micros = |run: &RelayRun, quantile| run.latency.value_at_quantile(quantile) as f64;
        let rate = |run: &RelayRun, window: Duration| run.messages as f64 / window.as_secs_f64();
        let delivered = |run: &RelayRun| rate(run, run.delivered);
        let published = |run: &RelayRun| run.published.map(|window| rate(run, window));
        let per_message =
            |cpu: Duration, run: &RelayRun| cpu.as_secs_f64() * 1e6 / run.messages.max(1) as f64;
        let server_cpu = |run: &RelayRun| run.cpu.server.map(|cpu| per_message(cpu, run));
        let row =
            |shape: &str, unit: &str, value: f64| Row::new("cluster", subject, shape, unit, value);
        // Each row with the baseline's figure, when the baseline has one.
        let mut rows = Vec::new();
        for (unit, quantile) in [("p50 us", 0.5), ("p99 us", 0.99)] {
            rows.push((
                row(sequential_shape, unit, micros(sequential, quantile)).lower_is_better(),
                baseline.map(|(sequential, _)| micros(sequential, quantile)),
            ));
        }
        rows.push((
            row(pipelined_shape, "messages/s", delivered(pipelined)),
            baseline.map(|(_, pipelined)| delivered(pipelined)),
        ));
        if let Some(published_rate) = published(pipelined) {
            rows.push((
                row(pipelined_shape, "published messages/s", published_rate),
                baseline.and_then(|(_, pipelined)| published(pipelined)),
            ));
        }
        if let Some(cpu) = server_cpu(pipelined) {
            rows.push((
                row(pipelined_shape, "server CPU us/message", cpu).lower_is_better(),
                baseline.and_then(|(_, pipelined)| server_cpu(pipelined)),
            ));
        }
        for (row, figure) in rows {
            self.push(match (baseline, figure) {
                (_, Some(figure)) => row.against(figure),
                (None, None) => row,
                (Some(_), None) => row.alone(),
            });
        }
    }

    /// Every row as a table with aligned columns.
    pub(crate) fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<10} {:<44} {:<33} {:>14} {:<23} {:>8}",
            "mode", "subject", "shape", "value", "unit", "ratio"
        );
        for row in &self.rows {
            let ratio = match row.ratio {
                Some(ratio) => format!("{ratio:.2}×"),
                None if row.alone => String::new(),
                None => "baseline".to_owned(),
            };
            let _ = writeln!(
                out,
                "{:<10} {:<44} {:<33} {:>14.2} {:<23} {:>8}",
                row.mode, row.subject, row.shape, row.value, row.unit, ratio
            );
        }
        out
    }

    /// Every row as pretty JSON.
    pub(crate) fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}
