// Segments: the list with member counts (GET /v1/{env}/segments) and the size of each
// over time, summed from `segment_changes` through the query API.
import { api, el, heading, session, sql, table, when } from "../app.js";
import { lines } from "../charts.js";

/** Size over time per segment: the running sum of entered (+1) and exited (-1) per hour. */
export async function sizes(segmentId) {
  const rows = await sql(
    `SELECT segment_id, date_trunc('hour', "at") AS t,
            sum(CASE WHEN change = 'entered' THEN 1 ELSE -1 END) AS delta
     FROM segment_changes ${segmentId ? "WHERE segment_id = $1" : ""}
     GROUP BY 1, 2 ORDER BY 2`, segmentId ? [segmentId] : []).catch(() => []);
  const series = {};
  const running = {};
  for (const r of rows) {
    running[r.segment_id] = (running[r.segment_id] || 0) + Number(r.delta);
    (series[r.segment_id] ||= []).push([r.t, running[r.segment_id]]);
  }
  return series;
}

export async function render(view) {
  const [doc, series] = await Promise.all([api("GET", "/segments"), sizes()]);
  const actions = session.isAdmin()
    ? el("div", { class: "actions" }, el("a", { href: "#/segments/new", class: "button-link", role: "button" }, "New segment"))
    : null;
  view.append(heading("Segments", actions));
  view.append(table("Segments with their member counts after the last evaluation", [
    { label: "Name", get: (s) => el("a", { href: `#/segments/${encodeURIComponent(s.id)}` }, s.definition?.name || s.id) },
    { label: "Id", get: (s) => el("code", {}, s.id) },
    { label: "Members", class: "num", get: (s) => String(s.member_count ?? 0) },
    { label: "Version", class: "num", get: (s) => String(s.version) },
    { label: "Updated", get: (s) => when(s.updated_at) },
  ], doc.segments, { empty: "No segments yet." }));
  const live = Object.fromEntries(doc.segments.filter((s) => series[s.id]).map((s) => [s.id, series[s.id]]));
  if (Object.keys(live).length) view.append(lines("Segment size over time (members, hourly)", live));
}
