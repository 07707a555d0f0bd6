//! A connection's life on the server: the data identify attached to it, the application state
//! every handler shares, procedures cancelled when their connection closes,
//! `Connection::closed` and the on-disconnect hook, and the built-in logout of one device or
//! all of a user's.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use wse_client::{CallError, Status};
use wse_examples::Auth;
use wse_server::{
    Close, Connection, ConnectionId, Decision, Event, Handshake, Logout, MsgPack, NoArgs, RpcError,
    Server, ServerError,
};
use wse_tests::{
    Codec, FAST, QUIET, Raw, Seen, TestServer, client, connect_as, demo_client, next_event, pick,
    start, start_demo, wait_status, within,
};

/// Accepts any non-empty identity as that user, welcome `null`.
async fn identify(handshake: Handshake) -> Decision {
    match handshake.identity.as_str() {
        Some(user) if !user.is_empty() => Decision::accept(user, json!(null)),
        _ => Decision::refuse(),
    }
}

/// A server of [`identify`] speaking JSON and MessagePack, up to two devices a user.
fn builder() -> wse_server::Builder {
    Server::builder(identify)
        .add_protocol(MsgPack)
        .conn_per_user(2)
}

/// A raw peer of a custom server logged in as `user` and listed: its first call is served only
/// once the connection is listed.
async fn peer(server: &TestServer, codec: Codec, user: &str) -> Raw {
    let mut raw = Raw::login_identity(server.addr(), codec, user).await;
    raw.expect_reply(
        &json!(["ping", null, "listed"]),
        &json!(["~wse:response", "pong", "listed"]),
    )
    .await;
    raw
}

fn register_ping(server: &Server) {
    server
        .register("ping", |_: Connection, NoArgs| async { Ok("pong") })
        .unwrap();
}

/// `user`'s only connection.
async fn only_connection(server: &TestServer, user: &str) -> Connection {
    let mut connections = server.server.connections_of(user).await.unwrap();
    assert_eq!(connections.len(), 1, "{user}'s connections");
    connections.pop().unwrap()
}

// ---------------------------------------------------------------- data and state

#[tokio::test]
async fn whoami_answers_the_user_and_the_meta_given_at_hi() {
    let server = start_demo(Auth::Plain).await;
    for codec in Codec::BOTH {
        let meta = json!({"user_id": "ann", "device": format!("{codec:?}"), "n": [1, 2]});
        let mut raw = Raw::connect(server.addr(), codec).await;
        raw.expect_reply(
            &json!(["~wse:hi", {"identity": "secret", "meta": meta}, null]),
            &json!(["~wse:welcome", {"cid": "ann", "meta": meta}, null]),
        )
        .await;
        for (stamp, args) in [("w1", json!({})), ("w2", json!(null))] {
            raw.expect_reply(
                &json!(["whoami", args, stamp]),
                &json!(["~wse:response", {"user": "ann", "meta": meta}, stamp]),
            )
            .await;
        }
    }

    // Each device answers with its own meta.
    let phone = client(&server).build();
    within(
        "connect",
        phone.connect(
            json!("secret"),
            json!({"user_id": "bob", "device": "phone"}),
        ),
    )
    .await
    .unwrap();
    let laptop = demo_client(&server, "bob").await;
    let who: Value = within("whoami", phone.call("whoami", &json!({})))
        .await
        .unwrap();
    assert_eq!(
        who,
        json!({"user": "bob", "meta": {"user_id": "bob", "device": "phone"}})
    );
    let who: Value = within("whoami", laptop.call("whoami", &json!({})))
        .await
        .unwrap();
    assert_eq!(who, json!({"user": "bob", "meta": {"user_id": "bob"}}));
}

#[derive(Default)]
struct Hits(AtomicU64);

struct Label(&'static str);

#[derive(Debug, PartialEq)]
struct Role(&'static str);

#[tokio::test]
async fn state_given_to_the_builder_is_shared_by_every_handler() {
    let server = Server::builder(|handshake: Handshake| async move {
        let role = if handshake.identity == "root" {
            "admin"
        } else {
            "reader"
        };
        identify(handshake).await.with_data(Role(role))
    })
    .add_protocol(MsgPack)
    .conn_per_user(2)
    .state(Hits::default())
    .state(Label("first"))
    .state(Label("second"))
    .build();
    register_ping(&server);
    server
        .register("hit", |conn: Connection, NoArgs| async move {
            let hits = conn
                .state::<Hits>()
                .ok_or_else(|| RpcError::unexpected("no hits"))?;
            Ok(hits.0.fetch_add(1, Ordering::SeqCst) + 1)
        })
        .unwrap();
    server
        .on("hit", |conn: Connection, NoArgs| {
            conn.state::<Hits>()
                .unwrap()
                .0
                .fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    server
        .register("label", |conn: Connection, NoArgs| async move {
            Ok(conn.state::<Label>().map(|label| label.0))
        })
        .unwrap();
    server
        .register("missing", |conn: Connection, NoArgs| async move {
            Ok(conn.state::<u32>().is_none() && conn.data::<Label>().is_none())
        })
        .unwrap();
    server
        .register("role", |conn: Connection, NoArgs| async move {
            Ok(conn.data::<Role>().map(|role| role.0))
        })
        .unwrap();
    let server = start(server).await;
    let mut ann = peer(&server, Codec::Json, "ann").await;
    let mut root = peer(&server, Codec::MsgPack, "root").await;

    assert_eq!(ann.ok("hit", json!({}), "h1").await, json!(1));
    assert_eq!(root.ok("hit", json!(null), "h2").await, json!(2));
    // A message handler shares it too, and runs before the call that follows it.
    ann.send(&json!(["hit", null, null])).await;
    assert_eq!(ann.ok("hit", json!({}), "h3").await, json!(4));
    assert_eq!(
        server
            .server
            .state::<Hits>()
            .unwrap()
            .0
            .load(Ordering::SeqCst),
        4
    );

    // One value a type: the second replaced the first; a type never given is not there.
    assert_eq!(root.ok("label", json!({}), "l").await, json!("second"));
    assert_eq!(ann.ok("missing", json!({}), "m").await, json!(true));
    assert!(server.server.state::<u32>().is_none());

    // Connection data is each connection's own.
    assert_eq!(ann.ok("role", json!({}), "r1").await, json!("reader"));
    assert_eq!(root.ok("role", json!({}), "r2").await, json!("admin"));
}

// ---------------------------------------------------------------- cancellation

/// Tells the test which user's procedure started, and which user's guard was dropped; the
/// server's hooks read the users whose guard was dropped in `gone`.
#[derive(Clone)]
struct Probe {
    started: mpsc::UnboundedSender<String>,
    dropped: mpsc::UnboundedSender<String>,
    gone: Arc<Mutex<Vec<String>>>,
}

impl Probe {
    fn new() -> (
        Self,
        mpsc::UnboundedReceiver<String>,
        mpsc::UnboundedReceiver<String>,
    ) {
        let (started, started_rx) = mpsc::unbounded_channel();
        let (dropped, dropped_rx) = mpsc::unbounded_channel();
        let probe = Self {
            started,
            dropped,
            gone: Arc::default(),
        };
        (probe, started_rx, dropped_rx)
    }
}

/// Held by a running procedure: says so when its future is dropped.
struct Guard {
    user: String,
    probe: Probe,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.probe.gone.lock().unwrap().push(self.user.clone());
        let _ = self.probe.dropped.send(self.user.clone());
    }
}

/// Registers `hang`: holds a [`Guard`] and never finishes.
/// The next cancelled call: its connection and procedure.
async fn call_cancelled(events: &mut wse_server::Events) -> (Option<ConnectionId>, String) {
    next_event(events, "call cancelled", |event| match event {
        Event::Error {
            connection_id,
            error: ServerError::CallCancelled { procedure },
        } => Some((*connection_id, procedure.clone())),
        _ => None,
    })
    .await
}

fn register_hang(server: &Server) {
    server
        .register("hang", |conn: Connection, NoArgs| async move {
            let probe = conn.state::<Probe>().expect("the probe").clone();
            let _guard = Guard {
                user: conn.user_id().to_owned(),
                probe: probe.clone(),
            };
            let _ = probe.started.send(conn.user_id().to_owned());
            std::future::pending::<()>().await;
            Ok(())
        })
        .unwrap();
}

#[tokio::test]
async fn a_running_procedure_is_cancelled_when_its_connection_closes() {
    let (probe, mut started, mut dropped) = Probe::new();
    let server = builder().state(probe).build();
    register_ping(&server);
    register_hang(&server);
    let server = start(server).await;
    let mut events = server.server.events();

    let ann = client(&server).build();
    within("connect", ann.connect(json!("ann"), json!({})))
        .await
        .unwrap();
    let bob = client(&server).build();
    within("connect", bob.connect(json!("bob"), json!({})))
        .await
        .unwrap();
    let ann_id = only_connection(&server, "ann").await.id();
    let bob_id = only_connection(&server, "bob").await.id();

    let ann_call = tokio::spawn(ann.call::<Value, _>("hang", &json!({})));
    assert_eq!(within("ann's hang", started.recv()).await.unwrap(), "ann");
    let bob_call = tokio::spawn(bob.call::<Value, _>("hang", &json!({})));
    assert_eq!(within("bob's hang", started.recv()).await.unwrap(), "bob");

    within("close", ann.close("wse.by-client")).await;
    assert_eq!(
        within("ann's guard dropped", dropped.recv()).await.unwrap(),
        "ann"
    );
    let (connection, procedure) = call_cancelled(&mut events).await;
    assert_eq!(connection, Some(ann_id));
    assert_eq!(procedure, "hang");
    assert_eq!(
        within("ann's call", ann_call).await.unwrap(),
        Err(CallError::Disconnected)
    );

    // Bob's procedure runs on, and bob is served.
    let more = tokio::time::timeout(QUIET, dropped.recv()).await;
    assert!(more.is_err(), "another guard dropped: {more:?}");
    assert!(!bob_call.is_finished());
    let pong: String = within("ping", bob.call("ping", &json!(null)))
        .await
        .unwrap();
    assert_eq!(pong, "pong");

    // The server closes bob's connection: the same.
    assert!(server.server.drop_connection(bob_id, "kicked").unwrap());
    assert_eq!(
        within("bob's guard dropped", dropped.recv()).await.unwrap(),
        "bob"
    );
    let (connection, procedure) = call_cancelled(&mut events).await;
    assert_eq!((connection, procedure.as_str()), (Some(bob_id), "hang"));
    assert_eq!(
        within("bob's call", bob_call).await.unwrap(),
        Err(CallError::Disconnected)
    );
}

#[tokio::test]
async fn on_disconnect_runs_once_the_running_procedures_of_the_connection_are_cancelled() {
    let (probe, mut started, mut dropped) = Probe::new();
    let (tx, mut hooked) = mpsc::unbounded_channel();
    let server = builder()
        .state(probe)
        .on_disconnect(move |conn: Connection, _| {
            let tx = tx.clone();
            async move {
                let probe = conn.state::<Probe>().expect("the probe");
                let gone = probe
                    .gone
                    .lock()
                    .unwrap()
                    .contains(&conn.user_id().to_owned());
                let _ = tx.send((conn.user_id().to_owned(), gone));
            }
        })
        .build();
    register_ping(&server);
    register_hang(&server);
    let server = start(server).await;

    let mut raw = peer(&server, Codec::Json, "ann").await;
    raw.send(&json!(["hang", {}, "h1"])).await;
    assert_eq!(within("hang", started.recv()).await.unwrap(), "ann");
    raw.close(1000, "wse.by-client").await;
    assert_eq!(raw.next().await, Seen::Close(1000, "wse.by-client".into()));

    let (user, gone) = within("on_disconnect", hooked.recv()).await.unwrap();
    assert_eq!(user, "ann");
    assert_eq!(
        within("guard dropped", dropped.recv()).await.unwrap(),
        "ann"
    );
    assert!(
        gone,
        "on_disconnect ran while the connection's procedure was still running"
    );
}

// ---------------------------------------------------------------- closed and on_disconnect

/// What the on-disconnect hook saw of one connection.
#[derive(Debug)]
struct Ended {
    id: ConnectionId,
    close: Close,
    /// Whether `Connection::closed` had completed when the hook ran.
    closed: bool,
    /// Whether the connection was still one of its user's devices.
    listed: bool,
}

#[tokio::test]
async fn closed_completes_after_the_close_and_on_disconnect_sees_how_it_closed() {
    let (tx, mut ended) = mpsc::unbounded_channel();
    let server = builder()
        .on_disconnect(move |conn: Connection, close: Close| {
            let tx = tx.clone();
            async move {
                let devices = conn.server().devices(conn.user_id()).await.unwrap();
                let _ = tx.send(Ended {
                    id: conn.id(),
                    close,
                    closed: conn.closed().now_or_never().is_some(),
                    listed: devices.contains(&conn.id()),
                });
            }
        })
        .build();
    register_ping(&server);
    let server = start(server).await;

    // The client closes: its code and reason.
    let mut raw = peer(&server, Codec::Json, "ann").await;
    let conn = only_connection(&server, "ann").await;
    let closed = conn.closed();
    tokio::pin!(closed);
    assert!(
        tokio::time::timeout(QUIET, &mut closed).await.is_err(),
        "closed() completed while the connection is open"
    );
    assert!(!conn.is_closed());
    raw.close(4001, "going away").await;
    within("closed", closed).await;
    assert!(conn.is_closed());
    let seen = within("on_disconnect", ended.recv()).await.unwrap();
    assert_eq!(seen.id, conn.id());
    assert_eq!(
        (seen.close.code, seen.close.reason.as_str()),
        (4001, "going away")
    );
    assert!(seen.closed, "on_disconnect ran before closed() completed");
    assert!(!seen.listed, "on_disconnect ran while still listed");
    // Once closed, at once.
    within("closed again", conn.closed()).await;

    // The server closes: its own code and reason.
    let mut raw = peer(&server, Codec::MsgPack, "bob").await;
    let conn = only_connection(&server, "bob").await;
    let closed = tokio::spawn(conn.closed());
    assert!(server.server.drop_connection(conn.id(), "kicked").unwrap());
    raw.expect_close(1000, "kicked").await;
    within("closed", closed).await.unwrap();
    let seen = within("on_disconnect", ended.recv()).await.unwrap();
    assert_eq!(seen.id, conn.id());
    assert_eq!(
        (seen.close.code, seen.close.reason.as_str()),
        (1000, "kicked")
    );
    assert!(seen.closed && !seen.listed, "{seen:?}");

    // The socket just ends: 1006.
    let raw = peer(&server, Codec::Json, "carol").await;
    let conn = only_connection(&server, "carol").await;
    let closed = tokio::spawn(conn.closed());
    drop(raw);
    within("closed", closed).await.unwrap();
    let seen = within("on_disconnect", ended.recv()).await.unwrap();
    assert_eq!(seen.id, conn.id());
    assert_eq!(seen.close.code, 1006, "{seen:?}");
    assert!(seen.closed && !seen.listed, "{seen:?}");

    let more = tokio::time::timeout(QUIET, ended.recv()).await;
    assert!(more.is_err(), "on_disconnect ran again: {more:?}");
    assert_eq!(server.server.counts().await.unwrap(), (0, 0));
}

// ---------------------------------------------------------------- logout

#[tokio::test]
async fn logout_answers_true_then_closes_only_this_device() {
    for codec in Codec::BOTH {
        let server = start_demo(Auth::Plain).await;
        let mut events = server.server.events();
        let other = if codec == Codec::Json {
            Codec::MsgPack
        } else {
            Codec::Json
        };
        let mut leaving = Raw::login(server.addr(), codec, "ann").await;
        leaving.expect_add_works("a1").await;
        let mut staying = Raw::login(server.addr(), other, "ann").await;
        staying.expect_add_works("a2").await;

        leaving.send(&json!(["logout", {"all": false}, "l1"])).await;
        assert_eq!(
            leaving.next().await,
            Seen::Frame(json!(["~wse:response", true, "l1"])),
            "{codec:?}: the answer comes before the close"
        );
        leaving.expect_close(1000, "wse.logout").await;
        assert_eq!(leaving.next().await, Seen::End, "{codec:?}");

        assert_eq!(
            next_event(&mut events, "disconnected", pick::disconnected).await,
            ("ann".to_owned(), 1000, "wse.logout".to_owned())
        );
        staying.expect_add_works("a3").await;
        staying.expect_silence(QUIET).await;
        assert_eq!(server.server.counts().await.unwrap(), (1, 1), "{codec:?}");
    }
}

#[tokio::test]
async fn logout_of_all_closes_every_device_and_a_reconnecting_client_stays_away() {
    let server = start_demo(Auth::Plain).await;
    let mut server_events = server.server.events();
    let phone = client(&server).reconnect(FAST).build();
    let mut phone_events = phone.events();
    connect_as(&phone, "ann").await;
    let mut laptop = Raw::login(server.addr(), Codec::MsgPack, "ann").await;
    laptop.expect_add_works("a1").await;
    let mut bob = Raw::login(server.addr(), Codec::Json, "bob").await;
    bob.expect_add_works("b1").await;

    laptop.send(&json!(["logout", {"all": true}, "l1"])).await;
    assert_eq!(
        laptop.next().await,
        Seen::Frame(json!(["~wse:response", true, "l1"])),
        "the answer comes before the close"
    );
    laptop.expect_close(1000, "wse.logout").await;
    assert_eq!(laptop.next().await, Seen::End);

    assert_eq!(
        next_event(&mut phone_events, "phone closed", pick::closed).await,
        (1000, "wse.logout".to_owned())
    );
    let status = wait_status(&phone, "phone not ready", |s| *s != Status::Ready).await;
    assert_eq!(status, Status::Offline);
    for _ in 0..2 {
        let (user, code, reason) =
            next_event(&mut server_events, "disconnected", pick::disconnected).await;
        assert_eq!(
            (user.as_str(), code, reason.as_str()),
            ("ann", 1000, "wse.logout")
        );
    }

    // Longer than several reconnect delays of the policy: it stays away.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(phone.status(), Status::Offline);
    while let Ok(event) = server_events.try_recv() {
        if let Event::Connected { connection } = event {
            panic!("{} came back after logging out", connection.user_id());
        }
    }
    assert!(
        server
            .server
            .connections_of("ann")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(server.server.counts().await.unwrap(), (1, 1));
    bob.expect_add_works("b2").await;
    bob.expect_silence(QUIET).await;
}

#[tokio::test]
async fn the_logout_hook_sees_whether_all_devices_go_before_they_close() {
    // (user, all, whether the asking device was closing, how many devices the user had)
    let (tx, mut hooked) = mpsc::unbounded_channel();
    let server = builder()
        .logout(Logout::new().on_logout(move |conn: Connection, all: bool| {
            let tx = tx.clone();
            async move {
                let devices = conn.server().devices(conn.user_id()).await.unwrap().len();
                let _ = tx.send((conn.user_id().to_owned(), all, conn.is_closed(), devices));
            }
        }))
        .build();
    register_ping(&server);
    let server = start(server).await;

    // One device, through the real client with reconnect on.
    let ann = client(&server).reconnect(FAST).build();
    let mut ann_events = ann.events();
    within("connect", ann.connect(json!("ann"), json!({})))
        .await
        .unwrap();
    let _ann_raw = peer(&server, Codec::Json, "ann").await;
    let ann_laptop = server.server.connections_of("ann").await.unwrap()[1].clone();
    let logged_out: bool = within("logout", ann.call("logout", &json!({"all": false})))
        .await
        .unwrap();
    assert!(logged_out);
    assert_eq!(
        within("hook", hooked.recv()).await.unwrap(),
        ("ann".to_owned(), false, false, 2)
    );
    assert_eq!(
        next_event(&mut ann_events, "closed", pick::closed).await,
        (1000, "wse.logout".to_owned())
    );
    assert_eq!(
        wait_status(&ann, "not ready", |s| *s != Status::Ready).await,
        Status::Offline
    );
    assert!(!ann_laptop.is_closed(), "the other device was closed too");

    // Every device, from a raw peer.
    let mut bob = [
        peer(&server, Codec::Json, "bob").await,
        peer(&server, Codec::MsgPack, "bob").await,
    ];
    bob[1].send(&json!(["logout", {"all": true}, "l1"])).await;
    assert_eq!(
        bob[1].next().await,
        Seen::Frame(json!(["~wse:response", true, "l1"]))
    );
    assert_eq!(
        within("hook", hooked.recv()).await.unwrap(),
        ("bob".to_owned(), true, false, 2)
    );
    for (i, raw) in bob.iter_mut().enumerate() {
        assert_eq!(
            raw.next().await,
            Seen::Close(1000, "wse.logout".into()),
            "bob {i}"
        );
        assert_eq!(raw.next().await, Seen::End, "bob {i}");
    }
    let more = tokio::time::timeout(QUIET, hooked.recv()).await;
    assert!(more.is_err(), "the hook ran again: {more:?}");
    assert_eq!(ann.status(), Status::Offline);
}
