"""Upsample: the SegNet fork's max-unpooling, placing each value where its pooling mask points."""
import torch

from . import register_layer
from ._pool_mask import Unpool, WindowOffsets
from .base import BaseLayer
from ..logs import get_logger


@register_layer("Upsample")
class UpsampleLayer(BaseLayer):
    """Max-unpooling with the mask of a MAX Pooling layer (SegNet fork).

    Parameters: upsample_param.upsample_h + upsample_w, or scale (2) | scale_h + scale_w with pad_out_h / pad_out_w (false, scale 2 only); bottoms: data, mask (flat indices into each output plane, float or integer).
    Forward: out = upsample_h x upsample_w when given, else (H*scale_h - pad_out_h) x (W*scale_w - pad_out_w); top = 0 except top[n, c].flat[mask[n, c, i]] = bottom[n, c, i].
    Backward: dbottom[n, c, i] = dtop[n, c].flat[mask[n, c, i]]; the mask gets no gradient.
    """

    backward_reads_top = False

    bottom_count = (2, 2)

    def setup(self, bottom_shapes):
        p = self.param.upsample_param
        if p.HasField("upsample_h") != p.HasField("upsample_w"):
            # The fork reads the size only when both are set; otherwise it uses scale.
            get_logger().warning(f'layer "{self.name}" (Upsample): upsample_h and upsample_w are '
                                 "used only together; one alone is ignored (the scale applies), "
                                 "as in the fork: give both")
        if p.HasField("upsample_h") and p.HasField("upsample_w"):
            if p.upsample_h <= 1 or p.upsample_w <= 1:
                raise self.error(f"upsample_h and upsample_w must be > 1, got "
                                 f"{p.upsample_h} x {p.upsample_w}")
            self.size = (p.upsample_h, p.upsample_w)
            return
        self.size = None
        if p.HasField("scale_h") or p.HasField("scale_w"):
            if p.HasField("scale") or not (p.HasField("scale_h") and p.HasField("scale_w")):
                raise self.error("give upsample_h and upsample_w, or scale, or both scale_h and "
                                 "scale_w (not scale with scale_h/scale_w)")
            self.scale = (p.scale_h, p.scale_w)
        else:
            self.scale = (p.scale, p.scale)
        if min(self.scale) <= 1:
            raise self.error(f"scale must be > 1, got {self.scale[0]} x {self.scale[1]}")
        self.pad_out = (int(p.pad_out_h), int(p.pad_out_w))
        for axis, pad, scale in zip("hw", self.pad_out, self.scale):
            if pad and scale != 2:
                raise self.error(f"pad_out_{axis} needs scale_{axis} == 2 (the output size is "
                                 f"ill-defined otherwise); use upsample_h / upsample_w")

    def reshape(self, bottom_shapes):
        return [self.top_shape(bottom_shapes[0], bottom_shapes[1])]

    def top_shape(self, shape, mask_shape):
        if len(shape) != 4 or tuple(mask_shape) != tuple(shape):
            raise self.error(f"needs a 4-axis data bottom (N, C, H, W) and a mask of the same "
                             f"shape, got {tuple(shape)} and {tuple(mask_shape)}")
        if self.size is not None:
            return tuple(shape[:2]) + self.size
        return tuple(shape[:2]) + tuple(int(n) * s - pd for n, s, pd
                                        in zip(shape[2:], self.scale, self.pad_out))

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def forward(self, bottoms):
        x, mask = bottoms
        shape = self.top_shape(x.shape, mask.shape)
        n, c, h, w = shape
        if isinstance(mask, WindowOffsets):  # Pooling's compact mask: offsets in tiling windows
            if mask.input_size == (h, w):
                return [Unpool.apply(x, mask, mask.kernel, mask.input_size)]
            mask = mask.caffe_values()  # the map sizes differ: Caffe's indices
        # A fresh int64 copy (float masks truncate, as Caffe's static_cast<int>): the blob's
        # tensor may be written in place before backward, the index saved for it must not be.
        index = mask.detach().reshape(n, c, -1).to(torch.int64, copy=True)
        if index.numel() and index.device.type != "meta":
            self._check_mask(index, x.shape, h, w)
        top = x.new_zeros((n, c, h * w)).scatter(2, index, x.reshape(n, c, -1))
        return [top.reshape(shape)]

    def _check_mask(self, index, shape, h, w):
        low, high = (int(v) for v in torch.stack(torch.aminmax(index)).tolist())
        if low < 0 or high >= h * w:
            raise self.error(f"mask index {high if high >= h * w else low} is outside the "
                             f"{h} x {w} output plane (Caffe would write out of bounds): the "
                             f"mask must come from a pooling of an {h} x {w} map; set "
                             f"upsample_h / upsample_w to that map's size")
        # The last pooling window of an h x w map covers its bottom-right block of about
        # (h / H) x (w / W): if no mask index reaches that block, the mask almost surely came
        # from a smaller map (e.g. a 7x9 map pooled to 4x5, unpooled to 8x10), and values land
        # at shifted positions. Caffe does not complain; we reproduce it and warn once.
        block_h, block_w = -(-h // int(shape[2])), -(-w // int(shape[3]))
        if high < (h - block_h) * w + (w - block_w):
            self.warn_once(
                ("mask size", self.name), f'Upsample layer "{self.name}": output {h}x{w} does not seem to be the size of '
                f"the map the mask came from (largest mask index {high}); values land at shifted "
                f"positions, as in Caffe. Set upsample_h / upsample_w to the pooled layer's "
                f"input size")
