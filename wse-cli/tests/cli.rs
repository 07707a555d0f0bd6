//! The `wse` binary against the demo served in this test process: results on stdout, each
//! kind of failure with its exit code and its code on stderr.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;

use serde_json::{Value, json};
use wse_core::Json;
use wse_examples::{Auth, demo_server};

mod support;

use support::{PATIENCE, scripted, text, wse};

async fn serve(auth: Auth) -> SocketAddr {
    let serving = demo_server(auth).bind("127.0.0.1:0").await.unwrap();
    serving.local_addr()
}

const ANN: [&str; 4] = ["--identity", "secret", "--meta", r#"{"user_id": "ann"}"#];

#[tokio::test]
async fn call_prints_the_result_as_json() {
    let addr = serve(Auth::Plain).await;
    let url = format!("ws://{addr}");
    for codec in [&[][..], &["--msgpack"]] {
        let mut args = vec!["call", &url, "add", r#"{"a": 40, "b": 2}"#];
        args.extend(ANN);
        args.extend(codec);
        let output = wse(&args).await;
        assert!(output.status.success(), "{output:?}");
        assert_eq!(text(&output.stdout).trim(), "42");
    }
    let mut args = vec!["call", &url, "whoami"];
    args.extend(ANN);
    let output = wse(&args).await;
    let whoami: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(whoami["user"], "ann");
}

#[tokio::test]
async fn each_failure_has_its_exit_code() {
    let addr = serve(Auth::Plain).await;
    let url = format!("ws://{addr}");

    // The procedure's own error: 5, with its code and details.
    let mut args = vec!["call", &url, "fail_custom"];
    args.extend(ANN);
    let output = wse(&args).await;
    assert_eq!(output.status.code(), Some(5), "{output:?}");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("app.custom-failure"), "{stderr}");
    assert!(stderr.contains(r#""reason":"custom""#), "{stderr}");

    // Refused: 3.
    let output = wse(&["call", &url, "add", "--identity", "nope"]).await;
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert!(text(&output.stderr).contains("wse.not-authorized"));

    // No answer in time: 4. The timeout bounds the welcome too, which a loaded machine may
    // take a while to give: far more than that, and still far less than the delay.
    let mut args = vec![
        "call",
        &url,
        "delay",
        r#"{"ms": 30000, "value": 1}"#,
        "--timeout",
        "3",
    ];
    args.extend(ANN);
    let output = wse(&args).await;
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    assert!(text(&output.stderr).contains("wse.client.rp.timeout"));

    // Nobody there: 6.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let output = wse(&["call", &format!("ws://{closed}"), "add"]).await;
    assert_eq!(output.status.code(), Some(6), "{output:?}");

    // A usage error: 2. A timeout of 0, or one past a day, is one too; as is a message type
    // that the protocol reserves.
    let output = wse(&["call", &url, "add", "{not json"]).await;
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    for timeout in ["0", "1e19"] {
        let output = wse(&["call", &url, "add", "--timeout", timeout]).await;
        assert_eq!(output.status.code(), Some(2), "{timeout}: {output:?}");
        assert!(text(&output.stderr).contains("a timeout"), "{output:?}");
    }
    let mut args = vec!["send", &url, "~wse:hi"];
    args.extend(ANN);
    let output = wse(&args).await;
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}

#[tokio::test]
async fn a_close_before_the_welcome_is_a_refusal_only_when_it_says_so() {
    let cases = [
        (1011, "", 6),
        (1012, "wse.by-server", 6),
        (1013, "", 6),
        (1000, "", 6),
        (1000, "wse.protocol-error", 6),
        (1000, "app.banned", 3),
        (1000, "wse.not-authorized", 3),
    ];
    for (code, reason, exit) in cases {
        let addr = scripted(&Json, move |_, mut raw| async move {
            let _ = raw.next().await;
            raw.close(code, reason).await;
        })
        .await;
        let url = format!("ws://{addr}");
        // `call` (a client of wse-client) and the loads of `bench` judge it alike.
        for command in [
            &["call", &url, "add"][..],
            &["bench", &url, "--loads", "handshake", "--cycles", "1"],
        ] {
            let output = wse(command).await;
            let said = format!("{command:?} after {code} {reason:?}: {output:?}");
            assert_eq!(output.status.code(), Some(exit), "{said}");
            let stderr = text(&output.stderr);
            assert!(!stderr.contains("error:  "), "{said}");
            if command[0] == "call" {
                let words = if reason.is_empty() { "closed" } else { reason };
                assert!(stderr.starts_with(&format!("error: {words}")), "{said}");
                if reason != "wse.not-authorized" {
                    assert!(stderr.contains(&format!(r#"{{"close":{code}}}"#)), "{said}");
                }
            } else {
                assert!(stderr.contains(&format!("{code}")), "{said}");
            }
        }
    }
}

#[tokio::test]
async fn the_challenge_is_answered_with_the_secret() {
    let addr = serve(Auth::Hmac).await;
    let url = format!("ws://{addr}");
    let mut args = vec![
        "call",
        &url,
        "add",
        r#"{"a": 1, "b": 2}"#,
        "--hmac-secret",
        "s3cret",
    ];
    args.extend(ANN);
    let output = wse(&args).await;
    assert!(output.status.success(), "{output:?}");
    assert_eq!(text(&output.stdout).trim(), "3");
    let mut args = vec!["call", &url, "add", "--hmac-secret", "wrong"];
    args.extend(ANN);
    let output = wse(&args).await;
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    // No secret at all: refused as well, by `call` and `bench` alike.
    let mut args = vec!["call", &url, "add"];
    args.extend(ANN);
    let output = wse(&args).await;
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert!(text(&output.stderr).contains("challenge"), "{output:?}");
    let mut args = vec!["bench", &url, "--loads", "handshake", "--cycles", "1"];
    args.extend(ANN);
    let output = wse(&args).await;
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert!(text(&output.stderr).contains("challenge"), "{output:?}");
}

#[tokio::test]
async fn wss_is_spoken() {
    // A certificate no root vouches for: the connect fails at the certificate, which only a
    // client that speaks TLS gets to (without it, wss:// URLs are refused outright).
    let (tls, _) = wse_examples::tls::self_signed("localhost").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _serving = wse_examples::tls::serve(demo_server(Auth::Plain), listener, tls);
    let url = format!("wss://localhost:{port}");
    let mut args = vec!["call", &url, "add", r#"{"a": 1, "b": 2}"#];
    args.extend(ANN);
    let output = wse(&args).await;
    assert_eq!(output.status.code(), Some(6), "{output:?}");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("certificate"), "{stderr}");
}

#[tokio::test]
async fn send_delivers_a_message() {
    let addr = serve(Auth::Plain).await;
    let url = format!("ws://{addr}");
    // Another device of ann hears `both` when one of her devices sends `hey`.
    let listener = wse_client::Client::builder(url.clone()).build();
    let (heard, mut hearing) = tokio::sync::mpsc::unbounded_channel();
    listener
        .on("both", move |_, payload: Value| {
            let _ = heard.send(payload);
        })
        .unwrap();
    listener
        .connect(json!("secret"), json!({"user_id": "ann"}))
        .await
        .unwrap();
    let mut args = vec!["send", &url, "hey", r#""from the terminal""#];
    args.extend(ANN);
    let output = wse(&args).await;
    assert!(output.status.success(), "{output:?}");
    let payload = tokio::time::timeout(PATIENCE, hearing.recv())
        .await
        .unwrap();
    assert_eq!(payload, Some(json!("from the terminal")));
}

#[tokio::test]
async fn help_shows_an_example_for_each_subcommand() {
    for command in [
        "call",
        "send",
        "listen",
        "rooms join",
        "rooms send",
        "presence",
        "bench",
    ] {
        let mut args: Vec<&str> = command.split(' ').collect();
        args.push("--help");
        let output = wse(&args).await;
        assert!(output.status.success());
        let help = text(&output.stdout);
        assert!(help.contains(&format!("wse {command} ws://")), "{help}");
        for flag in [
            "--identity",
            "--meta",
            "--hmac-secret",
            "--msgpack",
            "--timeout",
        ] {
            assert!(help.contains(flag), "{flag} in {help}");
        }
    }
}

#[tokio::test]
async fn help_says_what_each_new_subcommand_does() {
    let cases: [(&[&str], &[&str]); 7] = [
        (
            &["listen"],
            &["--answer", "--reconnect", "\"time\"", "milliseconds"],
        ),
        (
            &["rooms", "join"],
            &["--join-procedure", "rooms.join", "--reconnect"],
        ),
        (
            &["rooms", "send"],
            &["--send-procedure", "room_send", "--join", "--except"],
        ),
        (
            &["presence"],
            &["--once", "--json", "version", "presence.subscribe"],
        ),
        (
            &["bench"],
            &[
                "--loads",
                "--duration",
                "--connections",
                "--rpc-procedure",
                "--fanout-procedure",
                "--max-time",
                "--json",
                "{conn}",
            ],
        ),
        (
            &["completions"],
            &["bash", "zsh", "fish", "powershell", "elvish"],
        ),
        (&["rooms"], &["join", "send"]),
    ];
    for (command, words) in cases {
        let mut args = command.to_vec();
        args.push("--help");
        let output = wse(&args).await;
        assert!(output.status.success(), "{command:?}");
        let help = text(&output.stdout);
        for word in words {
            assert!(help.contains(word), "{word} in {command:?}: {help}");
        }
    }
    let output = wse(&["completions", "--help"]).await;
    assert!(text(&output.stdout).contains("wse completions bash"));
    let output = wse(&["--help"]).await;
    let help = text(&output.stdout);
    for command in [
        "listen",
        "rooms",
        "presence",
        "bench",
        "completions",
        "Exit codes",
    ] {
        assert!(help.contains(command), "{command} in {help}");
    }
}

/// The binary a user builds speaks TLS: `wss_is_spoken` cannot show it, since a test build
/// takes the dev-dependencies' features too, which turn rustls on by themselves.
#[test]
fn a_plain_build_has_tls() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let tree = std::process::Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "--manifest-path",
            manifest,
            "-p",
            "wse-cli",
        ])
        .args(["-e", "normal", "-e", "features", "-i", "wse-client"])
        .output()
        .expect("cargo tree runs");
    assert!(tree.status.success(), "{}", text(&tree.stderr));
    assert!(
        text(&tree.stdout).contains(r#"wse-client feature "rustls""#),
        "wse-cli must depend on wse-client with its rustls feature:\n{}",
        text(&tree.stdout)
    );
}
