"""A deterministic synthetic copy of the source database, for the demo and the tests.

``generate_source(url, start_date=..., days=..., rows_per_day=...)`` builds the tables of the
reference source schema (``schema.py``) on SQLite, PostgreSQL or any SQLAlchemy database and
fills them with realistic rows, defects injected at known rates; the returned
``SyntheticSummary`` holds the exact row, defect and expected-quarantine counts per table and
day. Command line: ``python -m llm_observatory.synthetic --help``.
"""

from llm_observatory.synthetic.batches import generate_batches
from llm_observatory.synthetic.generator import generate_source
from llm_observatory.synthetic.schema import (
    INTERACTIONS,
    LOGS,
    METADATA,
    REFERENCE_METADATA,
    TABLE_NAMES,
    ddl_script,
    reference_metadata,
)
from llm_observatory.synthetic.spec import (
    ALLOWED_MODELS,
    ARROW_SCHEMAS,
    DEFECT_RULES,
    MAX_LATENCY_MS,
    UNKNOWN_MODELS,
    DefectRates,
    SourceBatch,
    SyntheticSummary,
)

__all__ = [
    "ALLOWED_MODELS",
    "ARROW_SCHEMAS",
    "DEFECT_RULES",
    "INTERACTIONS",
    "LOGS",
    "MAX_LATENCY_MS",
    "METADATA",
    "REFERENCE_METADATA",
    "TABLE_NAMES",
    "UNKNOWN_MODELS",
    "DefectRates",
    "SourceBatch",
    "SyntheticSummary",
    "ddl_script",
    "generate_batches",
    "generate_source",
    "reference_metadata",
]
