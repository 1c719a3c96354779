"""NeuronLayer: one bottom, one top of the same shape, an elementwise function (Caffe's NeuronLayer)."""
from .base import BaseLayer


class NeuronLayer(BaseLayer):
    """Base of the elementwise layers: subclasses read their parameters in `setup` and write `apply`."""

    def forward(self, bottoms):
        return [self.apply(bottoms[0])]

    def apply(self, x):
        raise NotImplementedError
