//! The demo binary as nodes of a cluster (issue 15): two demo processes started with
//! `--redis` on one `redis-server` of the test's own serve one application per port. A send to
//! a user reaches its devices on both processes once, `ask_user` calls the user's oldest device
//! wherever it is connected (`app.user-offline` when there is none), a device past
//! `--conn-per-user` closes the user's oldest on whichever process holds it, the HMAC port is a
//! cluster of its own, and a Redis that cannot be reached stops the demo from starting.
//!
//! Each test starts its own `redis-server` on a free port of 127.0.0.1 (never the machine's
//! Redis) and kills it at its end, as it does its demo processes.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::process::Child;
use wse_client::{CallError, Client, ClientEvent, Status};

mod support;

use wse_testkit::{RedisServer, free_port};

use support::{run_demo, within};

/// A short wait for "nothing more arrives".
const QUIET: Duration = Duration::from_millis(300);

/// A node timeout short enough that a process killed by a test leaves the cluster soon.
const NODE_TIMEOUT_MS: &str = "600";

/// Waits until `check` holds, polling, at most [`support::PATIENCE`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    within(what, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// A demo process: killed when dropped.
struct Demo {
    _child: Child,
    plain: SocketAddr,
    hmac: SocketAddr,
}

/// Starts the demo binary with `args` (see [`support::demo`]).
async fn demo(args: &[&str]) -> Demo {
    let (child, plain, hmac) = support::demo(args).await;
    Demo {
        _child: child,
        plain,
        hmac,
    }
}

/// A demo process on free ports, a node of the clusters under `prefix` on `redis`.
async fn node(redis: &RedisServer, prefix: &str) -> Demo {
    let url = redis.url();
    demo(&[
        "--port",
        "0",
        "--redis",
        &url,
        "--redis-prefix",
        prefix,
        "--node-timeout-ms",
        NODE_TIMEOUT_MS,
    ])
    .await
}

/// Two demo processes in the clusters under a prefix of `test`'s own.
async fn two_nodes(redis: &RedisServer, test: &str) -> (Demo, Demo) {
    let prefix = format!("wse-demo-test-{test}-{}", std::process::id());
    (node(redis, &prefix).await, node(redis, &prefix).await)
}

#[derive(Deserialize)]
struct Sum {
    a: i64,
    b: i64,
}

/// A device of a user: it records every `news` message it gets, and answers `client_sum
/// {a, b}` with `a + b` (refusing negative numbers with `app.negative`), counting the calls.
struct Device {
    client: Client,
    news: Arc<Mutex<Vec<Value>>>,
    sums: Arc<AtomicUsize>,
}

impl Device {
    /// A device of `user` on the plain port at `addr`.
    async fn plain(addr: SocketAddr, user: &str) -> Self {
        Self::connect(Client::builder(format!("ws://{addr}")).build(), user).await
    }

    /// A device of `user` on the HMAC port at `addr`.
    async fn hmac(addr: SocketAddr, user: &str) -> Self {
        let client = Client::builder(format!("ws://{addr}"))
            .hmac_secret("s3cret")
            .build();
        Self::connect(client, user).await
    }

    async fn connect(client: Client, user: &str) -> Self {
        let news = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&news);
        client
            .on("news", move |_, payload: Value| {
                record.lock().unwrap().push(payload);
            })
            .unwrap();
        let sums = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&sums);
        client
            .register("client_sum", move |_, sum: Sum| {
                count.fetch_add(1, Ordering::SeqCst);
                async move {
                    if sum.a < 0 || sum.b < 0 {
                        return Err(wse_client::RpcError::new("app.negative"));
                    }
                    Ok(sum.a + sum.b)
                }
            })
            .unwrap();
        let welcome = within(
            "the welcome",
            client.connect(json!("secret"), json!({"user_id": user})),
        )
        .await
        .expect("the demo accepts the device");
        assert_eq!(welcome["cid"], user);
        Self { client, news, sums }
    }

    fn news(&self) -> Vec<Value> {
        self.news.lock().unwrap().clone()
    }

    fn sums(&self) -> usize {
        self.sums.load(Ordering::SeqCst)
    }

    /// `ask_user {user, a, b}`.
    async fn ask_user(&self, user: &str, a: i64, b: i64) -> Result<i64, CallError> {
        within(
            "ask_user",
            self.client
                .call("ask_user", &json!({"user": user, "a": a, "b": b})),
        )
        .await
    }

    /// `send_to_user {user, type: "news", payload}`.
    async fn send_news(&self, user: &str, payload: &str) {
        let sent: bool = within(
            "send_to_user",
            self.client.call(
                "send_to_user",
                &json!({"user": user, "type": "news", "payload": payload}),
            ),
        )
        .await
        .unwrap();
        assert!(sent);
    }
}

/// Waits until each of `devices` got a `news` message, then a moment more, and checks that
/// each got `payload` exactly once and nothing else.
async fn each_gets_once(devices: &[&Device], payload: &str) {
    for device in devices {
        eventually("the news", || !device.news().is_empty()).await;
    }
    tokio::time::sleep(QUIET).await;
    for device in devices {
        assert_eq!(device.news(), [json!(payload)]);
    }
}

/// Waits for `events` to report the connection closed: its code and reason.
async fn closed(events: &mut tokio::sync::broadcast::Receiver<ClientEvent>) -> (u16, String) {
    within("the close", async {
        loop {
            if let ClientEvent::Closed { code, reason } = events.recv().await.unwrap() {
                return (code, reason);
            }
        }
    })
    .await
}

#[tokio::test]
async fn send_to_user_reaches_each_device_on_both_processes_once() {
    let redis = RedisServer::start();
    let (one, two) = two_nodes(&redis, "send").await;
    let ann_one = Device::plain(one.plain, "ann").await;
    let ann_two = Device::plain(two.plain, "ann").await;
    let bob = Device::plain(one.plain, "bob").await;

    bob.send_news("ann", "hello ann").await;
    each_gets_once(&[&ann_one, &ann_two], "hello ann").await;
    assert!(bob.news().is_empty());

    // And from the other process, to a user with a device on each.
    let bob_two = Device::plain(two.plain, "bob").await;
    ann_two.send_news("bob", "hello bob").await;
    each_gets_once(&[&bob, &bob_two], "hello bob").await;
    assert_eq!(ann_one.news(), [json!("hello ann")]);
}

#[tokio::test]
async fn ask_user_calls_the_oldest_device_wherever_it_is_connected() {
    let redis = RedisServer::start();
    let (one, two) = two_nodes(&redis, "ask").await;
    let ann_one = Device::plain(one.plain, "ann").await;
    let ann_two = Device::plain(two.plain, "ann").await;
    let bob = Device::plain(one.plain, "bob").await;

    // The oldest device answers.
    assert_eq!(bob.ask_user("ann", 20, 22).await, Ok(42));
    assert_eq!((ann_one.sums(), ann_two.sums()), (1, 0));
    // Its own error reaches the caller as it sent it.
    let refused = bob.ask_user("ann", -1, 2).await.unwrap_err();
    assert_eq!(refused.code(), "app.negative");

    // Ann's only device is on the other process now. Its release reaches the cluster just
    // after the close: until then the call may still go to the device that left.
    within("ann's close", ann_one.client.close("wse.by-client")).await;
    let sum = within("the answer from process 2", async {
        loop {
            match bob.ask_user("ann", 20, 22).await {
                Ok(sum) => return sum,
                Err(error)
                    if error == CallError::Disconnected
                        || error.code() == "wse.server.client.connection-missing" =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(error) => panic!("ask_user failed: {error:?}"),
            }
        }
    })
    .await;
    assert_eq!(sum, 42);
    assert_eq!((ann_one.sums(), ann_two.sums()), (2, 1));
}

#[tokio::test]
async fn ask_user_for_a_user_with_no_device_is_user_offline() {
    let redis = RedisServer::start();
    let (one, two) = two_nodes(&redis, "offline").await;
    let bob = Device::plain(one.plain, "bob").await;
    let offline = bob.ask_user("zed", 20, 22).await.unwrap_err();
    assert_eq!(offline.code(), "app.user-offline");

    // Online on the other process, then gone again.
    let zed = Device::plain(two.plain, "zed").await;
    assert_eq!(bob.ask_user("zed", 1, 2).await, Ok(3));
    within("zed's close", zed.client.close("wse.by-client")).await;
    let code = within("zed to be offline", async {
        loop {
            match bob.ask_user("zed", 1, 2).await {
                Err(error) if error.code() == "app.user-offline" => return error.code().to_owned(),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    assert_eq!(code, "app.user-offline");
}

#[tokio::test]
async fn a_device_past_the_limit_closes_the_oldest_on_whichever_process() {
    let redis = RedisServer::start();
    let (one, two) = two_nodes(&redis, "limit").await;
    let first = Device::plain(one.plain, "ann").await;
    let mut first_events = first.client.events();
    let second = Device::plain(two.plain, "ann").await;
    let mut second_events = second.client.events();

    // Two devices per user: a third on process 1 closes the oldest, on process 1.
    let third = Device::plain(one.plain, "ann").await;
    assert_eq!(
        closed(&mut first_events).await,
        (1000, "wse.clients-concurrency".to_owned())
    );
    // A fourth on process 1 closes the oldest left, on process 2.
    let fourth = Device::plain(one.plain, "ann").await;
    assert_eq!(
        closed(&mut second_events).await,
        (1000, "wse.clients-concurrency".to_owned())
    );
    assert_eq!(third.client.status(), Status::Ready);
    assert_eq!(fourth.client.status(), Status::Ready);

    // The two that stay hear sends to their user; the closed ones do not.
    fourth.send_news("ann", "still here").await;
    each_gets_once(&[&third, &fourth], "still here").await;
    assert!(first.news().is_empty());
    assert!(second.news().is_empty());
}

#[tokio::test]
async fn the_hmac_port_is_a_cluster_of_its_own() {
    let redis = RedisServer::start();
    let (one, two) = two_nodes(&redis, "hmac").await;
    let ann_plain = Device::plain(one.plain, "ann").await;
    let ann_one = Device::hmac(one.hmac, "ann").await;
    let ann_two = Device::hmac(two.hmac, "ann").await;
    let bob = Device::hmac(two.hmac, "bob").await;

    bob.send_news("ann", "behind the challenge").await;
    each_gets_once(&[&ann_one, &ann_two], "behind the challenge").await;
    // The plain port is another application: its ann is another user.
    assert!(ann_plain.news().is_empty());
    assert_eq!(bob.ask_user("ann", 20, 22).await, Ok(42));
    assert_eq!(
        (ann_plain.sums(), ann_one.sums(), ann_two.sums()),
        (0, 1, 0)
    );
}

#[tokio::test]
async fn a_redis_that_cannot_be_reached_stops_the_demo_from_starting() {
    // Nothing listens there.
    let url = format!("redis://127.0.0.1:{}/", free_port());
    let output = run_demo(&["--port", "0", "--redis", &url]).await;
    assert!(!output.status.success(), "{output:?}");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    // It never said it listens.
    assert!(output.stdout.is_empty(), "{output:?}");
    let message = String::from_utf8(output.stderr).unwrap();
    assert!(
        message.contains("cannot join the cluster over Redis"),
        "{message}"
    );
}

#[tokio::test]
async fn help_lists_the_cluster_flags_with_their_defaults() {
    let help = run_demo(&["--help"]).await;
    assert!(help.status.success(), "{help:?}");
    let text = String::from_utf8(help.stdout).unwrap();
    for expected in [
        "--redis <URL>",
        "--redis-prefix <P>",
        "--node-timeout-ms <N>",
        "--presence-grace-ms <N>",
        "[default: no cluster]",
        "[default: wse-demo]",
        "[default: 10000]",
    ] {
        assert!(
            text.contains(expected),
            "{expected} is missing from\n{text}"
        );
    }
    // The cluster's settings without --redis, or out of range, are usage errors.
    for args in [
        &["--redis-prefix", "chat"][..],
        &["--presence-grace-ms", "100"],
        &["--redis", "redis://127.0.0.1:1/", "--node-timeout-ms", "29"],
        &["--redis", "127.0.0.1:7000"],
    ] {
        let output = run_demo(args).await;
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
    }
}
