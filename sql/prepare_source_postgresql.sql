-- Incremental-load preparation of the llm-observatory source tables, postgresql.
-- Generated from llm_observatory/sql_scripts.py by
--   python -m llm_observatory.sql_scripts sql/
-- Do not edit by hand: edit sql_scripts.py and regenerate. Idempotent: safe to run again.
-- Needs PostgreSQL 14 or later (CREATE OR REPLACE TRIGGER).

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

-- metadata: last_modified, set on INSERT (default) and UPDATE (trigger).
ALTER TABLE metadata ADD COLUMN IF NOT EXISTS last_modified TIMESTAMPTZ NOT NULL DEFAULT statement_timestamp();
ALTER TABLE metadata ALTER COLUMN last_modified SET DEFAULT statement_timestamp();

CREATE OR REPLACE TRIGGER trg_metadata_last_modified BEFORE UPDATE ON metadata
    FOR EACH ROW EXECUTE FUNCTION llm_obs_set_last_modified();

CREATE INDEX IF NOT EXISTS ix_metadata_last_modified ON metadata (last_modified);

-- logs: last_modified, set on INSERT (default) and UPDATE (trigger).
ALTER TABLE logs ADD COLUMN IF NOT EXISTS last_modified TIMESTAMPTZ NOT NULL DEFAULT statement_timestamp();
ALTER TABLE logs ALTER COLUMN last_modified SET DEFAULT statement_timestamp();

CREATE OR REPLACE TRIGGER trg_logs_last_modified BEFORE UPDATE ON logs
    FOR EACH ROW EXECUTE FUNCTION llm_obs_set_last_modified();

CREATE INDEX IF NOT EXISTS ix_logs_last_modified ON logs (last_modified);
