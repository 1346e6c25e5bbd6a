"use strict";
// The dashboard: four shipped KPIs as charts, a date range, a breakdown and a value filter
// per chart. Every request carries the session cookie; nothing is cached client-side.
const CHARTS = [
  { kpi: "device_activations", by: "", title: "Device activations per day" },
  { kpi: "connection_error_rate", by: "firmware", title: "Connection error rate by firmware" },
  { kpi: "active_devices", by: "model", title: "Active devices by model" },
  { kpi: "firmware_adoption", by: "firmware", title: "Firmware adoption" },
];
let KPIS = {};

async function api(path, options) {
  const res = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
  if (res.status === 401) { window.location.assign("/login"); throw new Error("not logged in"); }
  const body = await res.json();
  if (!res.ok) throw new Error((body.error && body.error.message) || res.statusText);
  return body;
}

function range() {
  const params = new URLSearchParams();
  const from = document.getElementById("from").value;
  const to = document.getElementById("to").value;
  if (from) params.set("from", from);
  if (to) params.set("to", to);
  params.set("grain", document.getElementById("grain").value);
  return params;
}

function section(spec, index) {
  const kpi = KPIS[spec.kpi];
  const box = document.createElement("section");
  box.className = "chart";
  box.id = `chart-${spec.kpi}`;
  box.innerHTML = `<h2></h2><p class="desc"></p><div class="controls">
    <label>By <select class="by"></select></label>
    <label>Only <select class="only"><option value="">all values</option></select></label></div>
    <div class="plot"></div><div class="legend"></div><p class="error"></p>`;
  box.querySelector("h2").textContent = spec.title;
  box.querySelector("p.desc").textContent = kpi ? kpi.description : "";
  const by = box.querySelector("select.by");
  const dims = spec.kpi === "firmware_adoption" ? ["firmware"] : ["", ...(kpi ? kpi.dimensions : [])];
  for (const d of dims) by.append(new Option(d || "(total)", d));
  by.value = spec.by;
  by.addEventListener("change", () => { box.querySelector("select.only").length = 1; load(spec, box); });
  box.querySelector("select.only").addEventListener("change", () => load(spec, box));
  return box;
}

async function load(spec, box) {
  const params = range();
  const by = box.querySelector("select.by").value;
  const only = box.querySelector("select.only");
  if (by) params.set("by", by);
  if (by && only.value) params.append("where", `${by}=${only.value}`);
  const error = box.querySelector("p.error");
  error.textContent = "";
  try {
    const answer = await api(`/api/kpis/${spec.kpi}?${params}`);
    box.dataset.loaded = String(Number(box.dataset.loaded || 0) + 1);
    if (by && only.length === 1) {
      const values = [...new Set(answer.cells.filter((c) => !c.total).map((c) => c.dims[0]))].sort();
      for (const v of values) if (v !== null) only.append(new Option(v, v));
    }
    window.vigieChart.drawChart(box.querySelector(".plot"), answer, box.querySelector(".legend"));
  } catch (e) {
    error.textContent = e.message;
  }
}

async function loadGuard() {
  const panel = document.getElementById("guard");
  const status = await api("/api/guard");
  const verdict = document.getElementById("guard-verdict");
  verdict.textContent = status.ok ? "every check passes" : `FAILING since ${status.failing_since || "?"}: data closed`;
  verdict.className = status.ok ? "PASS" : "FAIL";
  const body = document.getElementById("guard-checks");
  body.replaceChildren(...status.checks.map((c) => {
    const row = document.createElement("tr");
    row.className = c.status;
    for (const v of [c.check, c.target, c.status, c.reason, c.fix, c.at.slice(11, 19)]) {
      const cell = document.createElement("td");
      cell.textContent = v;
      row.append(cell);
    }
    return row;
  }));
  panel.hidden = false;
  panel.dataset.loaded = String(Number(panel.dataset.loaded || 0) + 1);
  panel.dataset.ok = String(status.ok);
}

async function main() {
  const me = await api("/api/whoami");
  document.getElementById("who").textContent = `${me.name} (${me.role})`;
  if (["admin", "responder"].includes(me.role)) {
    document.getElementById("range").hidden = true;
    const refresh = () => loadGuard().catch((e) => { document.getElementById("notice").textContent = e.message; });
    refresh();
    setInterval(refresh, 5000);
    return;
  }
  if (!["analyst", "engineer"].includes(me.role)) {
    document.getElementById("notice").textContent = "Your role does not read KPIs.";
    return;
  }
  const list = await api("/api/kpis");
  document.getElementById("k").textContent = list.k;
  KPIS = Object.fromEntries(list.kpis.map((k) => [k.name, k]));
  const main = document.getElementById("charts");
  const boxes = CHARTS.map((spec, i) => { const b = section(spec, i); main.append(b); return [spec, b]; });
  const reload = () => boxes.forEach(([spec, box]) => load(spec, box));
  document.getElementById("range").addEventListener("submit", (e) => { e.preventDefault(); reload(); });
  document.getElementById("logout").addEventListener("click", async () => {
    await fetch("/api/logout", { method: "POST", credentials: "same-origin" });
    window.location.assign("/login");
  });
  reload();
}
main();
