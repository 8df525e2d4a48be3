"""The control database: the migration's own bookkeeping, separate from source and lake.

It holds `migration_watermark` (sql/control_*.sql): one row per incremental cycle and table,
with the migration guide's columns. A cycle inserts a STARTED row before it reads anything and
turns it into COMPLETED (with the new watermark) only after the lake holds and has checked every
change; on failure it becomes FAILED with the error. The watermark in force is therefore always
the latest COMPLETED row, and a failed or crashed cycle never moves it. Two columns beyond the
guide's let a later cycle clean up after one that died: the Dagster run that owned the row, and
the lake tables' Delta versions before it wrote anything.

`migration_reconciliation` holds, per table and UTC day, the last time the day was proven equal
to the source by the per-hour fingerprints (silver's `reconciles_with_source` check, a sync
cycle's reconciliation, `llm-observatory verify`): the cutover report reads it to show that the
rotation really re-proves the whole history within its period.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass

import dagster as dg
import sqlalchemy as sa
from pydantic import PrivateAttr
from sqlalchemy.dialects import mssql

STARTED, COMPLETED, FAILED = "STARTED", "COMPLETED", "FAILED"
ERROR_MESSAGE_LIMIT = 4000

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
    sa.Column("run_id", sa.String(64)),
    sa.Column("lake_versions", sa.Text),
    sa.CheckConstraint(
        "status IN ('STARTED', 'COMPLETED', 'FAILED')", name="ck_migration_watermark_status"
    ),
    sa.Index("ix_migration_watermark_table_status", "table_name", "status", "id"),
)

# One row per lease (see `leases.py`): what it guards, who holds it, until when.
migration_lease = sa.Table(
    "migration_lease",
    control_metadata,
    sa.Column("resource", sa.String(256), primary_key=True),
    sa.Column("token", sa.String(64), nullable=False),
    sa.Column("owner", sa.String(256), nullable=False),
    sa.Column("host", sa.String(256), nullable=False),
    sa.Column("pid", sa.BigInteger, nullable=False),
    sa.Column("process_started", sa.Float, nullable=False),
    sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)

# The last reconciliation of each day of each table that matched the source (or was repaired
# until it did): when, how many differences it had found, and what ran it.
migration_reconciliation = sa.Table(
    "migration_reconciliation",
    control_metadata,
    sa.Column("table_name", sa.String(128), nullable=False),
    # SQLAlchemy compiles Date as DATETIME for a SQL Server of unknown version (the scripts).
    sa.Column("day", sa.Date().with_variant(mssql.DATE(), "mssql"), nullable=False),
    sa.Column("reconciled_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("differences", sa.Integer, nullable=False),
    sa.Column("reconciled_by", sa.String(256), nullable=False),
    sa.PrimaryKeyConstraint("table_name", "day", name="pk_migration_reconciliation"),
)
# Days per DELETE ... IN (...): far below SQL Server's 2,100 parameters and SQLite's 999.
_DAYS_PER_STATEMENT = 500


def as_utc(moment) -> dt.datetime | None:
    """Control and source databases hand back naive UTC (SQLite) or aware values; always aware."""
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = dt.datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


@dataclass(frozen=True)
class WatermarkRow:
    id: int
    table_name: str
    status: str
    last_extracted_timestamp: dt.datetime | None
    last_modified_timestamp: dt.datetime | None
    extraction_start_time: dt.datetime | None
    extraction_end_time: dt.datetime | None
    rows_extracted: int | None
    rows_validated: int | None
    error_message: str | None
    run_id: str | None
    lake_versions: dict

    @classmethod
    def from_mapping(cls, row) -> WatermarkRow:
        return cls(
            id=row["id"],
            table_name=row["table_name"],
            status=row["status"],
            last_extracted_timestamp=as_utc(row["last_extracted_timestamp"]),
            last_modified_timestamp=as_utc(row["last_modified_timestamp"]),
            extraction_start_time=as_utc(row["extraction_start_time"]),
            extraction_end_time=as_utc(row["extraction_end_time"]),
            rows_extracted=row["rows_extracted"],
            rows_validated=row["rows_validated"],
            error_message=row["error_message"],
            run_id=row["run_id"],
            lake_versions=json.loads(row["lake_versions"]) if row["lake_versions"] else {},
        )


def _bind(moment: dt.datetime | None) -> dt.datetime | None:
    return None if moment is None else moment.astimezone(dt.UTC)


def _as_day(value) -> dt.date:
    """A DATE as the driver returns it (a date, a datetime on some drivers, text on SQLite)."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, str):
        return dt.date.fromisoformat(value[:10])
    return value


class ControlDatabase(dg.ConfigurableResource):
    """Where watermarks and leases live; SQLite under LLM_OBS_HOME by default, any SQLAlchemy
    URL. `lease_seconds`: how long a lease outlives its holder's last heartbeat."""

    url: str
    lease_seconds: int = 300

    _engine: sa.Engine | None = PrivateAttr(default=None)
    _schema_ready: bool = PrivateAttr(default=False)

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = sa.create_engine(self.url)
        return self._engine

    def ensure_schema(self) -> None:
        """Creates the control tables if missing (idempotent); `sql/control_*.sql` is the same
        DDL for a DBA to apply, with the guide's stored procedure."""
        if not self._schema_ready:
            try:
                control_metadata.create_all(self.engine, checkfirst=True)
            except sa.exc.DatabaseError:
                # Another process created a table between the check and the CREATE.
                control_metadata.create_all(self.engine, checkfirst=True)
            self._schema_ready = True

    def _latest(self, table_name: str, *conditions) -> WatermarkRow | None:
        self.ensure_schema()
        query = (
            sa.select(migration_watermark)
            .where(
                migration_watermark.c.table_name == sa.bindparam("table_name", table_name),
                *conditions,
            )
            .order_by(migration_watermark.c.id.desc())
            .limit(1)
        )
        with self.engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        return WatermarkRow.from_mapping(row) if row else None

    def completed_watermark(
        self, table_name: str, at_or_before: dt.datetime | None = None
    ) -> WatermarkRow | None:
        """The watermark in force: the latest COMPLETED row of the table, or None; with
        `at_or_before`, the one that was in force at that moment."""
        conditions = [migration_watermark.c.status == COMPLETED]
        if at_or_before is not None:
            conditions.append(
                migration_watermark.c.extraction_end_time
                <= sa.bindparam(
                    "at_or_before",
                    _bind(at_or_before),
                    type_=migration_watermark.c.extraction_end_time.type,
                )
            )
        return self._latest(table_name, *conditions)

    def rewind_watermark(self, table_name: str, watermark: dt.datetime | None, note: str) -> int:
        """Puts an earlier watermark in force (after a lake rollback): a COMPLETED row of its
        own, with the reason in `error_message`, so the audit trail keeps every cycle."""
        self.ensure_schema()
        moment = dt.datetime.now(dt.UTC)
        statement = sa.insert(migration_watermark).values(
            table_name=table_name,
            last_extracted_timestamp=_bind(watermark),
            extraction_start_time=moment,
            extraction_end_time=moment,
            rows_extracted=0,
            rows_validated=0,
            status=COMPLETED,
            error_message=note[:ERROR_MESSAGE_LIMIT],
        )
        with self.engine.begin() as connection:
            return int(connection.execute(statement).inserted_primary_key[0])

    def cycle_status(self, cycle_id: int) -> str | None:
        """The status of one cycle's row as the database holds it now."""
        self.ensure_schema()
        query = sa.select(migration_watermark.c.status).where(
            migration_watermark.c.id == sa.bindparam("cycle_id", cycle_id)
        )
        with self.engine.connect() as connection:
            return connection.execute(query).scalar()

    def latest_cycle(self, table_name: str) -> WatermarkRow | None:
        return self._latest(table_name)

    def open_cycles(self, table_name: str) -> list[WatermarkRow]:
        """STARTED rows never finished: a cycle running now, or one whose process died."""
        self.ensure_schema()
        query = (
            sa.select(migration_watermark)
            .where(
                migration_watermark.c.table_name == sa.bindparam("table_name", table_name),
                migration_watermark.c.status == STARTED,
            )
            .order_by(migration_watermark.c.id)
        )
        with self.engine.connect() as connection:
            return [WatermarkRow.from_mapping(row) for row in connection.execute(query).mappings()]

    def cycles(self, table_name: str | None = None, limit: int = 100) -> list[WatermarkRow]:
        """The newest cycles first, of one table or all."""
        self.ensure_schema()
        query = sa.select(migration_watermark).order_by(migration_watermark.c.id.desc())
        if table_name is not None:
            query = query.where(
                migration_watermark.c.table_name == sa.bindparam("table_name", table_name)
            )
        query = query.limit(limit)
        with self.engine.connect() as connection:
            return [WatermarkRow.from_mapping(row) for row in connection.execute(query).mappings()]

    def start_cycle(
        self,
        table_name: str,
        watermark: dt.datetime | None,
        run_id: str | None,
        lake_versions: dict[str, int | None],
    ) -> int:
        """Records a STARTED row (the guide's first `usp_update_watermark` call); returns its id."""
        self.ensure_schema()
        statement = sa.insert(migration_watermark).values(
            table_name=table_name,
            last_extracted_timestamp=_bind(watermark),
            extraction_start_time=dt.datetime.now(dt.UTC),
            status=STARTED,
            run_id=run_id,
            lake_versions=json.dumps(lake_versions, sort_keys=True),
        )
        with self.engine.begin() as connection:
            return int(connection.execute(statement).inserted_primary_key[0])

    def _finish(self, cycle_id: int, **values) -> None:
        statement = (
            sa.update(migration_watermark)
            .where(
                migration_watermark.c.id == sa.bindparam("cycle_id", cycle_id),
                migration_watermark.c.status == STARTED,
            )
            .values(extraction_end_time=dt.datetime.now(dt.UTC), **values)
        )
        with self.engine.begin() as connection:
            updated = connection.execute(statement).rowcount
        if updated != 1:
            raise RuntimeError(f"watermark row {cycle_id} is not STARTED any more")

    def complete_cycle(
        self,
        cycle_id: int,
        high_water: dt.datetime | None,
        last_modified: dt.datetime | None,
        rows_extracted: int,
        rows_validated: int,
    ) -> None:
        """Moves the watermark: the one statement that makes a cycle's work count."""
        self._finish(
            cycle_id,
            status=COMPLETED,
            last_extracted_timestamp=_bind(high_water),
            last_modified_timestamp=_bind(last_modified),
            rows_extracted=rows_extracted,
            rows_validated=rows_validated,
        )

    def fail_cycle(self, cycle_id: int, error: str, rows_extracted: int | None = None) -> None:
        self._finish(
            cycle_id,
            status=FAILED,
            error_message=error[:ERROR_MESSAGE_LIMIT],
            rows_extracted=rows_extracted,
        )

    def record_reconciled(
        self,
        table_name: str,
        results: Mapping[dt.date, int],
        by: str,
        at: dt.datetime | None = None,
    ) -> None:
        """Records that each day of `results` was reconciled `at` (now by default) by `by`,
        with the number of differences found (0: it matched; more: they were repaired). The
        caller passes only days that matched or were repaired. Each day keeps its last
        reconciliation: delete then insert, all days in one transaction (portable where MERGE
        and ON CONFLICT are not); a concurrent recorder of the same day makes the insert fail
        on the key, and the whole transaction is tried again."""
        if not results:
            return
        self.ensure_schema()
        moment = as_utc(at) or dt.datetime.now(dt.UTC)
        days = sorted(results)
        rows = [
            {
                "table_name": table_name,
                "day": day,
                "reconciled_at": moment,
                "differences": int(results[day]),
                "reconciled_by": by[: migration_reconciliation.c.reconciled_by.type.length],
            }
            for day in days
        ]
        table = migration_reconciliation
        delete = sa.delete(table).where(
            table.c.table_name == sa.bindparam("table_name", table_name),
            table.c.day.in_(sa.bindparam("days", expanding=True)),
        )
        for attempt in range(3):
            try:
                with self.engine.begin() as connection:
                    for start in range(0, len(days), _DAYS_PER_STATEMENT):
                        chunk = days[start : start + _DAYS_PER_STATEMENT]
                        connection.execute(delete, {"days": chunk})
                    connection.execute(sa.insert(table), rows)
                return
            except sa.exc.IntegrityError:
                if attempt == 2:
                    raise

    def last_reconciled(self, table_name: str) -> dict[dt.date, dt.datetime]:
        """When each recorded day of the table was last reconciled (aware, UTC)."""
        self.ensure_schema()
        table = migration_reconciliation
        query = sa.select(table.c.day, table.c.reconciled_at).where(
            table.c.table_name == sa.bindparam("table_name", table_name)
        )
        with self.engine.connect() as connection:
            return {
                _as_day(day): as_utc(reconciled_at)
                for day, reconciled_at in connection.execute(query)
            }
