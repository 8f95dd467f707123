#!/usr/bin/env bash
# Many receivers, one meter: the release daemon with 1,000 wireless meters heard by 3 UDP
# receivers at 50 telegrams/s for SECONDS (default 600). Reports duplicates and losses (both must
# be 0), the latency from a telegram's first copy to its reading (settle time included) and the
# daemon's RSS (flat within 1 MB after the first full round of meters).
#   bench/multi_receiver.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
MB_MULTI_SECONDS="$seconds" cargo bench --locked --bench multi_receiver
