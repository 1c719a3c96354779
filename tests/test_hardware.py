"""What the CPU offers (segnet_caffe.hardware) and `segnet-caffe device_query`'s CPU line."""
import os
import subprocess
import sys

import torch

from segnet_caffe import hardware


def test_describe_names_the_model_the_features_and_the_kernels_in_force():
    line = hardware.describe()
    assert line.startswith(hardware.model())
    assert f"ATen {torch.backends.cpu.get_cpu_capability()}" in line
    assert ("bfloat16 native" in line) == hardware.native_bfloat16()
    for name, present in hardware.features().items():
        assert (name in line.split("kernels:")[0]) == present


def test_isa_caps_reach_the_kernels_as_on_an_avx2_only_cpu():
    """ONEDNN_MAX_CPU_ISA=AVX2 / ATEN_CPU_CAPABILITY=avx2 (how an AVX-512 machine reproduces
    an AVX2-only one) leave no native bfloat16 and AVX2 kernels, whatever the hardware."""
    code = "from segnet_caffe import hardware; print(hardware.kernels())"
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2", ATEN_CPU_CAPABILITY="avx2")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "{'aten': 'AVX2', 'bfloat16': False}"


def test_device_query_prints_the_cpu(cli_in_process):
    status, err = cli_in_process("device_query")
    assert status == 0
    assert f"CPU: {hardware.describe()}" in err
