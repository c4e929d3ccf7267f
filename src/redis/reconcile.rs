//! Brings a batch of channels to their wanted state on the subscriber
//! connection: every newly wanted channel in one `SUBSCRIBE` (at most
//! [`MAX_PER_COMMAND`] channels per command) confirmed by one `PING`, every
//! unwanted one in one `UNSUBSCRIBE`. When many clients of many personas
//! arrive at once (a rolling restart moving thousands of them here), that is
//! a few commands per batch instead of three per channel.
//!
//! [`plan`] sorts a batch (pure, unit-tested); [`apply`] sends it.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::hub::Hub;
use crate::metrics::{ChannelChange, Metrics};

/// The most channels one `SUBSCRIBE` or `UNSUBSCRIBE` names: no command
/// grows without bound, and its reply still comes back in well under a
/// millisecond.
pub const MAX_PER_COMMAND: usize = 256;

/// The most changes one round takes: a few commands' worth, so a round at
/// every `redis.subscribe_batch_interval` (50 ms) keeps up with 20,000
/// channel changes a second.
pub const MAX_BATCH: usize = 4 * MAX_PER_COMMAND;

/// How the reconciler paces and restrains its rounds.
#[derive(Clone)]
pub struct Options {
    /// `redis.subscribe_batch_interval`: least time between two rounds.
    pub interval: std::time::Duration,
    /// Cancelled when the drain begins (SIGTERM): unwanted channels stay
    /// subscribed from then on.
    pub draining: tokio_util::sync::CancellationToken,
    pub metrics: Arc<Metrics>,
}

/// What a batch of changed channels needs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Wanted and not subscribed: `SUBSCRIBE`, then ready.
    pub subscribe: Vec<Arc<str>>,
    /// Subscribed and no longer wanted: `UNSUBSCRIBE`.
    pub unsubscribe: Vec<Arc<str>>,
    /// Wanted and still subscribed (dropped and wanted again before the
    /// reconciler acted): ready at once, no command.
    pub ready: Vec<Arc<str>>,
    /// Neither wanted nor subscribed (wanted and dropped again before the
    /// reconciler acted): settled, no command.
    pub idle: Vec<Arc<str>>,
    /// Unwanted but left subscribed because the gateway is draining: its
    /// subscriber connection closes moments later anyway.
    pub kept: Vec<Arc<str>>,
}

/// Sorts `channels` (duplicates taken once) by what each needs: `wanted`
/// says whether local clients want it now, `subscribed` what the connection
/// has. While `draining`, nothing is unsubscribed.
pub fn plan(
    channels: impl IntoIterator<Item = Arc<str>>,
    wanted: impl Fn(&str) -> bool,
    subscribed: &HashSet<Arc<str>>,
    draining: bool,
) -> Plan {
    let mut seen = HashSet::new();
    let mut plan = Plan::default();
    for channel in channels {
        if !seen.insert(channel.clone()) {
            continue;
        }
        match (wanted(&channel), subscribed.contains(&channel)) {
            (true, false) => plan.subscribe.push(channel),
            (true, true) => plan.ready.push(channel),
            (false, true) if draining => plan.kept.push(channel),
            (false, true) => plan.unsubscribe.push(channel),
            (false, false) => plan.idle.push(channel),
        }
    }
    plan
}

/// Adds to `batch` the changes already queued and the retries already due,
/// up to [`MAX_BATCH`] channels.
pub fn gather(
    batch: &mut Vec<Arc<str>>,
    changes: &mut mpsc::UnboundedReceiver<Arc<str>>,
    retries: &mut VecDeque<(Instant, Arc<str>)>,
) {
    while batch.len() < MAX_BATCH {
        match changes.try_recv() {
            Ok(channel) => batch.push(channel),
            Err(_) => break,
        }
    }
    let now = Instant::now();
    while batch.len() < MAX_BATCH && retries.front().is_some_and(|(at, _)| *at <= now) {
        if let Some((_, channel)) = retries.pop_front() {
            batch.push(channel);
        }
    }
}

/// How a batch went.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Reached their wanted state (subscribed and ready, or unsubscribed).
    pub done: Vec<Arc<str>>,
    /// To retry, each on its own schedule.
    pub failed: Vec<Arc<str>>,
    /// Left subscribed while draining (see [`Plan::kept`]).
    pub kept: Vec<Arc<str>>,
}

/// Sends `plan`: subscribes (and marks ready only after the confirming
/// PONG, see [`subscribe_all`]), then unsubscribes, keeping `subscribed`
/// equal to what the connection has.
pub async fn apply(
    client: &SubscriberClient,
    hub: &Hub,
    subscribed: &mut HashSet<Arc<str>>,
    plan: Plan,
    metrics: &Metrics,
) -> Outcome {
    let counts = &metrics.subscriptions;
    if !plan.subscribe.is_empty() || !plan.unsubscribe.is_empty() {
        counts.rounds.inc();
    }
    counts.changed(ChannelChange::KeptDraining, plan.kept.len());
    let mut out = Outcome {
        kept: plan.kept,
        ..Outcome::default()
    };
    for channel in plan.ready {
        hub.set_ready(&channel, true);
        out.done.push(channel);
    }
    out.done.extend(plan.idle);
    if !plan.subscribe.is_empty() {
        let (done, failed) = subscribe_all(client, plan.subscribe).await;
        counts.changed(ChannelChange::Subscribed, done.len());
        for channel in &done {
            subscribed.insert(channel.clone());
            hub.set_ready(channel, true);
        }
        out.done.extend(done);
        out.failed.extend(failed);
    }
    if !plan.unsubscribe.is_empty() {
        let (done, failed) = unsubscribe_all(client, plan.unsubscribe).await;
        counts.changed(ChannelChange::Unsubscribed, done.len());
        for channel in &done {
            subscribed.remove(channel);
        }
        out.done.extend(done);
        out.failed.extend(failed);
    }
    out
}

/// SUBSCRIBE, then a PING on the same connection: fred can resolve the
/// SUBSCRIBE before Redis has applied it (seen here under load: a PUBLISH
/// right after reached no subscriber), while Redis answers a connection's
/// commands in order, so the PONG proves every subscription before it is
/// live and sessions may read their snapshots (`Hub::set_ready`). One PING
/// confirms all the batch's SUBSCRIBEs; if any command fails, the whole
/// batch is retried (subscribing twice is harmless).
///
/// In a Cluster it is one `SSUBSCRIBE` per channel on the node owning its
/// slot (channels of different slots cannot share one), which fred resolves
/// on Redis' own reply (it handles `MOVED` for it), so no PING is needed.
/// Returns (done, failed).
async fn subscribe_all(
    client: &SubscriberClient,
    channels: Vec<Arc<str>>,
) -> (Vec<Arc<str>>, Vec<Arc<str>>) {
    if client.is_clustered() {
        return one_by_one(channels, |c| async move { client.ssubscribe(&*c).await }).await;
    }
    let result = async {
        for batch in channels.chunks(MAX_PER_COMMAND) {
            let names: Vec<String> = batch.iter().map(|c| c.to_string()).collect();
            client.subscribe(names).await?;
        }
        let _: Value = client.ping(None).await?;
        Ok::<_, fred::error::Error>(())
    }
    .await;
    match result {
        Ok(()) => (channels, Vec::new()),
        Err(e) => {
            tracing::warn!(channels = channels.len(), error = %e, "SUBSCRIBE failed; will retry");
            (Vec::new(), channels)
        }
    }
}

/// UNSUBSCRIBE in commands of at most [`MAX_PER_COMMAND`] channels (never an
/// empty one: that would drop every subscription); in a Cluster one
/// `SUNSUBSCRIBE` per channel. Returns (done, failed).
async fn unsubscribe_all(
    client: &SubscriberClient,
    channels: Vec<Arc<str>>,
) -> (Vec<Arc<str>>, Vec<Arc<str>>) {
    if client.is_clustered() {
        return one_by_one(channels, |c| async move { client.sunsubscribe(&*c).await }).await;
    }
    let (mut done, mut failed) = (Vec::new(), Vec::new());
    for batch in channels.chunks(MAX_PER_COMMAND) {
        let names: Vec<String> = batch.iter().map(|c| c.to_string()).collect();
        match client.unsubscribe(names).await {
            Ok(()) => done.extend_from_slice(batch),
            Err(e) => {
                tracing::warn!(channels = batch.len(), error = %e, "UNSUBSCRIBE failed; will retry");
                failed.extend_from_slice(batch);
            }
        }
    }
    (done, failed)
}

/// Runs `command` for each channel in turn. Returns (done, failed).
async fn one_by_one<F, Fut>(channels: Vec<Arc<str>>, command: F) -> (Vec<Arc<str>>, Vec<Arc<str>>)
where
    F: Fn(Arc<str>) -> Fut,
    Fut: std::future::Future<Output = Result<(), fred::error::Error>>,
{
    let (mut done, mut failed) = (Vec::new(), Vec::new());
    for channel in channels {
        match command(channel.clone()).await {
            Ok(()) => done.push(channel),
            Err(e) => {
                tracing::warn!(%channel, error = %e, "subscription change failed; will retry");
                failed.push(channel);
            }
        }
    }
    (done, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<Arc<str>> {
        v.iter().map(|s| Arc::from(*s)).collect()
    }

    #[test]
    fn a_batch_is_sorted_by_what_each_channel_needs() {
        let subscribed: HashSet<Arc<str>> = names(&["kept", "gone"]).into_iter().collect();
        let wanted = |c: &str| matches!(c, "new" | "other" | "kept");
        let changes = names(&["new", "gone", "kept", "new", "never", "other"]);
        let p = plan(changes, wanted, &subscribed, false);
        assert_eq!(
            p.subscribe,
            names(&["new", "other"]),
            "each new channel once"
        );
        assert_eq!(p.unsubscribe, names(&["gone"]));
        assert_eq!(p.ready, names(&["kept"]));
        assert_eq!(p.idle, names(&["never"]));
        assert!(p.kept.is_empty());
    }

    #[tokio::test]
    async fn a_round_takes_every_queued_change_and_due_retry_up_to_its_bound() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        for i in 0..MAX_BATCH + 10 {
            tx.send(Arc::from(format!("c{i}"))).unwrap();
        }
        let now = Instant::now();
        let mut retries: VecDeque<(Instant, Arc<str>)> = VecDeque::from([
            (now, Arc::from("due")),
            (now + std::time::Duration::from_secs(60), Arc::from("later")),
        ]);
        let mut batch = vec![Arc::from("first")];
        gather(&mut batch, &mut rx, &mut retries);
        assert_eq!(batch.len(), MAX_BATCH, "bounded");
        assert_eq!(retries.len(), 2, "no room left for retries");
        let mut next = Vec::new();
        gather(&mut next, &mut rx, &mut retries);
        assert_eq!(next.len(), 12, "the rest of the queue and the due retry");
        assert_eq!(next.last().map(|c| &**c), Some("due"));
        assert_eq!(retries.len(), 1, "the later retry waits");
    }

    #[test]
    fn a_draining_gateway_unsubscribes_nothing() {
        let subscribed: HashSet<Arc<str>> = names(&["a", "b"]).into_iter().collect();
        let p = plan(names(&["a", "b", "c"]), |c| c == "c", &subscribed, true);
        assert!(p.unsubscribe.is_empty());
        assert_eq!(p.kept, names(&["a", "b"]));
        assert_eq!(
            p.subscribe,
            names(&["c"]),
            "still subscribes what is wanted"
        );
    }
}
