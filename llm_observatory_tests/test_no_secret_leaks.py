"""No secret of a connection string reaches any output (issue 14, part 4), whatever form it takes:
a real backfill of one day and the cutover report with secret-bearing URLs, then every place a
secret could land searched for it: the commands' stdout and stderr, every file under the home
(the Dagster instance's run and event storage, its logs), the Dagster run records and every
event of their event logs, every row of the control database's tables, and every file of the
lake (the Delta logs, the evidence, the report).

Secrets: a source password holding '@' (percent-encoded, as `check_url` requires) of a PostgreSQL
login that needs it; a control database password passed as `?password=`; the lake's account key
(in the connection string) or an account SAS token (AZURE_STORAGE_SAS_TOKEN) on Azurite. A source
that cannot be reached is searched the same way for each URL form, `odbc_connect=...PWD=...`
included."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import psycopg
import pytest
import sqlalchemy as sa
from dagster._core.instance.ref import InstanceRef
from dagster._serdes import serialize_value
from psycopg import sql

from llm_observatory.synthetic.generator import DefectRates, generate_source
from llm_observatory_tests.services import AZURITE_ACCOUNT_KEY, free_port
from llm_observatory_tests.test_cli import run_cli

DAY = dt.date(2026, 11, 1)


def needles(secret: str) -> set[str]:
    """The secret and the forms it could be written in: percent-encoded, and its longest run of
    letters and digits (what survives JSON escaping and any other quoting)."""
    runs = sorted(re.findall(r"[A-Za-z0-9]+", secret), key=len, reverse=True)
    return {secret, quote(secret, safe=""), runs[0]}


def assert_nowhere(texts: dict[str, str | bytes], secrets: dict[str, str]) -> None:
    """No form of any secret in any of the named texts."""
    found = []
    for where, text in texts.items():
        data = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
        for name, secret in secrets.items():
            for needle in needles(secret):
                if needle.encode() in data:
                    found.append(f"{name} ({needle[:4]}...) in {where}")
    assert not found, found


def home_files(home: Path) -> dict[str, bytes]:
    """Every file under the home: the Dagster instance's storage and logs, a local lake."""
    return {str(path): path.read_bytes() for path in home.rglob("*") if path.is_file()}


def run_records(home: Path) -> dict[str, str]:
    """Every run of the instance and every event of its event log, serialized."""
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home / "dagster")))
    try:
        texts = {}
        runs = instance.get_runs()
        assert runs, "the commands left no run to search"
        for run in runs:
            texts[f"run {run.run_id}"] = serialize_value(run)
            events = instance.all_logs(run.run_id)
            assert events
            texts[f"event log of {run.run_id}"] = "\n".join(
                serialize_value(event) for event in events
            )
        return texts
    finally:
        instance.dispose()


def control_rows(url: str) -> dict[str, str]:
    """Every row of every table of the control database, as text."""
    engine = sa.create_engine(url)
    try:
        texts = {}
        with engine.connect() as connection:
            for table in sa.inspect(connection).get_table_names():
                rows = connection.execute(sa.text(f'SELECT * FROM "{table}"')).all()
                texts[f"control table {table}"] = repr(rows)
        assert texts, "the control database holds no table to search"
        return texts
    finally:
        engine.dispose()


def lake_blobs(azurite, container: str) -> dict[str, bytes]:
    from azure.storage.blob import BlobServiceClient

    with BlobServiceClient.from_connection_string(azurite.connection_string) as client:
        holder = client.get_container_client(container)
        return {
            f"lake {blob.name}": holder.download_blob(blob.name).readall()
            for blob in holder.list_blobs()
        }


def create_login(server, role: str, password: str, *, database: str | None = None) -> None:
    """A PostgreSQL login that must give its password (SCRAM from 127.0.0.1, unlike the test
    server's trusted superuser), reading every table, or owning `database` when given."""
    hba = server.data_dir / "pg_hba.conf"
    line = f"host all {role} 127.0.0.1/32 scram-sha-256\n"
    text = hba.read_text()
    if line not in text:
        with open(hba, "w") as handle:  # in place: the file stays the server user's
            handle.write(line + text)
    with psycopg.connect(server.dsn("postgres"), autocommit=True) as connection:
        connection.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE pg_read_all_data").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        if database:
            connection.execute(
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                    sql.Identifier(database), sql.Identifier(role)
                )
            )
        connection.execute("SELECT pg_reload_conf()")


def account_sas(azurite) -> str:
    from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

    return generate_account_sas(
        azurite.account_name,
        azurite.account_key,
        ResourceTypes(service=True, container=True, object=True),
        AccountSasPermissions(read=True, write=True, delete=True, list=True, add=True, create=True),
        expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=2),
    )


@pytest.mark.parametrize("lake_credential", ["account key", "SAS token"])
def test_a_backfill_and_the_report_leave_no_secret_anywhere(
    postgres_server, azurite, azurite_container, tmp_path, lake_credential
):
    tag = uuid.uuid4().hex[:10]
    source_db, control_db = f"src_{tag}", f"ctl_{tag}"
    source_role, control_role = f"migrator_{tag}", f"control_{tag}"
    source_password = f"Src@Pw-{uuid.uuid4().hex}"
    control_password = f"CtlPw-{uuid.uuid4().hex}"
    postgres_server.create_database(source_db)
    postgres_server.create_database(control_db)
    generate_source(
        postgres_server.url(source_db),
        start_date=DAY,
        days=1,
        rows_per_day=200,
        seed=11,
        defects=DefectRates(missing_hour=None),
    )
    create_login(postgres_server, source_role, source_password)
    create_login(postgres_server, control_role, control_password, database=control_db)
    where = f"{postgres_server.host}:{postgres_server.port}"
    encoded = quote(source_password, safe="")  # the '@' as %40, as check_url requires
    source_url = f"postgresql+psycopg://{source_role}:{encoded}@{where}/{source_db}"
    control_url = (
        f"postgresql+psycopg://{control_role}@{where}/{control_db}?password={control_password}"
    )
    # The logins need their passwords: a wrong one is refused.
    with pytest.raises(sa.exc.OperationalError):
        sa.create_engine(source_url.replace("Src%40Pw", "Src%40Px")).connect().close()

    secrets = {"source password": source_password, "control password": control_password}
    env = {
        "LLM_OBS_SOURCE_URL": source_url,
        "LLM_OBS_CONTROL_URL": control_url,
        "LLM_OBS_LAKE_URL": azurite.abfs_url(azurite_container, "lake"),
    }
    if lake_credential == "account key":
        env["AZURE_STORAGE_CONNECTION_STRING"] = azurite.connection_string
        secrets["account key"] = AZURITE_ACCOUNT_KEY
    else:
        sas = account_sas(azurite)
        # The connection string says where the account is; the SAS alone lets us in.
        env["AZURE_STORAGE_CONNECTION_STRING"] = (
            f"BlobEndpoint={azurite.blob_endpoint};AccountName={azurite.account_name}"
        )
        env["AZURE_STORAGE_SAS_TOKEN"] = sas
        secrets["SAS signature"] = re.search(r"sig=([^&]+)", sas).group(1)
        secrets["SAS token"] = sas

    home = tmp_path / "home"
    outputs = {}
    for command in (
        ["setup-control"],
        ["plan", "--json"],
        ["backfill", "--start", DAY.isoformat(), "--end", DAY.isoformat()],
        ["sync"],
        ["report"],
        ["verify", "--start", DAY.isoformat(), "--end", DAY.isoformat()],
    ):
        completed = run_cli(command, home, **env)
        outputs[f"{command[0]} stdout"] = completed.stdout
        outputs[f"{command[0]} stderr"] = completed.stderr
        assert "Traceback" not in completed.stderr, completed.stderr
        if command[0] in ("setup-control", "plan", "backfill", "sync"):
            assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "1/1 day(s) ok" in outputs["backfill stdout"]
    assert "Verdict:" in outputs["report stdout"]

    lake = lake_blobs(azurite, azurite_container)
    # The search covers what was written: Delta logs of every layer, evidence, the report.
    assert any("/bronze/llm_interactions/_delta_log/" in name for name in lake)
    assert any("/silver/llm_interactions/_delta_log/" in name for name in lake)
    report = lake["lake lake/gold/cutover_report/report.md"].decode()
    assert f"{azurite_container}@{azurite.account_name}" in report
    assert "lake lake/gold/cutover_report/report.json" in lake
    control = control_rows(control_url)
    assert any("llm_interactions" in text for text in control.values())
    records = run_records(home)
    # The searches see what a leak would be written beside: the lake's tables as metadata.
    assert any(f"{azurite_container}@" in text for text in records.values())

    assert_nowhere(outputs, secrets)
    assert_nowhere(home_files(home), secrets)
    assert_nowhere(records, secrets)
    assert_nowhere(control, secrets)
    assert_nowhere(lake, secrets)


UNREACHABLE_SECRET = f"Unr3ach-{uuid.uuid4().hex}"


def unreachable_urls(port: int) -> dict[str, str]:
    encoded = quote(f"P@{UNREACHABLE_SECRET}", safe="")
    return {
        "password field, encoded @": f"postgresql+psycopg://migrator:{encoded}@127.0.0.1:{port}/prod",
        "?password=": (
            f"postgresql+psycopg://migrator@127.0.0.1:{port}/prod?password={UNREACHABLE_SECRET}"
        ),
        "odbc_connect PWD": "mssql+pyodbc:///?odbc_connect="
        + quote(
            f"DRIVER={{PostgreSQL Unicode}};SERVER=127.0.0.1;PORT={port};DATABASE=prod;"
            f"UID=migrator;PWD={{{UNREACHABLE_SECRET}}}",
            safe="",
        ),
    }


@pytest.mark.parametrize("form", ["password field, encoded @", "?password=", "odbc_connect PWD"])
def test_a_source_that_cannot_be_reached_shows_no_secret(tmp_path, form):
    url = unreachable_urls(free_port())[form]
    home = tmp_path / "home"
    outputs = {}
    for command in (
        ["backfill", "--start", DAY.isoformat(), "--end", DAY.isoformat()],
        ["plan"],
        ["sync"],
    ):
        completed = run_cli(command, home, LLM_OBS_SOURCE_URL=url)
        assert completed.returncode == 1, completed.stdout + completed.stderr
        assert "Traceback" not in completed.stderr, completed.stderr
        outputs[f"{command[0]} stdout"] = completed.stdout
        outputs[f"{command[0]} stderr"] = completed.stderr
    assert "FAILED" in outputs["backfill stdout"]
    secrets = {"password": UNREACHABLE_SECRET}
    assert_nowhere(outputs, secrets)
    # The failed runs' records and events, the SQLite control database, the local lake.
    assert_nowhere(run_records(home), secrets)
    assert_nowhere(home_files(home), secrets)
    assert_nowhere(control_rows(f"sqlite:///{home / 'control.sqlite'}"), secrets)
