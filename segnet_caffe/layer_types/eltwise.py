"""Eltwise: element-wise product, weighted sum or maximum of same-shaped bottoms."""
import torch

from . import register_layer
from .base import BaseLayer
from ..logs import get_logger


class _ProdUnstable(torch.autograd.Function):
    """PROD with stable_prod_grad: false. Caffe's gradient is dy * y / x_k (NaN or inf where x_k is
    0), not autograd's product of the other bottoms, so it is written out here."""

    @staticmethod
    def forward(ctx, *bottoms):
        top = bottoms[0] * bottoms[1]
        for x in bottoms[2:]:
            top = top * x
        ctx.save_for_backward(top, *bottoms)
        return top

    @staticmethod
    def backward(ctx, grad):
        top, *bottoms = ctx.saved_tensors
        return tuple(grad * (top / x) if need else None
                     for x, need in zip(bottoms, ctx.needs_input_grad))


@register_layer("Eltwise")
class EltwiseLayer(BaseLayer):
    """Element-wise combination of bottoms of one shape.

    Parameters: eltwise_param.operation (PROD, SUM (default), MAX), coeff (SUM only: one per bottom), stable_prod_grad (true).
    Forward: PROD y = prod_k x_k; SUM y = sum_k coeff_k x_k; MAX y = max_k x_k (ties: bottom 1 over bottom 0, else the earliest).
    Backward: PROD dx_k = dy * prod_{j != k} x_j (stable_prod_grad: false, dy * y / x_k); SUM dx_k = coeff_k dy; MAX dx_k = dy where x_k was chosen, else 0.
    """

    bottom_count = (2, None)

    def setup(self, bottom_shapes):
        param = self.param.eltwise_param
        ops = type(param).EltwiseOp
        self.op = ops.Name(param.operation)
        self.coeff = list(param.coeff)
        if self.coeff and len(self.coeff) != len(self.param.bottom):
            raise self.error(f"eltwise_param gives {len(self.coeff)} coeff values for "
                             f"{len(self.param.bottom)} bottoms: give one per bottom or none")
        if self.coeff and self.op == "PROD":  # Caffe CHECK-fails here
            raise self.error("coeff applies only to operation SUM, not PROD: remove it")
        if self.coeff and self.op == "MAX":  # Caffe ignores them
            get_logger().warning(f'layer "{self.name}" (Eltwise): coeff is ignored by operation '
                                 "MAX, as in Caffe: remove it")
        if not self.coeff:
            self.coeff = [1.0] * len(self.param.bottom)
        self.stable_prod_grad = param.stable_prod_grad

    def forward(self, bottoms):
        shape = tuple(bottoms[0].shape)
        for k, x in enumerate(bottoms[1:], start=1):
            if tuple(x.shape) != shape:
                raise self.error(f"bottom {k} has shape {tuple(x.shape)} but bottom 0 has {shape}: "
                                 "all bottoms must have the same shape")
        if self.op == "PROD":
            if not self.stable_prod_grad:
                return [_ProdUnstable.apply(*bottoms)]
            # Autograd of this product is Caffe's stable gradient: dy times the other bottoms.
            top = bottoms[0] * bottoms[1]
            for x in bottoms[2:]:
                top = top * x
            return [top]
        if self.op == "SUM":
            top = None
            for c, x in zip(self.coeff, bottoms):
                term = x if c == 1 else x * c
                top = term if top is None else top + term
            return [top]
        # MAX, Caffe's mask rule: bottom 1 wins unless bottom 0 is strictly larger (a tie between
        # the first two goes to bottom 1); each later bottom replaces the running maximum only
        # where it is strictly larger. The gradient flows to the chosen bottom only.
        best = torch.maximum(bottoms[0].detach(), bottoms[1].detach())
        choice = (bottoms[0].detach() <= bottoms[1].detach()).to(torch.int64)
        for k, x in enumerate(bottoms[2:], start=2):
            larger = x.detach() > best
            best = torch.where(larger, x.detach(), best)
            choice = torch.where(larger, torch.full_like(choice, k), choice)
        stacked = torch.stack(bottoms)
        return [torch.gather(stacked, 0, choice.unsqueeze(0)).squeeze(0)]
