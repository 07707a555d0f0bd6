//! Who may connect: the identify step, challenge-response hooks and the built-in HMAC challenge.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use wse_core::HmacQuest;

use crate::connection::ConnectionId;
use crate::presence::Profile;
use crate::upgrade::UpgradeRequest;

/// A boxed future, as the hooks an application gives are kept.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What a connection presented before it is accepted: its `~wse:hi` and, with a challenge,
/// the quest it was given and its response.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Handshake {
    /// Whatever the client authenticates with (a token, a user name, a ticket).
    pub identity: Value,
    /// Optional data passed forward, not used to authenticate (`{}` when absent).
    pub meta: Value,
    /// The connection's id, unique on this server.
    pub connection_id: ConnectionId,
    /// The client's address: the socket's peer, or behind a trusted proxy the address
    /// `X-Forwarded-For` names ([`UpgradeRequest::client_addr`]).
    pub remote_addr: SocketAddr,
    /// The challenge this connection answered, when the server uses one (already checked by
    /// the [`Challenge`] hook).
    pub challenge: Option<Answered>,
    /// The HTTP request that asked for the upgrade: its path, query and headers (a session
    /// cookie, a bearer token in the query).
    pub request: Arc<UpgradeRequest>,
}

/// A quest and the client's response to it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Answered {
    /// What the server sent in `~wse:challenge`.
    pub quest: Value,
    /// What the client sent back.
    pub response: Value,
}

/// The identify step's verdict.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Accept the connection: as whom, with which welcome, and what it carries.
    Accept(Box<Accept>),
    /// Refuse: the connection is closed with 1000 `wse.not-authorized`.
    Refuse,
}

/// An accepted connection's user, welcome, typed data and profile.
#[derive(Clone)]
#[non_exhaustive]
pub struct Accept {
    /// The user this connection belongs to (the "cid"; it need not equal the identity). An
    /// empty id refuses the connection.
    pub user_id: String,
    /// The payload of `~wse:welcome`.
    pub welcome: Value,
    /// What [`Connection::data`](crate::Connection::data) hands every handler.
    pub(crate) data: Option<ConnectionData>,
    /// The user's profile, when this connection brings the user online (`None`: the
    /// default).
    pub(crate) profile: Option<Box<Profile>>,
}

/// Typed data attached to a connection at accept.
pub(crate) type ConnectionData = Arc<dyn Any + Send + Sync>;

impl fmt::Debug for Accept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accept")
            .field("user_id", &self.user_id)
            .field("welcome", &self.welcome)
            .field("data", &self.data.is_some())
            .field("profile", &self.profile)
            .finish()
    }
}

impl Accept {
    /// The profile identify gave, if not the default.
    pub fn profile(&self) -> Option<&Profile> {
        self.profile.as_deref()
    }

    /// Whether identify attached data ([`Decision::with_data`]).
    pub fn has_data(&self) -> bool {
        self.data.is_some()
    }
}

impl Decision {
    /// Accept as `user_id` with `welcome` data.
    pub fn accept(user_id: impl Into<String>, welcome: Value) -> Self {
        Self::Accept(Box::new(Accept {
            user_id: user_id.into(),
            welcome,
            data: None,
            profile: None,
        }))
    }

    /// Refuse the connection.
    pub fn refuse() -> Self {
        Self::Refuse
    }

    /// Attaches `data` to the accepted connection (the user's role, say, parsed once from the
    /// identity): every handler reads it with [`Connection::data`](crate::Connection::data).
    /// Nothing to do on a refusal.
    ///
    /// ```
    /// use serde_json::json;
    /// use wse_server::{Connection, Decision, NoArgs, Server};
    ///
    /// #[derive(Debug, PartialEq)]
    /// enum Role { Reader, Admin }
    ///
    /// let server = Server::builder(|hs| async move {
    ///     let role = if hs.identity == "root" { Role::Admin } else { Role::Reader };
    ///     Decision::accept("someone", json!({})).with_data(role)
    /// })
    /// .build();
    /// server.register("is_admin", |conn: Connection, NoArgs| async move {
    ///     Ok(conn.data::<Role>() == Some(&Role::Admin))
    /// }).unwrap();
    /// ```
    pub fn with_data<T: Any + Send + Sync>(mut self, data: T) -> Self {
        if let Self::Accept(accept) = &mut self {
            accept.data = Some(Arc::new(data));
        }
        self
    }

    /// The user's public profile, taken when this connection brings the user online (a user
    /// already online keeps its profile: change it with
    /// [`Server::update_profile`](crate::Server::update_profile)). Default: no alias,
    /// available, no public data. Nothing to do on a refusal.
    pub fn with_profile(mut self, profile: Profile) -> Self {
        if let Self::Accept(accept) = &mut self {
            accept.profile = Some(Box::new(profile));
        }
        self
    }
}

/// The identify step, boxed.
pub(crate) type Identify = Arc<dyn Fn(Handshake) -> BoxFuture<Decision> + Send + Sync>;

/// A challenge-response step run between `~wse:hi` and identify: any quest, any check.
///
/// The server sends `["~wse:challenge", quest, null]`, waits for the client's
/// `["~wse:challenge", response, null]`, and calls [`Challenge::verify`]; only a verified
/// connection reaches identify, which still sees quest and response in
/// [`Handshake::challenge`].
#[async_trait::async_trait]
pub trait Challenge: Send + Sync + 'static {
    /// The quest for this connection, or `None` to refuse it before any challenge.
    async fn quest(&self, handshake: &Handshake) -> Option<Value>;

    /// Whether `response` answers `quest`; `false` refuses the connection.
    async fn verify(&self, handshake: &Handshake, quest: &Value, response: &Value) -> bool;
}

/// The standard HMAC-SHA256 challenge of `PROTOCOL.md`, which the `wse` README's client snippet
/// solves unchanged.
///
/// The secret of each identity comes from an async look-up; identities without one are refused
/// before any challenge. Answers are compared in constant time; each quest (nonce) is accepted
/// at most once and only within its validity window, measured on this server's clock.
///
/// ```
/// use wse_server::HmacChallenge;
///
/// let challenge = HmacChallenge::new(|identity| async move {
///     (identity == "alice").then(|| b"alice's secret".to_vec())
/// });
/// ```
pub struct HmacChallenge {
    secret_of: Arc<dyn Fn(Value) -> BoxFuture<Option<Vec<u8>>> + Send + Sync>,
    validity: Duration,
    max_outstanding: usize,
    issued: Mutex<Ledger>,
}

/// Quests handed out and not yet answered, oldest first.
#[derive(Default)]
struct Ledger {
    by_nonce: HashMap<String, Issued>,
    order: VecDeque<(Instant, String)>,
}

struct Issued {
    secret: Vec<u8>,
    at: Instant,
}

impl fmt::Debug for HmacChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secrets.
        f.debug_struct("HmacChallenge")
            .field("validity", &self.validity)
            .field("max_outstanding", &self.max_outstanding)
            .finish_non_exhaustive()
    }
}

impl HmacChallenge {
    /// An HMAC challenge whose secrets come from `secret_of(identity)`.
    pub fn new<F, Fut>(secret_of: F) -> Self
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<Vec<u8>>> + Send + 'static,
    {
        Self {
            secret_of: Arc::new(move |identity| Box::pin(secret_of(identity))),
            validity: Duration::from_secs(30),
            max_outstanding: 100_000,
            issued: Mutex::default(),
        }
    }

    /// How long a quest may be answered after it was sent. Default: 30 s.
    ///
    /// # Panics
    /// If `validity` is zero.
    pub fn validity(mut self, validity: Duration) -> Self {
        assert!(!validity.is_zero(), "a quest must be valid for some time");
        self.validity = validity;
        self
    }

    /// How many quests may wait for an answer at once; past it new connections are refused
    /// until older quests are answered or expire. Default: 100,000.
    ///
    /// # Panics
    /// If `max` is zero.
    pub fn max_outstanding(mut self, max: usize) -> Self {
        assert!(max > 0, "at least one quest must be allowed");
        self.max_outstanding = max;
        self
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.issued.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Ledger {
    fn forget_expired(&mut self, now: Instant, validity: Duration) {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) <= validity {
                break;
            }
            if let Some((_, nonce)) = self.order.pop_front() {
                self.by_nonce.remove(&nonce);
            }
        }
    }
}

#[async_trait::async_trait]
impl Challenge for HmacChallenge {
    async fn quest(&self, handshake: &Handshake) -> Option<Value> {
        let secret = (self.secret_of)(handshake.identity.clone()).await?;
        let quest = HmacQuest::new();
        let now = Instant::now();
        let mut ledger = self.ledger();
        ledger.forget_expired(now, self.validity);
        if ledger.order.len() >= self.max_outstanding {
            return None;
        }
        ledger.order.push_back((now, quest.nonce.clone()));
        ledger
            .by_nonce
            .insert(quest.nonce.clone(), Issued { secret, at: now });
        drop(ledger);
        serde_json::to_value(quest).ok()
    }

    async fn verify(&self, _: &Handshake, quest: &Value, response: &Value) -> bool {
        let (Ok(quest), Some(answer)) = (
            serde_json::from_value::<HmacQuest>(quest.clone()),
            response.as_str(),
        ) else {
            return false;
        };
        // Taking the entry out makes the nonce single-use, whatever the outcome.
        let Some(issued) = self.ledger().by_nonce.remove(&quest.nonce) else {
            return false;
        };
        issued.at.elapsed() <= self.validity && quest.verify(&issued.secret, answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(identity: &str) -> Handshake {
        Handshake {
            identity: Value::from(identity),
            meta: Value::Null,
            connection_id: ConnectionId::new(crate::NodeId::from_u64(0), 1),
            remote_addr: SocketAddr::from(([127, 0, 0, 1], 9)),
            challenge: None,
            request: Arc::default(),
        }
    }

    fn challenge() -> HmacChallenge {
        HmacChallenge::new(|identity| async move {
            (identity == "ann").then(|| b"very-secret-key".to_vec())
        })
    }

    #[tokio::test]
    async fn a_quest_is_answered_once_and_secrets_never_show() {
        let challenge = challenge();
        let quest = challenge.quest(&handshake("ann")).await.unwrap();
        let parsed: HmacQuest = serde_json::from_value(quest.clone()).unwrap();
        let answer = Value::from(parsed.solve(b"very-secret-key"));
        assert!(!format!("{challenge:?}").contains("very-secret-key"));
        assert!(challenge.verify(&handshake("ann"), &quest, &answer).await);
        // The same quest and answer again: the nonce is spent.
        assert!(!challenge.verify(&handshake("ann"), &quest, &answer).await);
        assert!(challenge.quest(&handshake("bob")).await.is_none());
    }

    #[tokio::test]
    async fn a_forged_quest_is_refused_even_with_a_matching_answer() {
        let challenge = challenge();
        let forged = HmacQuest::new();
        let answer = Value::from(forged.solve(b"very-secret-key"));
        let quest = serde_json::to_value(&forged).unwrap();
        assert!(!challenge.verify(&handshake("ann"), &quest, &answer).await);
    }

    #[tokio::test(start_paused = true)]
    async fn quests_expire_and_outstanding_quests_are_bounded() {
        let challenge = challenge()
            .validity(Duration::from_secs(5))
            .max_outstanding(2);
        let first = challenge.quest(&handshake("ann")).await.unwrap();
        assert!(challenge.quest(&handshake("ann")).await.is_some());
        assert!(
            challenge.quest(&handshake("ann")).await.is_none(),
            "over the bound"
        );
        tokio::time::advance(Duration::from_secs(6)).await;
        let parsed: HmacQuest = serde_json::from_value(first.clone()).unwrap();
        let answer = Value::from(parsed.solve(b"very-secret-key"));
        assert!(
            !challenge.verify(&handshake("ann"), &first, &answer).await,
            "expired"
        );
        assert!(
            challenge.quest(&handshake("ann")).await.is_some(),
            "expired ones make room"
        );
    }
}
