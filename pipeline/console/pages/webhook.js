// One webhook subscription: health, the delivery log (every attempt's status, HTTP code,
// latency and error), send test, pause / resume, recover since T, rotate secret.
import { api, attempt, confirmDialog, el, field, heading, pretty, session, table, toast, when, refresh } from "../app.js";
import { adminOnly, health } from "./webhooks.js";

const STATUSES = ["", "delivered", "retrying", "failed", "gone"];

export async function render(view, { args, query }) {
  if (!session.isAdmin()) return adminOnly(view, "Webhook");
  const [id] = args;
  const base = `/webhooks/${encodeURIComponent(id)}`;
  const status = query.get("status") || "";
  const p = new URLSearchParams({ limit: "100" });
  if (status) p.set("status", status);
  const [w, log] = await Promise.all([api("GET", base), api("GET", `${base}/deliveries?${p}`)]);
  const out = el("div", { "aria-live": "polite" });
  const reload = () => refresh();
  // Timers this page set: cleared when it is left or re-rendered, so a late reload never
  // replaces a newer page (and with it a secret shown once).
  const timers = [];
  const act = (label, fn, cls) => el("button", { type: "button", class: cls, onclick: () => attempt(out, fn) }, label);

  const paused = w.status?.state === "paused";
  view.append(heading(w.description || w.url, el("div", { class: "actions" },
    act("Send test", async () => {
      const r = await api("POST", `${base}/test`);
      out.replaceChildren(el("div", { class: "card" },
        el("p", {}, r.delivered ? el("span", { class: "badge ok" }, "test delivered") : el("span", { class: "badge bad" }, "test failed"),
          ` HTTP ${r.http_status ?? "—"} in ${r.latency_ms} ms`, r.error ? ` · ${r.error}` : ""),
        r.response ? pretty(r.response) : null));
    }),
    paused
      ? act("Resume", async () => { await api("POST", `${base}/resume`); toast("Resumed"); reload(); })
      : act("Pause", async () => { await api("POST", `${base}/pause`); toast("Paused"); reload(); }),
    act("Rotate secret", async () => {
      if (!(await confirmDialog("Rotate the signing secret?", "A new secret signs from now on; the old one keeps signing too for the grace period (webhooks.rotation_grace).", { action: "Rotate" }))) return;
      const r = await api("POST", `${base}/rotate-secret`, {});
      out.replaceChildren(el("div", { class: "card" }, el("p", {}, "The new secret, shown this once:"), pretty(r.secret)));
    }),
    act("Delete", async () => {
      if (!(await confirmDialog(`Delete subscription ${id}?`, "Nothing more is delivered to this endpoint.", { action: "Delete" }))) return;
      await api("DELETE", base);
      toast(`Deleted ${id}`);
      window.location.hash = "#/webhooks";
    }, "danger"))));

  view.append(el("div", { class: "grid" },
    el("section", { class: "card" },
      el("h2", {}, "Status"),
      el("dl", { class: "facts" },
        el("dt", {}, "Health"), el("dd", { dataset: { field: "health" } }, health(w)),
        el("dt", {}, "URL"), el("dd", {}, el("code", {}, w.url)),
        el("dt", {}, "Pending messages"), el("dd", {}, String(w.status?.pending ?? 0)),
        el("dt", {}, "Failed messages"), el("dd", {}, String(w.status?.failed ?? 0)),
        el("dt", {}, "Events"), el("dd", {}, w.filter?.events?.length ? w.filter.events.join(", ") : "all"),
        el("dt", {}, "Secrets"), el("dd", {}, w.secrets.map((s) => `since ${when(s.created_at)}${s.expires_at ? ` until ${when(s.expires_at)}` : ""}`).join("; ")))),
    recoverForm(base, out, reload, timers)));
  view.append(out);

  const filter = el("select", { name: "status" }, STATUSES.map((s) => el("option", { value: s, selected: s === status }, s || "(any)")));
  filter.addEventListener("change", () => {
    const q = new URLSearchParams(filter.value ? { status: filter.value } : {});
    window.location.hash = `#/webhooks/${encodeURIComponent(id)}${filter.value ? `?${q}` : ""}`;
  });
  view.append(el("div", { class: "row" }, el("h2", {}, "Delivery log"), field("Status", filter), el("button", { type: "button", onclick: reload }, "Refresh")),
    table("Delivery attempts, newest first", [
      { label: "At", get: (d) => when(d.at) },
      { label: "Message", get: (d) => el("code", {}, d.message_id) },
      { label: "Attempt", class: "num", get: (d) => String(d.attempt) },
      { label: "Status", get: (d) => el("span", { class: `badge ${d.status === "delivered" ? "ok" : d.status === "retrying" ? "warn" : "bad"}` }, d.status) },
      { label: "HTTP", class: "num", get: (d) => (d.http_status === null || d.http_status === undefined ? "—" : String(d.http_status)) },
      { label: "Latency", class: "num", get: (d) => `${d.latency_ms} ms` },
      { label: "Error", get: (d) => d.error || "" },
      { label: "Events", class: "num", get: (d) => String(d.event_ids?.length ?? 0) },
      { label: "Next attempt", get: (d) => (d.next_attempt_at ? when(d.next_attempt_at) : "") },
    ], log.deliveries, { empty: "No delivery attempts yet." }));
  return () => timers.forEach(clearTimeout);
}

function recoverForm(base, out, reload, timers) {
  const since = el("input", { type: "text", name: "since", value: "24h", required: true });
  const form = el("form", { class: "card", "aria-labelledby": "h-recover" },
    el("h2", { id: "h-recover" }, "Recover"),
    el("p", {}, "Sends again the messages that failed every attempt since a time, in order."),
    field("Since", since, "RFC 3339, or a duration ago such as 2h or 3d"),
    el("div", { class: "actions" }, el("button", { type: "submit" }, "Recover")));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    attempt(out, async () => {
      const r = await api("POST", `${base}/recover`, { since: since.value.trim() });
      toast(`Recovering messages since ${when(r.recover_since)}`);
      timers.push(setTimeout(reload, 1500));
    });
  });
  return form;
}
