"""LRN: local response normalisation across channels or within each channel (Caffe's LRNLayer)."""
import torch.nn.functional as F

from . import register_layer
from .base import BaseLayer
from ..proto import caffe_pb2

ACROSS_CHANNELS = caffe_pb2.LRNParameter.ACROSS_CHANNELS


@register_layer("LRN")
class LRNLayer(BaseLayer):
    """Local response normalisation.

    Parameters: lrn_param.local_size n (5, odd), alpha (1), beta (0.75), k (1, ACROSS_CHANNELS only), norm_region (ACROSS_CHANNELS | WITHIN_CHANNEL).
    Forward: ACROSS: y = x * (k + alpha/n * sum of x^2 over channels c-(n-1)/2..c+(n-1)/2, zero padded)^-beta; WITHIN: y = x * (1 + alpha/n^2 * sum of x^2 over the n x n window, zero padded by (n-1)/2)^-beta (k is ignored, as in Caffe).
    Backward: dx = dy * scale^-beta - 2*alpha*beta/n * x * sum over the windows containing x of dy*y/scale (n^2 for WITHIN).
    """

    def setup(self, bottom_shapes):
        p = self.param.lrn_param
        if p.local_size % 2 != 1:
            raise self.error(f"local_size must be odd (a window centred on each position), got "
                             f"{p.local_size}")
        self.size, self.alpha, self.beta, self.k = p.local_size, p.alpha, p.beta, p.k
        self.across = p.norm_region == ACROSS_CHANNELS

    def forward(self, bottoms):
        x = bottoms[0]
        if x.dim() != 4:
            raise self.error(f"needs a 4-axis bottom (N, C, H, W), got {tuple(x.shape)}")
        n, pad = self.size, (self.size - 1) // 2
        square = x * x
        if self.across:
            # The channel window as an (n x 1) average pooling over a (N, 1, C, H*W) view; with
            # zero padding counted, every window divides by n.
            n_, c, h, w = x.shape
            mean = F.avg_pool2d(square.reshape(n_, 1, c, h * w), (n, 1), 1, (pad, 0),
                                count_include_pad=True).reshape(x.shape)
            scale = self.k + self.alpha * mean
        else:
            # Caffe builds this from layers: AVE Pooling (kernel n, pad (n-1)/2, whose divisor
            # counts the padding: always n^2) then Power (shift 1, scale alpha, power -beta).
            mean = F.avg_pool2d(square, n, 1, pad, count_include_pad=True)
            scale = 1.0 + self.alpha * mean
        return [x * scale.pow(-self.beta)]
