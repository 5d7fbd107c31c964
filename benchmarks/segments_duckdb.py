"""DuckDB side of the segments benchmark: the SQL of `segments.sql` (one compiled segment
per line, values inlined) over the same profiles.parquet and event_stats.parquet, on 2
threads. tidemark's functions are DuckDB macros over DuckDB's own JSON and list functions;
timestamps are read as epoch microseconds (what the compiled SQL compares).

Usage: python3 segments_duckdb.py DIR  -> one JSON line on stdout.
"""

import json
import os
import resource
import sys
import time

import duckdb


def main() -> None:
    d = sys.argv[1]
    con = duckdb.connect()
    con.execute("SET threads = 2")
    con.execute("SET enable_progress_bar = false")
    p, s = os.path.join(d, "profiles.parquet"), os.path.join(d, "event_stats.parquet")
    con.execute(f"""CREATE VIEW profiles AS SELECT * REPLACE (
        epoch_us(created_at) AS created_at, epoch_us(last_seen_at) AS last_seen_at,
        epoch_us(last_seen_ios_at) AS last_seen_ios_at) FROM '{p}'""")
    con.execute(f"""CREATE VIEW event_stats AS SELECT * REPLACE (
        epoch_us(first_at) AS first_at, epoch_us(last_at) AS last_at) FROM '{s}'""")
    for m in [
        "json_get_str(j, k) AS json_extract_string(j, '$.\"' || k || '\"')",
        "json_get_num(j, k) AS TRY_CAST(json_extract(j, '$.\"' || k || '\"') AS DOUBLE)",
        "json_get_bool(j, k) AS TRY_CAST(json_extract(j, '$.\"' || k || '\"') AS BOOLEAN)",
    ]:
        con.execute(f"CREATE MACRO {m}")
    queries = [q for q in open(os.path.join(d, "segments.sql")).read().splitlines() if q.strip()]
    # two plans: straight from the Parquet files, and (as tidemark's segment job does) both
    # tables read into memory first, that time included; the faster one counts
    variants = {}
    for variant in ("parquet", "in_memory"):
        started = time.perf_counter()
        if variant == "in_memory":
            con.execute("CREATE TEMP TABLE profiles_m AS SELECT * FROM profiles")
            con.execute("CREATE TEMP TABLE event_stats_m AS SELECT * FROM event_stats")
            run = [q.replace("FROM profiles p", "FROM profiles_m p").replace("FROM event_stats s", "FROM event_stats_m s")
                   for q in queries]
        else:
            run = queries
        members = [con.execute(f"SELECT count(*) FROM ({q})").fetchone()[0] for q in run]
        variants[variant] = (time.perf_counter() - started, members)
    assert variants["parquet"][1] == variants["in_memory"][1]
    best = min(variants, key=lambda v: variants[v][0])
    print(json.dumps({"step": "duckdb", "duckdb_version": duckdb.__version__, "segments": len(queries),
                      "seconds": variants[best][0], "variant": best, "members": variants[best][1],
                      "variants": {v: t for v, (t, _) in variants.items()},
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))


if __name__ == "__main__":
    main()
