-- The audit trail: every ingested event exactly once, plus the tables
-- derived from them. Stream ids are unique per persona stream, so
-- `(persona_id, event_id)` is the identity of an event.

CREATE TABLE dashboard_events (
    id          bigserial PRIMARY KEY,
    persona_id  text        NOT NULL,
    event_id    text        NOT NULL,              -- the stream id, "<ms>-<seq>"
    stream_ms   bigint      NOT NULL,              -- its parts, for ordering and ranges
    stream_seq  bigint      NOT NULL,
    event_type  text        NOT NULL,
    variant_id  text,
    event_data  jsonb       NOT NULL,              -- the published message, verbatim
    created_at  timestamptz NOT NULL,              -- the event's time (`timestamp`)
    audited_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT dashboard_events_event UNIQUE (persona_id, event_id)
);
-- Listing a persona's events in stream order, optionally by type or variant.
CREATE INDEX dashboard_events_persona_order ON dashboard_events (persona_id, stream_ms, stream_seq);
CREATE INDEX dashboard_events_persona_type ON dashboard_events (persona_id, event_type, stream_ms, stream_seq);
CREATE INDEX dashboard_events_persona_variant ON dashboard_events (persona_id, variant_id, stream_ms, stream_seq)
    WHERE variant_id IS NOT NULL;

CREATE TABLE variants (
    persona_id   text             NOT NULL,
    id           text             NOT NULL,
    content      text             NOT NULL,
    predicted_er double precision NOT NULL CHECK (predicted_er >= 0),
    pattern_used text,
    status       text             NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'killed')),
    posted_at    timestamptz      NOT NULL,
    created_at   timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (persona_id, id)
);
CREATE INDEX variants_persona_status ON variants (persona_id, status, posted_at);
CREATE INDEX variants_persona_pattern ON variants (persona_id, pattern_used, posted_at);

-- The latest snapshot per variant; rows only move forward in stream order.
CREATE TABLE variant_monitoring (
    persona_id        text             NOT NULL,
    variant_id        text             NOT NULL,
    current_er        double precision NOT NULL,
    interaction_count bigint           NOT NULL CHECK (interaction_count >= 0),
    view_count        bigint           NOT NULL CHECK (view_count >= 0),
    status            text             NOT NULL CHECK (status IN ('active', 'killed')),
    last_updated      timestamptz      NOT NULL,
    last_ms           bigint           NOT NULL,   -- stream id of the event it reflects
    last_seq          bigint           NOT NULL,
    PRIMARY KEY (persona_id, variant_id)
);

CREATE TABLE variant_kills (
    persona_id            text             NOT NULL,
    variant_id            text             NOT NULL,
    reason                text             NOT NULL,
    final_engagement_rate double precision NOT NULL,
    sample_size           bigint           NOT NULL CHECK (sample_size >= 0),
    posted_at             timestamptz,
    killed_at             timestamptz      NOT NULL,
    event_id              text             NOT NULL,
    PRIMARY KEY (persona_id, variant_id)
);
CREATE INDEX variant_kills_persona_time ON variant_kills (persona_id, killed_at);
