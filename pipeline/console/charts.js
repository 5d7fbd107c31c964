// Small SVG charts (no library: two shapes are all the console draws). Each chart has a
// <title> and a table fallback is left to the page; colours come from the .cN classes.
import { el, when } from "./app.js";

const W = 720, H = 220, PAD = { l: 48, r: 12, t: 10, b: 26 };

function ticks(max) {
  if (max <= 0) return [0];
  const step = Math.pow(10, Math.floor(Math.log10(max)));
  const nice = max / step > 5 ? step * 2 : max / step > 2 ? step : step / 2;
  const out = [];
  for (let v = 0; v <= max + 1e-9; v += Math.max(nice, 1)) out.push(Math.round(v));
  return out;
}

function frame(title, maxY, xs, fmtX, bars = false) {
  const svg = el("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title }, el("title", {}, title));
  const ys = ticks(maxY);
  const top = Math.max(ys[ys.length - 1], 1);
  const y = (v) => PAD.t + (H - PAD.t - PAD.b) * (1 - v / top);
  for (const v of ys) {
    svg.append(el("line", { class: "axis", x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v) }));
    svg.append(el("text", { x: PAD.l - 6, y: y(v) + 4, "text-anchor": "end" }, String(v)));
  }
  const n = xs.length;
  const inner = W - PAD.l - PAD.r;
  // lines: points from edge to edge; bars: the middle of each slot
  const x = bars ? (i) => PAD.l + (inner * (i + 0.5)) / Math.max(n, 1)
    : (i) => PAD.l + (n <= 1 ? inner / 2 : (inner * i) / (n - 1));
  const every = Math.max(1, Math.ceil(n / 6));
  xs.forEach((t, i) => {
    if (i % every !== 0) return;
    const anchor = bars ? "middle" : i === 0 ? "start" : i === n - 1 ? "end" : "middle";
    svg.append(el("text", { x: x(i), y: H - 6, "text-anchor": anchor }, fmtX(t)));
  });
  return { svg, x, y, top };
}

function legend(names) {
  return el("ul", { class: "legend" }, names.map((n, i) => el("li", {}, el("span", { class: `swatch c${i % 6}` }), n)));
}

const hour = (t) => when(t).slice(5, 16);

/** Lines over time: `series: {name: [[time, value], …]}` with shared, sorted times. */
export function lines(title, series) {
  const names = Object.keys(series);
  const xs = [...new Set(names.flatMap((n) => series[n].map((p) => p[0])))].sort();
  const maxY = Math.max(0, ...names.flatMap((n) => series[n].map((p) => p[1])));
  const { svg, x, y } = frame(title, maxY, xs, hour);
  const at = new Map(xs.map((t, i) => [t, i]));
  names.forEach((n, i) => {
    const pts = series[n].map(([t, v]) => `${x(at.get(t))},${y(v)}`).join(" ");
    svg.append(el("polyline", { class: `line c${i % 6}`, points: pts }, el("title", {}, n)));
  });
  return el("figure", { class: "card" }, el("figcaption", {}, title), svg, legend(names));
}

/** Stacked bars per time bucket: `rows: [{t, key, n}]`. */
export function stackedBars(title, rows) {
  const xs = [...new Set(rows.map((r) => r.t))].sort();
  const keys = [...new Set(rows.map((r) => r.key))].sort();
  const total = new Map();
  for (const r of rows) total.set(r.t, (total.get(r.t) || 0) + Number(r.n));
  const { svg, y } = frame(title, Math.max(0, ...total.values()), xs, hour, true);
  const slot = (W - PAD.l - PAD.r) / Math.max(xs.length, 1);
  xs.forEach((t, i) => {
    let base = 0;
    keys.forEach((k, ki) => {
      const n = Number(rows.find((r) => r.t === t && r.key === k)?.n || 0);
      if (!n) return;
      const x0 = PAD.l + i * slot + slot * 0.1;
      svg.append(el("rect", { class: `c${ki % 6}`, x: x0, width: slot * 0.8, y: y(base + n), height: y(base) - y(base + n) },
        el("title", {}, `${when(t)} ${k}: ${n}`)));
      base += n;
    });
  });
  return el("figure", { class: "card" }, el("figcaption", {}, title), svg, legend(keys));
}
