"""MemoryData: batches from arrays handed over by pycaffe's Net.set_input_arrays."""
import numpy as np
import torch

from . import register_layer
from .base import BaseLayer
from .. import mode


@register_layer("MemoryData")
class MemoryDataLayer(BaseLayer):
    """Caffe's MemoryDataLayer fed from numpy arrays.

    Parameters: memory_data_param batch_size, channels, height, width (the data top's shape).
    Tops: data (batch_size, channels, height, width) and label (batch_size,).
    Forward: the next batch_size items of the arrays given to `reset` (Net.set_input_arrays),
    cycling through them; their number must be a multiple of batch_size, as in Caffe. Before
    any arrays are set the tops hold zeros (Caffe would read a null pointer). Caffe's
    transform_param applies only to its Datum and cv::Mat inputs, never to these arrays: none
    applies here either.
    Backward: none.
    """

    bottom_count = (0, 0)
    reads_data = True
    top_count = (1, 2)

    def setup(self, bottom_shapes):
        p = self.param.memory_data_param
        self.shape = (p.batch_size, p.channels, p.height, p.width)
        if min(self.shape) <= 0:
            raise self.error(f"memory_data_param gives batch_size, channels, height, width "
                             f"{self.shape}: each must be positive")
        self.data = self.labels = None
        self.position = 0

    def reshape(self, bottom_shapes):
        return [self.shape, (self.shape[0],)][:len(self.param.top)]

    def reset(self, data, labels):
        """Serve batches from `data` (n, channels, height, width) and `labels` (n values)."""
        count = data.shape[0]
        if tuple(data.shape[1:]) != self.shape[1:]:
            raise self.error(f"data of shape {tuple(data.shape)} does not hold items of shape "
                             f"{self.shape[1:]} (memory_data_param channels, height, width)")
        if count != labels.shape[0]:
            raise self.error(f"{count} data items but {labels.shape[0]} labels")
        if count % self.shape[0]:
            raise self.error(f"{count} items is not a multiple of batch_size {self.shape[0]}")
        self.data = torch.from_numpy(np.ascontiguousarray(data, np.float32))
        self.labels = torch.from_numpy(np.ascontiguousarray(labels, np.float32).reshape(count))
        self.position = 0

    def forward(self, bottoms):
        batch = self.shape[0]
        if self.data is None:
            tops = [torch.zeros(self.shape), torch.zeros(batch)]
        else:
            items = slice(self.position, self.position + batch)
            tops = [self.data[items].clone(), self.labels[items].clone()]
            self.position = (self.position + batch) % self.data.shape[0]
        return [top.to(mode.device()) for top in tops[:len(self.param.top)]]
