//! Query strings, read the way browsers write them
//! (`application/x-www-form-urlencoded`: `+` is a space). Shared by the
//! HTTP routes and by the token lookup (`?token=`), which is why it sits
//! below both.

/// The first value of `name` in a query string, percent-decoded.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Every value of `name`, decoded, in order; at most `max` of them (the
/// caller refuses a request that reaches it, so `max + 1` is asked for).
pub fn query_params(query: Option<&str>, name: &str, max: usize) -> Vec<String> {
    let Some(query) = query else {
        return Vec::new();
    };
    url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == name)
        .take(max)
        .map(|(_, v)| v.into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::query::query_param;

    #[test]
    fn reads_the_first_value_decoded() {
        let q = Some("since=1-0&token=a%2Bb&token=x&sp=a+b");
        assert_eq!(query_param(q, "since").as_deref(), Some("1-0"));
        assert_eq!(query_param(q, "token").as_deref(), Some("a+b"));
        assert_eq!(query_param(q, "sp").as_deref(), Some("a b"));
        assert_eq!(query_param(q, "nope"), None);
        assert_eq!(query_param(None, "since"), None);
        use crate::query::query_params;
        assert_eq!(query_params(q, "token", 5), ["a+b", "x"]);
        assert_eq!(query_params(q, "token", 1), ["a+b"]);
        assert!(query_params(None, "token", 5).is_empty());
    }
}
