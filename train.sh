#!/usr/bin/env bash
# Train as Caffe users do: bash train.sh SOLVER.prototxt [segnet-caffe train flags...]
# e.g.  bash train.sh prototxt/segnet_squares_solver.prototxt --gpu 0
# The log goes to the terminal and to <snapshot_prefix>_<time>.log next to the snapshots.
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: bash train.sh SOLVER.prototxt [--weights W.caffemodel | --snapshot S.solverstate] [--gpu 0] [--iterations N]" >&2
  exit 2
fi
solver=$1
shift
python=${PYTHON:-$(command -v python || command -v python3)}
exec "$python" -m segnet_caffe train --solver "$solver" "$@"
