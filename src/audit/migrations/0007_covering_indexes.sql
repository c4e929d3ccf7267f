-- Two indexes widened with INCLUDE columns so the analytics read them
-- without the table (`docs/benchmarks.md`, "Analytics ... on 1M audit rows").
--
-- dashboard_events (persona_id, event_type, created_at)
--   INCLUDE (variant_id, stream_ms, stream_seq), replacing migration 6's
--   index of the same key: the latest `performance_update` of each variant
--   in an event-time range (mean ER, the ER histogram) is found from the
--   index alone, reading only the range's entries, and only the one row per
--   variant whose ER is read touches the table. Before, every update of the
--   range was read from the table and sorted: 0.8-2 s over 30 days of
--   100,000 events. The kill rate's posts are index-only too. Same key, so
--   the other readers use it as before, and one index entry per event as
--   before.
-- channel_events (namespace, created_at) INCLUDE (event_type, channel_id),
--   replacing migration 5's (namespace, created_at): a namespace's messages
--   by type, per time bucket and its distinct channels, from the index alone.
CREATE INDEX IF NOT EXISTS dashboard_events_persona_type_time_cover
    ON dashboard_events (persona_id, event_type, created_at)
    INCLUDE (variant_id, stream_ms, stream_seq);
DROP INDEX IF EXISTS dashboard_events_persona_type_time;

CREATE INDEX IF NOT EXISTS channel_events_namespace_time_cover
    ON channel_events (namespace, created_at) INCLUDE (event_type, channel_id);
DROP INDEX IF EXISTS channel_events_namespace_time;
