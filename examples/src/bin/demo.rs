//! The demo server: `cargo run -p wse-examples -- --port 4200`.
//!
//! Serves the demo application on 127.0.0.1:PORT (JSON, and MessagePack when offered), and the
//! same application behind the built-in HMAC challenge on PORT + 1 (or `--hmac-port`). Port 0
//! picks a free port; the first line on stdout names the addresses. Ctrl-C stops it
//! gracefully.

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;
use wse_examples::{Auth, demo_server};
use wse_server::Event;

const USAGE: &str = "usage: demo [--port PORT] [--hmac-port PORT]
  --port PORT        the demo on 127.0.0.1:PORT (default 4200; 0 picks a free port)
  --hmac-port PORT   the demo behind the HMAC challenge (default PORT + 1; 0 picks a free port)";

struct Ports {
    plain: u16,
    hmac: u16,
}

fn parse_ports() -> Result<Ports, String> {
    let mut args = std::env::args().skip(1);
    let (mut plain, mut hmac) = (4200u16, None);
    let port = |value: Option<String>, flag: &str| -> Result<u16, String> {
        let value = value.ok_or(format!("{flag} needs a value"))?;
        value.parse().map_err(|_| format!("invalid port {value:?}"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" | "-p" => plain = port(args.next(), "--port")?,
            "--hmac-port" => hmac = Some(port(args.next(), "--hmac-port")?),
            "--help" | "-h" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let hmac = match (hmac, plain) {
        (Some(hmac), _) => hmac,
        (None, 0) => 0,
        (None, plain) => plain
            .checked_add(1)
            .ok_or("--port must leave room for PORT + 1, or give --hmac-port")?,
    };
    Ok(Ports { plain, hmac })
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let ports = match parse_ports() {
        Ok(ports) => ports,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    let (plain, hmac) = (demo_server(Auth::Plain), demo_server(Auth::Hmac));
    let servings = match (
        plain.bind(("127.0.0.1", ports.plain)).await,
        hmac.bind(("127.0.0.1", ports.hmac)).await,
    ) {
        (Ok(plain), Ok(hmac)) => [plain, hmac],
        (Err(error), _) | (_, Err(error)) => {
            eprintln!(
                "cannot listen on 127.0.0.1:{} and 127.0.0.1:{}: {error}",
                ports.plain, ports.hmac
            );
            return ExitCode::FAILURE;
        }
    };
    // One plain line first, for people and for the tests that start this binary.
    println!(
        "wse demo listening on ws://{} (HMAC challenge on ws://{})",
        servings[0].local_addr(),
        servings[1].local_addr()
    );
    for (name, server) in [("plain", plain), ("hmac", hmac)] {
        let mut events = server.events();
        tokio::spawn(async move {
            while let Ok(event) = events.recv().await {
                match event {
                    Event::Joined { user_id } => tracing::info!(server = name, %user_id, "joined"),
                    Event::Left { user_id } => tracing::info!(server = name, %user_id, "left"),
                    Event::Error {
                        connection_id,
                        error,
                    } => {
                        tracing::warn!(server = name, ?connection_id, %error, "error")
                    }
                    Event::Rejected {
                        remote_addr,
                        reason,
                    } => {
                        tracing::info!(server = name, %remote_addr, ?reason, "rejected")
                    }
                    _ => {}
                }
            }
        });
    }
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("stopping");
    for serving in servings {
        serving.shutdown().await;
    }
    ExitCode::SUCCESS
}
