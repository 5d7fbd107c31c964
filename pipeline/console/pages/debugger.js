// The analytics debugger: a live tail of events as they are committed (the SSE stream
// GET /v1/{env}/events/stream, read with fetch so the key travels in a header, never in
// the URL), filtered by user id, event name and category, pausable, each event's JSON one
// click away; and events per hour by name or category (the query API).
import { el, field, go, heading, pretty, session, sql, when } from "../app.js";
import { stackedBars } from "../charts.js";

const KEEP = 500;

/** Splits an SSE byte stream into messages `{id, event, data}` (WHATWG rules, enough of them). */
export async function* sse(body, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  signal.addEventListener("abort", () => reader.cancel().catch(() => {}));
  let buf = "", msg = { data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let nl;
    while ((nl = buf.search(/\r\n|\n|\r/)) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(buf[nl] === "\r" && buf[nl + 1] === "\n" ? nl + 2 : nl + 1);
      if (line === "") {
        if (msg.data.length) yield { id: msg.id, event: msg.event || "message", data: msg.data.join("\n") };
        msg = { data: [] };
      } else if (!line.startsWith(":")) {
        const i = line.indexOf(":");
        const k = i < 0 ? line : line.slice(0, i);
        const v = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
        if (k === "data") msg.data.push(v);
        else if (k === "id") msg.id = v;
        else if (k === "event") msg.event = v;
      }
    }
  }
}

export async function render(view, { query }) {
  const filters = { user_id: query.get("user_id") || "", event_name: query.get("event_name") || "", category: query.get("category") || "" };
  const inputs = {
    user_id: el("input", { type: "text", name: "user_id", value: filters.user_id, autocomplete: "off" }),
    event_name: el("input", { type: "text", name: "event_name", value: filters.event_name, autocomplete: "off" }),
    category: el("select", { name: "category" }, ["", "platform", "sdk", "custom", "system"].map((c) =>
      el("option", { value: c, selected: filters.category === c }, c || "(any)"))),
  };
  const form = el("form", { class: "card filters", "aria-label": "Filter the live tail" },
    field("User id", inputs.user_id, "comma-separated for several"),
    field("Event name", inputs.event_name, "comma-separated for several"),
    field("Category", inputs.category),
    el("div", { class: "actions" }, el("button", { type: "submit", class: "primary" }, "Apply filters")));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const [k, i] of Object.entries(inputs)) if (i.value.trim()) q.set(k, i.value.trim());
    go("debugger", q);
  });

  const state = el("span", { class: "badge warn", dataset: { testid: "tail-state" } }, "connecting");
  const counter = el("span", { dataset: { testid: "tail-count" } }, "0");
  const held = el("span", { class: "hint" });
  const pause = el("button", { type: "button", "aria-pressed": "false" }, "Pause");
  const clear = el("button", { type: "button" }, "Clear");
  const list = el("div", { class: "tail card", role: "log", "aria-label": "Live events, newest first", "aria-live": "off" });
  let paused = false, seen = 0, buffered = [];

  const show = (e, id) => {
    const row = el("details", { dataset: { eventId: e.event_id || "", streamId: id || "" } },
      el("summary", {},
        el("span", { class: "mono" }, when(e.occurred_at)),
        el("strong", {}, e.event_name),
        el("a", { href: `#/users/${encodeURIComponent(e.user_id)}` }, e.user_id),
        el("span", {}, e.category),
        el("span", {}, e.platform || ""),
        el("span", { class: "hint" }, `#${id}`)),
      pretty(e));
    list.prepend(row);
    while (list.childElementCount > KEEP) list.lastElementChild.remove();
  };
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
    pause.setAttribute("aria-pressed", String(paused));
    if (!paused) {
      buffered.forEach(([e, id]) => show(e, id));
      buffered = [];
      held.textContent = "";
    }
  });
  clear.addEventListener("click", () => list.replaceChildren());

  const chartBox = el("div");
  const by = el("select", { name: "by" }, el("option", { value: "event_name" }, "event name"), el("option", { value: "category" }, "category"));
  by.addEventListener("change", () => drawChart(chartBox, by.value));

  view.append(heading("Analytics debugger"), form,
    el("section", { "aria-labelledby": "h-tail" },
      el("div", { class: "row" }, el("h2", { id: "h-tail" }, "Live tail"), state, el("span", {}, counter, " events"), held, pause, clear),
      list),
    el("section", { "aria-labelledby": "h-hourly" },
      el("div", { class: "row" }, el("h2", { id: "h-hourly" }, "Events per hour (last 24 h)"), field("By", by),
        el("button", { type: "button", onclick: () => drawChart(chartBox, by.value) }, "Refresh")),
      chartBox));
  drawChart(chartBox, "event_name");

  // the tail: reconnects with Last-Event-ID, so nothing is missed or repeated
  const stop = new AbortController();
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(filters)) if (v) q.set(k, v);
  let last = null;
  (async () => {
    while (!stop.signal.aborted) {
      try {
        const headers = { Authorization: `Bearer ${session.get().key}`, Accept: "text/event-stream" };
        if (last) headers["Last-Event-ID"] = last;
        const url = `/v1/${encodeURIComponent(session.get().environment)}/events/stream${[...q].length ? `?${q}` : ""}`;
        const resp = await fetch(url, { headers, signal: stop.signal });
        if (!resp.ok) {
          const body = await resp.json().catch(() => ({}));
          state.textContent = `error ${resp.status}: ${body.message || ""}`;
          state.className = "badge bad";
          if (resp.status < 500) return;
        } else {
          state.textContent = "live";
          state.className = "badge ok";
          for await (const m of sse(resp.body, stop.signal)) {
            if (m.event === "error") {
              state.textContent = `stream error: ${m.data}`;
              state.className = "badge bad";
              continue;
            }
            last = m.id;
            const e = JSON.parse(m.data);
            counter.textContent = String(++seen);
            if (paused) {
              buffered.push([e, m.id]);
              held.textContent = `${buffered.length} held while paused`;
            } else show(e, m.id);
          }
        }
      } catch {
        if (stop.signal.aborted) return;
        state.textContent = "reconnecting";
        state.className = "badge warn";
      }
      await new Promise((r) => setTimeout(r, 2000));
    }
  })();
  return () => stop.abort();
}

async function drawChart(box, by) {
  try {
    const rows = await sql(
      `SELECT date_trunc('hour', occurred_at) AS t, ${by === "category" ? "category" : "event_name"} AS key, count(*) AS n
       FROM events WHERE occurred_at >= now() - INTERVAL '24 hours' GROUP BY 1, 2 ORDER BY 1`);
    box.replaceChildren(rows.length ? stackedBars(`Events per hour by ${by === "category" ? "category" : "event name"}`, rows)
      : el("p", { class: "empty" }, "No events in the last 24 hours."));
  } catch (e) {
    box.replaceChildren(el("p", { class: "error" }, e.message));
  }
}
