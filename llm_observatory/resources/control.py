"""The control database: the migration's own bookkeeping, separate from source and lake.

It holds `migration_watermark` (CONTRACT §6): one row per incremental cycle and table, with the
migration guide's columns. Incremental loads read the latest COMPLETED row; a failed cycle leaves
it where it was.
"""

from __future__ import annotations

import dagster as dg
import sqlalchemy as sa
from pydantic import PrivateAttr

control_metadata = sa.MetaData()

migration_watermark = sa.Table(
    "migration_watermark",
    control_metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("table_name", sa.String(128), nullable=False),
    sa.Column("last_extracted_timestamp", sa.DateTime(timezone=True)),
    sa.Column("last_modified_timestamp", sa.DateTime(timezone=True)),
    sa.Column("extraction_start_time", sa.DateTime(timezone=True)),
    sa.Column("extraction_end_time", sa.DateTime(timezone=True)),
    sa.Column("rows_extracted", sa.BigInteger),
    sa.Column("rows_validated", sa.BigInteger),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error_message", sa.Text),
    sa.Index("ix_migration_watermark_table_status", "table_name", "status"),
)


class ControlDatabase(dg.ConfigurableResource):
    """Where watermarks live; SQLite under LLM_OBS_HOME by default, any SQLAlchemy URL."""

    url: str

    _engine: sa.Engine | None = PrivateAttr(default=None)

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = sa.create_engine(self.url)
        return self._engine

    def ensure_schema(self) -> None:
        """Creates the control tables if missing (idempotent)."""
        control_metadata.create_all(self.engine, checkfirst=True)

    def completed_watermark(self, table_name: str):
        """The watermark in force: the latest COMPLETED row of the table, or None."""
        query = (
            sa.select(migration_watermark)
            .where(
                migration_watermark.c.table_name == sa.bindparam("table_name", table_name),
                migration_watermark.c.status == "COMPLETED",
            )
            .order_by(migration_watermark.c.id.desc())
            .limit(1)
        )
        with self.engine.connect() as connection:
            return connection.execute(query).mappings().first()
