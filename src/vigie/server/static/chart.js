"use strict";
// A small SVG line chart, drawn by vigie itself (no CDN, no inline script).
// Suppressed cells break the line and are marked ✕ at the top of the plot: never zero.
const COLORS = ["#2f6fde", "#e07b00", "#2a9d5c", "#b03fb0", "#c0392b", "#16a0a8", "#7a5c2e", "#5a5f73"];
const SVGNS = "http://www.w3.org/2000/svg";

function el(name, attrs, text) {
  const node = document.createElementNS(SVGNS, name);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function formatValue(v, integer) {
  if (v === null || v === undefined) return "suppressed";
  if (integer) return Math.round(v).toLocaleString("en-US");
  return Math.abs(v) < 1 ? v.toFixed(4) : v.toLocaleString("en-US", { maximumFractionDigits: 1 });
}

function niceTop(v, integer) {
  // a round upper bound so that the four grid steps are round numbers (integers for counts)
  const step = Math.pow(10, Math.floor(Math.log10(v / 4)));
  for (const m of [1, 2, 2.5, 5, 10]) {
    const top = 4 * m * step;
    if (top >= v && (!integer || Number.isInteger(m * step))) return top;
  }
  return integer ? 4 * Math.ceil(v / 4) : v;
}

function seriesOf(answer) {
  const series = new Map();
  for (const cell of answer.cells) {
    const name = cell.total || !cell.dims.length ? "(all)" : (cell.dims[0] === null ? "(none)" : cell.dims[0]);
    if (!series.has(name)) series.set(name, []);
    series.get(name).push(cell);
  }
  return series;
}

function drawChart(box, answer, legend) {
  box.replaceChildren();
  legend.replaceChildren();
  const W = 640, H = 300, L = 62, R = 12, T = 22, B = 46;
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": answer.kpi });
  const periods = [...new Set(answer.cells.map((c) => c.period))].sort();
  const shown = answer.cells.filter((c) => c.value !== null).map((c) => c.value);
  const max = shown.length ? Math.max(...shown) : 1;
  const top = niceTop(max > 0 ? max * 1.05 : 1, answer.integer);
  const x = (p) => L + (periods.length > 1 ? (periods.indexOf(p) * (W - L - R)) / (periods.length - 1) : (W - L - R) / 2);
  const y = (v) => T + (H - T - B) * (1 - v / top);
  for (let i = 0; i <= 4; i++) {
    const v = (top * i) / 4;
    svg.append(el("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    svg.append(el("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, formatValue(v, answer.integer)));
  }
  svg.append(el("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
  const every = Math.max(1, Math.ceil(periods.length / 8));
  periods.forEach((p, i) => {
    const anchor = i === 0 ? "start" : (i === periods.length - 1 ? "end" : "middle");
    if (i % every === 0 || i === periods.length - 1) svg.append(el("text", { x: x(p), y: H - B + 16, "text-anchor": anchor, class: "tick" }, p));
  });
  let n = 0;
  for (const [name, cells] of seriesOf(answer)) {
    const color = COLORS[n++ % COLORS.length];
    const segments = [];
    let run = [];
    for (const cell of cells) {
      if (cell.value === null) { if (run.length) segments.push(run); run = []; continue; }
      run.push(`${x(cell.period).toFixed(1)},${y(cell.value).toFixed(1)}`);
    }
    if (run.length) segments.push(run);
    const path = segments.map((s) => "M" + s.join(" L")).join(" ");
    if (path) svg.append(el("path", { class: "line", d: path, stroke: color }));
    for (const cell of cells) {
      if (cell.value === null) {
        const mark = el("text", { class: "suppressed", x: x(cell.period), y: T - 6, "text-anchor": "middle",
          "data-period": cell.period, "data-series": name }, "✕");
        mark.append(el("title", {}, `${name}, ${cell.period}: suppressed (fewer than ${answer.k} users)`));
        svg.append(mark);
        continue;
      }
      const dot = el("circle", { class: "point", cx: x(cell.period), cy: y(cell.value), r: 3, fill: color,
        "data-period": cell.period, "data-series": name, "data-value": cell.value });
      dot.append(el("title", {}, `${name}, ${cell.period}: ${formatValue(cell.value, answer.integer)}`));
      svg.append(dot);
    }
    const item = document.createElement("span");
    item.style.setProperty("--c", color);
    item.textContent = name;
    legend.append(item);
  }
  box.append(svg);
}
window.vigieChart = { drawChart, formatValue };
