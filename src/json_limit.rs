//! The nesting bound every JSON document passes before a parser sees it.
//!
//! simd-json and the value trees it builds recurse once per level of nesting,
//! in parsing and again in dropping: about 60 KB of `{"a":{"a":…` overflowed a
//! tokio worker's stack and aborted the whole process. This scan is flat (one
//! pass, no allocation, no recursion), so a document is measured before
//! anything recursive touches it. It does not validate the document: the
//! parser still does that, on input now known to be shallow.

/// Default bound on nesting (`limits.max_json_depth`): far deeper than any
/// message of ours (events nest 3 levels), far shallower than a stack.
pub const DEFAULT_MAX_DEPTH: usize = 64;

/// The document nests deeper than allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("JSON nests deeper than {max} levels")]
pub struct TooDeep {
    pub max: usize,
}

/// Checks that `bytes` opens no more than `max` arrays or objects inside each
/// other. Brackets inside strings do not count; escapes inside strings are
/// honoured. Malformed input passes when it is shallow: telling it apart is
/// the parser's job.
pub fn check_depth(bytes: &[u8], max: usize) -> Result<(), TooDeep> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return Err(TooDeep { max });
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(open: &str, close: &str, levels: usize) -> Vec<u8> {
        let mut s = open.repeat(levels);
        s.push_str(&close.repeat(levels));
        s.into_bytes()
    }

    #[test]
    fn counts_objects_and_arrays() {
        assert_eq!(check_depth(b"{}", 1), Ok(()));
        assert_eq!(check_depth(b"{\"a\":[1]}", 1), Err(TooDeep { max: 1 }));
        assert_eq!(check_depth(b"{\"a\":[1]}", 2), Ok(()));
        assert_eq!(check_depth(&nested("[", "]", 64), 64), Ok(()));
        assert!(check_depth(&nested("[", "]", 65), 64).is_err());
        assert!(check_depth(&nested("{\"a\":", "}", 100_000), 64).is_err());
        // Siblings do not add up.
        assert_eq!(check_depth(b"[[],[],[[]]]", 3), Ok(()));
    }

    #[test]
    fn ignores_brackets_in_strings() {
        assert_eq!(check_depth(br#"{"a":"[[[[{{{{"}"#, 1), Ok(()));
        assert_eq!(check_depth(br#"{"a":"\"[[[["}"#, 1), Ok(()));
        assert_eq!(check_depth(br#"{"a":"\\"}"#, 1), Ok(()));
        // An escaped backslash ends the escape: the quote after it closes.
        assert!(check_depth(br#"{"a":"\\","b":[[]]}"#, 2).is_err());
    }

    #[test]
    fn shallow_garbage_passes_for_the_parser_to_refuse() {
        assert_eq!(check_depth(b"]]]}}}", 1), Ok(()));
        assert_eq!(check_depth(b"\"unterminated", 1), Ok(()));
        assert_eq!(check_depth(b"", 0), Ok(()));
    }
}
