"""The test services are real: PostgreSQL round-trips what the source tables hold, and Azurite
takes delta-rs commits past version 1 (the pinned Azurite 3.37+, not npm's 3.35 default, which
fails there with `Invalid table version: 1`)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa

from llm_observatory_tests.services import AzuriteServer, PostgresServer

REPO_ROOT = Path(__file__).resolve().parents[1]
UNICODE_TEXT = "Grüße, 日本語, emoji 🚀, RTL עברית, NUL-free\ttabs\nand newlines"


# ---------------------------------------------------------------------------------- PostgreSQL


def test_postgres_round_trips_unicode_and_numeric(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "CREATE TABLE llm_interactions ("
                    " interaction_id text PRIMARY KEY, response text, cost_usd numeric(12,6))"
                )
            )
            conn.execute(
                sa.text("INSERT INTO llm_interactions VALUES (:id, :response, :cost)"),
                [
                    {"id": "a", "response": UNICODE_TEXT, "cost": Decimal("123456.123456")},
                    {"id": "b", "response": "x" * 1_000_000, "cost": Decimal("0.000001")},
                ],
            )
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT interaction_id, response, cost_usd FROM llm_interactions"
                    " ORDER BY interaction_id"
                )
            ).all()
            encoding = conn.execute(sa.text("SHOW server_encoding")).scalar_one()
    finally:
        engine.dispose()
    assert encoding == "UTF8"
    assert rows[0] == ("a", UNICODE_TEXT, Decimal("123456.123456"))
    assert rows[1][1] == "x" * 1_000_000 and rows[1][2] == Decimal("0.000001")
    assert isinstance(rows[0][2], Decimal)


def test_postgres_databases_are_fresh_and_separate(postgres_server: PostgresServer) -> None:
    first = postgres_server.create_database()
    second = postgres_server.create_database("explicitly_named_db")
    assert second == (
        f"postgresql+psycopg://postgres@127.0.0.1:{postgres_server.port}/explicitly_named_db"
    )
    engine = sa.create_engine(first)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE only_in_first (id int)"))
    finally:
        engine.dispose()
    engine = sa.create_engine(second)
    try:
        with engine.connect() as conn:
            tables = sa.inspect(conn).get_table_names()
    finally:
        engine.dispose()
    assert tables == []
    postgres_server.drop_database("explicitly_named_db")


def test_postgres_listens_on_loopback_only(postgres_server: PostgresServer) -> None:
    import psutil

    engine = sa.create_engine(postgres_server.admin_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SHOW listen_addresses")).scalar_one() == "127.0.0.1"
            backend_pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            # Asked while the backend lives: once the connection closes it exits.
            postmaster = psutil.Process(backend_pid).parent()
    finally:
        engine.dispose()
    listening = [
        c.laddr for c in postmaster.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN
    ]
    assert listening, "the postmaster has no listening TCP socket"
    assert {addr.ip for addr in listening} == {"127.0.0.1"}
    assert {addr.port for addr in listening} == {postgres_server.port}


# ------------------------------------------------------------------------------------- Azurite


def test_azurite_takes_delta_commits_past_version_one(
    azurite: AzuriteServer, azurite_container: str
) -> None:
    from deltalake import DeltaTable, write_deltalake

    table_uri = azurite.abfs_url(azurite_container, "t")
    assert table_uri == f"abfs://{azurite_container}@devstoreaccount1.dfs.core.windows.net/t"
    first = pa.table({"id": [1, 2], "text": ["one", UNICODE_TEXT]})
    second = pa.table({"id": [3, 4, 5], "text": ["three", "four", "five"]})
    third = pa.table({"id": [6], "text": ["six"]})

    write_deltalake(table_uri, first, storage_options=azurite.storage_options)
    write_deltalake(table_uri, second, mode="overwrite", storage_options=azurite.storage_options)
    write_deltalake(table_uri, third, mode="append", storage_options=azurite.storage_options)

    table = DeltaTable(table_uri, storage_options=azurite.storage_options)
    assert table.version() == 2
    assert sorted(table.to_pyarrow_table().column("id").to_pylist()) == [3, 4, 5, 6]
    table.load_as_version(0)
    assert table.to_pyarrow_table().sort_by("id").column("text").to_pylist() == [
        "one",
        UNICODE_TEXT,
    ]

    # The same table through the az:// scheme.
    az_table = DeltaTable(f"az://{azurite_container}/t", storage_options=azurite.storage_options)
    assert az_table.version() == 2


def test_azurite_is_listable_with_adlfs(azurite: AzuriteServer, azurite_container: str) -> None:
    from adlfs import AzureBlobFileSystem
    from deltalake import write_deltalake

    table_uri = azurite.abfs_url(azurite_container, "t")
    for _ in range(2):
        write_deltalake(
            table_uri,
            pa.table({"id": [1]}),
            mode="overwrite",
            storage_options=azurite.storage_options,
        )

    fs = AzureBlobFileSystem(connection_string=azurite.connection_string)
    names = [Path(p).name for p in fs.ls(f"{azurite_container}/t")]
    assert "_delta_log" in names
    assert sum(name.endswith(".parquet") for name in names) == 2
    log_names = sorted(Path(p).name for p in fs.ls(f"{azurite_container}/t/_delta_log"))
    assert log_names[:2] == ["00000000000000000000.json", "00000000000000000001.json"]


def test_azurite_containers_are_fresh(azurite: AzuriteServer) -> None:
    from azure.storage.blob import BlobServiceClient

    first, second = azurite.create_container("Some Prefix"), azurite.create_container()
    assert first != second and first.startswith("some-prefix-")
    with BlobServiceClient.from_connection_string(azurite.connection_string) as client:
        assert list(client.get_container_client(second).list_blobs()) == []
    assert azurite.blob_endpoint == f"http://127.0.0.1:{azurite.port}/devstoreaccount1"


# ------------------------------------------------------------------- missing services: CI fails

PROBE_TEST = textwrap.dedent(
    """
    from llm_observatory_tests.conftest import azurite, postgres_server  # noqa: F401

    def test_needs_postgres(postgres_server):
        pass

    def test_needs_azurite(azurite):
        pass
    """
)


@pytest.mark.parametrize("ci", ["true", ""])
def test_missing_services_fail_in_ci_and_skip_elsewhere(tmp_path: Path, ci: str) -> None:
    (tmp_path / "test_probe.py").write_text(PROBE_TEST)
    env = {
        **os.environ,
        "CI": ci,
        "LLM_OBS_PG_BIN": str(tmp_path / "no-postgres-here"),
        "LLM_OBS_AZURITE_BIN": str(tmp_path / "no-azurite-here"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "test_probe.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert "no-postgres-here" in output and "no-azurite-here" in output, output
    if ci:
        assert result.returncode == 1, output
        assert "2 errors" in output and "skipped" not in output, output
    else:
        assert result.returncode == 0, output
        assert "2 skipped" in output, output
