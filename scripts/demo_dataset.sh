#!/usr/bin/env bash
# A dataset of one's own end to end: generate a model's prototxts for it, train, recompute BN
# statistics, test on its test list with its own class names and colours (metrics + pictures),
# plot the loss and draw the net; with --images and --labels, prepare the dataset first.
#
#   bash scripts/demo_dataset.sh OUT [MODEL] [--run DIR] [--iterations N] [--batch N]
#        [--size HxW] [--lr X] [--seed N] [--gpu N]
#        [--images DIR --labels DIR [--palette FILE.json] [--split 0.8,0.1,0.1]]
#
# OUT is a folder written by scripts/prepare_dataset.py (with --images/--labels this script runs
# it into OUT first); MODEL is segnet_basic (default), segnet, bayesian_segnet_basic,
# bayesian_segnet or segnet_squares. The run goes to --run (default
# runs/<OUT's name>_<MODEL>_<time>): prototxt/, snapshots/, train.log, bn/, test/ (metrics.json,
# sample_*.png, confusion_matrix.png), loss.png, net.png. --iterations defaults to the solver's
# max_iter (10000 for SegNet-Basic: hours on a GPU, days on a CPU); --seed is the solver's
# random_seed (weights and data order).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-$(command -v python || command -v python3)}
source scripts/pipeline.sh

usage() { awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; }
dataset="" model="" out="" iterations="" batch=4 size="" lr="" seed="" gpu=""
images="" labels="" palette="" split=""
while [ $# -gt 0 ]; do
  case $1 in
    --run) out=$2; shift 2 ;;
    --iterations) iterations=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --lr) lr=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --gpu) gpu=$2; shift 2 ;;
    --images) images=$2; shift 2 ;;
    --labels) labels=$2; shift 2 ;;
    --palette) palette=$2; shift 2 ;;
    --split) split=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "demo_dataset.sh: unknown option $1" >&2; exit 2 ;;
    *) if [ -z "$dataset" ]; then dataset=$1; elif [ -z "$model" ]; then model=$1;
       else echo "demo_dataset.sh: unexpected argument $1" >&2; exit 2; fi; shift ;;
  esac
done
if [ -z "$dataset" ]; then usage >&2; exit 2; fi
if [ -n "$images$labels" ] && [ -z "$images" -o -z "$labels" ]; then
  echo "demo_dataset.sh: give --images and --labels together" >&2; exit 2
fi
dataset=${dataset%/}
model=${model:-segnet_basic}
out=${out:-runs/$(basename "$dataset")_${model}_$(date +%Y%m%d_%H%M%S)}
start=$SECONDS

if [ -n "$images" ]; then
  echo "== prepare $images + $labels into $dataset"
  "$python" scripts/prepare_dataset.py --images "$images" --labels "$labels" --out "$dataset" \
    ${palette:+--palette "$palette"} ${split:+--split "$split"}
fi
echo "== generate $model for $dataset into $out/prototxt"
"$python" scripts/generate_prototxts.py --dataset "$dataset" --model "$model" \
  --out "$out/prototxt" --snapshots "$out/snapshots" --batch "$batch" \
  ${size:+--size "$size"} ${lr:+--lr "$lr"} ${iterations:+--max-iter "$iterations"}
iterations=${iterations:-$(sed -n 's/^max_iter: //p' "$out/prototxt/${model}_solver.prototxt")}
read -r train_count test_count < <("$python" -c 'import json, sys
counts = json.load(open(sys.argv[1] + "/dataset.json"))["counts"]
print(counts["train"], counts["test"])' "$dataset")
classes=$dataset/dataset.json
run_pipeline "$model" "$iterations" $(((train_count + batch - 1) / batch)) "$test_count"
