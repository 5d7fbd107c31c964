"""DuckDB side of the export benchmark: the same rows tidemark exports (one environment,
the same received_at range, the same columns and order) read from the same Parquet files of
the `events` Delta table and written with COPY ... (FORMAT parquet, COMPRESSION zstd), on
2 threads.

Usage: python3 export_duckdb.py DATA_DIR OUT_DIR FROM TO  -> one JSON line on stdout.
"""

import json
import os
import resource
import sys
import time

import duckdb

data, out, start, end = sys.argv[1:5]
os.makedirs(out, exist_ok=True)
con = duckdb.connect()
con.execute("SET threads = 2")
con.execute("SET TimeZone = 'UTC'")
target = os.path.join(out, "events.parquet")
files = os.path.join(data, "events", "**", "*.parquet")
started = time.perf_counter()
rows = con.execute(
    f"""COPY (
        SELECT event_id, event_name, category, user_id, occurred_at, received_at, platform, properties
        FROM read_parquet('{files}', hive_partitioning = true)
        WHERE environment = 'production'
          AND received_at >= TIMESTAMPTZ '{start}' AND received_at < TIMESTAMPTZ '{end}'
        ORDER BY received_at, event_id
    ) TO '{target}' (FORMAT parquet, COMPRESSION zstd)"""
).fetchone()[0]
seconds = time.perf_counter() - started
print(json.dumps({
    "step": "duckdb",
    "rows": rows,
    "seconds": seconds,
    "rows_per_second": rows / seconds,
    "bytes": os.path.getsize(target),
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    "duckdb_version": duckdb.__version__,
}))
