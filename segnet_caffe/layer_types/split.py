"""Split: one blob read by several layers (inserted by the Net, as Caffe's InsertSplits does)."""
from .base import BaseLayer
from . import register_layer


@register_layer("Split")
class SplitLayer(BaseLayer):
    """Split layer.

    Parameters: none; the Net inserts it where a top feeds more than one bottom.
    Forward: every top is the bottom (shared, no copy).
    Backward: the bottom's diff is the sum of the tops' diffs.
    """

    top_count = (1, None)

    def forward(self, bottoms):
        return [bottoms[0].view_as(bottoms[0]) for _ in self.param.top]
