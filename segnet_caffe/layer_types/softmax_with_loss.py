"""SoftmaxWithLoss: multinomial logistic loss of the softmax, with the SegNet fork's class weights."""
import math

import numpy as np
import torch

from . import register_layer
from ._common import check_label_count, outer_inner, read_labels
from .base import BaseLayer
from ..proto import caffe_pb2

LOG_FLT_MIN = math.log(np.finfo(np.float32).tiny)  # Caffe takes log(max(p, FLT_MIN))


def caffe_cpu_sum(terms):
    """terms.sum() with the value CPU Caffe computes: it adds the per-pixel losses one by one into
    a float32 accumulator, which over a 512x512 batch drifts ~1e-3 from the exact sum; the
    gradient is the exact sum's. (Caffe's GPU path reduces accurately: so do we on GPU.)"""
    total = terms.sum()
    if terms.device.type != "cpu" or terms.dtype != torch.float32 or terms.numel() < 2:
        return total
    sequential = np.add.accumulate(terms.detach().reshape(-1).numpy(), dtype=np.float32)[-1]
    return total + (float(sequential) - total.detach())


@register_layer("SoftmaxWithLoss")
class SoftmaxWithLossLayer(BaseLayer):
    """Softmax cross-entropy loss over the class axis, per position.

    Parameters: softmax_param.axis (1); loss_param.ignore_label, normalization / normalize, weight_by_label_freqs + class_weighting.
    Forward: loss = -sum_valid w[l] * log(max(p[l], FLT_MIN)) / normalizer, p = softmax(x); w = class_weighting only if weight_by_label_freqs, else 1.
    Backward: dx = loss_weight * w[l] * (p - onehot(l)) / normalizer, 0 at ignored positions; no gradient to labels or from the prob top.
    """

    bottom_count = (2, 2)
    top_count = (1, 2)
    default_loss_weight = 1.0
    low_precision = False

    def setup(self, bottom_shapes):
        lp = self.param.loss_param
        self.axis = self.param.softmax_param.axis
        _, _, classes, _ = outer_inner(self, bottom_shapes[0], self.axis)
        self.ignore_label = lp.ignore_label if lp.HasField("ignore_label") else None
        self.normalization = self._normalization(lp)
        self.weights = None
        if lp.weight_by_label_freqs:
            if len(lp.class_weighting) != classes:
                raise self.error(f"weight_by_label_freqs needs one class_weighting per class: "
                                 f"got {len(lp.class_weighting)} for {classes} classes")
            self.weights = torch.tensor(list(lp.class_weighting), dtype=torch.float32)

    @staticmethod
    def _normalization(lp):
        """Caffe's precedence: `normalization` if set, else the legacy `normalize` (true = VALID,
        false = BATCH_SIZE), else VALID (the fork's default, normalize: true)."""
        if "normalization" in lp.DESCRIPTOR.fields_by_name and lp.HasField("normalization"):
            return caffe_pb2.LossParameter.NormalizationMode.Name(lp.normalization)
        if lp.HasField("normalize"):
            return "VALID" if lp.normalize else "BATCH_SIZE"
        return "VALID"

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0  # Caffe: "cannot backpropagate to label inputs"

    def reshape(self, bottom_shapes):
        # Not forward on meta tensors: the forward reads the labels' values to check them.
        axis, outer, _, inner = outer_inner(self, bottom_shapes[0], self.axis)
        check_label_count(self, bottom_shapes[1], outer, inner, axis)
        return [()] + [tuple(bottom_shapes[0])] * (len(self.param.top) - 1)

    def forward(self, bottoms):
        x, labels = bottoms
        axis, outer, classes, inner = outer_inner(self, tuple(x.shape), self.axis)
        check_label_count(self, tuple(labels.shape), outer, inner, axis)
        labels, valid = read_labels(self, labels, outer, inner, classes, self.ignore_label)
        log_prob = torch.log_softmax(x.reshape(outer, classes, inner), dim=1)
        picked = log_prob.gather(1, torch.where(valid, labels, 0).unsqueeze(1)).squeeze(1)
        # log(max(p, FLT_MIN)) in value, but Caffe's gradient (p - onehot) even where clamped.
        picked = torch.where(picked < LOG_FLT_MIN, picked - picked.detach() + LOG_FLT_MIN, picked)
        weight = valid.to(x.dtype)
        if self.weights is not None:
            weight = weight * self.weights.to(device=x.device, dtype=x.dtype)[labels.clamp(0, classes - 1)]
        terms = -(picked * weight)
        loss = caffe_cpu_sum(terms) / self._normalizer(valid, outer, inner, x)
        tops = [loss]
        if len(self.param.top) > 1:
            # The probabilities; Caffe's backward never reads this top's diff.
            tops.append(torch.softmax(x, dim=axis).detach())
        return tops

    def _normalizer(self, valid, outer, inner, x):
        """The divisor, at least 1 (Caffe's get_normalizer): VALID counts the non-ignored labels
        (the fork's normalize: true; class weights do not enter it)."""
        if self.normalization == "VALID":
            return valid.sum().clamp(min=1).to(x.dtype)
        return float(max(1, {"FULL": outer * inner, "BATCH_SIZE": outer, "NONE": 1}[self.normalization]))
