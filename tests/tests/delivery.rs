//! The delivery seam (issue 12): targets and exclusions, rooms, the user limit's policies,
//! and the server run against other implementations of the seam: one that records every
//! call (so that no send or membership change can bypass it) and one whose engine is down.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use wse_server::{
    Admission, CallError, Close, Connection, ConnectionId, Decision, Delivery, DeliveryError,
    Event, Except, Joined, LocalDelivery, NoArgs, Overflow, Packed, Presence, Profile,
    ProfileUpdate, Rejection, Released, Server, Target, UserLimit,
};
use wse_tests::{Codec, QUIET, Raw, Seen, TestServer, next_event, pick, start, within};

#[derive(Deserialize)]
struct Room {
    room: String,
}

#[derive(Deserialize)]
struct Say {
    room: String,
    text: String,
    #[serde(default)]
    skip: Option<String>,
}

/// Any identity is accepted as that user, up to three devices each. Procedures: `join` and
/// `leave {room}`, `say {room, text, skip}` (to the room; `skip`: "me" skips the caller's
/// connection, "mine" all of its user's devices), `whoami` (the connection id), `rooms` (the
/// caller's rooms), `note_user {user}` (to a user, except the caller's connection), `drop_user
/// {user}`.
fn room_server() -> Server {
    rooms(room_builder().build())
}

/// [`room_server`] over the delivery `wrap` makes.
fn room_server_over<D: Delivery>(wrap: impl FnOnce(LocalDelivery) -> D + Send + 'static) -> Server {
    rooms(room_builder().delivery(wrap).build())
}

fn room_builder() -> wse_server::Builder {
    Server::builder(|handshake| async move {
        match handshake.identity.as_str() {
            Some(user) if !user.is_empty() => Decision::accept(user, Value::Null),
            _ => Decision::refuse(),
        }
    })
    .add_protocol(wse_server::MsgPack)
    .conn_per_user(3)
}

fn rooms(server: Server) -> Server {
    server
        .register("join", |conn: Connection, args: Room| async move {
            Ok(conn.server().join(conn.id(), &args.room).await?)
        })
        .unwrap();
    server
        .register("leave", |conn: Connection, args: Room| async move {
            Ok(conn.server().leave(conn.id(), &args.room).await?)
        })
        .unwrap();
    server
        .register("say", |conn: Connection, args: Say| async move {
            let to = conn.server().to_room(&args.room);
            let to = match args.skip.as_deref() {
                Some("me") => to.except_connection(conn.id()),
                Some("mine") => to.except_user(conn.user_id()),
                _ => to,
            };
            Ok(to.send("said", &args.text)?)
        })
        .unwrap();
    server
        .register("whoami", |conn: Connection, NoArgs| async move {
            Ok(conn.id().to_string())
        })
        .unwrap();
    server
        .register("rooms", |conn: Connection, NoArgs| async move {
            let mut rooms: Vec<String> = conn
                .server()
                .rooms_of(conn.id())
                .await?
                .iter()
                .map(|room| room.to_string())
                .collect();
            rooms.sort();
            Ok(rooms)
        })
        .unwrap();
    server
        .register("note_user", |conn: Connection, args: Value| async move {
            let user = args["user"].as_str().unwrap_or_default().to_owned();
            Ok(conn
                .server()
                .to_user(&user)
                .except_connection(conn.id())
                .send("note", &"hello")?)
        })
        .unwrap();
    server
        .register("drop_user", |conn: Connection, args: Value| async move {
            let user = args["user"].as_str().unwrap_or_default().to_owned();
            Ok(conn.server().drop_user(&user, "dropped")?)
        })
        .unwrap();
    server
}

/// Calls `procedure` and returns the result; messages that arrive before the response (the
/// caller may be among the receivers of its own send) are skipped.
async fn ok(raw: &mut Raw, procedure: &str, args: Value, stamp: &str) -> Value {
    raw.send(&json!([procedure, args, stamp])).await;
    loop {
        let frame = raw.frame().await;
        if frame[2] == stamp {
            assert_eq!(frame[0], "~wse:response", "{procedure}: {frame}");
            return frame[1].clone();
        }
    }
}

#[tokio::test]
async fn a_room_send_reaches_each_member_once_with_its_exclusions() {
    let server = start(room_server()).await;
    let mut ann_phone = Raw::login_identity(server.addr(), Codec::Json, "ann").await;
    let mut ann_laptop = Raw::login_identity(server.addr(), Codec::MsgPack, "ann").await;
    let mut bob = Raw::login_identity(server.addr(), Codec::Json, "bob").await;
    let mut eve = Raw::login_identity(server.addr(), Codec::Json, "eve").await;

    for (raw, stamp) in [
        (&mut ann_phone, "j1"),
        (&mut ann_laptop, "j2"),
        (&mut bob, "j3"),
    ] {
        assert_eq!(ok(raw, "join", json!({"room": "lobby"}), stamp).await, true);
    }
    // Joining twice changes nothing.
    assert_eq!(
        ok(&mut bob, "join", json!({"room": "lobby"}), "j4").await,
        false
    );
    assert_eq!(
        ok(&mut bob, "rooms", Value::Null, "r1").await,
        json!(["lobby"])
    );

    // To the whole room: each member once, nobody else.
    assert_eq!(
        ok(
            &mut bob,
            "say",
            json!({"room": "lobby", "text": "hi all"}),
            "s1"
        )
        .await,
        3
    );
    // (bob's copy came before its response.)
    let said = json!(["said", "hi all", null]);
    for member in [&mut ann_phone, &mut ann_laptop] {
        assert_eq!(member.frame().await, said);
        member.expect_silence(QUIET).await;
    }
    bob.expect_silence(QUIET).await;
    eve.expect_silence(QUIET).await;

    // Except the sender's connection: ann's other device still hears it.
    assert_eq!(
        ok(
            &mut ann_phone,
            "say",
            json!({"room": "lobby", "text": "not me", "skip": "me"}),
            "s2"
        )
        .await,
        2
    );
    let said = json!(["said", "not me", null]);
    assert_eq!(ann_laptop.frame().await, said);
    assert_eq!(bob.frame().await, said);
    ann_phone.expect_silence(QUIET).await;

    // Except all of the sender's devices.
    assert_eq!(
        ok(
            &mut ann_phone,
            "say",
            json!({"room": "lobby", "text": "not mine", "skip": "mine"}),
            "s3"
        )
        .await,
        1
    );
    assert_eq!(bob.frame().await, json!(["said", "not mine", null]));
    ann_phone.expect_silence(QUIET).await;
    ann_laptop.expect_silence(QUIET).await;

    // To a user except the caller's own connection.
    assert_eq!(
        ok(&mut ann_phone, "note_user", json!({"user": "ann"}), "n1").await,
        1
    );
    assert_eq!(ann_laptop.frame().await, json!(["note", "hello", null]));
    ann_phone.expect_silence(QUIET).await;

    // Leaving: no longer reached.
    assert_eq!(
        ok(&mut bob, "leave", json!({"room": "lobby"}), "l1").await,
        true
    );
    assert_eq!(
        ok(&mut bob, "leave", json!({"room": "lobby"}), "l2").await,
        false
    );
    assert_eq!(
        server
            .server
            .send_to_room("lobby", "said", &"later")
            .unwrap(),
        2
    );
    bob.expect_silence(QUIET).await;
    assert_eq!(ann_phone.frame().await, json!(["said", "later", null]));
    assert_eq!(ann_laptop.frame().await, json!(["said", "later", null]));
}

#[tokio::test]
async fn a_closed_connection_leaves_its_rooms_and_an_empty_room_is_gone() {
    let server = start(room_server()).await;
    let mut events = server.server.events();
    let mut churned = Vec::new();
    for round in 0..20 {
        let mut raw = Raw::login_identity(server.addr(), Codec::Json, &format!("u{round}")).await;
        for room in ["a", "b", &format!("own{round}")] {
            ok(&mut raw, "join", json!({"room": room}), "j").await;
        }
        let id = next_event(&mut events, "connected", |event| match event {
            Event::Connected { connection } => Some(connection.id()),
            _ => None,
        })
        .await;
        churned.push(id);
        raw.close(1000, "bye").await;
    }
    // Every connection leaves, and with it every room it was in.
    within("every connection released", async {
        while server.server.counts().await.unwrap() != (0, 0) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(server.server.room_members("a").await.unwrap().is_empty());
    assert!(server.server.room_members("own7").await.unwrap().is_empty());
    for id in churned {
        assert!(server.server.rooms_of(id).await.unwrap().is_empty());
        // A join after the close finds no connection: nothing is left behind.
        assert!(!server.server.join(id, "late").await.unwrap());
    }
    assert!(server.server.room_members("late").await.unwrap().is_empty());
}

#[tokio::test]
async fn connection_ids_name_the_node_that_holds_them() {
    let server = start(room_server()).await;
    let other = room_server();
    assert_ne!(server.server.node_id(), other.node_id());
    let mut raw = Raw::login_identity(server.addr(), Codec::Json, "ann").await;
    let id = ok(&mut raw, "whoami", json!({}), "w1").await;
    let devices = server.server.devices("ann").await.unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].node(), server.server.node_id());
    assert_eq!(json!(devices[0].to_string()), id);
    // A send to a connection of another node reaches nobody here.
    let elsewhere = ConnectionId::new(other.node_id(), devices[0].local());
    assert!(!server.server.send_to(elsewhere, "x", &1).unwrap());
    assert!(server.server.send_to(devices[0], "x", &1).unwrap());
    assert_eq!(raw.frame().await, json!(["x", 1, null]));
}

#[tokio::test]
async fn the_user_limit_can_refuse_the_newest_device_instead() {
    let server = Server::builder(|handshake| async move {
        Decision::accept(handshake.identity.as_str().unwrap_or("x"), Value::Null)
    })
    .conn_per_user(2)
    .conn_per_user_overflow(Overflow::RefuseNewest)
    .build();
    let server = start(server).await;
    let mut events = server.server.events();
    let mut first = Raw::login_identity(server.addr(), Codec::Json, "ann").await;
    let mut second = Raw::login_identity(server.addr(), Codec::Json, "ann").await;

    let mut third = Raw::connect(server.addr(), Codec::Json).await;
    third
        .send(&json!(["~wse:hi", {"identity": "ann"}, null]))
        .await;
    // No welcome: the close, with the reason `wse` gives the limit.
    third.expect_close(1000, "wse.clients-concurrency").await;
    let rejected = next_event(&mut events, "rejected", pick::rejected).await;
    assert_eq!(rejected, Rejection::UserLimit);

    // The first two stay.
    assert_eq!(server.server.counts().await.unwrap(), (1, 2));
    for raw in [&mut first, &mut second] {
        raw.expect_silence(QUIET).await;
    }
    // Another user is not affected.
    Raw::login_identity(server.addr(), Codec::Json, "bob").await;
}

/// Skips data frames up to the close (or the end).
async fn until_closed(raw: &mut Raw) -> Seen {
    loop {
        match raw.next().await {
            Seen::Frame(_) => {}
            other => return other,
        }
    }
}

/// Every call of the seam, in order, as text.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, entry: String) {
        self.0.lock().unwrap().push(entry);
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// A second implementation of the seam: it records every call, then lets this node's index
/// do it.
struct Recorder {
    local: LocalDelivery,
    log: Log,
}

fn except(except: Option<&Except>) -> String {
    match except {
        None => String::new(),
        Some(Except::Connection(_)) => " except the connection".to_owned(),
        Some(Except::User(user)) => format!(" except {user}"),
        Some(_) => " except ?".to_owned(),
    }
}

fn target(target: &Target) -> String {
    match target {
        Target::Connection(_) => "a connection".to_owned(),
        other => other.to_string(),
    }
}

#[async_trait::async_trait]
impl Delivery for Recorder {
    async fn start(&self) -> Result<(), DeliveryError> {
        self.log.push("start".into());
        Ok(())
    }

    async fn close(&self) {
        self.log.push("close".into());
    }

    fn send(
        &self,
        to: &Target,
        but: Option<&Except>,
        packed: &Packed,
    ) -> Result<usize, DeliveryError> {
        let frame = packed.frame("wse-default-json").expect("a JSON frame");
        self.log.push(format!(
            "send {} to {}{}",
            String::from_utf8_lossy(frame),
            target(to),
            except(but)
        ));
        self.local.send(to, but, packed)
    }

    async fn call(
        &self,
        connection: ConnectionId,
        procedure: &str,
        args: &Value,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        self.log.push(format!("call {procedure} {args}"));
        self.local.call(connection, procedure, args, timeout).await
    }

    fn disconnect(
        &self,
        to: &Target,
        but: Option<&Except>,
        close: &Close,
    ) -> Result<usize, DeliveryError> {
        self.log.push(format!(
            "disconnect {} with {close}{}",
            target(to),
            except(but)
        ));
        self.local.disconnect(to, but, close)
    }

    async fn admit(
        &self,
        connection: &Connection,
        limit: UserLimit,
    ) -> Result<Admission, DeliveryError> {
        self.log.push(format!(
            "admit {} within {}",
            connection.user_id(),
            limit.max
        ));
        self.local.admit(connection, limit).await
    }

    async fn release(&self, connection: &Connection) -> Result<Released, DeliveryError> {
        self.log.push(format!("release {}", connection.user_id()));
        self.local.release(connection).await
    }

    async fn join(
        &self,
        connection: ConnectionId,
        room: &str,
        limit: Option<usize>,
    ) -> Result<Joined, DeliveryError> {
        self.log.push(format!("join {room}"));
        self.local.join(connection, room, limit).await
    }

    async fn leave_all(&self, connection: ConnectionId) -> Result<usize, DeliveryError> {
        self.log.push("leave all".into());
        self.local.leave_all(connection).await
    }

    async fn join_user(&self, user_id: &str, room: &str) -> Result<bool, DeliveryError> {
        self.log.push(format!("join {user_id} to {room}"));
        self.local.join_user(user_id, room).await
    }

    async fn leave_user(&self, user_id: &str, room: &str) -> Result<bool, DeliveryError> {
        self.log.push(format!("take {user_id} out of {room}"));
        self.local.leave_user(user_id, room).await
    }

    async fn room_users(&self, room: &str) -> Result<Vec<Arc<str>>, DeliveryError> {
        self.log.push(format!("users in {room}"));
        self.local.room_users(room).await
    }

    async fn user_rooms(&self, user_id: &str) -> Result<Vec<Arc<str>>, DeliveryError> {
        self.log.push(format!("rooms of {user_id}"));
        self.local.user_rooms(user_id).await
    }

    async fn presence(&self, user_id: &str) -> Result<Option<Presence>, DeliveryError> {
        self.log.push(format!("presence of {user_id}"));
        self.local.presence(user_id).await
    }

    async fn profile(&self, user_id: &str) -> Result<Option<Profile>, DeliveryError> {
        self.log.push(format!("profile of {user_id}"));
        self.local.profile(user_id).await
    }

    async fn online(&self) -> Result<Vec<Presence>, DeliveryError> {
        self.log.push("online".into());
        self.local.online().await
    }

    async fn update_profile(
        &self,
        user_id: &str,
        update: &ProfileUpdate,
    ) -> Result<Option<Presence>, DeliveryError> {
        self.log.push(format!("update the profile of {user_id}"));
        self.local.update_profile(user_id, update).await
    }

    async fn subscribe_presence(
        &self,
        connection: ConnectionId,
    ) -> Result<Option<Vec<Presence>>, DeliveryError> {
        self.log.push("subscribe to presence".into());
        self.local.subscribe_presence(connection).await
    }

    async fn unsubscribe_presence(&self, connection: ConnectionId) -> Result<bool, DeliveryError> {
        self.log.push("unsubscribe from presence".into());
        self.local.unsubscribe_presence(connection).await
    }

    async fn leave(&self, connection: ConnectionId, room: &str) -> Result<bool, DeliveryError> {
        self.log.push(format!("leave {room}"));
        self.local.leave(connection, room).await
    }

    async fn devices(&self, user_id: &str) -> Result<Vec<ConnectionId>, DeliveryError> {
        self.log.push(format!("devices of {user_id}"));
        self.local.devices(user_id).await
    }

    async fn users(&self) -> Result<Vec<Arc<str>>, DeliveryError> {
        self.log.push("users".into());
        self.local.users().await
    }

    async fn members(&self, room: &str) -> Result<Vec<ConnectionId>, DeliveryError> {
        self.log.push(format!("members of {room}"));
        self.local.members(room).await
    }

    async fn rooms_of(&self, connection: ConnectionId) -> Result<Vec<Arc<str>>, DeliveryError> {
        let _ = connection;
        self.log.push("rooms of a connection".into());
        self.local.rooms_of(connection).await
    }

    async fn counts(&self) -> Result<(usize, usize), DeliveryError> {
        self.log.push("counts".into());
        self.local.counts().await
    }
}

async fn recorded_server() -> (TestServer, Log) {
    let log = Log::default();
    let recorded = log.clone();
    let server = room_server_over(move |local| Recorder {
        local,
        log: recorded,
    });
    (start(server).await, log)
}

#[tokio::test]
async fn a_call_by_id_goes_through_the_seam_to_the_device() {
    let (server, log) = recorded_server().await;
    let mut ann = Raw::login_identity(server.addr(), Codec::MsgPack, "ann").await;
    let s = server.server.clone();
    let ann_id = s.devices("ann").await.unwrap()[0];
    log.take();

    let asking = tokio::spawn(async move {
        s.call::<i64, _>(ann_id, "client_sum", &json!({"a": 1, "b": 2}))
            .await
    });
    let call = ann.frame().await;
    assert_eq!(call[0], "client_sum");
    assert_eq!(call[1], json!({"a": 1, "b": 2}));
    ann.send(&json!(["~wse:response", 3, call[2]])).await;
    assert_eq!(within("the answer", asking).await.unwrap(), Ok(3));
    assert_eq!(log.take(), [r#"call client_sum {"a":1,"b":2}"#]);

    // An id no node holds.
    let gone = ConnectionId::new(server.server.node_id(), 999);
    let missing = server
        .server
        .call::<i64, _>(gone, "client_sum", &json!({}))
        .await;
    assert_eq!(
        missing.unwrap_err().code(),
        "wse.server.client.connection-missing"
    );
}

#[tokio::test]
async fn every_send_and_membership_change_goes_through_the_seam() {
    let (server, log) = recorded_server().await;
    assert_eq!(log.take(), ["start"]);

    let mut ann = Raw::login_identity(server.addr(), Codec::Json, "ann").await;
    let mut bob = Raw::login_identity(server.addr(), Codec::MsgPack, "bob").await;
    assert_eq!(log.take(), ["admit ann within 3", "admit bob within 3"]);

    // Membership, from procedures.
    ok(&mut ann, "join", json!({"room": "lobby"}), "1").await;
    ok(&mut bob, "join", json!({"room": "lobby"}), "2").await;
    ok(&mut bob, "leave", json!({"room": "lobby"}), "3").await;
    ok(&mut bob, "rooms", Value::Null, "4").await;
    assert_eq!(
        log.take(),
        [
            "join lobby",
            "join lobby",
            "leave lobby",
            "rooms of a connection"
        ]
    );

    // Sends, from procedures and from the server.
    ok(
        &mut ann,
        "say",
        json!({"room": "lobby", "text": "t", "skip": "me"}),
        "5",
    )
    .await;
    ok(&mut ann, "note_user", json!({"user": "bob"}), "6").await;
    let s = &server.server;
    s.send_to_user("bob", "a", &1).unwrap();
    s.send_to_room("lobby", "b", &2).unwrap();
    s.broadcast("c", &3).unwrap();
    let bob_id = s.devices("bob").await.unwrap()[0];
    s.send_to(bob_id, "d", &4).unwrap();
    s.to_all().except_user("ann").send("e", &5).unwrap();
    let packed = s.pack("f", &6).unwrap();
    s.to_user("ann").send_packed(&packed).unwrap();
    assert_eq!(
        log.take(),
        [
            r#"send ["said","t",null] to room "lobby" except the connection"#,
            r#"send ["note","hello",null] to user "bob" except the connection"#,
            r#"send ["a",1,null] to user "bob""#,
            r#"send ["b",2,null] to room "lobby""#,
            r#"send ["c",3,null] to everyone"#,
            "devices of bob",
            r#"send ["d",4,null] to a connection"#,
            r#"send ["e",5,null] to everyone except ann"#,
            r#"send ["f",6,null] to user "ann""#,
        ]
    );

    // Queries.
    s.users().await.unwrap();
    s.counts().await.unwrap();
    s.connections_of("ann").await.unwrap();
    s.room_members("lobby").await.unwrap();
    assert_eq!(
        log.take(),
        ["users", "counts", "devices of ann", "members of lobby"]
    );

    // Disconnects, and the releases they lead to.
    ok(&mut ann, "drop_user", json!({"user": "bob"}), "7").await;
    assert_eq!(
        until_closed(&mut bob).await,
        Seen::Close(1000, "dropped".into())
    );
    within("bob released", async {
        while !log.0.lock().unwrap().iter().any(|e| e == "release bob") {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(
        log.take(),
        [
            r#"disconnect user "bob" with 1000 "dropped""#,
            "release bob"
        ]
    );
    let ann_id = s.devices("ann").await.unwrap()[0];
    assert!(s.drop_connection(ann_id, "bye").unwrap());
    assert_eq!(
        until_closed(&mut ann).await,
        Seen::Close(1000, "bye".into())
    );

    // The server's shutdown: every connection released, then the engine says goodbye.
    server.server.shutdown().await;
    assert_eq!(
        log.take(),
        [
            "devices of ann",
            r#"disconnect a connection with 1000 "bye""#,
            "release ann",
            "close"
        ]
    );
}

/// A seam whose engine is down: every operation fails, and, unless it started before it
/// went down, so does its start.
struct Down {
    started: bool,
}

fn unavailable() -> DeliveryError {
    DeliveryError::Unavailable("the backplane is down".into())
}

#[async_trait::async_trait]
impl Delivery for Down {
    async fn start(&self) -> Result<(), DeliveryError> {
        if self.started {
            Ok(())
        } else {
            Err(unavailable())
        }
    }
    fn send(&self, _: &Target, _: Option<&Except>, _: &Packed) -> Result<usize, DeliveryError> {
        Err(unavailable())
    }
    fn disconnect(
        &self,
        _: &Target,
        _: Option<&Except>,
        _: &Close,
    ) -> Result<usize, DeliveryError> {
        Err(unavailable())
    }
    async fn admit(&self, _: &Connection, _: UserLimit) -> Result<Admission, DeliveryError> {
        Err(unavailable())
    }
    async fn call(
        &self,
        _: ConnectionId,
        _: &str,
        _: &Value,
        _: Duration,
    ) -> Result<Value, CallError> {
        Err(CallError::Disconnected)
    }
    async fn release(&self, _: &Connection) -> Result<Released, DeliveryError> {
        Err(unavailable())
    }
    async fn join(
        &self,
        _: ConnectionId,
        _: &str,
        _: Option<usize>,
    ) -> Result<Joined, DeliveryError> {
        Err(unavailable())
    }
    async fn leave_all(&self, _: ConnectionId) -> Result<usize, DeliveryError> {
        Err(unavailable())
    }
    async fn join_user(&self, _: &str, _: &str) -> Result<bool, DeliveryError> {
        Err(unavailable())
    }
    async fn leave_user(&self, _: &str, _: &str) -> Result<bool, DeliveryError> {
        Err(unavailable())
    }
    async fn room_users(&self, _: &str) -> Result<Vec<Arc<str>>, DeliveryError> {
        Err(unavailable())
    }
    async fn user_rooms(&self, _: &str) -> Result<Vec<Arc<str>>, DeliveryError> {
        Err(unavailable())
    }
    async fn presence(&self, _: &str) -> Result<Option<Presence>, DeliveryError> {
        Err(unavailable())
    }
    async fn profile(&self, _: &str) -> Result<Option<Profile>, DeliveryError> {
        Err(unavailable())
    }
    async fn online(&self) -> Result<Vec<Presence>, DeliveryError> {
        Err(unavailable())
    }
    async fn update_profile(
        &self,
        _: &str,
        _: &ProfileUpdate,
    ) -> Result<Option<Presence>, DeliveryError> {
        Err(unavailable())
    }
    async fn subscribe_presence(
        &self,
        _: ConnectionId,
    ) -> Result<Option<Vec<Presence>>, DeliveryError> {
        Err(unavailable())
    }
    async fn unsubscribe_presence(&self, _: ConnectionId) -> Result<bool, DeliveryError> {
        Err(unavailable())
    }
    async fn leave(&self, _: ConnectionId, _: &str) -> Result<bool, DeliveryError> {
        Err(unavailable())
    }
    async fn devices(&self, _: &str) -> Result<Vec<ConnectionId>, DeliveryError> {
        Err(unavailable())
    }
    async fn users(&self) -> Result<Vec<Arc<str>>, DeliveryError> {
        Err(unavailable())
    }
    async fn members(&self, _: &str) -> Result<Vec<ConnectionId>, DeliveryError> {
        Err(unavailable())
    }
    async fn rooms_of(&self, _: ConnectionId) -> Result<Vec<Arc<str>>, DeliveryError> {
        Err(unavailable())
    }
    async fn counts(&self) -> Result<(usize, usize), DeliveryError> {
        Err(unavailable())
    }
}

#[tokio::test]
async fn an_engine_that_is_down_gives_typed_errors_and_a_close_clients_retry_after() {
    let server = start(room_server_over(|_| Down { started: true })).await;
    let mut events = server.server.events();
    let mut raw = Raw::connect(server.addr(), Codec::Json).await;
    raw.send(&json!(["~wse:hi", {"identity": "ann"}, null]))
        .await;
    // Not listed, so not welcomed: 1013, which `wse` clients retry after.
    raw.expect_close(1013, "wse.by-server").await;
    let rejected = next_event(&mut events, "rejected", pick::rejected).await;
    assert_eq!(
        rejected,
        Rejection::Unavailable("delivery unavailable: the backplane is down".into())
    );

    let s = &server.server;
    assert_eq!(s.broadcast("x", &1), Err(unavailable()));
    assert_eq!(s.drop_user("ann", "x"), Err(unavailable()));
    assert_eq!(s.counts().await, Err(unavailable()));
    assert_eq!(s.users().await, Err(unavailable()));
    // A message that cannot be sent at all says so before the engine is asked.
    assert!(matches!(
        s.broadcast("~wse:hi", &1),
        Err(DeliveryError::Message(_))
    ));
}

#[tokio::test]
async fn a_server_whose_engine_cannot_start_does_not_serve() {
    let server = Server::builder(|_| async { Decision::refuse() })
        .delivery(|_| Down { started: false })
        .build();
    let error = server.bind("127.0.0.1:0").await.unwrap_err();
    assert!(
        error.to_string().contains("the backplane is down"),
        "{error}"
    );
}

#[tokio::test]
async fn the_servers_shutdown_closes_every_listener_and_connection() {
    let server = room_server();
    let first = server.bind("127.0.0.1:0").await.unwrap();
    let second = server.bind("127.0.0.1:0").await.unwrap();
    let mut a = Raw::login_identity(first.local_addr(), Codec::Json, "ann").await;
    let mut b = Raw::login_identity(second.local_addr(), Codec::MsgPack, "bob").await;
    let (first_addr, second_addr) = (first.local_addr(), second.local_addr());
    let shutting_down = tokio::spawn({
        let server = server.clone();
        async move { server.shutdown().await }
    });
    // 1012: clients with reconnect enabled come back to the restarted server.
    for raw in [&mut a, &mut b] {
        assert_eq!(raw.next().await, Seen::Close(1012, "wse.by-server".into()));
    }
    within("shutdown", shutting_down).await.unwrap();
    assert_eq!(server.counts().await.unwrap(), (0, 0));
    // Both listeners are gone.
    for addr in [first_addr, second_addr] {
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
    // Their handles still shut down quietly.
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test]
async fn a_connection_whose_task_is_dropped_leaves_the_index() {
    // serve_io's future dropped after the welcome (a timeout around it, say): the connection
    // must not stay listed, nor hold its user's place.
    let server = room_server();
    let mut events = server.events();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = tokio::spawn({
        let server = server.clone();
        async move {
            let (tcp, remote) = listener.accept().await.unwrap();
            server.serve_io(tcp, remote).await;
        }
    });
    let mut raw = Raw::login_identity(addr, Codec::Json, "ann").await;
    ok(&mut raw, "join", json!({"room": "lobby"}), "j").await;
    assert_eq!(server.counts().await.unwrap(), (1, 1));
    serving.abort();
    let (user, code, _) = next_event(&mut events, "disconnected", pick::disconnected).await;
    assert_eq!((user.as_str(), code), ("ann", 1006));
    assert_eq!(server.counts().await.unwrap(), (0, 0));
    assert!(server.room_members("lobby").await.unwrap().is_empty());
}

#[test]
fn ids_travel_as_text() {
    let id = ConnectionId::new(wse_server::NodeId::from_u64(u64::MAX), 42);
    let text = serde_json::to_value(id).unwrap();
    assert_eq!(text, json!("c42@ffffffffffffffff"));
    assert_eq!(serde_json::from_value::<ConnectionId>(text).unwrap(), id);
    assert!(serde_json::from_value::<ConnectionId>(json!("c42")).is_err());
    assert!(serde_json::from_value::<ConnectionId>(json!(42)).is_err());
}
