//! The real Rust client against the demo server: connect, typed calls and their errors,
//! timeouts, disconnects, server → client calls, messages, devices of one user, HMAC,
//! MessagePack and status transitions.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use wse_client::{CallError, Client, ClientEvent, ConnectError, MsgPack, RpcError, Status};
use wse_examples::Auth;
use wse_server::Event;
use wse_tests::{
    FAST, TestServer, add, client, connect_as, demo_client, hmac_solution, next_event, pick,
    start_demo, try_connect_as, wait_status, within,
};

/// A connected client of the demo speaking MessagePack.
async fn msgpack_client(server: &TestServer, user: &str) -> Client {
    let client = client(server).protocol(MsgPack).build();
    connect_as(&client, user).await;
    client
}

/// Forwards every `kind` message to a channel.
fn collect(client: &Client, kind: &str) -> mpsc::UnboundedReceiver<Value> {
    let (tx, rx) = mpsc::unbounded_channel();
    client
        .on(kind, move |_, payload: Value| {
            let _ = tx.send(payload);
        })
        .unwrap();
    rx
}

async fn next_message(rx: &mut mpsc::UnboundedReceiver<Value>, what: &str) -> Value {
    within(what, rx.recv()).await.expect("handler alive")
}

/// Calls the demo's `ask_me`, which calls the client's `client_sum` with 20 and 22.
async fn ask_me(client: &Client) -> Result<i64, CallError> {
    within("ask_me", client.call("ask_me", &json!(null))).await
}

/// Calls the demo's `delay` for 2 s with a timeout of 100 ms; the call must fail.
async fn call_that_times_out(client: &Client) -> CallError {
    within(
        "timeout",
        client.call_with_timeout::<Value, _>(
            "delay",
            &json!({"ms": 2000, "value": 1}),
            Duration::from_millis(100),
        ),
    )
    .await
    .unwrap_err()
}

/// Calls the demo's `fail_custom` and checks the remote error's code and details.
async fn expect_custom_failure(client: &Client) {
    let error = within(
        "fail_custom",
        client.call::<Value, _>("fail_custom", &json!({})),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code(), "app.custom-failure");
    let object = remote(error);
    assert_eq!(object.code, "app.custom-failure");
    assert_eq!(
        object.details,
        Some(json!({"reason": "custom", "rpc": "fail_custom"}))
    );
}

fn remote(error: CallError) -> wse_client::ErrorObject {
    match error {
        CallError::Remote(object) => object,
        other => panic!("expected a remote error, got {other:?}"),
    }
}

fn sum_procedure(client: &Client) {
    client
        .register("client_sum", |_, args: Value| async move {
            let a = args["a"]
                .as_i64()
                .ok_or_else(|| RpcError::new("app.no-a"))?;
            let b = args["b"]
                .as_i64()
                .ok_or_else(|| RpcError::new("app.no-b"))?;
            Ok(a + b)
        })
        .unwrap();
}

// ---------------------------------------------------------------- connect

#[tokio::test]
async fn connect_returns_the_welcome() {
    let server = start_demo(Auth::Plain).await;
    let client = client(&server).build();
    assert_eq!(client.status(), Status::Idle);
    let welcome = within(
        "connect",
        client.connect(
            json!("secret"),
            json!({"user_id": "ann", "device": "phone"}),
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        welcome,
        json!({"cid": "ann", "meta": {"user_id": "ann", "device": "phone"}})
    );
    assert_eq!(client.status(), Status::Ready);
    assert_eq!(client.protocol(), "wse-default-json");
    assert_eq!(server.server.counts().await.unwrap(), (1, 1));
    assert_eq!(
        server.server.connections_of("ann").await.unwrap()[0].meta()["device"],
        "phone"
    );
}

#[tokio::test]
async fn a_refused_identity_is_not_authorized_and_not_retried() {
    let server = start_demo(Auth::Plain).await;
    let mut server_events = server.server.events();
    let client = client(&server).reconnect(FAST).build();
    let refused = within(
        "refused connect",
        client.connect(json!("wrong"), json!({"user_id": "ann"})),
    )
    .await;
    assert_eq!(refused, Err(ConnectError::NotAuthorized));
    assert_eq!(
        wait_status(&client, "offline", |s| *s != Status::Connecting).await,
        Status::Offline
    );
    // Longer than several reconnect delays of the policy: it stays away.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(client.status(), Status::Offline);
    let mut rejections = 0;
    while let Ok(event) = server_events.try_recv() {
        match event {
            Event::Rejected { .. } => rejections += 1,
            Event::Connected { .. } => panic!("a refused identity was accepted"),
            _ => {}
        }
    }
    assert_eq!(rejections, 1, "the client came back after a refusal");
    assert_eq!(server.server.counts().await.unwrap(), (0, 0));
}

#[tokio::test]
async fn connecting_twice_is_already_connected() {
    let server = start_demo(Auth::Plain).await;
    let client = demo_client(&server, "ann").await;
    assert_eq!(
        try_connect_as(&client, "ann").await,
        Err(ConnectError::AlreadyConnected)
    );
    // The first connection is untouched.
    assert_eq!(client.status(), Status::Ready);
    assert_eq!(add(&client).await, Ok(3));
    assert_eq!(server.server.counts().await.unwrap(), (1, 1));
}

// ---------------------------------------------------------------- calls

#[tokio::test]
async fn typed_calls_and_their_errors() {
    let server = start_demo(Auth::Plain).await;
    let client = demo_client(&server, "ann").await;

    assert_eq!(add(&client).await, Ok(3));
    let sum: Value = within("add", client.call("add", &json!({"a": 1, "b": 2})))
        .await
        .unwrap();
    assert_eq!(sum, json!(3));

    expect_custom_failure(&client).await;

    let error = within("fail", client.call::<Value, _>("fail", &json!(null)))
        .await
        .unwrap_err();
    let object = remote(error);
    assert_eq!(object.code, "wse.server.rp.failed");
    let shown = format!("{object:?}");
    assert!(
        !shown.contains("on purpose"),
        "the internal error leaked: {shown}"
    );

    let error = within(
        "unknown",
        client.call::<Value, _>("no_such_thing", &json!(1)),
    )
    .await
    .unwrap_err();
    assert_eq!(remote(error).code, "wse.server.rp.not-registered");

    let error = within(
        "decode",
        client.call::<String, _>("add", &json!({"a": 1, "b": 2})),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, CallError::Decode(_)), "{error:?}");

    // None of these hurt the connection.
    let sum: i64 = within("add", client.call("add", &json!({"a": 40, "b": 2})))
        .await
        .unwrap();
    assert_eq!(sum, 42);
}

#[tokio::test]
async fn calling_before_connect_is_not_ready() {
    let server = start_demo(Auth::Plain).await;
    let client = client(&server).build();
    let error = add(&client).await.unwrap_err();
    assert_eq!(error, CallError::NotReady);
    assert_eq!(error.code(), "wse.client.not-ready");
    assert!(client.send("echo", &json!(1)).is_err());
}

#[tokio::test]
async fn a_call_times_out_and_the_connection_stays() {
    let server = start_demo(Auth::Plain).await;
    let client = demo_client(&server, "ann").await;
    let started = Instant::now();
    let error = call_that_times_out(&client).await;
    assert_eq!(error, CallError::Timeout);
    assert_eq!(error.code(), "wse.client.rp.timeout");
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(client.status(), Status::Ready);
    let value: Value = within(
        "delay",
        client.call("delay", &json!({"ms": 10, "value": "ok"})),
    )
    .await
    .unwrap();
    assert_eq!(value, "ok");
}

#[tokio::test]
async fn the_default_call_timeout_applies() {
    let server = start_demo(Auth::Plain).await;
    let client = client(&server)
        .call_timeout(Duration::from_millis(100))
        .build();
    connect_as(&client, "ann").await;
    let started = Instant::now();
    let error = within(
        "timeout",
        client.call::<Value, _>("delay", &json!({"ms": 2000, "value": 1})),
    )
    .await
    .unwrap_err();
    assert_eq!(error, CallError::Timeout);
    assert!(started.elapsed() < Duration::from_millis(1500));
    // A per-call timeout overrides the default.
    let value: Value = within(
        "longer call",
        client.call_with_timeout(
            "delay",
            &json!({"ms": 300, "value": 7}),
            Duration::from_secs(5),
        ),
    )
    .await
    .unwrap();
    assert_eq!(value, 7);
    assert_eq!(add(&client).await, Ok(3));
}

#[tokio::test]
async fn a_server_shutdown_fails_the_pending_call_with_disconnected() {
    let server = start_demo(Auth::Plain).await;
    let client = demo_client(&server, "ann").await;
    let started = Instant::now();
    let pending = tokio::spawn(client.call::<Value, _>("delay", &json!({"ms": 5000, "value": 1})));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!pending.is_finished());
    within("shutdown", server.shutdown()).await;
    let error = within("pending call", pending).await.unwrap().unwrap_err();
    assert_eq!(error, CallError::Disconnected);
    assert_eq!(error.code(), "wse.client.rp.disconnect");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the call waited for the delay: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn drop_me_fails_the_other_pending_call_with_disconnected() {
    let server = start_demo(Auth::Plain).await;
    let mut server_events = server.server.events();
    let client = demo_client(&server, "ann").await;
    let mut events = client.events();
    let started = Instant::now();
    let pending = tokio::spawn(client.call::<Value, _>("delay", &json!({"ms": 5000, "value": 1})));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let dropper = tokio::spawn(client.call::<Value, _>("drop_me", &json!({"reason": "bye"})));
    let error = within("pending call", pending).await.unwrap().unwrap_err();
    assert_eq!(error, CallError::Disconnected);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the call waited for the delay: {:?}",
        started.elapsed()
    );
    // drop_me itself either answered before the close or was cut off by it.
    let dropped = within("drop_me", dropper).await.unwrap();
    assert!(
        matches!(dropped, Ok(Value::Null) | Err(CallError::Disconnected)),
        "{dropped:?}"
    );
    let (code, reason) = next_event(&mut events, "closed", pick::closed).await;
    assert_eq!((code, reason.as_str()), (1000, "bye"));
    let (_, code, reason) =
        next_event(&mut server_events, "disconnected", pick::disconnected).await;
    assert_eq!((code, reason.as_str()), (1000, "bye"));
    // 1000 is not a reconnect code, and reconnect is off anyway.
    assert_eq!(
        wait_status(&client, "offline", |s| *s == Status::Offline).await,
        Status::Offline
    );
}

// ---------------------------------------------------------------- server → client calls

#[tokio::test]
async fn the_server_calls_a_client_procedure() {
    let server = start_demo(Auth::Plain).await;
    let client = client(&server).build();
    sum_procedure(&client);
    connect_as(&client, "ann").await;
    assert_eq!(ask_me(&client).await, Ok(42));
}

#[tokio::test]
async fn a_failing_client_procedure_reaches_the_server_with_its_code_and_details() {
    let server = start_demo(Auth::Plain).await;
    let client = client(&server).build();
    client
        .register("client_sum", |_, _: Value| async move {
            Err::<i64, _>(RpcError::new("app.nope").with_details(json!({"x": 1})))
        })
        .unwrap();
    connect_as(&client, "ann").await;
    let error = ask_me(&client).await.unwrap_err();
    let object = remote(error);
    assert_eq!(object.code, "app.nope");
    let details = object.details.expect("details travel");
    assert_eq!(details["x"], 1, "{details}");
}

#[tokio::test]
async fn a_client_without_the_procedure_answers_not_registered() {
    let server = start_demo(Auth::Plain).await;
    let client = demo_client(&server, "ann").await;
    let error = ask_me(&client).await.unwrap_err();
    assert_eq!(remote(error).code, "wse.server.rp.not-registered");

    // Registered later, on the live connection, it answers.
    sum_procedure(&client);
    assert_eq!(ask_me(&client).await, Ok(42));
}

// ---------------------------------------------------------------- messages

#[tokio::test]
async fn messages_go_both_ways() {
    let server = start_demo(Auth::Plain).await;
    let client = client(&server).build();
    let mut echo = collect(&client, "echo");
    let mut only = collect(&client, "only");
    let mut both = collect(&client, "both");
    connect_as(&client, "ann").await;

    client
        .send("echo", &json!({"text": "hello", "n": [1, 2]}))
        .unwrap();
    assert_eq!(
        next_message(&mut echo, "echo").await,
        json!({"text": "hello", "n": [1, 2]})
    );

    client.send("hey", &json!("there")).unwrap();
    assert_eq!(next_message(&mut only, "only").await, json!("there"));
    assert_eq!(next_message(&mut both, "both").await, json!("there"));
}

#[tokio::test]
async fn messages_without_a_handler_are_ignored() {
    let server = start_demo(Auth::Plain).await;
    let client = client(&server).build();
    let mut echo = collect(&client, "echo");
    let mut events = client.events();
    connect_as(&client, "ann").await;
    client.send("hey", &json!(1)).unwrap();
    let mut ignored = Vec::new();
    while ignored.len() < 2 {
        ignored.push(next_event(&mut events, "ignored", pick::ignored).await);
    }
    ignored.sort();
    assert_eq!(ignored, ["both", "only"]);

    // After the handler is removed, echo is ignored too; the connection stays.
    assert!(client.off("echo"));
    client.send("echo", &json!(2)).unwrap();
    let kind = next_event(&mut events, "ignored echo", pick::ignored).await;
    assert_eq!(kind, "echo");
    assert!(echo.try_recv().is_err());
    assert_eq!(client.status(), Status::Ready);
}

// ---------------------------------------------------------------- users and devices

#[tokio::test]
async fn send_to_user_reaches_every_device_and_broadcast_everyone() {
    let server = start_demo(Auth::Plain).await;
    let phone = client(&server).build();
    let laptop = client(&server).build();
    let other = client(&server).build();
    let mut phone_notes = collect(&phone, "note");
    let mut laptop_notes = collect(&laptop, "note");
    let mut other_notes = collect(&other, "note");
    let mut phone_news = collect(&phone, "news");
    let mut laptop_news = collect(&laptop, "news");
    let mut other_news = collect(&other, "news");
    connect_as(&phone, "ann").await;
    connect_as(&laptop, "ann").await;
    connect_as(&other, "bob").await;
    assert_eq!(server.server.counts().await.unwrap(), (2, 3));

    let sent: bool = within(
        "send_to_user",
        other.call(
            "send_to_user",
            &json!({"user": "ann", "type": "note", "payload": {"n": 7}}),
        ),
    )
    .await
    .unwrap();
    assert!(sent);
    assert_eq!(
        next_message(&mut phone_notes, "phone note").await,
        json!({"n": 7})
    );
    assert_eq!(
        next_message(&mut laptop_notes, "laptop note").await,
        json!({"n": 7})
    );

    let sent: bool = within(
        "broadcast",
        phone.call("broadcast", &json!({"type": "news", "payload": "extra"})),
    )
    .await
    .unwrap();
    assert!(sent);
    for (rx, who) in [
        (&mut phone_news, "phone"),
        (&mut laptop_news, "laptop"),
        (&mut other_news, "bob"),
    ] {
        assert_eq!(next_message(rx, who).await, json!("extra"), "{who}");
    }
    // Bob's notes: nothing. The broadcast came after the note on the same connections, so
    // a wrongly delivered note would already be here.
    assert!(other_notes.try_recv().is_err());
}

#[tokio::test]
async fn a_third_device_evicts_the_oldest_which_does_not_reconnect() {
    let server = start_demo(Auth::Plain).await;
    let first = client(&server).reconnect(FAST).build();
    connect_as(&first, "ann").await;
    let mut first_events = first.events();
    let second = demo_client(&server, "ann").await;
    assert_eq!(first.status(), Status::Ready);
    let third = demo_client(&server, "ann").await;

    let (code, reason) = next_event(&mut first_events, "eviction", pick::closed).await;
    assert_eq!((code, reason.as_str()), (1000, "wse.clients-concurrency"));
    assert_eq!(
        wait_status(&first, "offline", |s| !matches!(s, Status::Ready)).await,
        Status::Offline
    );
    // Longer than several reconnect delays of the policy: it stays away.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(first.status(), Status::Offline);
    while let Ok(event) = first_events.try_recv() {
        assert!(
            !matches!(event, ClientEvent::Ready { .. }),
            "the evicted client came back"
        );
    }
    assert_eq!(server.server.connections_of("ann").await.unwrap().len(), 2);
    for device in [&second, &third] {
        assert_eq!(device.status(), Status::Ready);
        assert_eq!(add(device).await, Ok(3));
    }
    assert_eq!(add(&first).await, Err(CallError::NotReady));
}

// ---------------------------------------------------------------- HMAC

#[tokio::test]
async fn the_hmac_secret_answers_the_challenge() {
    let server = start_demo(Auth::Hmac).await;
    let client = client(&server).hmac_secret("s3cret").build();
    let welcome = connect_as(&client, "ann").await;
    assert_eq!(
        welcome,
        json!({"cid": "ann", "cra": true, "meta": {"user_id": "ann"}})
    );
    assert_eq!(add(&client).await, Ok(3));
}

#[tokio::test]
async fn a_wrong_hmac_secret_is_not_authorized() {
    let server = start_demo(Auth::Hmac).await;
    let client = client(&server).hmac_secret("guess").reconnect(FAST).build();
    assert_eq!(
        try_connect_as(&client, "ann").await,
        Err(ConnectError::NotAuthorized)
    );
    assert_eq!(
        wait_status(&client, "offline", |s| *s != Status::Connecting).await,
        Status::Offline
    );
    assert_eq!(server.server.counts().await.unwrap(), (0, 0));
}

#[tokio::test]
async fn a_challenge_without_a_solver_fails_the_connect() {
    let server = start_demo(Auth::Hmac).await;
    let client = client(&server).build();
    let result = try_connect_as(&client, "ann").await;
    assert!(
        matches!(result, Err(ConnectError::Challenge(_))),
        "{result:?}"
    );
    assert_eq!(
        result.unwrap_err().code().map(|code| code.as_str()),
        Some("wse.client.invalid-cra-handler")
    );
    assert_eq!(server.server.counts().await.unwrap(), (0, 0));
}

#[tokio::test]
async fn a_custom_solver_answers_the_challenge() {
    let server = start_demo(Auth::Hmac).await;
    let quests = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&quests);
    let client = client(&server)
        .challenge(move |quest| {
            seen.lock().unwrap().push(quest.clone());
            async move { Ok(Value::String(hmac_solution("s3cret", &quest))) }
        })
        .build();
    let welcome = connect_as(&client, "ann").await;
    assert_eq!(welcome["cra"], true);
    assert_eq!(welcome["cid"], "ann");
    let quests = quests.lock().unwrap().clone();
    assert_eq!(quests.len(), 1);
    assert_eq!(quests[0]["nonce"].as_str().map(str::len), Some(32));

    // A solver that gives up fails the connect with Challenge.
    let failing = wse_tests::client(&server)
        .challenge(|_| async { Err::<Value, _>("no idea".to_owned()) })
        .build();
    let result = try_connect_as(&failing, "bob").await;
    assert!(
        matches!(&result, Err(ConnectError::Challenge(message)) if message.contains("no idea")),
        "{result:?}"
    );
}

// ---------------------------------------------------------------- MessagePack

#[tokio::test]
async fn a_codec_the_server_does_not_speak_is_named_on_both_sides() {
    let server = wse_server::Server::builder(|_| async { wse_server::Decision::refuse() })
        .protocol(wse_server::MsgPack)
        .build();
    let server = wse_tests::start(server).await;
    let mut events = server.server.events();
    let client = client(&server).build();
    let error = try_connect_as(&client, "ann").await.unwrap_err();
    assert_eq!(
        error,
        ConnectError::NoCommonProtocol {
            offered: vec!["wse-default-json".into()]
        }
    );
    assert!(error.to_string().contains("wse-default-json"), "{error}");
    let rejected = next_event(&mut events, "rejected", pick::rejected).await;
    assert_eq!(
        rejected,
        wse_server::Rejection::NoCommonProtocol {
            offered: vec!["wse-default-json".into()],
            supported: vec!["wse-msgpack".into()],
        }
    );
}

#[tokio::test]
async fn msgpack_round_trips_calls_and_messages() {
    let server = start_demo(Auth::Plain).await;
    let client = client(&server).protocol(MsgPack).build();
    sum_procedure(&client);
    let mut echo = collect(&client, "echo");
    let welcome = connect_as(&client, "ann").await;
    assert_eq!(welcome, json!({"cid": "ann", "meta": {"user_id": "ann"}}));
    assert_eq!(client.protocol(), "wse-msgpack");
    assert_eq!(
        server.server.connections_of("ann").await.unwrap()[0].protocol(),
        "wse-msgpack"
    );

    assert_eq!(add(&client).await, Ok(3));
    assert_eq!(ask_me(&client).await, Ok(42));
    expect_custom_failure(&client).await;
    assert_eq!(call_that_times_out(&client).await, CallError::Timeout);

    client
        .send("echo", &json!({"text": "hello", "list": [1, "two", null]}))
        .unwrap();
    assert_eq!(
        next_message(&mut echo, "echo").await,
        json!({"text": "hello", "list": [1, "two", null]})
    );
}

#[tokio::test]
async fn json_and_msgpack_devices_of_one_user_both_get_user_messages() {
    let server = start_demo(Auth::Plain).await;
    let json_device = client(&server).build();
    let mut json_both = collect(&json_device, "both");
    connect_as(&json_device, "ann").await;
    let msgpack_device = msgpack_client(&server, "ann").await;
    let mut msgpack_both = collect(&msgpack_device, "both");
    let mut msgpack_only = collect(&msgpack_device, "only");

    msgpack_device.send("hey", &json!({"k": [1, 2]})).unwrap();
    assert_eq!(
        next_message(&mut msgpack_only, "only").await,
        json!({"k": [1, 2]})
    );
    assert_eq!(
        next_message(&mut msgpack_both, "msgpack both").await,
        json!({"k": [1, 2]})
    );
    assert_eq!(
        next_message(&mut json_both, "json both").await,
        json!({"k": [1, 2]})
    );
}

// ---------------------------------------------------------------- status

#[tokio::test]
async fn status_goes_idle_connecting_ready_idle() {
    let server = start_demo(Auth::Plain).await;
    let mut server_events = server.server.events();
    let client = client(&server).build();
    let mut changes = client.status_changes();
    assert_eq!(*changes.borrow_and_update(), Status::Idle);
    let seen = Arc::new(Mutex::new(vec![Status::Idle]));
    let recorder = tokio::spawn({
        let seen = Arc::clone(&seen);
        async move {
            while changes.changed().await.is_ok() {
                let status = *changes.borrow_and_update();
                seen.lock().unwrap().push(status);
                if status == Status::Idle {
                    break;
                }
            }
        }
    });

    connect_as(&client, "ann").await;
    assert_eq!(client.status(), Status::Ready);
    within("close", client.close("wse.by-client")).await;
    assert_eq!(client.status(), Status::Idle);
    within("recorder", recorder).await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            Status::Idle,
            Status::Connecting,
            Status::Ready,
            Status::Idle
        ]
    );

    let (_, code, reason) =
        next_event(&mut server_events, "disconnected", pick::disconnected).await;
    assert_eq!((code, reason.as_str()), (1000, "wse.by-client"));

    // Closed, it can connect again.
    let welcome = connect_as(&client, "ann").await;
    assert_eq!(welcome["cid"], "ann");
    assert_eq!(client.status(), Status::Ready);
}

#[tokio::test]
async fn the_clients_own_pending_calls_are_limited() {
    let server = start_demo(Auth::Plain).await;
    let client = client(&server).max_pending_calls(1).build();
    connect_as(&client, "ann").await;
    let mut slow =
        std::pin::pin!(client.call::<Value, _>("delay", &json!({"ms": 300, "value": 1})));
    // One poll puts the call in flight.
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(slow.as_mut().poll(cx))).await;
    assert!(first.is_pending());
    assert_eq!(
        client.call::<i64, _>("add", &json!({"a": 1, "b": 2})).await,
        Err(CallError::TooManyPending)
    );
    assert_eq!(within("the slow call", slow).await, Ok(json!(1)));
    assert_eq!(
        client.call::<i64, _>("add", &json!({"a": 1, "b": 2})).await,
        Ok(3)
    );
}
