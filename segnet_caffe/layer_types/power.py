"""Power: y = (shift + scale * x) ^ power."""
import torch

from . import register_layer
from ._neuron import NeuronLayer


@register_layer("Power")
class PowerLayer(NeuronLayer):
    """Power of an affine function of the input.

    Parameters: power_param.power (1), power_param.scale (1), power_param.shift (0).
    Forward: y = (shift + scale * x) ^ power.
    Backward: dx = dy * power * scale * (shift + scale * x) ^ (power - 1), x read from the
    bottom blob in backward: run in place, Caffe's PowerLayer reads the top there (it keeps no
    copy of x), and so do we.
    """

    backward_reads_bottom_blob = True

    def setup(self, bottom_shapes):
        p = self.param.power_param
        self.power, self.scale, self.shift = p.power, p.scale, p.shift

    def apply(self, x):
        if self.power * self.scale == 0:
            # Caffe writes the constant (shift^power, or 1 for power 0) and a zero bottom diff;
            # `where` keeps x in the graph so that the Net writes that zero diff.
            value = 1.0 if self.power == 0 else self.shift ** self.power
            return torch.where(torch.ones_like(x, dtype=torch.bool), torch.full_like(x, value), x)
        return torch.pow(self.shift + self.scale * x, self.power)
