//! Time as clients write it: RFC 3339 instants, read with the `time` crate
//! (strict RFC 3339, with range checks on every field), as epoch milliseconds.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// `2026-11-22T03:26:40.123Z` (or with an offset) → epoch milliseconds;
/// `None` for anything that is not a valid RFC 3339 instant
/// (`2026-13-45T99:99:99Z` included).
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Epoch milliseconds → `2026-11-22T03:26:40.123Z` (UTC, the fraction only
/// when there is one); `None` outside the years the `time` crate knows.
pub fn format_rfc3339_ms(ms: i64) -> Option<String> {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    t.format(&Rfc3339).ok()
}

/// Epoch milliseconds as the `SystemTime` Postgres takes for `timestamptz`,
/// clamped to years 1–9999: Postgres refuses a timestamp out of its range,
/// and one refused row would fail an audit batch (a publisher's `ts` is not
/// trusted to fit).
pub fn system_time_ms(ms: i64) -> std::time::SystemTime {
    let ms = ms.clamp(-62_135_596_800_000, 253_402_300_799_999);
    let d = std::time::Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        std::time::UNIX_EPOCH + d
    } else {
        std::time::UNIX_EPOCH - d
    }
}

/// Now, in epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::{format_rfc3339_ms, parse_rfc3339_ms};

    #[test]
    fn formats_instants_in_utc() {
        assert_eq!(
            format_rfc3339_ms(1_795_318_000_123).as_deref(),
            Some("2026-11-22T03:26:40.123Z")
        );
        assert_eq!(
            format_rfc3339_ms(1_795_316_400_000).as_deref(),
            Some("2026-11-22T03:00:00Z")
        );
    }

    #[test]
    fn reads_rfc3339_instants() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2026-11-22T03:26:40.123Z"),
            Some(1_795_318_000_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-22T04:26:40.1+01:00"),
            Some(1_795_318_000_100)
        );
        assert_eq!(
            parse_rfc3339_ms("2000-02-29T00:00:00Z"),
            Some(951_782_400_000)
        );
    }

    #[test]
    fn refuses_what_is_not_an_instant() {
        for s in [
            "yesterday",
            "2026-11-22T03:26:40é1234",
            "2026-11-22T03:26:40",
            "2026-13-45T99:99:99Z",
            "2026-02-30T00:00:00Z",
            "2026-11-22T24:00:00Z",
            "2026-11-22T03:26:40+25:00",
        ] {
            assert_eq!(parse_rfc3339_ms(s), None, "{s}");
        }
    }
}
