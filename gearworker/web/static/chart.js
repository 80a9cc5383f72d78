// Line charts as inline SVG, drawn here: no chart library, nothing inline for the CSP to refuse.
// drawChart() replaces a box's content with one chart of a few series over [since, until]. A point
// missing from `t` (more than a step after the one before) is a gap: the line stops and starts again,
// it never drops to zero. Colours and dashes come from the stylesheet (.series-NAME), so both themes apply.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  for (const c of children) node.append(c);
  return node;
}

// The smallest of 1, 2, 2.5, 5 x 10^n at or above v (at least 1): the top of the y axis.
function niceMax(v) {
  if (!(v > 1)) return 1;
  const power = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * power >= v) return m * power;
  return 10 * power;
}

const two = (n) => String(n).padStart(2, "0");
function clock(t, withDay) {
  const d = new Date(t * 1000);
  const hm = `${two(d.getHours())}:${two(d.getMinutes())}`;
  return withDay ? `${d.getMonth() + 1}/${d.getDate()} ${hm}` : hm;
}

function shortNumber(v) {
  if (v >= 10000) return `${Math.round(v / 1000)}k`;
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

// The points of `values` over `t` as the `d` of a path, cut at the gaps; and how many pieces it has.
function pathOf(t, values, step, x, y) {
  let d = "", pieces = 0, run = 0;
  for (let i = 0; i < t.length; i++) {
    if (values[i] == null) { run = 0; continue; }
    const gap = run === 0 || t[i] - t[i - 1] > step * 1.5;
    if (gap && run === 1) d += "l0.01 0";  // a lone point: a dot (round caps), not nothing
    if (gap) { pieces += 1; run = 0; }
    d += `${gap ? "M" : "L"}${x(t[i]).toFixed(1)} ${y(values[i]).toFixed(1)}`;
    run += 1;
  }
  if (run === 1) d += "l0.01 0";
  return { d, pieces };
}

/**
 * Draw a chart into `box`.
 *   data: { since, until, step, t: [Unix seconds] }
 *   series: [{ name, values, cls }]  (cls picks the stroke: .series-<cls>)
 *   label: what the chart shows, for its accessible name ("Jobs waiting and running, last hour")
 * The <svg> carries data-points (samples drawn) and data-pieces (unbroken runs), and an aria-label that
 * says the last and the highest value of each series and the gaps.
 */
function drawChart(box, data, series, label) {
  const width = Math.max(240, Math.round(box.clientWidth || 600));
  const height = width < 520 ? 150 : 190;
  const m = { left: 40, right: 14, top: 12, bottom: 24 };
  const w = width - m.left - m.right, h = height - m.top - m.bottom;
  const { since, until, step, t } = data;
  if (!t.length) {
    box.replaceChildren(Object.assign(document.createElement("p"), {
      className: "chart-empty",
      textContent: "No samples in this span yet: the web app records the queues every second while it runs.",
    }));
    box.dataset.points = "0";
    return;
  }
  let top = 0;
  for (const s of series) for (const v of s.values) if (v != null && v > top) top = v;
  top = niceMax(top);
  const x = (at) => m.left + (w * (at - since)) / Math.max(1, until - since);
  const y = (v) => m.top + h - (h * v) / top;

  const grid = svgEl("g", { class: "chart-grid", "aria-hidden": "true" });
  const ticks = top <= 4 ? Array.from({ length: top + 1 }, (_, i) => i) : [0, top / 2, top];
  for (const v of ticks) {
    grid.append(svgEl("line", { x1: m.left, x2: m.left + w, y1: y(v), y2: y(v) }));
    grid.append(svgEl("text", { x: m.left - 6, y: y(v) + 4, "text-anchor": "end" }, shortNumber(v)));
  }
  const xticks = width < 520 ? 3 : 5;
  for (let i = 0; i < xticks; i++) {
    const at = since + ((until - since) * i) / (xticks - 1);
    const anchor = i === 0 ? "start" : i === xticks - 1 ? "end" : "middle";
    grid.append(svgEl("text", { x: x(at), y: height - 6, "text-anchor": anchor }, clock(at, until - since > 86000)));
  }
  const lines = svgEl("g", { class: "chart-lines", "aria-hidden": "true" });
  let pieces = 0;
  const said = [];
  for (const s of series) {
    const path = pathOf(t, s.values, step, x, y);
    pieces = Math.max(pieces, path.pieces);
    lines.append(svgEl("path", { class: `series series-${s.cls}`, d: path.d, "data-series": s.cls }));
    const known = s.values.filter((v) => v != null);
    if (known.length) said.push(`${s.name} now ${shortNumber(known[known.length - 1])}, at most ${shortNumber(Math.max(...known))}`);
  }
  const gaps = pieces > 1 ? `; ${pieces - 1} gap${pieces > 2 ? "s" : ""} where no sample was taken` : "";
  const chart = svgEl("svg", {
    viewBox: `0 0 ${width} ${height}`, width, height, role: "img", class: "chart-svg",
    "aria-label": `${label}: ${said.join("; ")}${gaps}.`, "data-points": t.length, "data-pieces": pieces,
  }, grid, lines);
  box.replaceChildren(chart);
  box.dataset.points = String(t.length);
}

// A legend entry: a short line drawn like its series, then its name.
function legendItem(name, cls) {
  const mark = svgEl("svg", { width: 26, height: 10, "aria-hidden": "true", class: "legend-mark" },
    svgEl("line", { x1: 1, x2: 25, y1: 5, y2: 5, class: `series series-${cls}` }));
  const item = document.createElement("span");
  item.className = "legend-item";
  item.append(mark, document.createTextNode(name));
  return item;
}
