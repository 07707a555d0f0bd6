//! Users and delivery through raw peers: the connections-per-user limit, sending to every
//! device of a user, broadcast across codecs, the server's user events and registry, and
//! dropping a user.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;

use serde_json::{Value, json};
use wse_examples::Auth;
use wse_server::{Connection, ConnectionId, Decision, Event, Handshake, Server};
use wse_tests::{Codec, QUIET, Raw, Seen, TestServer, next_event, start, start_demo};

/// Expects `frame` as the next data frame of each of `devices`.
async fn expect_on_each(devices: &mut [Raw], frame: &Value) {
    for (i, device) in devices.iter_mut().enumerate() {
        assert_eq!(&device.frame().await, frame, "device {i}");
    }
}

/// The local address of a raw peer: the server sees it as the connection's remote address.
fn local_addr(raw: &Raw) -> SocketAddr {
    raw.ws.get_ref().local_addr().unwrap()
}

#[tokio::test]
async fn a_third_connection_of_a_user_closes_the_oldest() {
    let server = start_demo(Auth::Plain).await;
    let mut first = Raw::login(server.addr(), Codec::Json, "u").await;
    let mut second = Raw::login(server.addr(), Codec::Json, "u").await;
    first.expect_add_works("f1").await;
    second.expect_add_works("s1").await;

    let mut third = Raw::login(server.addr(), Codec::MsgPack, "u").await;
    first.expect_close(1000, "wse.clients-concurrency").await;
    second.expect_add_works("s2").await;
    third.expect_add_works("t1").await;

    let devices: Vec<SocketAddr> = server
        .server
        .connections_of("u")
        .await
        .unwrap()
        .iter()
        .map(Connection::remote_addr)
        .collect();
    assert_eq!(devices, vec![local_addr(&second), local_addr(&third)]);
    assert_eq!(server.server.counts().await.unwrap(), (1, 2));

    // A fourth closes the oldest remaining one: the second.
    let mut fourth = Raw::login(server.addr(), Codec::Json, "u").await;
    second.expect_close(1000, "wse.clients-concurrency").await;
    third.expect_add_works("t2").await;
    fourth.expect_add_works("4").await;
}

/// Accepts identity `"secret"` as `meta.user_id`, like the demo, with up to 3 devices a user.
async fn three_device_server() -> TestServer {
    async fn identify(handshake: Handshake) -> Decision {
        match (
            handshake.identity.as_str(),
            handshake.meta.get("user_id").and_then(Value::as_str),
        ) {
            (Some("secret"), Some(user)) if !user.is_empty() => {
                Decision::accept(user, json!({"cid": user}))
            }
            _ => Decision::refuse(),
        }
    }
    #[derive(serde::Deserialize)]
    struct ToUser {
        user: String,
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        payload: Value,
    }
    let server = Server::builder(identify)
        .add_protocol(wse_server::MsgPack)
        .conn_per_user(3)
        .build();
    server
        .register(
            "send_to_user",
            |conn: Connection, args: ToUser| async move {
                Ok(conn
                    .server()
                    .send_to_user(&args.user, &args.kind, &args.payload)?)
            },
        )
        .unwrap();
    start(server).await
}

#[tokio::test]
async fn send_to_user_reaches_each_device_of_that_user_once() {
    let server = three_device_server().await;
    let mut devices = [
        Raw::login(server.addr(), Codec::Json, "u").await,
        Raw::login(server.addr(), Codec::MsgPack, "u").await,
        Raw::login(server.addr(), Codec::Json, "u").await,
    ];
    let mut other = Raw::login(server.addr(), Codec::Json, "v").await;
    assert_eq!(server.server.counts().await.unwrap(), (2, 4));

    // Through a procedure called by another user: the caller gets the count only.
    other
        .expect_reply(
            &json!(["send_to_user", {"user": "u", "type": "note", "payload": {"n": 1}}, "s1"]),
            &json!(["~wse:response", 3, "s1"]),
        )
        .await;
    expect_on_each(&mut devices, &json!(["note", {"n": 1}, null])).await;

    // Straight from the server.
    assert_eq!(
        server
            .server
            .send_to_user("u", "note", &json!({"n": 2}))
            .unwrap(),
        3
    );
    expect_on_each(&mut devices, &json!(["note", {"n": 2}, null])).await;
    for device in &mut devices {
        device.expect_silence(QUIET).await;
    }
    other.expect_silence(QUIET).await;

    // A user with no device: nobody gets anything.
    assert_eq!(
        server
            .server
            .send_to_user("nobody", "note", &json!(3))
            .unwrap(),
        0
    );
    other.expect_silence(QUIET).await;
}

#[tokio::test]
async fn broadcast_reaches_every_connection_of_every_user_once_on_both_codecs() {
    let server = start_demo(Auth::Plain).await;
    let mut peers = [
        Raw::login(server.addr(), Codec::Json, "a").await,
        Raw::login(server.addr(), Codec::MsgPack, "a").await,
        Raw::login(server.addr(), Codec::MsgPack, "b").await,
        Raw::login(server.addr(), Codec::Json, "c").await,
    ];
    let news = json!(["news", {"headline": "héllo", "n": [1, 2]}, null]);
    peers[1]
        .send(&json!(["broadcast", {"type": "news", "payload": {"headline": "héllo", "n": [1, 2]}}, "b1"]))
        .await;
    for (i, peer) in peers.iter_mut().enumerate() {
        if i == 1 {
            // The caller gets the message and its response, in either order.
            let mut got = vec![peer.frame().await, peer.frame().await];
            got.sort_by_key(|frame| frame[0].as_str().unwrap().to_owned());
            assert_eq!(
                got,
                vec![news.clone(), json!(["~wse:response", true, "b1"])]
            );
        } else {
            assert_eq!(peer.frame().await, news, "peer {i}");
        }
    }
    for peer in &mut peers {
        peer.expect_silence(QUIET).await;
    }

    // Straight from the server.
    assert_eq!(server.server.broadcast("tick", &7).unwrap(), 4);
    for (i, peer) in peers.iter_mut().enumerate() {
        assert_eq!(peer.frame().await, json!(["tick", 7, null]), "peer {i}");
        peer.expect_silence(QUIET).await;
    }
}

/// The next user event (Joined, Left, Connected, Disconnected); others are skipped.
async fn next_user_event(events: &mut wse_server::Events) -> Event {
    next_event(events, "a user event", |event| {
        matches!(
            event,
            Event::Joined { .. }
                | Event::Left { .. }
                | Event::Connected { .. }
                | Event::Disconnected { .. }
        )
        .then(|| event.clone())
    })
    .await
}

/// Expects no further user event for [`QUIET`].
async fn expect_no_user_event(events: &mut wse_server::Events) {
    let more = tokio::time::timeout(QUIET, next_user_event(events)).await;
    assert!(more.is_err(), "unexpected event {more:?}");
}

async fn expect_joined(events: &mut wse_server::Events, user: &str) {
    match next_user_event(events).await {
        Event::Joined { user_id } => assert_eq!(&*user_id, user),
        other => panic!("expected Joined {user}, got {other:?}"),
    }
}

async fn expect_left(events: &mut wse_server::Events, user: &str) {
    match next_user_event(events).await {
        Event::Left { user_id } => assert_eq!(&*user_id, user),
        other => panic!("expected Left {user}, got {other:?}"),
    }
}

async fn expect_connected(events: &mut wse_server::Events, user: &str, raw: &Raw) -> Connection {
    match next_user_event(events).await {
        Event::Connected { connection } => {
            assert_eq!(connection.user_id(), user);
            assert_eq!(connection.remote_addr(), local_addr(raw));
            assert_eq!(connection.protocol(), raw.codec.name());
            assert_eq!(connection.meta(), &json!({"user_id": user}));
            connection
        }
        other => panic!("expected Connected {user}, got {other:?}"),
    }
}

async fn expect_disconnected(
    events: &mut wse_server::Events,
    which: &Connection,
    code: u16,
    reason: &str,
) {
    match next_user_event(events).await {
        Event::Disconnected {
            connection,
            code: got_code,
            reason: got_reason,
        } => {
            assert_eq!(connection.id(), which.id());
            assert_eq!((got_code, got_reason.as_str()), (code, reason));
        }
        other => panic!("expected Disconnected {:?}, got {other:?}", which.id()),
    }
}

/// Closes from the client side and waits until the socket has ended.
async fn close_and_wait(raw: &mut Raw, code: u16, reason: &str) {
    raw.close(code, reason).await;
    // The server answers the close with the same code (RFC 6455 §5.5.1), then the socket ends.
    match raw.next().await {
        Seen::Close(answer, _) => assert_eq!(answer, code),
        other => panic!("expected the server's answer to our close, got {other:?}"),
    }
    assert_eq!(raw.next().await, Seen::End);
}

/// Expects the server's close, then reads on so the close handshake completes (the peer's
/// answer goes out) and waits for the socket to end.
async fn expect_closed(raw: &mut Raw, code: u16, reason: &str) {
    raw.expect_close(code, reason).await;
    assert_eq!(raw.next().await, Seen::End);
}

fn ids(connections: &[Connection]) -> Vec<ConnectionId> {
    connections.iter().map(Connection::id).collect()
}

#[tokio::test]
async fn user_events_and_the_registry_follow_devices_coming_and_going() {
    let server = start_demo(Auth::Plain).await;
    let mut events = server.server.events();
    assert_eq!(server.server.counts().await.unwrap(), (0, 0));
    assert!(server.server.users().await.unwrap().is_empty());

    let mut phone = Raw::login(server.addr(), Codec::Json, "u").await;
    expect_joined(&mut events, "u").await;
    let phone_conn = expect_connected(&mut events, "u", &phone).await;
    assert_eq!(server.server.counts().await.unwrap(), (1, 1));

    let mut laptop = Raw::login(server.addr(), Codec::MsgPack, "u").await;
    let laptop_conn = expect_connected(&mut events, "u", &laptop).await;
    assert_ne!(phone_conn.id(), laptop_conn.id());

    let mut other = Raw::login(server.addr(), Codec::Json, "w").await;
    expect_joined(&mut events, "w").await;
    let other_conn = expect_connected(&mut events, "w", &other).await;

    let mut users: Vec<String> = server
        .server
        .users()
        .await
        .unwrap()
        .iter()
        .map(|u| u.to_string())
        .collect();
    users.sort();
    assert_eq!(users, vec!["u", "w"]);
    assert_eq!(
        ids(&server.server.connections_of("u").await.unwrap()),
        vec![phone_conn.id(), laptop_conn.id()]
    );
    assert_eq!(
        ids(&server.server.connections_of("w").await.unwrap()),
        vec![other_conn.id()]
    );
    assert!(
        server
            .server
            .connections_of("nobody")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(server.server.counts().await.unwrap(), (2, 3));
    assert_eq!(
        server
            .server
            .connection(laptop_conn.id())
            .map(|c| c.remote_addr()),
        Some(local_addr(&laptop))
    );

    // The first device leaves: the user stays.
    close_and_wait(&mut phone, 1000, "wse.by-client").await;
    expect_disconnected(&mut events, &phone_conn, 1000, "wse.by-client").await;
    assert_eq!(server.server.counts().await.unwrap(), (2, 2));
    assert_eq!(
        ids(&server.server.connections_of("u").await.unwrap()),
        vec![laptop_conn.id()]
    );
    assert!(server.server.connection(phone_conn.id()).is_none());
    assert!(phone_conn.is_closed());

    // The last device leaves with its own code: Disconnected, then Left.
    close_and_wait(&mut laptop, 4000, "jump").await;
    expect_disconnected(&mut events, &laptop_conn, 4000, "jump").await;
    expect_left(&mut events, "u").await;
    assert_eq!(server.server.counts().await.unwrap(), (1, 1));
    assert!(server.server.connections_of("u").await.unwrap().is_empty());

    close_and_wait(&mut other, 1000, "wse.by-client").await;
    expect_disconnected(&mut events, &other_conn, 1000, "wse.by-client").await;
    expect_left(&mut events, "w").await;
    assert_eq!(server.server.counts().await.unwrap(), (0, 0));
    assert!(server.server.users().await.unwrap().is_empty());
    assert!(server.server.connections_of("w").await.unwrap().is_empty());

    // Nothing more about users.
    expect_no_user_event(&mut events).await;
}

#[tokio::test]
async fn an_evicted_device_is_disconnected_but_its_user_does_not_leave() {
    let server = start_demo(Auth::Plain).await;
    let mut events = server.server.events();
    let mut first = Raw::login(server.addr(), Codec::Json, "u").await;
    expect_joined(&mut events, "u").await;
    let first_conn = expect_connected(&mut events, "u", &first).await;
    let second = Raw::login(server.addr(), Codec::Json, "u").await;
    let second_conn = expect_connected(&mut events, "u", &second).await;
    let third = Raw::login(server.addr(), Codec::Json, "u").await;
    let third_conn = expect_connected(&mut events, "u", &third).await;
    expect_closed(&mut first, 1000, "wse.clients-concurrency").await;
    expect_disconnected(&mut events, &first_conn, 1000, "wse.clients-concurrency").await;
    assert_eq!(server.server.counts().await.unwrap(), (1, 2));
    assert_eq!(
        ids(&server.server.connections_of("u").await.unwrap()),
        vec![second_conn.id(), third_conn.id()]
    );
    expect_no_user_event(&mut events).await;
}

#[tokio::test]
async fn drop_user_closes_every_device_of_that_user_with_the_reason() {
    let server = start_demo(Auth::Plain).await;
    let mut events = server.server.events();
    let mut devices = [
        Raw::login(server.addr(), Codec::Json, "u").await,
        Raw::login(server.addr(), Codec::MsgPack, "u").await,
    ];
    let mut other = Raw::login(server.addr(), Codec::Json, "v").await;
    assert_eq!(server.server.drop_user("u", "kicked").unwrap(), 2);
    for (i, device) in devices.iter_mut().enumerate() {
        assert_eq!(
            device.next().await,
            Seen::Close(1000, "kicked".into()),
            "device {i}"
        );
        assert_eq!(device.next().await, Seen::End, "device {i}");
    }
    // Wait for the server to finish with both; then u is gone and v untouched.
    let mut disconnected = 0;
    let mut left = false;
    while !left {
        match next_user_event(&mut events).await {
            Event::Disconnected {
                connection,
                code,
                reason,
            } => {
                assert_eq!(connection.user_id(), "u");
                assert_eq!((code, reason.as_str()), (1000, "kicked"));
                disconnected += 1;
            }
            Event::Left { user_id } => {
                assert_eq!(&*user_id, "u");
                left = true;
            }
            _ => {}
        }
    }
    assert_eq!(disconnected, 2);
    assert!(server.server.connections_of("u").await.unwrap().is_empty());
    assert_eq!(server.server.counts().await.unwrap(), (1, 1));
    assert_eq!(server.server.drop_user("u", "again").unwrap(), 0);
    other.expect_add_works("still").await;
}
