"""What this machine's CPU offers the engine: its model, the instruction sets that decide which
kernels PyTorch runs (AVX2, AVX-512, AVX512_BF16, AMX), and whether bfloat16 is native.

Speed figures hold for one CPU only: kernels differ per instruction set (PyTorch's own dispatch
and oneDNN's), and so do their rounding and their speed. Both can be capped below what the
hardware has, e.g. ATEN_CPU_CAPABILITY=avx2 and ONEDNN_MAX_CPU_ISA=AVX2 reproduce an AVX2-only
CPU's kernels on an AVX-512 one; `kernels()` reports what is in force, `features()` the
hardware.
"""
import functools
import platform
from pathlib import Path

import torch

# The hardware features that change which kernels run (torch.cpu.get_capabilities() names).
FEATURES = (("AVX2", "avx2"), ("AVX-512", "avx512_f"), ("AVX512_BF16", "avx512_bf16"),
            ("AMX", "amx_bf16"))


def model():
    """The CPU's model name with its family and model numbers (which tell apart CPU
    generations that a virtual machine names alike, e.g. "AMD EPYC"), from /proc/cpuinfo where
    it exists."""
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if not key.strip() and fields:
                break  # the first processor's block is enough
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or "unknown"
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def features():
    """{feature: present} for FEATURES, as the hardware reports them (cpuinfo through torch);
    empty where this torch cannot tell."""
    capabilities = getattr(torch.cpu, "get_capabilities", dict)()
    if not capabilities:
        return {}
    return {name: bool(capabilities.get(key)) for name, key in FEATURES}


@functools.lru_cache(maxsize=None)  # the ISA caps are read once, when oneDNN starts
def native_bfloat16():
    """Whether oneDNN computes bfloat16 convolutions and matrix products in hardware here
    (AVX512_BF16 or AMX, within any ONEDNN_MAX_CPU_ISA cap). Without it PyTorch's bfloat16
    CPU kernels fall back to a path that runs hundreds of times slower than float32."""
    if not torch.backends.mkldnn.is_available():
        return False
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@functools.lru_cache(maxsize=None)  # ATEN_CPU_CAPABILITY is read once, at start-up
def avx512_kernels():
    """Whether PyTorch dispatches to its AVX-512 CPU kernels (within any ATEN_CPU_CAPABILITY
    cap)."""
    return torch.backends.cpu.get_cpu_capability() == "AVX512"


def kernels():
    """The instruction sets the kernels use: ATen's dispatch level and oneDNN's bfloat16."""
    return {"aten": torch.backends.cpu.get_cpu_capability(), "bfloat16": native_bfloat16()}


def describe():
    """One line naming the CPU, its features and the kernels in force, for logs and results."""
    present = features()
    listed = ", ".join(name for name, _ in FEATURES if present.get(name)) or "none known"
    in_force = kernels()
    return (f"{model()}; features: {listed}; kernels: ATen {in_force['aten']}, bfloat16 "
            f"{'native' if in_force['bfloat16'] else 'not native'}")
