//! SIGTERM on the real binary: after `shutdown.lb_grace` the clients are
//! closed with 1012 and a `{"reconnect_ms":n}` hint, in batches spread over
//! `shutdown.drain_window`; the process exits 0 once the last one is gone.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

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
