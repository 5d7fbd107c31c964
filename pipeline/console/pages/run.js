// One run of a flow: its user, version, variables (redacted ones masked), each step's log
// line and what finished steps produced; cancel an active run, retry a failed one. An
// active run's page refreshes until it ends.
import { ApiError, api, attempt, el, heading, pretty, refresh, session, table, toast, when } from "../app.js";
import { adminOnly } from "./webhooks.js";
import { runBadge } from "./flow.js";

/** Run id -> times its page found no run yet. */
const waited = new Map();

export async function render(view, { args }) {
  if (!session.isAdmin()) return adminOnly(view, "Run");
  const [flow, id] = args;
  const base = `/flows/${encodeURIComponent(flow)}/runs/${encodeURIComponent(id)}`;
  const timers = [];
  let r;
  try {
    r = await api("GET", base);
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 404) throw e;
    // A run just started is stored once the flow worker takes in its start (within a
    // poll interval): wait for it a while, saying so.
    const tries = (waited.get(id) || 0) + 1;
    waited.set(id, tries);
    view.append(heading(`Run ${id}`),
      tries <= 30
        ? el("p", { class: "loading", dataset: { field: "status" } }, "Waiting for the flow worker to take in this run…")
        : el("p", {}, e.body.message));
    if (tries <= 30) timers.push(setTimeout(refresh, 1000));
    return () => timers.forEach(clearTimeout);
  }
  waited.delete(id);
  const out = el("div", { "aria-live": "polite" });
  const active = r.status === "running" || r.status === "waiting";
  const act = (label, fn, cls) => el("button", { type: "button", class: cls, onclick: () => attempt(out, fn) }, label);
  view.append(heading(`Run ${id}`, el("div", { class: "actions" },
    active ? act("Cancel run", async () => { await api("POST", `${base}/cancel`); toast("Cancelling"); timers.push(setTimeout(refresh, 1000)); }, "danger") : null,
    r.status === "failed" ? act("Retry run", async () => { await api("POST", `${base}/retry`); toast("Retrying"); timers.push(setTimeout(refresh, 1000)); }, "primary") : null)));
  view.append(out);
  view.append(el("div", { class: "grid" },
    el("section", { class: "card" },
      el("h2", {}, "Run"),
      el("dl", { class: "facts" },
        el("dt", {}, "Flow"), el("dd", {}, el("a", { href: `#/flows/${encodeURIComponent(flow)}` }, flow), ` version ${r.version}`),
        el("dt", {}, "User"), el("dd", {}, el("a", { href: `#/users/${encodeURIComponent(r.user_id)}` }, r.user_id)),
        el("dt", {}, "Status"), el("dd", { dataset: { field: "status" } }, runBadge(r.status)),
        el("dt", {}, "Step"), el("dd", {}, r.step || "—"),
        el("dt", {}, "Started"), el("dd", {}, when(r.started_at)),
        r.due_at ? [el("dt", {}, "Due"), el("dd", {}, when(r.due_at))] : null,
        r.ended_at ? [el("dt", {}, "Ended"), el("dd", {}, when(r.ended_at))] : null,
        r.error ? [el("dt", {}, "Error"), el("dd", { class: "error" }, r.error)] : null),
      active ? el("p", { class: "hint" }, "The run is in progress; this page refreshes every 2 s.") : null),
    el("section", { class: "card" }, el("h2", {}, "Variables"), pretty(r.variables), el("h2", {}, "Trigger"), pretty(r.trigger))));
  view.append(el("h2", {}, "Step log"),
    table("What each step did, oldest first", [
      { label: "At", get: (l) => when(l.at) },
      { label: "Step", get: (l) => l.step || "—" },
      { label: "What", get: (l) => l.what },
      { label: "Detail", get: (l) => (l.detail ? el("code", {}, JSON.stringify(l.detail)) : "") },
    ], r.log || [], { empty: "Nothing yet." }));
  if (Object.keys(r.outputs || {}).length) view.append(el("h2", {}, "Step outputs"), pretty(r.outputs));
  if (active) timers.push(setTimeout(refresh, 2000));
  return () => timers.forEach(clearTimeout);
}
