"use strict";
// The Teach page: every element is built with createElement/textContent (labels and file names are data).
const $ = id => document.getElementById(id);
const params = new URLSearchParams(location.search);
let region = params.get("region") || "";
let overview = null;
let galleryLabel = null, page = 0;
const pickedCand = new Set(), pickedPics = new Set();
let candKey = "";
let training = null;

function q(extra) {
  const p = new URLSearchParams();
  if (region) p.set("region", region);
  for (const [k, v] of extra || []) p.append(k, v);
  const s = p.toString();
  return s ? "?" + s : "";
}
async function getJSON(url) {
  const r = await fetch(url, {cache: "no-store"});
  return [r.status, await r.json()];
}
async function post(path, extra) {
  const r = await fetch(path + q(extra), {method: "POST"});
  let body = {};
  try { body = await r.json(); } catch (e) { body = {error: "HTTP " + r.status}; }
  return [r.status, body];
}
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function say(id, text, ok) {
  const e = $(id);
  e.textContent = text;
  e.className = ok ? "ok" : (ok === false ? "bad" : "");
}
function pct(x) { return (100 * x).toFixed(1) + " %"; }

function options(select, names) {
  const keep = select.value;
  if (JSON.stringify([...select.options].map(o => o.value)) === JSON.stringify(names)) return;
  select.replaceChildren(...names.map(n => { const o = el("option", "", n); o.value = n; return o; }));
  if (names.includes(keep)) select.value = keep;
}

function renderOverview(o) {
  overview = o;
  const nav = $("regions");
  const scopes = o.regions.length ? o.regions : [""];
  if (nav.dataset.built !== JSON.stringify(scopes)) {
    nav.dataset.built = JSON.stringify(scopes);
    nav.replaceChildren(...scopes.map(name => {
      const b = el("button", "", name || "whole frame");
      b.type = "button";
      b.dataset.region = name;
      b.addEventListener("click", () => { region = name; pickedCand.clear(); pickedPics.clear(); galleryLabel = null;
                                          page = 0; candKey = ""; history.replaceState(null, "", "/teach" + q());
                                          refreshAll(); });
      return b;
    }));
  }
  for (const b of nav.children) b.classList.toggle("on", b.dataset.region === (o.region || ""));
  $("scope").textContent = o.region ? "region " + o.region : "the whole frame";
  const t = o.taught;
  $("inuse").textContent = t ? `In use: taught model ${t.file}: ${t.labels.join(", ")}; held-out accuracy ` +
    `${pct(t.accuracy)} on ${t.images} images (${t.method} head, ${t.date}).` : "In use: the config's model.";
  $("rollback").disabled = !o.can_roll_back;
  const ul = $("labels");
  ul.replaceChildren(...o.labels.map(l => {
    const li = el("li");
    li.dataset.label = l.name;
    const c = el("span", "count" + (l.count && l.count < o.recommended ? " few" : ""), String(l.count));
    li.append(c, el("span", "name", l.name));
    if (l.count && l.count < o.minimum) li.append(el("span", "bad", `needs at least ${o.minimum}`));
    else if (l.count && l.count < o.recommended) li.append(el("span", "dim", `${o.recommended}+ recommended`));
    return li;
  }));
  const used = o.labels.filter(l => l.count > 0);
  $("advice").textContent = `Each label needs at least ${o.minimum} pictures, ${o.recommended} or more recommended ` +
    `(at most ${o.bounds.per_label} a label, ${o.bounds.labels} labels). ` +
    (used.length < 2 ? "Label pictures of at least 2 labels to train." :
     `Training uses ${used.map(l => l.name + " (" + l.count + ")").join(", ")}.`);
  const names = o.labels.map(l => l.name);
  options($("assignto"), names);
  options($("moveto"), [...names, "unlabeled"]);
  const tabs = [...names, ...(o.unlabeled ? ["unlabeled"] : [])];
  if (galleryLabel === null || !tabs.includes(galleryLabel)) galleryLabel = tabs[0] || null;
  const nav2 = $("gallerytabs");
  nav2.replaceChildren(...tabs.map(n => {
    const count = n === "unlabeled" ? o.unlabeled : (o.labels.find(l => l.name === n) || {}).count;
    const b = el("button", n === galleryLabel ? "on" : "", `${n} (${count})`);
    b.type = "button";
    b.dataset.label = n;
    b.addEventListener("click", () => { galleryLabel = n; page = 0; pickedPics.clear(); refreshAll(); });
    return b;
  }));
  renderTraining(o.train);
}

function renderTraining(t) {
  training = t;
  const mine = (t.region || "") === region;
  $("progress").value = t.state === "running" || mine ? t.progress || 0 : 0;
  const what = t.region ? "region " + t.region : "the whole frame";
  $("trainstate").textContent = t.state === "idle" ? "idle" : `${t.state} (${what})` +
    (t.state === "running" ? ` ${Math.round(100 * (t.progress || 0))} %` : "");
  $("train").disabled = t.state === "running";
  $("accuracy").textContent = t.state === "done" && t.accuracy !== null ?
    `Held-out accuracy ${pct(t.accuracy)} on ${t.images} images (${t.method} head): ` +
    t.labels.map(l => `${l} ${pct(t.per_class[l])}`).join(", ") : "";
  $("trainerror").textContent = t.state === "failed" ? "Training failed: " + t.error : "";
  const table = $("confusion");
  if (t.state === "done" && t.confusion) {
    const head = el("tr");
    head.append(el("th", "", "true \\ predicted"), ...t.labels.map(l => el("th", "", l)));
    table.replaceChildren(head, ...t.confusion.map((row, i) => {
      const tr = el("tr");
      tr.append(el("th", "", t.labels[i]), ...row.map(n => el("td", "", String(n))));
      return tr;
    }));
  } else table.replaceChildren();
}

function tile(src, caption, picked, key, set) {
  const d = el("div", "tile" + (picked ? " sel" : ""));
  const img = el("img");
  img.loading = "lazy";
  img.src = src;
  img.alt = caption;
  d.append(img, el("span", "", caption));
  d.addEventListener("click", () => {
    if (set.has(key)) set.delete(key); else set.add(key);
    d.classList.toggle("sel", set.has(key));
  });
  return d;
}

async function refreshCandidates() {
  const [status, c] = await getJSON("/teach/api/candidates" + q());
  if (status !== 200) return;
  $("candcount").textContent = `(${c.items.length} of at most ${c.max})`;
  const key = JSON.stringify(c.items.map(i => i.id));
  if (key === candKey) return;
  candKey = key;
  const ids = new Set(c.items.map(i => i.id));
  for (const id of [...pickedCand]) if (!ids.has(id)) pickedCand.delete(id);
  $("candidates").replaceChildren(...c.items.map(i => {
    const d = tile("/teach/candidate" + q([["id", i.id]]), `frame ${i.frame}, ${Math.round(i.age_s)} s ago`,
                   pickedCand.has(i.id), i.id, pickedCand);
    d.classList.add("cand");
    d.dataset.id = i.id;
    return d;
  }));
}

async function refreshGallery() {
  const g = $("gallery");
  if (!galleryLabel) { g.replaceChildren(); $("pageinfo").textContent = ""; return; }
  const [status, p] = await getJSON("/teach/api/pictures" + q([["label", galleryLabel], ["page", page]]));
  if (status !== 200) return;
  page = p.page;
  $("pageinfo").textContent = `page ${p.page + 1} of ${p.pages} (${p.total} pictures)`;
  $("prev").disabled = p.page === 0;
  $("next").disabled = p.page + 1 >= p.pages;
  g.replaceChildren(...p.names.map(n => {
    const d = tile("/teach/thumb" + q([["label", galleryLabel], ["name", n]]), n, pickedPics.has(n), n, pickedPics);
    d.classList.add("pic");
    d.dataset.name = n;
    return d;
  }));
}

async function refreshAll() {
  const [status, o] = await getJSON("/teach/api/overview" + q());
  if (status !== 200) { say("labelstatus", o.error, false); return; }
  renderOverview(o);
  await Promise.all([refreshCandidates(), refreshGallery()]);
}

$("addlabel").addEventListener("click", async () => {
  const name = $("newlabel").value.trim();
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(name) || name === "unlabeled") {
    say("labelstatus", "1 to 64 of A-Z a-z 0-9 _ -", false); return;
  }
  const [status, body] = await post("/teach/api/labels", [["add", name]]);
  say("labelstatus", status === 200 ? "added " + name : body.error, status === 200);
  if (status === 200) { $("newlabel").value = ""; await refreshAll(); $("assignto").value = name; }
});
$("candall").addEventListener("click", () => {
  for (const d of $("candidates").children) { pickedCand.add(Number(d.dataset.id)); d.classList.add("sel"); }
});
$("candnone").addEventListener("click", () => {
  pickedCand.clear(); for (const d of $("candidates").children) d.classList.remove("sel");
});
$("galall").addEventListener("click", () => {
  for (const d of $("gallery").children) { pickedPics.add(d.dataset.name); d.classList.add("sel"); }
});
$("assign").addEventListener("click", async () => {
  const to = $("assignto").value;
  if (!to || !pickedCand.size) { say("candstatus", "select candidates and a label", false); return; }
  const [status, body] = await post("/teach/api/assign", [["to", to], ...[...pickedCand].map(i => ["id", i])]);
  say("candstatus", status === 200 ? `${body.saved.length} labelled ${to} (${body.images} now)` : body.error,
      status === 200);
  pickedCand.clear(); candKey = "";
  await refreshAll();
});
$("discard").addEventListener("click", async () => {
  if (!pickedCand.size) return;
  const [status, body] = await post("/teach/api/discard", [...pickedCand].map(i => ["id", i]));
  say("candstatus", status === 200 ? `${body.discarded} discarded` : body.error, status === 200);
  pickedCand.clear(); candKey = "";
  await refreshAll();
});
$("move").addEventListener("click", async () => {
  const to = $("moveto").value;
  if (!pickedPics.size || !to) { say("galstatus", "select pictures and a label", false); return; }
  const [status, body] = await post("/teach/api/move", [["from", galleryLabel], ["to", to],
                                                        ...[...pickedPics].map(n => ["name", n])]);
  say("galstatus", status === 200 ? `${body.moved} moved to ${to}` : body.error, status === 200);
  pickedPics.clear();
  await refreshAll();
});
$("delete").addEventListener("click", async () => {
  if (!pickedPics.size || !confirm(`Delete ${pickedPics.size} picture(s)?`)) return;
  const [status, body] = await post("/teach/api/delete", [["from", galleryLabel], ...[...pickedPics].map(n => ["name", n])]);
  say("galstatus", status === 200 ? `${body.deleted} deleted` : body.error, status === 200);
  pickedPics.clear();
  await refreshAll();
});
$("prev").addEventListener("click", () => { page = Math.max(0, page - 1); pickedPics.clear(); refreshGallery(); });
$("next").addEventListener("click", () => { page += 1; pickedPics.clear(); refreshGallery(); });
$("train").addEventListener("click", async () => {
  const [status, body] = await post("/train");
  if (status === 202) renderTraining(body); else say("trainstate", body.error, false);
  pollTraining();
});
$("rollback").addEventListener("click", async () => {
  const [status, body] = await post("/train/rollback");
  say("trainstate", status === 200 ? "rolled back to " + (body.now || "the config's model") : body.error, status === 200);
  await refreshAll();
});

let polling = null;
async function pollTraining() {
  clearTimeout(polling);
  try {
    const [, t] = await getJSON("/train");
    const was = training && training.state;
    renderTraining(t);
    if (was === "running" && t.state !== "running") await refreshAll();
  } catch (e) { /* the daemon restarting: try again */ }
  polling = setTimeout(pollTraining, training && training.state === "running" ? 300 : 2000);
}

refreshAll();
pollTraining();
setInterval(() => { refreshAll().catch(() => {}); }, 3000);
