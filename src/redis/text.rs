//! Text out of Redis replies whose bulk strings need not be UTF-8. Asked for
//! a `String`, fred fails the whole reply on one invalid byte with a parse
//! error, which reads like Redis being unavailable: one bad entry hid a
//! persona's whole stream. So the readers of persona streams ask for `Value`
//! and decode here, entry by entry (`src/undecodable.rs`).

use std::borrow::Cow;
use std::collections::HashMap;

use fred::prelude::*;

use crate::undecodable::lossy;

/// One stream entry's fields as text.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fields {
    pub map: HashMap<String, String>,
    /// Some field name or value was not UTF-8: each invalid sequence in it
    /// is U+FFFD here.
    pub replaced: bool,
}

/// An entry's fields: `[f1, v1, f2, v2, …]` (RESP2) or a map (RESP3).
pub fn entry_fields(fields: Value) -> Fields {
    let mut out = Fields::default();
    let mut add = |k: &[u8], v: &[u8]| {
        let (k, v) = (lossy(k), lossy(v));
        out.replaced |= k.replaced || v.replaced;
        out.map.insert(k.text.into_owned(), v.text.into_owned());
    };
    match fields {
        Value::Array(items) => {
            for pair in items.chunks(2) {
                if let [k, v] = pair {
                    add(&bytes(k), &bytes(v));
                }
            }
        }
        Value::Map(map) => {
            for (k, v) in map.inner() {
                add(k.as_bytes(), &bytes(&v));
            }
        }
        _ => {}
    }
    out
}

/// Entries of an `XRANGE`/`XREVRANGE` reply: (id, fields).
pub fn entries(reply: Value) -> Result<Vec<(String, Fields)>, Error> {
    let raw: Vec<(String, Value)> = reply.convert()?;
    Ok(raw
        .into_iter()
        .map(|(id, fields)| (id, entry_fields(fields)))
        .collect())
}

/// A bulk string's bytes; a scalar (never in a stream entry) as its text.
fn bytes(v: &Value) -> Cow<'_, [u8]> {
    match v.as_bytes() {
        Some(b) => Cow::Borrowed(b),
        None => Cow::Owned(
            v.as_str_lossy()
                .map(|s| s.into_owned().into_bytes())
                .unwrap_or_default(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(b: &'static [u8]) -> Value {
        Value::Bytes(bytes::Bytes::from_static(b))
    }

    #[test]
    fn fields_are_decoded_one_by_one() {
        let f = entry_fields(Value::Array(vec![
            "m".into(),
            bulk(b"{\"c\":\"\xff\xfe\"}"),
            "t".into(),
            "early_kill".into(),
        ]));
        assert!(f.replaced);
        assert_eq!(f.map["m"], "{\"c\":\"\u{fffd}\u{fffd}\"}");
        assert_eq!(f.map["t"], "early_kill");
        let f = entry_fields(Value::Array(vec!["m".into(), "{}".into()]));
        assert!(!f.replaced);
        assert_eq!(entry_fields(Value::Null), Fields::default());
    }

    #[test]
    fn a_bad_entry_does_not_fail_the_reply() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                "1-0".into(),
                Value::Array(vec!["m".into(), bulk(b"\xff")]),
            ]),
            Value::Array(vec![
                "1-1".into(),
                Value::Array(vec!["m".into(), "{}".into()]),
            ]),
        ]);
        let e = entries(reply).unwrap();
        assert_eq!(e.len(), 2);
        assert!(e[0].1.replaced && !e[1].1.replaced);
        assert_eq!(e[1].0, "1-1");
    }
}
