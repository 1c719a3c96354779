"""The parts of pycaffe's Net that are plain Python over forward/backward (pycaffe.py's
additions to the C++ class): batched forward/backward over arrays of any length, the MemoryData
feed and the HDF5 weight files. Net inherits them."""
from itertools import zip_longest

import numpy as np

from . import io
from .errors import CaffeError


class PycaffeNetMethods:
    """Mixed into Net: needs its blobs, inputs, outputs, layers, forward, backward, to_proto and
    copy_from."""

    # pycaffe's underscored views of the C++ net, which client code reads too.
    @property
    def _blob_names(self):
        return list(self.blobs)

    @property
    def _blobs(self):
        return list(self.blobs.values())

    @property
    def _blob_loss_weights(self):
        return [self.blob_loss_weights.get(name, 0.0) for name in self.blobs]

    @property
    def _inputs(self):
        return [self._blob_names.index(name) for name in self.inputs]

    @property
    def _outputs(self):
        return [self._blob_names.index(name) for name in self.outputs]

    def _top_ids(self, index):
        return [self._blob_names.index(name) for name in self.param.layer[index].top]

    def _bottom_ids(self, index):
        return [self._blob_names.index(name) for name in self.param.layer[index].bottom]

    def forward_all(self, blobs=None, **kwargs):
        """Run forward over input arrays of any length, in batches of the net's batch size.

        kwargs map every input blob to an array of n items; returns {output (and `blobs`): array
        of n items}. The last batch is padded with zeros and the padding's outputs dropped.
        """
        outputs = {name: [] for name in dict.fromkeys(self.outputs + list(blobs or []))}
        for batch in self._batch(kwargs):
            for name, values in self.forward(blobs=blobs, **batch).items():
                outputs[name].extend(values.copy())
        return self._unpadded(outputs, kwargs)

    def forward_backward_all(self, blobs=None, diffs=None, **kwargs):
        """forward_all and backward together: kwargs hold input arrays (for forward) and output
        diff arrays (for backward), each of n items; returns ({blob: data}, {blob: diff})."""
        outputs = {name: [] for name in dict.fromkeys(self.outputs + list(blobs or []))}
        input_diffs = {name: [] for name in dict.fromkeys(self.inputs + list(diffs or []))}
        forward_batches = self._batch({k: v for k, v in kwargs.items() if k in self.inputs})
        backward_batches = self._batch({k: v for k, v in kwargs.items() if k in self.outputs})
        for forward_batch, backward_batch in zip_longest(forward_batches, backward_batches,
                                                         fillvalue={}):
            for name, values in self.forward(blobs=blobs, **forward_batch).items():
                outputs[name].extend(values.copy())
            for name, values in self.backward(diffs=diffs, **backward_batch).items():
                input_diffs[name].extend(values.copy())
        return self._unpadded(outputs, kwargs), self._unpadded(input_diffs, kwargs)

    def _batch(self, arrays):
        """Yield {name: batch-sized slice} over arrays of equal length; the last batch of a
        length that is not a multiple of the batch size is padded with zeros."""
        if not arrays:
            return
        count = len(next(iter(arrays.values())))
        batch_size = next(iter(self.blobs.values())).shape[0]
        for start in range(0, count - count % batch_size, batch_size):
            yield {name: values[start:start + batch_size] for name, values in arrays.items()}
        remainder = count % batch_size
        if remainder:
            yield {name: np.concatenate([values[-remainder:], np.zeros(
                (batch_size - remainder,) + tuple(values.shape[1:]), values.dtype)])
                for name, values in arrays.items()}

    @staticmethod
    def _unpadded(collected, kwargs):
        arrays = {name: np.asarray(values) for name, values in collected.items()}
        if not arrays or not kwargs:
            return arrays
        wanted = len(next(iter(kwargs.values())))
        return {name: values[:wanted] for name, values in arrays.items()}

    def set_input_arrays(self, data, labels):
        """Hand arrays to the net's first layer, a MemoryData layer: data (n, C, H, W) float32,
        labels n float32 values (shape (n,) or (n, 1, 1, 1)); n a multiple of its batch size."""
        layer = self.layers[0] if self.layers else None
        if layer is None or layer.type != "MemoryData":
            raise CaffeError("set_input_arrays may only be called if the first layer is a "
                             "MemoryData layer")
        data, labels = np.asarray(data), np.asarray(labels)
        if labels.ndim == 1:
            labels = labels[:, np.newaxis, np.newaxis, np.newaxis]
        for what, array in (("data", data), ("labels", labels)):
            if array.dtype != np.float32 or array.ndim != 4:
                raise CaffeError(f"set_input_arrays: the {what} array must be 4-D float32, got "
                                 f"{array.ndim}-D {array.dtype}")
        if labels.shape[1:] != (1, 1, 1):
            raise CaffeError(f"set_input_arrays: labels of shape {labels.shape} must be (n,) or "
                             "(n, 1, 1, 1)")
        layer.reset(data, labels)

    def save_hdf5(self, filename):
        """Write the parameters in Caffe's HDF5 layout, whatever the file's extension."""
        io.write_caffemodel(str(filename), self.to_proto(), hdf5=True)

    def load_hdf5(self, filename):
        """Copy parameters by layer name from a file in Caffe's HDF5 layout."""
        return self.copy_from(str(filename), hdf5=True)
