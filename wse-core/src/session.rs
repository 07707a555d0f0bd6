//! The symmetric RPC engine of one connection, used by the server and the client alike.
//!
//! After the handshake both ends do the same: route each incoming frame (a response to one of
//! our pending calls, a call of one of our procedures, a one-way message, or a violation),
//! call the other side and wait for the answer by stamp, and answer the other side's calls.
//! A [`Session`] does all of that for one connection; it owns no socket. It hands encoded
//! frames to the connection's writer through a bounded queue and is fed the messages the
//! connection reads.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Semaphore, oneshot};
use tracing::Instrument;

use crate::error::{CallError, ErrorCode, ErrorObject, RpcError};
use crate::frame::{self, RawFrame};
use crate::outbox::{Close, Closer, Outbox, TrySendError};
use crate::protocol::{MessageKind, PayloadError, Protocol, UnpackError};
use crate::registry::{Registry, Started};

mod ending;

use ending::Ending;

/// Keeps [`Session::closed`] from completing while held; from [`Session::hold`].
pub struct SessionHold<C>(Session<C>);

impl<C> fmt::Debug for SessionHold<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionHold").finish_non_exhaustive()
    }
}

impl<C> Drop for SessionHold<C> {
    fn drop(&mut self) {
        self.0.0.ending.leave();
    }
}

tokio::task_local! {
    /// The close a running procedure asked for once its answer is queued
    /// ([`Session::close_after_answer`]).
    static AFTER_ANSWER: AfterAnswer;
}

/// The close a running procedure asked for its own connection once its answer is queued.
struct AfterAnswer {
    own: Closer,
    close: Cell<Option<Close>>,
}

/// The context handlers receive, and where the engine reports what it does not act on.
pub trait Context: Clone + Send + Sync + 'static {
    /// Called for everything worth knowing that is not an error of the caller's own call.
    /// Must not block: it runs on the connection's read loop, for every frame a peer may send.
    /// The report borrows from the frame, so that a context nobody listens to costs nothing:
    /// [`Report::into_owned`] keeps it.
    fn report(&self, report: Report<'_>);

    /// Whether [`Context::call_ended`] wants each call's duration: the engine reads the
    /// clock twice per call only when it does. Default: no.
    fn times_calls(&self) -> bool {
        false
    }

    /// A call from the other side ended with `outcome`, after `elapsed` when
    /// [`Context::times_calls`] (zero otherwise). `procedure` is the name the peer sent,
    /// registered or not. Must not block: it runs on the connection's read loop or the call's
    /// task. Default: nothing.
    fn call_ended(&self, procedure: &str, outcome: CallOutcome, elapsed: Duration) {
        let _ = (procedure, outcome, elapsed);
    }
}

/// How a call from the other side ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CallOutcome {
    /// Answered with a result.
    Ok,
    /// Answered with the procedure's own error.
    Error,
    /// The procedure failed unexpectedly or panicked: `wse.server.rp.failed`.
    Failed,
    /// The payload did not fit the procedure's argument.
    InvalidPayload,
    /// No such procedure.
    NotRegistered,
    /// Refused: too many calls running on the connection.
    TooManyCalls,
    /// Refused: the connection is over its rate limit.
    RateLimited,
    /// The connection closed while it ran.
    Cancelled,
}

impl CallOutcome {
    /// Every outcome, for look-ups.
    pub const ALL: [CallOutcome; 8] = [
        Self::Ok,
        Self::Error,
        Self::Failed,
        Self::InvalidPayload,
        Self::NotRegistered,
        Self::TooManyCalls,
        Self::RateLimited,
        Self::Cancelled,
    ];

    /// The outcome as a metric label says it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Failed => "failed",
            Self::InvalidPayload => "invalid_payload",
            Self::NotRegistered => "not_registered",
            Self::TooManyCalls => "too_many_calls",
            Self::RateLimited => "rate_limited",
            Self::Cancelled => "cancelled",
        }
    }
}

/// When a call started, for [`Context::call_ended`]: read only for a context that times calls.
#[derive(Clone, Copy)]
struct CallClock(Option<std::time::Instant>);

impl CallClock {
    fn start<C: Context>(ctx: &C) -> Self {
        Self(ctx.times_calls().then(std::time::Instant::now))
    }

    fn end<C: Context>(self, ctx: &C, procedure: &str, outcome: CallOutcome) {
        let elapsed = self.0.map_or(Duration::ZERO, |started| started.elapsed());
        ctx.call_ended(procedure, outcome, elapsed);
    }
}

/// Something the engine noticed and did not turn into a reply. It borrows the frame's
/// strings where it can.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Report<'a> {
    /// A one-way message of a type that has no handler, when no fallback
    /// ([`Registry::on_any`]) is set either.
    Ignored {
        /// The message's type.
        kind: Cow<'a, str>,
    },
    /// A response whose stamp matches no pending call: dropped, never answered.
    UnmatchedResponse {
        /// The response's stamp.
        stamp: Cow<'a, str>,
    },
    /// A procedure failed unexpectedly (an error converted with `?`, or a panic); the caller
    /// got `wse.server.rp.failed` and nothing more.
    ProcedureFailed {
        /// The procedure.
        procedure: Cow<'a, str>,
        /// What went wrong, for this side's logs only.
        error: String,
    },
    /// A payload did not fit the type its handler expects. A call is answered with
    /// `wse.server.rp.invalid-payload` (a call to a procedure that is not registered, whose
    /// observer could not take it, with `wse.server.rp.not-registered`); a message is skipped.
    InvalidPayload {
        /// The message type or procedure.
        kind: Cow<'a, str>,
        /// Why it did not fit.
        error: PayloadError,
    },
    /// A message handler (or the observer of calls to procedures that are not registered)
    /// panicked; the connection goes on.
    HandlerPanicked {
        /// The message type.
        kind: Cow<'a, str>,
    },
    /// A call was refused because the connection already runs the maximum number of calls.
    TooManyCalls {
        /// The procedure.
        procedure: Cow<'a, str>,
    },
    /// A frame was not processed because the connection was over its rate limit: a call was
    /// answered with `wse.server.rate-limited`, a message dropped.
    Throttled {
        /// The message type or procedure.
        kind: Cow<'a, str>,
    },
    /// A reply could not be queued: the connection's outbound queue was full or closed.
    ReplyDropped {
        /// The stamp of the call that was not answered.
        stamp: Cow<'a, str>,
    },
    /// The connection closed while a procedure was running: its future was dropped, and the
    /// call is never answered.
    CallCancelled {
        /// The procedure.
        procedure: Cow<'a, str>,
    },
}

impl Report<'_> {
    /// The same report, owning its strings.
    pub fn into_owned(self) -> Report<'static> {
        fn own(text: Cow<'_, str>) -> Cow<'static, str> {
            Cow::Owned(text.into_owned())
        }
        match self {
            Self::Ignored { kind } => Report::Ignored { kind: own(kind) },
            Self::UnmatchedResponse { stamp } => Report::UnmatchedResponse { stamp: own(stamp) },
            Self::ProcedureFailed { procedure, error } => Report::ProcedureFailed {
                procedure: own(procedure),
                error,
            },
            Self::InvalidPayload { kind, error } => Report::InvalidPayload {
                kind: own(kind),
                error,
            },
            Self::HandlerPanicked { kind } => Report::HandlerPanicked { kind: own(kind) },
            Self::TooManyCalls { procedure } => Report::TooManyCalls {
                procedure: own(procedure),
            },
            Self::Throttled { kind } => Report::Throttled { kind: own(kind) },
            Self::ReplyDropped { stamp } => Report::ReplyDropped { stamp: own(stamp) },
            Self::CallCancelled { procedure } => Report::CallCancelled {
                procedure: own(procedure),
            },
        }
    }
}

/// Reports how a handler (or an observer) of `kind` took its payload: not at all (it did not
/// fit), or with a panic.
fn report_handled<C: Context>(
    ctx: &C,
    kind: &str,
    handled: std::thread::Result<Result<(), PayloadError>>,
) {
    match handled {
        Ok(Ok(())) => {}
        Ok(Err(error)) => ctx.report(Report::InvalidPayload {
            kind: kind.into(),
            error,
        }),
        Err(_) => ctx.report(Report::HandlerPanicked { kind: kind.into() }),
    }
}

/// A frame broke the protocol: the connection it came from must be closed with
/// `wse.protocol-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolViolation {
    /// The message is not a frame.
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    /// A frame of a reserved type (`~wse:…`) that has no place after the handshake.
    #[error("reserved frame type {0:?} after the handshake")]
    ReservedType(String),
}

impl ProtocolViolation {
    /// The protocol code to report it under.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unpack(UnpackError::Undecodable(_)) => ErrorCode::MsgProcessingError,
            _ => ErrorCode::ProtocolViolation,
        }
    }
}

/// A one-way message could not be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The connection's outbound queue is full: the peer is not reading fast enough.
    #[error("the connection's outbound queue is full")]
    Full,
    /// The connection is closed (`wse.client.not-ready` on a client).
    #[error("the connection is closed")]
    Closed,
    /// The payload could not be encoded.
    #[error("cannot encode the message: {0}")]
    Encode(String),
    /// The type is empty or reserved (`~wse:…`).
    #[error("the message type {0:?} is empty or reserved for the protocol")]
    InvalidKind(String),
}

/// Limits of one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// How long a call from this side waits for its response.
    pub call_timeout: Duration,
    /// How many calls from the other side may be waiting at once (a call whose procedure
    /// finishes without waiting never counts); past it a call is refused with
    /// `wse.server.rp.too-many-calls` and the connection stays.
    pub max_running_calls: usize,
    /// How many calls from this side may wait for an answer at once; past it a new call
    /// fails with [`CallError::TooManyPending`] and the connection stays.
    pub max_pending_calls: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(20),
            max_running_calls: 1024,
            max_pending_calls: 1024,
        }
    }
}

type Reply = Result<Bytes, ErrorObject>;

struct Pending {
    /// False once the connection closed: no call may start waiting after that.
    open: bool,
    calls: HashMap<String, oneshot::Sender<Reply>>,
}

struct Inner<C> {
    protocol: Arc<dyn Protocol>,
    /// The connection writer's queue: bounded, so a peer that stops reading cannot grow it.
    outbound: Outbox,
    registry: Arc<Registry<C>>,
    /// This side's calls waiting for their response, by stamp.
    pending: Mutex<Pending>,
    /// Permits for the other side's calls running at once.
    running: Arc<Semaphore>,
    /// Closed with the session: the other side's running calls are dropped then, and
    /// [`Session::closed`] waits for the last of them and of the holds to go.
    ending: Ending,
    next_stamp: AtomicU64,
    config: SessionConfig,
}

/// The RPC engine of one connection: a cheap handle.
pub struct Session<C>(Arc<Inner<C>>);

impl<C> Clone for Session<C> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<C> fmt::Debug for Session<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("protocol", &self.0.protocol.name())
            .field("pending_calls", &self.pending_calls())
            .finish_non_exhaustive()
    }
}

impl<C> Session<C> {
    /// The codec of this connection.
    pub fn protocol(&self) -> &Arc<dyn Protocol> {
        &self.0.protocol
    }

    /// The connection's outbound queue, into which this session queues its frames.
    pub fn outbox(&self) -> &Outbox {
        &self.0.outbound
    }

    /// How many calls from this side wait for a response.
    pub fn pending_calls(&self) -> usize {
        self.lock_pending().calls.len()
    }

    /// Whether every permit for the other side's calls is taken: a call arriving now would be
    /// refused with `wse.server.rp.too-many-calls`.
    pub fn running_calls_full(&self) -> bool {
        self.0.running.available_permits() == 0
    }

    /// Whether [`Session::close`] has run.
    pub fn is_closed(&self) -> bool {
        !self.lock_pending().open
    }

    /// Ends the session: every pending call fails with `wse.client.rp.disconnect` at once and
    /// no new call can start waiting.
    pub fn close(&self) {
        let calls = {
            let mut pending = self.lock_pending();
            pending.open = false;
            std::mem::take(&mut pending.calls)
        };
        // Dropping the senders wakes every waiting call with `Disconnected`.
        drop(calls);
        self.0.ending.close();
    }

    /// Completes once the session has closed, every procedure it was running has been
    /// dropped, and every [`Session::hold`] is gone (at once if all that is so).
    ///
    /// # Cancel safety
    /// Cancel-safe: it only waits.
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static + use<C>
    where
        C: Context,
    {
        let session = self.clone();
        async move { session.0.ending.ended().await }
    }

    /// Keeps [`Session::closed`] from completing until it is dropped: what the connection's
    /// task holds while it still has to take the connection out of the places that list it.
    pub fn hold(&self) -> SessionHold<C> {
        self.0.ending.enter();
        SessionHold(self.clone())
    }

    /// Closes the connection with `close` once the answer of the call being served is queued,
    /// so that the caller gets its answer before the close frame, when called from one of
    /// this session's own procedures; anywhere else (another session's procedure, a task of
    /// its own), the close is asked for at once, and still follows what was queued before it.
    /// Returns false if the connection was already closing.
    pub fn close_after_answer(&self, close: Close) -> bool {
        let closer = self.0.outbound.closer();
        if closer.requested().is_some() {
            return false;
        }
        let deferred = AFTER_ANSWER
            .try_with(|after| {
                let own = after.own.same_as(&closer);
                if own {
                    after.close.set(Some(close.clone()));
                }
                own
            })
            .unwrap_or(false);
        // A procedure that finished at its first poll runs outside the scope, and is answered
        // on the connection's own task before its writer looks at the close.
        deferred || closer.request(close)
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        // Only map operations run under this lock: a poisoned lock still holds a valid map.
        self.0
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl<C: Context> Session<C> {
    /// A session that writes to `outbound` and serves the procedures of `registry`.
    pub fn new(
        protocol: Arc<dyn Protocol>,
        outbound: Outbox,
        registry: Arc<Registry<C>>,
        config: SessionConfig,
    ) -> Self {
        Self(Arc::new(Inner {
            protocol,
            outbound,
            registry,
            pending: Mutex::new(Pending {
                open: true,
                calls: HashMap::new(),
            }),
            running: Arc::new(Semaphore::new(config.max_running_calls)),
            ending: Ending::default(),
            next_stamp: AtomicU64::new(0),
            config,
        }))
    }

    /// Routes one message read from the connection. Calls are spawned (a slow procedure never
    /// stalls reading); message handlers run here, in order.
    ///
    /// # Errors
    /// [`ProtocolViolation`] when the connection must be closed with `wse.protocol-error`.
    pub fn dispatch(
        &self,
        ctx: &C,
        data: &[u8],
        kind: MessageKind,
    ) -> Result<(), ProtocolViolation> {
        self.route(ctx, data, kind, None)
    }

    /// Handles a message the connection may not have processed (it is over its rate limit):
    /// a call is answered with `refusal` at once, a one-way message is dropped, both are
    /// reported as [`Report::Throttled`]; responses to this side's calls still resolve.
    ///
    /// # Errors
    /// [`ProtocolViolation`], as [`Session::dispatch`].
    pub fn refuse(
        &self,
        ctx: &C,
        data: &[u8],
        kind: MessageKind,
        refusal: ErrorCode,
    ) -> Result<(), ProtocolViolation> {
        self.route(ctx, data, kind, Some(refusal))
    }

    fn route(
        &self,
        ctx: &C,
        data: &[u8],
        kind: MessageKind,
        refusal: Option<ErrorCode>,
    ) -> Result<(), ProtocolViolation> {
        let expected = self.0.protocol.message_kind();
        if kind != expected {
            return Err(UnpackError::WrongMessageKind {
                expected,
                got: kind,
            }
            .into());
        }
        let frame = self.0.protocol.unpack(data)?;
        match (frame.stamp(), frame.kind.as_ref()) {
            (Some(stamp), frame::RESPONSE | frame::RESPONSE_ERR) => {
                self.resolve(ctx, stamp, &frame);
                Ok(())
            }
            (_, kind) if frame::is_reserved(kind) => {
                Err(ProtocolViolation::ReservedType(kind.to_owned()))
            }
            (stamp, kind) if refusal.is_some() => {
                ctx.report(Report::Throttled { kind: kind.into() });
                if let (Some(stamp), Some(code)) = (stamp, refusal) {
                    CallClock(None).end(ctx, kind, CallOutcome::RateLimited);
                    self.reply_now(ctx, stamp, &RpcError::code(code).to_object(kind));
                }
                Ok(())
            }
            (Some(stamp), procedure) => {
                self.serve(ctx, procedure, stamp, frame.payload);
                Ok(())
            }
            (None, kind) => {
                self.deliver(ctx, kind, frame.payload);
                Ok(())
            }
        }
    }

    fn resolve(&self, ctx: &C, stamp: &str, frame: &RawFrame<'_>) {
        let Some(waiter) = self.lock_pending().calls.remove(stamp) else {
            ctx.report(Report::UnmatchedResponse {
                stamp: stamp.into(),
            });
            return;
        };
        let reply = if frame.kind == frame::RESPONSE {
            Ok(Bytes::copy_from_slice(frame.payload))
        } else {
            Err(self
                .0
                .protocol
                .decode::<ErrorObject>(frame.payload)
                .unwrap_or_else(|e| ErrorObject {
                    code: ErrorCode::MsgProcessingError.as_str().to_owned(),
                    message: Some(format!("malformed error object: {e}")),
                    details: None,
                }))
        };
        // The caller may have given up in the meantime; then nobody needs the reply.
        let _ = waiter.send(reply);
    }

    fn serve(&self, ctx: &C, procedure: &str, stamp: &str, payload: &[u8]) {
        // The snapshot is held while the procedure starts (up to its first wait), never while
        // it waits.
        // Every log line of the procedure carries these (and its connection's, on a server).
        let span = tracing::info_span!("wse_call", %procedure, %stamp);
        let clock = CallClock::start(ctx);
        let entries = self.0.registry.entries();
        let started = match entries.procedure(procedure) {
            Some(handler) => {
                let _in_call = span.enter();
                handler.start(ctx.clone(), &self.0.protocol, payload, stamp)
            }
            None => {
                clock.end(ctx, procedure, CallOutcome::NotRegistered);
                self.reply_now(ctx, stamp, &ErrorObject::from(ErrorCode::RpNotRegistered));
                if let Some(observer) = entries.unregistered() {
                    let observed = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        observer.handle(ctx.clone(), procedure, &*self.0.protocol, payload)
                    }));
                    report_handled(ctx, procedure, observed);
                }
                return;
            }
        };
        drop(entries);
        let started = match started {
            Ok(started) => started,
            Err(error) => {
                ctx.report(Report::InvalidPayload {
                    kind: procedure.into(),
                    error: error.clone(),
                });
                clock.end(ctx, procedure, CallOutcome::InvalidPayload);
                let object = RpcError::code(ErrorCode::RpInvalidPayload)
                    .with_message(error.0)
                    .to_object(procedure);
                self.reply_now(ctx, stamp, &object);
                return;
            }
        };
        // A procedure that finished at once is answered right here; one that waits moves into
        // a task of its own.
        let waiting = match started {
            Started::Waiting(waiting) => waiting,
            Started::Finished(result) => {
                let answered = answer(&*self.0.protocol, ctx, procedure, stamp, result, clock);
                let Some(frame) = answered else {
                    return;
                };
                match self.0.outbound.try_send(frame) {
                    Ok(()) => {}
                    Err(TrySendError::Full(frame)) => self.send_later(ctx, stamp, frame),
                    Err(TrySendError::Closed(_)) => ctx.report(Report::ReplyDropped {
                        stamp: stamp.into(),
                    }),
                }
                return;
            }
        };
        let Ok(permit) = Arc::clone(&self.0.running).try_acquire_owned() else {
            clock.end(ctx, procedure, CallOutcome::TooManyCalls);
            ctx.report(Report::TooManyCalls {
                procedure: procedure.into(),
            });
            self.reply_now(
                ctx,
                stamp,
                &RpcError::code(ErrorCode::RpTooManyCalls).to_object(procedure),
            );
            return;
        };
        let (ctx, procedure, stamp) = (ctx.clone(), procedure.to_owned(), stamp.to_owned());
        let (protocol, outbound) = (Arc::clone(&self.0.protocol), self.0.outbound.clone());
        let after = AfterAnswer {
            own: self.0.outbound.closer(),
            close: Cell::new(None),
        };
        let running = AFTER_ANSWER.scope(after, AssertUnwindSafe(waiting).catch_unwind());
        let alive = self.hold();
        tokio::spawn(async move {
            // In a block of its own, so that the procedure's future is dropped (and then the
            // token that counts it) before its end is reported or its answer waits for room.
            let finished = {
                let alive = alive;
                let mut running = std::pin::pin!(running);
                tokio::select! {
                    biased;
                    result = &mut running => {
                        let close_after = running.as_mut().take_value().and_then(|after| Some((after.own, after.close.into_inner()?)));
                        Some((result.unwrap_or_else(|_| Err(RpcError::panicked())), close_after))
                    }
                    () = alive.0.0.ending.cancelled() => None,
                }
            };
            let Some((result, close_after)) = finished else {
                clock.end(&ctx, &procedure, CallOutcome::Cancelled);
                ctx.report(Report::CallCancelled {
                    procedure: procedure.into(),
                });
                return;
            };
            if let Some(frame) = answer(&*protocol, &ctx, &procedure, &stamp, result, clock) {
                // Waiting here is bounded: this task holds one of `max_running_calls` permits.
                if outbound.send(frame).await.is_err() {
                    ctx.report(Report::ReplyDropped {
                        stamp: stamp.into(),
                    });
                }
            }
            if let Some((closer, close)) = close_after {
                closer.request(close);
            }
            drop(permit);
        }.instrument(span));
    }

    /// Queues a reply once the outbound queue has room, in a task holding one of the running
    /// calls' permits (so such tasks are bounded too); without a permit the reply is dropped.
    fn send_later(&self, ctx: &C, stamp: &str, frame: Bytes) {
        let Ok(permit) = Arc::clone(&self.0.running).try_acquire_owned() else {
            ctx.report(Report::ReplyDropped {
                stamp: stamp.into(),
            });
            return;
        };
        let (ctx, stamp, outbound) = (ctx.clone(), stamp.to_owned(), self.0.outbound.clone());
        tokio::spawn(async move {
            if outbound.send(frame).await.is_err() {
                ctx.report(Report::ReplyDropped {
                    stamp: stamp.into(),
                });
            }
            drop(permit);
        });
    }

    /// Answers a call with an error without running anything.
    fn reply_now(&self, ctx: &C, stamp: &str, error: &ErrorObject) {
        let sent = self
            .0
            .protocol
            .encode(frame::RESPONSE_ERR, error, Some(stamp))
            .ok()
            .is_some_and(|frame| self.0.outbound.try_send(Bytes::from(frame)).is_ok());
        if !sent {
            ctx.report(Report::ReplyDropped {
                stamp: stamp.into(),
            });
        }
    }

    fn deliver(&self, ctx: &C, kind: &str, payload: &[u8]) {
        let entries = self.0.registry.entries();
        let protocol = &*self.0.protocol;
        // A type's own handler first; the fallback only for types that have none.
        let handled = match (entries.handler(kind), entries.fallback()) {
            (Some(handler), _) => std::panic::catch_unwind(AssertUnwindSafe(|| {
                handler.handle(ctx.clone(), protocol, payload)
            })),
            (None, Some(fallback)) => std::panic::catch_unwind(AssertUnwindSafe(|| {
                fallback.handle(ctx.clone(), kind, protocol, payload)
            })),
            (None, None) => {
                ctx.report(Report::Ignored { kind: kind.into() });
                return;
            }
        };
        report_handled(ctx, kind, handled);
    }

    /// Queues a one-way message without waiting.
    ///
    /// # Errors
    /// [`SendError`]: the queue is full or closed, the type is invalid, or encoding failed.
    pub fn send<T: Serialize + ?Sized>(&self, kind: &str, payload: &T) -> Result<(), SendError> {
        if kind.is_empty() || frame::is_reserved(kind) {
            return Err(SendError::InvalidKind(kind.to_owned()));
        }
        let frame = self
            .0
            .protocol
            .encode(kind, payload, None)
            .map_err(|e| SendError::Encode(e.0))?;
        self.send_encoded(Bytes::from(frame))
    }

    /// Queues an already encoded frame without waiting.
    ///
    /// # Errors
    /// [`SendError::Full`] or [`SendError::Closed`].
    pub fn send_encoded(&self, frame: Bytes) -> Result<(), SendError> {
        self.0.outbound.try_send(frame).map_err(|e| match e {
            TrySendError::Full(_) => SendError::Full,
            TrySendError::Closed(_) => SendError::Closed,
        })
    }

    /// Calls `procedure` on the other side with the session's call timeout.
    ///
    /// The arguments are encoded before this returns; the returned future owns everything it
    /// needs. Dropping it cancels the wait (the entry is removed; a late answer is dropped).
    pub fn call<R, A>(
        &self,
        procedure: &str,
        args: &A,
    ) -> impl Future<Output = Result<R, CallError>> + Send + 'static + use<C, R, A>
    where
        R: DeserializeOwned,
        A: Serialize + ?Sized,
    {
        self.call_with_timeout(procedure, args, self.0.config.call_timeout)
    }

    /// Calls `procedure` on the other side, waiting at most `timeout` for the answer.
    pub fn call_with_timeout<R, A>(
        &self,
        procedure: &str,
        args: &A,
        timeout: Duration,
    ) -> impl Future<Output = Result<R, CallError>> + Send + 'static + use<C, R, A>
    where
        R: DeserializeOwned,
        A: Serialize + ?Sized,
    {
        let stamp = self.next_stamp();
        let prepared = if procedure.is_empty() || frame::is_reserved(procedure) {
            Err(CallError::InvalidName(procedure.to_owned()))
        } else {
            self.0
                .protocol
                .encode(procedure, args, Some(&stamp))
                .map(Bytes::from)
                .map_err(|e| CallError::Encode(e.0))
        };
        let session = self.clone();
        async move {
            let frame = prepared?;
            let (tx, rx) = oneshot::channel();
            {
                let mut pending = session.lock_pending();
                if !pending.open {
                    return Err(CallError::Disconnected);
                }
                if pending.calls.len() >= session.0.config.max_pending_calls {
                    return Err(CallError::TooManyPending);
                }
                // Insert before sending: the answer may arrive before `send` returns.
                pending.calls.insert(stamp.clone(), tx);
            }
            let _guard = PendingGuard {
                session: &session,
                stamp: &stamp,
            };
            let reply = tokio::time::timeout(timeout, async {
                session
                    .0
                    .outbound
                    .send(frame)
                    .await
                    .map_err(|_| CallError::Disconnected)?;
                rx.await.map_err(|_| CallError::Disconnected)
            })
            .await
            .map_err(|_| CallError::Timeout)??;
            match reply {
                Ok(raw) => session
                    .0
                    .protocol
                    .decode::<R>(&raw)
                    .map_err(|e| CallError::Decode(e.0)),
                Err(object) => Err(CallError::Remote(object)),
            }
        }
    }

    fn next_stamp(&self) -> String {
        // A counter is unique among this side's pending calls by construction, and cheaper
        // than drawing random characters; the peer treats stamps as opaque.
        const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut n = self.0.next_stamp.fetch_add(1, Ordering::Relaxed);
        let mut stamp = String::with_capacity(11);
        loop {
            stamp.push(char::from(DIGITS[(n % 62) as usize]));
            n /= 62;
            if n == 0 {
                break stamp;
            }
        }
    }
}

/// The response frame for a finished procedure: its result, or its error object (an
/// unexpected failure is reported here and sent without its cause). `None` when not even
/// the error can be encoded (reported as a dropped reply).
fn answer<C: Context>(
    protocol: &dyn Protocol,
    ctx: &C,
    procedure: &str,
    stamp: &str,
    result: Result<Vec<u8>, RpcError>,
    clock: CallClock,
) -> Option<Bytes> {
    let error = match result {
        Ok(frame) => {
            clock.end(ctx, procedure, CallOutcome::Ok);
            return Some(Bytes::from(frame));
        }
        Err(error) => error,
    };
    let outcome = if error.is_unexpected() {
        CallOutcome::Failed
    } else {
        CallOutcome::Error
    };
    clock.end(ctx, procedure, outcome);
    if error.is_unexpected() {
        ctx.report(Report::ProcedureFailed {
            procedure: procedure.into(),
            error: error.to_string(),
        });
    }
    match protocol.encode(
        frame::RESPONSE_ERR,
        &error.to_object(procedure),
        Some(stamp),
    ) {
        Ok(frame) => Some(Bytes::from(frame)),
        Err(_) => {
            ctx.report(Report::ReplyDropped {
                stamp: stamp.into(),
            });
            None
        }
    }
}

/// Removes a call's entry when its caller stops waiting, however it stops.
struct PendingGuard<'a, C> {
    session: &'a Session<C>,
    stamp: &'a str,
}

impl<C> Drop for PendingGuard<'_, C> {
    fn drop(&mut self) {
        self.session.lock_pending().calls.remove(self.stamp);
    }
}

#[cfg(test)]
mod tests;
