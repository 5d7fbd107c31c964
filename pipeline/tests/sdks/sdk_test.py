"""Drives the real analytics SDKs from PyPI at a `tidemark serve` (pipeline/tests/it/sdks/).

Usage: sdk_test.py '{"url": "http://127.0.0.1:PORT", "key": "tm_...", "phase": 1}'

Each SDK talks to tidemark through a proxy on loopback that forwards its first upload to
tidemark and then answers the SDK 503 (Retry-After: 1), as if the acknowledgement were
lost: the SDK retries the same batch, and the Rust test checks nothing was stored twice.
Prints JSON: per SDK, the uploads the proxy saw and how many it failed.
"""

import json
import logging
import sys
import threading
import time
import urllib.request
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ARGS = json.loads(sys.argv[1])
UPSTREAM = ARGS["url"]
KEY = ARGS["key"]
PHASE = ARGS.get("phase", 1)
logging.basicConfig(level=getattr(logging, __import__("os").environ.get("LOGLEVEL","WARNING")), stream=sys.stderr)


class LostFirstAnswer(BaseHTTPRequestHandler):
    """Forwards every request; the answer to the first POST is replaced by a 503."""

    seen = None  # set per server: a dict

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        req = urllib.request.Request(UPSTREAM + self.path, data=body, method="POST")
        for h in ("Content-Type", "Content-Encoding", "Authorization", "User-Agent"):
            if self.headers.get(h):
                req.add_header(h, self.headers[h])
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, payload = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, payload = e.code, e.read()
        seen = self.server.seen
        seen["uploads"].append({"path": self.path, "status": status,
                                "gzip": self.headers.get("Content-Encoding") == "gzip",
                                "answer": json.loads(payload or b"null")})
        if seen["failed"] == 0 and status == 200:
            seen["failed"] += 1
            payload = json.dumps({"code": "unavailable", "message": "lost answer (test proxy)",
                                  "detail": "lost answer (test proxy)"}).encode()
            status = 503
            self.send_response(status)
            self.send_header("Retry-After", "1")
        else:
            self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def proxy():
    server = ThreadingHTTPServer(("127.0.0.1", 0), LostFirstAnswer)
    server.seen = {"uploads": [], "failed": 0}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, "http://127.0.0.1:%d" % server.server_address[1]


T0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)


def settle(client, seen):
    """Flushes until the SDK has re-sent the batch whose answer was lost (a rate-limited
    SDK re-queues it and waits Retry-After before sending again)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        client.flush()
        if seen["failed"] and len(seen["uploads"]) > seen["failed"]:
            return
        time.sleep(0.2)


def segment(host, seen):
    from segment.analytics.client import Client

    c = Client(write_key=KEY, host=host, max_retries=5, upload_interval=0.2)
    if PHASE == 1:
        c.track(user_id="seg-u1", event="Order Completed", properties={"total": 3.5},
                message_id="seg-m1", timestamp=T0)
        c.identify(user_id="seg-u1", traits={"plan": "pro", "email": "a@example.com"},
                   message_id="seg-m2")
        c.page(user_id="seg-u1", name="Home", properties={"path": "/"}, message_id="seg-m3")
        c.screen(anonymous_id="seg-anon", name="Feed", message_id="seg-m4")
        c.track(anonymous_id="seg-anon", event="Viewed", message_id="seg-m5")
        c.group(user_id="seg-u1", group_id="acme", traits={"name": "Acme"}, message_id="seg-m6")
        c.alias(previous_id="seg-anon", user_id="seg-u1", message_id="seg-m7")
    else:
        c.track(anonymous_id="seg-anon", event="Late", message_id="seg-m8")
    settle(c, seen)
    c.join()


def rudder(host, seen):
    from rudderstack.analytics.client import Client

    c = Client(write_key=KEY, host=host, max_retries=5, upload_interval=0.2)
    if PHASE == 1:
        c.track(user_id="rs-u1", event="Song Played", properties={"song": "x"},
                message_id="rs-m1", timestamp=T0)
        c.identify(user_id="rs-u1", traits={"plan": "free", "age": 30}, message_id="rs-m2")
        c.page(anonymous_id="rs-anon", name="Pricing", message_id="rs-m3")
        c.screen(user_id="rs-u1", name="Player", message_id="rs-m4")
        c.alias(previous_id="rs-anon", user_id="rs-u1", message_id="rs-m5")
    settle(c, seen)
    c.join()


def posthog(host, seen):
    from posthog import Posthog

    c = Posthog(KEY, host=host, max_retries=5, flush_interval=0.2)
    if PHASE == 1:
        c.capture("signed up", distinct_id="ph-u1", properties={"source": "ad"},
                  uuid="0190c2a4-0000-7000-8000-000000000001", timestamp=T0)
        c.set(distinct_id="ph-u1", properties={"plan": "team", "color": "red"},
              uuid="0190c2a4-0000-7000-8000-000000000002")
        c.alias(previous_id="ph-u1", distinct_id="ph-anon",
                uuid="0190c2a4-0000-7000-8000-000000000003")
        c.capture("viewed", distinct_id="ph-anon", uuid="0190c2a4-0000-7000-8000-000000000004")
    settle(c, seen)
    c.shutdown()


out = {}
for name, run in [("segment", segment), ("rudder", rudder), ("posthog", posthog)]:
    server, host = proxy()
    run(host, server.seen)
    server.shutdown()
    out[name] = server.seen
print(json.dumps(out))
