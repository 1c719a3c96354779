"""Compact max-pooling masks: one byte per pooled element inside the engine, Caffe's values for
every reader, and the same training results as PyTorch's int64 indices."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segnet_caffe import engine_options
from segnet_caffe.layer_types._pool_mask import (WindowOffsets, _gather, _unpool, caffe_index,
                                            window_offsets)
from layer_testing import net_from_text

# Pool 2x2/2 of an odd-sized map (ceil-mode border windows), ties in the input, the mask read
# by an Upsample back to the pooled map's size and by a second Upsample to a larger map
# (Caffe's shifted placement), the mask also split (read twice).
NET = """name: "masks" force_backward: true
input: "x" input_shape { dim: 2 dim: 3 dim: 7 dim: 9 }
layer { name: "pool" type: "Pooling" bottom: "x" top: "p" top: "mask"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "up" type: "Upsample" bottom: "p" bottom: "mask" top: "u"
        upsample_param { upsample_h: 7 upsample_w: 9 } }
layer { name: "up_big" type: "Upsample" bottom: "p" bottom: "mask" top: "ub"
        upsample_param { upsample_h: 8 upsample_w: 10 } }
"""


@pytest.fixture(params=[True, False], ids=["compact", "int64"])
def compact(request):
    engine_options.set_default(compact_masks=request.param)
    yield request.param
    engine_options.set_default(compact_masks=True)


def run(text=NET):
    net = net_from_text(text, phase="TRAIN")
    rng = np.random.RandomState(0)
    net.blobs["x"].data[...] = rng.randint(-2, 3, net.blobs["x"].shape)  # many ties
    net.forward()
    for top in ("u", "ub"):
        net.blobs[top].diff[...] = rng.randn(*net.blobs[top].shape)
    net.backward()
    return net


def reference(x):
    """Caffe's max pooling 2x2/2 (first maximum in raster order) with its flat input index."""
    n, c, h, w = x.shape
    ph, pw = -(-h // 2), -(-w // 2)
    y, mask = np.zeros((n, c, ph, pw)), np.zeros((n, c, ph, pw))
    for i in range(ph):
        for j in range(pw):
            window = x[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2].reshape(n, c, -1)
            first = window.argmax(-1)
            ww = min(2, w - 2 * j)
            y[:, :, i, j] = window.max(-1)
            mask[:, :, i, j] = (2 * i + first // ww) * w + 2 * j + first % ww
    return y, mask


def test_masks_and_gradients_are_caffes(compact):
    net = run()
    y, mask = reference(net.blobs["x"].data)
    np.testing.assert_array_equal(net.blobs["p"].data, y)
    # Bottom diffs are computed from the mask before anyone reads it.
    dx = net.blobs["x"].diff.copy()
    expected = np.zeros_like(dx)
    dp = net.blobs["p"].diff
    for n, c, i, j in np.ndindex(*mask.shape):
        flat = int(mask[n, c, i, j])
        expected[n, c, flat // 9, flat % 9] += dp[n, c, i, j]
    np.testing.assert_allclose(dx, expected, rtol=1e-6, atol=1e-6)
    for top, width in (("u", 9), ("ub", 10)):
        placed = np.zeros(net.blobs[top].shape)
        for n, c, i, j in np.ndindex(*mask.shape):
            flat = int(mask[n, c, i, j])
            placed[n, c, flat // width, flat % width] = y[n, c, i, j]
        np.testing.assert_array_equal(net.blobs[top].data, placed, err_msg=top)
    data = net.blobs["mask"].data  # Caffe's float mask when read
    assert data.dtype == np.float32
    np.testing.assert_array_equal(data, mask)


def test_compact_form_is_one_byte_until_read():
    net = run()
    assert net.blobs["mask"].tensor().dtype == torch.uint8
    pool_top = net._saved[net._layer_names.index("pool")][1][0]
    assert [t.dtype for t in pool_top.grad_fn.saved_tensors] == [torch.uint8]
    net.blobs["mask"].data  # noqa: B018 (reading materialises Caffe's mask)
    assert net.blobs["mask"].tensor().dtype == torch.float32
    net.forward()  # an Upsample reading a materialised (float) mask gives the same result
    before = net.blobs["u"].data.copy()
    net.blobs["mask"].data
    net.forward(start="up")
    np.testing.assert_array_equal(net.blobs["u"].data, before)


def test_a_mask_read_by_another_layer_type_is_caffes():
    text = NET + 'layer { name: "scaled" type: "Power" bottom: "mask" top: "scaled" }\n'
    net = run(text)
    assert net.blobs["mask"].tensor().dtype != torch.uint8
    np.testing.assert_array_equal(net.blobs["scaled"].data, reference(net.blobs["x"].data)[1])


@pytest.mark.parametrize("kernel", [(2, 2), (3, 3), (2, 3), (4, 1)])
@pytest.mark.parametrize("size", [(7, 9), (45, 60), (5, 5)])
def test_offsets_and_caffe_indices_for_every_tiling_window(kernel, size):
    """The one-byte offsets are dh * kernel_w + dw of max_pool2d's indices, and caffe_index
    gives those indices back (ceil-mode border windows included)."""
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    _, index = F.max_pool2d(x, kernel, kernel, 0, ceil_mode=True, return_indices=True)
    offsets = window_offsets(index.clone(), kernel, size[1])
    rows, cols = index // size[1], index % size[1]
    pooled_rows = torch.arange(index.shape[2]).view(-1, 1) * kernel[0]
    pooled_cols = torch.arange(index.shape[3]).view(1, -1) * kernel[1]
    expected = (rows - pooled_rows) * kernel[1] + (cols - pooled_cols)
    assert offsets.dtype == torch.uint8
    assert torch.equal(offsets.long(), expected)
    assert torch.equal(caffe_index(offsets, kernel, size[1]), index)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("kernel", [(2, 2), (3, 3), (2, 3), (4, 1)])
@pytest.mark.parametrize("size", [(7, 9), (45, 60)])
def test_unpooling_and_its_gather_by_offsets_are_max_unpool2ds(kernel, size, memory_format):
    """Unpooling by the offsets (window by window, no int64 indices) equals F.max_unpool2d by
    max_pool2d's indices, keeps the memory format, and its gather picks what indices pick."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, *size, generator=generator).contiguous(memory_format=memory_format)
    y, index = F.max_pool2d(x, kernel, kernel, 0, ceil_mode=True, return_indices=True)
    offsets = window_offsets(index.clone(), kernel, size[1])
    unpooled = _unpool(y, offsets, kernel, size)
    assert torch.equal(unpooled, F.max_unpool2d(y, index, kernel, kernel, output_size=size))
    assert unpooled.is_contiguous(memory_format=memory_format)
    grad = torch.randn(2, 3, *size, generator=generator).contiguous(memory_format=memory_format)
    picked = grad.flatten(2).gather(2, index.flatten(2)).view_as(index)
    assert torch.equal(_gather(grad, offsets, kernel), picked)


def test_a_compact_mask_carries_its_geometry_through_shape_keeping_operations():
    x = torch.randn(2, 3, 7, 9)
    _, index = F.max_pool2d(x, 2, 2, ceil_mode=True, return_indices=True)
    mask = WindowOffsets.wrap(window_offsets(index, (2, 2), 9), (2, 2), (7, 9))
    for kept in (mask.detach(), mask.clone(), mask.to("cpu"), mask.view_as(mask),
                 mask.contiguous(), mask.detach().requires_grad_(False)):
        assert isinstance(kept, WindowOffsets)
        assert (kept.kernel, kept.input_size) == ((2, 2), (7, 9))
    assert type(mask == 0) is torch.Tensor and type(mask.float()) is torch.Tensor
    np.testing.assert_array_equal(mask.caffe_values().numpy(), index.float().numpy())


def test_the_mask_reaches_both_upsamples_through_the_split_as_itself():
    net = net_from_text(NET)
    net.blobs["x"].data[...] = np.random.default_rng(3).normal(size=(2, 3, 7, 9))
    net.forward_range(0, len(net.layers) - 1)
    split_tops = [net.blobs[name].tensor() for name in net.bottom_names["up"][1:]
                  + net.bottom_names["up_big"][1:]]
    assert all(isinstance(mask, WindowOffsets) and mask.input_size == (7, 9)
               for mask in [net.blobs["mask"].tensor()] + split_tops)
