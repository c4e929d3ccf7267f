-- Stream entries a failover lost: acknowledged by a primary (and forwarded
-- to clients), then gone from the replica promoted in its place. The gap
-- repair sees it (`docs/redis.md`, "Gap repair": `went_back`) and knows the
-- range, not each id: entries after `after_*` (the newest that survived;
-- NULL when none did) through `through_*` (the last one the gateway had
-- forwarded). Several instances may see the same loss: one row per range.
CREATE TABLE audit_lost_ranges (
    stream_key   text COLLATE "C" NOT NULL,   -- 'pulse:{<persona_id>}:stream'
    persona_id   text COLLATE "C" NOT NULL,   -- its persona (or '<ns>:<id>' channel)
    after_ms     bigint,
    after_seq    bigint,
    through_ms   bigint           NOT NULL,
    through_seq  bigint           NOT NULL,
    reason       text COLLATE "C" NOT NULL,   -- 'failover'
    detected_at  timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_key, through_ms, through_seq)
);

-- Audited rows of entries a failover lost afterwards: copied to Postgres
-- before the primary died, no longer in Redis. Every other row of
-- dashboard_events is an entry that survived.
CREATE VIEW dashboard_events_lost AS
SELECT e.*
FROM dashboard_events e
JOIN audit_lost_ranges r ON r.persona_id = e.persona_id
WHERE (e.stream_ms, e.stream_seq) <= (r.through_ms, r.through_seq)
  AND (r.after_ms IS NULL OR (e.stream_ms, e.stream_seq) > (r.after_ms, r.after_seq));
