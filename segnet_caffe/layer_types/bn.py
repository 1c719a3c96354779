"""BN: the SegNet fork's batch normalisation, affine included, with no running statistics."""
import torch
import torch.nn.functional as F

from . import register_layer
from ._common import learnable_blob, param_like
from .base import BaseLayer
from .. import distributed
from ..proto import caffe_pb2

FORK_EPS = 1e-9  # the fork's var_eps_, hard-coded in BNLayer::LayerSetUp


@register_layer("BN")
class BNLayer(BaseLayer):
    """Batch normalisation of the SegNet fork.

    Parameters: bn_param.bn_mode (LEARN | INFERENCE), bn_param.scale_filler / shift_filler (constant 0); blobs: scale, shift, each 1xCx1x1.
    Forward: LEARN (TRAIN and TEST alike): y = scale * (x - mu) / sqrt(var + 1e-9) + shift, mu = E[x], var = E[x^2] - E[x]^2 over (N, H, W) (in a training net of a --sync_bn job over every process's batch), optional tops mu, var; INFERENCE: y = scale * x + shift.
    Backward: LEARN: dx = scale / sqrt(var + eps) * (dy - mean(dy) - x_norm * mean(dy * x_norm)), dscale = sum(dy * x_norm), dshift = sum(dy); INFERENCE: dx = scale * dy, dscale = sum(dy * x) with x read from the bottom blob in backward (the fork keeps no copy: run in place, as SegNet's nets run BN, x is the overwritten top y, or what a later in-place ReLU left there); the diffs of the mu/var tops are ignored and parameter diffs are overwritten, not accumulated.
    """

    backward_reads_top = False

    top_count = (1, 3)
    # BNLayer::Backward_cpu writes scale_diff / shift_diff with beta 0: each backward overwrites.
    accumulates_param_diffs = False

    @property
    def backward_reads_bottom_blob(self):
        """LEARN's backward reads only its own saved x_norm; INFERENCE's reads the bottom blob."""
        return not self.learn

    def setup(self, bottom_shapes):
        shape = bottom_shapes[0]
        if not 2 <= len(shape) <= 4:
            raise self.error(f"needs a bottom of 2 to 4 axes (N, C[, H, W]), got {tuple(shape)}")
        p = self.param.bn_param
        self.learn = p.bn_mode == caffe_pb2.BNParameter.LEARN
        fields = p.DESCRIPTOR.fields_by_name
        self.eps = p.eps if "eps" in fields and p.HasField("eps") else FORK_EPS
        if not p.HasField("scale_filler"):
            self.warn_once("BN scale_filler", f'BN layer "{self.name}" has no scale_filler: the '
                           "fork starts scale at 0 (the default constant filler), so the layer "
                           "outputs only its shift; give scale_filler { type: \"constant\" "
                           "value: 1 }")
        channels = (1, shape[1], 1, 1)
        self.blobs = [learnable_blob(p.scale_filler, channels),
                      learnable_blob(p.shift_filler, channels)]

    def forward(self, bottoms):
        x = bottoms[0]
        channels = self.blobs[0].shape[1]
        if not 2 <= x.dim() <= 4 or x.shape[1] != channels:
            raise self.error(f"bottom {tuple(x.shape)} does not have the {channels} channels "
                             "the layer was set up for")
        view = (1, channels) + (1,) * (x.dim() - 2)
        scale = param_like(self.blobs[0], x).reshape(view)
        shift = param_like(self.blobs[1], x).reshape(view)
        if not self.learn:
            # The fork leaves the optional mean/variance tops unwritten (zeros) in INFERENCE mode.
            stats = [x.new_zeros((1, channels, 1, 1)) for _ in self.param.top[1:]]
            return [torch.addcmul(shift, x, scale)] + stats
        synchronised = self.phase == caffe_pb2.TRAIN and distributed.sync_batch_stats()
        if self.options.caffe_accumulation or synchronised or x.numel() == channels:
            # The fork's own formulas: for Caffe's arithmetic order (EngineOptions.caffe_accumulation),
            # for statistics over every process's batch (--sync_bn), and for one value per
            # channel (the fork outputs exactly the shift; PyTorch's kernel, dividing rounding
            # noise by sqrt(1e-9), does not).
            y, mean, var = self._fork_order(x, scale, shift, synchronised)
        else:
            # The fork's statistics are the batch mean and biased variance over (N, H, W), so
            # batch-norm kernels compute its forward and backward (the formulas above) in a few
            # passes, equal up to float rounding.
            y = _batch_norm(x, scale.reshape(-1), shift.reshape(-1), self.eps)
            mean = var = None
        tops = [y]
        if len(self.param.top) > 1:
            # Batch statistics as (1, C, 1, 1) blobs; BN's backward ignores their diffs.
            if mean is None:
                with torch.no_grad():
                    var, mean = torch.var_mean(x, dim=(0,) + tuple(range(2, x.dim())),
                                               correction=0, keepdim=True)
            for stat in (mean, var)[:len(self.param.top) - 1]:
                tops.append(stat.detach().reshape(1, channels, 1, 1))
        return tops

    def channel_affine(self):
        if self.learn or len(self.param.top) > 1:
            return None
        return self.blobs[0].tensor().reshape(-1), self.blobs[1].tensor().reshape(-1)

    def _fork_order(self, x, scale, shift, synchronised):
        """(top, mean, var) by the fork's own arithmetic: spatial means first, then the batch
        mean; var = E[x^2] - E[x]^2, over all processes' batches when `synchronised`. A conv
        bias under BN has a gradient that is pure rounding noise, and this order keeps it as
        small as Caffe's."""
        spatial = tuple(range(2, x.dim()))
        mean = (x.mean(spatial, keepdim=True) if spatial else x).mean(0, keepdim=True)
        square = x * x
        mean_sq = (square.mean(spatial, keepdim=True) if spatial else square).mean(0, keepdim=True)
        if synchronised:
            mean, mean_sq, _ = distributed.global_moments(mean, mean_sq, x.numel() // x.shape[1])
        var = mean_sq - mean * mean
        return (x - mean) / (var + self.eps).sqrt() * scale + shift, mean, var


def _batch_norm(x, scale, shift, eps):
    """Training-mode batch normalisation over (N, H, W): PyTorch's fused kernel, except for a
    channels-last map, whose CPU kernels sum in an order that loses accuracy (measured: 100x
    the NCHW kernel's error in the statistics, 8e-4 relative in the scale gradient)."""
    if x.device.type == "cpu" and _channels_last(x):
        return _ChannelsLastBatchNorm.apply(x, scale, shift, eps)
    return F.batch_norm(x, None, None, scale, shift, True, 0.0, eps)


def _channels_last(x):
    return (x.dim() == 4 and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last))


class _ChannelsLastBatchNorm(torch.autograd.Function):
    """Batch normalisation of a channels-last map with per-channel sums over (N, H, W) as
    accurate as the NCHW kernel's (torch.sum keeps them so in either layout): the centred map
    is formed once and serves the variance, the output and the backward."""

    @staticmethod
    def forward(ctx, x, scale, shift, eps):
        dims, count = (0, 2, 3), x.numel() // x.shape[1]
        centred = x - x.sum(dims, keepdim=True) / count
        inverse_std = ((centred * centred).sum(dims, keepdim=True) / count + eps).rsqrt()
        gain = scale.view(1, -1, 1, 1) * inverse_std
        ctx.save_for_backward(centred, inverse_std, gain)
        return torch.addcmul(shift.view(1, -1, 1, 1), centred, gain)

    @staticmethod
    def backward(ctx, dy):
        centred, inverse_std, gain = ctx.saved_tensors
        dims, count = (0, 2, 3), dy.numel() // dy.shape[1]
        sum_dy = dy.sum(dims, keepdim=True)
        sum_dy_centred = (dy * centred).sum(dims, keepdim=True)
        dscale = (sum_dy_centred * inverse_std).reshape(-1)
        # dx = gain * (dy - mean(dy) - x_norm * mean(dy * x_norm)), x_norm = centred * inverse_std
        dx = torch.addcmul(-(sum_dy / count) * gain, centred,
                           -(sum_dy_centred * inverse_std * inverse_std / count) * gain)
        dx.addcmul_(dy, gain)
        return dx, dscale, sum_dy.reshape(-1), None
