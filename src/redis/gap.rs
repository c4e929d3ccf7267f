//! Gap repair, the Redis half: after a resubscription (a reconnect, a
//! failover, a slot move, a lagged broadcast channel) the hub holds a
//! channel's publications (`hub/continuity.rs`) while this task reads the
//! persona's stream after the last offset forwarded and forwards what was
//! missed; then the held publications follow. Clients see no gap and need
//! not reconnect. When the missed entries are gone (a failover lost writes
//! the replica had not copied, or they were trimmed) the persona's clients
//! get a fresh `initial_data` with `"recovered": false`, counted in
//! `pulsegate_redis_history_lost_total` and logged once per persona.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::hub::message::Bounds;
use crate::hub::Hub;
use crate::keys::PersonaId;
use crate::metrics::LossLabel;
use crate::redis::recent;
use crate::redis::replay::{self, Replay};
use crate::redis::text;
use crate::snapshot::{self, Source};
use crate::stream::{format_offset, parse_offset, Offset};

/// Pause before retrying a repair Redis could not answer.
const RETRY_DELAY: Duration = Duration::from_millis(300);

/// Where repairs are asked for: the reconciler after each resubscription,
/// the receiver after a lag. A channel is sent once per repair it needs.
pub type Requests = mpsc::UnboundedSender<Arc<str>>;

/// Stream entries a failover lost: after `after` (the newest that survived,
/// `None` when none did) through `through` (the last the gateway had
/// forwarded), on `stream`. The audit records it (`audit/losses.rs`).
#[derive(Debug, Clone)]
pub struct LostRange {
    pub stream: String,
    pub persona: String,
    pub after: Option<Offset>,
    pub through: Offset,
}

/// Where detected losses go: the audit, when this instance runs one.
pub type Losses = mpsc::Sender<LostRange>;

pub struct GapRepair {
    pub hub: Arc<Hub>,
    /// The command client, keys and metrics, and the snapshot a lost
    /// history is answered with.
    pub source: Source,
    /// `ws.max_replay`: most entries one repair forwards; past it clients
    /// get a fresh snapshot instead.
    pub max: usize,
    pub bounds: Bounds,
    /// Failover losses for the audit to record (`None`: no audit here).
    pub losses: Option<Losses>,
}

/// Why one repair could not finish this time.
enum Failed {
    Redis(fred::error::Error),
    Snapshot,
}

impl GapRepair {
    pub async fn run(
        self,
        mut requests: mpsc::UnboundedReceiver<Arc<str>>,
        cancel: CancellationToken,
    ) {
        // Personas whose loss was logged: once each, however many repairs.
        let mut logged: HashSet<PersonaId> = HashSet::new();
        // Channels whose repair failed, retried after the others (one whose
        // node is unreachable must not hold up the rest).
        let mut again: VecDeque<Arc<str>> = VecDeque::new();
        loop {
            let channel = match again.pop_front() {
                Some(c) => c,
                None => tokio::select! {
                    _ = cancel.cancelled() => return,
                    c = requests.recv() => match c { Some(c) => c, None => return },
                },
            };
            let result = loop {
                match self.repair(&channel, &mut logged).await {
                    Ok(true) => break Ok(()),
                    Ok(false) => continue,
                    Err(failed) => break Err(failed),
                }
            };
            if let Err(failed) = result {
                if let Failed::Redis(e) = &failed {
                    tracing::debug!(%channel, error = %e, "gap repair failed; retrying");
                }
                again.push_back(channel);
                // Requests that came meanwhile go first.
                while let Ok(c) = requests.try_recv() {
                    again.push_front(c);
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(RETRY_DELAY) => {}
                }
            }
        }
    }

    /// One pass; `Ok(false)`: held publications overflowed, read again.
    async fn repair(&self, channel: &str, logged: &mut HashSet<PersonaId>) -> Result<bool, Failed> {
        let Some(from) = self.hub.repair_from(channel) else {
            return Ok(true);
        };
        let metrics = &self.source.metrics;
        let stream = self.source.keys.stream(&from.persona);
        let redis = &self.source.redis;
        match from.last {
            None => {
                // One read for everyone: its newest entry is where the
                // channel stands, the entries start its recent window, so
                // resumes from within them need no Redis read of their own.
                let n = self.hub.recent_limits().entries;
                let read = recent::read(redis, &stream, n, self.bounds, metrics, &stream)
                    .await
                    .map_err(Failed::Redis)?;
                let kept = self
                    .hub
                    .seed(channel, read.newest.unwrap_or((0, 0)), &read.messages);
                if n > 0 {
                    metrics.reads.recent_prefills.inc();
                    metrics.reads.recent_prefilled.inc_by(kept as u64);
                }
            }
            Some(last) => {
                metrics.continuity.repairs.inc();
                let replay = replay::since(redis, &stream, last, self.max, self.bounds)
                    .await
                    .map_err(Failed::Redis)?;
                let outcome = match replay {
                    Replay::Complete { messages, .. } => {
                        // Present entries after `last` do not prove `last`
                        // itself survived: a failover may have lost it and
                        // new ingest written past it since.
                        if last != (0, 0)
                            && !exists(redis, &stream, last).await.map_err(Failed::Redis)?
                        {
                            Err("went_back")
                        } else {
                            Ok(messages)
                        }
                    }
                    // A stream that did not exist when the channel started
                    // and still does not: nothing was missed.
                    Replay::Unrecoverable("unknown_offset") if last == (0, 0) => Ok(Vec::new()),
                    Replay::Unrecoverable("unknown_offset") => Err("went_back"),
                    Replay::Unrecoverable(reason) => Err(reason),
                };
                match outcome {
                    Ok(messages) => {
                        for (_, m) in &messages {
                            if self.hub.forward_repaired(channel, m.as_bytes()) {
                                metrics.continuity.repaired_entries.inc();
                            }
                        }
                    }
                    Err(reason) => {
                        if reason == "went_back" {
                            self.report_loss(&stream, &from.persona, last).await?;
                        }
                        self.lost(channel, &from.persona, reason, logged).await?
                    }
                }
            }
        }
        Ok(self.hub.finish_repair(channel))
    }

    /// Hands the range a failover lost to the audit. Sent again if the
    /// repair is retried: the audit keeps one row per range.
    async fn report_loss(
        &self,
        stream: &str,
        persona: &PersonaId,
        through: Offset,
    ) -> Result<(), Failed> {
        let Some(losses) = &self.losses else {
            return Ok(());
        };
        let after = newest_until(&self.source.redis, stream, through)
            .await
            .map_err(Failed::Redis)?;
        let range = LostRange {
            stream: stream.to_owned(),
            persona: persona.to_string(),
            after,
            through,
        };
        if losses.try_send(range).is_err() {
            tracing::warn!(%persona, "the audit is not taking lost ranges; this one is only logged");
        }
        Ok(())
    }

    /// The missed entries are gone: a fresh `initial_data` for every client.
    async fn lost(
        &self,
        channel: &str,
        persona: &PersonaId,
        reason: &'static str,
        logged: &mut HashSet<PersonaId>,
    ) -> Result<(), Failed> {
        let fetched = match snapshot::fetch(&self.source, persona).await {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(%persona, error = %e, "snapshot for a lost history failed; retrying");
                return Err(Failed::Snapshot);
            }
        };
        self.source
            .metrics
            .continuity
            .history_lost
            .get_or_create(&LossLabel { reason })
            .inc();
        if logged.insert(persona.clone()) {
            tracing::warn!(
                %persona,
                reason,
                "missed publications are gone from the stream; the persona's clients get a fresh initial_data (recovered: false)"
            );
        }
        let ws_name = self.hub.ws_name(channel).unwrap_or_else(|| Arc::from(""));
        let verbatim = fetched.frame(&self.source, None, Some(false));
        let wrapped = fetched.frame(&self.source, Some(&ws_name), Some(false));
        self.hub
            .restart(channel, fetched.covered, verbatim, wrapped);
        Ok(())
    }
}

/// The id of the newest entry at or before `id` (`None`: there is none).
async fn newest_until(
    redis: &Client,
    stream: &str,
    id: Offset,
) -> Result<Option<Offset>, fred::error::Error> {
    let id = format_offset(id);
    let reply: Value = redis.xrevrange(stream, id.as_str(), "-", Some(1)).await?;
    let entries = text::entries(reply)?;
    Ok(entries.first().and_then(|(id, _)| parse_offset(id)))
}

/// Whether the entry `id` is still in the stream.
async fn exists(redis: &Client, stream: &str, id: Offset) -> Result<bool, fred::error::Error> {
    let id = format_offset(id);
    let reply: Value = redis
        .xrange(stream, id.as_str(), id.as_str(), Some(1))
        .await?;
    Ok(!text::entries(reply)?.is_empty())
}
