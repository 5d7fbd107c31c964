// One flow: its state, the draft as JSON (save, publish), a preview for a chosen user
// (resolved variables with their source, every rendered request, each branch taken; nothing
// is sent), and its runs, refreshed while any of them is still active.
import { api, attempt, confirmDialog, el, field, heading, pretty, refresh, session, table, toast, when } from "../app.js";
import { adminOnly } from "./webhooks.js";
import { state } from "./flows.js";

const STATUSES = ["", "running", "waiting", "completed", "exited", "failed", "cancelled", "capped"];

export function runBadge(s) {
  const cls = { completed: "ok", exited: "ok", running: "warn", waiting: "warn", failed: "bad", capped: "bad", cancelled: "" }[s] ?? "";
  return el("span", { class: `badge ${cls}` }, s);
}

export async function render(view, { args, query }) {
  if (!session.isAdmin()) return adminOnly(view, "Flow");
  const [id] = args;
  const base = `/flows/${encodeURIComponent(id)}`;
  const status = query.get("status") || "";
  const q = new URLSearchParams({ limit: "100" });
  if (status) q.set("status", status);
  const [f, runs] = await Promise.all([api("GET", base), api("GET", `${base}/runs?${q}`)]);
  const out = el("div", { "aria-live": "polite" });
  const timers = [];
  const act = (label, fn, cls) => el("button", { type: "button", class: cls, onclick: () => attempt(out, fn) }, label);

  view.append(heading(f.name || f.id, el("div", { class: "actions" },
    act("Publish draft", async () => {
      const r = await api("POST", `${base}/publish`);
      toast(`Published version ${r.version}`);
      refresh();
    }, "primary"),
    f.enabled
      ? act("Pause", async () => { await api("POST", `${base}/pause`); toast("Paused"); refresh(); })
      : act("Resume", async () => { await api("POST", `${base}/resume`); toast("Resumed"); refresh(); }),
    act("Delete", async () => {
      if (!(await confirmDialog(`Delete flow ${id}?`, "Its versions and runs are deleted; nothing more is sent.", { action: "Delete" }))) return;
      await api("DELETE", base);
      toast(`Deleted ${id}`);
      window.location.hash = "#/flows";
    }, "danger"))));

  view.append(el("section", { class: "card" },
    el("h2", {}, "Status"),
    el("dl", { class: "facts" },
      el("dt", {}, "State"), el("dd", { dataset: { field: "state" } }, state(f)),
      el("dt", {}, "Published"), el("dd", {}, f.published_version ? `version ${f.published_version} at ${when(f.published_at)}` : "not yet"),
      el("dt", {}, "Updated"), el("dd", {}, when(f.updated_at)))));
  view.append(out);
  view.append(el("div", { class: "grid" }, draftCard(base, f, out), previewCard(base, f)));
  view.append(runsSection(id, base, runs.runs, status, timers));
  return () => timers.forEach(clearTimeout);
}

function draftCard(base, f, out) {
  const text = el("textarea", { name: "draft", rows: 18, spellcheck: "false", class: "code" }, JSON.stringify(f.draft, null, 2));
  const form = el("form", { class: "card", "aria-labelledby": "h-draft" },
    el("h2", { id: "h-draft" }, "Draft"),
    field("Flow document (JSON)", text),
    el("div", { class: "actions" }, el("button", { type: "submit" }, "Save draft")));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    attempt(form, async () => {
      let body;
      try {
        body = JSON.parse(text.value);
      } catch (e) {
        throw new Error(`the draft is not valid JSON: ${e.message}`);
      }
      await api("PUT", base, body);
      toast("Saved the draft; publish it to start runs on it");
      out.replaceChildren();
    });
  });
  return form;
}

function previewCard(base, f) {
  const user = el("input", { type: "text", name: "user_id", required: true, autocomplete: "off" });
  const vars = el("textarea", { name: "variables", rows: 4, spellcheck: "false", class: "code" }, "{}");
  const result = el("div", { dataset: { field: "preview" } });
  const form = el("form", { class: "card", "aria-labelledby": "h-preview" },
    el("h2", { id: "h-preview" }, "Preview"),
    el("p", {}, "Renders the draft for one user now. Nothing is sent and nothing is stored."),
    field("User id", user),
    field("Variables (JSON)", vars),
    el("div", { class: "actions" }, el("button", { type: "submit" }, "Preview")),
    result);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    attempt(form, async () => {
      const variables = JSON.parse(vars.value || "{}");
      const p = await api("POST", `${base}/preview`, { user_id: user.value.trim(), variables });
      result.replaceChildren(...[
        table("Resolved variables", [
          { label: "Variable", get: ([k]) => el("code", {}, k) },
          { label: "Value", get: ([, v]) => el("code", {}, JSON.stringify(v.value)) },
          { label: "From", get: ([, v]) => v.source.replace("_", " ") },
        ], Object.entries(p.variables), { empty: "No variables." }),
        Object.keys(p.ignored || {}).length ? el("p", { class: "hint" }, "Ignored: ", Object.entries(p.ignored).map(([k, v]) => `${k} (${v.reason})`).join("; ")) : null,
        ...p.steps.map((s) => el("div", { class: "step", dataset: { step: s.id } },
          el("h3", {}, `${s.id} · ${s.type}`),
          s.request ? [el("p", {}, el("code", {}, `${s.request.method} ${s.request.url}`)), s.request.body !== undefined ? pretty(s.request.body) : null] : null,
          s.type === "branch" ? el("p", {}, `takes ${s.result ? "then" : "else"} → `, el("code", {}, s.next)) : null,
          s.error ? el("p", { class: "error" }, s.error) : null)),
      ].filter(Boolean));
    });
  });
  return form;
}

function runsSection(id, base, runs, status, timers) {
  const wrap = el("section", { "aria-labelledby": "h-runs" });
  const filter = el("select", { name: "status" }, STATUSES.map((s) => el("option", { value: s, selected: s === status }, s || "(any)")));
  filter.addEventListener("change", () => {
    window.location.hash = `#/flows/${encodeURIComponent(id)}${filter.value ? `?status=${filter.value}` : ""}`;
  });
  const since = el("input", { type: "text", name: "since", value: "24h" });
  const retry = el("button", { type: "button", onclick: () => attempt(wrap, async () => {
    const r = await api("POST", `${base}/retry`, { since: since.value.trim() });
    toast(`Retrying ${r.retrying} failed run(s)`);
    timers.push(setTimeout(refresh, 1500));
  }) }, "Retry failed runs");
  const active = runs.some((r) => r.status === "running" || r.status === "waiting");
  wrap.append(el("div", { class: "row" }, el("h2", { id: "h-runs" }, "Runs"), field("Status", filter), field("Failed since", since), retry),
    el("p", { class: "hint", dataset: { field: "live" }, hidden: !active }, "Runs are in progress; this list refreshes every 2 s."),
    table("Runs, newest first", [
      { label: "Run", get: (r) => el("a", { href: `#/flows/${encodeURIComponent(id)}/runs/${encodeURIComponent(r.id)}` }, r.id) },
      { label: "User", get: (r) => el("a", { href: `#/users/${encodeURIComponent(r.user_id)}` }, r.user_id) },
      { label: "Status", get: (r) => runBadge(r.status) },
      { label: "Step", get: (r) => r.step || "—" },
      { label: "Started", get: (r) => when(r.started_at) },
      { label: "Due", get: (r) => (r.due_at ? when(r.due_at) : "") },
      { label: "Error", get: (r) => r.error || "" },
    ], runs, { empty: "No runs yet." }));
  if (active) timers.push(setTimeout(refresh, 2000));
  return wrap;
}
