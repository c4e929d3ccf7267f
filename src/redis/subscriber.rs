//! The Redis side of the hub: receives publications from the subscriber
//! connection and hands them to the hub, and keeps the connection's
//! SUBSCRIBE set equal to the channels local clients want.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::redis::gap::Requests;
use crate::redis::health::{Health, Link, Links, Signal};
use crate::redis::reconcile::{self, Options, Outcome, MAX_PER_COMMAND};
use crate::redis::sharded::{next_event, Sharded};
use crate::redis::slots::Owners;

/// Pause before retrying a SUBSCRIBE that failed (Redis down or slow).
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// Moves publications from fred's broadcast channel into the hub. fred's
/// connection task is the Redis reader; this loop only dispatches, which
/// costs one try-push per subscriber. If it still falls behind, fred drops
/// messages (`Lagged`): they are counted and every channel is repaired from
/// its stream (`gap.rs`).
pub async fn run_receiver(
    client: SubscriberClient,
    hub: Arc<Hub>,
    repairs: Requests,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let mut rx = client.message_rx();
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            _ = cancel.cancelled() => return,
        };
        match msg {
            Ok(message) => {
                let payload: &[u8] = match &message.value {
                    Value::String(s) => s.as_bytes(),
                    Value::Bytes(b) => &b[..],
                    _ => {
                        metrics
                            .redis_messages_dropped
                            .get_or_create(&crate::metrics::ReasonLabel {
                                reason: "not_object",
                            })
                            .inc();
                        continue;
                    }
                };
                hub.dispatch(&message.channel, payload);
            }
            Err(RecvError::Lagged(n)) => {
                metrics.redis_messages_lagged.inc_by(n);
                // The lost ones left holes no window may serve a resume across.
                hub.forget_recent();
                tracing::warn!(
                    lost = n,
                    "hub lagged behind Redis pub/sub; repairing every channel from its stream"
                );
                hub.begin_repair_all();
                for channel in hub.wanted() {
                    let _ = repairs.send(channel);
                }
            }
            Err(RecvError::Closed) => {
                tracing::error!("Redis pub/sub channel closed");
                return;
            }
        }
    }
}

/// Applies wanted-state changes from the hub as SUBSCRIBE/UNSUBSCRIBE, in
/// batches (`reconcile.rs`), and resubscribes everything on each new
/// subscriber connection, reporting to the health monitor when a
/// connection's subscriptions are all confirmed (clients are told `up` only
/// then). Rounds are at least `options.interval` apart; once
/// `options.draining` is cancelled (SIGTERM), channels whose last client
/// left stay subscribed: the connection closes moments later anyway.
pub async fn run_reconciler(
    client: SubscriberClient,
    hub: Arc<Hub>,
    mut changes: mpsc::UnboundedReceiver<Arc<str>>,
    repairs: Requests,
    health: Health,
    options: Options,
    cancel: CancellationToken,
) {
    // When the next round of changes may go (see `redis.subscribe_batch_interval`).
    let mut next_round = Instant::now();
    let sharded = client.is_clustered();
    // In a Cluster, where each channel's slot lives, checked every second:
    // a slot that moved is subscribed again where it went, and repaired.
    let mut owners = Owners::default();
    // In a Cluster, which channels a node's dropped connection took.
    let mut shards = sharded.then(|| Sharded::new(&client));
    let mut slot_check = tokio::time::interval(crate::redis::slots::CHECK_EVERY);
    slot_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Failed changes, retried after RETRY_DELAY in order; kept here rather
    // than in spawned sleeps, so nothing outlives the reconciler.
    let mut retries: VecDeque<(Instant, Arc<str>)> = VecDeque::new();
    let mut links = health.links();
    let mut seen = Link::default();
    let mut subscribed: HashSet<Arc<str>> = HashSet::new();
    // Every wanted channel was subscribed once on a connection (a Cluster
    // from then on handles its nodes one by one).
    let mut synced = false;
    loop {
        let link = links.borrow_and_update().subscriber;
        if link != seen {
            let new_epoch = link.epoch != seen.epoch;
            seen = link;
            match shards.as_mut() {
                // A Cluster's drops and reconnects concern one node each:
                // only that node's channels are held and resubscribed.
                Some(s) if synced => {
                    s.drain(true, &hub, &mut owners, &mut subscribed);
                    if link.connected && new_epoch {
                        s.resubscribe_lost(&client, &hub, &mut owners, &mut subscribed, &repairs)
                            .await;
                        s.owe(link.epoch);
                    }
                }
                // A closed connection has no subscriptions left.
                _ if !link.connected => hub.set_all_unready(),
                // Epochs change only on reconnect: a new, empty connection.
                _ => {
                    match resync(&client, &hub, &mut subscribed, &mut links, link, &cancel).await {
                        Resync::Done => {
                            synced = true;
                            owners.record_all(&client, &subscribed);
                            if let Some(s) = shards.as_mut() {
                                s.drain(false, &hub, &mut owners, &mut subscribed);
                            }
                            for channel in subscribed.iter() {
                                let _ = repairs.send(channel.clone());
                            }
                            let signal = Signal::Resubscribed { epoch: link.epoch };
                            if health.report(signal).await.is_err() {
                                return;
                            }
                        }
                        Resync::Superseded => continue,
                        Resync::Cancelled => return,
                    }
                }
            }
        }
        if let Some(epoch) = shards.as_mut().and_then(Sharded::due_report) {
            if health.report(Signal::Resubscribed { epoch }).await.is_err() {
                return;
            }
        }
        let next_retry = retries.front().map(|(at, _)| *at);
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            r = links.changed() => { if r.is_err() { return } continue }
            Some(channel) = changes.recv() => channel,
            _ = sleep_until_some(next_retry) => match retries.pop_front() {
                Some((_, channel)) => channel,
                None => continue,
            },
            event = next_event(&mut shards) => {
                if let Some(s) = shards.as_mut() {
                    s.apply(event, &hub, &mut owners, &mut subscribed);
                }
                continue;
            }
            _ = slot_check.tick(), if synced && shards.is_some() => {
                if let Some(s) = shards.as_mut().filter(|s| s.retry_due(&client)) {
                    s.resubscribe_lost(&client, &hub, &mut owners, &mut subscribed, &repairs)
                        .await;
                }
                for channel in owners.moved(&client, &subscribed).await {
                    tracing::info!(%channel, "slot moved; subscribing where it went");
                    // Not live until subscribed on the new owner; held
                    // until repaired from the stream there.
                    hub.set_ready(&channel, false);
                    hub.begin_repair(&channel);
                    subscribed.remove(&channel);
                    let out = settle(&client, &hub, &mut subscribed, vec![channel.clone()], &options).await;
                    if !out.failed.is_empty() {
                        retries.push_back((Instant::now() + RETRY_DELAY, channel));
                    } else {
                        owners.record(&client, &channel);
                        let _ = repairs.send(channel);
                    }
                }
                continue;
            }
        };
        // Clients joining together (a rolling restart moving them here) queue
        // many channels at once: a round soon after the last one waits out
        // the interval, and they share one SUBSCRIBE and one PING.
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(next_round) => {}
        }
        let mut batch = vec![first];
        reconcile::gather(&mut batch, &mut changes, &mut retries);
        next_round = Instant::now() + options.interval;
        let out = settle(&client, &hub, &mut subscribed, batch, &options).await;
        for channel in out.failed {
            retries.push_back((Instant::now() + RETRY_DELAY, channel));
        }
        if let Some(s) = shards.as_mut() {
            for channel in &out.kept {
                s.settled(channel);
            }
        }
        for channel in out.done {
            if let Some(s) = shards.as_mut() {
                s.settled(&channel);
            }
            if hub.is_wanted(&channel) {
                // A new channel (or one wanted again) starts repairing: its
                // repair finds where its stream stands.
                owners.record(&client, &channel);
                let _ = repairs.send(channel);
            } else {
                owners.forget(&channel);
            }
        }
    }
}

/// How a resubscription ended.
enum Resync {
    /// Every channel wanted when it began is subscribed and confirmed.
    Done,
    /// The subscriber connection changed meanwhile; start over.
    Superseded,
    Cancelled,
}

/// SUBSCRIBEs every wanted channel on the connection of `link`, in batches,
/// then PINGs (why: `reconcile.rs`, `subscribe_all`); retried until it succeeds or
/// the connection changes. Channels dropped meanwhile are unsubscribed by
/// their queued change, channels added meanwhile subscribed by theirs.
async fn resync(
    client: &SubscriberClient,
    hub: &Hub,
    subscribed: &mut HashSet<Arc<str>>,
    links: &mut watch::Receiver<Links>,
    link: Link,
    cancel: &CancellationToken,
) -> Resync {
    hub.set_all_unready();
    subscribed.clear();
    loop {
        let wanted = hub.wanted();
        let attempt = async {
            if client.is_clustered() {
                // SSUBSCRIBE takes channels of one slot; fred routes each
                // to the node owning it and resolves on its reply.
                for channel in &wanted {
                    client.ssubscribe(&**channel).await?;
                }
                return Ok(());
            }
            for batch in wanted.chunks(MAX_PER_COMMAND) {
                let names: Vec<String> = batch.iter().map(|c| c.to_string()).collect();
                client.subscribe(names).await?;
            }
            let _: Value = client.ping(None).await?;
            Ok::<_, fred::error::Error>(())
        };
        let result = tokio::select! {
            _ = cancel.cancelled() => return Resync::Cancelled,
            r = attempt => r,
        };
        match result {
            Ok(()) => {
                for channel in wanted {
                    hub.set_ready(&channel, true);
                    subscribed.insert(channel);
                }
                tracing::info!(
                    epoch = link.epoch,
                    channels = subscribed.len(),
                    "Redis subscriptions confirmed"
                );
                return Resync::Done;
            }
            Err(e) => {
                tracing::warn!(error = %e, "resubscribing failed; will retry");
                let retry_at = tokio::time::Instant::now() + RETRY_DELAY;
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return Resync::Cancelled,
                        _ = tokio::time::sleep_until(retry_at) => break,
                        r = links.changed() => {
                            if r.is_err() {
                                return Resync::Cancelled;
                            }
                            if links.borrow().subscriber != link {
                                return Resync::Superseded;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Brings a batch of channels to their wanted state (`reconcile.rs`);
/// while draining, nothing is unsubscribed.
async fn settle(
    client: &SubscriberClient,
    hub: &Hub,
    subscribed: &mut HashSet<Arc<str>>,
    batch: Vec<Arc<str>>,
    options: &Options,
) -> Outcome {
    let draining = options.draining.is_cancelled();
    let plan = reconcile::plan(batch, |c| hub.is_wanted(c), subscribed, draining);
    reconcile::apply(client, hub, subscribed, plan, &options.metrics).await
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
