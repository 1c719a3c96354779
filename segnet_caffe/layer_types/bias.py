"""Bias: add a learned (or second-bottom) operand broadcast over a run of axes."""
from . import register_layer
from ._common import broadcast_operand, learnable_blob, operand_shape, param_like
from .base import BaseLayer


@register_layer("Bias")
class BiasLayer(BaseLayer):
    """Elementwise addition of an operand spanning axes [axis, axis + num_axes) of the bottom.

    Parameters: bias_param.axis (1), num_axes (1; -1 = to the end), filler (constant 0).
    Forward: y = x + b, b = bottom[1] when given else blob 0, broadcast over the other axes.
    Backward: dx = dy; db = sum over the broadcast axes of dy.
    """

    backward_reads_top = False

    bottom_count = (1, 2)

    def setup(self, bottom_shapes):
        p = self.param.bias_param
        self.blobs = []
        if len(bottom_shapes) == 1:
            self.blobs.append(learnable_blob(p.filler, operand_shape(
                self, bottom_shapes[0], p.axis, p.num_axes)))

    def forward(self, bottoms):
        x = bottoms[0]
        bias = bottoms[1] if len(bottoms) > 1 else param_like(self.blobs[0], x)
        return [x + broadcast_operand(self, x, bias, self.param.bias_param.axis)]
