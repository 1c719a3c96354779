"""AbsVal: the absolute value."""
import torch

from . import register_layer
from ._neuron import NeuronLayer


@register_layer("AbsVal")
class AbsValLayer(NeuronLayer):
    """Absolute value.

    Parameters: none.
    Forward: y = |x|.
    Backward: dx = sign(x) * dy (0 at x = 0).
    """

    def apply(self, x):
        return torch.abs(x)
