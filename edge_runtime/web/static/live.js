// The live page: polls /latest, /stats.json and /events once a second and builds its DOM with
// textContent only (labels, region names and file names are data, never markup). Served with a strict
// CSP (web/assets.py): no inline script or style, nothing from another origin.
const $ = (id) => document.getElementById(id);
const HISTORY_MS = 5 * 60 * 1000;
const points = [];                   // [time ms, fps, inference ms]
const STREAM = "/stream.mjpg";
const BLANK = "data:image/gif;base64,R0lGODlhAQABAAAAACH5BAEKAAEALAAAAAABAAEAAAICTAEAOw==";
const NAME = /^[a-z0-9_-]{1,32}$/;   // watch/regions.py NAME_PATTERN: a region's name
const img = $("view");
let watching = true;
let regionsNow = [];                 // /stats.json's regions: name, box, state, label, score

function num(v, digits) {
  return (v === null || v === undefined || !isFinite(v)) ? "–" : Number(v).toFixed(digits);
}

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function labelItem(t) {
  const li = el("li", "label");
  const name = el("span", "name", t.label);
  name.title = t.label;
  const score = el("span", "score", (t.score * 100).toFixed(1) + "%");
  const bar = el("div", "bar");
  const fill = el("div", "fill");
  fill.style.width = Math.max(0, Math.min(100, t.score * 100)).toFixed(1) + "%";
  bar.append(fill);
  li.append(name, score, bar);
  return li;
}

function stateText(r) {
  return r.state === null || r.state === undefined ? "unknown" : r.state + " " + num(r.state_score * 100, 0) + "%";
}

// Top labels: the frame's top-k; with regions, one group per region (config order) with its state and
// its own last top-k from /latest's `regions`.
function renderLabels(rec) {
  $("frame").textContent = "· frame " + rec.frame;
  if (!Array.isArray(rec.regions)) {
    $("labels").replaceChildren(...(rec.top || []).map(labelItem));
    return;
  }
  const records = new Map(rec.regions.map((r) => [r.region, r]));
  const names = regionsNow.length ? regionsNow.map((r) => r.name) : rec.regions.map((r) => r.region);
  const groups = names.map((name) => {
    const region = regionsNow.find((r) => r.name === name) || {name: name, state: null};
    const record = records.get(name);
    const li = el("li", "group");
    li.dataset.region = name;
    const head = el("div", "ghead");
    const rname = el("span", "rname", name);
    const state = el("span", "state" + (region.state ? " known" : ""), stateText(region));
    state.title = "state: " + stateText(region);
    head.append(rname, state);
    const list = el("ol", "glabels");
    if (record) list.replaceChildren(...(record.top || []).map(labelItem));
    else list.append(el("li", "none", "no prediction yet"));
    li.append(head, list);
    return li;
  });
  $("labels").replaceChildren(...groups);
}

function renderStats(s) {
  $("host").textContent = s.host || "";
  $("fps").textContent = num(s.fps, 1);
  const lat = s.latency_ms || {};
  $("latency").textContent = num(lat.inference, 1);
  $("total").textContent = num(lat.total, 1);
  $("temp").textContent = (s.cpu_temp_c === null || s.cpu_temp_c === undefined) ? "n/a" : s.cpu_temp_c.toFixed(1) + " °C";
  const h = s.health || {};
  const health = $("health");
  health.textContent = h.healthy ? (h.status === "starting" ? "starting" : "healthy") : (h.reason || h.status || "unhealthy");
  health.className = h.healthy ? "ok" : "bad";
  if (img.naturalWidth > 0) {
    img.dataset.size = img.naturalWidth + "x" + img.naturalHeight;
    $("viewinfo").textContent = img.naturalWidth + "×" + img.naturalHeight + " · MJPEG at up to " + s.mjpeg_fps + " fps";
  }
  const now = Date.now();
  points.push([now, s.fps, lat.inference === undefined ? null : lat.inference]);
  while (points.length && points[0][0] < now - HISTORY_MS) points.shift();
  drawChart(now);
}

// A scale of 4 equal steps (1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 times a power of ten) that holds `max`: both y axes share
// the chart's 4 grid lines.
function niceScale(max) {
  const raw = (max > 0 && isFinite(max) ? max : 1) / 4;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10].map((m) => m * mag).find((v) => v >= raw * (1 - 1e-9));
  const digits = Number.isInteger(step) ? 0 : Math.min(3, (String(+step.toPrecision(3)).split(".")[1] || "").length);
  return {top: step * 4, step: step, digits: digits};
}

function axis(id, scale) {
  const ticks = [0, 1, 2, 3, 4].map((i) => {
    const span = el("span", "", (scale.step * i).toFixed(scale.digits));
    span.style.top = (100 - i * 25) + "%";
    return span;
  });
  $(id).replaceChildren(...ticks);
}

function drawChart(now) {
  const canvas = $("chart");
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 480, h = canvas.clientHeight || 150;
  if (canvas.width !== Math.round(w * ratio)) { canvas.width = Math.round(w * ratio); canvas.height = Math.round(h * ratio); }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, w, h);
  // The time axis grows from 1 minute to 5 as history accumulates.
  const span = points.length ? Math.min(HISTORY_MS, Math.max(60000, now - points[0][0])) : 60000;
  $("charttitle").textContent = "Last " + Math.round(span / 60000) + (span >= 90000 ? " minutes" : " minute");
  const every = span <= 60000 ? 15000 : span <= 120000 ? 30000 : 60000;
  const xticks = [];
  ctx.strokeStyle = "#2a323c";
  ctx.lineWidth = 1;
  for (let i = 1; i < 4; i++) { const y = Math.round(h * i / 4) + 0.5; ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(w, y); ctx.stroke(); }
  for (let ago = 0; ago <= span + 1; ago += every) {
    const f = 1 - ago / span;
    if (f < 0) break;
    const x = Math.round(f * (w - 1)) + 0.5;
    ctx.beginPath(); ctx.moveTo(x, 0); ctx.lineTo(x, h); ctx.stroke();
    const text = ago === 0 ? "now" : span > 120000 ? "−" + Math.round(ago / 60000) + " min" : "−" + Math.round(ago / 1000) + " s";
    const tick = el("span", ago === 0 ? "last" : f < 0.05 ? "first" : "", text);
    tick.style.left = (f * 100) + "%";
    xticks.unshift(tick);
  }
  $("xaxis").replaceChildren(...xticks);
  const css = getComputedStyle(document.documentElement);
  const series = [[1, css.getPropertyValue("--accent").trim(), "fpsmax", "yfps"],
                  [2, css.getPropertyValue("--amber").trim(), "latmax", "yms"]];
  for (const [k, colour, maxId, axisId] of series) {
    const values = points.map((p) => p[k]).filter((v) => v !== null && isFinite(v));
    const scale = niceScale(values.length ? Math.max(...values) * 1.1 : 0);     // headroom: no line on the top edge
    axis(axisId, scale);
    $(maxId).textContent = values.length ? "(max " + num(Math.max(...values), 1) + ")" : "";
    ctx.strokeStyle = colour;
    ctx.lineWidth = 2;
    ctx.beginPath();
    let started = false;
    for (const p of points) {
      if (p[k] === null || !isFinite(p[k])) { started = false; continue; }
      const x = w - (now - p[0]) / span * w;
      const y = h - (p[k] / scale.top) * h;
      if (started) ctx.lineTo(x, y); else { ctx.moveTo(x, y); started = true; }
    }
    ctx.stroke();
  }
}

// A box that starts where an earlier one does (one inside the other) has its tag at its foot.
function tagBelow(list, i) {
  const b = list[i].box;
  return list.slice(0, i).some((o) => Math.abs(o.box[0] - b[0]) < 0.05 && Math.abs(o.box[1] - b[1]) < 0.05);
}

function place(div, box) {
  div.style.left = (box[0] * 100) + "%";
  div.style.top = (box[1] * 100) + "%";
  div.style.width = (box[2] * 100) + "%";
  div.style.height = (box[3] * 100) + "%";
}

// Each watched region's box over the picture (fractions of the frame), with its state and last top-1.
function renderRegions(regions) {
  regionsNow = regions || [];
  const boxes = regionsNow.map((r, i) => {
    const div = el("div", "region" + (r.state ? " known" : "") + (tagBelow(regionsNow, i) ? " below" : ""));
    div.dataset.region = r.name;
    place(div, r.box);
    const now = r.label === null ? "" : " · now " + r.label + " " + num(r.score * 100, 0) + "%";
    const tag = el("span", "", r.name + ": " + stateText(r) + now);
    tag.title = tag.textContent;
    div.append(tag);
    return div;
  });
  $("boxes").replaceChildren(...boxes);
}

// Rebuilt only when the events change: a link under the pointer stays the same element.
let eventsKey = "";
function renderEvents(events) {
  if (!events.length) return;
  const shown = events.slice(0, 20);
  const key = JSON.stringify(shown);
  if (key === eventsKey) return;
  eventsKey = key;
  const items = shown.map((e) => {
    const li = el("li", "event");
    const thumb = el("img");
    thumb.alt = e.snapshot ? "snapshot " + e.snapshot : "no snapshot";
    let holder = el("span", "thumb");
    if (e.snapshot) {
      const href = "/snapshots/" + encodeURIComponent(e.snapshot);
      thumb.src = href;
      holder = el("a", "thumb");
      holder.href = href;              // the full JPEG, in a tab of its own
      holder.target = "_blank";
      holder.rel = "noopener";
      holder.title = "open the snapshot " + e.snapshot;
    }
    holder.append(thumb);
    const text = el("div");
    const what = el("div", "what", e.region + ": " + (e.from === null ? "–" : e.from) + " → " + e.to);
    const when = el("div", "when", new Date(e.ts * 1000).toLocaleTimeString() + " · frame " + e.frame + " · " + num(e.score * 100, 0) + "%");
    text.append(what, when);
    li.append(holder, text);
    return li;
  });
  $("events").replaceChildren(...items);
}

// An untrained model (fetch-model --untrained) classifies, but its labels mean nothing: say so. The records
// say it from the first frame (and stop saying it after a reload to a trained model); the stats line before.
function renderUntrained(rec, s) {
  const model = s && s.stats && s.stats.model;
  const untrained = rec ? rec.untrained === true : !!(model && model.untrained);
  $("untrained").hidden = !untrained;
}

// With http.collect_dir set: a label field and a save button per region (or for the whole frame), which
// POST /collect: the latest frame (the region's crop) goes into collect_dir/LABEL/ for models/distill.py.
let collectFor = null;               // the regions the controls were built for: rebuilt only when they change
function renderCollect(s) {
  const card = $("collect");
  card.hidden = !s.collect;
  if (!s.collect) { collectFor = null; return; }
  const names = (s.regions || []).map((r) => r.name);
  if (JSON.stringify(names) === collectFor) return;     // keep what the user is typing
  collectFor = JSON.stringify(names);
  const rows = (names.length ? names : [null]).map((name) => {
    const row = el("form", "collect-row");
    if (name !== null) row.dataset.region = name;
    const what = el("span", "what", name === null ? "whole frame" : name);
    const input = el("input");
    Object.assign(input, {type: "text", name: "label", required: true, maxLength: 64, autocomplete: "off",
                          pattern: "[A-Za-z0-9_\\-]{1,64}", placeholder: "label, e.g. open",
                          title: "1 to 64 of A-Z a-z 0-9 _ - (the folder the picture goes into)"});
    input.setAttribute("aria-label", "label for " + what.textContent);
    const button = el("button", "", "save");
    button.type = "submit";
    const status = el("span", "status");
    row.append(what, input, button, status);
    row.addEventListener("submit", (ev) => { ev.preventDefault(); saveFrame(name, input.value.trim(), status); });
    return row;
  });
  $("collectrows").replaceChildren(...rows);
}

async function saveFrame(region, label, status) {
  const query = new URLSearchParams({label: label});
  if (region !== null) query.set("region", region);
  status.textContent = "saving…";
  status.className = "status";
  try {
    const r = await fetch("/collect?" + query.toString(), {method: "POST", cache: "no-store"});
    const body = await r.json();
    status.textContent = r.ok ? "saved " + body.saved + " (" + body.images + " in " + body.label + "/)"
                              : (body.error || "error " + r.status);
    status.className = "status " + (r.ok ? "ok" : "bad");
  } catch (err) {
    status.textContent = "daemon unreachable";
    status.className = "status bad";
  }
}

// --- The region editor: drag boxes on the picture, get the config's `regions:` and the --region flags.
// It starts from the configured regions (names and boxes; /stats.json does not say their other keys) and
// never sends anything: the config is the user's to edit.
let drafts = [];                     // [{name, box: [x, y, w, h]}], fractions of the frame, 3 decimals
let drag = null;                     // {id, at, box, name} while a pointer is down
let redrawing = null;                // the index of the draft whose box the next drag replaces, or null

const round3 = (v) => Math.round(v * 1000) / 1000;
const fmt = (v) => String(round3(v));

function fraction(ev) {
  const rect = img.getBoundingClientRect();
  const clamp = (v) => Math.max(0, Math.min(1, v));
  return [clamp((ev.clientX - rect.left) / rect.width), clamp((ev.clientY - rect.top) / rect.height)];
}

function boxFrom(a, b) {
  const x0 = round3(Math.min(a[0], b[0])), x1 = round3(Math.max(a[0], b[0]));
  const y0 = round3(Math.min(a[1], b[1])), y1 = round3(Math.max(a[1], b[1]));
  return [x0, y0, round3(x1 - x0), round3(y1 - y0)];
}

function nextName() {
  for (let i = drafts.length + 1; ; i++) {
    const name = "region" + i;
    if (!drafts.some((d) => d.name === name)) return name;
  }
}

function draftProblem() {
  if (!drafts.length) return "drag on the picture to draw a region";
  const seen = new Set();
  for (const [i, d] of drafts.entries()) {
    if (!NAME.test(d.name)) return "region " + (i + 1) + ": a name is 1 to 32 of a-z 0-9 _ - (used in topics and file names)";
    if (seen.has(d.name)) return "region " + (i + 1) + ": the name " + d.name + " is used twice";
    seen.add(d.name);
  }
  return "";
}

function renderOutput() {
  const problem = draftProblem();
  $("editorerror").textContent = problem;
  // Names are quoted: a name such as `no`, `null` or `123` would otherwise be read as something else.
  $("yaml").value = problem ? "" : "regions:\n" + drafts.map((d) =>
    "  - name: " + JSON.stringify(d.name) + "\n    box: [" + d.box.map(fmt).join(", ") + "]").join("\n") + "\n";
  $("yaml").rows = Math.max(3, $("yaml").value.split("\n").length);
  $("flags").value = problem ? "" : drafts.map((d) =>
    "--region" + (d.name.startsWith("-") ? "=" : " ") + d.name + "=" + d.box.map(fmt).join(",")).join(" ");
  const all = drafts.filter((_, i) => !(drag && i === redrawing)).concat(drag ? [{name: drag.name, box: drag.box}] : []);
  const boxes = all.map((d, i) => {
    const div = el("div", "draftbox" + (tagBelow(all, i) ? " below" : ""));
    place(div, d.box);
    div.append(el("span", "", d.name));
    return div;
  });
  $("drafts").replaceChildren(...boxes);
}

function renderDrafts() {
  const rows = drafts.map((d, i) => {
    const li = el("li", "draft");
    li.dataset.index = String(i);
    const input = el("input");
    Object.assign(input, {type: "text", value: d.name, maxLength: 32, autocomplete: "off", spellcheck: false,
                          pattern: "[a-z0-9_\\-]{1,32}", title: "1 to 32 of a-z 0-9 _ -"});
    input.setAttribute("aria-label", "name of region " + (i + 1));
    input.addEventListener("input", () => { d.name = input.value.trim(); renderOutput(); });
    const box = el("span", "dbox", "x " + fmt(d.box[0]) + ", y " + fmt(d.box[1]) + ", " + fmt(d.box[2]) + " × " + fmt(d.box[3]));
    const redraw = el("button", "quiet", "redraw");
    redraw.type = "button";
    redraw.title = "the next box you drag replaces this one";
    redraw.setAttribute("aria-pressed", String(redrawing === i));
    redraw.addEventListener("click", () => { redrawing = redrawing === i ? null : i; renderDrafts(); });
    const remove = el("button", "quiet", "remove");
    remove.type = "button";
    remove.addEventListener("click", () => { drafts.splice(i, 1); redrawing = null; renderDrafts(); });
    li.append(input, box, redraw, remove);
    return li;
  });
  $("draftlist").replaceChildren(...rows);
  renderOutput();
}

function setEditing(on) {
  $("edit").setAttribute("aria-pressed", String(on));
  $("editor").hidden = !on;
  $("draw").hidden = !on;
  $("drafts").hidden = !on;
  $("boxes").hidden = on;            // the drafts stand for the configured boxes while editing
  redrawing = null;
  if (on) { drafts = regionsNow.map((r) => ({name: r.name, box: r.box.map(round3)})); renderDrafts(); }
}

$("edit").addEventListener("click", () => setEditing($("editor").hidden));
const draw = $("draw");
draw.addEventListener("pointerdown", (ev) => {
  ev.preventDefault();
  draw.setPointerCapture(ev.pointerId);
  const at = fraction(ev);
  drag = {id: ev.pointerId, at: at, box: [at[0], at[1], 0, 0], name: redrawing === null ? nextName() : drafts[redrawing].name};
});
draw.addEventListener("pointermove", (ev) => {
  if (!drag || ev.pointerId !== drag.id) return;
  drag.box = boxFrom(drag.at, fraction(ev));
  renderOutput();
});
const finish = (ev) => {
  if (!drag || ev.pointerId !== drag.id) return;
  const box = boxFrom(drag.at, fraction(ev));
  const name = drag.name;
  drag = null;
  if (box[2] >= 0.01 && box[3] >= 0.01) {           // a click is not a region
    if (redrawing === null) drafts.push({name: name, box: box});
    else { drafts[redrawing].box = box; redrawing = null; }
  }
  renderDrafts();
};
draw.addEventListener("pointerup", finish);
draw.addEventListener("pointercancel", (ev) => { if (drag && ev.pointerId === drag.id) { drag = null; renderOutput(); } });
for (const id of ["yaml", "flags"]) $(id).addEventListener("focus", (ev) => ev.target.select());

async function poll() {
  try {
    const [latest, stats, events] = await Promise.all([fetch("/latest", {cache: "no-store"}),
      fetch("/stats.json", {cache: "no-store"}), fetch("/events", {cache: "no-store"})]);
    let rec = null, s = null;
    if (stats.ok) { s = await stats.json(); renderStats(s); renderRegions(s.regions); renderCollect(s); }
    if (latest.ok) { rec = await latest.json(); renderLabels(rec); }
    renderUntrained(rec, s);
    if (events.ok) renderEvents(await events.json());
  } catch (err) {
    const health = $("health");
    health.textContent = "daemon unreachable";
    health.className = "bad";
  }
  setTimeout(poll, 1000);
}

// The stream is encoded only while someone watches: close it while the tab is hidden, retry when it ends.
img.addEventListener("error", () => { if (watching) setTimeout(() => { if (watching) img.src = STREAM + "?t=" + Date.now(); }, 2000); });
document.addEventListener("visibilitychange", () => {
  watching = document.visibilityState === "visible";
  img.src = watching ? STREAM + "?t=" + Date.now() : BLANK;
});
poll();
