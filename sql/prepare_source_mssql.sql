-- Incremental-load preparation of the llm-observatory source tables, mssql.
-- Generated from llm_observatory/sql_scripts.py by
--   python -m llm_observatory.sql_scripts sql/
-- Do not edit by hand: edit sql_scripts.py and regenerate. Idempotent: safe to run again.
-- Needs SQL Server 2016 SP1 or later (CREATE OR ALTER). Batches end with GO.
-- Indexes are built WITH (ONLINE = ON) on Enterprise, Developer and Azure SQL
-- (SERVERPROPERTY('EngineEdition') 3, 5, 8); elsewhere (Standard, Express) offline,
-- blocking writes to the table while each builds: run it in a maintenance window.
-- Nothing else is touched: an index that already leads with the column is kept.
--
-- Departures: a watermark on last_modified sees inserts and updates, never a deleted row,
-- nor the old day of a row an UPDATE moved to another event time (or key). The triggers
-- record each such row in migration_departures (old key as text, old event time in UTC, the
-- source's UTC clock, the kind); the next sync takes those keys out of the day they left
-- unless the source holds them there now. What bypasses row triggers records nothing:
-- TRUNCATE TABLE, ALTER TABLE ... SWITCH (a partition switched out), a disabled trigger
-- (DISABLE TRIGGER). The sync's reconciliation rotation is the safety net for those.

-- llm_interactions: last_modified, set on INSERT (default) and UPDATE (trigger).
IF COL_LENGTH(N'dbo.llm_interactions', N'last_modified') IS NULL
    ALTER TABLE dbo.llm_interactions ADD last_modified DATETIME2(6) NOT NULL
        CONSTRAINT df_llm_interactions_last_modified DEFAULT SYSUTCDATETIME();
GO

IF NOT EXISTS (SELECT 1 FROM sys.default_constraints WHERE parent_object_id = OBJECT_ID(N'dbo.llm_interactions')
    AND parent_column_id = COLUMNPROPERTY(OBJECT_ID(N'dbo.llm_interactions'), N'last_modified', 'ColumnId'))
    ALTER TABLE dbo.llm_interactions ADD CONSTRAINT df_llm_interactions_last_modified
        DEFAULT SYSUTCDATETIME() FOR last_modified;
GO

CREATE OR ALTER TRIGGER dbo.trg_llm_interactions_last_modified
ON dbo.llm_interactions
AFTER UPDATE
AS
BEGIN
    SET NOCOUNT ON;
    IF TRIGGER_NESTLEVEL(@@PROCID) > 1 RETURN;
    UPDATE t
    SET last_modified = SYSUTCDATETIME()
    FROM dbo.llm_interactions AS t
    INNER JOIN inserted AS i ON t.interaction_id = i.interaction_id;
END;
GO

-- llm_interactions: an index leading with last_modified (what the watermark reads).
-- Online where the edition allows it (Enterprise, Developer, Azure SQL): writers go on.
-- Standard and Express build it offline, blocking writes to the table meanwhile:
-- run the script there in a maintenance window.
IF NOT EXISTS (SELECT 1 FROM sys.index_columns AS ic
    INNER JOIN sys.indexes AS ix
        ON ix.object_id = ic.object_id AND ix.index_id = ic.index_id
    WHERE ic.object_id = OBJECT_ID(N'dbo.llm_interactions') AND ic.key_ordinal = 1
    AND ic.column_id = COLUMNPROPERTY(OBJECT_ID(N'dbo.llm_interactions'), N'last_modified', 'ColumnId')
    AND ix.is_hypothetical = 0)
BEGIN
    IF CAST(SERVERPROPERTY('EngineEdition') AS INT) IN (3, 5, 8)
        CREATE INDEX ix_llm_interactions_last_modified ON dbo.llm_interactions (last_modified) WITH (ONLINE = ON);
    ELSE
        CREATE INDEX ix_llm_interactions_last_modified ON dbo.llm_interactions (last_modified);
END;
GO

-- llm_interactions: an index leading with timestamp (what every day's copy, check and reconciliation reads).
-- Online where the edition allows it (Enterprise, Developer, Azure SQL): writers go on.
-- Standard and Express build it offline, blocking writes to the table meanwhile:
-- run the script there in a maintenance window.
IF NOT EXISTS (SELECT 1 FROM sys.index_columns AS ic
    INNER JOIN sys.indexes AS ix
        ON ix.object_id = ic.object_id AND ix.index_id = ic.index_id
    WHERE ic.object_id = OBJECT_ID(N'dbo.llm_interactions') AND ic.key_ordinal = 1
    AND ic.column_id = COLUMNPROPERTY(OBJECT_ID(N'dbo.llm_interactions'), N'timestamp', 'ColumnId')
    AND ix.is_hypothetical = 0)
BEGIN
    IF CAST(SERVERPROPERTY('EngineEdition') AS INT) IN (3, 5, 8)
        CREATE INDEX ix_llm_interactions_timestamp ON dbo.llm_interactions ([timestamp]) WITH (ONLINE = ON);
    ELSE
        CREATE INDEX ix_llm_interactions_timestamp ON dbo.llm_interactions ([timestamp]);
END;
GO

-- metadata: last_modified, set on INSERT (default) and UPDATE (trigger).
IF COL_LENGTH(N'dbo.metadata', N'last_modified') IS NULL
    ALTER TABLE dbo.metadata ADD last_modified DATETIME2(6) NOT NULL
        CONSTRAINT df_metadata_last_modified DEFAULT SYSUTCDATETIME();
GO

IF NOT EXISTS (SELECT 1 FROM sys.default_constraints WHERE parent_object_id = OBJECT_ID(N'dbo.metadata')
    AND parent_column_id = COLUMNPROPERTY(OBJECT_ID(N'dbo.metadata'), N'last_modified', 'ColumnId'))
    ALTER TABLE dbo.metadata ADD CONSTRAINT df_metadata_last_modified
        DEFAULT SYSUTCDATETIME() FOR last_modified;
GO

CREATE OR ALTER TRIGGER dbo.trg_metadata_last_modified
ON dbo.metadata
AFTER UPDATE
AS
BEGIN
    SET NOCOUNT ON;
    IF TRIGGER_NESTLEVEL(@@PROCID) > 1 RETURN;
    UPDATE t
    SET last_modified = SYSUTCDATETIME()
    FROM dbo.metadata AS t
    INNER JOIN inserted AS i ON t.metadata_id = i.metadata_id;
END;
GO

-- metadata: an index leading with last_modified (what the watermark reads).
-- Online where the edition allows it (Enterprise, Developer, Azure SQL): writers go on.
-- Standard and Express build it offline, blocking writes to the table meanwhile:
-- run the script there in a maintenance window.
IF NOT EXISTS (SELECT 1 FROM sys.index_columns AS ic
    INNER JOIN sys.indexes AS ix
        ON ix.object_id = ic.object_id AND ix.index_id = ic.index_id
    WHERE ic.object_id = OBJECT_ID(N'dbo.metadata') AND ic.key_ordinal = 1
    AND ic.column_id = COLUMNPROPERTY(OBJECT_ID(N'dbo.metadata'), N'last_modified', 'ColumnId')
    AND ix.is_hypothetical = 0)
BEGIN
    IF CAST(SERVERPROPERTY('EngineEdition') AS INT) IN (3, 5, 8)
        CREATE INDEX ix_metadata_last_modified ON dbo.metadata (last_modified) WITH (ONLINE = ON);
    ELSE
        CREATE INDEX ix_metadata_last_modified ON dbo.metadata (last_modified);
END;
GO

-- metadata: an index leading with created_at (what every day's copy, check and reconciliation reads).
-- Online where the edition allows it (Enterprise, Developer, Azure SQL): writers go on.
-- Standard and Express build it offline, blocking writes to the table meanwhile:
-- run the script there in a maintenance window.
IF NOT EXISTS (SELECT 1 FROM sys.index_columns AS ic
    INNER JOIN sys.indexes AS ix
        ON ix.object_id = ic.object_id AND ix.index_id = ic.index_id
    WHERE ic.object_id = OBJECT_ID(N'dbo.metadata') AND ic.key_ordinal = 1
    AND ic.column_id = COLUMNPROPERTY(OBJECT_ID(N'dbo.metadata'), N'created_at', 'ColumnId')
    AND ix.is_hypothetical = 0)
BEGIN
    IF CAST(SERVERPROPERTY('EngineEdition') AS INT) IN (3, 5, 8)
        CREATE INDEX ix_metadata_created_at ON dbo.metadata (created_at) WITH (ONLINE = ON);
    ELSE
        CREATE INDEX ix_metadata_created_at ON dbo.metadata (created_at);
END;
GO

-- logs: last_modified, set on INSERT (default) and UPDATE (trigger).
IF COL_LENGTH(N'dbo.logs', N'last_modified') IS NULL
    ALTER TABLE dbo.logs ADD last_modified DATETIME2(6) NOT NULL
        CONSTRAINT df_logs_last_modified DEFAULT SYSUTCDATETIME();
GO

IF NOT EXISTS (SELECT 1 FROM sys.default_constraints WHERE parent_object_id = OBJECT_ID(N'dbo.logs')
    AND parent_column_id = COLUMNPROPERTY(OBJECT_ID(N'dbo.logs'), N'last_modified', 'ColumnId'))
    ALTER TABLE dbo.logs ADD CONSTRAINT df_logs_last_modified
        DEFAULT SYSUTCDATETIME() FOR last_modified;
GO

CREATE OR ALTER TRIGGER dbo.trg_logs_last_modified
ON dbo.logs
AFTER UPDATE
AS
BEGIN
    SET NOCOUNT ON;
    IF TRIGGER_NESTLEVEL(@@PROCID) > 1 RETURN;
    UPDATE t
    SET last_modified = SYSUTCDATETIME()
    FROM dbo.logs AS t
    INNER JOIN inserted AS i ON t.log_id = i.log_id;
END;
GO

-- logs: an index leading with last_modified (what the watermark reads).
-- Online where the edition allows it (Enterprise, Developer, Azure SQL): writers go on.
-- Standard and Express build it offline, blocking writes to the table meanwhile:
-- run the script there in a maintenance window.
IF NOT EXISTS (SELECT 1 FROM sys.index_columns AS ic
    INNER JOIN sys.indexes AS ix
        ON ix.object_id = ic.object_id AND ix.index_id = ic.index_id
    WHERE ic.object_id = OBJECT_ID(N'dbo.logs') AND ic.key_ordinal = 1
    AND ic.column_id = COLUMNPROPERTY(OBJECT_ID(N'dbo.logs'), N'last_modified', 'ColumnId')
    AND ix.is_hypothetical = 0)
BEGIN
    IF CAST(SERVERPROPERTY('EngineEdition') AS INT) IN (3, 5, 8)
        CREATE INDEX ix_logs_last_modified ON dbo.logs (last_modified) WITH (ONLINE = ON);
    ELSE
        CREATE INDEX ix_logs_last_modified ON dbo.logs (last_modified);
END;
GO

-- logs: an index leading with created_at (what every day's copy, check and reconciliation reads).
-- Online where the edition allows it (Enterprise, Developer, Azure SQL): writers go on.
-- Standard and Express build it offline, blocking writes to the table meanwhile:
-- run the script there in a maintenance window.
IF NOT EXISTS (SELECT 1 FROM sys.index_columns AS ic
    INNER JOIN sys.indexes AS ix
        ON ix.object_id = ic.object_id AND ix.index_id = ic.index_id
    WHERE ic.object_id = OBJECT_ID(N'dbo.logs') AND ic.key_ordinal = 1
    AND ic.column_id = COLUMNPROPERTY(OBJECT_ID(N'dbo.logs'), N'created_at', 'ColumnId')
    AND ix.is_hypothetical = 0)
BEGIN
    IF CAST(SERVERPROPERTY('EngineEdition') AS INT) IN (3, 5, 8)
        CREATE INDEX ix_logs_created_at ON dbo.logs (created_at) WITH (ONLINE = ON);
    ELSE
        CREATE INDEX ix_logs_created_at ON dbo.logs (created_at);
END;
GO

-- migration_departures: one row per row that left its place (kind 'delete' or 'move'),
-- read by the sync in its window and purged once every watermark is past it.
IF OBJECT_ID(N'dbo.migration_departures', N'U') IS NULL
BEGIN
CREATE TABLE dbo.migration_departures (
	departure_id BIGINT NOT NULL IDENTITY,
	table_name NVARCHAR(128) NOT NULL,
	key_value NVARCHAR(450) NOT NULL,
	old_event_time DATETIME2(6) NULL,
	departed_at DATETIME2(6) NOT NULL,
	kind VARCHAR(8) NOT NULL,
	PRIMARY KEY (departure_id)
);
END;
GO

IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ix_migration_departures_table_departed' AND object_id = OBJECT_ID(N'dbo.migration_departures'))
BEGIN
    IF CAST(SERVERPROPERTY('EngineEdition') AS INT) IN (3, 5, 8)
        CREATE INDEX ix_migration_departures_table_departed ON dbo.migration_departures (table_name, departed_at) WITH (ONLINE = ON);
    ELSE
        CREATE INDEX ix_migration_departures_table_departed ON dbo.migration_departures (table_name, departed_at);
END;
GO

-- llm_interactions: a migration_departures row per deleted row ('delete') and per row an
-- UPDATE gives another timestamp or interaction_id ('move'): the old key and old event time.
CREATE OR ALTER TRIGGER dbo.trg_llm_interactions_departures
ON dbo.llm_interactions
AFTER UPDATE, DELETE
AS
BEGIN
    SET NOCOUNT ON;
    DECLARE @kind NVARCHAR(8) = N'delete';
    IF EXISTS (SELECT 1 FROM inserted)
    BEGIN
        IF NOT (UPDATE([timestamp]) OR UPDATE(interaction_id)) RETURN;
        SET @kind = N'move';
    END;
    INSERT INTO dbo.migration_departures (table_name, key_value, old_event_time, departed_at, kind)
    SELECT N'llm_interactions',
        CONVERT(NVARCHAR(450), d.interaction_id),
        -- UTC: a DATETIMEOFFSET keeps its instant, a DATETIME2 is UTC already.
        CONVERT(DATETIME2(6), SWITCHOFFSET(d.[timestamp], '+00:00')),
        SYSUTCDATETIME(),
        @kind
    FROM deleted AS d
    LEFT JOIN inserted AS i ON i.interaction_id = d.interaction_id
    -- No match: deleted, or its key changed (recorded as a move of the old key).
    WHERE i.interaction_id IS NULL
        OR EXISTS (SELECT d.[timestamp] EXCEPT SELECT i.[timestamp]);
END;
GO

-- metadata: a migration_departures row per deleted row ('delete') and per row an
-- UPDATE gives another created_at or metadata_id ('move'): the old key and old event time.
CREATE OR ALTER TRIGGER dbo.trg_metadata_departures
ON dbo.metadata
AFTER UPDATE, DELETE
AS
BEGIN
    SET NOCOUNT ON;
    DECLARE @kind NVARCHAR(8) = N'delete';
    IF EXISTS (SELECT 1 FROM inserted)
    BEGIN
        IF NOT (UPDATE(created_at) OR UPDATE(metadata_id)) RETURN;
        SET @kind = N'move';
    END;
    INSERT INTO dbo.migration_departures (table_name, key_value, old_event_time, departed_at, kind)
    SELECT N'metadata',
        CONVERT(NVARCHAR(450), d.metadata_id),
        -- UTC: a DATETIMEOFFSET keeps its instant, a DATETIME2 is UTC already.
        CONVERT(DATETIME2(6), SWITCHOFFSET(d.created_at, '+00:00')),
        SYSUTCDATETIME(),
        @kind
    FROM deleted AS d
    LEFT JOIN inserted AS i ON i.metadata_id = d.metadata_id
    -- No match: deleted, or its key changed (recorded as a move of the old key).
    WHERE i.metadata_id IS NULL
        OR EXISTS (SELECT d.created_at EXCEPT SELECT i.created_at);
END;
GO

-- logs: a migration_departures row per deleted row ('delete') and per row an
-- UPDATE gives another created_at or log_id ('move'): the old key and old event time.
CREATE OR ALTER TRIGGER dbo.trg_logs_departures
ON dbo.logs
AFTER UPDATE, DELETE
AS
BEGIN
    SET NOCOUNT ON;
    DECLARE @kind NVARCHAR(8) = N'delete';
    IF EXISTS (SELECT 1 FROM inserted)
    BEGIN
        IF NOT (UPDATE(created_at) OR UPDATE(log_id)) RETURN;
        SET @kind = N'move';
    END;
    INSERT INTO dbo.migration_departures (table_name, key_value, old_event_time, departed_at, kind)
    SELECT N'logs',
        CONVERT(NVARCHAR(450), d.log_id),
        -- UTC: a DATETIMEOFFSET keeps its instant, a DATETIME2 is UTC already.
        CONVERT(DATETIME2(6), SWITCHOFFSET(d.created_at, '+00:00')),
        SYSUTCDATETIME(),
        @kind
    FROM deleted AS d
    LEFT JOIN inserted AS i ON i.log_id = d.log_id
    -- No match: deleted, or its key changed (recorded as a move of the old key).
    WHERE i.log_id IS NULL
        OR EXISTS (SELECT d.created_at EXCEPT SELECT i.created_at);
END;
GO
