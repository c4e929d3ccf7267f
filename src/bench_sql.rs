//! The statements `scripts/bench-analytics.sh` times with `EXPLAIN ANALYZE`,
//! printed by an ignored test so the benchmark runs exactly the SQL the
//! gateway sends: `cargo test --lib print_bench_sql -- --ignored` with
//! `BENCH_SQL_OUT=<file>` writes one `PREPARE` per statement. At the crate's
//! root because it gathers the analytics' and the point-in-time view's
//! statements, and the latter sits above the former.

use crate::analytics::channels::bench_statements as channel_statements;
use crate::analytics::params::Bucket;
use crate::analytics::persona::bench_statements;
use crate::analytics::queries::{by_type_sql, time_histogram_sql};
use crate::analytics::PERSONA_EVENTS;
use crate::pointintime::bench_statements as pit_statements;

const RANGE: &str = "text, timestamptz, timestamptz";

/// (name, parameter types, SQL).
fn statements() -> Vec<(&'static str, &'static str, String)> {
    let mut out = vec![
        ("by_type", RANGE, by_type_sql(&PERSONA_EVENTS)),
        (
            "events_per_hour",
            RANGE,
            time_histogram_sql(&PERSONA_EVENTS, Bucket::Hour, None),
        ),
        (
            "posts_per_day",
            RANGE,
            time_histogram_sql(&PERSONA_EVENTS, Bucket::Day, Some("variant_posted")),
        ),
    ];
    out.extend(bench_statements().into_iter().map(|(n, s)| (n, RANGE, s)));
    out.extend(channel_statements().into_iter().map(|(n, s)| (n, RANGE, s)));
    out.extend(pit_statements());
    out
}

#[test]
#[ignore = "prints the benchmark's SQL; run by scripts/bench-analytics.sh"]
fn print_bench_sql() {
    let mut text = String::new();
    for (name, types, sql) in statements() {
        text.push_str(&format!("PREPARE {name}({types}) AS {sql};\n"));
    }
    match std::env::var("BENCH_SQL_OUT") {
        Ok(path) => std::fs::write(path, text).expect("write BENCH_SQL_OUT"),
        Err(_) => print!("{text}"),
    }
}
