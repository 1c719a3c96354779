"""Benchmark the engine against a hand-written eager PyTorch SegNet and real Caffe's figures.

    python bench/run.py [--device cpu|cuda] [--quick] [--nets NET ...] [--variants NAME ...]
                        [--out bench/results]

Writes <out>/<device>.json and <device>.md (<device>_quick.* with --quick) and prints the
table. Every engine variant of bench/variants.py and every eager variant of bench/eager.py is
measured, each net and measurement in a fresh process (bench/measure.py) so peak memory
figures do not mix; --quick runs tiny sizes, one process per variant, to check the harness.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segnet_caffe import hardware, io  # noqa: E402
from segnet_caffe.datasets import make_squares  # noqa: E402

from bench import eager, nets, report, variants  # noqa: E402

SCHEMA_VERSION = 2  # 2: best_eager per process environment
MEASURE = Path(__file__).resolve().with_name("measure.py")
CAMVID = nets.REPO.parent / "shared" / "data" / "camvid"

# Real SegNet Caffe on this 2-core machine (OpenBLAS, 2 threads, batch 1, `caffe time`) and one
# run of a plain eager module (torch 2.13 CPU, 2 threads), as issue 5 records them.
CAFFE_ANCHORS = {
    "segnet_basic": {"forward_ms": 1785, "forward_backward_ms": 4916, "peak_rss_mib": 4264,
                     "eager_forward_ms": 946, "eager_forward_backward_ms": 2213,
                     "eager_channels_last_forward_ms": 626,
                     "eager_channels_last_forward_backward_ms": 1787},
    "segnet": {"forward_ms": 2939, "forward_backward_ms": 7538, "peak_rss_mib": 4431},
    "segnet_squares": {"forward_ms": 2736, "forward_backward_ms": 7171, "peak_rss_mib": 5832},
}

SETTINGS = {
    # Full run on a CPU: at batch 1 one warm-up run and the median of 3; at larger batches the
    # median of 3 with no warm-up (a slow first run is the maximum, which the median drops), so
    # the longest figures (training at batch 4) cost 3 iterations, not 4. The inference batch
    # grows (1, 2, 4) while it raises images/s by more than 3%.
    "cpu": dict(sizes=nets.NATIVE_SIZES, inference_batches=[1, 2, 4], warmup=1, reps_batch1=3,
                warmup_batched=0, reps_batched=3, sweep_gain=1.03, data_batches=25,
                squares_size=512, squares_count=16),
    "cuda": dict(sizes=nets.NATIVE_SIZES, inference_batches=[1, 4, 8, 16, 32, 64],
                 train_extra_batches=[16, 32], warmup=3, reps_batch1=10, warmup_batched=2,
                 reps_batched=5, sweep_gain=1.03, data_batches=25, squares_size=512,
                 squares_count=32),
    # --quick: tiny inputs (every size divisible by the net's pooling factor), to check the
    # harness. The squares images stay 128x128 (the generator's smallest is 101): the data layer
    # of the training-with-data case resizes them to the net's size.
    "quick": dict(sizes={"segnet_squares": (64, 64), "segnet_basic": (32, 32),
                         "segnet": (32, 32)},
                  inference_batches=[1, 2], train_extra_batches=[8], warmup=1, reps_batch1=2,
                  warmup_batched=0, reps_batched=1, sweep_gain=1.03, data_batches=2,
                  squares_size=128, squares_count=4),
}


# ----- machine -----------------------------------------------------------------------------------
def matmul_peak_gflops(device, dtype, n):
    """The best of 5 timed n x n matrix products (after 2 warm-ups) in GFLOP/s: what this
    machine's BLAS reaches, the ceiling for convolution-bound nets."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = float("inf")
    for i in range(7):
        start = time.perf_counter()
        torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def source_version():
    """The commit measured, with "+changes" when the working tree differs from it."""
    def git(*command):
        done = subprocess.run(["git", "-C", str(nets.REPO), *command], capture_output=True,
                              text=True)
        return done.stdout.strip() if done.returncode == 0 else None
    commit = git("rev-parse", "--short", "HEAD")
    if commit is None:
        return "unknown (not a git checkout)"
    return commit + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def machine(device, quick=False):
    info = {"cpu_model": hardware.model(), "cpu": hardware.describe(),
            "cpu_features": hardware.features(), "cpu_kernels": hardware.kernels(),
            "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(), "gpu": None}
    n = 512 if quick else 2048 if device == "cpu" else 8192  # --quick: a check, not a figure
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    info["matmul_peak_gflops"] = {"float32": matmul_peak_gflops(device, torch.float32, n),
                                  "bfloat16": None}
    if computes_bfloat16(device):
        info["matmul_peak_gflops"]["bfloat16"] = matmul_peak_gflops(device, torch.bfloat16, n)
    return info


def flops_per_image(net_name, size):
    """Forward and forward+backward FLOPs of one image, counted by torch's FlopCounterMode on
    the eager module (meta tensors: nothing is computed)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = eager.build(net_name)
        x = torch.empty(1, 3, *size)
    counts = {}
    for kind in ("forward", "train"):
        counter = FlopCounterMode(display=False)
        with counter:
            y = model(x)
            if kind == "train":
                y.sum().backward()
        counts[kind] = counter.get_total_flops()
    return counts


def computes_bfloat16(device):
    """Whether `device` computes bfloat16 natively: where it does not (a CPU without
    AVX512_BF16 / AMX), bfloat16 figures are not measured, only said to be absent."""
    return device != "cpu" or hardware.native_bfloat16()


# ----- cases -------------------------------------------------------------------------------------
def plan_cases(args, settings):
    """[(family, variant, kinds, nets)]: the data cases (short) first, then net by net in the
    order given (so a run cut short has whole nets), each net's plain engine first (its output
    is the reference for the other engine variants), the other engine variants, the eager ones."""
    engine = variants.by_name()
    if "engine" not in engine:
        raise SystemExit('bench/variants.py: the plain "engine" variant is missing')
    families = [("engine", name, v.kinds) for name, v in engine.items()
                if computes_bfloat16(args.device) or not v.bfloat16]
    families += [("eager", name, v.kinds) for name, v in eager.VARIANTS.items()]
    if args.variants:
        known = {name for _, name, _ in families}
        unknown = set(args.variants) - known
        if unknown:
            raise SystemExit(f"--variants: unknown {sorted(unknown)}; known: {sorted(known)}")
        families = [f for f in families if f[1] in args.variants or f[1] == "engine"]
    computing = [(family, name, [k for k in ("inference", "train") if k in kinds])
                 for family, name, kinds in families]
    cases = [(family, name, ["data"], []) for family, name, kinds in families
             if "data" in kinds and family == "engine"]
    if args.quick:
        cases += [(family, name, kinds, args.nets) for family, name, kinds in computing if kinds]
    else:
        cases += [(family, name, [kind], [net]) for net in args.nets
                  for family, name, kinds in computing for kind in kinds]
    if args.kinds:  # only these measurements
        cases = [(family, name, [k for k in kinds if k in args.kinds], case_nets)
                 for family, name, kinds, case_nets in cases if set(kinds) & set(args.kinds)]
    return cases


def run_case(family, variant, kinds, net_names, device, settings, workdir, timeout):
    """Run one case in a fresh process; its result, or {"error": ...}."""
    stem = f"{family}-{variant}-{'-'.join(kinds)}-{'-'.join(net_names) or 'data'}"
    case_path, result_path = workdir / f"{stem}.case.json", workdir / f"{stem}.result.json"
    case = {"family": family, "variant": variant, "kinds": kinds, "nets": net_names,
            "device": device, "settings": settings}
    case_path.write_text(json.dumps(case))
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, str(MEASURE), str(case_path), str(result_path)],
                              capture_output=True, text=True, timeout=timeout,
                              env=_child_environment(settings.get("threads"),
                                                     variant_environment(family, variant)))
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        return {"error": f"exit {done.returncode}: {lines[-1]}"}
    result = json.loads(result_path.read_text())
    result["wall_s"] = time.perf_counter() - started
    return result


def variant_environment(family, variant):
    """The environment variables a variant sets in its measuring process (none for a name
    bench/ does not know: that process reports it)."""
    table = variants.by_name() if family == "engine" else eager.VARIANTS
    return table[variant].environment if variant in table else {}


def _child_environment(threads, environment):
    """This process's environment with the variant's variables; a variable that another
    variant sets is removed, so each row is measured with only its own settings."""
    env = dict(os.environ)
    for table in (variants.by_name(), eager.VARIANTS):
        for other in table.values():
            for name in other.environment:
                env.pop(name, None)
    env.update(environment)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)  # OpenMP reads it at start; torch follows it
    return env


def assemble(outcomes, net_names):
    """Case results -> {net: {variant: {family, inference, train, ...}}}, data, errors."""
    per_net = {net: {} for net in net_names}
    data, errors = {}, []
    for (family, variant, kinds, case_nets), result in outcomes:
        if "error" in result:
            errors.append({"family": family, "variant": variant, "kinds": kinds,
                           "nets": case_nets, "error": result["error"]})
            continue
        if "data" in result:
            data[variant] = result["data"]
        for net, figures in result["nets"].items():
            entry = per_net[net].setdefault(variant, {"family": family, "load_average": []})
            entry.update(figures)
            entry["threads"] = result["threads"]
            entry["load_average"].append(result["load_average_start"])
            entry["memory_isolated"] = len(result["nets"]) * len(kinds) == 1
    return per_net, data, errors


def environment_label(family, variant):
    """The variables a variant sets in its measuring process as "NAME=value ...", or "default"."""
    environment = variant_environment(family, variant)
    return " ".join(f"{name}={value}" for name, value in sorted(environment.items())) or "default"


def ratios(per_net, anchors_apply):
    """Engine / best eager time ratios (below 1: the engine is faster), each engine variant
    against the eager variants measured in the same process environment (an allocator switch
    speeds both families), and speed-ups over real Caffe's anchors (above 1: faster than Caffe)."""
    out = {}
    figures = {"inference_batch1": ("inference", lambda f: f["batch1"]["ms"]),
               "inference_best_batch": ("inference", lambda f: 1e3 / f["best"]["images_per_s"]),
               "train_batch1": ("train", lambda f: f["batch1"]["ms"]),
               "train_prototxt_batch": ("train", lambda f: f["prototxt_batch"]["ms"])}
    for net, entries in per_net.items():
        eager_best = {}  # {environment label: {figure: fastest eager time}}
        for variant, entry in entries.items():
            if entry["family"] != "eager":
                continue
            best = eager_best.setdefault(environment_label("eager", variant), {})
            for key, (kind, value) in figures.items():
                if kind in entry:
                    best[key] = min(best.get(key, float("inf")), value(entry[kind]))
        net_ratios = {}
        for variant, entry in entries.items():
            if entry["family"] != "engine":
                continue
            best = eager_best.get(environment_label("engine", variant), {})
            r = {}
            for key, (kind, value) in figures.items():
                if kind in entry and key in best:
                    r[f"{key}_vs_best_eager"] = value(entry[kind]) / best[key]
            anchor = CAFFE_ANCHORS.get(net)
            if anchors_apply and anchor:
                if "inference" in entry:
                    r["inference_speedup_vs_caffe"] = anchor["forward_ms"] / entry["inference"]["batch1"]["ms"]
                if "train" in entry:
                    train = entry["train"]["batch1"]
                    r["train_speedup_vs_caffe"] = anchor["forward_backward_ms"] / train["ms"]
                    r["train_peak_memory_vs_caffe"] = train["peak_memory_mib"] / anchor["peak_rss_mib"]
            net_ratios[variant] = r
        out[net] = {"best_eager": eager_best, "engine": net_ratios}
    return out


def make_datasets(workdir, settings, quick, camvid=CAMVID):
    """Generated squares (train split) in the work folder, and CamVid (the tutorial layout, or
    a scripts/pack_camvid.py folder) if present."""
    lists = make_squares(workdir / "squares", settings["squares_count"], settings["squares_size"],
                         seed=0, splits=("train",))
    datasets = {"squares": {"net": "segnet_squares", "list": str(lists["train"]),
                            "root": f"{workdir / 'squares'}/",
                            "batch": nets.prototxt_batch("segnet_squares")}}
    camvid = Path(camvid).resolve()
    if (camvid / "train.txt").is_file():
        datasets["camvid"] = {"net": "segnet_basic", "list": str(camvid / "train.txt"),
                              "root": f"{camvid}/", "batch": nets.prototxt_batch("segnet_basic")}
    return datasets


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and iteration counts (checks the harness, < 2 min)")
    parser.add_argument("--nets", nargs="+", choices=sorted(nets.NATIVE_SIZES),
                        default=["segnet_basic", "segnet_squares", "segnet"])
    parser.add_argument("--variants", nargs="+",
                        help="measure only these variants (engine and eager names); the plain "
                             "engine is always measured")
    parser.add_argument("--threads", type=int,
                        help="torch threads in the measuring processes (default: torch's, one "
                             "per core; with --quick 1, which stays fast on a busy machine)")
    parser.add_argument("--out", default=str(nets.REPO / "bench" / "results"),
                        help="folder for <device>.json and <device>.md (bench/results)")
    parser.add_argument("--rescore", metavar="RESULTS_JSON",
                        help="measure nothing: recompute an earlier run's ratios and table "
                             "with this checkout's rules, written to --out")
    parser.add_argument("--kinds", nargs="+", choices=variants.KINDS,
                        help="measure only these kinds (default: all)")
    parser.add_argument("--camvid", default=str(CAMVID),
                        help="the CamVid folder of the data row (default ../shared/data/camvid; "
                             "a scripts/pack_camvid.py folder works too)")
    parser.add_argument("--case-timeout", type=int, default=1800,
                        help="seconds one measuring process may take (1800)")
    args = parser.parse_args(argv)
    if args.quick and args.threads is None:
        args.threads = 1
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available on this machine")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.rescore:
        return rescore(args.rescore, args.out, " ".join(["python", "bench/run.py"] + argv))
    started = time.perf_counter()
    settings = dict(SETTINGS["quick" if args.quick else args.device])
    settings["train_batches"] = {net: nets.prototxt_batch(net) for net in args.nets}
    settings["threads"] = args.threads
    if args.threads:
        torch.set_num_threads(args.threads)  # the matmul peak is measured with the same count
    results = {"schema": SCHEMA_VERSION,
               "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
               "command": " ".join(["python", "bench/run.py"] + argv),
               "source": source_version(),
               "device": args.device, "quick": args.quick,
               "load_average_start": os.getloadavg(), "machine": machine(args.device, args.quick)}
    results["flops_per_image"] = {net: flops_per_image(net, settings["sizes"][net])
                                  for net in args.nets}
    with tempfile.TemporaryDirectory(prefix="segnet-bench-") as tmp:
        workdir = Path(tmp)
        settings["datasets"] = make_datasets(workdir, settings, args.quick, args.camvid)
        settings["reference_dir"] = str(workdir)
        outcomes = []
        for case in plan_cases(args, settings):
            print(f"[{time.perf_counter() - started:6.0f} s] {case[0]} {case[1]}: "
                  f"{', '.join(case[2])} {' '.join(case[3])}", file=sys.stderr, flush=True)
            outcomes.append((case, run_case(*case, args.device, settings, workdir,
                                            args.case_timeout)))
            if "error" in outcomes[-1][1]:
                print(f"    error: {outcomes[-1][1]['error']}", file=sys.stderr, flush=True)
            table = write_results(results, outcomes, settings, args, started)  # after each case
    print(table)
    print(f"wrote {results['files']} in {results['wall_s']:.0f} s", file=sys.stderr)
    return 1 if results["errors"] else 0


def write_results(results, outcomes, settings, args, started):
    """Fill `results` from the cases run so far and write the JSON and Markdown files (after
    every case: a run cut short keeps what it measured); returns the Markdown."""
    per_net, data, errors = assemble(outcomes, args.nets)
    results.update(settings={k: v for k, v in settings.items()
                             if k not in ("datasets", "reference_dir")},
                   nets=per_net, data=data, errors=errors,
                   ratios=ratios(per_net, args.device == "cpu" and not args.quick),
                   anchors=CAFFE_ANCHORS, load_average_end=os.getloadavg(),
                   wall_s=time.perf_counter() - started,
                   cases_done=len(outcomes), cases_planned=len(plan_cases(args, settings)))
    results["settings"]["sizes"] = {net: list(settings["sizes"][net]) for net in args.nets}
    return write_files(results, args.out)


def rescore(path, out, command):
    """Recompute the ratios and the table of a results file (measures nothing); 0."""
    results = json.loads(Path(path).read_text())
    results["ratios"] = ratios(results["nets"], results["device"] == "cpu" and not results["quick"])
    results["schema"] = SCHEMA_VERSION
    results["rescored"] = {"command": command, "source": source_version()}
    print(write_files(results, out))
    return 0


def write_files(results, out):
    """Write `results` as <out>/<device>[_quick].json and .md; returns the Markdown."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{results['device']}_quick" if results["quick"] else results["device"]
    results["files"] = [str(out / f"{stem}.json"), str(out / f"{stem}.md")]
    table = report.markdown(results)
    io.atomic_write_bytes(results["files"][0], json.dumps(results, indent=1).encode())
    io.atomic_write_bytes(results["files"][1], table.encode())
    return table


if __name__ == "__main__":
    sys.exit(main())
