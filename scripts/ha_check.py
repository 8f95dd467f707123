#!/usr/bin/env python3
"""The Home Assistant side of scripts/ha-check.sh.

Runs with the Python of the chroot's Home Assistant venv (it uses Home Assistant's own
aiohttp, PyYAML and paho-mqtt). Subcommands:

  requirements            the pip requirements of the integrations the check loads
  fleet                   a meterbridge configuration with one meter per driver (from the
                          drivers' test telegrams), a simulated bus for wired-only drivers and a
                          feeding plan
  feed                    sends the plan's telegrams to meterbridge's UDP receiver
  onboard                 onboards a fresh Home Assistant and adds the MQTT integration
  snapshot                reads what Home Assistant shows (entities, states, statistics,
                          Energy validation, history) while meterbridge still runs
  report                  judges the snapshot and Home Assistant's log; writes report.json and
                          summary.txt; exits 1 when a target fails (unless --report-only)

Every connection goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import glob
import json
import math
import os
import re
import socket
import sys
import time

# --- requirements ----------------------------------------------------------------------------

# Integrations the check needs beyond what Home Assistant loads by itself.
WANTED = {"mqtt", "recorder", "energy", "history", "sensor", "binary_sensor", "onboarding",
          "config", "api", "websocket_api", "http", "auth", "frontend"}


def cmd_requirements(_args):
    import homeassistant
    from homeassistant import bootstrap

    comp = os.path.join(os.path.dirname(homeassistant.__file__), "components")
    todo = set(WANTED) | set(bootstrap.DEFAULT_INTEGRATIONS) | set(bootstrap.CORE_INTEGRATIONS)
    todo |= set(bootstrap.LOGGING_AND_HTTP_DEPS_INTEGRATIONS) | set(bootstrap.FRONTEND_INTEGRATIONS)
    seen, reqs = set(), set()
    while todo:
        d = todo.pop()
        if d in seen:
            continue
        seen.add(d)
        try:
            with open(os.path.join(comp, d, "manifest.json")) as f:
                m = json.load(f)
        except FileNotFoundError:
            continue
        reqs.update(m.get("requirements", []))
        todo.update(m.get("dependencies", []))
    print("\n".join(sorted(reqs)))
    print(f"# {len(seen)} integrations: {' '.join(sorted(seen))}", file=sys.stderr)


# --- fleet -----------------------------------------------------------------------------------

TOTAL_KEY = re.compile(r"^total.*_(m3|kwh|mwh|gj|wh|l|hca)$")


def _hex(t: str) -> str:
    return re.sub(r"\s+", "", t).upper()


def cmd_fleet(args):
    """One meter per driver with a test telegram: wireless ones fed over UDP, wired-only ones on
    a simulated bus. Keys from the tests go into the configuration."""
    import yaml

    drivers = {}
    for path in sorted(glob.glob(os.path.join(args.drivers, "*.yaml"))):
        with open(path) as f:
            d = yaml.safe_load(f)
        drivers[d["name"]] = d
    # Drivers without tests of their own: the wmbusmeters corpus fixture has telegrams for some.
    extra = collections.defaultdict(list)
    if args.corpus and os.path.exists(args.corpus):
        with open(args.corpus) as f:
            for line in f:
                r = json.loads(line)
                extra[r["driver"]].append(r)

    wireless, wired, skipped = [], [], []
    used_ids = set()
    for name, d in sorted(drivers.items()):
        cases = []
        for t in d.get("tests") or []:
            cases.append({"id": str(t["id"]), "key": t.get("key"),
                          "telegrams": [_hex(x) for x in t.get("telegrams", [])],
                          "expected": t.get("expected")})
        if not cases:
            for r in extra.get(name, []):
                cases.append({"id": str(r["id"]), "key": r.get("key"),
                              "telegrams": [_hex(x) for x in r.get("preceding_telegrams") or []]
                              + [_hex(r["telegram"])], "expected": r.get("expected_json")})
        if not cases:
            skipped.append({"driver": name, "why": "no test telegram"})
            continue
        # Prefer the id with the most telegrams (alternating frames show fields appearing later).
        by_id = collections.OrderedDict()
        for c in cases:
            e = by_id.setdefault(c["id"], {"id": c["id"], "key": None, "telegrams": [],
                                           "highest": {}})
            if c["key"] and c["key"] != "NOKEY":
                e["key"] = c["key"]
            # Test cases are not always in the order the meter sent them: leave out a case
            # whose expected lifetime totals are below ones already fed, so counters never run
            # backwards (Home Assistant warns about that, and no real meter does it).
            totals = {k: v for k, v in (c.get("expected") or {}).items()
                      if TOTAL_KEY.match(k) and isinstance(v, (int, float))}
            if any(v < e["highest"].get(k, v) for k, v in totals.items()):
                continue
            for k, v in totals.items():
                e["highest"][k] = max(v, e["highest"].get(k, v))
            for t in c["telegrams"]:
                if t not in e["telegrams"]:
                    e["telegrams"].append(t)
        choices = sorted(by_id.values(), key=lambda e: -len(e["telegrams"]))
        pick = None
        for e in choices:
            wl = [t for t in e["telegrams"] if not t.startswith("68")]
            wd = [t for t in e["telegrams"] if t.startswith("68")]
            if wl and e["id"] not in used_ids:
                pick = ("wireless", e, wl)
                break
            if wd and not wl and ("wired", e["id"]) not in used_ids:
                pick = ("wired", e, wd)
                break
        if pick is None:
            skipped.append({"driver": name, "why": "its test ids are taken by other drivers"})
            continue
        kind, e, tgs = pick
        if e["key"] and not re.fullmatch(r"[0-9A-Fa-f]{32}", e["key"]):
            skipped.append({"driver": name, "why": f"its test key is not AES-128 ({e['key']})"})
            continue
        mid = e["id"]
        if kind == "wireless" and not re.fullmatch(r"[0-9A-Fa-f]{8}", mid):
            # A test for any id (ANYID): the meter's id is the one the telegram carries, in the
            # long transport header (CI 0x72) if there is one, else in the link layer; least
            # significant byte first.
            t0 = tgs[0]
            a = t0[22:30] if t0[20:22] == "72" else t0[8:16]
            mid = "".join(a[i:i + 2] for i in (6, 4, 2, 0))
            if mid in used_ids:
                skipped.append({"driver": name, "why": f"id {mid} taken by another driver"})
                continue
        e = dict(e, id=mid)
        meter = {"driver": name, "meter_type": d.get("meter_type"), "id": e["id"],
                 "key": e["key"], "telegrams": tgs, "name": f"{name} {e['id']}"}
        if kind == "wireless":
            used_ids.add(e["id"])
            wireless.append(meter)
        else:
            used_ids.add(("wired", e["id"]))
            wired.append(meter)

    lines = [
        "# Generated by scripts/ha_check.py fleet: one meter per driver, from the drivers' own",
        "# test telegrams.",
        f"state_dir: \"{args.state_dir}\"",
        "log_level: info",
        "mqtt:",
        f"  url: mqtt://127.0.0.1:{args.mqtt_port}",
        "  client_id: meterbridge-hacheck",
        "receivers:",
        "  - name: udp",
        "    type: udp",
        f"    bind: 127.0.0.1:{args.udp_port}",
    ]
    if wired:
        lines += ["buses:", "  - name: simbus", f"    tcp: \"127.0.0.1:{args.bus_port}\"",
                  f"    polling: {args.polling}", "    emit: every"]
    lines.append("meters:")
    for m in wireless:
        lines += [f"  - name: \"{m['name']}\"", f"    address: \"{m['id']}\"",
                  f"    driver: {m['driver']}"]
        if m["key"]:
            lines.append(f"    key: \"{m['key']}\"")
    bus = ["# Generated by scripts/ha_check.py fleet: the wired-only drivers' test frames.",
           "meters:"]
    for primary, m in enumerate(wired, start=1):
        m["primary"] = primary
        lines += [f"  - name: \"{m['name']}\"", "    bus: simbus", f"    address: {primary}",
                  f"    driver: {m['driver']}"]
        bus += [f"  - primary: {primary}", "    telegrams:"]
        bus += [f"      - \"{t}\"" for t in m["telegrams"]]
    with open(args.config, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(args.config, 0o600)
    with open(args.bus, "w") as f:
        f.write("\n".join(bus) + "\n")
    plan = {"wireless": wireless, "wired": wired, "skipped": skipped}
    with open(args.plan, "w") as f:
        json.dump(plan, f, indent=1)
    kinds = collections.Counter(m["meter_type"] for m in wireless + wired)
    print(f"fleet: {len(wireless)} wireless + {len(wired)} wired meters "
          f"({', '.join(f'{k} {v}' for k, v in sorted(kinds.items(), key=str))}); "
          f"{len(skipped)} drivers skipped", file=sys.stderr)


def cmd_feed(args):
    """Each meter's telegrams, `rounds` times, spread over `seconds`; meterbridge drops copies
    inside its 10 s dedup window, so rounds are further apart than that."""
    with open(args.plan) as f:
        plan = json.load(f)
    meters = plan["wireless"]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rounds = max(1, args.rounds)
    per_round = max(args.seconds / rounds, 12.0)
    sent = 0
    for r in range(rounds):
        start = time.monotonic()
        batch = []
        for m in meters:
            # The first round sends all of a meter's telegrams in the order of its tests
            # (compact frames after the full frame that defines them, fields that appear later);
            # later rounds repeat the last one only: replaying older telegrams would make
            # counters run backwards, which no real meter does and Home Assistant warns about.
            t = m["telegrams"]
            batch.extend(t if r == 0 else t[-1:])
        gap = min(0.2, (per_round * 0.8) / max(1, len(batch)))
        for line in batch:
            sock.sendto((line + "\n").encode(), ("127.0.0.1", args.port))
            sent += 1
            time.sleep(gap)
        left = per_round - (time.monotonic() - start)
        if r + 1 < rounds and left > 0:
            time.sleep(left)
    print(f"feed: {sent} datagrams to 127.0.0.1:{args.port} in {rounds} rounds", file=sys.stderr)


# --- Home Assistant API ----------------------------------------------------------------------

CLIENT_ID = "http://127.0.0.1/"


async def _wait_http(session, base, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with session.get(f"{base}/api/onboarding") as r:
                if r.status == 200:
                    return await r.json()
        except Exception:  # noqa: BLE001 - not up yet
            pass
        await asyncio.sleep(1)
    raise SystemExit(f"Home Assistant did not answer on {base} within {timeout} s")


async def _onboard(args):
    import aiohttp

    base = f"http://127.0.0.1:{args.ha_port}"
    async with aiohttp.ClientSession() as s:
        steps = await _wait_http(s, base, args.timeout)
        if not any(st["step"] == "user" and not st["done"] for st in steps):
            raise SystemExit("this Home Assistant is already onboarded (a fresh config dir is needed)")
        async with s.post(f"{base}/api/onboarding/users", json={
                "client_id": CLIENT_ID, "name": "Check", "username": "check",
                "password": "meterbridge-check", "language": "en"}) as r:
            r.raise_for_status()
            code = (await r.json())["auth_code"]
        async with s.post(f"{base}/auth/token", data={
                "grant_type": "authorization_code", "code": code, "client_id": CLIENT_ID}) as r:
            r.raise_for_status()
            tok = await r.json()
        token = tok["access_token"]
        # A long-lived token, so later steps need no refresh.
        ws = await _ws_connect(s, base, token)
        lt = await ws.call({"type": "auth/long_lived_access_token", "client_name": "ha-check",
                            "lifespan": 30})
        await ws.close()
        h = {"Authorization": f"Bearer {lt}"}
        # Only the user step: core_config would set up integrations that reach the internet.
        async with s.post(f"{base}/api/config/config_entries/flow", headers=h,
                          json={"handler": "mqtt", "show_advanced_options": False}) as r:
            r.raise_for_status()
            flow = await r.json()
        if flow.get("type") != "form" or flow.get("step_id") != "broker":
            raise SystemExit(f"unexpected MQTT config flow step: {flow}")
        async with s.post(f"{base}/api/config/config_entries/flow/{flow['flow_id']}", headers=h,
                          json={"broker": "127.0.0.1", "port": args.mqtt_port}) as r:
            r.raise_for_status()
            res = await r.json()
        if res.get("type") != "create_entry":
            raise SystemExit(f"the MQTT config flow did not create an entry: {res}")
        # Wait until the entry is loaded (subscribed to discovery).
        deadline = time.monotonic() + 60
        while True:
            async with s.get(f"{base}/api/config/config_entries/entry", headers=h) as r:
                entries = await r.json()
            st = [e["state"] for e in entries if e["domain"] == "mqtt"]
            if st == ["loaded"]:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"the MQTT entry did not load: {st}")
            await asyncio.sleep(0.5)
    with open(args.token_file, "w") as f:
        f.write(lt)
    print("onboarded; MQTT integration loaded (broker 127.0.0.1:%d)" % args.mqtt_port,
          file=sys.stderr)


def cmd_onboard(args):
    asyncio.run(_onboard(args))


class _WS:
    def __init__(self, ws):
        self.ws = ws
        self.n = 0

    async def call(self, msg, timeout=120):
        self.n += 1
        msg = dict(msg, id=self.n)
        await self.ws.send_json(msg)
        while True:
            r = await asyncio.wait_for(self.ws.receive_json(), timeout)
            if r.get("id") == self.n and r.get("type") == "result":
                if not r.get("success"):
                    raise RuntimeError(f"{msg['type']}: {r.get('error')}")
                return r.get("result")

    async def try_call(self, msg):
        try:
            return {"ok": True, "result": await self.call(msg)}
        except Exception as e:  # noqa: BLE001 - reported, not fatal
            return {"ok": False, "error": str(e)}

    async def close(self):
        await self.ws.close()


async def _ws_connect(session, base, token):
    ws = await session.ws_connect(f"{base.replace('http', 'ws')}/api/websocket",
                                  max_msg_size=0)
    await ws.receive_json()
    await ws.send_json({"type": "auth", "access_token": token})
    r = await ws.receive_json()
    if r.get("type") != "auth_ok":
        raise SystemExit(f"websocket auth failed: {r}")
    return _WS(ws)


# --- snapshot --------------------------------------------------------------------------------

def _mqtt_retained(port, seconds=3.0):
    """The retained messages on the broker (state and discovery documents), parsed as JSON."""
    import paho.mqtt.client as mqtt

    got = {}

    def on_message(_c, _u, msg):
        try:
            got[msg.topic] = json.loads(msg.payload or b"null")
        except ValueError:
            got[msg.topic] = None

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ha-check-reader")
    c.on_message = on_message
    c.on_connect = lambda cl, *_a: cl.subscribe("#")
    c.connect("127.0.0.1", port)
    c.loop_start()
    time.sleep(seconds)
    c.loop_stop()
    c.disconnect()
    return got


def _ours(entity, devices):
    d = devices.get(entity.get("device_id"))
    if d is None:
        return False
    return any(i[1].startswith("meterbridge") for i in d.get("identifiers", []))


async def _snapshot(args):
    import aiohttp

    base = f"http://127.0.0.1:{args.ha_port}"
    with open(args.token_file) as f:
        token = f.read().strip()
    with open(args.drivers_json) as f:
        drivers = json.load(f)
    snap = {"taken_at": dt.datetime.now(dt.UTC).isoformat(), "scenario": args.scenario}
    async with aiohttp.ClientSession() as s:
        ws = await _ws_connect(s, base, token)
        devices = {d["id"]: d for d in await ws.call({"type": "config/device_registry/list"})}
        entities = await ws.call({"type": "config/entity_registry/list"})
        states = {st["entity_id"]: st for st in await ws.call({"type": "get_states"})}
        ours = [e for e in entities if _ours(e, devices)]
        our_devices = {e["device_id"] for e in ours}
        snap["devices"] = [devices[i] for i in sorted(our_devices)]
        snap["entities"] = ours
        snap["states"] = {e["entity_id"]: states.get(e["entity_id"]) for e in ours}
        stats = await ws.call({"type": "recorder/list_statistic_ids", "statistic_type": "sum"})
        our_ids = {e["entity_id"] for e in ours}
        snap["sum_statistics"] = [x for x in stats if x["statistic_id"] in our_ids]
        snap["statistics_metadata"] = await ws.call(
            {"type": "recorder/get_statistics_metadata",
             "statistic_ids": [x["statistic_id"] for x in snap["sum_statistics"]]})
        # History since HA started: did each entity ever have a value?
        hist = await ws.call({"type": "history/history_during_period",
                              "start_time": args.since, "entity_ids": sorted(our_ids),
                              "minimal_response": True, "no_attributes": True,
                              "significant_changes_only": False}, timeout=300)
        snap["ever_had_value"] = {
            eid: any(h.get("s") not in ("unknown", "unavailable", "", None) for h in hs)
            for eid, hs in hist.items()}
        # Which driver and meter type each device has (from the meter's own MQTT state).
        # Each device's state topic from its discovery document, and the meter's state there
        # (its `meter` field names the driver); whatever base topic and client id the program
        # uses.
        retained = _mqtt_retained(args.mqtt_port)
        disc = {t: d for t, d in retained.items()
                if t.startswith(f"{args.discovery_prefix}/device/") and isinstance(d, dict)}
        snap["state_topics"] = {}
        for t, d in disc.items():
            st = d.get("state_topic") or d.get("stat_t")
            if st is None:
                st = next((c.get("state_topic") or c.get("stat_t")
                           for c in (d.get("cmps") or {}).values()
                           if c.get("state_topic") or c.get("stat_t")), None)
            snap["state_topics"][t.split("/")[-2]] = st
        snap["mqtt_states"] = {t: d for t, d in retained.items()
                               if t.endswith("/state") and isinstance(d, dict)}
        snap["base_topic"] = args.base_topic
        # Energy: each meter's main counter as a source, then validate.
        prefs, chosen = _energy_prefs(snap, drivers)
        snap["energy_choice"] = chosen
        snap["energy_prefs"] = prefs
        snap["energy_save"] = await ws.try_call(dict(prefs, type="energy/save_prefs"))
        snap["energy_validate"] = await ws.try_call({"type": "energy/validate"})
        await ws.close()
    with open(args.out, "w") as f:
        json.dump(snap, f, indent=1, default=str)
    print(f"snapshot: {len(snap['devices'])} devices, {len(ours)} entities", file=sys.stderr)


def cmd_snapshot(args):
    asyncio.run(_snapshot(args))


ENERGY_UNITS = {"Wh", "kWh", "MWh", "GWh", "TWh", "J", "kJ", "MJ", "GJ", "mWh", "cal", "kcal",
                "Mcal", "Gcal"}
VOLUME_UNITS = {"m³", "L", "ft³", "CCF", "MCF", "gal", "mL"}


def _key_of(entity, device):
    """The field key of an entity: its unique_id past the device's object id."""
    uid = entity.get("unique_id") or ""
    for ident in device.get("identifiers", []):
        if uid.startswith(ident[1] + "_"):
            return uid[len(ident[1]) + 1:]
    return uid


def _slug(name):
    """meterbridge's topic name of a meter: lower case, other runs of characters as `_`."""
    return re.sub(r"[^a-z0-9]+", "_", (name or "").lower()).strip("_")


def _state_doc(device, snap):
    """The meter's last state document on the broker, or None: through the state topic of its
    discovery document, else by the meter's name under any base topic."""
    mq = snap.get("mqtt_states", {})
    for ident in device.get("identifiers", []):
        topic = snap.get("state_topics", {}).get(ident[1])
        if topic in mq:
            return mq[topic]
    suffix = f"/{_slug(device.get('name'))}/state"
    return next((d for t, d in mq.items() if t.endswith(suffix)), None)


def _snapshot_like(key):
    return any(w in key for w in SNAPSHOT_WORDS)


def _device_meta(device, snap, drivers):
    """The device's object id, driver and meter type. The driver comes from the meter's own
    state document (`meter`), found by the device name (the meter's name) or else by its id."""
    oid = next((i[1] for i in device.get("identifiers", []) if i[1].startswith("meterbridge")), "")
    mq = snap.get("mqtt_states", {})
    doc = _state_doc(device, snap)
    if not isinstance(doc, dict):
        mid = oid.rsplit("_", 1)[-1].lower()
        doc = next((d for d in mq.values()
                    if isinstance(d, dict) and str(d.get("id", "")).lower() == mid), {})
    drv = doc.get("meter")
    return oid, drv, (drivers.get(drv) or {}).get("meter_type")


def _main_counter(cands, default_fields):
    """The meter's main counter: the first of the driver's default fields that is a summed
    statistic, else a key starting with `total`, else the only candidate."""
    for f in default_fields or []:
        for key, eid in cands:
            if key == f or key.startswith(f + "_") and key[len(f) + 1:] in ("kwh", "m3", "mwh",
                                                                              "gj", "wh", "l"):
                return key, eid
    totals = [c for c in cands if c[0].startswith("total")]
    if totals:
        return totals[0]
    return cands[0] if len(cands) == 1 else (None, None)


def _energy_prefs(snap, drivers):
    ents_by_dev = collections.defaultdict(list)
    for e in snap["entities"]:
        ents_by_dev[e["device_id"]].append(e)
    sums = {x["statistic_id"]: x for x in snap["sum_statistics"]}
    grid, sources, consumption, chosen = [], [], [], []
    for dev in snap["devices"]:
        oid, drv, mtype = _device_meta(dev, snap, drivers)
        if mtype not in ("water", "gas", "electricity", "heat"):
            continue
        doc = _state_doc(dev, snap)
        cands = []
        for e in ents_by_dev[dev["id"]]:
            st = snap["states"].get(e["entity_id"]) or {}
            unit = (st.get("attributes") or {}).get("unit_of_measurement")
            units = VOLUME_UNITS if mtype == "water" else ENERGY_UNITS if mtype in (
                "electricity", "heat") else VOLUME_UNITS | ENERGY_UNITS
            key = _key_of(e, dev)
            # A lifetime counter the meter actually sends: not a value stored at a set date,
            # a monthly value, a delta or a target.
            if (e["entity_id"].startswith("sensor.") and unit in units
                    and (doc is None or key in doc) and not _snapshot_like(key)):
                cands.append((key, e["entity_id"]))
        key, eid = _main_counter(cands, (drivers.get(drv) or {}).get("default_fields"))
        row = {"device": dev.get("name"), "object_id": oid, "driver": drv, "meter_type": mtype,
               "key": key, "entity_id": eid, "offered": eid in sums if eid else False}
        chosen.append(row)
        if not eid:
            row["why"] = ("its state holds no lifetime counter (only snapshot/history values)"
                          if doc is not None else "no state document on the broker")
            continue
        if mtype == "electricity":
            row["as"] = "grid consumption"
            grid.append({"stat_energy_from": eid, "stat_cost": None,
                         "entity_energy_price": None, "number_energy_price": None})
        elif mtype == "heat":
            row["as"] = "individual device"
            consumption.append({"stat_consumption": eid, "name": dev.get("name")})
        else:
            row["as"] = mtype
            sources.append({"type": mtype, "stat_energy_from": eid, "stat_cost": None,
                            "entity_energy_price": None, "number_energy_price": None})
    if grid:
        sources.insert(0, {"type": "grid", "flow_from": grid, "flow_to": [],
                           "cost_adjustment_day": 0})
    return {"energy_sources": sources, "device_consumption": consumption}, chosen


# --- report ----------------------------------------------------------------------------------

SNAPSHOT_WORDS = ("set_date", "prev_", "last_", "month", "delta", "target", "consumption_at",
                  "_at_", "history", "previous", "due_date", "billing")
SENTINEL_NUMBERS = {-2147483648.0, 2147483647.0, 4294967295.0, -32768.0, 32767.0, 65535.0,
                    -8388608.0, 8388607.0, 16777215.0, 99999999.0, -1.0e9}
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) (\w+) \((.+?)\) \[([^\]]*)\] (.*)$")
# A negative reading is impossible for these classes and for counters (total_increasing);
# other values (temperatures, manufacturer-specific corrections) may well be negative.
NON_NEGATIVE = {"energy", "water", "gas", "volume", "volume_storage", "duration", "humidity",
                "battery", "weight", "data_size"}


def _is_number(s):
    try:
        v = float(s)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _sentinel(state, attrs):
    """Why a state looks like a "no value" marker or is an impossible negative, or None."""
    v = _is_number(state)
    if v is not None:
        # The markers also arrive scaled by the field's unit factor (-32768 x 0.001).
        for k in range(7):
            if any(abs(v * 10 ** k - x) < 1e-6 for x in SENTINEL_NUMBERS):
                return f"sentinel number {state}" + (f" (= {v * 10 ** k:.0f} x 10^-{k})" if k else "")
        if v < 0 and (attrs.get("device_class") in NON_NEGATIVE
                      or attrs.get("state_class") == "total_increasing"):
            return f"negative {state}"
        return None
    if isinstance(state, str):
        m = re.match(r"^(\d{4})-(\d\d)-(\d\d)", state)
        if m:
            y, mo, d = (int(x) for x in m.groups())
            if mo == 0 or d == 0 or mo > 12 or d > 31:
                return f"invalid date {state}"
            if y <= 2000:
                return f"placeholder date {state}"
    return None


def _normalise(msg):
    msg = re.sub(r"\d+(\.\d+)?", "N", msg)
    return re.sub(r"meterbridge_[a-z0-9]+_[0-9a-fN]+", "meterbridge_<dev>", msg)[:300]


TEMPLATE_KEY = re.compile(r"when rendering '\{\{ value_json\.(\w+)")
HARNESS_OWN = ("Skipping pip installation of required modules",)


def _read_log(path, needles, keys):
    """Warnings and errors of Home Assistant's log; `ours` when they name our topics/entities,
    or are template warnings about one of our state keys (those name neither)."""
    entries = []
    if not os.path.exists(path):
        return entries
    cur = None
    with open(path, errors="replace") as f:
        for line in f:
            m = LOG_LINE.match(line.rstrip("\n"))
            if m:
                cur = {"time": m.group(1), "level": m.group(2), "logger": m.group(4),
                       "message": m.group(5)}
                entries.append(cur)
            elif cur is not None:
                cur["message"] += "\n" + line.rstrip("\n")
    out = []
    for e in entries:
        if e["level"] not in ("WARNING", "ERROR", "CRITICAL"):
            continue
        if any(h in e["message"] for h in HARNESS_OWN):
            continue
        m = TEMPLATE_KEY.search(e["message"])
        e["ours"] = any(n in e["message"] for n in needles) or bool(m and m.group(1) in keys)
        out.append(e)
    return out


def cmd_report(args):
    with open(args.snapshot) as f:
        snap = json.load(f)
    with open(args.drivers_json) as f:
        drivers = json.load(f)
    entities, states = snap["entities"], snap["states"]
    devices = {d["id"]: d for d in snap["devices"]}
    rep = {"scenario": snap["scenario"], "taken_at": snap["taken_at"]}
    enabled = [e for e in entities if not e.get("disabled_by")]
    rep["devices"] = len(devices)
    rep["entities_total"] = len(entities)
    rep["entities_enabled"] = len(enabled)
    rep["entities_by_domain"] = dict(collections.Counter(e["entity_id"].split(".")[0]
                                                         for e in enabled))
    unknown, never, empty = [], [], []
    classes = collections.Counter()
    bad_values = []
    for e in enabled:
        eid = e["entity_id"]
        st = states.get(eid) or {}
        s = st.get("state")
        a = st.get("attributes") or {}
        classes[(eid.split(".")[0], a.get("device_class"), a.get("state_class"),
                 a.get("unit_of_measurement"))] += 1
        if s in ("unknown", None):
            unknown.append(eid)
        if s == "":
            empty.append(eid)
        if not snap.get("ever_had_value", {}).get(eid, False):
            never.append(eid)
        why = _sentinel(s, a)
        if why:
            bad_values.append({"entity_id": eid, "state": s, "why": why})
    rep["unknown_at_snapshot"] = sorted(unknown)
    rep["empty_at_snapshot"] = sorted(empty)
    rep["never_had_value"] = sorted(never)
    rep["negative_or_sentinel"] = bad_values
    rep["classes"] = [{"domain": k[0], "device_class": k[1], "state_class": k[2], "unit": k[3],
                       "count": v} for k, v in sorted(classes.items(), key=lambda kv: -kv[1])]
    # Home Assistant's log.
    # Our topics: the base topics of our devices' state topics (whatever the program chose).
    bases = {t.split("/")[0] + "/" for t in snap.get("state_topics", {}).values() if t}
    needles = sorted(bases | {args.base_topic + "/", "meterbridge_",
                              args.discovery_prefix + "/device/meterbridge"})
    keys = {_key_of(e, devices.get(e["device_id"], {})) for e in entities}
    log = _read_log(args.log, needles, keys)
    # What Home Assistant logs after the snapshot comes from meterbridge stopping: the demo
    # withdraws its devices, and Home Assistant, after removing their entities, clears their
    # retained discovery topics itself and then warns that the empty document it receives back
    # has nothing left to clean up. Reported apart, not judged: it is not what a running
    # installation shows.
    snap_time = dt.datetime.fromisoformat(snap["taken_at"]).astimezone(dt.UTC).replace(tzinfo=None)
    for e in log:
        try:
            e["after_stop"] = dt.datetime.fromisoformat(e["time"]) > snap_time
        except ValueError:
            e["after_stop"] = False
    at_stop = [e for e in log if e["ours"] and e["after_stop"]]
    rep["log_ours_at_stop"] = sorted(collections.Counter(
        _normalise(e["message"].split("\n")[0]) for e in at_stop).items())
    ours = [e for e in log if e["ours"] and not e["after_stop"]]
    samples = collections.OrderedDict()
    for e in ours:
        k = (e["level"], e["logger"], _normalise(e["message"].split("\n")[0]))
        if k not in samples:
            samples[k] = {"level": e["level"], "logger": e["logger"],
                          "sample": e["message"].split("\n")[0][:400], "count": 0}
        samples[k]["count"] += 1
    rep["log_ours_count"] = len(ours)
    # Home Assistant notes when a module logs too much; the counts above are then lower bounds.
    rep["log_rate_limited"] = sorted({e["message"].split(" is logging")[0] for e in log
                                      if "is logging too frequently" in e["message"]})
    rep["log_ours_distinct"] = sorted(samples.values(), key=lambda x: -x["count"])
    rep["log_other_count"] = len(log) - len(ours)
    rep["log_other_samples"] = sorted({f"{e['level']} [{e['logger']}] "
                                       f"{e['message'].splitlines()[0][:200]}"
                                       for e in log if not e["ours"]})[:30]
    # Energy: what would be offered, and what is snapshot-like.
    offered = collections.defaultdict(list)
    flagged, heat_water = [], []
    ent_by_id = {e["entity_id"]: e for e in entities}
    for x in snap["sum_statistics"]:
        sid = x["statistic_id"]
        e = ent_by_id.get(sid)
        key = _key_of(e, devices.get(e["device_id"], {})) if e else sid
        a = (states.get(sid) or {}).get("attributes") or {}
        unit_class = x.get("unit_class")
        # The filters of the Energy configuration dialogs (Home Assistant's frontend): grid and
        # individual devices take any energy statistic, gas takes volume or energy with class
        # gas or energy, water takes volume with class water.
        dc = a.get("device_class")
        cats = []
        if unit_class == "energy":
            cats += ["electricity", "device"]
        if unit_class in ("energy", "volume") and dc in ("gas", "energy"):
            cats.append("gas")
        if unit_class == "volume" and dc == "water":
            cats.append("water")
        for c in cats:
            offered[c].append(sid)
        row = {"statistic_id": sid, "key": key, "unit": x.get("statistics_unit_of_measurement"),
               "unit_class": unit_class, "device_class": a.get("device_class"),
               "state_class": a.get("state_class"), "pickers": cats}
        if cats and _snapshot_like(key):
            flagged.append(row)
        # A heat meter's circuit volume is not household water consumption.
        mtype = _device_meta(devices.get(e["device_id"], {}), snap, drivers)[2] if e else None
        if "water" in cats and mtype not in ("water", None):
            heat_water.append(dict(row, meter_type=mtype))
    rep["energy_offered_counts"] = {k: len(v) for k, v in offered.items()}
    rep["energy_offered"] = {k: sorted(v) for k, v in offered.items()}
    rep["energy_snapshot_like_offered"] = flagged
    rep["energy_water_offered_from_other_meters"] = heat_water
    rep["meters_by_type"] = dict(collections.Counter(
        _device_meta(d, snap, drivers)[2] for d in devices.values()))
    # Energy validation per chosen main counter.
    val = snap.get("energy_validate", {})
    issues_by_entity = collections.defaultdict(list)
    if val.get("ok"):
        res = val["result"]
        for group in ("energy_sources", "device_consumption", "device_consumption_water"):
            for issues in res.get(group, []):
                for iss in issues:
                    for ent in iss.get("affected_entities", []):
                        issues_by_entity[ent[0]].append({"type": iss["type"], "value": ent[1]})
    mains = []
    for row in snap.get("energy_choice", []):
        r = dict(row)
        if not r.get("entity_id"):
            # Not a failure of the announcement: this meter's telegrams carry no lifetime
            # counter at all (e.g. only monthly history). Listed, not judged.
            r["accepted"] = None
            r["issues"] = [{"type": "no main counter: " + r.get("why", "none found")}]
        else:
            iss = issues_by_entity.get(r["entity_id"], [])
            r["issues"] = iss
            pending = [i for i in iss if i["type"] == "statistics_not_defined"]
            r["accepted"] = val.get("ok", False) and snap.get("energy_save", {}).get("ok", False) \
                and not [i for i in iss if i not in pending]
            r["statistics_pending"] = bool(pending)
        mains.append(r)
    rep["energy_save"] = snap.get("energy_save")
    rep["energy_main_counters"] = mains
    # Binary sensors for smoke/door meters; manufacturer/model.
    by_dev = collections.defaultdict(list)
    for e in enabled:
        by_dev[e["device_id"]].append(e)
    binaries, devs = [], []
    never_by_driver = collections.Counter()
    never_set = set(never) | set(empty)
    for did, dev in devices.items():
        _oid, drv, mtype = _device_meta(dev, snap, drivers)
        never_by_driver[drv or dev.get("name")] += sum(e["entity_id"] in never_set
                                                       for e in by_dev[did])
        devs.append({"name": dev.get("name"), "manufacturer": dev.get("manufacturer"),
                     "model": dev.get("model"), "driver": drv, "meter_type": mtype,
                     "raw_code_manufacturer": bool(re.fullmatch(r"[A-Z@]{3}",
                                                                dev.get("manufacturer") or "")),
                     "model_is_driver_name": dev.get("model") == drv and drv is not None})
        if mtype in ("smoke", "door_window"):
            bs = [{"entity_id": e["entity_id"],
                   "device_class": ((states.get(e["entity_id"]) or {}).get("attributes") or {})
                   .get("device_class")}
                  for e in by_dev[did] if e["entity_id"].startswith("binary_sensor.")]
            want = "smoke" if mtype == "smoke" else ("door", "window", "opening")
            ok = any(b["device_class"] in (want if isinstance(want, tuple) else (want,))
                     for b in bs)
            binaries.append({"device": dev.get("name"), "driver": drv, "meter_type": mtype,
                             "binary_sensors": bs, "ok": ok})
    rep["binary_sensors"] = binaries
    rep["binary_sensor_classes"] = dict(collections.Counter(
        str(((states.get(e["entity_id"]) or {}).get("attributes") or {}).get("device_class"))
        for e in enabled if e["entity_id"].startswith("binary_sensor.")))
    rep["device_names"] = devs
    rep["never_had_value_by_driver"] = dict(never_by_driver.most_common())
    # Configured meters (fleet) that never became a device.
    if args.plan and os.path.exists(args.plan):
        with open(args.plan) as f:
            plan = json.load(f)
        names = {_slug(d.get("name")) for d in devices.values()}
        rep["meters_configured"] = len(plan["wireless"]) + len(plan["wired"])
        rep["meters_without_device"] = [
            {"name": m["name"], "driver": m["driver"], "meter_type": m["meter_type"]}
            for m in plan["wireless"] + plan["wired"] if _slug(m["name"]) not in names]
        rep["drivers_skipped"] = plan.get("skipped", [])
    # Targets.
    t = collections.OrderedDict()
    t["no entity without a value"] = len(never) == 0 and len(empty) == 0
    t["no HA warning/error from our topics/entities"] = len(ours) == 0
    t["no snapshot/history value offered as an Energy source"] = len(flagged) == 0
    t["no negative or sentinel state"] = len(bad_values) == 0
    t["no heat meter/HCA volume offered as water"] = len(heat_water) == 0
    t["every main counter accepted"] = all(m["accepted"] is not False for m in mains)
    t["smoke/door meters have binary sensors"] = all(b["ok"] for b in binaries)
    rep["targets"] = t
    rep["passed"] = all(t.values())
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(rep, f, indent=1, default=str)
    text = _summary(rep)
    with open(os.path.join(args.out, "summary.txt"), "w") as f:
        f.write(text)
    print(text)
    if not rep["passed"] and not args.report_only:
        sys.exit(1)


def _summary(rep):
    L = []
    p = L.append
    p(f"== Home Assistant check, scenario {rep['scenario']} ({rep['taken_at']})")
    p(f"devices {rep['devices']}, entities {rep['entities_total']} "
      f"({rep['entities_enabled']} enabled: "
      + ", ".join(f"{k} {v}" for k, v in sorted(rep["entities_by_domain"].items())) + ")")
    p(f"never had a value: {len(rep['never_had_value'])}; unknown at snapshot: "
      f"{len(rep['unknown_at_snapshot'])}; empty string: {len(rep['empty_at_snapshot'])}")
    worst = [(k, v) for k, v in rep["never_had_value_by_driver"].items() if v]
    if worst:
        p("  by driver: " + ", ".join(f"{k} {v}" for k, v in worst[:25])
          + (f", ... ({len(worst) - 25} more drivers)" if len(worst) > 25 else ""))
    for eid in rep["never_had_value"][:25]:
        p(f"    {eid}")
    if len(rep["never_had_value"]) > 25:
        p(f"    ... {len(rep['never_had_value']) - 25} more in report.json")
    if "meters_configured" in rep:
        p(f"configured meters without a device in Home Assistant: "
          f"{len(rep['meters_without_device'])} of {rep['meters_configured']}"
          + "".join(f"\n    {m['name']} [{m['meter_type']}]" for m in rep["meters_without_device"]))
        for sk in rep["drivers_skipped"]:
            p(f"    driver {sk['driver']} not in the fleet: {sk['why']}")
    p(f"HA log warnings/errors naming our topics/entities: {rep['log_ours_count']} "
      f"({len(rep['log_ours_distinct'])} distinct); others: {rep['log_other_count']}")
    if rep.get("log_ours_at_stop"):
        p("  after the snapshot, while meterbridge stopped (not judged):")
        for msg, n in rep["log_ours_at_stop"]:
            p(f"        {n} x {msg}")
    for m in rep["log_rate_limited"]:
        p(f"    (Home Assistant reported: {m} is logging too frequently)")
    for s in rep["log_ours_distinct"][:15]:
        p(f"    {s['count']:5d} x {s['level']} [{s['logger']}] {s['sample'][:220]}")
    p(f"negative or sentinel states: {len(rep['negative_or_sentinel'])}")
    for b in rep["negative_or_sentinel"][:20]:
        p(f"    {b['entity_id']} = {b['state']!r} ({b['why']})")
    p("Energy: summed statistics offered per picker: "
      + ", ".join(f"{k} {v}" for k, v in sorted(rep["energy_offered_counts"].items())))
    p(f"  snapshot/history values among them: {len(rep['energy_snapshot_like_offered'])}")
    for r in rep["energy_snapshot_like_offered"][:20]:
        p(f"    {r['statistic_id']} ({r['unit']}, {r['device_class']}, {r['state_class']})")
    if len(rep["energy_snapshot_like_offered"]) > 20:
        p(f"    ... {len(rep['energy_snapshot_like_offered']) - 20} more in report.json")
    mt = rep["meters_by_type"]
    p(f"  water picker: {rep['energy_offered_counts'].get('water', 0)} statistics for "
      f"{mt.get('water', 0)} water meters; {len(rep['energy_water_offered_from_other_meters'])} "
      f"of them from other meters (heat, HCA…)")
    for r in rep["energy_water_offered_from_other_meters"][:10]:
        p(f"    {r['statistic_id']} [{r['meter_type']}]")
    save = rep.get("energy_save") or {}
    if not save.get("ok", False):
        p(f"  energy/save_prefs refused: {save.get('error')}")
    acc = [m for m in rep["energy_main_counters"] if m["accepted"]]
    na = [m for m in rep["energy_main_counters"] if m["accepted"] is None]
    p(f"  main counters accepted: {len(acc)} of {len(rep['energy_main_counters']) - len(na)}"
      + (f" ({len(na)} meters send no lifetime counter)" if na else ""))
    for m in rep["energy_main_counters"]:
        if not m["accepted"] or m.get("statistics_pending"):
            iss = "; ".join(f"{i['type']}" + (f" ({i['value']})" if i.get("value") is not None
                                                 else "") for i in m["issues"])
            p(f"    {m['device']} [{m['driver']}, {m['meter_type']}] {m.get('entity_id')}: "
              f"{'accepted, ' if m['accepted'] else ''}{iss}")
    p("binary sensors by device class: " + (", ".join(
        f"{k} {v}" for k, v in sorted(rep["binary_sensor_classes"].items())) or "none"))
    p(f"binary sensors on smoke/door meters: "
      f"{sum(b['ok'] for b in rep['binary_sensors'])} of {len(rep['binary_sensors'])} ok")
    for b in rep["binary_sensors"]:
        if not b["ok"]:
            p(f"    {b['device']} [{b['driver']}]: {b['binary_sensors'] or 'none'}")
    raw = [d for d in rep["device_names"] if d["raw_code_manufacturer"] or d["model_is_driver_name"]]
    p(f"devices showing a raw manufacturer code or the driver name as model: {len(raw)} of "
      f"{len(rep['device_names'])}")
    for d in raw[:8]:
        p(f"    {d['name']}: {d['manufacturer']} / {d['model']}")
    p("classes (domain, device_class, state_class, unit: count):")
    for c in rep["classes"][:25]:
        p(f"    {c['domain']}, {c['device_class']}, {c['state_class']}, {c['unit']}: {c['count']}")
    p("targets:")
    for k, v in rep["targets"].items():
        p(f"    [{'PASS' if v else 'FAIL'}] {k}")
    p("RESULT: " + ("PASS" if rep["passed"] else "FAIL"))
    return "\n".join(L) + "\n"


# --- helpers for the shell script -------------------------------------------------------------

def cmd_drivers_json(args):
    import yaml

    out = {}
    for path in sorted(glob.glob(os.path.join(args.drivers, "*.yaml"))):
        with open(path) as f:
            d = yaml.safe_load(f)
        for n in [d["name"]] + list(d.get("aliases") or []):
            out[n] = {"name": d["name"], "meter_type": d.get("meter_type"),
                      "default_fields": d.get("default_fields") or []}
    with open(args.out, "w") as f:
        json.dump(out, f)


def cmd_free_ports(args):
    socks, ports = [], []
    for _ in range(args.n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    print(" ".join(map(str, ports)))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("requirements").set_defaults(fn=cmd_requirements)
    p = sub.add_parser("free-ports")
    p.add_argument("n", type=int)
    p.set_defaults(fn=cmd_free_ports)
    p = sub.add_parser("drivers-json")
    p.add_argument("--drivers", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_drivers_json)
    p = sub.add_parser("fleet")
    for a in ("drivers", "config", "bus", "plan", "state-dir"):
        p.add_argument(f"--{a}", required=True)
    p.add_argument("--corpus")
    p.add_argument("--mqtt-port", type=int, required=True)
    p.add_argument("--udp-port", type=int, required=True)
    p.add_argument("--bus-port", type=int, required=True)
    p.add_argument("--polling", default="30s")
    p.set_defaults(fn=cmd_fleet)
    p = sub.add_parser("feed")
    p.add_argument("--plan", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--rounds", type=int, default=3)
    p.set_defaults(fn=cmd_feed)
    p = sub.add_parser("onboard")
    p.add_argument("--ha-port", type=int, required=True)
    p.add_argument("--mqtt-port", type=int, required=True)
    p.add_argument("--token-file", required=True)
    p.add_argument("--timeout", type=float, default=600)
    p.set_defaults(fn=cmd_onboard)
    p = sub.add_parser("snapshot")
    p.add_argument("--discovery-prefix", default="homeassistant")
    p.add_argument("--ha-port", type=int, required=True)
    p.add_argument("--mqtt-port", type=int, required=True)
    p.add_argument("--token-file", required=True)
    p.add_argument("--drivers-json", required=True)
    p.add_argument("--scenario", required=True)
    p.add_argument("--since", required=True)
    p.add_argument("--base-topic", default="meterbridge")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_snapshot)
    p = sub.add_parser("report")
    p.add_argument("--snapshot", required=True)
    p.add_argument("--drivers-json", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--base-topic", default="meterbridge")
    p.add_argument("--discovery-prefix", default="homeassistant")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--plan", help="the fleet's plan.json, to list meters that never appeared")
    p.set_defaults(fn=cmd_report)
    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
