"""Dropout: inverted dropout in TRAIN; identity in TEST unless the Bayesian SegNet sampling flag is set."""
import torch

from . import register_layer
from ._neuron import NeuronLayer
from ..proto import caffe_pb2


@register_layer("Dropout")
class DropoutLayer(NeuronLayer):
    """Dropout (with the Bayesian SegNet fork's Monte-Carlo sampling at test time).

    Parameters: dropout_param.dropout_ratio p (0.5), dropout_param.sample_weights_test (false).
    Forward: TRAIN, or TEST with sample_weights_test: y = x * mask / (1 - p), mask ~ Bernoulli(1 - p); else y = x.
    Backward: dx = dy * mask / (1 - p) with the forward's mask (dx = dy when not sampling).
    """

    def setup(self, bottom_shapes):
        p = self.param.dropout_param
        self.ratio = p.dropout_ratio
        if not 0.0 <= self.ratio < 1.0:
            raise self.error(f"dropout_ratio must be in [0, 1), got {self.ratio}")
        self.sample = self.phase == caffe_pb2.TRAIN or p.sample_weights_test

    def apply(self, x):
        if not self.sample:
            return x.view_as(x)
        keep = torch.empty_like(x).bernoulli_(1.0 - self.ratio)
        return x * keep * (1.0 / (1.0 - self.ratio))
