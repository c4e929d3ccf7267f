//! Scale-out behind a real HAProxy (docs/deploy.md): three gateway
//! processes, clients connected through the balancer, events ingested
//! throughout, every instance restarted in turn with SIGTERM. Every client
//! must end with every offset of its channels exactly once and in order.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

const PERSONAS: usize = 10;
const CLIENTS: usize = 300;
const EVENTS_PER_S: u64 = 500;

/// A gateway process on a fixed port, so HAProxy finds it after a restart.
pub(crate) struct Gateway {
    port: u16,
    child: Option<Child>,
}

impl Gateway {
    pub(crate) fn start(redis: &RedisServer, port: u16) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_pulsegate"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--redis-url", &redis.url()])
            .env("PULSEGATE_LIMITS_TRUSTED_PROXIES", "[\"127.0.0.1\"]")
            .env("PULSEGATE_SHUTDOWN_LB_GRACE", "1200ms")
            .env("PULSEGATE_SHUTDOWN_DRAIN_WINDOW", "2s")
            .env("PULSEGATE_SHUTDOWN_DRAIN_TIMEOUT", "10s")
            .env("PULSEGATE_REDIS_PROBE_INTERVAL", "200ms")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pulsegate");
        Self {
            port,
            child: Some(child),
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// SIGTERM, then the exit status (the drain must end with 0).
    async fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
        tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("join")
            .expect("wait")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// HAProxy with `config/haproxy.cfg`, bound to `public` and balancing `gateways`.
pub(crate) struct Balancer(Child);

impl Balancer {
    pub(crate) fn start(public: u16, gateways: &[u16], dir: &std::path::Path) -> Self {
        let bin = std::env::var("PULSEGATE_HAPROXY").unwrap_or_else(|_| "haproxy".into());
        let template = include_str!("../../config/haproxy.cfg");
        let mut cfg = String::new();
        let mut skipping = false;
        for line in template.lines() {
            if line.trim_start().starts_with("bind ") {
                cfg.push_str(&format!("    bind 127.0.0.1:{public}\n"));
            } else if line.contains("# @servers") {
                for (i, p) in gateways.iter().enumerate() {
                    cfg.push_str(&format!("    server gw{i} 127.0.0.1:{p} check\n"));
                }
                skipping = true;
            } else if line.contains("# @end") {
                skipping = false;
            } else if !skipping {
                cfg.push_str(line);
                cfg.push('\n');
            }
        }
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, cfg).expect("write haproxy.cfg");
        let child = Command::new(&bin)
            .args(["-db", "-f"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start HAProxy ({bin}: {e}); install it with scripts/ensure-haproxy.sh \
                     (scripts/test.sh does)"
                )
            });
        Self(child)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What one client saw: offsets per channel in arrival order, errors.
#[derive(Default)]
struct Seen {
    /// channel (`persona:<id>`) → (the offset it started after, offsets received)
    channels: BTreeMap<String, (Option<String>, Vec<String>)>,
    errors: Vec<Value>,
    reconnects: usize,
    /// Fresh snapshots after the first (a resume that could not be served).
    resnapshots: usize,
}

fn offset_of(v: &Value) -> Option<String> {
    v["offset"].as_str().map(str::to_owned)
}

/// One client through the balancer: `/dashboard/ws/{p}` or `/ws` with two
/// personas; on every close it reconnects after the server's hint and
/// resumes each channel from its last offset.
async fn client(
    lb: SocketAddr,
    personas: Vec<String>,
    multiplex: bool,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
) {
    let mut last: HashMap<String, String> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let path = match (multiplex, last.get(&personas[0])) {
            (true, _) => "/ws".to_owned(),
            (false, Some(o)) => format!("/dashboard/ws/{}?since={o}", personas[0]),
            (false, None) => format!("/dashboard/ws/{}", personas[0]),
        };
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(format!("ws://{lb}{path}")).await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if multiplex {
            for p in &personas {
                let mut m = json!({"type": "subscribe", "channel": format!("persona:{p}")});
                if let Some(o) = last.get(p) {
                    m["since"] = json!(o);
                }
                let _ = futures_util::SinkExt::send(&mut ws, Message::Text(m.to_string())).await;
            }
        }
        let mut wait = Duration::from_millis(50);
        loop {
            let msg = tokio::select! {
                m = ws.next() => m,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if stop.load(Ordering::Relaxed) { return; }
                    continue;
                }
            };
            let text = match msg {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(frame))) => {
                    if let Some(f) = frame {
                        let hint: Value = serde_json::from_str(&f.reason).unwrap_or(Value::Null);
                        if let Some(ms) = hint["reconnect_ms"].as_u64() {
                            wait = Duration::from_millis(ms.min(5_000));
                        }
                    }
                    break;
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => break,
            };
            let v: Value = serde_json::from_str(&text).expect("JSON from the gateway");
            let (persona, offset) = match v["type"].as_str() {
                Some("initial_data") if !multiplex => (personas[0].clone(), offset_of(&v)),
                Some("variant_update") => (personas[0].clone(), offset_of(&v)),
                Some("subscribed") | Some("message") | Some("initial_data") => {
                    let channel = v["channel"].as_str().unwrap_or_default();
                    (
                        channel.trim_start_matches("persona:").to_owned(),
                        offset_of(&v),
                    )
                }
                Some("error") => {
                    seen.lock().unwrap().errors.push(v);
                    continue;
                }
                _ => continue,
            };
            let Some(offset) = offset else { continue };
            let channel = format!("persona:{persona}");
            let mut s = seen.lock().unwrap();
            let entry = s.channels.entry(channel).or_default();
            match v["type"].as_str() {
                // A starting point: what came before it is not owed.
                Some("initial_data") | Some("subscribed") => {
                    if entry.0.is_none() {
                        entry.0 = Some(offset.clone());
                    } else if v["type"] == "initial_data" {
                        s.resnapshots += 1;
                    }
                }
                _ => entry.1.push(offset.clone()),
            }
            last.insert(persona, offset);
        }
        seen.lock().unwrap().reconnects += 1;
        tokio::time::sleep(wait).await;
    }
}

fn parse(o: &str) -> (u64, u64) {
    pulsegate::stream::parse_offset(o).expect("an offset")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_behind_haproxy_loses_and_repeats_nothing() {
    let _turn = heavy().await;
    let redis = RedisServer::spawn().await;
    let publisher = redis.client().await;
    let personas: Vec<String> = (0..PERSONAS).map(|i| format!("lb{i}")).collect();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut gateways: Vec<Gateway> = ports.iter().map(|p| Gateway::start(&redis, *p)).collect();
    for g in &gateways {
        // Ready means the functions library is loaded too.
        wait_http_ok(g.addr(), "/readyz", Duration::from_secs(20)).await;
    }
    for p in &personas {
        ingest(&publisher, p, posted("v0", 0.05, "seed"))
            .await
            .expect("seed");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let public = free_port();
    let _lb = Balancer::start(public, &ports, dir.path());
    let lb = SocketAddr::from(([127, 0, 0, 1], public));
    wait_http_ok(lb, "/readyz", Duration::from_secs(10)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let multiplex = i % 2 == 1;
        let mine = if multiplex {
            vec![
                personas[i % PERSONAS].clone(),
                personas[(i + 3) % PERSONAS].clone(),
            ]
        } else {
            vec![personas[i % PERSONAS].clone()]
        };
        let seen = Arc::new(Mutex::new(Seen::default()));
        let task = tokio::spawn(client(
            lb,
            mine.clone(),
            multiplex,
            stop.clone(),
            seen.clone(),
        ));
        clients.push((mine, seen, task));
    }
    // Every client has its starting point before the events begin to count.
    wait_until("every client to start", Duration::from_secs(30), || async {
        clients.iter().all(|(mine, seen, _)| {
            seen.lock().unwrap().channels.len() == mine.len()
                && seen
                    .lock()
                    .unwrap()
                    .channels
                    .values()
                    .all(|c| c.0.is_some())
        })
    })
    .await;

    let publishing = Arc::new(AtomicBool::new(true));
    let feeder = {
        let (publisher, personas, publishing) =
            (publisher.clone(), personas.clone(), publishing.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / EVENTS_PER_S));
            let mut n = 0u64;
            while publishing.load(Ordering::Relaxed) {
                tick.tick().await;
                let p = &personas[(n as usize) % PERSONAS];
                // Posts, not performance updates: those may be conflated for a
                // lagging client (latest wins), and this test counts every event.
                let v = format!("v{}", n + 1);
                let _ = ingest(&publisher, p, posted(&v, 0.05, &format!("pat{}", n % 7))).await;
                n += 1;
            }
        })
    };
    for g in gateways.iter_mut() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let status = g.stop().await;
        assert!(
            status.success(),
            "a drained gateway exits 0, got {status:?}"
        );
        *g = Gateway::start(&redis, g.port);
        wait_http_ok(g.addr(), "/readyz", Duration::from_secs(20)).await;
        // HAProxy takes it back after `rise` checks.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    publishing.store(false, Ordering::Relaxed);
    feeder.await.expect("feeder");

    // Every event each client's channels got after its starting point.
    let mut streams: HashMap<String, Vec<String>> = HashMap::new();
    for p in &personas {
        streams.insert(
            format!("persona:{p}"),
            stream_ids(&publisher, &format!("pulse:{{{p}}}:stream")).await,
        );
    }
    let owed = |start: &str, channel: &str| -> Vec<String> {
        let start = parse(start);
        streams[channel]
            .iter()
            .filter(|id| parse(id) > start)
            .cloned()
            .collect()
    };
    let behind = |verbose: bool| -> usize {
        let mut n = 0;
        for (mine, seen, _) in &clients {
            let s = seen.lock().unwrap();
            for (ch, (start, got)) in &s.channels {
                let want = owed(start.as_deref().unwrap_or("0-0"), ch);
                if got.len() < want.len() {
                    n += 1;
                    if verbose && n <= 5 {
                        let missing: Vec<_> =
                            want.iter().filter(|w| !got.contains(w)).take(3).collect();
                        eprintln!(
                            "{mine:?} {ch}: {} of {} (start {start:?}, reconnects {}, snapshots after the first {}), missing e.g. {missing:?}",
                            got.len(),
                            want.len(),
                            s.reconnects,
                            s.resnapshots
                        );
                    }
                }
            }
        }
        n
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while behind(false) > 0 {
        if std::time::Instant::now() > deadline {
            panic!("{} client channels never caught up", behind(true));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut reconnects = 0;
    for (mine, seen, task) in clients {
        let _ = task.await;
        let s = seen.lock().unwrap();
        assert!(s.errors.is_empty(), "{mine:?}: errors {:?}", s.errors);
        for (ch, (start, got)) in &s.channels {
            let want = owed(start.as_deref().unwrap_or("0-0"), ch);
            assert_eq!(got, &want, "{mine:?} on {ch}: every offset once, in order");
        }
        reconnects += s.reconnects;
    }
    assert!(
        reconnects >= CLIENTS,
        "clients were moved: {reconnects} reconnects"
    );
}
