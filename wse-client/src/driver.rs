//! The driver task: connects, serves the connection on the shared socket driver, and
//! reconnects as the policy says, until it gives up or the client is closed.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use wse_core::frame::Hi;
use wse_core::outbox::Close;
use wse_core::transport::{self, Dispatch, Ended};
use wse_core::{CloseReason, MessageKind, Session, close_code};

use crate::client::{Client, ClientEvent, ConnectError, Intent, Status};
use crate::handshake::{greet, open};
use crate::reconnect::Reconnect;

/// How one connection attempt ended.
struct Attempt {
    close: Close,
    /// Set when the connection ended before the welcome.
    failure: Option<ConnectError>,
}

/// Connects, serves, and reconnects as the policy says, until it gives up or the client is
/// closed.
pub(crate) async fn drive(client: Client) {
    let mut attempt = 0u32;
    loop {
        let (url, login) = {
            let state = client.state();
            (state.url.clone(), state.login.clone())
        };
        let (identity, meta) = login.unwrap_or_default();
        client.set_status(Status::Connecting);
        let ended = connect_once(&client, &url, identity, meta).await;
        let code = ended.close.code;
        client.emit(ClientEvent::Closed {
            code,
            reason: ended.close.reason.clone(),
        });
        if ended.failure.is_none() {
            attempt = 0;
        }

        let intent = std::mem::replace(&mut client.state().intent, Intent::Stay);
        let refused = ended.failure.as_ref().is_some_and(ConnectError::is_refusal);
        let retry = match intent {
            Intent::Close => None,
            Intent::Jump => Some(Duration::ZERO),
            Intent::Stay if refused => None,
            Intent::Stay if code == close_code::JUMP => Some(Duration::ZERO),
            Intent::Stay => client
                .0
                .config
                .reconnect
                .filter(|_| Reconnect::retries_after(code))
                .map(|policy| policy.delay(attempt)),
        };
        let Some(delay) = retry else {
            let failure = match intent {
                Intent::Close => ConnectError::ClientClosed,
                _ => ended.failure.unwrap_or(ConnectError::Closed {
                    code,
                    reason: ended.close.reason,
                }),
            };
            client.settle_waiters(&Err(failure));
            client.state().driving = false;
            client.set_status(if intent == Intent::Close {
                Status::Idle
            } else {
                Status::Offline
            });
            return;
        };
        client.set_status(Status::Reconnecting);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = client.0.wake.notified() => {}
        }
        if client.state().intent == Intent::Close {
            client.settle_waiters(&Err(ConnectError::ClientClosed));
            client.state().driving = false;
            client.set_status(Status::Idle);
            return;
        }
        attempt = attempt.saturating_add(1);
    }
}

/// One connection: open, handshake, serve until it ends, close.
async fn connect_once(client: &Client, url: &str, identity: Value, meta: Value) -> Attempt {
    let inner = &client.0;
    let config = &inner.config;
    // Saturating: a handshake timeout of `Duration::MAX` (no timeout) must not overflow the
    // clock, which would panic this task and leave `connect` waiting forever.
    let deadline = transport::deadline(config.handshake_timeout);
    let opening = tokio::time::timeout_at(deadline, open(client, url));
    let opened = tokio::select! {
        opened = opening => opened,
        // There is no socket to close yet: a close asked for meanwhile drops the opening
        // rather than waiting for the upgrade (up to the handshake timeout).
        // Told as the close it stands for (1000 wse.by-client), not as an abnormal one.
        () = closed_while_opening(client) => {
            return Attempt {
                close: Close::new(close_code::NORMAL, CloseReason::ByClient.as_str()),
                failure: Some(ConnectError::ClientClosed),
            };
        }
    };
    let mut link = match opened {
        Ok(Ok(link)) => link,
        Ok(Err(failure)) => return Attempt::failed(failure),
        Err(_) => return Attempt::failed(ConnectError::Timeout),
    };
    {
        let mut state = client.state();
        let closer = link.closer();
        // A close or a jump asked for while the socket was opening ends this attempt now.
        match state.intent {
            Intent::Close => {
                closer.request(Close::new(close_code::NORMAL, CloseReason::ByClient));
            }
            Intent::Jump => {
                closer.request(Close::new(close_code::JUMP, "jump"));
            }
            Intent::Stay => {}
        }
        state.close = Some(closer);
    }

    let welcome = greet(client, &mut link, &Hi::new(identity, meta), deadline).await;
    let mut ended = Ended::Closed;
    let failure = match welcome {
        Ok(welcome) => {
            let session = Session::new(
                Arc::clone(&inner.protocol),
                link.outbox().clone(),
                Arc::clone(&inner.registry),
                config.session,
            );
            client.state().session = Some(session.clone());
            client.set_status(Status::Ready);
            client.settle_waiters(&Ok(welcome.clone()));
            client.emit(ClientEvent::Ready { welcome });
            let mut routing = Routing {
                client,
                session: &session,
            };
            ended = link.serve(&mut routing, config.heartbeat).await;
            session.close();
            client.state().session = None;
            None
        }
        Err(failure) => Some(failure),
    };

    let closes = link.finish(ended.patience(config.close_timeout)).await;
    client.state().close = None;
    // As the JS client, judge by the code the server sent (or echoed).
    let close = closes.theirs_first();
    let failure = failure.map(|failure| match failure {
        ConnectError::Transport(_) if close.reason == CloseReason::NotAuthorized.as_str() => {
            ConnectError::NotAuthorized
        }
        other => other,
    });
    Attempt { close, failure }
}

/// Completes once the client is closed ([`Client::close`] wakes the driver after it says so).
/// A wake for a jump is taken here too, and changes nothing: the jump is acted on once the
/// socket is open, and the retry after it waits for nothing.
async fn closed_while_opening(client: &Client) {
    loop {
        if client.state().intent == Intent::Close {
            return;
        }
        client.0.wake.notified().await;
    }
}

impl Attempt {
    /// An attempt that failed before there was a socket to close.
    fn failed(failure: ConnectError) -> Self {
        Self {
            close: Close::new(1006, ""),
            failure: Some(failure),
        }
    }
}

/// What the client does with each message of a served connection: route it through the
/// engine; a frame that breaks the protocol is reported and skipped.
struct Routing<'a> {
    client: &'a Client,
    session: &'a Session<Client>,
}

impl Dispatch for Routing<'_> {
    fn message(&mut self, kind: MessageKind, data: &[u8]) -> ControlFlow<()> {
        if let Err(violation) = self.session.dispatch(self.client, data, kind) {
            self.client.emit(ClientEvent::ProtocolViolation(violation));
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::Value;

    use crate::{Client, ConnectError};

    #[tokio::test]
    async fn a_handshake_timeout_too_large_for_the_clock_is_no_timeout_not_a_panic() {
        // Nobody listens there: the connect fails at once, after the deadline is made.
        let free = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port");
        let client = Client::builder(format!("ws://{free}"))
            .handshake_timeout(Duration::MAX)
            .build();
        let connected = tokio::time::timeout(
            Duration::from_secs(10),
            client.connect(Value::Null, Value::Null),
        )
        .await
        .expect("the connect ends (its driver did not panic)");
        assert!(
            matches!(connected, Err(ConnectError::Transport(_))),
            "{connected:?}"
        );
    }

    #[tokio::test]
    async fn a_close_while_the_socket_opens_ends_the_connect_at_once() {
        // A server that takes the socket and never upgrades it.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let url = format!("ws://{}", silent.local_addr().expect("an address"));
        let client = Client::builder(url)
            .handshake_timeout(Duration::from_secs(60))
            .build();
        let connecting = tokio::spawn({
            let client = client.clone();
            async move { client.connect(Value::Null, Value::Null).await }
        });
        let _socket = silent.accept().await.expect("the client connects");
        tokio::time::timeout(Duration::from_secs(5), client.close("wse.by-client"))
            .await
            .expect("the close does not wait for the upgrade");
        let connected = connecting.await.expect("the connect ends");
        assert_eq!(connected, Err(ConnectError::ClientClosed));
        assert_eq!(client.status(), crate::Status::Idle);
    }
}
