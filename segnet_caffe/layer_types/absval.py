"""AbsVal: the absolute value."""
import torch

from . import register_layer
from ._neuron import NeuronLayer


@register_layer("AbsVal")
class AbsValLayer(NeuronLayer):
    """Absolute value.

    Parameters: none.
    Forward: y = |x|.
    Backward: dx = sign(x) * dy (0 at x = 0), x read from the bottom blob in backward: run in
    place, Caffe's AbsValLayer reads |x| there, so dx = dy wherever x != 0; so do we.
    """

    backward_reads_bottom_blob = True

    def apply(self, x):
        return torch.abs(x)
