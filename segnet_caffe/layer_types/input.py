"""Input: net inputs whose values the user writes into the top blobs."""
from .base import BaseLayer
from . import register_layer


@register_layer("Input")
class InputLayer(BaseLayer):
    """Input layer.

    Parameters: input_param.shape, one BlobShape per top (or one shared by all tops).
    Forward: nothing; the tops keep what the user wrote into net.blobs[name].data.
    Backward: none (an input's diff is what the layers above it wrote).
    """

    bottom_count = (0, 0)
    top_count = (1, None)

    def setup(self, bottom_shapes):
        shapes = self.param.input_param.shape
        if len(shapes) not in (1, len(self.param.top)):
            raise self.error(f"input_param gives {len(shapes)} shapes for "
                             f"{len(self.param.top)} tops (give one per top, or one for all)")
        self._shapes = [tuple(s.dim) for s in shapes]
        if len(self._shapes) == 1:
            self._shapes *= len(self.param.top)
        for shape in self._shapes:
            if any(d < 0 for d in shape):
                raise self.error(f"negative dimension in input shape {shape}")

    def reshape(self, bottom_shapes):
        shapes, self._shapes = self._shapes, [None] * len(self._shapes)
        return shapes  # the declared shapes once; afterwards the blobs keep the user's reshapes

    def forward(self, bottoms):
        return [None] * len(self.param.top)
