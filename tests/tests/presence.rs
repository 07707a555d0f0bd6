//! Presence and private messages: the snapshot a subscriber starts from and the changes that
//! follow it in version order, the online list with device counts and aliases, unavailable
//! users (invisible and unreachable), and `dm.send` to every device of a user, refused by the
//! filter, to offline users, and copied to the sender's other devices.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use wse_client::{CallError, Client};
use wse_examples::Auth;
use wse_server::{Decision, DirectMessages, Event, Presence, Server};
use wse_tests::{
    Codec, QUIET, Raw, Seen, TestServer, client, demo_client, next_event, pick, start, start_demo,
    within,
};

/// A raw peer of the demo logged in as `user` and listed under it: a call is served only once
/// the connection is listed, so its answer means the device's presence change is made.
async fn device(addr: SocketAddr, codec: Codec, user: &str) -> Raw {
    let mut raw = Raw::login(addr, codec, user).await;
    raw.expect_add_works("listed").await;
    raw
}

/// Sends `payload` from `raw` to `to` with `dm.send` and returns whether it was delivered.
async fn dm(raw: &mut Raw, to: &str, payload: Value, stamp: &str) -> bool {
    raw.ok("dm.send", json!({"to": to, "payload": payload}), stamp)
        .await
        .as_bool()
        .expect("dm.send answers a bool")
}

/// The frame a private message from `from` is delivered as.
fn delivered(from: &str, payload: &Value) -> Value {
    json!(["dm", {"from": from, "payload": payload}, null])
}

/// Checks `frame` is the presence change `user` is `online` on `devices` as `alias`, with a
/// version newer than `after`; returns that version.
fn change(frame: &Value, user: &str, online: bool, devices: usize, alias: &str, after: u64) -> u64 {
    assert_eq!(frame.as_array().map(Vec::len), Some(3), "{frame}");
    assert_eq!(frame[0], "presence", "{frame}");
    assert_eq!(frame[2], Value::Null, "{frame}");
    let version = frame[1]["version"].as_u64().expect("a numeric version");
    assert!(
        version > after,
        "version {version} not after {after}: {frame}"
    );
    assert_eq!(
        frame[1],
        json!({"user": user, "online": online, "devices": devices, "alias": alias, "version": version})
    );
    version
}

/// Checks `list` is exactly the online users `expected` (user, devices, alias), in that order;
/// returns their versions.
fn listed(list: &Value, expected: &[(&str, usize, &str)]) -> Vec<u64> {
    let entries = list.as_array().expect("an online list");
    assert_eq!(entries.len(), expected.len(), "{list}");
    entries
        .iter()
        .zip(expected)
        .map(|(entry, &(user, devices, alias))| {
            let version = entry["version"].as_u64().expect("a numeric version");
            assert_eq!(
                entry,
                &json!({"user": user, "online": true, "devices": devices, "alias": alias, "version": version}),
                "{list}"
            );
            version
        })
        .collect()
}

/// Closes from the client side and waits until the socket has ended: by then the server has
/// taken the device out of its user.
async fn close_and_wait(raw: &mut Raw) {
    raw.close(1000, "wse.by-client").await;
    match raw.next().await {
        Seen::Close(code, _) => assert_eq!(code, 1000),
        other => panic!("expected the server's answer to our close, got {other:?}"),
    }
    assert_eq!(raw.next().await, Seen::End);
}

/// Waits for the server to report the end of a connection of `user`: it is out of presence
/// by then.
async fn disconnected(events: &mut wse_server::Events, user: &str) {
    next_event(events, "disconnected", |event| match event {
        Event::Disconnected { connection, .. } if connection.user_id() == user => Some(()),
        _ => None,
    })
    .await;
}

// ---------------------------------------------------------------- presence

#[tokio::test]
async fn subscribe_returns_a_snapshot_and_then_every_change_in_version_order() {
    for codec in Codec::BOTH {
        let other = if codec == Codec::Json {
            Codec::MsgPack
        } else {
            Codec::Json
        };
        let server = start_demo(Auth::Plain).await;
        let mut ann = device(server.addr(), other, "ann").await;
        let mut watcher = device(server.addr(), codec, "watcher").await;

        let snapshot = watcher.ok("presence.subscribe", json!({}), "s1").await;
        let versions = listed(&snapshot, &[("ann", 1, "ann"), ("watcher", 1, "watcher")]);
        assert!(versions[0] < versions[1], "ann came first: {snapshot}");

        let mut bob = device(server.addr(), other, "bob").await;
        let last = change(&watcher.frame().await, "bob", true, 1, "bob", versions[1]);
        let mut laptop = device(server.addr(), codec, "bob").await;
        let last = change(&watcher.frame().await, "bob", true, 2, "bob", last);

        let set = ann.ok("set_profile", json!({"alias": "Ann"}), "p1").await;
        assert_eq!(set, json!(true));
        let alias_version = change(&watcher.frame().await, "ann", true, 1, "Ann", last);

        close_and_wait(&mut laptop).await;
        let last = change(&watcher.frame().await, "bob", true, 1, "bob", alias_version);
        close_and_wait(&mut bob).await;
        change(&watcher.frame().await, "bob", false, 0, "bob", last);

        // The list the changes were applied to agrees with the server's.
        let online = watcher.ok("presence.online", json!({}), "o1").await;
        let versions = listed(&online, &[("ann", 1, "Ann"), ("watcher", 1, "watcher")]);
        assert_eq!(versions[0], alias_version);
        assert_eq!(
            serde_json::to_value(server.server.online().await.unwrap()).unwrap(),
            online
        );

        // Unsubscribed, it hears of nothing more.
        let was = watcher.ok("presence.unsubscribe", json!({}), "u1").await;
        assert_eq!(was, json!(true), "{codec:?}");
        let _carol = device(server.addr(), other, "carol").await;
        watcher.expect_silence(QUIET).await;
        let again = watcher.ok("presence.unsubscribe", json!({}), "u2").await;
        assert_eq!(again, json!(false), "{codec:?}");
    }
}

const USERS: usize = 5;
const DEVICES_PER_USER: usize = 10;

/// Connects `DEVICES_PER_USER` devices of `user` one after the other, each closing the one
/// before it once it is listed; users of even `index` then close their last device too.
/// Returns the devices left open.
async fn come_and_go(server: Server, addr: SocketAddr, user: String, index: usize) -> Vec<Raw> {
    let mut events = server.events();
    let mut open = VecDeque::new();
    for k in 0..DEVICES_PER_USER {
        open.push_back(device(addr, Codec::BOTH[(index + k) % 2], &user).await);
        if open.len() == 2 {
            let mut oldest = open.pop_front().unwrap();
            close_and_wait(&mut oldest).await;
            disconnected(&mut events, &user).await;
        }
    }
    if index % 2 == 0 {
        let mut last = open.pop_front().unwrap();
        close_and_wait(&mut last).await;
        disconnected(&mut events, &user).await;
    }
    open.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_versions_grow_for_each_user_while_devices_of_several_users_come_and_go() {
    let server = start_demo(Auth::Plain).await;
    let mut watcher = device(server.addr(), Codec::MsgPack, "watcher").await;
    let snapshot = watcher.ok("presence.subscribe", json!({}), "s").await;
    let start_version = listed(&snapshot, &[("watcher", 1, "watcher")])[0];

    let users: Vec<String> = (0..USERS).map(|i| format!("u{i}")).collect();
    let tasks: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(index, user)| {
            tokio::spawn(come_and_go(
                server.server.clone(),
                server.addr(),
                user.clone(),
                index,
            ))
        })
        .collect();
    let mut still_open = Vec::new();
    for task in tasks {
        still_open.extend(within("devices coming and going", task).await.unwrap());
    }
    assert_eq!(still_open.len(), USERS / 2);

    // Every change was made before this call: each is queued ahead of its answer.
    watcher.send(&json!(["presence.online", {}, "final"])).await;
    let mut changes = Vec::new();
    let online = loop {
        let frame = watcher.frame().await;
        if frame[0] == "presence" {
            assert_eq!(frame.as_array().map(Vec::len), Some(3), "{frame}");
            assert_eq!(frame[2], Value::Null, "{frame}");
            changes.push(frame[1].clone());
            continue;
        }
        assert_eq!(frame[0], "~wse:response", "{frame}");
        assert_eq!(frame[2], "final", "{frame}");
        break frame[1].clone();
    };

    // In version order, every one newer than the snapshot.
    let mut last = start_version;
    for change in &changes {
        let version = change["version"].as_u64().expect("a numeric version");
        assert!(version > last, "version {version} after {last}: {change}");
        last = version;
    }

    // Each user's changes, one for each device coming and going, in the order they happened.
    for (index, user) in users.iter().enumerate() {
        let seen: Vec<(bool, u64)> = changes
            .iter()
            .filter(|change| change["user"] == user.as_str())
            .map(|change| {
                assert_eq!(change["alias"], user.as_str(), "{change}");
                (
                    change["online"].as_bool().unwrap(),
                    change["devices"].as_u64().unwrap(),
                )
            })
            .collect();
        let mut expected = vec![(true, 1)];
        for _ in 1..DEVICES_PER_USER {
            expected.extend([(true, 2), (true, 1)]);
        }
        if index % 2 == 0 {
            expected.push((false, 0));
        }
        assert_eq!(seen, expected, "changes of {user}");
    }
    assert!(
        changes
            .iter()
            .all(|change| users.iter().any(|user| change["user"] == user.as_str())),
        "a change of a user that did not change"
    );

    // The snapshot with every change applied by version is the online list.
    let mut state: BTreeMap<String, Value> = snapshot
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| (entry["user"].as_str().unwrap().to_owned(), entry.clone()))
        .collect();
    for change in &changes {
        let user = change["user"].as_str().unwrap().to_owned();
        let newer = state
            .get(&user)
            .is_none_or(|held| held["version"].as_u64() < change["version"].as_u64());
        if newer {
            state.insert(user, change.clone());
        }
    }
    let applied: Vec<Value> = state
        .into_values()
        .filter(|entry| entry["online"] == true)
        .collect();
    assert_eq!(Value::from(applied), online);
    listed(
        &online,
        &[("u1", 1, "u1"), ("u3", 1, "u3"), ("watcher", 1, "watcher")],
    );
    assert_eq!(
        serde_json::to_value(server.server.online().await.unwrap()).unwrap(),
        online
    );
}

/// Calls `presence.online` through the real client.
async fn online(client: &Client) -> Vec<Presence> {
    within(
        "presence.online",
        client.call("presence.online", &json!({})),
    )
    .await
    .unwrap()
}

/// What the online list shows of each user: (user, online, devices, alias).
fn shown(list: &[Presence]) -> Vec<(String, bool, usize, String)> {
    list.iter()
        .map(|p| (p.user.to_string(), p.online, p.devices, p.alias.clone()))
        .collect()
}

fn entry(user: &str, devices: usize, alias: &str) -> (String, bool, usize, String) {
    (user.to_owned(), true, devices, alias.to_owned())
}

#[tokio::test]
async fn online_lists_available_users_with_their_devices_and_aliases() {
    let server = start_demo(Auth::Plain).await;
    let phone = demo_client(&server, "ann").await;
    let laptop = demo_client(&server, "ann").await;
    let bob = demo_client(&server, "bob").await;

    // The alias defaults to the user id.
    let list = online(&bob).await;
    assert_eq!(
        shown(&list),
        vec![entry("ann", 2, "ann"), entry("bob", 1, "bob")]
    );
    assert_eq!(list, server.server.online().await.unwrap());
    assert_eq!(online(&phone).await, list);

    let set: bool = within(
        "set_profile",
        bob.call("set_profile", &json!({"alias": "Bobby"})),
    )
    .await
    .unwrap();
    assert!(set);
    let after = online(&laptop).await;
    assert_eq!(
        shown(&after),
        vec![entry("ann", 2, "ann"), entry("bob", 1, "Bobby")]
    );
    assert!(
        after[1].version > list[1].version,
        "the alias change takes a new version"
    );
    assert_eq!(after[0].version, list[0].version, "ann did not change");
    assert_eq!(
        server.server.presence("bob").await.unwrap().as_ref(),
        Some(&after[1])
    );
    let profile = server.server.profile("bob").await.unwrap().unwrap();
    assert_eq!(profile.alias(), Some("Bobby"));
    assert!(profile.is_available());
    assert_eq!(server.server.presence("nobody").await.unwrap(), None);

    // A device leaving lowers the count.
    let mut events = server.server.events();
    within("close", laptop.close("wse.by-client")).await;
    let (user, _, _) = next_event(&mut events, "disconnected", pick::disconnected).await;
    assert_eq!(user, "ann");
    let gone = online(&bob).await;
    assert_eq!(
        shown(&gone),
        vec![entry("ann", 1, "ann"), entry("bob", 1, "Bobby")]
    );
}

#[tokio::test]
async fn an_unavailable_user_is_invisible_and_unreachable_until_available_again() {
    let server = start_demo(Auth::Plain).await;
    let mut ann = device(server.addr(), Codec::Json, "ann").await;
    let mut bob = device(server.addr(), Codec::MsgPack, "bob").await;
    let mut watcher = device(server.addr(), Codec::MsgPack, "watcher").await;
    let snapshot = watcher.ok("presence.subscribe", json!({}), "s").await;
    let versions = listed(
        &snapshot,
        &[
            ("ann", 1, "ann"),
            ("bob", 1, "bob"),
            ("watcher", 1, "watcher"),
        ],
    );

    let set = ann
        .ok("set_profile", json!({"available": false}), "p1")
        .await;
    assert_eq!(set, json!(true));
    let hidden = change(&watcher.frame().await, "ann", false, 0, "ann", versions[2]);

    // Not listed, shown offline.
    let online = watcher.ok("presence.online", json!({}), "o1").await;
    listed(&online, &[("bob", 1, "bob"), ("watcher", 1, "watcher")]);
    let seen = server.server.presence("ann").await.unwrap().unwrap();
    assert!(!seen.online);
    assert_eq!(seen.devices, 0);
    assert!(
        !server
            .server
            .profile("ann")
            .await
            .unwrap()
            .unwrap()
            .is_available()
    );

    // Unreachable both ways.
    assert!(!dm(&mut bob, "ann", json!("hello?"), "d1").await);
    assert!(!dm(&mut ann, "bob", json!("psst"), "d2").await);
    ann.expect_silence(QUIET).await;
    bob.expect_silence(QUIET).await;

    // Its devices coming and going stay out of sight.
    let mut tablet = device(server.addr(), Codec::MsgPack, "ann").await;
    watcher.expect_silence(QUIET).await;
    let seen = server.server.presence("ann").await.unwrap().unwrap();
    assert!(!seen.online);
    assert_eq!(seen.devices, 0);

    // Available again: seen with every device, and reachable.
    let set = tablet
        .ok("set_profile", json!({"available": true}), "p2")
        .await;
    assert_eq!(set, json!(true));
    change(&watcher.frame().await, "ann", true, 2, "ann", hidden);
    let online = watcher.ok("presence.online", json!({}), "o2").await;
    listed(
        &online,
        &[
            ("ann", 2, "ann"),
            ("bob", 1, "bob"),
            ("watcher", 1, "watcher"),
        ],
    );
    assert!(dm(&mut bob, "ann", json!("hello!"), "d3").await);
    let hello = delivered("bob", &json!("hello!"));
    assert_eq!(ann.frame().await, hello);
    assert_eq!(tablet.frame().await, hello);
    assert!(dm(&mut ann, "bob", json!("hi"), "d4").await);
    assert_eq!(bob.frame().await, delivered("ann", &json!("hi")));
    for raw in [&mut ann, &mut tablet, &mut bob, &mut watcher] {
        raw.expect_silence(QUIET).await;
    }
}

#[tokio::test]
async fn a_profile_lasts_while_its_user_is_online() {
    let server = start_demo(Auth::Plain).await;
    let mut events = server.server.events();
    let mut watcher = device(server.addr(), Codec::Json, "watcher").await;
    let snapshot = watcher.ok("presence.subscribe", json!({}), "s").await;
    let start_version = listed(&snapshot, &[("watcher", 1, "watcher")])[0];

    let mut ann = device(server.addr(), Codec::MsgPack, "ann").await;
    let last = change(&watcher.frame().await, "ann", true, 1, "ann", start_version);
    let set = ann
        .ok(
            "set_profile",
            json!({"alias": "Ann", "available": false}),
            "p",
        )
        .await;
    assert_eq!(set, json!(true));
    let last = change(&watcher.frame().await, "ann", false, 0, "Ann", last);

    // Leaving while unavailable: nothing to see, and the profile is gone with the user.
    close_and_wait(&mut ann).await;
    disconnected(&mut events, "ann").await;
    watcher.expect_silence(QUIET).await;
    assert_eq!(server.server.profile("ann").await.unwrap(), None);
    assert_eq!(server.server.presence("ann").await.unwrap(), None);

    // Back online with the profile identify gives: the user id as alias, available.
    let _ann = device(server.addr(), Codec::Json, "ann").await;
    change(&watcher.frame().await, "ann", true, 1, "ann", last);
    let profile = server.server.profile("ann").await.unwrap().unwrap();
    assert_eq!(profile.alias(), None);
    assert!(profile.is_available());
}

// ---------------------------------------------------------------- private messages

#[tokio::test]
async fn a_private_message_reaches_each_device_of_the_receiver_once_and_not_the_sender() {
    let server = start_demo(Auth::Plain).await;
    let mut ann = [
        device(server.addr(), Codec::Json, "ann").await,
        device(server.addr(), Codec::MsgPack, "ann").await,
    ];
    let mut bob = [
        device(server.addr(), Codec::MsgPack, "bob").await,
        device(server.addr(), Codec::Json, "bob").await,
    ];
    let mut carol = device(server.addr(), Codec::Json, "carol").await;

    let payload = json!({"text": "héllo", "n": [1, 2]});
    assert!(dm(&mut bob[0], "ann", payload.clone(), "d1").await);
    for (i, raw) in ann.iter_mut().enumerate() {
        assert_eq!(raw.frame().await, delivered("bob", &payload), "ann {i}");
    }
    // The other way, from the MessagePack device.
    assert!(dm(&mut ann[1], "bob", json!(7), "d2").await);
    for (i, raw) in bob.iter_mut().enumerate() {
        assert_eq!(raw.frame().await, delivered("ann", &json!(7)), "bob {i}");
    }
    for raw in ann.iter_mut().chain(bob.iter_mut()) {
        raw.expect_silence(QUIET).await;
    }
    carol.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_private_message_to_an_offline_user_is_not_delivered() {
    let server = start_demo(Auth::Plain).await;
    let mut events = server.server.events();
    let mut ann = device(server.addr(), Codec::Json, "ann").await;
    assert!(!dm(&mut ann, "nobody", json!("hi"), "d1").await);

    // A user that was online and left.
    let mut bob = device(server.addr(), Codec::MsgPack, "bob").await;
    assert!(dm(&mut ann, "bob", json!("hi"), "d2").await);
    assert_eq!(bob.frame().await, delivered("ann", &json!("hi")));
    close_and_wait(&mut bob).await;
    disconnected(&mut events, "bob").await;
    assert!(!dm(&mut ann, "bob", json!("still there?"), "d3").await);
    ann.expect_silence(QUIET).await;
}

#[tokio::test]
async fn spam_is_refused_with_the_filters_error() {
    let server = start_demo(Auth::Plain).await;
    for codec in Codec::BOTH {
        let mut ann = device(server.addr(), codec, "ann").await;
        let mut bob = device(server.addr(), Codec::Json, "bob").await;
        for (stamp, to) in [("x1", "bob"), ("x2", "nobody")] {
            ann.expect_reply(
                &json!(["dm.send", {"to": to, "payload": "spam"}, stamp]),
                &json!(["~wse:response-err", {"code": "app.dm-refused"}, stamp]),
            )
            .await;
        }
        bob.expect_silence(QUIET).await;
        // Only that payload: the same word inside another is delivered.
        assert!(dm(&mut ann, "bob", json!({"text": "spam"}), "ok").await);
        assert_eq!(
            bob.frame().await,
            delivered("ann", &json!({"text": "spam"}))
        );
        close_and_wait(&mut ann).await;
        close_and_wait(&mut bob).await;
    }
}

/// Forwards every `dm` message a client gets to a channel.
fn inbox(client: &Client) -> mpsc::UnboundedReceiver<Value> {
    let (tx, rx) = mpsc::unbounded_channel();
    client
        .on("dm", move |_, payload: Value| {
            let _ = tx.send(payload);
        })
        .unwrap();
    rx
}

async fn expect_dm(inbox: &mut mpsc::UnboundedReceiver<Value>, expected: &Value, what: &str) {
    let got = within(what, inbox.recv()).await.expect("handler alive");
    assert_eq!(&got, expected, "{what}");
}

async fn expect_no_dm(inbox: &mut mpsc::UnboundedReceiver<Value>, what: &str) {
    let more = tokio::time::timeout(QUIET, inbox.recv()).await;
    assert!(more.is_err(), "{what} got {more:?}");
}

/// A client of `server` connected as `user` (identity = user id), its `dm` inbox.
async fn person(server: &TestServer, user: &str) -> (Client, mpsc::UnboundedReceiver<Value>) {
    let client = client(server).build();
    let rx = inbox(&client);
    within("connect", client.connect(json!(user), json!({})))
        .await
        .unwrap();
    (client, rx)
}

#[tokio::test]
async fn copy_to_sender_copies_to_the_senders_other_devices_but_not_the_sending_one() {
    let server = Server::builder(|handshake| async move {
        match handshake.identity.as_str() {
            Some(user) if !user.is_empty() => Decision::accept(user, json!(null)),
            _ => Decision::refuse(),
        }
    })
    .conn_per_user(3)
    .direct_messages(DirectMessages::new().copy_to_sender(true))
    .build();
    let server = start(server).await;
    let (phone, mut phone_inbox) = person(&server, "ann").await;
    let (_laptop, mut laptop_inbox) = person(&server, "ann").await;
    let (_tablet, mut tablet_inbox) = person(&server, "ann").await;
    let (bob, mut bob_inbox) = person(&server, "bob").await;

    let sent: bool = within(
        "dm.send",
        phone.call("dm.send", &json!({"to": "bob", "payload": {"text": "hi"}})),
    )
    .await
    .unwrap();
    assert!(sent);
    let message = json!({"from": "ann", "payload": {"text": "hi"}});
    expect_dm(&mut bob_inbox, &message, "bob").await;
    expect_dm(&mut laptop_inbox, &message, "ann's laptop").await;
    expect_dm(&mut tablet_inbox, &message, "ann's tablet").await;
    expect_no_dm(&mut phone_inbox, "the sending device").await;
    expect_no_dm(&mut bob_inbox, "bob, a second time").await;
    expect_no_dm(&mut laptop_inbox, "ann's laptop, a second time").await;

    // A reply from a user with one device: no device of the sender to copy to.
    let sent: bool = within(
        "reply",
        bob.call("dm.send", &json!({"to": "ann", "payload": "hello"})),
    )
    .await
    .unwrap();
    assert!(sent);
    let reply = json!({"from": "bob", "payload": "hello"});
    expect_dm(&mut phone_inbox, &reply, "ann's phone").await;
    expect_dm(&mut laptop_inbox, &reply, "ann's laptop").await;
    expect_dm(&mut tablet_inbox, &reply, "ann's tablet").await;
    expect_no_dm(&mut bob_inbox, "the sender").await;

    // Not delivered: no copy either.
    let sent: Result<bool, CallError> = within(
        "to nobody",
        phone.call("dm.send", &json!({"to": "nobody", "payload": 1})),
    )
    .await;
    assert_eq!(sent, Ok(false));
    expect_no_dm(&mut laptop_inbox, "a copy of an undelivered message").await;
    expect_no_dm(&mut tablet_inbox, "a copy of an undelivered message").await;
}
