"""One benchmark case, run in a fresh process so that its peak memory is its own.

    python bench/measure.py CASE.json RESULT.json

The case names the family ("engine": a bench/variants.py entry; "eager": a hand-written
module of bench/eager.py), the variant, the measurements ("inference", "train", "data"),
the nets and the settings. Within a process batches only grow, so the peak memory read after
each batch size is that batch size's peak (CPU: the process's peak RSS; CUDA: the peak of
torch.cuda.max_memory_allocated, reset per batch size).
"""
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import segnet_caffe as caffe  # noqa: E402
from segnet_caffe import io, mode  # noqa: E402
from segnet_caffe.logs import get_logger  # noqa: E402

from bench import eager, nets, variants  # noqa: E402


# ----- timing and memory -------------------------------------------------------------------------
def synchronize(device):
    if device == "cuda":
        torch.cuda.synchronize()


def timed(step, device, warmup, reps):
    """Median and minimum wall time of `step` in ms over `reps` runs after `warmup` runs, and
    the runs."""
    for _ in range(warmup):
        step()
    synchronize(device)
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        synchronize(device)
        samples.append((time.perf_counter() - start) * 1e3)
    # The minimum too: on a busy machine it is the run least slowed by other processes.
    return {"ms": statistics.median(samples), "min_ms": min(samples),
            "samples_ms": [round(s, 3) for s in samples]}


def reset_peak_memory(device):
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_memory_mib(device):
    """CPU: the process's peak resident set (ru_maxrss, KiB on Linux); CUDA: peak allocated."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----- the two families ----------------------------------------------------------------------------
class Engine:
    """segnet_caffe's Net and Solver, run as a pycaffe user runs them."""

    def __init__(self, variant, device):
        table = variants.by_name()
        if variant not in table:
            raise SystemExit(f'no engine variant "{variant}" in bench/variants.py')
        self.variant = table[variant]
        self.device = device
        if device == "cuda":
            caffe.set_mode_gpu()
        if self.variant.enable:
            self.variant.enable()

    def inference_step(self, net_name, batch, size, images):
        mode.set_random_seed(0)  # the same weights in every variant's process
        net = caffe.Net(nets.net_param(net_name, "inference", batch, size), caffe.TEST)
        if self.variant.prepare_net:
            self.variant.prepare_net(net)
        net.blobs["data"].data[...] = images.numpy()
        return net.forward, lambda: net.blobs["prob"].data

    def train_step(self, net_name, batch, size, images, labels):
        solver_param = nets.solver_param(net_name, nets.net_param(net_name, "train", batch, size))
        if self.variant.edit_solver:
            self.variant.edit_solver(solver_param)
        solver = caffe.get_solver(solver_param)  # seeds from the solver's random_seed
        if self.variant.prepare_net:
            self.variant.prepare_net(solver.net)
        solver.net.blobs["data"].data[...] = images.numpy()
        solver.net.blobs["label"].data[...] = labels.numpy()
        return lambda: solver.step(1), lambda: float(solver.net.blobs["loss"].data)


class Eager:
    """The hand-written module of bench/eager.py, run as its user would."""

    def __init__(self, variant, device):
        if variant not in eager.VARIANTS:
            raise SystemExit(f'no eager variant "{variant}" in bench/eager.py')
        self.variant = eager.VARIANTS[variant]
        self.device = device
        if device == "cuda":
            torch.backends.cudnn.benchmark = True

    def _model(self, net_name, train):
        model = eager.build(net_name).to(self.device)
        model.train(train)
        if self.variant.fuse_bn:
            model = eager.fuse_bn(model)
        if self.variant.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.variant.compile:
            model = torch.compile(model)
        return model

    def _on_device(self, tensor):
        tensor = tensor.to(self.device)
        if self.variant.channels_last:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor

    def inference_step(self, net_name, batch, size, images):
        model = self._model(net_name, train=False)
        x = self._on_device(images)
        result = {}

        @torch.no_grad()
        def step():
            result["prob"] = torch.softmax(model(x), dim=1)
        return step, lambda: result["prob"].cpu().numpy()

    def train_step(self, net_name, batch, size, images, labels):
        model = self._model(net_name, train=True)
        solver = io.read_solver_prototxt(str(nets.prototxt(net_name, "solver")))
        optimizer = torch.optim.SGD(model.parameters(), lr=solver.base_lr,
                                    momentum=solver.momentum, weight_decay=solver.weight_decay)
        class_weights = eager.class_weights(net_name)
        if class_weights is not None:
            class_weights = class_weights.to(self.device)
        x, y = self._on_device(images), labels.to(self.device)
        result = {}

        def step():
            optimizer.zero_grad()
            loss = model.loss(model(x), y, class_weights)
            loss.backward()
            optimizer.step()
            result["loss"] = loss.detach()
        return step, lambda: float(result["loss"])


# ----- measurements ----------------------------------------------------------------------------
def _repetitions(settings, batch):
    """(warm-up runs, timed runs) at this batch size."""
    if batch == 1:
        return settings["warmup"], settings["reps_batch1"]
    return settings["warmup_batched"], settings["reps_batched"]


def measure_inference(family, net_name, settings, device):
    size = settings["sizes"][net_name]
    out = {"sweep": []}
    best = None
    for batch in settings["inference_batches"]:
        images, _ = nets.inputs(net_name, batch, size)
        reset_peak_memory(device)
        step, output = family.inference_step(net_name, batch, size, images)
        figure = timed(step, device, *_repetitions(settings, batch))
        figure.update(batch=batch, images_per_s=batch * 1e3 / figure["ms"],
                      peak_memory_mib=peak_memory_mib(device))
        if batch == 1 and isinstance(family, Engine):
            _compare_with_plain_engine(family, net_name, output(), settings, figure)
        out["sweep"].append(figure)
        del step, output
        gained = best is None or figure["images_per_s"] > settings["sweep_gain"] * best["images_per_s"]
        if best is None or figure["images_per_s"] > best["images_per_s"]:
            best = figure
        if not gained:
            break  # the larger batch hardly helped: a still larger one is not worth its time
    out["batch1"] = out["sweep"][0]
    out["best"] = {"batch": best["batch"], "images_per_s": best["images_per_s"]}
    return out


def _compare_with_plain_engine(family, net_name, output, settings, figure):
    """The plain engine saves its batch-1 output; every other engine variant, built from the same
    seed on the same input, reports its largest difference from it (the accuracy cost)."""
    path = Path(settings["reference_dir"]) / f"{net_name}.prob.pt"
    output = torch.as_tensor(output).float()
    if family.variant.name == "engine":
        torch.save(output, path)
    elif path.is_file():
        figure["max_abs_diff_vs_engine"] = float((output - torch.load(path)).abs().max())


def measure_train(family, net_name, settings, device):
    """Solver iterations at batch 1, at the prototxt's batch and at any larger batches the
    settings add (a GPU's throughput needs them); "best" is the highest images/s."""
    size = settings["sizes"][net_name]
    prototxt_batch = settings["train_batches"][net_name]
    batches = [1, prototxt_batch] + [b for b in settings.get("train_extra_batches", [])
                                     if b > prototxt_batch]
    out = {"sweep": []}
    for batch in batches:
        images, labels = nets.inputs(net_name, batch, size)
        reset_peak_memory(device)
        step, loss = family.train_step(net_name, batch, size, images, labels)
        figure = timed(step, device, *_repetitions(settings, batch))
        figure.update(batch=batch, images_per_s=batch * 1e3 / figure["ms"],
                      peak_memory_mib=peak_memory_mib(device), final_loss=loss())
        out["sweep"].append(figure)
        del step, loss
    out["batch1"], out["prototxt_batch"] = out["sweep"][:2]
    best = max(out["sweep"], key=lambda figure: figure["images_per_s"])
    out["best"] = {"batch": best["batch"], "images_per_s": best["images_per_s"]}
    return out


def measure_data(family, settings, device):
    """DenseImageData alone (decode + transform, images/s) on each data set, and the time a
    training step of the squares net spends waiting in its data layer."""
    out = {"decode": {}}
    for name, spec in settings["datasets"].items():
        param = nets.data_layer_net(spec["net"], spec["list"], spec["root"], spec["batch"])
        net = caffe.Net(param, caffe.TRAIN)
        warmup = settings["warmup"]
        if net.options.data_cache:  # the steady state: one epoch fills the cache first
            warmup += -(-len(net.layers[0].entries) // spec["batch"])
        figure = timed(lambda: net.forward(), "cpu", warmup, settings["data_batches"])
        figure.update(batch=spec["batch"], images_per_s=spec["batch"] * 1e3 / figure["ms"],
                      size=list(net.blobs["data"].shape[2:]))
        out["decode"][name] = figure
    spec = settings["datasets"]["squares"]
    size = settings["sizes"]["segnet_squares"]
    param = nets.net_param("segnet_squares", "train", 1, size, data=(spec["list"], spec["root"]))
    if settings["squares_size"] != size[0] or size[0] != size[1]:
        param.layer[0].dense_image_data_param.new_height = size[0]
        param.layer[0].dense_image_data_param.new_width = size[1]
    solver_param = nets.solver_param("segnet_squares", param)
    if family.variant.edit_solver:
        family.variant.edit_solver(solver_param)
    solver = caffe.get_solver(solver_param)
    if family.variant.prepare_net:
        family.variant.prepare_net(solver.net)
    waits, started = [], []

    def start_clock(index):
        if index == 0:  # the data layer
            started.append(time.perf_counter())

    def data_wait(index):
        if index == 0:
            waits.append((time.perf_counter() - started[-1]) * 1e3)
    solver.net.before_forward(start_clock)
    solver.net.after_forward(data_wait)
    figure = timed(lambda: solver.step(1), device, settings["warmup"], settings["reps_batch1"])
    figure["data_wait_ms"] = statistics.median(waits[settings["warmup"]:])
    figure["batch"] = 1
    out["train_with_data"] = figure
    return out


def run_case(case):
    get_logger().setLevel("WARNING")
    torch.manual_seed(0)
    device, settings = case["device"], case["settings"]
    if settings.get("threads"):
        torch.set_num_threads(settings["threads"])
    family = (Engine if case["family"] == "engine" else Eager)(case["variant"], device)
    result = {"family": case["family"], "variant": case["variant"], "pid": os.getpid(),
              "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
              "load_average_start": os.getloadavg(), "rss_before_nets_mib": peak_memory_mib("cpu"),
              "nets": {}}
    for net_name in case["nets"]:
        figures = result["nets"].setdefault(net_name, {})
        for kind in case["kinds"]:
            if kind == "inference":
                figures["inference"] = measure_inference(family, net_name, settings, device)
            elif kind == "train":
                figures["train"] = measure_train(family, net_name, settings, device)
    if "data" in case["kinds"]:
        result["data"] = measure_data(family, settings, device)
    result["load_average_end"] = os.getloadavg()
    return result


def main(argv):
    case_path, result_path = argv
    case = json.loads(Path(case_path).read_text())
    result = run_case(case)
    io.atomic_write_bytes(result_path, json.dumps(result, indent=1).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
