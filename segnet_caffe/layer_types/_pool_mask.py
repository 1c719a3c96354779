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


class WindowOffsets(torch.Tensor):
    """A compact max-pooling mask that says how to read itself: uint8 offsets of each window's
    maximum, with the window `kernel` (kh, kw) and the pooled map's `input_size` (H, W).

    Shape-keeping tensor methods (detach, clone, to, view_as, contiguous) keep the type and the
    geometry, so the mask travels through Blobs, Splits and autograd leaves as itself; any other
    operation gives a plain tensor. `caffe_values()` is Caffe's float mask (flat indices
    h * W + w in the input plane): Blob calls it when a user reads the data.
    """

    _KEEPING = {torch.Tensor.detach, torch.Tensor.clone, torch.Tensor.to, torch.Tensor.view_as,
                torch.Tensor.contiguous}

    @staticmethod
    def wrap(offsets, kernel, input_size):
        mask = offsets.as_subclass(WindowOffsets)
        mask.kernel, mask.input_size = tuple(kernel), tuple(input_size)
        return mask

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        with torch._C.DisableTorchFunctionSubclass():
            result = func(*args, **(kwargs or {}))
        source = args[0]
        if (func in cls._KEEPING and isinstance(result, torch.Tensor)
                and result is not source and result.dtype == torch.uint8):
            return cls.wrap(result, source.kernel, source.input_size)
        return result

    def caffe_values(self):
        """Caffe's mask: float32 flat indices of the maxima in the input plane."""
        plain = self.as_subclass(torch.Tensor)
        return caffe_index(plain, self.kernel, self.input_size[1]).float()


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


def _memory_format(x):
    """channels_last when `x` is laid out so (and not also plainly contiguous), else contiguous."""
    if x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
        return torch.contiguous_format
    return torch.channels_last


def _window_views(whole, kernel):
    """Strided views of a map of whole windows, one per offset in raster order: view k holds the
    element at offset k of every window (an (N, C, H_pooled, W_pooled) view)."""
    return [whole[:, :, dh::kernel[0], dw::kernel[1]]
            for dh in range(kernel[0]) for dw in range(kernel[1])]


def _unpool(values, offsets, kernel, size):
    """A map of `size` holding each value at its maximum's position and zeros elsewhere, in the
    memory format of `values`. Each offset's view of the windows is written once (no zero fill
    first, no int64 indices); ceil-mode maps are cropped from the windows' whole extent."""
    n, c, h, w = values.shape
    layout = _memory_format(values)
    whole = torch.empty((n, c, h * kernel[0], w * kernel[1]), dtype=values.dtype,
                        device=values.device, memory_format=layout)
    zero = values.new_zeros(())
    for k, view in enumerate(_window_views(whole, kernel)):
        torch.where(offsets == k, values, zero, out=view)
    if tuple(whole.shape[2:]) == tuple(size):
        return whole
    return whole[:, :, :size[0], :size[1]].contiguous(memory_format=layout)


def _gather(grad, offsets, kernel):
    """The element of `grad` at each window's maximum (the inverse of _unpool), pooled-shaped."""
    pooled = offsets.shape[2:]
    missing = [pooled[1] * kernel[1] - grad.shape[3], pooled[0] * kernel[0] - grad.shape[2]]
    if any(missing):  # ceil-mode windows reach past the map: their maxima are inside it
        grad = F.pad(grad, (0, missing[0], 0, missing[1]))
    views = _window_views(grad, kernel)
    picked = torch.empty_like(offsets, dtype=grad.dtype)
    picked.copy_(views[-1])
    for k, view in enumerate(views[:-1]):
        torch.where(offsets == k, view, picked, out=picked)
    return picked


class Unpool(torch.autograd.Function):
    """Max-unpooling by one-byte offsets to a map of `size` (H, W); its backward gathers."""

    @staticmethod
    def forward(ctx, values, offsets, kernel, size):
        ctx.kernel = kernel
        ctx.save_for_backward(offsets)
        return _unpool(values, offsets, kernel, size)

    @staticmethod
    def backward(ctx, grad):
        offsets, = ctx.saved_tensors
        return _gather(grad, offsets, ctx.kernel), None, None, None


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
