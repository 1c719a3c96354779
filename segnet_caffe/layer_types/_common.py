"""Helpers shared by several layers: Caffe's axis rules, learnable blobs, integer labels."""
import math

import torch

from ..blob import Blob
from ..errors import BadLabelsError
from ..fillers import fill


def canonical_axis(layer, axis, num_axes):
    """Caffe's CanonicalAxisIndex: `axis` in [-num_axes, num_axes), negative counting from the end."""
    if not -num_axes <= axis < num_axes:
        raise layer.error(f"axis {axis} is out of range for a {num_axes}-axis bottom "
                          f"(use -{num_axes} to {num_axes - 1})")
    return axis % num_axes if num_axes else 0


def learnable_blob(filler_param, shape):
    """A parameter Blob of `shape` filled by `filler_param`, whose tensor autograd can differentiate."""
    blob = Blob(shape)
    blob.set_tensor(fill(filler_param, shape).requires_grad_(True))
    return blob


def param_like(blob, x):
    """The blob's data on `x`'s device and in `x`'s dtype (a view when they already agree)."""
    return blob.tensor().to(device=x.device, dtype=x.dtype)


# ----- Scale / Bias: one operand broadcast over a run of the bottom's axes -----------------------
def operand_shape(layer, bottom_shape, axis, num_axes):
    """The shape of a learned Scale/Bias operand: bottom_shape[axis : axis + num_axes], where
    num_axes -1 means "to the end" (Caffe's ScaleLayer / BiasLayer LayerSetUp)."""
    if num_axes < -1:
        raise layer.error(f"num_axes must be >= 0, or -1 for all axes from axis on; got {num_axes}")
    start = canonical_axis(layer, axis, len(bottom_shape))
    end = len(bottom_shape) if num_axes == -1 else start + num_axes
    if end > len(bottom_shape):
        raise layer.error(f"the parameter's {num_axes} axes starting at axis {start} extend past "
                          f"the bottom's shape {tuple(bottom_shape)}")
    return tuple(bottom_shape[start:end])


def broadcast_operand(layer, x, operand, axis):
    """`operand` viewed so that it broadcasts against `x` over axes [axis, axis + operand.ndim),
    after Caffe's checks (Reshape): a 0-axis operand (a scalar) applies at axis 0."""
    start = 0 if operand.dim() == 0 else canonical_axis(layer, axis, x.dim())
    span = tuple(x.shape[start:start + operand.dim()])
    if start + operand.dim() > x.dim() or span != tuple(operand.shape):
        raise layer.error(f"operand of shape {tuple(operand.shape)} does not match the bottom's "
                          f"shape {tuple(x.shape)} from axis {start} on")
    trailing = x.dim() - start - operand.dim()
    return operand.reshape(tuple(operand.shape) + (1,) * trailing)


# ----- labels: SoftmaxWithLoss and Accuracy ------------------------------------------------------
def outer_inner(layer, shape, axis):
    """(axis, outer count, class count, inner count) of a prediction blob along its class axis."""
    axis = canonical_axis(layer, axis, len(shape))
    return axis, math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])


def check_label_count(layer, label_shape, outer, inner, axis):
    """Caffe's check: one label per prediction (N*H*W labels for an (N, C, H, W) prediction)."""
    if math.prod(label_shape) != outer * inner:
        raise layer.error(f"the label blob {tuple(label_shape)} holds {math.prod(label_shape)} "
                          f"labels but the predictions need {outer * inner} (one per position "
                          f"along every axis but the class axis {axis})")


def read_labels(layer, labels, outer, inner, num_classes, ignore_label, check=True):
    """Labels as (outer, inner) int64 (truncated as Caffe's static_cast<int>) and the mask of the
    positions that count. With `check`, a label that is neither `ignore_label` nor a class
    raises a CaffeError (Caffe would read out of bounds)."""
    batch = labels.shape[0] if labels.dim() else 1
    labels = labels.detach().reshape(outer, inner)
    labels = labels.to(torch.int64) if labels.is_floating_point() else labels.long()
    valid = torch.ones_like(labels, dtype=torch.bool) if ignore_label is None else labels != ignore_label
    if check and labels.numel():
        bad = valid & ((labels < 0) | (labels >= num_classes))
        if bool(bad.any()):
            values = sorted(set(labels[bad].unique()[:10].tolist()))
            ignore = "" if ignore_label is None else f" nor the ignore_label {ignore_label}"
            rows_per_item = max(1, outer // batch)
            items = {}
            for row in bad.any(1).nonzero().reshape(-1).tolist():
                found = labels[row][bad[row]].unique()[:10].tolist()
                items.setdefault(row // rows_per_item, set()).update(found)
            raise BadLabelsError(
                f'layer "{layer.name}" ({layer.type_name}): label values {values} are neither '
                f"classes 0..{num_classes - 1}{ignore}; fix the labels or set ignore_label",
                bottom_index=1, items={n: sorted(v) for n, v in items.items()})
    return labels, valid
