"""One writer per day of a table: the assets that write a day hold its lease while they read
and commit it.

A second run over the same day (two terminals, a UI backfill beside a CLI one, a backfill
beside a sync that rewrites the day) is refused at once with the holder's name instead of
committing over the first: two overwrites of one partition built from different reads could
otherwise both land and leave keys twice. A command that leased every day up front (the CLI's
`backfill`) hands its token to its runs, whose steps then share its leases.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator

import dagster as dg

from llm_observatory.resources.control import ControlDatabase
from llm_observatory.resources.leases import (
    LEASE_TOKEN_TAG,
    LeaseHeldError,
    Leases,
    day_resource,
)


@contextlib.contextmanager
def day_lease(
    context: dg.AssetExecutionContext, control: ControlDatabase, table_name: str, day: dt.date
) -> Iterator[Leases]:
    """Holds the lease of `table_name`'s `day` for the block; refuses the step at once if
    another run holds it."""
    owner = f"run {context.run_id} ({context.job_name})"
    leases = Leases(control, owner, token=context.run.tags.get(LEASE_TOKEN_TAG))
    with leases:
        try:
            leases.take([day_resource(table_name, day)])
        except LeaseHeldError as error:
            raise dg.Failure(
                description=(
                    f"{table_name} {day.isoformat()}: another run is writing this day, nothing "
                    f"was changed: {error}"
                ),
                allow_retries=False,
            ) from None
        yield leases
