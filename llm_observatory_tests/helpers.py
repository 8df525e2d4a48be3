"""Small pieces several test modules share."""

from __future__ import annotations

from pathlib import Path

from llm_observatory.resources.control import ControlDatabase
from llm_observatory.resources.lake import LakeResource


def control_beside(lake: LakeResource, folder: Path | str | None = None) -> ControlDatabase:
    """A SQLite control database (watermarks, leases) in `folder`, by default beside a local
    lake's root folder."""
    where = Path(folder) if folder is not None else Path(lake.url).parent
    return ControlDatabase(url=f"sqlite:///{where / 'control.sqlite'}")
