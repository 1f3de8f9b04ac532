#!/usr/bin/env bash
# Reproduces the numbers and grids of bench/results-latent.md (issue 6).
#   bench/latent_check.sh [EASEL] [SHAPES_RUN] [MNIST_RUN]
# Needs a trained quickstart DCGAN (SHAPES_RUN, default runs/qs-final) and MNIST DCGAN (MNIST_RUN,
# default runs/bench-dcgan-mnist2); trains the shapes attribute classifier if runs/classifier-shapes
# is missing (≈ 5 minutes on 2 busy cores). Everything is seeded: a rerun prints the same numbers.
set -euo pipefail
E=${1:-target/release/easel}
Q=${2:-runs/qs-final}
M=${3:-runs/bench-dcgan-mnist2}
C=runs/classifier-shapes
D="--device cpu"

[ -f $C/final/state.json ] || $E train recipes/classifier-shapes.toml $D --run-dir $C

# The contact sheet first: the ids below assume the bank order sheet (0..64), then the pools.
$E sample $Q --n 64 --sheet --seed 1 $D

# Point 2: concept arithmetic on shapes, confirmed by the classifier (pools: ids 64..2064 seed 1,
# 2064..4064 seed 2, 4064..6064 seed 3, 6064..12064 seed 4).
check() { $E latent check $Q --classifier $C $D "$@"; }
check --plus red-circle --minus red-square --plus blue-square --expect blue-circle --trials 50
check --plus red-circle --minus red-square --plus blue-square --expect blue-circle --trials 50 --seed 2
check --plus red-circle --minus red-square --plus blue-square --expect blue-circle --trials 50 --seed 3
for k in 1 8; do
  check --plus red-circle --minus red-square --plus blue-square --expect blue-circle --trials 50 \
        --per-concept $k --out $Q/samples/latent/check-blue-circle-s1-k$k.png
done
check --plus blue-circle --minus blue-square --plus red-square --expect red-circle --trials 50
check --plus yellow-circle --minus yellow-square --plus green-square --expect green-circle --trials 50 --pool 6000 --seed 4
check --plus green-star --minus green-diamond --plus white-diamond --expect white-star --trials 50 --pool 6000 --seed 4

# Shapes grids: one classifier-picked triple (trial 4 of the first check), interpolation and a
# colour direction between ids of the contact sheet.
$E latent arith $Q --plus 488,620,1076 --minus 182,1223,1216 --plus 113,1890,1800 $D
$E latent interpolate $Q --from 11,1,33,30 --to 1,30,47,62 --steps 9 --slerp $D
$E latent direction $Q --pos 1,37,55,63 --neg 11,13,42,24 --apply 13,42,0 --steps 7 --span=-0.5,1 $D

# Point 3: the MNIST DCGAN (ids picked by eye from the two contact sheets).
$E sample $M --n 64 --sheet --seed 1 $D
$E sample $M --n 96 --sheet --seed 2 $D
$E latent interpolate $M --from 0,12,16,69 --to 6,35,62,77 --steps 9 --slerp $D
$E latent interpolate $M --from 0,12,16,69 --to 6,35,62,77 --steps 9 $D
$E latent arith $M --plus 89,66,77 --minus 64,76,141 --plus 69,99,116 $D
$E latent direction $M --pos 89,66,77,58 --neg 64,76,141,12 --apply 69,16,6 --steps 7 --span=-0.5,1 $D
