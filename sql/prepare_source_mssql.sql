-- Incremental-load preparation of the llm-observatory source tables, mssql.
-- Generated from llm_observatory/sql_scripts.py by
--   python -m llm_observatory.sql_scripts sql/
-- Do not edit by hand: edit sql_scripts.py and regenerate. Idempotent: safe to run again.
-- Needs SQL Server 2016 SP1 or later (CREATE OR ALTER). Batches end with GO.

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

IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ix_llm_interactions_last_modified' AND object_id = OBJECT_ID(N'dbo.llm_interactions'))
    CREATE INDEX ix_llm_interactions_last_modified ON dbo.llm_interactions (last_modified);
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

IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ix_metadata_last_modified' AND object_id = OBJECT_ID(N'dbo.metadata'))
    CREATE INDEX ix_metadata_last_modified ON dbo.metadata (last_modified);
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

IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ix_logs_last_modified' AND object_id = OBJECT_ID(N'dbo.logs'))
    CREATE INDEX ix_logs_last_modified ON dbo.logs (last_modified);
GO
