//! Resume after a reconnect: the events a client missed since `offset`, read
//! from the persona's stream with the facts that tell whether any of them
//! was trimmed away, in one MULTI/EXEC so both describe the same moment.
//! Resumes of one persona from one offset share a replay sent after they
//! asked (`src/singleflight.rs`), and its frames, encoded once.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use fred::prelude::*;

use crate::hub::message::{inspect, Bounds};
use crate::keys::{Keys, PersonaId};
use crate::metrics::{self, Metrics, ReadPath, Repair};
use crate::protocol::frame;
use crate::redis::text;
use crate::singleflight::{Flights, Role};
use crate::stream::{format_offset, parse_offset, Offset};
use crate::undecodable;

/// Most (persona, offset) pairs with a replay in flight that are shared;
/// past it a resume replays alone.
const MAX_SHARED: usize = 10_000;

/// A replay as each resume that shared it gets it.
pub type Shared = Result<Arc<Replayed>, Arc<fred::error::Error>>;

/// A [`Replay`] with its messages encoded as text frames, once.
#[derive(Debug)]
pub enum Replayed {
    /// The missed events in order (each entry's id and text), the same
    /// encoded once as `/dashboard/ws` frames, and the offset they reach.
    /// `/ws` wraps `messages` in its channel's envelope.
    Complete {
        messages: Vec<(Offset, String)>,
        frames: Vec<Bytes>,
        last: Offset,
    },
    /// Why the missed events cannot all be had.
    Unrecoverable(&'static str),
}

/// Replays in flight, shared by the resumes that asked before they were sent.
pub struct Replays {
    /// Keyed by stream key and offset.
    flights: Flights<(String, Offset), Shared>,
    keys: Keys,
    /// `ws.max_replay`: most events a replay may hold.
    max: usize,
    /// The publication bounds (`redis.max_message_bytes`,
    /// `limits.max_json_depth`) a repaired entry must meet to be sent.
    bounds: Bounds,
    /// Counts replays sent and shared, and entries that were not UTF-8.
    metrics: Arc<Metrics>,
}

impl Replays {
    pub fn new(keys: Keys, max: usize, bounds: Bounds, metrics: Arc<Metrics>) -> Self {
        Self {
            flights: Flights::new(MAX_SHARED),
            keys,
            max,
            bounds,
            metrics,
        }
    }

    /// What `persona` published after `since`, from a replay sent after
    /// this was called (another resume's, if it was not sent yet). An entry
    /// that was not UTF-8 is counted once per replay, not per resume.
    pub async fn since(&self, client: &Client, persona: &PersonaId, since: Offset) -> Shared {
        self.since_in(client, self.keys.stream(persona), persona.as_str(), since)
            .await
    }

    /// [`Replays::since`] for any stream (a `[[channels]]` channel's
    /// history); `label` names it in logs and metrics.
    pub async fn since_in(
        &self,
        client: &Client,
        stream: String,
        label: &str,
        since: Offset,
    ) -> Shared {
        let key = (stream.clone(), since);
        let (replayed, role) = self
            .flights
            .run(key, || {
                let (client, metrics) = (client.clone(), self.metrics.clone());
                let label = label.to_owned();
                let (max, bounds) = (self.max, self.bounds);
                async move {
                    metrics.reads.sent(metrics::Read::Replay);
                    let replay = self::since(&client, &stream, since, max, bounds).await;
                    replay
                        .map(|r| Arc::new(encode(r, &metrics, &label)))
                        .map_err(Arc::new)
                }
            })
            .await;
        if role == Role::Joined {
            self.metrics.reads.shared(metrics::Read::Replay);
        }
        replayed
    }
}

/// Encodes a replay's messages once, counting the entries that were not UTF-8.
fn encode(replay: Replay, metrics: &Metrics, label: &str) -> Replayed {
    match replay {
        Replay::Complete {
            messages,
            last,
            undecodable,
        } => {
            for (id, action) in &undecodable {
                undecodable::report(metrics, ReadPath::Replay, *action, label, Some(id));
            }
            let frames = messages
                .iter()
                .map(|(_, m)| frame::text(m.as_bytes()))
                .collect();
            Replayed::Complete {
                messages,
                frames,
                last,
            }
        }
        Replay::Unrecoverable(reason) => Replayed::Unrecoverable(reason),
    }
}

/// What a resume from `since` can give.
#[derive(Debug, PartialEq, Eq)]
pub enum Replay {
    /// Every event after `since`, in order (each entry's id and `m`), and the id of
    /// the last one (or `since` when none was missed). `undecodable`: the
    /// entries whose bytes were not UTF-8, by id, sent with U+FFFD in place
    /// of each invalid sequence, or skipped when that is still no JSON
    /// object; the ones after them are sent all the same.
    Complete {
        messages: Vec<(Offset, String)>,
        last: Offset,
        undecodable: Vec<(String, Repair)>,
    },
    /// Some missed events are gone (trimmed), too many were missed, or the
    /// offset is not from this stream: the client needs a fresh snapshot.
    Unrecoverable(&'static str),
}

/// Reads what was published on the persona's stream after `since`.
pub async fn since(
    client: &Client,
    stream_key: &str,
    since: Offset,
    max: usize,
    bounds: Bounds,
) -> Result<Replay, fred::error::Error> {
    let trx = client.multi();
    let _: () = trx.xinfo_stream(stream_key, false, None).await?;
    let _: () = trx
        .xrange(
            stream_key,
            format!("({}", format_offset(since)),
            "+",
            Some(max as u64 + 1),
        )
        .await?;
    let (info, entries): (Value, Value) = match trx.exec(true).await {
        Ok(pair) => pair,
        // XINFO on a missing key: nothing was ever written here.
        Err(e) if e.details().contains("no such key") => {
            return Ok(Replay::Unrecoverable("unknown_offset"))
        }
        Err(e) => return Err(e),
    };
    let info: HashMap<String, Value> = info.convert()?;
    let last_generated = info
        .get("last-generated-id")
        .and_then(|v| v.as_str())
        .and_then(|s| parse_offset(&s));
    let Some(last_generated) = last_generated else {
        return Ok(Replay::Unrecoverable("unknown_offset"));
    };
    if since > last_generated {
        return Ok(Replay::Unrecoverable("unknown_offset"));
    }
    let length = info.get("length").and_then(|v| v.as_u64()).unwrap_or(0);
    let added = info
        .get("entries-added")
        .and_then(|v| v.as_u64())
        .unwrap_or(length);
    if added > length {
        // Entries were trimmed from the head. Those after `since` survive
        // only if `since` is at or past the first entry still there.
        let first = info
            .get("recorded-first-entry-id")
            .and_then(|v| v.as_str())
            .and_then(|s| parse_offset(&s));
        match first {
            Some(first) if since >= first => {}
            _ => return Ok(Replay::Unrecoverable("trimmed")),
        }
    }
    let entries = text::entries(entries)?;
    if entries.len() > max {
        return Ok(Replay::Unrecoverable("too_many_missed"));
    }
    let mut last = since;
    let mut messages = Vec::with_capacity(entries.len());
    let mut undecodable = Vec::new();
    for (id, mut fields) in entries {
        // Redis ids always parse; an id that did not would keep the last one.
        last = parse_offset(&id).unwrap_or(last);
        let Some(m) = fields.map.remove("m") else {
            continue;
        };
        if fields.replaced {
            // Checked only here: the invalid bytes may have been outside
            // any JSON string, and a client cannot parse what is no JSON.
            if inspect(m.as_bytes(), bounds).is_err() {
                undecodable.push((id, Repair::Skipped));
                continue;
            }
            undecodable.push((id, Repair::Replaced));
        }
        messages.push((last, m));
    }
    Ok(Replay::Complete {
        messages,
        last,
        undecodable,
    })
}
