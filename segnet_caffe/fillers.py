"""Caffe's weight fillers (FillerParameter), drawn on the CPU from torch's seeded generator."""
import math

import torch

from .errors import CaffeError


def _fan(shape, variance_norm):
    """Caffe's fan for xavier/msra: fan_in = count/shape[0], fan_out = count/shape[1]."""
    count = math.prod(shape)
    if not count:
        raise CaffeError(f"xavier/msra filler: the parameter of shape {shape} is empty")
    fan_in = count // shape[0]
    fan_out = count // shape[1] if len(shape) > 1 else count
    if variance_norm == "FAN_OUT":
        return fan_out
    if variance_norm == "AVERAGE":
        return (fan_in + fan_out) / 2.0
    return fan_in


def fill(filler_param, shape):
    """A float32 CPU tensor of `shape` filled as Caffe's `filler_param` says."""
    from .proto import caffe_pb2

    shape = tuple(int(d) for d in shape)
    kind = filler_param.type
    norm = caffe_pb2.FillerParameter.VarianceNorm.Name(filler_param.variance_norm)
    if kind == "constant":
        return torch.full(shape, filler_param.value, dtype=torch.float32)
    if kind == "uniform":
        return torch.empty(shape).uniform_(filler_param.min, filler_param.max)
    if kind == "gaussian":
        values = torch.empty(shape).normal_(filler_param.mean, filler_param.std)
        if filler_param.sparse >= 0:
            # Caffe keeps each weight with probability sparse / num_outputs (shape[0]).
            keep = torch.bernoulli(torch.full(shape, filler_param.sparse / shape[0]))
            values *= keep
        return values
    if kind == "positive_unitball":
        values = torch.rand(shape)
        rows = values.reshape(shape[0], -1)
        rows /= rows.sum(dim=1, keepdim=True)
        return values
    if kind == "xavier":
        scale = math.sqrt(3.0 / _fan(shape, norm))
        return torch.empty(shape).uniform_(-scale, scale)
    if kind == "msra":
        return torch.empty(shape).normal_(0.0, math.sqrt(2.0 / _fan(shape, norm)))
    if kind == "bilinear":
        if len(shape) != 4 or shape[2] != shape[3]:
            raise CaffeError(f"bilinear filler needs a 4-D blob with square kernels, got {shape}")
        f = math.ceil(shape[3] / 2.0)
        c = (shape[3] - 1) / (2.0 * f)
        y = torch.arange(shape[2], dtype=torch.float64).view(-1, 1)
        x = torch.arange(shape[3], dtype=torch.float64).view(1, -1)
        kernel = (1 - (x / f - c).abs()) * (1 - (y / f - c).abs())
        return kernel.to(torch.float32).expand(shape).clone()
    raise CaffeError(f'unknown filler type "{kind}"; known: constant, uniform, gaussian, '
                     "positive_unitball, xavier, msra, bilinear")
