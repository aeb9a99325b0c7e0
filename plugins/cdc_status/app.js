// CDC status page: fetches api/status (relative to the page) and renders the summary, one row per
// configured table and inline SVG charts. Vanilla JS, no library, nothing fetched from the internet.
"use strict";

const PALETTE = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];
const view = { range: "day", source: "", state: "", data: null };

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.round(Number(seconds) * 10) / 10;
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60), h = Math.floor(m / 60), d = Math.floor(h / 24);
  // "30m", "1h", "2d" for round figures; the smaller unit only when it is not zero.
  const two = (big, bigUnit, small, smallUnit) =>
    small ? `${big}${bigUnit} ${String(small).padStart(2, "0")}${smallUnit}` : `${big}${bigUnit}`;
  if (m < 60) return two(m, "m", Math.round(s - m * 60), "s");
  if (h < 24) return two(h, "h", m - h * 60, "m");
  return d && h - d * 24 ? `${d}d ${h - d * 24}h` : `${d}d`;
}

function fmtNumber(n, digits = 0) {
  if (n === null || n === undefined) return "—";
  return Number(n).toLocaleString("en-US", { maximumFractionDigits: digits });
}

// Times: ISO strings; commit times are on the source's clock (no zone), the others are UTC.
function fmtTime(iso) {
  if (!iso) return "—";
  return String(iso).replace("T", " ").replace(/\.\d+/, "").replace("+00:00", " UTC");
}

function ago(iso, now) {
  if (!iso) return "";
  const seconds = (new Date(now) - new Date(iso)) / 1000;
  return Number.isFinite(seconds) ? `${fmtDuration(Math.max(seconds, 0))} ago` : "";
}

function slug(state) {
  return state.replace(/ /g, "-");
}

// -- charts ----------------------------------------------------------------------------------------
const W = 600, H = 190, PAD = { l: 52, r: 10, t: 10, b: 24 };

function axes(x0, x1, yMax, fmtY) {
  const ticks = [0, 0.5, 1].map((f) => {
    const y = H - PAD.b - f * (H - PAD.t - PAD.b);
    return `<line class="axis" x1="${PAD.l}" x2="${W - PAD.r}" y1="${y}" y2="${y}"/>` +
      `<text x="${PAD.l - 4}" y="${y + 3}" text-anchor="end">${esc(fmtY(f * yMax))}</text>`;
  }).join("");
  const label = (t, anchor, x) => `<text x="${x}" y="${H - 6}" text-anchor="${anchor}">${esc(fmtTime(new Date(t).toISOString()).slice(5, 16))}</text>`;
  return ticks + label(x0, "start", PAD.l) + label(x1, "end", W - PAD.r);
}

function scale(x0, x1, yMax) {
  return {
    x: (t) => PAD.l + ((t - x0) / Math.max(x1 - x0, 1)) * (W - PAD.l - PAD.r),
    y: (v) => H - PAD.b - (v / (yMax || 1)) * (H - PAD.t - PAD.b),
  };
}

function legend(names) {
  return `<div class="legend">${names.map((n, i) => `<span><i style="background:${PALETTE[i % PALETTE.length]}"></i>${esc(n)}</span>`).join("")}</div>`;
}

function chartFrame(name, title, svgBody, legendHtml, empty) {
  const body = empty
    ? `<div class="empty">${esc(empty)}</div>`
    : `<svg viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(title)}">${svgBody}</svg>${legendHtml}`;
  return `<figure class="chart" data-chart="${esc(name)}"><figcaption>${esc(title)}</figcaption>${body}</figure>`;
}

function lagChart(source, x0, x1) {
  const series = source.tables.map((t) => t.points.filter((p) => p.lag_s !== null && p.lag_s !== undefined)
    .map((p) => ({ t: Date.parse(p.at), v: p.lag_s })));
  const all = series.flat();
  if (!all.length) return chartFrame("lag", "Lag per table (at the start of each run)", "", "", "No runs in this range yet.");
  const yMax = Math.max(...all.map((p) => p.v), 1);
  const s = scale(x0, x1, yMax);
  const lines = series.map((pts, i) => {
    if (!pts.length) return "";
    const colour = PALETTE[i % PALETTE.length];
    const d = pts.map((p, j) => `${j ? "L" : "M"}${s.x(p.t).toFixed(1)},${s.y(p.v).toFixed(1)}`).join("");
    const dots = pts.map((p) => `<circle cx="${s.x(p.t).toFixed(1)}" cy="${s.y(p.v).toFixed(1)}" r="2" fill="${colour}"><title>${esc(source.tables[i].name)}: ${esc(fmtDuration(p.v))}</title></circle>`).join("");
    return `<path d="${d}" fill="none" stroke="${colour}" stroke-width="1.5"/>${dots}`;
  }).join("");
  return chartFrame("lag", "Lag per table (at the start of each run)", axes(x0, x1, yMax, fmtDuration) + lines, legend(source.tables.map((t) => t.name)));
}

function rowsChart(source, x0, x1) {
  const runs = source.runs.filter((r) => Object.keys(r.rows).length);
  // Runs that are not (or no longer) in Airflow's run table still have their points.
  const known = new Set(runs.map((r) => r.run_id));
  const byRun = {};
  source.tables.forEach((t) => t.points.forEach((p) => {
    if (known.has(p.run_id)) return;
    byRun[p.run_id] = byRun[p.run_id] || { run_id: p.run_id, start: p.at, rows: {} };
    byRun[p.run_id].rows[t.name] = p.rows || 0;
  }));
  const all = runs.concat(Object.values(byRun));
  if (!all.length) return chartFrame("rows", "Changes loaded per run", "", "", "No runs in this range yet.");
  const totals = all.map((r) => Object.values(r.rows).reduce((a, b) => a + b, 0));
  const yMax = Math.max(...totals, 1);
  const s = scale(x0, x1, yMax);
  const width = Math.max(2, Math.min(14, (W - PAD.l - PAD.r) / (all.length * 1.5)));
  const bars = all.map((r) => {
    let base = 0;
    const x = s.x(Date.parse(r.start)) - width / 2;
    return source.tables.map((t, i) => {
      const v = r.rows[t.name] || 0;
      if (!v) return "";
      const y0 = s.y(base), y1 = s.y(base + v);
      base += v;
      return `<rect x="${x.toFixed(1)}" y="${y1.toFixed(1)}" width="${width.toFixed(1)}" height="${Math.max(y0 - y1, 0.5).toFixed(1)}" fill="${PALETTE[i % PALETTE.length]}"><title>${esc(r.run_id)} ${esc(t.name)}: ${fmtNumber(v)} changes</title></rect>`;
    }).join("");
  }).join("");
  return chartFrame("rows", "Changes loaded per run", axes(x0, x1, yMax, (v) => fmtNumber(v)) + bars, legend(source.tables.map((t) => t.name)));
}

function durationChart(source, x0, x1) {
  const runs = source.runs.filter((r) => r.duration_s !== null && r.duration_s !== undefined);
  if (!runs.length) return chartFrame("duration", "Run duration", "", "", "No finished run in this range yet.");
  const yMax = Math.max(...runs.map((r) => r.duration_s), 1);
  const s = scale(x0, x1, yMax);
  const width = Math.max(2, Math.min(14, (W - PAD.l - PAD.r) / (runs.length * 1.5)));
  const bars = runs.map((r) => {
    const y = s.y(r.duration_s);
    const colour = r.state === "failed" ? "#dc2626" : "#64748b";
    return `<rect x="${(s.x(Date.parse(r.start)) - width / 2).toFixed(1)}" y="${y.toFixed(1)}" width="${width.toFixed(1)}" height="${(H - PAD.b - y).toFixed(1)}" fill="${colour}"><title>${esc(r.run_id)} (${esc(r.state)}): ${esc(fmtDuration(r.duration_s))}</title></rect>`;
  }).join("");
  return chartFrame("duration", "Run duration", axes(x0, x1, yMax, fmtDuration) + bars, `<div class="legend"><span><i style="background:#64748b"></i>run</span><span><i style="background:#dc2626"></i>failed run</span></div>`);
}

// -- table rows ------------------------------------------------------------------------------------
function lagCell(t) {
  const title = `captured through ${fmtTime(t.captured_through)}, applied through ${fmtTime(t.applied_through)} (source clock), at ${fmtTime(t.observed_at)}`;
  return `<td class="num" data-field="lag" data-lag-s="${t.lag_s ?? ""}" title="${esc(title)}">${esc(fmtDuration(t.lag_s))}` +
    `<div class="small" data-field="applied-through" data-value="${esc(t.applied_through ?? "")}">applied through ${esc(fmtTime(t.applied_through))}</div></td>`;
}

function batchCell(b) {
  if (!b) return `<td data-field="last-batch" class="small">no batch yet</td>`;
  return `<td class="num" data-field="last-batch" data-rows="${b.rows}" data-duration-s="${b.duration_s}" data-batch-id="${esc(b.batch_id)}">` +
    `<span data-field="rows">${fmtNumber(b.rows)}</span> rows · <span data-field="duration">${esc(fmtDuration(b.duration_s))}</span>` +
    `<div class="small">${b.rows_per_s === null ? "—" : fmtNumber(b.rows_per_s, 1)} rows/s · ${esc(b.mode)} · ${esc(fmtTime(b.applied_at))}</div>` +
    readerLine(b.reader) +
    // Snowflake credits of the batch (CDC_BATCHES.CREDITS_USED, approximated; none when the history is not readable)
    `<div class="small" data-field="credits" data-value="${b.credits ?? ""}">${b.credits == null ? "credits n/a" : fmtNumber(b.credits, 4) + " credits"}</div></td>`;
}

// Which driver read the batch; a fallback (change_reader auto, mssql-python's driver not loading) is a warning.
function readerLine(reader) {
  if (!reader) return "";
  const fallback = reader.startsWith("pymssql (fallback");
  const shown = fallback ? "pymssql (fallback)" : reader;
  return `<div class="small${fallback ? " warn" : ""}" data-field="reader" data-value="${esc(reader)}" title="${esc(reader)}">read with ${esc(shown)}</div>`;
}

function freshnessCell(f) {
  return `<td data-field="freshness" data-status="${esc(f.status)}">SLA ${esc(fmtDuration(f.sla_s))}` +
    `<div class="${esc(f.status)}" title="${esc(f.basis)}">${esc(f.status)}</div></td>`;
}

function retentionCell(r, now) {
  if (!r) return `<td data-field="retention" class="small">not checked yet (cdc_health)</td>`;
  return `<td data-field="retention" data-status="${esc(r.status)}" title="${esc(r.detail)}">` +
    `<span class="${esc(r.status)}">${r.headroom_min === null ? "?" : esc(fmtDuration(r.headroom_min * 60))}</span>` +
    `<div class="small">checked ${esc(ago(r.checked_at, now))}</div></td>`;
}

function streakCell(f) {
  if (!f.streak) return `<td class="num" data-field="streak" data-streak="0">0</td>`;
  const cls = f.streak >= f.alert_at ? "alert" : "warn";
  return `<td class="num" data-field="streak" data-streak="${f.streak}" title="${esc(f.last_error)}">` +
    `<span class="${cls}">${f.streak}</span><div class="small">since ${esc(fmtTime(f.since))}</div></td>`;
}

// A mapped table task by its name in the grid: tables.extract_load[dbo_payments]; plan serves every table.
function taskLabel(ti, table) {
  return ti.map_index !== undefined && ti.map_index !== null && ti.map_index >= 0 ? `${ti.task_id}[${table}]` : ti.task_id;
}

function linksCell(l) {
  const log = l.last_log
    ? `<a target="_top" href="${esc(l.last_log)}" data-link="log" title="${esc(taskLabel(l.last_task, l.table))} try ${esc(l.last_task.try_number)} (${esc(l.last_task.state)})">last log</a>`
    : `<span class="small">no log yet</span>`;
  return `<td class="small"><a target="_top" href="${esc(l.task_group)}" data-link="task-group">table tasks</a><br>${log}<br>` +
    `<a href="${esc(l.runbook)}" data-link="runbook">runbook</a></td>`;
}

// A snapshot in chunks: chunks done of total (the stream runs beside it).
function snapshotBar(snap) {
  if (!snap || !["running", "finalizing"].includes(snap.state)) return "";
  return `<progress class="snapshot" data-field="snapshot" data-done="${snap.done}" data-chunks="${snap.chunks}" ` +
    `max="${snap.chunks || 1}" value="${snap.done || 0}" title="${esc(snap.snapshot_id)}"></progress>`;
}

function tableRow(t, now) {
  return `<tr data-table="${esc(t.name)}" data-state="${esc(t.state)}">` +
    `<td><b>${esc(t.source_table)}</b><div class="small">${esc(t.raw_table)}</div></td>` +
    `<td data-field="state"><span class="badge ${slug(t.state)}" title="${esc(t.state_reason)}">${esc(t.state)}</span><div class="small">${esc(t.state_reason)}</div>${snapshotBar(t.snapshot)}</td>` +
    lagCell(t) + batchCell(t.last_batch) + freshnessCell(t.freshness) + retentionCell(t.retention, now) +
    `<td data-field="capture-instance">${esc(t.capture_instance ?? "—")}</td>` + streakCell(t.failures) + linksCell(t.links) + `</tr>`;
}

function summary(source, now) {
  const s = source.summary;
  const states = Object.entries(s.states).filter(([, n]) => n).map(([state, n]) => `<span class="badge ${slug(state)}">${n} ${esc(state)}</span>`).join(" ");
  const capture = s.capture_job
    ? `<span class="${esc(s.capture_job.status)}" title="${esc(s.capture_job.detail)}">${esc(s.capture_job.status)}</span>`
    : `<span class="muted">not checked yet</span>`;
  return `<div class="summary" data-summary="${esc(source.name)}">` +
    `<div>Tables<b>${s.tables}</b>${states}</div>` +
    `<div>Max lag<b>${esc(fmtDuration(s.max_lag_s))}</b></div>` +
    `<div>Changes loaded (${esc(view.range)})<b>${fmtNumber(s.rows_in_range)}</b></div>` +
    `<div>Last batch<b>${esc(ago(s.last_batch_at, now) || "—")}</b></div>` +
    `<div>Capture job<b>${capture}</b><span class="small">${s.health_checked_at ? "checked " + esc(ago(s.health_checked_at, now)) : "cdc_health has not run"}</span></div>` +
    `</div>`;
}

function renderSource(source, data) {
  const now = data.generated_at;
  const rows = source.tables.filter((t) => !view.state || t.state === view.state);
  const paused = source.paused === null ? `<span class="badge stopped">not in Airflow yet</span>` : source.paused ? `<span class="badge stopped">paused</span>` : "";
  const head = `<h2>${esc(source.name)} <a target="_top" href="${esc(source.dag_link)}">${esc(source.dag_id)}</a> ${paused}<span class="small">${esc(source.description)} · schedule ${esc(source.schedule ?? "none")}</span></h2>`;
  let table;
  if (!source.tables.length) {
    table = `<div class="empty">This source has no tables configured.</div>`;
  } else if (!rows.length) {
    table = `<div class="empty">No table of ${esc(source.name)} is ${esc(view.state)}.</div>`;
  } else {
    table = `<table class="tables"><thead><tr><th>table</th><th>state</th><th>lag</th><th>last batch</th><th>freshness</th>` +
      `<th>retention headroom</th><th>capture instance</th><th>failure streak</th><th>links</th></tr></thead>` +
      `<tbody>${rows.map((t) => tableRow(t, now)).join("")}</tbody></table>`;
  }
  // The time axis spans the chosen range, or only the part with data when the first point is later
  // (a new deployment's first runs would otherwise sit squeezed against the right edge).
  const x1 = Date.parse(data.generated_at);
  const times = source.tables.flatMap((t) => t.points.map((p) => Date.parse(p.at)))
    .concat(source.runs.map((r) => Date.parse(r.start))).filter((t) => !Number.isNaN(t));
  const first = times.length ? Math.min(...times) : x1;
  const x0 = Math.max(Date.parse(data.since), first - Math.max((x1 - first) * 0.05, 60_000));
  const charts = `<div class="charts">${lagChart(source, x0, x1)}${rowsChart(source, x0, x1)}${durationChart(source, x0, x1)}</div>`;
  return `<section class="source" data-source="${esc(source.name)}">${head}${summary(source, now)}${table}${charts}</section>`;
}

// Open incidents (the incident desk's ledgers) on top: cause, age, what fails, first log, runbook.
function incidentCard(i, now) {
  const failing = i.failing.length ? i.failing.join(", ") : "none (resolving)";
  const log = i.log_url ? ` · <a target="_top" href="${esc(i.log_url)}" data-link="incident-log">first log</a>` : "";
  return `<div class="incident" data-incident="${esc(i.id)}" data-source="${esc(i.source)}">` +
    `<div><b>${esc(i.id)}</b> <span class="badge failing" data-field="age" data-age-s="${i.age_s}">open ${esc(fmtDuration(i.age_s))}</span> ` +
    `<span class="small">since ${esc(fmtTime(i.opened_at))} · source ${esc(i.source)}</span></div>` +
    `<div class="cause" data-field="cause">${esc(i.title)}</div>` +
    `<div class="small" data-field="tables" data-count="${i.failing.length}">failing: ${esc(failing)}` +
    `${i.where ? ` · first: ${esc(i.where)}` : ""}${log} · <a href="${esc(i.runbook)}" data-link="incident-runbook">runbook</a></div></div>`;
}

function incidents(data) {
  const shown = data.incidents.filter((i) => !view.source || i.source === view.source);
  if (!shown.length) return `<section class="incidents" data-incidents="0"><p class="muted">No open incident.</p></section>`;
  return `<section class="incidents" data-incidents="${shown.length}"><h2>Open incidents (${shown.length})</h2>` +
    shown.map((i) => incidentCard(i, data.generated_at)).join("") + `</section>`;
}

function render() {
  const data = view.data;
  const content = document.getElementById("content");
  if (!data) return;
  document.getElementById("generated").textContent = `as of ${fmtTime(data.generated_at)}`;
  const errors = data.config_errors.length
    ? `<div class="banner">Invalid source config(s), not shown: ${data.config_errors.map(esc).join("; ")}</div>` : "";
  const sources = data.sources.filter((s) => !view.source || s.name === view.source);
  let body;
  if (!data.sources.length) {
    body = `<div class="empty">No CDC source you may read is configured (include/config/sources/*.yaml).</div>`;
  } else {
    body = sources.map((s) => renderSource(s, data)).join("");
  }
  content.innerHTML = errors + incidents(data) + body;
}

function fillFilters(data) {
  const sourceSelect = document.getElementById("filter-source");
  const stateSelect = document.getElementById("filter-state");
  const options = (values, current) => `<option value="">all</option>` + values.map((v) => `<option value="${esc(v)}"${v === current ? " selected" : ""}>${esc(v)}</option>`).join("");
  sourceSelect.innerHTML = options(data.sources.map((s) => s.name), view.source);
  stateSelect.innerHTML = options(data.states, view.state);
}

async function load() {
  const response = await fetch(`api/status?range=${encodeURIComponent(view.range)}`, { credentials: "same-origin" });
  if (!response.ok) {
    const why = response.status === 401 || response.status === 403 ? "Sign in to Airflow (with read access to the CDC DAGs) to see this page." : `The status API answered ${response.status}.`;
    document.getElementById("content").innerHTML = `<div class="banner">${esc(why)}</div>`;
    return;
  }
  view.data = await response.json();
  fillFilters(view.data);
  render();
}

// In the UI's frame (sandboxed: no top-level navigation) links to Airflow pages go through the UI's
// own router on the same origin; opened on its own, the page follows them as plain links.
document.addEventListener("click", (event) => {
  const link = event.target.closest("a[target=_top]");
  if (!link || window.top === window) return;
  try {
    const url = new URL(link.href);
    const state = window.top.history.state || {};
    window.top.history.pushState({ usr: null, key: Math.random().toString(36).slice(2, 10), idx: (state.idx ?? 0) + 1 }, "", url.pathname + url.search + url.hash);
    window.top.dispatchEvent(new PopStateEvent("popstate", { state: window.top.history.state }));
    event.preventDefault();
  } catch (error) {
    // another origin: the browser follows the link as usual
  }
});

document.getElementById("filter-source").addEventListener("change", (e) => { view.source = e.target.value; render(); });
document.getElementById("filter-state").addEventListener("change", (e) => { view.state = e.target.value; render(); });
document.getElementById("refresh").addEventListener("click", () => load());
document.querySelectorAll("[data-range]").forEach((button) => button.addEventListener("click", () => {
  view.range = button.dataset.range;
  document.querySelectorAll("[data-range]").forEach((b) => b.classList.toggle("active", b === button));
  load();
}));
load();
setInterval(load, 60000);
