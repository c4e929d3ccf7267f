use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::hub::outbox::{Drained, Limits};

const S: fn(u64) -> Duration = Duration::from_secs;

#[test]
fn batches_run_from_the_start_of_the_window_to_its_end() {
    let s = Schedule::new(S(10));
    assert_eq!(s.batches(), 20);
    assert_eq!(s.offset(0), Duration::ZERO);
    assert_eq!(s.offset(19), S(10));
    let s = Schedule::new(S(5));
    assert_eq!(s.batches(), 10);
    assert_eq!(s.offset(9), S(5));
}

#[test]
fn no_window_is_one_batch_at_once_and_no_wait() {
    let s = Schedule::new(Duration::ZERO);
    assert_eq!(s.batches(), 1);
    assert_eq!(s.offset(0), Duration::ZERO);
    assert_eq!(s.range(0, 7), 0..7);
    assert_eq!(s.reconnect_in(0, Duration::ZERO, 0.9), Duration::ZERO);
    // A window too short for two batches: one batch, returns spread over it.
    let s = Schedule::new(Duration::from_millis(200));
    assert_eq!(s.batches(), 1);
    let hint = s.reconnect_in(0, Duration::ZERO, 0.5);
    assert_eq!(hint, Duration::from_millis(300));
}

#[test]
fn batches_take_every_connection_once_in_near_equal_parts() {
    for window in [0, 1, 5, 10, 60] {
        let s = Schedule::new(S(window));
        for total in [0, 1, 7, 1000, 15_001] {
            let mut next = 0;
            let (mut least, mut most) = (usize::MAX, 0);
            for k in 0..s.batches() {
                let r = s.range(k, total);
                assert_eq!(r.start, next, "window {window}, total {total}, batch {k}");
                next = r.end;
                least = least.min(r.len());
                most = most.max(r.len());
            }
            assert_eq!(next, total);
            assert!(most - least <= 1, "window {window}, total {total}");
        }
    }
}

/// Most closes sent within any closed one-second span of the schedule.
fn busiest_second(s: &Schedule, total: usize) -> usize {
    let at: Vec<(Duration, usize)> = (0..s.batches())
        .map(|k| (s.offset(k), s.range(k, total).len()))
        .collect();
    at.iter()
        .map(|(from, _)| {
            at.iter()
                .filter(|(t, _)| *t >= *from && *t <= *from + S(1))
                .map(|(_, n)| n)
                .sum()
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn no_second_gets_more_than_its_share_of_the_window() {
    for tenths in 1..=300 {
        let window = Duration::from_millis(100 * tenths);
        let s = Schedule::new(window);
        assert!(s.batches() == 1 || s.spacing() > Duration::from_millis(500));
        for total in [1usize, 7, 1000, 15_000] {
            let half_share = (total as f64 / (2.0 * window.as_secs_f64())).ceil() as usize;
            let busiest = busiest_second(&s, total);
            assert!(
                busiest <= 2 * half_share.max(1),
                "window {window:?}, {total} clients: {busiest} in one second"
            );
        }
    }
    // The integration test's case, with room for timing noise: three
    // batches (more than a fifth) never fall within 1.1 s.
    let s = Schedule::new(S(5));
    assert_eq!(busiest_second(&s, 1000), 200);
    assert!(s.offset(2) - s.offset(0) > Duration::from_millis(1100));
}

#[test]
fn clients_come_back_one_window_later_in_the_order_they_left() {
    let s = Schedule::new(S(10));
    let gap = s.spacing();
    // The first batch, on time: the whole window, plus its jitter.
    assert_eq!(s.reconnect_in(0, Duration::ZERO, 0.0), S(10));
    assert_eq!(s.reconnect_in(0, Duration::ZERO, 0.5), S(10) + gap / 2);
    // Every batch is back one window after it went out...
    for k in 0..s.batches() {
        assert_eq!(s.reconnect_in(k, s.offset(k), 0.0), S(10));
    }
    // ...so the returns follow the closes' order and pace; a late batch is
    // told less, to come back on time.
    let late = Duration::from_millis(300);
    assert_eq!(s.reconnect_in(3, s.offset(3) + late, 0.0), S(10) - late);
    let back = |k: u32, j: f64| s.offset(k) + s.reconnect_in(k, s.offset(k), j);
    assert!(back(0, 0.999) < back(1, 0.0));
    assert!(back(19, 0.0) - back(0, 0.0) == S(10));
}

fn outbox(metrics: &Arc<Metrics>) -> Arc<Outbox> {
    let limits = Limits {
        max_messages: 16,
        max_conflated: 16,
    };
    let o = Arc::new(Outbox::new(limits, metrics.clone()));
    o.release(Vec::new(), None);
    o
}

/// The close frame an outbox would send: (code, reason).
fn close_of(o: &Outbox) -> Option<(u16, String)> {
    let mut buf = Vec::new();
    match o.drain(&mut buf, 1 << 16) {
        // Server frames are unmasked: 0x88, a 7-bit length, then the payload.
        Drained::Close(f) => Some((
            u16::from_be_bytes([f[2], f[3]]),
            String::from_utf8(f[4..].to_vec()).unwrap(),
        )),
        _ => None,
    }
}

fn config(lb_grace: Duration, window: Duration) -> ShutdownConfig {
    ShutdownConfig {
        lb_grace,
        drain_window: window,
        drain_timeout: lb_grace + window + S(1),
    }
}

#[tokio::test]
async fn every_connection_gets_1012_with_a_hint_and_each_close_is_counted() {
    let metrics = Arc::new(Metrics::new());
    let connections = Arc::new(Connections::default());
    let outboxes: Vec<_> = (0..5).map(|_| outbox(&metrics)).collect();
    let registrations: Vec<_> = outboxes
        .iter()
        .map(|o| connections.register(o.clone(), 100).unwrap())
        .collect();
    // One already closing on its own: not closed again, not counted.
    outboxes[4].close(close::PING_TIMEOUT, "no answer to pings");
    // Two batches: at the end of the grace and one second later.
    let began = Instant::now();
    let grace = Duration::from_millis(100);
    run(&connections, &metrics, &config(grace, S(1)), began).await;
    assert!(began.elapsed() >= Duration::from_millis(1100));
    for o in &outboxes[..4] {
        let (code, reason) = close_of(o).expect("a close frame");
        assert_eq!(code, 1012);
        let hint: serde_json::Value = serde_json::from_str(&reason).unwrap();
        let ms = hint["reconnect_ms"].as_u64().expect("reconnect_ms");
        assert!((800..=2000).contains(&ms), "{reason}");
    }
    assert_eq!(close_of(&outboxes[4]).unwrap().0, 4000);
    assert!(metrics
        .encode()
        .contains(r#"pulsegate_ws_closes_total{code="1012"} 4"#));
    drop(registrations);
}

#[tokio::test]
async fn the_drain_ends_when_the_last_connection_does() {
    let metrics = Arc::new(Metrics::new());
    let connections = Arc::new(Connections::default());
    let long = config(S(60), S(60));
    // None open: no grace to wait out.
    let quick = tokio::time::timeout(S(5), run(&connections, &metrics, &long, Instant::now()));
    assert!(quick.await.is_ok());
    // The last one leaves during the grace.
    let registration = connections.register(outbox(&metrics), 10).unwrap();
    let leaves = async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(registration);
        std::future::pending::<()>().await
    };
    let drained = run(&connections, &metrics, &long, Instant::now());
    tokio::select! {
        _ = drained => {}
        _ = leaves => unreachable!(),
        _ = tokio::time::sleep(S(5)) => panic!("still draining after the last connection left"),
    }
}
