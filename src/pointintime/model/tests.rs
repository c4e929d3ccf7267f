//! The replay rules that are easy to get subtly wrong.
use super::*;

fn tick(seq: i64, minute: i64, dv: u64) -> Tick {
    Tick {
        id: (1, seq),
        variant: "v".into(),
        ts: minute * MINUTE_MS + 5,
        view_delta: dv,
        interaction_delta: 1,
    }
}

/// As `on_performance_update` keeps its ring: a minute's updates add
/// up, a later minute in the same slot replaces it, and an update an
/// hour older than the newest minute is not bucketed.
#[test]
fn the_minute_ring_keeps_what_redis_keeps() {
    let t = [
        tick(0, 100, 10),
        tick(1, 100, 5),
        tick(2, 160, 7),
        tick(3, 99, 3),
        tick(4, 101, 2),
    ];
    let refs: Vec<&Tick> = t.iter().collect();
    let ring = ring(&refs);
    assert_eq!(ring.get(&100), None, "minute 160 took slot 40");
    assert_eq!(ring.get(&160), Some(&(7.0, 1.0)));
    assert_eq!(
        ring.get(&99),
        None,
        "older than the newest minute by an hour"
    );
    assert_eq!(ring.get(&101), Some(&(2.0, 1.0)));
    let refs: Vec<&Tick> = t[..2].iter().collect();
    assert_eq!(super::ring(&refs).get(&100), Some(&(15.0, 2.0)));
}

#[test]
fn rounding_is_the_libraries() {
    assert_eq!(r6(1.0 / 3.0), 0.333333);
    assert_eq!(r2(12.345), 12.35);
    assert_eq!(r6(-0.0000005), 0.0);
}
