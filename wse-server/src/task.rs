//! The connection task: one per accepted socket, from the upgrade to the last close frame.
//!
//! ```text
//! establish (handshake.rs) ─► Link::serve, routing each message through the rate limit
//!                             and the engine ─► released by the delivery engine ─► Link::finish
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Error as WsError;
use tracing::Instrument;
use wse_core::transport::{Dispatch, Ended};
use wse_core::{CloseReason, ErrorCode, MessageKind};

use crate::connection::{Connection, ConnectionId};
use crate::events::{Event, ServerError};
use crate::handshake::{Open, establish};
use crate::limits::{RATE_LIMITED, TokenBucket, Verdict};
use crate::server::Server;
use crate::serving::Listener;

/// Serves one accepted stream (TCP, TLS, in memory) to its end. `listener` is the listener
/// that accepted it, whose shutdown closes it.
pub(crate) fn run<S>(
    server: Server,
    io: S,
    remote_addr: SocketAddr,
    listener: Option<Arc<Listener>>,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let id = server.shared().next_connection_id();
    let establishing = establish(server.clone(), io, remote_addr, listener, id);
    serve_connection(&server, id, remote_addr, establishing)
}

/// The connection task's future around `establishing`, the handshake of connection `id`
/// however its upgrade is done: counted among the server's tasks, and in the connection's
/// span.
pub(crate) fn serve_connection<S, F>(
    server: &Server,
    id: ConnectionId,
    remote_addr: SocketAddr,
    establishing: F,
) -> impl Future<Output = ()> + Send + 'static + use<S, F>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Future<Output = Option<Open<S>>> + Send + 'static,
{
    let running = server.shared().tasks.enter();
    // Every log line of the connection, its handlers' included, carries these; the user and
    // the codec are recorded once known.
    let span = tracing::info_span!(
        "wse_connection",
        connection = %id,
        remote = %remote_addr,
        user = tracing::field::Empty,
        codec = tracing::field::Empty,
    );
    // Boxed, and made here rather than in the task's future: the upgrade and the handshake
    // are large and over at the welcome, and the task, which lives as long as the
    // connection, keeps only what an open connection needs.
    let establishing = Box::pin(establishing);
    async move {
        let _running = running;
        // A statement of its own: the finished handshake's box is freed at its end.
        let Some(mut open) = establishing.await else {
            return;
        };
        open.serve().await;
    }
    .instrument(span)
}

impl<S: AsyncRead + AsyncWrite + Unpin> Open<S> {
    // By reference: moved into the future, the connection's state would take its room twice.
    async fn serve(&mut self) {
        let (connection, link) = (&self.connection, &mut self.link);
        let server = connection.server();
        let config = &server.shared().config;
        let mut dispatch = Routing {
            connection,
            bucket: config
                .rate_limit
                .map(|limit| TokenBucket::new(limit, Instant::now())),
            uncounted: (0, 0),
        };
        let ended = link.serve(&mut dispatch, config.heartbeat).await;
        dispatch.count_received();
        if ended == Ended::Stuck {
            server.emit(Event::Error {
                connection_id: Some(connection.id()),
                error: ServerError::SlowConsumer,
            });
        }

        // Calls waiting on this device fail now, and sends to its user skip it, rather than
        // after the closing handshake.
        connection.session().close();
        let left = server
            .release(connection)
            .await
            .is_some_and(|released| released.left);
        self.released = true;
        self.hold = None;
        // Boxed: the closing handshake is brief, and large.
        let closes = Box::pin(link.finish(ended.patience(config.close_timeout))).await;
        let close = closes.ours_first();
        tracing::debug!(code = close.code, reason = %close.reason, "wse connection closed");
        server.shared().metrics.closed(close.code);
        server.emit(Event::Disconnected {
            connection: connection.clone(),
            code: close.code,
            reason: close.reason.clone(),
        });
        if left {
            server.emit(Event::Left {
                user_id: Arc::clone(connection.user_arc()),
            });
        }
        server.disconnected(connection, close).await;
    }
}

/// How many received messages a connection counts by itself before it adds them to the
/// shared counters (it also does whenever it writes, and when it ends).
const UNCOUNTED_MAX: u64 = 64;

/// What a served connection does with each message: the rate limit, then the engine.
struct Routing<'a> {
    connection: &'a Connection,
    /// The connection's inbound rate limit, when the server has one.
    bucket: Option<TokenBucket>,
    /// Messages and bytes received and not yet added to the shared counters: two atomic adds
    /// per message on counters every core writes cost more than the rest of the counting.
    uncounted: (u64, u64),
}

impl Routing<'_> {
    fn count_received(&mut self) {
        let (messages, bytes) = std::mem::take(&mut self.uncounted);
        if messages > 0 {
            let metrics = &self.connection.server().shared().metrics;
            metrics.received(messages, bytes);
        }
    }
}

impl Dispatch for Routing<'_> {
    fn message(&mut self, kind: MessageKind, data: &[u8]) -> ControlFlow<()> {
        self.uncounted.0 += 1;
        self.uncounted.1 += data.len() as u64;
        if self.uncounted.0 >= UNCOUNTED_MAX {
            self.count_received();
        }
        let connection = self.connection;
        let session = connection.session();
        let metrics = &connection.server().shared().metrics;
        let verdict = self
            .bucket
            .as_mut()
            .map_or(Verdict::Admit, |bucket| bucket.take(Instant::now()));
        let routed = match verdict {
            Verdict::Admit => session.dispatch(connection, data, kind),
            Verdict::Refuse | Verdict::Abuse => {
                metrics.rate_limited();
                session.refuse(connection, data, kind, ErrorCode::RateLimited)
            }
        };
        if let Err(violation) = routed {
            connection.close(CloseReason::ProtocolError);
            connection.server().emit(Event::Error {
                connection_id: Some(connection.id()),
                error: ServerError::ProtocolViolation(violation),
            });
            return ControlFlow::Break(());
        }
        if verdict == Verdict::Abuse {
            connection.close_with(RATE_LIMITED.0, RATE_LIMITED.1);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    fn writing(&mut self, frames: usize, bytes: usize) {
        self.count_received();
        self.connection
            .server()
            .shared()
            .metrics
            .sent(frames, bytes);
    }

    fn read_failed(&mut self, error: &WsError) {
        self.connection.server().emit(Event::Error {
            connection_id: Some(self.connection.id()),
            error: ServerError::Transport(error.to_string()),
        });
    }
}
