"""Slice: one bottom cut into consecutive pieces along an axis."""
from . import register_layer
from ._common import canonical_axis
from .base import BaseLayer


@register_layer("Slice")
class SliceLayer(BaseLayer):
    """Cut of the bottom into one piece per top along an axis.

    Parameters: slice_param.axis (1, negative counts from the end) or the legacy slice_dim (>= 0), slice_point (one per top boundary; none: equal pieces).
    Forward: y_k = x[..., p_{k-1} : p_k, ...] with p_0 = 0 and p_K = the axis' size.
    Backward: dx = [dy_1, ..., dy_K] joined along the axis.
    """

    top_count = (1, None)

    def setup(self, bottom_shapes):
        param = self.param.slice_param
        if param.HasField("axis") and param.HasField("slice_dim"):
            raise self.error("give either slice_param.axis or the legacy slice_dim, not both")
        self.legacy = param.HasField("slice_dim")
        self.axis = param.slice_dim if self.legacy else param.axis
        self.points = [int(p) for p in param.slice_point]
        tops = len(self.param.top)
        if self.points and len(self.points) != tops - 1:
            raise self.error(f"slice_param gives {len(self.points)} slice_point values for "
                             f"{tops} tops: give one fewer than the tops, or none for equal pieces")
        if any(b <= a for a, b in zip([0] + self.points, self.points)):
            raise self.error(f"slice_point values {self.points} must be positive and increasing")
        self._pieces(tuple(bottom_shapes[0]))

    def _pieces(self, shape):
        """(axis, sizes of the pieces) for a bottom of `shape` (Caffe's SliceLayer::Reshape)."""
        num_axes = len(shape)
        if self.legacy:
            if self.axis >= num_axes:
                raise self.error(f"slice_dim {self.axis} is out of range for a {num_axes}-axis "
                                 f"bottom (use 0 to {num_axes - 1})")
            axis = self.axis
        else:
            axis = canonical_axis(self, self.axis, num_axes)
        size, tops = shape[axis], len(self.param.top)
        if self.points:
            if self.points[-1] >= size:
                raise self.error(f"slice_point {self.points[-1]} leaves nothing for the last top: "
                                 f"axis {axis} of the bottom {shape} has size {size}")
            bounds = [0] + self.points + [size]
            return axis, [b - a for a, b in zip(bounds, bounds[1:])]
        if size % tops:
            raise self.error(f"{tops} tops do not divide axis {axis} of size {size} evenly: give "
                             "slice_point values")
        return axis, [size // tops] * tops

    def forward(self, bottoms):
        x = bottoms[0]
        axis, sizes = self._pieces(tuple(x.shape))
        if len(sizes) == 1:
            return [x.view_as(x)]  # Caffe shares the bottom with a single top
        return list(x.split(sizes, dim=axis))
