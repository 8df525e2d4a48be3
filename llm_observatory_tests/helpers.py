"""Small pieces several test modules share."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg

from llm_observatory.assets.migration import migration_asset, migration_assets
from llm_observatory.checks.factory import integrity_checks
from llm_observatory.layout import silver_key
from llm_observatory.resources.control import ControlDatabase
from llm_observatory.resources.lake import LakeResource
from llm_observatory.resources.source import SourceDatabase
from llm_observatory.synthetic.generator import DefectRates, generate_source


def control_beside(lake: LakeResource, folder: Path | str | None = None) -> ControlDatabase:
    """A SQLite control database (watermarks, leases) in `folder`, by default beside a local
    lake's root folder."""
    where = Path(folder) if folder is not None else Path(lake.url).parent
    return ControlDatabase(url=f"sqlite:///{where / 'control.sqlite'}")


def migrate_clean_day(
    source_url: str, lake: LakeResource, control: ControlDatabase, day: dt.date
) -> tuple[SourceDatabase, dg.DagsterInstance]:
    """One clean day (300 interactions) generated at `source_url` and migrated with every
    check, in an instance that keeps the results; every check passed."""
    generate_source(
        source_url,
        start_date=day,
        days=1,
        rows_per_day=300,
        seed=5,
        defects=DefectRates(missing_hour=None),
    )
    source = SourceDatabase(url=source_url)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [*migration_assets, *integrity_checks],
        partition_key=day.isoformat(),
        resources={"source": source, "lake": lake, "control": control},
        instance=instance,
    )
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    return source, instance


def materialize_silver_alone(table, day: dt.date, lake: LakeResource, control: ControlDatabase):
    """A repair of silver alone, as a UI backfill of only silver runs it: from bronze in the
    lake. The source resource is declared by the table's step but never queried here (an
    in-memory SQLite stands in, as any unreachable source would)."""
    return dg.materialize(
        [migration_asset(table)],
        selection=[silver_key(table)],
        partition_key=day.isoformat(),
        resources={"source": SourceDatabase(url="sqlite://"), "lake": lake, "control": control},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
