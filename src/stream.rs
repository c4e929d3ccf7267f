//! Stream offsets: the id `<ms>-<seq>` Redis gives each entry of a channel's
//! stream. Clients resume from one, snapshots are current to one, and the
//! audit orders rows by one; all compare them as a pair of integers, never
//! as strings (`"9-0" > "10-0"` as text).

/// A stream entry id as `(ms, seq)`; tuples order the way Redis does.
pub type Offset = (u64, u64);

/// Parses a stream id `<ms>-<seq>`; `None` for anything else.
pub fn parse_offset(s: &str) -> Option<Offset> {
    let (ms, seq) = s.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// The wire form of an offset, `<ms>-<seq>`.
pub fn format_offset((ms, seq): Offset) -> String {
    format!("{ms}-{seq}")
}

#[cfg(test)]
mod tests {
    use super::{format_offset, parse_offset};

    #[test]
    fn parses_and_orders_ids() {
        assert_eq!(
            parse_offset("1795317600123-7"),
            Some((1_795_317_600_123, 7))
        );
        assert!(parse_offset("9-0") < parse_offset("10-0"));
        assert_eq!(format_offset((17, 3)), "17-3");
        for bad in ["", "17", "17-", "-3", "a-1", "1-b", "1-2-3", "-1-2"] {
            assert_eq!(parse_offset(bad), None, "{bad}");
        }
    }
}
