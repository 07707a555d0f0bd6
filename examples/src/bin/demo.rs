//! The demo server: `cargo run -p wse-examples -- --port 4200`.
//!
//! Serves the demo application on 127.0.0.1:PORT (JSON, and MessagePack when offered), and the
//! same application behind the built-in HMAC challenge on PORT + 1. Ctrl-C stops it
//! gracefully.

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;
use wse_examples::{Auth, demo_server};
use wse_server::Event;

const USAGE: &str =
    "usage: demo [--port PORT]   (default 4200; the HMAC challenge listens on PORT + 1)";

fn parse_port() -> Result<u16, String> {
    let mut args = std::env::args().skip(1);
    let mut port = 4200;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" | "-p" => {
                let value = args.next().ok_or("--port needs a value")?;
                port = value
                    .parse()
                    .map_err(|_| format!("invalid port {value:?}"))?;
            }
            "--help" | "-h" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if port == u16::MAX {
        return Err("the port must leave room for PORT + 1".to_owned());
    }
    Ok(port)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let port = match parse_port() {
        Ok(port) => port,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    let (plain, hmac) = (demo_server(Auth::Plain), demo_server(Auth::Hmac));
    let servings = match (
        plain.bind(("127.0.0.1", port)).await,
        hmac.bind(("127.0.0.1", port + 1)).await,
    ) {
        (Ok(plain), Ok(hmac)) => [plain, hmac],
        (Err(error), _) | (_, Err(error)) => {
            eprintln!(
                "cannot listen on 127.0.0.1:{port} and {}: {error}",
                port + 1
            );
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        "demo listening on ws://{} (HMAC challenge on ws://{})",
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
