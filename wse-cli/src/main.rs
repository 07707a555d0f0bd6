//! `wse`: talk to any server that speaks the WSE protocol from a terminal: call a procedure,
//! send a message, listen to what the server sends (answering its calls), join rooms and
//! send to them, watch presence, measure the server, and print shell completions.
//!
//! ```text
//! wse call ws://127.0.0.1:4200 add '{"a": 1, "b": 2}' --identity secret --meta '{"user_id": "ann"}'
//! wse send ws://127.0.0.1:4200 echo '"hello"' --identity secret --meta '{"user_id": "ann"}'
//! wse listen ws://127.0.0.1:4200 --answer client_sum=42 --identity secret --meta '{"user_id": "bob"}'
//! wse rooms join ws://127.0.0.1:4200 public-lobby --identity secret --meta '{"user_id": "bob"}'
//! wse rooms send ws://127.0.0.1:4200 public-lobby chat '"hi"' --identity secret --meta '{"user_id": "ann"}'
//! wse presence ws://127.0.0.1:4200 --once --identity secret --meta '{"user_id": "ann"}'
//! wse bench ws://127.0.0.1:4200 --identity secret --meta '{"user_id": "bench-{conn}"}'
//! wse completions bash
//! ```
//!
//! A result is printed as one line of JSON on stdout; a failure as its code (and details) on
//! stderr, with an exit code that says which kind of failure it was ([`Failure`]).
//!
//! # Layout
//!
//! - this file: the command line, the connection every subcommand shares ([`Server`]), the
//!   exit codes, `call`, `send` and `completions`.
//! - `listen`: `wse listen`, and the listening loop `wse rooms join` shares: one JSON line per
//!   message, fixed answers to the server's calls, reconnect.
//! - `payload`: any payload as JSON, what JSON cannot hold (MessagePack's binary) included.
//! - `rooms`: `wse rooms join` and `wse rooms send`.
//! - `presence`: `wse presence`, a live list of who is online, by version.
//! - `bench`: `wse bench`, the loads of the `wse-load` crate with a progress bar and a summary.

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use serde_json::Value;
use wse_client::{Builder, CallError, Client, CloseReason, ConnectError, MsgPack, SendError};
use wse_load::ErrorKind;

mod bench;
mod listen;
mod payload;
mod presence;
mod rooms;

/// Talk to a WSE server from a terminal.
///
/// Exit codes: 0 done (or stopped with Ctrl-C), 2 usage, 3 refused (wse.not-authorized, an
/// application's own reason on a 1000 close before the welcome, or a challenge it cannot
/// answer), 4 timeout, 5 the call failed (or an answer was wrong), 6 the connection could not
/// be made, broke or closed (1011, 1012, 1013 or a protocol error before the welcome too), 1
/// anything else.
#[derive(Debug, Parser)]
#[command(
    name = "wse",
    version,
    after_help = "Example:\n  wse call ws://127.0.0.1:4200 add '{\"a\": 1, \"b\": 2}' \
                  --identity secret --meta '{\"user_id\": \"ann\"}'\n\n\
                  `wse help SUBCOMMAND` or `wse SUBCOMMAND --help` shows each one's flags \
                  and an example."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Call a procedure and print its result as JSON.
    #[command(
        after_help = "Example:\n  wse call ws://127.0.0.1:4200 add '{\"a\": 1, \"b\": 2}' \
                            --identity secret --meta '{\"user_id\": \"ann\"}'"
    )]
    Call {
        #[command(flatten)]
        server: Server,
        /// The procedure.
        procedure: String,
        /// Its arguments, as JSON (default: null).
        #[arg(value_parser = json)]
        args: Option<Value>,
    },
    /// Send a one-way message.
    #[command(
        after_help = "Example:\n  wse send ws://127.0.0.1:4200 echo '\"hello\"' \
                            --identity secret --meta '{\"user_id\": \"ann\"}'"
    )]
    Send {
        #[command(flatten)]
        server: Server,
        /// The message type.
        #[arg(value_parser = message_type)]
        kind: String,
        /// Its payload, as JSON (default: null).
        #[arg(value_parser = json)]
        payload: Option<Value>,
    },
    /// Print every message the server sends, one JSON line each, until the connection closes.
    #[command(
        long_about = "Print every message the server sends, one JSON line each on stdout: \
                      {\"type\": T, \"payload\": P, \"time\": MS}, where MS is when it \
                      arrived, in milliseconds since the Unix epoch. The server's calls to the \
                      procedures given with --answer are answered with their fixed result and \
                      printed too, with \"call\": true; calls to any other procedure are \
                      refused (wse.server.rp.not-registered) and printed with \"call\": true, \
                      \"answered\": false. Under --msgpack, what JSON cannot hold is printed \
                      as JSON: binary data as an array of its bytes.\n\n\
                      Without --reconnect it exits when the connection closes (6, the close \
                      code and reason on stderr); with it, it reconnects and goes on, and \
                      exits only when the server closes for good (a close that does not \
                      retry, such as 1000), with 6, or with 3 when a reconnect is refused. \
                      Ctrl-C closes and exits with 0, while connecting too. Notes on the \
                      connection (# ready, # closed) go to stderr.",
        after_help = "Example:\n  wse listen ws://127.0.0.1:4200 --answer client_sum=42 --reconnect \
                      --identity secret --meta '{\"user_id\": \"bob\"}'"
    )]
    Listen {
        #[command(flatten)]
        server: Server,
        #[command(flatten)]
        listening: listen::Listening,
    },
    /// Join rooms and listen to them, or send to a room.
    #[command(
        subcommand,
        after_help = "Examples:\n  wse rooms join ws://127.0.0.1:4200 public-lobby \
                      --identity secret --meta '{\"user_id\": \"bob\"}'\n  \
                      wse rooms send ws://127.0.0.1:4200 public-lobby chat '\"hi\"' \
                      --identity secret --meta '{\"user_id\": \"ann\"}'"
    )]
    Rooms(rooms::Rooms),
    /// Print who is online, and again on every change, until Ctrl-C.
    #[command(
        long_about = "Subscribe to presence (the built-in presence.subscribe {}, which \
                      answers the online list) and print who is online as a table; then \
                      apply each presence message (the same entries: user, online, devices, \
                      alias, version) only when its version is newer than the one held for \
                      that user, and print the table again on each change. With --json, one \
                      JSON line per entry of the list and then per change instead. With \
                      --once, print the list and exit. Otherwise it runs until Ctrl-C (0) or \
                      until the connection closes (6).",
        after_help = "Examples:\n  wse presence ws://127.0.0.1:4200 --identity secret \
                      --meta '{\"user_id\": \"ann\"}'\n  wse presence ws://127.0.0.1:4200 \
                      --once --json --identity secret --meta '{\"user_id\": \"ann\"}'"
    )]
    Presence {
        #[command(flatten)]
        server: Server,
        #[command(flatten)]
        watch: presence::Watch,
    },
    /// Measure a server: calls/s and latency, handshakes/s, fan-out.
    #[command(
        long_about = "Measure any server that speaks the protocol with the loads of wse-bench \
                      (the wse-load crate): rpc (connections × calls in flight of one \
                      procedure, closed loop, for --duration after --warmup; every answer \
                      must equal the first answers byte for byte), handshake (--cycles \
                      connect → hi → welcome → close, --concurrency at a time) and fanout \
                      (--receivers connections, --rounds calls of the fan-out procedure, \
                      each of which must reach every receiver once: an error answer to one \
                      fails the run at once, with the server's code). Every connection says hi \
                      with --identity and --meta, in whose strings {conn} is replaced by a \
                      number of the connection's own (so each can be another user) and \
                      {user} by the load's name for it (load3, cycler, idle7, control).\n\n\
                      A progress bar runs on stderr while it measures (not when stderr is \
                      not a terminal, nor with --json); then a summary table on stdout, or \
                      with --json one JSON object. --timeout bounds each connection's \
                      welcome and the answers of the rpc calls (the first ones, and those \
                      still in flight when the measured window ends); the fan-out's rounds \
                      have 60 s to reach every receiver, and the whole run --max-time. \
                      ws:// only: the callers write frames on the raw socket.",
        after_help = "Examples:\n  wse bench ws://127.0.0.1:4200 --identity secret \
                      --meta '{\"user_id\": \"bench-{conn}\"}'\n  wse bench ws://127.0.0.1:4200 \
                      --loads rpc --connections 20 --in-flight 16 --duration 10 --json \
                      --identity secret --meta '{\"user_id\": \"bench-{conn}\"}'"
    )]
    Bench {
        #[command(flatten)]
        server: Server,
        #[command(flatten)]
        shape: bench::Shape,
    },
    /// Print the shell completion script of `wse`.
    #[command(
        after_help = "Examples:\n  wse completions bash > ~/.local/share/bash-completion/completions/wse\n  \
                      wse completions zsh > \"${fpath[1]}/_wse\"\n  \
                      wse completions fish > ~/.config/fish/completions/wse.fish"
    )]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Where and as whom to connect.
#[derive(Debug, Args)]
struct Server {
    /// The server's URL (ws:// or wss://).
    url: String,
    /// What to authenticate with: JSON, or else taken as a string.
    #[arg(long, default_value = "null", value_parser = json_or_string)]
    identity: Value,
    /// The meta sent with the identity, as JSON.
    #[arg(long, default_value = "{}", value_parser = json)]
    meta: Value,
    /// Answer the server's HMAC challenge with this secret.
    #[arg(long, value_name = "S")]
    hmac_secret: Option<String>,
    /// Speak MessagePack instead of JSON.
    #[arg(long)]
    msgpack: bool,
    /// Seconds to wait for the welcome, and for a call's answer: more than 0, at most 86400
    /// (a day).
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0, value_parser = timeout)]
    timeout: f64,
}

fn json(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|error| format!("not JSON: {error}"))
}

fn json_or_string(text: &str) -> Result<Value, String> {
    Ok(serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())))
}

/// A number of seconds: finite and not negative.
fn seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => Ok(seconds),
        _ => Err(format!("{text:?} is not a number of seconds")),
    }
}

/// The longest `--timeout`, in seconds: a day. Longer is surely a slip (or a wish for no
/// timeout, which Ctrl-C gives), and past the clock's range it would not even be a time.
const MAX_TIMEOUT: f64 = 86_400.0;

/// A timeout in seconds: more than zero (a zero timeout fails every wait, the welcome's
/// first) and at most [`MAX_TIMEOUT`].
fn timeout(text: &str) -> Result<f64, String> {
    let seconds = seconds(text)?;
    if seconds <= 0.0 {
        return Err(format!("{text:?}: a timeout must be more than 0 seconds"));
    }
    if seconds > MAX_TIMEOUT {
        return Err(format!(
            "{text:?}: a timeout is at most {MAX_TIMEOUT} seconds (a day)"
        ));
    }
    Ok(seconds)
}

/// A message type the protocol lets an application send: not empty, and not one it reserves
/// (`~wse:…`).
fn message_type(text: &str) -> Result<String, String> {
    if text.is_empty() || wse_core::frame::is_reserved(text) {
        return Err(format!(
            "{text:?}: a message type is not empty and does not start with {:?}",
            wse_core::frame::RESERVED_PREFIX
        ));
    }
    Ok(text.to_owned())
}

/// A duration from a number of seconds that [`seconds`] checked.
fn duration(seconds: f64) -> Duration {
    Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX)
}

/// Completes at the first Ctrl-C from the moment it is first polled (never, when the signal
/// cannot be listened to: then Ctrl-C ends the process as it would anyway). A command that
/// runs until Ctrl-C makes one, pinned, before it connects and races every wait against it:
/// a SIGINT that comes while it connects, joins, or between two passes of its loop is then
/// seen and ends it with 0, where a future made anew on each pass misses one that comes
/// between two passes, and none made before the connect lets the default action end the
/// process with 130.
async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// How a command failed, as its exit code says it (2 is a usage error, from the parser).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Anything else (this machine, not the server): 1.
    Other = 1,
    /// A usage error found after parsing (an `--answer` given twice): 2, as the parser's.
    Usage = 2,
    /// The server refused: `wse.not-authorized`, or an application's own reason on a 1000
    /// close before the welcome (the rule is wse-load's, [`ErrorKind::of_close_before_welcome`]);
    /// or it sent a challenge this side cannot answer (no `--hmac-secret`): 3.
    Refused = 3,
    /// No welcome or no answer in time: 4.
    Timeout = 4,
    /// The procedure answered with an error (or, under load, not as expected): 5.
    CallError = 5,
    /// The connection could not be made, broke, or was closed (before the welcome too, when
    /// that is no refusal: 1011, 1012, 1013, a protocol error): 6.
    Transport = 6,
}

/// The one translation of the kinds of failure that `wse-load` tells (its loads', and its
/// judgement of a close before the welcome) into exit codes.
impl From<ErrorKind> for Failure {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::Connect => Self::Transport,
            ErrorKind::Refused => Self::Refused,
            ErrorKind::Timeout => Self::Timeout,
            ErrorKind::Answer => Self::CallError,
            _ => Self::Other,
        }
    }
}

/// Prints `code` (and `details`) on stderr and returns the exit code of `failure`.
fn fail(failure: Failure, code: &str, details: Option<&Value>) -> ExitCode {
    match details {
        Some(details) => eprintln!("error: {code} {details}"),
        None => eprintln!("error: {code}"),
    }
    ExitCode::from(failure as u8)
}

/// How long the close after a Ctrl-C may take before the command exits all the same: a
/// connection still opening (the upgrade) is not cut short by the client's close, and
/// Ctrl-C must not wait for its timeout.
const STOP_PATIENCE: Duration = Duration::from_secs(2);

/// Closes `client` after a Ctrl-C, which is how the commands that run until it are meant to
/// end: 0, not a failure.
async fn stopped(client: &Client) -> ExitCode {
    let _ = tokio::time::timeout(STOP_PATIENCE, client.close("wse.by-client")).await;
    ExitCode::SUCCESS
}

/// Prints a close on stderr, its reason as the code (`closed` when it has none) and its close
/// code as the details, and returns the exit code of `failure`.
fn closed(failure: Failure, code: u16, reason: &str) -> ExitCode {
    let details = serde_json::json!({"close": code});
    fail(failure, closed_reason(reason), Some(&details))
}

/// The reason of a close, or a word for an empty one.
fn closed_reason(reason: &str) -> &str {
    if reason.is_empty() { "closed" } else { reason }
}

impl Server {
    fn timeout(&self) -> Duration {
        duration(self.timeout)
    }

    /// A builder of a client of the server, with every setting the flags give.
    fn builder(&self) -> Builder {
        let mut builder = Client::builder(&self.url)
            .handshake_timeout(self.timeout())
            .call_timeout(self.timeout());
        if self.msgpack {
            builder = builder.protocol(MsgPack);
        }
        if let Some(secret) = &self.hmac_secret {
            builder = builder.hmac_secret(secret.as_bytes().to_vec());
        }
        builder
    }

    /// Connects `client` as the flags say: its welcome, or the exit code of why not.
    async fn connect_client(&self, client: &Client) -> Result<Value, ExitCode> {
        client
            .connect(self.identity.clone(), self.meta.clone())
            .await
            .map_err(|error| connect_failed(&error))
    }

    /// Connects `client` as [`Server::connect_client`] does, unless `interrupted` (Ctrl-C)
    /// comes first: then closes it, and the exit code says it was stopped.
    async fn connect_unless_interrupted(
        &self,
        client: &Client,
        interrupted: Pin<&mut impl Future<Output = ()>>,
    ) -> Result<(), ExitCode> {
        tokio::select! {
            connected = self.connect_client(client) => connected.map(drop),
            () = interrupted => Err(stopped(client).await),
        }
    }

    /// A client of the server, connected: or the exit code of why not.
    async fn connect(&self) -> Result<Client, ExitCode> {
        let client = self.builder().build();
        self.connect_client(&client).await?;
        Ok(client)
    }
}

fn connect_failed(error: &ConnectError) -> ExitCode {
    match error {
        ConnectError::NotAuthorized => {
            fail(Failure::Refused, CloseReason::NotAuthorized.as_str(), None)
        }
        ConnectError::Closed { code, reason } => closed(
            ErrorKind::of_close_before_welcome(*code, reason).into(),
            *code,
            reason,
        ),
        // The server wants an answer to its challenge that this side cannot give: it is kept
        // out as by a refusal (and `wse bench` says so too).
        ConnectError::Challenge(_) => fail(Failure::Refused, &error.to_string(), None),
        ConnectError::Timeout => fail(Failure::Timeout, "no welcome in time", None),
        other => fail(Failure::Transport, &other.to_string(), None),
    }
}

fn send_failed(error: &SendError) -> ExitCode {
    let failure = match error {
        SendError::InvalidKind(_) => Failure::Usage,
        SendError::Closed | SendError::Full => Failure::Transport,
        _ => Failure::Other,
    };
    fail(failure, &error.to_string(), None)
}

fn call_failed(error: &CallError) -> ExitCode {
    match error {
        CallError::Remote(object) => {
            fail(Failure::CallError, &object.code, object.details.as_ref())
        }
        CallError::Timeout => fail(Failure::Timeout, error.code(), None),
        CallError::Disconnected | CallError::NotReady => {
            fail(Failure::Transport, error.code(), None)
        }
        other => fail(Failure::CallError, other.code(), None),
    }
}

async fn run(command: Command) -> ExitCode {
    match command {
        Command::Call {
            server,
            procedure,
            args,
        } => {
            let client = match server.connect().await {
                Ok(client) => client,
                Err(code) => return code,
            };
            let args = args.unwrap_or(Value::Null);
            let answer = client.call::<Value, _>(&procedure, &args).await;
            client.close("wse.by-client").await;
            match answer {
                Ok(result) => {
                    println!("{result}");
                    ExitCode::SUCCESS
                }
                Err(error) => call_failed(&error),
            }
        }
        Command::Send {
            server,
            kind,
            payload,
        } => {
            let client = match server.connect().await {
                Ok(client) => client,
                Err(code) => return code,
            };
            let sent = client.send(&kind, &payload.unwrap_or(Value::Null));
            // The close goes out after the message.
            client.close("wse.by-client").await;
            match sent {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => send_failed(&error),
            }
        }
        Command::Listen { server, listening } => listen::run(&server, &listening, None).await,
        Command::Rooms(rooms) => rooms::run(rooms).await,
        Command::Presence { server, watch } => presence::run(&server, &watch).await,
        Command::Bench { server, shape } => bench::run(&server, &shape).await,
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "wse", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(Failure::Other, &format!("no runtime: {error}"), None),
    };
    let code = runtime.block_on(run(cli.command));
    // A load's thread may still be winding down after a failure: it must not hold the exit.
    runtime.shutdown_background();
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_is_more_than_zero_and_at_most_a_day() {
        assert_eq!(timeout("0.5"), Ok(0.5));
        assert_eq!(timeout("86400"), Ok(86_400.0));
        for wrong in ["0", "-1", "1e19", "86400.5", "inf", "NaN", "soon"] {
            assert!(timeout(wrong).is_err(), "{wrong}");
        }
    }

    #[test]
    fn a_message_type_is_one_an_application_may_send() {
        assert_eq!(message_type("hey"), Ok("hey".to_owned()));
        assert!(message_type("").is_err());
        assert!(message_type("~wse:hi").is_err());
    }
}
