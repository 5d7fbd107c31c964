"""The SQL doors benchmark: the same queries through the embedded engine (`tidemark sql` on
the store, Arrow output), HTTP (`POST /v1/{env}/query`, Arrow IPC stream), Flight SQL
(ADBC) and Postgres (psycopg), and DuckDB over the same Parquet files, on 2 threads.

Usage: python3 query_doors.py BIN DATA HTTP_URL PG_PORT FLIGHT_URL KEY ENV
-> one JSON document on stdout: seconds per query and door (best of RUNS), ratios
against the embedded engine and against DuckDB, rows/s for the full-scan result.
"""

import json
import os
import subprocess
import sys
import time
import urllib.request

import adbc_driver_flightsql.dbapi as flightsql
import duckdb
import psycopg
import pyarrow as pa
import pyarrow.ipc

BIN, DATA, HTTP, PG_PORT, FLIGHT, KEY, ENV = sys.argv[1:8]
RUNS = 5

QUERIES = {
    # One row per user: what a data team's first rollup looks like (~1M rows).
    # (No count(DISTINCT …) beside other aggregates: DataFusion 55 keeps a hash set per
    # group for it, 4.6 GB for 1M events, which measures that operator, not the doors.)
    "per_user_rollup": """SELECT user_id, count(*) AS events, min(occurred_at) AS first_at,
        max(occurred_at) AS last_at, count(*) FILTER (WHERE category = 'custom') AS custom
        FROM events GROUP BY user_id""",
    # A dashboard tile: the ten most frequent events.
    "top_events": """SELECT event_name, count(*) AS n FROM events
        GROUP BY event_name ORDER BY n DESC, event_name LIMIT 10""",
    # A 10M-row answer: the doors' own throughput.
    "full_scan": "SELECT event_id, user_id, event_name, occurred_at FROM events",
}


def embedded(sql):
    out = subprocess.run(
        [BIN, "sql", "--data", DATA, "--env", ENV, "--format", "arrow", "--output", "/tmp/tm-q.arrow", sql],
        capture_output=True, env={**os.environ, "TIDEMARK_LOG": "warn"})
    if out.returncode != 0:
        raise RuntimeError(f"tidemark sql exited {out.returncode}: {out.stderr.decode()}")
    with pa.memory_map("/tmp/tm-q.arrow") as f:
        return pa.ipc.open_stream(f).read_all().num_rows


def http_arrow(sql):
    req = urllib.request.Request(
        HTTP + f"/v1/{ENV}/query", data=json.dumps({"sql": sql}).encode(),
        headers={"Authorization": "Bearer " + KEY, "Content-Type": "application/json",
                 "Accept": "application/vnd.apache.arrow.stream"})
    with urllib.request.urlopen(req, timeout=600) as resp:
        return pa.ipc.open_stream(resp).read_all().num_rows


FLIGHT_CONN = flightsql.connect(FLIGHT, db_kwargs={"username": ENV, "password": KEY}, autocommit=True)


def flight_adbc(sql):
    cur = FLIGHT_CONN.cursor()
    cur.execute(sql)
    n = cur.fetch_arrow_table().num_rows
    cur.close()
    return n


PG_CONN = psycopg.connect(host="127.0.0.1", port=int(PG_PORT), dbname=ENV, user="bench",
                          password=KEY, sslmode="disable", autocommit=True)


def pg_psycopg(sql):
    n = 0
    with PG_CONN.cursor() as cur:
        cur.execute(sql)
        for _ in cur:
            n += 1
    return n


DUCK = duckdb.connect()
DUCK.execute("SET threads = 2")
FILES = os.path.join(DATA, "events", "**", "*.parquet")
DUCK.execute(f"""CREATE VIEW events AS SELECT * FROM read_parquet('{FILES}', hive_partitioning = true)
    WHERE environment = '{ENV}'""")


def duck(sql):
    answer = DUCK.sql(sql).arrow()
    # DuckDB 2 answers a RecordBatchReader, earlier versions a Table.
    return (answer.read_all() if hasattr(answer, "read_all") else answer).num_rows


DOORS = {"embedded": embedded, "http_arrow": http_arrow, "flight_adbc": flight_adbc,
         "postgres_psycopg": pg_psycopg, "duckdb": duck}

result = {"duckdb_version": duckdb.__version__, "runs": RUNS, "queries": {}}
for name, sql in QUERIES.items():
    per = {}
    for door, run in DOORS.items():
        times, rows = [], None
        for _ in range(RUNS):
            t = time.perf_counter()
            rows = run(sql)
            times.append(time.perf_counter() - t)
        per[door] = {"seconds": min(times), "all_seconds": times, "rows": rows}
        print(f"{name} {door}: {min(times):.3f} s, {rows} rows", file=sys.stderr, flush=True)
    rows = {d: v["rows"] for d, v in per.items()}
    assert len(set(rows.values())) == 1, rows
    base, peer = per["embedded"]["seconds"], per["duckdb"]["seconds"]
    for door, v in per.items():
        v["over_embedded"] = v["seconds"] / base
        v["over_duckdb"] = v["seconds"] / peer
        v["rows_per_second"] = v["rows"] / v["seconds"]
    result["queries"][name] = per
print(json.dumps(result, indent=1))
