"""The lake's layout is declared once (`layout.py`): every list of lake tables, asset key and
path the cycle, rollback, compaction and the jobs use comes from it."""

import dagster as dg

from llm_observatory.definitions import defs
from llm_observatory.layout import (
    DAILY_METRICS_KEY,
    UnknownLakeTableError,
    asset_key_of,
    bronze_location,
    lake_locations,
    lake_tables,
    lake_tables_of,
    select_tables,
)
from llm_observatory.resources.lake import LakeResource
from llm_observatory.tables import LLM_INTERACTIONS, TABLES, TableSpec


def _lake(tmp_path) -> LakeResource:
    return LakeResource(url=str(tmp_path / "lake"))


def test_the_lake_tables_are_the_contracts_layout(tmp_path):
    names = set(lake_tables(_lake(tmp_path)))
    expected = {"gold/daily_metrics"}
    for table in ("llm_interactions", "metadata", "logs"):
        expected |= {
            f"bronze/{table}",
            f"silver/{table}",
            f"silver/_quarantine/{table}",
            f"silver/_deleted/{table}",
        }
    assert names == expected


def test_the_layouts_asset_keys_are_the_definitions_lake_assets(tmp_path):
    lake_keys = {
        t.asset_key for t in lake_tables(_lake(tmp_path)).values() if t.asset_key is not None
    }
    defined = set(defs.resolve_asset_graph().get_all_asset_keys())
    layers = {"bronze", "silver"}
    defined_lake = {key for key in defined if key.path[0] in layers or key == DAILY_METRICS_KEY}
    assert lake_keys == defined_lake
    # Quarantine and the deleted keys are tables, not assets: observations skip them.
    assert asset_key_of("silver/_quarantine/logs") is None
    assert asset_key_of("silver/_deleted/logs") is None
    assert asset_key_of("bronze/logs") == dg.AssetKey(["bronze", "logs"])
    assert asset_key_of("gold/daily_metrics") == DAILY_METRICS_KEY


def test_a_fourth_table_gets_every_layer_from_its_spec_alone(tmp_path):
    lake = _lake(tmp_path)
    events = TableSpec(name="events", key="event_id", event_time="created_at")
    tables = lake_tables_of(lake, events)
    assert {t.name for t in tables.values()} == {
        "bronze/events",
        "silver/events",
        "silver/_quarantine/events",
        "silver/_deleted/events",
    }
    assert tables["bronze"].location.uri == bronze_location(lake, events).uri
    assert tables["silver"].asset_key == dg.AssetKey(["silver", "events"])
    # Only the tables that feed gold's metrics reach gold.
    assert "gold" in lake_locations(lake, LLM_INTERACTIONS)
    assert [t.name for t in TABLES if t.feeds_daily_metrics] == ["llm_interactions"]


def test_tables_are_selected_by_lake_name_or_source_name(tmp_path):
    lake = _lake(tmp_path)
    assert [t.name for t in select_tables(lake, ["silver/logs"])] == ["silver/logs"]
    names = {t.name for t in select_tables(lake, ["llm_interactions"])}
    assert "gold/daily_metrics" in names and "silver/_deleted/llm_interactions" in names
    try:
        select_tables(lake, ["silver/nope"])
    except UnknownLakeTableError as error:
        assert "unknown table 'silver/nope'" in str(error)
    else:
        raise AssertionError("an unknown table name was accepted")
