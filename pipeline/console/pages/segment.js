// One segment: its definition, compiled SQL, size over time and members (paged).
import { api, attempt, confirmDialog, el, go, heading, pretty, session, table, toast, when } from "../app.js";
import { lines } from "../charts.js";
import { sizes } from "./segments.js";

export async function render(view, { args, query }) {
  const [id] = args;
  const base = `/segments/${encodeURIComponent(id)}`;
  const p = new URLSearchParams({ limit: "50" });
  if (query.get("cursor")) p.set("cursor", query.get("cursor"));
  const [seg, members, series, list] = await Promise.all([
    api("GET", base),
    api("GET", `${base}/members?${p}`),
    sizes(id),
    api("GET", "/segments"),
  ]);
  const count = list.segments.find((s) => s.id === id)?.member_count ?? 0;
  const actions = el("div", { class: "actions" });
  if (session.isAdmin()) {
    actions.append(
      el("a", { href: `#/segments/${encodeURIComponent(id)}/edit`, class: "button-link", role: "button" }, "Edit"),
      el("button", {
        type: "button", class: "danger", onclick: async () => {
          if (!(await confirmDialog(`Delete segment ${id}?`, "Its members are dropped (no exit events are emitted).", { action: "Delete" }))) return;
          await attempt(view, async () => {
            await api("DELETE", base);
            toast(`Deleted segment ${id}`);
            go("segments");
          });
        },
      }, "Delete…"));
  }
  view.append(heading(seg.definition?.name || id, actions));
  view.append(el("p", {}, el("span", { class: "preview-count", dataset: { field: "member_count" } }, String(count)), " members · version ", String(seg.version), " · updated ", when(seg.updated_at)));
  if (seg.problems) view.append(el("div", { class: "error", role: "alert" }, "This definition no longer validates: ", pretty(seg.problems)));
  if (series[id]) view.append(lines("Members over time (hourly)", { [id]: series[id] }));
  view.append(el("div", { class: "grid" },
    el("section", { class: "card" }, el("h2", {}, "Definition"), pretty(seg.definition)),
    el("section", { class: "card" }, el("h2", {}, "Compiled SQL"), seg.explain ? [el("pre", { class: "json" }, seg.explain.sql), el("p", {}, "Parameters: ", el("code", {}, JSON.stringify(seg.explain.params)))] : "—")));
  view.append(el("h2", { id: "members" }, "Members"),
    table("Members by user id, with when they entered", [
      { label: "User id", get: (m) => el("a", { href: `#/users/${encodeURIComponent(m.user_id)}` }, m.user_id) },
      { label: "Entered", get: (m) => when(m.entered_at) },
    ], members.members, { empty: "No members (yet: segments are evaluated a moment after each change)." }));
  const nav = el("div", { class: "actions" });
  if (query.get("cursor")) nav.append(el("button", { type: "button", onclick: () => go(`segments/${encodeURIComponent(id)}`) }, "First page"));
  if (members.next_cursor) {
    nav.append(el("button", { type: "button", onclick: () => go(`segments/${encodeURIComponent(id)}`, new URLSearchParams({ cursor: members.next_cursor })) }, "Next page"));
  }
  view.append(nav);
}
