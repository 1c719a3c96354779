"""ReLU: rectified linear unit, leaky when negative_slope is set."""
import torch.nn.functional as F

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
        # Both kernels pass the gradient only where x > 0 (x = 0 takes the slope side), as Caffe.
        if self.negative_slope == 0:
            return F.relu(x)
        return F.leaky_relu(x, self.negative_slope)

    def in_place_activation(self):
        if self.negative_slope == 0:
            return F.relu_
        return lambda x: F.leaky_relu_(x, self.negative_slope)
