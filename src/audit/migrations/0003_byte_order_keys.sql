-- Identifiers compare byte by byte (COLLATE "C"). They are ASCII ids, never
-- prose, so a linguistic collation buys nothing; but under one (en_US.UTF-8,
-- C.UTF-8, ...) every B-tree comparison and every sort of the audit writer
-- goes through strcoll() and abbreviated sort keys are off. With "C" they are
-- memcmp(), whatever locale the database was created with. The indexes on
-- these columns are rebuilt; the table rows are not rewritten.
ALTER TABLE dashboard_events
    ALTER COLUMN persona_id TYPE text COLLATE "C",
    ALTER COLUMN event_type TYPE text COLLATE "C",
    ALTER COLUMN variant_id TYPE text COLLATE "C";
ALTER TABLE variants
    ALTER COLUMN persona_id   TYPE text COLLATE "C",
    ALTER COLUMN id           TYPE text COLLATE "C",
    ALTER COLUMN pattern_used TYPE text COLLATE "C",
    ALTER COLUMN status       TYPE text COLLATE "C";
ALTER TABLE variant_monitoring
    ALTER COLUMN persona_id TYPE text COLLATE "C",
    ALTER COLUMN variant_id TYPE text COLLATE "C",
    ALTER COLUMN status     TYPE text COLLATE "C";
ALTER TABLE variant_kills
    ALTER COLUMN persona_id TYPE text COLLATE "C",
    ALTER COLUMN variant_id TYPE text COLLATE "C";
