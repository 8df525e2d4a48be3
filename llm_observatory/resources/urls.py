"""Database URLs shown to people: never a secret, whatever form the URL takes.

`render_as_string(hide_password=True)` hides only the URL's password field. A password can also
travel in the query string (`?password=`, or `odbc_connect=...;PWD=...;` as SQL Server users
write ODBC connection strings), and a password holding an unencoded `@` makes the URL parse
with the password's tail in the host. So what is shown is built from the backend, host, port
and database only, and error texts have every secret the URL holds replaced.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import sqlalchemy as sa

REDACTED = "***"
# Query keys (and ODBC connection-string keywords) whose values are secrets.
_SECRET_KEY = re.compile(r"(pass|pwd|secret|token|key|sig|credential)", re.IGNORECASE)
_ODBC_PAIR = re.compile(r"([^;=]+)=(\{[^}]*\}|[^;]*)")
# Lake URLs on Azure (delta-rs and adlfs both read them); a lake without a scheme is a folder.
LAKE_SCHEMES = ("abfs", "abfss", "az")
LAKE_URL_FORM = "abfss://<container>@<account>.dfs.core.windows.net/<path>"


def display_url(url: sa.URL | str) -> str:
    """`backend://host:port/database`: what a message or a report may say about a database."""
    url = sa.make_url(url) if isinstance(url, str) else url
    # A password's unencoded '@' leaves its tail in the host: only what follows the last '@'.
    where = (url.host or "").rsplit("@", 1)[-1]
    if url.port:
        where = f"{where}:{url.port}"
    odbc = _odbc_pairs(url)
    if not where and odbc:
        where = odbc.get("server", "")
    database = url.database or odbc.get("database", "")
    return f"{url.get_backend_name()}://{where}/{database}"


def _odbc_pairs(url: sa.URL) -> dict[str, str]:
    text = url.query.get("odbc_connect", "")
    if isinstance(text, tuple):
        text = ";".join(text)
    return {key.strip().lower(): value.strip("{}") for key, value in _ODBC_PAIR.findall(text or "")}


def url_secrets(url: sa.URL | str) -> list[str]:
    """Every secret value the URL holds: its password and secret-named query values (ODBC
    connection strings included), longest first so a redaction never leaves a tail."""
    url = sa.make_url(url) if isinstance(url, str) else url
    found = set()
    if url.password:
        found.add(str(url.password))
        if url.host and "@" in url.host:
            found.add(f"{url.password}@{url.host.rsplit('@', 1)[0]}")
    if url.host and "@" in url.host:
        found.add(url.host.rsplit("@", 1)[0])
    for key, values in url.query.items():
        for value in values if isinstance(values, tuple) else (values,):
            if _SECRET_KEY.search(key) and value:
                found.add(value)
    for key, value in _odbc_pairs(url).items():
        if _SECRET_KEY.search(key) and value:
            found.add(value)
    return sorted(found, key=len, reverse=True)


def redact(text: str, url: sa.URL | str) -> str:
    """`text` with every secret of `url` replaced."""
    for secret in url_secrets(url):
        text = text.replace(secret, REDACTED)
    return text


def check_url(url: sa.URL | str, variable: str) -> sa.URL:
    """The parsed URL, or a one-line error naming the variable (never its value) when it
    cannot be right: a host holding `@` is a password's unencoded `@`."""
    try:
        parsed = sa.make_url(url) if isinstance(url, str) else url
    except sa.exc.ArgumentError:
        raise ValueError(f"{variable} is not a SQLAlchemy database URL") from None
    if parsed.host and "@" in parsed.host:
        raise ValueError(
            f"{variable}: the host part contains '@': a password holding '@' must be "
            "percent-encoded (%40)"
        )
    return parsed


def check_lake_url(url: str, variable: str) -> str:
    """The lake root, or a one-line error naming the variable (never its value) when it cannot
    be right. A query string is refused: a pasted SAS URL would put the layers' folders inside
    the query (bronze and silver in one folder) and carry its token into every path shown."""
    if "://" not in url:
        return url  # a local folder
    try:
        parts = urlsplit(url.replace("{layer}", "layer"))
        password = parts.password
    except ValueError:
        raise ValueError(f"{variable} is not a lake URL: write {LAKE_URL_FORM}") from None
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise ValueError(
            f"{variable} holds a query string or fragment (a pasted SAS URL?): write the lake "
            f"as {LAKE_URL_FORM} and put the SAS token in AZURE_STORAGE_SAS_TOKEN"
        )
    if parts.scheme.lower() not in LAKE_SCHEMES:
        raise ValueError(
            f"{variable}: a lake URL's scheme is one of {', '.join(LAKE_SCHEMES)} "
            f"({LAKE_URL_FORM}), or give a local folder"
        )
    if password is not None:
        raise ValueError(
            f"{variable}: the part before '@' is the container alone ({LAKE_URL_FORM}), never "
            "a credential: use AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_TOKEN or Azure AD"
        )
    return url


def display_lake_url(url: str) -> str:
    """What a message, metadata or a report may say about the lake: scheme, container,
    account host and path (a local folder as it is), never a query, fragment or password."""
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    netloc, slash, path = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")
    container = userinfo.split(":", 1)[0]
    path = re.split(r"[?#]", path, maxsplit=1)[0]
    return f"{scheme}://{container}{at}{host.split('?')[0].split('#')[0]}{slash}{path}"
