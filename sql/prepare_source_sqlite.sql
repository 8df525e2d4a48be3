-- Incremental-load preparation of the llm-observatory source tables, sqlite.
-- Generated from llm_observatory/sql_scripts.py by
--   python -m llm_observatory.sql_scripts sql/
-- Do not edit by hand: edit sql_scripts.py and regenerate. Idempotent: safe to run again.
-- SQLite cannot add a NOT NULL column with a non-constant default (and has no ADD
-- COLUMN IF NOT EXISTS): the change column comes with the reference DDL
-- (sql/source_sqlite.sql), so this script only adds the triggers and the indexes.
-- Timestamps are text YYYY-MM-DD HH:MM:SS.ffffff in UTC, as SQLAlchemy stores DATETIME.

-- llm_interactions: last_modified set by every UPDATE that does not set it.
CREATE TRIGGER IF NOT EXISTS trg_llm_interactions_last_modified
AFTER UPDATE ON llm_interactions
FOR EACH ROW
WHEN NEW.last_modified IS OLD.last_modified
BEGIN
    UPDATE llm_interactions SET last_modified = strftime('%Y-%m-%d %H:%M:%f000', 'now')
    WHERE rowid = NEW.rowid;
END;

CREATE INDEX IF NOT EXISTS ix_llm_interactions_last_modified ON llm_interactions (last_modified);

-- metadata: last_modified set by every UPDATE that does not set it.
CREATE TRIGGER IF NOT EXISTS trg_metadata_last_modified
AFTER UPDATE ON metadata
FOR EACH ROW
WHEN NEW.last_modified IS OLD.last_modified
BEGIN
    UPDATE metadata SET last_modified = strftime('%Y-%m-%d %H:%M:%f000', 'now')
    WHERE rowid = NEW.rowid;
END;

CREATE INDEX IF NOT EXISTS ix_metadata_last_modified ON metadata (last_modified);

-- logs: last_modified set by every UPDATE that does not set it.
CREATE TRIGGER IF NOT EXISTS trg_logs_last_modified
AFTER UPDATE ON logs
FOR EACH ROW
WHEN NEW.last_modified IS OLD.last_modified
BEGIN
    UPDATE logs SET last_modified = strftime('%Y-%m-%d %H:%M:%f000', 'now')
    WHERE rowid = NEW.rowid;
END;

CREATE INDEX IF NOT EXISTS ix_logs_last_modified ON logs (last_modified);
