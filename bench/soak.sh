#!/usr/bin/env bash
# Soak run: simulated wired bus + a simulated iM871A stick + 50 wireless meters over UDP +
# mosquitto for DURATION seconds
# (default 600) at 50x normal rates. Reports readings produced vs published (must be equal)
# and the daemon's RSS at start and end of the soak (must stay flat within 1 MB).
#   bench/soak.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin"
seconds="${1:-600}"
MB_SOAK_SECONDS="$seconds" cargo bench --bench daemon
