//! Gap-free starts and resumes per channel on `/ws`, two channels on one
//! connection: `subscribe` (a snapshot), `subscribe` with `since` (the
//! missed events, or `recovered: false`), while events stream in.

use std::collections::HashMap;
use std::time::Duration;

use fred::prelude::Client;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use super::key;
use crate::common::*;

const T: Duration = Duration::from_secs(15);
const PERSONAS: [&str; 2] = ["p1", "p2"];

/// What one channel of a `/ws` connection delivered, in order.
#[derive(Debug, Default)]
struct Channel {
    ack: Option<Value>,
    initial: Option<Value>,
    /// The `offset` of each `message`, in arrival order.
    offsets: Vec<String>,
}

impl Channel {
    /// The offset the ack promises every later event after.
    fn start(&self) -> Option<String> {
        let ack = self.ack.as_ref().expect("acked");
        ack["offset"].as_str().map(str::to_owned)
    }

    /// How far the client is: its last event, or the ack's offset.
    fn position(&self) -> Option<(u64, u64)> {
        match self.offsets.last() {
            Some(o) => Some(key(o)),
            None => self.ack.as_ref()?["offset"].as_str().map(key),
        }
    }
}

/// Posts `events` variants `<tag><i>` on each persona, interleaved (unique
/// patterns: no derived fatigue events).
fn produce(publisher: &Client, tag: &'static str, events: usize) -> JoinHandle<()> {
    let publisher = publisher.clone();
    tokio::spawn(async move {
        for i in 0..events {
            for p in PERSONAS {
                let event = posted(&format!("{tag}{i}"), 0.05, &format!("{tag}-{p}-{i}"));
                ingest(&publisher, p, event).await.expect("ingest");
            }
            if i % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }
    })
}

/// The newest entry of each persona's stream, as its `/ws` channel.
async fn newest(publisher: &Client, personas: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in personas {
        let ids = stream_ids(publisher, &format!("pulse:{{{p}}}:stream")).await;
        out.push((format!("persona:{p}"), ids.last().expect("events").clone()));
    }
    out
}

/// Reads until each channel is at its target offset, checking the order of
/// each channel's frames: the ack first, then `initial_data` or nothing,
/// then messages (each envelope's offset the published one's).
async fn follow(ws: &mut Ws, targets: &[(String, String)]) -> HashMap<String, Channel> {
    let mut seen: HashMap<String, Channel> = targets
        .iter()
        .map(|(c, _)| (c.clone(), Channel::default()))
        .collect();
    let at_target = |seen: &HashMap<String, Channel>| {
        targets
            .iter()
            .all(|(c, t)| seen[c].position().is_some_and(|p| p >= key(t)))
    };
    while !at_target(&seen) {
        let v = next_json(ws, T).await;
        let name = v["channel"].as_str().unwrap_or_else(|| panic!("{v}"));
        let c = seen.get_mut(name).unwrap_or_else(|| panic!("{v}"));
        match v["type"].as_str() {
            Some("subscribed") => {
                assert!(c.ack.is_none() && c.offsets.is_empty(), "{v}");
                c.ack = Some(v);
            }
            Some("initial_data") => {
                assert!(c.ack.is_some(), "the ack comes first: {v}");
                assert!(c.initial.is_none() && c.offsets.is_empty(), "{v}");
                c.initial = Some(v);
            }
            Some("message") => {
                assert!(c.ack.is_some(), "the ack comes first: {v}");
                let offset = v["offset"].as_str().expect("top-level offset");
                assert_eq!(v["data"]["offset"].as_str(), Some(offset), "{v}");
                c.offsets.push(offset.to_owned());
            }
            _ => panic!("unexpected {v}"),
        }
    }
    seen
}

/// Every entry of `persona`'s stream after `start`, up to and including the
/// last one delivered, was delivered once, in order.
async fn assert_exactly_once(publisher: &Client, persona: &str, c: &Channel) {
    let start = c.start();
    let Some(last) = c.offsets.last() else {
        return; // the snapshot covered everything
    };
    let expected: Vec<String> = stream_ids(publisher, &format!("pulse:{{{persona}}}:stream"))
        .await
        .into_iter()
        .filter(|id| start.as_deref().is_none_or(|s| key(id) > key(s)))
        .filter(|id| key(id) <= key(last))
        .collect();
    let first_diff = c.offsets.iter().zip(&expected).position(|(a, b)| a != b);
    assert_eq!(
        (c.offsets.len(), first_diff),
        (expected.len(), None),
        "{persona}: every event after {start:?} once and in order"
    );
}

async fn subscribe(ws: &mut Ws, persona: &str, since: Option<&str>) {
    let mut m = json!({"type": "subscribe", "channel": format!("persona:{persona}")});
    if let Some(since) = since {
        m["since"] = json!(since);
    }
    send_json(ws, m).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_channels_start_and_resume_on_one_connection_while_events_stream_in() {
    let _turn = heavy().await;
    let redis = RedisServer::spawn().await;
    let gw = start_gateway(test_config(&redis)).await;
    let publisher = redis.client().await;
    for p in PERSONAS {
        ingest(&publisher, p, posted("v0", 0.05, "hook"))
            .await
            .unwrap();
    }
    const EVENTS: usize = 300;

    // Plain subscribes while events stream in: ack with the snapshot's
    // offset, initial_data, then every later event once.
    let producer = produce(&publisher, "a", EVENTS);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut ws = connect(gw.local_addr, "/ws").await;
    for p in PERSONAS {
        subscribe(&mut ws, p, None).await;
    }
    producer.await.unwrap();
    let targets = newest(&publisher, &PERSONAS).await;
    let seen = follow(&mut ws, &targets).await;
    for p in PERSONAS {
        let c = &seen[&format!("persona:{p}")];
        let (ack, initial) = (
            c.ack.as_ref().unwrap(),
            c.initial.as_ref().expect("a snapshot"),
        );
        assert_eq!(ack["recovered"], false, "{ack}");
        assert!(ack["offset"].is_string(), "{ack}");
        assert_eq!(initial["offset"], ack["offset"], "{initial}");
        assert!(initial.get("recovered").is_none(), "{initial}");
        assert_exactly_once(&publisher, p, c).await;
    }
    drop(ws);

    // Resume both while events keep coming: ack `recovered: true` with the
    // `since`, no initial_data, the missed events then live ones, once.
    let producer = produce(&publisher, "b", EVENTS);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let mut ws = connect(gw.local_addr, "/ws").await;
    for (channel, since) in &targets {
        subscribe(&mut ws, &channel["persona:".len()..], Some(since)).await;
    }
    producer.await.unwrap();
    let seen = follow(&mut ws, &newest(&publisher, &PERSONAS).await).await;
    for (p, (channel, since)) in PERSONAS.iter().zip(&targets) {
        let c = &seen[channel];
        let ack = c.ack.as_ref().unwrap();
        assert_eq!(
            (ack["offset"].as_str(), ack["recovered"].as_bool()),
            (Some(since.as_str()), Some(true)),
            "{ack}"
        );
        assert!(
            c.initial.is_none(),
            "no initial_data on a successful resume"
        );
        assert!(!c.offsets.is_empty(), "events were missed");
        assert_exactly_once(&publisher, p, c).await;
    }

    // Subscribing again with an older `since` restarts that channel alone.
    let again = seen["persona:p1"].offsets[10].clone();
    subscribe(&mut ws, "p1", Some(&again)).await;
    let p1 = follow(&mut ws, &newest(&publisher, &["p1"]).await).await;
    let c = &p1["persona:p1"];
    assert_eq!(c.start().as_deref(), Some(again.as_str()));
    assert_exactly_once(&publisher, "p1", c).await;
    let live = ingest(&publisher, "p2", posted("c", 0.05, "c"))
        .await
        .unwrap();
    let v = next_json(&mut ws, T).await;
    assert_eq!(
        (v["channel"].as_str(), v["offset"].as_str()),
        (Some("persona:p2"), Some(live.as_str()))
    );

    let metrics = gw.app.metrics.encode();
    assert!(
        metrics.contains(r#"pulsegate_resumes_total{reason="complete"} 3"#),
        "{metrics}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_offsets_get_a_fresh_snapshot_per_channel() {
    let _turn = heavy().await;
    let redis = RedisServer::spawn().await;
    let gw = start_gateway(test_config(&redis)).await;
    let publisher = redis.client().await;
    let small = json!({"stream_maxlen": 100});
    let trimmed = ingest_with(&publisher, "p1", posted("v0", 0.05, "hook"), small.clone())
        .await
        .unwrap();
    for i in 0..1000 {
        let event = posted(&format!("t{i}"), 0.05, "hook");
        ingest_with(&publisher, "p1", event, small.clone())
            .await
            .unwrap();
    }
    let ids = stream_ids(&publisher, "pulse:{p1}:stream").await;
    assert!(!ids.contains(&trimmed), "the first entry was trimmed away");
    ingest(&publisher, "p2", posted("v0", 0.05, "hook"))
        .await
        .unwrap();

    // p1 from a trimmed offset, p2 from one after its newest entry, while
    // events stream in on both.
    let producer = produce(&publisher, "a", 100);
    let mut ws = connect(gw.local_addr, "/ws").await;
    subscribe(&mut ws, "p1", Some(&trimmed)).await;
    subscribe(&mut ws, "p2", Some("99999999999999-0")).await;
    producer.await.unwrap();
    let seen = follow(&mut ws, &newest(&publisher, &PERSONAS).await).await;
    for p in PERSONAS {
        let c = &seen[&format!("persona:{p}")];
        let (ack, initial) = (
            c.ack.as_ref().unwrap(),
            c.initial.as_ref().expect("a snapshot"),
        );
        assert_eq!(ack["recovered"], false, "{ack}");
        assert!(ack["offset"].is_string(), "the snapshot's offset: {ack}");
        assert_eq!(
            (
                &initial["offset"],
                &initial["recovered"],
                &initial["channel"]
            ),
            (&ack["offset"], &json!(false), &ack["channel"]),
            "{initial}"
        );
        assert_exactly_once(&publisher, p, c).await;
    }
    let initial = seen["persona:p1"].initial.as_ref().unwrap();
    let total = initial["data"]["summary"]["total_variants"].as_u64();
    assert!(total.is_some_and(|n| n >= 1001), "{total:?}");

    // A persona without a stream: nothing to resume from, nothing yet.
    subscribe(&mut ws, "nobody", Some("1-0")).await;
    assert_eq!(
        next_json(&mut ws, T).await,
        json!({"type": "subscribed", "channel": "persona:nobody", "offset": null, "recovered": false})
    );
    let initial = next_json(&mut ws, T).await;
    assert_eq!(
        (&initial["type"], &initial["offset"], &initial["recovered"]),
        (&json!("initial_data"), &Value::Null, &json!(false))
    );

    // A malformed `since`: an error, and nothing subscribed.
    for since in [json!("yesterday"), json!(17)] {
        let m = json!({"type": "subscribe", "channel": "persona:p3", "since": since});
        send_json(&mut ws, m).await;
        let e = next_json(&mut ws, T).await;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some("invalid_since")),
            "{e}"
        );
    }
    let m = json!({"type": "unsubscribe", "channel": "persona:p3"});
    send_json(&mut ws, m).await;
    assert_eq!(next_json(&mut ws, T).await["code"], "not_subscribed");

    let metrics = gw.app.metrics.encode();
    for line in [
        r#"pulsegate_resumes_total{reason="trimmed"} 1"#,
        r#"pulsegate_resumes_total{reason="unknown_offset"} 2"#,
        r#"pulsegate_client_errors_total{code="invalid_since"} 2"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    gw.shutdown().await;
}
