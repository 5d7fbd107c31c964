// The custom field registry: declared fields with their types; admin keys declare and
// delete them.
import { api, attempt, confirmDialog, el, field, heading, session, table, toast, when, refresh } from "../app.js";

const TYPES = ["text", "number", "boolean", "datetime", "list"];

export async function render(view) {
  const doc = await api("GET", "/fields");
  const admin = session.isAdmin();
  const reload = () => refresh();
  view.append(heading("Custom fields"));
  const cols = [
    { label: "Name", get: (f) => el("code", {}, f.name) },
    { label: "Type", get: (f) => f.type },
    { label: "Label", get: (f) => f.label || "" },
    { label: "Declared", get: (f) => when(f.created_at) },
  ];
  if (admin) {
    cols.push({
      label: "", get: (f) => el("button", {
        type: "button", class: "small danger", "aria-label": `Delete field ${f.name}`, onclick: async () => {
          if (!(await confirmDialog(`Delete field ${f.name}?`, "Profiles stop showing its values; segments that use it stop validating.", { action: "Delete" }))) return;
          await attempt(view, async () => {
            await api("DELETE", `/fields/${encodeURIComponent(f.name)}`);
            toast(`Deleted field ${f.name}`);
            reload();
          });
        },
      }, "Delete"),
    });
  }
  view.append(table("Declared custom fields", cols, doc.fields, { empty: "No custom fields are declared." }));
  if (!admin) return;
  const name = el("input", { type: "text", name: "name", required: true, autocomplete: "off" });
  const type = el("select", { name: "type" }, TYPES.map((t) => el("option", { value: t }, t)));
  const label = el("input", { type: "text", name: "label" });
  const out = el("div");
  const form = el("form", { class: "card", "aria-labelledby": "h-new-field" },
    el("h2", { id: "h-new-field" }, "Declare a field"),
    el("div", { class: "row" }, field("Name", name), field("Type", type), field("Label", label, "optional")),
    out,
    el("div", { class: "actions" }, el("button", { type: "submit", class: "primary" }, "Declare field")));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    attempt(out, async () => {
      const body = { name: name.value.trim(), type: type.value };
      if (label.value.trim()) body.label = label.value.trim();
      await api("POST", "/fields", body);
      toast(`Declared field ${body.name}`);
      reload();
    });
  });
  view.append(form);
}
