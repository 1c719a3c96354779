"""Reshape: the same data under a new shape."""
import math

from . import register_layer
from .base import BaseLayer


@register_layer("Reshape")
class ReshapeLayer(BaseLayer):
    """A new shape for the bottom's data, replacing axes axis..axis+num_axes (the data are unchanged).

    Parameters: reshape_param.shape (dim 0 copies the bottom's dimension, -1 is inferred (once)), axis (0), num_axes (-1: to the end).
    Forward: y = x viewed as shape[:axis] + new dims + shape[axis+num_axes:].
    Backward: dx = dy reshaped to x's shape.
    """

    def setup(self, bottom_shapes):
        if self.param.top[0] == self.param.bottom[0]:
            raise self.error("Reshape cannot run in place: give the top a new name")
        param = self.param.reshape_param
        self.dims = [int(d) for d in param.shape.dim]
        self.axis = param.axis
        self.num_axes = param.num_axes
        if any(d < -1 for d in self.dims):
            raise self.error(f"reshape_param.shape {self.dims} has a dimension below -1 (use 0 to "
                             "copy the bottom's dimension, -1 to infer one)")
        if self.dims.count(-1) > 1:
            raise self.error(f"reshape_param.shape {self.dims} has more than one -1: at most one "
                             "dimension can be inferred")
        if self.num_axes < -1:
            raise self.error(f"num_axes must be >= 0, or -1 for all axes from axis on; got "
                             f"{self.num_axes}")
        self.top_shape(tuple(bottom_shapes[0]))

    def top_shape(self, shape):
        """Caffe's ReshapeLayer::Reshape for a bottom of `shape`."""
        num_axes = len(shape)
        start = self.axis if self.axis >= 0 else num_axes + self.axis + 1
        if not 0 <= start <= num_axes:
            raise self.error(f"axis {self.axis} is out of range for a {num_axes}-axis bottom")
        end = num_axes if self.num_axes == -1 else start + self.num_axes
        if end > num_axes:
            raise self.error(f"axis {self.axis} + num_axes {self.num_axes} goes past the "
                             f"{num_axes} axes of the bottom {shape}")
        new = list(self.dims)
        for i, d in enumerate(self.dims):
            if d == 0:
                if start + i >= num_axes:
                    raise self.error(f"reshape_param.shape {self.dims} has a 0 at position {i} "
                                     f"but the bottom {shape} has no axis {start + i} to copy")
                new[i] = shape[start + i]
        count = math.prod(shape)
        if -1 in new:
            known = math.prod(d for d in new if d != -1) * math.prod(shape[:start]) \
                * math.prod(shape[end:])
            if known == 0 or count % known:
                raise self.error(f"cannot infer the -1 in {self.dims}: the bottom's {count} "
                                 f"values are not divisible by the other dimensions' {known}")
            new[new.index(-1)] = count // known
        top = tuple(shape[:start]) + tuple(new) + tuple(shape[end:])
        if math.prod(top) != count:
            raise self.error(f"shape {top} holds {math.prod(top)} values but the bottom {shape} "
                             f"holds {count}")
        return top

    def forward(self, bottoms):
        x = bottoms[0]
        return [x.reshape(self.top_shape(tuple(x.shape)))]
