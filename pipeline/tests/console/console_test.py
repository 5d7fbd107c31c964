"""The web console in a real browser: Debian's Chromium driven by Playwright for Python.

Run by `pipeline/tests/it/console.rs`, which starts `tidemark serve`, seeds it and passes
the arguments as JSON in argv[1]. Every value the console shows is compared with what the
API answers for the same question (fetched here with urllib). Screenshots of each page go
to args["artifacts"]. Prints one JSON line of measurements; exits non-zero on a failure.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from playwright.sync_api import expect, sync_playwright

ARGS = json.loads(sys.argv[1])
BASE = ARGS["base"]
ENV = "default"
OUT = {"screenshots": [], "checks": 0}
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def http(method, path, key=None, body=None):
    """The API itself: (status, JSON body)."""
    req = urllib.request.Request(BASE + path, method=method)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, data, timeout=30) as r:
            text = r.read()
            return r.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        text = e.read()
        return e.code, json.loads(text) if text else None


def check(cond, what):
    OUT["checks"] += 1
    if not cond:
        raise AssertionError(what)


def shot(page, name):
    path = os.path.join(ARGS["artifacts"], f"{name}.png")
    page.screenshot(path=path, full_page=True)
    OUT["screenshots"].append(path)


def when(t):
    """The console's rendering of an RFC 3339 time."""
    return "—" if not t else f"{t[:10]} {t[11:19]}Z"


def labelled(page):
    """Every visible form control has a label (or an aria-label)."""
    missing = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
        .filter(e => e.offsetParent !== null && e.type !== 'hidden')
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
        .map(e => e.name || e.outerHTML.slice(0, 80))""")
    check(missing == [], f"inputs without a label: {missing}")


def wait_for(fn, what, secs=30, every=0.5):
    deadline = time.time() + secs
    while True:
        v = fn()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError(f"timed out: {what}")
        time.sleep(every)


def sign_in(page, key):
    page.goto(BASE + "/console/")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Customers", exact=True).first).to_be_visible()


def sign_out(page):
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def first_column(page):
    return page.locator("table tbody tr td:first-child").all_inner_texts()


def read_only(page):
    """A read key: the admin pages are not offered, no page has a button that writes, and
    the API refuses the writes the buttons would make."""
    read = ARGS["read_key"]
    sign_in(page, read)
    for name in ["Flows", "Webhooks", "Exports", "Keys"]:
        check(page.get_by_role("link", name=name).count() == 0, f"read key sees the {name} link")
    page.goto(BASE + "/console/#/users/alice-1")
    expect(page.get_by_role("heading", name="User alice-1")).to_be_visible()
    for name in ["Add tag", "Erase user…", "Save fields"]:
        check(page.get_by_role("button", name=name).count() == 0, f"read key sees '{name}'")
    page.goto(BASE + "/console/#/segments")
    expect(page.get_by_role("heading", name="Segments")).to_be_visible()
    check(page.get_by_role("button", name="New segment").count() == 0
          and page.get_by_role("link", name="New segment").count() == 0, "read key sees New segment")
    page.goto(BASE + "/console/#/fields")
    expect(page.get_by_role("heading", name="Custom fields")).to_be_visible()
    check(page.get_by_role("button", name="Declare field").count() == 0, "read key can declare fields")
    page.goto(BASE + "/console/#/keys")
    expect(page.get_by_text("This page needs an admin key")).to_be_visible()
    shot(page, "read-key-keys-page")
    # the API is the contract: what the buttons would do is refused for this key
    refused = page.evaluate("""async (k) => {
        const h = {Authorization: 'Bearer ' + k, 'Content-Type': 'application/json'};
        const put = await fetch('/v1/default/users/alice-1', {method: 'PUT', headers: h, body: '{"tags":{"add":["x"]}}'});
        const seg = await fetch('/v1/default/segments', {method: 'POST', headers: h, body: '{"id":"x","name":"x","match":"all","conditions":[]}'});
        const key = await fetch('/v1/default/keys', {method: 'POST', headers: h, body: '{"role":"admin"}'});
        const del = await fetch('/v1/default/users/alice-1', {method: 'DELETE', headers: h});
        return [put.status, seg.status, key.status, del.status, (await key.json()).error];
    }""", read)
    check(refused == [403, 403, 403, 403, "forbidden"], f"read key writes: {refused}")
    sign_out(page)


def customers(page):
    admin = ARGS["admin_key"]
    page.get_by_label("User id starts with").fill("alice")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url("**prefix=alice**")
    expect(page.locator("table tbody tr").first).to_be_visible()
    _, api = http("GET", f"/v1/{ENV}/users?prefix=alice&limit=50", admin)
    want = [u["user_id"] for u in api["users"]]
    check(len(want) >= 3, f"seeded alice users: {want}")
    check(first_column(page) == want, f"prefix table {first_column(page)} != API {want}")
    labelled(page)
    shot(page, "customers-prefix")
    # tag filter
    page.get_by_role("button", name="Clear").click()
    page.get_by_label("Tag").fill("vip")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url("**tag=vip**")
    _, api = http("GET", f"/v1/{ENV}/users?tag=vip", admin)
    expect(page.locator("table tbody tr")).to_have_count(len(api["users"]))
    check(first_column(page) == [u["user_id"] for u in api["users"]], "tag filter")
    # custom field filter
    page.get_by_role("button", name="Clear").click()
    page.get_by_label("Custom field").select_option("plan")
    page.get_by_label("Field value").fill("gold")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url("**field=plan**")
    _, api = http("GET", f"/v1/{ENV}/users?field.plan=gold", admin)
    expect(page.locator("table tbody tr")).to_have_count(len(api["users"]))
    check(first_column(page) == [u["user_id"] for u in api["users"]], "field filter")
    # paging: everything, 50 a page, never another environment's user
    page.get_by_role("button", name="Clear").click()
    page.wait_for_url("**#/customers")
    expect(page.locator("table tbody tr")).to_have_count(50)
    seen = first_column(page)
    page.get_by_role("button", name="Next page").click()
    page.wait_for_url("**cursor=**")
    expect(page.get_by_role("heading", name="Customers (later page)")).to_be_visible()
    seen += first_column(page)
    _, all_users = http("GET", f"/v1/{ENV}/users?limit=1000", admin)
    check(seen == [u["user_id"] for u in all_users["users"]][:len(seen)], "pages follow the API's order")
    check(ARGS["other_user"] not in page.content(), "another environment's user shows")
    page.goto(BASE + f"/console/#/users/{ARGS['other_user']}")
    expect(page.get_by_text("no user with id")).to_be_visible()


def profile(page):
    admin = ARGS["admin_key"]
    page.goto(BASE + "/console/#/customers?prefix=alice-1")
    page.get_by_role("link", name="alice-1", exact=True).click()
    expect(page.get_by_role("heading", name="User alice-1")).to_be_visible()
    _, u = http("GET", f"/v1/{ENV}/users/alice-1", admin)
    dd = lambda f: page.locator(f'dd[data-field="{f}"]').inner_text()
    check(dd("event_count") == str(u["event_count"]), f"event_count {dd('event_count')} != {u['event_count']}")
    for f in ["created_at", "first_seen_at", "last_seen_at", "last_seen_ios_at", "last_seen_web_at"]:
        check(dd(f) == when(u[f]), f"{f}: {dd(f)} != {when(u[f])}")
    check(page.get_by_label("plan (text)").input_value() == u["fields"]["plan"]["value"], "field plan")
    stats = page.locator("table", has_text="Count").last.locator("tbody tr").count()
    check(stats == len(u["event_stats"]), f"event stats rows {stats} != {len(u['event_stats'])}")
    check(page.locator(".tail details").count() == min(20, u["event_count"]), "latest events")
    for m in u["segment_memberships"]:
        check(page.get_by_role("link", name=m["segment_id"]).count() >= 1, f"segment {m}")
    tags = page.locator('[data-field="tags"] .tag')
    check(sorted(t.split("×")[0].strip() for t in tags.all_inner_texts()) == sorted(u["tags"]), "tags")
    # add a tag: it shows once the profile job folded it in, and the API agrees
    page.get_by_label("New tag").fill("console-added")
    page.get_by_role("button", name="Add tag").click()
    expect(page.locator('[data-field="tags"]').get_by_text("console-added")).to_be_visible(timeout=20000)
    _, u = http("GET", f"/v1/{ENV}/users/alice-1", admin)
    check("console-added" in u["tags"], f"API tags {u['tags']}")
    # edit a field
    page.get_by_label("plan (text)").fill("platinum")
    page.get_by_role("button", name="Save fields").click()
    wait_for(lambda: http("GET", f"/v1/{ENV}/users/alice-1", admin)[1]["fields"]["plan"]["value"] == "platinum",
             "field write reaches the profile", 20)
    expect(page.get_by_label("plan (text)")).to_have_value("platinum", timeout=20000)
    labelled(page)
    shot(page, "profile")
    # erase, with a typed confirmation
    page.goto(BASE + "/console/#/users/bob-29")
    expect(page.get_by_role("heading", name="User bob-29")).to_be_visible()
    page.get_by_role("button", name="Erase user…").click()
    dialog = page.get_by_role("dialog")
    check(dialog.get_by_role("button", name="Erase user").is_disabled(), "erase enabled before typing")
    dialog.get_by_label("Type bob-29 to confirm").fill("bob-29")
    dialog.get_by_role("button", name="Erase user").click()
    expect(page.get_by_role("heading", name="Customers", exact=True).first).to_be_visible(timeout=30000)
    check(http("GET", f"/v1/{ENV}/users/bob-29", admin)[0] == 404, "bob-29 still there")


def preview_count(page):
    """The count the page shows once its preview settled, and the JSON it shows."""
    count = page.locator('[data-testid="preview-count"][data-state="fresh"]')
    expect(count).to_be_visible()
    return int(count.inner_text()), json.loads(page.locator('[data-testid="definition-json"]').inner_text())


def api_count(definition):
    d = dict(definition, id=definition.get("id") or "preview", name=definition.get("name") or "preview")
    status, out = http("POST", f"/v1/{ENV}/segments:preview", ARGS["admin_key"], d)
    check(status == 200, f"preview {status} {out}")
    return out["count"]


def builder(page):
    page.goto(BASE + "/console/#/segments")
    page.get_by_role("button", name="New segment").click()
    expect(page.get_by_role("heading", name="New segment")).to_be_visible()
    page.get_by_label("Id", exact=True).fill("console-buyers")
    page.get_by_label("Name", exact=True).fill("Console buyers")
    counts = []
    n, d = preview_count(page)  # the default: seen in the last 7 days
    check(n == api_count(d), f"preview {n} != API")
    counts.append(n)
    cond = page.get_by_role("group", name="Condition 1")
    cond.get_by_label("Field").select_option("event_count")
    cond.get_by_label("Operator").select_option("gte")
    cond.get_by_label("Value").fill("3")
    page.wait_for_timeout(50)
    n, d = preview_count(page)
    check(d["conditions"][0] == {"field": "event_count", "op": "gte", "value": 3}, f"JSON {d}")
    check(n == api_count(d), f"preview {n} != API for {d}")
    counts.append(n)
    page.get_by_role("button", name="+ Event condition").click()
    cond2 = page.get_by_role("group", name="Condition 2")
    cond2.get_by_label("Event").fill("purchase")
    cond2.get_by_label("Count", exact=True).select_option("gte")
    cond2.get_by_label("Count value").fill("2")
    n, d = preview_count(page)
    check(d["conditions"][1] == {"event": "purchase", "op": "did", "count": {"op": "gte", "value": 2}}, f"JSON {d}")
    check(n == api_count(d), f"preview {n} != API for {d}")
    counts.append(n)
    check(counts[0] > counts[1] > counts[2] > 0, f"the count follows the conditions: {counts}")
    page.get_by_text("Compiled SQL").click()
    check("event_stats" in page.locator('pre[aria-label="Compiled SQL"]').inner_text(), "compiled SQL shown")
    # a bad value: the API's problem, by path
    cond.get_by_label("Value").fill("many")
    expect(page.get_by_role("alert")).to_contain_text("conditions[0].value", timeout=10000)
    shot(page, "segment-builder-problem")
    cond.get_by_label("Value").fill("3")
    n, d = preview_count(page)
    check(n == counts[2], "back to the valid definition")
    sample = page.locator("#h-preview ~ div ul li").all_inner_texts()
    labelled(page)
    shot(page, "segment-builder")
    page.get_by_role("button", name="Save segment").click()
    expect(page.get_by_role("heading", name="Console buyers")).to_be_visible()
    # members appear after the segment job evaluated it
    def members():
        page.reload()
        expect(page.get_by_role("heading", name="Console buyers")).to_be_visible()
        return page.locator('[data-field="member_count"]').inner_text() == str(counts[2])
    wait_for(members, "segment members after the job", 30, 1)
    shown = page.locator("#members ~ .table-wrap tbody tr td:first-child").all_inner_texts()
    check(shown[:len(sample)] == sample, f"members {shown} vs preview sample {sample}")
    _, m = http("GET", f"/v1/{ENV}/segments/console-buyers/members", ARGS["admin_key"])
    check(shown == [x["user_id"] for x in m["members"]], "members match the API")
    shot(page, "segment-members")
    page.goto(BASE + "/console/#/segments")
    row = page.locator("tr", has_text="Console buyers")
    check(row.locator("td.num").first.inner_text() == str(counts[2]), "list member count")
    shot(page, "segments")
    # edit: the builder loads the stored definition
    page.goto(BASE + "/console/#/segments/console-buyers/edit")
    expect(page.get_by_role("group", name="Condition 2").get_by_label("Event")).to_have_value("purchase")
    OUT["segment_counts"] = counts
    # a shared link: the builder opens on a given definition; a broken one is explained
    shared = {"match": "any", "conditions": [{"tag": "vip", "op": "has"}]}
    page.goto(BASE + "/console/#/segments/new?" + urllib.parse.urlencode({"definition": json.dumps(shared)}))
    expect(page.get_by_role("group", name="Condition 1").get_by_label("Tag")).to_have_value("vip")
    n, d = preview_count(page)
    check(n == api_count(d) and d["match"] == "any", f"shared definition {n} {d}")
    page.goto(BASE + "/console/#/segments/new?definition=%7Bnope")
    expect(page.get_by_role("alert")).to_contain_text("definition: not JSON")


def ingest(key, events):
    status, out = http("POST", f"/v1/{ARGS.get('env', ENV)}/events", key, events)
    check(status == 202, f"ingest {status} {out}")


def debugger(page):
    page.goto(BASE + "/console/#/debugger")
    expect(page.locator('[data-testid="tail-state"]')).to_have_text("live", timeout=15000)
    stamp = str(int(time.time() * 1000))
    t0 = time.time()
    ingest(ARGS["ingest_key"], [{"event_name": f"live-{stamp}", "user_id": "dbg-user", "category": "sdk", "properties": {"stamp": stamp}}])
    http("POST", "/v1/other/events", ARGS["other_ingest_key"], [{"event_name": f"other-{stamp}", "user_id": ARGS["other_user"]}])
    expect(page.locator(".tail summary", has_text=f"live-{stamp}")).to_be_visible(timeout=10000)
    OUT["debugger_seconds"] = round(time.time() - t0, 2)
    page.locator(".tail summary", has_text=f"live-{stamp}").click()
    expect(page.locator(".tail details[open] pre")).to_contain_text(f'"stamp": "{stamp}"')
    check(page.get_by_text(f"other-{stamp}").count() == 0, "another environment's event in the tail")
    # pause: held, not shown; resume shows it
    page.get_by_role("button", name="Pause").click()
    ingest(ARGS["ingest_key"], [{"event_name": f"paused-{stamp}", "user_id": "dbg-user", "category": "sdk"}])
    expect(page.get_by_text("1 held while paused")).to_be_visible(timeout=10000)
    check(page.locator(".tail summary", has_text=f"paused-{stamp}").count() == 0, "shown while paused")
    page.get_by_role("button", name="Resume").click()
    expect(page.locator(".tail summary", has_text=f"paused-{stamp}")).to_be_visible()
    # filters
    page.get_by_label("Event name", exact=True).fill(f"wanted-{stamp}")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.locator('[data-testid="tail-state"]')).to_have_text("live", timeout=15000)
    ingest(ARGS["ingest_key"], [{"event_name": f"unwanted-{stamp}", "user_id": "dbg-user", "category": "sdk"},
                                {"event_name": f"wanted-{stamp}", "user_id": "dbg-user", "category": "custom"}])
    expect(page.locator(".tail summary", has_text=f"wanted-{stamp}")).to_be_visible(timeout=10000)
    check(page.locator(".tail summary", has_text=f"unwanted-{stamp}").count() == 0, "filter let another event in")
    expect(page.get_by_role("img", name="Events per hour by event name")).to_be_visible()
    labelled(page)
    shot(page, "debugger")


def webhooks(page):
    admin = ARGS["admin_key"]
    wid = ARGS["webhook_id"]
    page.goto(BASE + "/console/#/webhooks")
    _, w = http("GET", f"/v1/{ENV}/webhooks/{wid}", admin)
    row = page.locator("tr", has_text=w["url"])
    check(w["status"]["state"] == "failing", f"the webhook is failing: {w['status']}")
    expect(row.get_by_text("failing since")).to_be_visible()
    shot(page, "webhooks")
    row.get_by_role("link").first.click()
    expect(page.locator("table").get_by_role("cell", name="500", exact=True).first).to_be_visible()
    _, log = http("GET", f"/v1/{ENV}/webhooks/{wid}/deliveries", admin)
    rows = page.locator("table tbody tr")
    check(rows.count() == len(log["deliveries"]), f"log rows {rows.count()} != {len(log['deliveries'])}")
    first = rows.first.locator("td").all_inner_texts()
    d = log["deliveries"][0]
    check(first[2] == str(d["attempt"]) and first[3] == d["status"] and first[4] == str(d["http_status"])
          and first[5] == f"{d['latency_ms']} ms", f"row {first} vs {d}")
    check(any(x["status"] == "failed" and x["http_status"] == 500 for x in log["deliveries"]), "a failed 500")
    shot(page, "webhook-failing")
    # the endpoint is fixed; send a test, then recover what failed
    urllib.request.urlopen(ARGS["receiver_fix"]).read()
    page.get_by_role("button", name="Send test").click()
    expect(page.get_by_text("test delivered")).to_be_visible(timeout=15000)
    page.get_by_label("Since").fill("1h")
    page.get_by_role("button", name="Recover").click()
    expect(page.get_by_text("Recovering messages since")).to_be_visible()

    def delivered():
        page.get_by_role("button", name="Refresh").click()
        page.wait_for_timeout(300)
        return page.locator("table tbody tr", has_text="delivered").count() > 0
    wait_for(delivered, "a delivered attempt after recover", 30, 1)
    wait_for(lambda: http("GET", f"/v1/{ENV}/webhooks/{wid}", admin)[1]["status"]["state"] == "healthy", "healthy", 20)
    page.get_by_role("button", name="Refresh").click()
    expect(page.locator('[data-field="health"]')).to_have_text("healthy")
    page.get_by_role("button", name="Pause").click()
    expect(page.locator('[data-field="health"]')).to_contain_text("paused")
    check(http("GET", f"/v1/{ENV}/webhooks/{wid}", admin)[1]["enabled"] is False, "paused in the API")
    page.get_by_role("button", name="Resume").click()
    expect(page.locator('[data-field="health"]')).to_have_text("healthy")
    # Resume re-renders the page: act on the new one (CI run 34 clicked the old one, whose
    # answer went to a detached element).
    expect(page.get_by_role("button", name="Pause")).to_be_visible()
    page.get_by_role("button", name="Rotate secret").click()
    page.get_by_role("dialog").get_by_role("button", name="Rotate").click()
    expect(page.get_by_text("The new secret, shown this once")).to_be_visible(timeout=20000)
    secret = page.locator("pre.json").last.inner_text()
    check(secret.strip('"').startswith("whsec_"), f"secret {secret}")
    check(len(http("GET", f"/v1/{ENV}/webhooks/{wid}", admin)[1]["secrets"]) == 2, "two signing secrets after rotation")
    labelled(page)
    shot(page, "webhook-recovered")


def exports(page):
    admin = ARGS["admin_key"]
    page.goto(BASE + "/console/#/exports")
    xid = ARGS["export_id"]
    expect(page.get_by_role("heading", name="profiles-to-disk")).to_be_visible()
    card = page.locator(f"#exp-{xid}")
    card.get_by_role("button", name="Run now").click()
    expect(card.get_by_text("Ran ")).to_be_visible(timeout=30000)
    page.reload()
    _, s = http("GET", f"/v1/{ENV}/exports/{xid}/status", admin)
    for f in s["last_files"]:
        expect(page.locator(f"#exp-{xid}").get_by_text(f)).to_be_visible()
    check(len(s["last_files"]) >= 1, f"files {s}")
    card = page.locator(f"#exp-{xid}")
    card.get_by_label("Backfill from").fill("not a time")
    card.get_by_label("to", exact=True).fill("2026-01-01T00:00:00Z")
    card.get_by_role("button", name="Backfill").click()
    expect(card.get_by_role("alert")).to_contain_text("from")
    labelled(page)
    shot(page, "exports")


def fields_and_keys(page):
    admin = ARGS["admin_key"]
    page.goto(BASE + "/console/#/fields")
    page.get_by_label("Name", exact=True).fill("console_score")
    page.get_by_label("Type").select_option("number")
    page.get_by_role("button", name="Declare field").click()
    expect(page.locator("table").get_by_text("console_score")).to_be_visible()
    check(any(f["name"] == "console_score" for f in http("GET", f"/v1/{ENV}/fields", admin)[1]["fields"]), "field declared")
    page.get_by_label("Name", exact=True).fill("plan")
    page.get_by_role("button", name="Declare field").click()
    expect(page.get_by_role("alert")).to_be_visible()
    shot(page, "fields")
    page.get_by_role("button", name="Delete field console_score").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.locator("table").get_by_text("console_score")).to_have_count(0)

    page.goto(BASE + "/console/#/keys")
    _, keys = http("GET", f"/v1/{ENV}/keys", admin)
    expect(page.locator("table tbody tr")).to_have_count(len(keys["keys"]))
    secret = admin.split("_", 2)[2]
    check(secret not in page.content(), "a key's secret is on the keys page")
    page.get_by_label("Role").select_option("read")
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_text("Copy it now")).to_be_visible()
    new = page.locator("pre.json").last.inner_text().strip('"')
    status, me = http("GET", "/v1/whoami", new)
    check(status == 200 and me["role"] == "read" and me["environment"] == ENV, f"new key {status} {me}")
    page.reload()
    page.get_by_role("button", name=f"Revoke key {me['key_id']}").click()
    page.get_by_role("dialog").get_by_role("button", name="Revoke").click()
    expect(page.locator("tr", has_text=me["key_id"]).get_by_text("revoked")).to_be_visible()
    check(http("GET", "/v1/whoami", new)[0] == 401, "revoked key still works")
    labelled(page)
    shot(page, "keys")


def flows(page):
    """Create and publish a flow from its JSON, preview it for a user (compared with the
    API's preview), start it from a customer's page, follow the run to its end, and find
    it in the flow's runs."""
    admin = ARGS["admin_key"]
    hook = ARGS["receiver_fix"].replace("/fix", "/hook")
    flow = {"id": "console-flow", "name": "Console flow",
            "variables": {"coupon": {"type": "text", "default": "HELLO"}},
            "steps": [
                {"id": "vip", "type": "branch", "condition": {"match": "all", "conditions": [{"tag": "vip", "op": "has"}]},
                 "then": "post", "else": "done"},
                {"id": "done", "type": "exit"},
                {"id": "post", "type": "webhook", "url": hook,
                 "body": {"user": "{{ profile.user_id }}", "coupon": "{{ variables.coupon }}"}}]}
    page.goto(BASE + "/console/#/flows")
    expect(page.get_by_role("heading", name="Flows", exact=True)).to_be_visible()
    page.get_by_label("Flow document (JSON)").fill(json.dumps({**flow, "steps": flow["steps"][:1]}))
    page.get_by_role("button", name="Create flow").click()
    expect(page.get_by_role("alert")).to_contain_text("steps[0].then", timeout=10000)
    shot(page, "flow-problems")
    page.get_by_label("Flow document (JSON)").fill(json.dumps(flow))
    page.get_by_role("button", name="Create flow").click()
    expect(page.get_by_text("The signing secret of its webhook steps is shown this once")).to_be_visible(timeout=10000)
    check(page.locator("pre.json").last.inner_text().strip('"').startswith("whsec_"), "flow secret shown")
    page.get_by_role("link", name="Open the flow").click()
    expect(page.get_by_role("heading", name="Console flow")).to_be_visible()
    expect(page.locator('[data-field="state"]')).to_have_text("live v1")
    page.get_by_label("User id").fill("alice-1")
    page.get_by_label("Variables (JSON)").fill('{"coupon": "VIP"}')
    page.get_by_role("button", name="Preview", exact=True).click()
    preview = page.locator('[data-field="preview"]')
    expect(preview.locator('[data-step="post"]')).to_be_visible(timeout=10000)
    _, api = http("POST", f"/v1/{ENV}/flows/console-flow/preview", admin, {"user_id": "alice-1", "variables": {"coupon": "VIP"}})
    check(api["variables"]["coupon"] == {"value": "VIP", "source": "trigger"}, f"preview variables {api}")
    expect(preview.get_by_role("cell", name='"VIP"')).to_be_visible()
    req = api["steps"][2]["request"]
    expect(preview.locator('[data-step="post"] code')).to_have_text(f"{req['method']} {req['url']}")
    expect(preview.locator('[data-step="post"] pre')).to_contain_text('"coupon": "VIP"')
    check(api["steps"][0]["result"] is True, f"alice-1 is vip: {api['steps'][0]}")
    expect(preview.locator('[data-step="vip"]')).to_contain_text("takes then")
    labelled(page)
    shot(page, "flow-preview")

    # a manual start from the customer's page
    page.goto(BASE + "/console/#/users/alice-1")
    expect(page.get_by_role("heading", name="User alice-1")).to_be_visible()
    card = page.locator("section", has=page.get_by_role("heading", name="Start a flow"))
    expect(card.get_by_label("Flow")).to_have_value("console-flow")
    card.get_by_label("Variables (JSON)").fill('{"coupon": "FROM-CONSOLE"}')
    card.get_by_role("button", name="Start flow").click()
    link = card.get_by_role("link", name="run_")
    expect(link).to_be_visible(timeout=10000)
    run_id = link.inner_text()
    link.click()
    expect(page.get_by_role("heading", name=f"Run {run_id}")).to_be_visible()
    expect(page.locator('[data-field="status"]')).to_have_text("completed", timeout=30000)
    _, run = http("GET", f"/v1/{ENV}/flows/console-flow/runs/{run_id}", admin)
    check(run["status"] == "completed" and run["variables"]["coupon"] == "FROM-CONSOLE", f"run {run}")
    check(run["trigger"].get("source") == "console", f"started from the console: {run['trigger']}")
    rows = page.locator("table tbody tr")
    expect(rows).to_have_count(len(run["log"]))
    check([r.split("\t")[2] for r in rows.all_inner_texts()] == [l["what"] for l in run["log"]], "step log rows")
    shot(page, "flow-run")
    page.get_by_role("link", name="console-flow").click()
    expect(page.locator("table tbody tr", has_text=run_id)).to_contain_text("completed")
    shot(page, "flow")
    page.goto(BASE + "/console/#/flows")

    def counted():
        page.goto(BASE + "/console/#/flows?t=" + str(time.time()))
        expect(page.get_by_role("heading", name="Flows", exact=True)).to_be_visible()
        row = page.locator("tr", has_text="console-flow")
        return row.count() == 1 and row.locator("td").nth(3).inner_text() == "1"
    wait_for(counted, "the flow's started count", 30, 1)
    shot(page, "flows")


def usable(page, browser):
    """Keyboard, focus, schemes, a narrow window."""
    page.goto(BASE + "/console/#/customers")
    expect(page.get_by_role("heading", name="Customers", exact=True).first).to_be_visible()
    # a route change moves focus to the page's heading; from the top of the page the
    # first Tab is the skip link, which jumps to the content
    check(page.evaluate("document.activeElement.tagName") == "H1", "focus on the new page's heading")
    page.keyboard.press("Tab")
    check(page.evaluate("document.activeElement.name") == "prefix", "Tab from the heading enters the filters")
    for _ in range(20):  # back up through the header to the skip link
        page.keyboard.press("Shift+Tab")
        if page.evaluate("document.activeElement.className") == "skip":
            break
    check(page.evaluate("document.activeElement.className") == "skip", "the skip link is reachable by keyboard")
    page.keyboard.press("Enter")
    check(page.evaluate("document.activeElement.id") == "main", "the skip link jumps to the content")
    page.keyboard.press("Tab")
    focused = page.evaluate("""() => { const e = document.activeElement; const s = getComputedStyle(e);
        return [e.tagName, s.outlineStyle, s.outlineWidth]; }""")
    check(focused[1] != "none" and focused[2] != "0px", f"focus not visible: {focused}")
    # keyboard only: search and open a profile
    page.get_by_label("User id starts with").focus()
    page.keyboard.type("alice-2")
    page.keyboard.press("Enter")
    page.wait_for_url("**prefix=alice-2**")
    link = page.get_by_role("link", name="alice-2", exact=True)
    link.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="User alice-2")).to_be_visible()
    light = page.evaluate("getComputedStyle(document.body).backgroundColor")
    page.get_by_role("button", name="Use the dark scheme").click()
    dark = page.evaluate("getComputedStyle(document.body).backgroundColor")
    check(light != dark, f"scheme switch: {light} -> {dark}")
    shot(page, "profile-dark")
    page.get_by_role("button", name="Use the light scheme").click()
    narrow = browser.new_page(viewport={"width": 390, "height": 800})
    narrow.set_default_timeout(15000)  # as the main page: a loaded CI machine is slow
    sign_in(narrow, ARGS["admin_key"])
    for route in ["customers", "users/alice-1", "segments/new", "debugger", "webhooks", "flows/console-flow"]:
        narrow.goto(BASE + f"/console/#/{route}")
        narrow.wait_for_timeout(700)
        over = narrow.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        check(over <= 1, f"{route} scrolls sideways by {over}px at 390 px")
    narrow.goto(BASE + "/console/#/customers")
    expect(narrow.locator("table tbody tr").first).to_be_visible()
    shot(narrow, "customers-narrow")
    narrow.close()


def main():
    os.makedirs(ARGS["artifacts"], exist_ok=True)
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(15000)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: m.type == "error" and "status of 4" not in m.text and errors.append(m.text))
        page.on("request", lambda r: r.url.startswith(BASE) or errors.append(f"request off the server: {r.url}"))
        step = "start"
        try:
            for step, fn in [("read-only", read_only)]:
                fn(page)
            step = "sign-in"
            sign_in(page, ARGS["admin_key"])
            shot(page, "customers")
            for step, fn in [("customers", customers), ("profile", profile), ("builder", builder),
                             ("debugger", debugger), ("webhooks", webhooks), ("flows", flows), ("exports", exports),
                             ("fields-and-keys", fields_and_keys)]:
                fn(page)
            step = "usable"
            usable(page, browser)
            # the key never went into a URL, and stays in the tab's session only
            check(ARGS["admin_key"] not in page.url, "key in the URL")
            check(page.evaluate("localStorage.length === 0 || !JSON.stringify(localStorage).includes('tm_')"), "key in localStorage")
        except Exception:
            try:
                shot(page, f"failed-{step}")
            except Exception:
                pass
            print(f"console test failed at step '{step}'", file=sys.stderr)
            raise
        finally:
            browser.close()
    check(errors == [], f"browser errors: {errors}")
    print(json.dumps(OUT))


if __name__ == "__main__":
    main()
