// Webhook subscriptions (admin keys): each with its health (healthy, failing since T,
// paused), and a form to subscribe a new endpoint.
import { api, attempt, el, field, heading, pretty, session, table, toast, when } from "../app.js";

export function health(w) {
  const s = w.status || {};
  if (s.state === "paused") return el("span", { class: "badge warn" }, `paused${s.paused_reason ? `: ${s.paused_reason}` : ""}`);
  if (s.state === "failing") return el("span", { class: "badge bad" }, `failing since ${when(s.failing_since)}`);
  return el("span", { class: "badge ok" }, "healthy");
}

export function adminOnly(view, title) {
  view.append(heading(title), el("p", {}, "This page needs an admin key of the environment; this session has a ", session.get().role, " key."));
}

export async function render(view) {
  if (!session.isAdmin()) return adminOnly(view, "Webhooks");
  const doc = await api("GET", "/webhooks");
  view.append(heading("Webhooks"));
  view.append(table("Webhook subscriptions", [
    { label: "Endpoint", get: (w) => el("a", { href: `#/webhooks/${encodeURIComponent(w.id)}` }, w.description || w.url) },
    { label: "URL", get: (w) => el("code", {}, w.url) },
    { label: "Status", get: health },
    { label: "Pending", class: "num", get: (w) => String(w.status?.pending ?? 0) },
    { label: "Failed", class: "num", get: (w) => String(w.status?.failed ?? 0) },
    { label: "Events", get: (w) => (w.filter?.events?.length ? w.filter.events.join(", ") : "all") },
    { label: "Created", get: (w) => when(w.created_at) },
  ], doc.webhooks, { empty: "No subscriptions yet." }));

  const url = el("input", { type: "url", name: "url", required: true, placeholder: "https://example.com/hooks/tidemark" });
  const events = el("input", { type: "text", name: "events", autocomplete: "off" });
  const description = el("input", { type: "text", name: "description" });
  const out = el("div");
  const form = el("form", { class: "card", "aria-labelledby": "h-new-webhook" },
    el("h2", { id: "h-new-webhook" }, "Subscribe an endpoint"),
    el("div", { class: "row" },
      field("URL", url),
      field("Event names", events, "comma-separated; empty: every event"),
      field("Description", description)),
    out,
    el("div", { class: "actions" }, el("button", { type: "submit", class: "primary" }, "Create subscription")));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    attempt(out, async () => {
      const body = { url: url.value.trim() };
      const names = events.value.split(",").map((s) => s.trim()).filter(Boolean);
      if (names.length) body.filter = { events: names };
      if (description.value.trim()) body.description = description.value.trim();
      const created = await api("POST", "/webhooks", body);
      out.replaceChildren(el("div", { class: "card" },
        el("p", {}, "Created. The signing secret is shown this once:"), pretty(created.secret),
        el("a", { href: `#/webhooks/${encodeURIComponent(created.id)}` }, "Open the subscription")));
      toast(`Created subscription ${created.id}`);
    });
  });
  view.append(form);
}
