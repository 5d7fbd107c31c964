// One profile: activity, per-platform first/last seen, tags, typed fields, segments with
// entered-at, per-event stats, latest events; admin keys edit tags and fields
// (PUT /v1/{env}/users/{id}) and erase the user (DELETE, after a typed confirmation).
import { ApiError, api, attempt, confirmDialog, el, field, go, heading, pretty, session, sql, table, toast, when, refresh } from "../app.js";
import { fmt } from "./customers.js";

const EVENTS = 20;

export async function render(view, { args }) {
  const [id] = args;
  const path = `/users/${encodeURIComponent(id)}`;
  let user;
  try {
    user = await api("GET", `${path}?events=${EVENTS}`);
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) {
      view.append(heading(`User ${id}`), el("p", {}, e.body.message), el("a", { href: "#/customers" }, "Back to customers"));
      return;
    }
    throw e;
  }
  const [defs, platforms] = await Promise.all([
    api("GET", "/fields"),
    sql(`SELECT coalesce(platform, '(none)') AS platform, min(occurred_at) AS first_seen, max(occurred_at) AS last_seen, count(*) AS events
         FROM events WHERE user_id = $1 AND category <> 'system' GROUP BY 1 ORDER BY 3 DESC`, [id]).catch(() => []),
  ]);
  const admin = session.isAdmin();
  const fact = (label, value, key) => [el("dt", {}, label), el("dd", { dataset: { field: key } }, value)];

  const actions = el("div", { class: "actions" });
  if (admin) {
    actions.append(el("button", {
      type: "button", class: "danger", onclick: async () => {
        const yes = await confirmDialog(`Erase ${id}?`,
          "This deletes the user's events, profile, stats and segment rows everywhere. It cannot be undone.",
          { typed: id, action: "Erase user" });
        if (!yes) return;
        await attempt(view, async () => {
          const out = await api("DELETE", path);
          toast(`Erased ${id}: ${JSON.stringify(out.erasure?.deleted ?? out.erasure ?? {})}`);
          go("customers");
        });
      },
    }, "Erase user…"));
  }
  view.append(heading(`User ${id}`, actions));

  view.append(el("div", { class: "grid" },
    el("section", { class: "card", "aria-labelledby": "h-activity" },
      el("h2", { id: "h-activity" }, "Activity"),
      el("dl", { class: "facts" },
        fact("Created", when(user.created_at), "created_at"),
        fact("First seen", when(user.first_seen_at), "first_seen_at"),
        fact("Last seen", when(user.last_seen_at), "last_seen_at"),
        ["ios", "android", "web", "server"].map((p) => fact(`Last seen on ${p}`, when(user[`last_seen_${p}_at`]), `last_seen_${p}_at`)),
        fact("Events", String(user.event_count ?? 0), "event_count"),
        fact("Last event", user.last_event_name ? `${user.last_event_name} at ${when(user.last_event_at)}` : "—", "last_event_name"))),
    el("section", { class: "card", "aria-labelledby": "h-platforms" },
      el("h2", { id: "h-platforms" }, "Seen per platform"),
      table("First and last seen per platform (from events)", [
        { label: "Platform", get: (r) => r.platform },
        { label: "First seen", get: (r) => when(r.first_seen) },
        { label: "Last seen", get: (r) => when(r.last_seen) },
        { label: "Events", class: "num", get: (r) => String(r.events) },
      ], platforms, { empty: "No events kept for this user." })),
    tagsCard(user, path, admin),
    fieldsCard(user, defs.fields, path, admin),
    admin ? startCard(id) : null,
    el("section", { class: "card", "aria-labelledby": "h-segments" },
      el("h2", { id: "h-segments" }, "Segments"),
      table("Segments the user is a member of", [
        { label: "Segment", get: (m) => el("a", { href: `#/segments/${encodeURIComponent(m.segment_id)}` }, m.segment_id) },
        { label: "Entered", get: (m) => when(m.entered_at) },
      ], user.segment_memberships || [], { empty: "Not a member of any segment." }))));

  view.append(
    el("h2", {}, "Per-event stats"),
    table("Events by name: first, last, count", [
      { label: "Event", get: (s) => s.event_name },
      { label: "First", get: (s) => when(s.first_at) },
      { label: "Last", get: (s) => when(s.last_at) },
      { label: "Count", class: "num", get: (s) => String(s.count) },
    ], user.event_stats || [], { empty: "No events counted yet." }),
    el("h2", {}, `Latest ${EVENTS} events`),
    eventList(user.events || []));
}

function eventList(events) {
  if (!events.length) return el("p", { class: "empty" }, "No events kept for this user.");
  return el("div", { class: "tail card" }, events.map((e) =>
    el("details", {},
      el("summary", {}, el("span", {}, when(e.occurred_at)), el("strong", {}, e.event_name), el("span", {}, e.category), el("span", {}, e.platform || "")),
      pretty(e))));
}

/** Waits (up to 15 s) until the profile read shows `done(user)`; the jobs fold writes in a moment later. */
async function settle(path, done) {
  for (let i = 0; i < 30; i++) {
    const u = await api("GET", path);
    if (done(u)) return true;
    await new Promise((r) => setTimeout(r, 500));
  }
  return false;
}

function tagsCard(user, path, admin) {
  const card = el("section", { class: "card", "aria-labelledby": "h-tags" }, el("h2", { id: "h-tags" }, "Tags"));
  const list = el("div", { class: "tags", dataset: { field: "tags" } });
  const write = (tags, done, note) => attempt(card, async () => {
    await api("PUT", path, { tags });
    toast(`${note}; the profile updates in a moment`);
    const here = window.location.hash;
    await settle(path, done);
    if (window.location.hash === here) refresh();
  });
  for (const t of user.tags) {
    list.append(el("span", { class: "tag" }, t, admin
      ? el("button", { type: "button", "aria-label": `Remove tag ${t}`, onclick: () => write({ remove: [t] }, (u) => !u.tags.includes(t), `Removed tag ${t}`) }, "×")
      : null));
  }
  if (!user.tags.length) list.append(el("span", { class: "empty" }, "No tags."));
  card.append(list);
  if (admin) {
    const input = el("input", { type: "text", name: "tag", autocomplete: "off" });
    const form = el("form", { class: "row" }, field("New tag", input), el("button", { type: "submit" }, "Add tag"));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const t = input.value.trim();
      if (t) write({ add: [t] }, (u) => u.tags.includes(t), `Added tag ${t}`);
    });
    card.append(form);
  }
  return card;
}

function fieldsCard(user, defs, path, admin) {
  const card = el("section", { class: "card", "aria-labelledby": "h-fields" }, el("h2", { id: "h-fields" }, "Custom fields"));
  if (!defs.length) {
    card.append(el("p", { class: "empty" }, "No custom fields are declared. ", el("a", { href: "#/fields" }, "Declare one")));
    return card;
  }
  if (!admin) {
    card.append(el("dl", { class: "facts" }, defs.map((d) => [
      el("dt", {}, `${d.label || d.name} (${d.type})`),
      el("dd", { dataset: { field: `fields.${d.name}` } }, fmt(user.fields[d.name]?.value))])));
    return card;
  }
  const inputs = new Map();
  const form = el("form", {});
  for (const d of defs) {
    const cur = user.fields[d.name]?.value;
    let input;
    if (d.type === "boolean") {
      input = el("select", { name: d.name },
        el("option", { value: "" }, "(unset)"),
        el("option", { value: "true", selected: cur === true }, "true"),
        el("option", { value: "false", selected: cur === false }, "false"));
    } else {
      input = el("input", {
        name: d.name, type: d.type === "number" ? "number" : "text", step: d.type === "number" ? "any" : undefined,
        value: cur === undefined || cur === null ? "" : Array.isArray(cur) ? cur.join(", ") : String(cur),
      });
    }
    inputs.set(d.name, [d, input, cur]);
    form.append(field(`${d.label || d.name} (${d.type})`, input,
      d.type === "list" ? "comma-separated" : d.type === "datetime" ? "RFC 3339, e.g. 2026-11-29T10:00:00Z" : undefined));
  }
  form.append(el("div", { class: "actions" }, el("button", { type: "submit", class: "primary" }, "Save fields")));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const set = {}, unset = [];
    for (const [name, [d, input, cur]] of inputs) {
      const raw = input.value.trim();
      if (raw === "") {
        if (cur !== undefined && cur !== null) unset.push(name);
        continue;
      }
      const v = d.type === "number" ? Number(raw) : d.type === "boolean" ? raw === "true"
        : d.type === "list" ? raw.split(",").map((s) => s.trim()).filter(Boolean) : raw;
      if (JSON.stringify(v) !== JSON.stringify(cur)) set[name] = v;
    }
    if (!Object.keys(set).length && !unset.length) return toast("Nothing changed", "warn");
    attempt(card, async () => {
      await api("PUT", path, { set, unset });
      toast("Saved fields; the profile updates in a moment");
      const same = (a, b) => JSON.stringify(a) === JSON.stringify(b) || (typeof a === "string" && Date.parse(a) === Date.parse(b));
      const want = (u) => Object.entries(set).every(([k, v]) => same(u.fields[k]?.value, v)) && unset.every((k) => u.fields[k] === undefined);
      const here = window.location.hash;
      await settle(path, want);
      if (window.location.hash === here) refresh();
    });
  });
  card.append(form);
  return card;
}

/** Starts a published flow for this one customer (the console's manual start). */
function startCard(id) {
  const card = el("section", { class: "card", "aria-labelledby": "h-start-flow" }, el("h2", { id: "h-start-flow" }, "Start a flow"));
  const pick = el("select", { name: "flow" }, el("option", { value: "" }, "Loading flows…"));
  const vars = el("textarea", { name: "variables", rows: 3, spellcheck: "false", class: "code" }, "{}");
  const result = el("div", { "aria-live": "polite" });
  api("GET", "/flows").then((doc) => {
    const live = doc.flows.filter((f) => f.published_version && f.enabled);
    pick.replaceChildren(...(live.length
      ? live.map((f) => el("option", { value: f.id }, `${f.name || f.id} (v${f.published_version})`))
      : [el("option", { value: "" }, "No published flow")]));
  }).catch(() => pick.replaceChildren(el("option", { value: "" }, "Flows need an admin key")));
  const form = el("form", {},
    field("Flow", pick),
    field("Variables (JSON)", vars, "resolved once at start; never stored on the profile"),
    el("div", { class: "actions" }, el("button", { type: "submit" }, "Start flow")),
    result);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    attempt(card, async () => {
      if (!pick.value) throw new Error("choose a published flow");
      let variables;
      try {
        variables = JSON.parse(vars.value || "{}");
      } catch (e) {
        throw new Error(`the variables are not valid JSON: ${e.message}`);
      }
      const r = await api("POST", `/flows/${encodeURIComponent(pick.value)}/start`, { user_id: id, variables, trigger: { source: "console" } });
      const run = r.runs[0]?.run_id;
      result.replaceChildren(el("p", {}, "Started ",
        el("a", { href: `#/flows/${encodeURIComponent(pick.value)}/runs/${encodeURIComponent(run)}` }, run)));
      toast(`Started ${pick.value} for ${id}`);
    });
  });
  card.append(form);
  return card;
}
