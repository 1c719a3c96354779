"""pycaffe's process defaults: Caffe's global mode (CPU/GPU), device id and random seed, and
Caffe's rule for choosing them from --gpu and the solver file. How a net computes (precision,
memory layout, ...) is not a process default but the EngineOptions it is built with
(segnet_caffe.engine_options)."""
import torch

from .errors import CaffeError
from .logs import get_logger

_state = {"mode": "cpu", "device_id": 0, "gpu_fallback_warned": False}


def set_mode_cpu():
    """Run every net on the CPU (Caffe::set_mode(Caffe::CPU))."""
    _state["mode"] = "cpu"


def set_mode_gpu():
    """Run every net on the CUDA device chosen by set_device (Caffe::set_mode(Caffe::GPU)).

    Without CUDA the nets stay on the CPU and one warning says so: every SegNet tutorial script
    calls set_mode_gpu(), and a user trying them on a laptop wants results, not the abort of
    Caffe's CPU-only build (as `solver_mode: GPU` falls back in `segnet-caffe train`).
    """
    if not torch.cuda.is_available():
        if not _state["gpu_fallback_warned"]:
            get_logger().warning("set_mode_gpu(): CUDA is not available on this machine: "
                                 "computing on the CPU")
            _state["gpu_fallback_warned"] = True
        _state["mode"] = "cpu"
        return
    _state["mode"] = "gpu"


def set_device(device_id):
    """Choose the CUDA device used in GPU mode."""
    device_id = int(device_id)
    if torch.cuda.is_available() and not 0 <= device_id < torch.cuda.device_count():
        raise CaffeError(f"GPU {device_id} does not exist: this machine has "
                         f"{torch.cuda.device_count()} CUDA device(s)")
    _state["device_id"] = device_id


def set_random_seed(seed):
    """Seed every random source the engine draws from (fillers, dropout, data shuffling)."""
    torch.manual_seed(int(seed))


def mode():
    """'cpu' or 'gpu'."""
    return _state["mode"]


def device():
    """The torch.device that the current mode computes on."""
    if _state["mode"] == "gpu":
        return torch.device("cuda", _state["device_id"])
    return torch.device("cpu")


# ----- choosing the device: --gpu and the solver file ----------------------------------------------
def parse_gpus(text):
    """--gpu 0 | 0,1 | all -> list of device ids ([] when not given)."""
    if not text:
        return []
    if text == "all":
        require_cuda("all")
        return list(range(torch.cuda.device_count()))
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise CaffeError(f'--gpu "{text}": expected a device id, a comma-separated list, or '
                         '"all"') from None


def require_cuda(gpus):
    """A CaffeError for an explicit --gpu (a list of ids, or its text) on a machine without CUDA."""
    if not torch.cuda.is_available():
        text = gpus if isinstance(gpus, str) else ",".join(map(str, gpus))
        raise CaffeError(f"--gpu {text}: CUDA is not available on this machine (run without "
                         "--gpu to use the CPU)")


def _solver_asks_gpu(solver_param):
    return solver_param is not None and solver_param.HasField("solver_mode") \
        and solver_param.solver_mode == solver_param.GPU


def solver_gpus(gpus, solver_param, one_per_process=False):
    """Caffe's rule for the GPUs to use: the --gpu list when given; else, when the solver file
    says solver_mode: GPU and CUDA is there, its device_id (one_per_process: every GPU, one per
    process of a data-parallel job); else none, the CPU."""
    if gpus or not _solver_asks_gpu(solver_param) or not torch.cuda.is_available():
        return list(gpus)
    return list(range(torch.cuda.device_count())) if one_per_process else [solver_param.device_id]


def choose_device(gpu_flag, solver_param=None, gpu=None):
    """Set the mode and device by Caffe's rule (solver_gpus) and log the choice; returns the
    chosen GPU ids. An explicit --gpu without CUDA is an error; `solver_mode: GPU` without CUDA
    falls back to the CPU with a warning. A process of a data-parallel job passes the `gpu` it
    was given."""
    gpus = parse_gpus(gpu_flag if gpu is None else str(gpu))
    if gpus:
        require_cuda(gpus)
    elif _solver_asks_gpu(solver_param) and not torch.cuda.is_available():
        get_logger().warning("solver_mode: GPU but CUDA is not available on this machine: "
                             "falling back to the CPU")
    gpus = solver_gpus(gpus, solver_param)
    if len(gpus) > 1:
        raise CaffeError(f"--gpu {gpu_flag}: only `train` runs on several GPUs (one process "
                         "each); give one device id")
    if not gpus:
        get_logger().info("Use CPU.")
        set_mode_cpu()
    else:
        get_logger().info(f"Use GPU with device ID {gpus[0]}")
        set_device(gpus[0])
        set_mode_gpu()
    return gpus
