"""SSE throughput: events/s that one consumer of GET /v1/{env}/events/stream receives,
beside the ingest rate of the same run (POST /v1/{env}/events from several connections),
and the ingest rate with no stream open. Starts its own `tidemark serve` (release).

Usage: python3 benchmarks/stream_bench.py TIDEMARK_BIN [EVENTS] [OUT]
"""
import http.client, json, os, random, subprocess, sys, tempfile, threading, time

BIN = sys.argv[1]
EVENTS = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
OUT = sys.argv[3] if len(sys.argv) > 3 else "benchmarks/results/stream.json"
BATCH, CONNECTIONS = 500, 4

def start(work):
    p = subprocess.Popen([BIN, "serve", "--data", f"{work}/data", "--wal-dir", f"{work}/wal",
                          "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True, env={**os.environ, "TIDEMARK_JOBS__ENABLED": "false"})
    addr = ingest = None
    for line in p.stdout:
        if line.startswith("tidemark: listening on http://"):
            addr = line.split("http://")[1].strip()
        if line.strip().startswith("ingest key:"):
            ingest = line.split(":", 1)[1].strip()
        if line.strip() == "tidemark: ready":
            break
    threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
    host, port = addr.rsplit(":", 1)
    return p, host, int(port), ingest

def read_key(work):
    out = subprocess.run([BIN, "keys", "create", "--env", "default", "--role", "read",
                          "--data", f"{work}/data"], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]

def bodies(tag):
    rnd = random.Random(7)
    names = [f"event-{i}" for i in range(50)]
    out = []
    for b in range(EVENTS // BATCH):
        evs = [{"event_id": f"{tag}-{b}-{i}", "event_name": rnd.choice(names),
                "user_id": f"u{rnd.randrange(100000)}", "platform": "ios",
                "properties": {"screen": "home", "n": i, "pad": "x" * 120}} for i in range(BATCH)]
        out.append(json.dumps(evs).encode())
    return out

def ingest(host, port, key, batches):
    """Posts every batch over CONNECTIONS connections; returns (seconds, ack times)."""
    acks, lock, it = [], threading.Lock(), iter(batches)
    def worker():
        c = http.client.HTTPConnection(host, port)
        while True:
            with lock:
                body = next(it, None)
            if body is None:
                return
            c.request("POST", "/v1/default/events", body,
                      {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
            r = c.getresponse(); r.read()
            assert r.status == 202, r.status
            with lock:
                acks.append(time.perf_counter())
    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker) for _ in range(CONNECTIONS)]
    [t.start() for t in ts]; [t.join() for t in ts]
    return time.perf_counter() - t0, acks

def consume(host, port, key, want, result):
    c = http.client.HTTPConnection(host, port)
    c.request("GET", "/v1/default/events/stream", headers={"Authorization": f"Bearer {key}"})
    r = c.getresponse()
    assert r.status == 200, r.status
    n, first = 0, None
    result["ready"].set()
    while n < want:
        line = r.fp.readline()
        if not line:
            break
        if line.startswith(b"data: "):
            n += 1
            if first is None:
                first = time.perf_counter()
    result.update(n=n, first=first, last=time.perf_counter())

def main():
    with tempfile.TemporaryDirectory(dir="/var/tmp") as work:
        p, host, port, key = start(work)
        try:
            rkey = read_key(work)
            alone_s, _ = ingest(host, port, key, bodies("alone"))
            time.sleep(3)  # let the flusher commit it before the stream starts
            result = {"ready": threading.Event()}
            t = threading.Thread(target=consume, args=(host, port, rkey, EVENTS, result))
            t.start(); result["ready"].wait()
            t0 = time.perf_counter()
            with_s, acks = ingest(host, port, key, bodies("streamed"))
            t.join(timeout=600)
            got = result.get("n", 0)
            stream_s = result["last"] - t0
            out = {
                "events": EVENTS, "batch": BATCH, "connections": CONNECTIONS,
                "ingest_alone_events_per_s": round(EVENTS / alone_s),
                "ingest_with_stream_events_per_s": round(EVENTS / with_s),
                "stream_events_received": got,
                "stream_events_per_s": round(got / stream_s),
                "stream_lag_after_last_ack_s": round(result["last"] - acks[-1], 3),
            }
            out["stream_vs_ingest"] = round(out["stream_events_per_s"] / out["ingest_with_stream_events_per_s"], 3)
            out["ingest_with_vs_without_stream"] = round(out["ingest_with_stream_events_per_s"] / out["ingest_alone_events_per_s"], 3)
            print(json.dumps(out, indent=2))
            with open(OUT, "w") as f:
                json.dump(out, f, indent=2); f.write("\n")
        finally:
            p.terminate(); p.wait(timeout=60)

main()
