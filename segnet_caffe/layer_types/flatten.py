"""Flatten: a run of axes merged into one."""
import math

from . import register_layer
from ._common import canonical_axis
from .base import BaseLayer


@register_layer("Flatten")
class FlattenLayer(BaseLayer):
    """Flattening of axes axis..end_axis into one axis (the data are unchanged).

    Parameters: flatten_param.axis (1) and end_axis (-1), negative counting from the end.
    Forward: y = x reshaped to shape[:axis] + (prod(shape[axis:end_axis+1]),) + shape[end_axis+1:].
    Backward: dx = dy reshaped to x's shape.
    """

    def setup(self, bottom_shapes):
        if self.param.top[0] == self.param.bottom[0]:
            raise self.error("Flatten cannot run in place: give the top a new name")
        self.axis = self.param.flatten_param.axis
        self.end_axis = self.param.flatten_param.end_axis
        self._span(len(bottom_shapes[0]))

    def _span(self, num_axes):
        start = canonical_axis(self, self.axis, num_axes)
        end = canonical_axis(self, self.end_axis, num_axes)
        if end < start:
            raise self.error(f"end_axis {self.end_axis} comes before axis {self.axis} for a "
                             f"{num_axes}-axis bottom")
        return start, end

    def forward(self, bottoms):
        x = bottoms[0]
        start, end = self._span(x.dim())
        shape = tuple(x.shape)
        return [x.reshape(shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:])]
