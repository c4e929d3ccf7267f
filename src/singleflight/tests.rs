use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::{oneshot, Notify};

use super::{Flights, Role};

/// Counts the calls sent, and answers each with its own number.
#[derive(Clone, Default)]
struct Counter(Arc<AtomicU64>);

impl Counter {
    fn call(&self) -> impl std::future::Future<Output = u64> + Send + 'static {
        let n = self.0.clone();
        async move { n.fetch_add(1, Ordering::SeqCst) + 1 }
    }

    fn sent(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_call_already_sent_is_shared_by_nobody() {
    let flights = Flights::<&str, u64>::new(16);
    let calls = Counter::default();
    let results = join_all((0..10).map(|_| flights.run("p", || calls.call()))).await;
    // Each call ends within its first poll, before the next caller asks.
    assert_eq!(calls.sent(), 10);
    assert!(results.iter().all(|(_, r)| *r == Role::Queued));
    assert_eq!(flights.in_flight(), 0, "the entry goes with the call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_during_a_call_share_the_next_one() {
    let flights = Arc::new(Flights::<u32, u64>::new(16));
    let calls = Counter::default();
    let (first, gate) = hold(&flights, 1, 100).await;
    let later = tokio::spawn({
        let (flights, calls) = (flights.clone(), calls.clone());
        async move {
            let f = &flights;
            join_all((0..100).map(|_| f.run(1, || calls.call()))).await
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        calls.sent(),
        0,
        "the later callers wait for the call under way"
    );
    gate.notify_one();
    assert_eq!(first.await.unwrap(), (100, Role::Queued));
    let later = later.await.unwrap();
    assert!(
        later.iter().all(|(v, _)| *v == 1),
        "one call for all: {later:?}"
    );
    let joined = later.iter().filter(|(_, r)| *r == Role::Joined).count();
    assert_eq!(joined, 99, "one caller queued it, 99 joined");
    assert_eq!(calls.sent(), 1);
    assert_eq!(flights.in_flight(), 0, "the entry goes with the call");
}

/// A call that says when it is sent and answers `value` once `gate` opens.
async fn held(sent: oneshot::Sender<()>, gate: Arc<Notify>, value: u64) -> u64 {
    let _ = sent.send(());
    gate.notified().await;
    value
}

/// Sends a call on `key` that is held until the returned gate opens.
async fn hold<V: Clone + Send + Sync + 'static>(
    flights: &Arc<Flights<u32, V>>,
    key: u32,
    value: V,
) -> (tokio::task::JoinHandle<(V, Role)>, Arc<Notify>) {
    let gate = Arc::new(Notify::new());
    let (sent, is_sent) = oneshot::channel();
    let task = tokio::spawn({
        let (flights, gate) = (flights.clone(), gate.clone());
        async move {
            let call = async move {
                let _ = sent.send(());
                gate.notified().await;
                value
            };
            flights.run(key, || call).await
        }
    });
    is_sent.await.unwrap();
    (task, gate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_shared_too() {
    let flights = Arc::new(Flights::<u32, Result<u64, Arc<String>>>::new(16));
    let (first, gate) = hold(&flights, 7, Ok(0)).await;
    let sent = Counter::default();
    let later = tokio::spawn({
        let (flights, sent) = (flights.clone(), sent.clone());
        async move {
            let f = &flights;
            join_all((0..5).map(|_| {
                let call = sent.call();
                f.run(7, move || async move {
                    call.await;
                    Err(Arc::new("Redis is down".to_owned()))
                })
            }))
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    gate.notify_one();
    let _ = first.await.unwrap();
    for (r, _) in later.await.unwrap() {
        assert_eq!(r.unwrap_err().as_str(), "Redis is down");
    }
    assert_eq!(sent.sent(), 1);
}

#[tokio::test]
async fn the_call_goes_on_when_the_caller_that_queued_it_leaves() {
    let flights = Arc::new(Flights::<&str, u64>::new(16));
    let gate = Arc::new(Notify::new());
    let (sent, is_sent) = oneshot::channel();
    let under_way = tokio::spawn({
        let (flights, gate) = (flights.clone(), gate.clone());
        async move { flights.run("p", || held(sent, gate, 1)).await }
    });
    is_sent.await.unwrap();
    let run = |flights: Arc<Flights<&'static str, u64>>| {
        tokio::spawn(async move { flights.run("p", || async { 2 }).await })
    };
    let queued = run(flights.clone());
    tokio::time::sleep(Duration::from_millis(10)).await;
    let joined = run(flights.clone());
    tokio::time::sleep(Duration::from_millis(10)).await;
    queued.abort();
    gate.notify_one();
    assert_eq!(under_way.await.unwrap(), (1, Role::Queued));
    let joined = tokio::time::timeout(Duration::from_secs(5), joined)
        .await
        .expect("the joined caller is not stranded");
    assert_eq!(joined.unwrap(), (2, Role::Joined));
    assert_eq!(flights.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_of_abandoned_calls_are_removed() {
    let flights = Arc::new(Flights::<u32, u64>::new(16));
    for key in 0..100 {
        // Sent, then abandoned by its only caller.
        let run = flights.run(key, std::future::pending::<u64>);
        let _ = tokio::time::timeout(Duration::from_millis(1), run).await;
    }
    assert_eq!(flights.in_flight(), 0);
    // Queued behind a call under way, then abandoned before it was sent.
    let (under_way, gate) = hold(&flights, 0, 1).await;
    let run = flights.run(0, std::future::pending::<u64>);
    let _ = tokio::time::timeout(Duration::from_millis(1), run).await;
    assert_eq!(
        flights.in_flight(),
        0,
        "the queued call's entry went with it"
    );
    gate.notify_one();
    assert_eq!(under_way.await.unwrap(), (1, Role::Queued));
    assert_eq!(flights.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_capacity_callers_call_alone() {
    let flights = Arc::new(Flights::<u32, u64>::new(2));
    let (a, gate_a) = hold(&flights, 0, 0).await;
    let (b, gate_b) = hold(&flights, 1, 0).await;
    assert_eq!(flights.in_flight(), 2);
    let calls = Counter::default();
    let later = tokio::spawn({
        let (flights, calls) = (flights.clone(), calls.clone());
        async move {
            let f = &flights;
            join_all((0..3).map(|_| f.run(2, || calls.call()))).await
        }
    });
    let later = later.await.unwrap();
    assert_eq!(
        calls.sent(),
        3,
        "key 2 does not fit: each caller calls alone"
    );
    assert!(later.iter().all(|(_, r)| *r == Role::Queued));
    assert_eq!(flights.in_flight(), 2);
    gate_a.notify_one();
    gate_b.notify_one();
    a.await.unwrap();
    b.await.unwrap();
    assert_eq!(flights.in_flight(), 0);
}

/// Many callers on a few keys, calls of random length: every caller gets a
/// call sent after it asked (the gap-free rule), and calls stay few.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_result_is_from_a_call_sent_after_the_caller_asked() {
    let flights = Arc::new(Flights::<u8, u64>::new(16));
    let clock = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let callers = (0..2000u64).map(|i| {
        let (flights, clock, sent) = (flights.clone(), clock.clone(), sent.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_micros(i * 37 % 5000)).await;
            let asked = clock.fetch_add(1, Ordering::SeqCst);
            let (at, _) = flights
                .run((i % 3) as u8, move || async move {
                    sent.fetch_add(1, Ordering::SeqCst);
                    let at = clock.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_micros(at * 13 % 700)).await;
                    at
                })
                .await;
            assert!(at > asked, "call sent at {at}, asked at {asked}");
        })
    });
    for c in join_all(callers).await {
        c.unwrap();
    }
    assert!(sent.load(Ordering::SeqCst) < 2000);
    assert_eq!(flights.in_flight(), 0);
}
