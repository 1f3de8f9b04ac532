#!/usr/bin/env bash
# Seconds per iteration of `easel transfer` (L-BFGS and Adam, 256 and 512 px) and of the same
# VGG19 + loss step in PyTorch CPU (bench/transfer_torch.py), on chelsea + Starry Night with the
# real VGG19. Run from the workspace root after `cargo build --release`:
#
#   bench/transfer_bench.sh [EASEL_BINARY] [ITERS_256] [ITERS_512]
#
# easel's time per iteration is read from the loss log: (t_N − t_0) / N, where t_0 is stamped
# after the first evaluation, so the set-up (weights, targets, first forward) is excluded; per
# evaluation the median and minimum over iterations 2..N are printed too (the minimum estimates
# the unloaded speed on a shared machine; bench/transfer_torch.py prints the same for PyTorch).
set -euo pipefail
EASEL=${1:-target/release/easel}
N256=${2:-20}
N512=${3:-10}
SHARED=${SHARED:-../shared}
VGG=$SHARED/weights/vgg19_features_caffe_bgr_f32.safetensors
CONTENT=$SHARED/images/content/skimage-chelsea.png
STYLE=$SHARED/images/style/opencv-starry_night.jpg
OUT=${OUT:-runs/transfer/bench}
PY=${PY:-/work/venv/bin/python}
mkdir -p "$OUT"
echo "# $(date -Is) $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for size in 256 512; do
  iters=$N256; [ "$size" = 512 ] && iters=$N512
  for opt in lbfgs adam; do
    "$EASEL" transfer --content "$CONTENT" --style "$STYLE" --vgg "$VGG" --device cpu \
      --scales "$size" --iters "$iters" --optimizer "$opt" --quiet --out "$OUT/$opt-$size.png" >/dev/null
    "$PY" - "$OUT/$opt-$size.losses.jsonl" "$opt" "$size" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
n = rows[-1]["iter"]
dt = rows[-1]["seconds"] - rows[0]["seconds"]
evals = sum(r["evals"] for r in rows[1:])
# Per-iteration times after the first iteration (L-BFGS's first step is a special, short one);
# per evaluation, since an L-BFGS iteration may evaluate more than once.
per_eval = [(b["seconds"] - a["seconds"]) / b["evals"] for a, b in zip(rows[1:], rows[2:])]
print(f"easel {sys.argv[2]:5s} {sys.argv[3]}px: {dt / n:.3f} s/iter, {evals / n:.2f} evals/iter over "
      f"{n} iterations; per eval median {statistics.median(per_eval):.3f} (min {min(per_eval):.3f}) s; "
      f"loss at the content image {rows[0]['total']:.6e} (style {rows[0]['style']:.6e})")
EOF
  done
done
echo "# load after easel: $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" bench/transfer_torch.py --vgg "$VGG" --content "$CONTENT" --style "$STYLE" --sizes 256,512 --reps 5
echo "# load after torch: $(cut -d' ' -f1-3 /proc/loadavg)"
