"""Concat: bottoms joined along one axis."""
import torch

from . import register_layer
from ._common import canonical_axis
from .base import BaseLayer


@register_layer("Concat")
class ConcatLayer(BaseLayer):
    """Concatenation of the bottoms along one axis.

    Parameters: concat_param.axis (1, negative counts from the end) or the legacy concat_dim (>= 0).
    Forward: y = [x_1, x_2, ..., x_K] joined along the axis; every other axis must agree.
    Backward: dx_k = the slice of dy that x_k filled.
    """

    bottom_count = (1, None)

    def setup(self, bottom_shapes):
        param = self.param.concat_param
        if param.HasField("axis") and param.HasField("concat_dim"):
            raise self.error("give either concat_param.axis or the legacy concat_dim, not both")
        self.legacy = param.HasField("concat_dim")
        self.axis = param.concat_dim if self.legacy else param.axis
        self._axis(len(bottom_shapes[0]))

    def _axis(self, num_axes):
        if self.legacy:
            if self.axis >= num_axes:
                raise self.error(f"concat_dim {self.axis} is out of range for a {num_axes}-axis "
                                 f"bottom (use 0 to {num_axes - 1})")
            return self.axis
        return canonical_axis(self, self.axis, num_axes)

    def forward(self, bottoms):
        first = bottoms[0]
        axis = self._axis(first.dim())
        for k, x in enumerate(bottoms[1:], start=1):
            same_rank = x.dim() == first.dim()
            if not same_rank or any(a != b for i, (a, b) in enumerate(zip(x.shape, first.shape))
                                    if i != axis):
                raise self.error(f"bottom {k} has shape {tuple(x.shape)} but bottom 0 has "
                                 f"{tuple(first.shape)}: all axes except the concat axis {axis} "
                                 "must agree")
        if len(bottoms) == 1:
            return [first.view_as(first)]  # Caffe shares the single bottom's data
        return [torch.cat(bottoms, dim=axis)]
