#!/usr/bin/env bash
# Issue 15's side-by-side quality protocol: train an easel recipe and its PyTorch reference over
# seeds, score both with the same `easel eval` (the easel MNIST classifier's features, 10 000
# samples against the 10 000 MNIST test digits zero-padded to 32 px), and print the table rows.
#
# Usage: bench/quality/run.sh KIND [SEEDS...]      (KIND: dcgan cgan sngan wgan wgan-gp lapgan
#                                                   quickstart)
#        bench/quality/run.sh table                 (rows of every KIND scored so far)
# Environment:
#   OUT             where runs and reports go (default runs/quality)
#   MNIST           the MNIST idx folder (default ../shared/data/mnist)
#   EASEL_BIN       easel binary (default target/release/easel; copied to $OUT/easel once, so a
#                   rebuild does not change a measurement half-way)
#   EASEL_TORCH_PYTHON  python with torch (default /work/venv/bin/python)
#   THREADS         threads per training process (default 1; run two queues side by side on
#                   a 2-core machine: one easel, one PyTorch: STAGE=easel / STAGE=ref)
#   STAGE           easel | ref | eval | all (default all)
# Every stage skips what is already done, so it can be re-run after an interruption.
# quickstart: the embedded shapes (no MNIST needed). The reference trains on the same images, written
# by `easel export-data` per seed (the shapes set is keyed by the run's seed); FID uses a shapes
# classifier (recipes/classifier-shapes.toml on the quick start's shapes, 48 kind × colour classes)
# and the seed's test split as the real set.
set -euo pipefail
cd "$(dirname "$0")/../.."
KIND=${1:?usage: bench/quality/run.sh KIND [SEEDS...] | table}
shift || true
SEEDS=("${@:-1 2 3}")
read -r -a SEEDS <<<"${SEEDS[*]}"
OUT=${OUT:-runs/quality}
MNIST=${MNIST:-../shared/data/mnist}
PY=${EASEL_TORCH_PYTHON:-/work/venv/bin/python}
THREADS=${THREADS:-1}
STAGE=${STAGE:-all}
mkdir -p "$OUT"
if [[ "$KIND" == table ]]; then
  exec python3 bench/quality/table.py "$OUT"
fi
if [[ "$KIND" != quickstart ]]; then
  [[ -d "$MNIST" ]] || { echo "no MNIST idx files at $MNIST (set MNIST=DIR)" >&2; exit 1; }
fi
E="$OUT/easel"
[[ -x "$E" ]] || cp "${EASEL_BIN:-target/release/easel}" "$E"

case "$KIND" in
  dcgan)   recipe=recipes/dcgan-mnist.toml;   ref=(bench/quality/gan.py --kind dcgan --steps 2000) ;;
  cgan)    recipe=recipes/cgan-mnist.toml;    ref=(bench/quality/gan.py --kind cgan --steps 2000) ;;
  sngan)   recipe=recipes/sngan-mnist.toml;   ref=(bench/quality/gan.py --kind sngan --steps 2000) ;;
  wgan)    recipe=recipes/wgan-mnist.toml;    ref=(bench/quality/gan.py --kind wgan --steps 1500) ;;
  wgan-gp) recipe=recipes/wgan-gp-mnist.toml; ref=(bench/quality/gan.py --kind wgan-gp --steps 1500) ;;
  lapgan)  recipe=recipes/lapgan-mnist.toml;  ref=(bench/quality/lapgan.py --steps 3000) ;;
  quickstart) recipe=recipes/quickstart.toml
     ref=(bench/quality/gan.py --kind dcgan --steps 4000 --source folder --image-size 32 --pad 0
          --channels 3 --nz 64 --ngf 64 --ndf 32) ;;
  *) echo "unknown KIND $KIND" >&2; exit 1 ;;
esac
CLS="$OUT/classifier-mnist32"
data=(--set data.dir="$MNIST")
if [[ "$KIND" == quickstart ]]; then
  CLS="$OUT/classifier-shapes-quickstart"
  data=()
fi
load() { cut -d' ' -f1-3 /proc/loadavg; }

if [[ "$STAGE" == all || "$STAGE" == easel ]]; then
  if [[ ! -f "$CLS/final/state.json" ]]; then
    echo "== classifier (the FID extractor): $(date -u +%FT%TZ), load $(load)"
    if [[ "$KIND" == quickstart ]]; then
      RAYON_NUM_THREADS=$THREADS "$E" train recipes/classifier-shapes.toml \
        --set 'data.shapes.size=[0.26, 0.34]' --run-dir "$CLS" -q
    else
      RAYON_NUM_THREADS=$THREADS "$E" train recipes/classifier-mnist.toml "${data[@]}" --run-dir "$CLS" -q
    fi
  fi
  for s in "${SEEDS[@]}"; do
    r="$OUT/easel-$KIND-s$s"
    [[ -f "$r/final/state.json" ]] && continue
    rm -rf "$r"
    echo "== easel $KIND seed $s: $(date -u +%FT%TZ), load $(load)"
    RAYON_NUM_THREADS=$THREADS "$E" train "$recipe" "${data[@]}" --set seed="$s" --run-dir "$r" -q
  done
fi
if [[ "$STAGE" == all || "$STAGE" == ref ]]; then
  for s in "${SEEDS[@]}"; do
    r="$OUT/ref-$KIND-s$s"
    [[ -f "$r/meta.json" ]] && continue
    src=$MNIST
    if [[ "$KIND" == quickstart ]]; then
      src="$OUT/shapes-s$s"  # the images easel trains on with this seed
      [[ -d "$src" ]] || "$E" export-data "$recipe" --set seed="$s" --out "$src" -q
    fi
    echo "== PyTorch $KIND seed $s: $(date -u +%FT%TZ), load $(load)"
    "$PY" "${ref[@]}" --data "$src" --out "$r" --seed "$s" --threads "$THREADS" > "$r.log" 2>&1
  done
fi
if [[ "$STAGE" == all || "$STAGE" == eval ]]; then
  metrics=fid,kid,pr,modes,is
  score() {  # TARGET REPORT [extra eval args]
    local target=$1 report=$2; shift 2
    [[ -f "$report" ]] && return 0
    RAYON_NUM_THREADS=2 "$E" eval "$target" --extractor "classifier:$CLS" --metrics $metrics \
      --n 10000 --device cpu -q --out "$report" --cache-dir "$OUT/cache" "$@" > /dev/null
  }
  testset=(--set data.split=test)
  # shapes: 10 000 test images (the recipe's split has 2 000), of the seed's own set (below)
  [[ "$KIND" == quickstart ]] && testset+=(--set data.shapes.test_count=10000)
  for s in "${SEEDS[@]}"; do
    against=(--against "$recipe" "${data[@]}" "${testset[@]}")
    [[ "$KIND" == quickstart ]] && against+=(--set data.shapes.seed="$s")
    r="$OUT/easel-$KIND-s$s"
    if [[ -f "$r/final/state.json" ]]; then
      score "$r" "$r/quality.json" "${testset[@]}"
      if [[ -f "$r/final/generator_ema.safetensors" ]]; then
        score "$r" "$r/quality-raw.json" "${testset[@]}" --raw
      fi
      # The trained generator sampled with batch statistics (sample_bn = "batch"), as
      # pytorch/examples shows its samples: a copy of final/ with that one key changed.
      b="$r/final-batch-bn"
      if [[ ! -d "$b" && -f "$r/final/generator.safetensors" ]] && grep -q '^sample_bn = "eval"' "$r/final/recipe.toml"; then
        mkdir -p "$b.tmp"
        cp "$r/final/"{state.json,optimizer.safetensors,generator.safetensors} "$b.tmp/"
        sed 's/^sample_bn = "eval"/sample_bn = "batch"/' "$r/final/recipe.toml" > "$b.tmp/recipe.toml"
        mv "$b.tmp" "$b"
      fi
      [[ -d "$b" ]] && score "$b" "$r/quality-batch.json" "${testset[@]}"
    fi
    q="$OUT/ref-$KIND-s$s"
    if [[ -f "$q/meta.json" ]]; then
      score "$q/samples" "$q/quality.json" "${against[@]}"
      [[ -d "$q/batch/samples" ]] && score "$q/batch/samples" "$q/quality-batch.json" "${against[@]}"
    fi
  done
  python3 bench/quality/table.py "$OUT" "$KIND"
fi
