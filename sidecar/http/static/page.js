// The live page: the tuning jobs, one chart of every job's objective curve, the selected job's
// thresholds dashed, and the job table; refreshed from /api/v1/events. No request leaves the
// machine: everything it loads comes from this server.
"use strict";

const state = { tuningJob: null, selected: null, doc: null, chart: null, pending: false };
window.sidecarState = state; // read by the browser tests

const STOPPED = "#c0392b";
const PALETTE = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"];

function fmt(v) {
  return v === null || v === undefined ? "–" : Number(v).toPrecision(4).replace(/\.?0+$/, "");
}

async function getJson(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return r.json();
}

async function loadTuningJobs() {
  const doc = await getJson("/api/v1/tuning-jobs");
  const nav = document.getElementById("tuning-jobs");
  nav.replaceChildren();
  const wanted = new URLSearchParams(location.search).get("tuning_job");
  const names = doc.tuning_jobs.map((t) => t.name);
  if (!state.tuningJob || !names.includes(state.tuningJob)) {
    const withJobs = doc.tuning_jobs.find((t) => Object.values(t.counts).some((n) => n > 0));
    state.tuningJob = names.includes(wanted) ? wanted : (withJobs || doc.tuning_jobs[0] || {}).name || null;
  }
  for (const t of doc.tuning_jobs) {
    const b = document.createElement("button");
    b.textContent = t.name;
    b.dataset.name = t.name;
    if (t.name === state.tuningJob) b.classList.add("selected");
    b.onclick = () => { state.tuningJob = t.name; state.selected = null; refresh(); };
    nav.append(b);
  }
  return doc;
}

function seriesData(doc) {
  const metric = doc.objective.metric;
  const epochs = new Set();
  for (const j of doc.jobs) for (const [e] of (j.values[metric] || [])) epochs.add(e);
  const xs = [...epochs].sort((a, b) => a - b);
  const index = new Map(xs.map((e, i) => [e, i]));
  const data = [xs];
  for (const j of doc.jobs) {
    const ys = new Array(xs.length).fill(null);
    for (const [e, v] of (j.values[metric] || [])) {
      if (!j.decision || e <= j.decision.epoch) ys[index.get(e)] = v;
    }
    data.push(ys);
  }
  const selected = doc.jobs.find((j) => j.job === state.selected);
  const th = new Array(xs.length).fill(null);
  if (selected) for (const [e, v] of selected.thresholds) if (index.has(e)) th[index.get(e)] = v;
  data.push(th);
  return data;
}

function drawChart(doc) {
  const el = document.getElementById("chart");
  const data = seriesData(doc);
  const series = [{ label: "epoch" }];
  doc.jobs.forEach((j, i) => {
    const stopped = j.status === "Stopped";
    series.push({
      label: j.job,
      stroke: stopped ? STOPPED : PALETTE[i % PALETTE.length],
      width: stopped ? 1.5 : 2,
      dash: stopped ? [4, 3] : undefined,
      spanGaps: true,
      points: {
        show: (u, si) => stopped,
        size: 7,
        filter: stopped ? (u, si, show) => {
          const at = u.data[0].indexOf(j.decision.epoch);
          return at >= 0 ? [at] : null;
        } : null,
      },
    });
  });
  series.push({ label: "thresholds", stroke: "#ff7f0e", width: 2, dash: [8, 5], spanGaps: true, points: { show: false } });
  const width = Math.max(400, el.clientWidth - 16);
  if (state.chart) state.chart.destroy();
  state.chart = new uPlot({
    width, height: 360,
    series,
    scales: { x: { time: false } },
    axes: [{ label: "epoch", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] }, { label: doc.objective.metric }],
    legend: { show: false },
    cursor: { focus: { prox: 24 } },
    focus: { alpha: 0.35 },
    hooks: { setCursor: [showTooltip], setSeries: [(u, i) => { state.focused = i; }] },
  }, data, el);
  state.curves = doc.jobs.length; // one series per job, besides the epochs and the thresholds
}

function showTooltip(u) {
  const tip = document.getElementById("tooltip");
  const idx = u.cursor.idx;
  const si = state.focused;
  if (idx == null || si == null || si < 1 || si > state.doc.jobs.length) { tip.hidden = true; return; }
  const job = state.doc.jobs[si - 1];
  const value = u.data[si][idx];
  if (value == null) { tip.hidden = true; return; }
  const epoch = u.data[0][idx];
  const median = (job.thresholds.find(([e]) => e === epoch) || [null, null])[1];
  tip.textContent = `${job.job} · epoch ${epoch} · value ${fmt(value)} · median ${fmt(median)}`;
  const box = u.over.getBoundingClientRect();
  tip.style.left = `${box.left + u.cursor.left + 12}px`;
  tip.style.top = `${box.top + u.cursor.top + 12}px`;
  tip.hidden = false;
}

function drawTable(doc) {
  const body = document.querySelector("#jobs tbody");
  body.replaceChildren();
  const longest = Math.max(0, ...doc.jobs.filter((j) => j.status !== "Stopped").map((j) => j.epochs));
  for (const j of doc.jobs) {
    const d = j.decision;
    const row = document.createElement("tr");
    row.dataset.job = j.job;
    if (j.status === "Stopped") row.classList.add("stopped");
    if (j.job === state.selected) row.classList.add("selected");
    const saved = d ? Math.max(0, longest - d.epoch) : 0;
    const cells = [
      j.job, j.status, j.epochs, d ? d.epoch : "–", d ? fmt(d.value) : "–", d ? fmt(d.median) : "–",
      d ? d.compared_jobs : "–", d ? saved : "–", d ? "" : (j.why_not_stopped || ""),
    ];
    cells.forEach((c, k) => {
      const td = document.createElement("td");
      td.textContent = String(c);
      if (k === 1) td.className = "status";
      row.append(td);
    });
    row.onclick = () => { state.selected = j.job; render(); };
    body.append(row);
  }
}

function drawSummary(doc) {
  const counts = {};
  for (const j of doc.jobs) counts[j.status] = (counts[j.status] || 0) + 1;
  const parts = Object.entries(counts).map(([s, n]) => `${n} ${s}`).join(", ") || "no jobs yet";
  const rule = doc.rule ? `rule ${doc.rule.rule}` : "";
  const done = doc.completion ? ` · complete (${doc.completion.reason})` : "";
  document.getElementById("summary").textContent =
    `${doc.name}: objective ${doc.objective.metric} (${doc.objective.type}), ${rule} · ${parts}${done}`;
}

function render() {
  const doc = state.doc;
  if (!doc) return;
  if (!state.selected && doc.jobs.length) state.selected = doc.jobs[0].job;
  drawSummary(doc);
  drawChart(doc);
  drawTable(doc);
}

async function refresh() {
  try {
    await loadTuningJobs();
    if (!state.tuningJob) return;
    state.doc = await getJson(`/api/v1/tuning-jobs/${encodeURIComponent(state.tuningJob)}`);
    render();
    if (state.loadedAt === undefined) state.loadedAt = performance.now(); // the first full render
  } catch (err) {
    document.getElementById("connection").textContent = `error: ${err.message}`;
  }
}

function soon() {
  // events come in bursts (a value per job per epoch): one refresh per burst
  if (state.pending) return;
  state.pending = true;
  setTimeout(() => { state.pending = false; refresh(); }, 250);
}

function follow() {
  const conn = document.getElementById("connection");
  const events = new EventSource("/api/v1/events"); // reconnects by itself after a restart
  events.onopen = () => { conn.textContent = "live"; conn.classList.add("live"); soon(); };
  events.onerror = () => { conn.textContent = "reconnecting…"; conn.classList.remove("live"); };
  for (const kind of ["value", "decision", "job", "completion"]) {
    events.addEventListener(kind, (e) => {
      const data = JSON.parse(e.data);
      if (!state.tuningJob || data.tuning_job === state.tuningJob || kind === "job") soon();
    });
  }
}

refresh().then(follow);
window.addEventListener("resize", () => render());
