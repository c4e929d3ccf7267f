//! The client protocol: replies, errors that keep the connection open,
//! size limits across fragments, persona id validation, `/ws` multiplexing.

use std::time::Duration;

use fred::prelude::*;
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

const T: Duration = Duration::from_secs(5);

#[tokio::test]
async fn replies_and_errors_keep_the_connection_open() {
    let redis = RedisServer::spawn().await;
    let gw = start_gateway(test_config(&redis)).await;
    let mut ws = connect(gw.local_addr, "/dashboard/ws/p1").await;
    let first = next_json(&mut ws, T).await;
    assert_eq!(first["type"], "initial_data");
    assert!(first["data"]["summary"].is_object());
    assert!(first["data"]["active_variants"].is_array());
    assert!(first["data"]["optimization_opportunities"].is_array());

    send_json(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut ws, T).await, json!({"type": "pong"}));
    send_json(&mut ws, json!({"type": "refresh"})).await;
    assert_eq!(next_json(&mut ws, T).await["type"], "initial_data");

    let cases: &[(&str, &str)] = &[
        ("{not json", "invalid_json"),
        ("[1,2,3]", "invalid_message"),
        (r#"{"no_type":1}"#, "invalid_message"),
        (r#"{"type":"dance"}"#, "unknown_type"),
        (
            r#"{"type":"subscribe","channel":"persona:p2"}"#,
            "unsupported",
        ),
    ];
    for (text, code) in cases {
        ws.send(Message::Text((*text).into())).await.unwrap();
        let e = next_json(&mut ws, T).await;
        assert_eq!(e["type"], "error", "{text}");
        assert_eq!(e["code"], *code, "{text}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    ws.send(Message::Binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(next_json(&mut ws, T).await["code"], "binary_not_supported");
    // Still open and answering.
    send_json(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next_json(&mut ws, T).await["type"], "pong");
    let metrics = gw.app.metrics.encode();
    assert!(
        metrics.contains(r#"pulsegate_client_errors_total{code="invalid_json"} 1"#),
        "{metrics}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn oversized_frames_close_with_1009() {
    let redis = RedisServer::spawn().await;
    let mut config = test_config(&redis);
    config.ws.max_message_bytes = 1024;
    let gw = start_gateway(config).await;

    // A single frame over the limit.
    let mut ws = connect(gw.local_addr, "/dashboard/ws/p1").await;
    next_json(&mut ws, T).await;
    ws.send(Message::Text("x".repeat(1025))).await.unwrap();
    assert_eq!(expect_close(&mut ws, T).await.0, 1009);

    // Exactly the limit is fine.
    let mut ws = connect(gw.local_addr, "/dashboard/ws/p1").await;
    next_json(&mut ws, T).await;
    let padded = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(1024 - 24));
    assert_eq!(padded.len(), 1024);
    ws.send(Message::Text(padded)).await.unwrap();
    assert_eq!(next_json(&mut ws, T).await["type"], "pong");

    // Fragments each under the limit, together over it.
    let mut ws = connect(gw.local_addr, "/dashboard/ws/p1").await;
    next_json(&mut ws, T).await;
    let part = vec![b'x'; 400];
    ws.send(Message::Frame(Frame::message(
        part.clone(),
        OpCode::Data(Data::Text),
        false,
    )))
    .await
    .unwrap();
    for _ in 0..5 {
        if ws
            .send(Message::Frame(Frame::message(
                part.clone(),
                OpCode::Data(Data::Continue),
                false,
            )))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(expect_close(&mut ws, T).await.0, 1009);

    // A fragmented message within the limit is assembled.
    let mut ws = connect(gw.local_addr, "/dashboard/ws/p1").await;
    next_json(&mut ws, T).await;
    let text = br#"{"type":"ping"}"#;
    ws.send(Message::Frame(Frame::message(
        text[..5].to_vec(),
        OpCode::Data(Data::Text),
        false,
    )))
    .await
    .unwrap();
    ws.send(Message::Frame(Frame::message(
        text[5..].to_vec(),
        OpCode::Data(Data::Continue),
        true,
    )))
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws, T).await["type"], "pong");
    let metrics = gw.app.metrics.encode();
    assert!(
        metrics.contains(r#"pulsegate_ws_closes_total{code="1009"} 2"#),
        "{metrics}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn bad_persona_ids_and_routes_are_refused_before_the_upgrade() {
    let redis = RedisServer::spawn().await;
    let gw = start_gateway(test_config(&redis)).await;
    for bad in ["a%7Bb%7D", "a:b", &"a".repeat(65), "%C3%A9"] {
        let (status, body) = http_get(gw.local_addr, &format!("/dashboard/ws/{bad}")).await;
        assert_eq!(status, 400, "{bad}");
        assert!(body.contains("invalid_persona_id"), "{body}");
    }
    let err = tokio_tungstenite::connect_async(format!("ws://{}/dashboard/ws/a:b", gw.local_addr))
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("400"), "{err}");
    let (status, body) = http_get(gw.local_addr, "/dashboard/ws/p1").await;
    assert_eq!(status, 426, "plain GET on a WebSocket route: {body}");
    assert_eq!(http_get(gw.local_addr, "/nope").await.0, 404);
    let (status, body) = http_get(gw.local_addr, "/").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        json!({"status":"healthy","service":"pulsegate"})
    );
    assert_eq!(http_get(gw.local_addr, "/healthz").await.0, 200);
    let (status, body) = http_get(gw.local_addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains(
            "pulsegate_http_requests_total{route=\"/dashboard/ws/{persona_id}\",status=\"400\"}"
        ),
        "{body}"
    );
    assert!(
        body.contains("pulsegate_http_request_duration_seconds_bucket"),
        "{body}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn multiplexed_endpoint_subscribes_and_unsubscribes() {
    let redis = RedisServer::spawn().await;
    let mut config = test_config(&redis);
    config.ws.max_subscriptions = 2;
    let gw = start_gateway(config).await;
    let publisher = redis.client().await;
    // Generous: this test waits on Redis round trips, and CI machines are shared.
    const T: Duration = Duration::from_secs(15);
    let mut ws = connect(gw.local_addr, "/ws").await;

    send_json(
        &mut ws,
        json!({"type": "subscribe", "channel": "persona:a"}),
    )
    .await;
    assert_eq!(
        next_json(&mut ws, T).await,
        json!({"type": "subscribed", "channel": "persona:a", "offset": null, "recovered": false})
    );
    let initial = next_json(&mut ws, T).await;
    assert_eq!(
        (&initial["type"], &initial["channel"], &initial["offset"]),
        (&json!("initial_data"), &json!("persona:a"), &json!(null))
    );
    // The ack means the subscription is live: a publish right after arrives
    // (without an offset of its own, the envelope carries none).
    let _: i64 = publisher
        .publish("pulse:{a}:events", r#"{"n":1}"#)
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut ws, T).await,
        json!({"type": "message", "channel": "persona:a", "data": {"n": 1}})
    );
    send_json(
        &mut ws,
        json!({"type": "subscribe", "channel": "persona:b"}),
    )
    .await;
    assert_eq!(next_json(&mut ws, T).await["type"], "subscribed");
    assert_eq!(next_json(&mut ws, T).await["type"], "initial_data");
    send_json(
        &mut ws,
        json!({"type": "subscribe", "channel": "persona:c"}),
    )
    .await;
    assert_eq!(
        next_json(&mut ws, T).await["code"],
        "too_many_subscriptions"
    );
    send_json(&mut ws, json!({"type": "subscribe", "channel": "persona"})).await;
    assert_eq!(next_json(&mut ws, T).await["code"], "invalid_channel");
    send_json(&mut ws, json!({"type": "subscribe"})).await;
    assert_eq!(next_json(&mut ws, T).await["code"], "invalid_message");

    send_json(
        &mut ws,
        json!({"type": "unsubscribe", "channel": "persona:a"}),
    )
    .await;
    assert_eq!(
        next_json(&mut ws, T).await,
        json!({"type": "unsubscribed", "channel": "persona:a"})
    );
    send_json(
        &mut ws,
        json!({"type": "unsubscribe", "channel": "persona:a"}),
    )
    .await;
    assert_eq!(next_json(&mut ws, T).await["code"], "not_subscribed");
    wait_until("persona a released", T, || async {
        numsub(&publisher, "pulse:{a}:events").await == 0
    })
    .await;
    let _: i64 = publisher
        .publish("pulse:{b}:events", r#"{"n":2}"#)
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws, T).await["channel"], "persona:b");

    // Invalid payloads are dropped and counted, never forwarded.
    let _: i64 = publisher
        .publish("pulse:{b}:events", "not json")
        .await
        .unwrap();
    let _: i64 = publisher.publish("pulse:{b}:events", "[1]").await.unwrap();
    let _: i64 = publisher
        .publish("pulse:{b}:events", r#"{"n":3}"#)
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws, T).await["data"]["n"], 3);
    let metrics = gw.app.metrics.encode();
    assert!(
        metrics.contains(r#"pulsegate_redis_messages_dropped_total{reason="invalid_json"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"pulsegate_redis_messages_dropped_total{reason="not_object"} 1"#),
        "{metrics}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn silent_clients_are_closed_after_missed_pings() {
    let redis = RedisServer::spawn().await;
    let mut config = test_config(&redis);
    config.ws.ping_interval = Duration::from_millis(300);
    let gw = start_gateway(config).await;
    // tungstenite answers pings only while it is being read; this client
    // never reads, so it never answers.
    let _silent = connect(gw.local_addr, "/dashboard/ws/p1").await;
    wait_until(
        "the silent client to be closed",
        Duration::from_secs(5),
        || async { gw.app.connections.is_empty() },
    )
    .await;
    let metrics = gw.app.metrics.encode();
    assert!(
        metrics.contains(r#"pulsegate_ws_closes_total{code="4000"} 1"#),
        "{metrics}"
    );
    gw.shutdown().await;
}
