"""Engine options are a value a Net captures when it is built: scoped overrides, process
defaults, and solvers that build their nets with their own."""
import numpy as np
import torch

import segnet_caffe as caffe
from segnet_caffe import engine_options
from tests.layer_testing import net_from_text, tiny_solver_file

POOL_NET = """
input: "x" input_shape { dim: 1 dim: 2 dim: 4 dim: 4 }
layer { name: "c" type: "Convolution" bottom: "x" top: "c"
        convolution_param { num_output: 2 kernel_size: 1 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "p" type: "Pooling" bottom: "c" top: "p" top: "m"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
"""


def mask_dtype(net):
    """The engine's own mask (forward() would hand out Caffe's float mask)."""
    net.blobs["x"].data[...] = np.random.default_rng(0).normal(size=(1, 2, 4, 4))
    net.forward_range(0, len(net.layers) - 1)
    return net.blobs["m"].tensor().dtype


def test_a_net_keeps_the_options_it_was_built_with():
    with caffe.options(compact_masks=False, channels_last=False) as scoped:
        assert engine_options.current() == scoped
        wide = net_from_text(POOL_NET)
    assert engine_options.current() == caffe.EngineOptions()  # the block restored the default
    compact = net_from_text(POOL_NET)
    engine_options.set_default(compact_masks=False)  # the process default: nets built later only
    assert wide.options.compact_masks is False and compact.options.compact_masks is True
    assert mask_dtype(wide) == torch.int64 and mask_dtype(compact) == torch.uint8
    assert mask_dtype(net_from_text(POOL_NET)) == torch.int64
    assert all(layer.options is wide.options for layer in wide.layers)


def test_nested_scopes_and_exact_use():
    with caffe.options(bf16=True):
        with caffe.options(compact_masks=False) as inner:
            assert inner.bf16 and not inner.compact_masks
        assert engine_options.current().compact_masks
    chosen = caffe.EngineOptions(data_prefetch=False)
    with engine_options.use(chosen):
        assert net_from_text(POOL_NET).options is chosen


def test_caffe_accumulation_turns_onednn_off_only_while_its_nets_compute(tmp_path):
    seen = []
    net_path = tmp_path / "net.prototxt"
    net_path.write_text(POOL_NET.replace('input: "x"', 'force_backward: true input: "x"'))
    with caffe.options(caffe_accumulation=True):
        exact = caffe.Net(str(net_path), caffe.TRAIN)
    original = exact.layers[1].forward

    def spy(bottoms, **kwargs):
        seen.append(torch.backends.mkldnn.enabled)
        return original(bottoms, **kwargs)

    exact.layers[1].forward = spy
    exact.forward(x=np.ones((1, 2, 4, 4), np.float32))
    assert seen == [False] and torch.backends.mkldnn.enabled
    exact.backward(m=np.zeros((1, 2, 2, 2), np.float32), p=np.ones((1, 2, 2, 2), np.float32))
    assert torch.backends.mkldnn.enabled
    assert not exact.options.convolves_channels_last("cpu")  # im2col is NCHW


def test_a_solver_builds_its_nets_with_its_own_options(tmp_path):
    path = tiny_solver_file(tmp_path, "max_iter: 1 test_iter: 1 test_interval: 1")
    with caffe.options(data_prefetch=False):
        solver = caffe.get_solver(path)
    assert solver.options.data_prefetch is False
    assert all(net.options is solver.options for net in [solver.net] + solver.test_nets)


def test_cudnn_autotunes_only_while_a_net_computes(tmp_path):
    """set_mode_gpu used to switch cuDNN's benchmark mode on for the whole process; now each
    pass of a net switches it on and restores the user's setting."""
    net = net_from_text(POOL_NET)
    seen = []
    net.after_forward(lambda index: seen.append(torch.backends.cudnn.benchmark))
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    try:
        net.forward(x=np.ones((1, 2, 4, 4), np.float32))
        assert seen and all(seen) and not torch.backends.cudnn.benchmark
    finally:
        torch.backends.cudnn.benchmark = saved
