//! A client's first read that Redis fails (a command timeout while Redis or
//! the gateway is overloaded) is tried again before the client is given
//! what a failure gives (an empty snapshot, or `recovered: false`): a short
//! stall costs it a wait, not its history (`src/ws/session/initial.rs`).

use std::time::Duration;

use crate::common::*;

const T: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_delays_the_first_frames_instead_of_losing_them() {
    let redis = RedisServer::spawn().await;
    let mut config = test_config(&redis);
    config.redis.command_timeout = Duration::from_millis(300);
    // No window in memory: the resume below has to read Redis.
    config.ws.recent_entries = 0;
    let gw = start_gateway(config).await;
    let publisher = redis.client().await;
    let post = |k: usize| posted(&format!("v{k}"), 0.05, &format!("p{k}"));
    let since = ingest(&publisher, "stall", post(0)).await.expect("ingest");
    let mut missed = Vec::new();
    for k in 1..=3 {
        missed.push(ingest(&publisher, "stall", post(k)).await.expect("ingest"));
    }
    // Someone already follows the persona: the clients below find their
    // channel subscribed and go straight to their reads.
    let mut watcher = connect(gw.local_addr, "/dashboard/ws/stall").await;
    assert_eq!(next_event(&mut watcher, T).await["type"], "initial_data");

    let reads = |m: &str| {
        counter(m, "pulsegate_snapshot_reads_total") + counter(m, "pulsegate_replay_reads_total")
    };
    let before = reads(&gw.app.metrics.encode());
    redis.signal("-STOP");
    let mut fresh = connect(gw.local_addr, "/dashboard/ws/stall").await;
    let resume = format!("/dashboard/ws/stall?since={since}");
    let mut resumed = connect(gw.local_addr, &resume).await;
    wait_until("both reads sent to the stopped Redis", T, || async {
        reads(&gw.app.metrics.encode()) >= before + 2
    })
    .await;
    // Past the command timeout: the first attempts have failed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.signal("-CONT");

    let snapshot = next_event(&mut fresh, T).await;
    assert_eq!(snapshot["type"], "initial_data", "{snapshot}");
    assert_eq!(
        snapshot["offset"],
        missed[2].as_str(),
        "a real snapshot: {snapshot}"
    );
    for want in &missed {
        let v = next_event(&mut resumed, T).await;
        assert_eq!(v["type"], "variant_update", "resumed, not restarted: {v}");
        assert_eq!(v["offset"], want.as_str(), "{v}");
    }
    let metrics = gw.app.metrics.encode();
    assert!(
        counter(&metrics, "pulsegate_snapshot_retries_total") >= 1,
        "{metrics}"
    );
    assert!(
        counter(&metrics, "pulsegate_replay_retries_total") >= 1,
        "{metrics}"
    );
    assert!(
        !metrics.contains(r#"pulsegate_resumes_total{reason="redis_error"}"#),
        "{metrics}"
    );
    gw.shutdown().await;
}
