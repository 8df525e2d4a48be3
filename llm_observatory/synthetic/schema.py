"""The reference source schema (the tables being migrated) as SQLAlchemy ``Table`` objects,
and its DDL.

This is the shape of the SQL Server tables being migrated, reproduced on PostgreSQL and SQLite
for the demo and the tests. The migration itself never imports this module: it copies whatever
columns a source table has. The schema lives here so that the synthetic generator, the committed
``sql/source_*.sql`` scripts and the tests all derive from one declaration.

Plain ``Table`` objects, not declarative classes: a declarative class for the table named
``metadata`` would collide with the ``metadata`` attribute SQLAlchemy reserves on them.

Types per dialect, chosen so that every column means the same thing everywhere:

- ``timestamp``/``created_at``/``last_modified``: UTC instants with microseconds
  (``timestamptz`` on PostgreSQL, ``datetime2(6)`` holding UTC on SQL Server, and on SQLite
  SQLAlchemy's text ``YYYY-MM-DD HH:MM:SS.ffffff`` holding UTC, which sorts chronologically).
- text: ``nvarchar``/``nvarchar(max)`` on SQL Server, so unicode survives; ``varchar``/``text``
  elsewhere (both UTF-8 there).
- ``interaction_id``: UUID text ``nvarchar(36)`` rather than ``uniqueidentifier``, so the key
  reads back as the same lowercase string on every dialect.
- ``cost_usd``: ``numeric(12,6)``; SQLite has no decimal type and stores it as a REAL, which
  SQLAlchemy's ``Numeric(12, 6)`` reads back as a ``Decimal`` with six places.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mssql, postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateIndex, CreateTable

INTERACTIONS = "llm_interactions"
METADATA = "metadata"
LOGS = "logs"
TABLE_NAMES: tuple[str, ...] = (INTERACTIONS, METADATA, LOGS)

# One UTC instant with microseconds on every dialect (see the module docstring).
UtcDateTime = sa.DateTime(timezone=True).with_variant(mssql.DATETIME2(precision=6), "mssql")
# Unbounded unicode text: NVARCHAR(max) on SQL Server (plain UnicodeText gives deprecated NTEXT).
LongText = sa.UnicodeText().with_variant(mssql.NVARCHAR(), "mssql")
# `timestamp` is a type name in T-SQL and PostgreSQL: always quoted, so no statement trips on it.
TIMESTAMP_COLUMN = sa.quoted_name("timestamp", quote=True)


def _build_metadata() -> sa.MetaData:
    metadata = sa.MetaData()
    sa.Table(
        INTERACTIONS,
        metadata,
        sa.Column("interaction_id", sa.Unicode(36), nullable=False),
        sa.Column(TIMESTAMP_COLUMN, UtcDateTime, nullable=False),
        sa.Column("model_name", sa.Unicode(64)),
        sa.Column("latency_ms", sa.Integer),
        sa.Column("prompt", LongText),
        sa.Column("response", LongText),
        sa.Column("prompt_tokens", sa.Integer),
        sa.Column("completion_tokens", sa.Integer),
        sa.Column("status", sa.Unicode(16)),
        sa.Column("error_message", LongText),
        sa.Column("user_id", sa.Unicode(64)),
        sa.Column("session_id", sa.Unicode(64)),
        sa.Column("cost_usd", sa.Numeric(12, 6)),
        sa.Column("last_modified", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("interaction_id", name="pk_llm_interactions"),
        sa.Index("ix_llm_interactions_timestamp", TIMESTAMP_COLUMN),
        sa.Index("ix_llm_interactions_last_modified", "last_modified"),
    )
    sa.Table(
        METADATA,
        metadata,
        sa.Column("metadata_id", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("interaction_id", sa.Unicode(36)),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("attributes", LongText),  # JSON object text; NULL allowed
        sa.Column("last_modified", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("metadata_id", name="pk_metadata"),
        sa.Index("ix_metadata_created_at", "created_at"),
        sa.Index("ix_metadata_last_modified", "last_modified"),
    )
    sa.Table(
        LOGS,
        metadata,
        sa.Column("log_id", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("interaction_id", sa.Unicode(36)),  # NULL for logs not tied to a request
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("level", sa.Unicode(16)),
        sa.Column("message", LongText),
        sa.Column("last_modified", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("log_id", name="pk_logs"),
        sa.Index("ix_logs_created_at", "created_at"),
        sa.Index("ix_logs_last_modified", "last_modified"),
    )
    return metadata


REFERENCE_METADATA: sa.MetaData = _build_metadata()


def reference_metadata() -> sa.MetaData:
    """A fresh copy of the reference schema, for callers that want to attach or alter tables."""
    return _build_metadata()


def reference_table(name: str) -> sa.Table:
    """One table of :data:`REFERENCE_METADATA`: ``llm_interactions``, ``metadata`` or ``logs``."""
    return REFERENCE_METADATA.tables[name]


_DIALECTS: dict[str, Dialect] = {
    "postgresql": postgresql.dialect(),
    "sqlite": sqlite.dialect(),
    "mssql": mssql.dialect(),
}


def ddl_script(dialect_name: str) -> str:
    """The reference schema as an idempotent SQL script for ``postgresql``, ``sqlite`` or ``mssql``.

    Compiled from :data:`REFERENCE_METADATA`, so the committed ``sql/source_<dialect>.sql`` files
    cannot drift from it (a test regenerates and compares them). Running a script twice is
    harmless: PostgreSQL and SQLite use ``IF NOT EXISTS``; T-SQL has no such clause for tables
    and indexes, so the SQL Server script guards each statement with ``OBJECT_ID``/``sys.indexes``.
    """
    try:
        dialect = _DIALECTS[dialect_name]
    except KeyError:
        raise ValueError(
            f"no DDL for dialect {dialect_name!r}; one of {sorted(_DIALECTS)}"
        ) from None

    header = (
        f"-- Reference source schema of llm-observatory (the tables it migrates), {dialect_name}.\n"
        "-- Generated from llm_observatory/synthetic/schema.py by\n"
        f"--   python -m llm_observatory.synthetic --write-ddl sql/\n"
        "-- Do not edit by hand: edit schema.py and regenerate. Idempotent: safe to run again.\n"
    )
    statements: list[str] = []
    for table in (REFERENCE_METADATA.tables[name] for name in TABLE_NAMES):
        indexes = sorted(table.indexes, key=lambda index: index.name or "")
        if dialect_name == "mssql":
            create = str(CreateTable(table).compile(dialect=dialect)).strip()
            statements.append(
                f"IF OBJECT_ID(N'{table.name}', N'U') IS NULL\nBEGIN\n{create};\nEND;\nGO"
            )
            for index in indexes:
                create_index = str(CreateIndex(index).compile(dialect=dialect)).strip()
                statements.append(
                    "IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = "
                    f"N'{index.name}' AND object_id = OBJECT_ID(N'{table.name}'))\n"
                    f"    {create_index};\nGO"
                )
        else:
            create = str(CreateTable(table, if_not_exists=True).compile(dialect=dialect)).strip()
            statements.append(f"{create};")
            statements.extend(
                str(CreateIndex(index, if_not_exists=True).compile(dialect=dialect)).strip() + ";"
                for index in indexes
            )
    body = "\n\n".join(statements).replace("\t", "    ")
    return header + "\n" + "\n".join(line.rstrip() for line in body.splitlines()) + "\n"
