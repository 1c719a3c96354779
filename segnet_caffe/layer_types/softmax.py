"""Softmax: normalised exponentials along one axis."""
import torch

from . import register_layer
from ._common import canonical_axis
from .base import BaseLayer


@register_layer("Softmax")
class SoftmaxLayer(BaseLayer):
    """Softmax along an axis.

    Parameters: softmax_param.axis (1, negative counts from the end).
    Forward: y = exp(x - max) / sum_axis exp(x - max).
    Backward: dx = (dy - sum_axis(dy * y)) * y.
    """

    def setup(self, bottom_shapes):
        self.axis = self.param.softmax_param.axis
        canonical_axis(self, self.axis, len(bottom_shapes[0]))

    def forward(self, bottoms):
        x = bottoms[0]
        return [torch.softmax(x, dim=canonical_axis(self, self.axis, x.dim()))]
