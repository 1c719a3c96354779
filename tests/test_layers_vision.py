"""Convolution, Deconvolution, Pooling, Upsample, LRN and InnerProduct against independent numpy
loops written from Caffe's C++ (not the torch calls the layers use), finite-difference gradient
checks, and the parameter checks."""
import math

import numpy as np
import pytest
import torch

from segnet_caffe.errors import CaffeError
from layer_testing import check_layer_gradients, layer_from_text, net_from_text
from tests.conftest import SHARED_DIR

FIXTURES = SHARED_DIR / "conformance" / "layers"


def rand(*shape, seed=0):
    return np.random.RandomState(seed).uniform(-2.0, 2.0, shape)


def forward(layer, *bottoms):
    with torch.no_grad():
        return [t.numpy() for t in layer.forward([torch.from_numpy(np.asarray(b)) for b in bottoms])]


def set_params(layer, *values):
    for blob, value in zip(layer.blobs, values):
        blob.set_tensor(torch.from_numpy(np.asarray(value, dtype=np.float64)))


def gradients_ok(layer, *bottoms, **kwargs):
    return check_layer_gradients(layer, [torch.from_numpy(np.asarray(b)) for b in bottoms], **kwargs)


def raises(match, text, shapes, bottoms=None):
    with pytest.raises(CaffeError, match=match):
        layer = layer_from_text(text, shapes)
        if bottoms is not None:
            forward(layer, *bottoms)


# ----- numpy references (Caffe's loops) ----------------------------------------------------------
def ref_conv(x, w, b, stride, pad, dilation, group):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    eh, ew = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
    oh, ow = (h + 2 * pad[0] - eh) // stride[0] + 1, (wd + 2 * pad[1] - ew) // stride[1] + 1
    y = np.zeros((n, o, oh, ow))
    per_group = o // group
    for out in range(o):
        g = out // per_group
        for i in range(oh):
            for j in range(ow):
                r, q = i * stride[0], j * stride[1]
                patch = xp[:, g * cg:(g + 1) * cg, r:r + eh:dilation[0], q:q + ew:dilation[1]]
                y[:, out, i, j] = (patch * w[out]).sum(axis=(1, 2, 3)) + (0 if b is None else b[out])
    return y


def ref_deconv(x, w, b, stride, pad, dilation, group):
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    full = np.zeros((n, og * group, stride[0] * (h - 1) + dilation[0] * (kh - 1) + 1,
                     stride[1] * (wd - 1) + dilation[1] * (kw - 1) + 1))
    per_group = c // group
    for ch in range(c):
        g = ch // per_group
        for i in range(h):
            for j in range(wd):
                for a in range(kh):
                    for q in range(kw):
                        full[:, g * og:(g + 1) * og, i * stride[0] + a * dilation[0],
                             j * stride[1] + q * dilation[1]] += x[:, ch, i, j, None] * w[ch, :, a, q]
    y = full[:, :, pad[0]:full.shape[2] - pad[0], pad[1]:full.shape[3] - pad[1]]
    return y + (0 if b is None else b.reshape(1, -1, 1, 1))


def ref_pool(x, method, kernel, stride, pad):
    n, c, h, w = x.shape
    pooled = []
    for size, k, s, p in zip((h, w), kernel, stride, pad):
        out = int(math.ceil((size + 2 * p - k) / s)) + 1
        if p and (out - 1) * s >= size + p:
            out -= 1
        pooled.append(out)
    y = np.zeros((n, c) + tuple(pooled))
    mask = np.full(y.shape, -1)
    for ph in range(pooled[0]):
        for pw in range(pooled[1]):
            hs, ws = ph * stride[0] - pad[0], pw * stride[1] - pad[1]
            he, we = min(hs + kernel[0], h + pad[0]), min(ws + kernel[1], w + pad[1])
            divisor = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            for i in range(n):
                for j in range(c):
                    if method == "AVE":
                        y[i, j, ph, pw] = x[i, j, hs:he, ws:we].sum() / divisor
                        continue
                    best = -np.inf
                    for r in range(hs, he):
                        for q in range(ws, we):
                            if x[i, j, r, q] > best:  # strict: the first maximum wins
                                best, mask[i, j, ph, pw] = x[i, j, r, q], r * w + q
                    y[i, j, ph, pw] = best
    return y, mask


def ref_upsample(x, mask, out_h, out_w):
    n, c = x.shape[:2]
    y = np.zeros((n, c, out_h * out_w))
    for i in range(n):
        for j in range(c):
            for value, index in zip(x[i, j].ravel(), mask[i, j].ravel()):
                y[i, j, int(index)] = value
    return y.reshape(n, c, out_h, out_w)


def ref_lrn(x, size, alpha, beta, k, across):
    n, c, h, w = x.shape
    half = (size - 1) // 2
    scale = np.zeros_like(x)
    for i in range(n):
        for j in range(c):
            for r in range(h):
                for q in range(w):
                    if across:
                        window = x[i, max(0, j - half):j + half + 1, r, q]
                        scale[i, j, r, q] = k + alpha / size * (window ** 2).sum()
                    else:
                        window = x[i, j, max(0, r - half):r + half + 1, max(0, q - half):q + half + 1]
                        scale[i, j, r, q] = 1 + alpha / size ** 2 * (window ** 2).sum()
    return x * scale ** -beta


# ----- Convolution -------------------------------------------------------------------------------
CONVS = [
    # (convolution_param text, bottom shape, stride, pad, dilation, group)
    ("num_output: 4 kernel_size: 3", (2, 3, 6, 7), (1, 1), (0, 0), (1, 1), 1),
    ("num_output: 6 kernel_size: 3 pad: 1 stride: 2 group: 2", (2, 4, 7, 9), (2, 2), (1, 1), (1, 1), 2),
    ("num_output: 2 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 2 pad_w: 0",
     (1, 2, 5, 6), (2, 1), (2, 0), (1, 1), 1),
    ("num_output: 3 kernel_size: 3 kernel_size: 2 pad: 1 pad: 0 stride: 1 stride: 2",
     (1, 2, 5, 6), (1, 2), (1, 0), (1, 1), 1),
    ("num_output: 2 kernel_size: 2 dilation: 2 pad: 1 bias_term: false", (1, 3, 6, 5),
     (1, 1), (1, 1), (2, 2), 1),
]


@pytest.mark.parametrize("text,shape,stride,pad,dilation,group", CONVS, ids=[c[0] for c in CONVS])
def test_convolution_forward_and_gradient(text, shape, stride, pad, dilation, group):
    layer = layer_from_text(f'name: "c" type: "Convolution" bottom: "x" top: "y" '
                            f"convolution_param {{ {text} }}", [shape])
    weight_shape = layer.blobs[0].shape
    assert weight_shape[1] == shape[1] // group
    w = rand(*weight_shape, seed=1)
    b = rand(weight_shape[0], seed=2) if len(layer.blobs) > 1 else None
    set_params(layer, w, *([] if b is None else [b]))
    x = rand(*shape)
    (y,) = forward(layer, x)
    np.testing.assert_allclose(y, ref_conv(x, w, b, stride, pad, dilation, group), rtol=1e-10, atol=1e-10)
    assert gradients_ok(layer, x)


def test_convolution_blob_shapes_fillers_and_dtype():
    layer = layer_from_text('name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param '
                            '{ num_output: 6 kernel_size: 3 group: 3 weight_filler { type: "constant" '
                            'value: 0.5 } bias_filler { type: "constant" value: -1 } }', [(1, 9, 4, 4)])
    assert [b.shape for b in layer.blobs] == [(6, 3, 3, 3), (6,)]
    assert (layer.blobs[0].data == 0.5).all() and (layer.blobs[1].data == -1).all()
    (y,) = layer.forward([torch.ones(1, 9, 4, 4, dtype=torch.float64)])
    assert y.dtype == torch.float64 and y.shape == (1, 6, 2, 2)
    np.testing.assert_allclose(y.detach().numpy(), 0.5 * 27 - 1)


def test_convolution_multiple_bottoms_share_filters():
    layer = layer_from_text('name: "c" type: "Convolution" bottom: "a" bottom: "b" top: "ya" top: "yb" '
                            'convolution_param { num_output: 2 kernel_size: 1 }', [(1, 3, 2, 2)] * 2)
    w = rand(2, 3, 1, 1, seed=3)
    set_params(layer, w, np.zeros(2))
    a, b = rand(1, 3, 2, 2, seed=4), rand(1, 3, 2, 2, seed=5)
    ya, yb = forward(layer, a, b)
    np.testing.assert_allclose(yb, ref_conv(b, w, None, (1, 1), (0, 0), (1, 1), 1), rtol=1e-10)


CONV_ERRORS = [
    ("num_output: 0 kernel_size: 3", "num_output"),
    ("kernel_size: 3", "num_output"),
    ("num_output: 4", "kernel_size .*required"),
    ("num_output: 4 kernel_size: 3 group: 4", "group 4 does not divide the bottom's 6 channels"),
    ("num_output: 4 kernel_size: 3 group: 3", "group 3 does not divide num_output 4"),
    ("num_output: 4 kernel_size: 3 axis: 2", "only axis: 1"),
    ("num_output: 4 kernel_h: 3", "both kernel_h and kernel_w"),
    ("num_output: 4 kernel_size: 3 kernel_h: 3 kernel_w: 3", "not both"),
    ("num_output: 4 kernel_size: 3 kernel_size: 3 kernel_size: 3", "once per spatial axis"),
    ("num_output: 4 kernel_size: 3 stride: 0", "stride must be positive"),
]


@pytest.mark.parametrize("text,match", CONV_ERRORS, ids=[e[0] for e in CONV_ERRORS])
def test_convolution_parameter_errors(text, match):
    raises(match, f'name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param {{ {text} }}',
           [(1, 6, 5, 5)])


def test_convolution_kernel_larger_than_padded_input_names_both_sizes():
    raises(r"kernel \(7 .*\) is larger than the padded input \(6 = 4 \+ 2 \* pad 1\)",
           'name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param '
           '{ num_output: 2 kernel_size: 7 pad: 1 }', [(1, 1, 4, 9)], [np.zeros((1, 1, 4, 9))])


def test_convolution_in_a_net_reports_small_input_at_construction():
    with pytest.raises(CaffeError, match='layer "c".*larger than the padded input'):
        net_from_text('input: "x" input_shape { dim: 1 dim: 1 dim: 3 dim: 3 } layer { name: "c" '
                      'type: "Convolution" bottom: "x" top: "y" convolution_param '
                      '{ num_output: 1 kernel_size: 5 } }')


# ----- Deconvolution -----------------------------------------------------------------------------
DECONVS = [
    ("num_output: 3 kernel_size: 4 stride: 2 pad: 1", (2, 4, 3, 4), (2, 2), (1, 1), (1, 1), 1),
    ("num_output: 4 kernel_size: 3 stride: 2 group: 2 bias_term: false", (1, 2, 3, 3),
     (2, 2), (0, 0), (1, 1), 2),
    ("num_output: 2 kernel_h: 3 kernel_w: 2 stride_h: 1 stride_w: 3 pad_h: 1 pad_w: 0 dilation: 2",
     (1, 3, 3, 2), (1, 3), (1, 0), (2, 2), 1),
]


@pytest.mark.parametrize("text,shape,stride,pad,dilation,group", DECONVS, ids=[d[0] for d in DECONVS])
def test_deconvolution_forward_and_gradient(text, shape, stride, pad, dilation, group):
    layer = layer_from_text(f'name: "d" type: "Deconvolution" bottom: "x" top: "y" '
                            f"convolution_param {{ {text} }}", [shape])
    weight_shape = layer.blobs[0].shape
    assert weight_shape[0] == shape[1]  # (C_in, num_output / group, kh, kw)
    w = rand(*weight_shape, seed=6)
    b = rand(weight_shape[1] * group, seed=7) if len(layer.blobs) > 1 else None
    set_params(layer, w, *([] if b is None else [b]))
    x = rand(*shape, seed=8)
    (y,) = forward(layer, x)
    expected = ref_deconv(x, w, b, stride, pad, dilation, group)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)
    assert gradients_ok(layer, x)


def test_deconvolution_errors():
    base = 'name: "d" type: "Deconvolution" bottom: "x" top: "y" convolution_param '
    raises("group 2 does not divide num_output 3", base + "{ num_output: 3 kernel_size: 2 group: 2 }",
           [(1, 4, 3, 3)])
    raises("output would have size -1", base + "{ num_output: 1 kernel_size: 1 pad: 1 }",
           [(1, 1, 1, 1)], [np.zeros((1, 1, 1, 1))])


# ----- Pooling -----------------------------------------------------------------------------------
POOLS = [
    # (method, kernel, stride, pad, bottom shape): SegNet's 2x2/2 on odd and even maps, pads up to
    # kernel - 1 (beyond PyTorch's kernel/2), kernels larger than the input, overlapping windows.
    ("MAX", (2, 2), (2, 2), (0, 0), (2, 2, 7, 9)),
    ("MAX", (3, 3), (2, 2), (1, 1), (1, 2, 8, 10)),
    ("MAX", (3, 2), (2, 1), (2, 1), (1, 2, 5, 6)),
    ("MAX", (4, 3), (3, 2), (3, 2), (1, 1, 5, 4)),
    ("MAX", (4, 5), (2, 2), (0, 0), (1, 1, 3, 4)),
    ("AVE", (2, 2), (2, 2), (0, 0), (2, 2, 7, 9)),
    ("AVE", (3, 3), (2, 2), (1, 1), (1, 2, 8, 10)),
    ("AVE", (3, 2), (2, 1), (2, 1), (1, 2, 5, 6)),
    ("AVE", (4, 3), (3, 2), (3, 2), (1, 1, 5, 4)),
    ("AVE", (4, 5), (2, 2), (0, 0), (1, 1, 3, 4)),
]


def pool_text(method, kernel, stride, pad, mask=False):
    second = 'top: "m"' if mask else ""
    return (f'name: "p" type: "Pooling" bottom: "x" top: "y" {second} '
            f"pooling_param {{ pool: {method} kernel_h: {kernel[0]} kernel_w: {kernel[1]} "
            f"stride_h: {stride[0]} stride_w: {stride[1]} pad_h: {pad[0]} pad_w: {pad[1]} }}")


@pytest.mark.parametrize("method,kernel,stride,pad,shape", POOLS, ids=[str(p) for p in POOLS])
def test_pooling_forward_mask_and_gradient(method, kernel, stride, pad, shape):
    layer = layer_from_text(pool_text(method, kernel, stride, pad, method == "MAX"), [shape])
    x = rand(*shape, seed=9)
    tops = forward(layer, x)
    y, mask = ref_pool(x, method, kernel, stride, pad)
    assert tops[0].shape == y.shape
    np.testing.assert_allclose(tops[0], y, rtol=1e-12)
    if method == "MAX":
        assert tops[1].dtype == np.int64 and (tops[1] == mask).all()
    assert gradients_ok(layer, x)


def test_pooling_random_geometries_with_ties_match_caffe():
    rng = np.random.RandomState(0)
    checked = 0
    for _ in range(60):
        shape = (1, 2) + tuple(rng.randint(1, 8, 2))
        kernel, stride = tuple(rng.randint(1, 5, 2)), tuple(rng.randint(1, 4, 2))
        pad = tuple(rng.randint(0, k) for k in kernel)
        x = rng.randint(-2, 3, shape).astype(np.float64)  # many ties
        for method in ("MAX", "AVE"):
            try:
                layer = layer_from_text(pool_text(method, kernel, stride, pad, method == "MAX"), [shape])
                tops = forward(layer, x)
            except CaffeError as exc:  # no output, or an empty last window (kernel < stride)
                assert "no output" in str(exc) or "starts past the input" in str(exc)
                continue
            y, mask = ref_pool(x, method, kernel, stride, pad)
            np.testing.assert_allclose(tops[0], y, rtol=1e-12)
            if method == "MAX":
                assert (tops[1] == mask).all()
            checked += 1
    assert checked > 60


def test_pooling_ties_go_to_the_first_maximum_in_raster_order():
    layer = layer_from_text(pool_text("MAX", (2, 2), (2, 2), (0, 0), True), [(1, 1, 4, 4)])
    x = torch.zeros(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    y, mask = layer.forward([x])
    assert mask.tolist() == [[[[0, 2], [8, 10]]]]
    (dx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    assert dx.flatten().nonzero().flatten().tolist() == [0, 2, 8, 10]


@pytest.mark.skipif(not (FIXTURES / "pool_max_ties_mask.npz").exists(), reason="no fixtures")
def test_pooling_ties_fixture():
    record = np.load(FIXTURES / "pool_max_ties_mask.npz")
    layer = layer_from_text(pool_text("MAX", (2, 2), (2, 2), (0, 0), True), [record["in__x"].shape])
    y, mask = forward(layer, record["in__x"])
    assert (mask == record["out__mask"]).all()
    np.testing.assert_array_equal(y, record["out__y"])


def test_pooling_global_and_defaults():
    layer = layer_from_text('name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param '
                            '{ pool: AVE global_pooling: true }', [(2, 3, 5, 6)])
    x = rand(2, 3, 5, 6)
    (y,) = forward(layer, x)
    np.testing.assert_allclose(y, x.mean(axis=(2, 3), keepdims=True), rtol=1e-12)
    layer = layer_from_text('name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param '
                            '{ kernel_size: 2 }', [(1, 1, 3, 3)])  # MAX, stride 1 by default
    (y,) = forward(layer, np.arange(9.0).reshape(1, 1, 3, 3))
    np.testing.assert_array_equal(y, [[[[4, 5], [7, 8]]]])


def test_pooling_mask_blob_in_a_net_reads_as_float():
    net = net_from_text('input: "x" input_shape { dim: 1 dim: 1 dim: 2 dim: 2 } layer { name: "p" '
                        'type: "Pooling" bottom: "x" top: "y" top: "m" pooling_param '
                        '{ pool: MAX kernel_size: 2 stride: 2 } }')
    net.blobs["x"].data[...] = [[[[1, 3], [4, 2]]]]
    net.forward()
    assert net.blobs["m"].data.dtype == np.float32 and net.blobs["m"].data.item() == 2.0


POOL_ERRORS = [
    ("pool: STOCHASTIC kernel_size: 2", "STOCHASTIC is not supported"),
    ("pool: MAX", "kernel_size .*required"),
    ("kernel_size: 2 pad: 2", "pad .* must be smaller than the kernel"),
    ("kernel_size: 2 kernel_h: 2 kernel_w: 2", "not both"),
    ("kernel_size: 2 pad: 1 pad_h: 1 pad_w: 1", "not both"),
    ("kernel_size: 2 stride_h: 2", "both stride_h and stride_w"),
    ("global_pooling: true kernel_size: 2", "remove kernel_size"),
    ("global_pooling: true stride: 2", "only pad 0 and stride 1"),
    ("kernel_size: 2 stride: 0", "stride must be positive"),
]


@pytest.mark.parametrize("text,match", POOL_ERRORS, ids=[e[0] for e in POOL_ERRORS])
def test_pooling_parameter_errors(text, match):
    raises(match, f'name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param {{ {text} }}',
           [(1, 1, 4, 4)])


def test_pooling_shape_errors():
    raises("second .*mask.* top", 'name: "p" type: "Pooling" bottom: "x" top: "y" top: "m" '
           'pooling_param { pool: AVE kernel_size: 2 }', [(1, 1, 4, 4)])
    raises("starts past the input", pool_text("MAX", (1, 1), (3, 3), (0, 0)), [(1, 1, 5, 5)],
           [np.zeros((1, 1, 5, 5))])
    raises("gives no output", pool_text("MAX", (3, 3), (1, 1), (0, 0)), [(1, 1, 2, 2)],
           [np.zeros((1, 1, 2, 2))])


# ----- Upsample ----------------------------------------------------------------------------------
def upsample_layer(params, shape, name="up"):
    return layer_from_text(f'name: "{name}" type: "Upsample" bottom: "x" bottom: "m" top: "y" '
                           f"upsample_param {{ {params} }}", [shape, shape])


def pooled_with_mask(shape, seed=0):
    x = rand(*shape, seed=seed)
    return ref_pool(x, "MAX", (2, 2), (2, 2), (0, 0))


@pytest.mark.parametrize("params,source,out", [
    ("scale: 2", (2, 3, 8, 10), (8, 10)),
    ("upsample_h: 7 upsample_w: 9", (2, 3, 7, 9), (7, 9)),
    ("scale: 2 pad_out_h: true pad_out_w: true", (2, 3, 7, 9), (7, 9)),
    ("scale_h: 2 scale_w: 2 pad_out_w: true", (1, 2, 8, 9), (8, 9)),
])
def test_upsample_forward_and_gradient(params, source, out):
    pooled, mask = pooled_with_mask(source)
    layer = upsample_layer(params, pooled.shape)
    for m in (mask, mask.astype(np.float32)):  # integer and float masks
        (y,) = forward(layer, pooled, m)
        assert y.shape == pooled.shape[:2] + out
        np.testing.assert_array_equal(y, ref_upsample(pooled, mask, *out))
    assert gradients_ok(layer, pooled, mask, check_bottoms=[0])
    x = torch.from_numpy(pooled).requires_grad_(True)
    (y,) = layer.forward([x, torch.from_numpy(mask)])
    dy = torch.from_numpy(rand(*y.shape, seed=3))
    (dx,) = torch.autograd.grad(y, x, dy)
    gathered = np.take_along_axis(dy.numpy().reshape(y.shape[0], y.shape[1], -1),
                                  mask.reshape(mask.shape[0], mask.shape[1], -1), axis=2)
    np.testing.assert_array_equal(dx.numpy(), gathered.reshape(pooled.shape))


def test_upsample_mask_out_of_range_is_an_error():
    layer = upsample_layer("scale: 2", (1, 1, 2, 2))
    with pytest.raises(CaffeError, match="mask index 16 is outside the 4 x 4 output plane"):
        forward(layer, np.ones((1, 1, 2, 2)), np.array([[[[0, 1], [2, 16]]]]))
    with pytest.raises(CaffeError, match="mask index -1"):
        forward(layer, np.ones((1, 1, 2, 2)), np.array([[[[0, 1], [2, -1]]]]))


def test_upsample_mismatched_size_reproduces_caffe_and_warns_once(log_messages):
    pooled, mask = pooled_with_mask((1, 2, 7, 9), seed=4)  # 4x5, indices into a 7x9 plane
    good = upsample_layer("upsample_h: 7 upsample_w: 9", pooled.shape, name="up_good")
    forward(good, pooled, mask)
    assert not log_messages
    bad = upsample_layer("scale: 2", pooled.shape, name="up_mismatch")
    for _ in range(2):
        (y,) = forward(bad, pooled, mask)
    np.testing.assert_array_equal(y, ref_upsample(pooled, mask, 8, 10))  # shifted, as Caffe
    assert len(log_messages) == 1 and 'Upsample layer "up_mismatch"' in log_messages[0]


def test_upsample_explicit_mask_with_zeros_does_not_warn(log_messages):
    # an all-zero (ReLU'd) map pools to the top-left of each window; 8x10 from 4x5 is consistent
    mask = ref_pool(np.zeros((1, 1, 8, 10)), "MAX", (2, 2), (2, 2), (0, 0))[1]
    forward(upsample_layer("scale: 2", mask.shape, name="up_zeros"), np.ones(mask.shape), mask)
    assert not log_messages


def test_upsample_in_a_net_after_pooling():
    net = net_from_text('force_backward: true input: "x" input_shape { dim: 1 dim: 2 dim: 7 dim: 9 } '
                        'layer { name: "p" type: "Pooling" bottom: "x" top: "p" top: "m" '
                        'pooling_param { pool: MAX kernel_size: 2 stride: 2 } } '
                        'layer { name: "u" type: "Upsample" bottom: "p" bottom: "m" top: "y" '
                        'upsample_param { upsample_h: 7 upsample_w: 9 } }')
    x = rand(1, 2, 7, 9, seed=5).astype(np.float32)
    net.blobs["x"].data[...] = x
    net.forward()
    pooled, mask = ref_pool(x, "MAX", (2, 2), (2, 2), (0, 0))
    np.testing.assert_array_equal(net.blobs["y"].data, ref_upsample(pooled, mask, 7, 9))
    net.blobs["y"].diff[...] = 1.0
    net.backward()
    # each pooled maximum routes its one gradient back to where it came from
    assert net.blobs["x"].diff.sum() == mask.size and not net.blobs["m"].diff.any()


def test_upsample_with_a_lone_upsample_h_uses_the_scale_and_says_so(log_messages):
    """The fork reads upsample_h/upsample_w only when both are set; else its scale (2)."""
    layer = upsample_layer("upsample_h: 7", (1, 1, 4, 5))
    assert layer.reshape([(1, 1, 4, 5)] * 2) == [(1, 1, 8, 10)]
    assert len(log_messages) == 1 and "one alone is ignored" in log_messages[0]


def test_convolution_kernel_less_than_a_stride_past_the_input_gives_caffes_one_output():
    """Caffe's (in + 2 pad - extent) / stride + 1 truncates toward zero: 4 + 0 - 5 over stride
    2 is 0, so one output whose window reads zeros past the input (im2col)."""
    x = rand(1, 1, 4, 4, seed=2)
    layer = layer_from_text('name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param '
                            '{ num_output: 1 kernel_size: 5 stride: 2 bias_term: false }',
                            [x.shape])
    weight = rand(1, 1, 5, 5, seed=3)
    layer.blobs[0].data[...] = weight
    (y,) = forward(layer, x)
    assert y.shape == (1, 1, 1, 1)
    np.testing.assert_allclose(y.ravel(), (weight[0, 0, :4, :4] * x[0, 0]).sum(), rtol=1e-5)


UPSAMPLE_ERRORS = [
    ("upsample_h: 1 upsample_w: 4", "must be > 1"),
    ("scale: 1", "scale must be > 1"),
    ("scale: 3 pad_out_h: true", "pad_out_h needs scale_h == 2"),
    ("scale: 2 scale_h: 2 scale_w: 2", "not scale with scale_h"),
    ("scale_h: 2", "scale_h and scale_w"),
]


@pytest.mark.parametrize("params,match", UPSAMPLE_ERRORS, ids=[e[0] for e in UPSAMPLE_ERRORS])
def test_upsample_parameter_errors(params, match):
    with pytest.raises(CaffeError, match=match):
        upsample_layer(params, (1, 1, 2, 2))


def test_upsample_shape_errors():
    layer = upsample_layer("scale: 2", (1, 1, 2, 2))
    with pytest.raises(CaffeError, match="mask of the same shape"):
        layer.reshape([(1, 1, 2, 2), (1, 1, 2, 3)])


# ----- LRN ---------------------------------------------------------------------------------------
LRNS = [
    ("local_size: 5 alpha: 0.3 beta: 0.75 k: 1.5", 5, 0.3, 0.75, 1.5, True, (2, 7, 3, 4)),
    ("local_size: 3 alpha: 2 beta: 0.5 k: 2", 3, 2.0, 0.5, 2.0, True, (1, 2, 2, 3)),
    ("local_size: 3 alpha: 0.8 beta: 0.75 k: 5 norm_region: WITHIN_CHANNEL", 3, 0.8, 0.75, 5.0,
     False, (1, 2, 4, 5)),
    ("local_size: 5 alpha: 1 beta: 0.6 norm_region: WITHIN_CHANNEL", 5, 1.0, 0.6, 1.0, False, (2, 1, 3, 3)),
    ("", 5, 1.0, 0.75, 1.0, True, (1, 3, 2, 2)),
]


@pytest.mark.parametrize("params,size,alpha,beta,k,across,shape", LRNS, ids=[l[0] for l in LRNS])
def test_lrn_forward_and_gradient(params, size, alpha, beta, k, across, shape):
    layer = layer_from_text(f'name: "n" type: "LRN" bottom: "x" top: "y" lrn_param {{ {params} }}',
                            [shape])
    x = rand(*shape, seed=11)
    (y,) = forward(layer, x)
    np.testing.assert_allclose(y, ref_lrn(x, size, alpha, beta, k, across), rtol=1e-6, atol=1e-7)
    assert gradients_ok(layer, x)


def test_lrn_errors():
    raises("local_size must be odd", 'name: "n" type: "LRN" bottom: "x" top: "y" '
           'lrn_param { local_size: 4 }', [(1, 3, 2, 2)])
    raises("4-axis bottom", 'name: "n" type: "LRN" bottom: "x" top: "y"', [(2, 3)], [np.ones((2, 3))])


# ----- InnerProduct ------------------------------------------------------------------------------
@pytest.mark.parametrize("params,shape,axis", [
    ("num_output: 4", (2, 3, 2, 2), 1),
    ("num_output: 3 bias_term: false", (5, 6), 1),
    ("num_output: 2 axis: 2", (2, 3, 4), 2),
    ("num_output: 3 transpose: true", (2, 5), 1),
    ("num_output: 2 axis: -1 transpose: true", (2, 2, 3), 2),
])
def test_inner_product_forward_and_gradient(params, shape, axis):
    rows, inputs = math.prod(shape[:axis]), math.prod(shape[axis:])
    layer = layer_from_text(f'name: "ip" type: "InnerProduct" bottom: "x" top: "y" '
                            f"inner_product_param {{ {params} }}", [shape])
    transpose = "transpose" in params
    num_output = int(params.split()[1])
    assert layer.blobs[0].shape == ((inputs, num_output) if transpose else (num_output, inputs))
    w = rand(*layer.blobs[0].shape, seed=12)
    b = rand(num_output, seed=13) if len(layer.blobs) > 1 else None
    set_params(layer, w, *([] if b is None else [b]))
    x = rand(*shape, seed=14)
    (y,) = forward(layer, x)
    flat, matrix = x.reshape(rows, inputs), (w if transpose else w.T)
    expected = np.array([[sum(flat[r, i] * matrix[i, o] for i in range(inputs))
                          for o in range(num_output)] for r in range(rows)])
    if b is not None:
        expected += b
    assert y.shape == shape[:axis] + (num_output,)
    np.testing.assert_allclose(y.reshape(rows, num_output), expected, rtol=1e-10, atol=1e-12)
    assert gradients_ok(layer, x)


def test_inner_product_errors():
    raises("num_output", 'name: "ip" type: "InnerProduct" bottom: "x" top: "y"', [(2, 3)])
    raises("axis 3 is out of range", 'name: "ip" type: "InnerProduct" bottom: "x" top: "y" '
           "inner_product_param { num_output: 2 axis: 3 }", [(2, 3)])
    layer = layer_from_text('name: "ip" type: "InnerProduct" bottom: "x" top: "y" '
                            "inner_product_param { num_output: 2 }", [(2, 3)])
    with pytest.raises(CaffeError, match="has 4 inputs per row .* made for 3"):
        forward(layer, np.ones((2, 4)))
