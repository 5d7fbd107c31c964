"""DuckDB side of the jobs benchmark: the same two results as `jobs rebuild` (profiles and
event_stats, with the same dedup, clock-skew and platform rules as sql/jobs/*.sql) over the
same Parquet files of the `events` Delta table, written as Parquet (zstd), on 2 threads.

All formulations of counted_events below are run; the fastest one is DuckDB's time.
Usage: python3 jobs_duckdb.py DATA_DIR OUT_DIR  -> one JSON line on stdout.
"""

import json
import os
import resource
import sys
import time

import duckdb

SKEW_US = 300_000_000
WINDOW_US = 3_600_000_000

PLATFORM = """CASE
    WHEN lower(trim(platform)) IN ('ios', 'ipados', 'iphone', 'ipad', 'tvos', 'watchos', 'visionos') THEN 'ios'
    WHEN lower(trim(platform)) IN ('android', 'android_tv', 'wear_os') THEN 'android'
    WHEN lower(trim(platform)) IN ('web', 'browser', 'javascript', 'js', 'mobile_web') THEN 'web'
    WHEN lower(trim(platform)) IN ('server', 'backend', 'node', 'api') THEN 'server'
END"""


# Formulations of counted_events: DuckDB's time is the fastest of them (see main).
COUNTED = {
    # A window over every id, as a first version of sql/jobs/counted_events.sql did.
    "lag": """
        WITH copies AS (
            SELECT environment, event_id, event_name, category, user_id, platform,
                   occurred_at, received_at,
                   lag(received_at) OVER (
                       PARTITION BY environment, event_id
                       ORDER BY received_at, user_id, event_name, occurred_at
                   ) AS previous_copy_at
            FROM read_parquet('{files}', hive_partitioning = true)
        ),
        fresh AS (
            SELECT * FROM copies
            WHERE previous_copy_at IS NULL
               OR epoch_us(received_at) - epoch_us(previous_copy_at) > %(window)d
        )
        SELECT environment, user_id, event_name, category, %(platform)s AS platform,
               received_at,
               CASE WHEN epoch_us(occurred_at) > epoch_us(received_at) + %(skew)d
                    THEN received_at ELSE occurred_at END AS "at"
        FROM fresh
    """,
    # The plan of sql/jobs/counted_events.sql: the window only over ids with several copies,
    # found by grouping a 64-bit hash (DuckDB's hash() for tidemark's event_key()).
    "repeated": """
        WITH keyed AS (
            SELECT *, hash(environment, event_id) AS id_key
            FROM read_parquet('{files}', hive_partitioning = true)
        ),
        repeated AS (
            SELECT id_key, count(*) AS copies FROM keyed GROUP BY id_key HAVING count(*) > 1
        ),
        copies AS (
            SELECT e.*, lag(e.received_at) OVER (
                       PARTITION BY e.environment, e.event_id
                       ORDER BY e.received_at, e.user_id, e.event_name, e.occurred_at
                   ) AS previous_copy_at
            FROM repeated r JOIN keyed e ON e.id_key = r.id_key
        ),
        fresh AS (
            SELECT e.environment, e.event_id, e.event_name, e.category, e.user_id, e.platform,
                   e.occurred_at, e.received_at
            FROM keyed e
            WHERE NOT EXISTS (SELECT 1 FROM repeated r WHERE r.id_key = e.id_key)
            UNION ALL
            SELECT environment, event_id, event_name, category, user_id, platform,
                   occurred_at, received_at
            FROM copies
            WHERE previous_copy_at IS NULL
               OR epoch_us(received_at) - epoch_us(previous_copy_at) > %(window)d
        )
        SELECT environment, user_id, event_name, category, %(platform)s AS platform,
               received_at,
               CASE WHEN epoch_us(occurred_at) > epoch_us(received_at) + %(skew)d
                    THEN received_at ELSE occurred_at END AS "at"
        FROM fresh
    """,
    # The stages of tidemark's runner: the rows with their hash read once into memory,
    # repeated_events.sql materialized, then counted_events.sql over both.
    "staged": """
        CREATE TEMP TABLE new_events AS
            SELECT *, hash(environment, event_id) AS id_key
            FROM read_parquet('{files}', hive_partitioning = true);
        CREATE TEMP TABLE repeated_events AS
            SELECT id_key, count(*) AS copies FROM new_events GROUP BY id_key HAVING count(*) > 1;
        WITH copies AS (
            SELECT e.*, lag(e.received_at) OVER (
                       PARTITION BY e.environment, e.event_id
                       ORDER BY e.received_at, e.user_id, e.event_name, e.occurred_at
                   ) AS previous_copy_at
            FROM repeated_events r JOIN new_events e ON e.id_key = r.id_key
        ),
        fresh AS (
            SELECT e.environment, e.event_id, e.event_name, e.category, e.user_id, e.platform,
                   e.occurred_at, e.received_at
            FROM new_events e
            WHERE NOT EXISTS (SELECT 1 FROM repeated_events r WHERE r.id_key = e.id_key)
            UNION ALL
            SELECT environment, event_id, event_name, category, user_id, platform,
                   occurred_at, received_at
            FROM copies
            WHERE previous_copy_at IS NULL
               OR epoch_us(received_at) - epoch_us(previous_copy_at) > %(window)d
        )
        SELECT environment, user_id, event_name, category, %(platform)s AS platform,
               received_at,
               CASE WHEN epoch_us(occurred_at) > epoch_us(received_at) + %(skew)d
                    THEN received_at ELSE occurred_at END AS "at"
        FROM fresh
    """,
}
COUNTED = {k: v % {"window": WINDOW_US, "skew": SKEW_US, "platform": PLATFORM} for k, v in COUNTED.items()}


def run(data: str, out: str, variant: str) -> dict:
    os.makedirs(out, exist_ok=True)
    for f in ("profiles.parquet", "event_stats.parquet"):
        if os.path.exists(os.path.join(out, f)):
            os.remove(os.path.join(out, f))
    files = os.path.join(data, "events", "**", "*.parquet")
    con = duckdb.connect()
    con.execute("SET threads = 2")
    con.execute("SET preserve_insertion_order = false")
    started = time.perf_counter()
    # Every statement but the last is a preparation stage; the last is counted_events.
    *stages, counted = COUNTED[variant].format(files=files).split(";")
    for stage in stages:
        con.execute(stage)
    con.execute(f"CREATE TEMP TABLE counted_events AS {counted}")
    con.execute(f"""
        COPY (
            SELECT environment, user_id,
                min(received_at) AS created_at,
                min("at") FILTER (WHERE category <> 'system') AS first_seen_at,
                max("at") FILTER (WHERE category <> 'system') AS last_seen_at,
                max("at") FILTER (WHERE category <> 'system' AND platform = 'ios') AS last_seen_ios_at,
                max("at") FILTER (WHERE category <> 'system' AND platform = 'android') AS last_seen_android_at,
                max("at") FILTER (WHERE category <> 'system' AND platform = 'web') AS last_seen_web_at,
                max("at") FILTER (WHERE category <> 'system' AND platform = 'server') AS last_seen_server_at,
                count(*) FILTER (WHERE category <> 'system') AS event_count,
                last(event_name ORDER BY "at", event_name)
                    FILTER (WHERE category <> 'system') AS last_event_name,
                max("at") FILTER (WHERE category <> 'system') AS last_event_at,
                max(received_at) AS updated_at
            FROM counted_events GROUP BY environment, user_id
        ) TO '{out}/profiles.parquet' (FORMAT parquet, COMPRESSION zstd)
    """)
    con.execute(f"""
        COPY (
            SELECT environment, user_id, event_name, min("at") AS first_at, max("at") AS last_at,
                   count(*) AS "count"
            FROM counted_events GROUP BY environment, user_id, event_name
        ) TO '{out}/event_stats.parquet' (FORMAT parquet, COMPRESSION zstd)
    """)
    seconds = time.perf_counter() - started
    profiles, counted = con.execute(
        f"SELECT count(*), sum(event_count) FROM '{out}/profiles.parquet'"
    ).fetchone()
    stats = con.execute(f"SELECT count(*) FROM '{out}/event_stats.parquet'").fetchone()[0]
    con.close()
    return {
        "variant": variant,
        "seconds": seconds,
        "profiles_rows": profiles,
        "event_stats_rows": stats,
        "events_counted": int(counted),
    }


def main() -> None:
    data, out = sys.argv[1], sys.argv[2]
    runs = [run(data, out, v) for v in COUNTED]
    best = min(runs, key=lambda r: r["seconds"])
    assert len({(r["profiles_rows"], r["event_stats_rows"], r["events_counted"]) for r in runs}) == 1, runs
    print(json.dumps({
        "step": "duckdb",
        "duckdb_version": duckdb.__version__,
        **best,
        "variants": {r["variant"]: r["seconds"] for r in runs},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    }))


if __name__ == "__main__":
    main()
