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

#[cfg(test)]
mod tests {
    use super::parse_rfc3339_ms;

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
