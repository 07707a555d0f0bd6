//! [`RedisDelivery`]: the delivery seam of one node of a cluster. Everything is done on this
//! node first, through its [`LocalDelivery`]; what concerns other nodes is published to them,
//! and what changes shared state (a user's devices under the limit) runs as one script.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::Value;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use wse_server::{
    Admission, CallError, Close, Connection, ConnectionId, Delivery, DeliveryError, ErrorCode,
    ErrorObject, Except, Joined, LocalDelivery, NodeId, Overflow, Packed, Presence, Profile,
    ProfileUpdate, Released, Target, UserLimit,
};

use crate::config::{ClusterEvent, RedisConfig};
use crate::envelope::{Body, Envelope, Membership};
use crate::keys::Keys;
use crate::metrics::Metrics;
use crate::node;
use crate::scripts::{self, Reply};

/// The delivery engine of one node of a cluster joined over Redis; made by
/// [`RedisConfig::delivery`]. See the crate's docs for what is cluster-wide and what each
/// guarantee is.
#[derive(Clone)]
pub struct RedisDelivery(pub(crate) Arc<Inner>);

impl std::fmt::Debug for RedisDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisDelivery")
            .field("node", &self.0.node)
            .field("prefix", &self.0.keys.prefix())
            .finish_non_exhaustive()
    }
}

/// A call waiting for another node's answer.
struct Waiting {
    node: NodeId,
    answer: oneshot::Sender<Result<Value, CallError>>,
}

/// How many nodes taken out a node remembers, to fail calls to them at once.
const GONE_REMEMBERED: usize = 64;

/// How much longer than the call's own timeout a caller waits for the answer to cross Redis
/// twice.
const CALL_TRANSIT: Duration = Duration::from_secs(1);

pub(crate) struct Inner {
    pub(crate) local: LocalDelivery,
    pub(crate) node: NodeId,
    pub(crate) keys: Keys,
    pub(crate) config: RedisConfig,
    pub(crate) metrics: Metrics,
    /// Commands; set when the engine starts.
    commands: OnceLock<ConnectionManager>,
    /// Messages waiting to be published, each with its channel.
    outbox: mpsc::Sender<(String, Bytes)>,
    /// The other end, taken by the publisher when the engine starts.
    outbox_rx: Mutex<Option<mpsc::Receiver<(String, Bytes)>>>,
    /// Connections whose release Redis did not take: retried on every renewal.
    pub(crate) unreleased: Mutex<Vec<(ConnectionId, Arc<str>)>>,
    /// Calls of this node waiting for an answer from another, by number.
    calls: Mutex<HashMap<u64, Waiting>>,
    next_call: AtomicU64,
    /// The nodes last taken out, newest last: a call to one of them fails at once.
    gone: Mutex<VecDeque<NodeId>>,
    /// Asks the renewing task for a renewal before its next beat.
    pub(crate) renew_now: Notify,
    /// Tells the background tasks to stop.
    pub(crate) stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// Redis was not reachable, or did not answer in time.
pub(crate) fn unavailable(error: impl std::fmt::Display) -> DeliveryError {
    DeliveryError::Unavailable(format!("redis: {error}"))
}

impl RedisDelivery {
    pub(crate) fn new(local: LocalDelivery, config: RedisConfig) -> Self {
        let (outbox, outbox_rx) = mpsc::channel(config.queue);
        let node = local.node();
        // Presence is the cluster's: each change is announced with the cluster's version.
        local.hand_over_presence();
        Self(Arc::new(Inner {
            node,
            keys: Keys::new(&config.prefix),
            metrics: Metrics::new(),
            local,
            config,
            commands: OnceLock::new(),
            outbox,
            outbox_rx: Mutex::new(Some(outbox_rx)),
            unreleased: Mutex::default(),
            calls: Mutex::default(),
            next_call: AtomicU64::new(1),
            gone: Mutex::default(),
            renew_now: Notify::new(),
            stop: watch::Sender::new(false),
            tasks: Mutex::default(),
        }))
    }

    /// This node's id, under which the others know it.
    pub fn node(&self) -> NodeId {
        self.0.node
    }
}

impl Inner {
    /// The Redis URL with RESP3, which pub/sub on a reconnecting connection needs.
    fn resp3_url(&self) -> String {
        let url = &self.config.url;
        if url.contains("protocol=") {
            url.clone()
        } else if url.contains('?') {
            format!("{url}&protocol=resp3")
        } else {
            format!("{url}?protocol=resp3")
        }
    }

    /// A connection that reconnects without end, each attempt at most half a second after
    /// the last: a node outlives any Redis outage.
    pub(crate) fn manager_config(&self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_number_of_retries(usize::MAX)
            .set_max_delay(Duration::from_millis(500))
            .set_connection_timeout(Some(self.config.command_timeout))
            .set_response_timeout(Some(self.config.command_timeout))
    }

    pub(crate) fn client(&self) -> Result<redis::Client, DeliveryError> {
        redis::Client::open(self.resp3_url()).map_err(unavailable)
    }

    pub(crate) fn commands(&self) -> Result<ConnectionManager, DeliveryError> {
        self.commands
            .get()
            .cloned()
            .ok_or_else(|| unavailable("the engine has not started"))
    }

    /// Runs `command` within the command timeout: a connection that is reconnecting makes
    /// commands wait for it, and nothing here may wait without end.
    pub(crate) async fn within<T>(
        &self,
        command: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, DeliveryError> {
        match tokio::time::timeout(self.config.command_timeout, command).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(unavailable(error)),
            Err(_) => Err(unavailable("no answer within the command timeout")),
        }
    }

    /// The presence grace period, in ms, as the scripts take it.
    pub(crate) fn grace_ms(&self) -> u64 {
        u64::try_from(self.config.presence_grace.as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs the offline hook for `user`, which went offline for the cluster and was claimed
    /// by this node.
    pub(crate) fn went_offline(&self, user: Arc<str>) {
        if let Some(hook) = &self.config.on_offline {
            tokio::spawn(hook(user));
        }
    }

    pub(crate) fn emit(&self, event: ClusterEvent) {
        let _ = self.config.events.send(event);
    }

    /// Queues `envelope` for `channel`; a full queue drops it.
    fn publish(&self, channel: String, body: Body) -> Result<(), DeliveryError> {
        let envelope = Envelope {
            origin: self.node,
            body,
        };
        match self.outbox.try_send((channel, envelope.encode())) {
            Ok(()) => Ok(()),
            Err(_) => {
                self.metrics.lost("publish_queue_full", 1);
                self.emit(ClusterEvent::Lost {
                    messages: 1,
                    reason: "publish queue full".to_owned(),
                });
                Err(unavailable("the publish queue is full"))
            }
        }
    }

    /// Publishes `body` to the other nodes `target` concerns: the one node that holds a
    /// connection, or every node; nothing for a connection of this node.
    fn forward(&self, target: &Target, body: impl FnOnce() -> Body) -> Result<(), DeliveryError> {
        let channel = match target {
            Target::Connection(id) if id.node() == self.node => return Ok(()),
            Target::Connection(id) => self.keys.to_node(id.node()),
            _ => self.keys.to_all(),
        };
        self.publish(channel, body())
    }

    /// Does here what another node published.
    pub(crate) fn apply(self: &Arc<Self>, envelope: Envelope) {
        if envelope.origin == self.node {
            return;
        }
        // A node taken for dead that speaks again (it was only slow, and listed itself
        // again) may be called again.
        self.gone
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|gone| *gone != envelope.origin);
        match envelope.body {
            Body::Send {
                target,
                except,
                packed,
            } => {
                self.local.send_now(&target, except.as_ref(), &packed);
            }
            Body::Disconnect {
                target,
                except,
                close,
            } => {
                self.local.disconnect_now(&target, except.as_ref(), &close);
            }
            Body::Evict { connection } => {
                self.local.evict_now(connection);
            }
            Body::Call {
                call,
                reply_to,
                connection,
                procedure,
                args,
                timeout_ms,
            } => self.answer(call, reply_to, connection, procedure, &args, timeout_ms),
            Body::Reply { call, outcome } => {
                let waiting = self
                    .calls
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&call);
                if let Some(waiting) = waiting {
                    let _ = waiting.answer.send(outcome_of(outcome));
                }
            }
            Body::NodeGone { node } => self.node_gone(node),
            Body::Membership(change) => self.follow(&change),
            Body::Presence(presence) => self.local.announce_presence(&presence),
        }
    }

    /// Tells every node's presence subscribers, this node's too.
    fn announce(&self, presence: Presence) {
        self.local.announce_presence(&presence);
        let _ = self.publish(self.keys.to_all(), Body::Presence(presence));
    }

    /// Announces the changes `touch` returned (6 strings each) that anyone sees.
    pub(crate) fn announce_touched(&self, touched: &[String]) {
        for change in touched.chunks_exact(6) {
            if change[0] == "1"
                && let Some(presence) = presence_of(&change[1..])
            {
                self.announce(presence);
            }
        }
    }

    /// What others see of `users` (all online users when empty), by Redis.
    async fn seen(&self, users: &[&str]) -> Result<Vec<Presence>, DeliveryError> {
        let mut commands = self.commands()?;
        let mut invocation = scripts::SEEN.prepare_invoke();
        invocation.key(self.keys.users()).arg(self.keys.prefix());
        for user in users {
            invocation.arg(*user);
        }
        let seen: Vec<String> = self.within(invocation.invoke_async(&mut commands)).await?;
        Ok(seen.chunks_exact(5).filter_map(presence_of).collect())
    }

    /// Makes this node's index follow a membership change the cluster made.
    fn follow(&self, change: &Membership) {
        let local = &self.local;
        match change {
            Membership::Join { connection, room } => {
                local.join_now(*connection, room, None);
            }
            Membership::Leave { connection, room } => {
                local.leave_now(*connection, room);
            }
            Membership::LeaveAll { connection } => {
                local.leave_all_now(*connection);
            }
            Membership::JoinUser { user, room } => {
                local.join_user_now(user, room);
            }
            Membership::LeaveUser { user, room } => {
                local.leave_user_now(user, room);
            }
        }
    }

    /// Applies `change` here when it concerns this node, else publishes it to the node of
    /// `connection` (`None`: every node, this one too).
    fn spread(&self, connection: Option<ConnectionId>, change: Membership) {
        match connection {
            Some(id) if id.node() == self.node => self.follow(&change),
            Some(id) => {
                // A lost change leaves that node's delivery behind Redis's membership until
                // the connection leaves: reported as lost.
                let _ = self.publish(self.keys.to_node(id.node()), Body::Membership(change));
            }
            None => {
                self.follow(&change);
                let _ = self.publish(self.keys.to_all(), Body::Membership(change));
            }
        }
    }

    /// Calls a procedure of a connection here for another node, and publishes the answer.
    fn answer(
        self: &Arc<Self>,
        call: u64,
        reply_to: NodeId,
        connection: ConnectionId,
        procedure: String,
        args: &[u8],
        timeout_ms: u64,
    ) {
        let args: Result<Value, _> = serde_json::from_slice(args);
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            let result = match args {
                Ok(args) => {
                    let timeout = Duration::from_millis(timeout_ms);
                    inner
                        .local
                        .call_here(connection, &procedure, &args, timeout)
                        .await
                }
                Err(error) => Err(CallError::Encode(error.to_string())),
            };
            let outcome = match result {
                Ok(value) => Ok(Bytes::from(serde_json::to_vec(&value).unwrap_or_default())),
                Err(error) => Err(Bytes::from(
                    serde_json::to_vec(&error_object(&error)).unwrap_or_default(),
                )),
            };
            let _ = inner.publish(inner.keys.to_node(reply_to), Body::Reply { call, outcome });
        });
    }

    /// Fails at once every call waiting on `node`, which was taken out, and remembers it.
    pub(crate) fn node_gone(&self, node: NodeId) {
        {
            let mut gone = self.gone.lock().unwrap_or_else(PoisonError::into_inner);
            if !gone.contains(&node) {
                if gone.len() == GONE_REMEMBERED {
                    gone.pop_front();
                }
                gone.push_back(node);
            }
        }
        let failed: Vec<Waiting> = {
            let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
            let ids: Vec<u64> = calls
                .iter()
                .filter(|(_, waiting)| waiting.node == node)
                .map(|(id, _)| *id)
                .collect();
            ids.iter().filter_map(|id| calls.remove(id)).collect()
        };
        for waiting in failed {
            let _ = waiting.answer.send(Err(CallError::Disconnected));
        }
    }

    /// Tells every node that `node` was taken out, this one too.
    pub(crate) fn announce_gone(&self, node: NodeId) {
        self.node_gone(node);
        let _ = self.publish(self.keys.to_all(), Body::NodeGone { node });
    }

    /// Calls `procedure` on a connection of another node.
    async fn call_elsewhere(
        &self,
        connection: ConnectionId,
        procedure: &str,
        args: &Value,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        let node = connection.node();
        if self
            .gone
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&node)
        {
            return Err(CallError::Disconnected);
        }
        let args = serde_json::to_vec(args).map_err(|e| CallError::Encode(e.to_string()))?;
        let call = self.next_call.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        {
            let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
            if calls.len() >= self.config.queue {
                return Err(CallError::TooManyPending);
            }
            calls.insert(call, Waiting { node, answer });
        }
        // Taken out again however this ends: answered, timed out, or dropped by the caller.
        let _forget = Forget { inner: self, call };
        let body = Body::Call {
            call,
            reply_to: self.node,
            connection,
            procedure: procedure.to_owned(),
            args: Bytes::from(args),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        if self.publish(self.keys.to_node(node), body).is_err() {
            return Err(CallError::Disconnected);
        }
        match tokio::time::timeout(timeout.saturating_add(CALL_TRANSIT), answered).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(CallError::Disconnected),
            Err(_) => Err(CallError::Timeout),
        }
    }

    /// Takes `id` of `user_id` out of Redis, and announces its user's presence change (also
    /// for a release retried later); `(listed, left)`.
    pub(crate) async fn release_shared(
        &self,
        id: ConnectionId,
        user_id: &str,
    ) -> Result<(bool, bool), DeliveryError> {
        let mut commands = self.commands()?;
        let mut invocation = scripts::RELEASE.prepare_invoke();
        invocation
            .key(self.keys.user(user_id))
            .key(self.keys.node(self.node))
            .key(self.keys.users())
            .arg(id.to_string())
            .arg(user_id)
            .arg(self.keys.prefix())
            .arg(self.grace_ms());
        let reply: Vec<String> = self.within(invocation.invoke_async(&mut commands)).await?;
        self.announce_touched(reply.get(2..).unwrap_or_default());
        Ok((flag(&reply, 0), flag(&reply, 1)))
    }

    /// Connects, subscribes, registers this node, and starts the background tasks.
    async fn start(self: &Arc<Self>) -> Result<(), DeliveryError> {
        let client = self.client()?;
        let commands = self
            .within(client.get_connection_manager_with_config(self.manager_config()))
            .await?;
        let _ = self.commands.set(commands);
        let subscriber = node::subscribe(self, &client).await?;
        let first = node::renew(self).await?;
        node::after_renewal(self, first).await;
        let outbox = self
            .outbox_rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(|| unavailable("the engine was started twice"))?;
        let tasks = [
            tokio::spawn(node::publish(Arc::clone(self), outbox)),
            tokio::spawn(node::receive(Arc::clone(self), subscriber)),
            tokio::spawn(node::renewing(Arc::clone(self))),
        ];
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(tasks);
        self.metrics.connected(true);
        Ok(())
    }

    /// Stops the tasks and takes this node out of the cluster.
    async fn close(&self) {
        self.stop.send_replace(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        // Each task ends at the stop (the publisher after its last write); one that cannot
        // within the command timeout is dropped.
        for mut task in tasks {
            if tokio::time::timeout(self.config.command_timeout, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
        if let Ok(mut commands) = self.commands() {
            let mut invocation = scripts::LEAVE.prepare_invoke();
            invocation
                .key(self.keys.nodes())
                .key(self.keys.node(self.node))
                .arg(self.node.to_string())
                .arg(self.keys.prefix())
                .arg(self.grace_ms());
            let left: Result<i64, _> = self.within(invocation.invoke_async(&mut commands)).await;
            if let Err(error) = left {
                tracing::warn!(%error, "this node could not leave the cluster; the others will reap it");
            }
        }
        self.metrics.connected(false);
    }
}

/// Takes a call out of the waiting ones when its caller stops waiting.
struct Forget<'a> {
    inner: &'a Inner,
    call: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.inner
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.call);
    }
}

/// A call's error as it crosses to the caller's node: its wire code, with what the device
/// sent.
fn error_object(error: &CallError) -> ErrorObject {
    match error {
        CallError::Remote(object) => object.clone(),
        other => ErrorObject::new(other.code()),
    }
}

/// The caller's side of a [`Body::Reply`].
fn outcome_of(outcome: Result<Bytes, Bytes>) -> Result<Value, CallError> {
    match outcome {
        Ok(result) => serde_json::from_slice(&result).map_err(|e| CallError::Decode(e.to_string())),
        Err(error) => {
            let object: ErrorObject = serde_json::from_slice(&error)
                .unwrap_or_else(|_| ErrorObject::new(ErrorCode::MsgProcessingError.as_str()));
            Err(match object.code.as_str() {
                code if code == ErrorCode::RpDisconnect.as_str() => CallError::Disconnected,
                code if code == ErrorCode::RpTimeout.as_str() => CallError::Timeout,
                code if code == ErrorCode::RpTooManyPending.as_str() => CallError::TooManyPending,
                _ => CallError::Remote(object),
            })
        }
    }
}

/// A presence from `{user, online, devices, alias, version}`.
fn presence_of(items: &[String]) -> Option<Presence> {
    let [user, online, devices, alias, version] = items else {
        return None;
    };
    Some(Presence {
        user: Arc::from(user.as_str()),
        online: online == "1",
        devices: devices.parse().ok()?,
        alias: alias.clone(),
        version: version.parse().ok()?,
    })
}

/// Names sorted, each once.
fn sorted_unique(names: impl IntoIterator<Item = String>) -> Vec<Arc<str>> {
    let mut names: Vec<String> = names.into_iter().collect();
    names.sort_unstable();
    names.dedup();
    names.into_iter().map(Arc::from).collect()
}

/// Whether the `at`-th string of a script's reply is `1`.
pub(crate) fn flag(reply: &[String], at: usize) -> bool {
    reply.get(at).is_some_and(|value| value == "1")
}

#[async_trait::async_trait]
impl Delivery for RedisDelivery {
    async fn start(&self) -> Result<(), DeliveryError> {
        self.0.start().await
    }

    async fn close(&self) {
        self.0.close().await;
    }

    fn send(
        &self,
        target: &Target,
        except: Option<&Except>,
        packed: &Packed,
    ) -> Result<usize, DeliveryError> {
        let here = self.0.local.send_now(target, except, packed);
        self.0.forward(target, || Body::Send {
            target: target.clone(),
            except: except.cloned(),
            packed: packed.clone(),
        })?;
        Ok(here)
    }

    fn disconnect(
        &self,
        target: &Target,
        except: Option<&Except>,
        close: &Close,
    ) -> Result<usize, DeliveryError> {
        let here = self.0.local.disconnect_now(target, except, close);
        self.0.forward(target, || Body::Disconnect {
            target: target.clone(),
            except: except.cloned(),
            close: close.clone(),
        })?;
        Ok(here)
    }

    async fn call(
        &self,
        connection: ConnectionId,
        procedure: &str,
        args: &Value,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        if connection.node() == self.0.node {
            return self
                .0
                .local
                .call_here(connection, procedure, args, timeout)
                .await;
        }
        self.0
            .call_elsewhere(connection, procedure, args, timeout)
            .await
    }

    async fn admit(
        &self,
        connection: &Connection,
        limit: UserLimit,
    ) -> Result<Admission, DeliveryError> {
        let inner = &self.0;
        let mut commands = inner.commands()?;
        let user_id = connection.user_id();
        // What its user starts with, if it is its first device in the cluster.
        let profile = connection.profile().unwrap_or_default();
        let mut invocation = scripts::ADMIT.prepare_invoke();
        invocation
            .key(inner.keys.user(user_id))
            .key(inner.keys.node(inner.node))
            .key(inner.keys.users())
            .key(inner.keys.sequence())
            .arg(connection.id().to_string())
            .arg(user_id)
            .arg(limit.max.max(1))
            .arg(u8::from(limit.overflow == Overflow::RefuseNewest))
            .arg(inner.keys.prefix())
            .arg(profile.alias().unwrap_or(""))
            .arg(u8::from(profile.is_available()))
            .arg(profile.public().to_string());
        let reply: Vec<String> = inner.within(invocation.invoke_async(&mut commands)).await?;
        if reply.first().is_some_and(|first| first == "refused") {
            return Ok(Admission::Refused);
        }
        let joined = flag(&reply, 0);
        // Listed here without a limit of its own: the cluster's verdict is the limit.
        let unlimited = UserLimit {
            max: usize::MAX,
            overflow: Overflow::CloseOldest,
        };
        inner.local.admit_now(connection, unlimited);
        let mut sections = Reply::new(reply.get(1..).unwrap_or_default());
        let evicted: Vec<ConnectionId> = sections
            .section()
            .unwrap_or_default()
            .iter()
            .filter_map(|id| id.parse().ok())
            .collect();
        // The rooms its user joined as a whole: this device is in them too.
        for room in sections.section().unwrap_or_default() {
            inner.local.join_user_now(user_id, room);
        }
        inner.announce_touched(sections.section().unwrap_or_default());
        for id in &evicted {
            if id.node() == inner.node {
                inner.local.evict_now(*id);
            } else {
                let channel = inner.keys.to_node(id.node());
                // A lost eviction leaves a device over the limit until it leaves: reported.
                let _ = inner.publish(channel, Body::Evict { connection: *id });
            }
        }
        Ok(Admission::Admitted { joined, evicted })
    }

    async fn release(&self, connection: &Connection) -> Result<Released, DeliveryError> {
        let inner = &self.0;
        let here = inner.local.release_now(connection);
        match inner
            .release_shared(connection.id(), connection.user_id())
            .await
        {
            Ok((listed, left)) => {
                if left {
                    inner.went_offline(Arc::from(connection.user_id()));
                }
                Ok(Released::new(listed || here.listed, left))
            }
            Err(error) => {
                // Retried on every renewal, so that a device does not stay listed in Redis
                // for as long as this node lives.
                inner
                    .unreleased
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((connection.id(), Arc::from(connection.user_id())));
                Err(error)
            }
        }
    }

    async fn join(
        &self,
        connection: ConnectionId,
        room: &str,
        limit: Option<usize>,
    ) -> Result<Joined, DeliveryError> {
        let inner = &self.0;
        let mut commands = inner.commands()?;
        let mut invocation = scripts::JOIN.prepare_invoke();
        invocation
            .key(inner.keys.room(room))
            .key(inner.keys.joined(connection))
            .key(inner.keys.node(connection.node()))
            .arg(connection.to_string())
            .arg(room)
            .arg(limit.map_or(-1, |limit| i64::try_from(limit).unwrap_or(i64::MAX)))
            .arg(inner.keys.prefix());
        let outcome: String = inner.within(invocation.invoke_async(&mut commands)).await?;
        Ok(match outcome.as_str() {
            "now" => {
                let room = room.to_owned();
                inner.spread(Some(connection), Membership::Join { connection, room });
                Joined::Now
            }
            "already" => Joined::Already,
            "limit" => Joined::AtLimit,
            _ => Joined::NotOpen,
        })
    }

    async fn leave(&self, connection: ConnectionId, room: &str) -> Result<bool, DeliveryError> {
        let inner = &self.0;
        let mut commands = inner.commands()?;
        let mut invocation = scripts::LEAVE_ROOM.prepare_invoke();
        invocation
            .key(inner.keys.room(room))
            .key(inner.keys.joined(connection))
            .arg(connection.to_string())
            .arg(room);
        let left: i64 = inner.within(invocation.invoke_async(&mut commands)).await?;
        if left == 1 {
            let room = room.to_owned();
            inner.spread(Some(connection), Membership::Leave { connection, room });
        }
        Ok(left == 1)
    }

    async fn leave_all(&self, connection: ConnectionId) -> Result<usize, DeliveryError> {
        let inner = &self.0;
        let mut commands = inner.commands()?;
        let mut invocation = scripts::LEAVE_ALL.prepare_invoke();
        invocation
            .arg(inner.keys.prefix())
            .arg(connection.to_string());
        let count: usize = inner.within(invocation.invoke_async(&mut commands)).await?;
        inner.spread(Some(connection), Membership::LeaveAll { connection });
        Ok(count)
    }

    async fn join_user(&self, user_id: &str, room: &str) -> Result<bool, DeliveryError> {
        let inner = &self.0;
        let mut commands = inner.commands()?;
        let mut invocation = scripts::JOIN_USER.prepare_invoke();
        invocation
            .key(inner.keys.users())
            .key(inner.keys.user_rooms(user_id))
            .key(inner.keys.room_users(room))
            .arg(user_id)
            .arg(room);
        let joined: i64 = inner.within(invocation.invoke_async(&mut commands)).await?;
        if joined == 1 {
            let change = Membership::JoinUser {
                user: user_id.to_owned(),
                room: room.to_owned(),
            };
            inner.spread(None, change);
        }
        Ok(joined == 1)
    }

    async fn leave_user(&self, user_id: &str, room: &str) -> Result<bool, DeliveryError> {
        let inner = &self.0;
        let mut commands = inner.commands()?;
        let mut invocation = scripts::LEAVE_USER.prepare_invoke();
        invocation
            .key(inner.keys.user_rooms(user_id))
            .key(inner.keys.room_users(room))
            .arg(user_id)
            .arg(room);
        let left: i64 = inner.within(invocation.invoke_async(&mut commands)).await?;
        if left == 1 {
            let change = Membership::LeaveUser {
                user: user_id.to_owned(),
                room: room.to_owned(),
            };
            inner.spread(None, change);
        }
        Ok(left == 1)
    }

    async fn devices(&self, user_id: &str) -> Result<Vec<ConnectionId>, DeliveryError> {
        let inner = &self.0;
        let mut commands = inner.commands()?;
        let key = inner.keys.user(user_id);
        let ids: Vec<String> = inner
            .within(
                redis::cmd("ZRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut commands),
            )
            .await?;
        Ok(ids.iter().filter_map(|id| id.parse().ok()).collect())
    }

    async fn users(&self) -> Result<Vec<Arc<str>>, DeliveryError> {
        let inner = &self.0;
        let mut commands = inner.commands()?;
        let mut users: Vec<String> = inner
            .within(
                redis::cmd("SMEMBERS")
                    .arg(inner.keys.users())
                    .query_async(&mut commands),
            )
            .await?;
        users.sort_unstable();
        Ok(users.into_iter().map(Arc::from).collect())
    }

    async fn members(&self, room: &str) -> Result<Vec<ConnectionId>, DeliveryError> {
        let inner = &self.0;
        let mut commands = inner.commands()?;
        let mut invocation = scripts::MEMBERS.prepare_invoke();
        invocation
            .key(inner.keys.room(room))
            .key(inner.keys.room_users(room))
            .arg(inner.keys.prefix());
        let ids: Vec<String> = inner.within(invocation.invoke_async(&mut commands)).await?;
        Ok(ids.iter().filter_map(|id| id.parse().ok()).collect())
    }

    async fn room_users(&self, room: &str) -> Result<Vec<Arc<str>>, DeliveryError> {
        let inner = &self.0;
        let mut commands = inner.commands()?;
        let mut pipeline = redis::pipe();
        pipeline
            .cmd("HVALS")
            .arg(inner.keys.room(room))
            .cmd("SMEMBERS")
            .arg(inner.keys.room_users(room));
        let (by_device, whole): (Vec<String>, Vec<String>) =
            inner.within(pipeline.query_async(&mut commands)).await?;
        Ok(sorted_unique(by_device.into_iter().chain(whole)))
    }

    async fn rooms_of(&self, connection: ConnectionId) -> Result<Vec<Arc<str>>, DeliveryError> {
        let inner = &self.0;
        let mut commands = inner.commands()?;
        let user: Option<String> = inner
            .within(
                redis::cmd("HGET")
                    .arg(inner.keys.node(connection.node()))
                    .arg(connection.to_string())
                    .query_async(&mut commands),
            )
            .await?;
        let Some(user) = user else {
            return Ok(Vec::new());
        };
        let mut pipeline = redis::pipe();
        pipeline
            .cmd("SMEMBERS")
            .arg(inner.keys.joined(connection))
            .cmd("SMEMBERS")
            .arg(inner.keys.user_rooms(&user));
        let (own, whole): (Vec<String>, Vec<String>) =
            inner.within(pipeline.query_async(&mut commands)).await?;
        Ok(sorted_unique(own.into_iter().chain(whole)))
    }

    async fn user_rooms(&self, user_id: &str) -> Result<Vec<Arc<str>>, DeliveryError> {
        let inner = &self.0;
        let mut commands = inner.commands()?;
        let rooms: Vec<String> = inner
            .within(
                redis::cmd("SMEMBERS")
                    .arg(inner.keys.user_rooms(user_id))
                    .query_async(&mut commands),
            )
            .await?;
        Ok(sorted_unique(rooms))
    }

    async fn counts(&self) -> Result<(usize, usize), DeliveryError> {
        let inner = &self.0;
        let mut commands = inner.commands()?;
        let nodes: Vec<String> = inner
            .within(
                redis::cmd("ZRANGE")
                    .arg(inner.keys.nodes())
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut commands),
            )
            .await?;
        let mut pipeline = redis::pipe();
        pipeline.cmd("SCARD").arg(inner.keys.users());
        for node in nodes.iter().filter_map(|node| node.parse::<NodeId>().ok()) {
            pipeline.cmd("HLEN").arg(inner.keys.node(node));
        }
        let counts: Vec<usize> = inner.within(pipeline.query_async(&mut commands)).await?;
        let users = counts.first().copied().unwrap_or(0);
        Ok((users, counts.iter().skip(1).sum()))
    }

    async fn presence(&self, user_id: &str) -> Result<Option<Presence>, DeliveryError> {
        Ok(self.0.seen(&[user_id]).await?.pop())
    }

    async fn profile(&self, user_id: &str) -> Result<Option<Profile>, DeliveryError> {
        let inner = &self.0;
        let mut commands = inner.commands()?;
        let mut pipeline = redis::pipe();
        pipeline
            .cmd("SISMEMBER")
            .arg(inner.keys.users())
            .arg(user_id)
            .cmd("HMGET")
            .arg(inner.keys.profile(user_id))
            .arg("alias")
            .arg("available")
            .arg("public");
        let (online, (alias, available, public)): (
            bool,
            (Option<String>, Option<String>, Option<String>),
        ) = inner.within(pipeline.query_async(&mut commands)).await?;
        if !online {
            return Ok(None);
        }
        let mut profile = Profile::new().with_availability(available.as_deref() != Some("0"));
        if let Some(alias) = alias {
            profile = profile.with_alias(alias);
        }
        if let Some(public) = public.and_then(|public| serde_json::from_str(&public).ok()) {
            profile = profile.with_public(public);
        }
        Ok(Some(profile))
    }

    async fn online(&self) -> Result<Vec<Presence>, DeliveryError> {
        let mut online: Vec<Presence> = self
            .0
            .seen(&[])
            .await?
            .into_iter()
            .filter(|presence| presence.online)
            .collect();
        online.sort_by(|a, b| a.user.cmp(&b.user));
        Ok(online)
    }

    async fn update_profile(
        &self,
        user_id: &str,
        update: &ProfileUpdate,
    ) -> Result<Option<Presence>, DeliveryError> {
        let inner = &self.0;
        let mut commands = inner.commands()?;
        let mut invocation = scripts::UPDATE_PROFILE.prepare_invoke();
        invocation
            .key(inner.keys.users())
            .key(inner.keys.profile(user_id))
            .arg(inner.keys.prefix())
            .arg(user_id)
            .arg(u8::from(update.alias.is_some()))
            .arg(update.alias.as_deref().unwrap_or(""))
            .arg(u8::from(update.available.is_some()))
            .arg(u8::from(update.available.unwrap_or(true)));
        let reply: Vec<String> = inner.within(invocation.invoke_async(&mut commands)).await?;
        let Some(touched) = reply.get(1..) else {
            return Ok(None);
        };
        inner.announce_touched(touched);
        Ok(touched.get(1..).and_then(presence_of))
    }

    async fn subscribe_presence(
        &self,
        connection: ConnectionId,
    ) -> Result<Option<Vec<Presence>>, DeliveryError> {
        // Subscribed first: a change announced meanwhile reaches it, and its version tells
        // the subscriber whether the list already holds it.
        if self.0.local.subscribe_presence_now(connection).is_none() {
            return Ok(None);
        }
        self.online().await.map(Some)
    }

    async fn unsubscribe_presence(&self, connection: ConnectionId) -> Result<bool, DeliveryError> {
        Ok(self.0.local.unsubscribe_presence_now(connection))
    }
}
