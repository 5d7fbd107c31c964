// The environment's API keys (admin keys): id, role, created and revoked (never a
// secret); create one (its secret is shown once) and revoke.
import { api, attempt, confirmDialog, el, field, heading, pretty, session, table, toast, when, refresh } from "../app.js";
import { adminOnly } from "./webhooks.js";

export async function render(view) {
  if (!session.isAdmin()) return adminOnly(view, "API keys");
  const doc = await api("GET", "/keys");
  const reload = () => refresh();
  view.append(heading(`API keys of ${session.get().environment}`));
  view.append(table("Keys of this environment", [
    { label: "Id", get: (k) => [el("code", {}, k.id), k.current ? el("span", { class: "hint" }, " (this session)") : null] },
    { label: "Role", get: (k) => k.role },
    { label: "Created", get: (k) => when(k.created_at) },
    { label: "State", get: (k) => (k.revoked_at ? el("span", { class: "badge bad" }, `revoked ${when(k.revoked_at)}`) : el("span", { class: "badge ok" }, "active")) },
    {
      label: "", get: (k) => (k.revoked_at ? "" : el("button", {
        type: "button", class: "small danger", "aria-label": `Revoke key ${k.id}`, onclick: async () => {
          const warn = k.current ? " This is the key this session uses: you will be signed out." : "";
          if (!(await confirmDialog(`Revoke key ${k.id}?`, `Requests with it are refused from now on.${warn}`, { action: "Revoke" }))) return;
          await attempt(view, async () => {
            await api("DELETE", `/keys/${encodeURIComponent(k.id)}`);
            toast(`Revoked key ${k.id}`);
            reload();
          });
        },
      }, "Revoke")),
    },
  ], doc.keys));
  const role = el("select", { name: "role" }, ["read", "ingest", "admin"].map((r) => el("option", { value: r }, r)));
  const out = el("div", { "aria-live": "polite" });
  const form = el("form", { class: "card", "aria-labelledby": "h-new-key" },
    el("h2", { id: "h-new-key" }, "Create a key"),
    el("div", { class: "row" }, field("Role", role), el("button", { type: "submit", class: "primary" }, "Create key")),
    out);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    attempt(out, async () => {
      const k = await api("POST", "/keys", { role: role.value });
      out.replaceChildren(el("div", { class: "card" },
        el("p", {}, `New ${k.role} key ${k.id}. Copy it now: it is not shown again.`),
        pretty(k.key)));
      toast(`Created ${k.role} key ${k.id}`);
    });
  });
  view.append(form);
}
