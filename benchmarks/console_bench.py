"""Console pages over 1M profiles, measured in the browser (Debian's Chromium, Playwright):
time from navigation to the first rendered row of the customers page (unfiltered, by id
prefix, by tag, by custom field) and to a fresh segment preview count (three definitions).
The peer in the same run is the API call the page makes, timed from Python: the ratio
page / API is what the console adds (fetching, rendering) on top of the server's answer.
Target (issue 20): under 1 s each.

Starts its own `tidemark serve` (release), seeds it with USERS users (two events each;
10% with a plan, 1% tagged vip, by CSV import), waits for the profile job.

Usage: python3 benchmarks/console_bench.py TIDEMARK_BIN [USERS] [OUT]
"""
import http.client, json, os, statistics, subprocess, sys, tempfile, threading, time
import urllib.parse
import urllib.request

from playwright.sync_api import sync_playwright

BIN = sys.argv[1]
USERS = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
OUT = sys.argv[3] if len(sys.argv) > 3 else "benchmarks/results/console.json"
RUNS = 5
BATCH, CONNECTIONS = 1000, 4
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def start(work):
    p = subprocess.Popen([BIN, "serve", "--data", f"{work}/data", "--wal-dir", f"{work}/wal",
                          "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True, env={**os.environ, "TIDEMARK_SEGMENTS__INTERVAL": "1h"})
    addr = admin = ingest = None
    for line in p.stdout:
        if line.startswith("tidemark: listening on http://"):
            addr = line.split("http://")[1].strip()
        if line.strip().startswith("admin key:"):
            admin = line.split(":", 1)[1].strip()
        if line.strip().startswith("ingest key:"):
            ingest = line.split(":", 1)[1].strip()
        if line.strip() == "tidemark: ready":
            break
    threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
    return p, addr, admin, ingest


def api(base, method, path, key, body=None, ctype="application/json"):
    req = urllib.request.Request(base + path, method=method, data=body)
    req.add_header("Authorization", f"Bearer {key}")
    if body is not None:
        req.add_header("Content-Type", ctype)
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read() or b"null")


def seed(addr, admin, ingest):
    host, port = addr.rsplit(":", 1)
    names = ["app-opened", "card-viewed", "purchase", "search", "share"]
    def batches():
        for b in range(0, USERS, BATCH // 2):
            evs = []
            for u in range(b, min(b + BATCH // 2, USERS)):
                for j in range(2):
                    evs.append({"event_id": f"e{u}-{j}", "event_name": names[(u + j) % 5], "user_id": f"u{u:07d}",
                                "platform": ["ios", "android", "web"][u % 3], "category": "sdk"})
            yield json.dumps(evs).encode()
    it, lock = batches(), threading.Lock()
    def worker():
        c = http.client.HTTPConnection(host, int(port))
        while True:
            with lock:
                body = next(it, None)
            if body is None:
                return
            c.request("POST", "/v1/default/events", body, {"Authorization": f"Bearer {ingest}", "Content-Type": "application/json"})
            r = c.getresponse(); r.read()
            assert r.status == 202, (r.status, r.read())
    t0 = time.time()
    ts = [threading.Thread(target=worker) for _ in range(CONNECTIONS)]
    [t.start() for t in ts]; [t.join() for t in ts]
    ingest_s = time.time() - t0
    base = f"http://{addr}"
    api(base, "POST", "/v1/default/fields", admin, json.dumps({"name": "plan", "type": "text"}).encode())
    rows = ["id,plan,tags"] + [f"u{u:07d},{['gold', 'silver', 'free'][u % 3] if u % 10 == 0 else ''},{'vip' if u % 100 == 0 else ''}"
                               for u in range(USERS)]
    api(base, "POST", "/v1/default/imports", admin, "\n".join(rows).encode(), "text/csv")
    # the profile job folds events and the import in
    t0 = time.time()
    while True:
        n = api(base, "POST", "/v1/default/query", admin, json.dumps(
            {"sql": "SELECT count(*) AS n, count(*) FILTER (WHERE array_has(tags, 'vip')) AS vip FROM profiles"}).encode())["rows"][0]
        if n["n"] == USERS and n["vip"] == USERS // 100:
            break
        assert time.time() - t0 < 1800, n
        time.sleep(2)
    return ingest_s, time.time() - t0


PAGE_TIMER = """async ([hash, selector]) => {
  const t0 = performance.now();
  window.location.hash = hash;
  for (;;) {
    await new Promise(r => requestAnimationFrame(r));
    const e = document.querySelector(selector);
    if (e && e.offsetParent !== null) return performance.now() - t0;
    if (performance.now() - t0 > 60000) throw new Error('timeout ' + hash);
  }
}"""

def timed(fn):
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def main():
    work = tempfile.mkdtemp(prefix="tidemark-console-bench.", dir="/var/tmp")
    p, addr, admin, ingest = start(work)
    base = f"http://{addr}"
    try:
        ingest_s, job_s = seed(addr, admin, ingest)
        print(f"seeded {USERS} users: ingest {ingest_s:.1f} s, profiles ready {job_s:.1f} s later", file=sys.stderr)
        pages = {
            "customers": ("#/customers", "/v1/default/users?limit=50"),
            "customers_prefix": ("#/customers?prefix=u05", "/v1/default/users?limit=50&prefix=u05"),
            "customers_tag": ("#/customers?tag=vip", "/v1/default/users?limit=50&tag=vip"),
            "customers_field": ("#/customers?field=plan&value=gold", "/v1/default/users?limit=50&field.plan=gold"),
        }
        previews = {
            "preview_seen_7d": {"match": "all", "conditions": [{"field": "last_seen_at", "op": "within", "value": "-7d"}]},
            "preview_event": {"match": "all", "conditions": [{"event": "purchase", "op": "did"}]},
            "preview_mixed": {"match": "any", "conditions": [{"tag": "vip", "op": "has"},
                                                              {"match": "all", "conditions": [{"field": "plan", "op": "eq", "value": "gold"},
                                                                                              {"event": "share", "op": "did"}]}]},
        }
        out = {"profiles": USERS, "runs": RUNS, "ingest_seconds": round(ingest_s, 1), "profiles_ready_seconds": round(job_s, 1), "pages": {}}
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(base + "/console/")
            page.get_by_label("API key").fill(admin)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_selector("table tbody tr", timeout=120000)
            for name, (hash_, path) in pages.items():
                browser_ms, api_ms = [], []
                for _ in range(RUNS):
                    page.evaluate("window.location.hash = '#/fields'")
                    page.wait_for_selector("h1:has-text('Custom fields')")
                    browser_ms.append(page.evaluate(PAGE_TIMER, [hash_, "table tbody tr"]))
                    api_ms.append(timed(lambda: api(base, "GET", path, admin)))
                out["pages"][name] = summary(browser_ms, api_ms)
            # a segment preview: the builder opened on a definition, to its fresh count
            for name, d in previews.items():
                browser_ms, api_ms = [], []
                body = dict(d, id="bench", name="bench")
                hash_ = "#/segments/new?" + urllib.parse.urlencode({"definition": json.dumps(body)})
                for _ in range(RUNS):
                    page.evaluate("window.location.hash = '#/fields'")
                    page.wait_for_selector("h1:has-text('Custom fields')")
                    browser_ms.append(page.evaluate(PAGE_TIMER, [hash_, '[data-testid="preview-count"][data-state="fresh"]']))
                    api_ms.append(timed(lambda: api(base, "POST", "/v1/default/segments:preview", admin, json.dumps(body).encode())))
                count = int(page.locator('[data-testid="preview-count"]').inner_text())
                want = api(base, "POST", "/v1/default/segments:preview", admin, json.dumps(body).encode())["count"]
                assert count == want, (name, count, want)
                out["pages"][name] = dict(summary(browser_ms, api_ms), count=count)
            browser.close()
        out["chromium"] = subprocess.run(["/usr/bin/chromium", "--version"], capture_output=True, text=True).stdout.strip()
        out["all_under_1s"] = all(v["browser_median_ms"] < 1000 for v in out["pages"].values())
        os.makedirs(os.path.dirname(OUT), exist_ok=True)
        json.dump(out, open(OUT, "w"), indent=2)
        print(json.dumps(out, indent=2))
    finally:
        p.terminate()
        p.wait()
        subprocess.run(["rm", "-rf", work])


def summary(browser_ms, api_ms):
    b, a = statistics.median(browser_ms), statistics.median(api_ms)
    return {"browser_median_ms": round(b), "browser_best_ms": round(min(browser_ms)),
            "api_median_ms": round(a), "browser_over_api": round(b / a, 2) if a else None,
            "browser_ms": [round(x) for x in browser_ms]}


if __name__ == "__main__":
    main()
