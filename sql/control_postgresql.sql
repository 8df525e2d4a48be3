-- Control database of llm-observatory, postgresql.
-- Generated from llm_observatory/sql_scripts.py by
--   python -m llm_observatory.sql_scripts sql/
-- Do not edit by hand: edit sql_scripts.py and regenerate. Idempotent: safe to run again.

-- The watermark table: one row per incremental cycle and table.
CREATE TABLE IF NOT EXISTS migration_watermark (
    id BIGSERIAL CONSTRAINT pk_migration_watermark PRIMARY KEY,
    table_name VARCHAR(128) NOT NULL,
    last_extracted_timestamp TIMESTAMP WITH TIME ZONE,
    last_modified_timestamp TIMESTAMP WITH TIME ZONE,
    extraction_start_time TIMESTAMP WITH TIME ZONE,
    extraction_end_time TIMESTAMP WITH TIME ZONE,
    rows_extracted BIGINT,
    rows_validated BIGINT,
    status VARCHAR(16) NOT NULL,
    error_message TEXT,
    run_id VARCHAR(64),
    lake_versions TEXT,
    CONSTRAINT ck_migration_watermark_status CHECK (status IN ('STARTED', 'COMPLETED', 'FAILED'))
);

ALTER TABLE migration_watermark ADD COLUMN IF NOT EXISTS run_id VARCHAR(64);
ALTER TABLE migration_watermark ADD COLUMN IF NOT EXISTS lake_versions TEXT;

CREATE INDEX IF NOT EXISTS ix_migration_watermark_table_status ON migration_watermark (table_name, status, id);

-- STARTED inserts a row (extraction_start_time = now) and returns its id; COMPLETED and FAILED
-- finish row p_watermark_id, which must belong to p_table_name and still be STARTED
-- (extraction_end_time = now; a NULL argument keeps the stored value), and return its id.
-- Call: SELECT usp_update_watermark(p_table_name => 'logs', p_status => 'STARTED');
CREATE OR REPLACE FUNCTION usp_update_watermark(
    p_table_name VARCHAR,
    p_status VARCHAR,
    p_watermark_id BIGINT DEFAULT NULL,
    p_last_extracted_timestamp TIMESTAMP WITH TIME ZONE DEFAULT NULL,
    p_last_modified_timestamp TIMESTAMP WITH TIME ZONE DEFAULT NULL,
    p_rows_extracted BIGINT DEFAULT NULL,
    p_rows_validated BIGINT DEFAULT NULL,
    p_error_message TEXT DEFAULT NULL
) RETURNS BIGINT
LANGUAGE plpgsql
AS $$
DECLARE
    v_id BIGINT;
BEGIN
    IF p_status = 'STARTED' THEN
        INSERT INTO migration_watermark (
            table_name, status, extraction_start_time, last_extracted_timestamp,
            last_modified_timestamp, rows_extracted, rows_validated, error_message
        )
        VALUES (
            p_table_name, 'STARTED', clock_timestamp(), p_last_extracted_timestamp,
            p_last_modified_timestamp, p_rows_extracted, p_rows_validated, p_error_message
        )
        RETURNING id INTO v_id;
        RETURN v_id;
    ELSIF p_status IN ('COMPLETED', 'FAILED') THEN
        UPDATE migration_watermark AS w
        SET status = p_status,
            extraction_end_time = clock_timestamp(),
            last_extracted_timestamp = COALESCE(p_last_extracted_timestamp, w.last_extracted_timestamp),
            last_modified_timestamp = COALESCE(p_last_modified_timestamp, w.last_modified_timestamp),
            rows_extracted = COALESCE(p_rows_extracted, w.rows_extracted),
            rows_validated = COALESCE(p_rows_validated, w.rows_validated),
            error_message = COALESCE(p_error_message, w.error_message)
        WHERE w.id = p_watermark_id AND w.table_name = p_table_name AND w.status = 'STARTED'
        RETURNING w.id INTO v_id;
        IF v_id IS NULL THEN
            RAISE EXCEPTION 'usp_update_watermark: no STARTED watermark row % for table %',
                COALESCE(p_watermark_id::TEXT, 'NULL'), p_table_name
                USING ERRCODE = 'no_data_found';
        END IF;
        RETURN v_id;
    END IF;
    RAISE EXCEPTION
        'usp_update_watermark: unknown status %; expected STARTED, COMPLETED or FAILED',
        COALESCE(p_status, 'NULL')
        USING ERRCODE = 'invalid_parameter_value';
END;
$$;

-- The watermark in force per table: its latest COMPLETED row.
CREATE OR REPLACE VIEW current_watermark
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
	acquired_at TIMESTAMP WITH TIME ZONE NOT NULL,
	heartbeat_at TIMESTAMP WITH TIME ZONE NOT NULL,
	expires_at TIMESTAMP WITH TIME ZONE NOT NULL,
	PRIMARY KEY (resource)
);

-- The last reconciliation of each day of each table that matched the source (or was
-- repaired until it did): what the cutover report checks the rotation against.
CREATE TABLE IF NOT EXISTS migration_reconciliation (
	table_name VARCHAR(128) NOT NULL,
	day DATE NOT NULL,
	reconciled_at TIMESTAMP WITH TIME ZONE NOT NULL,
	differences INTEGER NOT NULL,
	reconciled_by VARCHAR(256) NOT NULL,
	CONSTRAINT pk_migration_reconciliation PRIMARY KEY (table_name, day)
);
