"""ArgMax: the indices (and optionally values) of the top_k largest entries."""
import torch

from . import register_layer
from ._common import canonical_axis
from .base import BaseLayer


@register_layer("ArgMax")
class ArgMaxLayer(BaseLayer):
    """Indices of the top_k largest values, per instance or along an axis.

    Parameters: argmax_param.out_max_val (false), top_k (1), axis (unset: over all of each instance's values).
    Forward: without axis, y[n] = the top_k indices into x[n] flattened (with out_max_val, (N, 2, top_k): indices then values); with axis, y = the top_k indices along the axis (with out_max_val, their values instead); ties go to the larger index.
    Backward: none (Caffe does not implement it).
    """

    def setup(self, bottom_shapes):
        param = self.param.argmax_param
        self.out_max_val = param.out_max_val
        self.top_k = param.top_k
        self.has_axis = param.HasField("axis")
        self.axis = param.axis if self.has_axis else None
        if self.top_k < 1:
            raise self.error(f"top_k must be at least 1, got {self.top_k}")
        self._check(tuple(bottom_shapes[0]))

    def _check(self, shape):
        if self.has_axis:
            axis = canonical_axis(self, self.axis, len(shape))
            if self.top_k > shape[axis]:
                raise self.error(f"top_k {self.top_k} exceeds the size {shape[axis]} of axis "
                                 f"{axis} of the bottom {shape}")
            return axis
        per_instance = 1
        for d in shape[1:]:
            per_instance *= d
        if self.top_k > per_instance:
            raise self.error(f"top_k {self.top_k} exceeds the {per_instance} values per instance "
                             f"of the bottom {shape}")
        return None

    def forward(self, bottoms):
        x = bottoms[0].detach()  # Caffe has no backward for ArgMax
        shape = tuple(x.shape)
        axis = self._check(shape)
        if axis is None:
            values, indices = self._top_k(x.reshape(shape[0], -1), 1)
            top_shape = (shape[0], 2 if self.out_max_val else 1, self.top_k) \
                + (1,) * (max(len(shape), 3) - 3)
            if self.out_max_val:
                top = torch.stack([indices.to(x.dtype), values], dim=1)
            else:
                top = indices.to(x.dtype)
            return [top.reshape(top_shape)]
        values, indices = self._top_k(x, axis)
        return [values if self.out_max_val else indices.to(x.dtype)]

    def _top_k(self, x, dim):
        """The top_k (values, indices) along `dim`, largest first; equal values put the larger
        index first, as Caffe's partial_sort of (value, index) pairs with std::greater does."""
        size = x.shape[dim]
        flipped = x.flip(dim)
        values, order = torch.sort(flipped, dim=dim, descending=True, stable=True)
        values = values.narrow(dim, 0, self.top_k)
        indices = (size - 1) - order.narrow(dim, 0, self.top_k)
        return values, indices
