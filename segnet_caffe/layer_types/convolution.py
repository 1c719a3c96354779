"""Convolution: learned filters slid over the spatial axes (Caffe's ConvolutionLayer).

`read_conv_geometry` and `ConvGeometry` are shared with Deconvolution: both read the same
ConvolutionParameter, exactly as Caffe's BaseConvolutionLayer::LayerSetUp does.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import register_layer
from ._common import canonical_axis, learnable_blob, param_like
from .base import BaseLayer

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@dataclass(frozen=True)
class ConvGeometry:
    """What a ConvolutionParameter says for a given bottom: per-spatial-axis tuples and counts."""

    num_output: int
    bias_term: bool
    group: int
    channels: int
    kernel: tuple
    stride: tuple
    pad: tuple
    dilation: tuple

    @property
    def num_spatial(self):
        return len(self.kernel)

    def extent(self, i):
        """The dilated kernel size along spatial axis i: dilation * (kernel - 1) + 1."""
        return self.dilation[i] * (self.kernel[i] - 1) + 1


def _per_axis(layer, p, name, num_spatial, default, h_w=None):
    """One value per spatial axis from a repeated field (given 0 times, once, or once per axis)
    or, for 2-D, from the `<name>_h` / `<name>_w` pair (Caffe's rules and messages)."""
    values = list(getattr(p, name))
    if h_w is not None and (p.HasField(h_w[0]) or p.HasField(h_w[1])):
        if num_spatial != 2:
            raise layer.error(f"{h_w[0]} / {h_w[1]} work only for 2-D convolution; this bottom "
                              f"has {num_spatial} spatial axes: use {name}")
        if values:
            raise layer.error(f"give either {name} or {h_w[0]} and {h_w[1]}, not both")
        if name == "kernel_size" and not (p.HasField(h_w[0]) and p.HasField(h_w[1])):
            raise layer.error(f"give both {h_w[0]} and {h_w[1]} (or kernel_size)")
        return (getattr(p, h_w[0]), getattr(p, h_w[1]))
    if not values:
        if default is None:
            raise layer.error(f"{name} is required (or {h_w[0]} and {h_w[1]} for 2-D)")
        return (default,) * num_spatial
    if len(values) not in (1, num_spatial):
        raise layer.error(f"{name} must be given once, or once per spatial axis ({num_spatial}); "
                          f"it is given {len(values)} times")
    return tuple(values) * num_spatial if len(values) == 1 else tuple(values)


def read_conv_geometry(layer, bottom_shape):
    """Read and check `layer.param.convolution_param` for a bottom of `bottom_shape`
    (Convolution and Deconvolution alike)."""
    p = layer.param.convolution_param
    ndim = len(bottom_shape)
    if ndim < 3:
        raise layer.error(f"needs a bottom of shape (N, C, spatial...) with 1 to 3 spatial axes, "
                          f"got {tuple(bottom_shape)}")
    if canonical_axis(layer, p.axis, ndim) != 1:
        raise layer.error(f"only axis: 1 (the channel axis of an (N, C, H, W) bottom) is "
                          f"supported, got axis: {p.axis}")
    num_spatial = ndim - 2
    if num_spatial > 3:
        raise layer.error(f"supports 1 to 3 spatial axes, the bottom {tuple(bottom_shape)} has "
                          f"{num_spatial}")
    kernel = _per_axis(layer, p, "kernel_size", num_spatial, None, ("kernel_h", "kernel_w"))
    stride = _per_axis(layer, p, "stride", num_spatial, 1, ("stride_h", "stride_w"))
    pad = _per_axis(layer, p, "pad", num_spatial, 0, ("pad_h", "pad_w"))
    dilation = _per_axis(layer, p, "dilation", num_spatial, 1)
    for name, values in (("kernel size", kernel), ("stride", stride), ("dilation", dilation)):
        if any(v <= 0 for v in values):
            raise layer.error(f"{name} must be positive along every spatial axis, got {values}")
    if p.num_output <= 0:
        raise layer.error("num_output must be set to the number of output channels (> 0)")
    if p.group <= 0:
        raise layer.error(f"group must be positive, got {p.group}")
    channels = int(bottom_shape[1])
    if channels % p.group:
        raise layer.error(f"group {p.group} does not divide the bottom's {channels} channels")
    if p.num_output % p.group:
        raise layer.error(f"group {p.group} does not divide num_output {p.num_output}")
    return ConvGeometry(num_output=p.num_output, bias_term=p.bias_term, group=p.group,
                        channels=channels, kernel=tuple(kernel), stride=tuple(stride),
                        pad=tuple(pad), dilation=tuple(dilation))


class ConvolutionBase(BaseLayer):
    """Shared by Convolution and Deconvolution: parameter reading, blobs, bottom checks.

    As Caffe's BaseConvolutionLayer, every bottom gets its own top, all with the same filters.
    """

    backward_reads_top = False

    bottom_count = (1, None)
    top_count = (1, None)

    def weight_shape(self, g):
        raise NotImplementedError

    def setup(self, bottom_shapes):
        if len(self.param.top) != len(self.param.bottom):
            raise self.error(f"needs one top per bottom, got {len(self.param.bottom)} bottoms and "
                             f"{len(self.param.top)} tops")
        self.geometry = g = read_conv_geometry(self, bottom_shapes[0])
        p = self.param.convolution_param
        self.blobs = [learnable_blob(p.weight_filler, self.weight_shape(g))]
        if g.bias_term:
            self.blobs.append(learnable_blob(p.bias_filler, (g.num_output,)))

    def check_bottoms(self, bottoms):
        g = self.geometry
        for x in bottoms:
            if tuple(x.shape) != tuple(bottoms[0].shape):
                raise self.error(f"all bottoms must have the same shape, got "
                                 f"{tuple(bottoms[0].shape)} and {tuple(x.shape)}")
        x = bottoms[0]
        if x.dim() != g.num_spatial + 2 or x.shape[1] != g.channels:
            raise self.error(f"bottom {tuple(x.shape)} does not have the {g.num_spatial + 2} axes "
                             f"and {g.channels} channels the filters were made for")

    def weights(self, x):
        weight = param_like(self.blobs[0], x)
        bias = param_like(self.blobs[1], x) if self.geometry.bias_term else None
        return weight, bias


@register_layer("Convolution")
class ConvolutionLayer(ConvolutionBase):
    """Convolution.

    Parameters: convolution_param.num_output, kernel_size | kernel_h+kernel_w, stride (1), pad (0), dilation (1), group (1), bias_term (true), weight_filler / bias_filler (constant 0), axis (1 only); blobs: weight (num_output, C/group, kh, kw), bias (num_output,).
    Forward: y[n, o] = b[o] + sum over the input channels c of o's group of w[o, c] (*) x[n, c] (cross-correlation with zero padding, stride, dilation); out = (in + 2*pad - (dilation*(k-1)+1)) / stride + 1, rounded down.
    Backward: dx = full correlation of dy with the flipped filters; dw[o, c] = sum over n of x[n, c] (*) dy[n, o]; db[o] = sum of dy[:, o].
    """

    def weight_shape(self, g):
        return (g.num_output, g.channels // g.group) + g.kernel

    def _kernel_beyond_input(self, shape):
        """How far the kernel reaches past the padded input along each spatial axis. Caffe's
        output size (in + 2 pad - extent) / stride + 1 truncates toward zero, so a kernel less
        than a stride too large still gives one output, its window reading zeros past the
        input (im2col); a larger one gives no output, an error."""
        g = self.geometry
        beyond = []
        for i in range(g.num_spatial):
            size, padded = shape[2 + i], shape[2 + i] + 2 * g.pad[i]
            extra = max(0, g.extent(i) - padded)
            if extra >= g.stride[i]:
                raise self.error(f"the kernel ({g.extent(i)} along spatial axis {i}, kernel "
                                 f"{g.kernel[i]} dilation {g.dilation[i]}) is larger than the "
                                 f"padded input ({padded} = {size} + 2 * pad {g.pad[i]}) by at "
                                 f"least the stride {g.stride[i]}: no output; use a smaller "
                                 "kernel, more padding or a larger input")
            beyond.append(extra)
        return beyond

    def forward(self, bottoms):
        self.check_bottoms(bottoms)
        return [self.convolve(x, *self.weights(x)) for x in bottoms]

    def convolve(self, x, weight, bias):
        """Caffe's convolution of `x` with these filters and bias (the layer's own, or scaled
        ones: folding.FoldedConvolution)."""
        g = self.geometry
        beyond = self._kernel_beyond_input(tuple(x.shape))
        if any(beyond):  # Caffe's one output window, reading zeros past the input
            x = torch.nn.functional.pad(x, [p for extra in reversed(beyond) for p in (0, extra)])
        if x.dim() == 4 and self.options.convolves_channels_last(x.device):
            x = x.contiguous(memory_format=torch.channels_last)
            weight = weight.contiguous(memory_format=torch.channels_last)
        return _CONV[g.num_spatial](x, weight, bias, g.stride, g.pad, g.dilation, g.group)
