//! A node's life beside its connections: publishing what it queued, delivering what it hears,
//! renewing its place (and reaping nodes that stopped renewing theirs), and putting its
//! connections back when Redis lost them.

use std::sync::{Arc, PoisonError};

use bytes::Bytes;
use redis::aio::ConnectionManager;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;
use wse_server::{DeliveryError, NodeId};

use crate::config::ClusterEvent;
use crate::delivery::{Inner, flag, unavailable};
use crate::envelope::Envelope;
use crate::scripts::{self, Reply};

/// How many connections one relisting script takes: a node of 100,000 connections must not
/// hold Redis for one long script.
const RELIST_BATCH: usize = 500;

/// A subscribed connection and what it hears.
pub(crate) struct Subscriber {
    /// Kept for as long as the node listens: dropping it ends the subscription.
    _connection: ConnectionManager,
    pushes: mpsc::Receiver<PushInfo>,
}

/// Subscribes to the channels of every node and of this one, on a connection of its own that
/// subscribes again by itself after it reconnects.
pub(crate) async fn subscribe(
    inner: &Arc<Inner>,
    client: &redis::Client,
) -> Result<Subscriber, DeliveryError> {
    let (sender, pushes) = mpsc::channel::<PushInfo>(inner.config.queue);
    let lost = inner.metrics.lost_counter("receive_queue_full");
    // Called on the connection's driver: it must not wait, so a full queue drops.
    let forward = move |push: PushInfo| {
        if sender.try_send(push).is_err() {
            lost.increment(1);
        }
        Ok::<(), std::convert::Infallible>(())
    };
    let config = inner
        .manager_config()
        .set_push_sender(forward)
        .set_automatic_resubscription();
    let mut connection = inner
        .within(client.get_connection_manager_with_config(config))
        .await?;
    for channel in [inner.keys.to_all(), inner.keys.to_node(inner.node)] {
        inner.within(connection.subscribe(channel)).await?;
    }
    Ok(Subscriber {
        _connection: connection,
        pushes,
    })
}

/// Delivers what the other nodes publish, and notices the subscription break and come back.
pub(crate) async fn receive(inner: Arc<Inner>, mut subscriber: Subscriber) {
    let mut stop = inner.stop.subscribe();
    let mut broken = false;
    loop {
        let push = tokio::select! {
            push = subscriber.pushes.recv() => push,
            _ = stop.wait_for(|stop| *stop) => None,
        };
        let Some(push) = push else {
            return;
        };
        match push.kind {
            PushKind::Message => deliver(&inner, push.data),
            PushKind::Disconnection if !broken => {
                broken = true;
                inner.metrics.connected(false);
                tracing::warn!("lost the connection to redis; delivering on this node only");
                inner.emit(ClusterEvent::Disconnected);
            }
            PushKind::Subscribe if broken => {
                broken = false;
                inner.metrics.connected(true);
                tracing::info!("subscribed to redis again");
                inner.emit(ClusterEvent::Reconnected);
                // Redis may have come back empty: renew now rather than at the next beat, on
                // the renewing task, so that this one goes on reading.
                inner.renew_now.notify_one();
            }
            _ => {}
        }
    }
}

/// Applies one published message: `[channel, payload]`.
fn deliver(inner: &Arc<Inner>, data: Vec<Value>) {
    let Some(Value::BulkString(payload)) = data.into_iter().nth(1) else {
        return;
    };
    inner.metrics.received.increment(1);
    // Every node hears its own messages to every node: skipped before they are decoded.
    if Envelope::origin_of(&payload) == Some(inner.node) {
        return;
    }
    match Envelope::decode(Bytes::from(payload)) {
        Ok(envelope) => inner.apply(envelope),
        Err(malformed) => {
            inner.metrics.lost("malformed", 1);
            tracing::debug!(%malformed, "skipped a message on the cluster's channels");
        }
    }
}

/// The most messages one pipelined write publishes.
const PUBLISH_BATCH: usize = 256;

/// Publishes what this node queued, in order: whatever is queued when the last write is
/// answered goes in one pipelined write, so that a burst costs one round trip, not one per
/// message. When Redis fails, what is queued would fail too: it is dropped at once and
/// reported, so that senders find room again.
pub(crate) async fn publish(inner: Arc<Inner>, mut outbox: mpsc::Receiver<(String, Bytes)>) {
    let mut stop = inner.stop.subscribe();
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    loop {
        let stopping = tokio::select! {
            received = outbox.recv_many(&mut batch, PUBLISH_BATCH) => {
                if received == 0 {
                    return;
                }
                false
            }
            _ = stop.wait_for(|stop| *stop) => {
                // The goodbye: what the last releases queued (presence changes, say) still
                // goes out, in one write.
                while let Ok(queued) = outbox.try_recv() {
                    batch.push(queued);
                }
                true
            }
        };
        if batch.is_empty() {
            return;
        }
        let Ok(mut commands) = inner.commands() else {
            return;
        };
        let mut pipeline = redis::pipe();
        for (channel, payload) in &batch {
            pipeline
                .cmd("PUBLISH")
                .arg(channel)
                .arg(payload.as_ref())
                .ignore();
        }
        let messages = batch.len() as u64;
        batch.clear();
        let published: Result<(), _> = inner.within(pipeline.query_async(&mut commands)).await;
        match published {
            Ok(()) => inner.metrics.published.increment(messages),
            Err(error) => {
                let mut lost = messages;
                while outbox.try_recv().is_ok() {
                    lost += 1;
                }
                inner.metrics.lost("publish_failed", lost);
                inner.emit(ClusterEvent::Lost {
                    messages: lost,
                    reason: format!("publish failed: {error}"),
                });
            }
        }
        if stopping {
            return;
        }
    }
}

/// What a renewal found.
pub(crate) struct Renewal {
    /// Redis knew this node.
    known: bool,
    /// The nodes taken out, each with the users who went offline with it.
    gone: Vec<(NodeId, Vec<Arc<str>>)>,
    /// The new presence of each user who lost a device with them, as `touch` returns it.
    touched: Vec<String>,
    /// The users whose grace period ran out, taken offline by this node.
    swept: Vec<Arc<str>>,
}

/// Renews this node's place and reaps the nodes past their deadline.
pub(crate) async fn renew(inner: &Inner) -> Result<Renewal, DeliveryError> {
    let mut commands = inner.commands()?;
    let timeout_ms = u64::try_from(inner.config.node_timeout.as_millis()).unwrap_or(u64::MAX);
    let mut invocation = scripts::BEAT.prepare_invoke();
    invocation
        .key(inner.keys.nodes())
        .arg(inner.node.to_string())
        .arg(timeout_ms)
        .arg(inner.keys.prefix())
        .arg(inner.grace_ms());
    let reply: Vec<String> = inner.within(invocation.invoke_async(&mut commands)).await?;
    let known = flag(&reply, 0);
    let mut sections = Reply::new(reply.get(1..).unwrap_or_default());
    let malformed = || unavailable("a renewal's reply does not parse");
    let dead: usize = sections
        .item()
        .and_then(|count| count.parse().ok())
        .ok_or_else(malformed)?;
    let mut gone = Vec::with_capacity(dead.min(64));
    for _ in 0..dead {
        let node = sections.item().ok_or_else(malformed)?;
        let offline = sections.section().ok_or_else(malformed)?;
        if let Ok(node) = node.parse() {
            gone.push((
                node,
                offline
                    .iter()
                    .map(|user| Arc::from(user.as_str()))
                    .collect(),
            ));
        }
    }
    let touched = sections.section().ok_or_else(malformed)?.to_vec();
    let swept = sections.section().ok_or_else(malformed)?;
    let swept = swept.iter().map(|user| Arc::from(user.as_str())).collect();
    Ok(Renewal {
        known,
        gone,
        touched,
        swept,
    })
}

/// Acts on a renewal: lists this node's connections again when Redis did not know it,
/// reports the nodes gone, and retries the releases Redis did not take.
pub(crate) async fn after_renewal(inner: &Arc<Inner>, renewal: Renewal) {
    if !renewal.known {
        match relist(inner).await {
            Ok(0) => {}
            Ok(connections) => {
                inner.metrics.relisted.increment(connections as u64);
                tracing::warn!(
                    connections,
                    "redis did not know this node: listed its connections again"
                );
                inner.emit(ClusterEvent::Relisted { connections });
            }
            Err(error) => tracing::warn!(%error, "listing this node's connections again failed"),
        }
    }
    inner.announce_touched(&renewal.touched);
    for user in renewal.swept {
        inner.went_offline(user);
    }
    for (node, offline) in renewal.gone {
        for user in &offline {
            inner.went_offline(Arc::clone(user));
        }
        inner.metrics.nodes_gone.increment(1);
        tracing::warn!(%node, offline = offline.len(), "a node stopped renewing its place: taken out");
        inner.announce_gone(node);
        inner.emit(ClusterEvent::NodeGone { node, offline });
    }
    let unreleased = std::mem::take(
        &mut *inner
            .unreleased
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    for (id, user_id) in unreleased {
        match inner.release_shared(id, &user_id).await {
            Ok((_, true)) => inner.went_offline(user_id),
            Ok(_) => {}
            Err(_) => inner
                .unreleased
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((id, user_id)),
        }
    }
}

/// Lists every connection of this node in Redis again; returns how many were missing.
async fn relist(inner: &Arc<Inner>) -> Result<usize, DeliveryError> {
    let mut commands = inner.commands()?;
    let connections = inner.local.connections();
    let mut relisted = 0;
    for batch in connections.chunks(RELIST_BATCH) {
        let mut invocation = scripts::RELIST.prepare_invoke();
        invocation
            .key(inner.keys.node(inner.node))
            .key(inner.keys.users())
            .key(inner.keys.sequence())
            .arg(inner.keys.prefix());
        for connection in batch {
            invocation
                .arg(connection.id().to_string())
                .arg(connection.user_id());
        }
        let reply: Vec<String> = inner.within(invocation.invoke_async(&mut commands)).await?;
        let mut reply = Reply::new(&reply);
        relisted += reply
            .item()
            .and_then(|count| count.parse::<usize>().ok())
            .unwrap_or(0);
        inner.announce_touched(reply.section().unwrap_or_default());
    }
    Ok(relisted)
}

/// Renews this node every third of its timeout until the engine stops.
pub(crate) async fn renewing(inner: Arc<Inner>) {
    let mut stop = inner.stop.subscribe();
    let mut every = tokio::time::interval(inner.config.node_timeout / 3);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = inner.renew_now.notified() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        match renew(&inner).await {
            Ok(renewal) => after_renewal(&inner, renewal).await,
            Err(error) => tracing::debug!(%error, "renewing this node failed; retrying"),
        }
    }
}
