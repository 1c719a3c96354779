"""PReLU: ReLU with a learned negative slope per channel (or one shared)."""
import torch

from . import register_layer
from ._common import learnable_blob, param_like
from ._neuron import NeuronLayer
from ..proto import caffe_pb2


@register_layer("PReLU")
class PReLULayer(NeuronLayer):
    """Parametric ReLU.

    Parameters: prelu_param.channel_shared (false), prelu_param.filler (constant 0.25); blob: slope a, shape (C,) or (1,).
    Forward: y = x if x > 0 else a[c] * x.
    Backward: dx = dy if x > 0 else a[c] * dy; da[c] = sum over x <= 0 of dy * x.
    """

    def setup(self, bottom_shapes):
        shape = bottom_shapes[0]
        if len(shape) < 2:
            raise self.error(f"needs a bottom with at least 2 axes (N, C, ...), got {tuple(shape)}")
        p = self.param.prelu_param
        self.channel_shared = p.channel_shared
        filler = p.filler
        if not p.HasField("filler"):
            filler = caffe_pb2.FillerParameter(type="constant", value=0.25)
        self.blobs = [learnable_blob(filler, (1,) if self.channel_shared else (shape[1],))]

    def apply(self, x):
        slope = param_like(self.blobs[0], x)
        if not self.channel_shared:
            if x.dim() < 2 or x.shape[1] != slope.shape[0]:
                raise self.error(f"bottom {tuple(x.shape)} does not have the {slope.shape[0]} "
                                 "channels the slope was made for")
            slope = slope.reshape((-1,) + (1,) * (x.dim() - 2))
        return torch.where(x > 0, x, x * slope)
