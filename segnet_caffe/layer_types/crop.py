"""Crop: a window of the first bottom, sized like the second bottom."""
from . import register_layer
from ._common import canonical_axis
from .base import BaseLayer


@register_layer("Crop")
class CropLayer(BaseLayer):
    """Crop of bottom 0 to the shape of bottom 1 on every axis from `axis` on.

    Parameters: crop_param.axis (2, negative counts from the end), offset (none: 0; one: for every cropped axis; else one per cropped axis).
    Forward: y = x0[..., o_a : o_a + s_a, ...] with s_a = bottom 1's dimension on each axis a >= axis; earlier axes are kept.
    Backward: dx0 = dy placed at the window, 0 elsewhere; bottom 1 gets no gradient.
    """

    bottom_count = (2, 2)

    def setup(self, bottom_shapes):
        param = self.param.crop_param
        self.axis = param.axis
        self.offsets = [int(o) for o in param.offset]
        self._window(tuple(bottom_shapes[0]), tuple(bottom_shapes[1]))

    def _window(self, shape, like):
        """(offset, size) per axis of bottom 0 (Caffe's CropLayer::Reshape)."""
        num_axes = len(shape)
        start = canonical_axis(self, self.axis, num_axes)
        cropped = num_axes - start
        if len(self.offsets) > 1 and len(self.offsets) != cropped:
            raise self.error(f"crop_param gives {len(self.offsets)} offsets but axes {start}.."
                             f"{num_axes - 1} are cropped: give one offset, or one per cropped "
                             "axis")
        if len(like) < num_axes:
            raise self.error(f"bottom 1 {like} has fewer axes than bottom 0 {shape}")
        window = []
        for i in range(num_axes):
            if i < start:
                window.append((0, shape[i]))
                continue
            offset = self.offsets[0] if len(self.offsets) == 1 else (
                self.offsets[i - start] if self.offsets else 0)
            if shape[i] - offset < like[i]:
                raise self.error(f"cannot crop {like[i]} values at offset {offset} from axis {i} "
                                 f"of size {shape[i]} (bottom 0 {shape}, bottom 1 {like})")
            window.append((offset, like[i]))
        return window

    def forward(self, bottoms):
        x = bottoms[0]
        for axis, (offset, size) in enumerate(self._window(tuple(x.shape), tuple(bottoms[1].shape))):
            if (offset, size) != (0, x.shape[axis]):
                x = x.narrow(axis, offset, size)
        return [x.view_as(x) if x is bottoms[0] else x]
