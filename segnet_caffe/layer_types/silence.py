"""Silence: consumes blobs nobody else reads, so that they are not net outputs."""
from . import register_layer
from .base import BaseLayer


@register_layer("Silence")
class SilenceLayer(BaseLayer):
    """A sink for blobs: no tops, no computation.

    Parameters: none.
    Forward: nothing.
    Backward: dx = 0 for every bottom (Caffe zeroes the diffs it is asked for).
    """

    bottom_count = (1, None)
    top_count = (0, 0)

    def forward(self, bottoms):
        return []
