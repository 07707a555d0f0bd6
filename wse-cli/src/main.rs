//! `wse`: call a procedure of, or send a message to, any server that speaks the WSE protocol.
//!
//! ```text
//! wse call ws://127.0.0.1:4200 add '{"a": 1, "b": 2}' --identity secret --meta '{"user_id": "ann"}'
//! wse send ws://127.0.0.1:4200 echo '"hello"' --identity secret --meta '{"user_id": "ann"}'
//! ```
//!
//! A result is printed as one line of JSON on stdout; a failure as its code (and details) on
//! stderr, with an exit code that says which kind of failure it was ([`Failure`]).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::Value;
use wse_client::{CallError, Client, ConnectError, MsgPack};

/// Talk to a WSE server from a terminal.
#[derive(Debug, Parser)]
#[command(name = "wse", version)]
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
        kind: String,
        /// Its payload, as JSON (default: null).
        #[arg(value_parser = json)]
        payload: Option<Value>,
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
    /// Seconds to wait for the welcome, and for a call's answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    timeout: f64,
}

fn json(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|error| format!("not JSON: {error}"))
}

fn json_or_string(text: &str) -> Result<Value, String> {
    Ok(serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())))
}

/// How a command failed, as its exit code says it (2 is a usage error, from the parser).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The server refused the identity or closed before the welcome: 3.
    Refused = 3,
    /// No welcome or no answer in time: 4.
    Timeout = 4,
    /// The procedure answered with an error: 5.
    CallError = 5,
    /// The connection could not be made or broke: 6.
    Transport = 6,
}

/// Prints `code` (and `details`) on stderr and returns the exit code of `failure`.
fn fail(failure: Failure, code: &str, details: Option<&Value>) -> ExitCode {
    match details {
        Some(details) => eprintln!("error: {code} {details}"),
        None => eprintln!("error: {code}"),
    }
    ExitCode::from(failure as u8)
}

impl Server {
    fn timeout(&self) -> Duration {
        Duration::try_from_secs_f64(self.timeout).unwrap_or(Duration::from_secs(10))
    }

    /// A client of the server, connected: or the exit code of why not.
    async fn connect(&self) -> Result<Client, ExitCode> {
        let mut builder = Client::builder(&self.url)
            .handshake_timeout(self.timeout())
            .call_timeout(self.timeout());
        if self.msgpack {
            builder = builder.protocol(MsgPack);
        }
        if let Some(secret) = &self.hmac_secret {
            builder = builder.hmac_secret(secret.as_bytes().to_vec());
        }
        let client = builder.build();
        match client
            .connect(self.identity.clone(), self.meta.clone())
            .await
        {
            Ok(_) => Ok(client),
            Err(error) => Err(connect_failed(&error)),
        }
    }
}

fn connect_failed(error: &ConnectError) -> ExitCode {
    match error {
        ConnectError::NotAuthorized => fail(Failure::Refused, "wse.not-authorized", None),
        ConnectError::Closed { code, reason } => {
            let details = serde_json::json!({"close": code});
            fail(Failure::Refused, reason, Some(&details))
        }
        ConnectError::Timeout => fail(Failure::Timeout, "no welcome in time", None),
        other => fail(Failure::Transport, &other.to_string(), None),
    }
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
                Err(error) => fail(Failure::CallError, &error.to_string(), None),
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run(cli.command)),
        Err(error) => fail(Failure::Transport, &format!("no runtime: {error}"), None),
    }
}
