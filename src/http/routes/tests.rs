//! The route table's matching: per method, 405 with `Allow`, static
//! segments before parameters.

use super::*;

fn found(method: Method, path: &str) -> (&'static str, Params) {
    match TABLE.lookup(&method, path) {
        Lookup::Found(r, p) => (r.pattern, p),
        Lookup::MethodNotAllowed { allow, .. } => panic!("{method} {path}: 405 {allow:?}"),
        Lookup::NotFound => panic!("{method} {path}: 404"),
    }
}

#[test]
fn the_table_builds() {
    assert!(Table::build().is_ok());
}

#[test]
fn routes_by_method() {
    let (p, params) = found(Method::GET, "/api/events/early-kill");
    assert_eq!(p, "/api/events/{persona_id}");
    assert_eq!(params.persona(), Some("early-kill"));
    assert_eq!(
        found(Method::POST, "/api/events/early-kill").0,
        "/api/events/early-kill"
    );
    let (p, params) = found(Method::GET, "/api/variants/p1/v9/history/");
    assert_eq!(p, "/api/variants/{persona_id}/{variant_id}/history");
    assert_eq!(params.get("variant_id"), Some("v9"));
    assert_eq!(
        found(Method::GET, "/api/variants/p1/active").0,
        "/api/variants/{persona_id}/active"
    );
    assert_eq!(found(Method::GET, "/").0, "/");
    assert_eq!(
        found(Method::GET, "/dashboard/ws/p1").0,
        "/dashboard/ws/{persona_id}"
    );
    assert_eq!(found(Method::GET, "/sse/p1").0, "/sse/{persona_id}");
    assert_eq!(found(Method::GET, "/sse").0, "/sse");
    assert_eq!(
        found(Method::GET, "/dashboard/p1").0,
        "/dashboard/{persona_id}"
    );
    assert_eq!(
        found(Method::GET, "/client/pulsegate.js").0,
        "/client/pulsegate.js"
    );
    let (p, params) = found(Method::GET, "/api/analytics/channels/task/summary");
    assert_eq!(p, "/api/analytics/channels/{namespace}/summary");
    assert_eq!(params.get("namespace"), Some("task"));
    // A persona called `channels` keeps its analytics.
    let (p, params) = found(Method::GET, "/api/analytics/channels/histogram");
    assert_eq!(p, "/api/analytics/{persona_id}/histogram");
    assert_eq!(params.persona(), Some("channels"));
}

#[test]
fn other_methods_get_405_with_allow() {
    match TABLE.lookup(&Method::POST, "/api/metrics/p1") {
        Lookup::MethodNotAllowed { pattern, allow } => {
            assert_eq!(pattern, "/api/metrics/{persona_id}");
            assert_eq!(allow, vec![Method::GET]);
        }
        _ => panic!("expected 405"),
    }
    match TABLE.lookup(&Method::DELETE, "/api/events/early-kill") {
        Lookup::MethodNotAllowed { allow, .. } => {
            assert_eq!(allow, vec![Method::GET, Method::POST]);
        }
        _ => panic!("expected 405"),
    }
    assert!(matches!(
        TABLE.lookup(&Method::GET, "/nope/x/y/z"),
        Lookup::NotFound
    ));
    assert!(matches!(
        TABLE.lookup(&Method::GET, "/api/metrics"),
        Lookup::NotFound
    ));
}
