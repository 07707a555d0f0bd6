//! `wse listen`, `wse rooms`, `wse presence`, `wse bench` and `wse completions`, the binary
//! against the demo served in this test process. The subcommands that stay connected run as
//! children whose stderr tells when they are ready (`# ready`, `# joined`) and whose stdout is
//! read line by line; every wait is bounded.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use wse_client::Client;
use wse_core::{Json, MsgPack};
use wse_examples::{Auth, demo_server_with};
use wse_server::{Connection, Decision, Handshake, RpcError, Server, Serving};

mod support;

use support::{PATIENCE, scripted, text, wse};

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
///
/// A restart on the same address is what a reconnect is for, so the port cannot be left to
/// the system this time: between the shutdown and this bind, any other socket of the machine
/// (another test's, running in parallel) may be given the same ephemeral port. That clash is
/// rare, and says nothing of `wse`: the panic says so.
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
        .unwrap_or_else(|_| {
            panic!(
                "{addr} still in use {PATIENCE:?} after the shutdown: not a failure of wse, but \
             another socket (of a test running in parallel?) took the restarted server's \
             ephemeral port meanwhile; run this test again, or alone"
            )
        })
}

/// A server that accepts every hi as the user of its meta's `user_id`, with one procedure,
/// `twice {type, payload}`, which broadcasts its message twice: fan-out rounds that reach
/// every receiver twice.
fn doubling() -> Server {
    let server = Server::builder(|handshake: Handshake| async move {
        let user = handshake.meta.get("user_id").and_then(Value::as_str);
        Decision::accept(user.unwrap_or("anyone").to_owned(), json!({}))
    })
    .rate_limit(None)
    .build();
    server
        .register("twice", |conn: Connection, args: Value| async move {
            let kind = args["type"].as_str().unwrap_or("tick");
            for _ in 0..2 {
                conn.server()
                    .broadcast(kind, &args["payload"])
                    .map_err(RpcError::unexpected)?;
            }
            Ok(true)
        })
        .unwrap();
    server
}

/// Binary data, which MessagePack can carry and JSON cannot.
struct Bytes(&'static [u8]);

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
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

    /// Sends it SIGINT, as Ctrl-C does.
    fn interrupt(&self) {
        let pid = self.child.id().expect("still running").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success());
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
    assert_eq!(line.get("answered"), None, "{line}");
    drop(listener);

    // A listener with no --answer: the call is refused, and printed as such.
    let mut listen = args(&["listen", &url]);
    listen.extend(as_user("dan"));
    let mut listener = Running::start(&listen);
    listener.stderr_until("# ready").await;
    let refused = ann
        .call::<Value, _>("ask_user", &json!({"user": "dan", "a": 3, "b": 4}))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), "wse.server.rp.not-registered");
    let line = listener.line().await;
    assert_eq!(
        line,
        json!({"type": "client_sum", "payload": {"a": 3, "b": 4}, "time": line["time"],
               "call": true, "answered": false})
    );
    drop(listener);
}

#[tokio::test]
async fn listen_prints_what_json_cannot_hold_rather_than_dropping_it() {
    let addr = scripted(&MsgPack, |_, mut raw| async move {
        raw.welcome().await;
        raw.send("blob", &Bytes(&[0, 7, 255]), None).await;
        raw.send("note", &json!({"after": "the blob"}), None).await;
        while raw.next().await.is_some() {}
    })
    .await;
    let mut listener = Running::start(&args(&["listen", &format!("ws://{addr}"), "--msgpack"]));
    let line = listener.line().await;
    assert_eq!(
        (&line["type"], &line["payload"]),
        (&json!("blob"), &json!([0, 7, 255]))
    );
    let line = listener.line().await;
    assert_eq!(line["payload"], json!({"after": "the blob"}));
    drop(listener);
}

#[tokio::test]
async fn listen_exits_with_0_on_ctrl_c_while_it_connects() {
    // A server that takes the connection and never upgrades it: the connect waits.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", silent.local_addr().unwrap());
    let listener = Running::start(&args(&["listen", &url, "--timeout", "60"]));
    // Once the socket is there, the listener is connecting, and listening for Ctrl-C.
    let (_socket, _) = tokio::time::timeout(PATIENCE, silent.accept())
        .await
        .expect("a connection in time")
        .unwrap();
    listener.interrupt();
    let (status, said) = listener.end().await;
    assert_eq!(status.code(), Some(0), "{said}");
}

#[tokio::test]
async fn listen_with_reconnect_exits_with_3_when_a_reconnect_is_refused() {
    let addr = scripted(&Json, |n, mut raw| async move {
        if n == 0 {
            // Welcomed, then a restart, which the client retries.
            raw.welcome().await;
            raw.close(1012, "wse.by-server").await;
        } else {
            let _ = raw.next().await;
            raw.close(1000, "wse.not-authorized").await;
        }
    })
    .await;
    let mut listener = Running::start(&args(&["listen", &format!("ws://{addr}"), "--reconnect"]));
    listener.stderr_until("# closed: 1012").await;
    let (status, said) = listener.end().await;
    assert_eq!(status.code(), Some(3), "{said}");
    assert!(said.contains("# closed: 1000 wse.not-authorized"), "{said}");
    assert!(said.contains("error: wse.not-authorized"), "{said}");
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
async fn rooms_join_with_reconnect_joins_again_after_a_drop_during_the_joins() {
    let addr = scripted(&Json, |n, mut raw| async move {
        raw.welcome().await;
        let stamp = raw.call_of("rooms.join").await;
        match n {
            // Joined, then a restart.
            0 => {
                raw.send("~wse:response", &true, Some(&stamp)).await;
                raw.close(1012, "wse.by-server").await;
            }
            // Another restart, while the join is still unanswered.
            1 => raw.close(1012, "wse.by-server").await,
            // Joined for good, and a message to the room.
            _ => {
                raw.send("~wse:response", &true, Some(&stamp)).await;
                raw.send("chat", "back", None).await;
                while raw.next().await.is_some() {}
            }
        }
    })
    .await;
    let url = format!("ws://{addr}");
    let mut member = Running::start(&args(&["rooms", "join", &url, "lobby", "--reconnect"]));
    member.stderr_until("# joined: lobby").await;
    member
        .stderr_until("# the connection dropped during the joins")
        .await;
    member.assert_running();
    member.stderr_until("# joined: lobby").await;
    let line = member.line().await;
    assert_eq!(
        (&line["type"], &line["payload"]),
        (&json!("chat"), &json!("back"))
    );
    member.assert_running();
    // Ctrl-C ends it with 0.
    member.interrupt();
    let (status, said) = member.end().await;
    assert_eq!(status.code(), Some(0), "{said}");
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
        r#"{"ms": 30000, "value": 1}"#,
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
        // It bounds the welcome too, which a loaded machine may take a while to give: far
        // more than that, still far less than the delay.
        "--timeout",
        "3",
    ]))
    .await;
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("no answer to delay within 3s"), "{stderr}");

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
async fn bench_fanout_fails_at_once_on_an_error_answer_or_a_round_twice() {
    let fanout = |url: &str, more: &[&str]| {
        let mut bench = args(&[
            "bench",
            url,
            "--loads",
            "fanout",
            "--receivers",
            "3",
            "--identity",
            "secret",
            "--meta",
            r#"{"user_id": "bench-{conn}"}"#,
        ]);
        bench.extend(args(more));
        bench
    };
    // A procedure the server does not have: its code at once, not the rounds' 60 s.
    let url = serve().await;
    let output = wse(&fanout(&url, &["--fanout-procedure", "nope"])).await;
    assert_eq!(output.status.code(), Some(5), "{output:?}");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("wse.server.rp.not-registered"), "{stderr}");

    // Every round twice: the rounds are numbered, so the second of round 0 fails.
    let doubled = doubling().bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", doubled.local_addr());
    let output = wse(&fanout(
        &url,
        &["--fanout-procedure", "twice", "--rounds", "3"],
    ))
    .await;
    assert_eq!(output.status.code(), Some(5), "{output:?}");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("round 0 received twice"), "{stderr}");
    // Not numbered: counted, one message too many.
    let same = r#"{"type": "tick", "payload": "same"}"#;
    let twice = [
        "--fanout-procedure",
        "twice",
        "--rounds",
        "1",
        "--fanout-args",
        same,
    ];
    let output = wse(&fanout(&url, &twice)).await;
    assert_eq!(output.status.code(), Some(5), "{output:?}");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("messages"), "{stderr}");
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
