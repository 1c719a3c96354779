"""Compact max-pooling masks: one byte per pooled element, as SegNet's idea of keeping only the
pooling indices asks.

When the pooling windows tile the map (kernel == stride, no padding: SegNet's 2x2 / stride 2),
the maximum of each window is known by its offset inside the window, dh * kernel_w + dw, which
fits a uint8. Pooling keeps only that for its backward and hands it to Upsample as the mask top;
Caffe's mask (the flat index h * W + w of the maximum in the input plane) is computed from it
only when someone reads the mask blob (`caffe_index`).
"""
import torch
import torch.nn.functional as F


def tiles(kernel, stride, pad):
    """Whether pooling windows of this geometry tile the map (each input in one window) and
    their offsets fit a byte."""
    return tuple(kernel) == tuple(stride) and not any(pad) and kernel[0] * kernel[1] <= 256


def _window_starts(pooled, kernel, width, device):
    """The flat input index of each window's top-left corner, an (H_pooled, W_pooled) grid."""
    rows = torch.arange(pooled[0], device=device).view(-1, 1) * (kernel[0] * width)
    return rows + torch.arange(pooled[1], device=device).view(1, -1) * kernel[1]


def _rows_below_start(index_or_offsets, thresholds):
    """uint8 count of the thresholds each element reaches: the row of an element inside its
    window, given each row's first index (comparisons only: no integer division)."""
    rows = torch.zeros_like(index_or_offsets, dtype=torch.uint8)
    for threshold in thresholds:
        rows += index_or_offsets >= threshold
    return rows


def window_offsets(index, kernel, width):
    """uint8 offsets dh * kernel_w + dw of the maxima from max_pool2d's flat input indices.

    offset = (index - start) - dh * (width - kernel_w), computed modulo 256 in uint8 (the
    offset itself is below 256), with dh found by comparing index with each row's start."""
    starts = _window_starts(index.shape[2:], kernel, width, index.device)
    dh = _rows_below_start(index, [starts + r * width for r in range(1, kernel[0])])
    offsets = index.to(torch.uint8).sub_(starts.to(torch.uint8))  # uint8 casts wrap modulo 256
    return offsets.sub_(dh.mul_((width - kernel[1]) % 256))


def caffe_index(offsets, kernel, width):
    """Caffe's mask values (flat indices h * width + w in the input plane) from the offsets:
    start + offset + dh * (width - kernel_w)."""
    dh = _rows_below_start(offsets, [r * kernel[1] for r in range(1, kernel[0])])
    index = offsets.to(torch.int64).add_(dh, alpha=width - kernel[1])
    return index.add_(_window_starts(offsets.shape[2:], kernel, width, offsets.device))


def _unpool(values, offsets, kernel, size):
    """A zero map of `size` with each value at its maximum's position (in the memory format of
    `values`: max_unpool2d keeps channels-last, which a scatter into a flat plane would not)."""
    index = caffe_index(offsets, kernel, size[1])
    return F.max_unpool2d(values, index, kernel, kernel, output_size=size)


class Unpool(torch.autograd.Function):
    """Max-unpooling by one-byte offsets to a map of `size` (H, W); its backward gathers. The
    int64 indices live only while each direction runs."""

    @staticmethod
    def forward(ctx, values, offsets, kernel, size):
        ctx.kernel, ctx.size = kernel, tuple(size)
        ctx.save_for_backward(offsets)
        return _unpool(values, offsets, kernel, size)

    @staticmethod
    def backward(ctx, grad):
        offsets, = ctx.saved_tensors
        n, c = offsets.shape[:2]
        index = caffe_index(offsets, ctx.kernel, ctx.size[1]).reshape(n, c, -1)
        return grad.reshape(n, c, -1).gather(2, index).reshape(offsets.shape), None, None, None


class TiledMaxPool(torch.autograd.Function):
    """Max pooling over tiling windows that saves one byte per pooled element for backward
    (max_pool2d's own backward keeps int64 indices: eight)."""

    @staticmethod
    def forward(ctx, x, kernel):
        y, index = F.max_pool2d(x, kernel, kernel, 0, ceil_mode=True, return_indices=True)
        offsets = window_offsets(index, kernel, x.shape[3])
        ctx.kernel, ctx.size = kernel, tuple(x.shape[2:])
        ctx.save_for_backward(offsets)
        ctx.mark_non_differentiable(offsets)
        return y, offsets

    @staticmethod
    def backward(ctx, dy, _):
        offsets, = ctx.saved_tensors
        return _unpool(dy, offsets, ctx.kernel, ctx.size), None
