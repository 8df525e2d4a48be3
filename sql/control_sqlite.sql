-- Control database of llm-observatory, sqlite.
-- Generated from llm_observatory/sql_scripts.py by
--   python -m llm_observatory.sql_scripts sql/
-- Do not edit by hand: edit sql_scripts.py and regenerate. Idempotent: safe to run again.
-- SQLite has no stored procedures: no usp_update_watermark here; the pipeline writes
-- watermark rows itself (llm_observatory/resources/control.py).
-- SQLite has no ADD COLUMN IF NOT EXISTS: a migration_watermark created before run_id and
-- lake_versions existed needs `ALTER TABLE migration_watermark ADD COLUMN run_id
-- VARCHAR(64)` and `... ADD COLUMN lake_versions TEXT` once, by hand. CREATE VIEW IF NOT
-- EXISTS keeps an older current_watermark: drop it first to pick up a changed definition.

-- The watermark table: one row per incremental cycle and table.
CREATE TABLE IF NOT EXISTS migration_watermark (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    table_name VARCHAR(128) NOT NULL,
    last_extracted_timestamp DATETIME,
    last_modified_timestamp DATETIME,
    extraction_start_time DATETIME,
    extraction_end_time DATETIME,
    rows_extracted BIGINT,
    rows_validated BIGINT,
    status VARCHAR(16) NOT NULL,
    error_message TEXT,
    run_id VARCHAR(64),
    lake_versions TEXT,
    CONSTRAINT ck_migration_watermark_status CHECK (status IN ('STARTED', 'COMPLETED', 'FAILED'))
);

CREATE INDEX IF NOT EXISTS ix_migration_watermark_table_status ON migration_watermark (table_name, status, id);

-- The watermark in force per table: its latest COMPLETED row.
CREATE VIEW IF NOT EXISTS current_watermark
AS
SELECT
    w.id,
    w.table_name,
    w.last_extracted_timestamp,
    w.last_modified_timestamp,
    w.extraction_start_time,
    w.extraction_end_time,
    w.rows_extracted,
    w.rows_validated,
    w.status,
    w.error_message,
    w.run_id,
    w.lake_versions
FROM migration_watermark AS w
WHERE w.status = 'COMPLETED'
  AND w.id = (
      SELECT MAX(c.id) FROM migration_watermark AS c
      WHERE c.table_name = w.table_name AND c.status = 'COMPLETED'
  );

-- Leases: one writer per day of a table, one sync cycle per table.
CREATE TABLE IF NOT EXISTS migration_lease (
	resource VARCHAR(256) NOT NULL,
	token VARCHAR(64) NOT NULL,
	owner VARCHAR(256) NOT NULL,
	host VARCHAR(256) NOT NULL,
	pid BIGINT NOT NULL,
	process_started FLOAT NOT NULL,
	acquired_at DATETIME NOT NULL,
	heartbeat_at DATETIME NOT NULL,
	expires_at DATETIME NOT NULL,
	PRIMARY KEY (resource)
);

-- The last reconciliation of each day of each table that matched the source (or was
-- repaired until it did): what the cutover report checks the rotation against.
CREATE TABLE IF NOT EXISTS migration_reconciliation (
	table_name VARCHAR(128) NOT NULL,
	day DATE NOT NULL,
	reconciled_at DATETIME NOT NULL,
	differences INTEGER NOT NULL,
	reconciled_by VARCHAR(256) NOT NULL,
	CONSTRAINT pk_migration_reconciliation PRIMARY KEY (table_name, day)
);
