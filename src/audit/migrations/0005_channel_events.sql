-- Entries of [[channels]] channels' histories (`pulse_publish`), in a table
-- of their own: they have no persona, no variant and no derived tables,
-- and a namespace's analytics read only them. A channel `<ns>:<id>` is
-- (namespace, channel_id); its stream ids are unique per channel.
CREATE TABLE channel_events (
    namespace   text COLLATE "C" NOT NULL,
    channel_id  text COLLATE "C" NOT NULL,
    event_id    text             NOT NULL,     -- the stream id, "<ms>-<seq>" (the message's `offset`)
    stream_ms   bigint           NOT NULL,
    stream_seq  bigint           NOT NULL,
    event_type  text COLLATE "C" NOT NULL,     -- the message's `type`, else 'message'
    event_data  jsonb            NOT NULL,     -- the stored message, verbatim (with its `offset`)
    created_at  timestamptz      NOT NULL,     -- its `timestamp` when it has one, else the stream id's time
    audited_at  timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, channel_id, stream_ms, stream_seq),
    CONSTRAINT channel_events_event_id CHECK (event_id = stream_ms || '-' || stream_seq)
);
-- A namespace's messages over time (analytics per namespace).
CREATE INDEX channel_events_namespace_time ON channel_events (namespace, created_at);
