-- The analytics (`src/analytics/`) and the point-in-time rebuild
-- (`src/pointintime/`) select a persona's events by the event's own time
-- (`created_at`), not by stream id. Without these every such query would
-- read all of a persona's rows.
--   (persona_id, created_at) INCLUDE (event_type): events by type and the
--     `events` histogram over a time range, answered from the index alone.
--   (persona_id, event_type, created_at): one type over a time range
--     (posts, kills, performance updates for ER and the rebuild's minute
--     buckets).
-- IF NOT EXISTS: a database where an operator built them by hand (for
-- instance CONCURRENTLY, ahead of an upgrade) migrates without error.
CREATE INDEX IF NOT EXISTS dashboard_events_persona_time
    ON dashboard_events (persona_id, created_at) INCLUDE (event_type);
CREATE INDEX IF NOT EXISTS dashboard_events_persona_type_time
    ON dashboard_events (persona_id, event_type, created_at);
