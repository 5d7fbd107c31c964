"""The CSV import benchmark: `tidemark import` of a 1,000,000-row, 20-column CSV (id, 18
custom fields of every type, tags) into a fresh store, side by side with DuckDB loading
the same file into Parquet (zstd) on 2 threads.

Usage: python3 import_bench.py TIDEMARK_BIN WORK_DIR [ROWS]  -> one JSON object on stdout.
"""

import csv
import json
import os
import random
import resource
import subprocess
import sys
import time

FIELDS = (
    [(f"text_{i}", "text") for i in range(8)]
    + [(f"number_{i}", "number") for i in range(5)]
    + [(f"flag_{i}", "boolean") for i in range(3)]
    + [("signup", "datetime")]
    + [("langs", "list")]
)


def generate(path: str, rows: int) -> None:
    """1 id + 18 custom fields + tags = 20 columns, a few cells quoted (comma, quote)."""
    rnd = random.Random(7)
    # short cells, so 1M rows x 20 columns stay under the importer's 128 MB limit
    words = ["a", "b", "c", "d, e", 'f"g', "h", "i", "j"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\r\n")
        w.writerow(["id"] + [n for n, _ in FIELDS] + ["tags"])
        for r in range(rows):
            row = [f"u{r:07d}"]
            for _, t in FIELDS:
                if t == "text":
                    row.append(rnd.choice(words) + str(rnd.randrange(100)))
                elif t == "number":
                    row.append(str(round(rnd.uniform(0, 1000), 1)))
                elif t == "boolean":
                    row.append(rnd.choice(["1", "0"]))
                elif t == "datetime":
                    row.append(f"2026-{rnd.randrange(1, 13):02d}-{rnd.randrange(1, 29):02d}T10:00:00Z")
                else:
                    row.append(";".join(rnd.sample(["en", "fr", "de", "es", "it"], 2)))
            row.append(";".join(rnd.sample(["vip", "new", "old", "b2b", "b2c"], 2)))
            w.writerow(row)


def main() -> None:
    binary, work = sys.argv[1], sys.argv[2]
    rows = int(sys.argv[3]) if len(sys.argv) > 3 else 1_000_000
    os.makedirs(work, exist_ok=True)
    path = os.path.join(work, "users.csv")
    generate(path, rows)
    data = os.path.join(work, "data")
    for name, t in FIELDS:
        subprocess.run([binary, "fields", "add", name, "--type", t, "--env", "default",
                        "--data", data], check=True, stdout=subprocess.DEVNULL)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    out = subprocess.run([binary, "import", path, "--env", "default", "--json", "--data", data],
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"tidemark import failed ({out.returncode}): {out.stderr}")
    seconds = time.perf_counter() - started
    rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    report = json.loads(out.stdout)
    assert report["applied"] == rows and report["failed"] == 0, report

    duck = subprocess.run([sys.executable, "-c", f"""
import duckdb, json, resource, time
con = duckdb.connect()
con.execute("SET threads = 2")
con.execute("SET enable_progress_bar = false")
t = time.perf_counter()
con.execute(\"\"\"COPY (SELECT * FROM read_csv('{path}', header = true, all_varchar = true))
    TO '{work}/duck.parquet' (FORMAT parquet, COMPRESSION zstd)\"\"\")
s = time.perf_counter() - t
n = con.execute("SELECT count(*) FROM '{work}/duck.parquet'").fetchone()[0]
print(json.dumps({{"seconds": s, "rows": n, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}}))
"""], check=True, capture_output=True, text=True)
    duck = json.loads(duck.stdout.strip().splitlines()[-1])
    assert duck["rows"] == rows, duck
    print(json.dumps({
        "rows": rows,
        "columns": 1 + len(FIELDS) + 1,
        "csv_mb": round(os.path.getsize(path) / 1e6, 1),
        "import_seconds": seconds,
        "rows_per_second": rows / seconds,
        "changes": report["changes"],
        "commits": report["commits"],
        "import_peak_rss_mb": max(rss_kb, before) // 1024,
        "duckdb_seconds": duck["seconds"],
        "duckdb_peak_rss_mb": duck["peak_rss_mb"],
        "import_over_duckdb": seconds / duck["seconds"],
        "duckdb_version": __import__("duckdb").__version__,
    }, indent=2))


if __name__ == "__main__":
    main()
