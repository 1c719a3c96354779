"""Engine options: how a net computes (precision, memory layout, mask format, data prefetch,
cache and threads, Caffe's arithmetic order), as one value a Net captures when it is built.

    net = caffe.Net("deploy.prototxt", caffe.TEST)              # the current options
    with caffe.options(bf16=True, channels_last=True):
        fast = caffe.Net("deploy.prototxt", caffe.TEST)         # these nets keep them
    caffe.engine_options.set_default(bf16=True)                 # changes the process default

`current()` is the process default (`set_default(...)` changes it; the CLI's flags set it) with the
innermost `options(...)` block's changes on top, as torch.autocast scopes; a Net reads its own
`net.options` ever after, and a solver builds its nets with its own. No layer reads a global.
"""
import contextlib
import contextvars
import dataclasses

import torch

from . import hardware
from .errors import CaffeError
from .logs import get_logger


@dataclasses.dataclass(frozen=True)
class EngineOptions:
    """What a net computes with; every field keeps Caffe's results up to float rounding.

    bf16: layer forwards (and so their backwards) under bfloat16 autocast, parameters, their
        diffs and the update in float32; only where the device computes bfloat16 natively,
        unless bf16_without_native_support.
    channels_last: 2-D convolutions in NHWC memory (True), NCHW (False) or by the measured rule
        (None: see convolves_channels_last).
    compact_masks: max pooling over tiling windows keeps one byte per pooled element.
    data_prefetch: list and LMDB data layers decode the next batch in a background thread.
    data_cache: ImageData and DenseImageData keep each list entry's decoded (and resized) image
        and label in memory after its first read: from then on a batch costs only its crop,
        mirror and transform (memory: the decoded data set, logged once it is all cached).
    data_workers: threads that read and transform a batch's items of an ImageData or
        DenseImageData layer in parallel (OpenCV and numpy release the GIL); 1 = in turn.
    caffe_accumulation: Caffe's order of float32 arithmetic (im2col + BLAS convolutions on the
        CPU, the fork's BN formulas) instead of the fast kernels, to reproduce Caffe's training
        runs to 1e-4.
    """

    bf16: bool = False
    bf16_without_native_support: bool = False
    channels_last: bool | None = None
    compact_masks: bool = True
    data_prefetch: bool = True
    data_cache: bool = False
    data_workers: int = 1
    caffe_accumulation: bool = False

    def __post_init__(self):
        if isinstance(self.data_workers, bool) or not isinstance(self.data_workers, int) \
                or self.data_workers < 1:
            raise CaffeError(f"data_workers must be a whole number of threads, at least 1; got "
                             f"{self.data_workers!r}")

    def computes_bf16(self, device):
        """Whether forwards on `device` run under bfloat16 autocast: bf16 is asked for and the
        device computes it natively (a CUDA GPU, or a CPU with AVX512_BF16 / AMX), or
        bf16_without_native_support. Elsewhere PyTorch's fallback kernels are hundreds of times
        slower than float32: nets compute in float32 and one warning says so."""
        if not self.bf16:
            return False
        if torch.device(device).type != "cpu" or self.bf16_without_native_support:
            return True
        if hardware.native_bfloat16():
            return True
        _warn_once("bfloat16 asked for (--bf16 / bf16=True) but this CPU has no native "
                   f"bfloat16 (AVX512_BF16 or AMX): {hardware.describe()}; PyTorch's fallback "
                   "would run hundreds of times slower than float32, so nets compute in float32")
        return False

    def convolves_channels_last(self, device):
        """Whether 2-D convolutions compute channels-last: as `channels_last` says, else by the
        rule the benchmarks support. On a GPU (cuDNN's tensor cores want NHWC) and where PyTorch
        runs its AVX-512 kernels, channels-last (measured faster for every generated net,
        inference and training, on AMD Zen 4 and Zen 5); with AVX2 kernels NCHW (there oneDNN's
        channels-last convolution backward measured 1.5x slower: the README's Speed section).
        Never under caffe_accumulation, whose im2col path is NCHW."""
        if self.caffe_accumulation:
            return False
        if self.channels_last is not None:
            return self.channels_last
        return torch.device(device).type == "cuda" or hardware.avx512_kernels()

    def kernels(self):
        """A context for running a pass of a net with these options, torch's switches restored
        afterwards: cuDNN autotunes its kernels for each shape (benchmark mode; no effect on the
        CPU), and under caffe_accumulation oneDNN is off (convolutions take PyTorch's im2col +
        BLAS path, forward and backward)."""
        switches = contextlib.ExitStack()
        switches.enter_context(_torch_switch(torch.backends.cudnn, "benchmark", True))
        if self.caffe_accumulation:
            switches.enter_context(_torch_switch(torch.backends.mkldnn, "enabled", False))
        return switches


@contextlib.contextmanager
def _torch_switch(backend, name, value):
    # torch.backends.*.flags would also reset the backend's other switches (TF32, determinism).
    saved = getattr(backend, name)
    setattr(backend, name, value)
    try:
        yield
    finally:
        setattr(backend, name, saved)


_default = EngineOptions()
_scoped = contextvars.ContextVar("segnet_caffe_options", default=None)
_warned = set()


def _warn_once(message):
    if message not in _warned:
        _warned.add(message)
        get_logger().warning(message)


def current():
    """The options a Net built now captures."""
    scoped = _scoped.get()
    return _default if scoped is None else scoped


def set_default(**changes):
    """Change the process default: the options of the nets built from now on outside an
    `options(...)` block."""
    global _default
    _default = dataclasses.replace(_default, **changes)


@contextlib.contextmanager
def options(**changes):
    """Nets built inside the block get the current options with `changes`; yields them."""
    token = _scoped.set(dataclasses.replace(current(), **changes))
    try:
        yield _scoped.get()
    finally:
        _scoped.reset(token)


@contextlib.contextmanager
def use(engine_options):
    """Nets built inside the block get exactly `engine_options` (a solver's, say)."""
    token = _scoped.set(engine_options)
    try:
        yield engine_options
    finally:
        _scoped.reset(token)
