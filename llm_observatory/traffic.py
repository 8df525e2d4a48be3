"""What crosses the link between the data centre and Azure, per topology: the model `plan` prints.

Every byte the pipeline moves is one named line below (`TERMS`): what it is, its direction
(`up`: data centre -> Azure, `down`: Azure -> data centre), what it is proportional to, by how
much, and at which stage it runs. A topology only decides which stages sit on the far side of
the link:

- **worker on-premises** (beside the source): reading rows is local; every upload to ADLS and
  every read back from it crosses (the bronze, silver, gold and check steps, the report).
- **worker in Azure**: the rows cross once, uncompressed, over the source's protocol (TDS for
  SQL Server: about the source's row bytes); lake traffic stays inside Azure.
- **split**: the bronze step runs on-premises (its upload, its read-back and its Delta log
  reads cross), silver, gold, the checks and the report run in Azure from bronze.

The factors were measured on this code on 2026-12-04 (commit 4c5a7e1): one day of the
synthetic source (20,000 interactions, 78,442 rows over three tables, 6.8 MB of bronze), a
backfill then the report into Azurite started with its debug log, the in-process executor so
that every request falls inside one step; uploads are the PUT bodies (Content-Length), downloads
the GET responses and listings, attributed to the step running at the time. Stored: 6.82 MB of
bronze, 7.65 MB of silver and quarantine, 3.8 KB of gold. Moved by the backfill: 14.7 MB up,
111.2 MB down (7.7 bytes down per byte stored); by the report: 20.3 MB down (1.4x the lake).
Byte terms are whole-file reads per byte stored, the 64 KiB footer read of each file opened
apart (each step reads a file whole a whole number of times: the read-back once, the checksum
check once, silver's other checks three times, ...); per table-day
terms (Delta log, evidence, listings, footers) are the bytes measured divided by the three
table-days: they depend on the files a day has (silver/llm_interactions: one per model and
hour), not on its rows. Since then a day is one pass (assets/migration.py): silver and gold
are written from the source stream, so the 2.0 reads of bronze that built silver and the 0.9
read of silver that built gold are gone from the model. Since then too (same day, Azurite): the
checks of a freshly written day use the profile the pass recorded with its commit
(checks/day_profile.py) instead of reading silver three times and bronze once more, and a
file's row count reads its last 16 KiB, not 64 KiB (the footer is 3 KiB). Since 2026-12-05 the
spot check reads only the row groups of bronze its seeded sample falls in (1/32 of a day's
groups, at least one, and a neighbour when a sampled row sits at a group's edge), no longer the
whole day, and a read of part of a file fetches only its column chunks (adlfs read 50 MiB
ahead of every miss): measured on a 100k-row day, the backfill read back 0.19 bytes per byte
stored, down from 0.58. `llm_observatory_tests/test_traffic.py` runs such a backfill on
Azurite and holds the model to what it moved: when code changes what a step reads, change its
line here.
"""

from __future__ import annotations

from dataclasses import dataclass

UP = "up"  # data centre -> Azure
DOWN = "down"  # Azure -> data centre

# Stages: where each line runs.
SOURCE = "source"  # reading the rows from the source database
BRONZE = "bronze"  # the bronze step: writing and verifying bronze
LAKE = "lake"  # silver, quarantine, gold, the checks and the report

ON_PREMISES = "worker on-premises"
IN_AZURE = "worker in Azure"
SPLIT = "split (bronze on-premises, silver and gold in Azure)"
TOPOLOGIES = {
    ON_PREMISES: frozenset({BRONZE, LAKE}),
    IN_AZURE: frozenset({SOURCE}),
    SPLIT: frozenset({BRONZE}),
}

# Layer sizes, per byte of bronze (measured 2026-12-04, see the module's docstring).
SILVER_PER_BRONZE = 1.123  # silver + quarantine (llm_interactions split by model and hour)
GOLD_PER_BRONZE = 0.00056
# TDS carries each value as the source stores it (nvarchar as UTF-16), uncompressed.
TDS_BYTES_PER_SOURCE_BYTE = 1.0
# Each file written to ADLS is read back whole to verify its SHA-256 (io/delta_lake.py), and the
# checksum checks read every file of the day whole again (checks/checksums.py).
READ_BACK_READS = 1.0
CHECKSUM_CHECK_READS = 1.0


@dataclass(frozen=True)
class Term:
    """One line of traffic: `factor` x its `basis` bytes, in `direction`, run at `stage`.

    `verification` marks the lines that exist only to prove the lake holds what was written
    (read-back, checksum re-reads, the report's re-read): checking at upload replaces them.
    """

    name: str
    direction: str
    basis: str  # source | bronze | silver | gold | silver_gold | lake | table_days | once
    factor: float
    stage: str
    verification: bool = False


TERMS: tuple[Term, ...] = (
    Term("rows over the source protocol", UP, "source", TDS_BYTES_PER_SOURCE_BYTE, SOURCE),
    # The bronze step.
    Term("bronze upload", UP, "bronze", 1.0, BRONZE),
    Term("Delta log and evidence writes (bronze)", UP, "table_days", 11_300, BRONZE),
    Term("read-back verification (bronze)", DOWN, "bronze", READ_BACK_READS, BRONZE, True),
    Term("Delta log reads (bronze step)", DOWN, "table_days", 51_300, BRONZE),
    Term("Parquet footers (bronze step)", DOWN, "table_days", 16_384, BRONZE),
    # Silver, quarantine, gold and every check of the day.
    Term("silver and quarantine upload", UP, "silver", 1.0, LAKE),
    Term("gold upload", UP, "gold", 1.0, LAKE),
    Term("Delta log and evidence writes (silver, gold)", UP, "table_days", 70_500, LAKE),
    Term(
        "read-back verification (silver, quarantine, gold)",
        DOWN,
        "silver_gold",
        READ_BACK_READS,
        LAKE,
        True,
    ),
    Term("checksum check re-reads bronze", DOWN, "bronze", CHECKSUM_CHECK_READS, LAKE, True),
    # SAMPLED_ROW_GROUP_SHARE (1/32) of a large day's row groups, and a neighbour at times; a
    # small day's one or two groups are its whole bronze.
    Term("spot check reads a few row groups of bronze", DOWN, "bronze", 0.05, LAKE),
    Term("checksum check re-reads silver", DOWN, "silver", CHECKSUM_CHECK_READS, LAKE, True),
    Term(
        "Delta log and evidence reads (silver, gold, checks)", DOWN, "table_days", 1_083_000, LAKE
    ),
    Term("Delta log listings", DOWN, "table_days", 81_000, LAKE),
    Term("Parquet footers (16 KiB per file counted)", DOWN, "table_days", 800_000, LAKE),
    # The cutover report, once at the end.
    Term("report files", UP, "once", 27_800, LAKE),
    Term("report re-reads the lake", DOWN, "lake", 1.09, LAKE, True),
    Term("report's Delta log, evidence and listing reads", DOWN, "table_days", 299_000, LAKE),
    Term("report's Parquet footers", DOWN, "table_days", 1_201_000, LAKE, True),
)


@dataclass
class Line:
    name: str
    direction: str
    bytes: int
    crosses: bool
    verification: bool


@dataclass
class Topology:
    name: str
    up_bytes: int
    down_bytes: int
    network_hours: float
    hours: float  # the slowest of the link, the source streams and the workers
    limited_by: str
    lines: list[Line]


def layer_bytes(source_bytes: float, bronze_bytes: float, table_days: int) -> dict[str, float]:
    """The bases the terms multiply, from the source's bytes and bronze's (estimated) bytes."""
    silver = bronze_bytes * SILVER_PER_BRONZE
    gold = bronze_bytes * GOLD_PER_BRONZE
    return {
        "source": source_bytes,
        "bronze": bronze_bytes,
        "silver": silver,
        "gold": gold,
        "silver_gold": silver + gold,
        "lake": bronze_bytes + silver + gold,
        "table_days": table_days,
        "once": 1,
    }


def topologies(
    bases: dict[str, float],
    bandwidth_mbps: float,
    source_hours: float,
    worker_hours: float,
) -> list[Topology]:
    """Each topology's bytes per direction and hours; the link is taken as full duplex (each
    direction has `bandwidth_mbps`), so the busier direction sets its time."""
    bytes_per_s = bandwidth_mbps * 1_000_000 / 8
    found = []
    for name, far_stages in TOPOLOGIES.items():
        lines = [
            Line(
                term.name,
                term.direction,
                int(round(term.factor * bases[term.basis])),
                term.stage in far_stages,
                term.verification,
            )
            for term in TERMS
        ]
        up = sum(line.bytes for line in lines if line.crosses and line.direction == UP)
        down = sum(line.bytes for line in lines if line.crosses and line.direction == DOWN)
        network_hours = max(up, down) / bytes_per_s / 3600
        limits = {
            "link": network_hours,
            "source streams": source_hours,
            "workers": worker_hours,
        }
        limited_by = max(limits, key=limits.get)
        found.append(Topology(name, up, down, network_hours, limits[limited_by], limited_by, lines))
    return found


def fastest(found: list[Topology]) -> Topology:
    return min(found, key=lambda topology: (topology.hours, topology.network_hours))
