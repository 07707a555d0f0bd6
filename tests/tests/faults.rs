//! Faults, bounded in count and time: thousands of connect/disconnect cycles leave nothing
//! behind; a flooding client and a slow consumer do not disturb a hundred well-behaved
//! clients; a device vanishing mid-send costs its user's other devices nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use wse_client::Client;
use wse_examples::Auth;
use wse_server::{Connection, Decision, Event, MsgPack, SLOW_CONSUMER, Server};
use wse_tests::{Codec, Raw, TestServer, start, start_demo, within};

const CYCLES: usize = 10_000;
const WORKERS: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connect_cycles_leave_nothing_behind() {
    let server = start_demo(Auth::Plain).await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    let addr = server.addr();

    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            tokio::spawn(async move {
                for cycle in 0..CYCLES / WORKERS {
                    let user = format!("w{worker}");
                    let mut raw = Raw::login(addr, Codec::BOTH[cycle % 2], &user).await;
                    match cycle % 4 {
                        // A clean close.
                        0 => {
                            raw.close(1000, "wse.by-client").await;
                            let _ = raw.next().await;
                        }
                        // Gone without a close frame.
                        1 => drop(raw),
                        // Gone in the middle of a call.
                        2 => {
                            raw.send(&json!(["delay", {"ms": 20, "value": 1}, "d"]))
                                .await;
                            drop(raw);
                        }
                        // Gone while the server waits for this device's answer.
                        _ => {
                            raw.send(&json!(["ask_me", null, "a"])).await;
                            assert_eq!(raw.frame().await[0], "client_sum");
                            drop(raw);
                        }
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(120), worker)
            .await
            .expect("the cycles finish in time")
            .unwrap();
    }

    // Every connection ends (abrupt ones once the server notices), and takes its tasks along.
    tokio::time::timeout(Duration::from_secs(30), async {
        while server.server.counts().await.unwrap() != (0, 0)
            || metrics.num_alive_tasks() > baseline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "left behind: {:?} (users, connections), {} tasks over the baseline",
            server.server,
            metrics.num_alive_tasks().saturating_sub(baseline)
        )
    });
    assert!(server.server.users().await.unwrap().is_empty());
}

/// Accepts any identity as that user, up to 4 devices each (JSON or MessagePack), with a
/// short outbound queue.
async fn busy_server() -> TestServer {
    let server = Server::builder(|handshake| async move {
        match handshake.identity.as_str() {
            Some(user) => Decision::accept(user, Value::Null),
            None => Decision::refuse(),
        }
    })
    .add_protocol(MsgPack)
    .conn_per_user(4)
    .outbound_queue(64)
    // The flooder makes an error event per refused frame: keep them all, so that the
    // events this test waits for are not lost to a lagging subscriber.
    .events_capacity(1 << 18)
    .build();
    server
        .register("add", |_: Connection, (a, b): (i64, i64)| async move {
            Ok(a + b)
        })
        .unwrap();
    start(server).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooder_and_a_slow_consumer_do_not_disturb_a_hundred_clients() {
    const CLIENTS: usize = 100;
    const TICKS: i64 = 200;
    let server = busy_server().await;
    let mut events = server.server.events();

    // A hundred well-behaved clients, each collecting the ticks it receives.
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let client = Client::builder(server.url()).build();
        let (tx, rx) = mpsc::channel(TICKS as usize);
        client
            .on("tick", move |_, n: i64| {
                let _ = tx.try_send(n);
            })
            .unwrap();
        within(
            "connect",
            client.connect(json!(format!("good{i}")), json!({})),
        )
        .await
        .unwrap();
        clients.push((client, rx));
    }

    // The slow consumer never reads; the flooder never stops sending (until it is closed).
    let slow = Raw::login_identity(server.addr(), Codec::Json, "slow").await;
    let mut flooder = Raw::login_identity(server.addr(), Codec::Json, "flooder").await;
    let flood = tokio::spawn(async move {
        for i in 0..50_000i64 {
            let call = flooder
                .codec
                .message(&json!(["add", [i, i], format!("f{i}")]));
            if flooder.ws.send(call).await.is_err() {
                break;
            }
        }
        flooder
    });
    let big = "x".repeat(16 << 10);
    let stuff_slow = tokio::spawn({
        let server = server.server.clone();
        async move {
            for _ in 0..5_000 {
                if server.send_to_user("slow", "big", &big).unwrap() == 0 {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
    });

    // Meanwhile the well-behaved clients call, and everyone gets the ticks.
    let callers: Vec<_> = clients
        .iter()
        .map(|(client, _)| {
            let client = client.clone();
            tokio::spawn(async move {
                for i in 0..20i64 {
                    let sum: i64 = client
                        .call("add", &(i, 1))
                        .await
                        .expect("a well-behaved call succeeds");
                    assert_eq!(sum, i + 1);
                }
            })
        })
        .collect();
    for n in 0..TICKS {
        let reached = server.server.broadcast("tick", &n).unwrap();
        assert!(reached >= CLIENTS, "{reached}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for caller in callers {
        within("calls", caller).await.unwrap();
    }
    for (_, rx) in &mut clients {
        for expected in 0..TICKS {
            assert_eq!(within("a tick", rx.recv()).await, Some(expected));
        }
    }

    // The slow consumer was closed as such; the flooder was stopped.
    let mut closed = std::collections::HashMap::new();
    within("both offenders closed", async {
        while closed.len() < 2 {
            if let Ok(Event::Disconnected {
                connection,
                code,
                reason,
            }) = events.recv().await
            {
                if ["slow", "flooder"].contains(&connection.user_id()) {
                    closed.insert(connection.user_id().to_owned(), (code, reason));
                }
            }
        }
    })
    .await;
    assert_eq!(closed["slow"], (1013, SLOW_CONSUMER.1.to_owned()));
    assert!(
        [1008, 1013].contains(&closed["flooder"].0),
        "{:?}",
        closed["flooder"]
    );
    within("flooder stops", flood).await.unwrap();
    within("stuffing stops", stuff_slow).await.unwrap();
    drop(slow);
}

#[tokio::test]
async fn a_device_that_vanishes_mid_send_costs_its_user_nothing() {
    const MESSAGES: i64 = 500;
    let server = busy_server().await;
    let mut phone = Raw::login_identity(server.addr(), Codec::Json, "ann").await;
    let mut laptop = Raw::login_identity(server.addr(), Codec::MsgPack, "ann").await;
    let tablet = Raw::login_identity(server.addr(), Codec::Json, "ann").await;
    let (vanish, vanished) = tokio::sync::oneshot::channel::<()>();

    let sender = tokio::spawn({
        let server = server.server.clone();
        async move {
            let mut vanish = Some(vanish);
            for n in 0..MESSAGES {
                if n == MESSAGES / 5 {
                    // Let the tablet go in the middle of the run.
                    let _ = vanish.take().map(|v| v.send(()));
                }
                server.send_to_user("ann", "seq", &n).unwrap();
                tokio::task::yield_now().await;
            }
        }
    });
    vanished.await.unwrap();
    drop(tablet);

    for device in [&mut phone, &mut laptop] {
        for n in 0..MESSAGES {
            assert_eq!(device.frame().await, json!(["seq", n, null]));
        }
    }
    within("sender", sender).await.unwrap();
}
