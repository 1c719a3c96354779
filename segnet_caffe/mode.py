"""Where computation runs and how it is seeded: Caffe's global mode (CPU/GPU), device id and random seed."""
import torch

from . import hardware
from .errors import CaffeError
from .logs import get_logger

_state = {"mode": "cpu", "device_id": 0, "caffe_accumulation": False, "channels_last": None,
          "compact_masks": True, "data_prefetch": True, "gpu_fallback_warned": False,
          "bf16": False, "bf16_without_native_support": False, "bf16_declined": False}


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
    torch.backends.cudnn.benchmark = True  # cuDNN picks the fastest kernels for each shape


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


def set_caffe_accumulation(enabled):
    """Caffe's order of float32 arithmetic where it matters over a training run.

    Off (the default): oneDNN convolutions and PyTorch's fused batch-norm kernels. On: CPU
    convolutions through im2col + BLAS as Caffe computes them, and the SegNet BN layer's
    statistics and gradients as the fork's formulas order them. The fast kernels are several
    times faster, but over large maps their float32 sums (convolution weight gradients, BN's
    per-channel gradient sums) drift about 1e-3 (relative) from the exact values where Caffe's
    stay within ~2e-5; turn this on to reproduce Caffe's training runs to 1e-4. It sets
    torch.backends.mkldnn.enabled for the whole process.
    """
    _state["caffe_accumulation"] = bool(enabled)
    torch.backends.mkldnn.enabled = not enabled


def caffe_accumulation():
    """Whether set_caffe_accumulation(True) is in force."""
    return _state["caffe_accumulation"]


def set_channels_last(enabled):
    """Compute 2-D convolutions in channels-last (NHWC) memory layout (True), in contiguous NCHW
    (False), or as measured best for this machine (None, the default: see channels_last).
    Activations after a convolution stay NHWC; values are the same up to float rounding, and
    blobs keep Caffe's (N, C, H, W) shape (their numpy views are strided)."""
    _state["channels_last"] = None if enabled is None else bool(enabled)


def channels_last():
    """Whether convolutions compute channels-last: as set_channels_last said, else by the rule
    the benchmarks support. On a GPU (cuDNN's tensor cores want NHWC) and where PyTorch runs
    its AVX-512 kernels, channels-last (measured faster for every generated net, inference and
    training, on AMD Zen 4 and Zen 5); with AVX2 kernels NCHW (there oneDNN's channels-last
    convolution backward measured 1.5x slower, making SegNet-Basic's training step 1.35x the
    NCHW eager module's: the README's Speed section)."""
    if _state["channels_last"] is not None:
        return _state["channels_last"]
    return device().type == "cuda" or hardware.avx512_kernels()


def set_compact_masks(enabled):
    """Max pooling over tiling windows (SegNet's 2x2 / stride 2) keeps one byte per pooled
    element for its backward and its mask top (the default), or PyTorch's int64 indices
    (False: for comparing memory). Caffe's float mask is computed when a user reads the blob."""
    _state["compact_masks"] = bool(enabled)


def compact_masks():
    """Whether pooling masks are kept compact (set_compact_masks)."""
    return _state["compact_masks"]


def set_data_prefetch(enabled):
    """Data layers reading list files (DenseImageData, ImageData) decode and transform the next
    batch in a background thread while the step computes (the default), or only when the
    batch is needed (False). The data order, and a resume, are the same either way."""
    _state["data_prefetch"] = bool(enabled)


def data_prefetch():
    """Whether data layers decode ahead (set_data_prefetch)."""
    return _state["data_prefetch"]


def set_bf16(enabled, without_native_support=False):
    """Run layer forwards (and so their backwards) under bfloat16 autocast: convolutions and
    matrix products in bfloat16, the parameters, their diffs and the solver's update in float32
    (master weights), loss and accuracy layers in float32. Opt-in: about 3 significant digits
    in the activations; blobs of bfloat16 tops read as float32 numpy copies.

    On a CPU without native bfloat16 (no AVX512_BF16 or AMX: hardware.native_bfloat16) nets
    compute in float32 instead, with one warning: PyTorch's fallback kernels there are hundreds
    of times slower than float32. `without_native_support=True` runs bfloat16 anyway (to check
    its accuracy on such a machine)."""
    _state["bf16"] = bool(enabled)
    _state["bf16_without_native_support"] = bool(without_native_support)


def bf16(for_device=None):
    """Whether forwards on `for_device` (by default the current mode's device) run under
    bfloat16 autocast: set_bf16(True) is in force and the device computes bfloat16 natively (a
    CUDA GPU, or a CPU with AVX512_BF16 / AMX), or set_bf16 was told to run it without."""
    if not _state["bf16"]:
        return False
    target = torch.device(for_device) if for_device is not None else device()
    if target.type != "cpu" or _state["bf16_without_native_support"]:
        return True
    if hardware.native_bfloat16():
        return True
    if not _state["bf16_declined"]:
        _state["bf16_declined"] = True
        get_logger().warning(
            f"bfloat16 asked for (--bf16 / set_bf16) but this CPU has no native bfloat16 "
            f"(AVX512_BF16 or AMX): {hardware.describe()}; PyTorch's fallback would run "
            f"hundreds of times slower than float32, so nets compute in float32")
    return False
