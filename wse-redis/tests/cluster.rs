//! Three nodes joined over a Redis of the test's own: sends reach every device once wherever
//! it is, the user limit holds for the cluster (also when two nodes race), a node that dies
//! is taken out, and a Redis that restarts empty gets every node's connections back.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use wse_client::{ClientEvent, Status};
use wse_redis::ClusterEvent;
use wse_server::{Except, Target};

use support::{Device, NODE_TIMEOUT, Node, RedisProcess, eventually, unique_prefix, within};

/// A short wait for "nothing more arrives".
const QUIET: Duration = Duration::from_millis(300);

async fn three_nodes(redis: &RedisProcess, test: &str, conn_per_user: usize) -> [Node; 3] {
    let prefix = unique_prefix(test);
    [
        Node::start(redis, &prefix, conn_per_user).await,
        Node::start(redis, &prefix, conn_per_user).await,
        Node::start(redis, &prefix, conn_per_user).await,
    ]
}

fn users(names: &[&str]) -> Vec<Arc<str>> {
    names.iter().map(|name| Arc::from(*name)).collect()
}

/// Waits until each device got `expected` (in any order), then a moment more, and checks
/// that nothing came twice.
async fn expect_each(devices: &[&Device], expected: &[Value]) {
    for device in devices {
        eventually("every message", async || {
            device.received().len() >= expected.len()
        })
        .await;
    }
    tokio::time::sleep(QUIET).await;
    for device in devices {
        let mut got = device.received();
        got.sort_by_key(Value::to_string);
        let mut want = expected.to_vec();
        want.sort_by_key(Value::to_string);
        assert_eq!(got, want);
        device.inbox.lock().unwrap().clear();
    }
}

#[tokio::test]
async fn sends_reach_every_device_on_every_node_once() {
    let redis = RedisProcess::start();
    let [a, b, c] = three_nodes(&redis, "sends", 3).await;
    let ann_a = Device::connect(&a.url(), "ann").await;
    let ann_b = Device::connect(&b.url(), "ann").await;
    let bob_c = Device::connect(&c.url(), "bob").await;

    // To a user, from a node that holds none of its devices.
    c.server.send_to_user("ann", "news", &"for ann").unwrap();
    expect_each(&[&ann_a, &ann_b], &[json!("for ann")]).await;
    assert!(bob_c.received().is_empty());

    // To everyone, from each node; and to everyone but a user, and but one device.
    a.server.broadcast("news", &"from a").unwrap();
    b.server.broadcast("news", &"from b").unwrap();
    expect_each(
        &[&ann_a, &ann_b, &bob_c],
        &[json!("from a"), json!("from b")],
    )
    .await;
    let ann_b_id = b.server.devices("ann").await.unwrap()[1];
    c.server
        .to(Target::All)
        .except(Except::User("bob".into()))
        .send("news", &"not bob")
        .unwrap();
    c.server
        .to_user("ann")
        .except_connection(ann_b_id)
        .send("news", &"not ann's b")
        .unwrap();
    expect_each(&[&ann_a], &[json!("not bob"), json!("not ann's b")]).await;
    expect_each(&[&ann_b], &[json!("not bob")]).await;
    expect_each(&[&bob_c], &[]).await;

    // To one device, by id, from another node.
    c.server.send_to(ann_b_id, "news", &"just b").unwrap();
    expect_each(&[&ann_b], &[json!("just b")]).await;
    expect_each(&[&ann_a], &[]).await;

    // To a room whose members are on two nodes, each node knowing its own.
    let ann_a_id = a.server.devices("ann").await.unwrap()[0];
    let bob_id = c.server.devices("bob").await.unwrap()[0];
    a.server.join(ann_a_id, "lobby").await.unwrap();
    c.server.join(bob_id, "lobby").await.unwrap();
    b.server.send_to_room("lobby", "news", &"lobby").unwrap();
    expect_each(&[&ann_a, &bob_c], &[json!("lobby")]).await;
    expect_each(&[&ann_b], &[]).await;

    // Who is online, from any node.
    for node in [&a, &b, &c] {
        assert_eq!(node.server.users().await.unwrap(), users(&["ann", "bob"]));
        assert_eq!(node.server.counts().await.unwrap(), (2, 3));
        let devices = node.server.devices("ann").await.unwrap();
        assert_eq!(devices, [ann_a_id, ann_b_id]);
    }
}

#[tokio::test]
async fn the_user_limit_holds_for_the_whole_cluster() {
    let redis = RedisProcess::start();
    let [a, b, c] = three_nodes(&redis, "limit", 2).await;
    let first = Device::connect(&a.url(), "ann").await;
    let mut first_events = first.client.events();
    let second = Device::connect(&b.url(), "ann").await;
    let third = Device::connect(&c.url(), "ann").await;

    // The oldest device, on another node, is closed to make room.
    let closed = within("the oldest is closed", async {
        loop {
            if let Ok(ClientEvent::Closed { code, reason }) = first_events.recv().await {
                return (code, reason);
            }
        }
    })
    .await;
    assert_eq!(closed, (1000, "wse.clients-concurrency".to_owned()));
    let devices = a.server.devices("ann").await.unwrap();
    assert_eq!(devices.len(), 2);
    assert_eq!(devices[0].node(), b.server.node_id());
    assert_eq!(devices[1].node(), c.server.node_id());
    eventually("node a lets go of it", async || {
        a.server.connections_of("ann").await.unwrap().is_empty()
    })
    .await;

    // The two that stay hear sends to their user; the evicted one does not.
    a.server.send_to_user("ann", "news", &"still here").unwrap();
    expect_each(&[&second, &third], &[json!("still here")]).await;
    assert!(first.received().is_empty());
}

#[tokio::test]
async fn two_devices_racing_on_two_nodes_never_both_stay() {
    let redis = RedisProcess::start();
    let [a, b, _c] = three_nodes(&redis, "race", 1).await;
    for round in 0..15 {
        let user = format!("racer-{round}");
        let (url_a, url_b) = (a.url(), b.url());
        let (on_a, on_b) = tokio::join!(
            Device::connect(&url_a, &user),
            Device::connect(&url_b, &user)
        );
        // Both were welcomed; the cluster keeps exactly one of them.
        eventually("one of them is closed", async || {
            [&on_a, &on_b]
                .iter()
                .filter(|device| device.client.status() == Status::Ready)
                .count()
                == 1
        })
        .await;
        let devices = a.server.devices(&user).await.unwrap();
        assert_eq!(devices.len(), 1, "round {round}: {devices:?}");
        let survivor = if on_a.client.status() == Status::Ready {
            a.server.node_id()
        } else {
            b.server.node_id()
        };
        assert_eq!(devices[0].node(), survivor, "round {round}");
    }
}

#[tokio::test]
async fn a_node_that_dies_is_taken_out_with_its_devices() {
    let redis = RedisProcess::start();
    let prefix = unique_prefix("dies");
    let mut a = Node::start(&redis, &prefix, 3).await;
    let mut b = Node::start(&redis, &prefix, 3).await;
    // The node that dies runs on a runtime of its own, which the test drops: its tasks end
    // with no goodbye to Redis, as when a process is killed.
    let (addr, kill) = support::doomed_node(redis.url(), prefix.clone());
    let url = format!("ws://{addr}");
    let ann_a = Device::connect(&a.url(), "ann").await;
    let _ann_doomed = Device::connect(&url, "ann").await;
    let _cat_doomed = Device::connect(&url, "cat").await;
    assert_eq!(b.server.counts().await.unwrap(), (2, 3));
    let watcher = Device::connect(&b.url(), "watcher").await;
    let _: Value = within(
        "subscribe",
        watcher.client.call("presence.subscribe", &json!({})),
    )
    .await
    .unwrap();
    // Its devices are in rooms, by their own join and as a whole user.
    let doomed_ids: Vec<_> = b.server.devices("cat").await.unwrap();
    let ann_ids = b.server.devices("ann").await.unwrap();
    assert!(b.server.join(doomed_ids[0], "lobby").await.unwrap());
    assert!(b.server.join(ann_ids[1], "lobby").await.unwrap());
    assert!(b.server.join(ann_ids[0], "lobby").await.unwrap());
    assert!(b.server.join_user("cat", "cats").await.unwrap());
    assert_eq!(b.server.room_members("lobby").await.unwrap().len(), 3);

    kill();
    // Whichever node renews first after the timeout takes it out, once.
    let gone = within("the dead node is reported", async {
        loop {
            let event = tokio::select! {
                event = a.events.recv() => event,
                event = b.events.recv() => event,
            };
            if let Ok(ClusterEvent::NodeGone { offline, .. }) = event {
                return offline;
            }
        }
    })
    .await;
    // cat had no other device: offline with it; ann still has one on a.
    assert_eq!(gone, users(&["cat"]));
    eventually("its devices are out", async || {
        b.server.counts().await.unwrap() == (2, 2)
    })
    .await;
    assert_eq!(b.server.users().await.unwrap(), users(&["ann", "watcher"]));
    // Presence subscribers hear it: cat offline, ann down to one device.
    eventually("presence follows", async || {
        latest(&watcher, "cat").is_some_and(|seen| seen["online"] == false)
            && latest(&watcher, "ann").is_some_and(|seen| seen["devices"] == 1)
    })
    .await;
    b.server.send_to_user("ann", "news", &"still one").unwrap();
    expect_each(&[&ann_a], &[json!("still one")]).await;
    // Its devices left their rooms, and its offline users the rooms they joined as a whole.
    assert_eq!(b.server.room_members("lobby").await.unwrap(), [ann_ids[0]]);
    assert_eq!(b.server.room_users("lobby").await.unwrap(), users(&["ann"]));
    assert!(b.server.room_members("cats").await.unwrap().is_empty());
    assert!(b.server.user_rooms("cat").await.unwrap().is_empty());
}

#[tokio::test]
async fn redis_restarted_empty_gets_every_nodes_connections_back() {
    let mut redis = RedisProcess::start();
    let [mut a, b, _c] = three_nodes(&redis, "restart", 3).await;
    let ann_a = Device::connect(&a.url(), "ann").await;
    let ann_b = Device::connect(&b.url(), "ann").await;

    redis.kill();
    // Local delivery goes on; the other node's device misses it, and the node reports the
    // loss.
    a.server.send_to_user("ann", "news", &"while down").unwrap();
    expect_each(&[&ann_a], &[json!("while down")]).await;
    assert!(ann_b.received().is_empty());
    within("the loss is reported", async {
        loop {
            if let Ok(ClusterEvent::Lost { messages, .. }) = a.events.recv().await {
                assert!(messages >= 1);
                return;
            }
        }
    })
    .await;
    // A new device cannot be admitted under a limit nobody can check: refused, not listed.
    let client = wse_client::Client::builder(a.url()).build();
    let refused = within("refused", client.connect(json!("zed"), json!({}))).await;
    assert!(refused.is_err(), "{refused:?}");
    client.close("wse.by-client").await;

    redis.restart();
    let mut saw = Vec::new();
    within("reconnected and relisted", async {
        while !(saw.contains(&"reconnected") && saw.contains(&"relisted")) {
            match a.events.recv().await {
                Ok(ClusterEvent::Reconnected) => saw.push("reconnected"),
                Ok(ClusterEvent::Relisted { connections }) => {
                    assert_eq!(connections, 1);
                    saw.push("relisted");
                }
                _ => {}
            }
        }
    })
    .await;
    eventually("both nodes listed their devices again", async || {
        b.server.counts().await.is_ok_and(|counts| counts == (1, 2))
    })
    .await;
    eventually("sends cross again", async || {
        b.server.send_to_user("ann", "news", &"after").is_ok() && !ann_a.received().is_empty()
    })
    .await;
    assert!(ann_a.received().iter().all(|news| news == "after"));
}

#[derive(serde::Deserialize)]
struct Sum {
    a: i64,
    b: i64,
}

/// A device whose `client_sum {a, b}` answers `a + b`, and refuses negative numbers with
/// `app.negative` and details.
async fn summing_device(url: &str, user: &str) -> Device {
    let device = Device::connect(url, user).await;
    device
        .client
        .register("client_sum", |_, sum: Sum| async move {
            if sum.a < 0 || sum.b < 0 {
                return Err(wse_client::RpcError::new("app.negative")
                    .with_details(json!({"a": sum.a, "b": sum.b})));
            }
            Ok(sum.a + sum.b)
        })
        .unwrap();
    device
}

#[tokio::test]
async fn a_call_reaches_a_device_on_another_node_and_its_answer_comes_back() {
    let redis = RedisProcess::start();
    let [a, _b, c] = three_nodes(&redis, "calls", 3).await;
    let _ann = summing_device(&a.url(), "ann").await;
    let ann_id = c.server.devices("ann").await.unwrap()[0];
    assert_eq!(ann_id.node(), a.server.node_id());

    let sum: i64 = within(
        "the answer",
        c.server
            .call(ann_id, "client_sum", &json!({"a": 20, "b": 22})),
    )
    .await
    .unwrap();
    assert_eq!(sum, 42);
    // The device's own error, code and details as it sent them.
    let refused = within(
        "the refusal",
        c.server
            .call::<i64, _>(ann_id, "client_sum", &json!({"a": -1, "b": 2})),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), "app.negative");
    let wse_server::CallError::Remote(object) = refused else {
        panic!("not the device's error: {refused:?}");
    };
    assert_eq!(object.details.unwrap()["a"], -1);
    // A procedure it never registered, and an id no node holds.
    let missing = within(
        "not registered",
        c.server.call::<i64, _>(ann_id, "nope", &json!({})),
    )
    .await
    .unwrap_err();
    assert_eq!(missing.code(), "wse.server.rp.not-registered");
    let nobody = wse_server::ConnectionId::new(a.server.node_id(), 999_999);
    let missing = within(
        "no such device",
        c.server.call::<i64, _>(nobody, "client_sum", &json!({})),
    )
    .await
    .unwrap_err();
    assert_eq!(missing.code(), "wse.server.client.connection-missing");
}

#[tokio::test]
async fn a_call_to_a_device_whose_node_dies_fails_at_once() {
    let redis = RedisProcess::start();
    let prefix = unique_prefix("call-dies");
    let a = Node::start(&redis, &prefix, 3).await;
    let (addr, kill) = support::doomed_node(redis.url(), prefix.clone());
    // A device that never answers.
    let slow = Device::connect(&format!("ws://{addr}"), "ann").await;
    slow.client
        .register("client_sum", |_, _: Value| async move {
            std::future::pending::<()>().await;
            Ok(0)
        })
        .unwrap();
    let ann_id = a.server.devices("ann").await.unwrap()[0];
    let server = a.server.clone();
    let asking = tokio::spawn(async move {
        server
            .call_with_timeout::<i64, _>(ann_id, "client_sum", &json!({}), Duration::from_secs(60))
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    kill();
    // Once the node is taken out (a node timeout or two), not after the call's minute:
    // `within` gives up long before that.
    let outcome = within("the call fails", asking).await.unwrap();
    assert_eq!(outcome, Err(wse_server::CallError::Disconnected));
    // A later call to that node fails at once too.
    let again = a
        .server
        .call::<i64, _>(ann_id, "client_sum", &json!({}))
        .await;
    assert_eq!(again, Err(wse_server::CallError::Disconnected));
}

#[tokio::test]
async fn rooms_are_one_for_the_cluster() {
    let redis = RedisProcess::start();
    let [a, b, c] = three_nodes(&redis, "rooms", 3).await;
    let ann_a = Device::connect(&a.url(), "ann").await;
    let ann_b = Device::connect(&b.url(), "ann").await;
    let bob_c = Device::connect(&c.url(), "bob").await;
    let ann_a_id = a.server.devices("ann").await.unwrap()[0];
    let ann_b_id = a.server.devices("ann").await.unwrap()[1];
    let bob_id = a.server.devices("bob").await.unwrap()[0];

    // Membership changes reach the other nodes' delivery in the order their node published
    // them, like its sends: each phase below changes and sends from one node.

    // A device joins a room from a node that does not hold it.
    assert!(c.server.join(ann_a_id, "r1").await.unwrap());
    assert!(!b.server.join(ann_a_id, "r1").await.unwrap(), "already in");
    assert!(c.server.join(bob_id, "r1").await.unwrap());
    for node in [&a, &b, &c] {
        let mut members = node.server.room_members("r1").await.unwrap();
        members.sort();
        let mut expected = vec![ann_a_id, bob_id];
        expected.sort();
        assert_eq!(members, expected);
        assert_eq!(
            node.server.room_users("r1").await.unwrap(),
            users(&["ann", "bob"])
        );
    }
    c.server.send_to_room("r1", "news", &"r1").unwrap();
    expect_each(&[&ann_a, &bob_c], &[json!("r1")]).await;
    expect_each(&[&ann_b], &[]).await;

    // A whole user joins: every device it has, on every node, and the ones it connects later.
    assert!(c.server.join_user("ann", "team").await.unwrap());
    let ann_c = Device::connect(&c.url(), "ann").await;
    let ann_c_id = c.server.devices("ann").await.unwrap()[2];
    c.server.send_to_room("team", "news", &"team").unwrap();
    expect_each(&[&ann_a, &ann_b, &ann_c], &[json!("team")]).await;
    expect_each(&[&bob_c], &[]).await;
    assert_eq!(b.server.user_rooms("ann").await.unwrap(), users(&["team"]));
    assert_eq!(
        b.server.rooms_of(ann_a_id).await.unwrap(),
        users(&["r1", "team"])
    );
    assert_eq!(b.server.rooms_of(ann_c_id).await.unwrap(), users(&["team"]));
    assert_eq!(b.server.room_members("team").await.unwrap().len(), 3);

    // Leaving, from another node.
    assert!(b.server.leave(ann_a_id, "r1").await.unwrap());
    assert!(b.server.leave_user("ann", "team").await.unwrap());
    b.server.send_to_room("r1", "news", &"r1 again").unwrap();
    b.server
        .send_to_room("team", "news", &"team again")
        .unwrap();
    expect_each(&[&bob_c], &[json!("r1 again")]).await;
    expect_each(&[&ann_a, &ann_b, &ann_c], &[]).await;
    assert_eq!(a.server.room_members("r1").await.unwrap(), [bob_id]);

    // A user who goes offline leaves the rooms it joined as a whole, and its devices theirs.
    assert!(c.server.join_user("ann", "team").await.unwrap());
    assert!(c.server.join(ann_b_id, "r2").await.unwrap());
    for device in [ann_a, ann_b, ann_c] {
        device.client.close("wse.by-client").await;
    }
    eventually("ann is offline", async || {
        a.server.users().await.unwrap() == users(&["bob"])
    })
    .await;
    assert!(b.server.user_rooms("ann").await.unwrap().is_empty());
    assert!(b.server.room_members("team").await.unwrap().is_empty());
    assert!(b.server.room_members("r2").await.unwrap().is_empty());
}

/// The latest presence of `user` that `device` was told, by version.
fn latest(device: &Device, user: &str) -> Option<Value> {
    device
        .presence
        .lock()
        .unwrap()
        .iter()
        .filter(|change| change["user"] == user)
        .max_by_key(|change| change["version"].as_u64())
        .cloned()
}

#[tokio::test]
async fn presence_is_one_for_the_cluster() {
    let redis = RedisProcess::start();
    let [a, b, c] = three_nodes(&redis, "presence", 3).await;
    let bob = Device::connect(&c.url(), "bob").await;
    let list: Vec<wse_server::Presence> = within(
        "subscribe",
        bob.client.call("presence.subscribe", &json!({})),
    )
    .await
    .unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(&*list[0].user, "bob");

    // Devices on two other nodes: bob hears each change, with growing versions.
    let ann_a = Device::connect(&a.url(), "ann").await;
    eventually("ann online", async || {
        latest(&bob, "ann").is_some_and(|seen| seen["online"] == true && seen["devices"] == 1)
    })
    .await;
    let first = latest(&bob, "ann").unwrap()["version"].as_u64().unwrap();
    let ann_b = Device::connect(&b.url(), "ann").await;
    eventually("ann on two devices", async || {
        latest(&bob, "ann").is_some_and(|seen| seen["devices"] == 2)
    })
    .await;
    assert!(latest(&bob, "ann").unwrap()["version"].as_u64().unwrap() > first);

    // A profile change on one node is seen from every node.
    let update = wse_server::ProfileUpdate {
        alias: Some("Ann".into()),
        available: None,
    };
    let seen = a
        .server
        .update_profile("ann", &update)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((seen.alias.as_str(), seen.devices), ("Ann", 2));
    eventually("the alias", async || {
        latest(&bob, "ann").is_some_and(|seen| seen["alias"] == "Ann")
    })
    .await;
    for node in [&a, &b, &c] {
        let online = node.server.online().await.unwrap();
        let users: Vec<&str> = online.iter().map(|seen| &*seen.user).collect();
        assert_eq!(users, ["ann", "bob"]);
        assert_eq!(online[0].devices, 2);
        assert_eq!(
            node.server.presence("ann").await.unwrap().unwrap().alias,
            "Ann"
        );
        let profile = node.server.profile("ann").await.unwrap().unwrap();
        assert_eq!(profile.alias(), Some("Ann"));
    }

    // Unavailable looks offline to everyone.
    let away = wse_server::ProfileUpdate {
        alias: None,
        available: Some(false),
    };
    c.server.update_profile("ann", &away).await.unwrap();
    eventually("ann looks offline", async || {
        latest(&bob, "ann").is_some_and(|seen| seen["online"] == false && seen["devices"] == 0)
    })
    .await;
    let back = wse_server::ProfileUpdate {
        alias: None,
        available: Some(true),
    };
    c.server.update_profile("ann", &back).await.unwrap();

    // Her last device leaving, on whichever node, takes her offline once for the cluster.
    ann_a.client.close("wse.by-client").await;
    ann_b.client.close("wse.by-client").await;
    eventually("ann offline", async || {
        latest(&bob, "ann").is_some_and(|seen| seen["online"] == false)
            && b.server.presence("ann").await.unwrap().is_none()
    })
    .await;
    let users: Vec<Arc<str>> = a
        .server
        .online()
        .await
        .unwrap()
        .into_iter()
        .map(|seen| seen.user)
        .collect();
    assert_eq!(users, self::users(&["bob"]));
    // Each version bob was told is new: no change came twice, none went back.
    let versions: Vec<u64> = bob
        .presence
        .lock()
        .unwrap()
        .iter()
        .filter(|change| change["user"] == "ann")
        .filter_map(|change| change["version"].as_u64())
        .collect();
    let mut sorted = versions.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), versions.len(), "{versions:?}");
}

/// Who went offline, as every node's offline hook saw it.
#[derive(Clone, Default)]
struct Offline(Arc<std::sync::Mutex<Vec<String>>>);

impl Offline {
    fn hook(&self) -> impl Fn(wse_redis::RedisConfig) -> wse_redis::RedisConfig + use<> {
        let seen = self.clone();
        move |cluster| {
            let seen = seen.clone();
            cluster.on_offline(move |user| {
                let seen = seen.clone();
                async move { seen.0.lock().unwrap().push(user.to_string()) }
            })
        }
    }

    fn users(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn the_offline_hook_runs_once_for_the_cluster_even_when_the_node_dies() {
    let redis = RedisProcess::start();
    let prefix = unique_prefix("offline");
    let offline = Offline::default();
    let a = Node::start_with(&redis, &prefix, 3, offline.hook()).await;
    let b = Node::start_with(&redis, &prefix, 3, offline.hook()).await;
    let (doomed, kill) = support::doomed_node(redis.url(), prefix.clone());

    // The last device leaving on one node, while another device of the user left elsewhere.
    let cat_a = Device::connect(&a.url(), "cat").await;
    let cat_b = Device::connect(&b.url(), "cat").await;
    cat_a.client.close("wse.by-client").await;
    cat_b.client.close("wse.by-client").await;
    eventually("cat's hook", async || offline.users() == ["cat"]).await;

    // The node that held the last device dies: another node runs the hook.
    let _ann = Device::connect(&format!("ws://{doomed}"), "ann").await;
    kill();
    eventually("ann's hook", async || offline.users().len() == 2).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(offline.users(), ["cat", "ann"]);
    assert!(b.server.users().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_user_back_within_the_grace_period_never_went_offline() {
    let redis = RedisProcess::start();
    let prefix = unique_prefix("grace");
    let offline = Offline::default();
    let grace = Duration::from_millis(800);
    let with_grace =
        |cluster: wse_redis::RedisConfig| offline.hook()(cluster.presence_grace(grace));
    let a = Node::start_with(&redis, &prefix, 3, with_grace).await;
    let b = Node::start_with(&redis, &prefix, 3, with_grace).await;
    let bob = Device::connect(&b.url(), "bob").await;
    let _: Value = within(
        "subscribe",
        bob.client.call("presence.subscribe", &json!({})),
    )
    .await
    .unwrap();

    let ann = Device::connect(&a.url(), "ann").await;
    assert!(a.server.join_user("ann", "team").await.unwrap());
    ann.client.close("wse.by-client").await;
    // A reload: back on another node within the grace period.
    let ann = Device::connect(&b.url(), "ann").await;
    assert_eq!(a.server.users().await.unwrap(), users(&["ann", "bob"]));
    assert_eq!(a.server.user_rooms("ann").await.unwrap(), users(&["team"]));
    b.server.send_to_room("team", "news", &"still in").unwrap();
    expect_each(&[&ann], &[json!("still in")]).await;
    tokio::time::sleep(grace + NODE_TIMEOUT).await;
    assert!(offline.users().is_empty());
    assert!(
        bob.presence
            .lock()
            .unwrap()
            .iter()
            .all(|seen| seen["user"] != "ann" || seen["online"] == true),
        "ann never looked offline"
    );

    // Gone for longer than the grace period: offline once, by whichever node saw it first.
    ann.client.close("wse.by-client").await;
    eventually("ann goes offline", async || offline.users() == ["ann"]).await;
    eventually("bob sees it", async || {
        latest(&bob, "ann").is_some_and(|seen| seen["online"] == false)
    })
    .await;
    assert_eq!(a.server.users().await.unwrap(), users(&["bob"]));
    assert!(a.server.user_rooms("ann").await.unwrap().is_empty());
}

#[tokio::test]
async fn the_user_limit_can_refuse_the_newest_device_for_the_cluster() {
    let redis = RedisProcess::start();
    let prefix = unique_prefix("refuse");
    let refuse = |builder: wse_server::Builder| {
        builder.conn_per_user_overflow(wse_server::Overflow::RefuseNewest)
    };
    let a = Node::start_serving(&redis, &prefix, 1, |cluster| cluster, refuse).await;
    let b = Node::start_serving(&redis, &prefix, 1, |cluster| cluster, refuse).await;
    let first = Device::connect(&a.url(), "ann").await;
    let client = wse_client::Client::builder(b.url()).build();
    let refused = within("refused", client.connect(json!("ann"), json!({}))).await;
    assert!(
        matches!(&refused, Err(wse_client::ConnectError::Closed { reason, .. }) if reason == "wse.clients-concurrency"),
        "{refused:?}"
    );
    client.close("wse.by-client").await;
    assert_eq!(first.client.status(), Status::Ready);
    assert_eq!(b.server.devices("ann").await.unwrap().len(), 1);
}

#[tokio::test]
async fn private_messages_and_a_logout_of_every_device_cross_nodes() {
    let redis = RedisProcess::start();
    let prefix = unique_prefix("dm");
    let builtins = |builder: wse_server::Builder| {
        builder
            .direct_messages(wse_server::DirectMessages::new())
            .logout(wse_server::Logout::new())
    };
    let a = Node::start_serving(&redis, &prefix, 3, |cluster| cluster, builtins).await;
    let b = Node::start_serving(&redis, &prefix, 3, |cluster| cluster, builtins).await;
    let ann_a = Device::connect(&a.url(), "ann").await;
    let ann_b = Device::connect(&b.url(), "ann").await;
    let bob_b = Device::connect(&b.url(), "bob").await;
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = Arc::clone(&got);
    bob_b
        .client
        .on("dm", move |_, dm: Value| record.lock().unwrap().push(dm))
        .unwrap();

    // From node A to a user on node B, whom presence shows online cluster-wide.
    let delivered: bool = within(
        "dm",
        ann_a
            .client
            .call("dm.send", &json!({"to": "bob", "payload": "hi"})),
    )
    .await
    .unwrap();
    assert!(delivered);
    eventually("bob got it", async || got.lock().unwrap().len() == 1).await;
    assert_eq!(
        got.lock().unwrap()[0],
        json!({"from": "ann", "payload": "hi"})
    );

    // A logout of every device from node A closes ann's device on node B too.
    let mut events = ann_b.client.events();
    let _: bool = within("logout", ann_a.client.call("logout", &json!({"all": true})))
        .await
        .unwrap();
    let closed = within("ann's other device is closed", async {
        loop {
            if let Ok(ClientEvent::Closed { code, reason }) = events.recv().await {
                return (code, reason);
            }
        }
    })
    .await;
    assert_eq!(closed, (1000, "wse.logout".to_owned()));
    eventually("ann is offline", async || {
        a.server.users().await.unwrap() == users(&["bob"])
    })
    .await;
}

#[tokio::test]
async fn what_is_lost_while_redis_is_down_is_counted() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let mut redis = RedisProcess::start();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let cluster = wse_redis::RedisConfig::new(redis.url())
        .prefix(unique_prefix("lost"))
        .command_timeout(Duration::from_millis(300));
    let mut events = cluster.events();
    // The engine takes its metric handles when the server builds it: from this recorder.
    let server = metrics::with_local_recorder(&recorder, || {
        wse_server::Server::builder(|_| async { wse_server::Decision::refuse() })
            .delivery(move |local| cluster.delivery(local))
            .build()
    });
    let _serving = within("bind", server.bind("127.0.0.1:0")).await.unwrap();
    let counted = |name: &str, reason: Option<&str>| -> u64 {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(key, ..)| key.key().name() == name)
            .filter(|(key, ..)| {
                reason.is_none_or(|reason| key.key().labels().any(|label| label.value() == reason))
            })
            .map(|(.., value)| match value {
                DebugValue::Counter(count) => count,
                DebugValue::Gauge(gauge) => gauge.into_inner() as u64,
                DebugValue::Histogram(_) => 0,
            })
            .sum()
    };
    assert_eq!(counted("wse_redis_connected", None), 1);

    redis.kill();
    for round in 0..3 {
        server.broadcast("news", &round).unwrap();
    }
    within("the loss is reported", async {
        while !matches!(events.recv().await, Ok(ClusterEvent::Lost { .. })) {}
    })
    .await;
    eventually("all three are counted", async || {
        counted("wse_redis_lost_total", Some("publish_failed")) == 3
    })
    .await;
    assert_eq!(counted("wse_redis_connected", None), 0);
}

#[tokio::test]
async fn text_users_choose_is_never_taken_for_structure() {
    let redis = RedisProcess::start();
    let prefix = unique_prefix("text");
    let offline = Offline::default();
    let a = Node::start_with(&redis, &prefix, 1, offline.hook()).await;
    let (doomed, kill) = support::doomed_node(redis.url(), prefix.clone());
    let _bob = Device::connect(&a.url(), "bob").await;
    // A user whose alias and rooms are the text a script's reply could use as a separator.
    let _odd = Device::connect(&format!("ws://{doomed}"), "|").await;
    let odd_id = a.server.devices("|").await.unwrap()[0];
    let alias = wse_server::ProfileUpdate {
        alias: Some("|".into()),
        available: None,
    };
    a.server.update_profile("|", &alias).await.unwrap();
    assert!(a.server.join_user("|", "|").await.unwrap());
    assert!(a.server.join(odd_id, "2").await.unwrap());

    kill();
    eventually("the dead node's user goes offline", async || {
        !offline.users().is_empty()
    })
    .await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(offline.users(), ["|"]);
    assert_eq!(a.server.users().await.unwrap(), users(&["bob"]));
    assert!(a.server.room_members("2").await.unwrap().is_empty());
}

#[tokio::test]
async fn an_evicted_device_leaves_its_rooms_at_once() {
    let redis = RedisProcess::start();
    let [a, b, _c] = three_nodes(&redis, "evicted-rooms", 1).await;
    let _old = Device::connect(&a.url(), "ann").await;
    let old_id = b.server.devices("ann").await.unwrap()[0];
    assert!(b.server.join(old_id, "lobby").await.unwrap());
    let _new = Device::connect(&b.url(), "ann").await;
    let new_id = b.server.devices("ann").await.unwrap()[0];
    assert_ne!(new_id, old_id);
    // Out of the room with the admission that evicted it, whatever its node does next.
    assert!(b.server.room_members("lobby").await.unwrap().is_empty());
}
