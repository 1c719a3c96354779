"""Sigmoid: the logistic function."""
import torch

from . import register_layer
from ._neuron import NeuronLayer


@register_layer("Sigmoid")
class SigmoidLayer(NeuronLayer):
    """Logistic sigmoid.

    Parameters: none.
    Forward: y = 1 / (1 + exp(-x)).
    Backward: dx = dy * y * (1 - y).
    """

    def apply(self, x):
        return torch.sigmoid(x)
