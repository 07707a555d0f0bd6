//! [`Builder`]: every setting of a [`Client`], each with its default.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use wse_core::transport::Heartbeat;
use wse_core::{HmacQuest, Json, Protocol, SessionConfig};

use crate::client::Client;
use crate::reconnect::Reconnect;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
/// A challenge solver, boxed.
pub(crate) type Solver = Arc<dyn Fn(Value) -> BoxFuture<Result<Value, String>> + Send + Sync>;

/// Builds a [`Client`].
#[must_use]
pub struct Builder {
    pub(crate) url: String,
    pub(crate) protocol: Arc<dyn Protocol>,
    pub(crate) solver: Option<Solver>,
    pub(crate) config: Config,
    #[cfg(feature = "rustls")]
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("url", &self.url)
            .field("protocol", &self.protocol.name())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The settings of a client; see [`Builder`] for each default.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    pub(crate) session: SessionConfig,
    pub(crate) handshake_timeout: Duration,
    pub(crate) close_timeout: Duration,
    pub(crate) outbound_queue: usize,
    pub(crate) max_message_size: usize,
    pub(crate) reconnect: Option<Reconnect>,
    pub(crate) heartbeat: Option<Heartbeat>,
}

impl Builder {
    /// A builder for a client of the server at `url`, every setting at its default.
    pub(crate) fn new(url: String) -> Self {
        Self {
            url,
            protocol: Arc::new(Json),
            solver: None,
            #[cfg(feature = "rustls")]
            tls: None,
            config: Config {
                session: SessionConfig::default(),
                handshake_timeout: Duration::from_secs(10),
                close_timeout: Duration::from_secs(5),
                outbound_queue: 1024,
                max_message_size: 16 << 20,
                reconnect: None,
                heartbeat: Some(Heartbeat::default()),
            },
        }
    }

    /// Speak `protocol` (default [`Json`]); the server must offer it.
    pub fn protocol(mut self, protocol: impl Protocol) -> Self {
        self.protocol = Arc::new(protocol);
        self
    }

    /// How long a call waits for its answer unless the call says otherwise. Default: 20 s.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.config.session.call_timeout = timeout;
        self
    }

    /// How many calls of this client may wait for an answer at once; past it a call fails
    /// with `wse.client.rp.too-many-pending`. Default: 1024.
    ///
    /// # Panics
    /// If `max` is zero.
    pub fn max_pending_calls(mut self, max: usize) -> Self {
        assert!(max > 0, "max_pending_calls must be at least 1");
        self.config.session.max_pending_calls = max;
        self
    }

    /// How many of the server's calls to this client's procedures may be waiting at once (one
    /// that finishes without waiting never counts); past it a call is refused with
    /// `wse.server.rp.too-many-calls`. Default: 1024.
    ///
    /// # Panics
    /// If `max` is zero.
    pub fn max_running_calls(mut self, max: usize) -> Self {
        assert!(max > 0, "max_running_calls must be at least 1");
        self.config.session.max_running_calls = max;
        self
    }

    /// How long connect → welcome may take (including the challenge). Default: 10 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.config.handshake_timeout = timeout;
        self
    }

    /// How long to wait for the server's answer to a close frame, and how long a write may
    /// wait for the server to take its next frame before the connection is closed with 1013
    /// `wse.slow-consumer` (which reconnects when enabled). Default: 5 s.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.config.close_timeout = timeout;
        self
    }

    /// How many frames may wait to be written; a full queue fails `send` with
    /// [`SendError::Full`](crate::SendError::Full) and makes calls wait. Default: 1024.
    ///
    /// # Panics
    /// If `frames` is zero.
    pub fn outbound_queue(mut self, frames: usize) -> Self {
        assert!(frames > 0, "the outbound queue needs room for one frame");
        self.config.outbound_queue = frames;
        self
    }

    /// The largest message the server may send. Default: 16 MiB.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.config.max_message_size = bytes;
        self
    }

    /// Reconnect automatically after the close codes of the protocol, with `policy`'s backoff.
    /// Default: off (a jump, close code 4000, reconnects anyway).
    pub fn reconnect(mut self, policy: Reconnect) -> Self {
        self.config.reconnect = Some(policy);
        self
    }

    /// Ping a server that has been quiet, and close (1011 `wse.heartbeat-timeout`, which
    /// reconnects when enabled) one silent past the timeout, or `None` for no heartbeat.
    /// Default: ping after 25 s of quiet, give up after 60 s of silence.
    ///
    /// # Panics
    /// If the interval is zero or longer than the timeout.
    pub fn heartbeat(mut self, heartbeat: Option<Heartbeat>) -> Self {
        self.config.heartbeat = heartbeat.map(Heartbeat::checked);
        self
    }

    /// Answer the server's challenge with `solver(quest)`. An `Err` closes the connection and
    /// fails the connect with [`ConnectError::Challenge`](crate::ConnectError::Challenge).
    pub fn challenge<F, Fut>(mut self, solver: F) -> Self
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, String>> + Send + 'static,
    {
        self.solver = Some(Arc::new(move |quest| Box::pin(solver(quest))));
        self
    }

    /// Use `config` for `wss://` URLs (e.g. to trust a private certificate authority).
    /// Default: the webpki roots.
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Answer the standard HMAC challenge with `secret`.
    pub fn hmac_secret(self, secret: impl Into<Vec<u8>>) -> Self {
        let secret: Arc<[u8]> = Arc::from(secret.into());
        self.challenge(move |quest| {
            let secret = Arc::clone(&secret);
            async move {
                let quest: HmacQuest =
                    serde_json::from_value(quest).map_err(|e| format!("not an HMAC quest: {e}"))?;
                Ok(Value::String(quest.solve(&secret)))
            }
        })
    }

    /// The client (not connected yet).
    pub fn build(self) -> Client {
        Client::new(self)
    }
}
