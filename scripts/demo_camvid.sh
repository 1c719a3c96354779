#!/usr/bin/env bash
# SegNet-Basic on CamVid end to end: check the dataset and compute its median-frequency class
# weights, train, recompute BN statistics, test (metrics + pictures), plot, draw.
#
#   bash scripts/demo_camvid.sh CAMVID_DIR [OUT_DIR] [--iterations N] [--test-batches N]
#                               [--model segnet_basic|segnet|bayesian_segnet_basic|...] [--gpu N]
#
# CAMVID_DIR is in the SegNet tutorial layout (train/ trainannot/ ... and list files).
# Defaults: the solver's max_iter (10000: days on a CPU, hours on a GPU), the 233 test images;
# a short CPU check: --iterations 20 --test-batches 10.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-$(command -v python || command -v python3)}
source scripts/pipeline.sh

camvid="" out="" iterations="" test_batches=233 model=segnet_basic gpu=""
while [ $# -gt 0 ]; do
  case $1 in
    --iterations) iterations=$2; shift 2 ;;
    --gpu) gpu=$2; shift 2 ;;
    --test-batches) test_batches=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) echo "demo_camvid.sh: unknown option $1" >&2; exit 2 ;;
    *) if [ -z "$camvid" ]; then camvid=$1; else out=$1; fi; shift ;;
  esac
done
if [ -z "$camvid" ]; then awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0" >&2; exit 2; fi
camvid=${camvid%/}
out=${out:-runs/demo_camvid_$(date +%Y%m%d_%H%M%S)}
iterations=${iterations:-$(sed -n 's/^max_iter: //p' "prototxt/${model}_solver.prototxt")}
start=$SECONDS

echo "== check $camvid and compute its class weights"
"$python" scripts/prepare_camvid.py "$camvid" --out "$out/lists"
"$python" scripts/generate_prototxts.py --camvid-root "$camvid" --camvid-lists "$out/lists" \
  --out "$out/prototxt" --snapshots "$out/snapshots" \
  --class-weights "$out/lists/class_weights.json" > /dev/null
run_pipeline "$model" "$iterations" 10 "$test_batches"
