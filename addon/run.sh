#!/usr/bin/with-contenv bashio
# shellcheck shell=bash
# The add-on's s6 service: writes /data/meterbridge.yaml from the add-on's options and the
# Supervisor's MQTT service, then runs the gateway as an unprivileged user. Secrets only ever
# travel through files readable by root (options.json, the 0600 service file and the 0600
# configuration), never through a command line, which every process can read in /proc.
set -euo pipefail

readonly OPTIONS=/data/options.json
readonly CONFIG=/data/meterbridge.yaml
readonly RUN_USER=meterbridge

service_file=""
cleanup() {
  if [ -n "${service_file}" ]; then rm -f "${service_file}"; fi
}
trap cleanup EXIT

# The Supervisor names the container after the add-on's slug, with - for _: the gateway device in
# Home Assistant links to the page through ingress with it.
args=(addon-config --options "${OPTIONS}" --output "${CONFIG}" --state-dir /data --ingress-slug "${HOSTNAME//-/_}")
if bashio::services.available mqtt; then
  # mktemp creates the file 0600; umask keeps it so should bashio recreate it.
  umask 077
  service_file="$(mktemp /tmp/mqtt-service.XXXXXX)"
  # Without a key, bashio prints the whole service document as JSON.
  bashio::services mqtt >"${service_file}"
  args+=(--mqtt-service "${service_file}")
else
  bashio::log.info "No MQTT broker service; using the add-on's mqtt options, if any."
fi

if ! meterbridge "${args[@]}"; then
  bashio::exit.nok "The add-on's options could not be turned into a configuration (see above)."
fi
cleanup
service_file=""

# The serial devices the Supervisor mapped in belong to a group (dialout, uucp …) whose number
# differs between hosts: give the service user that group, whatever it is called here.
devices="$(jq -r '[(.buses // [])[], (.receivers // [])[]] | .[] | .device // empty' "${OPTIONS}")"
while IFS= read -r device; do
  [ -n "${device}" ] || continue
  if [ ! -e "${device}" ]; then
    bashio::log.warning "${device} does not exist; is the stick or converter plugged in?"
    continue
  fi
  gid="$(stat -L -c %g "${device}")"
  group="$(awk -F: -v gid="${gid}" '$3 == gid { print $1; exit }' /etc/group)"
  if [ -z "${group}" ]; then
    group="tty${gid}"
    addgroup -g "${gid}" "${group}"
  fi
  addgroup "${RUN_USER}" "${group}" 2>/dev/null || true
done <<<"${devices}"

# The gateway keeps its state in /data and reads the configuration written above; the
# Supervisor's options.json stays root's.
find /data ! -path "${OPTIONS}" -exec chown "${RUN_USER}:${RUN_USER}" {} +

bashio::log.info "Starting meterbridge as user ${RUN_USER}"
exec s6-setuidgid "${RUN_USER}" meterbridge run --config "${CONFIG}"
