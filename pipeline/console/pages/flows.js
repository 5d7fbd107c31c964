// Flows (admin keys): each with its published version, state and run counts (from the
// flow-* events), and a form to create one from its JSON document.
import { api, attempt, el, field, heading, pretty, session, table, toast, when } from "../app.js";
import { adminOnly } from "./webhooks.js";

const EXAMPLE = {
  id: "welcome",
  name: "Welcome",
  variables: { coupon: { type: "text", default: "WELCOME" } },
  starts: { events: [{ names: ["signup"] }] },
  steps: [
    { id: "post", type: "webhook", url: "https://crm.example.com/welcome",
      body: { user: "{{ profile.user_id }}", coupon: "{{ variables.coupon }}" } },
  ],
};

export function state(f) {
  if (!f.enabled) return el("span", { class: "badge warn" }, `paused${f.paused_reason ? `: ${f.paused_reason}` : ""}`);
  if (!f.published_version) return el("span", { class: "badge" }, "draft");
  return el("span", { class: "badge ok" }, `live v${f.published_version}`);
}

export async function render(view) {
  if (!session.isAdmin()) return adminOnly(view, "Flows");
  const doc = await api("GET", "/flows");
  view.append(heading("Flows"));
  const n = (f, k) => String(f.runs?.[k] ?? 0);
  view.append(table("Flows", [
    { label: "Flow", get: (f) => el("a", { href: `#/flows/${encodeURIComponent(f.id)}` }, f.name || f.id) },
    { label: "Id", get: (f) => el("code", {}, f.id) },
    { label: "State", get: state },
    { label: "Started", class: "num", get: (f) => n(f, "started") },
    { label: "Completed", class: "num", get: (f) => n(f, "completed") },
    { label: "Failed steps", class: "num", get: (f) => el("span", { class: f.runs?.failed ? "badge bad" : "" }, n(f, "failed")) },
    { label: "Capped", class: "num", get: (f) => n(f, "capped") },
    { label: "Updated", get: (f) => when(f.updated_at) },
  ], doc.flows, { empty: "No flows yet." }));

  const text = el("textarea", { name: "flow", rows: 16, spellcheck: "false", class: "code" }, JSON.stringify(EXAMPLE, null, 2));
  const publish = el("input", { type: "checkbox", name: "publish", checked: true });
  const out = el("div");
  const form = el("form", { class: "card", "aria-labelledby": "h-new-flow" },
    el("h2", { id: "h-new-flow" }, "Create a flow"),
    field("Flow document (JSON)", text, "variables, starts, entry, redact, steps: webhook, delay, branch, wait_for_event, exit"),
    el("label", { class: "check" }, publish, " Publish at once"),
    out,
    el("div", { class: "actions" }, el("button", { type: "submit", class: "primary" }, "Create flow")));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    attempt(out, async () => {
      let body;
      try {
        body = JSON.parse(text.value);
      } catch (e) {
        throw new Error(`the flow is not valid JSON: ${e.message}`);
      }
      const created = await api("POST", "/flows", body);
      if (publish.checked) await api("POST", `/flows/${encodeURIComponent(created.id)}/publish`);
      out.replaceChildren(el("div", { class: "card" },
        el("p", {}, "Created. The signing secret of its webhook steps is shown this once:"), pretty(created.secret),
        el("a", { href: `#/flows/${encodeURIComponent(created.id)}` }, "Open the flow")));
      toast(`Created flow ${created.id}`);
    });
  });
  view.append(form);
}
