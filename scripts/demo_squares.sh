#!/usr/bin/env bash
# The report's squares experiment end to end, on the CPU, in a few minutes: synthesize the
# squares, train the simplified SegNet, recompute BN statistics for inference, test on the
# test squares (metrics + pictures), plot the loss curve and draw the net.
#
#   bash scripts/demo_squares.sh [OUT_DIR] [--size N] [--count N] [--iterations N] [--data DIR]
#                                [--seed N] [--gpu N]
#
# OUT_DIR defaults to runs/demo_squares_<time>; the dataset goes to --data (default
# data/squares_<size>_<count>).
# --size is the image side (default 256, which keeps the demo within minutes on 2 cores; the
# report's is 512; at least the training crops' side, 224), --count the images per split (100),
# --iterations overrides the solver's max_iter, --seed the solver's random_seed (weights, data
# order and crops; default the solver's 0).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-$(command -v python || command -v python3)}
source scripts/pipeline.sh

out="" size=256 count=100 iterations="" data="" gpu="" seed=""
while [ $# -gt 0 ]; do
  case $1 in
    --size) size=$2; shift 2 ;;
    --count) count=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --iterations) iterations=$2; shift 2 ;;
    --gpu) gpu=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) echo "demo_squares.sh: unknown option $1" >&2; exit 2 ;;
    *) out=$1; shift ;;
  esac
done
out=${out:-runs/demo_squares_$(date +%Y%m%d_%H%M%S)}
data=${data:-data/squares_${size}_$count}
iterations=${iterations:-$(sed -n 's/^max_iter: //p' prototxt/segnet_squares_solver.prototxt)}
crop=$(sed -n 's/^ *crop_height: //p' prototxt/segnet_squares_train.prototxt)
if [ "$size" -lt "$crop" ]; then
  echo "demo_squares.sh: --size $size is smaller than the training crops ($crop x $crop px)" >&2
  exit 2
fi
start=$SECONDS

echo "== synthesize $count squares per split ($size x $size) into $data"
"$python" scripts/make_squares.py --out "$data" --size "$size" --count "$count"
"$python" scripts/generate_prototxts.py --data-root "$data" --out "$out/prototxt" \
  --snapshots "$out/snapshots" > /dev/null
run_pipeline segnet_squares "$iterations" 10 "$count"
