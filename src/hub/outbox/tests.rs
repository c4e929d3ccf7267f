//! The outbox as plain synchronous code: hold and release, the floor,
//! conflation slots across wrapped sequence numbers, the bounds, closes;
//! the same per `/ws` channel.

use super::*;

fn outbox() -> Outbox {
    let limits = Limits {
        max_messages: 8,
        max_conflated: 8,
    };
    let o = Outbox::new(limits, Arc::new(Metrics::new()));
    o.release(Vec::new(), None);
    o
}

fn drain_all(o: &Outbox) -> (usize, bool) {
    let mut frames = 0;
    loop {
        let mut buf = Vec::new();
        match o.drain(&mut buf, 1 << 20) {
            Drained::Frames(n) => frames += n,
            Drained::Close(_) => return (frames, true),
            Drained::Empty | Drained::Finished => return (frames, false),
        }
    }
}

#[test]
fn a_close_after_queued_sends_the_queue_first_and_takes_nothing_new() {
    let o = outbox();
    o.push_frame(Bytes::from_static(b"a"));
    o.push_frame(Bytes::from_static(b"b"));
    o.close_after_queued(close::POLICY, "rate");
    assert_eq!(o.push_frame(Bytes::from_static(b"c")), Pushed::Closed);
    assert!(o.is_closing());
    assert_eq!(drain_all(&o), (2, true));
}

#[test]
fn a_plain_close_discards_the_queue() {
    let o = outbox();
    o.push_frame(Bytes::from_static(b"a"));
    o.close(close::GOING_AWAY, "bye");
    assert_eq!(drain_all(&o), (0, true));
}
fn update(key: &str, offset: u64, body: &'static [u8]) -> Delivery {
    Delivery {
        frame: Bytes::from_static(body),
        conflation_key: Some(Arc::from(key)),
        offset: Some((offset, 0)),
        channel: None,
    }
}

fn lossless(offset: u64, body: &'static [u8]) -> Delivery {
    Delivery {
        frame: Bytes::from_static(body),
        conflation_key: None,
        offset: Some((offset, 0)),
        channel: None,
    }
}

fn held() -> Outbox {
    let limits = Limits {
        max_messages: 3,
        max_conflated: 2,
    };
    Outbox::new(limits, Arc::new(Metrics::new()))
}

/// Everything the writer would send, as one byte string.
fn sent(o: &Outbox) -> Vec<u8> {
    let mut buf = Vec::new();
    while let Drained::Frames(_) = o.drain(&mut buf, 1 << 20) {}
    buf
}

#[test]
fn nothing_goes_out_until_release_and_the_snapshot_goes_first() {
    let o = held();
    o.push(&lossless(5, b"a"));
    let mut buf = Vec::new();
    assert!(matches!(o.drain(&mut buf, 1 << 20), Drained::Empty));
    o.release(vec![Bytes::from_static(b"S")], None);
    assert_eq!(sent(&o), b"Sa");
}

#[test]
fn frames_ahead_go_out_while_held_and_conflation_survives_them() {
    let o = Outbox::new(
        Limits {
            max_messages: 8,
            max_conflated: 4,
        },
        Arc::new(Metrics::new()),
    );
    assert!(o.is_starting());
    o.push(&update("p\0v1", 1, b"1"));
    o.push(&lossless(2, b"a"));
    assert!(o.push_ahead(Bytes::from_static(b"D")));
    assert!(o.push_ahead(Bytes::from_static(b"E")));
    // Only the frames ahead, in the order they came.
    assert_eq!(sent(&o), b"DE");
    // The conflation index still finds the update behind them.
    assert_eq!(o.push(&update("p\0v1", 3, b"3")), Pushed::Conflated);
    o.release(vec![Bytes::from_static(b"S")], None);
    assert!(!o.is_starting());
    // Released: a frame "ahead" is an ordinary reply.
    assert!(o.push_ahead(Bytes::from_static(b"F")));
    assert_eq!(sent(&o), b"Sa3F");
}

#[test]
fn the_floor_drops_what_the_snapshot_covers_now_and_later() {
    let o = held();
    o.push(&lossless(4, b"a"));
    o.push(&update("p\0v1", 5, b"b"));
    o.push(&lossless(6, b"c"));
    o.release(vec![Bytes::from_static(b"S")], Some((5, 0)));
    assert_eq!(o.push(&lossless(5, b"x")), Pushed::Covered);
    assert_eq!(o.push(&update("p\0v1", 3, b"y")), Pushed::Covered);
    assert_eq!(o.push(&lossless(7, b"d")), Pushed::Queued);
    assert_eq!(sent(&o), b"Scd");
}

#[test]
fn conflation_keeps_the_newest_across_wrapped_sequence_numbers() {
    let o = held();
    // Released with frames in front: the head sequence wraps below zero.
    o.release(
        vec![Bytes::from_static(b"S"), Bytes::from_static(b"T")],
        None,
    );
    assert_eq!(o.push(&update("p\0v1", 1, b"1")), Pushed::Queued);
    assert_eq!(o.push(&update("p\0v2", 2, b"2")), Pushed::Queued);
    assert_eq!(o.push(&update("p\0v1", 3, b"3")), Pushed::Conflated);
    assert_eq!(sent(&o), b"ST23");
    // The slots are free again: new keys queue, not conflate.
    assert_eq!(o.push(&update("p\0v1", 4, b"4")), Pushed::Queued);
    assert_eq!(sent(&o), b"4");
}

#[test]
fn bounds_close_with_4008() {
    let o = held();
    o.release(Vec::new(), None);
    for i in 0..3 {
        assert_eq!(o.push(&lossless(i, b"m")), Pushed::Queued);
    }
    assert_eq!(o.push(&lossless(9, b"m")), Pushed::Overflow);
    assert_eq!(o.push(&lossless(10, b"m")), Pushed::Closed);
    let mut buf = Vec::new();
    assert!(matches!(o.drain(&mut buf, 1 << 20), Drained::Close(_)));

    let o = held();
    o.release(Vec::new(), None);
    assert_eq!(o.push(&update("a", 1, b"1")), Pushed::Queued);
    assert_eq!(o.push(&update("b", 2, b"2")), Pushed::Queued);
    assert_eq!(o.push(&update("c", 3, b"3")), Pushed::Overflow);
}

/// A publication of the `/ws` channel `ch`.
fn on(ch: &str, offset: Option<u64>, body: &'static [u8]) -> Delivery {
    Delivery {
        frame: Bytes::from_static(body),
        conflation_key: None,
        offset: offset.map(|o| (o, 0)),
        channel: Some(Arc::from(ch)),
    }
}

#[test]
fn a_held_channel_waits_while_the_others_flow() {
    let o = outbox();
    let hold = o.hold_channel("a");
    assert!(o.is_held("a") && !o.is_held("b"));
    assert_eq!(o.push(&on("a", Some(4), b"a4")), Pushed::Held);
    assert_eq!(o.push(&on("b", Some(1), b"b1")), Pushed::Queued);
    assert_eq!(o.push(&on("a", Some(6), b"a6")), Pushed::Held);
    assert_eq!(o.push(&on("a", None, b"a-")), Pushed::Held);
    assert_eq!(sent(&o), b"b1");
    let first = vec![Bytes::from_static(b"ACK"), Bytes::from_static(b"S5")];
    assert!(o.release_channel("a", hold, first, Some((5, 0))));
    assert!(!o.is_held("a"));
    // The ack and snapshot, then what it does not cover, in order.
    assert_eq!(sent(&o), b"ACKS5a6a-");
    // The floor stays: a late copy of a covered event is dropped.
    assert_eq!(o.push(&on("a", Some(5), b"x")), Pushed::Covered);
    assert_eq!(o.push(&on("b", Some(5), b"b5")), Pushed::Queued);
    assert_eq!(o.push(&on("a", Some(7), b"a7")), Pushed::Queued);
    assert_eq!(sent(&o), b"b5a7");
}

#[test]
fn a_newer_hold_or_an_unsubscribe_voids_a_release() {
    let o = outbox();
    let old = o.hold_channel("a");
    o.push(&on("a", Some(4), b"a4"));
    let new = o.hold_channel("a");
    assert!(o.holds("a", new) && !o.holds("a", old));
    assert!(!o.release_channel("a", old, vec![Bytes::from_static(b"OLD")], None));
    assert_eq!(sent(&o), b"");
    // The newer hold kept what the older one held.
    assert!(o.release_channel("a", new, vec![Bytes::from_static(b"NEW")], Some((3, 0))));
    assert_eq!(sent(&o), b"NEWa4");

    let hold = o.hold_channel("a");
    o.push(&on("a", Some(9), b"a9"));
    o.drop_channel("a");
    assert!(!o.release_channel("a", hold, vec![Bytes::from_static(b"S")], None));
    // Forgotten with its floor: the channel passes freely.
    assert_eq!(o.push(&on("a", Some(2), b"a2")), Pushed::Queued);
    assert_eq!(sent(&o), b"a2");
}

#[test]
fn held_messages_count_against_the_bound() {
    let o = held();
    o.release(Vec::new(), None);
    let hold = o.hold_channel("a");
    assert_eq!(o.push(&on("a", Some(1), b"1")), Pushed::Held);
    assert_eq!(o.push(&on("b", Some(1), b"2")), Pushed::Queued);
    o.drop_channel("a");
    // Dropping the channel gave its slot back.
    assert_eq!(o.push(&on("b", Some(2), b"3")), Pushed::Queued);
    let _ = hold;
    o.hold_channel("a");
    assert_eq!(o.push(&on("a", Some(1), b"4")), Pushed::Held);
    assert_eq!(o.push(&on("a", Some(2), b"5")), Pushed::Overflow);
    assert!(o.is_closing());
}

#[tokio::test]
async fn room_for_a_replay_waits_for_the_writer() {
    let o = Arc::new(held());
    o.release(Vec::new(), None);
    o.push_frame(Bytes::from_static(b"1"));
    o.push_frame(Bytes::from_static(b"2"));
    let waiting = {
        let o = o.clone();
        tokio::spawn(async move { o.wait_room(2).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert!(!waiting.is_finished(), "3 slots, 2 taken: no room for 2");
    let mut buf = Vec::new();
    let _ = o.drain(&mut buf, 1);
    tokio::time::timeout(std::time::Duration::from_secs(1), waiting)
        .await
        .expect("woken by the drain")
        .unwrap();
}
