#!/usr/bin/env bash
# What training on the packed CamVid (JPEG quality 95 images, scripts/pack_camvid.py) costs
# against the original PNGs: two short CPU runs of SegNet-Basic, identical but for the images
# they read (same prototxts, seed, data order, iterations), each scored on the 101 val images
# as PNGs, with BN statistics from the same first 40 training PNGs. --noise adds a third run,
# the PNGs again with another seed: the spread of such short runs, against which to read the
# first two.
#
#   bash bench/camvid_jpeg_cost.sh [--iterations 40] [--batch 4] [--noise] [--camvid DIR]
#                                  [--out DIR]
#
# Writes OUT (default runs/camvid_jpeg_cost)/<run>/val/metrics.json and prints the scores and
# how far the JPEGs are from the PNGs (PSNR). A run whose final weights exist is not trained
# again.
set -euo pipefail
cd "$(dirname "$0")/.."
ITERATIONS=40
BATCH=4
CAMVID=../shared/data/camvid
OUT=runs/camvid_jpeg_cost
RUNS="jpeg png"
while [ $# -gt 0 ]; do
    case "$1" in
        --iterations) ITERATIONS=$2; shift 2 ;;
        --batch) BATCH=$2; shift 2 ;;
        --noise) RUNS="jpeg png png_seed1"; shift ;;
        --camvid) CAMVID=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        *) echo "camvid_jpeg_cost.sh: unknown argument \"$1\"" >&2; exit 2 ;;
    esac
done
PACKED=$OUT/packed
mkdir -p "$OUT"
[ -f "$PACKED/dataset.json" ] || python scripts/pack_camvid.py "$CAMVID" --out "$PACKED"

# One set of prototxts from the packed dataset (its class weights, from the same labels), and
# twins reading the PNGs: the training net (the only difference between the runs), the first
# 40 training images in order for the BN statistics, and the val images for the scores.
python scripts/generate_prototxts.py --dataset "$PACKED" --model segnet_basic --batch "$BATCH" \
    --max-iter "$ITERATIONS" --out "$OUT/prototxt" --snapshots "$OUT/snapshots"
P=$OUT/prototxt
to_png() {  # to_png LIST IN OUT: the net IN reading CAMVID/LIST instead of PACKED/LIST
    sed -e "s|source: \"$PACKED/$1\"|source: \"$CAMVID/$1\"|" \
        -e "s|root_folder: \"$PACKED/\"|root_folder: \"$CAMVID/\"|" "$2" > "$3"
    grep -q "source: \"$CAMVID/$1\"" "$3"
}
to_png train.txt "$P/segnet_basic_train.prototxt" "$P/segnet_basic_train_png.prototxt"
to_png val.txt "$P/segnet_basic_inference.prototxt" "$P/segnet_basic_val_png.prototxt"
sed -e "s|shuffle: true|shuffle: false|" "$P/segnet_basic_train_png.prototxt" \
    > "$P/segnet_basic_bn_png.prototxt"

for run in $RUNS; do
    net=$P/segnet_basic_train_png.prototxt
    seed=0
    [ "$run" = jpeg ] && net=$P/segnet_basic_train.prototxt
    [ "$run" = png_seed1 ] && seed=1
    sed -e "s|^net: .*|net: \"$net\"|" \
        -e "s|snapshot_prefix: .*|snapshot_prefix: \"$OUT/$run/segnet_basic\"|" \
        "$P/segnet_basic_solver.prototxt" > "$P/solver_$run.prototxt"
    mkdir -p "$OUT/$run"
    weights=$OUT/$run/segnet_basic_iter_$ITERATIONS.caffemodel
    if [ ! -f "$weights" ]; then
        start=$SECONDS
        nice -n 10 python -m segnet_caffe train --solver "$P/solver_$run.prototxt" \
            --seed "$seed" --bf16 --log_file "$OUT/$run/train.log" --overwrite_snapshots
        echo "$run: trained in $(( SECONDS - start )) s"
    fi
    nice -n 10 python scripts/compute_bn_statistics.py "$P/segnet_basic_bn_png.prototxt" \
        "$weights" "$OUT/$run/bn" --iterations $(( 40 / BATCH ))
    nice -n 10 python scripts/test_segmentation_camvid.py \
        --model "$P/segnet_basic_val_png.prototxt" --weights "$OUT/$run/bn/test_weights.caffemodel" \
        --iter 101 --out "$OUT/$run/val" --samples 0
done

python - "$OUT" "$CAMVID" "$PACKED" $RUNS <<'PYTHON'
import json
import sys
from pathlib import Path

import cv2
import numpy as np

out, camvid, packed, runs = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:]
for run in runs:
    m = json.loads(Path(f"{out}/{run}/val/metrics.json").read_text())
    print(f"{run}: global {m['global_accuracy']:.4f}, class average "
          f"{m['class_average_accuracy']:.4f}, mean IoU {m['mean_iou']:.4f}")
errors = []
for line in (packed / "train.txt").read_text().splitlines():
    image = line.split()[0]
    jpeg = cv2.imread(str(packed / image)).astype(np.float64)
    png = cv2.imread(str(camvid / image.replace(".jpg", ".png"))).astype(np.float64)
    errors.append(((jpeg - png) ** 2).mean())
mse = float(np.mean(errors))
print(f"JPEG against PNG over {len(errors)} training images: PSNR "
      f"{10 * np.log10(255 ** 2 / mse):.1f} dB, RMS error {mse ** 0.5:.2f} grey levels")
PYTHON
