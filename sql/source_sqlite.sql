-- Reference source schema of llm-observatory (the tables it migrates), sqlite.
-- Generated from llm_observatory/synthetic/schema.py by
--   python -m llm_observatory.synthetic --write-ddl sql/
-- Do not edit by hand: edit schema.py and regenerate. Idempotent: safe to run again.

CREATE TABLE IF NOT EXISTS llm_interactions (
    interaction_id VARCHAR(36) NOT NULL,
    "timestamp" DATETIME NOT NULL,
    model_name VARCHAR(64),
    latency_ms INTEGER,
    prompt TEXT,
    response TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    status VARCHAR(16),
    error_message TEXT,
    user_id VARCHAR(64),
    session_id VARCHAR(64),
    cost_usd NUMERIC(12, 6),
    last_modified DATETIME NOT NULL,
    CONSTRAINT pk_llm_interactions PRIMARY KEY (interaction_id)
);

CREATE INDEX IF NOT EXISTS ix_llm_interactions_last_modified ON llm_interactions (last_modified);

CREATE INDEX IF NOT EXISTS ix_llm_interactions_timestamp ON llm_interactions ("timestamp");

CREATE TABLE IF NOT EXISTS metadata (
    metadata_id BIGINT NOT NULL,
    interaction_id VARCHAR(36),
    created_at DATETIME NOT NULL,
    attributes TEXT,
    last_modified DATETIME NOT NULL,
    CONSTRAINT pk_metadata PRIMARY KEY (metadata_id)
);

CREATE INDEX IF NOT EXISTS ix_metadata_created_at ON metadata (created_at);

CREATE INDEX IF NOT EXISTS ix_metadata_last_modified ON metadata (last_modified);

CREATE TABLE IF NOT EXISTS logs (
    log_id BIGINT NOT NULL,
    interaction_id VARCHAR(36),
    created_at DATETIME NOT NULL,
    level VARCHAR(16),
    message TEXT,
    last_modified DATETIME NOT NULL,
    CONSTRAINT pk_logs PRIMARY KEY (log_id)
);

CREATE INDEX IF NOT EXISTS ix_logs_created_at ON logs (created_at);

CREATE INDEX IF NOT EXISTS ix_logs_last_modified ON logs (last_modified);
