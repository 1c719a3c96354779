"""InnerProduct: a fully connected layer over the bottom's axes from `axis` on."""
import math

import torch.nn.functional as F

from . import register_layer
from ._common import canonical_axis, learnable_blob, param_like
from .base import BaseLayer


@register_layer("InnerProduct")
class InnerProductLayer(BaseLayer):
    """Fully connected layer.

    Parameters: inner_product_param.num_output, bias_term (true), weight_filler / bias_filler (constant 0), axis (1), transpose (false); blobs: weight (num_output, K), or (K, num_output) with transpose, bias (num_output,), K = product of the bottom's dims from axis on.
    Forward: y = x.reshape(M, K) @ W^T + b (x @ W with transpose), top shape bottom.shape[:axis] + (num_output,).
    Backward: dx = dy @ W (dy @ W^T with transpose); dW = dy^T @ x (x^T @ dy with transpose); db = sum of dy over the M rows.
    """

    backward_reads_top = False

    def setup(self, bottom_shapes):
        p = self.param.inner_product_param
        if p.num_output <= 0:
            raise self.error("num_output must be set to the number of outputs (> 0)")
        shape = bottom_shapes[0]
        self.axis = canonical_axis(self, p.axis, len(shape))
        self.inputs = math.prod(shape[self.axis:])
        self.transpose = p.transpose
        weight_shape = ((self.inputs, p.num_output) if self.transpose
                        else (p.num_output, self.inputs))
        self.blobs = [learnable_blob(p.weight_filler, weight_shape)]
        if p.bias_term:
            self.blobs.append(learnable_blob(p.bias_filler, (p.num_output,)))

    def forward(self, bottoms):
        x = bottoms[0]
        axis = canonical_axis(self, self.param.inner_product_param.axis, x.dim())
        inputs = math.prod(x.shape[axis:])
        if inputs != self.inputs:
            raise self.error(f"bottom {tuple(x.shape)} has {inputs} inputs per row from axis "
                             f"{axis} on, but the weights were made for {self.inputs}")
        rows = x.reshape(math.prod(x.shape[:axis]), inputs)
        weight = param_like(self.blobs[0], x)
        bias = param_like(self.blobs[1], x) if len(self.blobs) > 1 else None
        y = F.linear(rows, weight.t() if self.transpose else weight, bias)
        return [y.reshape(tuple(x.shape[:axis]) + (y.shape[1],))]
