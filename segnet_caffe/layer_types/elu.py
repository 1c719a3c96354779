"""ELU: exponential linear unit."""
import torch.nn.functional as F

from . import register_layer
from ._neuron import NeuronLayer


@register_layer("ELU")
class ELULayer(NeuronLayer):
    """Exponential linear unit.

    Parameters: elu_param.alpha (default 1).
    Forward: y = x if x > 0 else alpha * (exp(x) - 1).
    Backward: dx = dy if x > 0 else dy * (y + alpha).
    """

    def setup(self, bottom_shapes):
        self.alpha = self.param.elu_param.alpha

    def apply(self, x):
        return F.elu(x, alpha=self.alpha)
