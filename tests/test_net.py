"""Net mechanics: phases, splits, in-place tops, loss weights, propagate_down, sharing, weights."""
import numpy as np
import pytest
import torch

import segnet_caffe as caffe
from segnet_caffe import io
from layer_testing import net_from_text, tiny_solver_file

TWO_READERS = """
name: "two_readers"
force_backward: true
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "a"
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "ip2" type: "InnerProduct" bottom: "x" top: "b"
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "y" }
"""


def test_split_layers_are_inserted_and_sum_diffs():
    net = net_from_text(TWO_READERS)
    assert net._layer_names == ["in", "x_in_0_split", "ip1", "ip2", "sum"]
    assert "x_in_0_split_0" in net.blobs and "x_in_0_split_1" in net.blobs
    x = np.random.RandomState(0).randn(2, 3).astype(np.float32)
    net.blobs["x"].data[...] = x
    out = net.forward()
    w1, b1 = (p.data for p in net.params["ip1"])
    w2, b2 = (p.data for p in net.params["ip2"])
    np.testing.assert_allclose(out["y"], x @ w1.T + b1 + x @ w2.T + b2, rtol=1e-5, atol=1e-6)
    dy = np.random.RandomState(1).randn(2, 4).astype(np.float32)
    diffs = net.backward(y=dy)
    np.testing.assert_allclose(diffs["x"], dy @ w1 + dy @ w2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.params["ip1"][0].diff, dy.T @ x, rtol=1e-5, atol=1e-6)


def test_param_diffs_accumulate_across_backward_calls_and_clear():
    net = net_from_text(TWO_READERS)
    net.blobs["x"].data[...] = 1.0
    net.forward()
    net.blobs["y"].diff[...] = 1.0
    net.backward()
    once = net.params["ip1"][0].diff.copy()
    net.backward()
    np.testing.assert_allclose(net.params["ip1"][0].diff, 2 * once, rtol=1e-6)
    net.clear_param_diffs()
    assert not net.params["ip1"][0].diff.any()


IN_PLACE = """
name: "in_place"
force_backward: true
input: "x"
input_shape { dim: 1 dim: 6 }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "h"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }
layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "y"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 } } }
"""


def positive_relu_input(net):
    """Make "ip"'s outputs for an input of ones positive (the random weights could make them all
    negative, and the ReLU would pass no gradient to "ip2"'s weights)."""
    weights = net.params["ip"][0]
    weights.data[...] = np.abs(weights.data) + 0.1


def test_in_place_blob_holds_output_and_bottom_diff():
    net = net_from_text(IN_PLACE)
    x = np.random.RandomState(2).randn(1, 6).astype(np.float32)
    net.forward(x=x)
    w, b = (p.data for p in net.params["ip"])
    pre = x @ w.T + b
    np.testing.assert_allclose(net.blobs["h"].data, np.maximum(pre, 0), rtol=1e-5, atol=1e-6)
    net.backward(y=np.ones((1, 2), np.float32))
    w2 = net.params["ip2"][0].data
    expected = (np.ones((1, 2)) @ w2) * (pre > 0)   # the diff w.r.t. the ReLU's bottom
    np.testing.assert_allclose(net.blobs["h"].diff, expected, rtol=1e-5, atol=1e-6)


IN_PLACE_RELU = """
name: "relu_after_{middle}"
force_backward: true
input: "x"
input_shape {{ dim: 2 dim: 3 dim: 5 dim: 6 }}
layer {{ name: "conv" type: "Convolution" bottom: "x" top: "h"
  convolution_param {{ num_output: 4 kernel_size: 3 pad: 1 weight_filler {{ type: "gaussian" std: 1 }} }} }}
{middle_layer}
layer {{ name: "relu" type: "ReLU" bottom: "h" top: "{relu_top}" relu_param {{ negative_slope: {slope} }} }}
layer {{ name: "conv2" type: "Convolution" bottom: "{relu_top}" top: "y"
  convolution_param {{ num_output: 2 kernel_size: 3 pad: 1 weight_filler {{ type: "gaussian" std: 1 }} }} }}
"""
MIDDLE_LAYERS = {
    "convolution": "",
    "bn": 'layer { name: "mid" type: "BN" bottom: "h" top: "h" bn_param { '
          'scale_filler { type: "constant" value: 1.5 } shift_filler { type: "constant" value: 0.1 } } }',
    "tanh": 'layer { name: "mid" type: "TanH" bottom: "h" top: "h" }',
}


@pytest.mark.parametrize("slope", [0, 0.25])
@pytest.mark.parametrize("middle, overwrites", [("convolution", True), ("bn", True),
                                                ("tanh", False)])
def test_in_place_relu_overwrites_its_bottom_only_where_backward_allows(middle, overwrites, slope):
    """An in-place ReLU computes over the memory of its bottom when the layer that wrote it does
    not read its top in backward (Convolution, BN), not after TanH (whose backward reads it);
    values and every gradient equal those of the same net with the ReLU out of place."""
    def build(relu_top):
        text = IN_PLACE_RELU.format(middle=middle, middle_layer=MIDDLE_LAYERS[middle],
                                    relu_top=relu_top, slope=slope)
        net = net_from_text(text)
        for other in (net.params["conv"], net.params["conv2"]):
            for k, blob in enumerate(other):
                blob.data[...] = np.random.RandomState(k + blob.count).randn(*blob.shape)
        return net
    x = np.random.RandomState(3).randn(2, 3, 5, 6).astype(np.float32)
    dy = np.random.RandomState(4).randn(2, 2, 5, 6).astype(np.float32)
    results = []
    for relu_top in ("h", "r"):
        net = build(relu_top)
        net.blobs["x"].data[...] = x
        relu = net._layer_names.index("relu")  # the engine's passes: forward() hands out views
        net.forward_range(0, relu - 1)
        before = net.blobs["h"].tensor().data_ptr()
        net.forward_range(relu, len(net.layers) - 1)
        if relu_top == "h":
            assert (net.blobs["h"].tensor().data_ptr() == before) == overwrites
        net.backward(y=dy)
        results.append([net.blobs[relu_top].data.copy(), net.blobs["x"].diff.copy()]
                       + [blob.diff.copy() for name in net.params for blob in net.params[name]])
    for in_place, out_of_place in zip(*results):
        np.testing.assert_array_equal(in_place, out_of_place)


PHASES = """
name: "phases"
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }
layer { name: "train_only" type: "ReLU" bottom: "x" top: "t" include { phase: TRAIN } }
layer { name: "test_only" type: "ReLU" bottom: "x" top: "u" include { phase: TEST } }
layer { name: "not_test" type: "ReLU" bottom: "x" top: "v" exclude { phase: TEST } }
layer { name: "deep" type: "ReLU" bottom: "x" top: "w" include { phase: TEST min_level: 2 } }
layer { name: "staged" type: "ReLU" bottom: "x" top: "s" include { stage: "extra" } }
"""


@pytest.mark.parametrize("phase, level, stages, expected", [
    ("TRAIN", 0, (), ["train_only", "not_test"]),
    ("TEST", 0, (), ["test_only"]),
    ("TEST", 2, (), ["test_only", "deep"]),
    ("TEST", 0, ("extra",), ["test_only", "staged"]),
])
def test_include_exclude_rules(phase, level, stages, expected):
    net = caffe.Net(io.parse_net_text(PHASES, "<phases>"), getattr(caffe, phase), level=level,
                    stages=stages)
    kept = [name for name in net._layer_names if name != "in" and "split" not in name]
    assert kept == expected


LOSS = """
name: "loss"
input: "x"
input_shape { dim: 2 dim: 3 dim: 1 dim: 1 }
input: "label"
input_shape { dim: 2 dim: 1 dim: 1 dim: 1 }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "x" bottom: "label" top: "loss" loss_weight: 2.5 }
"""


def test_loss_weight_scales_gradient_and_default_backward_rules():
    net = net_from_text(LOSS, "TRAIN")
    x = np.random.RandomState(3).randn(2, 3, 1, 1).astype(np.float32)
    net.blobs["x"].data[...] = x
    net.blobs["label"].data[...] = np.array([0, 2]).reshape(2, 1, 1, 1)
    loss = net.forward_range(0, len(net.layers) - 1)
    p = np.exp(x[:, :, 0, 0]) / np.exp(x[:, :, 0, 0]).sum(1, keepdims=True)
    single = -np.log(p[[0, 1], [0, 2]]).mean()
    assert loss == pytest.approx(2.5 * single, rel=1e-5)
    assert net.blob_loss_weights["loss"] == 2.5
    np.testing.assert_allclose(net.blobs["loss"].diff, 2.5)
    net.backward()
    # Net inputs get no gradient unless force_backward is set (Caffe's rule).
    assert not net.blobs["x"].diff.any()


def test_propagate_down_false_leaves_bottom_diff_untouched():
    text = IN_PLACE.replace('layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "y"',
                            'layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "y" '
                            'propagate_down: false loss_weight: 1')
    net = net_from_text(text.replace("force_backward: true", ""))
    positive_relu_input(net)
    net.forward(x=np.ones((1, 6), np.float32))
    net.backward(y=np.ones((1, 2), np.float32))
    assert not net.blobs["h"].diff.any()
    assert net.params["ip2"][0].diff.any()
    assert not net.params["ip"][0].diff.any()  # nothing below ip2 is backpropagated


def test_no_loss_means_no_backward_without_force_backward():
    net = net_from_text(IN_PLACE.replace("force_backward: true", ""))
    net.forward(x=np.ones((1, 6), np.float32))
    net.backward(y=np.ones((1, 2), np.float32))
    assert not net.params["ip2"][0].diff.any()


SHARED = """
name: "shared"
force_backward: true
input: "x"
input_shape { dim: 1 dim: 3 }
layer { name: "a" type: "InnerProduct" bottom: "x" top: "ya" param { name: "w" } param { name: "b" }
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "b" type: "InnerProduct" bottom: "x" top: "yb" param { name: "w" } param { name: "b" lr_mult: 0 }
  inner_product_param { num_output: 2 } }
"""


def test_parameter_sharing_by_name():
    net = net_from_text(SHARED)
    assert net.params["a"][0] is net.params["b"][0]
    assert len(net.learnable_params) == 2
    assert net.learnable_params[1].lr_mult == 0  # the sharer's explicit lr_mult applies
    x = np.array([[1.0, 2.0, 3.0]], np.float32)
    out = net.forward(x=x)
    np.testing.assert_array_equal(out["ya"], out["yb"])
    net.backward(ya=np.ones((1, 2), np.float32), yb=np.ones((1, 2), np.float32))
    np.testing.assert_allclose(net.params["a"][0].diff, 2 * np.ones((2, 1)) @ x, rtol=1e-6)


def test_lr_mult_zero_computes_no_parameter_diff():
    text = IN_PLACE.replace('top: "h"\n  inner_product_param { num_output: 5',
                            'top: "h" param { lr_mult: 0 } param { lr_mult: 0 }\n  inner_product_param { num_output: 5')
    text = text.replace('bottom: "h" top: "y"', 'bottom: "h" top: "y" loss_weight: 1')
    net = net_from_text(text.replace("force_backward: true", ""))
    positive_relu_input(net)
    net.forward(x=np.ones((1, 6), np.float32))
    net.backward(y=np.ones((1, 2), np.float32))
    assert not net.params["ip"][0].diff.any()
    assert net.params["ip2"][0].diff.any()


def test_forward_start_end_and_outputs():
    net = net_from_text(IN_PLACE)
    out = net.forward(end="ip", x=np.ones((1, 6), np.float32))
    assert list(out) == ["h"]
    assert net.outputs == ["y"] and net.inputs == ["x"]
    assert net.top_names["ip2"] == ["y"] and net.bottom_names["ip2"] == ["h"]


def test_save_and_copy_from_round_trip(tmp_path):
    net = net_from_text(IN_PLACE)
    path = tmp_path / "w.caffemodel"
    net.save(path)
    other = net_from_text(IN_PLACE)
    other.copy_from(str(path))
    for name in net.params:
        for mine, theirs in zip(net.params[name], other.params[name]):
            np.testing.assert_array_equal(mine.data, theirs.data)
    saved = io.read_caffemodel(str(path))
    assert [layer.name for layer in saved.layer] == net._layer_names
    assert list(saved.layer[1].blobs[0].shape.dim) == [5, 6]


def test_copy_from_shape_mismatch_names_layer_and_shapes(tmp_path):
    net = net_from_text(IN_PLACE)
    path = tmp_path / "w.caffemodel"
    net.save(path)
    wider = net_from_text(IN_PLACE.replace("num_output: 5", "num_output: 7"))
    with pytest.raises(caffe.CaffeError, match=r'layer "ip".*\(5, 6\).*\(7, 6\)'):
        wider.copy_from(str(path))


@pytest.mark.parametrize("text, message", [
    ('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }\n'
     'layer { name: "bad" type: "NoSuchLayer" bottom: "x" top: "y" }', r'unknown layer type "NoSuchLayer"; known types: .*Convolution'),
    ('layer { name: "r" type: "ReLU" bottom: "nowhere" top: "y" }', r'bottom blob "nowhere".*not produced'),
    ('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }\n'
     'layer { name: "r" type: "ReLU" bottom: "x" top: "y" }\n'
     'layer { name: "s" type: "ReLU" bottom: "x" top: "y" }', r'top blob "y" is already produced'),
    ('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }\n'
     'layer { name: "r" type: "ReLU" bottom: "x" bottom: "x" top: "y" }', r'"r" \(ReLU\): takes 1 bottom'),
])
def test_build_errors_are_one_line_caffe_errors(text, message):
    with pytest.raises(caffe.CaffeError, match=message) as info:
        net_from_text(text)
    assert "\n" not in str(info.value)


def test_blob_views_are_live_and_reshape():
    net = net_from_text(IN_PLACE)
    blob = net.blobs["x"]
    assert (blob.num, blob.channels, blob.height, blob.width) == (1, 6, 1, 1)
    blob.reshape(3, 6)
    net.reshape()
    assert net.blobs["y"].shape == (3, 2)
    blob.data[...] = 1.0
    out = net.forward()
    assert out["y"].shape == (3, 2)
    np.testing.assert_array_equal(out["y"][0], out["y"][2])


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the behaviour without CUDA")
def test_set_mode_gpu_without_cuda_falls_back_to_the_cpu_with_one_warning(log_messages, monkeypatch):
    monkeypatch.setitem(caffe.mode._state, "gpu_fallback_warned", False)
    caffe.set_mode_gpu()
    caffe.set_mode_gpu()
    assert caffe.mode.mode() == "cpu"
    assert caffe.mode.device().type == "cpu"
    assert log_messages == ["set_mode_gpu(): CUDA is not available on this machine: computing on the CPU"]


# ----- in-place layers: Caffe's backward reads the overwritten bottom blob ----------------------
def in_place_net(layer_text, then_relu=False):
    relu = ('layer { name: "r" type: "ReLU" bottom: "x1" top: "x1" }' if then_relu else "")
    return net_from_text(f"""
        force_backward: true
        input: "x" input_shape {{ dim: 2 dim: 3 dim: 2 dim: 2 }}
        layer {{ name: "copy" type: "Power" bottom: "x" top: "x1" }}
        layer {{ name: "l" bottom: "x1" top: "x1" {layer_text} }}
        {relu}""", phase="TRAIN")


def run_in_place(net, x, dy):
    net.blobs["x"].data[...] = x
    net.forward()
    net.blobs["x1"].diff[...] = dy
    net.backward()
    return net.blobs["x"].diff.copy()


@pytest.mark.parametrize("recorded", [True, False])
def test_in_place_power_differentiates_at_the_top_as_caffe(recorded):
    """PowerLayer::Backward_cpu reads bottom_data, which an in-place forward overwrote."""
    rng = np.random.default_rng(3)
    x = rng.uniform(0.5, 2.0, (2, 3, 2, 2)).astype(np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)
    net = in_place_net('type: "Power" power_param { power: 2 scale: 0.5 shift: 1 }')
    if recorded:
        dx = run_in_place(net, x, dy)
    else:  # backward without a recorded graph reads the same blobs
        with torch.no_grad():
            net.blobs["x"].data[...] = x
            net.forward()
        net.blobs["x1"].diff[...] = dy
        net.backward()
        dx = net.blobs["x"].diff.copy()
    y = (1 + 0.5 * x) ** 2
    np.testing.assert_allclose(dx, dy * 2 * 0.5 * (1 + 0.5 * y), rtol=1e-5)


def test_in_place_absval_passes_the_gradient_unsigned_as_caffe():
    x = np.linspace(-2, 2, 24).astype(np.float32).reshape(2, 3, 2, 2)
    dy = np.ones_like(x)
    dx = run_in_place(in_place_net('type: "AbsVal"'), x, dy)
    np.testing.assert_array_equal(dx, np.where(x != 0, 1.0, 0.0))  # sign(|x|), not sign(x)


def test_in_place_bn_inference_scale_gradient_reads_the_overwritten_blob():
    """BNLayer (INFERENCE)::Backward_cpu: scale_diff = sum(bottom_data * top_diff), and SegNet
    runs BN in place followed by an in-place ReLU: bottom_data is relu(scale * x + shift)."""
    net = in_place_net('type: "BN" bn_param { bn_mode: INFERENCE scale_filler { type: "constant" '
                       'value: 2 } shift_filler { type: "constant" value: -1 } }', then_relu=True)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 3, 2, 2)).astype(np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)
    dx = run_in_place(net, x, dy)
    y = 2 * x - 1
    dy_bn = dy * (y > 0)
    scale_diff = (np.maximum(y, 0) * dy_bn).sum(axis=(0, 2, 3))
    np.testing.assert_allclose(net.params["l"][0].diff.ravel(), scale_diff, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.params["l"][1].diff.ravel(), dy_bn.sum(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(dx, 2 * dy_bn, rtol=1e-6)


# ----- what a release Caffe build accepts, with a warning here ----------------------------------
def test_repeated_layer_names_work_as_in_caffe(tmp_path, log_messages):
    """No uniqueness check in Caffe: weights go to the first layer of a name (CopyTrainedLayersFrom
    searches from the start), pycaffe's layer_dict / params hold the last."""
    text = ('force_backward: true input: "x" input_shape { dim: 1 dim: 2 } '
            'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "a" '
            'inner_product_param { num_output: 2 weight_filler { type: "constant" value: 1 } } } '
            'layer { name: "ip" type: "InnerProduct" bottom: "a" top: "b" '
            'inner_product_param { num_output: 2 weight_filler { type: "constant" value: 2 } } }')
    net = net_from_text(text)
    assert len(log_messages) == 1 and 'several layers are named "ip"' in log_messages[0]
    assert net.layer_dict["ip"] is net.layers[2] and net.params["ip"][0].data[0, 0] == 2
    source = caffe.io.caffe_pb2.NetParameter()
    layer = source.layer.add(name="ip", type="InnerProduct")
    layer.blobs.add().CopyFrom(io.array_to_blobproto(np.full((2, 2), 7, np.float32)))
    layer.blobs.add().CopyFrom(io.array_to_blobproto(np.zeros(2, np.float32)))
    net.copy_from(source)
    assert net.layers[1].blobs[0].data[0, 0] == 7 and net.layers[2].blobs[0].data[0, 0] == 2
    np.testing.assert_array_equal(net.forward(x=np.ones((1, 2), np.float32))["b"], [[56, 56]])
    diffs = net.backward(b=np.ones((1, 2), np.float32))  # each layer by its own record
    np.testing.assert_array_equal(diffs["x"], [[56, 56]])
    np.testing.assert_array_equal(net._top_ids(1), [net._blob_names.index("a")])


def test_an_empty_net_is_built_with_a_warning(log_messages):
    net = net_from_text("")
    assert net.forward() == {} and log_messages == ["<NetParameter>: the net defines no layers: it is empty"]
    only_train = net_from_text('layer { name: "d" type: "DummyData" top: "x" '
                               'dummy_data_param { shape { dim: 1 } } include { phase: TRAIN } }')
    assert only_train.layers == [] and "no layer of the net is included in the TEST phase" in \
        log_messages[-1]


def test_max_iter_0_trains_nothing_then_snapshots_as_caffe(tmp_path, log_messages):
    solver = caffe.get_solver(tiny_solver_file(
        tmp_path, f'max_iter: 0 snapshot_prefix: "{tmp_path / "s"}"'))
    solver.solve()
    assert solver.iter == 0 and (tmp_path / "s_iter_0.caffemodel").exists()
    assert any("max_iter is 0: solve() runs no training iteration" in m for m in log_messages)


def test_eltwise_max_ignores_coeff_and_accuracy_top_k_0_scores_0(log_messages):
    net = net_from_text('input: "a" input_shape { dim: 1 dim: 3 } input: "b" input_shape { dim: 1 } '
                        'layer { name: "m" type: "Eltwise" bottom: "a" bottom: "a" top: "m" '
                        'eltwise_param { operation: MAX coeff: 2 coeff: 3 } } '
                        'layer { name: "acc" type: "Accuracy" bottom: "m" bottom: "b" top: "acc" '
                        'accuracy_param { top_k: 0 } }')
    out = net.forward(a=np.array([[1, -2, 3]], np.float32), b=np.array([2], np.float32),
                      blobs=["m"])
    np.testing.assert_array_equal(out["m"], [[1, -2, 3]])
    assert float(out["acc"]) == 0.0
    assert any("coeff is ignored by operation MAX" in m for m in log_messages)
