//! What the server reports and how its registry behaves at run time: panicking procedures,
//! ignored messages, protocol violations, rejections, register/unregister while serving.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use serde_json::{Value, json};
use wse_core::ErrorCode;
use wse_server::{
    Connection, Decision, Event, RegisterError, Rejection, RpcError, Server, ServerError,
};
use wse_tests::{Codec, Raw, next_event, pick, start};

fn app() -> Server {
    let server = Server::builder(|handshake| async move {
        match handshake.identity.as_str() {
            Some(user) if !user.is_empty() => Decision::accept(user, json!(null)),
            _ => Decision::refuse(),
        }
    })
    .conn_per_user(4)
    .build();
    server
        .register("panics", |_: Connection, _: Value| async move {
            if true {
                panic!("internal state: /srv/secret");
            }
            Ok(())
        })
        .unwrap();
    server
        .register("ok", |_: Connection, _: Value| async move { Ok("fine") })
        .unwrap();
    server
}

#[tokio::test]
async fn a_panicking_procedure_fails_the_call_and_nothing_else() {
    let server = start(app()).await;
    let mut events = server.server.events();
    let mut raw = Raw::login_identity(server.addr(), Codec::Json, "ann").await;
    let mut other = Raw::login_identity(server.addr(), Codec::Json, "bob").await;

    raw.send(&json!(["panics", null, "p1"])).await;
    let answer = raw.frame().await;
    assert_eq!(answer[0], "~wse:response-err");
    assert_eq!(answer[1]["code"], "wse.server.rp.failed");
    assert_eq!(answer[2], "p1");
    assert!(!answer.to_string().contains("secret"), "{answer}");

    let (procedure, error) = next_event(&mut events, "procedure failed", |event| match event {
        Event::Error {
            error: ServerError::ProcedureFailed { procedure, error },
            ..
        } => Some((procedure.clone(), error.clone())),
        _ => None,
    })
    .await;
    assert_eq!(procedure, "panics");
    assert!(error.contains("panicked"), "{error}");

    // The same connection and the others go on.
    raw.send(&json!(["ok", null, "p2"])).await;
    assert_eq!(raw.frame().await, json!(["~wse:response", "fine", "p2"]));
    other.send(&json!(["ok", null, "p3"])).await;
    assert_eq!(other.frame().await, json!(["~wse:response", "fine", "p3"]));
}

#[tokio::test]
async fn an_unexpected_error_is_reported_with_its_cause_and_sent_without_it() {
    let server = app();
    server
        .register("io", |_: Connection, _: Value| async move {
            Err::<(), _>(RpcError::from(std::io::Error::other("disk /var/db full")))
        })
        .unwrap();
    let server = start(server).await;
    let mut events = server.server.events();
    let mut raw = Raw::login_identity(server.addr(), Codec::Json, "ann").await;
    raw.send(&json!(["io", null, "s"])).await;
    let answer = raw.frame().await;
    assert_eq!(
        answer,
        json!(["~wse:response-err", {"code": "wse.server.rp.failed", "message": "procedure failed", "details": {"rpc": "io"}}, "s"])
    );
    let error = next_event(&mut events, "procedure failed", |event| match event {
        Event::Error {
            error: ServerError::ProcedureFailed { error, .. },
            ..
        } => Some(error.clone()),
        _ => None,
    })
    .await;
    assert!(error.contains("disk /var/db full"), "{error}");
}

#[tokio::test]
async fn procedures_can_be_registered_and_unregistered_while_serving() {
    let server = start(app()).await;
    let mut raw = Raw::login_identity(server.addr(), Codec::Json, "ann").await;

    raw.expect_reply(
        &json!(["late", null, "a"]),
        &json!(["~wse:response-err", {"code": "wse.server.rp.not-registered"}, "a"]),
    )
    .await;

    server
        .server
        .register("late", |_: Connection, n: i64| async move { Ok(n * 2) })
        .unwrap();
    raw.send(&json!(["late", 21, "b"])).await;
    assert_eq!(raw.frame().await, json!(["~wse:response", 42, "b"]));

    let twice = server
        .server
        .register("late", |_: Connection, n: i64| async move { Ok(n) });
    assert_eq!(twice, Err(RegisterError::AlreadyRegistered("late".into())));
    assert!(
        twice
            .unwrap_err()
            .to_string()
            .contains(ErrorCode::RpAlreadyRegistered.as_str())
    );

    server.server.unregister("late").unwrap();
    raw.expect_reply(
        &json!(["late", 21, "c"]),
        &json!(["~wse:response-err", {"code": "wse.server.rp.not-registered"}, "c"]),
    )
    .await;
    assert_eq!(
        server.server.unregister("late"),
        Err(RegisterError::NotRegistered("late".into()))
    );
}

#[tokio::test]
async fn an_unhandled_message_is_reported_as_ignored() {
    let server = start(app()).await;
    let mut events = server.server.events();
    let mut raw = Raw::login_identity(server.addr(), Codec::Json, "ann").await;
    raw.send(&json!(["nobody-listens", {"x": 1}, null])).await;
    let (user, kind) = next_event(&mut events, "ignored", |event| match event {
        Event::Ignored { connection, kind } => {
            Some((connection.user_id().to_owned(), kind.clone()))
        }
        _ => None,
    })
    .await;
    assert_eq!((user.as_str(), kind.as_str()), ("ann", "nobody-listens"));
}

#[tokio::test]
async fn a_violation_is_reported_with_its_code_and_closes_only_that_connection() {
    let server = start(app()).await;
    let mut events = server.server.events();
    let mut bad = Raw::login_identity(server.addr(), Codec::Json, "ann").await;
    let mut good = Raw::login_identity(server.addr(), Codec::Json, "bob").await;
    let bad_id = server.server.connections_of("ann").await.unwrap()[0].id();

    bad.send_text("{not json").await;
    bad.expect_close(1000, "wse.protocol-error").await;
    let (id, code) = next_event(&mut events, "violation", |event| match event {
        Event::Error {
            connection_id,
            error: error @ ServerError::ProtocolViolation(_),
        } => Some((*connection_id, error.code())),
        _ => None,
    })
    .await;
    assert_eq!((id, code), (Some(bad_id), ErrorCode::MsgProcessingError));

    let mut bad = Raw::login_identity(server.addr(), Codec::Json, "ann").await;
    bad.send(&json!([7, null, null])).await;
    bad.expect_close(1000, "wse.protocol-error").await;
    let code = next_event(&mut events, "violation", |event| match event {
        Event::Error {
            error: error @ ServerError::ProtocolViolation(_),
            ..
        } => Some(error.code()),
        _ => None,
    })
    .await;
    assert_eq!(code, ErrorCode::ProtocolViolation);

    good.expect_reply(
        &json!(["ok", null, "still"]),
        &json!(["~wse:response", "fine", "still"]),
    )
    .await;
}

#[tokio::test]
async fn refusals_and_broken_handshakes_are_reported_as_rejections() {
    let server = start(app()).await;
    let mut events = server.server.events();

    let mut refused = Raw::connect(server.addr(), Codec::Json).await;
    refused
        .send(&json!(["~wse:hi", {"identity": ""}, null]))
        .await;
    refused.expect_close(1000, "wse.not-authorized").await;
    let reason = next_event(&mut events, "rejection", pick::rejected).await;
    assert_eq!(reason, Rejection::NotAuthorized);

    let mut broken = Raw::connect(server.addr(), Codec::Json).await;
    broken
        .send(&json!(["~wse:hi", "not an object", null]))
        .await;
    broken.expect_close(1000, "wse.protocol-error").await;
    let reason = next_event(&mut events, "rejection", pick::rejected).await;
    assert!(matches!(reason, Rejection::ProtocolError(_)), "{reason:?}");
}

#[tokio::test]
async fn a_listeners_shutdown_closes_its_connections_with_1012_and_no_others() {
    let server = app();
    let first = server.bind("127.0.0.1:0").await.unwrap();
    let second = server.bind("127.0.0.1:0").await.unwrap();
    let mut ann = Raw::login_identity(first.local_addr(), Codec::Json, "ann").await;
    let mut bob = Raw::login_identity(second.local_addr(), Codec::Json, "bob").await;
    // Upgraded but not yet welcomed when the stop comes.
    let mut late = Raw::connect(first.local_addr(), Codec::Json).await;

    let shutdown = tokio::spawn(first.shutdown());
    ann.expect_close(1012, "wse.by-server").await;
    late.expect_reply(
        &json!(["~wse:hi", {"identity": "cat"}, null]),
        &json!(["~wse:welcome", null, null]),
    )
    .await;
    late.expect_close(1012, "wse.by-server").await;
    wse_tests::within("shutdown", shutdown).await.unwrap();

    // The other listener's connection is still served.
    bob.expect_reply(
        &json!(["no-such-procedure", null, "s1"]),
        &json!(["~wse:response-err", {"code": "wse.server.rp.not-registered"}, "s1"]),
    )
    .await;
    second.shutdown().await;
}
