// Customers: search by user id prefix, filter by tag, custom field, segment and last seen
// (GET /v1/{env}/users), one page at a time. The filters live in the URL's hash query,
// so a filtered view can be bookmarked and Back works.
import { api, attempt, el, field, go, heading, table, when } from "../app.js";

const PAGE = 50;

function localInput(v) {
  // RFC 3339 (UTC) <-> <input type=datetime-local> (shown as UTC)
  return v ? v.replace(/Z$/, "").slice(0, 16) : "";
}

export async function render(view, { query }) {
  // the page of profiles is asked for at once, beside what the form needs
  const p = new URLSearchParams({ limit: String(PAGE) });
  for (const k of ["prefix", "tag", "segment", "seen_after", "seen_before", "cursor"]) {
    if (query.get(k)) p.set(k, query.get(k));
  }
  if (query.get("field")) p.set(`field.${query.get("field")}`, query.get("value") || "");
  const pageAnswer = api("GET", `/users?${p}`);
  pageAnswer.catch(() => {}); // shown by `attempt` below, not as an unhandled rejection
  const [fieldsDoc, segmentsDoc] = await Promise.all([
    api("GET", "/fields"),
    api("GET", "/segments"),
  ]);
  const fields = fieldsDoc.fields;
  const prefix = el("input", { type: "search", name: "prefix", value: query.get("prefix") || "", autocomplete: "off" });
  const tag = el("input", { type: "text", name: "tag", value: query.get("tag") || "" });
  const fieldName = el("select", { name: "field" },
    el("option", { value: "" }, "(any)"),
    fields.map((f) => el("option", { value: f.name, selected: query.get("field") === f.name }, `${f.name} (${f.type})`)));
  const fieldValue = el("input", { type: "text", name: "value", value: query.get("value") || "" });
  const segment = el("select", { name: "segment" },
    el("option", { value: "" }, "(any)"),
    segmentsDoc.segments.map((s) => el("option", { value: s.id, selected: query.get("segment") === s.id }, s.definition?.name || s.id)));
  const after = el("input", { type: "datetime-local", name: "seen_after", value: localInput(query.get("seen_after")) });
  const before = el("input", { type: "datetime-local", name: "seen_before", value: localInput(query.get("seen_before")) });

  const form = el("form", { class: "card filters", role: "search", "aria-label": "Filter customers" },
    field("User id starts with", prefix),
    field("Tag", tag),
    field("Custom field", fieldName),
    field("Field value", fieldValue, "equals (a list field: contains)"),
    field("Segment", segment),
    field("Last seen after (UTC)", after),
    field("Last seen before (UTC)", before),
    el("div", { class: "actions" },
      el("button", { type: "submit", class: "primary" }, "Search"),
      el("button", { type: "button", onclick: () => go("customers") }, "Clear")));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    const put = (k, v) => v && q.set(k, v);
    put("prefix", prefix.value.trim());
    put("tag", tag.value.trim());
    if (fieldName.value) {
      put("field", fieldName.value);
      q.set("value", fieldValue.value);
    }
    put("segment", segment.value);
    put("seen_after", after.value && `${after.value}:00Z`);
    put("seen_before", before.value && `${before.value}:00Z`);
    go("customers", q);
  });

  const results = el("section", { "aria-labelledby": "results-title" });
  view.append(heading("Customers"), form, results);

  const shown = fields.slice(0, 3);
  await attempt(results, async () => {
    const page = await pageAnswer;
    const cols = [
      { label: "User id", get: (u) => el("a", { href: `#/users/${encodeURIComponent(u.user_id)}` }, u.user_id) },
      { label: "Last seen", get: (u) => when(u.last_seen_at) },
      { label: "First seen", get: (u) => when(u.first_seen_at) },
      { label: "Events", class: "num", get: (u) => String(u.event_count ?? 0) },
      { label: "Last event", get: (u) => u.last_event_name || "—" },
      { label: "Tags", get: (u) => u.tags.map((t) => el("span", { class: "tag" }, t)) },
      ...shown.map((f) => ({ label: f.label || f.name, get: (u) => fmt(u.fields[f.name]?.value) })),
    ];
    results.append(
      el("h2", { id: "results-title" }, query.get("cursor") ? "Customers (later page)" : "Customers"),
      table(`Profiles matching the filters, by user id, ${PAGE} a page`, cols, page.users, { empty: "No customer matches these filters." }));
    const nav = el("div", { class: "actions" });
    if (query.get("cursor")) {
      const first = new URLSearchParams(query);
      first.delete("cursor");
      nav.append(el("button", { type: "button", onclick: () => go("customers", first) }, "First page"));
    }
    if (page.next_cursor) {
      const next = new URLSearchParams(query);
      next.set("cursor", page.next_cursor);
      nav.append(el("button", { type: "button", onclick: () => go("customers", next) }, "Next page"));
    }
    results.append(nav);
  });
}

export function fmt(v) {
  if (v === undefined || v === null) return "—";
  if (Array.isArray(v)) return v.join(", ");
  return String(v);
}
