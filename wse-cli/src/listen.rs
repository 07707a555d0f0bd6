//! `wse listen`, and the listening loop that `wse rooms join` shares: every message the
//! server sends as one JSON line, fixed answers to its calls, reconnect.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use clap::Args;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use wse_client::{Client, ClientEvent, Reconnect, RegisterError, RpcError, Status};
use wse_core::now_millis;
use wse_load::ErrorKind;

use crate::payload::Payload;
use crate::rooms::{JoinFailed, Joins};
use crate::{Failure, Server, call_failed, closed, fail, interrupted, stopped};

/// How to listen: the fixed answers to the server's calls, and whether to reconnect.
#[derive(Debug, Clone, Args)]
pub(crate) struct Listening {
    /// Answer the server's calls of procedure NAME with this fixed JSON result (repeatable).
    #[arg(long = "answer", value_name = "NAME=JSON", value_parser = answer)]
    answers: Vec<(String, Value)>,
    /// Reconnect when the connection drops (after the close codes that retry: 1005, 1006,
    /// 1011-1014, 4000), with backoff, and keep listening.
    #[arg(long)]
    reconnect: bool,
}

/// `NAME=JSON`: a procedure and its fixed result.
fn answer(text: &str) -> Result<(String, Value), String> {
    let (name, result) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=JSON"))?;
    if name.is_empty() {
        return Err(format!("{text:?} has no procedure name"));
    }
    let result = serde_json::from_str(result)
        .map_err(|error| format!("the answer of {name} is not JSON: {error}"))?;
    Ok((name.to_owned(), result))
}

/// The lines queued for stdout at most: past them, lines are dropped and counted.
const PRINT_QUEUE: usize = 1024;

/// Writes lines to stdout on a thread of its own, so that a slow reader of stdout never
/// blocks the connection's read loop (which also answers pings and the server's calls).
/// Slow-consumer policy: a line that finds the queue full is dropped and counted, and the
/// count is told on stderr at the end.
#[derive(Debug, Clone)]
pub(crate) struct Printer {
    /// Bounded by [`PRINT_QUEUE`]; `None` ends the printing.
    lines: SyncSender<Option<String>>,
    dropped: Arc<AtomicU64>,
}

/// The thread behind a [`Printer`]: [`Printing::finish`] waits until it wrote every line.
#[derive(Debug)]
pub(crate) struct Printing {
    printer: Printer,
    thread: Option<JoinHandle<()>>,
}

impl Printing {
    /// Starts the printing thread.
    pub(crate) fn start() -> Self {
        let (lines, queue) = sync_channel(PRINT_QUEUE);
        let thread = std::thread::Builder::new()
            .name("wse-print".into())
            .spawn(move || print_lines(&queue))
            .map_err(|error| eprintln!("warning: nothing will be printed: {error}"))
            .ok();
        Self {
            printer: Printer {
                lines,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            thread,
        }
    }

    /// A handle that queues lines.
    pub(crate) fn printer(&self) -> Printer {
        self.printer.clone()
    }

    /// Waits until every line queued so far is written, and tells on stderr how many were
    /// dropped. The end is queued after them rather than awaited as the last [`Printer`]'s
    /// drop: the client's handlers hold printers for as long as any task holds the client.
    pub(crate) fn finish(self) {
        let Self { printer, thread } = self;
        if let Some(thread) = thread {
            // Waits for room at worst, which the printing thread makes; fails only when it
            // has stopped already (stdout closed).
            let _ = printer.lines.send(None);
            let _ = thread.join();
        }
        let dropped = printer.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            eprintln!("warning: {dropped} lines dropped: stdout was read too slowly");
        }
    }
}

fn print_lines(queue: &Receiver<Option<String>>) {
    let stdout = std::io::stdout();
    // Ends at `None`, or when every printer is gone.
    for line in queue.iter().map_while(|line| line) {
        let mut out = stdout.lock();
        // A closed stdout (`| head`) ends the printing, not the program.
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return;
        }
    }
}

impl Printer {
    /// Queues `line` for stdout, or drops and counts it when the queue is full.
    pub(crate) fn line(&self, line: String) {
        match self.lines.try_send(Some(line)) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Queues the line of a message (or call) of type `kind` that arrived now.
    fn message(&self, kind: &str, payload: Value, arrival: Arrival) {
        let line = Line {
            kind,
            payload,
            time: now_millis(),
            call: (arrival != Arrival::Message).then_some(true),
            answered: (arrival == Arrival::UnansweredCall).then_some(false),
        };
        match serde_json::to_string(&line) {
            Ok(line) => self.line(line),
            Err(error) => eprintln!("# a message of type {kind} not printed: {error}"),
        }
    }
}

/// What a printed line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arrival {
    /// A one-way message.
    Message,
    /// A call of the server's to a procedure given with `--answer`, answered so.
    AnsweredCall,
    /// A call of the server's to any other procedure, refused with
    /// `wse.server.rp.not-registered`.
    UnansweredCall,
}

/// One printed message, its fields in this order.
#[derive(Debug, Serialize)]
struct Line<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    payload: Value,
    /// When it arrived, in milliseconds since the Unix epoch.
    time: u64,
    /// Set on the server's calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    call: Option<bool>,
    /// Set (to false) on the server's calls that no `--answer` answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    answered: Option<bool>,
}

/// Listens as `listening` says until the connection closes (or, with reconnect, closes for
/// good) or Ctrl-C; `joins` are joined after every welcome, since a room holds connections
/// and a reconnect is a new one.
pub(crate) async fn run(server: &Server, listening: &Listening, joins: Option<&Joins>) -> ExitCode {
    let printing = Printing::start();
    let code = listen(server, listening, joins, printing.printer()).await;
    printing.finish();
    code
}

async fn listen(
    server: &Server,
    listening: &Listening,
    joins: Option<&Joins>,
    printer: Printer,
) -> ExitCode {
    let mut builder = server.builder();
    if listening.reconnect {
        builder = builder.reconnect(Reconnect::default());
    }
    let client = builder.build();
    if let Err(code) = handle(&client, listening, printer) {
        return code;
    }
    // One Ctrl-C for the whole run, raced against the connect, the joins and the loop.
    let mut interrupted = std::pin::pin!(interrupted());
    // Subscribed before connecting: no close may pass unseen, and every welcome, the
    // connect's too, is a change of status the loop sees.
    let mut events = client.events();
    let mut status = client.status_changes();
    if let Err(code) = server
        .connect_unless_interrupted(&client, interrupted.as_mut())
        .await
    {
        return code;
    }
    // Whether the connection the next close ends had its welcome: a close before the welcome
    // (of a reconnect) may be a refusal, one after it never is.
    let mut welcomed = true;
    // With reconnect, the close the client gave up after: how to exit.
    let mut last_close: Option<(Failure, u16, String)> = None;
    // Set by each welcome: the rooms are joined (again) before the loop waits once more.
    let mut join_now = false;
    loop {
        if let (true, Some(joins)) = (std::mem::take(&mut join_now), joins) {
            let joined = tokio::select! {
                joined = joins.join(&client) => joined,
                () = &mut interrupted => return stopped(&client).await,
            };
            match joined {
                Ok(()) => {}
                // The next welcome, which the status shows, joins them again.
                Err(JoinFailed::Dropped(error)) if listening.reconnect => eprintln!(
                    "# the connection dropped during the joins ({}): they are made again at \
                     the next welcome",
                    error.code()
                ),
                Err(JoinFailed::Dropped(error)) => {
                    client.close("wse.by-client").await;
                    return call_failed(&error);
                }
                Err(JoinFailed::Exit(code)) => {
                    client.close("wse.by-client").await;
                    return code;
                }
            }
        }
        tokio::select! {
            // Ctrl-C first; then the events, which the client emits before the status
            // changes they go with: a close is judged before the status that gives up after
            // it, and a connection's close before the next welcome.
            biased;
            () = &mut interrupted => return stopped(&client).await,
            event = events.recv() => match event {
                Ok(ClientEvent::Ready { welcome }) => {
                    welcomed = true;
                    eprintln!("# ready: {welcome}");
                }
                Ok(ClientEvent::Closed { code, reason }) => {
                    eprintln!("# closed: {code} {reason}");
                    let failure = if std::mem::take(&mut welcomed) {
                        Failure::Transport
                    } else {
                        ErrorKind::of_close_before_welcome(code, &reason).into()
                    };
                    if !listening.reconnect {
                        return closed(failure, code, &reason);
                    }
                    last_close = Some((failure, code, reason));
                }
                Ok(ClientEvent::ProtocolViolation(violation)) => {
                    eprintln!("# protocol violation (skipped): {violation}");
                }
                Ok(ClientEvent::Report(report)) => eprintln!("# {report:?}"),
                Ok(_) => {}
                // Nothing is driven by events: the joins follow the status, which loses no
                // welcome.
                Err(RecvError::Lagged(missed)) => {
                    eprintln!("# {missed} events missed");
                    // A welcome may be among them: a close after it is never a refusal.
                    welcomed = true;
                }
                Err(RecvError::Closed) => return fail(Failure::Other, "the client is gone", None),
            },
            changed = status.changed() => {
                if changed.is_err() {
                    return fail(Failure::Other, "the client is gone", None);
                }
                let now = *status.borrow_and_update();
                match now {
                    // `welcomed` follows the events alone: they come in order, while the
                    // status read here may still be a closed connection's Ready.
                    Status::Ready => join_now = true,
                    // With reconnect, the client gives up after a close that does not retry.
                    Status::Offline => {
                        return match last_close.take() {
                            Some((failure, code, reason)) => closed(failure, code, &reason),
                            None => fail(Failure::Transport, "closed", None),
                        };
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Sets what prints each message, the fixed answers to the server's calls, and what prints
/// the calls no answer is given for.
fn handle(client: &Client, listening: &Listening, printer: Printer) -> Result<(), ExitCode> {
    for (name, result) in &listening.answers {
        let (printer, result, procedure) = (printer.clone(), result.clone(), name.clone());
        let registered = client.register(name.clone(), move |_: Client, args: Payload| {
            printer.message(&procedure, args.0, Arrival::AnsweredCall);
            let result = result.clone();
            async move { Ok::<_, RpcError>(result) }
        });
        match registered {
            Ok(()) => {}
            Err(RegisterError::AlreadyRegistered(name)) => {
                return Err(fail(
                    Failure::Usage,
                    &format!("--answer {name} given twice"),
                    None,
                ));
            }
            Err(error) => return Err(fail(Failure::Usage, &error.to_string(), None)),
        }
    }
    let unanswered = printer.clone();
    client.on_unregistered_call(move |_, procedure: &str, args: Payload| {
        unanswered.message(procedure, args.0, Arrival::UnansweredCall);
    });
    client.on_any(move |_, kind: &str, payload: Payload| {
        printer.message(kind, payload.0, Arrival::Message);
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_answer_is_a_name_and_json() {
        assert_eq!(
            answer("client_sum=42"),
            Ok(("client_sum".into(), json!(42)))
        );
        assert_eq!(
            answer(r#"ask={"ok": "a=b"}"#),
            Ok(("ask".into(), json!({"ok": "a=b"})))
        );
        assert!(answer("client_sum").is_err());
        assert!(answer("=1").is_err());
        assert!(answer("x={nope").is_err());
    }
}
