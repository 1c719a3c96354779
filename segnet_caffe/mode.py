"""pycaffe's process defaults: Caffe's global mode (CPU/GPU), device id and random seed; and,
as setters of the process default of segnet_caffe.engine_options, the engine switches
(bfloat16, channels-last, compact masks, prefetch, data cache and threads, Caffe's arithmetic
order)."""
import torch

from . import engine_options
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
    """Caffe's order of float32 arithmetic where it matters over a training run, for the nets
    built from now on (EngineOptions.caffe_accumulation).

    Off (the default): oneDNN convolutions and PyTorch's fused batch-norm kernels. On: CPU
    convolutions through im2col + BLAS as Caffe computes them, and the SegNet BN layer's
    statistics and gradients as the fork's formulas order them. The fast kernels are several
    times faster, but over large maps their float32 sums (convolution weight gradients, BN's
    per-channel gradient sums) drift about 1e-3 (relative) from the exact values where Caffe's
    stay within ~2e-5; turn this on to reproduce Caffe's training runs to 1e-4.
    """
    engine_options.set_default(caffe_accumulation=bool(enabled))


def set_channels_last(enabled):
    """Compute 2-D convolutions in channels-last (NHWC) memory layout (True), in contiguous NCHW
    (False), or as measured best for the machine (None, the default: see
    EngineOptions.convolves_channels_last), in the nets built from now on. Values are the same
    up to float rounding, and blobs keep Caffe's (N, C, H, W) shape."""
    engine_options.set_default(channels_last=None if enabled is None else bool(enabled))


def channels_last():
    """Whether nets built now convolve channels-last on the current mode's device."""
    return engine_options.current().convolves_channels_last(device())


def set_compact_masks(enabled):
    """Max pooling over tiling windows (SegNet's 2x2 / stride 2) keeps one byte per pooled
    element for its backward and its mask top (the default), or PyTorch's int64 indices
    (False: for comparing memory), in the nets built from now on. Caffe's float mask is
    computed when a user reads the blob."""
    engine_options.set_default(compact_masks=bool(enabled))


def set_data_prefetch(enabled):
    """Data layers of the nets built from now on decode and transform the next batch in a
    background thread while the step computes (the default), or only when the batch is needed
    (False). The data order, and a resume, are the same either way."""
    engine_options.set_default(data_prefetch=bool(enabled))


def set_data_cache(enabled):
    """ImageData and DenseImageData layers of the nets built from now on keep every decoded
    (and resized) image and label in memory after its first read, so later epochs only crop,
    mirror and transform (EngineOptions.data_cache). The batches are the same either way."""
    engine_options.set_default(data_cache=bool(enabled))


def set_data_workers(count):
    """Threads with which the ImageData and DenseImageData layers of the nets built from now on
    read and transform a batch's items (EngineOptions.data_workers; 1: one after the other).
    The batches are the same for any count."""
    engine_options.set_default(data_workers=count)


def set_bf16(enabled, without_native_support=False):
    """Run the layer forwards (and so their backwards) of the nets built from now on under
    bfloat16 autocast: convolutions and matrix products in bfloat16, the parameters, their
    diffs and the solver's update in float32 (master weights), loss and accuracy layers in
    float32. Opt-in: about 3 significant digits in the activations; blobs of bfloat16 tops read
    as float32 numpy copies.

    On a CPU without native bfloat16 (no AVX512_BF16 or AMX: hardware.native_bfloat16) nets
    compute in float32 instead, with one warning: PyTorch's fallback kernels there are hundreds
    of times slower than float32. `without_native_support=True` runs bfloat16 anyway (to check
    its accuracy on such a machine)."""
    engine_options.set_default(bf16=bool(enabled),
                               bf16_without_native_support=bool(without_native_support))


def bf16(for_device=None):
    """Whether nets built now run forwards on `for_device` (by default the current mode's
    device) under bfloat16 autocast (EngineOptions.computes_bf16)."""
    return engine_options.current().computes_bf16(for_device if for_device is not None
                                                  else device())
