// The segment builder: all/any groups of conditions on fields, tags and events. The
// definition JSON is the model (the form edits it in place, so parts the form does not
// show, such as `first`/`last` on events, are kept); every change shows the JSON and,
// a moment later, a live preview from POST /v1/{env}/segments:preview: the member count,
// sample members and the compiled SQL, or the API's problems by path.
import { api, attempt, el, errorBox, field, go, heading, pretty, toast } from "../app.js";

const BUILTIN = {
  user_id: "text", created_at: "datetime", first_seen_at: "datetime", last_seen_at: "datetime",
  last_seen_ios_at: "datetime", last_seen_android_at: "datetime", last_seen_web_at: "datetime",
  last_seen_server_at: "datetime", event_count: "number", last_event_name: "text",
  last_event_at: "datetime", updated_at: "datetime", tags: "list",
};
const OPS = ["eq", "neq", "gt", "gte", "lt", "lte", "in", "contains", "starts_with", "exists", "not_exists", "before", "after", "within"];

/** The operators the API allows on a field of type `t` (model.rs `allowed`). */
export function opsFor(t) {
  return OPS.filter((op) => {
    if (op === "exists" || op === "not_exists") return true;
    if (["eq", "neq", "in"].includes(op)) return t !== "list";
    if (["gt", "gte", "lt", "lte"].includes(op)) return t === "number" || t === "text";
    if (op === "contains") return t === "text" || t === "list";
    if (op === "starts_with") return t === "text";
    return t === "datetime";
  });
}

const PREVIEW_DELAY_MS = 250;

export async function render(view, { args, query }) {
  const [editing] = args;
  const fieldsDoc = await api("GET", "/fields");
  const types = { ...BUILTIN };
  for (const f of fieldsDoc.fields) types[f.name] = f.type;
  let def;
  if (editing) {
    def = (await api("GET", `/segments/${encodeURIComponent(editing)}`)).definition;
  } else if (query.get("definition")) {
    // `#/segments/new?definition={…}`: start from a given definition (a link to share)
    try {
      def = JSON.parse(query.get("definition"));
    } catch (e) {
      view.append(heading("New segment"), errorBox(new Error(`definition: not JSON: ${e.message}`)));
      return;
    }
    if (!def || typeof def !== "object" || Array.isArray(def)) {
      view.append(heading("New segment"), errorBox(new Error("definition: must be a JSON object")));
      return;
    }
  } else {
    def = { id: "", name: "", match: "all", conditions: [{ field: "last_seen_at", op: "within", value: "-7d" }] };
  }

  const jsonView = el("pre", { class: "json", "aria-label": "Definition JSON", dataset: { testid: "definition-json" } });
  const count = el("span", { class: "preview-count", dataset: { testid: "preview-count" } }, "…");
  const countNote = el("span", { class: "hint" });
  const sample = el("div");
  const sqlView = el("pre", { class: "json", "aria-label": "Compiled SQL" });
  const problems = el("div", { "aria-live": "polite" });
  let seq = 0, timer = null, inflight = null;

  async function preview() {
    const mine = ++seq;
    inflight?.abort();
    inflight = new AbortController();
    countNote.textContent = "updating…";
    try {
      const out = await api("POST", "/segments:preview", { ...def, id: def.id || "preview", name: def.name || "preview" }, { signal: inflight.signal });
      if (mine !== seq) return;
      problems.replaceChildren();
      count.textContent = String(out.count);
      count.dataset.state = "fresh";
      countNote.textContent = `members now (${new Date().toLocaleTimeString()})`;
      sample.replaceChildren(out.sample.length
        ? el("ul", {}, out.sample.map((u) => el("li", {}, el("a", { href: `#/users/${encodeURIComponent(u)}` }, u))))
        : el("p", { class: "empty" }, "No member."));
      sqlView.textContent = `${out.explain.sql}\n\n-- parameters: ${JSON.stringify(out.explain.params)}`;
    } catch (e) {
      if (e.name === "AbortError" || mine !== seq) return;
      count.textContent = "—";
      count.dataset.state = "invalid";
      countNote.textContent = "the definition has problems";
      problems.replaceChildren(errorBox(e));
    }
  }

  function changed() {
    jsonView.textContent = JSON.stringify(def, null, 2);
    // an answer still on its way is for the old definition: drop it, so "fresh" always
    // means the count of what the JSON shows
    seq++;
    inflight?.abort();
    count.dataset.state = "pending";
    clearTimeout(timer);
    timer = setTimeout(preview, PREVIEW_DELAY_MS);
  }

  def.id ??= "";
  def.name ??= "";
  def.match ??= "all";
  const idInput = el("input", { type: "text", name: "id", value: def.id, required: true, disabled: !!editing, pattern: "[a-z0-9][a-z0-9_\\-]{0,63}", maxlength: "64", autocomplete: "off" });
  const nameInput = el("input", { type: "text", name: "name", value: def.name, required: true, autocomplete: "off" });
  idInput.addEventListener("input", () => { def.id = idInput.value.trim(); changed(); });
  nameInput.addEventListener("input", () => { def.name = nameInput.value; changed(); });

  const tree = el("div");
  // Redrawing keeps the keyboard focus where it was (same control position).
  const controls = () => [...tree.querySelectorAll("input, select, button")];
  const redraw = () => {
    const at = controls().indexOf(document.activeElement);
    tree.replaceChildren(group(def, 0, redraw, changed, types, null));
    if (at >= 0) controls()[Math.min(at, controls().length - 1)]?.focus();
    changed();
  };

  const save = el("button", { type: "submit", class: "primary" }, editing ? "Save changes" : "Save segment");
  const form = el("form", { "aria-label": "Segment definition" },
    el("div", { class: "row" },
      field("Id", idInput, "lower case letters, digits, - and _"),
      field("Name", nameInput)),
    tree,
    el("div", { class: "actions" }, save, el("a", { href: editing ? `#/segments/${encodeURIComponent(editing)}` : "#/segments" }, "Cancel")));
  const saveErrors = el("div");
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    attempt(saveErrors, async () => {
      const out = editing
        ? await api("PUT", `/segments/${encodeURIComponent(editing)}`, def)
        : await api("POST", "/segments", def);
      toast(`Saved segment ${out.id} (version ${out.version}); members appear after its evaluation`);
      go(`segments/${encodeURIComponent(out.id)}`);
    });
  });

  view.append(heading(editing ? `Edit segment ${editing}` : "New segment"),
    el("div", { class: "grid" },
      el("section", { class: "card", "aria-labelledby": "h-build" }, el("h2", { id: "h-build" }, "Conditions"), saveErrors, form),
      el("section", { class: "card", "aria-labelledby": "h-preview" },
        el("h2", { id: "h-preview" }, "Live preview"),
        el("p", { "aria-live": "polite" }, count, " ", countNote),
        problems,
        el("h3", {}, "Sample members"), sample,
        el("details", { open: true }, el("summary", {}, "Definition JSON"), jsonView),
        el("details", {}, el("summary", {}, "Compiled SQL"), sqlView))));
  redraw();
  // the first preview goes at once; the delay is for changes as the user types
  clearTimeout(timer);
  preview();
  return () => { clearTimeout(timer); inflight?.abort(); };
}

/** A group: match all/any and its conditions (each a field, tag, event or nested group). */
function group(g, depth, redraw, changed, types, remove) {
  const match = el("select", { name: "match" },
    el("option", { value: "all", selected: g.match !== "any" }, "all of"),
    el("option", { value: "any", selected: g.match === "any" }, "any of"));
  match.addEventListener("change", () => { g.match = match.value; changed(); });
  const box = el("fieldset", { class: "builder-group" },
    el("legend", {}, depth ? "Group" : "Members match"),
    el("div", { class: "row" }, field("Match", match), remove ? el("button", { type: "button", class: "small", onclick: remove }, "Remove group") : null));
  g.conditions ||= [];
  g.conditions.forEach((c, i) => {
    const drop = () => { g.conditions.splice(i, 1); redraw(); };
    box.append(c.conditions ? group(c, depth + 1, redraw, changed, types, drop) : condition(c, i, changed, redraw, types, drop));
  });
  const add = (c) => () => { g.conditions.push(c()); redraw(); };
  box.append(el("div", { class: "actions" },
    el("button", { type: "button", class: "small", onclick: add(() => ({ field: "event_count", op: "gte", value: 1 })) }, "+ Field condition"),
    el("button", { type: "button", class: "small", onclick: add(() => ({ tag: "", op: "has" })) }, "+ Tag condition"),
    el("button", { type: "button", class: "small", onclick: add(() => ({ event: "", op: "did" })) }, "+ Event condition"),
    depth < 4 ? el("button", { type: "button", class: "small", onclick: add(() => ({ match: "any", conditions: [] })) }, "+ Group") : null));
  return box;
}

function select(name, options, current, onChange) {
  const s = el("select", { name }, options.map((o) => el("option", { value: o, selected: o === current }, o)));
  s.addEventListener("change", () => onChange(s.value));
  return s;
}

function text(name, value, onInput, attrs = {}) {
  const i = el("input", { type: "text", name, value: value ?? "", autocomplete: "off", ...attrs });
  i.addEventListener("input", () => onInput(i.value));
  return i;
}

/** Parses what was typed as the field's JSON value. */
function typedValue(type, op, raw) {
  const one = (s) => {
    if (type === "number") return s.trim() === "" ? s : Number(s);
    if (type === "boolean") return s === "true" ? true : s === "false" ? false : s;
    return s;
  };
  return op === "in" ? raw.split(",").map((s) => one(s.trim())).filter((s) => s !== "") : one(raw);
}

function condition(c, i, changed, redraw, types, drop) {
  const row = el("div", { class: "cond", role: "group", "aria-label": `Condition ${i + 1}` });
  const rm = el("button", { type: "button", class: "small", onclick: drop, "aria-label": `Remove condition ${i + 1}` }, "Remove");
  if ("field" in c) {
    const type = types[c.field] || "text";
    const ops = opsFor(type);
    if (!ops.includes(c.op)) c.op = ops[0];
    row.append(
      field("Field", select("field", Object.keys(types), c.field, (v) => { c.field = v; redraw(); })),
      field("Operator", select("op", ops, c.op, (v) => {
        c.op = v;
        if (v === "exists" || v === "not_exists") delete c.value;
        redraw();
      })));
    if (c.op !== "exists" && c.op !== "not_exists") {
      const shown = Array.isArray(c.value) ? c.value.join(", ") : c.value;
      const hint = ["before", "after", "within"].includes(c.op) ? "-7d, -12h, +1d or RFC 3339"
        : c.op === "in" ? "comma-separated" : type;
      row.append(field("Value", text("value", shown, (v) => { c.value = typedValue(type, c.op, v); changed(); }), hint));
    }
  } else if ("tag" in c) {
    row.append(
      field("Tag", text("tag", c.tag, (v) => { c.tag = v; changed(); })),
      field("Operator", select("op", ["has", "has_not"], c.op, (v) => { c.op = v; changed(); })));
  } else if ("event" in c) {
    const within = text("within", c.within, (v) => { if (v.trim()) c.within = v.trim(); else delete c.within; changed(); });
    const countOp = select("count_op", ["", "gte", "gt", "eq", "lt", "lte"], c.count?.op || "", (v) => {
      if (v) c.count = { op: v, value: c.count?.value ?? 1 };
      else delete c.count;
      redraw();
    });
    row.append(
      field("Event", text("event", c.event, (v) => { c.event = v; changed(); })),
      field("Operator", select("op", ["did", "did_not"], c.op, (v) => { c.op = v; changed(); })),
      field("Last within", within, "e.g. -7d (optional)"),
      field("Count", countOp, "total count (optional)"));
    if (c.count) {
      row.append(field("Count value", text("count_value", c.count.value, (v) => { c.count.value = Number(v); changed(); }, { inputmode: "numeric" })));
    }
  } else {
    row.append(el("p", {}, "A condition the form cannot show:"), pretty(c));
  }
  row.append(rm);
  return row;
}
