"""Python: a layer written by the user in Python against pycaffe's `caffe.Layer` interface.

The user's class subclasses `segnet_caffe.Layer` (imported as `caffe.Layer` by pycaffe code) and
reads and writes numpy arrays through `segnet_caffe.Blob` objects, as with pycaffe:

    import segnet_caffe as caffe

    class Double(caffe.Layer):
        def setup(self, bottom, top): pass
        def reshape(self, bottom, top): top[0].reshape(*bottom[0].data.shape)
        def forward(self, bottom, top): top[0].data[...] = 2 * bottom[0].data
        def backward(self, top, propagate_down, bottom): bottom[0].diff[...] = 2 * top[0].diff
"""
import contextlib
import importlib
import os
import sys

import torch

from . import register_layer
from .base import BaseLayer
from .. import mode
from ..blob import Blob


class BlobVec(list):
    """pycaffe's BlobVec: a layer's parameter blobs, with `add_blob(*shape)` to create one."""

    def add_blob(self, *shape):
        """Append a zero-filled Blob of `shape` (ints, as pycaffe's add_blob takes them)."""
        blob = Blob(tuple(int(d) for d in shape))
        blob.tensor()
        self.append(blob)
        return blob


class Layer:
    """pycaffe's `caffe.Layer`: subclass it and override setup, reshape, forward and backward.

    Attributes set before `setup` is called: `param_str` (python_param.param_str), `phase`
    (caffe.TRAIN or caffe.TEST), `name` (the layer's name) and `blobs`, the layer's parameter
    blobs (`self.blobs.add_blob(*shape)` in setup creates one: the net saves, loads, shares and
    updates them like any layer's; the class's backward writes their diffs). `bottom` and `top`
    are lists of `segnet_caffe.Blob` whose `.data` / `.diff` numpy arrays the methods read and
    write; `reshape` calls `top[i].reshape(...)`. An exception the class raises reaches the
    caller as itself, as in pycaffe, with a note naming the layer.
    """

    param_str = ""
    phase = None
    name = ""

    def setup(self, bottom, top):
        """Check parameters and bottoms once (Caffe's LayerSetUp)."""

    def reshape(self, bottom, top):
        """Give each top its shape; called before every forward (Caffe's Reshape)."""

    def forward(self, bottom, top):
        """Write the tops' data from the bottoms' data."""
        raise NotImplementedError(f"{type(self).__name__} does not define forward(bottom, top)")

    def backward(self, top, propagate_down, bottom):
        """Write the diffs of the bottoms whose propagate_down is True from the tops' diffs."""
        raise NotImplementedError(f"{type(self).__name__} does not define "
                                  "backward(top, propagate_down, bottom)")


@contextlib.contextmanager
def _working_directory_on_path():
    """sys.path as it is, plus the working directory, as pycaffe users expect of `module`."""
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def _host(tensor):
    """A CPU float32 copy of `tensor` (the user's code may write into it)."""
    return tensor.detach().to("cpu", torch.float32, copy=True)


class _PythonFunction(torch.autograd.Function):
    """The user's forward and backward, called on numpy blobs, as one autograd node."""

    @staticmethod
    def forward(ctx, layer, *bottoms):
        ctx.layer = layer
        tops = layer.run_forward(bottoms)
        ctx.snapshot = layer.snapshot()
        return tuple(tops)

    @staticmethod
    def backward(ctx, *top_grads):
        ctx.layer.restore(ctx.snapshot)
        return (None,) + tuple(ctx.layer.run_backward(top_grads, ctx.needs_input_grad[1:]))


@register_layer("Python")
class PythonLayer(BaseLayer):
    """A layer implemented by the user's Python class.

    Parameters: python_param.module (imported from sys.path and the working directory), layer (the class, a segnet_caffe.Layer), param_str (handed to the class).
    Forward: the class's reshape(bottom, top) then forward(bottom, top) on numpy blobs.
    Backward: the class's backward(top, propagate_down, bottom).
    """

    bottom_count = (0, None)
    top_count = (0, None)
    # The user's exceptions reach the caller as themselves (pycaffe's behaviour), not as a
    # CaffeError: the Net wraps none of them.
    FAILURES = ()

    def setup(self, bottom_shapes):
        param = self.param.python_param
        if not param.module or not param.layer:
            raise self.error("python_param needs module (a Python module on sys.path or in the "
                             "working directory) and layer (the class name in it)")
        try:
            with _working_directory_on_path():
                module = importlib.import_module(param.module)
        except Exception as exc:
            raise self.error(f'cannot import python_param module "{param.module}" (searched '
                             f"sys.path and the working directory {os.getcwd()}): "
                             f"{type(exc).__name__}: {exc}") from exc
        cls = getattr(module, param.layer, None)
        if cls is None:
            raise self.error(f'module "{param.module}" ({getattr(module, "__file__", "?")}) has no '
                             f'class "{param.layer}"')
        if not (isinstance(cls, type) and issubclass(cls, Layer)):
            raise self.error(f'"{param.module}.{param.layer}" must be a class subclassing '
                             "segnet_caffe.Layer (import segnet_caffe as caffe; class "
                             f"{param.layer}(caffe.Layer): ...)")
        user = self._call(cls, "constructor")
        user.param_str = param.param_str
        user.phase = self.phase
        user.name = self.name
        user.blobs = self.blobs = BlobVec()
        self.user = user
        self.bottom_blobs = [Blob(shape) for shape in bottom_shapes]
        # An in-place top is the bottom's Blob itself, as in Caffe.
        self.top_blobs = []
        for j, name in enumerate(self.param.top):
            in_place = j < len(self.param.bottom) and self.param.bottom[j] == name
            self.top_blobs.append(self.bottom_blobs[j] if in_place else Blob())
        self._call(user.setup, "setup", self.bottom_blobs, self.top_blobs)

    def _call(self, method, what, *args):
        try:
            return method(*args)
        except Exception as exc:
            exc.add_note(f'raised by the {what} of the Python class of layer "{self.name}"')
            raise

    def reshape(self, bottom_shapes):
        for blob, shape in zip(self.bottom_blobs, bottom_shapes):
            blob.reshape(shape)
        self._call(self.user.reshape, "reshape", self.bottom_blobs, self.top_blobs)
        return [blob.shape for blob in self.top_blobs]

    def forward(self, bottoms):
        if not self.param.top:
            self.run_forward(bottoms)
            return []
        return list(_PythonFunction.apply(self, *bottoms))

    def run_forward(self, bottoms):
        """Caffe's Layer::Forward: the user's reshape, then forward; the tops as tensors."""
        for blob, x in zip(self.bottom_blobs, bottoms):
            blob.set_tensor(_host(x))
        self._call(self.user.reshape, "reshape", self.bottom_blobs, self.top_blobs)
        self._call(self.user.forward, "forward", self.bottom_blobs, self.top_blobs)
        reference = next((x for x in bottoms if x.is_floating_point()), None)
        device = reference.device if reference is not None else mode.device()
        dtype = reference.dtype if reference is not None else torch.float32
        self._bottom_kinds = [(x.device, x.dtype) for x in bottoms]
        return [blob.tensor().detach().to(device, dtype, copy=True) for blob in self.top_blobs]

    def snapshot(self):
        """The blobs' data and the tensors' kinds after a forward, for the matching backward."""
        return ([blob.tensor() for blob in self.bottom_blobs],
                [blob.tensor().clone() for blob in self.top_blobs], self._bottom_kinds)

    def restore(self, snapshot):
        """Put back the data of the forward this backward belongs to (another forward may have run
        since: the user's backward reads bottom[i].data and top[i].data)."""
        bottoms, tops, self._bottom_kinds = snapshot
        for blob, data in zip(self.bottom_blobs, bottoms):
            if blob.tensor() is not data:
                blob.set_tensor(data)
        for blob, data in zip(self.top_blobs, tops):
            blob.set_tensor(data.clone())

    def run_backward(self, top_grads, needs):
        """The user's backward on the tops' diffs; the bottoms' diffs as tensors (None where not
        wanted)."""
        for blob, grad in zip(self.top_blobs, top_grads):
            blob.set_diff_tensor(_host(grad) if grad is not None
                                 else torch.zeros(blob.shape, dtype=torch.float32))
        tops = {id(blob) for blob in self.top_blobs}
        for blob in self.bottom_blobs:
            if id(blob) not in tops:  # an in-place bottom's diff holds the top's diff
                blob.set_diff_tensor(torch.zeros(blob.shape, dtype=torch.float32))
        self._call(self.user.backward, "backward", self.top_blobs, list(needs), self.bottom_blobs)
        return [blob.diff_tensor().detach().to(device, dtype, copy=True) if need else None
                for blob, need, (device, dtype) in zip(self.bottom_blobs, needs, self._bottom_kinds)]
