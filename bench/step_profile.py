"""Where an engine variant's step spends its time against an eager module's, op by op.

    python bench/step_profile.py [--net segnet_basic] [--kind train|inference] [--batch 1]
                                 [--engine engine] [--eager eager] [--steps 5] [--top 15]

Both are built as bench/measure.py builds them, in this one process; their steps alternate
(so a change in the machine's load affects both alike) and the medians give the ratio. One more
step of each then runs under torch.profiler, and the table lists the ops by how much longer the
engine spends in them (self CPU time), with page faults and the CPU (hardware.describe) above.
"""
import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segnet_caffe import hardware  # noqa: E402

from bench import nets  # noqa: E402
from bench.measure import Eager, Engine  # noqa: E402


def build(args):
    """{label: step} for the engine variant and the eager variant."""
    size = nets.NATIVE_SIZES[args.net]
    images, labels = nets.inputs(args.net, args.batch, size)
    steps = {}
    for label, family in ((f"engine:{args.engine}", Engine(args.engine, "cpu")),
                          (f"eager:{args.eager}", Eager(args.eager, "cpu"))):
        if args.kind == "train":
            step, _ = family.train_step(args.net, args.batch, size, images, labels)
        else:
            step, _ = family.inference_step(args.net, args.batch, size, images)
        steps[label] = step
    return steps


def interleaved_ms(steps, count):
    """{label: [ms per step]}, the steps alternating after one warm-up each."""
    times = {label: [] for label in steps}
    faults = {label: 0 for label in steps}
    for step in steps.values():
        step()
    for _ in range(count):
        for label, step in steps.items():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            step()
            times[label].append((time.perf_counter() - start) * 1e3)
            faults[label] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    return times, {label: total / count for label, total in faults.items()}


def self_times_ms(step):
    """{op name: self CPU ms} of one step."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return {event.key: event.self_cpu_time_total / 1e3 for event in prof.key_averages()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--net", default="segnet_basic", choices=sorted(nets.NATIVE_SIZES))
    parser.add_argument("--kind", default="train", choices=("train", "inference"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--engine", default="engine", help="engine variant (bench/variants.py)")
    parser.add_argument("--eager", default="eager", help="eager variant (bench/eager.py)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps of each (5)")
    parser.add_argument("--top", type=int, default=15, help="ops listed (15)")
    args = parser.parse_args(argv)

    steps = build(args)
    times, faults = interleaved_ms(steps, args.steps)
    engine, eager = steps
    medians = {label: statistics.median(ms) for label, ms in times.items()}
    print(f"CPU: {hardware.describe()}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"{args.net} {args.kind} step, batch {args.batch}, median of {args.steps} alternating:")
    for label in steps:
        print(f"  {label:<28} {medians[label]:8.1f} ms  (min {min(times[label]):.1f}; "
              f"{faults[label]:,.0f} minor page faults per step)")
    print(f"  ratio engine / eager: {medians[engine] / medians[eager]:.3f}")

    profiles = {label: self_times_ms(step) for label, step in steps.items()}
    ops = set(profiles[engine]) | set(profiles[eager])
    rows = sorted(ops, key=lambda op: profiles[eager].get(op, 0) - profiles[engine].get(op, 0))
    print("\n| op | engine self ms | eager self ms | engine - eager |\n|---|---|---|---|")
    for op in rows[:args.top]:
        mine, theirs = profiles[engine].get(op, 0.0), profiles[eager].get(op, 0.0)
        print(f"| {op} | {mine:.1f} | {theirs:.1f} | {mine - theirs:+.1f} |")
    totals = [sum(profiles[label].values()) for label in (engine, eager)]
    print(f"| all ops | {totals[0]:.1f} | {totals[1]:.1f} | {totals[0] - totals[1]:+.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
