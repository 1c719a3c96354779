#!/usr/bin/env bash
# Download into .whl/ (git-ignored) the wheels a device-tool GPU machine needs beside its image,
# for the `carry` of scripts/camvid_gpu_run.sh (README, "CamVid on a GPU").
#
#   bash scripts/gpu_wheels.sh
#
# The image has Python 3.12 with torch, numpy, OpenCV, Pillow, matplotlib, tqdm, pytest and
# hypothesis, but an older protobuf than segnet_caffe/proto/caffe_pb2.py's generated code accepts
# (it refuses a runtime older than the protobuf that generated it): this fetches the protobuf of
# this environment as a CPython 3.12 x86-64 wheel. grandalf, pydot and lmdb are imported only
# by `draw` and LMDB data layers, which the run does not use.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
version=$("$PY" -c "import google.protobuf; print(google.protobuf.__version__)")
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "protobuf==$version"
ls -l .whl
