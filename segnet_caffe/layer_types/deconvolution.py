"""Deconvolution: the transpose of Convolution, learned upsampling (Caffe's DeconvolutionLayer)."""
import torch.nn.functional as F

from . import register_layer
from .convolution import ConvolutionBase

_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@register_layer("Deconvolution")
class DeconvolutionLayer(ConvolutionBase):
    """Deconvolution (transposed convolution).

    Parameters: convolution_param as Convolution (num_output, kernel_size | kernel_h+kernel_w, stride, pad, dilation, group, bias_term, fillers, axis 1 only); blobs: weight (C_in, num_output/group, kh, kw), bias (num_output,).
    Forward: y = b + the transpose of Convolution's forward with these filters: each x[n, c, i, j] adds x * w[c, o] at (i*stride - pad, j*stride - pad); out = stride*(in-1) + dilation*(k-1)+1 - 2*pad.
    Backward: dx = Convolution's forward of dy with the same filters; dw[c, o] = sum over n of the correlation of dy[n, o] with x[n, c]; db[o] = sum of dy[:, o].
    """

    def weight_shape(self, g):
        return (g.channels, g.num_output // g.group) + g.kernel

    def forward(self, bottoms):
        self.check_bottoms(bottoms)
        g = self.geometry
        shape = tuple(bottoms[0].shape)
        for i in range(g.num_spatial):
            out = g.stride[i] * (shape[2 + i] - 1) + g.extent(i) - 2 * g.pad[i]
            if out <= 0:
                raise self.error(f"the output would have size {out} along spatial axis {i} "
                                 f"(stride {g.stride[i]} * (input {shape[2 + i]} - 1) + kernel "
                                 f"extent {g.extent(i)} - 2 * pad {g.pad[i]}); reduce pad")
        deconv = _CONV_TRANSPOSE[g.num_spatial]
        tops = []
        for x in bottoms:
            weight, bias = self.weights(x)
            tops.append(deconv(x, weight, bias, g.stride, g.pad, 0, g.group, g.dilation))
        return tops
