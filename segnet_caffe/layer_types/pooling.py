"""Pooling: max or average over spatial windows, Caffe's output size and padding rules."""
import torch
import torch.nn.functional as F

from . import register_layer
from ._pool_mask import TiledMaxPool, WindowOffsets, tiles
from .base import BaseLayer
from ..proto import caffe_pb2

MAX = caffe_pb2.PoolingParameter.MAX
AVE = caffe_pb2.PoolingParameter.AVE
STOCHASTIC = caffe_pb2.PoolingParameter.STOCHASTIC


def caffe_pooled_size(size, kernel, stride, pad):
    """Caffe's PoolingLayer::Reshape along one axis: ceil((size + 2*pad - kernel) / stride) + 1,
    minus one when padding is used and the last window would start in the padding."""
    pooled = -((kernel - size - 2 * pad) // stride) + 1  # integer ceil
    if pad and (pooled - 1) * stride >= size + pad:
        pooled -= 1
    return pooled


@register_layer("Pooling")
class PoolingLayer(BaseLayer):
    """Spatial pooling.

    Parameters: pooling_param.pool (MAX | AVE; STOCHASTIC unsupported), kernel_size | kernel_h+kernel_w, stride (1) | stride_h+stride_w, pad (0) | pad_h+pad_w, global_pooling (false); an optional 2nd top (MAX only) receives the argmax mask.
    Forward: out = ceil((in + 2*pad - k) / stride) + 1, minus 1 if pad > 0 and the last window would start in the padding; MAX: y = max over the window clipped to the input, mask = h*W_in + w of the first maximum in raster order; AVE: y = sum over the window clipped to the input / ((min(s+k, in+pad) - s) per axis, s = window start before clipping).
    Backward: MAX: dx[mask] += dy; AVE: each input of the clipped window gets dy / that same divisor; the mask top gets no gradient.
    """

    backward_reads_top = False

    top_count = (1, 2)

    def setup(self, bottom_shapes):
        p = self.param.pooling_param
        if p.pool == STOCHASTIC:
            raise self.error("pool: STOCHASTIC is not supported; use MAX or AVE")
        self.method = p.pool
        if len(self.param.top) > 1 and self.method != MAX:
            raise self.error("only pool: MAX has a second (mask) top; remove the second top")
        self.global_pooling = p.global_pooling
        has_kernel = p.HasField("kernel_size") or p.HasField("kernel_h") or p.HasField("kernel_w")
        if self.global_pooling:
            if has_kernel:
                raise self.error("with global_pooling: true the kernel is the whole input; remove "
                                 "kernel_size / kernel_h / kernel_w")
            self.kernel = None
        else:
            if p.HasField("kernel_size") and (p.HasField("kernel_h") or p.HasField("kernel_w")):
                raise self.error("give either kernel_size or kernel_h and kernel_w, not both")
            if p.HasField("kernel_size"):
                self.kernel = (p.kernel_size, p.kernel_size)
            elif p.HasField("kernel_h") and p.HasField("kernel_w"):
                self.kernel = (p.kernel_h, p.kernel_w)
            else:
                raise self.error("kernel_size (or both kernel_h and kernel_w) is required, unless "
                                 "global_pooling: true")
            if min(self.kernel) <= 0:
                raise self.error(f"kernel size must be positive, got {self.kernel}")
        self.pad = self._pair(p, "pad")
        self.stride = self._pair(p, "stride")
        if min(self.stride) <= 0:
            raise self.error(f"stride must be positive, got {self.stride}")
        if self.global_pooling and (self.pad != (0, 0) or self.stride != (1, 1)):
            raise self.error("with global_pooling: true only pad 0 and stride 1 are allowed")
        if self.kernel is not None and any(pd >= k for pd, k in zip(self.pad, self.kernel)):
            raise self.error(f"pad {self.pad} must be smaller than the kernel {self.kernel}")
        # Set by the Net unless a layer other than Upsample reads the mask top (a layer on its
        # own returns Caffe's mask).
        self.compact_mask = False

    def _pair(self, p, name):
        h, w = p.HasField(name + "_h"), p.HasField(name + "_w")
        if h or w:
            if p.HasField(name):
                raise self.error(f"give either {name} or {name}_h and {name}_w, not both")
            if not (h and w):
                raise self.error(f"give both {name}_h and {name}_w (or {name})")
            return (getattr(p, name + "_h"), getattr(p, name + "_w"))
        return (getattr(p, name),) * 2

    def geometry(self, shape):
        """(kernel, pooled size) for an input of `shape`, after Caffe's checks."""
        if len(shape) != 4:
            raise self.error(f"needs a 4-axis bottom (N, C, H, W), got {tuple(shape)}")
        size = (int(shape[2]), int(shape[3]))
        kernel = size if self.global_pooling else self.kernel
        pooled = tuple(caffe_pooled_size(n, k, s, pd) for n, k, s, pd
                       in zip(size, kernel, self.stride, self.pad))
        for axis, n, k, s, pd, out in zip("HW", size, kernel, self.stride, self.pad, pooled):
            if out <= 0:
                raise self.error(f"kernel {k} with stride {s} and pad {pd} gives no output for an "
                                 f"input of {axis} = {n}; use a smaller kernel or more padding")
            if (out - 1) * s - pd >= n:
                # Only without padding (kernel < stride): Caffe would pool an empty last window
                # (-FLT_MAX, mask -1, an out-of-bounds write in backward).
                raise self.error(f"the last window along {axis} starts past the input ({axis} = "
                                 f"{n}, kernel {k} < stride {s}): Caffe would output -FLT_MAX "
                                 "there; use a kernel at least as large as the stride")
        return kernel, pooled

    def forward(self, bottoms):
        x = bottoms[0]
        kernel, pooled = self.geometry(x.shape)
        fast = all(pd <= k // 2 for pd, k in zip(self.pad, kernel))
        if self.method == MAX:
            tops = self._max(x, kernel, pooled, fast)
        elif fast:
            tops = [F.avg_pool2d(x, kernel, self.stride, self.pad, ceil_mode=True,
                                 count_include_pad=True)]
        else:
            tops = [self._ave_padded(x, kernel, pooled)]
        if tuple(tops[0].shape[2:]) != pooled:
            raise self.error(f"internal: pooled to {tuple(tops[0].shape[2:])}, Caffe's size is "
                             f"{pooled}")
        return tops

    def _max(self, x, kernel, pooled, fast):
        if self.compact_mask and self.options.compact_masks and tiles(kernel, self.stride, self.pad):
            # One byte per pooled element (the maximum's offset in its window) for backward and
            # for the mask top; Caffe's mask is computed when a user reads the blob.
            y, offsets = TiledMaxPool.apply(x, kernel)
            return [y, WindowOffsets.wrap(offsets, kernel, x.shape[2:])][:len(self.param.top)]
        if fast:  # PyTorch's ceil_mode is Caffe's rule whenever it accepts the padding
            y, index = F.max_pool2d(x, kernel, self.stride, self.pad, ceil_mode=True,
                                    return_indices=True)
        else:
            y, index = self._max_padded(x, kernel, pooled)
        # The mask top is a copy: Blob writes a host mirror back into its tensor in place,
        # which must not touch the indices autograd saved for max_pool2d's backward.
        return [y, index.clone()] if len(self.param.top) > 1 else [y]

    # Pads larger than half the kernel (Caffe allows pad < kernel, PyTorch pad <= kernel/2):
    # pad explicitly to exactly the extent the windows cover, then pool without padding.
    def _extent_pads(self, shape, kernel, pooled):
        pads = []
        for axis in (1, 0):  # F.pad order: W then H
            covered = (pooled[axis] - 1) * self.stride[axis] + kernel[axis]
            pads += [self.pad[axis], covered - self.pad[axis] - int(shape[2 + axis])]
        return pads  # a negative right pad crops columns no window reaches

    def _max_padded(self, x, kernel, pooled):
        pads = self._extent_pads(x.shape, kernel, pooled)
        padded = F.pad(x, pads, value=float("-inf"))
        y, index = F.max_pool2d(padded, kernel, self.stride, return_indices=True)
        width = padded.shape[3]
        row = torch.div(index, width, rounding_mode="floor") - self.pad[0]
        col = index % width - self.pad[1]
        return y, row * x.shape[3] + col

    def _ave_padded(self, x, kernel, pooled):
        pads = self._extent_pads(x.shape, kernel, pooled)
        sums = F.avg_pool2d(F.pad(x, pads), kernel, self.stride, divisor_override=1)
        divisors = []
        for axis in (0, 1):
            size, k, s, pd = int(x.shape[2 + axis]), kernel[axis], self.stride[axis], self.pad[axis]
            starts = [i * s - pd for i in range(pooled[axis])]
            divisors.append(torch.tensor([min(a + k, size + pd) - a for a in starts],
                                         dtype=x.dtype, device=x.device))
        return sums / (divisors[0].view(-1, 1) * divisors[1].view(1, -1))
