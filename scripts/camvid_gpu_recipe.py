"""The training recipe of scripts/camvid_gpu_run.sh: SegNet-Basic on the packed CamVid, as
prototxts real Caffe reads, with as many iterations as fit a time budget.

    python scripts/camvid_gpu_recipe.py --packed DIR --out DIR --snapshots DIR --seconds S
        [--bench BENCH.json] [--batch 16] [--lr 0.1] [--power 0.9] [--smoke]

1. Iterations: the training images/s that bench/run.py measured at this batch (its bf16 variant,
   else the plain engine; else a guess of 100 images/s, said on stderr), times the seconds left
   for training after a start-up allowance (net building, cuDNN's kernel choice, the first
   decode of the images), times 0.8 for what the benchmark does not see (validation passes,
   logging); then within 50..8000 iterations.
2. The prototxts: scripts/generate_prototxts.py --dataset DIR --model segnet_basic --batch
   --lr --max-iter --val-interval (a tenth of the run), which writes the training, validation
   (the val list, batch 1) and inference nets and the SGD solver (momentum 0.9, weight decay
   5e-4), snapshot_prefix SNAPSHOTS/segnet_basic.
3. On top, fields real Caffe reads: lr_policy "poly" (power --power) in place of the fixed rate;
   no periodic snapshots and none after training (`segnet-caffe train --keep_best` writes the
   best weights, so only they and their record land in SNAPSHOTS); no test before the first
   update; solver_mode GPU; the loss shown 50 times, each the mean since the last (display,
   average_loss); random mirroring of the training images (DenseImageData mirror).

--smoke: 3 iterations of batch 1 on the first 2 training images, validated at iteration 2 on
the first validation image.
The solver is OUT/segnet_basic_solver.prototxt.
"""
import argparse
import json
import math
import sys
from pathlib import Path

from google.protobuf import text_format

from segnet_caffe import io
from segnet_caffe.proto import caffe_pb2

REPO = Path(__file__).resolve().parents[1]
GUESSED_IMAGES_PER_S = 100.0  # when no benchmark figure exists: about 6x the CPU's bf16 rate
STARTUP_S = 25                # nets, cuDNN autotuning, the first decode of 468 images
MARGIN = 0.8                  # validation passes, logging, what the benchmark does not see
ITERATIONS = (50, 8000)       # at most ~350 epochs of 367 images at batch 16
SMOKE = dict(iterations=3, val_interval=2, batch=1, train_images=2, val_images=1)  # --smoke


def training_rate(bench_path, batch):
    """(images/s, where it comes from) of a SegNet-Basic training step at `batch`, from a
    bench/run.py results file; None when it holds no such figure."""
    try:
        results = json.loads(Path(bench_path).read_text())
        entries = results["nets"]["segnet_basic"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for variant in ("bf16", "engine"):
        sweep = entries.get(variant, {}).get("train", {}).get("sweep", [])
        for figure in sweep:
            if figure.get("batch") == batch:
                return figure["images_per_s"], (f"bench/run.py's {variant} training step at batch "
                                                f"{batch} on the {results.get('device')}")
    return None


def iterations_for(seconds, batch, rate):
    """Iterations of `batch` images that fit `seconds` at `rate` images/s (see the docstring)."""
    fitting = max(0.0, seconds - STARTUP_S) * MARGIN * rate / batch
    return int(min(ITERATIONS[1], max(ITERATIONS[0], math.floor(fitting))))


def generate(packed, out, snapshots, batch, lr, iterations, val_interval):
    """scripts/generate_prototxts.py --dataset ... (the generator's own command line)."""
    sys.path.insert(0, str(REPO / "scripts"))
    import generate_prototxts

    command = ["--dataset", str(packed), "--model", "segnet_basic", "--batch", str(batch),
               "--lr", f"{lr:g}", "--max-iter", str(iterations), "--val-interval",
               str(val_interval), "--out", str(out), "--snapshots", str(snapshots)]
    print("python scripts/generate_prototxts.py " + " ".join(command), flush=True)
    if generate_prototxts.main(command) != 0:
        raise SystemExit("camvid_gpu_recipe.py: generate_prototxts.py failed (above)")
    return Path(out) / "segnet_basic_solver.prototxt"


def _rewrite(path, message, note):
    """Write `message` back over the generated `path`, its header kept and `note` added."""
    header = "".join(line + "\n" for line in Path(path).read_text().splitlines()
                     if line.startswith("#"))
    text = header + f"# Then {note}\n" + text_format.MessageToString(message)
    io.atomic_write_bytes(str(path), text.encode())


def _first_lines(list_path, count, out_path):
    lines = [line for line in Path(list_path).read_text().splitlines() if line.strip()]
    Path(out_path).write_text("".join(line + "\n" for line in lines[:count]))
    return str(out_path), min(count, len(lines))


def apply_recipe(solver_path, power, smoke=False):
    """The recipe's fields on top of the generated solver and training net (see the docstring);
    with `smoke`, the data layers read the first few images only."""
    solver_path = Path(solver_path)
    solver = io.read_solver_prototxt(str(solver_path))
    solver.lr_policy, solver.power = "poly", power
    solver.ClearField("gamma")
    solver.ClearField("stepsize")
    solver.snapshot, solver.snapshot_after_train = 0, False
    solver.test_initialization = False
    solver.solver_mode = caffe_pb2.SolverParameter.GPU  # the CPU when CUDA is absent, said once
    solver.display = max(1, solver.max_iter // 50)  # 50 points of the loss curve, each the
    solver.average_loss = solver.display            # mean over the iterations since the last
    nets = {"train": solver.net, "val": solver.test_net[0]} if smoke else {"train": solver.net}
    for kind, net_path in nets.items():
        net = io.read_net_prototxt(net_path)
        param = next(layer for layer in net.layer
                     if layer.type == "DenseImageData").dense_image_data_param
        changes = []
        if kind == "train":
            param.mirror = True
            changes.append("random mirroring (DenseImageData mirror: true)")
        if smoke:
            count = SMOKE["train_images"] if kind == "train" else SMOKE["val_images"]
            param.source, count = _first_lines(param.source, count,
                                               solver_path.parent / f"{kind}_smoke.txt")
            if kind == "val":
                solver.test_iter[0] = count
            changes.append(f"the first {count} images only (--smoke)")
        _rewrite(net_path, net, "scripts/camvid_gpu_recipe.py: " + ", ".join(changes))
    _rewrite(solver_path, solver, f"scripts/camvid_gpu_recipe.py: lr_policy poly (power "
                                  f"{power:g}), no periodic snapshots (--keep_best keeps the best "
                                  "weights), solver_mode GPU")
    return solver


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packed", required=True, help="a scripts/pack_camvid.py folder")
    parser.add_argument("--out", required=True, help="where the prototxts go")
    parser.add_argument("--snapshots", required=True, help="the snapshot_prefix folder")
    parser.add_argument("--seconds", type=float, required=True, help="the training time budget")
    parser.add_argument("--bench", default=None, help="a bench/run.py results JSON")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--power", type=float, default=0.9)
    parser.add_argument("--smoke", action="store_true", help="a few iterations on a few images")
    args = parser.parse_args(argv)

    measured = training_rate(args.bench, args.batch) if args.bench else None
    if measured is not None:
        rate, origin = measured
    elif args.bench:
        rate, origin = GUESSED_IMAGES_PER_S, (f"a guess: {args.bench} has no training figure at "
                                              f"batch {args.batch}")
    else:
        rate, origin = GUESSED_IMAGES_PER_S, "a guess: no benchmark given"
    iterations = iterations_for(args.seconds, args.batch, rate)
    batch = args.batch
    images = json.loads((Path(args.packed) / "dataset.json").read_text())["counts"]["train"]
    print(f"{rate:.1f} training images/s ({origin}) x ({args.seconds:.0f} s - {STARTUP_S} s) x "
          f"{MARGIN} -> {iterations} iterations of batch {batch} "
          f"({iterations * batch / images:.0f} epochs of {images} images)", file=sys.stderr,
          flush=True)
    if args.smoke:
        iterations, batch = SMOKE["iterations"], SMOKE["batch"]
        print(f"--smoke: {iterations} iterations of batch {batch} instead", file=sys.stderr)
    val_interval = SMOKE["val_interval"] if args.smoke else max(1, iterations // 10)
    solver_path = generate(args.packed, args.out, args.snapshots, batch, args.lr, iterations,
                           val_interval)
    apply_recipe(solver_path, args.power, args.smoke)
    print(f"recipe applied: {solver_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
