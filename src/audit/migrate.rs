//! Versioned SQL migrations (`src/audit/migrations/NNNN_name.sql`), applied
//! in order inside one transaction each, under a Postgres advisory lock so
//! several instances starting at once apply each exactly once.
//!
//! Hand-rolled rather than a migration crate: the whole job is a table of
//! versions and a lock, and the lock is the part the crates leave out.

use tokio_postgres::Client;

/// Every migration, in order. Never edit one that has shipped; add another.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "audit_schema",
        include_str!("migrations/0001_audit_schema.sql"),
    ),
    (
        2,
        "event_key",
        include_str!("migrations/0002_event_key.sql"),
    ),
    (
        3,
        "byte_order_keys",
        include_str!("migrations/0003_byte_order_keys.sql"),
    ),
    (
        4,
        "drop_unqueried_variant_indexes",
        include_str!("migrations/0004_drop_unqueried_variant_indexes.sql"),
    ),
    (
        5,
        "channel_events",
        include_str!("migrations/0005_channel_events.sql"),
    ),
    (
        6,
        "analytics_indexes",
        include_str!("migrations/0006_analytics_indexes.sql"),
    ),
    (
        7,
        "covering_indexes",
        include_str!("migrations/0007_covering_indexes.sql"),
    ),
    (
        8,
        "lost_ranges",
        include_str!("migrations/0008_lost_ranges.sql"),
    ),
];

/// Arbitrary but fixed: the advisory lock key of pulsegate's migrations.
const LOCK_KEY: i64 = 0x7075_6c73_6567_6174; // "pulsegat"

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("migration {version} ({name}) failed: {source}")]
    Failed {
        version: i32,
        name: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("Postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
}

/// Applies the migrations not yet applied; returns the versions it applied.
pub async fn run(client: &mut Client) -> Result<Vec<i32>, MigrateError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await?;
    let result = apply(client).await;
    // Unlock even after a failure; the session ending would release it too.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    result
}

async fn apply(client: &mut Client) -> Result<Vec<i32>, MigrateError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS pulsegate_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await?;
    let done: Vec<i32> = client
        .query("SELECT version FROM pulsegate_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut applied = Vec::new();
    for &(version, name, sql) in MIGRATIONS {
        if done.contains(&version) {
            continue;
        }
        let fail = |source| MigrateError::Failed {
            version,
            name,
            source,
        };
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await.map_err(fail)?;
        tx.execute(
            "INSERT INTO pulsegate_migrations (version, name) VALUES ($1, $2)",
            &[&version, &name],
        )
        .await
        .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        tracing::info!(version, name, "migration applied");
        applied.push(version);
    }
    Ok(applied)
}
