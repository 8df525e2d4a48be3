"""The bytes a run moved to and from Azurite, counted from its debug log.

Azurite (started with ``start_azurite(request_log=True)``) writes per request id a line with
the method, URL and request headers, and at the end a line with the response headers; a listing's
XML body is written as it is sent. Uploads are request bodies (Content-Length of PUT and POST),
downloads are response bodies (Content-Length of each GET, or the length of the listing's body);
HEAD responses carry no body and count nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

_REQUEST = re.compile(
    r"^(\S+) (\S+) info: BlobStorageContextMiddleware: RequestMethod=(\S+) RequestURL=(\S+) "
    r"RequestHeaders:(\{.*?\}) ClientIP"
)
_RESPONSE = re.compile(
    r"^\S+ (\S+) info: EndMiddleware: End response\. .*?StatusCode=(\d+) .*?Headers=(\{.*\})\s*$"
)
_BODY = re.compile(r"^\S+ (\S+) debug: Serializer: Raw response body string is (.*)$")


@dataclass
class Request:
    at: float  # epoch seconds
    method: str
    path: str  # /account/container/blob, unquoted
    query: str
    up: int = 0
    down: int = 0
    status: int | None = None

    @property
    def kind(self) -> str:
        """list | log (a Delta log) | evidence | bronze | silver | quarantine | gold | other."""
        if "comp=list" in self.query:
            return "list"
        if "/_delta_log/" in self.path:
            return "log"
        if "/_evidence/" in self.path:
            return "evidence"
        if self.path.endswith(".parquet"):
            if "/_quarantine/" in self.path:
                return "quarantine"
            for layer in ("bronze", "silver", "gold"):
                if f"/{layer}/" in self.path:
                    return layer
        return "other"


def requests(log: Path, container: str | None = None) -> list[Request]:
    """Every request of the debug log (to `container` only, when given), in order."""
    found: dict[str, Request] = {}
    with open(log, errors="replace") as lines:
        for line in lines:
            if match := _REQUEST.match(line):
                at, request_id, method, url, headers = match.groups()
                parts = urlsplit(url)
                found[request_id] = Request(
                    at=dt.datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp(),
                    method=method,
                    path=unquote(parts.path),
                    query=parts.query,
                    up=int(json.loads(headers).get("content-length") or 0)
                    if method in ("PUT", "POST")
                    else 0,
                )
            elif (match := _RESPONSE.match(line)) and match.group(1) in found:
                request = found[match.group(1)]
                request.status = int(match.group(2))
                if request.method == "GET":
                    length = json.loads(match.group(3)).get("content-length")
                    request.down = max(request.down, int(length or 0))
            elif (match := _BODY.match(line)) and match.group(1) in found:
                request = found[match.group(1)]
                request.down = max(request.down, len(match.group(2).encode()))
    chosen = list(found.values())
    if container is not None:
        chosen = [r for r in chosen if r.path.split("/", 3)[2:3] == [container]]
    return chosen


def totals(chosen: list[Request]) -> tuple[int, int]:
    """(bytes up, bytes down)."""
    return sum(r.up for r in chosen), sum(r.down for r in chosen)


def by_kind(chosen: list[Request], direction: str) -> Counter:
    counted: Counter = Counter()
    for request in chosen:
        counted[request.kind] += request.up if direction == "up" else request.down
    return counted
