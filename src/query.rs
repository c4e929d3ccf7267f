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
    }
}
