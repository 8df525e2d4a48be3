"""Session-wide test services: a throwaway PostgreSQL and an Azurite blob service.

Fixtures (see ``services.py`` for the objects they yield):

- ``postgres_server`` (session): :class:`~llm_observatory_tests.services.PostgresServer`;
  ``create_database(name=None) -> url`` makes a fresh database.
- ``postgres_url`` (function): SQLAlchemy URL of a fresh, empty database for the test.
- ``azurite`` (session): :class:`~llm_observatory_tests.services.AzuriteServer`;
  ``create_container(prefix) -> name`` makes a fresh container.
- ``azurite_container`` (function): name of a fresh, empty container for the test.

A service that cannot start skips its tests on a developer's machine and fails them when
``CI=true``: CI must never pass by skipping the PostgreSQL- and Azurite-backed tests.
"""

from __future__ import annotations

import re
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

try:
    from llm_observatory_tests import services
except ModuleNotFoundError:  # pytest started by its script, not `python -m pytest`: no cwd on path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from llm_observatory_tests import services

ServerT = TypeVar("ServerT")


def _start_or_skip(start: Callable[[], ServerT]) -> ServerT:
    """``start()``, or skip the requesting tests (fail them when ``CI=true``) with the reason."""
    try:
        return start()
    except services.ServiceUnavailable as error:
        reason = str(error)
    # Reported outside `except`, so pytest shows the reason once, not a chained traceback.
    if services.running_in_ci():
        pytest.fail(
            f"{reason}\n(CI=true: a test service that cannot start is a failure, not a skip)",
            pytrace=False,
        )
    pytest.skip(reason)


def _name_for(request: pytest.FixtureRequest) -> str:
    """A readable prefix for per-test resources: the test's name, cut and cleaned."""
    name = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:30]
    return name if name[:1].isalpha() else f"t_{name}"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[services.PostgresServer]:
    """A PostgreSQL server for the whole session, on 127.0.0.1 and a free port."""
    server = _start_or_skip(services.start_postgres)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: services.PostgresServer, request: pytest.FixtureRequest) -> str:
    """``postgresql+psycopg://postgres@127.0.0.1:PORT/<fresh database>`` for this test."""
    return postgres_server.create_database(f"{_name_for(request)}_{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="session")
def azurite() -> Iterator[services.AzuriteServer]:
    """An Azurite blob service for the whole session, on 127.0.0.1 and a free port."""
    server = _start_or_skip(services.start_azurite)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def azurite_container(azurite: services.AzuriteServer, request: pytest.FixtureRequest) -> str:
    """Name of a fresh, empty blob container in ``azurite`` for this test."""
    return azurite.create_container(_name_for(request))


# Fixtures that need a service started beside the tests (a PostgreSQL server, Azurite, the
# ODBC drivers, a browser serving the UI): their tests carry the `services` marker, so
# `pytest -m "not services"` is a developer's fast subset. `make test` runs everything.
SERVICE_FIXTURES = {"postgres_server", "postgres_url", "azurite", "azurite_container"}
SERVICE_FIXTURES |= {"odbc_drivers", "nasty_postgres", "ui"}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        on_azurite = any(isinstance(value, str) and value == "azurite" for value in params.values())
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())) or on_azurite:
            item.add_marker(pytest.mark.services)
