"""Accuracy: the fraction of positions whose label is among the top-k scores (no backward)."""
import torch

from . import register_layer
from ._common import check_label_count, outer_inner, read_labels
from .base import BaseLayer
from ..logs import get_logger


@register_layer("Accuracy")
class AccuracyLayer(BaseLayer):
    """Top-k classification accuracy, optionally per class (the SegNet fork's second top).

    Parameters: accuracy_param.top_k (1), axis (1), ignore_label.
    Forward: accuracy = #(label in top k) / #non-ignored; top 2 (C,1,1,1): per-class hits / count, 1 for a class absent from the labels. A label that is neither ignore_label nor a class counts as a miss and in no class, as in a release build of the fork (which checks the range only in debug builds), with one warning per layer.
    Backward: none (the tops carry no gradient).
    """

    bottom_count = (2, 2)
    top_count = (1, 2)
    low_precision = False

    def setup(self, bottom_shapes):
        p = self.param.accuracy_param
        self.top_k, self.axis = p.top_k, p.axis
        self.ignore_label = p.ignore_label if p.HasField("ignore_label") else None

    _said_unknown_labels = False

    def _say_unknown_labels(self, values, classes):
        """The one warning for labels that are no class (a void label without ignore_label)."""
        self._said_unknown_labels = True
        shown = sorted(values.unique()[:10].tolist())
        if len(shown) == 1:
            hint = (f"if {shown[0]} is a void label, add accuracy_param "
                    f"{{ ignore_label: {shown[0]} }}")
        else:
            hint = "if one of them, V, is a void label, add accuracy_param { ignore_label: V }"
        get_logger().warning(
            f'layer "{self.name}" (Accuracy): label values {shown} are not classes '
            f"0..{classes - 1} and no ignore_label covers them: they count as misses, as in a "
            f"release build of Caffe (a debug build stops); {hint}")

    def allow_force_backward(self, bottom_index):
        return False  # Caffe's Accuracy has no Backward

    def reshape(self, bottom_shapes):
        # Not forward on meta tensors: the forward reads the labels' values to check them.
        axis, outer, classes, inner = outer_inner(self, bottom_shapes[0], self.axis)
        self._check(bottom_shapes[1], axis, outer, classes, inner)
        return [()] + [(classes, 1, 1, 1)] * (len(self.param.top) - 1)

    def _check(self, label_shape, axis, outer, classes, inner):
        if self.top_k > classes:
            raise self.error(f"top_k {self.top_k} is more than the {classes} classes")
        check_label_count(self, label_shape, outer, inner, axis)

    def forward(self, bottoms):
        with torch.no_grad():
            return self._accuracy(*bottoms)

    def _accuracy(self, scores, labels):
        axis, outer, classes, inner = outer_inner(self, tuple(scores.shape), self.axis)
        self._check(tuple(labels.shape), axis, outer, classes, inner)
        labels, valid = read_labels(self, labels, outer, inner, classes, self.ignore_label,
                                    check=False)
        known = valid & (labels >= 0) & (labels < classes)
        if not self._said_unknown_labels and not bool(known.eq(valid).all()):
            self._say_unknown_labels(labels[valid & ~known], classes)
        scores = scores.reshape(outer, classes, inner)
        truth = scores.gather(1, torch.where(known, labels, 0).unsqueeze(1))
        # The fork partial_sorts (score, class) pairs descending: a tie goes to the higher class.
        index = torch.arange(classes, device=scores.device).view(1, classes, 1)
        ahead = (scores > truth) | ((scores == truth) & (index > labels.unsqueeze(1)))
        hit = (ahead.sum(1) < self.top_k) & known
        dtype = scores.dtype
        tops = [hit.sum().to(dtype) / valid.sum().to(dtype)]
        if len(self.param.top) > 1:
            safe = torch.where(known, labels, 0).reshape(-1)
            count = torch.zeros(classes, dtype=dtype, device=scores.device)
            count.index_add_(0, safe, known.reshape(-1).to(dtype))
            hits = torch.zeros_like(count).index_add_(0, safe, hit.reshape(-1).to(dtype))
            per_class = torch.where(count > 0, hits / count.clamp(min=1), torch.ones_like(count))
            tops.append(per_class.reshape(classes, 1, 1, 1))
        return tops
