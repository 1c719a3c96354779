"""BaseLayer: Caffe's Layer contract (LayerSetUp, Reshape, Forward, Backward) on torch tensors."""
import torch

from .. import engine_options
from ..errors import CaffeError
from ..logs import get_logger


class BaseLayer:
    """One Caffe layer. Subclasses document parameters, forward and backward in one line each.

    Contract, mirroring Caffe's Layer:
    - `setup(bottom_shapes)`: read and check the layer's parameters once, create the learnable
      parameter blobs in `self.blobs` (Caffe's layer blobs, same order and shapes).
    - `reshape(bottom_shapes) -> top_shapes`: the default runs `forward` on meta tensors, so most
      layers only write `forward`.
    - `forward(bottoms) -> tops`: torch tensors in, torch tensors out; a `None` top keeps the
      blob's current tensor (Input). Parameters are read from `self.blobs[i].tensor()`.
    - Backward is autograd over `forward`, run by the Net layer by layer. Where Caffe's gradient
      differs from autograd's, the layer's forward uses a torch.autograd.Function that computes
      Caffe's, and says why.
    """

    type_name = ""
    # (min, max) counts of bottoms and tops; max None means unbounded.
    bottom_count = (1, 1)
    top_count = (1, 1)
    # Loss layers put loss weight 1 on their first top unless the prototxt says otherwise.
    default_loss_weight = 0.0
    # Under EngineOptions.bf16 the forward runs in bfloat16 autocast; False: in float32 (losses, scores).
    low_precision = True
    # Caffe accumulates parameter diffs across backward calls; the SegNet BN layer overwrites them.
    accumulates_param_diffs = True
    # Whether the layer's backward reads its own top. When it does not, a next layer that works
    # in place on that top in the prototxt and has an in_place_activation overwrites it, as
    # Caffe's in-place layers do, instead of writing a new map.
    backward_reads_top = True
    # Whether Caffe's backward reads the bottom blob's data as it finds it then, keeping no copy
    # of its own. A later in-place layer may have overwritten that blob (or this layer itself,
    # run in place): Caffe then differentiates at the overwritten values, and so does the Net,
    # which recomputes such a layer from its bottom blobs in backward.
    backward_reads_bottom_blob = False
    # A data layer: its tops come from files, memory or a generator, not from bottoms (a deploy
    # net replaces the first one with an Input layer; an ONNX export refuses any other).
    reads_data = False

    def __init__(self, param, phase):
        self.param = param
        self.phase = phase
        self.name = param.name
        self.blobs = []
        self.options = engine_options.current()  # a Net builds its layers under its own
        self.said = set()  # keys of the warnings given; a Net shares one set among its layers

    def warn_once(self, key, message):
        """Log `message` as a warning unless a warning with `key` was given before: once per
        net (once per layer for a layer that stands alone)."""
        if key not in self.said:
            self.said.add(key)
            get_logger().warning(message)

    @property
    def type(self):
        return self.type_name

    def error(self, message):
        """A CaffeError naming this layer."""
        return CaffeError(f'layer "{self.name}" ({self.type_name}): {message}')

    # What torch, numpy and arithmetic raise when a layer's parameters or inputs make no sense.
    FAILURES = (ArithmeticError, IndexError, RuntimeError, ValueError)

    def failure(self, error, what, shapes=None):
        """A CaffeError naming this layer for an exception (one of FAILURES, or a CaffeError
        that does not name it) raised while it did `what`, on bottoms of `shapes` if given."""
        if isinstance(error, CaffeError) and str(error).startswith(f'layer "{self.name}"'):
            return error
        on = (f" on bottoms of shape(s) {', '.join(str(tuple(s)) for s in shapes)}"
              if shapes else "")
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        prefix = "" if isinstance(error, CaffeError) else f"cannot {what}{on}: "
        return self.error(prefix + text)

    def check_counts(self):
        """Check the number of bottoms and tops against the layer type's."""
        for what, names, (low, high) in (("bottom", self.param.bottom, self.bottom_count),
                                         ("top", self.param.top, self.top_count)):
            if len(names) < low or (high is not None and len(names) > high):
                expected = str(low) if low == high else (f"at least {low}" if high is None
                                                         else f"{low} to {high}")
                raise self.error(f"takes {expected} {what}(s), got {len(names)}")

    def setup(self, bottom_shapes):
        """Read the parameters and create the learnable blobs (nothing by default)."""

    def reshape(self, bottom_shapes):
        """Top shapes for these bottom shapes, by running forward on meta tensors."""
        with torch.no_grad():
            try:
                bottoms = [torch.empty(shape, device="meta") for shape in bottom_shapes]
                tops = self.forward(bottoms)
            except CaffeError:
                raise
            except self.FAILURES as exc:
                raise self.failure(exc, "take them", bottom_shapes) from exc
        return [None if top is None else tuple(top.shape) for top in tops]

    def forward(self, bottoms):
        raise NotImplementedError

    def channel_affine(self):
        """(a, b), per-channel tensors with top = a[c] * bottom + b[c], when the layer is such an
        affine map of its (N, C, ...) bottom and may be folded into a convolution before it
        (Net.fold_bn); None otherwise."""
        return None

    def in_place_activation(self):
        """A function that computes the layer's top from its bottom over the bottom's memory
        (differentiable: autograd gets the gradient from the top alone), when the layer is
        elementwise; None otherwise. The Net uses it on a convolution's fresh output folded
        with fold_bn, and on a top that the layer before has no further use for."""
        return None

    def forward_over_bottom(self, bottoms):
        """forward, computed over bottom 0's memory by in_place_activation (the Net calls it
        where Net._may_overwrite allows)."""
        return [self.in_place_activation()(bottoms[0])]

    def allow_force_backward(self, bottom_index):
        """Whether force_backward may ask for this bottom's gradient (not for loss labels)."""
        return True

    def state(self):
        """What a resumed run needs besides the parameters (a data cursor, say); None if nothing."""
        return None

    def load_state(self, state):
        """Restore what `state()` returned."""
