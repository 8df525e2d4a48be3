"""Deletes and moved rows reach the lake in the next sync, on any day of the history (issue 13).

A source prepared with the departure capture (`install_departure_capture`: the
`migration_departures` table and its triggers) tells a cycle which keys left which day; one
cycle that reconciles no historical day then leaves silver, quarantine, bronze and gold equal to
the source, and `_deleted` lists exactly the keys deleted. Without the capture the cycle says so
and the reconciliation rotation catches the same departures when its slot covers their day.
Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import uuid
from collections import Counter, defaultdict

import pytest
import sqlalchemy as sa

from llm_observatory.incremental import merge
from llm_observatory.incremental.cycle import SyncSettings, repair_days, run_cycle
from llm_observatory.io import delta_lake
from llm_observatory.layout import (
    bronze_location,
    daily_metrics_location,
    deleted_location,
    quarantine_location,
    silver_location,
)
from llm_observatory.operate.departures import purge_departures
from llm_observatory.resources.control import ControlDatabase
from llm_observatory.resources.lake import LakeResource
from llm_observatory.resources.source import SourceDatabase
from llm_observatory.sql_scripts import install_departure_capture
from llm_observatory.synthetic.generator import generate_source
from llm_observatory.tables import LLM_INTERACTIONS, LOGS, METADATA, TABLES, table_spec
from llm_observatory_tests.test_sync import (
    DEFECTS,
    Migration,
    _normal,
    _passes_rules,
    assert_lake_matches_source,
    read_all,
)

START = dt.date(2026, 11, 1)
DAYS = 8
ROWS_PER_DAY = 40
# The cycle under test reconciles only the newest day and never rotates: whatever it does to
# older days, the departures did.
NO_HISTORY_RECONCILED = SyncSettings(
    reconcile_recent_days=1, rotation_period_days=0, first_day=START
)


class History:
    """A source with `DAYS` days, a backfilled lake and a control database."""

    def __init__(self, url: str, folder, capture: bool) -> None:
        generate_source(
            url, start_date=START, days=DAYS, rows_per_day=ROWS_PER_DAY, seed=11, defects=DEFECTS
        )
        self.url = url
        self.engine = sa.create_engine(url)
        if capture:
            install_departure_capture(self.engine)
        self.source = SourceDatabase(url=url)
        self.lake = LakeResource(url=str(folder / "lake"))
        self.control = ControlDatabase(url=f"sqlite:///{folder / 'control.sqlite'}")
        self.meta = sa.MetaData()
        self.meta.reflect(self.engine, only=[table.name for table in TABLES])
        Migration.backfill(self, START, DAYS)

    def cycle(self, table=LLM_INTERACTIONS, settings=NO_HISTORY_RECONCILED):
        return run_cycle(table, self.source, self.lake, self.control, settings)

    def table(self, name: str) -> sa.Table:
        return self.meta.tables[name]

    def execute(self, *statements) -> None:
        with self.engine.begin() as connection:
            for statement in statements:
                connection.execute(statement)

    def rows(self, spec, *where) -> list[dict]:
        table = self.table(spec.name)
        with self.engine.connect() as connection:
            return [
                dict(row) for row in connection.execute(sa.select(table).where(*where)).mappings()
            ]

    def source_rows(self, table_name: str) -> dict:
        """Every source row by key, times in UTC: what `assert_lake_matches_source` reads."""
        spec = table_spec(table_name)
        return {row[spec.key]: _normal(row) for row in self.rows(spec)}

    def keys_on(self, spec, day: dt.date) -> list:
        table = self.table(spec.name)
        event = table.c[spec.event_time]
        begin = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
        if self.engine.dialect.name == "sqlite":
            begin = begin.replace(tzinfo=None)
        query = (
            sa.select(table.c[spec.key])
            .where(event >= begin, event < begin + dt.timedelta(days=1))
            .order_by(table.c[spec.key])
        )
        with self.engine.connect() as connection:
            return connection.execute(query).scalars().all()

    def now(self) -> dt.datetime:
        """The wall clock, as the departure triggers stamp `departed_at`; SQLite stores naive
        UTC."""
        moment = dt.datetime.now(dt.UTC)
        return moment.replace(tzinfo=None) if self.engine.dialect.name == "sqlite" else moment

    def at(self, day: dt.date, hour: int) -> dt.datetime:
        moment = dt.datetime.combine(day, dt.time(hour, 17, 3, 250000), tzinfo=dt.UTC)
        return moment.replace(tzinfo=None) if self.engine.dialect.name == "sqlite" else moment

    def dispose(self) -> None:
        self.engine.dispose()
        self.source.dispose()


def _history(request, tmp_path, capture: bool) -> History:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_url")
    return History(url, tmp_path, capture)


@pytest.fixture(params=["sqlite", "postgresql"])
def captured_history(request, tmp_path):
    history = _history(request, tmp_path, capture=True)
    yield history
    history.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def uncaptured_history(request, tmp_path):
    history = _history(request, tmp_path, capture=False)
    yield history
    history.dispose()


def _lake_keys(location, key: str) -> list:
    try:
        return [row[key] for row in read_all(location)]
    except Exception:  # noqa: BLE001 - a table never written holds nothing
        return []


def assert_gold_counts_the_source(history: History) -> None:
    """Gold's requests per day and model equal a count made here from the source's rows that
    pass the rules (an independent computation: no code of the pipeline involved)."""
    expected: Counter = Counter()
    for row in history.rows(LLM_INTERACTIONS):
        if _passes_rules(row, LLM_INTERACTIONS):
            stamp = row["timestamp"]
            day = (stamp if stamp.tzinfo is None else stamp.astimezone(dt.UTC)).date()
            expected[(day, row["model_name"])] += 1
    gold = read_all(daily_metrics_location(history.lake))
    assert {(row["date"], row["model"]): row["requests"] for row in gold} == dict(expected)


def assert_everything_matches(history: History, deleted: dict[str, set]) -> None:
    for spec in TABLES:
        assert_lake_matches_source(history, spec)
        bronze = _lake_keys(bronze_location(history.lake, spec), spec.key)
        assert not set(deleted[spec.name]) & set(bronze), f"{spec.name}: deleted key in bronze"
        recorded = _lake_keys(deleted_location(history.lake, spec), spec.key)
        assert sorted(recorded, key=str) == sorted(deleted[spec.name], key=str), spec.name
    assert_gold_counts_the_source(history)


def _quarantined_key(history: History, day: dt.date):
    quarantined = [
        row
        for row in read_all(quarantine_location(history.lake, LLM_INTERACTIONS))
        if row["date"] == day
    ]
    assert quarantined, f"the synthetic source quarantines rows on {day}"
    return quarantined[0]["interaction_id"]


def depart_across_the_history(history: History) -> dict[str, set]:
    """Deletes on five historical days (none of the two newest), a row moved to another day,
    a moved model, a deleted quarantined row, a key deleted and inserted again: what a month
    of production does to old rows. Returns the keys deleted per table."""
    rng = random.Random(13)
    interactions = history.table("llm_interactions")
    history_days = [START + dt.timedelta(days=offset) for offset in range(DAYS - 2)]
    deleted: dict[str, set] = defaultdict(set)
    statements = []
    for day in rng.sample(history_days, 5):
        for key in rng.sample(history.keys_on(LLM_INTERACTIONS, day), 3):
            deleted["llm_interactions"].add(key)
    for spec in (METADATA, LOGS):
        for day in rng.sample(history_days, 2):
            deleted[spec.name].add(rng.choice(history.keys_on(spec, day)))
    quarantined = _quarantined_key(history, history_days[1])
    deleted["llm_interactions"].add(quarantined)
    for spec in TABLES:
        table = history.table(spec.name)
        statements.append(
            sa.delete(table).where(table.c[spec.key].in_(sorted(deleted[spec.name], key=str)))
        )

    def survivors(day: dt.date) -> list:
        return [
            key
            for key in history.keys_on(LLM_INTERACTIONS, day)
            if key not in deleted["llm_interactions"]
        ]

    # The moved row's old day is no other change's day: only its departure tells.
    moved_day = survivors(history_days[3])[0]
    moved_model, reinserted = survivors(history_days[2])[:2]
    now = history.now()
    statements.append(
        sa.update(interactions)
        .where(interactions.c.interaction_id == moved_day)
        .values(timestamp=history.at(history_days[0], 9), last_modified=now)
    )
    statements.append(
        sa.update(interactions)
        .where(interactions.c.interaction_id == moved_model)
        .values(model_name="grok", latency_ms=321, status="success", last_modified=now)
    )
    (row,) = history.rows(LLM_INTERACTIONS, interactions.c.interaction_id == reinserted)
    statements.append(sa.delete(interactions).where(interactions.c.interaction_id == reinserted))
    statements.append(
        sa.insert(interactions).values(
            {**row, "prompt": "asked again", "latency_ms": 77, "last_modified": now}
        )
    )
    history.execute(*statements)
    return deleted


def test_one_sync_applies_every_departure_on_any_day(captured_history):
    history = captured_history
    first = history.cycle()
    assert first.departure_capture == "on"
    deleted = depart_across_the_history(history)

    second = history.cycle()
    history_days = {(START + dt.timedelta(days=offset)).isoformat() for offset in range(DAYS)}
    assert not history_days & set(second.days_reconciled), "no historical day reconciled"
    assert second.moved_keys == 1
    assert second.departures_read >= len(deleted["llm_interactions"]) + 2
    assert second.deleted_keys == len(deleted["llm_interactions"])
    for spec in (METADATA, LOGS):
        result = history.cycle(spec)
        assert result.deleted_keys == len(deleted[spec.name]), spec.name
    assert_everything_matches(history, deleted)

    # Re-delivered departures (the overlap re-reads them) change nothing.
    before = {spec.name: len(read_all(silver_location(history.lake, spec))) for spec in TABLES}
    third = history.cycle()
    assert third.deleted_keys == 0 and third.moved_keys == 0 and third.days_changed == []
    assert before["llm_interactions"] == len(
        read_all(silver_location(history.lake, LLM_INTERACTIONS))
    )
    assert_everything_matches(history, deleted)


def test_a_delete_committed_late_behind_the_watermark_is_applied(captured_history):
    """A transaction that deleted a row before a cycle's high-water mark and committed after
    the cycle: its departure is older than the watermark, inside the overlap."""
    history = captured_history
    history.cycle()
    interactions = history.table("llm_interactions")
    victim = history.keys_on(LLM_INTERACTIONS, START + dt.timedelta(days=1))[0]
    other = history.keys_on(LLM_INTERACTIONS, START + dt.timedelta(days=3))[0]
    if history.engine.dialect.name == "postgresql":
        late = history.engine.connect()
        transaction = late.begin()
        late.execute(sa.delete(interactions).where(interactions.c.interaction_id == victim))
        committed = threading.Event()
        try:
            history.execute(
                sa.update(interactions)
                .where(interactions.c.interaction_id == other)
                .values(latency_ms=12, last_modified=history.now())
            )
            middle = history.cycle()
            assert middle.watermark is not None
            transaction.commit()
            committed.set()
        finally:
            if not committed.is_set():
                transaction.rollback()
            late.close()
    else:
        # SQLite has one writer at a time: the late commit is its stamp, set behind the
        # watermark of the cycle that ran before the row was seen deleted.
        history.execute(
            sa.update(interactions)
            .where(interactions.c.interaction_id == other)
            .values(latency_ms=12, last_modified=history.now())
        )
        middle = history.cycle()
        history.execute(sa.delete(interactions).where(interactions.c.interaction_id == victim))
        departures = sa.table("migration_departures", sa.column("departed_at"), sa.column("kind"))
        stamp = (middle.watermark - dt.timedelta(minutes=3)).replace(tzinfo=None)
        history.execute(sa.update(departures).values(departed_at=stamp))
    last = history.cycle()
    assert last.deleted_keys == 1
    assert victim not in _lake_keys(
        silver_location(history.lake, LLM_INTERACTIONS), "interaction_id"
    )
    assert _lake_keys(deleted_location(history.lake, LLM_INTERACTIONS), "interaction_id") == [
        victim
    ]


def test_without_the_capture_the_sync_says_so_and_the_rotation_catches_up(uncaptured_history):
    history = uncaptured_history
    first = history.cycle()
    assert first.departure_capture.startswith("off: ")
    assert "migration_departures" in first.departure_capture
    assert first.to_metadata()["departure_capture"] == first.departure_capture
    interactions = history.table("llm_interactions")
    day = START + dt.timedelta(days=2)
    victim = history.keys_on(LLM_INTERACTIONS, day)[0]
    history.execute(sa.delete(interactions).where(interactions.c.interaction_id == victim))

    blind = history.cycle()
    assert blind.deleted_keys == 0
    assert victim in _lake_keys(silver_location(history.lake, LLM_INTERACTIONS), "interaction_id")

    # The cycle whose rotation slot covers the day: a period that puts it on today's slot (the
    # high-water mark's day), as the 30-day rotation does once a month.
    newest = history.source.latest_change(history.source.describe_table(LLM_INTERACTIONS))
    period = (newest.date() - day).days
    assert period > 1
    rotation = SyncSettings(reconcile_recent_days=1, rotation_period_days=period, first_day=START)
    caught = history.cycle(settings=rotation)
    assert day.isoformat() in caught.days_reconciled
    assert caught.deleted_keys == 1
    assert_everything_matches(
        history, {"llm_interactions": {victim}, "metadata": set(), "logs": set()}
    )


def test_repair_days_applies_a_reconciliation_on_any_range_at_once(uncaptured_history):
    history = uncaptured_history
    interactions = history.table("llm_interactions")
    days = [START + dt.timedelta(days=offset) for offset in (0, 3, 5)]
    victims = {history.keys_on(LLM_INTERACTIONS, day)[1] for day in days}
    history.execute(sa.delete(interactions).where(interactions.c.interaction_id.in_(victims)))
    watermark_before = history.cycle().watermark
    result = repair_days(
        LLM_INTERACTIONS,
        history.source,
        history.lake,
        history.control,
        [START + dt.timedelta(days=offset) for offset in range(DAYS)],
    )
    assert result.deleted_keys == len(victims)
    assert result.watermark == watermark_before
    assert history.control.completed_watermark("llm_interactions").last_extracted_timestamp == (
        watermark_before
    )
    assert_everything_matches(
        history, {"llm_interactions": victims, "metadata": set(), "logs": set()}
    )


def test_a_row_moved_back_and_forth_in_one_window_stays_once_on_its_day(captured_history):
    """Departures are facts about the past; where a key is now is the source's: a row moved to
    another day and back again before a cycle stays, once, on its original day."""
    history = captured_history
    history.cycle()
    interactions = history.table("llm_interactions")
    home = START + dt.timedelta(days=1)
    key = history.keys_on(LLM_INTERACTIONS, home)[5]
    (row,) = history.rows(LLM_INTERACTIONS, interactions.c.interaction_id == key)
    history.execute(
        sa.update(interactions)
        .where(interactions.c.interaction_id == key)
        .values(timestamp=history.at(START + dt.timedelta(days=4), 3), last_modified=history.now())
    )
    history.execute(
        sa.update(interactions)
        .where(interactions.c.interaction_id == key)
        .values(timestamp=row["timestamp"], latency_ms=55, last_modified=history.now())
    )
    result = history.cycle()
    assert result.deleted_keys == 0
    silver = _lake_keys(silver_location(history.lake, LLM_INTERACTIONS), "interaction_id")
    quarantine = _lake_keys(quarantine_location(history.lake, LLM_INTERACTIONS), "interaction_id")
    assert (silver + quarantine).count(key) == 1
    assert_everything_matches(
        history, {"llm_interactions": set(), "metadata": set(), "logs": set()}
    )


def test_a_new_key_is_not_taken_for_a_departure(captured_history):
    """An insert records no departure: a cycle after only inserts reads none."""
    history = captured_history
    history.cycle()
    interactions = history.table("llm_interactions")
    history.execute(
        sa.insert(interactions).values(
            interaction_id=str(uuid.uuid4()),
            timestamp=history.at(START + dt.timedelta(days=2), 4),
            model_name="ollama",
            latency_ms=10,
            status="success",
            last_modified=history.now(),
        )
    )
    result = history.cycle()
    assert result.departures_read == 0 and result.changes.upserted_rows == 1


def test_spent_departures_are_purged_and_none_a_cycle_still_needs(captured_history):
    history = captured_history
    departures = sa.table("migration_departures", sa.column("table_name"), sa.column("key_value"))
    interactions = history.table("llm_interactions")
    first_victim, second_victim = history.keys_on(LLM_INTERACTIONS, START)[:2]
    history.execute(sa.delete(interactions).where(interactions.c.interaction_id == first_victim))
    before_any = purge_departures(history.source, history.control, dt.timedelta(0))
    assert [result.rows_deleted for result in before_any] == [0, 0, 0]
    assert all("no completed sync cycle" in result.skipped for result in before_any)
    # A change after the delete: the watermark passes the first departure.
    history.execute(
        sa.update(interactions)
        .where(interactions.c.interaction_id == history.keys_on(LLM_INTERACTIONS, START)[5])
        .values(latency_ms=5, last_modified=history.now() + dt.timedelta(milliseconds=5))
    )
    history.cycle()
    # Recorded after the watermark: a cycle has still to read it.
    history.execute(sa.delete(interactions).where(interactions.c.interaction_id == second_victim))
    kept = purge_departures(history.source, history.control, dt.timedelta(days=1))
    assert kept[0].rows_deleted == 0, "within the days to keep"
    purged = purge_departures(history.source, history.control, dt.timedelta(0))
    assert [result.rows_deleted for result in purged] == [1, 0, 0]
    with history.engine.connect() as connection:
        left = connection.execute(sa.select(departures.c.key_value)).scalars().all()
    assert left == [str(second_victim)]
    assert history.cycle().deleted_keys == 1


def test_the_files_holding_departed_keys_are_found_by_one_read(captured_history, monkeypatch):
    """The cycle looks the departed keys up in silver and quarantine once (where the lake
    still holds them); the merge takes the files to rewrite from that lookup instead of reading
    every file's key column of those days a second time, and the lake ends as the source."""
    history = captured_history
    history.cycle()
    interactions = history.table("llm_interactions")
    deleted = {spec.name: set() for spec in TABLES}
    for offset in (1, 3, 4):
        for key in history.keys_on(LLM_INTERACTIONS, START + dt.timedelta(days=offset))[:3]:
            deleted["llm_interactions"].add(key)
    deleted["llm_interactions"].add(_quarantined_key(history, START + dt.timedelta(days=2)))
    history.execute(
        sa.delete(interactions).where(
            interactions.c.interaction_id.in_(sorted(deleted["llm_interactions"], key=str))
        )
    )
    reads: list[tuple[str, tuple]] = []
    real_scan = merge.scan_file

    def counting(location, path, columns=None, *args, **kwargs):
        reads.append((location.uri, tuple(columns or ())))
        return real_scan(location, path, columns, *args, **kwargs)

    monkeypatch.setattr(merge, "scan_file", counting)
    opened: list[str] = []
    real_table = delta_lake.DeltaTable

    class Opening(real_table):
        def __init__(self, uri, *args, **kwargs):
            opened.append(uri)
            super().__init__(uri, *args, **kwargs)

    monkeypatch.setattr(delta_lake, "DeltaTable", Opening)
    result = history.cycle()
    monkeypatch.setattr(delta_lake, "DeltaTable", real_table)
    # Each table's log is replayed by the cycle's readers once (then brought up to date), for
    # the read version of each of its two merges (the changes, then the departures) and by the
    # writer that commits: never once per question (silver and quarantine were opened 8 times,
    # gold 4).
    assert max(Counter(opened).values()) <= 4, Counter(opened)
    assert result.deleted_keys == len(deleted["llm_interactions"])
    lake_sides = {
        silver_location(history.lake, LLM_INTERACTIONS).uri,
        quarantine_location(history.lake, LLM_INTERACTIONS).uri,
    }
    looked_up = [uri for uri, columns in reads if uri in lake_sides and len(columns) == 2]
    read_again = [
        uri for uri, columns in reads if uri in lake_sides and columns == (LLM_INTERACTIONS.key,)
    ]
    assert looked_up, "the departures were looked up in silver and quarantine"
    assert read_again == []
    monkeypatch.setattr(merge, "scan_file", real_scan)
    assert_everything_matches(history, deleted)
