"""BatchNorm: BVLC Caffe's batch normalisation (no affine part; Caffe pairs it with Scale)."""
import torch

from . import register_layer
from ._common import learnable_blob, param_like
from .base import BaseLayer
from .. import distributed
from ..proto import caffe_pb2


@register_layer("BatchNorm")
class BatchNormLayer(BaseLayer):
    """Batch normalisation with running statistics (BVLC Caffe).

    Parameters: batch_norm_param.use_global_stats (default: phase TEST), moving_average_fraction (0.999), eps (1e-5).
    Forward: y = (x - mu) / sqrt(var + eps), batch mu/var (biased) over all axes but 1 (in a training net of a --sync_bn job over every process's batch), or mean/s, var/s from the blobs when global.
    Backward: batch stats: dx = (dy - mean(dy) - y * mean(dy * y)) / sqrt(var + eps); global stats: dx = dy / sqrt(var + eps).
    """

    backward_reads_top = False

    def setup(self, bottom_shapes):
        p = self.param.batch_norm_param
        self.use_global_stats = (p.use_global_stats if p.HasField("use_global_stats")
                                 else self.phase == caffe_pb2.TEST)
        self.fraction = p.moving_average_fraction
        self.eps = p.eps
        shape = bottom_shapes[0]
        channels = shape[1] if len(shape) > 1 else 1
        zero = caffe_pb2.FillerParameter(type="constant", value=0.0)
        # Blobs: running mean sum, running variance sum, and their common scale factor.
        self.blobs = [learnable_blob(zero, (channels,)), learnable_blob(zero, (channels,)),
                      learnable_blob(zero, (1,))]
        # Caffe masks the statistics from the solver with lr_mult 0 (and refuses any other).
        for i in range(len(self.blobs)):
            if i == len(self.param.param):
                self.param.param.add().lr_mult = 0.0
            elif self.param.param[i].lr_mult != 0:
                raise self.error(f"param {i} has lr_mult {self.param.param[i].lr_mult}: the "
                                 "statistics are not learnable parameters; use lr_mult: 0 "
                                 "or leave param out")

    def reshape(self, bottom_shapes):
        # Not forward on meta tensors: a batch-statistics forward updates the running averages.
        self._check(bottom_shapes[0])
        return [tuple(bottom_shapes[0])]

    def _check(self, shape):
        channels = self.blobs[0].shape[0]
        if (shape[1] if len(shape) > 1 else 1) != channels:
            raise self.error(f"bottom {tuple(shape)} does not have the {channels} channels "
                             "the layer was set up for")

    def forward(self, bottoms):
        x = bottoms[0]
        self._check(x.shape)
        view = (1, -1) + (1,) * (x.dim() - 2) if x.dim() > 1 else (1,)
        axes = tuple(i for i in range(x.dim()) if i != 1)
        if self.use_global_stats:
            mean, var = (stat.reshape(view) for stat in self._global_stats(x))
        else:
            count = x.numel() // max(1, self.blobs[0].shape[0])
            mean = x.mean(axes, keepdim=True)
            if self.phase == caffe_pb2.TRAIN and distributed.sync_batch_stats():
                mean, mean_sq, count = distributed.global_moments(
                    mean, (x * x).mean(axes, keepdim=True), count)
                var = mean_sq - mean * mean
            else:
                var = ((x - mean) ** 2).mean(axes, keepdim=True)
            self._update_running_stats(mean, var, count)
        return [(x - mean) / (var + self.eps).sqrt()]

    def _global_stats(self, like):
        """The stored mean and variance (sums / scale factor, 0 when the factor is 0) as
        constants: they get no gradient (Caffe computes none)."""
        factor = param_like(self.blobs[2], like).detach()
        factor = torch.where(factor == 0, torch.zeros_like(factor), 1 / factor)
        return (param_like(self.blobs[0], like).detach() * factor,
                param_like(self.blobs[1], like).detach() * factor)

    def channel_affine(self):
        if not self.use_global_stats:
            return None
        mean, var = self._global_stats(self.blobs[0].tensor())
        inverse = (var + self.eps).rsqrt()
        return inverse, -mean * inverse

    def _update_running_stats(self, mean, var, m):
        """mean_sum = maf * mean_sum + mu, var_sum = maf * var_sum + m/(m-1) * var, s = maf * s + 1."""
        correction = m / (m - 1) if m > 1 else 1.0
        with torch.no_grad():
            for blob, value in zip(self.blobs, (mean.detach().reshape(-1),
                                                var.detach().reshape(-1) * correction,
                                                torch.ones(1, device=mean.device))):
                data = blob.tensor()
                data.mul_(self.fraction).add_(value.to(device=data.device, dtype=data.dtype))
