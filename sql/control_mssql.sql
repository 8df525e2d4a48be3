-- Control database of llm-observatory, mssql.
-- Generated from llm_observatory/sql_scripts.py by
--   python -m llm_observatory.sql_scripts sql/
-- Do not edit by hand: edit sql_scripts.py and regenerate. Idempotent: safe to run again.
-- Needs SQL Server 2016 SP1 or later (CREATE OR ALTER). Batches end with GO.

-- The watermark table: one row per incremental cycle and table.
IF OBJECT_ID(N'dbo.migration_watermark', N'U') IS NULL
BEGIN
CREATE TABLE dbo.migration_watermark (
    id BIGINT IDENTITY(1,1) NOT NULL CONSTRAINT pk_migration_watermark PRIMARY KEY,
    table_name NVARCHAR(128) NOT NULL,
    last_extracted_timestamp DATETIME2(6) NULL,
    last_modified_timestamp DATETIME2(6) NULL,
    extraction_start_time DATETIME2(6) NULL,
    extraction_end_time DATETIME2(6) NULL,
    rows_extracted BIGINT NULL,
    rows_validated BIGINT NULL,
    status NVARCHAR(16) NOT NULL,
    error_message NVARCHAR(MAX) NULL,
    run_id NVARCHAR(64) NULL,
    lake_versions NVARCHAR(MAX) NULL,
    CONSTRAINT ck_migration_watermark_status CHECK (status IN ('STARTED', 'COMPLETED', 'FAILED'))
);
END;
GO

IF COL_LENGTH(N'dbo.migration_watermark', N'run_id') IS NULL
    ALTER TABLE dbo.migration_watermark ADD run_id NVARCHAR(64) NULL;
GO

IF COL_LENGTH(N'dbo.migration_watermark', N'lake_versions') IS NULL
    ALTER TABLE dbo.migration_watermark ADD lake_versions NVARCHAR(MAX) NULL;
GO

IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ix_migration_watermark_table_status' AND object_id = OBJECT_ID(N'dbo.migration_watermark'))
    CREATE INDEX ix_migration_watermark_table_status ON dbo.migration_watermark (table_name, status, id);
GO

-- STARTED inserts a row (extraction_start_time = now, UTC) and returns its id in @watermark_id;
-- COMPLETED and FAILED finish that row, which must belong to @table_name and still be STARTED
-- (extraction_end_time = now; a NULL argument keeps the stored value).
CREATE OR ALTER PROCEDURE dbo.usp_update_watermark
    @table_name NVARCHAR(128),
    @status NVARCHAR(16),
    @watermark_id BIGINT = NULL OUTPUT,
    @last_extracted_timestamp DATETIME2(6) = NULL,
    @last_modified_timestamp DATETIME2(6) = NULL,
    @rows_extracted BIGINT = NULL,
    @rows_validated BIGINT = NULL,
    @error_message NVARCHAR(MAX) = NULL
AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    DECLARE @message NVARCHAR(2048);

    IF @status = N'STARTED'
    BEGIN
        INSERT INTO dbo.migration_watermark (
            table_name, status, extraction_start_time, last_extracted_timestamp,
            last_modified_timestamp, rows_extracted, rows_validated, error_message
        )
        VALUES (
            @table_name, N'STARTED', SYSUTCDATETIME(), @last_extracted_timestamp,
            @last_modified_timestamp, @rows_extracted, @rows_validated, @error_message
        );
        SET @watermark_id = CAST(SCOPE_IDENTITY() AS BIGINT);
        RETURN 0;
    END;

    IF @status IN (N'COMPLETED', N'FAILED')
    BEGIN
        UPDATE dbo.migration_watermark
        SET status = @status,
            extraction_end_time = SYSUTCDATETIME(),
            last_extracted_timestamp = COALESCE(@last_extracted_timestamp, last_extracted_timestamp),
            last_modified_timestamp = COALESCE(@last_modified_timestamp, last_modified_timestamp),
            rows_extracted = COALESCE(@rows_extracted, rows_extracted),
            rows_validated = COALESCE(@rows_validated, rows_validated),
            error_message = COALESCE(@error_message, error_message)
        WHERE id = @watermark_id AND table_name = @table_name AND status = N'STARTED';
        IF @@ROWCOUNT = 0
        BEGIN
            SET @message = CONCAT(
                N'usp_update_watermark: no STARTED watermark row ',
                COALESCE(CAST(@watermark_id AS NVARCHAR(20)), N'NULL'),
                N' for table ', @table_name
            );
            THROW 50001, @message, 1;
        END;
        RETURN 0;
    END;

    SET @message = CONCAT(
        N'usp_update_watermark: unknown status ', COALESCE(@status, N'NULL'),
        N'; expected STARTED, COMPLETED or FAILED'
    );
    THROW 50000, @message, 1;
END;
GO

-- The watermark in force per table: its latest COMPLETED row.
CREATE OR ALTER VIEW dbo.current_watermark
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
FROM dbo.migration_watermark AS w
WHERE w.status = N'COMPLETED'
  AND w.id = (
      SELECT MAX(c.id) FROM dbo.migration_watermark AS c
      WHERE c.table_name = w.table_name AND c.status = N'COMPLETED'
  );
GO

-- Leases: one writer per day of a table, one sync cycle per table.
IF OBJECT_ID(N'dbo.migration_lease', N'U') IS NULL
BEGIN
CREATE TABLE migration_lease (
	resource VARCHAR(256) NOT NULL,
	token VARCHAR(64) NOT NULL,
	owner VARCHAR(256) NOT NULL,
	host VARCHAR(256) NOT NULL,
	pid BIGINT NOT NULL,
	process_started FLOAT NOT NULL,
	acquired_at DATETIMEOFFSET NOT NULL,
	heartbeat_at DATETIMEOFFSET NOT NULL,
	expires_at DATETIMEOFFSET NOT NULL,
	PRIMARY KEY (resource)
);
END;
GO

-- The last reconciliation of each day of each table that matched the source (or was
-- repaired until it did): what the cutover report checks the rotation against.
IF OBJECT_ID(N'dbo.migration_reconciliation', N'U') IS NULL
BEGIN
CREATE TABLE migration_reconciliation (
	table_name VARCHAR(128) NOT NULL,
	day DATE NOT NULL,
	reconciled_at DATETIMEOFFSET NOT NULL,
	differences INTEGER NOT NULL,
	reconciled_by VARCHAR(256) NOT NULL,
	CONSTRAINT pk_migration_reconciliation PRIMARY KEY (table_name, day)
);
END;
GO
