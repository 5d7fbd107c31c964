// The tidemark console: a single-page app over the public HTTP API (the API is the
// contract: every page calls only documented endpoints). The key lives in the browser
// session (sessionStorage), is sent as `Authorization: Bearer`, and never goes in a URL.
//
// - session + api(): sign-in state and the one fetch wrapper (JSON problems -> ApiError);
// - el(): a DOM builder that only ever sets text (no HTML from data, ever);
// - the router: `#/page/args?query` -> a page module's render(main, ctx).

const SESSION = "tidemark.session";

export const session = {
  get() {
    try {
      return JSON.parse(sessionStorage.getItem(SESSION) || "null");
    } catch {
      return null;
    }
  },
  set(s) {
    sessionStorage.setItem(SESSION, JSON.stringify(s));
  },
  clear() {
    sessionStorage.removeItem(SESSION);
  },
  isAdmin() {
    return this.get()?.role === "admin";
  },
};

/** An API refusal: the status and the JSON body `{error, message, problems?}`. */
export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

/** Calls the API; `path` starts after `/v1/{env}` unless it starts with `/v1/`. */
export async function api(method, path, body, { key, signal, raw } = {}) {
  const s = session.get();
  const token = key || s?.key;
  const url = path.startsWith("/v1/") ? path : `/v1/${encodeURIComponent(s.environment)}${path}`;
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method, headers, signal };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(url, init);
  if (raw) return resp;
  const text = await resp.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = { message: text };
  }
  if (!resp.ok) {
    if (resp.status === 401 && !key) signOut("Your key was refused (revoked?). Sign in again.");
    throw new ApiError(resp.status, json);
  }
  return json;
}

/** `POST /v1/{env}/query` with bound `$n` params: the rows as objects. */
export async function sql(text, params = []) {
  return (await api("POST", "/query", { sql: text, params })).rows;
}

/** Builds an element: `el("a", {href, class, onclick}, "text", child, …)`. */
export function el(tag, attrs = {}, ...children) {
  const svg = ["svg", "g", "path", "rect", "line", "text", "polyline", "circle", "title"].includes(tag);
  const node = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.setAttribute("class", v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "value" && !svg) node.value = v;
    else if (k === "checked" || k === "selected" || k === "disabled") node[k] = !!v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** An error box with the API's message and its problem list. */
export function errorBox(err) {
  const body = err instanceof ApiError ? err.body : { message: String(err?.message || err) };
  const problems = body.problems || [];
  const box = el("div", { class: "error", role: "alert" },
    el("p", {}, el("strong", {}, err.status ? `${err.status} ${body.error || ""}: ` : "Error: "), body.message || ""));
  if (problems.length) {
    box.append(el("ul", {}, problems.map((p) =>
      el("li", {}, p.index !== undefined && p.index !== null ? `[${p.index}] ` : "", p.field ? el("code", {}, p.field) : "", p.field ? ": " : "", p.message))));
    if (body.problems_total > problems.length) box.append(el("p", {}, `… ${body.problems_total - problems.length} more`));
  }
  return box;
}

/** Shows a short message in the status region (read by screen readers). */
export function toast(text, kind = "ok") {
  const t = document.getElementById("status");
  t.textContent = text;
  t.className = `toast ${kind}`;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), 5000);
}

/** Runs `fn`, showing its error (if any) in `where` (replacing the previous one). */
export async function attempt(where, fn) {
  where.querySelectorAll(":scope > .error").forEach((e) => e.remove());
  try {
    return await fn();
  } catch (e) {
    where.prepend(errorBox(e));
    if (!(e instanceof ApiError)) console.error(e);
    return undefined;
  }
}

/** A form field: label + input, ids wired for accessibility. */
let fieldSeq = 0;
export function field(label, input, hint) {
  const id = input.id || `f${++fieldSeq}`;
  input.id = id;
  const parts = [el("label", { for: id }, label), input];
  if (hint) {
    const hid = `${id}-hint`;
    input.setAttribute("aria-describedby", hid);
    parts.push(el("small", { id: hid, class: "hint" }, hint));
  }
  return el("div", { class: "field" }, parts);
}

/** A confirmation dialog; resolves true when confirmed. `typed` must be typed to confirm. */
export function confirmDialog(title, text, { typed, action = "Confirm" } = {}) {
  return new Promise((resolve) => {
    const input = typed ? el("input", { type: "text", autocomplete: "off" }) : null;
    const ok = el("button", { type: "submit", class: "danger", disabled: !!typed }, action);
    if (input) input.addEventListener("input", () => (ok.disabled = input.value !== typed));
    const dlg = el("dialog", { "aria-labelledby": "dlg-title" },
      el("form", { method: "dialog" },
        el("h2", { id: "dlg-title" }, title),
        el("p", {}, text),
        input ? field(`Type ${typed} to confirm`, input) : null,
        el("div", { class: "actions" },
          el("button", { type: "button", value: "cancel", onclick: () => dlg.close("cancel") }, "Cancel"),
          ok)));
    dlg.addEventListener("close", () => {
      resolve(dlg.returnValue === "ok" && (!typed || input.value === typed));
      dlg.remove();
    });
    ok.value = "ok";
    document.body.append(dlg);
    dlg.showModal();
    (input || ok).focus();
  });
}

/** RFC 3339 text -> "2026-11-29 10:00:00Z" (the API's times are UTC). */
export function when(t) {
  if (!t) return "—";
  const s = String(t);
  const m = s.match(/^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)/);
  return m ? `${m[1]} ${m[2]}Z` : s;
}

/** A relative description of an RFC 3339 time: "3 min ago". */
export function ago(t) {
  if (!t) return "";
  const ms = Date.now() - Date.parse(t);
  if (!Number.isFinite(ms)) return "";
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export function heading(text, ...extra) {
  return el("div", { class: "page-head" }, el("h1", { tabindex: "-1" }, text), ...extra);
}

/** A table with a caption, `columns: [{label, get(row) -> node|text, class?}]`. */
export function table(caption, columns, rows, { empty = "Nothing yet." } = {}) {
  if (!rows.length) return el("p", { class: "empty" }, empty);
  return el("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": caption },
    el("table", {},
      el("caption", {}, caption),
      el("thead", {}, el("tr", {}, columns.map((c) => el("th", { scope: "col", class: c.class }, c.label)))),
      el("tbody", {}, rows.map((r) => el("tr", {}, columns.map((c) => el("td", { class: c.class }, c.get(r))))))));
}

export function pretty(value) {
  return el("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

// ---- the router ----------------------------------------------------------------------

const routes = [
  [/^customers$/, () => import("./pages/customers.js"), "customers"],
  [/^users\/(.+)$/, () => import("./pages/profile.js"), "customers"],
  [/^segments$/, () => import("./pages/segments.js"), "segments"],
  [/^segments\/new$/, () => import("./pages/builder.js"), "segments"],
  [/^segments\/([^/]+)\/edit$/, () => import("./pages/builder.js"), "segments"],
  [/^segments\/([^/]+)$/, () => import("./pages/segment.js"), "segments"],
  [/^debugger$/, () => import("./pages/debugger.js"), "debugger"],
  [/^webhooks$/, () => import("./pages/webhooks.js"), "webhooks"],
  [/^webhooks\/([^/]+)$/, () => import("./pages/webhook.js"), "webhooks"],
  [/^flows$/, () => import("./pages/flows.js"), "flows"],
  [/^flows\/([^/]+)\/runs\/([^/]+)$/, () => import("./pages/run.js"), "flows"],
  [/^flows\/([^/]+)$/, () => import("./pages/flow.js"), "flows"],
  [/^exports$/, () => import("./pages/exports.js"), "exports"],
  [/^fields$/, () => import("./pages/fields.js"), "fields"],
  [/^keys$/, () => import("./pages/keys.js"), "keys"],
];

let cleanup = null;
/** Bumped by every navigation: a page that finishes loading after a newer one started is dropped. */
let navigation = 0;

/** `#/users/u%201?events=5` -> {path: "users/u 1", query: URLSearchParams}. */
export function location() {
  const h = window.location.hash.replace(/^#\/?/, "");
  const [path, q] = h.split("?", 2);
  return { path: path || "customers", query: new URLSearchParams(q || "") };
}

export function go(path, query) {
  const q = query && [...query].length ? `?${query}` : "";
  const target = `#/${path}${q}`;
  if (window.location.hash === target) route();
  else window.location.hash = target;
}

/** Renders the current page again (after a change it made). */
export function refresh() {
  return route();
}

async function route() {
  const mine = ++navigation;
  if (cleanup) {
    try { cleanup(); } catch { /* the old page is gone anyway */ }
    cleanup = null;
  }
  const main = document.getElementById("main");
  const s = session.get();
  showChrome(s);
  if (!s) {
    main.replaceChildren(signInForm());
    main.querySelector("input")?.focus();
    return;
  }
  const { path, query } = location();
  const found = routes.find(([re]) => re.test(path));
  document.querySelectorAll("#nav a").forEach((a) => a.removeAttribute("aria-current"));
  if (!found) {
    main.replaceChildren(heading("Not found"), el("p", {}, `No page '${path}'. `, el("a", { href: "#/customers" }, "Customers")));
    return;
  }
  const [re, load, section] = found;
  document.querySelector(`#nav a[href="#/${section}"]`)?.setAttribute("aria-current", "page");
  const args = path.match(re).slice(1).map(decodeURIComponent);
  main.replaceChildren(el("p", { class: "loading" }, "Loading…"));
  main.setAttribute("aria-busy", "true");
  try {
    const page = await load();
    const view = el("div", { class: "page" });
    const done = await page.render(view, { args, query, session: s });
    if (mine !== navigation) {
      if (typeof done === "function") done();
      return;
    }
    if (typeof done === "function") cleanup = done;
    main.replaceChildren(view);
  } catch (e) {
    if (mine !== navigation) return;
    main.replaceChildren(heading("Something went wrong"), errorBox(e));
  } finally {
    main.removeAttribute("aria-busy");
  }
  const h1 = main.querySelector("h1");
  if (h1 && !main.contains(document.activeElement)) h1.focus({ preventScroll: true });
  document.title = `${h1 ? h1.textContent + " · " : ""}tidemark console`;
}

function showChrome(s) {
  document.getElementById("nav").hidden = !s;
  document.getElementById("signout").hidden = !s;
  document.getElementById("whoami").textContent = s ? `${s.environment} · ${s.role} key ${s.key_id}` : "";
  document.querySelectorAll("[data-admin]").forEach((n) => (n.hidden = s?.role !== "admin"));
}

function signInForm() {
  const key = el("input", { type: "password", name: "key", autocomplete: "off", required: true, spellcheck: "false" });
  const out = el("div");
  const form = el("form", { class: "card signin", "aria-labelledby": "signin-title" },
    el("h1", { id: "signin-title" }, "Sign in"),
    el("p", {}, "Paste an API key of an environment: a read key shows read-only pages, an admin key can change things. The key stays in this browser tab's session."),
    field("API key", key, "tm_… (from `tidemark keys create` or the first `serve`)"),
    out,
    el("div", { class: "actions" }, el("button", { type: "submit", class: "primary" }, "Sign in")));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    await attempt(out, async () => {
      const me = await api("GET", "/v1/whoami", undefined, { key: key.value.trim() });
      if (me.role === "ingest") {
        throw new Error(`key ${me.key_id} is an ingest key: it can send events but not read them. Sign in with a read or admin key.`);
      }
      session.set({ key: key.value.trim(), environment: me.environment, role: me.role, key_id: me.key_id });
      key.value = "";
      if (!location().path || location().path === "signin") go("customers");
      else route();
    });
  });
  return form;
}

export function signOut(message) {
  session.clear();
  route().then(() => message && toast(message, "warn"));
}

function theme() {
  const btn = document.getElementById("theme");
  const apply = (t) => {
    document.documentElement.dataset.theme = t;
    btn.textContent = t === "dark" ? "Light" : "Dark";
    btn.setAttribute("aria-pressed", String(t === "dark"));
    btn.setAttribute("aria-label", t === "dark" ? "Use the light scheme" : "Use the dark scheme");
  };
  const stored = localStorage.getItem("tidemark.theme");
  apply(stored || (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light"));
  btn.addEventListener("click", () => {
    const t = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
    localStorage.setItem("tidemark.theme", t);
    apply(t);
  });
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => {
  theme();
  document.getElementById("signout").addEventListener("click", () => signOut("Signed out."));
  // the skip link must not change the hash: that is the router's
  document.querySelector(".skip").addEventListener("click", (ev) => {
    ev.preventDefault();
    document.getElementById("main").focus();
  });
  route();
});
