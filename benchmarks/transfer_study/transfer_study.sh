#!/usr/bin/env bash
# The full transfer study (issue 18), arm after arm, each resumable: rerun this script and
# every finished run is read from its folder's cache. Writes under
# benchmarks/transfer_study/results/ and appends each arm's CPU time and wall time to
# transfer_study_timing.log there.
# Planned: 2.5 h on 2 cores of the slower (AMD EPYC) VM (tests/study/test_transfer_archs.py).
#   usage: benchmarks/transfer_study/transfer_study.sh [ARM ...]   (default: all, in this order)
#   arms:  mlp tokens joint-mlp transformer joint-transformer
set -euo pipefail
cd "$(dirname "$0")/../.."
out=benchmarks/transfer_study/results
python=${PYTHON:-python}
declare -A flags=(
    [mlp]=""
    [tokens]="--tokens"
    [joint-mlp]="--joint"
    [transformer]="--arch transformer"
    [joint-transformer]="--joint --arch transformer"
)
arms=("$@")
[ ${#arms[@]} -eq 0 ] && arms=(mlp tokens joint-mlp transformer joint-transformer)
for arm in "${arms[@]}"; do
    [ -n "${flags[$arm]+x}" ] || { echo "unknown arm $arm (arms: ${!flags[*]})" >&2; exit 2; }
    echo "=== $arm: $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)" \
        | tee -a "$out/transfer_study_timing.log"
    # shellcheck disable=SC2086  # the flags are words
    /usr/bin/time -f "$arm: %e s wall, %U + %S core-s (user + sys), %P CPU" -a \
        -o "$out/transfer_study_timing.log" \
        "$python" -m scaled_decay transfer ${flags[$arm]} --out "$out/$arm" --no-progress \
        --workers 2
done
