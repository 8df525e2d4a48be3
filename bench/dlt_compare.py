"""dlt on the same day's rows (the `bench` dependency group): `sql_table` into zstd Parquet on
a local filesystem destination, with connectorx and with its default pyarrow backend; the aims
set bronze beside dlt's best (rows/s, peak RSS).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from measuring import EVENT_TIME, TABLE, day_bounds, libpq_url, process_figures, status_kib

AIM_VS_DLT_SPEED = 1.2
AIM_VS_DLT_MEMORY = 0.25


DLT_CHUNK_ROWS = 100_000


def worker_dlt(args: argparse.Namespace) -> dict:
    """dlt 1.x `sql_table` of the day's rows into Parquet (zstd) on a local filesystem
    destination: `--worker dlt-connectorx` (its fastest: connectorx returning an Arrow stream in
    large chunks) or `dlt-pyarrow` (its default pyarrow backend)."""
    import warnings

    warnings.filterwarnings("ignore")
    backend = "connectorx" if args.worker == "dlt-connectorx" else "pyarrow"
    # dlt reads its configuration from the environment: zstd Parquet wherever it writes.
    for section in ("DATA_WRITER", "NORMALIZE__DATA_WRITER", "EXTRACT__DATA_WRITER"):
        os.environ[f"{section}__COMPRESSION"] = "zstd"
    os.environ["RUNTIME__LOG_LEVEL"] = "WARNING"
    import dlt
    import pyarrow.parquet as pq
    from dlt.sources.sql_database import sql_table

    source_url = os.environ["BENCH_SOURCE_URL"]
    start, end = day_bounds(args.day)
    destination_folder = Path(args.lake)
    destination_folder.mkdir(parents=True, exist_ok=True)

    def only_the_day(query, table):
        return query.where(table.c[EVENT_TIME] >= start, table.c[EVENT_TIME] < end)

    backend_kwargs = {}
    if backend == "connectorx":
        backend_kwargs = {
            "conn": libpq_url(source_url),
            "return_type": "arrow_stream",
            "batch_size": DLT_CHUNK_ROWS,
        }
    resource = sql_table(
        credentials=source_url,
        table=TABLE,
        backend=backend,
        chunk_size=DLT_CHUNK_ROWS,
        query_adapter_callback=only_the_day,
        backend_kwargs=backend_kwargs or None,
    )
    pipeline = dlt.pipeline(
        pipeline_name=f"bench_{backend}",
        destination=dlt.destinations.filesystem(bucket_url=destination_folder.as_uri()),
        dataset_name="bench",
        pipelines_dir=str(destination_folder.parent / f"dlt-pipelines-{destination_folder.name}"),
    )
    rss_before = status_kib("VmRSS") * 1024
    cpu_before = os.times()
    started = time.perf_counter()
    pipeline.run(resource, loader_file_format="parquet")
    wall = time.perf_counter() - started
    figures = process_figures(wall, cpu_before, rss_before)
    files = [path for path in destination_folder.rglob("*.parquet") if TABLE in str(path)]
    rows = sum(pq.ParquetFile(path).metadata.num_rows for path in files)
    codecs = sorted(
        {pq.ParquetFile(path).metadata.row_group(0).column(0).compression for path in files[:3]}
    )
    return {
        "path": args.worker,
        "rows": rows,
        "lake_bytes": sum(path.stat().st_size for path in files),
        "files": len(files),
        "compression": codecs,
        "dlt_version": dlt.__version__,
        **figures,
    }
