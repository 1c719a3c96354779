"""Structure layers: Concat, Eltwise, Flatten, Reshape, Crop, Slice, Silence, ArgMax, DummyData, Python.

Each forward is checked against an independent numpy computation, each backward by finite
differences, and each parameter check by the CaffeError it raises.
"""
import textwrap

import numpy as np
import pytest
import torch

import segnet_caffe as caffe
from segnet_caffe import CaffeError
from tests.layer_testing import check_layer_gradients, layer_from_text, net_from_text

RNG = np.random.default_rng(7)


def rand(*shape):
    return torch.from_numpy(RNG.standard_normal(shape))


def run(layer, *bottoms):
    with torch.no_grad():
        return [t.numpy() for t in layer.forward(list(bottoms))]


# ----- Concat ------------------------------------------------------------------------------------
@pytest.mark.parametrize("params, axis", [("", 1), ("concat_param { axis: 0 }", 0),
                                          ("concat_param { axis: -1 }", 3),
                                          ("concat_param { concat_dim: 2 }", 2)])
def test_concat_forward_and_gradient(params, axis):
    shapes = []
    for extra in (1, 2, 3):
        shape = [2, 3, 4, 5]
        shape[axis] = extra
        shapes.append(shape)
    layer = layer_from_text(f'name: "c" type: "Concat" bottom: "a" bottom: "b" bottom: "c" '
                            f'top: "y" {params}', shapes)
    bottoms = [rand(*s) for s in shapes]
    (y,) = run(layer, *bottoms)
    np.testing.assert_array_equal(y, np.concatenate([b.numpy() for b in bottoms], axis=axis))
    assert check_layer_gradients(layer, bottoms)


def test_concat_errors():
    with pytest.raises(CaffeError, match="not both"):
        layer_from_text('name: "c" type: "Concat" bottom: "a" bottom: "b" top: "y" '
                        'concat_param { axis: 1 concat_dim: 1 }', [(1, 2), (1, 2)])
    with pytest.raises(CaffeError, match="must agree"):
        layer_from_text('name: "c" type: "Concat" bottom: "a" bottom: "b" top: "y"',
                        [(1, 2, 3), (1, 2, 4)]).reshape([(1, 2, 3), (1, 2, 4)])
    with pytest.raises(CaffeError, match="out of range"):
        layer_from_text('name: "c" type: "Concat" bottom: "a" bottom: "b" top: "y" '
                        'concat_param { axis: 3 }', [(1, 2, 3), (1, 2, 3)])


# ----- Eltwise -----------------------------------------------------------------------------------
def eltwise(params, n=3, shape=(2, 3, 4)):
    bottoms = " ".join(f'bottom: "b{i}"' for i in range(n))
    return layer_from_text(f'name: "e" type: "Eltwise" {bottoms} top: "y" '
                           f"eltwise_param {{ {params} }}", [shape] * n)


def test_eltwise_sum_with_coeff():
    layer = eltwise("operation: SUM coeff: 1 coeff: -0.5 coeff: 2")
    bottoms = [rand(2, 3, 4) for _ in range(3)]
    (y,) = run(layer, *bottoms)
    a, b, c = (x.numpy() for x in bottoms)
    np.testing.assert_allclose(y, a - 0.5 * b + 2 * c, rtol=1e-12)
    assert check_layer_gradients(layer, bottoms)


def test_eltwise_prod_forward_gradient_and_zeros():
    layer = eltwise("operation: PROD")
    bottoms = [rand(2, 3, 4) for _ in range(3)]
    (y,) = run(layer, *bottoms)
    a, b, c = (x.numpy() for x in bottoms)
    np.testing.assert_allclose(y, a * b * c, rtol=1e-12)
    assert check_layer_gradients(layer, bottoms)
    # Caffe's stable gradient is the product of the other bottoms, also where a bottom is 0.
    xs = [torch.tensor([0.0, 2.0]), torch.tensor([3.0, 0.0]), torch.tensor([5.0, 7.0])]
    layer = eltwise("operation: PROD", shape=(2,))
    leaves = [x.clone().requires_grad_(True) for x in xs]
    grads = torch.autograd.grad(layer.forward(leaves)[0], leaves, torch.ones(2))
    np.testing.assert_array_equal(grads[0].numpy(), [15.0, 0.0])
    np.testing.assert_array_equal(grads[1].numpy(), [0.0, 14.0])
    np.testing.assert_array_equal(grads[2].numpy(), [0.0, 0.0])


def test_eltwise_prod_unstable_gradient_divides_by_the_bottom():
    layer = eltwise("operation: PROD stable_prod_grad: false")
    bottoms = [rand(2, 3, 4) for _ in range(3)]
    assert check_layer_gradients(layer, bottoms)
    xs = [torch.tensor([0.0, 2.0]).requires_grad_(True), torch.tensor([3.0, 4.0]).requires_grad_(True)]
    layer = eltwise("operation: PROD stable_prod_grad: false", n=2, shape=(2,))
    grad = torch.autograd.grad(layer.forward(xs)[0], xs[0], torch.ones(2))[0]
    assert np.isnan(grad[0].item()) and grad[1].item() == 4.0  # Caffe's dy * y / x, 0/0 at 0


def test_eltwise_max_mask_rule():
    layer = eltwise("operation: MAX", shape=(4,))
    x0 = torch.tensor([1.0, 5.0, 2.0, 2.0])
    x1 = torch.tensor([1.0, 3.0, 2.0, 0.0])
    x2 = torch.tensor([0.0, 5.0, 9.0, 2.0])
    (y,) = run(layer, x0, x1, x2)
    np.testing.assert_array_equal(y, [1.0, 5.0, 9.0, 2.0])
    leaves = [x.clone().requires_grad_(True) for x in (x0, x1, x2)]
    grads = torch.autograd.grad(layer.forward(leaves)[0], leaves, torch.tensor([1.0, 2.0, 3.0, 4.0]))
    # Ties: bottom 1 wins over bottom 0 (Caffe's `a > b ? 0 : 1`), later bottoms need to be larger.
    np.testing.assert_array_equal(grads[0].numpy(), [0.0, 2.0, 0.0, 4.0])
    np.testing.assert_array_equal(grads[1].numpy(), [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(grads[2].numpy(), [0.0, 0.0, 3.0, 0.0])
    layer = eltwise("operation: MAX")
    bottoms = [rand(2, 3, 4) for _ in range(3)]
    (y,) = run(layer, *bottoms)
    np.testing.assert_array_equal(y, np.maximum.reduce([b.numpy() for b in bottoms]))
    assert check_layer_gradients(layer, bottoms)


def test_eltwise_errors():
    with pytest.raises(CaffeError, match="one per bottom"):
        eltwise("operation: SUM coeff: 1 coeff: 2")
    with pytest.raises(CaffeError, match="only to operation SUM"):
        eltwise("operation: PROD coeff: 1 coeff: 2 coeff: 3")
    layer = eltwise("operation: SUM", n=2)
    with pytest.raises(CaffeError, match="same shape"):
        layer.reshape([(2, 3, 4), (2, 3, 5)])


# ----- Flatten / Reshape -------------------------------------------------------------------------
@pytest.mark.parametrize("params, expected", [("", (2, 60)), ("flatten_param { axis: 2 }", (2, 3, 20)),
                                              ("flatten_param { axis: 1 end_axis: 2 }", (2, 12, 5)),
                                              ("flatten_param { axis: -2 }", (2, 3, 20))])
def test_flatten(params, expected):
    layer = layer_from_text(f'name: "f" type: "Flatten" bottom: "x" top: "y" {params}', [(2, 3, 4, 5)])
    x = rand(2, 3, 4, 5)
    (y,) = run(layer, x)
    np.testing.assert_array_equal(y, x.numpy().reshape(expected))
    assert check_layer_gradients(layer, [x])


def test_flatten_errors():
    with pytest.raises(CaffeError, match="in place"):
        layer_from_text('name: "f" type: "Flatten" bottom: "x" top: "x"', [(2, 3)])
    with pytest.raises(CaffeError, match="comes before"):
        layer_from_text('name: "f" type: "Flatten" bottom: "x" top: "y" '
                        'flatten_param { axis: 2 end_axis: 1 }', [(2, 3, 4)])


@pytest.mark.parametrize("shape_params, expected", [
    ("shape { dim: 0 dim: -1 }", (2, 60)),
    ("shape { dim: 6 dim: 20 }", (6, 20)),
    ("shape { dim: 0 dim: 3 dim: -1 dim: 5 }", (2, 3, 4, 5)),
    ("shape { dim: -1 } axis: 1", (2, 60)),
    ("shape { dim: 2 dim: 2 } axis: 2 num_axes: 1", (2, 3, 2, 2, 5)),
    ("shape { dim: 1 } axis: -1 num_axes: 0", (2, 3, 4, 5, 1)),
    ("shape { dim: 1 } axis: 0 num_axes: 0", (1, 2, 3, 4, 5)),
])
def test_reshape(shape_params, expected):
    layer = layer_from_text(f'name: "r" type: "Reshape" bottom: "x" top: "y" '
                            f"reshape_param {{ {shape_params} }}", [(2, 3, 4, 5)])
    x = rand(2, 3, 4, 5)
    assert layer.reshape([(2, 3, 4, 5)]) == [expected]
    (y,) = run(layer, x)
    np.testing.assert_array_equal(y, x.numpy().reshape(expected))
    assert check_layer_gradients(layer, [x])


@pytest.mark.parametrize("shape_params, message", [
    ("shape { dim: -1 dim: -1 }", "more than one -1"),
    ("shape { dim: 7 dim: -1 }", "not divisible"),
    ("shape { dim: 7 dim: 3 }", "holds 21 values"),
    ("shape { dim: 0 dim: 0 dim: 0 dim: 0 dim: 0 }", "no axis 4 to copy"),
    ("shape { dim: 2 } axis: 5", "out of range"),
    ("shape { dim: -2 }", "below -1"),
])
def test_reshape_errors(shape_params, message):
    with pytest.raises(CaffeError, match=message):
        layer_from_text(f'name: "r" type: "Reshape" bottom: "x" top: "y" '
                        f"reshape_param {{ {shape_params} }}", [(2, 3, 4, 5)])


# ----- Crop / Slice ------------------------------------------------------------------------------
@pytest.mark.parametrize("params, window", [
    ("", (slice(None), slice(None), slice(0, 3), slice(0, 2))),
    ("crop_param { offset: 1 }", (slice(None), slice(None), slice(1, 4), slice(1, 3))),
    ("crop_param { axis: 1 offset: 1 offset: 2 offset: 3 }",
     (slice(None), slice(1, 3), slice(2, 5), slice(3, 5))),
])
def test_crop(params, window):
    layer = layer_from_text(f'name: "c" type: "Crop" bottom: "x" bottom: "like" top: "y" {params}',
                            [(2, 4, 5, 6), (2, 2, 3, 2)])
    x, like = rand(2, 4, 5, 6), rand(2, 2, 3, 2)
    (y,) = run(layer, x, like)
    np.testing.assert_array_equal(y, x.numpy()[window])
    assert check_layer_gradients(layer, [x, like], check_bottoms=[0])


def test_crop_errors():
    with pytest.raises(CaffeError, match="one per cropped axis"):
        layer_from_text('name: "c" type: "Crop" bottom: "x" bottom: "l" top: "y" '
                        'crop_param { offset: 1 offset: 1 offset: 1 }', [(1, 1, 5, 5), (1, 1, 2, 2)])
    with pytest.raises(CaffeError, match="cannot crop 4 values at offset 2"):
        layer_from_text('name: "c" type: "Crop" bottom: "x" bottom: "l" top: "y" '
                        'crop_param { offset: 2 }', [(1, 1, 5, 5), (1, 1, 4, 2)])


@pytest.mark.parametrize("params, tops, axis, points", [
    ("slice_param { slice_point: 1 slice_point: 4 }", 3, 1, [1, 4]),
    ("", 2, 1, [3]),
    ("slice_param { axis: -1 }", 2, 3, [2]),
    ("slice_param { slice_dim: 0 }", 2, 0, [2]),
])
def test_slice(params, tops, axis, points):
    names = " ".join(f'top: "t{i}"' for i in range(tops))
    layer = layer_from_text(f'name: "s" type: "Slice" bottom: "x" {names} {params}', [(4, 6, 3, 4)])
    x = rand(4, 6, 3, 4)
    outs = run(layer, x)
    expected = np.split(x.numpy(), points, axis=axis)
    assert len(outs) == len(expected)
    for out, want in zip(outs, expected):
        np.testing.assert_array_equal(out, want)
    assert check_layer_gradients(layer, [x])


def test_slice_errors():
    with pytest.raises(CaffeError, match="one fewer than the tops"):
        layer_from_text('name: "s" type: "Slice" bottom: "x" top: "a" top: "b" '
                        'slice_param { slice_point: 1 slice_point: 2 }', [(2, 6)])
    with pytest.raises(CaffeError, match="evenly"):
        layer_from_text('name: "s" type: "Slice" bottom: "x" top: "a" top: "b"', [(2, 5)])
    with pytest.raises(CaffeError, match="increasing"):
        layer_from_text('name: "s" type: "Slice" bottom: "x" top: "a" top: "b" top: "c" '
                        'slice_param { slice_point: 3 slice_point: 2 }', [(2, 6)])
    with pytest.raises(CaffeError, match="leaves nothing"):
        layer_from_text('name: "s" type: "Slice" bottom: "x" top: "a" top: "b" '
                        'slice_param { slice_point: 6 }', [(2, 6)])
    with pytest.raises(CaffeError, match="not both"):
        layer_from_text('name: "s" type: "Slice" bottom: "x" top: "a" top: "b" '
                        'slice_param { axis: 1 slice_dim: 1 }', [(2, 6)])


# ----- Silence -----------------------------------------------------------------------------------
def test_silence_consumes_blobs():
    net = net_from_text("""
        input: "x" input_shape { dim: 2 dim: 3 }
        input: "y" input_shape { dim: 2 dim: 3 }
        layer { name: "s" type: "Silence" bottom: "x" }
        layer { name: "e" type: "Eltwise" bottom: "y" bottom: "y" top: "z" }
    """)
    assert net.outputs == ["z"]
    net.forward()
    layer = layer_from_text('name: "s" type: "Silence" bottom: "a" bottom: "b"', [(1,), (2,)])
    assert layer.forward([rand(1), rand(2)]) == []
    with pytest.raises(CaffeError, match="top"):
        layer_from_text('name: "s" type: "Silence" bottom: "a" top: "b"', [(1,)]).check_counts()


# ----- ArgMax ------------------------------------------------------------------------------------
def numpy_argmax(x, top_k, out_max_val, axis):
    """Caffe's ArgMax: partial_sort of (value, index) pairs with std::greater (ties: larger index)."""
    def best(values):
        pairs = sorted(((v, i) for i, v in enumerate(values)), reverse=True)[:top_k]
        return [i for _, i in pairs], [v for v, _ in pairs]

    if axis is None:
        flat = x.reshape(x.shape[0], -1)
        rows = []
        for row in flat:
            idx, val = best(list(row))
            rows.append([idx, val] if out_max_val else [idx])
        out = np.asarray(rows, dtype=np.float64)
        return out.reshape(out.shape + (1,) * (max(x.ndim, 3) - 3))
    moved = np.moveaxis(x, axis, -1)
    out = np.empty(moved.shape[:-1] + (top_k,))
    for index in np.ndindex(moved.shape[:-1]):
        idx, val = best(list(moved[index]))
        out[index] = val if out_max_val else idx
    return np.moveaxis(out, -1, axis)


@pytest.mark.parametrize("params, top_k, out_max_val, axis", [
    ("", 1, False, None), ("top_k: 3", 3, False, None), ("top_k: 2 out_max_val: true", 2, True, None),
    ("axis: 1", 1, False, 1), ("axis: 1 top_k: 2 out_max_val: true", 2, True, 1),
    ("axis: -1 top_k: 2", 2, False, 3),
])
def test_argmax(params, top_k, out_max_val, axis):
    layer = layer_from_text(f'name: "a" type: "ArgMax" bottom: "x" top: "y" argmax_param {{ {params} }}',
                            [(2, 3, 2, 4)])
    x = torch.from_numpy(RNG.integers(0, 4, (2, 3, 2, 4)).astype(np.float64))  # many ties
    (y,) = run(layer, x)
    expected = numpy_argmax(x.numpy(), top_k, out_max_val, axis)
    assert layer.reshape([(2, 3, 2, 4)]) == [expected.shape]
    np.testing.assert_array_equal(y, expected)
    assert not layer.forward([x.clone().requires_grad_(True)])[0].requires_grad


def test_argmax_errors():
    with pytest.raises(CaffeError, match="exceeds the size 3"):
        layer_from_text('name: "a" type: "ArgMax" bottom: "x" top: "y" '
                        'argmax_param { axis: 1 top_k: 4 }', [(2, 3, 4)])
    with pytest.raises(CaffeError, match="exceeds the 12 values"):
        layer_from_text('name: "a" type: "ArgMax" bottom: "x" top: "y" '
                        'argmax_param { top_k: 13 }', [(2, 3, 4)])
    with pytest.raises(CaffeError, match="at least 1"):
        layer_from_text('name: "a" type: "ArgMax" bottom: "x" top: "y" '
                        'argmax_param { top_k: 0 }', [(2, 3, 4)])


# ----- DummyData ---------------------------------------------------------------------------------
def test_dummy_data_constant_and_random_tops():
    caffe.set_random_seed(3)
    net = net_from_text("""
        layer { name: "d" type: "DummyData" top: "zero" top: "five" top: "noise"
                dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 4 } shape { dim: 5 dim: 6 }
                                   data_filler { type: "constant" } data_filler { type: "constant" value: 5 }
                                   data_filler { type: "gaussian" std: 2 } } }
    """)
    assert [net.blobs[n].shape for n in ("zero", "five", "noise")] == [(2, 3), (4,), (5, 6)]
    net.forward()
    np.testing.assert_array_equal(net.blobs["zero"].data, np.zeros((2, 3)))
    np.testing.assert_array_equal(net.blobs["five"].data, np.full(4, 5.0))
    first = net.blobs["noise"].data.copy()
    assert first.std() > 0.5
    net.blobs["five"].data[...] = 7  # a constant top is filled once; what the user writes stays
    net.forward()
    np.testing.assert_array_equal(net.blobs["five"].data, np.full(4, 7.0))
    assert not np.array_equal(net.blobs["noise"].data, first)  # random tops are refilled


def test_dummy_data_legacy_dims_and_shared_filler():
    net = net_from_text("""
        layer { name: "d" type: "DummyData" top: "a" top: "b"
                dummy_data_param { num: 2 channels: 3 channels: 1 height: 4 width: 5
                                   data_filler { type: "constant" value: 1.5 } } }
    """)
    net.forward()
    assert net.blobs["a"].shape == (2, 3, 4, 5) and net.blobs["b"].shape == (2, 1, 4, 5)
    np.testing.assert_array_equal(net.blobs["b"].data, np.full((2, 1, 4, 5), 1.5))


@pytest.mark.parametrize("params, message", [
    ("shape { dim: 1 } num: 1 channels: 1 height: 1 width: 1", "not both"),
    ("shape { dim: 1 } shape { dim: 1 } shape { dim: 1 }", "one, or one per top"),
    ("num: 1 num: 1 num: 1 channels: 1 height: 1 width: 1", "num values"),
    ("shape { dim: 1 } data_filler {} data_filler {} data_filler {}", "data_filler"),
])
def test_dummy_data_errors(params, message):
    with pytest.raises(CaffeError, match=message):
        layer_from_text(f'name: "d" type: "DummyData" top: "a" top: "b" dummy_data_param {{ {params} }}',
                        [])


# ----- Python ------------------------------------------------------------------------------------
USER_MODULE = textwrap.dedent('''
    import numpy as np
    import segnet_caffe as caffe


    class Cube(caffe.Layer):
        """y = factor * x**3 (factor from param_str); records what it was given."""

        def setup(self, bottom, top):
            self.factor = float(self.param_str or 1)
            self.seen_phase = self.phase

        def reshape(self, bottom, top):
            top[0].reshape(*bottom[0].data.shape)

        def forward(self, bottom, top):
            top[0].data[...] = self.factor * bottom[0].data ** 3

        def backward(self, top, propagate_down, bottom):
            self.propagate_down = list(propagate_down)
            if propagate_down[0]:
                bottom[0].diff[...] = 3 * self.factor * bottom[0].data ** 2 * top[0].diff


    class DoubleInPlace(caffe.Layer):
        def forward(self, bottom, top):
            top[0].data[...] *= 2          # top 0 is bottom 0, as in Caffe

        def backward(self, top, propagate_down, bottom):
            bottom[0].diff[...] *= 2       # the shared diff holds the top's diff


    class NotALayer:
        pass
''')


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_layers_sd.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)  # found through the working directory, as pycaffe users expect
    yield "user_layers_sd"
    import sys
    sys.modules.pop("user_layers_sd", None)


def test_python_layer_in_a_net(user_module):
    net = net_from_text(f"""
        force_backward: true
        input: "x" input_shape {{ dim: 2 dim: 3 }}
        layer {{ name: "cube" type: "Python" bottom: "x" top: "y"
                 python_param {{ module: "{user_module}" layer: "Cube" param_str: "0.5" }} }}
        layer {{ name: "twice" type: "Python" bottom: "y" top: "y"
                 python_param {{ module: "{user_module}" layer: "DoubleInPlace" }} }}
    """, phase="TRAIN")
    assert net.blobs["y"].shape == (2, 3)
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 2
    net.blobs["x"].data[...] = x
    net.forward()
    np.testing.assert_allclose(net.blobs["y"].data, 2 * 0.5 * x ** 3, rtol=1e-6)
    net.blobs["y"].diff[...] = 1
    net.backward()
    np.testing.assert_allclose(net.blobs["x"].diff, 2 * 1.5 * x ** 2, rtol=1e-6)
    user = net.layer_dict["cube"].user
    assert user.seen_phase == caffe.TRAIN and user.propagate_down == [True]


def test_python_layer_gradient_by_finite_differences(user_module):
    layer = layer_from_text(f'name: "cube" type: "Python" bottom: "x" top: "y" '
                            f'python_param {{ module: "{user_module}" layer: "Cube" param_str: "2" }}',
                            [(3, 4)])
    x = torch.from_numpy(RNG.uniform(0.5, 1.5, (3, 4)))
    (y,) = run(layer, x)
    np.testing.assert_allclose(y, 2 * x.numpy() ** 3, rtol=1e-6)
    # The user's code computes in float32 (numpy blobs): a coarse step keeps the differences exact
    # enough for a cubic.
    assert torch.autograd.gradcheck(lambda t: layer.forward([t])[0], (x.clone().requires_grad_(True),),
                                    eps=1e-2, atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("python_param, message", [
    ('module: "no_such_module_sd" layer: "X"', "cannot import"),
    ('module: "{m}" layer: "Missing"', 'no class "Missing"'),
    ('module: "{m}" layer: "NotALayer"', "subclassing segnet_caffe.Layer"),
    ('layer: "X"', "needs module"),
])
def test_python_layer_errors(user_module, python_param, message):
    with pytest.raises(CaffeError, match=message):
        layer_from_text(f'name: "p" type: "Python" bottom: "x" top: "y" '
                        f"python_param {{ {python_param.format(m=user_module)} }}", [(1,)])


def test_python_layer_user_exceptions_reach_the_caller_as_themselves(user_module):
    """As in pycaffe (BVLC's test_python_layer checks RuntimeError from setup), with a note
    naming the layer."""
    text = (f'force_backward: true input: "x" input_shape {{ dim: 2 }} '
            f'layer {{ name: "p" type: "Python" '
            f'bottom: "x" top: "y" python_param {{ module: "{user_module}" layer: "Cube" }} }}')
    net = net_from_text(text, phase="TRAIN")
    net.layers[1].user.forward = lambda bottom, top: 1 / 0
    with pytest.raises(ZeroDivisionError) as raised:
        net.forward()
    assert raised.value.__notes__ == ['raised by the forward of the Python class of layer "p"']
    net.layers[1].user.forward = lambda bottom, top: None
    net.layers[1].user.backward = lambda top, propagate_down, bottom: {}["missing"]
    net.forward()
    with pytest.raises(KeyError):
        net.backward(y=np.ones((2,), np.float32))
