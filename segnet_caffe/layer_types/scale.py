"""Scale: multiply by a learned (or second-bottom) operand broadcast over a run of axes."""
import torch

from . import register_layer
from ._common import broadcast_operand, learnable_blob, operand_shape, param_like
from .base import BaseLayer
from ..proto import caffe_pb2


@register_layer("Scale")
class ScaleLayer(BaseLayer):
    """Elementwise scaling by an operand spanning axes [axis, axis + num_axes) of the bottom.

    Parameters: scale_param.axis (1), num_axes (1; -1 = to the end), filler (constant 1), bias_term (false), bias_filler (constant 0).
    Forward: y = x * s (+ b), s = bottom[1] when given else blob 0, both broadcast over the other axes.
    Backward: dx = dy * s; ds = sum over the broadcast axes of dy * x; db = sum of dy.
    """

    backward_reads_top = False

    bottom_count = (1, 2)

    def setup(self, bottom_shapes):
        p = self.param.scale_param
        self.blobs = []
        if len(bottom_shapes) == 1:
            filler = p.filler if p.HasField("filler") else caffe_pb2.FillerParameter(
                type="constant", value=1.0)  # Caffe's default: the identity
            self.blobs.append(learnable_blob(filler, operand_shape(
                self, bottom_shapes[0], p.axis, p.num_axes)))
        if p.bias_term:
            # Caffe's internal Bias layer spans the scale operand's axes.
            num_axes = len(bottom_shapes[1]) if len(bottom_shapes) > 1 else p.num_axes
            self.blobs.append(learnable_blob(p.bias_filler, operand_shape(
                self, bottom_shapes[0], p.axis, num_axes)))

    def channel_affine(self):
        p = self.param.scale_param
        if len(self.param.bottom) > 1 or p.axis != 1 or len(self.blobs[0].shape) != 1:
            return None
        scale = self.blobs[0].tensor()
        return scale, self.blobs[1].tensor() if p.bias_term else torch.zeros_like(scale)

    def forward(self, bottoms):
        x, axis = bottoms[0], self.param.scale_param.axis
        scale = bottoms[1] if len(bottoms) > 1 else param_like(self.blobs[0], x)
        y = x * broadcast_operand(self, x, scale, axis)
        if self.param.scale_param.bias_term:
            y = y + broadcast_operand(self, x, param_like(self.blobs[-1], x), axis)
        return [y]
