// meterbridge's page. Every text from a meter, a radio or the configuration is put in with
// textContent, never as markup, and all URLs are relative (Home Assistant ingress).
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
let view = null;
let adding = null;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function ago(now, t) {
  if (t === null || t === undefined) return "never";
  const s = Math.max(0, now - t);
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.floor(s / 60) + " min ago";
  if (s < 86400) return Math.floor(s / 3600) + " h ago";
  return Math.floor(s / 86400) + " d ago";
}

function readings(list) {
  const td = el("td", null, "readings");
  for (const [k, v] of list || []) {
    const r = el("span", null, "reading");
    r.append(el("span", k + " "), document.createTextNode(v));
    td.append(r);
  }
  return td;
}

function fillBody(table, rows) {
  const body = document.querySelector(table + " tbody");
  const frag = document.createDocumentFragment();
  for (const r of rows) frag.append(r);
  body.replaceChildren(frag);
}

function renderOverview() {
  const v = view;
  const g = v.gateway;
  const summary = document.getElementById("summary");
  summary.replaceChildren();
  for (const [label, value] of [["meters", v.meters.length], ["telegrams", g.telegrams],
      ["per minute", g.per_minute], ["decode errors", g.decode_errors],
      ["key errors", g.key_errors], ["bus errors", g.bus_errors], ["heard nearby", v.heard.length]]) {
    const d = el("div", label);
    d.prepend(el("b", value));
    summary.append(d);
  }
  fillBody("#links", v.links.map(l => {
    const tr = el("tr");
    const state = l.connected === null ? "–" : (l.connected ? "connected" : "not connected");
    tr.append(el("td", l.name), el("td", l.kind),
      el("td", state, l.connected === false ? "bad" : (l.connected ? "ok" : "")),
      el("td", l.telegrams), el("td", l.per_minute), el("td", l.errors, l.errors ? "bad" : ""));
    return tr;
  }));
  const filter = document.getElementById("filter").value.trim().toLowerCase();
  fillBody("#meters", v.meters.filter(m => !filter || (m.name + " " + m.driver + " " + m.id).toLowerCase().includes(filter)).map(m => {
    const tr = el("tr");
    tr.className = "meter";
    const seen = el("td", ago(v.now, m.last_seen), m.late ? "late" : "");
    if (m.late) seen.textContent += " (late)";
    const errors = el("td", m.errors ? m.errors + (m.last_error ? ": " + m.last_error : "") : "", m.errors ? "bad" : "");
    if (m.key_wrong) errors.prepend(el("b", "key wrong "));
    const name = el("td", null, "name");
    const link = el("a", m.name);
    link.href = "#meter/" + encodeURIComponent(m.slug);
    name.append(link);
    tr.append(name, el("td", m.driver), readings(m.readings), seen,
      el("td", m.rssi === null ? "" : m.rssi + " dBm"), el("td", m.via), errors);
    return tr;
  }));
}

function renderHeard() {
  const v = view;
  fillBody("#heard-list", v.heard.map(h => {
    const tr = el("tr");
    const add = el("button", "Add");
    add.type = "button";
    add.addEventListener("click", () => openAdd(h));
    const cell = el("td");
    cell.append(add);
    const id = el("td");
    const link = el("a", h.id);
    link.href = "#nearby/" + encodeURIComponent(h.id);
    id.append(link);
    tr.append(id, el("td", h.manufacturer), el("td", h.medium),
      el("td", h.rssi === null ? "" : h.rssi + " dBm"), el("td", h.times + "×, " + ago(v.now, h.last_seen)),
      el("td", h.encryption, h.encryption === "none" ? "" : "late"), el("td", h.driver || "unknown"),
      readings(h.readings), cell);
    return tr;
  }));
}

let painted = false;

function render() {
  if (!view) return;
  renderOverview();
  if (!painted && view.meters.length) {
    painted = true;
    // For the benchmark: once the frame with the first rows has been laid out and painted.
    requestAnimationFrame(() => setTimeout(() => performance.mark("meters-painted"), 0));
  }
  renderHeard();
  meterPage.viewChanged(view);
}

function showTab() {
  const onMeter = meterPage.open(location.hash);
  const tab = onMeter ? "meter" : (location.hash === "#heard" ? "heard" : "overview");
  for (const t of ["overview", "heard", "meter"]) {
    document.getElementById(t).hidden = t !== tab;
    const nav = document.getElementById("tab-" + t);
    if (nav) nav.classList.toggle("active", t === tab);
  }
}

function openAdd(h) {
  adding = h;
  const f = document.getElementById("add-form");
  f.hidden = false;
  document.getElementById("add-id").textContent = h.id;
  f.elements.name.value = "";
  f.elements.driver.value = h.driver || "auto";
  f.elements.key.value = "";
  document.getElementById("add-result").textContent = "";
  f.elements.name.focus();
}

async function post(url, body) {
  const r = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify(body),
  });
  let answer;
  try { answer = await r.json(); } catch (e) { answer = { ok: false, error: "HTTP " + r.status }; }
  return answer;
}

function result(answer) {
  const p = document.getElementById("add-result");
  p.className = "result " + (answer.ok ? "ok" : "bad");
  p.textContent = answer.ok ? answer.message : answer.error;
}

async function checkKey() {
  const f = document.getElementById("add-form");
  if (!adding) return;
  result(await post("api/check-key", { id: adding.id, key: f.elements.key.value }));
}

async function addMeter(ev) {
  ev.preventDefault();
  const f = document.getElementById("add-form");
  if (!adding) return;
  const answer = await post("api/meters", {
    id: adding.id, name: f.elements.name.value, driver: f.elements.driver.value, key: f.elements.key.value,
  });
  result(answer);
  if (answer.ok) { adding = null; setTimeout(() => { f.hidden = true; location.hash = "#overview"; }, 1200); }
}

function connect() {
  const status = document.getElementById("status");
  const events = new EventSource("events");
  events.addEventListener("view", e => {
    view = JSON.parse(e.data);
    status.textContent = "live";
    status.className = "status ok";
    render();
  });
  events.onerror = () => { status.textContent = "reconnecting…"; status.className = "status bad"; };
}

window.addEventListener("hashchange", showTab);
document.getElementById("filter").addEventListener("input", render);
document.getElementById("add-check").addEventListener("click", checkKey);
document.getElementById("add-cancel").addEventListener("click", () => { document.getElementById("add-form").hidden = true; adding = null; });
document.getElementById("add-form").addEventListener("submit", addMeter);
showTab();
connect();
