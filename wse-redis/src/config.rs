//! [`RedisConfig`]: where the cluster's Redis is and how a node behaves towards it, and
//! [`ClusterEvent`]: what a node reports about it.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use wse_server::{LocalDelivery, NodeId};

use crate::delivery::RedisDelivery;

/// How a node joins a cluster over Redis. Hand it to the server's builder:
///
/// ```no_run
/// use std::time::Duration;
/// use wse_redis::RedisConfig;
/// use wse_server::{Decision, Server};
///
/// let cluster = RedisConfig::new("redis://127.0.0.1:6379/")
///     .prefix("chat")
///     .node_timeout(Duration::from_secs(5));
/// let mut events = cluster.events();
/// let server = Server::builder(|_| async { Decision::refuse() })
///     .delivery(move |local| cluster.delivery(local))
///     .build();
/// ```
#[derive(Clone)]
pub struct RedisConfig {
    pub(crate) url: String,
    pub(crate) prefix: String,
    pub(crate) node_timeout: Duration,
    pub(crate) presence_grace: Duration,
    pub(crate) on_offline: Option<OfflineHook>,
    pub(crate) command_timeout: Duration,
    pub(crate) queue: usize,
    pub(crate) events: broadcast::Sender<ClusterEvent>,
}

impl RedisConfig {
    /// A cluster on the Redis at `url` (`redis://host:port/db`, `rediss://` for TLS is not
    /// built in), with the defaults below.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "wse".to_owned(),
            node_timeout: Duration::from_secs(10),
            presence_grace: Duration::ZERO,
            on_offline: None,
            command_timeout: Duration::from_secs(2),
            queue: 4096,
            events: broadcast::channel(256).0,
        }
    }

    /// The prefix of every key and channel, so that several applications (or tests) share
    /// one Redis. Default: `wse`.
    ///
    /// # Panics
    /// If `prefix` is empty.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        assert!(!prefix.is_empty(), "the key prefix must not be empty");
        self.prefix = prefix;
        self
    }

    /// How long a node may go without renewing its place before the others take it for dead
    /// and take its connections out of their users (it renews every third of it). Default:
    /// 10 s.
    ///
    /// # Panics
    /// If `timeout` is under 30 ms.
    pub fn node_timeout(mut self, timeout: Duration) -> Self {
        assert!(
            timeout >= Duration::from_millis(30),
            "the node timeout must leave room for three renewals"
        );
        self.node_timeout = timeout;
        self
    }

    /// How long a user whose last device left stays online, for everyone, before it goes
    /// offline: a device that comes back within it (a page reload, a phone between cells)
    /// finds its user never left, with its rooms and profile. It goes offline at the first
    /// renewal of any node after the period, so up to a third of the node timeout later.
    /// With a grace period, `Event::Left` is not emitted (no node sees the user leave at
    /// the moment a device does): [`RedisConfig::on_offline`] is. Default: none.
    pub fn presence_grace(mut self, grace: Duration) -> Self {
        self.presence_grace = grace;
        self
    }

    /// Runs `hook` with a user's id when it goes offline for the cluster, on exactly one node:
    /// the one that released its last device, or took the node that held it out, or found
    /// its grace period over. Default: none.
    ///
    /// ```
    /// use wse_redis::RedisConfig;
    ///
    /// let cluster = RedisConfig::new("redis://127.0.0.1:6379/").on_offline(|user| async move {
    ///     println!("{user} went offline");
    /// });
    /// ```
    pub fn on_offline<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Arc<str>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_offline = Some(Arc::new(move |user| Box::pin(hook(user))));
        self
    }

    /// How long one Redis command may take before the operation fails with
    /// [`DeliveryError::Unavailable`](wse_server::DeliveryError::Unavailable) (the connection
    /// goes on reconnecting meanwhile). Default: 2 s.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// How many messages may wait to be published, and how many received ones may wait to be
    /// delivered on this node; past it a message is dropped, counted and reported
    /// ([`ClusterEvent::Lost`]), never queued without bound. Default: 4096.
    ///
    /// # Panics
    /// If `messages` is zero.
    pub fn queue(mut self, messages: usize) -> Self {
        assert!(messages > 0, "the queues need room for one message");
        self.queue = messages;
        self
    }

    /// What this node will report about the cluster, from now on.
    pub fn events(&self) -> broadcast::Receiver<ClusterEvent> {
        self.events.subscribe()
    }

    /// The delivery engine of a node: what [`Builder::delivery`](wse_server::Builder::delivery)
    /// wraps `local` in. It connects when the server starts serving.
    pub fn delivery(self, local: LocalDelivery) -> RedisDelivery {
        RedisDelivery::new(local, self)
    }
}

/// The offline hook, boxed.
pub(crate) type OfflineHook =
    Arc<dyn Fn(Arc<str>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("node_timeout", &self.node_timeout)
            .field("presence_grace", &self.presence_grace)
            .field("on_offline", &self.on_offline.is_some())
            .field("command_timeout", &self.command_timeout)
            .field("queue", &self.queue)
            .finish()
    }
}

/// What a node reports about the cluster and its Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterEvent {
    /// The connection to Redis broke: local delivery goes on; messages to and from the
    /// other nodes are lost until [`ClusterEvent::Reconnected`].
    Disconnected,
    /// Subscribed again after a break: what the other nodes published meanwhile was lost.
    Reconnected,
    /// Redis did not know this node (it restarted empty, or took this node for dead): its
    /// connections were listed again.
    Relisted {
        /// How many connections were missing and listed again.
        connections: usize,
    },
    /// A node stopped renewing its place and was taken out with its connections.
    NodeGone {
        /// The node.
        node: NodeId,
        /// The users who had no connection left with it.
        offline: Vec<Arc<str>>,
    },
    /// Messages to or from other nodes were dropped.
    Lost {
        /// How many.
        messages: u64,
        /// Why: `publish queue full`, `publish failed: ...`, `receive queue full`,
        /// `malformed: ...`.
        reason: String,
    },
}
