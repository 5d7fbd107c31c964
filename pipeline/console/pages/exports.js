// Scheduled exports (admin keys): each with its last window, lag, errors and files;
// run now, pause / resume, backfill a range.
import { api, attempt, el, field, heading, pretty, session, table, toast, when, refresh } from "../app.js";
import { adminOnly } from "./webhooks.js";

function lag(s) {
  if (s.lag_seconds === null || s.lag_seconds === undefined) return "—";
  const n = Number(s.lag_seconds);
  return n < 120 ? `${n} s` : n < 7200 ? `${Math.round(n / 60)} min` : `${Math.round(n / 3600)} h`;
}

export async function render(view) {
  if (!session.isAdmin()) return adminOnly(view, "Exports");
  const doc = await api("GET", "/exports");
  const statuses = await Promise.all(doc.exports.map((x) => api("GET", `/exports/${encodeURIComponent(x.id)}/status`)));
  view.append(heading("Exports"));
  if (!doc.exports.length) {
    view.append(el("p", { class: "empty" }, "No scheduled exports. Create one with POST /v1/{env}/exports or `tidemark exports add`."));
    return;
  }
  view.append(table("Scheduled exports", [
    { label: "Export", get: ({ x }) => el("a", { href: `#exp-${x.id}` }, x.description || x.id) },
    { label: "Source", get: ({ x }) => x.source },
    { label: "Every", get: ({ x }) => x.interval },
    { label: "Destination", get: ({ x }) => el("code", {}, x.destination) },
    { label: "State", get: ({ x, s }) => (!x.enabled ? el("span", { class: "badge warn" }, `paused${x.paused_reason ? `: ${x.paused_reason}` : ""}`)
      : s.last_error ? el("span", { class: "badge bad" }, `failing${s.failing_since ? ` since ${when(s.failing_since)}` : ""}`)
        : el("span", { class: "badge ok" }, "ok")) },
    { label: "Last window", get: ({ s }) => (s.last_good_window ? `${when(s.last_good_window.window.start)} → ${when(s.last_good_window.window.end)}` : "—") },
    { label: "Lag", class: "num", get: ({ s }) => lag(s) },
    { label: "Rows", class: "num", get: ({ s }) => String(s.rows_exported ?? 0) },
  ], doc.exports.map((x, i) => ({ x, s: statuses[i] }))));
  doc.exports.forEach((x, i) => view.append(card(x, statuses[i])));
}

function card(x, s) {
  const base = `/exports/${encodeURIComponent(x.id)}`;
  const out = el("div", { "aria-live": "polite" });
  const reload = () => refresh();
  const from = el("input", { type: "text", name: "from", required: true, placeholder: "2026-11-01T00:00:00Z" });
  const to = el("input", { type: "text", name: "to", required: true, placeholder: "2026-11-02T00:00:00Z" });
  const backfill = el("form", { class: "row", "aria-label": `Backfill ${x.id}` },
    field("Backfill from", from, "RFC 3339"), field("to", to, "RFC 3339"),
    el("button", { type: "submit" }, "Backfill"));
  backfill.addEventListener("submit", (ev) => {
    ev.preventDefault();
    attempt(out, async () => {
      const r = await api("POST", `${base}/backfill`, { from: from.value.trim(), to: to.value.trim() });
      toast(`Backfilling ${r.windows} windows of ${x.id}`);
    });
  });
  return el("section", { class: "card", id: `exp-${x.id}`, "aria-labelledby": `h-exp-${x.id}` },
    el("h2", { id: `h-exp-${x.id}` }, x.description || x.id),
    el("dl", { class: "facts" },
      el("dt", {}, "Last good window"), el("dd", {}, s.last_good_window
        ? `${when(s.last_good_window.window.start)} → ${when(s.last_good_window.window.end)}: ${s.last_good_window.rows} rows, finished ${when(s.last_good_window.finished_at)}` : "—"),
      el("dt", {}, "Files of that window"), el("dd", {}, s.last_files?.length ? el("ul", {}, s.last_files.map((f) => el("li", {}, el("code", {}, f)))) : "—"),
      el("dt", {}, "Next window"), el("dd", {}, `${when(s.next_window?.start)} → ${when(s.next_window?.end)} (closes ${when(s.next_window?.closes_at)})`),
      el("dt", {}, "Lag"), el("dd", {}, lag(s)),
      el("dt", {}, "Windows done"), el("dd", {}, String(s.windows_done ?? 0)),
      el("dt", {}, "Failures"), el("dd", {}, String(s.failures ?? 0)),
      el("dt", {}, "Last error"), el("dd", { class: s.last_error ? "bad" : "" }, s.last_error ? `${s.last_error} (${when(s.last_error_at)})` : "none"),
      el("dt", {}, "Next attempt"), el("dd", {}, when(s.next_attempt_at))),
    el("div", { class: "actions" },
      el("button", {
        type: "button", class: "primary", onclick: () => attempt(out, async () => {
          const r = await api("POST", `${base}/run`);
          out.replaceChildren(el("div", { class: "card" }, el("p", {}, r.error ? `Run failed: ${r.error}` : `Ran ${r.windows.length} windows`), pretty(r)));
        }),
      }, "Run now"),
      x.enabled
        ? el("button", { type: "button", onclick: () => attempt(out, async () => { await api("POST", `${base}/pause`); reload(); }) }, "Pause")
        : el("button", { type: "button", onclick: () => attempt(out, async () => { await api("POST", `${base}/resume`); reload(); }) }, "Resume")),
    backfill, out);
}
