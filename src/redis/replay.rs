//! Resume after a reconnect: the events a client missed since `offset`, read
//! from the persona's stream with the facts that tell whether any of them
//! was trimmed away, in one MULTI/EXEC so both describe the same moment.

use std::collections::HashMap;

use fred::prelude::*;

use crate::hub::message::{inspect, Bounds};
use crate::metrics::Repair;
use crate::redis::text;
use crate::stream::{format_offset, parse_offset, Offset};

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
            if inspect(m.as_bytes(), Bounds::default()).is_err() {
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
