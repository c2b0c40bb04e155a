// The harstream page: devices now (table, filter, pages), one device's last hour
// (bands per activity, confidence, gaps), the gateway's health. Data: /api/* and the
// server-sent events of /api/events. The token comes from the page's ?token=.
"use strict";
const token = new URLSearchParams(location.search).get("token");
const auth = token ? { Authorization: "Bearer " + token } : {};
const COLORS = {
  WALKING: "#1e88e5", WALKING_UPSTAIRS: "#43a047", WALKING_DOWNSTAIRS: "#8e24aa",
  SITTING: "#fb8c00", STANDING: "#fdd835", LAYING: "#6d4c41", UNKNOWN: "#9e9e9e",
};
const PAGE = 100;
const devices = new Map();
let page = 0, selected = null, timelineDue = 0;

const $ = (id) => document.getElementById(id);
async function api(path) {
  const response = await fetch(path, { headers: auth });
  if (!response.ok) throw new Error(path + ": " + response.status);
  return response.json();
}
function ago(t) {
  const s = Math.max(0, Date.now() / 1000 - t);
  return s < 60 ? s.toFixed(0) + " s" : s < 3600 ? (s / 60).toFixed(0) + " min" : (s / 3600).toFixed(1) + " h";
}
function clock(t) { return new Date(t * 1000).toLocaleTimeString(); }
function chip(activity) {
  return `<span class="chip" style="background:${COLORS[activity] || "#000"}"></span>${activity}`;
}

function render() {
  const wanted = $("filter").value.trim().toLowerCase();
  const rows = [...devices.values()]
    .filter((d) => !wanted || d.device.toLowerCase().includes(wanted) || d.activity.toLowerCase().includes(wanted))
    .sort((a, b) => a.device.localeCompare(b.device));
  const pages = Math.max(1, Math.ceil(rows.length / PAGE));
  page = Math.min(page, pages - 1);
  $("count").textContent = `${rows.length} of ${devices.size}`;
  $("page").textContent = ` ${page + 1} / ${pages} `;
  $("devices").innerHTML = rows.slice(page * PAGE, (page + 1) * PAGE).map((d) =>
    `<tr data-device="${d.device}" class="${d.device === selected ? "selected" : ""}">` +
    `<td>${d.device}</td><td>${chip(d.activity)}</td><td>${d.confidence.toFixed(2)}</td>` +
    `<td>${clock(d.since)}</td><td>${ago(d.last_decision)} ago</td><td>${d.errors}</td>` +
    `<td>${d.calibration || "none"}</td></tr>`).join("");
}

async function loadDevices() {
  const body = await api("/api/devices");
  devices.clear();
  for (const d of body.devices) devices.set(d.device, d);
  render();
}

async function loadStats() {
  try {
    const s = await api("/api/stats");
    $("s-devices").textContent = s.devices;
    $("s-mps").textContent = s.messages_per_s ?? "-";
    $("s-dps").textContent = s.decisions_per_s ?? "-";
    const lat = s.latency_ms || {};
    $("s-lat").textContent = `${lat.p50 ?? "-"} / ${lat.p99 ?? "-"}`;
    $("s-queue").textContent = s.queue;
    $("s-errors").textContent = Object.values(s.rejected).reduce((a, b) => a + b, 0);
    $("s-up").textContent = ago(Date.now() / 1000 - s.uptime_s);
    $("s-broker").textContent = s.connected ? "broker connected" : "broker DISCONNECTED";
    $("error").textContent = "";
  } catch (e) { $("error").textContent = String(e); }
}

async function loadTimeline() {
  if (!selected) return;
  const body = await api(`/api/devices/${encodeURIComponent(selected)}/timeline`);
  // the last hour, or less when the device is younger: its runs fill the width
  const first = body.runs.length ? body.runs[0].start : body.now;
  const start = Math.max(body.now - body.history_s, first), span = Math.max(body.now - start, 1);
  const bands = [];
  let cursor = start;
  for (const run of body.runs) {
    if (run.start > cursor) bands.push({ gap: true, width: run.start - cursor });
    bands.push({ run, width: Math.max(run.end - Math.max(run.start, cursor), 0.5) });
    cursor = Math.max(cursor, run.end);
  }
  if (body.now > cursor) bands.push({ gap: true, width: body.now - cursor });
  const minutes = span / 60;
  $("d-title").textContent = `${selected}: the last ` +
    (minutes >= 1 ? `${minutes.toFixed(0)} minutes` : `${span.toFixed(0)} seconds`);
  $("bands").innerHTML = bands.map((b) => b.gap
    ? `<div style="flex:${b.width}" title="no decisions"></div>`
    : `<div style="flex:${b.width};background:${COLORS[b.run.activity]}" ` +
      `title="${b.run.activity} ${clock(b.run.start)}-${clock(b.run.end)}, confidence ${b.run.confidence}"></div>`).join("");
  $("d-axis").textContent = `${clock(start)} ... ${clock(body.now)}`;
  const canvas = $("conf"), g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  g.fillStyle = "#546e7a";
  for (const run of body.runs) {
    const x0 = ((run.start - start) / span) * canvas.width;
    const x1 = Math.max(((run.end - start) / span) * canvas.width, x0 + 1);
    const h = run.confidence * canvas.height;
    g.fillRect(x0, canvas.height - h, x1 - x0, h);
  }
  const seen = [...new Set(body.runs.map((r) => r.activity))];
  $("legend").innerHTML = seen.map((a) => `<span>${chip(a)}</span>`).join("");
  $("d-runs").textContent = `${body.runs.length} runs, ${Math.max(body.runs.length - 1, 0)} transitions`;
}

function listen() {
  const source = new EventSource("/api/events" + (token ? "?token=" + encodeURIComponent(token) : ""));
  source.onmessage = (message) => {
    for (const u of JSON.parse(message.data)) {
      const d = devices.get(u.device);
      if (!d) { devices.set(u.device, { device: u.device, activity: u.activity, confidence: u.confidence, since: u.t, last_decision: u.t, errors: 0 }); continue; }
      if (d.activity !== u.activity) d.since = u.t;
      Object.assign(d, { activity: u.activity, confidence: u.confidence, last_decision: u.t });
      if (u.device === selected && Date.now() > timelineDue) { timelineDue = Date.now() + 2000; loadTimeline(); }
    }
    render();
  };
}

$("filter").addEventListener("input", () => { page = 0; render(); });
$("prev").addEventListener("click", () => { page = Math.max(0, page - 1); render(); });
$("next").addEventListener("click", () => { page += 1; render(); });
$("devices").addEventListener("click", (event) => {
  const row = event.target.closest("tr");
  if (!row) return;
  selected = row.dataset.device;
  render();
  loadTimeline();
});
loadDevices().then(listen).catch((e) => { $("error").textContent = String(e); });
loadStats();
setInterval(loadStats, 5000);
setInterval(loadDevices, 60000);
