//! `wse rooms join` and `wse rooms send`.

use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use serde_json::{Value, json};
use wse_client::{CallError, Client};

use crate::listen::{self, Listening};
use crate::{Failure, Server, call_failed, fail, json};

/// Join rooms and listen to them, or send to a room.
#[derive(Debug, Subcommand)]
pub(crate) enum Rooms {
    /// Join rooms, then print every message the server sends, as `wse listen` does.
    #[command(
        long_about = "Join each ROOM with the join procedure (the built-in rooms.join {room}; \
                      --join-procedure names another), then stay connected and print every \
                      message the server sends, one JSON line each, as `wse listen` does: \
                      {\"type\": T, \"payload\": P, \"time\": MS}. A message does not say \
                      which room it came through, so messages sent to this user or to \
                      everyone are printed too. A join that fails (an error, or an answer of \
                      false) exits with 5. With --reconnect the rooms are joined again after \
                      every reconnect (a room holds connections, and a reconnect is a new \
                      one), and a drop while joining waits for the next welcome to join \
                      again. Ctrl-C closes and exits with 0; a close exits with 6.",
        after_help = "Example:\n  wse rooms join ws://127.0.0.1:4200 public-lobby public-news \
                      --identity secret --meta '{\"user_id\": \"bob\"}'"
    )]
    Join {
        #[command(flatten)]
        server: Server,
        /// The rooms.
        #[arg(required = true, value_name = "ROOM")]
        rooms: Vec<String>,
        /// The procedure that joins a room, called with {"room": ROOM}.
        #[arg(long, value_name = "NAME", default_value = "rooms.join")]
        join_procedure: String,
        #[command(flatten)]
        listening: Listening,
    },
    /// Send a message to every connection in a room, and print the procedure's result.
    #[command(
        long_about = "Send the message [TYPE, PAYLOAD] to every connection in ROOM through \
                      the server's room procedure: the wse-rs demo's room_send {room, type, \
                      payload, except} (--send-procedure names another that takes the same \
                      arguments). The sender need not be in the room for the demo; a server \
                      that lets only members send wants --join, which joins ROOM first with \
                      the join procedure. The procedure's result is printed as JSON.",
        after_help = "Example:\n  wse rooms send ws://127.0.0.1:4200 public-lobby chat '\"hi all\"' \
                      --except connection --identity secret --meta '{\"user_id\": \"ann\"}'"
    )]
    Send {
        #[command(flatten)]
        server: Server,
        /// The room.
        room: String,
        /// The message type.
        kind: String,
        /// Its payload, as JSON (default: null).
        #[arg(value_parser = json)]
        payload: Option<Value>,
        /// Whom in the room to leave out: none, this connection, or every connection of
        /// this user (sent as `except`; left out of the arguments when not given).
        #[arg(long, value_enum, value_name = "WHO")]
        except: Option<Except>,
        /// Join the room first, for servers that let only members send to it.
        #[arg(long)]
        join: bool,
        /// The procedure that joins a room, called with {"room": ROOM} (with --join).
        #[arg(long, value_name = "NAME", default_value = "rooms.join")]
        join_procedure: String,
        /// The procedure that sends to a room, called with {"room", "type", "payload",
        /// "except"}.
        #[arg(long, value_name = "NAME", default_value = "room_send")]
        send_procedure: String,
    },
}

/// Who in the room a send leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Except {
    /// Nobody.
    None,
    /// This connection.
    Connection,
    /// Every connection of this user.
    User,
}

impl Except {
    fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Connection => "connection",
            Self::User => "user",
        }
    }
}

/// Rooms to join, and how.
#[derive(Debug, Clone)]
pub(crate) struct Joins {
    rooms: Vec<String>,
    procedure: String,
}

/// Why the joins stopped.
#[derive(Debug)]
pub(crate) enum JoinFailed {
    /// The connection was gone, or went, before a join was answered: with reconnect the
    /// joins are made again at the next welcome. Nothing was told on stderr yet.
    Dropped(CallError),
    /// A join failed (an error answer, a timeout, a refusal): the exit code, told on stderr.
    Exit(ExitCode),
}

impl Joins {
    /// Joins every room in turn, telling each on stderr, until the first that fails.
    ///
    /// # Errors
    /// [`JoinFailed`]: the connection dropped, or a join failed.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the join in flight (its answer is dropped), and the rest.
    pub(crate) async fn join(&self, client: &Client) -> Result<(), JoinFailed> {
        for room in &self.rooms {
            match client
                .call::<Value, _>(&self.procedure, &json!({"room": room}))
                .await
            {
                // A join procedure may answer whether it joined: false is a refusal.
                Ok(Value::Bool(false)) => {
                    let details = json!({"room": room, "answer": false});
                    let code = fail(Failure::CallError, "not joined", Some(&details));
                    return Err(JoinFailed::Exit(code));
                }
                Ok(_) => eprintln!("# joined: {room}"),
                Err(error @ (CallError::Disconnected | CallError::NotReady)) => {
                    return Err(JoinFailed::Dropped(error));
                }
                Err(error) => {
                    eprintln!("# could not join {room}");
                    return Err(JoinFailed::Exit(call_failed(&error)));
                }
            }
        }
        Ok(())
    }
}

/// Runs a `wse rooms` subcommand.
pub(crate) async fn run(rooms: Rooms) -> ExitCode {
    match rooms {
        Rooms::Join {
            server,
            rooms,
            join_procedure,
            listening,
        } => {
            let joins = Joins {
                rooms,
                procedure: join_procedure,
            };
            listen::run(&server, &listening, Some(&joins)).await
        }
        Rooms::Send {
            server,
            room,
            kind,
            payload,
            except,
            join,
            join_procedure,
            send_procedure,
        } => {
            let client = match server.connect().await {
                Ok(client) => client,
                Err(code) => return code,
            };
            let sent = async {
                if join {
                    let joins = Joins {
                        rooms: vec![room.clone()],
                        procedure: join_procedure,
                    };
                    joins.join(&client).await.map_err(|failed| match failed {
                        JoinFailed::Dropped(error) => call_failed(&error),
                        JoinFailed::Exit(code) => code,
                    })?;
                }
                let mut args = json!({
                    "room": room,
                    "type": kind,
                    "payload": payload.unwrap_or(Value::Null),
                });
                if let Some(except) = except {
                    args["except"] = Value::from(except.as_str());
                }
                client
                    .call::<Value, _>(&send_procedure, &args)
                    .await
                    .map_err(|error| call_failed(&error))
            }
            .await;
            client.close("wse.by-client").await;
            match sent {
                Ok(result) => {
                    println!("{result}");
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            }
        }
    }
}
