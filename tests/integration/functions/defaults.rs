//! The library as a gateway loads it: the deployment's option values and
//! audit group are the defaults of a publisher's call without options.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fred::prelude::*;
use pulsegate::config::Config;
use pulsegate::redis::functions::{
    configured_library, library_with_defaults, load_configured, options,
};
use serde_json::{json, Value};

use crate::common::*;

/// Quote, backslash, non-ASCII and `]]`: each must reach Redis as it is.
const GROUP: &str = "audit'\\é]]";

/// Every option set away from its built-in default, small enough to see.
fn deployment() -> Config {
    let mut config = Config::default();
    // Only an instance that runs the audit loads the group.
    config.database.url = Some("postgres://unused".into());
    config.audit.group = GROUP.into();
    config.ingest.stream_maxlen = 10;
    config.audit.backlog_margin = 4;
    config.ws.max_persona_id_len = 1;
    config.ingest.pattern_fatigue_threshold = 1;
    config.ingest.pattern_window = Duration::from_secs(60);
    config.ingest.kill_rate_window = Duration::from_secs(120);
    config.ingest.killed_ttl = Duration::from_secs(1234);
    config.ingest.max_variants = 1;
    config
}

async fn snapshot(client: &Client, persona: &str) -> Value {
    let raw: String = client
        .fcall_ro(
            "pulse_snapshot",
            vec![format!("pulse:{{{persona}}}")],
            Vec::<String>::new(),
        )
        .await
        .expect("pulse_snapshot");
    serde_json::from_str(&raw).unwrap()
}

#[tokio::test]
async fn every_configured_option_is_the_default_of_a_call_without_options() {
    let config = deployment();
    // Each option is observed below; a new one fails here until it is too.
    let mut names: Vec<String> = options(&config).keys().cloned().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "backlog_margin",
            "kill_rate_window_ms",
            "killed_ttl_s",
            "max_persona_id_len",
            "max_variants",
            "pattern_fatigue_threshold",
            "pattern_window_ms",
            "stream_maxlen",
        ]
    );
    let redis = RedisServer::spawn().await;
    let c = redis.client().await;
    load_configured(&c, &configured_library(&config))
        .await
        .expect("FUNCTION LOAD");

    // max_persona_id_len 1 (built-in 64).
    let err = ingest(&c, "ab", posted("v", 0.05, "h")).await.unwrap_err();
    assert!(
        err.details()
            .starts_with("INVALID field=persona_id: must be 1..1 "),
        "{err}"
    );

    // stream_maxlen 10 less backlog_margin 4: six un-audited entries, and
    // only with the audit group on the new stream. Built-in values would
    // allow 1 (margin 10000) or 99996 (maxlen 100000), no group no limit.
    // (Distinct patterns: a fatigue crossing adds an entry.)
    let mut accepted = 0;
    let refused = loop {
        match ingest(
            &c,
            "s",
            posted(&format!("v{accepted}"), 0.05, &format!("p{accepted}")),
        )
        .await
        {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted <= 10, "never refused");
    };
    assert_eq!(accepted, 6, "refused at stream_maxlen - backlog_margin");
    assert!(refused.details().starts_with("BACKLOG"), "{refused}");
    let groups: Vec<Vec<fred::types::Value>> = c.xinfo_groups("pulse:{s}:stream").await.unwrap();
    let names: Vec<Option<&[u8]>> = groups.iter().map(|g| g[1].as_bytes()).collect();
    assert_eq!(names, [Some(GROUP.as_bytes())]);

    // pattern_fatigue_threshold 1 (5), pattern_window_ms 60000 (a day),
    // max_variants 1 (1000), kill_rate_window_ms 120000 (a day).
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    ingest(&c, "p", posted("a", 0.05, "h")).await.unwrap();
    ingest(&c, "p", posted("b", 0.05, "h")).await.unwrap();
    let mut old = posted("c", 0.05, "old");
    old["posted_at"] = json!(now - 10 * 60_000);
    ingest(&c, "p", old).await.unwrap();
    let snap = snapshot(&c, "p").await;
    assert_eq!(
        snap["patterns"],
        json!([{"pattern": "h", "usage_count": 2, "fatigued": true}]),
        "{snap}"
    );
    assert_eq!(snap["active_variants"].as_array().unwrap().len(), 1);
    assert_eq!(snap["active_variants_truncated"], true);
    assert_eq!(snap["summary"]["kill_rate_window_ms"], 120_000);

    // killed_ttl_s 1234 (7 days).
    ingest(&c, "k", posted("v", 0.05, "h")).await.unwrap();
    let kill = json!({"type": "early_kill", "variant_id": "v", "reason": "low",
        "final_engagement_rate": 0.01, "sample_size": 100});
    ingest(&c, "k", kill).await.unwrap();
    let ttl: i64 = c.ttl("pulse:{k}:v:v").await.unwrap();
    assert!((1200..=1234).contains(&ttl), "TTL {ttl}");
}

/// A name in the table that the library does not know is refused on every
/// call, never dropped: a renamed option cannot silently lose its value.
#[tokio::test]
async fn a_configured_name_the_library_does_not_know_fails_every_call() {
    let redis = RedisServer::spawn().await;
    let c = redis.client().await;
    let mut table = options(&Config::default());
    table.insert("stream_max".into(), json!(5));
    load_configured(&c, &library_with_defaults(&table, None))
        .await
        .expect("FUNCTION LOAD");
    for _ in 0..2 {
        let err = ingest(&c, "p", posted("v", 0.05, "h")).await.unwrap_err();
        assert!(
            err.details()
                .contains("CONFIGURED.stream_max: not an option"),
            "{err}"
        );
    }
    let exists: i64 = c.exists("pulse:{p}:stream").await.unwrap();
    assert_eq!(exists, 0, "nothing written");
}
