-- Incremental-load preparation of the llm-observatory source tables, postgresql.
-- Generated from llm_observatory/sql_scripts.py by
--   python -m llm_observatory.sql_scripts sql/
-- Do not edit by hand: edit sql_scripts.py and regenerate. Idempotent: safe to run again.
-- Needs PostgreSQL 14 or later (CREATE OR REPLACE TRIGGER).
--
-- Departures: a watermark on last_modified sees inserts and updates, never a deleted row,
-- nor the old day of a row an UPDATE moved to another event time (or key). The triggers
-- record each such row in migration_departures (old key as text, old event time in UTC, the
-- source's UTC clock, the kind); the next sync takes those keys out of the day they left
-- unless the source holds them there now. What bypasses row triggers records nothing:
-- TRUNCATE, a disabled trigger, session_replication_role = replica. The sync's
-- reconciliation rotation is the safety net for those.

-- Sets last_modified to the statement's start time on every UPDATE.
CREATE OR REPLACE FUNCTION llm_obs_set_last_modified() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.last_modified := statement_timestamp();
    RETURN NEW;
END;
$$;

-- llm_interactions: last_modified, set on INSERT (default) and UPDATE (trigger).
ALTER TABLE llm_interactions ADD COLUMN IF NOT EXISTS last_modified TIMESTAMPTZ NOT NULL DEFAULT statement_timestamp();
ALTER TABLE llm_interactions ALTER COLUMN last_modified SET DEFAULT statement_timestamp();

CREATE OR REPLACE TRIGGER trg_llm_interactions_last_modified BEFORE UPDATE ON llm_interactions
    FOR EACH ROW EXECUTE FUNCTION llm_obs_set_last_modified();

CREATE INDEX IF NOT EXISTS ix_llm_interactions_last_modified ON llm_interactions (last_modified);

CREATE INDEX IF NOT EXISTS ix_llm_interactions_timestamp ON llm_interactions ("timestamp");

-- metadata: last_modified, set on INSERT (default) and UPDATE (trigger).
ALTER TABLE metadata ADD COLUMN IF NOT EXISTS last_modified TIMESTAMPTZ NOT NULL DEFAULT statement_timestamp();
ALTER TABLE metadata ALTER COLUMN last_modified SET DEFAULT statement_timestamp();

CREATE OR REPLACE TRIGGER trg_metadata_last_modified BEFORE UPDATE ON metadata
    FOR EACH ROW EXECUTE FUNCTION llm_obs_set_last_modified();

CREATE INDEX IF NOT EXISTS ix_metadata_last_modified ON metadata (last_modified);

CREATE INDEX IF NOT EXISTS ix_metadata_created_at ON metadata (created_at);

-- logs: last_modified, set on INSERT (default) and UPDATE (trigger).
ALTER TABLE logs ADD COLUMN IF NOT EXISTS last_modified TIMESTAMPTZ NOT NULL DEFAULT statement_timestamp();
ALTER TABLE logs ALTER COLUMN last_modified SET DEFAULT statement_timestamp();

CREATE OR REPLACE TRIGGER trg_logs_last_modified BEFORE UPDATE ON logs
    FOR EACH ROW EXECUTE FUNCTION llm_obs_set_last_modified();

CREATE INDEX IF NOT EXISTS ix_logs_last_modified ON logs (last_modified);

CREATE INDEX IF NOT EXISTS ix_logs_created_at ON logs (created_at);

-- migration_departures: one row per row that left its place (kind 'delete' or 'move'),
-- read by the sync in its window and purged once every watermark is past it.
CREATE TABLE IF NOT EXISTS migration_departures (
	departure_id BIGSERIAL NOT NULL,
	table_name VARCHAR(128) NOT NULL,
	key_value VARCHAR(450) NOT NULL,
	old_event_time TIMESTAMP WITH TIME ZONE,
	departed_at TIMESTAMP WITH TIME ZONE NOT NULL,
	kind VARCHAR(8) NOT NULL,
	PRIMARY KEY (departure_id)
);

CREATE INDEX IF NOT EXISTS ix_migration_departures_table_departed ON migration_departures (table_name, departed_at);

-- llm_interactions: a migration_departures row per deleted row ('delete') and per row an
-- UPDATE gives another timestamp or interaction_id ('move'): the old key and old event time.
CREATE OR REPLACE FUNCTION llm_obs_record_departure_llm_interactions() RETURNS trigger
LANGUAGE plpgsql
SET TimeZone = 'UTC'
AS $$
DECLARE
    v_kind TEXT := 'delete';
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF OLD."timestamp" IS NOT DISTINCT FROM NEW."timestamp"
           AND OLD.interaction_id IS NOT DISTINCT FROM NEW.interaction_id THEN
            RETURN NULL;
        END IF;
        v_kind := 'move';
    END IF;
    INSERT INTO migration_departures (table_name, key_value, old_event_time, departed_at, kind)
    VALUES ('llm_interactions', OLD.interaction_id::TEXT, OLD."timestamp",
            statement_timestamp(), v_kind);
    RETURN NULL;
END;
$$;

CREATE OR REPLACE TRIGGER trg_llm_interactions_departures
    AFTER DELETE OR UPDATE OF "timestamp", interaction_id ON llm_interactions
    FOR EACH ROW EXECUTE FUNCTION llm_obs_record_departure_llm_interactions();

-- metadata: a migration_departures row per deleted row ('delete') and per row an
-- UPDATE gives another created_at or metadata_id ('move'): the old key and old event time.
CREATE OR REPLACE FUNCTION llm_obs_record_departure_metadata() RETURNS trigger
LANGUAGE plpgsql
SET TimeZone = 'UTC'
AS $$
DECLARE
    v_kind TEXT := 'delete';
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF OLD.created_at IS NOT DISTINCT FROM NEW.created_at
           AND OLD.metadata_id IS NOT DISTINCT FROM NEW.metadata_id THEN
            RETURN NULL;
        END IF;
        v_kind := 'move';
    END IF;
    INSERT INTO migration_departures (table_name, key_value, old_event_time, departed_at, kind)
    VALUES ('metadata', OLD.metadata_id::TEXT, OLD.created_at,
            statement_timestamp(), v_kind);
    RETURN NULL;
END;
$$;

CREATE OR REPLACE TRIGGER trg_metadata_departures
    AFTER DELETE OR UPDATE OF created_at, metadata_id ON metadata
    FOR EACH ROW EXECUTE FUNCTION llm_obs_record_departure_metadata();

-- logs: a migration_departures row per deleted row ('delete') and per row an
-- UPDATE gives another created_at or log_id ('move'): the old key and old event time.
CREATE OR REPLACE FUNCTION llm_obs_record_departure_logs() RETURNS trigger
LANGUAGE plpgsql
SET TimeZone = 'UTC'
AS $$
DECLARE
    v_kind TEXT := 'delete';
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF OLD.created_at IS NOT DISTINCT FROM NEW.created_at
           AND OLD.log_id IS NOT DISTINCT FROM NEW.log_id THEN
            RETURN NULL;
        END IF;
        v_kind := 'move';
    END IF;
    INSERT INTO migration_departures (table_name, key_value, old_event_time, departed_at, kind)
    VALUES ('logs', OLD.log_id::TEXT, OLD.created_at,
            statement_timestamp(), v_kind);
    RETURN NULL;
END;
$$;

CREATE OR REPLACE TRIGGER trg_logs_departures
    AFTER DELETE OR UPDATE OF created_at, log_id ON logs
    FOR EACH ROW EXECUTE FUNCTION llm_obs_record_departure_logs();
