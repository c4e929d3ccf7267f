//! SIGTERM on the real binary: clients get 1001, the process exits 0.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_clients_with_1001_and_exits_zero() {
    let redis = RedisServer::spawn().await;
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pulsegate"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--redis-url",
            &redis.url(),
        ])
        .env("PULSEGATE_SHUTDOWN_LB_GRACE", "0s")
        .env("PULSEGATE_SHUTDOWN_DRAIN_WINDOW", "0s")
        .env("PULSEGATE_SHUTDOWN_DRAIN_TIMEOUT", "5s")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pulsegate");
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_http_ok(addr, "/readyz", Duration::from_secs(15)).await;
    let mut clients = Vec::new();
    for path in ["/dashboard/ws/p1", "/ws"] {
        let mut ws = connect(addr, path).await;
        if path != "/ws" {
            next_json(&mut ws, Duration::from_secs(5)).await;
        }
        clients.push(ws);
    }
    let started = Instant::now();
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    for ws in &mut clients {
        let (code, reason) = expect_close(ws, Duration::from_secs(5)).await;
        assert_eq!(code, 1001);
        assert!(!reason.is_empty());
    }
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(started.elapsed() < Duration::from_secs(6));
}
