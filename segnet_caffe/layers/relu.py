"""ReLU: rectified linear unit, leaky when negative_slope is set."""
import torch

from . import register_layer
from ._neuron import NeuronLayer


@register_layer("ReLU")
class ReLULayer(NeuronLayer):
    """Rectified linear unit.

    Parameters: relu_param.negative_slope (default 0).
    Forward: y = x if x > 0 else negative_slope * x.
    Backward: dx = dy if x > 0 else negative_slope * dy (x = 0 takes the negative_slope side).
    """

    def setup(self, bottom_shapes):
        self.negative_slope = self.param.relu_param.negative_slope

    def apply(self, x):
        return torch.where(x > 0, x, x * self.negative_slope)
