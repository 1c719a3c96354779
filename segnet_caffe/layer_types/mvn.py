"""MVN: mean (and variance) normalisation of each channel, or each sample, of a blob."""
import torch

from . import register_layer
from .base import BaseLayer


class _NormalizeVariance(torch.autograd.Function):
    """(x - mean) / (std + eps) over the last axis with Caffe's gradient.

    Caffe's backward treats eps as part of the std: dx = (dy - mean(dy) - y * mean(dy * y)) /
    (std + eps). Autograd's differs by a factor std / (std + eps) on the last term and is NaN
    where a row is constant (the square root's derivative at 0); Caffe's is 0 there.
    """

    @staticmethod
    def forward(ctx, rows, eps):
        centred = rows - rows.mean(-1, keepdim=True)
        denominator = centred.square().mean(-1, keepdim=True).sqrt() + eps
        top = centred / denominator
        ctx.save_for_backward(top, denominator)
        return top

    @staticmethod
    def backward(ctx, top_diff):
        top, denominator = ctx.saved_tensors
        projection = top_diff.mean(-1, keepdim=True) + top * (top_diff * top).mean(-1, keepdim=True)
        return (top_diff - projection) / denominator, None


@register_layer("MVN")
class MVNLayer(BaseLayer):
    """Mean-variance normalisation (BVLC Caffe's MVN).

    Parameters: mvn_param.normalize_variance (true), across_channels (false: each (n, c) row of H*W values; true: each sample's C*H*W values), eps (1e-9, added to the standard deviation).
    Forward: y = x - mean(x); with normalize_variance y = (x - mean) / (sqrt(mean((x - mean)^2)) + eps), means over each row.
    Backward: dx = dy - mean(dy); with normalize_variance dx = (dy - mean(dy) - y * mean(dy * y)) / (std + eps), means over each row.
    """

    def setup(self, bottom_shapes):
        if len(bottom_shapes[0]) < 2:
            raise self.error(f"needs a bottom with a channel axis (N, C, ...), got "
                             f"{tuple(bottom_shapes[0])}")
        param = self.param.mvn_param
        self.normalize_variance = param.normalize_variance
        self.across_channels = param.across_channels
        self.eps = param.eps

    def forward(self, bottoms):
        x = bottoms[0]
        rows = x.reshape(x.shape[0] if self.across_channels else x.shape[0] * x.shape[1], -1)
        if self.normalize_variance:
            return [_NormalizeVariance.apply(rows, self.eps).reshape(x.shape)]
        return [(rows - rows.mean(-1, keepdim=True)).reshape(x.shape)]
