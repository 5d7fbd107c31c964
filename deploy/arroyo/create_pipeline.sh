#!/usr/bin/env bash
# Validates tidemark's UDFs and pipeline.sql against an Arroyo cluster's REST API, then
# creates the pipeline (POST /api/v1/pipelines).
# Usage: deploy/arroyo/create_pipeline.sh ARROYO_API TIDEMARK_STREAM_URL OUTPUT_PATH
#   ARROYO_API           e.g. http://arroyo:5115/api
#   TIDEMARK_STREAM_URL  e.g. http://tidemark:8420/v1/default/events/stream?category=custom
#   OUTPUT_PATH          e.g. s3://analytics/tidemark-activity
# The Arroyo compiler service must have TIDEMARK_UDFS_PATH (a checkout's udfs/ directory,
# which the definitions' dependency headers name) and the workers TIDEMARK_READ_KEY (a
# read key of the environment) in their environment.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
API=${1:?ARROYO_API}
export TIDEMARK_STREAM_URL=${2:?TIDEMARK_STREAM_URL}
export OUTPUT_PATH=${3:?OUTPUT_PATH}
python3 - "$API" "$HERE" <<'PY'
import json, os, pathlib, string, sys, urllib.request
api, here = sys.argv[1].rstrip("/"), pathlib.Path(sys.argv[2])
defs = sorted((here / "../../udfs/arroyo/defs").glob("*.rs"))
udfs = [{"definition": d.read_text(), "language": "rust"} for d in defs]
query = string.Template((here / "pipeline.sql").read_text()).substitute(os.environ)

def post(path, body):
    req = urllib.request.Request(api + path, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        sys.exit(f"{path}: HTTP {e.code}: {e.read().decode()}")

for d, u in zip(defs, udfs):
    r = post("/v1/udfs/validate", {"definition": u["definition"], "language": "rust"})
    if r.get("errors"):
        sys.exit(f"{d.name}: {r['errors']}")
    print(f"udf {r.get('udfName') or r.get('udf_name')}: ok")
r = post("/v1/pipelines/validate_query", {"query": query, "udfs": udfs})
if r.get("errors"):
    sys.exit(f"pipeline.sql: {json.dumps(r['errors'], indent=2)}")
print("pipeline.sql: ok")
r = post("/v1/pipelines", {"name": "tidemark-activity", "query": query, "udfs": udfs,
                           "parallelism": 1, "checkpoint_interval_micros": 10_000_000})
print(f"created pipeline {r.get('id')}")
PY
