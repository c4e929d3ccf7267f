//! Sentinel: the primary killed with clients watching; the gateway follows
//! the promoted replica with the same clients.

use std::time::{Duration, Instant};

use super::servers::RedisSentinel;
use fred::prelude::*;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_follows_the_promoted_replica() {
    let _heavy = heavy().await;
    let mut deployment = RedisSentinel::spawn().await;
    let gw = start_gateway(config_for(deployment.url())).await;
    let publisher = deployment.client().await;
    let personas = ["s1", "s2"];
    let mut clients = Vec::new();
    for p in personas {
        for _ in 0..3 {
            clients.push((
                p,
                watch(gw.local_addr, p.to_owned(), Duration::from_secs(45)).await,
            ));
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..50 {
        for p in personas {
            ingest(&publisher, p, posted(&format!("a{i}"), 0.05, "hook"))
                .await
                .expect("ingest");
        }
    }
    // Let the replica copy everything acknowledged so far.
    let _: i64 = publisher
        .custom(fred::cmd!("WAIT"), vec![1, 2000])
        .await
        .expect("WAIT");

    let old = deployment.primary.port;
    let killed_at = Instant::now();
    deployment.primary.kill9();
    wait_until("a new primary", Duration::from_secs(20), || async {
        deployment.current_primary().is_some_and(|p| p != old)
    })
    .await;
    wait_http_ok(gw.local_addr, "/readyz", Duration::from_secs(20)).await;
    let recovered_in = killed_at.elapsed();
    // Ingest works again on the new primary (retried while fred follows it).
    let mut acked = 0;
    let deadline = Instant::now() + Duration::from_secs(15);
    while acked < 50 {
        assert!(Instant::now() < deadline, "ingest did not come back");
        for p in personas {
            if ingest(&publisher, p, posted(&format!("b{acked}"), 0.05, "hook"))
                .await
                .is_ok()
            {
                acked += 1;
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for p in personas {
        let _: i64 = publisher
            .publish(format!("pulse:{{{p}}}:events"), r#"{"type":"test_end"}"#)
            .await
            .expect("PUBLISH");
    }
    for (p, h) in clients {
        let seen = h.await.expect("client");
        let stream = stream_offsets(&publisher, p).await;
        check(p, &seen, &stream);
        // Everything was copied before the kill: nothing was lost, so no
        // client needed a fresh snapshot.
        assert_eq!(seen.initials.len(), 1, "{p}: {:?}", seen.initials);
        assert_eq!(seen.updates.len(), stream.len(), "{p}");
    }
    println!("sentinel failover: /readyz 200 again {recovered_in:?} after kill -9");
    gw.shutdown().await;
}
