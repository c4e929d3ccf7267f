-- `variants` keeps only its primary key `(persona_id, id)`. The two
-- reporting indexes below served no query of the gateway (its dashboard
-- reads come from Redis, its audit queries from `dashboard_events` and
-- `variant_kills`), yet every posted variant paid two more index entries
-- for them: about a tenth of a batch of posts. A persona's variants, for
-- reporting by status or pattern, are one range of the primary key.
DROP INDEX IF EXISTS variants_persona_status;
DROP INDEX IF EXISTS variants_persona_pattern;
