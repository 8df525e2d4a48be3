"""No secret of a database URL reaches a message, a plan or a summary, whatever form the URL
takes: the password field, a password holding an unencoded '@', `?password=`, an ODBC
connection string's `PWD=` (issue 14, part 4: the display and error paths)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlalchemy as sa

from llm_observatory.resources.lake import LakeResource
from llm_observatory.resources.source import describe_error
from llm_observatory.resources.urls import (
    check_lake_url,
    check_url,
    display_lake_url,
    display_url,
    redact,
    url_secrets,
)
from llm_observatory.synthetic.generator import DefectRates, generate_source
from llm_observatory_tests.test_cli import run_cli

SECRET = "s3cret-Pw"
URLS = {
    "password field": f"mssql+pyodbc://migrator:{SECRET}@db.corp:1433/prod?driver=ODBC+18",
    "unencoded @": f"mssql+pyodbc://migrator:{SECRET}@tail@db.corp:1433/prod",
    "query password": f"postgresql+psycopg://migrator@db.corp:5432/prod?password={SECRET}",
    "odbc_connect": (
        "mssql+pyodbc:///?odbc_connect=DRIVER%3D%7BODBC+Driver+18%7D%3BSERVER%3Ddb.corp%3B"
        f"DATABASE%3Dprod%3BUID%3Dmigrator%3BPWD%3D%7B{SECRET}%7D"
    ),
    "sas token": f"mssql+pyodbc://db.corp/prod?sig={SECRET}&sp=r",
}


@pytest.mark.parametrize("form", sorted(URLS))
def test_what_is_shown_names_the_database_never_the_secret(form):
    url = sa.make_url(URLS[form])
    shown = display_url(url)
    assert SECRET not in shown and "tail" not in shown
    assert "db.corp" in shown and "prod" in shown
    error = RuntimeError(f"login failed: connect with {url.render_as_string(False)} refused")
    message = describe_error(url, error)
    assert SECRET not in message and "tail@" not in message
    assert "db.corp" in message
    assert any(SECRET in secret for secret in url_secrets(url))
    assert SECRET not in redact(f"pwd was {SECRET}", url)


def test_a_password_holding_an_unencoded_at_is_refused_naming_the_variable():
    with pytest.raises(ValueError, match="LLM_OBS_SOURCE_URL.*%40") as refused:
        check_url(URLS["unencoded @"], "LLM_OBS_SOURCE_URL")
    assert SECRET not in str(refused.value)
    assert check_url(URLS["password field"], "LLM_OBS_SOURCE_URL").host == "db.corp"


def test_plan_never_prints_a_password_given_in_the_query_string(postgres_url, tmp_path):
    generate_source(
        postgres_url,
        start_date=dt.date(2026, 11, 1),
        days=1,
        rows_per_day=50,
        seed=3,
        defects=DefectRates(),
    )
    separator = "&" if "?" in postgres_url else "?"
    url = f"{postgres_url}{separator}password={SECRET}"
    for args in (["plan"], ["plan", "--json"]):
        completed = run_cli(args, tmp_path, LLM_OBS_SOURCE_URL=url)
        assert completed.returncode == 0, completed.stdout + completed.stderr
        assert SECRET not in completed.stdout + completed.stderr
    document = json.loads(completed.stdout[completed.stdout.index("{") :])
    assert document["source"].startswith("postgresql://")


def test_a_command_refuses_such_a_url_in_one_line(tmp_path):
    completed = run_cli(["sync"], tmp_path, LLM_OBS_SOURCE_URL=URLS["unencoded @"])
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert "LLM_OBS_SOURCE_URL" in completed.stderr and "%40" in completed.stderr
    assert SECRET not in completed.stdout + completed.stderr
    assert "Traceback" not in completed.stderr


# A lake URL pasted with its SAS token, and other forms that cannot be a lake root.
LAKE_URLS = {
    "https SAS URL": (
        f"https://llmlake.blob.core.windows.net/lake/llm?sv=2024-08-04&ss=b&srt=sco&sp=rwdlac"
        f"&se=2026-12-31T00:00:00Z&sig={SECRET}%3D"
    ),
    "abfss SAS query": f"abfss://lake@llmlake.dfs.core.windows.net/llm?sv=2024-08-04&sig={SECRET}",
    "template SAS query": f"abfss://{{layer}}@llmlake.dfs.core.windows.net/llm?sig={SECRET}",
    "SAS after a fragment": f"abfss://lake@llmlake.dfs.core.windows.net/llm#sig={SECRET}",
    "key in the container part": f"abfss://lake:{SECRET}@llmlake.dfs.core.windows.net/llm",
}


@pytest.mark.parametrize("form", sorted(LAKE_URLS))
def test_a_lake_url_that_cannot_be_right_is_refused_naming_the_variable(form):
    with pytest.raises(ValueError, match="^LLM_OBS_LAKE_URL") as refused:
        check_lake_url(LAKE_URLS[form], "LLM_OBS_LAKE_URL")
    message = str(refused.value)
    assert SECRET not in message and "\n" not in message
    assert "abfss://<container>@<account>.dfs.core.windows.net/<path>" in message
    shown = display_lake_url(LAKE_URLS[form])
    assert SECRET not in shown and "llmlake" in shown and "sig" not in shown
    # A resource built without the settings (a script, a test) refuses it too, before any path
    # (bronze and silver would share the folder left of the query) is made from it.
    lake = LakeResource(url=LAKE_URLS[form])
    with pytest.raises(ValueError, match="^LLM_OBS_LAKE_URL") as refused:
        lake.location("bronze", "llm_interactions")
    assert SECRET not in str(refused.value)
    assert SECRET not in lake.describe()


def test_a_pasted_sas_url_says_where_the_token_goes():
    with pytest.raises(ValueError, match="AZURE_STORAGE_SAS_TOKEN"):
        check_lake_url(LAKE_URLS["https SAS URL"], "LLM_OBS_LAKE_URL")


@pytest.mark.parametrize(
    "url",
    [
        "abfss://lake@llmlake.dfs.core.windows.net/llm",
        "abfs://{layer}@llmlake.dfs.core.windows.net/llm",
        "az://lake/llm",
        "/var/lib/llm-observatory/lake",
        "relative/lake",
    ],
)
def test_a_lake_root_without_a_secret_is_kept_and_shown_as_it_is(url):
    assert check_lake_url(url, "LLM_OBS_LAKE_URL") == url
    assert display_lake_url(url) == url


def test_bronze_and_silver_stay_apart_under_a_checked_root():
    lake = LakeResource(url="abfss://lake@llmlake.dfs.core.windows.net/llm")
    bronze, silver = (lake.location(layer, "logs") for layer in ("bronze", "silver"))
    assert bronze.fs_path == "lake/llm/bronze/logs" and silver.fs_path == "lake/llm/silver/logs"
    assert lake.describe() == "abfss://lake@llmlake.dfs.core.windows.net/llm"


@pytest.mark.parametrize(
    "command", [["sync"], ["backfill", "--start", "2026-11-01", "--end", "2026-11-01"], ["report"]]
)
def test_a_command_refuses_a_pasted_sas_url_in_one_line(tmp_path, command):
    completed = run_cli(command, tmp_path, LLM_OBS_LAKE_URL=LAKE_URLS["https SAS URL"])
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert completed.stderr.startswith("error: LLM_OBS_LAKE_URL holds a query string")
    assert len(completed.stderr.strip().splitlines()) == 1, completed.stderr
    assert SECRET not in completed.stdout + completed.stderr
    # Nothing was written anywhere: not a folder named after the URL, not a lake.
    assert not (tmp_path / "lake").exists()
    assert not list(tmp_path.rglob("*llmlake*"))


def test_a_sas_token_set_apart_reaches_both_clients():
    """AZURE_STORAGE_SAS_TOKEN (with or without its '?') is the SAS of delta-rs and of adlfs;
    a key, when there is one, comes first for both."""
    endpoint = "BlobEndpoint=http://127.0.0.1:10000/llmlake;AccountName=llmlake"
    lake = LakeResource(
        url="abfss://lake@llmlake.dfs.core.windows.net/llm",
        azure_storage_connection_string=endpoint,
        azure_storage_sas_token=f"?sv=2024-08-04&sig={SECRET}",
    )
    assert lake.storage_options["sas_token"] == f"sv=2024-08-04&sig={SECRET}"
    assert lake._adlfs_kwargs() == {
        "connection_string": f"{endpoint};SharedAccessSignature=sv=2024-08-04&sig={SECRET}"
    }
    assert SECRET not in repr(lake)
    alone = LakeResource(
        url="abfss://lake@llmlake.dfs.core.windows.net/llm",
        azure_storage_account_name="llmlake",
        azure_storage_sas_token=f"sv=2024-08-04&sig={SECRET}",
    )
    assert alone._adlfs_kwargs() == {
        "account_name": "llmlake",
        "sas_token": f"sv=2024-08-04&sig={SECRET}",
    }
    keyed = LakeResource(
        url="abfss://lake@llmlake.dfs.core.windows.net/llm",
        azure_storage_connection_string=endpoint,
        azure_storage_account_key="a2V5",
        azure_storage_sas_token=f"sv=2024-08-04&sig={SECRET}",
    )
    assert "sas_token" not in keyed.storage_options
    assert keyed.storage_options["account_key"] == "a2V5"
    assert keyed._adlfs_kwargs() == {"connection_string": f"{endpoint};AccountKey=a2V5"}
