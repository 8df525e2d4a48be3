"""No secret of a database URL reaches a message, a plan or a summary, whatever form the URL
takes: the password field, a password holding an unencoded '@', `?password=`, an ODBC
connection string's `PWD=` (issue 14, part 4: the display and error paths)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlalchemy as sa

from llm_observatory.resources.source import describe_error
from llm_observatory.resources.urls import check_url, display_url, redact, url_secrets
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
        postgres_url, start_date=dt.date(2026, 11, 1), days=1, rows_per_day=50, seed=3,
        defects=DefectRates(),
    )
    separator = "&" if "?" in postgres_url else "?"
    url = f"{postgres_url}{separator}password={SECRET}"
    for args in (["plan"], ["plan", "--json"]):
        completed = run_cli(args, tmp_path, LLM_OBS_SOURCE_URL=url)
        assert completed.returncode == 0, completed.stdout + completed.stderr
        assert SECRET not in completed.stdout + completed.stderr
    document = json.loads(completed.stdout[completed.stdout.index("{"):])
    assert document["source"].startswith("postgresql://")


def test_a_command_refuses_such_a_url_in_one_line(tmp_path):
    completed = run_cli(["sync"], tmp_path, LLM_OBS_SOURCE_URL=URLS["unencoded @"])
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert "LLM_OBS_SOURCE_URL" in completed.stderr and "%40" in completed.stderr
    assert SECRET not in completed.stdout + completed.stderr
    assert "Traceback" not in completed.stderr
