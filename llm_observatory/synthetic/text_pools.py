"""The text the rows are cut from: a fixed corpus of whole sentences (English, multilingual,
loader traps), the message pools of errors, timeouts and logs, and ``metadata.attributes`` JSON,
valid and broken. Built once per process from a fixed seed: the caller's seed only picks from it.
"""

from __future__ import annotations

import functools
import json
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from llm_observatory.synthetic.spec import (
    _POOL_SEED,
    _STATUSES,
    _USERS,
    ALLOWED_MODELS,
    UNKNOWN_MODELS,
)

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
