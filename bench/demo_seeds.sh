#!/usr/bin/env bash
# The squares demo's targets over several solver seeds: for each seed, `bash
# scripts/demo_squares.sh --seed S` (time, scores on its 100 test squares), then its weights on
# the report author's 100 test squares at 512x512 (../shared/data/seed_squares, where present).
# Prints a Markdown table (and writes it to OUT/seeds.md) headed by the CPU it ran on.
#
#   bash bench/demo_seeds.sh [OUT_DIR] [--seeds "0 1 2"]
#
# The demo's targets: mean IoU >= 0.97 on its test squares, >= 0.95 on the author's, under
# 5 minutes end to end on an idle 2-core machine, for every seed.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-$(command -v python || command -v python3)}
out="" seeds="0 1 2"
while [ $# -gt 0 ]; do
  case $1 in
    --seeds) seeds=$2; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) echo "demo_seeds.sh: unknown option $1" >&2; exit 2 ;;
    *) out=$1; shift ;;
  esac
done
out=${out:-runs/demo_seeds_$(date +%Y%m%d_%H%M%S)}
seed_squares=../shared/data/seed_squares
mkdir -p "$out"

miou() { "$python" -c "import json, sys; print(f\"{json.load(open(sys.argv[1]))['mean_iou']:.4f}\")" "$1"; }

{
  echo "CPU: $("$python" -c 'from segnet_caffe import hardware; print(hardware.describe())')"
  caps=$(env | grep -E '^(ONEDNN_MAX_CPU_ISA|ATEN_CPU_CAPABILITY)=' | tr '\n' ' ' || true)
  echo "Command: ${caps}bash bench/demo_seeds.sh --seeds \"$seeds\" at commit $(git rev-parse --short HEAD)"
  echo
  echo "| seed | demo time (s) | mean IoU, 100 test squares | mean IoU, author's 100 test squares (512x512) |"
  echo "|---|---|---|---|"
} > "$out/seeds.md"
for seed in $seeds; do
  run=$out/seed_$seed
  started=$SECONDS
  bash scripts/demo_squares.sh "$run" --seed "$seed" > "$run.log" 2>&1
  took=$((SECONDS - started))
  theirs="absent"
  if [ -d "$seed_squares" ]; then
    "$python" scripts/generate_prototxts.py --data-root "$seed_squares" --out "$run/seed_prototxt" \
      > /dev/null
    "$python" scripts/test_segmentation_camvid.py \
      --model "$run/seed_prototxt/segnet_squares_inference.prototxt" \
      --weights "$run/bn/test_weights.caffemodel" --iter 100 --samples 0 --out "$run/seed_test" \
      >> "$run.log" 2>&1
    theirs=$(miou "$run/seed_test/metrics.json")
  fi
  echo "| $seed | $took | $(miou "$run/test/metrics.json") | $theirs |" >> "$out/seeds.md"
done
cat "$out/seeds.md"
