//! `wse listen`, `wse rooms`, `wse presence`, `wse bench` and `wse completions`, the binary
//! against the demo served in this test process. The subcommands that stay connected run as
//! children whose stderr tells when they are ready (`# ready`, `# joined`) and whose stdout is
//! read line by line; every wait is bounded.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use wse_client::Client;
use wse_examples::{Auth, demo_server_with};
use wse_server::{Server, Serving};

mod support;

use support::{PATIENCE, text, wse};

/// The demo without the per-connection rate limit (the bench calls flat out).
fn demo() -> Server {
    demo_server_with(Auth::Plain, |builder| builder.rate_limit(None))
}

/// The demo on a free port.
async fn serve() -> String {
    let serving = demo().bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = serving.local_addr();
    format!("ws://{addr}")
}

/// Serves `server` on `addr` again, retrying while the port is still held (by a socket of
/// the last server that is not yet fully released).
async fn bind_again(server: &Server, addr: SocketAddr) -> Serving {
    let binding = async {
        loop {
            match server.bind(addr).await {
                Ok(serving) => return serving,
                Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("cannot bind {addr} again: {error}"),
            }
        }
    };
    tokio::time::timeout(PATIENCE, binding)
        .await
        .unwrap_or_else(|_| panic!("{addr} still held after {PATIENCE:?}"))
}

/// The flags that say hi as `user` of the demo.
fn as_user(user: &str) -> [String; 4] {
    [
        "--identity".into(),
        "secret".into(),
        "--meta".into(),
        json!({"user_id": user}).to_string(),
    ]
}

/// A client of the demo connected as `user`.
async fn client(url: &str, user: &str) -> Client {
    let client = Client::builder(url).build();
    client
        .connect(json!("secret"), json!({"user_id": user}))
        .await
        .unwrap();
    client
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|arg| (*arg).to_owned()).collect()
}

/// A `wse` that stays connected, read as it goes.
struct Running {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: Lines<BufReader<ChildStderr>>,
    /// What stderr said so far.
    said: String,
}

impl Running {
    fn start(args: &[String]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wse"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("wse runs");
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        Self {
            child,
            stdout,
            stderr,
            said: String::new(),
        }
    }

    /// Reads stderr until a line contains `needle`.
    async fn stderr_until(&mut self, needle: &str) {
        let reading = async {
            while let Some(line) = self.stderr.next_line().await.unwrap() {
                self.said.push_str(&line);
                self.said.push('\n');
                if line.contains(needle) {
                    return;
                }
            }
            panic!("stderr ended without {needle:?}: {}", self.said);
        };
        if tokio::time::timeout(PATIENCE, reading).await.is_err() {
            panic!("no {needle:?} on stderr in time: {}", self.said);
        }
    }

    /// The next line of stdout, as JSON.
    async fn line(&mut self) -> Value {
        let line = tokio::time::timeout(PATIENCE, self.stdout.next_line())
            .await
            .expect("a line in time")
            .unwrap()
            .expect("a line before the end");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"))
    }

    /// Asserts that it has not exited.
    fn assert_running(&mut self) {
        let exited = self.child.try_wait().unwrap();
        assert!(exited.is_none(), "exited with {exited:?}: {}", self.said);
    }

    /// Waits for the end: the status, and the rest of stderr with what it said before.
    async fn end(mut self) -> (ExitStatus, String) {
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("wse ends by itself")
            .unwrap();
        while let Ok(Some(line)) = self.stderr.next_line().await {
            self.said.push_str(&line);
            self.said.push('\n');
        }
        (status, self.said)
    }
}

#[tokio::test]
async fn listen_prints_what_the_user_is_sent_and_answers_the_server_s_calls() {
    let url = serve().await;
    let mut listen = args(&["listen", &url, "--answer", "client_sum=42"]);
    listen.extend(as_user("bob"));
    let mut listener = Running::start(&listen);
    listener.stderr_until("# ready").await;

    // A message to the user, from another user's call.
    let ann = client(&url, "ann").await;
    let sent: bool = ann
        .call(
            "send_to_user",
            &json!({"user": "bob", "type": "note", "payload": {"x": [1, 2]}}),
        )
        .await
        .unwrap();
    assert!(sent);
    let line = listener.line().await;
    assert_eq!(line["type"], "note");
    assert_eq!(line["payload"], json!({"x": [1, 2]}));
    assert!(line["time"].as_u64().unwrap() > 1_700_000_000_000, "{line}");

    // Another device of bob says hey: bob's devices all hear `both`.
    let phone = client(&url, "bob").await;
    phone.send("hey", "from the phone").unwrap();
    let line = listener.line().await;
    assert_eq!(
        line,
        json!({"type": "both", "payload": "from the phone", "time": line["time"]})
    );

    // The server calls the listener's client_sum for ann: the fixed answer comes back.
    let answer: Value = ann
        .call("ask_user", &json!({"user": "bob", "a": 1, "b": 2}))
        .await
        .unwrap();
    assert_eq!(answer, json!(42));
    let line = listener.line().await;
    assert_eq!(line["type"], "client_sum");
    assert_eq!(line["call"], true);
    assert_eq!(line["payload"], json!({"a": 1, "b": 2}));
    drop(listener);
}

#[tokio::test]
async fn listen_exits_with_the_transport_code_when_the_server_closes() {
    let url = serve().await;
    for reconnect in [false, true] {
        let mut listen = args(&["listen", &url]);
        if reconnect {
            // A close with 1000 does not retry: the listener gives up as well.
            listen.push("--reconnect".into());
        }
        listen.extend(as_user("carl"));
        let mut listener = Running::start(&listen);
        listener.stderr_until("# ready").await;
        let other = client(&url, "carl").await;
        let _: Value = other.call("logout", &json!({"all": true})).await.unwrap();
        let (status, said) = listener.end().await;
        assert_eq!(status.code(), Some(6), "{said}");
        assert!(said.contains("# closed: 1000 wse.logout"), "{said}");
        assert!(said.contains("error: wse.logout"), "{said}");
    }
}

#[tokio::test]
async fn listen_with_reconnect_survives_a_server_restart() {
    let server = demo();
    let addr = server.bind("127.0.0.1:0").await.unwrap().local_addr();
    let url = format!("ws://{addr}");
    let mut listen = args(&["listen", &url, "--reconnect"]);
    listen.extend(as_user("erin"));
    let mut listener = Running::start(&listen);
    listener.stderr_until("# ready").await;

    // A graceful shutdown closes with 1012, which the client retries; its first retry comes
    // after a second or more, by when the demo is back on the same address.
    tokio::time::timeout(PATIENCE, server.shutdown())
        .await
        .expect("the shutdown ends in time");
    let restarted = demo();
    let _serving = bind_again(&restarted, addr).await;
    listener.stderr_until("# closed: 1012").await;
    listener.assert_running();
    listener.stderr_until("# ready").await;
    listener.assert_running();

    // The new server knows the listener as erin: a message to erin reaches it.
    let fay = client(&url, "fay").await;
    let sent: bool = fay
        .call(
            "send_to_user",
            &json!({"user": "erin", "type": "note", "payload": "after the restart"}),
        )
        .await
        .unwrap();
    assert!(sent);
    let line = listener.line().await;
    assert_eq!(
        line,
        json!({"type": "note", "payload": "after the restart", "time": line["time"]})
    );
    listener.assert_running();
    drop(listener);
}

#[tokio::test]
async fn an_answer_given_twice_is_a_usage_error() {
    let url = serve().await;
    let mut listen = args(&[
        "listen",
        &url,
        "--answer",
        "client_sum=1",
        "--answer",
        "client_sum=2",
    ]);
    listen.extend(as_user("dora"));
    let output = wse(&listen).await;
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(text(&output.stderr).contains("client_sum"));
    let output = wse(&args(&["listen", &url, "--answer", "no-equals"])).await;
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}

#[tokio::test]
async fn rooms_join_hears_what_rooms_send_sends_to_the_room() {
    let url = serve().await;
    let mut join = args(&["rooms", "join", &url, "public-lobby", "public-news"]);
    join.extend(as_user("bob"));
    let mut member = Running::start(&join);
    member.stderr_until("# joined: public-news").await;

    // Sent to a room bob is not in first: the first line bob gets is the lobby's.
    for (room, payload) in [
        ("public-other", "\"not for bob\""),
        ("public-lobby", "\"hi all\""),
    ] {
        let mut send = args(&["rooms", "send", &url, room, "chat", payload]);
        send.extend(as_user("ann"));
        let output = wse(&send).await;
        assert!(output.status.success(), "{output:?}");
        assert_eq!(text(&output.stdout).trim(), "true");
    }
    let line = member.line().await;
    assert_eq!(
        (&line["type"], &line["payload"]),
        (&json!("chat"), &json!("hi all"))
    );

    // --join joins first; --except user leaves out the sender's own devices, not bob.
    let mut send = args(&[
        "rooms",
        "send",
        &url,
        "public-news",
        "headline",
        r#"{"n": 1}"#,
        "--join",
        "--except",
        "user",
    ]);
    send.extend(as_user("ann"));
    let output = wse(&send).await;
    assert!(output.status.success(), "{output:?}");
    let line = member.line().await;
    assert_eq!(
        (&line["type"], &line["payload"]),
        (&json!("headline"), &json!({"n": 1}))
    );

    // A room the demo refuses: the join fails with the call error code.
    let mut send = args(&["rooms", "send", &url, "private", "chat", "1", "--join"]);
    send.extend(as_user("ann"));
    let output = wse(&send).await;
    assert_eq!(output.status.code(), Some(5), "{output:?}");
    assert!(text(&output.stderr).contains("wse.server.room.forbidden"));

    // Another send procedure, by name: one the demo does not have.
    let mut send = args(&[
        "rooms",
        "send",
        &url,
        "public-lobby",
        "chat",
        "--send-procedure",
        "nope",
    ]);
    send.extend(as_user("ann"));
    let output = wse(&send).await;
    assert_eq!(output.status.code(), Some(5), "{output:?}");
    assert!(text(&output.stderr).contains("wse.server.rp.not-registered"));
    drop(member);
}

#[tokio::test]
async fn presence_once_lists_who_is_online() {
    let url = serve().await;
    let _ann = client(&url, "ann").await;
    let _bob = client(&url, "bob").await;
    let mut presence = args(&["presence", &url, "--once", "--json"]);
    presence.extend(as_user("carol"));
    let output = wse(&presence).await;
    assert!(output.status.success(), "{output:?}");
    let entries: Vec<Value> = text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let users: Vec<&str> = entries.iter().filter_map(|e| e["user"].as_str()).collect();
    assert_eq!(users, ["ann", "bob", "carol"]);
    for entry in &entries {
        assert_eq!(entry["online"], true, "{entry}");
        assert_eq!(entry["devices"], 1, "{entry}");
        assert!(entry["version"].is_u64(), "{entry}");
    }

    let mut table = args(&["presence", &url, "--once"]);
    table.extend(as_user("carol"));
    let output = wse(&table).await;
    assert!(output.status.success(), "{output:?}");
    let table = text(&output.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("USER"), "{table}");
    assert!(lines[1].starts_with("ann "), "{table}");
    assert_eq!(lines.last(), Some(&"3 online"), "{table}");
}

#[tokio::test]
async fn presence_prints_each_change_as_it_comes() {
    let url = serve().await;
    let _ann = client(&url, "ann").await;
    let mut watch = args(&["presence", &url, "--json"]);
    watch.extend(as_user("carol"));
    let mut watcher = Running::start(&watch);
    // The list: ann and carol herself.
    assert_eq!(watcher.line().await["user"], "ann");
    assert_eq!(watcher.line().await["user"], "carol");
    let dave = client(&url, "dave").await;
    let change = watcher.line().await;
    assert_eq!(
        (&change["user"], &change["online"]),
        (&json!("dave"), &json!(true))
    );
    dave.close("wse.by-client").await;
    let change = watcher.line().await;
    assert_eq!(
        (&change["user"], &change["online"]),
        (&json!("dave"), &json!(false))
    );
    drop(watcher);
}

#[tokio::test]
async fn bench_with_tiny_bounded_loads_prints_json() {
    let url = serve().await;
    let bench = args(&[
        "bench",
        &url,
        "--identity",
        "secret",
        "--meta",
        r#"{"user_id": "bench-{conn}"}"#,
        "--connections",
        "2",
        "--in-flight",
        "2",
        "--warmup",
        "0.1",
        "--duration",
        "0.3",
        "--cycles",
        "6",
        "--concurrency",
        "2",
        "--receivers",
        "3",
        "--rounds",
        "2",
        "--max-time",
        "15",
        "--json",
    ]);
    let output = wse(&bench).await;
    assert!(output.status.success(), "{output:?}");
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["url"], url.as_str());
    assert_eq!(summary["codec"], "json");
    assert_eq!(summary["rpc"]["procedure"], "add");
    assert!(summary["rpc"]["calls"].as_u64().unwrap() > 0, "{summary}");
    assert!(summary["rpc"]["calls_per_second"].as_f64().unwrap() > 0.0);
    assert!(summary["rpc"]["latency_ms"]["p99"].is_number(), "{summary}");
    assert_eq!(summary["handshake"]["cycles"], 6);
    assert!(
        summary["handshake"]["handshakes_per_second"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(summary["fanout"]["messages"], 6);
    assert_eq!(summary["fanout"]["procedure"], "broadcast");
    // No progress bar: stderr is not a terminal, and the output is JSON.
    assert!(output.stderr.is_empty(), "{}", text(&output.stderr));

    // The table, of one load, with another procedure; and a refused identity: 3.
    let output = wse(&args(&[
        "bench",
        &url,
        "--loads",
        "rpc",
        "--rpc-procedure",
        "delay",
        "--rpc-args",
        r#"{"ms": 0, "value": "same"}"#,
        "--identity",
        "secret",
        "--meta",
        r#"{"user_id": "bench-{conn}"}"#,
        "--connections",
        "1",
        "--warmup",
        "0",
        "--duration",
        "0.2",
    ]))
    .await;
    assert!(output.status.success(), "{output:?}");
    let table = text(&output.stdout);
    assert!(
        table.contains("calls/s") && table.contains("delay"),
        "{table}"
    );
    let output = wse(&args(&[
        "bench",
        &url,
        "--loads",
        "handshake",
        "--cycles",
        "2",
    ]))
    .await;
    assert_eq!(output.status.code(), Some(3), "{output:?}");
}

#[tokio::test]
async fn bench_honours_the_timeout() {
    // A first answer slower than --timeout: 4, long before the procedure would answer.
    let url = serve().await;
    let output = wse(&args(&[
        "bench",
        &url,
        "--loads",
        "rpc",
        "--rpc-procedure",
        "delay",
        "--rpc-args",
        r#"{"ms": 5000, "value": 1}"#,
        "--identity",
        "secret",
        "--meta",
        r#"{"user_id": "bench-{conn}"}"#,
        "--connections",
        "1",
        "--warmup",
        "0",
        "--duration",
        "0.2",
        "--timeout",
        "0.3",
    ]))
    .await;
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("no answer to delay within 300ms"),
        "{stderr}"
    );

    // A server that never upgrades: no welcome within --timeout, rather than within the
    // load's own 30 s.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("ws://{}", silent.local_addr().unwrap());
    let output = wse(&args(&[
        "bench",
        &silent_url,
        "--loads",
        "handshake",
        "--cycles",
        "1",
        "--timeout",
        "0.3",
    ]))
    .await;
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("no connection ready within 300ms"),
        "{stderr}"
    );
    drop(silent);
}

#[tokio::test]
async fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let output = wse(&args(&["completions", shell])).await;
        assert!(output.status.success(), "{shell}: {output:?}");
        let script = text(&output.stdout);
        assert!(script.contains("wse"), "{shell}: {script}");
        assert!(script.contains("listen"), "{shell}");
    }
    let output = wse(&args(&["completions", "tcsh"])).await;
    assert_eq!(output.status.code(), Some(2));
}
