"""Inference speed options give the plain engine's values: BN folding and channels-last."""
from pathlib import Path

import numpy as np
import pytest
import torch

import segnet_caffe as caffe
from segnet_caffe import engine_options, io, mode
from segnet_caffe.errors import CaffeError
from layer_testing import forward_adopting_ties, layer_from_text, net_from_text, pooling_masks
from segnet_caffe.layer_types import bn as BN

PROTOTXT = Path(__file__).resolve().parents[1] / "prototxt"

CONV = 'type: "Convolution" convolution_param {{ num_output: 4 kernel_size: 3 pad: 1 {extra} ' \
       'weight_filler {{ type: "gaussian" std: 0.3 }} bias_filler {{ type: "gaussian" std: 0.3 }} }}'
BN_INFERENCE = 'type: "BN" bn_param { bn_mode: INFERENCE scale_filler { type: "gaussian" std: 1 } ' \
               'shift_filler { type: "gaussian" std: 1 } }'


def layer(name, body, bottom, top):
    return f'layer {{ name: "{name}" {body} bottom: "{bottom}" top: "{top}" }}'


# conv1 + in-place BN (INFERENCE) + ReLU; conv2 (no bias) + in-place BatchNorm (global stats)
# + Scale with bias; conv3 + BN that is NOT in place (must stay unfolded); a LEARN BN after conv4.
NET = "\n".join([
    'name: "folding" input: "x" input_shape { dim: 2 dim: 3 dim: 9 dim: 11 }',
    layer("conv1", CONV.format(extra=""), "x", "c1"),
    layer("bn1", BN_INFERENCE, "c1", "c1"),
    layer("relu1", 'type: "ReLU"', "c1", "c1"),
    layer("conv2", CONV.format(extra="bias_term: false"), "c1", "c2"),
    layer("bn2", 'type: "BatchNorm" batch_norm_param { use_global_stats: true }', "c2", "c2"),
    layer("scale2", 'type: "Scale" scale_param { bias_term: true filler { type: "gaussian" '
          'std: 1 } bias_filler { type: "gaussian" std: 1 } }', "c2", "c2"),
    layer("conv3", CONV.format(extra=""), "c2", "c3"),
    layer("bn3", BN_INFERENCE, "c3", "b3"),
    layer("conv4", CONV.format(extra=""), "b3", "c4"),
    layer("bn4", 'type: "BN" bn_param { bn_mode: LEARN scale_filler { type: "constant" '
          'value: 1 } }', "c4", "c4"),
])


def folding_net():
    mode.set_random_seed(3)
    net = net_from_text(NET)
    rng = np.random.RandomState(4)
    bn2 = net.params["bn2"]
    bn2[0].data[...] = rng.randn(4)
    bn2[1].data[...] = rng.rand(4) + 0.5
    bn2[2].data[...] = 0.8
    net.blobs["x"].data[...] = rng.randn(2, 3, 9, 11)
    return net


def blob_values(net):
    return {name: blob.data.copy() for name, blob in net.blobs.items()}


def test_fold_bn_folds_in_place_affine_layers_and_keeps_every_blob():
    net = folding_net()
    net.forward()
    plain = blob_values(net)
    weights = {name: [b.data.copy() for b in blobs] for name, blobs in net.params.items()}
    assert net.fold_bn() == ["bn1", "relu1", "bn2", "scale2"]
    for name in plain:
        net.blobs[name].data[...] = 0 if name != "x" else plain["x"]
    net.forward()
    for name, value in plain.items():
        np.testing.assert_allclose(net.blobs[name].data, value, rtol=1e-5, atol=1e-5,
                                   err_msg=name)
    for name, blobs in net.params.items():  # parameters (and so saved weights) are untouched
        for blob, before in zip(blobs, weights[name]):
            np.testing.assert_array_equal(blob.data, before)


def test_folded_net_follows_parameter_edits_and_partial_ranges_run_unfolded():
    net = folding_net()
    net.fold_bn()
    net.params["bn1"][0].data[...] *= 2  # folded weights come from the current parameters
    net.forward()
    folded = net.blobs["c1"].data.copy()
    net.unfold_bn()
    net.forward()
    np.testing.assert_allclose(net.blobs["c1"].data, folded, rtol=1e-5, atol=1e-5)
    # A range ending at conv1 leaves conv1's own output, as Caffe does: the chain runs unfolded.
    net.fold_bn()
    net.forward(end="conv1")
    raw = net.blobs["c1"].data.copy()
    net.unfold_bn()
    net.forward(end="conv1")
    np.testing.assert_array_equal(net.blobs["c1"].data, raw)


def test_backward_through_a_folded_layer_is_refused():
    mode.set_random_seed(3)
    net = net_from_text(NET.replace('name: "folding"', 'name: "folding" force_backward: true'))
    net.blobs["x"].data[...] = np.random.RandomState(4).randn(2, 3, 9, 11)
    net.fold_bn()
    net.forward()
    net.blobs["c4"].diff[...] = 1
    with pytest.raises(CaffeError, match='layer "scale2".*unfold_bn'):
        net.backward()
    net.unfold_bn()
    net.forward()
    net.backward()  # and backward works again once unfolded


def run_segnet_basic():
    """SegNet-Basic's inference net on a 48x64 input (an Input for its data layer), BN
    parameters away from the identity: every layer type the nets use."""
    param = io.read_net_prototxt(str(PROTOTXT / "segnet_basic_inference.prototxt"))
    data = param.layer[0]
    data.Clear()
    data.name, data.type = "data", "Input"
    data.top.append("data")
    data.input_param.shape.add().dim.extend([1, 3, 48, 64])
    for layer_param in param.layer:
        if layer_param.type == "Upsample":  # scale 2 of each pooled size
            layer_param.upsample_param.ClearField("upsample_h")
            layer_param.upsample_param.ClearField("upsample_w")
    mode.set_random_seed(5)
    net = caffe.Net(param, caffe.TEST)
    rng = np.random.RandomState(6)
    for layer_param in param.layer:
        if layer_param.type == "BN":
            for blob in net.params[layer_param.name]:
                blob.data[...] = rng.rand(*blob.shape) + 0.5
    net.blobs["data"].data[...] = rng.rand(1, 3, 48, 64) * 255
    return net


def test_segnet_basic_folded_and_channels_last_equal_the_plain_engine():
    """Each variant against the plain engine run with the variant's choices at pooling
    near-ties (forward_adopting_ties): other kernels round differently and may break a tie
    the other way, which no tolerance on the outputs could absorb."""
    rtol, atol = 1e-4, 1e-4
    engine_options.set_default(channels_last=True)
    assert run_segnet_basic().fold_bn()  # its BN layers are in place after convolutions
    for fold in (False, True):
        engine_options.set_default(channels_last=True)
        net = run_segnet_basic()
        if fold:
            net.fold_bn()
        out = net.forward(blobs=["conv_decode1"])
        engine_options.set_default(channels_last=False)
        plain = run_segnet_basic()
        forward_adopting_ties(plain, pooling_masks(net), rtol, atol)
        for name, value in out.items():
            expected = plain.blobs[name].data
            scale = max(1.0, float(np.abs(expected).max()))
            np.testing.assert_allclose(value, expected, rtol=rtol, atol=atol * scale,
                                       err_msg=f"{name} fold={fold}")


def test_channels_last_training_step_equals_plain():
    """Forward and backward (bottom and parameter diffs) in channels-last equal NCHW's."""
    results = []
    for enabled in (False, True):
        engine_options.set_default(channels_last=enabled)
        mode.set_random_seed(7)
        net = net_from_text(NET.replace("INFERENCE", "LEARN"), phase="TRAIN")
        net.blobs["x"].data[...] = np.random.RandomState(8).randn(2, 3, 9, 11)
        net.forward()
        net.blobs["c4"].diff[...] = np.random.RandomState(9).randn(*net.blobs["c4"].shape)
        net.backward()
        results.append([net.blobs["c4"].data.copy()] +
                       [b.diff.copy() for blobs in net.params.values() for b in blobs])
    for plain, nhwc in zip(*results):
        np.testing.assert_allclose(nhwc, plain, rtol=1e-4, atol=1e-4)


def test_bn_learn_on_channels_last_maps_keeps_the_nchw_kernels_accuracy():
    """PyTorch's channels-last CPU batch-norm kernels sum less accurately (here 1.5e-5 in the
    output and 1.4e-4 in the scale gradient against float64, when a map's mean is large
    against its spread, as after a convolution's bias); the BN layer's channels-last path
    stays within the NCHW kernel's rounding (here 9e-7 and 8e-6)."""
    layer = layer_from_text('name: "bn" type: "BN" bottom: "x" top: "x" bn_param { bn_mode: LEARN '
                            'scale_filler { type: "uniform" min: 0.5 max: 1.5 } '
                            'shift_filler { type: "gaussian" std: 1 } }', [(2, 8, 96, 128)])
    rng = np.random.RandomState(0)
    x = torch.from_numpy(rng.randn(2, 8, 96, 128).astype(np.float32) * 0.5 + 30)
    dy = torch.from_numpy(rng.randn(2, 8, 96, 128).astype(np.float32))
    results = {}
    for dtype, layout in ((torch.float64, torch.contiguous_format),
                          (torch.float32, torch.channels_last)):
        scale, shift = (b.tensor().detach().to(dtype).requires_grad_(True) for b in layer.blobs)
        bottom = x.to(dtype).contiguous(memory_format=layout).requires_grad_(True)
        y = BN._batch_norm(bottom, scale.reshape(-1), shift.reshape(-1), layer.eps)
        assert y.is_contiguous(memory_format=layout)
        y.backward(dy.to(dtype).contiguous(memory_format=layout))
        results[dtype] = [t.detach().double() for t in (y, bottom.grad, scale.grad, shift.grad)]
    for name, low, exact, tolerance in zip(("y", "dx", "dscale", "dshift"), results[torch.float32],
                                           results[torch.float64], (5e-6, 1e-6, 4e-5, 1e-6)):
        error = float((low - exact).abs().max() / exact.abs().max())
        assert error < tolerance, f"{name}: relative error {error:.1e}"
