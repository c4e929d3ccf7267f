//! SIGTERM on the real binary: after `shutdown.lb_grace` the clients are
//! closed with 1012 and a `{"reconnect_ms":n}` hint, in batches spread over
//! `shutdown.drain_window`; the process exits 0 once the last one is gone.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

/// The gateway binary on a free port with the given `[shutdown]` settings.
async fn gateway(
    redis: &RedisServer,
    lb_grace: &str,
    window: &str,
    timeout: &str,
) -> (Child, SocketAddr) {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_pulsegate"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--redis-url",
            &redis.url(),
        ])
        .env("PULSEGATE_SHUTDOWN_LB_GRACE", lb_grace)
        .env("PULSEGATE_SHUTDOWN_DRAIN_WINDOW", window)
        .env("PULSEGATE_SHUTDOWN_DRAIN_TIMEOUT", timeout)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pulsegate");
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_http_ok(addr, "/readyz", Duration::from_secs(15)).await;
    (child, addr)
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// The process's exit, waited for off the runtime.
async fn exit_of(mut child: Child) -> std::process::ExitStatus {
    tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap()
}

/// The `reconnect_ms` of a 1012 reason, or a panic naming what was wrong.
fn reconnect_ms(reason: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(reason)
        .unwrap_or_else(|e| panic!("reason {reason:?} is not JSON: {e}"));
    assert_eq!(v.as_object().map(|o| o.len()), Some(1), "{reason}");
    v["reconnect_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no reconnect_ms in {reason}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_clients_with_1012_and_a_hint_and_exits_zero() {
    let redis = RedisServer::spawn().await;
    let (child, addr) = gateway(&redis, "200ms", "1s", "5s").await;
    let mut clients = Vec::new();
    for path in ["/dashboard/ws/p1", "/ws"] {
        let mut ws = connect(addr, path).await;
        if path != "/ws" {
            next_json(&mut ws, Duration::from_secs(5)).await;
        }
        clients.push(ws);
    }
    let started = Instant::now();
    sigterm(&child);
    for ws in &mut clients {
        let (code, reason) = expect_close(ws, Duration::from_secs(5)).await;
        assert_eq!(code, 1012, "{reason}");
        // Told to stay away about one window, plus up to one batch gap.
        let ms = reconnect_ms(&reason);
        assert!((500..=2100).contains(&ms), "{reason}");
    }
    // Not before the load balancer's grace.
    assert!(started.elapsed() >= Duration::from_millis(200));
    // Answer the closes, so the sessions end at once.
    for ws in &mut clients {
        while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(3), ws.next()).await {}
    }
    let status = exit_of(child).await;
    assert!(status.success(), "exit status {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// When one client's close arrived, relative to SIGTERM, and what it said.
struct Closed {
    at: Duration,
    code: u16,
    reason: String,
}

/// Reads until the close frame, then answers it and reads to the end.
async fn until_closed(mut ws: Ws, sent: Instant) -> Closed {
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(frame))) => {
                let at = sent.elapsed();
                let (code, reason) = match frame {
                    Some(CloseFrame { code, reason }) => (u16::from(code), reason.to_string()),
                    None => (1005, String::new()),
                };
                // tungstenite queues the reply; reading on sends it.
                let _ = tokio::time::timeout(Duration::from_secs(3), async {
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
                return Closed { at, code, reason };
            }
            Some(Ok(_)) => continue,
            other => panic!("connection ended without a close frame: {other:?}"),
        }
    }
}

/// Most of `times` within any closed span of one second.
fn busiest_second(times: &[Duration]) -> usize {
    let mut t = times.to_vec();
    t.sort();
    let mut most = 0;
    let mut from = 0;
    for to in 0..t.len() {
        while t[to] - t[from] > Duration::from_secs(1) {
            from += 1;
        }
        most = most.max(to - from + 1);
    }
    most
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_are_closed_over_the_window_and_told_when_to_return() {
    let _turn = heavy().await;
    const CLIENTS: usize = 1000;
    let redis = RedisServer::spawn().await;
    let (child, addr) = gateway(&redis, "200ms", "5s", "10s").await;
    // Both endpoints; connected 50 at a time.
    let mut clients = Vec::with_capacity(CLIENTS);
    for chunk in 0..CLIENTS / 50 {
        let batch = (0..50).map(|i| {
            let path = if (chunk * 50 + i) % 10 == 0 {
                format!("/dashboard/ws/p{}", i % 5)
            } else {
                "/ws".to_owned()
            };
            async move { connect(addr, &path).await }
        });
        clients.extend(futures_util::future::join_all(batch).await);
    }
    // Every session is registered (the dashboard ones have their snapshot).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let sent = Instant::now();
    sigterm(&child);
    let readers: Vec<_> = clients
        .into_iter()
        .map(|ws| tokio::spawn(until_closed(ws, sent)))
        .collect();
    let mut closed = Vec::with_capacity(CLIENTS);
    for r in readers {
        closed.push(
            tokio::time::timeout(Duration::from_secs(15), r)
                .await
                .expect("closed in time")
                .unwrap(),
        );
    }
    let status = exit_of(child).await;
    let exited = sent.elapsed();
    assert!(status.success(), "exit status {status:?}");

    // Every close is 1012 with a hint.
    for c in &closed {
        assert_eq!(c.code, 1012, "{}", c.reason);
    }
    let hints: Vec<u64> = closed.iter().map(|c| reconnect_ms(&c.reason)).collect();

    // Spread over the window: none before the grace, the last ~5 s after the
    // first, and no more than a fifth of them in any one second.
    let times: Vec<Duration> = closed.iter().map(|c| c.at).collect();
    let first = *times.iter().min().unwrap();
    let last = *times.iter().max().unwrap();
    assert!(
        first >= Duration::from_millis(200),
        "first close {first:?} after SIGTERM"
    );
    assert!(
        last - first >= Duration::from_millis(4800),
        "closes spanned only {:?}",
        last - first
    );
    let busiest = busiest_second(&times);
    assert!(busiest <= CLIENTS / 5, "{busiest} closes within one second");

    // The process goes once the last client has answered, well before the
    // 10 s deadline.
    assert!(
        exited < last + Duration::from_secs(2),
        "exited {exited:?}, last close {last:?}"
    );

    // Told to come back after the window, in the order they left: the
    // returns (arrival + hint) start at the window's end, span about a
    // window, and the first clients closed are the first back.
    let back: Vec<Duration> = closed
        .iter()
        .zip(&hints)
        .map(|(c, ms)| c.at + Duration::from_millis(*ms))
        .collect();
    let window_end = first + Duration::from_secs(5);
    let earliest = *back.iter().min().unwrap();
    assert!(
        earliest + Duration::from_millis(300) >= window_end,
        "a client told to return at {earliest:?}"
    );
    let mut order: Vec<usize> = (0..CLIENTS).collect();
    order.sort_by_key(|&i| times[i]);
    let mean =
        |ix: &[usize]| ix.iter().map(|&i| back[i].as_secs_f64()).sum::<f64>() / ix.len() as f64;
    let (early, late) = (mean(&order[..100]), mean(&order[CLIENTS - 100..]));
    assert!(
        late - early > 4.0,
        "early closes return at {early:.2}s, late ones at {late:.2}s"
    );
    // Random within a batch gap, so only roughly even: an expected 180/s.
    let busiest_return = busiest_second(&back);
    assert!(
        busiest_return <= CLIENTS / 4,
        "{busiest_return} returns within one second"
    );
    println!(
        "closes {first:?}..{last:?} (busiest second {busiest}); returns {earliest:?}.. (busiest second {busiest_return}); exit {exited:?}"
    );
}
