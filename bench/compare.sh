#!/usr/bin/env bash
# Alternates `easel bench dcgan --device cpu` and bench/torch_reference.py (PyTorch CPU, same
# networks, same thread count) and prints, per configuration, every run's median step time and
# the ratio of the medians of those medians: easel throughput / PyTorch throughput (> 1 means
# easel is faster).
#
# Usage: bench/compare.sh [ROUNDS (default 3)] [STEPS per run (default 5)]
# Environment:
#   EASEL_BIN           easel binary (default target/release/easel; build it first with
#                       `cargo build --release -p easel-cli`)
#   EASEL_TORCH_PYTHON  python with torch (default /work/venv/bin/python)
#   THREADS             threads for both (default 2; easel gets RAYON_NUM_THREADS)
#   QUICK=1             32×32×1 only
#
# The machine may be shared: the load average before and after each run is printed; compare
# only alternated runs under similar load.
set -euo pipefail

cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
STEPS=${2:-5}
EASEL_BIN=${EASEL_BIN:-target/release/easel}
PY=${EASEL_TORCH_PYTHON:-/work/venv/bin/python}
THREADS=${THREADS:-2}
QUICK_FLAG=()
[[ "${QUICK:-0}" == 1 ]] && QUICK_FLAG=(--quick)

[[ -x "$EASEL_BIN" ]] || { echo "no easel binary at $EASEL_BIN (cargo build --release -p easel-cli)" >&2; exit 1; }
"$PY" -c 'import torch' 2>/dev/null || { echo "$PY cannot import torch (set EASEL_TORCH_PYTHON)" >&2; exit 1; }

OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

load() { cut -d' ' -f1-3 /proc/loadavg; }

echo "compare: $ROUNDS rounds × $STEPS steps, $THREADS threads, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(date -u +%Y-%m-%dT%H:%MZ)"
for r in $(seq 1 "$ROUNDS"); do
    echo "round $r: load $(load) → easel"
    RAYON_NUM_THREADS=$THREADS "$EASEL_BIN" bench dcgan --device cpu --steps "$STEPS" "${QUICK_FLAG[@]}" \
        | tee "$OUT/easel.$r" | sed 's/^/    /'
    echo "round $r: load $(load) → torch"
    "$PY" bench/torch_reference.py --steps "$STEPS" --threads "$THREADS" "${QUICK_FLAG[@]}" \
        | tee "$OUT/torch.$r" | sed 's/^/    /'
done
echo "load at the end $(load)"

# Median step time per configuration ("DCGAN 64×64×3 …" line, then "step time … median X s").
medians() { # file → lines "label<TAB>median"
    awk '/^DCGAN/ { label = $2; sub(/,$/, "", label) } /step time/ { for (i = 1; i <= NF; i++) if ($i == "median") print label "\t" $(i + 1) }' "$1"
}
median_of() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo
printf '%-10s %-28s %-28s %s\n' config "easel medians (s/step)" "torch medians (s/step)" "easel/torch throughput"
for label in $(medians "$OUT/easel.1" | cut -f1); do
    e=$(for r in $(seq 1 "$ROUNDS"); do medians "$OUT/easel.$r"; done | awk -v l="$label" '$1 == l { print $2 }')
    t=$(for r in $(seq 1 "$ROUNDS"); do medians "$OUT/torch.$r"; done | awk -v l="$label" '$1 == l { print $2 }')
    em=$(echo "$e" | median_of)
    tm=$(echo "$t" | median_of)
    ratio=$(awk -v e="$em" -v t="$tm" 'BEGIN { printf "%.2f", t / e }')
    printf '%-10s %-28s %-28s %s  (median %s s vs %s s)\n' "$label" "$(echo $e)" "$(echo $t)" "$ratio" "$em" "$tm"
done
