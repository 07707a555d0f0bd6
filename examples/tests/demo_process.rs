//! The demo binary as a process: it prints where it listens, and a client survives the
//! server being killed (SIGKILL) mid-call: the pending call fails with the disconnect code at
//! once, the client reconnects with backoff when the server comes back, and calls work again.
//!
//! Each port is an axum application (issue 14): the endpoint at `/` and `/ws`, `/health`,
//! `/metrics` in the Prometheus text format; the operator's flags set the limits, a bad flag is
//! a usage error (exit 2), and Ctrl-C closes the connections with 1012 and exits.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;
use wse_client::{CallError, Client, ClientEvent, Reconnect, Status};

mod support;

use support::{PATIENCE, demo, run_demo, within};

/// Every flag of the demo, as `--help` must list it.
const FLAGS: [&str; 9] = [
    "--port",
    "--hmac-port",
    "--rate-limit",
    "--max-connections",
    "--max-connections-per-address",
    "--conn-per-user",
    "--allow-origin",
    "--trusted-proxy",
    "--help",
];

/// A client of `url`, logged in as `user`.
async fn logged_in(url: String, user: &str) -> Client {
    let client = Client::builder(url).build();
    let welcome = within(
        "the welcome",
        client.connect(json!("secret"), json!({"user_id": user})),
    )
    .await
    .unwrap();
    assert_eq!(welcome["cid"], user);
    client
}

/// `GET path` over a fresh connection: the status line and the body.
async fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut tcp = within("connect", TcpStream::connect(addr)).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    within("the HTTP response", tcp.read_to_end(&mut response))
        .await
        .unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a whole response");
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

/// Sends a WebSocket upgrade request for `/ws` (with `origin`, if any) and returns the status
/// line of the answer. The connection is dropped after it.
async fn upgrade(addr: SocketAddr, origin: Option<&str>) -> String {
    let mut tcp = within("connect", TcpStream::connect(addr)).await.unwrap();
    let origin = origin.map_or(String::new(), |origin| format!("Origin: {origin}\r\n"));
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{origin}\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    // Only the status line: a 101 leaves the connection open.
    let mut status = String::new();
    within(
        "the status line",
        BufReader::new(tcp).read_line(&mut status),
    )
    .await
    .unwrap();
    status.trim_end().to_owned()
}

/// The value of the series `name` whose labels are exactly `labels`, in Prometheus text.
fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.strip_suffix('}')?),
                None => (series, ""),
            };
            let found: Vec<(&str, &str)> = series_labels
                .split(',')
                .filter(|pair| !pair.is_empty())
                .filter_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    Some((key, value.strip_prefix('"')?.strip_suffix('"')?))
                })
                .collect();
            let matches = series_name == name
                && found.len() == labels.len()
                && labels.iter().all(|label| found.contains(label));
            if matches { value.parse().ok() } else { None }
        })
}

/// The counters a test watches, read from `GET /metrics`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Counts {
    adds: f64,
    normal_closes: f64,
    connections: f64,
}

async fn counts(addr: SocketAddr) -> Counts {
    let (status, metrics) = get(addr, "/metrics").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let read = |name, labels: &[(&str, &str)]| {
        sample(&metrics, name, labels)
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{metrics}"))
    };
    Counts {
        adds: read(
            "wse_calls_total",
            &[("procedure", "add"), ("outcome", "ok")],
        ),
        normal_closes: read("wse_closes_total", &[("code", "1000")]),
        connections: read("wse_connections", &[]),
    }
}

#[tokio::test]
async fn each_port_serves_health_metrics_and_the_endpoint_at_two_paths() {
    let (_child, plain, hmac) = demo(&["--port", "0"]).await;
    for addr in [plain, hmac] {
        let (status, body) = get(addr, "/health").await;
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        assert_eq!(body, "ok");
    }
    let before = counts(plain).await;

    // `/ws`, and `/` where every existing client connects.
    let ann = logged_in(format!("ws://{plain}/ws"), "ann").await;
    let bob = logged_in(format!("ws://{plain}"), "bob").await;
    let sum: i64 = within("add", ann.call("add", &json!({"a": 40, "b": 2})))
        .await
        .unwrap();
    assert_eq!(sum, 42);
    within("ann's close", ann.close("wse.by-client")).await;

    // The server counts the close once its side of the closing handshake is over.
    let after = within("the close to be counted", async {
        loop {
            let now = counts(plain).await;
            if now.normal_closes > before.normal_closes {
                break now;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(
        after,
        Counts {
            adds: before.adds + 1.0,
            normal_closes: before.normal_closes + 1.0,
            connections: before.connections + 1.0,
        }
    );
    // Bob is still there.
    let sum: i64 = within("add", bob.call("add", &json!({"a": 1, "b": 2})))
        .await
        .unwrap();
    assert_eq!(sum, 3);
}

#[tokio::test]
async fn the_origin_allow_list_refuses_other_origins() {
    let (_child, plain, hmac) =
        demo(&["--port", "0", "--allow-origin", "http://good.example"]).await;
    for addr in [plain, hmac] {
        let evil = upgrade(addr, Some("http://evil.example")).await;
        assert!(evil.starts_with("HTTP/1.1 403"), "{evil}");
        let good = upgrade(addr, Some("http://good.example")).await;
        assert!(good.starts_with("HTTP/1.1 101"), "{good}");
        let none = upgrade(addr, None).await;
        assert!(none.starts_with("HTTP/1.1 101"), "{none}");
    }
}

#[tokio::test]
async fn the_rate_limit_and_the_connection_limit_apply() {
    let (_child, plain, _) =
        demo(&["--port", "0", "--rate-limit", "1", "--max-connections", "1"]).await;
    let ann = logged_in(format!("ws://{plain}"), "ann").await;
    let refused = upgrade(plain, None).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");

    // One message a second, in bursts of two: five at once are not all admitted.
    let calls: Vec<_> = (0..5)
        .map(|a| tokio::spawn(ann.call::<i64, _>("add", &json!({"a": a, "b": 0}))))
        .collect();
    let mut admitted = 0;
    for call in calls {
        if within("a call", call).await.unwrap().is_ok() {
            admitted += 1;
        }
    }
    assert!(admitted <= 2, "{admitted} calls admitted");
    let (_, metrics) = get(plain, "/metrics").await;
    let limited = sample(&metrics, "wse_rate_limited_total", &[]).unwrap();
    assert!(limited >= 1.0, "{metrics}");
}

#[tokio::test]
async fn the_other_flags_are_accepted() {
    let (_child, plain, _) = demo(&[
        "--port",
        "0",
        "--rate-limit",
        "off",
        "--max-connections-per-address",
        "1",
        "--conn-per-user",
        "3",
        "--trusted-proxy",
        "10.0.0.0/8",
        "--trusted-proxy",
        "::1",
    ])
    .await;
    let ann = logged_in(format!("ws://{plain}/ws"), "ann").await;
    let sum: i64 = within("add", ann.call("add", &json!({"a": 2, "b": 3})))
        .await
        .unwrap();
    assert_eq!(sum, 5);
    // 127.0.0.1 is no trusted proxy: its X-Forwarded-For is ignored, and it holds its one
    // connection already.
    let refused = upgrade(plain, None).await;
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
}

#[tokio::test]
async fn help_lists_every_flag_with_its_default() {
    let help = run_demo(&["--help"]).await;
    assert!(help.status.success(), "{help:?}");
    let text = String::from_utf8(help.stdout).unwrap();
    for flag in FLAGS {
        assert!(text.contains(flag), "{flag} is missing from\n{text}");
    }
    for default in [
        "[default: 4200]",
        "[default: 1000]",
        "[default: 100000]",
        "[default: 10000]",
        "[default: 2]",
        "[default: every origin]",
        "[default: nobody]",
    ] {
        assert!(text.contains(default), "{default} is missing from\n{text}");
    }
}

#[tokio::test]
async fn a_bad_flag_is_a_usage_error() {
    for (args, mentioned) in [
        (&["--port", "http"][..], "--port"),
        (&["--rate-limit", "0"], "--rate-limit"),
        (&["--rate-limit", "fast"], "--rate-limit"),
        (&["--max-connections", "0"], "--max-connections"),
        (&["--conn-per-user", "none"], "--conn-per-user"),
        (&["--allow-origin", "good.example"], "--allow-origin"),
        (&["--trusted-proxy", "proxy.example"], "--trusted-proxy"),
        (&["--port", "65535"], "--hmac-port"),
        (&["--colour"], "--colour"),
    ] {
        let output = run_demo(args).await;
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        assert!(output.stdout.is_empty(), "{args:?}: {output:?}");
        let message = String::from_utf8(output.stderr).unwrap();
        assert!(message.contains(mentioned), "{args:?}: {message}");
    }
}

#[tokio::test]
async fn ctrl_c_closes_the_connections_and_exits() {
    let (mut child, plain, _) = demo(&["--port", "0"]).await;
    let ann = logged_in(format!("ws://{plain}"), "ann").await;
    let mut events = ann.events();
    let pid = child.id().expect("a running demo").to_string();
    let sent = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap();
    assert!(sent.success());
    let code = within("the close", async {
        loop {
            if let ClientEvent::Closed { code, .. } = events.recv().await.unwrap() {
                break code;
            }
        }
    })
    .await;
    assert_eq!(code, 1012);
    let exit = within("the demo to exit", child.wait()).await.unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn the_demo_binary_serves_both_ports() {
    let (_child, plain, hmac) = demo(&["--port", "0"]).await;
    let client = Client::builder(format!("ws://{plain}")).build();
    let welcome = client
        .connect(json!("secret"), json!({"user_id": "ann"}))
        .await
        .unwrap();
    assert_eq!(welcome, json!({"cid": "ann", "meta": {"user_id": "ann"}}));
    let hmac_client = Client::builder(format!("ws://{hmac}"))
        .hmac_secret("s3cret")
        .build();
    let welcome = hmac_client
        .connect(json!("secret"), json!({"user_id": "ann"}))
        .await
        .unwrap();
    assert_eq!(welcome["cra"], json!(true));
}

#[tokio::test]
async fn a_client_survives_the_server_being_killed_mid_call() {
    let (mut child, plain, _) = demo(&["--port", "0"]).await;
    let client = Client::builder(format!("ws://{plain}"))
        .reconnect(Reconnect {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(400),
            jitter: Duration::from_millis(50),
        })
        .build();
    client
        .connect(json!("secret"), json!({"user_id": "ann"}))
        .await
        .unwrap();
    let pending = tokio::spawn(client.call::<Value, _>("delay", &json!({"ms": 5000, "value": 1})));
    tokio::time::sleep(Duration::from_millis(100)).await;

    child.kill().await.expect("SIGKILL the demo");
    let killed = Instant::now();
    let failed = tokio::time::timeout(Duration::from_secs(1), pending)
        .await
        .expect("the pending call fails within 1 s")
        .unwrap();
    assert_eq!(failed, Err(CallError::Disconnected));
    assert!(killed.elapsed() < Duration::from_secs(1));

    let mut status = client.status_changes();
    tokio::time::timeout(PATIENCE, status.wait_for(|s| *s == Status::Reconnecting))
        .await
        .expect("the client waits to reconnect")
        .unwrap();

    // The server returns on the same port.
    let (_child, again, _) = demo(&["--port", &plain.port().to_string(), "--hmac-port", "0"]).await;
    assert_eq!(again, plain);
    tokio::time::timeout(PATIENCE, status.wait_for(|s| *s == Status::Ready))
        .await
        .expect("the client reconnects by itself")
        .unwrap();
    let sum: i64 = client.call("add", &json!({"a": 2, "b": 3})).await.unwrap();
    assert_eq!(sum, 5);
}
