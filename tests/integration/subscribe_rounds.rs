//! Subscription changes go to Redis in rounds (`src/redis/reconcile.rs`):
//! clients of many personas joining at once (a rolling restart moving them
//! here) share a few `SUBSCRIBE`s, counted by Redis itself (`INFO
//! commandstats`), and each still resumes gap-free; a draining gateway
//! leaves the channels of its departing clients subscribed (no
//! `UNSUBSCRIBE`: its connection closes moments later anyway).

use std::time::Duration;

use serde_json::json;

use crate::common::*;

const T: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_personas_joining_at_once_share_a_few_subscribes_and_resume_gap_free() {
    const PERSONAS: usize = 40;
    let redis = RedisServer::spawn().await;
    let mut config = test_config(&redis);
    // Wide enough that every join below falls in one of few rounds however
    // slow the machine; the count asserted leaves room for ten times more.
    config.redis.subscribe_batch_interval = Duration::from_secs(1);
    let gw = start_gateway(config).await;
    let publisher = redis.client().await;
    // Two entries per persona before anyone here follows it: each client
    // resumes after the first and is owed the second, then live ones.
    let mut seeded = Vec::with_capacity(PERSONAS);
    for p in 0..PERSONAS {
        let mut offsets = Vec::new();
        for k in 0..2 {
            let event = posted(&format!("s{p}-{k}"), 0.05, "seed");
            offsets.push(
                ingest(&publisher, &format!("p{p}"), event)
                    .await
                    .expect("ingest"),
            );
        }
        seeded.push(offsets);
    }
    let before = |c: &'static str| {
        let publisher = publisher.clone();
        async move { command_calls(&publisher, c).await }
    };
    let (subscribe, xrevrange, xrange) = (
        before("subscribe").await,
        before("xrevrange").await,
        before("xrange").await,
    );

    // Every client at once, one persona each, half on each endpoint.
    let joins = seeded.iter().enumerate().map(|(p, offsets)| {
        let (addr, since) = (gw.local_addr, offsets[0].clone());
        async move {
            if p % 2 == 0 {
                connect(addr, &format!("/dashboard/ws/p{p}?since={since}")).await
            } else {
                let mut ws = connect(addr, "/ws").await;
                let sub =
                    json!({"type":"subscribe","channel":format!("persona:p{p}"),"since":since});
                send_json(&mut ws, sub).await;
                let ack = next_event(&mut ws, T).await;
                assert_eq!(ack["type"], "subscribed", "{ack}");
                assert_eq!(ack["recovered"], true, "{ack}");
                ws
            }
        }
    });
    let mut clients = futures_util::future::join_all(joins).await;
    for (p, ws) in clients.iter_mut().enumerate() {
        let v = next_event(ws, T).await;
        assert_eq!(v["offset"], seeded[p][1].as_str(), "persona p{p}: {v}");
    }
    let mut live = Vec::with_capacity(PERSONAS);
    for p in 0..PERSONAS {
        let event = posted(&format!("l{p}"), 0.05, "live");
        live.push(
            ingest(&publisher, &format!("p{p}"), event)
                .await
                .expect("ingest"),
        );
    }
    for (p, ws) in clients.iter_mut().enumerate() {
        let v = next_event(ws, T).await;
        assert_eq!(v["offset"], live[p].as_str(), "persona p{p}: {v}");
    }

    let subscribes = command_calls(&publisher, "subscribe").await - subscribe;
    assert!(
        subscribes <= (PERSONAS / 4) as u64,
        "{subscribes} SUBSCRIBEs for {PERSONAS} personas joining at once"
    );
    assert_eq!(
        command_calls(&publisher, "xrevrange").await - xrevrange,
        PERSONAS as u64,
        "one read per persona starts its window and finds where its stream stands"
    );
    assert_eq!(
        command_calls(&publisher, "xrange").await,
        xrange,
        "no replay"
    );
    let metrics = gw.app.metrics.encode();
    let subscribed = counter(
        &metrics,
        r#"pulsegate_redis_subscription_changes_total{change="subscribed"}"#,
    );
    assert_eq!(subscribed, PERSONAS as u64, "{metrics}");
    let rounds = counter(&metrics, "pulsegate_redis_subscription_rounds_total");
    println!("{PERSONAS} personas joining at once: {subscribes} SUBSCRIBEs, {rounds} rounds");
    assert!(rounds <= subscribes, "{metrics}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_gateway_sends_no_unsubscribe() {
    const PERSONAS: usize = 5;
    let redis = RedisServer::spawn().await;
    let mut config = test_config(&redis);
    // A long grace: the clients leave by themselves while the gateway drains.
    config.shutdown.lb_grace = Duration::from_secs(20);
    config.shutdown.drain_timeout = Duration::from_secs(25);
    let gw = start_gateway(config).await;
    let app = gw.app.clone();
    let publisher = redis.client().await;
    let mut clients = Vec::new();
    for p in 0..PERSONAS {
        let mut ws = connect(gw.local_addr, &format!("/dashboard/ws/p{p}")).await;
        assert_eq!(next_event(&mut ws, T).await["type"], "initial_data");
        clients.push(ws);
    }
    let channel = |p: usize| format!("pulse:{{p{p}}}:events");
    // Before the drain, a client that leaves takes its channel's subscription.
    let unsubscribe = command_calls(&publisher, "unsubscribe").await;
    let last = clients.pop().expect("a client");
    drop(last);
    wait_until("the last persona is unsubscribed", T, || async {
        numsub(&publisher, &channel(PERSONAS - 1)).await == 0
    })
    .await;
    assert_eq!(
        command_calls(&publisher, "unsubscribe").await,
        unsubscribe + 1
    );

    let stopping = tokio::spawn(gw.shutdown());
    wait_until("the gateway drains", T, || async { app.is_draining() }).await;
    // The first client stays: the drain (and the reconciler) ends once the
    // last client is gone.
    let leaving = clients.split_off(1);
    drop(leaving);
    let kept = r#"pulsegate_redis_subscription_changes_total{change="kept_draining"}"#;
    wait_until("the reconciler saw the clients leave", T, || async {
        counter(&app.metrics.encode(), kept) == (PERSONAS - 2) as u64
    })
    .await;
    assert_eq!(
        command_calls(&publisher, "unsubscribe").await,
        unsubscribe + 1,
        "no UNSUBSCRIBE while draining"
    );
    for p in 1..PERSONAS - 1 {
        assert_eq!(
            numsub(&publisher, &channel(p)).await,
            1,
            "p{p} still subscribed"
        );
    }
    clients.clear();
    stopping.await.expect("shutdown");
}
