"""bfloat16 autocast (EngineOptions.bf16): float32 master weights, float32 losses, results within
bfloat16's precision of float32 training."""

import numpy as np
import pytest
import torch

from segnet_caffe import cli, engine_options, hardware, mode
from test_inference_options import NET
from layer_testing import net_from_text

# NET's layers (convolutions, in-place BN, BatchNorm + Scale, ReLU) in TRAIN with a loss.
TRAIN_NET = NET.replace("INFERENCE", "LEARN") + """
input: "label" input_shape { dim: 2 dim: 1 dim: 9 dim: 11 }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "c4" bottom: "label" top: "loss" }
"""


def step(enabled):
    engine_options.set_default(bf16=enabled, bf16_without_native_support=True)  # tiny maps: fast on every CPU
    mode.set_random_seed(11)
    net = net_from_text(TRAIN_NET, phase="TRAIN")
    rng = np.random.RandomState(12)
    net.blobs["x"].data[...] = rng.randn(2, 3, 9, 11)
    net.blobs["label"].data[...] = rng.randint(0, 4, (2, 1, 9, 11))
    net.clear_param_diffs()
    loss = net.forward_range(0, len(net.layers) - 1)
    net.backward_range(len(net.layers) - 1, 0)
    return net, loss


def test_bf16_runs_convolutions_in_bfloat16_with_float32_weights_and_loss():
    net, loss = step(True)
    assert net.blobs["c1"].tensor().dtype == torch.bfloat16
    assert net.blobs["loss"].tensor().dtype == torch.float32
    for blobs in net.params.values():
        for blob in blobs:
            assert blob.tensor().dtype == torch.float32
            assert blob.diff_tensor().dtype == torch.float32
    assert net.blobs["c1"].data.dtype == np.float32  # users read float32 values
    plain, plain_loss = step(False)
    assert loss == pytest.approx(plain_loss, rel=2e-2)
    for name, blobs in plain.params.items():
        # Every convolution here feeds a BN: a conv bias's true gradient is 0 and both runs
        # give rounding noise, so only the filters are compared among conv parameters.
        for blob, low in zip(blobs[:1] if name.startswith("conv") else blobs, net.params[name]):
            # bfloat16 keeps ~3 digits per value; through the backward of three BN layers the
            # gradients stay within 20% of float32's in norm (measured: up to 11%, the first
            # BN's shift) and point the same way. BatchNorm's statistics get none (lr_mult 0).
            exact, rough = blob.diff.ravel(), low.diff.ravel()
            if not exact.any():
                assert not rough.any(), name
                continue
            assert np.linalg.norm(rough - exact) < 0.2 * np.linalg.norm(exact), name
            assert rough @ exact > 0.98 * np.linalg.norm(rough) * np.linalg.norm(exact), name


def test_cli_flags_set_the_modes(monkeypatch):
    monkeypatch.setattr(hardware, "native_bfloat16", lambda: True)
    args = cli.build_parser().parse_args(["time", "--model", "x.prototxt", "--bf16",
                                          "--channels_last"])
    assert args.bf16 and args.channels_last
    with pytest.raises(SystemExit):  # the two layouts exclude each other
        cli.build_parser().parse_args(["time", "--channels_last", "--nchw"])

    def bf16_and_channels_last():
        options = engine_options.current()
        return options.computes_bf16(mode.device()), options.convolves_channels_last(mode.device())

    cli.main(["time", "--model", "no_such.prototxt", "--bf16", "--channels_last"])
    assert bf16_and_channels_last() == (True, True)
    cli.main(["time", "--model", "no_such.prototxt", "--nchw"])
    assert bf16_and_channels_last() == (False, False)
    cli.main(["time", "--model", "no_such.prototxt"])
    assert bf16_and_channels_last()[1] == hardware.avx512_kernels()  # the measured rule


def test_a_cpu_without_native_bfloat16_computes_in_float32_and_says_so_once(monkeypatch, log_messages):
    """PyTorch's bfloat16 fallback on such CPUs (AVX2 only) is hundreds of times slower than
    float32: --bf16 must not lead there silently."""
    monkeypatch.setattr(hardware, "native_bfloat16", lambda: False)
    monkeypatch.setattr(engine_options, "_warned", set())
    engine_options.set_default(bf16=True)
    net = net_from_text(TRAIN_NET, phase="TRAIN")
    net.forward()
    net.forward()
    assert net.blobs["c1"].tensor().dtype == torch.float32
    assert len(log_messages) == 1 and "no native bfloat16 (AVX512_BF16 or AMX)" in log_messages[0]
    assert engine_options.current().computes_bf16("cuda")  # a GPU computes bfloat16 natively
    engine_options.set_default(bf16=True, bf16_without_native_support=True)
    net.forward()
    assert net.blobs["c1"].tensor().dtype == torch.float32  # a net keeps the options it was built with
    net = net_from_text(TRAIN_NET, phase="TRAIN")
    net.forward()
    assert net.blobs["c1"].tensor().dtype == torch.bfloat16
