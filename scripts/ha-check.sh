#!/usr/bin/env bash
# Checks what a real Home Assistant makes of meterbridge's MQTT discovery.
#
# Run by hand (as root), not in CI: the first run builds a Debian trixie chroot and installs
# Home Assistant into a venv there (Home Assistant needs Python >= 3.13, newer than the host's),
# which takes a while; later runs reuse it. Then, for one scenario, it starts mosquitto on a free
# port, a fresh Home Assistant, onboards it, adds the MQTT integration through its config flow,
# runs meterbridge against the broker and reports what Home Assistant shows (scripts/ha_check.py).
# Nothing leaves 127.0.0.1 except the package downloads of the first run.
#
# Usage: scripts/ha-check.sh [--scenario demo|fleet] [--duration SECONDS] [--report-only]
#                            [--no-stats-wait] [--out DIR] [--setup-only]
# See docs/home-assistant.md, "Checking against a real Home Assistant".
set -euo pipefail

HA_VERSION="${HA_VERSION:-2026.2.3}"
HA_ROOT="${HA_ROOT:-/var/cache/meterbridge-ha}"
HA_MIRROR="${HA_MIRROR:-http://deb.debian.org/debian}"
CHROOT="$HA_ROOT/trixie"
VENV=/opt/ha-venv # inside the chroot
HOST_CA="${HOST_CA:-/etc/ssl/certs/ca-certificates.crt}"

REPO="$(cd "$(dirname "$0")/.." && pwd)"
scenario=demo
duration=""
report_only=0
setup_only=0
stats_wait=1
if [ "${HA_CHECK_NO_STATS_WAIT:-0}" = 1 ]; then stats_wait=0; fi
out=""

usage() {
  sed -n '12,14p' "$0" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
  case "$1" in
    --scenario) scenario="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --report-only) report_only=1; shift ;;
    --setup-only) setup_only=1; shift ;;
    --no-stats-wait) stats_wait=0; shift ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
case "$scenario" in
  demo) duration="${duration:-90}" ;;
  fleet) duration="${duration:-120}" ;;
  *) echo "--scenario must be demo or fleet" >&2; exit 2 ;;
esac

if [ "$(id -u)" != "0" ]; then
  echo "ha-check.sh needs root (debootstrap, chroot, mounts)" >&2
  exit 2
fi

log() { printf '[ha-check %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# --- the chroot with Home Assistant (built once) -------------------------------------------

mount_chroot() {
  # /proc and /dev are needed by Python (os.cpu_count, /dev/urandom) and by psutil.
  mountpoint -q "$CHROOT/proc" || mount -t proc proc "$CHROOT/proc"
  mountpoint -q "$CHROOT/dev" || mount --bind /dev "$CHROOT/dev"
  mountpoint -q "$CHROOT/sys" || mount --bind /sys "$CHROOT/sys"
}

# shellcheck disable=SC2317 # also called from the EXIT trap
umount_chroot() {
  local m
  for m in sys dev proc; do
    if mountpoint -q "$CHROOT/$m"; then umount -l "$CHROOT/$m" || true; fi
  done
}

# The host's CA bundle (it may hold a proxy's CA) is what pip, uv and aiohttp trust.
CHROOT_ENV=(HOME=/root PATH="$VENV/bin:/usr/sbin:/usr/bin:/sbin:/bin" LANG=C.UTF-8
  SSL_CERT_FILE=/etc/ssl/certs/host-ca.crt PIP_CERT=/etc/ssl/certs/host-ca.crt
  REQUESTS_CA_BUNDLE=/etc/ssl/certs/host-ca.crt UV_NATIVE_TLS=1
  PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180)
in_chroot() {
  chroot "$CHROOT" /usr/bin/env -i "${CHROOT_ENV[@]}" "$@"
}
# For `&`: exec, so that $! is the program itself (chroot and env exec too) and the cleanup
# stops it rather than a subshell.
in_chroot_exec() {
  exec chroot "$CHROOT" /usr/bin/env -i "${CHROOT_ENV[@]}" "$@"
}

setup_chroot() {
  mkdir -p "$HA_ROOT"
  if [ ! -e "$CHROOT/.debootstrap-done" ]; then
    command -v debootstrap >/dev/null 2>&1 || {
      log "installing debootstrap on the host"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    }
    log "debootstrap trixie into $CHROOT (once)"
    rm -rf "$CHROOT"
    debootstrap --variant=minbase \
      --include=python3,python3-venv,python3-dev,gcc,libc6-dev,ca-certificates \
      trixie "$CHROOT" "$HA_MIRROR" >"$HA_ROOT/debootstrap.log" 2>&1 || {
      tail -20 "$HA_ROOT/debootstrap.log" >&2
      exit 1
    }
    touch "$CHROOT/.debootstrap-done"
  fi
  cp "$HOST_CA" "$CHROOT/etc/ssl/certs/host-ca.crt"
  cp /etc/resolv.conf "$CHROOT/etc/resolv.conf" 2>/dev/null || true
  mount_chroot
  if [ ! -e "$CHROOT/.ha-$HA_VERSION-done" ]; then
    log "installing homeassistant==$HA_VERSION into the chroot's venv (once; slow)"
    in_chroot python3 -m venv "$VENV"
    in_chroot "$VENV/bin/pip" install -q --upgrade pip wheel >"$HA_ROOT/pip.log" 2>&1
    in_chroot "$VENV/bin/pip" install "homeassistant==$HA_VERSION" >>"$HA_ROOT/pip.log" 2>&1 || {
      tail -30 "$HA_ROOT/pip.log" >&2
      exit 1
    }
    touch "$CHROOT/.ha-$HA_VERSION-done"
  fi
  if [ ! -e "$CHROOT/.ha-$HA_VERSION-deps-done" ]; then
    # The integrations Home Assistant loads at start (and mqtt, recorder, energy) have their own
    # requirements, which it would otherwise install at its first start; do it here, once.
    log "installing the requirements of the integrations the check uses (once)"
    cp "$REPO/scripts/ha_check.py" "$CHROOT/tmp/ha_check.py"
    in_chroot "$VENV/bin/python" /tmp/ha_check.py requirements >"$CHROOT/tmp/ha-reqs.txt"
    in_chroot "$VENV/bin/pip" install -r /tmp/ha-reqs.txt >>"$HA_ROOT/pip.log" 2>&1 || {
      tail -30 "$HA_ROOT/pip.log" >&2
      exit 1
    }
    touch "$CHROOT/.ha-$HA_VERSION-deps-done"
  fi
}

# --- one run --------------------------------------------------------------------------------

WORK="$CHROOT/work" # /work inside the chroot
RUN="$WORK/$scenario"
out="${out:-$REPO/target/ha-check/$scenario}"
py() { in_chroot "$VENV/bin/python" /work/ha_check.py "$@"; }
py_exec() { in_chroot_exec "$VENV/bin/python" /work/ha_check.py "$@"; }

pids=()
ha_pid=""
# shellcheck disable=SC2317 # called from the EXIT trap
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "$ha_pid" ] && kill -0 "$ha_pid" 2>/dev/null; then
    kill "$ha_pid" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$ha_pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$ha_pid" 2>/dev/null || true
  fi
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  umount_chroot
}

mkdir -p "$HA_ROOT"
# One check at a time per HA_ROOT: they share the chroot and its mounts.
exec 9>"$HA_ROOT/.lock"
flock 9
t_start=$(date +%s)
setup_chroot
if [ "$setup_only" = 1 ]; then
  log "setup done: $CHROOT"
  exit 0
fi
trap cleanup EXIT
# Ctrl-C or kill: exit through the EXIT trap, so nothing is left running or mounted.
trap 'exit 130' INT TERM

log "building meterbridge (cargo build --release)"
(cd "$REPO" && cargo build --release --locked --quiet)
MB="$REPO/target/release/meterbridge"

rm -rf "$RUN"
mkdir -p "$RUN/ha" "$RUN/state"
cp "$REPO/scripts/ha_check.py" "$WORK/ha_check.py"
rm -rf "$WORK/drivers" && cp -r "$REPO/drivers" "$WORK/drivers"
cp "$REPO/tests/fixtures/wmbus/wmbusmeters_driver_tests.jsonl" "$WORK/corpus.jsonl"
py drivers-json --drivers /work/drivers --out /work/drivers.json
read -r MQTT_PORT HA_PORT UDP_PORT BUS_PORT < <(py free-ports 4)

# The broker, on 127.0.0.1 only.
cat >"$RUN/mosquitto.conf" <<EOF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence false
log_dest stdout
log_type error
log_type warning
log_type notice
log_type information
EOF
/usr/sbin/mosquitto -c "$RUN/mosquitto.conf" >"$RUN/mosquitto.log" 2>&1 &
pids+=($!)

# A fresh Home Assistant, its HTTP server on 127.0.0.1 only. No default_config: that would
# start zeroconf and other integrations that talk to the network.
cat >"$RUN/ha/configuration.yaml" <<EOF
homeassistant:
  name: meterbridge check
  unit_system: metric
  time_zone: UTC
  currency: EUR
  country: DE
  latitude: 0
  longitude: 0
  elevation: 0
http:
  server_host: 127.0.0.1
  server_port: $HA_PORT
recorder:
  commit_interval: 1
energy:
history:
logger:
  default: warning
EOF
# Only the loopback adapter: the mDNS resolver of Home Assistant's HTTP client (zeroconf)
# would otherwise join multicast groups on every interface.
mkdir -p "$RUN/ha/.storage"
cat >"$RUN/ha/.storage/core.network" <<EOF
{"version": 1, "minor_version": 1, "key": "core.network", "data": {"configured_adapters": ["lo"]}}
EOF
ha_since="$(date -u +%Y-%m-%dT%H:%M:%S+00:00)"
log "starting Home Assistant $HA_VERSION on 127.0.0.1:$HA_PORT, mosquitto on 127.0.0.1:$MQTT_PORT"
# --skip-pip: the run installs nothing (setup did), so nothing leaves this machine.
(in_chroot_exec "$VENV/bin/python" -m homeassistant -c "/work/$scenario/ha" --skip-pip \
  --log-file "/work/$scenario/ha/home-assistant.log" >"$RUN/ha.stdout" 2>&1) &
ha_pid=$!
py onboard --ha-port "$HA_PORT" --mqtt-port "$MQTT_PORT" --token-file "/work/$scenario/token"
t_ready=$(date +%s)

# When to look: after `duration` seconds, and after Home Assistant's first statistics run
# (every 5 minutes, at second 10) that saw our states, so Energy validation sees statistics.
now=$(date +%s)
snap_at=$((now + duration))
if [ "$stats_wait" = 1 ]; then
  boundary=$(( ((now + 30) / 300 + 1) * 300 + 40 ))
  if [ "$boundary" -gt "$snap_at" ]; then snap_at=$boundary; fi
fi
run_for=$((snap_at - now + 20))

case "$scenario" in
  demo)
    log "meterbridge demo for up to $run_for s (snapshot after $((snap_at - now)) s)"
    "$MB" demo --mqtt "mqtt://127.0.0.1:$MQTT_PORT" --duration "$run_for" >"$RUN/meterbridge.log" 2>&1 &
    mb_pid=$!
    pids+=("$mb_pid")
    ;;
  fleet)
    py fleet --drivers /work/drivers --corpus /work/corpus.jsonl --config "/work/fleet/fleet.yaml" \
      --bus "/work/fleet/bus.yaml" --plan "/work/fleet/plan.json" --state-dir "$RUN/state" \
      --mqtt-port "$MQTT_PORT" --udp-port "$UDP_PORT" --bus-port "$BUS_PORT"
    "$MB" simulate bus --config "$RUN/bus.yaml" --listen "127.0.0.1:$BUS_PORT" \
      >"$RUN/simbus.log" 2>&1 &
    pids+=($!)
    "$MB" check-config "$RUN/fleet.yaml" >"$RUN/check-config.log" 2>&1 || {
      cat "$RUN/check-config.log" >&2
      exit 1
    }
    log "meterbridge run with the fleet for up to $run_for s (snapshot after $((snap_at - now)) s)"
    "$MB" run -c "$RUN/fleet.yaml" --print none >"$RUN/meterbridge.log" 2>&1 &
    mb_pid=$!
    pids+=("$mb_pid")
    sleep 2
    feed_for=$((snap_at - now - 25))
    if [ "$feed_for" -lt 40 ]; then feed_for=40; fi
    (py_exec feed --plan /work/fleet/plan.json --port "$UDP_PORT" --seconds "$feed_for" \
      --rounds 3 >"$RUN/feed.log" 2>&1) &
    pids+=($!)
    ;;
esac

while [ "$(date +%s)" -lt "$snap_at" ]; do
  if ! kill -0 "$mb_pid" 2>/dev/null; then
    log "meterbridge stopped early:"
    tail -20 "$RUN/meterbridge.log" >&2
    exit 1
  fi
  sleep 2
done
log "reading what Home Assistant shows"
py snapshot --ha-port "$HA_PORT" --mqtt-port "$MQTT_PORT" --token-file "/work/$scenario/token" \
  --drivers-json /work/drivers.json --scenario "$scenario" --since "$ha_since" \
  --out "/work/$scenario/snapshot.json"
# Stop meterbridge (its clean shutdown, as at the end of --duration) and give Home Assistant a
# moment to log what the offline status causes.
kill -TERM "$mb_pid" 2>/dev/null || true
wait "$mb_pid" 2>/dev/null || true
sleep 3
kill "$ha_pid" 2>/dev/null || true
wait "$ha_pid" 2>/dev/null || true
ha_pid=""
t_end=$(date +%s)

mkdir -p "$out"
rc=0
report_flags=()
if [ "$report_only" = 1 ]; then report_flags+=(--report-only); fi
if [ "$scenario" = fleet ]; then report_flags+=(--plan /work/fleet/plan.json); fi
py report --snapshot "/work/$scenario/snapshot.json" --drivers-json /work/drivers.json \
  --log "/work/$scenario/ha/home-assistant.log" --out "/work/$scenario" "${report_flags[@]}" || rc=$?
for f in report.json summary.txt snapshot.json meterbridge.log mosquitto.log fleet.yaml bus.yaml \
  plan.json; do
  if [ -e "$RUN/$f" ]; then cp "$RUN/$f" "$out/"; fi
done
cp "$RUN/ha/home-assistant.log" "$out/" 2>/dev/null || true
log "Home Assistant ready after $((t_ready - t_start)) s; whole run $((t_end - t_start)) s; results in $out"
exit "$rc"
