// The wired buses tab of meterbridge's page: scans with live progress and cancel, read now,
// set a primary address (only offered when the configuration allows writes), add what a scan
// found. Like app.js: text goes in with textContent only, URLs are relative (ingress).
"use strict";
(() => {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  let wired = null;
  let adding = null;
  let addressing = null;

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function button(text, cls, onClick) {
    const b = el("button", text, cls);
    b.type = "button";
    b.addEventListener("click", onClick);
    return b;
  }

  function duration(s) {
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  function ago(now, t) {
    if (t === null || t === undefined) return "never";
    return duration(Math.max(0, now - t)) + " ago";
  }

  async function post(url, body) {
    const r = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
    });
    try { return await r.json(); } catch (e) { return { ok: false, error: "HTTP " + r.status }; }
  }

  function say(id, answer) {
    const p = document.getElementById(id);
    p.className = "result " + (answer.ok ? "ok" : "bad");
    p.textContent = answer.ok ? answer.message : answer.error;
  }

  function progressText(scan) {
    if (!scan.kind) return "No scan yet.";
    const parts = [scan.kind + " scan", scan.probes + (scan.total ? " of " + scan.total : "") + " probes",
      scan.found.length + " found"];
    if (scan.running) {
      parts.push(scan.left_s === null ? "time left not known yet" : "about " + duration(scan.left_s) + " left");
    } else if (scan.elapsed_s !== null) {
      parts.push("took " + duration(scan.elapsed_s));
    }
    return parts.join(" · ");
  }

  function table(cls, heads, rows) {
    const wrap = el("div", null, "scroll");
    const t = el("table", null, cls);
    const head = el("tr");
    for (const h of heads) head.append(el("th", h));
    const thead = el("thead");
    thead.append(head);
    const body = el("tbody");
    for (const r of rows) body.append(r);
    t.append(thead, body);
    wrap.append(t);
    return wrap;
  }

  // One card per bus, built once: the buttons stay the same elements while a scan updates
  // the card four times a second, so a click is never lost to a redraw.
  const cards = new Map();

  function card(bus) {
    let c = cards.get(bus.name);
    if (c) return c;
    const root = el("div", null, "bus");
    root.dataset.bus = bus.name;
    const title = el("h2", "Bus " + bus.name);
    const state = el("span");
    title.append(state);
    const buttons = el("div", null, "buttons");
    const primary = button("Primary scan", "scan-primary", () => startScan(bus.name, "primary"));
    const secondary = button("Secondary scan", "scan-secondary", () => startScan(bus.name, "secondary"));
    const cancel = button("Cancel", "scan-cancel", () => cancelScan(bus.name));
    buttons.append(primary, secondary, cancel);
    const bar = el("progress");
    bar.max = 1;
    const progress = el("p", null, "scan-progress");
    const outcome = el("p", null, "scan-outcome");
    const found = el("div");
    const meters = el("div");
    root.append(title, buttons, bar, progress, outcome, found, meters);
    c = { root, state, primary, secondary, cancel, bar, progress, outcome, found, meters, foundKey: null, metersKey: null };
    cards.set(bus.name, c);
    return c;
  }

  function update(bus) {
    const c = card(bus);
    const scan = bus.scan;
    c.state.textContent = bus.connected === null ? "not used yet" : (bus.connected ? "connected" : "not connected");
    c.state.className = bus.connected === false ? "bad" : (bus.connected ? "ok" : "");
    c.primary.disabled = c.secondary.disabled = scan.running;
    c.cancel.hidden = !scan.running;
    c.bar.hidden = !scan.kind;
    if (scan.share === null && scan.running) c.bar.removeAttribute("value");
    // A scan that ended early shows how far it got; one that ran to its end, full.
    else c.bar.value = scan.running || /cancelled|failed/.test(scan.outcome || "") ? (scan.share || 0) : 1;
    c.progress.textContent = progressText(scan);
    c.outcome.hidden = !scan.outcome || scan.running;
    c.outcome.textContent = scan.outcome || "";
    c.outcome.className = "scan-outcome " + (scan.failed ? "bad" : "ok");
    const foundKey = JSON.stringify([scan.kind, scan.found]);
    if (foundKey !== c.foundKey) {
      c.foundKey = foundKey;
      c.found.replaceChildren();
      if (scan.found.length) {
        c.found.append(table("found", ["Primary", "Secondary", "Manufacturer", "Medium", "Version", ""],
          scan.found.map(f => {
            const tr = el("tr");
            const cell = el("td");
            if (f.configured) cell.textContent = "configured: " + f.configured;
            else cell.append(button("Add", "add", () => openAdd(bus.name, scan.kind, f)));
            tr.append(el("td", f.primary === null ? "" : f.primary), el("td", f.secondary),
              el("td", f.manufacturer), el("td", f.medium), el("td", f.version), cell);
            return tr;
          })));
      }
    }
    const metersKey = JSON.stringify([wired.allow_bus_writes, bus.meters, Math.floor(wired.now / 10)]);
    if (metersKey !== c.metersKey) {
      c.metersKey = metersKey;
      c.meters.replaceChildren();
      if (bus.meters.length) {
        c.meters.append(table("bus-meters", ["Meter", "Address", "Driver", "Last read", ""],
          bus.meters.map(m => {
            const tr = el("tr");
            const cell = el("td");
            cell.append(button("Read now", "read-now", () => readNow(m.name)));
            // Absent, not just disabled, when the configuration does not allow writes.
            if (wired.allow_bus_writes) {
              cell.append(button("Set address", "set-address", () => openAddress(bus.name, m)));
            }
            tr.append(el("td", m.name, "name"), el("td", m.address), el("td", m.driver),
              el("td", ago(wired.now, m.last_seen)), cell);
            return tr;
          })));
      }
    }
    return c.root;
  }

  function render() {
    if (!wired) return;
    const root = document.getElementById("wired-buses");
    if (!wired.buses.length) {
      root.replaceChildren(el("p", "No wired bus is configured.", "hint"));
      return;
    }
    const roots = wired.buses.map(update);
    // Re-attached only when the set of buses changed (it does not while the gateway runs).
    if (root.children.length !== roots.length || roots.some((r, i) => root.children[i] !== r)) {
      root.replaceChildren(...roots);
    }
  }

  async function startScan(bus, type) {
    const answer = await post("api/wired/scan", { bus, type });
    if (!answer.ok) alertIn(bus, answer.error);
  }

  async function cancelScan(bus) {
    const answer = await post("api/wired/cancel", { bus });
    if (!answer.ok) alertIn(bus, answer.error);
  }

  function alertIn(bus, text) {
    const card = document.querySelector('.bus[data-bus="' + CSS.escape(bus) + '"]');
    if (card) card.append(el("p", text, "result bad"));
  }

  function openAdd(bus, kind, found) {
    // A secondary scan's primary address is whatever the meter holds (often 0 for all):
    // the secondary address is what names it there.
    const address = kind === "primary" && found.primary !== null ? found.primary : found.secondary;
    adding = { bus, address };
    const f = document.getElementById("wired-add-form");
    f.hidden = false;
    document.getElementById("wired-add-what").textContent = found.manufacturer + " " + found.secondary + " on " + bus;
    f.elements.name.value = "";
    f.elements.driver.value = "auto";
    document.getElementById("wired-add-result").textContent = "";
    f.elements.name.focus();
  }

  async function add(ev) {
    ev.preventDefault();
    if (!adding) return;
    const f = document.getElementById("wired-add-form");
    const answer = await post("api/wired/meters", {
      bus: adding.bus, address: adding.address, name: f.elements.name.value, driver: f.elements.driver.value,
    });
    say("wired-add-result", answer);
    if (answer.ok) adding = null;
  }

  function openAddress(bus, meter) {
    addressing = { bus, address: meter.address };
    const f = document.getElementById("wired-address-form");
    f.hidden = false;
    document.getElementById("wired-address-what").textContent = meter.name + " (now " + meter.address + ")";
    f.elements.new_address.value = "";
    document.getElementById("wired-address-result").textContent = "";
  }

  async function setAddress(ev) {
    ev.preventDefault();
    if (!addressing) return;
    const f = document.getElementById("wired-address-form");
    say("wired-address-result", await post("api/wired/address", {
      bus: addressing.bus, address: addressing.address, new_address: Number(f.elements.new_address.value),
    }));
  }

  async function readNow(meter) {
    const panel = document.getElementById("wired-read");
    panel.hidden = false;
    document.getElementById("wired-read-meter").textContent = meter;
    const result = document.getElementById("wired-read-result");
    result.className = "result";
    result.textContent = "reading…";
    const answer = await post("api/wired/read", { meter });
    const fields = [];
    const records = [];
    if (answer.ok) {
      result.className = "result ok";
      result.textContent = answer.telegrams.length + " telegram(s) read";
      for (const [k, v] of answer.fields) {
        const tr = el("tr");
        tr.append(el("td", k), el("td", v));
        fields.push(tr);
      }
      answer.telegrams.forEach((t, i) => {
        for (const r of t.records || []) {
          const tr = el("tr");
          const value = r.value === undefined ? r.data : r.value;
          tr.append(el("td", i + 1), el("td", r.index), el("td", r.quantity || r.type || ""),
            el("td", value === null || value === undefined ? "" : value), el("td", r.unit || ""),
            el("td", r.storage === undefined ? "" : r.storage), el("td", r.tariff === undefined ? "" : r.tariff),
            el("td", r.function || ""));
          records.push(tr);
        }
        if (t.error) {
          const tr = el("tr");
          tr.append(el("td", i + 1), el("td", ""), el("td", t.error, "bad"));
          records.push(tr);
        }
      });
    } else {
      result.className = "result bad";
      result.textContent = answer.error;
    }
    document.querySelector("#wired-read-fields tbody").replaceChildren(...fields);
    document.querySelector("#wired-read-records tbody").replaceChildren(...records);
  }

  // Runs after app.js's own hashchange handler, so this tab wins when it is the one asked for.
  function showTab() {
    const mine = location.hash === "#wired";
    document.getElementById("wired").hidden = !mine;
    document.getElementById("tab-wired").classList.toggle("active", mine);
    if (mine) {
      for (const t of ["overview", "heard"]) {
        document.getElementById(t).hidden = true;
        document.getElementById("tab-" + t).classList.remove("active");
      }
    }
  }

  function connect() {
    const events = new EventSource("wired-events");
    events.addEventListener("wired", e => {
      wired = JSON.parse(e.data);
      render();
    });
  }

  window.addEventListener("hashchange", showTab);
  document.getElementById("wired-add-form").addEventListener("submit", add);
  document.getElementById("wired-add-cancel").addEventListener("click", () => {
    document.getElementById("wired-add-form").hidden = true;
    adding = null;
  });
  document.getElementById("wired-address-form").addEventListener("submit", setAddress);
  document.getElementById("wired-address-cancel").addEventListener("click", () => {
    document.getElementById("wired-address-form").hidden = true;
    addressing = null;
  });
  showTab();
  connect();
})();
