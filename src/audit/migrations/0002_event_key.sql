-- dashboard_events is keyed by (persona_id, stream id) alone. The bigserial
-- `id` was used by no query, and the unique (persona_id, event_id) duplicated
-- the ordering index (event_id is "<stream_ms>-<stream_seq>"): together they
-- cost two index entries and a sequence call per audited event. The CHECK
-- keeps event_id and its parts equal, so the primary key still makes
-- (persona_id, event_id) unique.
ALTER TABLE dashboard_events DROP CONSTRAINT dashboard_events_pkey;
ALTER TABLE dashboard_events DROP COLUMN id;
ALTER TABLE dashboard_events DROP CONSTRAINT dashboard_events_event;
DROP INDEX dashboard_events_persona_order;
ALTER TABLE dashboard_events
    ADD CONSTRAINT dashboard_events_pkey PRIMARY KEY (persona_id, stream_ms, stream_seq),
    ADD CONSTRAINT dashboard_events_event_id CHECK (event_id = stream_ms || '-' || stream_seq);
