"""A deterministic synthetic source database: the reference tables, filled with realistic rows.

The migration is proven on data whose every property is known in advance: how many rows each
table holds per UTC day, which rows break which quality rule, where the day boundaries and the
gaps are. :func:`generate_source` builds such a database on PostgreSQL, SQLite or (slowly) any
SQLAlchemy dialect and returns a :class:`SyntheticSummary` with those exact figures, so tests can
assert on quarantine counts and row counts instead of approximations.

Promises:

- Same arguments, same rows, byte for byte: every random draw comes from a NumPy generator
  seeded with ``(seed, day ordinal, chunk)``, so a day's rows do not depend on which other days
  are generated (only the sequential ``metadata_id``/``log_id`` continue from earlier days).
- ``rows_per_day`` interactions on every UTC day, spread over the day, with one row at exactly
  00:00:00.000000 and one at 23:59:59.999999 (both defect-free; latency 0 ms and 120000 ms, the
  edges of the valid range). The first metadata row and first log row of an interaction share
  its timestamp, so those two tables have the boundary instants too.
- Defects are injected at :class:`DefectRates` and at most one per row, so the quarantine count
  of a table is exactly the sum of its defect counts, and each defect names the first rule it
  breaks (:data:`DEFECT_RULES`).
- ``missing_hour``: one hour of one day with no rows in any table (an outage the source has too).
- Metadata and log rows fall on the same UTC day as their interaction; ``last_modified`` is never
  before the row's event time.
- Text is UTF-8 without NUL characters (PostgreSQL rejects them). Some of it is written to trap
  careless loaders: quotes, commas, tabs, CR LF, backslashes, a literal ``\\N``, emoji outside
  the BMP and decomposed accents. An ``error`` row's response is the empty string, a ``timeout``
  row's response is NULL: the two must stay distinct through the pipeline.

Generation is vectorised (NumPy, Arrow) and chunked (at most :data:`CHUNK_ROWS` interactions in
memory), and it runs in a background thread so that it overlaps with the database's ingestion.
Text is cut from a fixed corpus of whole sentences by byte offsets, not assembled word by word.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import queue
import random
import sqlite3
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing, suppress
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateIndex, CreateTable

from llm_observatory.resources.urls import display_url
from llm_observatory.synthetic.schema import (
    INTERACTIONS,
    LOGS,
    METADATA,
    REFERENCE_METADATA,
    TABLE_NAMES,
)

ALLOWED_MODELS: tuple[str, ...] = ("ollama", "gemini", "grok")
"""The model names the quality rule ``allowed:model_name`` accepts (exact, case-sensitive)."""
UNKNOWN_MODELS: tuple[str, ...] = ("gpt-x", "Ollama", "GEMINI", "grok ", "llama3:8b")
"""Injected by the ``unknown_model`` defect: unknown names, wrong case, a trailing space."""
MAX_LATENCY_MS = 120_000
"""Upper edge of the valid latency range ``0 <= latency_ms <= 120000``."""
CHUNK_ROWS = 25_000
"""Interactions generated (and held in memory) at a time; part of the seeding, so fixed."""

DEFECT_RULES: dict[str, tuple[str, str]] = {
    "model_null": (INTERACTIONS, "required:model_name"),
    "latency_null": (INTERACTIONS, "required:latency_ms"),
    "latency_out_of_range": (INTERACTIONS, "range:latency_ms"),
    "unknown_model": (INTERACTIONS, "allowed:model_name"),
    "invalid_json": (METADATA, "json:attributes"),
}
"""Each defect's table, and the first quality rule (CONTRACT §4 order) its rows break."""

_US_PER_SECOND = 1_000_000
_US_PER_HOUR = 3600 * _US_PER_SECOND
_US_PER_DAY = 24 * _US_PER_HOUR
_EPOCH = dt.date(1970, 1, 1)

_MODEL_WEIGHTS = (0.45, 0.35, 0.20)
_MODEL_LATENCY_FACTOR = np.array([1.4, 1.0, 0.8])  # local ollama is the slow one
# Micro-dollars per prompt / completion token; ollama is local, its cost is amortised compute.
_PRICE_IN_MICROS = np.array([0.02, 1.25, 3.0])
_PRICE_OUT_MICROS = np.array([0.02, 5.0, 15.0])
_STATUSES = ("success", "error", "timeout")
_STATUS_WEIGHTS = (0.90, 0.07, 0.03)
_UNICODE_ROW_SHARE = 0.30  # rows whose prompt and response come from the multilingual corpus
_HUGE_RESPONSE_RATE = 1 / 20_000  # success rows answered with the whole English corpus (~1.5 MB)
_METADATA_PER_INTERACTION = ((0, 1, 2), (0.03, 0.92, 0.05))
_LOGS_PER_INTERACTION = ((1, 2, 3), (0.40, 0.35, 0.25))
_ORPHAN_LOG_RATE = 0.05  # logs with no interaction, per interaction
_ATTRIBUTES_NULL_RATE = 0.05
_USERS = 5_000
_SESSION_WINDOW_US = 30 * 60 * _US_PER_SECOND  # a user's requests within 30 minutes: one session
_POOL_SEED = 20_240_101  # the vocabulary is fixed; the caller's seed only picks from it


# --------------------------------------------------------------------------------------------
# Public configuration and result
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DefectRates:
    """Share of rows that carry each injected defect; at most one defect per row.

    The four interaction rates are fractions of all interactions (boundary rows excepted),
    ``invalid_json`` a fraction of metadata rows. ``missing_hour`` is ``(day index, UTC hour)``:
    that hour of that day has no rows in any table; ``None`` (or a day index past the generated
    days) disables it.
    """

    latency_null: float = 0.005
    latency_out_of_range: float = 0.005
    unknown_model: float = 0.005
    model_null: float = 0.002
    invalid_json: float = 0.005
    missing_hour: tuple[int, int] | None = (1, 13)

    def __post_init__(self) -> None:
        rates = {name: getattr(self, name) for name in DEFECT_RULES}
        for name, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"DefectRates.{name} must be within [0, 1], got {rate}")
        interaction_total = sum(rate for name, rate in rates.items() if name != "invalid_json")
        if interaction_total > 1.0:
            raise ValueError(f"interaction defect rates add up to {interaction_total} > 1")
        if self.invalid_json + _ATTRIBUTES_NULL_RATE > 1.0:
            raise ValueError(f"invalid_json must be at most {1 - _ATTRIBUTES_NULL_RATE}")
        if self.missing_hour is not None:
            day_index, hour = self.missing_hour
            if day_index < 0 or not 0 <= hour <= 23:
                raise ValueError(
                    f"missing_hour must be (day index >= 0, hour 0-23), got {self.missing_hour}"
                )

    @classmethod
    def none(cls) -> DefectRates:
        """Clean data: no defect and no missing hour."""
        return cls(0.0, 0.0, 0.0, 0.0, 0.0, None)


@dataclass(frozen=True)
class SyntheticSummary:
    """Exactly what was generated: the figures tests and the demo compare the lake against.

    ``rows_by_day`` and ``defects_by_day`` are keyed by table / defect name, then by the UTC day
    of the row's event time (``timestamp`` or ``created_at``); days without rows are absent from
    the inner dicts only when the table has no row that day.
    """

    database: str  # the URL, password hidden
    seed: int
    start_date: dt.date
    days: int
    rows_per_day: int
    defect_rates: DefectRates
    rows: dict[str, int]
    rows_by_day: dict[str, dict[dt.date, int]]
    defects: dict[str, int]
    defects_by_day: dict[str, dict[dt.date, int]]
    missing_hour: dt.datetime | None  # start (UTC) of the hour without rows, if any
    elapsed_seconds: float = 0.0

    @property
    def end_date(self) -> dt.date:
        """The last generated day (inclusive)."""
        return self.start_date + dt.timedelta(days=self.days - 1)

    def expected_quarantine_by_rule(self, table: str, day: dt.date | None = None) -> dict[str, int]:
        """Rows of ``table`` the quality rules must quarantine, by the first rule they break."""
        expected: dict[str, int] = {}
        for defect, (defect_table, rule) in DEFECT_RULES.items():
            if defect_table != table:
                continue
            count = self.defects[defect] if day is None else self.defects_by_day[defect].get(day, 0)
            if count:
                expected[rule] = expected.get(rule, 0) + count
        return expected

    def expected_quarantine(self, table: str, day: dt.date | None = None) -> int:
        """Rows of ``table`` (on ``day``, or in all) that break at least one quality rule."""
        return sum(self.expected_quarantine_by_rule(table, day).values())

    def format(self) -> str:
        """A human-readable report, as ``python -m llm_observatory.synthetic`` prints it."""
        lines = [
            f"synthetic source: {self.database}",
            (
                f"  days {self.start_date} .. {self.end_date} ({self.days}), "
                f"{self.rows_per_day} interactions per day, seed {self.seed}, "
                f"generated in {self.elapsed_seconds:.1f} s"
            ),
        ]
        for table in TABLE_NAMES:
            per_day = self.rows_by_day[table]
            low, high = (min(per_day.values()), max(per_day.values())) if per_day else (0, 0)
            lines.append(
                f"  {table:<17} {self.rows[table]:>12,} rows ({low:,}..{high:,} per day), "
                f"expected quarantine {self.expected_quarantine(table):,}"
            )
        lines.append(
            "  defects: " + ", ".join(f"{name} {count:,}" for name, count in self.defects.items())
        )
        lines.append(
            f"  missing hour: {self.missing_hour.isoformat() if self.missing_hour else 'none'}"
        )
        return "\n".join(lines)


@dataclass(frozen=True)
class SourceBatch:
    """One chunk of generated rows, as Arrow tables with the source's column types.

    Timestamps are ``timestamp[us, tz=UTC]``, ``cost_usd`` is ``decimal128(12, 6)``, ids are
    sequential ``int64``. ``defects`` counts this batch's injected defects by name.
    """

    day: dt.date
    interactions: pa.Table
    metadata: pa.Table
    logs: pa.Table
    defects: dict[str, int]

    def table(self, name: str) -> pa.Table:
        return {INTERACTIONS: self.interactions, METADATA: self.metadata, LOGS: self.logs}[name]


_TS = pa.timestamp("us", tz="UTC")
ARROW_SCHEMAS: dict[str, pa.Schema] = {
    INTERACTIONS: pa.schema(
        [
            ("interaction_id", pa.string()),
            ("timestamp", _TS),
            ("model_name", pa.string()),
            ("latency_ms", pa.int32()),
            ("prompt", pa.string()),
            ("response", pa.string()),
            ("prompt_tokens", pa.int32()),
            ("completion_tokens", pa.int32()),
            ("status", pa.string()),
            ("error_message", pa.string()),
            ("user_id", pa.string()),
            ("session_id", pa.string()),
            ("cost_usd", pa.decimal128(12, 6)),
            ("last_modified", _TS),
        ]
    ),
    METADATA: pa.schema(
        [
            ("metadata_id", pa.int64()),
            ("interaction_id", pa.string()),
            ("created_at", _TS),
            ("attributes", pa.string()),
            ("last_modified", _TS),
        ]
    ),
    LOGS: pa.schema(
        [
            ("log_id", pa.int64()),
            ("interaction_id", pa.string()),
            ("created_at", _TS),
            ("level", pa.string()),
            ("message", pa.string()),
            ("last_modified", _TS),
        ]
    ),
}
"""The Arrow types :func:`generate_batches` produces, column order as in the SQL tables."""


# --------------------------------------------------------------------------------------------
# Text pools: built once per process from a fixed seed
# --------------------------------------------------------------------------------------------

_TOPICS = (
    "Delta Lake",
    "vector databases",
    "the CAP theorem",
    "Kubernetes autoscaling",
    "gradient descent",
    "SQL window functions",
    "OAuth 2.0",
    "photosynthesis",
    "the French Revolution",
    "compound interest",
    "TCP congestion control",
    "Rust ownership",
    "transformer attention",
    "sourdough fermentation",
    "carbon accounting",
    "Azure Data Lake Storage",
    "B-tree indexes",
    "Bayesian inference",
    "the water cycle",
    "zero-downtime migrations",
    "change data capture",
    "Parquet row groups",
    "prompt caching",
    "retrieval-augmented generation",
    "unit testing",
    "tax-loss harvesting",
    "plate tectonics",
    "CRDTs",
    "rate limiting",
    "columnar compression",
)
_AUDIENCES = (
    "a new engineer",
    "a ten-year-old",
    "an executive",
    "a data scientist",
    "my team",
    "a skeptical reviewer",
    "a product manager",
    "a first-year student",
)
_ASPECTS = (
    "latency",
    "cost",
    "consistency",
    "durability",
    "readability",
    "throughput",
    "accuracy",
    "memory use",
    "operational burden",
    "security",
    "time to market",
)
_SLUGS = ("daily_load", "events", "sessions", "billing", "eval_run", "tokens", "feedback")
_ENGLISH_TEMPLATES = (
    "Explain {topic} to {audience} without jargon.",
    "Summarize the trade-offs of {topic} in {k} bullet points.",
    "Compare {topic} with {topic2}, focusing on {aspect}.",
    "Why does {topic} hurt {aspect} once the data grows past {n} GB?",
    "Here is the context: {topic} is often confused with {topic2}, but they differ in {aspect}.",
    "Step {k}: measure {aspect} before changing {topic}, then measure it again after.",
    "In short, {topic} trades {aspect} for {aspect2}.",
    "Roughly {pct}% of the teams we surveyed said {topic} improved their {aspect}.",
    "A common mistake is to tune {aspect} before understanding {topic}.",
    "The answer depends on {aspect}; for {audience}, start with {topic}.",
    "First, list what {audience} already knows about {topic}; second, fill the gaps.",
    "Consider a team of {k} people adopting {topic} with a budget of ${n}00 a month.",
    "Rewrite the paragraph about {topic} so that {audience} can follow it.",
    "Give three counter-arguments to the claim that {topic} always improves {aspect}.",
    # Loader traps: CSV quoting, backslashes, COPY text-format escapes, tabs, CR LF, code.
    'He said, "{topic} is simple," and then spent {k} days on it.',
    "Use the path C:\\data\\{slug}\\part-{k}.csv, not /mnt/{slug}/part-{k}.csv.",
    "The literal text \\N is not a NULL here, and neither is the word NULL.",
    "Columns:\tmodel_name\tlatency_ms\tstatus",
    "Line one of a note written on Windows.\r\nLine two of the same note.",
    "```sql\nSELECT model_name, count(*) FROM llm_interactions\n"
    "WHERE latency_ms > {n} GROUP BY 1;\n```",
    '```python\ndef {slug}(rows):\n    return [r for r in rows if r["latency_ms"] < {n}]\n```',
    "Q: what is {topic}?\nA: a way to improve {aspect} for {audience}.",
    "It's a 'quoted' word, a \"double-quoted\" one, and a comma, right here.",
)
_UNICODE_SENTENCES = (
    "Pouvez-vous résumer ce document en trois phrases, s'il vous plaît ?",
    "Le modèle a répondu très vite, mais la qualité était médiocre.",
    "Die Größe der Datei überschreitet das Limit von 10 MB; bitte prüfen.",
    "Bitte übersetze den folgenden Absatz ins Französische.",
    "¿Cuál es la diferencia entre un índice agrupado y uno no agrupado?",
    "Mañana revisaremos la migración con el equipo de señales.",
    "A migração dos dados foi concluída sem erros às três horas.",
    "この文章を三行で要約してください。",
    "東京の明日の天気はどうですか？傘は必要ですか？",
    "データレイクへの移行は完了しました。",
    "请用简单的语言解释什么是数据湖。",
    "模型的延迟在高峰时段明显增加。",
    "이 코드를 더 효율적으로 만들 수 있을까요?",
    "Объясни, как работает индекс на основе B-дерева.",
    "Η απάντηση ήταν σωστή αλλά πολύ μεγάλη.",
    "ما هو أفضل نموذج لتلخيص النصوص الطويلة؟",
    "כתוב לי שיר קצר על ים ושמש.",
    "कृपया इस पाठ का सारांश तीन वाक्यों में दें।",
    "Great job on the release! 🎉🚀",
    "Deploy status: ✅ passed, ❌ failed, ⚠️ flaky.",
    "👩‍💻 pair-programming notes 📝 and a ☕ break.",
    "Flags for the demo: 🇫🇷 🇯🇵 🇧🇷 🇰🇪",
    "Math check: ∑ᵢ xᵢ² ≥ 0 and ∀ε>0 ∃δ>0 with |x−y|<δ.",
    "Decomposed accents: Cafe\u0301, Zu\u0308rich, man\u0303ana (NFD, not NFC).",
    "Rare CJK outside the BMP: 𠮷野家 and 𩸽.",
    "Temperature was −3 °C; price €12.50, ¥1 800, £9.99, ₹450.",
    "Smart quotes “like these” and ‘these’ — with an em dash… and an ellipsis.",
    "Türkçe: İstanbul’da ığdır şehri ile ilgili bilgi ver.",
    "Tiếng Việt: Hãy giải thích mô hình ngôn ngữ lớn.",
    "Polski: Zażółć gęślą jaźń — test polskich znaków.",
)
_ERROR_TEMPLATES = (
    "rate limit exceeded (HTTP 429): retry after {k} s",
    "context length exceeded: {n} tokens > 8192",
    "upstream returned HTTP 500: internal error",
    "CUDA out of memory while allocating {n} MiB",
    "invalid request: 'temperature' must be between 0 and 2, got {k}.5",
    "content filtered by safety policy (category {k})",
    "connection reset by peer",
    "model not loaded: pulling manifest for layer {k}",
    "JSON decode error in tool call at line {k} column {n}",
    "Erreur interne du serveur : réessayez dans {k} minutes",
    "サーバーが混雑しています (server busy, code {k})",
)
_TIMEOUT_TEMPLATES = (
    "request timed out after 120 s",
    "deadline exceeded while waiting for the first token",
    "upstream timeout (HTTP 504) after {k} retries",
    "stream stalled: no tokens for {n} ms",
)
_LOG_TEMPLATES: dict[str, tuple[str, ...]] = {
    "INFO": (
        "response sent: {n} tokens",
        "cache miss for prompt hash {hex}",
        "routing to region {region}",
        "tool call completed in {n} ms",
        "user feedback: 👍",
        "user feedback: 👎 «{unicode}»",
        "prompt preview: {unicode}",
        "streaming {k} chunks to client",
    ),
    "DEBUG": (
        "tokenizer took {n} µs",
        "sampling params: temperature=0.{k} top_p=0.9{k}",
        "kv-cache hit ratio 0.{n}",
        "payload size {n} bytes",
        'headers: {{"x-request-id": "{hex}", "accept": "text/event-stream"}}',
    ),
    "WARNING": (
        "retrying after HTTP 429 (attempt {k})",
        "slow response: {n} ms",
        "prompt truncated to {n} tokens",
        "deprecated parameter 'max_length' used; use 'max_tokens'",
    ),
    "ERROR": (
        "upstream error: HTTP 500",
        "failed to parse tool output: Expecting ',' delimiter: line {k} column {n}",
        (
            'Traceback (most recent call last):\n  File "worker.py", line {n}, in handle\n'
            "    reply = client.complete(prompt)\nTimeoutError: deadline exceeded"
        ),
        "exception: ValueError('latency must be positive, got -{k}')",
    ),
}
_RECEIVED_TEMPLATES = (
    "request received",
    "request received (stream=true)",
    "request received from {region}",
    "request received: {k} messages in conversation",
)
_ORPHAN_TEMPLATES = (
    "health check ok",
    "scheduler tick",
    "cache evicted {n} entries",
    "model warmed up in {n} ms",
    "config reloaded from /etc/llm/gateway.yaml",
    "GC pause {k} ms",
    "connection pool: {k} idle, {n} total",
)
_LEVELS = ("INFO", "DEBUG", "WARNING", "ERROR")
_LEVEL_WEIGHTS = (0.55, 0.25, 0.12, 0.08)
_ORPHAN_LEVEL_WEIGHTS = (0.6, 0.3, 0.1, 0.0)
_REGIONS = ("eu-west", "eu-north", "us-east", "us-west", "ap-southeast", "sa-east")
_CLIENTS = ("web", "ios", "android", "cli", "slack-bot", "batch")
_LOCALES = ("en-US", "fr-FR", "de-DE", "ja-JP", "zh-CN", "pt-BR", "es-ES", "ko-KR")


@dataclass(frozen=True)
class _TextPools:
    """Everything textual the generator draws from, indexed by integers for vectorised picks."""

    corpus: bytes  # English sentences, then multilingual ones; UTF-8
    sentence_starts: np.ndarray  # byte offset of every sentence start, plus len(corpus)
    english_sentences: int  # sentences [0, english_sentences) are the English corpus
    english_bytes: int  # byte length of the English corpus
    error_messages: pa.Array
    timeout_messages: pa.Array
    attributes_valid: pa.Array
    attributes_invalid: pa.Array
    log_messages: pa.Array  # _LEVELS' pools back to back
    log_pool_start: np.ndarray  # per level: first index in log_messages
    log_pool_size: np.ndarray
    received_messages: pa.Array
    orphan_messages: pa.Array
    user_ids: pa.Array
    model_names: pa.Array  # ALLOWED_MODELS then UNKNOWN_MODELS
    statuses: pa.Array
    levels: pa.Array


def _fill(template: str, rnd: random.Random) -> str:
    """One template filled with random vocabulary (only the placeholders it uses matter)."""
    topic, topic2 = rnd.sample(_TOPICS, 2)
    aspect, aspect2 = rnd.sample(_ASPECTS, 2)
    return template.format(
        topic=topic,
        topic2=topic2,
        aspect=aspect,
        aspect2=aspect2,
        audience=rnd.choice(_AUDIENCES),
        slug=rnd.choice(_SLUGS),
        n=rnd.randrange(2, 9999),
        k=rnd.randrange(1, 9),
        pct=rnd.randrange(1, 100),
        hex=rnd.randbytes(6).hex(),
        region=rnd.choice(_REGIONS),
        unicode=rnd.choice(_UNICODE_SENTENCES),
    )


def _corpus_sentences(rnd: random.Random, count: int, unicode_share: float) -> list[str]:
    """``count`` sentences with their trailing separator; ``unicode_share`` of them multilingual."""
    separators = (" ", " ", " ", " ", "\n", "\n\n")
    sentences = []
    for _ in range(count):
        if rnd.random() < unicode_share:
            sentence = rnd.choice(_UNICODE_SENTENCES)
        else:
            sentence = _fill(rnd.choice(_ENGLISH_TEMPLATES), rnd)
        sentences.append(sentence + rnd.choice(separators))
    return sentences


def _invalid_json_variants(valid: list[str], rnd: random.Random, count: int) -> list[str]:
    """Attribute texts that no JSON parser accepts: truncations, single quotes, key=value."""
    variants: list[str] = []
    while len(variants) < count:
        source = rnd.choice(valid)
        kind = rnd.randrange(4)
        if kind == 0:  # truncated mid-object, as a writer that crashed leaves it
            candidate = source[: rnd.randrange(2, max(3, len(source) - 1))]
        elif kind == 1:  # Python repr instead of JSON
            candidate = source.replace('"', "'")
        elif kind == 2:
            candidate = "temperature=0.7; top_p=0.9; client=web"
        else:  # an unquoted key
            candidate = source.replace('"', "", 2)
        try:
            json.loads(candidate)
        except ValueError:
            if candidate.strip():
                variants.append(candidate)
    return variants


def _attributes(rnd: random.Random) -> str:
    """One valid ``metadata.attributes`` JSON object, in one of three shapes seen in practice."""
    kind = rnd.randrange(3)
    if kind == 0:
        attributes: dict[str, Any] = {
            "temperature": round(rnd.uniform(0, 1.5), 2),
            "top_p": round(rnd.uniform(0.5, 1), 2),
            "max_tokens": rnd.choice((256, 512, 1024, 4096)),
            "client": rnd.choice(_CLIENTS),
            "region": rnd.choice(_REGIONS),
        }
    elif kind == 1:
        attributes = {
            "stream": rnd.random() < 0.5,
            "tags": rnd.sample(_SLUGS, rnd.randrange(0, 4)),
            "experiment": f"exp-{rnd.randrange(1, 40)}",
            "retries": rnd.randrange(0, 3),
        }
    else:
        attributes = {
            "locale": rnd.choice(_LOCALES),
            "title": rnd.choice(_UNICODE_SENTENCES)[:40],
            "feedback": None if rnd.random() < 0.5 else rnd.randrange(1, 6),
            "note": 'says "hi", uses \\ and\ttabs',
        }
    return json.dumps(attributes, ensure_ascii=False)


@functools.lru_cache(maxsize=1)
def _text_pools() -> _TextPools:
    """Build the pools (a fraction of a second, once per process), independent of the caller's seed.

    Scalar draws here use :class:`random.Random`, which is much faster per call than NumPy's
    generator; ``random()``, ``randrange``, ``choice`` and ``sample`` are stable across 3.11+.
    """
    rnd = random.Random(_POOL_SEED)
    english = _corpus_sentences(rnd, 16_000, unicode_share=0.0)
    multilingual = _corpus_sentences(rnd, 8_000, unicode_share=0.5)
    encoded = [sentence.encode() for sentence in english + multilingual]
    lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=len(encoded))
    starts = np.concatenate([[0], np.cumsum(lengths)])

    def messages(templates: tuple[str, ...], per_template: int) -> list[str]:
        return [_fill(t, rnd) for t in templates for _ in range(per_template)]

    log_pools = [messages(_LOG_TEMPLATES[level], 64) for level in _LEVELS]
    pool_sizes = np.array([len(pool) for pool in log_pools])
    valid_attributes = [_attributes(rnd) for _ in range(4096)]

    return _TextPools(
        corpus=b"".join(encoded),
        sentence_starts=starts,
        english_sentences=len(english),
        english_bytes=int(starts[len(english)]),
        error_messages=pa.array(messages(_ERROR_TEMPLATES, 16), pa.string()),
        timeout_messages=pa.array(messages(_TIMEOUT_TEMPLATES, 16), pa.string()),
        attributes_valid=pa.array(valid_attributes, pa.string()),
        attributes_invalid=pa.array(
            _invalid_json_variants(valid_attributes, rnd, 256), pa.string()
        ),
        log_messages=pa.array([m for pool in log_pools for m in pool], pa.string()),
        log_pool_start=np.concatenate([[0], np.cumsum(pool_sizes)[:-1]]),
        log_pool_size=pool_sizes,
        received_messages=pa.array(messages(_RECEIVED_TEMPLATES, 16), pa.string()),
        orphan_messages=pa.array(messages(_ORPHAN_TEMPLATES, 32), pa.string()),
        user_ids=pa.array([f"user-{i:05d}" for i in range(_USERS)], pa.string()),
        model_names=pa.array(ALLOWED_MODELS + UNKNOWN_MODELS, pa.string()),
        statuses=pa.array(_STATUSES, pa.string()),
        levels=pa.array(_LEVELS, pa.string()),
    )


# --------------------------------------------------------------------------------------------
# Vectorised column builders
# --------------------------------------------------------------------------------------------

_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _fixed_width_strings(chars: np.ndarray) -> pa.Array:
    """An Arrow string array from an ``(n, width)`` matrix of ASCII codes, without Python loops."""
    n, width = chars.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(
        n, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(chars, dtype=np.uint8))
    )


def _hex(raw: np.ndarray) -> np.ndarray:
    """``(n, k)`` bytes to the ``(n, 2k)`` ASCII codes of their lowercase hex digits."""
    out = np.empty((raw.shape[0], raw.shape[1] * 2), dtype=np.uint8)
    out[:, 0::2] = _HEX_DIGITS[raw >> 4]
    out[:, 1::2] = _HEX_DIGITS[raw & 0x0F]
    return out


def _uuid4_strings(rng: np.random.Generator, n: int) -> pa.Array:
    """Random version-4 UUIDs in canonical lowercase text form."""
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    digits = _hex(raw)
    chars = np.full((n, 36), ord("-"), dtype=np.uint8)
    for (out_start, out_end), (in_start, in_end) in (
        ((0, 8), (0, 8)),
        ((9, 13), (8, 12)),
        ((14, 18), (12, 16)),
        ((19, 23), (16, 20)),
        ((24, 36), (20, 32)),
    ):
        chars[:, out_start:out_end] = digits[:, in_start:in_end]
    return _fixed_width_strings(chars)


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """A well-mixed 64-bit hash (SplitMix64 finaliser); uint64 arithmetic wraps by design."""
    z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _session_ids(seed: int, user_index: np.ndarray, timestamps_us: np.ndarray) -> pa.Array:
    """``sess-<16 hex>``: one id per user and 30-minute window, so sessions span requests."""
    window = timestamps_us // _SESSION_WINDOW_US
    key = (user_index.astype(np.uint64) << np.uint64(32)) ^ window.astype(np.uint64)
    hashed = _splitmix64(key ^ _splitmix64(np.full(len(key), seed, dtype=np.uint64)))
    raw = hashed.astype(">u8").view(np.uint8).reshape(-1, 8)
    chars = np.concatenate(
        [np.broadcast_to(np.frombuffer(b"sess-", dtype=np.uint8), (len(key), 5)), _hex(raw)], axis=1
    )
    return _fixed_width_strings(chars)


def _decimal_from_micros(micros: np.ndarray) -> pa.Array:
    """``decimal128(12, 6)`` from integer micro-units: the unscaled value is the integer itself.

    Arrow stores a decimal128 as a 16-byte little-endian two's complement integer, so the array
    is built from (low word, sign word) pairs instead of a lossy float or a slow string round trip.
    """
    words = np.empty((len(micros), 2), dtype="<i8")
    words[:, 0] = micros
    words[:, 1] = micros >> 63
    return pa.Array.from_buffers(pa.decimal128(12, 6), len(micros), [None, pa.py_buffer(words)])


def _timestamps(us: np.ndarray) -> pa.Array:
    return pa.array(us.astype(np.int64), type=_TS)


def _text_bounds(
    pools: _TextPools, start_sentence: np.ndarray, target_bytes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Byte range of whole corpus sentences from ``start_sentence`` covering ``target_bytes`` (> 0).

    Cutting only at sentence starts keeps every text valid UTF-8, which lets :func:`_slices`
    assemble the Arrow array straight from the corpus bytes.
    """
    starts = pools.sentence_starts[start_sentence]
    end_sentence = np.searchsorted(
        pools.sentence_starts, starts + np.maximum(target_bytes, 1), side="left"
    )
    return starts, pools.sentence_starts[end_sentence]


def _slices(corpus: bytes, starts: np.ndarray, ends: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Arrow strings ``corpus[start:end]`` (UTF-8 boundaries assumed) and their byte lengths."""
    lengths = ends - starts
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    if offsets[-1] >= 2**31:  # cannot happen at CHUNK_ROWS rows of at most ~15 KB (and rare MBs)
        raise OverflowError(f"{offsets[-1]} bytes of text in one chunk exceed Arrow's string type")
    data = b"".join(map(corpus.__getitem__, map(slice, starts.tolist(), ends.tolist())))
    buffers = [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)]
    return pa.Array.from_buffers(pa.string(), len(lengths), buffers), lengths


def _random_sentences(
    pools: _TextPools, rng: np.random.Generator, multilingual: np.ndarray, max_bytes: int
) -> np.ndarray:
    """A start sentence per row, English or multilingual, at least ``max_bytes`` before the end."""
    starts = pools.sentence_starts
    english_last = int(np.searchsorted(starts, pools.english_bytes - max_bytes)) - 1
    multilingual_first = pools.english_sentences
    multilingual_last = int(np.searchsorted(starts, len(pools.corpus) - max_bytes)) - 1
    english = rng.integers(0, english_last, size=len(multilingual))
    other = rng.integers(multilingual_first, multilingual_last, size=len(multilingual))
    return np.where(multilingual, other, english)


def _pick(pool: pa.Array, rng: np.random.Generator, n: int) -> pa.Array:
    return pool.take(pa.array(rng.integers(0, len(pool), size=n)))


def _children(
    rng: np.random.Generator,
    parents: int,
    choices: tuple[tuple[int, ...], tuple[float, ...]],
    at_least_one: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Child rows per parent: (parent index of each child, its ordinal 0.. within the parent)."""
    counts = rng.choice(np.array(choices[0]), size=parents, p=np.array(choices[1]))
    counts = np.where(at_least_one, np.maximum(counts, 1), counts)
    parent = np.repeat(np.arange(parents), counts)
    ordinal = np.arange(len(parent)) - np.repeat(np.cumsum(counts) - counts, counts)
    return parent, ordinal


@dataclass(frozen=True)
class _DayFrame:
    """What every chunk of one day needs to know about the day."""

    day: dt.date
    start_us: int
    gap: tuple[int, int] | None  # [start, end) of the missing hour in epoch µs

    @property
    def last_us(self) -> int:
        return self.start_us + _US_PER_DAY - 1

    def keep_clear(self, candidate_us: np.ndarray, fallback_us: np.ndarray) -> np.ndarray:
        """``candidate_us`` clamped to the day, and ``fallback_us`` where it falls into the gap."""
        clamped = np.minimum(candidate_us, self.last_us)
        if self.gap is None:
            return clamped
        in_gap = (clamped >= self.gap[0]) & (clamped < self.gap[1])
        return np.where(in_gap, fallback_us, clamped)


def _day_timestamps(
    rng: np.random.Generator, frame: _DayFrame, rows: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted event times of a day's interactions and masks of its first/last boundary rows."""
    gap_hour = None if frame.gap is None else (frame.gap[0] - frame.start_us) // _US_PER_HOUR
    boundary = []
    if rows >= 1 and gap_hour != 0:
        boundary.append(0)
    if rows >= 2 and gap_hour != 23:
        boundary.append(_US_PER_DAY - 1)
    span = _US_PER_DAY - (_US_PER_HOUR if frame.gap is not None else 0)
    offsets = rng.integers(0, span, size=rows - len(boundary))
    if gap_hour is not None:
        offsets = np.where(offsets >= gap_hour * _US_PER_HOUR, offsets + _US_PER_HOUR, offsets)
    kind = np.concatenate(
        [
            np.array([1 if b == 0 else 2 for b in boundary], dtype=np.int8),
            np.zeros(len(offsets), dtype=np.int8),
        ]
    )
    all_offsets = np.concatenate([np.array(boundary, dtype=np.int64), offsets])
    order = np.lexsort((np.arange(len(all_offsets)), all_offsets))  # ties keep boundary rows first
    return frame.start_us + all_offsets[order], kind[order] == 1, kind[order] == 2


def _build_batch(
    rng: np.random.Generator,
    seed: int,
    frame: _DayFrame,
    ts: np.ndarray,
    first: np.ndarray,
    last: np.ndarray,
    rates: DefectRates,
    next_metadata_id: int,
    next_log_id: int,
) -> SourceBatch:
    """One chunk's interactions and their metadata and log rows."""
    pools = _text_pools()
    n = len(ts)
    boundary = first | last
    defects: Counter[str] = Counter()

    interaction_ids = _uuid4_strings(rng, n)
    model = rng.choice(len(ALLOWED_MODELS), size=n, p=np.array(_MODEL_WEIGHTS))
    status = rng.choice(len(_STATUSES), size=n, p=np.array(_STATUS_WEIGHTS))
    status[first] = 0
    status[last] = 2

    # Latency by status and model; the boundary rows sit on the edges of the valid range.
    latency = np.clip(rng.lognormal(np.log(900), 0.8, n) * _MODEL_LATENCY_FACTOR[model], 20, 60_000)
    latency = np.where(status == 1, np.clip(rng.lognormal(np.log(300), 1.0, n), 5, 30_000), latency)
    latency = np.where(status == 2, rng.integers(30_000, MAX_LATENCY_MS + 1, n), latency)
    latency = latency.astype(np.int64)
    latency[first] = 0
    latency[last] = MAX_LATENCY_MS
    # What the request really took (log times follow it); the defects only corrupt the column.
    true_latency = latency.copy()

    # Text: a share of rows multilingual; errors answer '' and timeouts NULL.
    multilingual = rng.random(n) < _UNICODE_ROW_SHARE
    prompt_target = np.clip(rng.lognormal(np.log(500), 0.7, n), 80, 6000).astype(np.int64)
    response_target = np.clip(rng.lognormal(np.log(1100), 0.6, n), 100, 8000).astype(np.int64)
    prompts, prompt_bytes = _slices(
        pools.corpus,
        *_text_bounds(pools, _random_sentences(pools, rng, multilingual, 6000), prompt_target),
    )
    response_start, response_end = _text_bounds(
        pools, _random_sentences(pools, rng, multilingual, 8000), response_target
    )
    huge = (rng.random(n) < _HUGE_RESPONSE_RATE) & (status == 0)
    response_start = np.where(huge, 0, response_start)
    response_end = np.where(huge, pools.english_bytes, response_end)
    response_end = np.where(status == 0, response_end, response_start)  # '' for errors and timeouts
    responses, response_bytes = _slices(pools.corpus, response_start, response_end)
    responses = pc.if_else(pa.array(status == 2), pa.scalar(None, pa.string()), responses)

    prompt_tokens = np.maximum(1, np.rint(prompt_bytes / 4 * rng.uniform(0.8, 1.2, n))).astype(
        np.int64
    )
    completion_tokens = np.where(
        status == 0, np.maximum(1, np.rint(response_bytes / 4 * rng.uniform(0.8, 1.2, n))), 0
    ).astype(np.int64)
    cost_micros = np.rint(
        prompt_tokens * _PRICE_IN_MICROS[model] + completion_tokens * _PRICE_OUT_MICROS[model]
    ).astype(np.int64)

    error_messages = pc.if_else(
        pa.array(status == 1),
        _pick(pools.error_messages, rng, n),
        pc.if_else(
            pa.array(status == 2),
            _pick(pools.timeout_messages, rng, n),
            pa.scalar(None, pa.string()),
        ),
    )
    # Squaring a uniform draw skews the users: a few heavy ones, a long tail of occasional ones.
    user_index = np.minimum((rng.random(n) ** 2 * _USERS).astype(np.int64), _USERS - 1)

    # Defects: one uniform draw per row, cut into consecutive intervals, so at most one each.
    draw = rng.random(n)
    draw[boundary] = 2.0  # boundary rows stay clean
    names = ("model_null", "latency_null", "latency_out_of_range", "unknown_model")
    edges = np.cumsum([getattr(rates, name) for name in names])
    kinds = np.searchsorted(edges, draw, side="right")  # 0..3 a defect, 4 none
    model_index = model.copy()
    unknown = kinds == 3
    model_index[unknown] = len(ALLOWED_MODELS) + rng.integers(
        0, len(UNKNOWN_MODELS), int(unknown.sum())
    )
    out_of_range = kinds == 2
    latency[out_of_range] = np.where(
        rng.random(int(out_of_range.sum())) < 0.5,
        rng.integers(-5_000, 0, int(out_of_range.sum())),
        rng.integers(MAX_LATENCY_MS + 1, 600_001, int(out_of_range.sum())),
    )
    for index, name in enumerate(names):
        defects[name] += int((kinds == index).sum())

    last_modified = ts + rng.integers(_US_PER_SECOND, 600 * _US_PER_SECOND + 1, n)
    interactions = pa.Table.from_arrays(
        [
            interaction_ids,
            _timestamps(ts),
            pools.model_names.take(pa.array(model_index, mask=kinds == 0)),
            pa.array(latency, type=pa.int32(), mask=kinds == 1),
            prompts,
            responses,
            pa.array(prompt_tokens, type=pa.int32()),
            pa.array(completion_tokens, type=pa.int32()),
            pools.statuses.take(pa.array(status)),
            error_messages,
            pools.user_ids.take(pa.array(user_index)),
            _session_ids(seed, user_index, ts),
            _decimal_from_micros(cost_micros),
            _timestamps(last_modified),
        ],
        schema=ARROW_SCHEMAS[INTERACTIONS],
    )

    # Metadata: about one row per interaction, created just after it, on the same UTC day.
    parent, ordinal = _children(rng, n, _METADATA_PER_INTERACTION, boundary)
    m = len(parent)
    delay = np.where(
        ordinal == 0,
        rng.integers(0, 2 * _US_PER_SECOND, m),
        rng.integers(0, 120 * _US_PER_SECOND, m),
    )
    delay[(ordinal == 0) & boundary[parent]] = 0
    created = frame.keep_clear(ts[parent] + delay, ts[parent])
    attribute_draw = rng.random(m)
    invalid = attribute_draw < rates.invalid_json
    null = ~invalid & (attribute_draw < rates.invalid_json + _ATTRIBUTES_NULL_RATE)
    attributes = pc.if_else(
        pa.array(invalid),
        _pick(pools.attributes_invalid, rng, m),
        pc.if_else(
            pa.array(null), pa.scalar(None, pa.string()), _pick(pools.attributes_valid, rng, m)
        ),
    )
    defects["invalid_json"] += int(invalid.sum())
    metadata_modified = created + rng.integers(0, 60 * _US_PER_SECOND, m)
    order = np.lexsort((np.arange(m), created))
    metadata = pa.Table.from_arrays(
        [
            pa.array(np.arange(next_metadata_id, next_metadata_id + m, dtype=np.int64)),
            interaction_ids.take(pa.array(parent[order])),
            _timestamps(created[order]),
            attributes.take(pa.array(order)),
            _timestamps(metadata_modified[order]),
        ],
        schema=ARROW_SCHEMAS[METADATA],
    )

    # Logs: the first at the request's instant, the rest during the request; plus orphan logs.
    parent, ordinal = _children(rng, n, _LOGS_PER_INTERACTION, boundary)
    k = len(parent)
    during = (rng.random(k) * (np.maximum(true_latency[parent], 0) + 500) * 1000).astype(np.int64)
    attached_created = frame.keep_clear(ts[parent] + np.where(ordinal == 0, 0, during), ts[parent])
    level = rng.choice(len(_LEVELS), size=k, p=np.array(_LEVEL_WEIGHTS))
    final = (ordinal > 0) & (ordinal == np.bincount(parent, minlength=n)[parent] - 1)
    level = np.where(final & (status[parent] == 1), 3, level)  # errors end with an ERROR log
    level = np.where(final & (status[parent] == 2), 2, level)  # timeouts with a WARNING
    level = np.where(ordinal == 0, 0, level)
    message_index = pools.log_pool_start[level] + (
        rng.random(k) * pools.log_pool_size[level]
    ).astype(np.int64)
    attached_messages = pc.if_else(
        pa.array(ordinal == 0),
        _pick(pools.received_messages, rng, k),
        pools.log_messages.take(pa.array(message_index)),
    )
    orphans = int(rng.binomial(n, _ORPHAN_LOG_RATE))
    orphan_created = frame.keep_clear(  # within the chunk's time span, never in the gap
        rng.integers(int(ts[0]), int(ts[-1]) + 1, orphans), ts[rng.integers(0, n, orphans)]
    )
    orphan_level = rng.choice(len(_LEVELS), size=orphans, p=np.array(_ORPHAN_LEVEL_WEIGHTS))
    log_created = np.concatenate([attached_created, orphan_created])
    log_modified = log_created + rng.integers(0, 2 * _US_PER_SECOND, k + orphans)
    log_interaction = pa.concat_arrays(
        [interaction_ids.take(pa.array(parent)), pa.nulls(orphans, pa.string())]
    )
    log_level = pools.levels.take(pa.array(np.concatenate([level, orphan_level])))
    log_message = pa.concat_arrays([attached_messages, _pick(pools.orphan_messages, rng, orphans)])
    order = pa.array(np.lexsort((np.arange(k + orphans), log_created)))
    logs = pa.Table.from_arrays(
        [
            pa.array(np.arange(next_log_id, next_log_id + k + orphans, dtype=np.int64)),
            log_interaction.take(order),
            _timestamps(log_created).take(order),
            log_level.take(order),
            log_message.take(order),
            _timestamps(log_modified).take(order),
        ],
        schema=ARROW_SCHEMAS[LOGS],
    )
    return SourceBatch(frame.day, interactions, metadata, logs, dict(defects))


def _missing_hour(start_date: dt.date, days: int, rates: DefectRates) -> dt.datetime | None:
    if rates.missing_hour is None or rates.missing_hour[0] >= days:
        return None
    day_index, hour = rates.missing_hour
    day = start_date + dt.timedelta(days=day_index)
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.UTC)


def generate_batches(
    *,
    start_date: dt.date,
    days: int,
    rows_per_day: int,
    seed: int = 7,
    defects: DefectRates | None = None,
    first_metadata_id: int = 1,
    first_log_id: int = 1,
) -> Iterator[SourceBatch]:
    """The rows :func:`generate_source` loads, as Arrow batches, without touching a database.

    Batches come in time order, one or more per day (at most :data:`CHUNK_ROWS` interactions
    each). Useful to compute expected values, or to load a target this module has no path for.
    """
    if days < 0 or rows_per_day < 0:
        raise ValueError(f"days and rows_per_day must be >= 0, got {days} and {rows_per_day}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    rates = defects if defects is not None else DefectRates()
    gap_start = _missing_hour(start_date, days, rates)
    next_metadata_id, next_log_id = first_metadata_id, first_log_id
    for day_index in range(days):
        day = start_date + dt.timedelta(days=day_index)
        start_us = (day - _EPOCH).days * _US_PER_DAY
        gap = None
        if gap_start is not None and gap_start.date() == day:
            gap_us = start_us + gap_start.hour * _US_PER_HOUR
            gap = (gap_us, gap_us + _US_PER_HOUR)
        frame = _DayFrame(day, start_us, gap)
        ts, first, last = _day_timestamps(
            np.random.default_rng([seed, day.toordinal()]), frame, rows_per_day
        )
        for chunk, begin in enumerate(range(0, rows_per_day, CHUNK_ROWS)):
            window = slice(begin, begin + CHUNK_ROWS)
            batch = _build_batch(
                np.random.default_rng([seed, day.toordinal(), chunk + 1]),
                seed,
                frame,
                ts[window],
                first[window],
                last[window],
                rates,
                next_metadata_id,
                next_log_id,
            )
            next_metadata_id += batch.metadata.num_rows
            next_log_id += batch.logs.num_rows
            yield batch


# --------------------------------------------------------------------------------------------
# Loading: one sink per database family
# --------------------------------------------------------------------------------------------


class _Sink(Protocol):
    """How batches reach one kind of database, inside one transaction."""

    def prepare(self, replace: bool) -> tuple[int, int]:
        """Open the transaction, create the tables; return the next metadata_id and log_id."""

    def encode(self, table: str, rows: pa.Table) -> Any:
        """Turn ``rows`` into what :meth:`write` sends; runs in the generator's thread."""

    def write(self, table: str, payload: Any) -> None: ...

    def finish(self) -> None:
        """Build deferred indexes, commit, refresh the planner's statistics."""

    def abort(self) -> None: ...


def _quoted_columns(table: sa.Table, dialect: sa.Dialect) -> str:
    preparer = dialect.identifier_preparer
    return ", ".join(preparer.quote(column.name) for column in table.columns)


def _reference_tables() -> list[sa.Table]:
    return [REFERENCE_METADATA.tables[name] for name in TABLE_NAMES]


def _next_ids(connection: sa.Connection) -> tuple[int, int]:
    """One past the largest existing ids, so appended rows never collide."""
    metadata_table = REFERENCE_METADATA.tables[METADATA]
    logs_table = REFERENCE_METADATA.tables[LOGS]
    last_metadata = connection.execute(sa.select(sa.func.max(metadata_table.c.metadata_id)))
    last_log = connection.execute(sa.select(sa.func.max(logs_table.c.log_id)))
    return (last_metadata.scalar() or 0) + 1, (last_log.scalar() or 0) + 1


def _create_tables(connection: sa.Connection, replace: bool) -> bool:
    """Create the reference tables; return whether their secondary indexes are still to build.

    Replacing drops and recreates the tables without secondary indexes, which are built once
    after the load (one sort instead of millions of B-tree insertions); appending creates only
    what is missing, indexes included.
    """
    if not replace:
        REFERENCE_METADATA.create_all(connection, tables=_reference_tables(), checkfirst=True)
        return False
    for table in reversed(_reference_tables()):
        table.drop(connection, checkfirst=True)
    for table in _reference_tables():
        connection.execute(CreateTable(table))
    return True


def _create_indexes(connection: sa.Connection) -> None:
    for table in _reference_tables():
        for index in sorted(table.indexes, key=lambda index: index.name or ""):
            connection.execute(CreateIndex(index))


def _table_columns(rows: pa.Table) -> list[pa.Array]:
    return [column.combine_chunks() for column in rows.columns]


_PG_EPOCH_US = (dt.date(2000, 1, 1) - _EPOCH).days * _US_PER_DAY
_PG_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)  # signature, flags, extension
_PG_COPY_TRAILER = struct.pack(">h", -1)
_PG_NULL = pa.scalar(struct.pack(">i", -1), pa.large_binary())


def _cells(matrix: np.ndarray) -> pa.Array:
    """One ``large_binary`` value per row of an ``(n, width)`` byte matrix."""
    n, width = matrix.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int64)
    data = pa.py_buffer(np.ascontiguousarray(matrix))
    return pa.Array.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(offsets), data])


def _fixed_cells(values: np.ndarray, big_endian_dtype: str) -> pa.Array:
    """COPY BINARY fields (int32 length, then the big-endian value) of a fixed-width column."""
    width = np.dtype(big_endian_dtype).itemsize
    matrix = np.empty((len(values), 4 + width), dtype=np.uint8)
    matrix[:, :4] = np.frombuffer(struct.pack(">i", width), dtype=np.uint8)
    matrix[:, 4:] = values.astype(big_endian_dtype).view(np.uint8).reshape(len(values), width)
    return _cells(matrix)


def _decimal_unscaled(column: pa.Array) -> np.ndarray:
    """The unscaled integers of a ``decimal128`` column (exact while they fit in 64 bits)."""
    words = np.frombuffer(column.buffers()[1], dtype="<i8").reshape(-1, 2)
    return words[column.offset : column.offset + len(column), 0]


def _numeric_cells(unscaled_micros: np.ndarray) -> pa.Array:
    """PostgreSQL's binary ``numeric`` for values of scale 6 below 10**8 in magnitude.

    The wire format is (ndigits, weight, sign, dscale) then base-10000 digits. Every value is
    sent with the same four digits, two before the point and two after; the server strips
    leading and trailing zero digits itself (``make_result``), so the fixed width is valid
    input and keeps the encoding a pure array computation.
    """
    n = len(unscaled_micros)
    magnitude = np.abs(unscaled_micros)
    integer, fraction = magnitude // 1_000_000, (magnitude % 1_000_000) * 100
    words = np.empty((n, 8), dtype=">i2")
    words[:, 0] = 4  # ndigits
    words[:, 1] = 1  # weight: the first digit counts 10000**1
    words[:, 2] = np.where(unscaled_micros < 0, 0x4000, 0x0000)  # NUMERIC_NEG / NUMERIC_POS
    words[:, 3] = 6  # dscale
    words[:, 4], words[:, 5] = integer // 10_000, integer % 10_000
    words[:, 6], words[:, 7] = fraction // 10_000, fraction % 10_000
    matrix = np.empty((n, 4 + 16), dtype=np.uint8)
    matrix[:, :4] = np.frombuffer(struct.pack(">i", 16), dtype=np.uint8)
    matrix[:, 4:] = words.view(np.uint8).reshape(n, 16)
    return _cells(matrix)


def _pg_copy_binary(rows: pa.Table) -> memoryview:
    """The tuples of ``rows`` in PostgreSQL's COPY BINARY format, computed column-wise in Arrow.

    Each column becomes an array of encoded fields (length word and big-endian value, or -1
    for NULL); one ``binary_join_element_wise`` lays the fields out row after row, and the
    joined array's data buffer is the COPY stream: no Python code runs per row or per value.
    Handles exactly the types of :data:`ARROW_SCHEMAS`.
    """
    n = rows.num_rows
    field_count = pa.scalar(struct.pack(">h", rows.num_columns), pa.large_binary())
    fields: list[pa.Array | pa.Scalar] = [field_count]
    for column in _table_columns(rows):
        kind = column.type
        if pa.types.is_string(kind):
            lengths = pc.binary_length(column).fill_null(-1).to_numpy(zero_copy_only=False)
            fields.append(_cells(lengths.astype(">i4").view(np.uint8).reshape(n, 4)))
            fields.append(column.cast(pa.large_binary()).fill_null(b""))
            continue
        if pa.types.is_int32(kind):
            cells = _fixed_cells(column.fill_null(0).to_numpy(), ">i4")
        elif pa.types.is_int64(kind):
            cells = _fixed_cells(column.fill_null(0).to_numpy(), ">i8")
        elif pa.types.is_timestamp(kind) and kind.unit == "us":
            micros = column.cast(pa.int64()).fill_null(0).to_numpy()
            cells = _fixed_cells(micros - _PG_EPOCH_US, ">i8")
        elif pa.types.is_decimal(kind) and kind.scale == 6:
            cells = _numeric_cells(_decimal_unscaled(column))
        else:
            raise TypeError(f"no COPY BINARY encoding for column type {kind}")
        if column.null_count:
            cells = pc.if_else(column.is_valid(), cells, _PG_NULL)
        fields.append(cells)
    fields.append(pa.scalar(b"", pa.large_binary()))  # the separator
    joined = pc.binary_join_element_wise(*fields)
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int64)
    first, last = offsets[joined.offset], offsets[joined.offset + n]
    return memoryview(joined.buffers()[2])[first:last]


class _PostgresSink:
    """COPY FROM STDIN in PostgreSQL's binary format, one transaction for the whole load.

    Binary COPY spares the server parsing text (timestamps above all) and the client formatting
    it: the stream is computed from the Arrow columns (:func:`_pg_copy_binary`) in the
    generator's thread. Timestamps travel as UTC microseconds, so no session time zone can shift
    them. When replacing, the tables are created in this transaction, which allows
    ``COPY ... FREEZE``: rows land frozen on all-visible pages, so neither the first reader nor
    autovacuum rewrites the whole table afterwards; and the primary keys and indexes are built
    once, by sorting, after the rows are in.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.connection = engine.connect()
        self.replace = False

    def prepare(self, replace: bool) -> tuple[int, int]:
        self.replace = replace
        self.connection.begin()
        # pglz costs as much server CPU as the rest of the load; lz4 (PostgreSQL 14+ built
        # --with-lz4, as Debian's and the official images are) compresses TOASTed text far faster.
        lz4 = self.connection.exec_driver_sql(
            "SELECT 1 FROM pg_settings "
            "WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)"
        ).first()
        if lz4:
            self.connection.exec_driver_sql("SET LOCAL default_toast_compression = 'lz4'")
        self.connection.exec_driver_sql("SET LOCAL maintenance_work_mem = '256MB'")
        _create_tables(self.connection, replace)
        if replace:
            for table in _reference_tables():
                self.connection.exec_driver_sql(self._primary_key_ddl(table, add=False))
        return _next_ids(self.connection)

    def _primary_key_ddl(self, table: sa.Table, *, add: bool) -> str:
        """``ALTER TABLE`` text for the table's primary key.

        Plain text on purpose: SQLAlchemy's ``AddConstraint``/``DropConstraint`` would also mark
        the shared ``Table``'s key as created separately, dropping it from later ``CREATE TABLE``s.
        """
        preparer = self.engine.dialect.identifier_preparer
        key = table.primary_key
        target = f"ALTER TABLE {preparer.format_table(table)}"
        if not add:
            return f"{target} DROP CONSTRAINT {preparer.format_constraint(key)}"
        columns = ", ".join(preparer.quote(column.name) for column in key.columns)
        return f"{target} ADD CONSTRAINT {preparer.format_constraint(key)} PRIMARY KEY ({columns})"

    def encode(self, table: str, rows: pa.Table) -> memoryview | None:
        return _pg_copy_binary(rows) if rows.num_rows else None

    def write(self, table: str, payload: memoryview | None) -> None:
        if payload is None:
            return
        reference = REFERENCE_METADATA.tables[table]
        target = self.engine.dialect.identifier_preparer.format_table(reference)
        columns = _quoted_columns(reference, self.engine.dialect)
        options = "FORMAT binary, FREEZE" if self.replace else "FORMAT binary"
        statement = f"COPY {target} ({columns}) FROM STDIN WITH ({options})"
        cursor = self.connection.connection.driver_connection.cursor()
        with cursor, cursor.copy(statement) as copy:
            copy.write(_PG_COPY_HEADER)
            copy.write(payload)
            copy.write(_PG_COPY_TRAILER)

    def finish(self) -> None:
        if self.replace:
            for table in _reference_tables():
                self.connection.exec_driver_sql(self._primary_key_ddl(table, add=True))
            _create_indexes(self.connection)
        self.connection.commit()
        self.connection.close()
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            for table in _reference_tables():
                target = self.engine.dialect.identifier_preparer.format_table(table)
                connection.exec_driver_sql(f"ANALYZE {target}")

    def abort(self) -> None:
        self.connection.rollback()
        self.connection.close()


_DIGITS = np.arange(ord("0"), ord("9") + 1, dtype=np.uint8)


def _utc_text(column: pa.Array) -> list[str]:
    """``YYYY-MM-DD HH:MM:SS.ffffff`` (UTC) for each timestamp: SQLAlchemy's SQLite storage format.

    Computed with integer arithmetic on the microseconds: Arrow's ``strftime`` goes through the
    time zone database per value and is some fifty times slower.
    """
    micros = column.cast(pa.int64()).to_numpy()
    days, in_day = np.divmod(micros, _US_PER_DAY)
    dates = days.astype("datetime64[D]")
    months = dates.astype("datetime64[M]")
    fields = (
        (dates.astype("datetime64[Y]").astype(np.int64) + 1970, 4, 0),
        (months.astype(np.int64) % 12 + 1, 2, 5),
        ((dates - months).astype(np.int64) + 1, 2, 8),
        (in_day // _US_PER_HOUR, 2, 11),
        (in_day // (60 * _US_PER_SECOND) % 60, 2, 14),
        (in_day // _US_PER_SECOND % 60, 2, 17),
        (in_day % _US_PER_SECOND, 6, 20),
    )
    chars = np.frombuffer(b"0000-00-00 00:00:00.000000", dtype=np.uint8)
    chars = np.tile(chars, (len(micros), 1))
    for values, width, position in fields:
        for digit in range(width):
            chars[:, position + width - 1 - digit] = _DIGITS[values // 10**digit % 10]
    return _fixed_width_strings(chars).to_pylist()


class _SqliteSink:
    """The raw ``sqlite3`` connection's ``executemany``, all in one transaction.

    Values are bound as SQLAlchemy binds them (timestamps as UTC text with microseconds,
    decimals as floats), so SQLAlchemy reads the rows back exactly. Loading runs with
    ``synchronous=OFF`` and builds the secondary indexes at the end. The database is put in WAL
    mode (persistent), so readers and a writer (the incremental tests) can share it.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.dialect = engine.dialect
        self.proxy = engine.raw_connection()
        self.raw = self.proxy.driver_connection
        self.saved_isolation = self.raw.isolation_level
        self.replace = False
        self.statements = {
            table.name: "INSERT INTO {} ({}) VALUES ({})".format(
                self.dialect.identifier_preparer.format_table(table),
                _quoted_columns(table, self.dialect),
                ", ".join("?" * len(table.columns)),
            )
            for table in _reference_tables()
        }

    def _ddl(self, statement: sa.schema.ExecutableDDLElement) -> None:
        self.raw.execute(str(statement.compile(dialect=self.dialect)))

    def prepare(self, replace: bool) -> tuple[int, int]:
        self.replace = replace
        self.raw.isolation_level = None  # autocommit mode: the explicit BEGIN/COMMIT rule
        # Switching needs the database to itself (unless it is in WAL mode already); if another
        # connection holds it, load in its current journal mode.
        with suppress(sqlite3.OperationalError):
            self.raw.execute("PRAGMA journal_mode=WAL")
        self.raw.execute("PRAGMA synchronous=OFF")
        self.raw.execute("PRAGMA cache_size=-131072")  # 128 MiB while loading
        self.raw.execute("BEGIN")
        for table in reversed(_reference_tables()) if replace else ():
            self._ddl(sa.schema.DropTable(table, if_exists=True))
        for table in _reference_tables():
            self._ddl(CreateTable(table, if_not_exists=True))
            for index in () if replace else table.indexes:
                self._ddl(CreateIndex(index, if_not_exists=True))
        ((next_metadata,),) = self.raw.execute(
            "SELECT coalesce(max(metadata_id), 0) + 1 FROM metadata"
        )
        ((next_log,),) = self.raw.execute("SELECT coalesce(max(log_id), 0) + 1 FROM logs")
        return next_metadata, next_log

    def encode(self, table: str, rows: pa.Table) -> list[tuple[Any, ...]]:
        columns: list[list[Any]] = []
        for column in _table_columns(rows):
            if pa.types.is_timestamp(column.type):
                columns.append(_utc_text(column))
            elif pa.types.is_decimal(column.type):
                # micros / 1e6 is the correctly rounded double, as float(Decimal) gives;
                # Arrow's decimal-to-float cast is not always.
                floats = (_decimal_unscaled(column) / 1e6).tolist()
                valid = column.is_valid().to_pylist()
                columns.append([f if ok else None for f, ok in zip(floats, valid, strict=True)])
            else:
                columns.append(column.to_pylist())
        return list(zip(*columns, strict=True))

    def write(self, table: str, payload: list[tuple[Any, ...]]) -> None:
        self.raw.executemany(self.statements[table], payload)

    def finish(self) -> None:
        if self.replace:
            for table in _reference_tables():
                for index in sorted(table.indexes, key=lambda index: index.name or ""):
                    self._ddl(CreateIndex(index))
        self.raw.execute("COMMIT")
        self.raw.execute("ANALYZE")
        self.raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # best effort: skipped while read
        self.raw.execute("PRAGMA synchronous=NORMAL")
        self._close()

    def abort(self) -> None:
        if self.raw.in_transaction:
            self.raw.execute("ROLLBACK")
        self._close()

    def _close(self) -> None:
        self.raw.isolation_level = self.saved_isolation
        self.proxy.close()


class _SqlAlchemySink:
    """Any other dialect (SQL Server among them): ``insert()`` executemany per batch.

    Slow next to COPY, but it goes through the dialect's own type handling, so aware UTC
    datetimes and ``Decimal`` values land as each driver expects.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.connection = engine.connect()
        self.deferred_indexes = False

    def prepare(self, replace: bool) -> tuple[int, int]:
        self.connection.begin()
        self.deferred_indexes = _create_tables(self.connection, replace)
        return _next_ids(self.connection)

    def encode(self, table: str, rows: pa.Table) -> list[dict[str, Any]]:
        return rows.to_pylist()

    def write(self, table: str, payload: list[dict[str, Any]]) -> None:
        if payload:
            self.connection.execute(REFERENCE_METADATA.tables[table].insert(), payload)

    def finish(self) -> None:
        if self.deferred_indexes:
            _create_indexes(self.connection)
        self.connection.commit()
        self.connection.close()

    def abort(self) -> None:
        self.connection.rollback()
        self.connection.close()


def _sink_for(engine: sa.Engine) -> _Sink:
    if engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg":
        return _PostgresSink(engine)
    if engine.dialect.name == "sqlite" and engine.dialect.driver == "pysqlite":
        return _SqliteSink(engine)
    return _SqlAlchemySink(engine)


_T = TypeVar("_T")


def _in_background(items: Iterator[_T], depth: int = 2) -> Iterator[_T]:
    """Run ``items`` in a producer thread, ``depth`` ahead, so producing overlaps consuming.

    NumPy, Arrow and the database drivers release the GIL for their heavy work, so on two or
    more cores generation and encoding run beside the database's ingestion. The order of the
    items, and so the data, is unchanged. A failure on either side stops the other; close the
    returned generator (``contextlib.closing``) to stop the thread early.
    """
    handoff: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: tuple[str, Any]) -> bool:
        """Hand ``item`` over unless the consumer has gone; never block forever."""
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(("item", item)):
                    return
            offer(("done", None))
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which re-raises it
            offer(("error", error))

    producer = threading.Thread(target=produce, name="synthetic-generator", daemon=True)
    producer.start()
    try:
        while True:
            kind, payload = handoff.get()
            if kind == "done":
                return
            if kind == "error":
                raise payload
            yield payload
    finally:
        stop.set()
        producer.join()


def _engine(url: str) -> sa.Engine:
    parsed = sa.make_url(url)
    options: dict[str, Any] = {"poolclass": NullPool}
    if parsed.get_backend_name() == "mssql" and parsed.get_driver_name() == "pyodbc":
        options["fast_executemany"] = True
    return sa.create_engine(parsed, **options)


def generate_source(
    url: str,
    *,
    start_date: dt.date,
    days: int,
    rows_per_day: int,
    seed: int = 7,
    defects: DefectRates | None = None,
    replace: bool = True,
    progress: Callable[[dt.date, dict[str, int]], None] | None = None,
) -> SyntheticSummary:
    """Create the reference tables at ``url`` and fill them with ``days`` days of rows.

    ``replace=True`` drops the three tables first; ``replace=False`` appends (creating missing
    tables), continuing ``metadata_id``/``log_id`` after the existing maximum; interaction ids
    are seeded per day, so appending days already present with the same seed collides.
    Everything is loaded in one transaction: on failure the database is left as it was (for
    PostgreSQL and SQLite; other dialects as far as their DDL is transactional).
    ``progress(day, rows_per_table)`` is called after each batch is written.
    """
    rates = defects if defects is not None else DefectRates()
    started = time.perf_counter()
    engine = _engine(url)
    rows: Counter[str] = Counter({name: 0 for name in TABLE_NAMES})
    rows_by_day: dict[str, Counter[dt.date]] = {name: Counter() for name in TABLE_NAMES}
    defect_totals: Counter[str] = Counter({name: 0 for name in DEFECT_RULES})
    defects_by_day: dict[str, Counter[dt.date]] = {name: Counter() for name in DEFECT_RULES}
    try:
        sink = _sink_for(engine)
        try:
            first_metadata_id, first_log_id = sink.prepare(replace)
            batches = generate_batches(
                start_date=start_date,
                days=days,
                rows_per_day=rows_per_day,
                seed=seed,
                defects=rates,
                first_metadata_id=first_metadata_id,
                first_log_id=first_log_id,
            )
            # The producer thread generates and encodes; only row counts and payloads cross
            # over, so at most ``depth`` encoded batches (not their Arrow tables) wait in memory.
            encoded = (
                (
                    batch.day,
                    {name: batch.table(name).num_rows for name in TABLE_NAMES},
                    batch.defects,
                    {name: sink.encode(name, batch.table(name)) for name in TABLE_NAMES},
                )
                for batch in batches
            )
            with closing(_in_background(encoded)) as stream:
                for day, counts, batch_defects, payloads in stream:
                    for name in TABLE_NAMES:
                        sink.write(name, payloads[name])
                        rows[name] += counts[name]
                        if counts[name]:
                            rows_by_day[name][day] += counts[name]
                    for name, count in batch_defects.items():
                        defect_totals[name] += count
                        if count:
                            defects_by_day[name][day] += count
                    if progress is not None:
                        progress(day, counts)
            sink.finish()
        except BaseException:
            sink.abort()
            raise
    finally:
        engine.dispose()
    return SyntheticSummary(
        database=display_url(url),
        seed=seed,
        start_date=start_date,
        days=days,
        rows_per_day=rows_per_day,
        defect_rates=rates,
        rows=dict(rows),
        rows_by_day={name: dict(sorted(per_day.items())) for name, per_day in rows_by_day.items()},
        defects=dict(defect_totals),
        defects_by_day={
            name: dict(sorted(per_day.items())) for name, per_day in defects_by_day.items()
        },
        missing_hour=_missing_hour(start_date, days, rates),
        elapsed_seconds=time.perf_counter() - started,
    )


__all__ = [
    "ALLOWED_MODELS",
    "ARROW_SCHEMAS",
    "CHUNK_ROWS",
    "DEFECT_RULES",
    "MAX_LATENCY_MS",
    "UNKNOWN_MODELS",
    "DefectRates",
    "SourceBatch",
    "SyntheticSummary",
    "generate_batches",
    "generate_source",
]
