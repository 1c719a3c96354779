"""ReLU: rectified linear unit, leaky when negative_slope is set."""
import torch
import torch.nn.functional as F

from . import register_layer
from ._neuron import NeuronLayer


@register_layer("ReLU")
class ReLULayer(NeuronLayer):
    """Rectified linear unit.

    Parameters: relu_param.negative_slope (default 0).
    Forward: y = x if x > 0 else negative_slope * x; in place over the bottom when the prototxt says so and the layer before does not need its top for backward.
    Backward: dx = dy if x > 0 else negative_slope * dy (x = 0 takes the slope side); in place, y > 0 stands for x > 0, as Caffe's in-place ReLU reads its top.
    """

    def setup(self, bottom_shapes):
        self.negative_slope = self.param.relu_param.negative_slope

    def apply(self, x):
        # Both kernels pass the gradient only where x > 0 (x = 0 takes the slope side), as Caffe.
        if self.negative_slope == 0:
            return F.relu(x)
        return F.leaky_relu(x, self.negative_slope)

    def in_place_activation(self):
        return lambda x: _ReLUOverInput.apply(x, self.negative_slope)


class _ReLUOverInput(torch.autograd.Function):
    """ReLU written over its input's memory (which the caller no longer needs), with the gradient
    taken from the output's sign: no new map in forward, nothing but the output kept."""

    @staticmethod
    def forward(ctx, x, negative_slope):
        y = x.detach()  # the same memory; x itself may be an autograd leaf
        if negative_slope == 0:
            F.relu_(y)
        else:
            F.leaky_relu_(y, negative_slope)
        ctx.negative_slope = negative_slope
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        y, = ctx.saved_tensors
        if ctx.negative_slope == 0:
            return torch.ops.aten.threshold_backward(dy, y, 0), None
        return torch.ops.aten.leaky_relu_backward(dy, y, ctx.negative_slope, True), None
