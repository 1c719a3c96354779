"""Blob: a named array and its gradient, with pycaffe's writable numpy views over torch storage."""
import numpy as np
import torch

from .errors import CaffeError


class Blob:
    """An N-d array (`data`) with a same-shaped gradient (`diff`), as pycaffe exposes Caffe's Blob.

    The engine keeps torch tensors; `.data` / `.diff` hand out numpy arrays that share memory
    with them on the CPU (float32), so writes are seen by the next forward/backward. Where no
    shared view exists (a GPU tensor, an integer pooling mask), the array is a host mirror that
    is copied back before the engine next reads the blob, as Caffe's SyncedMemory does.
    """

    def __init__(self, shape=(), device="cpu", dtype=torch.float32):
        self._shape = tuple(int(d) for d in shape)
        self._device = torch.device(device)
        self._dtype = dtype
        self._data = None
        self._diff = None
        self._host = {}  # 'data' / 'diff' -> numpy mirror handed out while no zero-copy view exists
        self._viewed = {}  # 'data' / 'diff' -> the CPU tensor whose memory a handed-out view shares

    # ----- engine side -------------------------------------------------------------------------
    def tensor(self):
        """The data as a torch tensor (allocated as zeros on first use)."""
        return self._synced("data")

    def diff_tensor(self):
        """The gradient as a float torch tensor of the blob's shape (zeros on first use)."""
        return self._synced("diff")

    def set_tensor(self, tensor):
        """Make `tensor` the blob's data (a layer's new output); shape follows it.

        A compact engine form that describes itself (a tensor with `caffe_values()`, such as
        Pooling's one-byte mask) is turned into the values Caffe's blob holds, and kept so, the
        first time `.data` is read.
        """
        self._host.pop("data", None)
        self._data = tensor
        self._shape = tuple(tensor.shape)
        self._dtype = tensor.dtype
        self._device = tensor.device
        if self._diff is not None and tuple(self._diff.shape) != self._shape:
            self._diff = None
            self._host.pop("diff", None)

    def set_diff_tensor(self, tensor):
        """Make `tensor` the blob's gradient."""
        self._host.pop("diff", None)
        self._diff = tensor

    def to(self, device):
        """Move data and diff to `device`."""
        device = torch.device(device)
        for which in ("data", "diff"):
            current = self._synced(which) if self._allocated(which) else None
            if current is not None:
                moved = current.detach().to(device)
                if which == "data" and current.requires_grad:
                    moved.requires_grad_(True)
                setattr(self, "_" + which, moved)
        self._device = device

    def _allocated(self, which):
        return getattr(self, "_" + which) is not None or which in self._host

    def _synced(self, which):
        tensor = getattr(self, "_" + which)
        host = self._host.pop(which, None)
        if tensor is None or tuple(tensor.shape) != self._shape:
            dtype = self._dtype if which == "data" else torch.float32
            tensor = torch.zeros(self._shape, dtype=dtype, device=self._device)
            setattr(self, "_" + which, tensor)
        if host is not None:
            # A fresh tensor, not an in-place copy: autograd may have saved the old one.
            fresh = torch.from_numpy(np.ascontiguousarray(host)).reshape(tensor.shape)
            fresh = fresh.to(device=tensor.device, dtype=tensor.dtype)
            if tensor.requires_grad:
                fresh.requires_grad_(True)
            setattr(self, "_" + which, fresh)
            tensor = fresh
        return tensor

    def _numpy(self, which):
        if which == "data" and hasattr(self._data, "caffe_values"):
            self.set_tensor(self._data.caffe_values())
        tensor = self._synced(which)
        if tensor.device.type == "cpu" and tensor.dtype == torch.float32:
            if tensor.grad_fn is not None:  # a layer's output its graph keeps: view a copy
                tensor = tensor.detach().clone()
                setattr(self, "_" + which, tensor)
            self._viewed[which] = tensor.detach()
            return self._viewed[which].numpy()
        mirror = tensor.detach().to("cpu", torch.float32).numpy()
        self._host[which] = mirror
        return mirror

    def graph_input(self):
        """The data as a tensor an autograd graph may keep: a copy where a handed-out numpy view
        shares its memory, which keep_views() writes later."""
        tensor = self.tensor().detach()
        viewed = self._viewed.get("data")
        if viewed is not None and viewed.data_ptr() == tensor.data_ptr():
            return tensor.clone()
        return tensor

    def keep_views(self):
        """Make numpy views handed out earlier see the values the engine has written since
        (pycaffe's blob memory: `d = net.blobs["prob"].data` before forward() holds the new
        probabilities after it). Layers write new tensors, so where a view's memory is no longer
        the blob's, the new values are copied into it and it becomes the blob's memory again.
        A reshape gives new memory, as in pycaffe. The Net calls this after forward / backward;
        views of CUDA blobs are host copies, current when taken."""
        for which, viewed in list(self._viewed.items()):
            current = getattr(self, "_" + which)
            if current is None or current.data_ptr() == viewed.data_ptr():
                continue
            if tuple(current.shape) != tuple(viewed.shape) or current.device.type != "cpu":
                del self._viewed[which]
                continue
            if which == "data" and hasattr(current, "caffe_values"):
                current = current.caffe_values()
            with torch.no_grad():
                viewed.copy_(current)
            setattr(self, "_" + which, viewed)
            if which == "data":
                self._dtype = viewed.dtype

    # ----- pycaffe side ------------------------------------------------------------------------
    @property
    def data(self):
        """The values, a writable float32 numpy array of the blob's shape."""
        return self._numpy("data")

    @data.setter
    def data(self, value):
        self.data[...] = value

    @property
    def diff(self):
        """The gradient, a writable float32 numpy array of the blob's shape."""
        return self._numpy("diff")

    @diff.setter
    def diff(self, value):
        self.diff[...] = value

    @property
    def shape(self):
        return self._shape

    @property
    def count(self):
        return int(np.prod(self._shape, dtype=np.int64))

    def _legacy_dim(self, index):
        # Caffe's LegacyShape: axes beyond the blob's are 1.
        return self._shape[index] if index < len(self._shape) else 1

    @property
    def num(self):
        return self._legacy_dim(0)

    @property
    def channels(self):
        return self._legacy_dim(1)

    @property
    def height(self):
        return self._legacy_dim(2)

    @property
    def width(self):
        return self._legacy_dim(3)

    def reshape(self, *dims):
        """Give the blob a new shape (pycaffe's Blob.reshape); values are reset when it changes."""
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        if any(int(d) < 0 for d in dims):
            raise CaffeError(f"Blob.reshape: negative dimension in {tuple(dims)}")
        shape = tuple(int(d) for d in dims)
        if shape != self._shape:
            self._shape = shape
            self._host.clear()
            self._viewed.clear()
            self._data = None
            self._diff = None
    
    def __repr__(self):
        return f"Blob(shape={self._shape})"
