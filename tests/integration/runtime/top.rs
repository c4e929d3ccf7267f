//! `pulsegate top` against a running gateway, in a pseudo-terminal made by
//! util-linux `script`: it shows the figures, and Ctrl-C typed into the
//! terminal (the line discipline turns it into SIGINT) ends it with status
//! 0 and the terminal restored. Against nothing, it names the URL and fails.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;

/// The alternate screen left and the cursor shown again.
const RESTORED: &str = "\x1b[?25h\x1b[?1049l";

#[tokio::test]
async fn top_shows_the_figures_and_exits_0_on_ctrl_c() {
    let redis = RedisServer::spawn().await;
    let mut c = test_config(&redis);
    c.runtime.interval = Duration::from_millis(200);
    let gw = start_gateway(c).await;
    let url = format!("http://{}", gw.local_addr);
    // `exec`: the pty's foreground group must be top alone. A shell left
    // waiting beside it gets the same SIGINT and dies of it (status 130),
    // whatever top does.
    let cmd = format!(
        "exec {} top --url {url} --interval 0.2",
        env!("CARGO_BIN_EXE_pulsegate")
    );
    let mut child = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    let out = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().unwrap();
    let sink = out.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let text = || String::from_utf8_lossy(&out.lock().unwrap()).to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    // Two redraws with a sample: the figures, and "1" connection (top's own).
    let shown = |t: &str| {
        [
            "CPU",
            "Memory",
            "Connections",
            "Deliveries",
            "Redis",
            " MB",
            "up",
        ]
        .iter()
        .all(|w| t.contains(w))
            && t.matches("sample at").count() >= 2
    };
    while !shown(&text()) {
        assert!(
            Instant::now() < deadline,
            "top never showed the figures:\n{}",
            text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"\x03").expect("type Ctrl-C");
    stdin.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "top did not exit on Ctrl-C:\n{}",
            text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(stdin);
    reader.join().unwrap();
    let t = text();
    assert_eq!(status.code(), Some(0), "top exited with {status:?}:\n{t}");
    assert!(
        t.trim_end().ends_with(RESTORED),
        "terminal not restored:\n{t:?}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn top_names_the_url_it_cannot_reach() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_pulsegate"))
            .args(["top", "--url", &url])
            .stdin(Stdio::null())
            .output()
            .expect("run top")
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        err.contains(&format!("cannot connect to http://127.0.0.1:{port}")),
        "{err}"
    );
}
