"""The engine variants the benchmark measures: one entry per way of running the engine.

Each entry is a `Variant`. The harness measures every entry here, each in fresh processes, so
an option landed in the engine becomes a benchmark column by adding one entry (no other edit):

    Variant("nchw", "contiguous NCHW convolutions",
            enable=lambda: segnet_caffe.engine_options.set_default(channels_last=False))

Hooks (all optional), called in the measuring process:
- `enable()`: once, before any Net or Solver is built (process defaults: engine options, mode).
- `prepare_net(net)`: on every engine Net the harness builds, after its weights are set and
  before it is timed (e.g. fold BN into the convolutions of an inference net). For training
  it is called on the solver's training net.
- `edit_solver(solver_param)`: on the SolverParameter before the Solver is built (e.g. a
  solver flag for bf16 autocast).
`environment` holds variables set in the measuring process's environment before it starts
(switches read once, at the first allocation or at start-up, such as PyTorch's
THP_MEM_ALLOC_ENABLE); a variable that some variant sets is absent for the variants that do not.
`bfloat16` marks a variant that computes in bfloat16: the harness measures it only on a device
that computes bfloat16 natively (a GPU, or a CPU with AVX512_BF16 / AMX), since elsewhere
`EngineOptions.bf16` computes in float32 (PyTorch's fallback there is hundreds of times slower).
`kinds` says which measurements the variant applies to: "inference" (forward of the
*_inference.prototxt net), "train" (solver iterations of the *_train.prototxt net) and "data"
(DenseImageData images/s and the data wait inside a training step).
"""
from dataclasses import dataclass, field
from typing import Callable, Optional

from segnet_caffe import engine_options

from bench.eager import TRANSPARENT_HUGE_PAGES

KINDS = ("inference", "train", "data")


@dataclass(frozen=True)
class Variant:
    """One way of running the engine (see the module docstring for the hooks)."""
    name: str
    description: str
    enable: Optional[Callable[[], None]] = None
    prepare_net: Optional[Callable[[object], None]] = None
    edit_solver: Optional[Callable[[object], None]] = None
    kinds: tuple = KINDS
    environment: dict = field(default_factory=dict)
    bfloat16: bool = False


def _options(**changes):
    """An `enable` hook that changes the engine options' process default."""
    return lambda: engine_options.set_default(**changes)


VARIANTS = [
    Variant("engine", "the engine's defaults (float32; NHWC convolutions with AVX-512 kernels "
            "and on GPUs, else NCHW: EngineOptions.convolves_channels_last)"),
    Variant("nchw", "contiguous NCHW convolutions (channels_last=False, --nchw)",
            enable=_options(channels_last=False), kinds=("inference", "train")),
    Variant("channels_last", "NHWC convolutions (channels_last=True, --channels_last)",
            enable=_options(channels_last=True), kinds=("inference", "train")),
    Variant("fold_bn", "INFERENCE BN folded into the convolutions (Net.fold_bn)",
            prepare_net=lambda net: net.fold_bn(), kinds=("inference",)),
    Variant("thp", "PyTorch's CPU allocator backing tensors of 2 MiB and more with transparent "
            "huge pages (THP_MEM_ALLOC_ENABLE=1)", kinds=("inference", "train"),
            environment=TRANSPARENT_HUGE_PAGES),
    Variant("int64_masks", "max-pooling masks as PyTorch's int64 indices instead of one byte "
            "per pooled element (compact_masks=False): the memory comparison",
            enable=_options(compact_masks=False), kinds=("inference", "train")),
    Variant("no_prefetch", "data layers decode each batch when it is needed, not ahead in a "
            "background thread (data_prefetch=False)",
            enable=_options(data_prefetch=False), kinds=("data",)),
    Variant("data_workers", "list data layers read a batch's items in 4 threads "
            "(data_workers=4, --data_workers 4)",
            enable=_options(data_workers=4), kinds=("data",)),
    Variant("data_cache", "list data layers keep decoded images in memory and read a batch's "
            "items in 4 threads (data_cache=True, --data_cache --data_workers 4): after the "
            "first epoch a batch costs its crop, mirror and transform only",
            enable=_options(data_cache=True, data_workers=4), kinds=("data",)),
    Variant("bf16", "bfloat16 autocast, float32 master weights (bf16=True, --bf16)",
            enable=_options(bf16=True), kinds=("inference", "train"), bfloat16=True),
]


def by_name():
    """{name: Variant}, checking that names are unique and kinds known."""
    table = {}
    for variant in VARIANTS:
        if variant.name in table:
            raise ValueError(f'bench/variants.py: two variants are named "{variant.name}"')
        unknown = set(variant.kinds) - set(KINDS)
        if unknown:
            raise ValueError(f'bench/variants.py: variant "{variant.name}" has unknown kinds '
                             f"{sorted(unknown)}; known: {', '.join(KINDS)}")
        table[variant.name] = variant
    return table
