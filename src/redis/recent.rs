//! The newest entries of a `[[channels]]` channel's history: what a
//! subscribe without `since` (or a resume that cannot be had) gets first,
//! since such a channel has no aggregate snapshot (`docs/protocol.md`,
//! "Channels").

use fred::prelude::*;

use crate::hub::message::{inspect, Bounds};
use crate::metrics::{Metrics, ReadPath, Repair};
use crate::redis::text;
use crate::stream::{parse_offset, Offset};
use crate::undecodable;

/// The newest entries, oldest first, and the newest id in the stream.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recent {
    /// At most the `n` asked for: (id, message).
    pub messages: Vec<(Offset, String)>,
    /// The stream's newest entry (also when `n` is 0); `None`: no stream.
    pub newest: Option<Offset>,
}

/// Reads the newest `n` entries of `stream` (one `XREVRANGE`). Entries that
/// were not UTF-8 go out with U+FFFD, or are skipped when that is no JSON
/// object, as in a replay; `label` names the channel in their report.
pub async fn read(
    client: &Client,
    stream: &str,
    n: usize,
    bounds: Bounds,
    metrics: &Metrics,
    label: &str,
) -> Result<Recent, Error> {
    let reply: Value = client
        .xrevrange(stream, "+", "-", Some(n.max(1) as u64))
        .await?;
    let entries = text::entries(reply)?;
    let newest = entries.first().and_then(|(id, _)| parse_offset(id));
    let mut messages = Vec::with_capacity(n.min(entries.len()));
    for (id, mut fields) in entries.into_iter().take(n).rev() {
        let (Some(offset), Some(m)) = (parse_offset(&id), fields.map.remove("m")) else {
            continue;
        };
        if fields.replaced {
            let action = match inspect(m.as_bytes(), bounds) {
                Ok(_) => Repair::Replaced,
                Err(_) => Repair::Skipped,
            };
            undecodable::report(metrics, ReadPath::Replay, action, label, Some(&id));
            if action == Repair::Skipped {
                continue;
            }
        }
        messages.push((offset, m));
    }
    Ok(Recent { messages, newest })
}
