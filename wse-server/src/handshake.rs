//! From an accepted socket to an accepted connection: the upgrade request read and decided
//! about (upgrade.rs), `~wse:hi`, the challenge, identify, the welcome, and the delivery
//! engine's admission; or the refusal and its close.
//!
//! ```text
//! socket ─► upgrade (upgrade.rs) ─► ~wse:hi ─► [challenge] ─► identify
//!                                                                          │
//!                              listed under its user ◄─ ~wse:welcome ◄─────┘
//! ```

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::Role;
use wse_core::frame::{self, Hi};
use wse_core::outbox::Close;
use wse_core::transport::{Incoming, Link, message_data};
use wse_core::{CloseReason, MessageKind, Protocol, Session, SessionHold, close_code};

use crate::auth::{Accept, Answered, Decision, Handshake};
use crate::connection::{Connection, ConnectionId, Inner};
use crate::delivery::Admission;
use crate::events::{Event, Rejection};
use crate::limits::Ticket;
use crate::server::{Server, Shared};
use crate::serving::Listener;
use crate::upgrade::{
    HeadError, UpgradeRequest, Upgraded, answer, read_head, write_refusal, write_response,
};

/// An accepted connection and its socket, from the welcome to the end.
pub(crate) struct Open<S> {
    pub(crate) connection: Connection,
    pub(crate) link: Link<S>,
    /// This connection's place within the server's limits, held to the end.
    pub(crate) _ticket: Ticket,
    /// Whether the delivery engine has taken it out again; until then, dropping this (the
    /// future of [`Server::serve_io`] dropped, say) does it.
    pub(crate) released: bool,
    /// Keeps [`Connection::closed`] waiting until the connection is released.
    pub(crate) hold: Option<SessionHold<Connection>>,
}

impl<S> Drop for Open<S> {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let connection = self.connection.clone();
        connection.session().close();
        let hold = self.hold.take();
        let server = connection.server().clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to ask the engine in: this node's index at least lets it go.
            server.shared().local.release_now(&connection);
            return;
        };
        runtime.spawn(async move {
            let released = server.release(&connection).await;
            drop(hold);
            server.emit(Event::Disconnected {
                connection: connection.clone(),
                code: 1006,
                reason: String::new(),
            });
            if released.is_some_and(|released| released.left) {
                server.emit(Event::Left {
                    user_id: Arc::clone(connection.user_arc()),
                });
            }
            server.shared().metrics.closed(1006);
            server
                .disconnected(&connection, Close::new(1006, String::new()))
                .await;
        });
    }
}

/// Reads the upgrade request, decides about it, upgrades, runs the handshake, welcomes and
/// lists the connection: the connection, open; `None` when it was refused (and is closed by
/// now).
pub(crate) async fn establish<S>(
    server: Server,
    mut io: S,
    peer_addr: SocketAddr,
    listener: Option<Arc<Listener>>,
    id: ConnectionId,
) -> Option<Open<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let server = &server;
    let shared = server.shared();
    let refused = |reason| {
        server.emit(Event::Rejected {
            remote_addr: peer_addr,
            reason,
        });
        None
    };
    let mut ticket = match shared.gate.enter() {
        Ok(ticket) => ticket,
        Err(reason) => return refused(reason),
    };
    // A peer that is not a trusted proxy is the client: its address is counted before it may
    // send a byte, so that one address cannot hold every place with requests it never ends.
    if !shared.gatekeeper.trusts(peer_addr.ip())
        && let Err(reason) = ticket.count(peer_addr.ip())
    {
        return refused(reason);
    }
    let deadline = wse_core::transport::deadline(shared.config.handshake_timeout);
    let (head, rest) = match tokio::time::timeout_at(deadline, read_head(&mut io)).await {
        Ok(Ok(read)) => read,
        Ok(Err(HeadError::Gone(why))) => return refused(Rejection::Upgrade(why)),
        Ok(Err(HeadError::Malformed(status, why))) => {
            let answered = write_refusal(&mut io, status);
            let _ = tokio::time::timeout_at(deadline, answered).await;
            return refused(Rejection::Upgrade(why));
        }
        Err(_) => return refused(Rejection::HandshakeTimeout),
    };
    let switch = match answer(server, head, peer_addr, ticket, deadline).await {
        Ok(switch) => switch,
        Err(status) => {
            let answered = write_refusal(&mut io, status);
            let _ = tokio::time::timeout_at(deadline, answered).await;
            return None;
        }
    };
    let switched = write_response(&mut io, StatusCode::SWITCHING_PROTOCOLS, &switch.headers);
    let remote_addr = switch.upgraded.request.client_addr;
    upgraded_within(server, remote_addr, deadline, switched).await?;
    let ws = WebSocketStream::from_partially_read(
        io,
        rest,
        Role::Server,
        Some(shared.config.websocket()),
    )
    .await;
    accept_upgraded(server.clone(), ws, switch.upgraded, listener, id).await
}

/// Waits for `upgrade` until `deadline`; its failure, or the deadline, is reported as the
/// rejection it is.
pub(crate) async fn upgraded_within<T, E: fmt::Display>(
    server: &Server,
    remote_addr: SocketAddr,
    deadline: Instant,
    upgrade: impl Future<Output = Result<T, E>>,
) -> Option<T> {
    let reason = match tokio::time::timeout_at(deadline, upgrade).await {
        Ok(Ok(upgraded)) => return Some(upgraded),
        Ok(Err(error)) => Rejection::Upgrade(error.to_string()),
        Err(_) => Rejection::HandshakeTimeout,
    };
    server.emit(Event::Rejected {
        remote_addr,
        reason,
    });
    None
}

/// Who is handshaking: the connection's id, the client's address and its upgrade request.
struct Peer {
    connection_id: ConnectionId,
    remote_addr: SocketAddr,
    request: Arc<UpgradeRequest>,
}

/// The handshake after the upgrade: hi, challenge, identify, welcome, admission. `None` when
/// the connection was refused (and is closed by now).
pub(crate) async fn accept_upgraded<S>(
    server: Server,
    ws: WebSocketStream<S>,
    upgraded: Upgraded,
    listener: Option<Arc<Listener>>,
    id: ConnectionId,
) -> Option<Open<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let server = &server;
    let shared = server.shared();
    let Upgraded {
        ticket,
        chosen,
        deadline,
        request,
    } = upgraded;
    let remote_addr = request.client_addr;
    if request.client_addr != request.peer_addr {
        tracing::Span::current().record("remote", tracing::field::display(remote_addr));
    }
    let (chosen, offers) = match chosen {
        Ok(index) => (Some(index), Vec::new()),
        Err(offers) => (None, offers),
    };
    let codec = chosen.map(|index| {
        (
            Arc::clone(&shared.codecs[index]),
            Arc::clone(&shared.codec_names[index]),
        )
    });
    let kind = codec
        .as_ref()
        .map_or(MessageKind::Text, |(codec, _)| codec.message_kind());
    let mut link = Link::new(
        ws,
        kind,
        shared.config.outbound_queue,
        shared.config.close_timeout,
    );

    if let Some((_, name)) = &codec {
        tracing::Span::current().record("codec", tracing::field::display(name));
    }
    let outcome = match &codec {
        None => Err(Rejection::NoCommonProtocol {
            offered: offers,
            supported: shared.codecs.iter().map(|c| c.name().to_owned()).collect(),
        }),
        Some((codec, _)) => {
            let peer = Peer {
                connection_id: id,
                remote_addr,
                request,
            };
            handshake(shared, &mut link, codec, peer, deadline).await
        }
    };
    let (codec, codec_name, handshake, accept) = match (codec, outcome) {
        (Some((codec, name)), Ok((handshake, accept))) => (codec, name, handshake, accept),
        (_, outcome) => {
            let reason = outcome.err().unwrap_or(Rejection::Gone);
            reject(server, link, remote_addr, reason).await;
            return None;
        }
    };

    let session = Session::new(
        codec.clone(),
        link.outbox().clone(),
        Arc::clone(&shared.registry),
        shared.config.session,
    );
    let Accept {
        user_id,
        welcome,
        data,
        profile,
    } = *accept;
    let connection = Connection(Arc::new(Inner {
        id,
        user_id: Arc::from(user_id),
        data,
        profile,
        identity: handshake.identity,
        meta: handshake.meta,
        remote_addr,
        codec: codec_name,
        session,
        close: link.closer(),
        server: server.clone(),
        listener,
    }));
    // Welcome goes first: whatever is sent to the user once the connection is listed queues
    // behind it.
    let welcomed = codec
        .encode(frame::WELCOME, &welcome, None)
        .is_ok_and(|frame| link.outbox().try_send(frame.into()).is_ok());
    if !welcomed {
        let reason = Rejection::ProtocolError("welcome payload cannot be encoded".into());
        reject(server, link, remote_addr, reason).await;
        return None;
    }
    let admitted = tokio::time::timeout_at(
        deadline,
        shared
            .delivery
            .admit(&connection, shared.config.conn_per_user),
    )
    .await;
    let joined = match admitted {
        Ok(Ok(Admission::Admitted { joined, evicted })) => {
            let node = server.node_id();
            let evicted_here = evicted.iter().filter(|id| id.node() == node).count();
            shared.metrics.accepted(joined, evicted_here);
            joined
        }
        Ok(Ok(Admission::Refused)) => {
            link.discard_queued();
            reject(server, link, remote_addr, Rejection::UserLimit).await;
            return None;
        }
        failed => {
            // An engine that failed or was given up on may have listed it all the same (on
            // this node at least): take it out again.
            let release = shared.delivery.release(&connection);
            let _ = tokio::time::timeout(shared.config.close_timeout, release).await;
            let reason = match failed {
                Ok(Err(error)) => error.to_string(),
                _ => "no answer within the handshake timeout".to_owned(),
            };
            link.discard_queued();
            reject(server, link, remote_addr, Rejection::Unavailable(reason)).await;
            return None;
        }
    };
    tracing::Span::current().record("user", tracing::field::display(connection.user_id()));
    tracing::debug!("wse connection accepted");
    if joined {
        server.emit(Event::Joined {
            user_id: Arc::clone(connection.user_arc()),
        });
    }
    server.emit(Event::Connected {
        connection: connection.clone(),
    });
    // The listener or the server may have stopped while this connection was being accepted:
    // their shutdown found every connection listed before this one, and this one sees the
    // flag.
    let stopping = server.stopping()
        || connection
            .listener()
            .is_some_and(|listener| listener.stopping());
    if stopping {
        connection.close_with(close_code::SERVICE_RESTART, CloseReason::ByServer);
    }
    Some(Open {
        hold: Some(connection.session().hold()),
        connection,
        link,
        _ticket: ticket,
        released: false,
    })
}

/// Closes a connection that was not accepted, with the close reason its rejection calls for.
async fn reject<S: AsyncRead + AsyncWrite + Unpin>(
    server: &Server,
    mut link: Link<S>,
    remote_addr: SocketAddr,
    reason: Rejection,
) {
    let close = match reason {
        Rejection::NotAuthorized => {
            server.shared().gate.record_failure(remote_addr.ip());
            Some((close_code::NORMAL, CloseReason::NotAuthorized))
        }
        Rejection::NoCommonProtocol { .. }
        | Rejection::ProtocolError(_)
        | Rejection::HandshakeTimeout => Some((close_code::NORMAL, CloseReason::ProtocolError)),
        Rejection::UserLimit => Some((close_code::NORMAL, CloseReason::ClientsConcurrency)),
        Rejection::Unavailable(_) => Some((close_code::TRY_AGAIN_LATER, CloseReason::ByServer)),
        Rejection::Upgrade(_)
        | Rejection::Gone
        | Rejection::TooManyConnections
        | Rejection::OriginNotAllowed(_)
        | Rejection::Denied(_)
        | Rejection::TooManyFromAddress
        | Rejection::AuthThrottled => None,
    };
    if let Some((code, reason)) = close {
        link.closer().request(Close::new(code, reason));
    }
    // Reported now: the closing handshake may take up to the close timeout.
    server.emit(Event::Rejected {
        remote_addr,
        reason,
    });
    link.finish(server.shared().config.close_timeout).await;
}

/// Why the wait for a frame or a hook ended early.
fn interrupted(incoming: Incoming) -> Rejection {
    match incoming {
        Incoming::TimedOut => Rejection::HandshakeTimeout,
        Incoming::Data(_) | Incoming::Closed | Incoming::Failed(_) | Incoming::Closing => {
            Rejection::Gone
        }
    }
}

/// hi → [challenge] → identify. Returns what identify accepted.
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    link: &mut Link<S>,
    codec: &Arc<dyn Protocol>,
    peer: Peer,
    deadline: Instant,
) -> Result<(Handshake, Box<Accept>), Rejection> {
    let hi = expect_frame(link, codec, frame::HI, deadline).await?;
    let hi: Hi = codec
        .decode(&hi)
        .map_err(|e| Rejection::ProtocolError(format!("malformed ~wse:hi: {e}")))?;
    let mut handshake = Handshake {
        identity: hi.identity,
        meta: hi.meta,
        connection_id: peer.connection_id,
        remote_addr: peer.remote_addr,
        challenge: None,
        request: peer.request,
    };

    if let Some(challenge) = &shared.challenge {
        let quest = link
            .while_validating(challenge.quest(&handshake), deadline)
            .await
            .map_err(interrupted)?
            .ok_or(Rejection::NotAuthorized)?;
        let sent = match codec.encode(frame::CHALLENGE, &quest, None) {
            Ok(frame) => link.write([frame.into()]).await.is_ok(),
            Err(_) => return Err(Rejection::ProtocolError("quest cannot be encoded".into())),
        };
        if !sent {
            return Err(Rejection::Gone);
        }
        let response = expect_frame(link, codec, frame::CHALLENGE, deadline).await?;
        let response: Value = codec
            .decode(&response)
            .map_err(|e| Rejection::ProtocolError(format!("malformed challenge response: {e}")))?;
        let verified = link
            .while_validating(challenge.verify(&handshake, &quest, &response), deadline)
            .await
            .map_err(interrupted)?;
        if !verified {
            return Err(Rejection::NotAuthorized);
        }
        handshake.challenge = Some(Answered { quest, response });
    }

    match link
        .while_validating((shared.identify)(handshake.clone()), deadline)
        .await
        .map_err(interrupted)?
    {
        Decision::Accept(accept) if !accept.user_id.is_empty() => Ok((handshake, accept)),
        _ => Err(Rejection::NotAuthorized),
    }
}

/// The next frame, which must be of type `expected`; returns its encoded payload.
async fn expect_frame<S: AsyncRead + AsyncWrite + Unpin>(
    link: &mut Link<S>,
    codec: &Arc<dyn Protocol>,
    expected: &str,
    deadline: Instant,
) -> Result<Vec<u8>, Rejection> {
    let message = match link.next(deadline).await {
        Incoming::Data(message) => message,
        other => return Err(interrupted(other)),
    };
    let Some((kind, data)) = message_data(&message) else {
        return Err(Rejection::Gone);
    };
    if kind != codec.message_kind() {
        return Err(Rejection::ProtocolError(format!(
            "{kind:?} message on {}",
            codec.name()
        )));
    }
    let frame = codec
        .unpack(data)
        .map_err(|e| Rejection::ProtocolError(e.to_string()))?;
    if frame.kind != expected {
        return Err(Rejection::ProtocolError(format!(
            "expected {expected}, got {:?}",
            frame.kind
        )));
    }
    Ok(frame.payload.to_vec())
}
