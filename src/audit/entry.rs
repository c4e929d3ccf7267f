//! One stream entry as the audit trail records it.

use std::collections::HashMap;

use serde_json::Value;

use crate::stream::parse_offset;
use crate::time::parse_rfc3339_ms;

/// A row of `dashboard_events`, plus what the derived tables need (all in `data`).
#[derive(Debug, Clone)]
pub struct AuditRow {
    pub persona_id: String,
    pub event_id: String,
    pub ms: i64,
    pub seq: i64,
    pub event_type: String,
    pub variant_id: Option<String>,
    /// JSON text of an object Postgres accepts as `jsonb`: the published
    /// message (`m`) verbatim, else `{"unparsed": "<m>"}`; either with
    /// `"invalid_utf8_replaced": true` when the entry held bytes that were
    /// not UTF-8 (each invalid sequence is U+FFFD in it). Kept as text so it
    /// goes to Postgres without being serialized again.
    pub data: String,
    /// The event's own time (`timestamp`), or the stream id's time; epoch ms.
    pub created_ms: i64,
}

/// Builds the row of entry `id` of `persona`'s stream. Entries the gateway
/// did not write (no valid `m`) are still recorded, wrapped, never dropped.
/// `replaced`: the fields were decoded with U+FFFD for bytes that were not
/// UTF-8 (`src/redis/text.rs`); the row says so.
pub fn parse(
    persona: &str,
    id: &str,
    mut fields: HashMap<String, String>,
    replaced: bool,
) -> Option<AuditRow> {
    let (ms, seq) = parse_offset(id)?;
    let raw = fields.remove("m").unwrap_or_default();
    // Parsed (not just scanned) so that what goes to Postgres is JSON it
    // accepts: one refused row would fail its whole batch, forever.
    let parsed = serde_json::from_str::<Value>(&raw)
        .ok()
        .filter(|v| v.is_object() && !has_nul_escape(&raw));
    let event_type = fields
        .remove("t")
        .or_else(|| nested_str(&parsed, "event_type"))
        .map(no_nul)
        .unwrap_or_else(|| "unknown".into());
    let variant_id = fields
        .remove("v")
        .or_else(|| nested_str(&parsed, "variant_id"))
        .filter(|v| !v.is_empty())
        .map(no_nul);
    let created_ms = parsed
        .as_ref()
        .and_then(|d| d["timestamp"].as_str())
        .and_then(parse_rfc3339_ms)
        .unwrap_or(ms as i64);
    let data = match (parsed, replaced) {
        (Some(_), false) => raw,
        (Some(mut message), true) => {
            message["invalid_utf8_replaced"] = true.into();
            message.to_string()
        }
        (None, replaced) => {
            let mut wrapped = serde_json::json!({ "unparsed": no_nul(raw) });
            if replaced {
                wrapped["invalid_utf8_replaced"] = true.into();
            }
            wrapped.to_string()
        }
    };
    Some(AuditRow {
        persona_id: no_nul(persona.to_owned()),
        event_id: id.to_owned(),
        ms: ms as i64,
        seq: seq as i64,
        event_type,
        variant_id,
        data,
        created_ms,
    })
}

/// The row of an entry that was trimmed from the stream while it was still
/// pending: its content is gone, but its id (and so its time) is known, and
/// the audit trail keeps the gap visible rather than skipping it.
pub fn lost(persona: &str, id: &str) -> Option<AuditRow> {
    let (ms, seq) = parse_offset(id)?;
    Some(AuditRow {
        persona_id: no_nul(persona.to_owned()),
        event_id: id.to_owned(),
        ms: ms as i64,
        seq: seq as i64,
        event_type: "lost".into(),
        variant_id: None,
        data: serde_json::json!({
            "type": "lost",
            "reason": "trimmed_before_audit",
            "event_id": id,
        })
        .to_string(),
        created_ms: ms as i64,
    })
}

fn nested_str(data: &Option<Value>, field: &str) -> Option<String> {
    data.as_ref()?["data"][field].as_str().map(str::to_owned)
}

/// Postgres refuses `\u0000` in `jsonb` (and NUL in `text`). An escape is
/// one only after an odd number of backslashes (`\\u0000` is text).
fn has_nul_escape(raw: &str) -> bool {
    let b = raw.as_bytes();
    b.windows(6).enumerate().any(|(i, w)| {
        w[0] == b'\\'
            && w[1] == b'u'
            && &w[2..] == b"0000"
            && b[..i].iter().rev().take_while(|&&c| c == b'\\').count() % 2 == 0
    })
}

fn no_nul(s: String) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{fffd}")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_from_entries() {
        let mut f = HashMap::new();
        f.insert("m".into(), r#"{"type":"variant_update","timestamp":"2026-11-22T03:00:00.000Z","offset":"5-1","data":{"event_type":"early_kill","variant_id":"v"}}"#.into());
        f.insert("t".into(), "early_kill".into());
        f.insert("v".into(), "v".into());
        let r = parse("p", "5-1", f.clone(), false).unwrap();
        assert_eq!(
            (r.ms, r.seq, r.event_type.as_str(), r.variant_id.as_deref()),
            (5, 1, "early_kill", Some("v"))
        );
        assert_eq!(r.created_ms, 1_795_316_400_000);
        assert_eq!(&r.data, &f["m"], "the message goes to Postgres verbatim");
        // Without the stream's fields, the message says what it is.
        f.remove("t");
        f.remove("v");
        let r = parse("p", "5-1", f, false).unwrap();
        assert_eq!(
            (r.event_type.as_str(), r.variant_id.as_deref()),
            ("early_kill", Some("v"))
        );
        let mut f = HashMap::new();
        f.insert("m".into(), "garbage".into());
        let r = parse("p", "1795318000123-0", f, false).unwrap();
        let data: Value = serde_json::from_str(&r.data).unwrap();
        assert_eq!(data["unparsed"], "garbage");
        assert_eq!(r.event_type, "unknown");
        assert_eq!(r.created_ms, 1_795_318_000_123, "the stream id's time");
        assert!(parse("p", "nope", HashMap::new(), false).is_none());
    }

    #[test]
    fn a_replaced_entry_says_so() {
        let mut f = HashMap::new();
        f.insert("m".into(), "{\"data\":{\"content\":\"\u{fffd}\"}}".into());
        let r = parse("p", "7-0", f, true).unwrap();
        let data: Value = serde_json::from_str(&r.data).unwrap();
        assert_eq!(data["invalid_utf8_replaced"], true);
        assert_eq!(data["data"]["content"], "\u{fffd}");
        let mut f = HashMap::new();
        f.insert("m".into(), "{\u{fffd}".into());
        let r = parse("p", "7-1", f, true).unwrap();
        let data: Value = serde_json::from_str(&r.data).unwrap();
        assert_eq!(data["invalid_utf8_replaced"], true);
        assert_eq!(data["unparsed"], "{\u{fffd}");
    }

    #[test]
    fn a_trimmed_entry_keeps_its_id_and_time() {
        let r = lost("p", "1795318000123-4").unwrap();
        assert_eq!(
            (r.ms, r.seq, r.event_type.as_str(), r.variant_id),
            (1_795_318_000_123, 4, "lost", None)
        );
        assert_eq!(r.created_ms, 1_795_318_000_123);
        let data: Value = serde_json::from_str(&r.data).unwrap();
        assert_eq!(data["reason"], "trimmed_before_audit");
        assert_eq!(data["event_id"], "1795318000123-4");
        assert!(lost("p", "nope").is_none());
    }

    #[test]
    fn nothing_postgres_would_refuse() {
        let mut f = HashMap::new();
        f.insert(
            "m".into(),
            r#"{"timestamp":"soon","data":{"content":"a\u0000b"}}"#.into(),
        );
        f.insert("t".into(), "x\0y".into());
        let r = parse("p", "7-0", f, false).unwrap();
        let data: Value = serde_json::from_str(&r.data).unwrap();
        assert!(
            !data["unparsed"].as_str().unwrap().contains('\0'),
            "{}",
            r.data
        );
        assert_eq!(r.event_type, "x\u{fffd}y");
        assert_eq!(
            r.created_ms, 7,
            "an unreadable timestamp: the stream id's time"
        );
        let mut f = HashMap::new();
        f.insert("m".into(), r#"{"data":{"path":"C:\\u0000"}}"#.into());
        let r = parse("p", "7-0", f.clone(), false).unwrap();
        assert_eq!(r.data, f["m"], "an escaped backslash is no NUL escape");
        let mut f = HashMap::new();
        f.insert("m".into(), "[1,2]".into());
        assert!(parse("p", "7-0", f, false)
            .unwrap()
            .data
            .contains("unparsed"));
    }
}
