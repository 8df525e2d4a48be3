-- Incremental-load preparation of the llm-observatory source tables, sqlite.
-- Generated from llm_observatory/sql_scripts.py by
--   python -m llm_observatory.sql_scripts sql/
-- Do not edit by hand: edit sql_scripts.py and regenerate. Idempotent: safe to run again.
-- SQLite cannot add a NOT NULL column with a non-constant default (and has no ADD
-- COLUMN IF NOT EXISTS): the change column comes with the reference DDL
-- (sql/source_sqlite.sql), so this script only adds the triggers and the indexes.
-- Timestamps are text YYYY-MM-DD HH:MM:SS.ffffff in UTC, as SQLAlchemy stores DATETIME.
-- CREATE TRIGGER IF NOT EXISTS keeps an older trigger: drop it to pick up a change.
--
-- Departures: a watermark on last_modified sees inserts and updates, never a deleted row,
-- nor the old day of a row an UPDATE moved to another event time (or key). The triggers
-- record each such row in migration_departures (old key as text, old event time in UTC, the
-- source's UTC clock, the kind); the next sync takes those keys out of the day they left
-- unless the source holds them there now. What bypasses row triggers records nothing:
-- INSERT OR REPLACE deleting a conflicting row (DELETE triggers fire on it only with
-- PRAGMA recursive_triggers on). The sync's reconciliation rotation is the safety net.

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

CREATE INDEX IF NOT EXISTS ix_llm_interactions_timestamp ON llm_interactions ("timestamp");

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

CREATE INDEX IF NOT EXISTS ix_metadata_created_at ON metadata (created_at);

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

CREATE INDEX IF NOT EXISTS ix_logs_created_at ON logs (created_at);

-- migration_departures: one row per row that left its place (kind 'delete' or 'move'),
-- read by the sync in its window and purged once every watermark is past it.
CREATE TABLE IF NOT EXISTS migration_departures (
	departure_id INTEGER NOT NULL,
	table_name VARCHAR(128) NOT NULL,
	key_value VARCHAR(450) NOT NULL,
	old_event_time DATETIME,
	departed_at DATETIME NOT NULL,
	kind VARCHAR(8) NOT NULL,
	PRIMARY KEY (departure_id)
);

CREATE INDEX IF NOT EXISTS ix_migration_departures_table_departed ON migration_departures (table_name, departed_at);

-- llm_interactions: a migration_departures row per deleted row ('delete') and per row an
-- UPDATE gives another timestamp or interaction_id ('move'): the old key and old event time.
CREATE TRIGGER IF NOT EXISTS trg_llm_interactions_departures_delete
AFTER DELETE ON llm_interactions
FOR EACH ROW
BEGIN
    INSERT INTO migration_departures (table_name, key_value, old_event_time, departed_at, kind)
    VALUES ('llm_interactions', CAST(OLD.interaction_id AS TEXT), OLD."timestamp",
            strftime('%Y-%m-%d %H:%M:%f000', 'now'), 'delete');
END;

CREATE TRIGGER IF NOT EXISTS trg_llm_interactions_departures_move
AFTER UPDATE OF "timestamp", interaction_id ON llm_interactions
FOR EACH ROW
WHEN OLD."timestamp" IS NOT NEW."timestamp" OR OLD.interaction_id IS NOT NEW.interaction_id
BEGIN
    INSERT INTO migration_departures (table_name, key_value, old_event_time, departed_at, kind)
    VALUES ('llm_interactions', CAST(OLD.interaction_id AS TEXT), OLD."timestamp",
            strftime('%Y-%m-%d %H:%M:%f000', 'now'), 'move');
END;

-- metadata: a migration_departures row per deleted row ('delete') and per row an
-- UPDATE gives another created_at or metadata_id ('move'): the old key and old event time.
CREATE TRIGGER IF NOT EXISTS trg_metadata_departures_delete
AFTER DELETE ON metadata
FOR EACH ROW
BEGIN
    INSERT INTO migration_departures (table_name, key_value, old_event_time, departed_at, kind)
    VALUES ('metadata', CAST(OLD.metadata_id AS TEXT), OLD.created_at,
            strftime('%Y-%m-%d %H:%M:%f000', 'now'), 'delete');
END;

CREATE TRIGGER IF NOT EXISTS trg_metadata_departures_move
AFTER UPDATE OF created_at, metadata_id ON metadata
FOR EACH ROW
WHEN OLD.created_at IS NOT NEW.created_at OR OLD.metadata_id IS NOT NEW.metadata_id
BEGIN
    INSERT INTO migration_departures (table_name, key_value, old_event_time, departed_at, kind)
    VALUES ('metadata', CAST(OLD.metadata_id AS TEXT), OLD.created_at,
            strftime('%Y-%m-%d %H:%M:%f000', 'now'), 'move');
END;

-- logs: a migration_departures row per deleted row ('delete') and per row an
-- UPDATE gives another created_at or log_id ('move'): the old key and old event time.
CREATE TRIGGER IF NOT EXISTS trg_logs_departures_delete
AFTER DELETE ON logs
FOR EACH ROW
BEGIN
    INSERT INTO migration_departures (table_name, key_value, old_event_time, departed_at, kind)
    VALUES ('logs', CAST(OLD.log_id AS TEXT), OLD.created_at,
            strftime('%Y-%m-%d %H:%M:%f000', 'now'), 'delete');
END;

CREATE TRIGGER IF NOT EXISTS trg_logs_departures_move
AFTER UPDATE OF created_at, log_id ON logs
FOR EACH ROW
WHEN OLD.created_at IS NOT NEW.created_at OR OLD.log_id IS NOT NEW.log_id
BEGIN
    INSERT INTO migration_departures (table_name, key_value, old_event_time, departed_at, kind)
    VALUES ('logs', CAST(OLD.log_id AS TEXT), OLD.created_at,
            strftime('%Y-%m-%d %H:%M:%f000', 'now'), 'move');
END;
