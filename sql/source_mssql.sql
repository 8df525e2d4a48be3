-- Reference source schema of llm-observatory (the tables it migrates), mssql.
-- Generated from llm_observatory/synthetic/schema.py by
--   python -m llm_observatory.synthetic --write-ddl sql/
-- Do not edit by hand: edit schema.py and regenerate. Idempotent: safe to run again.

IF OBJECT_ID(N'llm_interactions', N'U') IS NULL
BEGIN
CREATE TABLE llm_interactions (
    interaction_id NVARCHAR(36) NOT NULL,
    [timestamp] DATETIME2(6) NOT NULL,
    model_name NVARCHAR(64) NULL,
    latency_ms INTEGER NULL,
    prompt NVARCHAR(max) NULL,
    response NVARCHAR(max) NULL,
    prompt_tokens INTEGER NULL,
    completion_tokens INTEGER NULL,
    status NVARCHAR(16) NULL,
    error_message NVARCHAR(max) NULL,
    user_id NVARCHAR(64) NULL,
    session_id NVARCHAR(64) NULL,
    cost_usd NUMERIC(12, 6) NULL,
    last_modified DATETIME2(6) NOT NULL,
    CONSTRAINT pk_llm_interactions PRIMARY KEY (interaction_id)
);
END;
GO

IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ix_llm_interactions_last_modified' AND object_id = OBJECT_ID(N'llm_interactions'))
    CREATE INDEX ix_llm_interactions_last_modified ON llm_interactions (last_modified);
GO

IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ix_llm_interactions_timestamp' AND object_id = OBJECT_ID(N'llm_interactions'))
    CREATE INDEX ix_llm_interactions_timestamp ON llm_interactions ([timestamp]);
GO

IF OBJECT_ID(N'metadata', N'U') IS NULL
BEGIN
CREATE TABLE metadata (
    metadata_id BIGINT NOT NULL,
    interaction_id NVARCHAR(36) NULL,
    created_at DATETIME2(6) NOT NULL,
    attributes NVARCHAR(max) NULL,
    last_modified DATETIME2(6) NOT NULL,
    CONSTRAINT pk_metadata PRIMARY KEY (metadata_id)
);
END;
GO

IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ix_metadata_created_at' AND object_id = OBJECT_ID(N'metadata'))
    CREATE INDEX ix_metadata_created_at ON metadata (created_at);
GO

IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ix_metadata_last_modified' AND object_id = OBJECT_ID(N'metadata'))
    CREATE INDEX ix_metadata_last_modified ON metadata (last_modified);
GO

IF OBJECT_ID(N'logs', N'U') IS NULL
BEGIN
CREATE TABLE logs (
    log_id BIGINT NOT NULL,
    interaction_id NVARCHAR(36) NULL,
    created_at DATETIME2(6) NOT NULL,
    level NVARCHAR(16) NULL,
    message NVARCHAR(max) NULL,
    last_modified DATETIME2(6) NOT NULL,
    CONSTRAINT pk_logs PRIMARY KEY (log_id)
);
END;
GO

IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ix_logs_created_at' AND object_id = OBJECT_ID(N'logs'))
    CREATE INDEX ix_logs_created_at ON logs (created_at);
GO

IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ix_logs_last_modified' AND object_id = OBJECT_ID(N'logs'))
    CREATE INDEX ix_logs_last_modified ON logs (last_modified);
GO
