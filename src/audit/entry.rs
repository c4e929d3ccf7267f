//! One stream entry as the audit trail records it.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use crate::hub::message::parse_offset;

/// A row of `dashboard_events`, plus what the derived tables need (all in `data`).
#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    pub persona_id: String,
    pub event_id: String,
    pub ms: i64,
    pub seq: i64,
    pub event_type: String,
    pub variant_id: Option<String>,
    /// The published message (`m`), parsed.
    pub data: Value,
    /// The event's own time (`timestamp`, RFC 3339), or the stream id's time.
    pub created_at: String,
}

/// Builds the row of entry `id` of `persona`'s stream. Entries the gateway
/// did not write (no valid `m`) are still recorded, wrapped, never dropped.
pub fn parse(persona: &str, id: &str, mut fields: HashMap<String, String>) -> Option<AuditRow> {
    let (ms, seq) = parse_offset(id)?;
    let raw = fields.remove("m").unwrap_or_default();
    let data = serde_json::from_str::<Value>(&raw)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| serde_json::json!({"unparsed": raw}));
    let event_type = fields
        .remove("t")
        .or_else(|| data["data"]["event_type"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    let variant_id = fields
        .remove("v")
        .or_else(|| data["data"]["variant_id"].as_str().map(str::to_owned))
        .filter(|v| !v.is_empty());
    let created_at = data["timestamp"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| ms_to_rfc3339(ms));
    Some(AuditRow {
        persona_id: persona.to_owned(),
        event_id: id.to_owned(),
        ms: ms as i64,
        seq: seq as i64,
        event_type,
        variant_id,
        data,
        created_at,
    })
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` from epoch milliseconds (Postgres parses it).
pub fn ms_to_rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant), valid for the whole u64 ms range we see.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
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
        let r = parse("p", "5-1", f).unwrap();
        assert_eq!(
            (r.ms, r.seq, r.event_type.as_str(), r.variant_id.as_deref()),
            (5, 1, "early_kill", Some("v"))
        );
        assert_eq!(r.created_at, "2026-11-22T03:00:00.000Z");
        let mut f = HashMap::new();
        f.insert("m".into(), "garbage".into());
        let r = parse("p", "1795318000123-0", f).unwrap();
        assert_eq!(r.data["unparsed"], "garbage");
        assert_eq!(r.event_type, "unknown");
        assert!(parse("p", "nope", HashMap::new()).is_none());
    }

    #[test]
    fn timestamps() {
        assert_eq!(ms_to_rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(ms_to_rfc3339(1_795_318_000_123), "2026-11-22T03:26:40.123Z");
        assert_eq!(ms_to_rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
