#!/usr/bin/env bash
# SegNet-Basic on CamVid on one GPU, in one command that fits the device tool's 10 minutes
# (issue 19): check CUDA, verify the CUDA paths, benchmark, then train on the packed CamVid
# with validation, keeping the best weights.
#
#   bash scripts/camvid_gpu_run.sh [--smoke] [--packed DIR] [--budget SECONDS]
#
# Stages, each timed and logged; a failing one is reported and the next still runs:
#   1. the device: `segnet-caffe device_query --gpu 0` (no CUDA: stop, unless --smoke);
#   2. verification: tests/test_gpu.py (the gpu-marked tests) and the layer and solver tests in
#      GPU mode (-p tests.gpu_mode);
#   3. bench/run.py --device cuda for SegNet-Basic (plain engine, bf16, the data options);
#   4. the recipe (scripts/camvid_gpu_recipe.py): generate_prototxts.py --dataset on DIR, with
#      as many iterations as the benchmark says fit the time left;
#   5. `segnet-caffe train --bf16 --channels_last --keep_best per_class_accuracy --data_cache`,
#      stopped by SIGINT if it outruns the budget (the best weights are already written);
#   6. `segnet-caffe plot` of the training log.
# Writes under $OUT (default runs/camvid_gpu) at most 8 files, each well under 16 MiB, which is
# what the device tool brings back: run.log (all output), train.log, loss.png,
# segnet_basic_best.caffemodel (LEARN-mode BN: compute the BN statistics on the CPU),
# segnet_basic_best.json, bench.json, bench.md, summary.json. Exit status 0 when every stage
# passed.
#
# --packed DIR: the scripts/pack_camvid.py folder (default data/camvid_packed).
# --budget SECONDS: wall time for everything (default 570: the device tool's 600 s per command,
#   less a margin).
# --smoke: every stage in under a minute, on the CPU when there is no GPU: the gpu tests
#   (skipped there), a few solver tests, a quick training benchmark, 3 iterations of batch 1 on
#   2 images.
# PYTHON: the interpreter (default python3); the repository goes on PYTHONPATH, so the package
# need not be installed (a GPU machine's image has torch; carry a newer protobuf as a wheel, as
# the README's "CamVid on a GPU" says).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

SMOKE=0
PACKED=data/camvid_packed
BUDGET=570
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) SMOKE=1; shift ;;
        --packed) PACKED=${2:?--packed needs a folder}; shift 2 ;;
        --budget) BUDGET=${2:?--budget needs seconds}; shift 2 ;;
        -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
        *) echo "camvid_gpu_run.sh: unknown argument \"$1\" (see --help)" >&2; exit 2 ;;
    esac
done
OUT=${OUT:-runs/camvid_gpu}
PY=${PYTHON:-python3}
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

# The recipe (stage 4). SGD with momentum 0.9 and weight decay 5e-4 as the SegNet paper, base_lr
# 0.1 as its tutorial (which used batch 4): Caffe's loss is a mean over the batch's pixels, so
# the step's size does not grow with the batch, and 0.1 was stable in the tutorial's 10,000
# iterations. Batch 16: an H200 is far from full at batch 4 (training SegNet-Basic on one
# 360x480 image peaks at 1.2 GiB on the CPU, bench/results/cpu.md; the H200 has 141 GiB), while
# 16 still gives ~23 updates per epoch of 367 images. The learning rate decays by "poly" (power 0.9) to 0 at max_iter, which the recipe
# sizes from the benchmark's measured bf16 training images/s so that the decay ends inside the
# budget (a step schedule would need the run's length in advance as well, and is no better for
# a run of ~100 epochs). Random mirroring doubles the views of the 367 images.
BATCH=16
LR=0.1
POWER=0.9
WORKERS=8           # decoding threads (the H200 machine has 16 cores); the cache does the rest
TESTS_S=120         # stage 2's limit
BENCH_S=200         # stage 3's limit (its bf16 training case, which sizes the run, comes last;
                    # the recipe falls back on the plain engine's, measured before it)
RESERVE_S=40        # after training: the plot, the summary, a margin
GPU_TESTS=(tests/test_gpu.py tests/test_layers_vision.py tests/test_layers_structure.py
           tests/test_layers_neurons_losses.py tests/test_layers_data.py tests/test_solver.py)
BENCH=(--device cuda --nets segnet_basic --variants bf16 data_cache data_workers)
if [ "$SMOKE" = 1 ]; then
    WORKERS=2 TESTS_S=60 BENCH_S=60
    GPU_TESTS=(tests/test_gpu.py tests/test_solver.py -k "gpu or learning_rate_policies")
    BENCH=(--quick --nets segnet_basic --variants engine --kinds train)
fi

mkdir -p "$OUT"
FILES=(run.log train.log loss.png segnet_basic_best.caffemodel segnet_basic_best.json bench.json
       bench.md summary.json)
for name in "${FILES[@]}"; do rm -f "$OUT/$name"; done
WORK=$(mktemp -d "${TMPDIR:-/tmp}/camvid_gpu.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
START=$SECONDS
declare -A STATUS SECONDS_TAKEN

say() { echo "[camvid_gpu_run $(( SECONDS - START )) s] $*"; }

stage() {  # stage NAME COMMAND...: run it, record its exit status and time, go on either way
    local name=$1 started=$SECONDS status=0
    shift
    say "$name: $*"
    "$@" || status=$?
    STATUS[$name]=$status
    SECONDS_TAKEN[$name]=$(( SECONDS - started ))
    say "$name: exit status $status after ${SECONDS_TAKEN[$name]} s"
}

main() {
    say "OUT=$OUT, packed data $PACKED, budget $BUDGET s$([ "$SMOKE" = 1 ] && echo ", --smoke")"
    if ! "$PY" -c "import segnet_caffe" 2>"$WORK/import.err"; then
        say "cannot import segnet_caffe with $PY: $(tail -1 "$WORK/import.err") (on a GPU machine: carry the wheels the README's \"CamVid on a GPU\" names)"
        return 1
    fi
    if [ ! -f "$PACKED/dataset.json" ]; then
        say "no packed CamVid at $PACKED: run python scripts/pack_camvid.py (and carry the folder)"
        return 1
    fi

    # 1. The device.
    local gpu_flag=()
    stage device "$PY" -m segnet_caffe device_query --gpu 0
    if [ "${STATUS[device]}" = 0 ]; then
        gpu_flag=(--gpu 0)
    elif [ "$SMOKE" = 1 ]; then
        STATUS[device]=0
        say "no CUDA device: --smoke runs on the CPU"
    else
        say "no CUDA device: stopping (bash scripts/camvid_gpu_run.sh --smoke checks this script on the CPU)"
        return 1
    fi

    # 2. Verification of the CUDA paths, before anything depends on them.
    stage tests timeout "$TESTS_S" "$PY" -m pytest -q -p tests.gpu_mode "${GPU_TESTS[@]}"

    # 3. The benchmark: GPU figures, and the training rate the recipe sizes the run by.
    stage bench timeout "$BENCH_S" "$PY" bench/run.py "${BENCH[@]}" --camvid "$PACKED" \
        --out "$WORK/bench" --case-timeout 120
    cp "$WORK"/bench/*.json "$OUT/bench.json" 2>/dev/null || say "bench: no results file"
    cp "$WORK"/bench/*.md "$OUT/bench.md" 2>/dev/null || true

    # 4. The recipe, sized to the time left.
    local train_s=$(( BUDGET - (SECONDS - START) - RESERVE_S ))
    local smoke_flag=()
    [ "$SMOKE" = 1 ] && smoke_flag=(--smoke)
    stage recipe "$PY" scripts/camvid_gpu_recipe.py --packed "$PACKED" --out "$WORK/prototxt" \
        --snapshots "$OUT" --seconds "$train_s" --bench "$OUT/bench.json" --batch "$BATCH" \
        --lr "$LR" --power "$POWER" "${smoke_flag[@]}"
    [ "${STATUS[recipe]}" = 0 ] || return 1
    cat "$WORK/prototxt/segnet_basic_solver.prototxt"

    # 5. Training; SIGINT at the budget stops it after the current iteration (exit status 124).
    train_s=$(( BUDGET - (SECONDS - START) - RESERVE_S ))
    stage train timeout -s INT -k 30 "$train_s" "$PY" -m segnet_caffe train \
        --solver "$WORK/prototxt/segnet_basic_solver.prototxt" "${gpu_flag[@]}" --bf16 \
        --channels_last --keep_best per_class_accuracy --data_cache --data_workers "$WORKERS" \
        --log_file "$OUT/train.log"
    if [ "${STATUS[train]}" = 124 ] && [ -f "$OUT/segnet_basic_best.json" ]; then
        say "train: stopped at the time budget; the best weights so far are kept"
        STATUS[train]=0
    fi

    # 6. The loss curve.
    stage plot "$PY" -m segnet_caffe plot "$OUT/train.log" "$OUT/loss.png"
    summarise
}

summarise() {  # summary.json: stages, best weights, the files and their limits
    local stages=""
    for name in device tests bench recipe train plot; do
        stages+="$name ${STATUS[$name]:-not_run} ${SECONDS_TAKEN[$name]:-0} "
    done
    "$PY" - "$OUT" "$SMOKE" "$(( SECONDS - START ))" $stages <<'EOF'
import json, os, sys
out, smoke, total, rest = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), sys.argv[4:]
stages = {rest[i]: {"exit_status": rest[i + 1], "seconds": int(rest[i + 2])}
          for i in range(0, len(rest), 3)}
best_path = os.path.join(out, "segnet_basic_best.json")
best = json.load(open(best_path)) if os.path.exists(best_path) else None
files = {name: os.path.getsize(os.path.join(out, name)) for name in sorted(os.listdir(out))}
files["summary.json"] = 0
problems = [f"stage {name} exit status {s['exit_status']}" for name, s in stages.items()
            if s["exit_status"] != "0"]
problems += [f"{name}: {size / 2**20:.1f} MiB, over 16 MiB" for name, size in files.items()
             if size > 16 * 2**20]
if len(files) > 8:
    problems.append(f"{len(files)} files under {out}, over 8")
if best is None:
    problems.append("no best weights (segnet_basic_best.json)")
summary = {"smoke": smoke, "seconds": total, "stages": stages, "best": best,
           "files": files, "ok": not problems, "problems": problems}
with open(os.path.join(out, "summary.json"), "w") as stream:
    json.dump(summary, stream, indent=1)
print(json.dumps(summary, indent=1))
sys.exit(0 if not problems else 1)
EOF
}

main 2>&1 | tee "$OUT/run.log"
