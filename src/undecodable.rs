//! Bytes from Redis that are not UTF-8: a string stored before
//! `pulse_ingest` refused invalid UTF-8, or an entry something else wrote.
//! No single such entry may wedge a persona, so wherever the gateway reads
//! text from Redis it decodes lossily (each invalid sequence becomes
//! U+FFFD) or leaves the entry out, serves the rest, counts it in
//! `pulsegate_undecodable_total{read,action}`, and logs it once per read
//! path and persona per process: a persona every new dashboard reads would
//! otherwise log on every read.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use crate::metrics::{Metrics, ReadPath, Repair, UndecodableLabels};

/// How many (read path, persona) pairs are remembered as logged. Past it
/// nothing more is logged (the metric still counts): the set is bounded
/// whatever a broken publisher writes.
const MAX_LOGGED: usize = 10_000;

/// `bytes` as text: borrowed when it is UTF-8, else with each invalid
/// sequence replaced by U+FFFD (`replaced` is then true).
pub fn lossy(bytes: &[u8]) -> Lossy<'_> {
    match simdutf8::basic::from_utf8(bytes) {
        Ok(s) => Lossy {
            text: Cow::Borrowed(s),
            replaced: false,
        },
        Err(_) => Lossy {
            text: String::from_utf8_lossy(bytes),
            replaced: true,
        },
    }
}

/// Text decoded by [`lossy`].
#[derive(Debug)]
pub struct Lossy<'a> {
    pub text: Cow<'a, str>,
    /// Some bytes were not UTF-8 and were replaced.
    pub replaced: bool,
}

/// Counts one undecodable publication, snapshot or entry of `persona` (a
/// persona id, or a channel or stream key where that is what is known),
/// and logs it if it is the first for this read path and persona.
pub fn report(
    metrics: &Metrics,
    read: ReadPath,
    action: Repair,
    persona: &str,
    entry: Option<&str>,
) {
    metrics
        .undecodable
        .get_or_create(&UndecodableLabels { read, action })
        .inc();
    if first_for(read, persona) {
        tracing::warn!(
            read = read.as_str(),
            action = action.as_str(),
            persona,
            entry,
            "bytes from Redis are not UTF-8; further ones of this persona on this path are only counted (pulsegate_undecodable_total)"
        );
    }
}

fn first_for(read: ReadPath, persona: &str) -> bool {
    static LOGGED: OnceLock<Mutex<HashSet<(ReadPath, String)>>> = OnceLock::new();
    let mut logged = LOGGED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if logged.contains(&(read, persona.to_owned())) {
        return false;
    }
    if logged.len() >= MAX_LOGGED {
        return false;
    }
    logged.insert((read, persona.to_owned()));
    if logged.len() == MAX_LOGGED {
        tracing::warn!(
            "undecodable bytes were logged for {MAX_LOGGED} personas; further ones are only counted"
        );
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_what_is_not_utf8() {
        let ok = lossy("é".as_bytes());
        assert!(!ok.replaced && matches!(ok.text, Cow::Borrowed("é")));
        let bad = lossy(b"a\xff\xfeb");
        assert!(bad.replaced);
        assert_eq!(bad.text, "a\u{fffd}\u{fffd}b");
    }

    #[test]
    fn logs_once_per_path_and_persona_but_counts_each() {
        let m = Metrics::new();
        assert!(first_for(ReadPath::Feed, "p-once"));
        assert!(!first_for(ReadPath::Feed, "p-once"));
        assert!(first_for(ReadPath::Replay, "p-once"));
        report(&m, ReadPath::Audit, Repair::Replaced, "p-count", None);
        report(
            &m,
            ReadPath::Audit,
            Repair::Replaced,
            "p-count",
            Some("1-0"),
        );
        let text = m.encode();
        assert!(
            text.contains(r#"pulsegate_undecodable_total{read="audit",action="replaced"} 2"#),
            "{text}"
        );
    }
}
