//! The engine on its own: two sessions wired back to back through their outbound queues.

use std::sync::Mutex;

use serde_json::{Value, json};

use super::*;
use crate::outbox::{Drain, Outgoing, outbox};
use crate::protocol::Json;

#[derive(Clone, Default)]
struct Peer(Arc<Mutex<Vec<Report<'static>>>>);

impl Context for Peer {
    fn report(&self, report: Report<'_>) {
        self.0.lock().unwrap().push(report.into_owned());
    }
}

impl Peer {
    fn reports(&self) -> Vec<Report<'static>> {
        self.0.lock().unwrap().clone()
    }
}

struct Pair {
    a: Session<Peer>,
    b: Session<Peer>,
    b_peer: Peer,
    a_peer: Peer,
}

/// Session `a` calls, session `b` serves `registry`; frames travel through a pump task each way.
fn pair(registry: Registry<Peer>, config: SessionConfig) -> Pair {
    pair_with(Arc::new(registry), config)
}

/// [`pair`], with a registry the test keeps a handle of.
fn pair_with(registry: Arc<Registry<Peer>>, config: SessionConfig) -> Pair {
    let (a_tx, a_rx) = outbox(64);
    let (b_tx, b_rx) = outbox(64);
    let a = Session::new(Arc::new(Json), a_tx, Arc::new(Registry::new()), config);
    let b = Session::new(Arc::new(Json), b_tx, registry, config);
    let (a_peer, b_peer) = (Peer::default(), Peer::default());
    pump(a_rx, b.clone(), b_peer.clone());
    pump(b_rx, a.clone(), a_peer.clone());
    Pair {
        a,
        b,
        b_peer,
        a_peer,
    }
}

fn pump(mut rx: Drain, to: Session<Peer>, peer: Peer) {
    tokio::spawn(async move {
        while let Outgoing::Frames(batch) = rx.next().await {
            for frame in batch {
                to.dispatch(&peer, &frame, MessageKind::Text)
                    .expect("valid frame");
            }
        }
    });
}

fn registry() -> Registry<Peer> {
    let registry = Registry::new();
    registry
        .register(
            "add",
            |_: Peer, (a, b): (i64, i64)| async move { Ok(a + b) },
        )
        .unwrap();
    registry
        .register("custom", |_: Peer, _: ()| async move {
            Err::<(), _>(RpcError::new("app.nope").with_details(json!({"why": "because"})))
        })
        .unwrap();
    registry
        .register("io", |_: Peer, _: ()| async move {
            Err::<(), _>(std::io::Error::other("/secret/path").into())
        })
        .unwrap();
    registry
        .register("panics", |_: Peer, _: ()| async move {
            if true {
                panic!("boom");
            }
            Ok(())
        })
        .unwrap();
    registry
        .register("never", |_: Peer, _: ()| async move {
            std::future::pending::<()>().await;
            Ok(())
        })
        .unwrap();
    registry
}

#[tokio::test]
async fn calls_resolve_with_typed_results_and_errors() {
    let p = pair(registry(), SessionConfig::default());
    assert_eq!(p.a.call::<i64, _>("add", &(2, 3)).await, Ok(5));

    let err = p.a.call::<(), _>("custom", &()).await.unwrap_err();
    let object = err.remote().unwrap();
    assert_eq!(object.code, "app.nope");
    assert_eq!(
        object.details,
        Some(json!({"why": "because", "rpc": "custom"}))
    );

    let err = p.a.call::<(), _>("missing", &()).await.unwrap_err();
    assert_eq!(err.code(), "wse.server.rp.not-registered");

    let err = p.a.call::<(), _>("add", &"not a pair").await.unwrap_err();
    assert_eq!(err.code(), "wse.server.rp.invalid-payload");

    let err = p.a.call::<String, _>("add", &(1, 1)).await.unwrap_err();
    assert!(matches!(err, CallError::Decode(_)));
}

#[tokio::test]
async fn unexpected_failures_and_panics_reveal_nothing_and_are_reported() {
    let p = pair(registry(), SessionConfig::default());
    for name in ["io", "panics"] {
        let err = p.a.call::<(), _>(name, &()).await.unwrap_err();
        let object = err.remote().unwrap().clone();
        assert_eq!(object.code, "wse.server.rp.failed");
        assert!(!serde_json::to_string(&object).unwrap().contains("secret"));
        assert!(!serde_json::to_string(&object).unwrap().contains("boom"));
    }
    // The session still serves calls after a panic.
    assert_eq!(p.a.call::<i64, _>("add", &(1, 1)).await, Ok(2));
    let failed: Vec<_> = p
        .b_peer
        .reports()
        .into_iter()
        .filter(|r| matches!(r, Report::ProcedureFailed { .. }))
        .collect();
    assert_eq!(failed.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_call_times_out_and_leaves_no_entry() {
    let config = SessionConfig {
        call_timeout: Duration::from_millis(50),
        ..SessionConfig::default()
    };
    let p = pair(registry(), config);
    assert_eq!(
        p.a.call::<(), _>("never", &()).await,
        Err(CallError::Timeout)
    );
    assert_eq!(p.a.pending_calls(), 0);
}

#[tokio::test]
async fn close_fails_pending_calls_at_once_and_refuses_new_ones() {
    let p = pair(registry(), SessionConfig::default());
    let waiting = tokio::spawn(p.a.call::<(), _>("never", &()));
    while p.a.pending_calls() == 0 {
        tokio::task::yield_now().await;
    }
    p.a.close();
    assert_eq!(waiting.await.unwrap(), Err(CallError::Disconnected));
    assert_eq!(
        p.a.call::<i64, _>("add", &(1, 1)).await,
        Err(CallError::Disconnected)
    );
}

#[tokio::test]
async fn pipelined_calls_get_distinct_stamps_and_their_own_answers() {
    let p = pair(registry(), SessionConfig::default());
    let calls: Vec<_> = (0..200i64)
        .map(|i| p.a.call::<i64, _>("add", &(i, i)))
        .collect();
    for (i, call) in (0i64..).zip(calls) {
        assert_eq!(call.await, Ok(2 * i));
    }
}

#[tokio::test]
async fn messages_reach_handlers_and_unknown_types_are_ignored() {
    let registry = registry();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    registry
        .on("note", move |_: Peer, text: String| {
            sink.lock().unwrap().push(text)
        })
        .unwrap();
    registry
        .on("bad", |_: Peer, _: Value| panic!("handler bug"))
        .unwrap();
    let p = pair(registry, SessionConfig::default());
    p.a.send("note", "one").unwrap();
    p.a.send("note", &7).unwrap(); // does not fit String: reported, skipped
    p.a.send("bad", &()).unwrap();
    p.a.send("other", &()).unwrap();
    p.a.send("note", "two").unwrap();
    assert_eq!(
        p.a.send("~wse:hi", &()),
        Err(SendError::InvalidKind("~wse:hi".into()))
    );
    while p.b_peer.reports().len() < 3 {
        tokio::task::yield_now().await;
    }
    tokio::task::yield_now().await;
    assert_eq!(*seen.lock().unwrap(), ["one", "two"]);
    let reports = p.b_peer.reports();
    assert!(matches!(&reports[0], Report::InvalidPayload { kind, .. } if kind == "note"));
    assert_eq!(reports[1], Report::HandlerPanicked { kind: "bad".into() });
    assert_eq!(
        reports[2],
        Report::Ignored {
            kind: "other".into()
        }
    );
}

#[tokio::test]
async fn the_fallback_gets_what_no_handler_takes_and_can_be_removed() {
    let registry = registry();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    registry
        .on("note", move |_: Peer, text: String| {
            sink.lock().unwrap().push(format!("note {text}"))
        })
        .unwrap();
    let sink = Arc::clone(&seen);
    registry.on_any(move |_: Peer, kind: &str, payload: Value| {
        sink.lock().unwrap().push(format!("any {kind} {payload}"))
    });
    let registry = Arc::new(registry);
    let (tx, _rx) = outbox(4);
    let session = Session::new(
        Arc::new(Json),
        tx,
        Arc::clone(&registry),
        SessionConfig::default(),
    );
    let peer = Peer::default();
    for frame in [
        &br#"["note", "own handler", null]"#[..],
        br#"["other", {"x": 1}, null]"#,
        br#"["bare"]"#,
    ] {
        session.dispatch(&peer, frame, MessageKind::Text).unwrap();
    }
    assert_eq!(
        *seen.lock().unwrap(),
        ["note own handler", r#"any other {"x":1}"#, "any bare null"]
    );
    assert!(peer.reports().is_empty(), "{:?}", peer.reports());

    assert!(registry.off_any());
    assert!(!registry.off_any());
    session
        .dispatch(&peer, br#"["other", 1, null]"#, MessageKind::Text)
        .unwrap();
    assert_eq!(
        peer.reports(),
        [Report::Ignored {
            kind: "other".into()
        }]
    );
}

#[tokio::test]
async fn an_observer_sees_calls_to_unregistered_procedures_that_are_still_refused() {
    let registry = registry();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    registry.on_unregistered_call(move |_: Peer, procedure: &str, args: Value| {
        sink.lock().unwrap().push(format!("{procedure} {args}"))
    });
    // The fallback of messages is not the observer of calls.
    registry.on_any(|_: Peer, kind: &str, _: Value| panic!("{kind} is a call"));
    let registry = Arc::new(registry);
    let p = pair_with(Arc::clone(&registry), SessionConfig::default());
    let err =
        p.a.call::<(), _>("missing", &json!({"a": 1}))
            .await
            .unwrap_err();
    assert_eq!(err.code(), "wse.server.rp.not-registered");
    // A registered procedure is not observed.
    assert_eq!(p.a.call::<i64, _>("add", &(1, 2)).await, Ok(3));
    assert_eq!(*seen.lock().unwrap(), [r#"missing {"a":1}"#]);
    assert!(p.b_peer.reports().is_empty(), "{:?}", p.b_peer.reports());

    // Arguments that do not fit are reported; the call is refused as before.
    registry.on_unregistered_call(|_: Peer, _: &str, _: u8| {});
    let err = p.a.call::<(), _>("missing", &"text").await.unwrap_err();
    assert_eq!(err.code(), "wse.server.rp.not-registered");
    assert!(matches!(
        &p.b_peer.reports()[..],
        [Report::InvalidPayload { kind, .. }] if kind == "missing"
    ));
    assert!(registry.off_unregistered_call());
    assert!(!registry.off_unregistered_call());
}

#[test]
fn unmatched_responses_are_reported_never_answered() {
    let (tx, mut rx) = outbox(4);
    let session = Session::new(
        Arc::new(Json),
        tx,
        Arc::new(Registry::new()),
        SessionConfig::default(),
    );
    let peer = Peer::default();
    session
        .dispatch(
            &peer,
            br#"["~wse:response", 1, "nobody"]"#,
            MessageKind::Text,
        )
        .unwrap();
    assert_eq!(
        peer.reports(),
        [Report::UnmatchedResponse {
            stamp: "nobody".into()
        }]
    );
    assert!(rx.try_batch().is_none());
}

#[test]
fn violations_are_errors() {
    let (tx, _rx) = outbox(4);
    let session = Session::new(
        Arc::new(Json),
        tx,
        Arc::new(Registry::new()),
        SessionConfig::default(),
    );
    let peer = Peer::default();
    let violation = |data: &[u8], kind| session.dispatch(&peer, data, kind).unwrap_err();
    assert_eq!(
        violation(br#"["~wse:hi", {}, null]"#, MessageKind::Text),
        ProtocolViolation::ReservedType("~wse:hi".into())
    );
    assert_eq!(
        violation(b"nope", MessageKind::Text).code(),
        ErrorCode::MsgProcessingError
    );
    assert_eq!(
        violation(b"[1]", MessageKind::Text).code(),
        ErrorCode::ProtocolViolation
    );
    assert!(matches!(
        violation(b"[\"a\"]", MessageKind::Binary),
        ProtocolViolation::Unpack(UnpackError::WrongMessageKind { .. })
    ));
}

#[tokio::test]
async fn too_many_running_calls_are_refused_and_the_session_stays() {
    let config = SessionConfig {
        max_running_calls: 2,
        ..SessionConfig::default()
    };
    let p = pair(registry(), config);
    let _stuck: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(p.a.call_with_timeout::<(), _>("never", &(), Duration::from_secs(60)))
        })
        .collect();
    while p.b.0.running.available_permits() > 0 {
        tokio::task::yield_now().await;
    }
    let err = p.a.call::<(), _>("never", &()).await.unwrap_err();
    assert_eq!(err.code(), "wse.server.rp.too-many-calls");
    // A call that finishes at once needs no room among the running ones.
    assert_eq!(p.a.call::<i64, _>("add", &(1, 1)).await, Ok(2));
    let _ = &p.a_peer;
}

#[tokio::test]
async fn too_many_pending_calls_fail_the_new_one_and_the_session_stays() {
    let config = SessionConfig {
        max_pending_calls: 2,
        ..SessionConfig::default()
    };
    let p = pair(registry(), config);
    let _waiting: Vec<_> = (0..2)
        .map(|_| tokio::spawn(p.a.call::<(), _>("never", &())))
        .collect();
    while p.a.pending_calls() < 2 {
        tokio::task::yield_now().await;
    }
    let err = p.a.call::<(), _>("never", &()).await.unwrap_err();
    assert_eq!(err, CallError::TooManyPending);
    assert_eq!(err.code(), "wse.client.rp.too-many-pending");
    assert_eq!(p.a.pending_calls(), 2);
}

#[test]
fn refused_frames_are_answered_or_dropped_and_reported() {
    let (tx, mut rx) = outbox(4);
    let registry = registry();
    let session = Session::new(
        Arc::new(Json),
        tx,
        Arc::new(registry),
        SessionConfig::default(),
    );
    let peer = Peer::default();
    let refuse =
        |data: &[u8]| session.refuse(&peer, data, MessageKind::Text, ErrorCode::RateLimited);
    refuse(br#"["add", [1, 2], "s1"]"#).unwrap();
    let reply: Value = serde_json::from_slice(&rx.try_batch().unwrap()[0]).unwrap();
    assert_eq!(
        reply,
        json!(["~wse:response-err", {"code": "wse.server.rate-limited"}, "s1"])
    );
    refuse(br#"["note", "x", null]"#).unwrap();
    assert!(rx.try_batch().is_none());
    assert_eq!(
        peer.reports(),
        [
            Report::Throttled { kind: "add".into() },
            Report::Throttled {
                kind: "note".into()
            }
        ]
    );
    assert!(refuse(b"[1]").is_err());
}
