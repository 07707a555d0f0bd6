//! Rooms: a send reaches each member once whichever ways it joined, the sender's exclusions,
//! the built-in room procedures (refusals, leave, mine, the per-connection limit), rooms of a
//! whole user, joins racing disconnects, and thousands of join/leave/disconnect cycles that
//! leave nothing behind; raw frames on both codecs, and the real client.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use wse_examples::Auth;
use wse_server::{
    ConnectionId, Decision, Event, LocalDelivery, MsgPack, PresenceProcedures, RoomAction,
    RoomProcedures, Server,
};
use wse_tests::{Codec, QUIET, Raw, Seen, demo_client, next_event, start, start_demo, within};

/// Calls the demo's `room_send` from a member of the room that hears it too: the message and
/// the answer arrive in either order, and nothing else.
async fn room_send_heard(raw: &mut Raw, args: Value, stamp: &str, message: &Value) {
    raw.send(&json!(["room_send", args, stamp])).await;
    let mut got = vec![raw.frame().await, raw.frame().await];
    got.sort_by_key(|frame| frame[0].as_str().unwrap_or_default().to_owned());
    let mut expected = vec![message.clone(), json!(["~wse:response", true, stamp])];
    expected.sort_by_key(|frame| frame[0].as_str().unwrap_or_default().to_owned());
    assert_eq!(got, expected, "{:?}", raw.codec);
}

/// Expects `message` once on each of `peers`, then nothing more.
async fn heard_once(peers: &mut [&mut Raw], message: &Value) {
    for (i, peer) in peers.iter_mut().enumerate() {
        assert_eq!(&peer.frame().await, message, "peer {i} ({:?})", peer.codec);
    }
    for peer in peers.iter_mut() {
        peer.expect_silence(QUIET).await;
    }
}

/// A server that accepts any non-empty identity as that user, up to `devices` connections
/// each, JSON or MessagePack, with `rooms` and the presence procedures; and the handle on its
/// index.
fn room_server(rooms: RoomProcedures, devices: usize) -> (Server, LocalDelivery) {
    let (tx, rx) = std::sync::mpsc::channel();
    let server = Server::builder(|handshake| async move {
        match handshake.identity.as_str() {
            Some(user) if !user.is_empty() => Decision::accept(user, Value::Null),
            _ => Decision::refuse(),
        }
    })
    .add_protocol(MsgPack)
    .conn_per_user(devices)
    .room_procedures(rooms)
    .presence_procedures(PresenceProcedures::new())
    .delivery(move |local: LocalDelivery| {
        tx.send(local.clone()).unwrap();
        local
    })
    .build();
    let local = rx.try_recv().expect("the index is handed over at build");
    (server, local)
}

/// Room procedures that let every join and leave through.
fn open_rooms() -> RoomProcedures {
    RoomProcedures::new().authorize(|_, _, _| async { true })
}

/// The only connection of `user` (it must have exactly one).
fn only_device(local: &LocalDelivery, user: &str) -> ConnectionId {
    let devices = local.devices_now(user);
    assert_eq!(devices.len(), 1, "{user}: {devices:?}");
    devices[0]
}

/// Reads on up to the close (or the end): the close handshake completes.
async fn until_closed(raw: &mut Raw) {
    within("the close", async {
        while !matches!(raw.next().await, Seen::Close(..) | Seen::End) {}
    })
    .await;
}

/// Waits until the index holds no room, user or connection, and the runtime no more tasks
/// than `tasks` (when given).
async fn nothing_left(local: &LocalDelivery, tasks: Option<usize>) {
    let metrics = tokio::runtime::Handle::current().metrics();
    let clean = || {
        local.room_count() == 0
            && local.counts_now() == (0, 0)
            && tasks.is_none_or(|tasks| metrics.num_alive_tasks() <= tasks)
    };
    let waited = tokio::time::timeout(wse_tests::PATIENCE, async {
        while !clean() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "left behind: {} rooms, {:?} (users, connections), {} tasks (baseline {tasks:?})",
        local.room_count(),
        local.counts_now(),
        metrics.num_alive_tasks(),
    );
}

#[tokio::test]
async fn a_room_send_reaches_a_member_through_two_paths_once_on_both_codecs() {
    let server = start_demo(Auth::Plain).await;
    for codec in Codec::BOTH {
        let (ann, bob) = (format!("ann-{codec:?}"), format!("bob-{codec:?}"));
        let room = format!("public-lobby-{codec:?}");
        let mut phone = Raw::login(server.addr(), codec, &ann).await;
        // The phone joins by itself, then as part of its user.
        assert_eq!(
            phone.ok("rooms.join", json!({"room": room}), "j1").await,
            true
        );
        assert_eq!(
            phone
                .ok("join_user_room", json!({"room": room}), "u1")
                .await,
            true
        );
        // The laptop connects later: in through its user, then joins by itself too.
        let mut laptop = Raw::login(server.addr(), codec, &ann).await;
        assert_eq!(
            laptop.ok("rooms.mine", json!({}), "m1").await,
            json!([room])
        );
        assert_eq!(
            laptop.ok("rooms.join", json!({"room": room}), "j2").await,
            true
        );
        let mut bob_raw = Raw::login(server.addr(), codec, &bob).await;
        assert_eq!(
            bob_raw.ok("rooms.join", json!({"room": room}), "j3").await,
            true
        );
        assert_eq!(server.server.room_members(&room).await.unwrap().len(), 3);
        assert_eq!(
            bob_raw
                .ok("room_members", json!({"room": room}), "r1")
                .await,
            json!([ann, bob])
        );

        // From a member, to everyone: each connection once.
        let message = json!(["said", {"text": "héllo", "n": [1, 2]}, null]);
        room_send_heard(
            &mut bob_raw,
            json!({"room": room, "type": "said", "payload": {"text": "héllo", "n": [1, 2]}, "except": "none"}),
            "s1",
            &message,
        )
        .await;
        heard_once(&mut [&mut phone, &mut laptop], &message).await;
        bob_raw.expect_silence(QUIET).await;

        // Straight from the server: three connections took it, each once.
        assert_eq!(server.server.send_to_room(&room, "tick", &1).unwrap(), 3);
        heard_once(
            &mut [&mut phone, &mut laptop, &mut bob_raw],
            &json!(["tick", 1, null]),
        )
        .await;

        // The phone ends its own join: still in through its user, still reached once.
        assert_eq!(
            phone.ok("rooms.leave", json!({"room": room}), "l1").await,
            true
        );
        assert_eq!(phone.ok("rooms.mine", json!({}), "m2").await, json!([room]));
        assert_eq!(server.server.send_to_room(&room, "tick", &2).unwrap(), 3);
        heard_once(
            &mut [&mut phone, &mut laptop, &mut bob_raw],
            &json!(["tick", 2, null]),
        )
        .await;

        // The user leaves as a whole: the laptop stays by its own join, the phone is out.
        assert!(server.server.leave_user(&ann, &room).await.unwrap());
        assert_eq!(phone.ok("rooms.mine", json!({}), "m3").await, json!([]));
        assert_eq!(server.server.send_to_room(&room, "tick", &3).unwrap(), 2);
        heard_once(&mut [&mut laptop, &mut bob_raw], &json!(["tick", 3, null])).await;
        phone.expect_silence(QUIET).await;
    }
}

#[tokio::test]
async fn a_room_send_skips_the_calling_device_or_every_device_of_its_user() {
    let server = start_demo(Auth::Plain).await;
    let mut phone = Raw::login(server.addr(), Codec::Json, "ann").await;
    let mut laptop = Raw::login(server.addr(), Codec::MsgPack, "ann").await;
    let mut bob = Raw::login(server.addr(), Codec::Json, "bob").await;
    let mut eve = Raw::login(server.addr(), Codec::MsgPack, "eve").await;
    for (raw, stamp) in [(&mut phone, "j1"), (&mut laptop, "j2"), (&mut bob, "j3")] {
        assert_eq!(
            raw.ok("rooms.join", json!({"room": "public-chat"}), stamp)
                .await,
            true
        );
    }
    let send = |except: &str, n: i64| json!({"room": "public-chat", "type": "said", "payload": n, "except": except});

    // "connection": the calling device alone is skipped; its user's other device hears it.
    assert_eq!(
        phone.ok("room_send", send("connection", 1), "s1").await,
        true
    );
    heard_once(&mut [&mut laptop, &mut bob], &json!(["said", 1, null])).await;
    phone.expect_silence(QUIET).await;

    // "user": every device of the calling user is skipped.
    assert_eq!(phone.ok("room_send", send("user", 2), "s2").await, true);
    heard_once(&mut [&mut bob], &json!(["said", 2, null])).await;
    phone.expect_silence(QUIET).await;
    laptop.expect_silence(QUIET).await;

    // "none": everyone in the room, the sender too.
    room_send_heard(&mut phone, send("none", 3), "s3", &json!(["said", 3, null])).await;
    heard_once(&mut [&mut laptop, &mut bob], &json!(["said", 3, null])).await;
    phone.expect_silence(QUIET).await;

    // Whoever is not in the room hears none of it, and may send to it all the same.
    eve.expect_silence(QUIET).await;
    assert_eq!(eve.ok("room_send", send("user", 4), "s4").await, true);
    heard_once(
        &mut [&mut phone, &mut laptop, &mut bob],
        &json!(["said", 4, null]),
    )
    .await;
    eve.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_client_join_is_refused_unless_authorized_and_never_for_a_reserved_name() {
    // The demo lets clients into `public-…` rooms only.
    let server = start_demo(Auth::Plain).await;
    let mut raw = Raw::login(server.addr(), Codec::Json, "ann").await;
    for (room, stamp) in [("private-x", "j1"), ("~wse:presence", "j2"), ("", "j3")] {
        assert_eq!(
            raw.refused("rooms.join", json!({"room": room}), stamp)
                .await,
            "wse.server.room.forbidden",
            "{room:?}"
        );
    }
    assert_eq!(
        raw.refused("rooms.leave", json!({"room": "private-x"}), "l1")
            .await,
        "wse.server.room.forbidden"
    );
    assert_eq!(raw.ok("rooms.mine", json!({}), "m1").await, json!([]));
    assert!(
        server
            .server
            .room_members("private-x")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        raw.ok("rooms.join", json!({"room": "public-x"}), "j4")
            .await,
        true
    );

    // A hook that lets everything through is still never asked about a reserved name.
    let asked = Arc::new(Mutex::new(Vec::new()));
    let (open, local) = room_server(
        RoomProcedures::new().authorize({
            let asked = Arc::clone(&asked);
            move |conn, room, action| {
                asked
                    .lock()
                    .unwrap()
                    .push((conn.user_id().to_owned(), room, action));
                async { true }
            }
        }),
        1,
    );
    let open = start(open).await;
    let mut raw = Raw::login_identity(open.addr(), Codec::MsgPack, "ann").await;
    for (procedure, room, stamp) in [
        ("rooms.join", "~wse:presence", "j1"),
        ("rooms.join", "~wse:anything", "j2"),
        ("rooms.leave", "~wse:presence", "l1"),
        ("rooms.join", "", "j3"),
    ] {
        assert_eq!(
            raw.refused(procedure, json!({"room": room}), stamp).await,
            "wse.server.room.forbidden",
            "{procedure} {room:?}"
        );
    }
    assert_eq!(local.room_count(), 0);
    assert_eq!(
        raw.ok("rooms.join", json!({"room": "private-x"}), "j4")
            .await,
        true
    );
    assert_eq!(
        raw.ok("rooms.leave", json!({"room": "private-x"}), "l2")
            .await,
        true
    );
    assert_eq!(
        *asked.lock().unwrap(),
        [
            ("ann".to_owned(), "private-x".to_owned(), RoomAction::Join),
            ("ann".to_owned(), "private-x".to_owned(), RoomAction::Leave),
        ]
    );

    // Without a hook, every join and leave is refused; the list still answers.
    let (closed, local) = room_server(RoomProcedures::new(), 1);
    let closed = start(closed).await;
    let mut raw = Raw::login_identity(closed.addr(), Codec::Json, "ann").await;
    assert_eq!(
        raw.refused("rooms.join", json!({"room": "public-x"}), "j1")
            .await,
        "wse.server.room.forbidden"
    );
    assert_eq!(
        raw.refused("rooms.leave", json!({"room": "public-x"}), "l1")
            .await,
        "wse.server.room.forbidden"
    );
    assert_eq!(raw.ok("rooms.mine", json!({}), "m1").await, json!([]));
    assert_eq!(local.room_count(), 0);
}

#[tokio::test]
async fn leave_says_whether_it_was_a_member_and_a_users_rooms_end_with_its_last_device() {
    let server = start_demo(Auth::Plain).await;
    let mut events = server.server.events();
    let mut zed = Raw::login(server.addr(), Codec::Json, "zed").await;
    for (room, stamp) in [("public-b", "j1"), ("public-c", "j2"), ("public-a", "j3")] {
        assert_eq!(
            zed.ok("rooms.join", json!({"room": room}), stamp).await,
            true
        );
    }
    // Twice changes nothing.
    assert_eq!(
        zed.ok("rooms.join", json!({"room": "public-a"}), "j4")
            .await,
        false
    );
    assert_eq!(
        zed.ok("rooms.mine", json!({}), "m1").await,
        json!(["public-a", "public-b", "public-c"])
    );
    assert_eq!(
        zed.ok("rooms.leave", json!({"room": "public-b"}), "l1")
            .await,
        true
    );
    assert_eq!(
        zed.ok("rooms.leave", json!({"room": "public-b"}), "l2")
            .await,
        false
    );
    assert_eq!(
        zed.ok("rooms.leave", json!({"room": "public-never"}), "l3")
            .await,
        false
    );
    assert_eq!(
        zed.ok("rooms.mine", json!({}), "m2").await,
        json!(["public-a", "public-c"])
    );

    // Members are user ids, sorted, each once whatever its devices.
    let mut amy = Raw::login(server.addr(), Codec::MsgPack, "amy").await;
    assert_eq!(
        amy.ok("rooms.join", json!({"room": "public-a"}), "j1")
            .await,
        true
    );
    assert_eq!(
        zed.ok("room_members", json!({"room": "public-a"}), "r1")
            .await,
        json!(["amy", "zed"])
    );

    // Amy joins a room as a whole user; a device she connects later is in it too.
    assert_eq!(
        amy.ok("join_user_room", json!({"room": "public-team"}), "u1")
            .await,
        true
    );
    let mut amy_laptop = Raw::login(server.addr(), Codec::Json, "amy").await;
    assert_eq!(
        amy_laptop.ok("rooms.mine", json!({}), "m1").await,
        json!(["public-team"])
    );
    assert_eq!(
        amy_laptop
            .ok("room_members", json!({"room": "public-a"}), "r1")
            .await,
        json!(["amy", "zed"])
    );
    assert_eq!(
        zed.ok("room_members", json!({"room": "public-team"}), "r2")
            .await,
        json!(["amy"])
    );
    // Not by its own join: its leave ends nothing, and it stays reached.
    assert_eq!(
        amy_laptop
            .ok("rooms.leave", json!({"room": "public-team"}), "l1")
            .await,
        false
    );
    assert_eq!(
        server
            .server
            .send_to_room("public-team", "tick", &1)
            .unwrap(),
        2
    );
    heard_once(&mut [&mut amy, &mut amy_laptop], &json!(["tick", 1, null])).await;
    assert_eq!(
        server.server.user_rooms("amy").await.unwrap(),
        vec![Arc::<str>::from("public-team")]
    );

    // One device gone: the user stays in its room.
    amy.close(1000, "bye").await;
    let _ = amy.next().await;
    assert_eq!(
        server
            .server
            .send_to_room("public-team", "tick", &2)
            .unwrap(),
        1
    );
    assert_eq!(amy_laptop.frame().await, json!(["tick", 2, null]));
    // The last gone: the user is out of its rooms, and comes back in none.
    amy_laptop.close(1000, "bye").await;
    let _ = amy_laptop.next().await;
    next_event(&mut events, "amy left", |event| match event {
        Event::Left { user_id } if &**user_id == "amy" => Some(()),
        _ => None,
    })
    .await;
    assert!(server.server.user_rooms("amy").await.unwrap().is_empty());
    assert!(
        server
            .server
            .room_members("public-team")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        zed.ok("room_members", json!({"room": "public-a"}), "r3")
            .await,
        json!(["zed"])
    );
    let mut amy_again = Raw::login(server.addr(), Codec::Json, "amy").await;
    assert_eq!(amy_again.ok("rooms.mine", json!({}), "m1").await, json!([]));
    assert_eq!(
        server
            .server
            .send_to_room("public-team", "tick", &3)
            .unwrap(),
        0
    );
    amy_again.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_join_past_the_per_connection_room_limit_is_refused_until_a_leave() {
    let (server, local) = room_server(open_rooms().max_per_connection(3), 1);
    let server = start(server).await;
    let mut raw = Raw::login_identity(server.addr(), Codec::Json, "ann").await;
    let id = only_device(&local, "ann");
    // A presence subscription is a room of the server's own: it does not count.
    assert!(
        raw.ok("presence.subscribe", json!({}), "p1")
            .await
            .is_array()
    );
    for (room, stamp) in [("a", "j1"), ("b", "j2"), ("c", "j3")] {
        assert_eq!(
            raw.ok("rooms.join", json!({"room": room}), stamp).await,
            true
        );
    }
    assert_eq!(
        raw.refused("rooms.join", json!({"room": "d"}), "j4").await,
        "wse.server.room.limit"
    );
    // A room it is in already is not one more.
    assert_eq!(
        raw.ok("rooms.join", json!({"room": "a"}), "j5").await,
        false
    );
    assert_eq!(
        raw.ok("rooms.mine", json!({}), "m1").await,
        json!(["a", "b", "c"])
    );
    assert!(local.members_now("d").is_empty());

    // After a leave, a join works again, up to the limit.
    assert_eq!(
        raw.ok("rooms.leave", json!({"room": "b"}), "l1").await,
        true
    );
    assert_eq!(raw.ok("rooms.join", json!({"room": "d"}), "j6").await, true);
    assert_eq!(
        raw.refused("rooms.join", json!({"room": "b"}), "j7").await,
        "wse.server.room.limit"
    );

    // The server's own joins are not limited, but they count against the client's.
    assert!(server.server.join(id, "x").await.unwrap());
    assert!(server.server.join_user("ann", "y").await.unwrap());
    assert_eq!(
        raw.ok("rooms.mine", json!({}), "m2").await,
        json!(["a", "c", "d", "x", "y"])
    );
    for (room, stamp) in [("a", "l2"), ("c", "l3"), ("d", "l4")] {
        assert_eq!(
            raw.ok("rooms.leave", json!({"room": room}), stamp).await,
            true
        );
    }
    assert_eq!(raw.ok("rooms.join", json!({"room": "e"}), "j8").await, true);
    assert_eq!(
        raw.refused("rooms.join", json!({"room": "f"}), "j9").await,
        "wse.server.room.limit"
    );
    assert_eq!(
        raw.ok("rooms.mine", json!({}), "m3").await,
        json!(["e", "x", "y"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_racing_a_disconnect_leaves_nothing_behind() {
    const ROUNDS: usize = 200;
    let (server, local) = room_server(open_rooms(), 2);
    let server = start(server).await;
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut rounds = 0;
    while rounds < ROUNDS && Instant::now() < deadline {
        let user = format!("racer{rounds}");
        let codec = Codec::BOTH[rounds % 2];
        let mut raw = Raw::login_identity(server.addr(), codec, &user).await;
        let id = only_device(&local, &user);
        let s = server.server.clone();
        match rounds % 5 {
            // A join on its way in as the socket vanishes.
            0 => {
                raw.send(&json!(["rooms.join", {"room": "race"}, "j"]))
                    .await;
                drop(raw);
            }
            // Joins on their way in, then a close frame at once.
            1 => {
                for room in ["race", "race-b", "race-c"] {
                    raw.send(&json!(["rooms.join", {"room": room}, room])).await;
                }
                raw.close(1000, "bye").await;
            }
            // The server joins and leaves it over and over while it goes: once it is gone, a
            // join finds nothing.
            2 => {
                let churn = tokio::spawn(async move {
                    // A leave that finds nothing: the connection went after the join.
                    while s.join(id, "race").await.unwrap() && s.leave(id, "race").await.unwrap() {
                        tokio::task::yield_now().await;
                    }
                });
                drop(raw);
                within("joins end with the connection", churn)
                    .await
                    .unwrap();
            }
            // Its user joins a room as a whole while its only device goes.
            3 => {
                let joining = tokio::spawn(async move { s.join_user(&user, "race-user").await });
                drop(raw);
                within("join_user", joining).await.unwrap().unwrap();
            }
            // Joins on their way in while the server drops the connection.
            _ => {
                for room in ["race", "race-d"] {
                    raw.send(&json!(["rooms.join", {"room": room}, room])).await;
                }
                let joining = tokio::spawn(async move { s.join(id, "race-e").await });
                assert!(server.server.drop_connection(id, "bye").unwrap());
                within("server join", joining).await.unwrap().unwrap();
                // Reads on, so the close handshake completes.
                until_closed(&mut raw).await;
            }
        }
        rounds += 1;
    }
    assert!(rounds >= 20, "only {rounds} rounds in time");
    nothing_left(&local, None).await;
    assert!(server.server.users().await.unwrap().is_empty());
    assert!(server.server.user_rooms("racer3").await.unwrap().is_empty());
    for room in ["race", "race-b", "race-user", "race-e"] {
        assert!(server.server.room_members(room).await.unwrap().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_join_and_leave_cycles_leave_no_room_connection_or_task_behind() {
    const USERS: usize = 50;
    const DEVICES: usize = 2;
    const ROOMS: usize = 100;
    const WORKERS: usize = 10;
    const CYCLES: usize = 100;
    let (server, local) = room_server(open_rooms().max_per_connection(ROOMS + 10), DEVICES);
    let server = start(server).await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();

    let (mut peers, mut ids) = (Vec::new(), Vec::new());
    for user in 0..USERS {
        let user = format!("u{user}");
        for codec in Codec::BOTH.into_iter().take(DEVICES) {
            peers.push(Raw::login_identity(server.addr(), codec, &user).await);
            ids.push(
                *local
                    .devices_now(&user)
                    .last()
                    .expect("listed once welcomed"),
            );
        }
    }
    assert_eq!(local.counts_now(), (USERS, USERS * DEVICES));

    // Each connection joins every room, pipelined, then leaves the even ones: 100 × 150
    // membership changes through the procedures.
    let odd: Vec<String> = {
        let mut odd: Vec<String> = (1..ROOMS).step_by(2).map(|k| format!("r{k}")).collect();
        odd.sort();
        odd
    };
    let cycling: Vec<_> = peers
        .into_iter()
        .map(|mut raw| {
            let odd = odd.clone();
            tokio::spawn(async move {
                for k in 0..ROOMS {
                    raw.send(&json!(["rooms.join", {"room": format!("r{k}")}, format!("j{k}")]))
                        .await;
                }
                // Calls on one connection may be answered in any order.
                let mut answered = HashSet::new();
                for _ in 0..ROOMS {
                    let answer = raw.frame().await;
                    assert_eq!(answer[0], "~wse:response", "{answer}");
                    assert_eq!(answer[1], true, "{answer}");
                    assert!(answered.insert(answer[2].as_str().unwrap().to_owned()));
                }
                for k in (0..ROOMS).step_by(2) {
                    raw.send(&json!(["rooms.leave", {"room": format!("r{k}")}, format!("l{k}")]))
                        .await;
                }
                for _ in (0..ROOMS).step_by(2) {
                    let answer = raw.frame().await;
                    assert_eq!(answer[0], "~wse:response", "{answer}");
                    assert_eq!(answer[1], true, "{answer}");
                }
                assert_eq!(raw.ok("rooms.mine", json!({}), "m").await, json!(odd));
                raw
            })
        })
        .collect();
    let mut peers = Vec::new();
    for task in cycling {
        peers.push(within("join/leave cycles", task).await.unwrap());
    }
    // Empty rooms are gone.
    assert_eq!(local.room_count(), ROOMS / 2);
    assert_eq!(local.members_now("r1").len(), USERS * DEVICES);
    assert!(local.members_now("r0").is_empty());

    // The server's own joins: whole users, and each device in and out of a room of its own.
    for user in 0..USERS {
        let team = format!("team{}", user % 5);
        let user = format!("u{user}");
        assert!(server.server.join_user(&user, &team).await.unwrap());
        assert!(!server.server.join_user(&user, &team).await.unwrap());
        for id in local.devices_now(&user) {
            assert!(!server.server.join(id, "r1").await.unwrap());
            assert!(server.server.join(id, &format!("solo-{id}")).await.unwrap());
            assert!(
                server
                    .server
                    .leave(id, &format!("solo-{id}"))
                    .await
                    .unwrap()
            );
        }
    }
    assert_eq!(local.room_count(), ROOMS / 2 + 5);
    assert_eq!(local.members_now("team0").len(), USERS / 5 * DEVICES);
    assert_eq!(local.counts_now(), (USERS, USERS * DEVICES));

    // Every connection goes, each its own way, still in its rooms.
    for (i, mut raw) in peers.into_iter().enumerate() {
        match i % 4 {
            0 => {
                raw.close(1000, "bye").await;
                until_closed(&mut raw).await;
            }
            1 => drop(raw),
            2 => {
                raw.send(&json!(["rooms.join", {"room": "late"}, "late"]))
                    .await;
                drop(raw);
            }
            _ => {
                // Its own joins end first; its user's stay until the user goes.
                assert_eq!(
                    server.server.leave_all(ids[i]).await.unwrap(),
                    ROOMS / 2,
                    "connection {i}"
                );
                drop(raw);
            }
        }
    }
    nothing_left(&local, Some(baseline)).await;
    assert!(server.server.users().await.unwrap().is_empty());
    assert!(server.server.user_rooms("u0").await.unwrap().is_empty());

    // Then a thousand devices come and go, joining rooms on their way through; a user's third
    // device closes its oldest.
    let addr = server.addr();
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            tokio::spawn(async move {
                for cycle in 0..CYCLES {
                    let codec = Codec::BOTH[cycle % 2];
                    let mut raw = Raw::login_identity(addr, codec, &format!("w{worker}")).await;
                    for k in 0..5 {
                        let room = format!("r{}", (cycle + k) % 10);
                        raw.send(&json!(["rooms.join", {"room": room}, format!("j{k}")]))
                            .await;
                    }
                    if cycle % 2 == 0 {
                        for _ in 0..5 {
                            assert_eq!(raw.frame().await[1], true);
                        }
                        raw.close(1000, "bye").await;
                        until_closed(&mut raw).await;
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        within("connect/join/disconnect cycles", worker)
            .await
            .unwrap();
    }
    nothing_left(&local, Some(baseline)).await;
    assert!(server.server.users().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_client_joins_a_public_room_hears_a_room_send_and_lists_its_rooms() {
    let server = start_demo(Auth::Plain).await;
    let client = demo_client(&server, "ann").await;
    let (tx, mut said) = mpsc::unbounded_channel();
    client
        .on("said", move |_, payload: Value| {
            let _ = tx.send(payload);
        })
        .unwrap();

    let joined: bool = within(
        "rooms.join",
        client.call("rooms.join", &json!({"room": "public-x"})),
    )
    .await
    .unwrap();
    assert!(joined);
    let again: bool = within(
        "rooms.join",
        client.call("rooms.join", &json!({"room": "public-x"})),
    )
    .await
    .unwrap();
    assert!(!again);
    let error = within(
        "rooms.join",
        client.call::<bool, _>("rooms.join", &json!({"room": "private-x"})),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code(), "wse.server.room.forbidden");

    // Another device of another user sends to the room.
    let mut bob = Raw::login(server.addr(), Codec::MsgPack, "bob").await;
    assert_eq!(
        bob.ok("room_send",
            json!({"room": "public-x", "type": "said", "payload": {"text": "hi"}, "except": "user"}),
            "s1"
        )
        .await,
        true
    );
    let heard = within("the room send", said.recv()).await.unwrap();
    assert_eq!(heard, json!({"text": "hi"}));

    let mine: Vec<String> = within("rooms.mine", client.call("rooms.mine", &json!({})))
        .await
        .unwrap();
    assert_eq!(mine, ["public-x"]);
    let left: bool = within(
        "rooms.leave",
        client.call("rooms.leave", &json!({"room": "public-x"})),
    )
    .await
    .unwrap();
    assert!(left);
    let mine: Vec<String> = within("rooms.mine", client.call("rooms.mine", &json!({})))
        .await
        .unwrap();
    assert!(mine.is_empty());
    // Out of the room: a send to it no longer reaches the client.
    assert_eq!(
        server
            .server
            .send_to_room("public-x", "said", &"late")
            .unwrap(),
        0
    );
    assert!(
        tokio::time::timeout(QUIET, said.recv()).await.is_err(),
        "nothing after the leave"
    );
}

#[tokio::test]
async fn a_room_named_like_the_presence_subscribers_is_an_ordinary_room() {
    // Subscribers to presence are kept apart from the rooms: a room of any name, sent to or
    // joined by a whole user, never reaches them.
    let server = start_demo(Auth::Plain).await;
    let mut watcher = Raw::login(server.addr(), Codec::Json, "watcher").await;
    watcher.ok("presence.subscribe", json!({}), "s1").await;
    let mut mallory = Raw::login(server.addr(), Codec::Json, "mallory").await;
    assert_eq!(
        mallory
            .ok("join_user_room", json!({"room": "~wse:presence"}), "u1")
            .await,
        json!(true)
    );
    // The watcher hears mallory come online, and nothing of what mallory sends to the room.
    let online = watcher.frame().await;
    assert_eq!(online[0], "presence", "{online}");
    assert_eq!(online[1]["user"], "mallory", "{online}");
    let forged =
        json!({"user": "bob", "online": false, "devices": 0, "alias": "bob", "version": u64::MAX});
    let args =
        json!({"room": "~wse:presence", "type": "presence", "payload": forged, "except": "none"});
    mallory.send(&json!(["room_send", args, "r1"])).await;
    let mut heard = 0;
    within("mallory's own copy and the answer", async {
        while heard < 2 {
            let frame = mallory.frame().await;
            assert!(frame[0] == "presence" || frame[2] == "r1", "{frame}");
            heard += 1;
        }
    })
    .await;
    watcher.expect_silence(QUIET).await;
    assert_eq!(
        watcher
            .ok("room_members", json!({"room": "~wse:presence"}), "m1")
            .await,
        json!(["mallory"])
    );
}

#[tokio::test]
async fn a_room_name_past_the_limit_is_an_invalid_payload() {
    let (server, local) = room_server(open_rooms().max_name_len(8), 2);
    let server = start(server).await;
    let mut raw = Raw::login_identity(server.addr(), Codec::Json, "ann").await;
    assert_eq!(
        raw.refused("rooms.join", json!({"room": "123456789"}), "j1")
            .await,
        "wse.server.rp.invalid-payload"
    );
    assert_eq!(
        raw.ok("rooms.join", json!({"room": "12345678"}), "j2")
            .await,
        json!(true)
    );
    assert_eq!(local.room_count(), 1);
    let demo = start_demo(Auth::Plain).await;
    let mut raw = Raw::login(demo.addr(), Codec::Json, "ann").await;
    let long = "x".repeat(129);
    assert_eq!(
        raw.refused("join_user_room", json!({"room": long}), "u1")
            .await,
        "wse.server.rp.invalid-payload"
    );
}
