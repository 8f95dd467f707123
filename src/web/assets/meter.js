// A meter's page (#meter/<slug> for a configured meter, #nearby/<id> for one heard nearby):
// its fields, kept live by the page's event stream, and its last telegrams explained layer by
// layer and record by record as `meterbridge decode --format json` does. Everything from a
// meter, a radio or the configuration goes in with textContent (el() in app.js), never as
// markup. Loaded before app.js, which calls meterPage.open() and meterPage.viewChanged().
"use strict";

window.meterPage = (function () {
  let current = null;
  let lastSeen = null;
  let detail = null;
  let version = "";
  // The edit form of a meter added on the page: built once per meter and put back on each
  // live refresh, so what the user is typing survives new telegrams.
  let editForm = null;
  const layers = [["link", "Data link layer"], ["ell", "Extended link layer"],
    ["afl", "Authentication and fragmentation layer"], ["tpl", "Transport layer"],
    ["header", "Application header"]];

  function parse(hash) {
    const m = /^#(meter|nearby)\/(.+)$/.exec(hash);
    return m ? { kind: m[1] === "meter" ? "slug" : "heard", key: decodeURIComponent(m[2]) } : null;
  }

  function text(v) {
    if (v === null || v === undefined) return "";
    return typeof v === "object" ? JSON.stringify(v) : String(v);
  }

  function kvTable(obj) {
    const t = el("table", null, "kv");
    const body = el("tbody");
    for (const [k, v] of Array.isArray(obj) ? obj : Object.entries(obj)) {
      const tr = el("tr");
      tr.append(el("th", k), el("td", text(v)));
      body.append(tr);
    }
    t.append(body);
    return t;
  }

  function recordsTable(records) {
    const cols = [];
    for (const r of records) for (const k of Object.keys(r)) if (!cols.includes(k)) cols.push(k);
    const t = el("table", null, "records");
    const head = el("tr");
    for (const c of cols) head.append(el("th", c));
    const thead = el("thead");
    thead.append(head);
    const body = el("tbody");
    for (const r of records) {
      const tr = el("tr");
      for (const c of cols) tr.append(el("td", text(r[c])));
      body.append(tr);
    }
    t.append(thead, body);
    return t;
  }

  function part(title, content) {
    const d = el("div", null, "part");
    d.append(el("h4", title), content);
    return d;
  }

  // One telegram's explanation: every layer, every record, then what the driver made of it.
  function explain(x) {
    const box = el("div", null, "explain");
    if (x.error) box.append(el("p", "Not decoded: " + x.error, "bad"));
    const done = new Set(["kind", "error", "records", "driver", "fields", "hint"]);
    for (const [key, title] of layers) {
      if (x[key]) { box.append(part(title, kvTable(x[key]))); done.add(key); }
    }
    for (const [k, v] of Object.entries(x)) {
      if (done.has(k)) continue;
      box.append(part(k, v !== null && typeof v === "object" && !Array.isArray(v) ? kvTable(v) : el("p", text(v))));
    }
    if (Array.isArray(x.records)) {
      const wrap = el("div", null, "scroll");
      wrap.append(recordsTable(x.records));
      box.append(part("Records (" + x.records.length + ")", wrap));
    }
    if (x.fields) box.append(part("Driver " + (x.driver || "") + ": fields", kvTable(x.fields)));
    if (x.hint) box.append(el("p", x.hint, "hint"));
    return box;
  }

  // What a bug report needs: the telegram and the driver, never the key.
  function report(d, t) {
    return "meterbridge " + version + "\ndriver: " + (d.driver || "auto") +
      "\nreceived: " + new Date(t.at * 1000).toISOString() + (t.via ? " via " + t.via : "") +
      "\ntelegram: " + t.hex + "\n";
  }

  async function copy(area, button) {
    area.select();
    let ok = false;
    try { await navigator.clipboard.writeText(area.value); ok = true; } catch (e) {
      // Without a secure context (http to another host) there is no clipboard API.
      try { ok = document.execCommand("copy"); } catch (e2) { ok = false; }
    }
    button.textContent = ok ? "Copied" : "Selected: copy it with Ctrl+C";
  }

  function telegramEl(d, t, i) {
    const det = el("details", null, "telegram");
    if (i === 0) det.open = true;
    const bytes = t.hex.length / 2;
    det.append(el("summary", ago(d.now, t.at) + " · " + bytes + " bytes" +
      (t.rssi === null ? "" : " · " + t.rssi + " dBm") + (t.via ? " · via " + t.via : "")));
    const area = el("textarea", report(d, t), "report");
    area.readOnly = true;
    area.rows = 4;
    const button = el("button", "Copy for a bug report");
    button.type = "button";
    button.addEventListener("click", () => copy(area, button));
    const bar = el("div", null, "buttons");
    bar.append(button);
    det.append(bar, area, explain(t.explained || {}));
    return det;
  }

  function label(text, input) {
    const l = el("label", text + " ");
    l.append(input);
    return l;
  }

  function input(name, value, placeholder) {
    const i = el("input");
    i.name = name;
    i.value = value || "";
    if (placeholder) i.placeholder = placeholder;
    i.autocomplete = "off";
    return i;
  }

  // Name, driver and key of a meter added on the page; Save checks a new key on its last
  // telegram first. Remove takes it out (after a confirmation).
  function buildEditForm(d) {
    const f = el("form");
    f.id = "edit-form";
    const name = input("name", d.name);
    name.required = true;
    name.maxLength = 100;
    const driver = input("driver", d.configured_driver);
    driver.maxLength = 60;
    const key = input("key", "", d.key === "set" ? "set: leave empty to keep it" : "32 hex digits, if encrypted");
    key.maxLength = 64;
    const save = el("button", "Save");
    save.type = "submit";
    const remove = el("button", "Remove");
    remove.type = "button";
    remove.id = "edit-remove";
    const bar = el("div", null, "buttons");
    bar.append(save, remove);
    const result = el("p", null, "result");
    result.id = "edit-result";
    f.append(el("h3", "Change"), label("Name", name), label("Driver", driver), label("Key", key), bar, result);
    const show = a => { result.className = "result " + (a.ok ? "ok" : "bad"); result.textContent = a.ok ? a.message : a.error; };
    f.addEventListener("submit", async ev => {
      ev.preventDefault();
      const a = await post("api/meter/edit", { slug: current.key, name: name.value, driver: driver.value, key: key.value });
      show(a);
      if (a.ok) {
        key.value = "";
        if (a.slug !== current.key) { editForm = null; location.hash = "#meter/" + encodeURIComponent(a.slug); } else load();
      }
    });
    remove.addEventListener("click", async () => {
      if (!window.confirm("Remove " + name.value + "? Its readings stop being published.")) return;
      const a = await post("api/meter/remove", { slug: current.key });
      show(a);
      if (a.ok) setTimeout(() => { location.hash = "#overview"; }, 800);
    });
    return f;
  }

  function render() {
    const page = document.getElementById("meter-page");
    const d = detail;
    if (!d) return;
    const nodes = [];
    const title = el("h2", d.kind === "heard" ? "Meter " + d.id + " (heard nearby)" : d.name);
    const back = el("a", "← back");
    back.href = d.kind === "heard" ? "#heard" : "#overview";
    title.append(back);
    nodes.push(title);
    if (d.kind === "configured") {
      nodes.push(el("p", d.source === "page"
        ? "Added on this page; saved in the state directory. Change or remove it below."
        : "From the configuration file: read-only here (change it in the file).", "hint"));
    }
    const info = d.kind === "heard"
      ? [["id", d.id], ["manufacturer", d.manufacturer], ["medium", d.medium], ["encryption", d.encryption],
         ["driver detection suggests", d.driver || "unknown"], ["heard", d.times + "×, " + ago(d.now, d.last_seen)],
         ["RSSI", d.rssi === null ? "" : d.rssi + " dBm"], ["via", d.via]]
      : [["id", d.id], ["driver", d.driver], ["key", d.key], ["via", d.via || ""],
         ["last seen", ago(d.now, d.last_seen)], ["RSSI", d.rssi === null ? "" : d.rssi + " dBm"],
         ["telegrams", d.telegrams_total],
         ["errors", d.errors ? (d.key_wrong ? "key wrong; " : "") + d.errors + (d.last_error ? ": " + d.last_error : "") : "none"]];
    nodes.push(kvTable(info));
    nodes.push(el("h3", "Fields"));
    const fields = kvTable(d.fields || []);
    fields.id = "meter-fields";
    nodes.push(fields);
    nodes.push(el("h3", "Last telegrams (" + d.telegrams.length + ", newest first)"));
    const list = el("div");
    list.id = "meter-telegrams";
    d.telegrams.forEach((t, i) => list.append(telegramEl(d, t, i)));
    if (d.kind === "configured" && d.source === "page") {
      if (!editForm) editForm = buildEditForm(d);
      nodes.push(editForm);
    }
    nodes.push(list);
    // Keep open what the reader opened across live refreshes.
    const open = new Set(Array.from(page.querySelectorAll("details.telegram")).map((x, i) => x.open ? i : -1));
    page.replaceChildren(...nodes);
    if (open.size) page.querySelectorAll("details.telegram").forEach((x, i) => { x.open = open.has(i); });
  }

  async function load() {
    const want = current;
    if (!want) return;
    const q = (want.kind === "slug" ? "slug=" : "heard=") + encodeURIComponent(want.key);
    let d;
    try {
      const r = await fetch("api/meter?" + q);
      d = await r.json();
    } catch (e) {
      d = { ok: false, error: String(e) };
    }
    if (want !== current) return;
    if (d.ok === false) {
      document.getElementById("meter-page").replaceChildren(el("p", d.error, "bad"));
      return;
    }
    detail = d;
    render();
  }

  return {
    // Called by app.js when the address changes; true if it names a meter's page.
    open(hash) {
      const p = parse(hash);
      if (!p) { current = null; return false; }
      if (!current || current.kind !== p.kind || current.key !== p.key) {
        current = p;
        lastSeen = null;
        detail = null;
        editForm = null;
        document.getElementById("meter-page").replaceChildren(el("p", "loading…", "hint"));
        load();
      }
      return true;
    },
    // Every new view from the event stream: reload when this meter was heard again.
    viewChanged(view) {
      version = view.gateway.version;
      if (!current) return;
      const seen = current.kind === "slug"
        ? (view.meters.find(m => m.slug === current.key) || {}).last_seen
        : (view.heard.find(h => h.id === current.key) || {}).last_seen;
      if (seen !== lastSeen) { lastSeen = seen; load(); }
    },
  };
})();
