"""TanH: the hyperbolic tangent."""
import torch

from . import register_layer
from ._neuron import NeuronLayer


@register_layer("TanH")
class TanHLayer(NeuronLayer):
    """Hyperbolic tangent.

    Parameters: none.
    Forward: y = tanh(x).
    Backward: dx = dy * (1 - y^2).
    """

    def apply(self, x):
        return torch.tanh(x)
