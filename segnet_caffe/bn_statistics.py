"""Batch-normalisation statistics for inference (the SegNet tutorial's compute_bn_statistics).

Run the training net (TEST phase, trained weights) over the training set; average each BN
layer's per-batch mean and biased variance; unbias the variance by m/(m-1) with m the pixels
per channel in a batch (N*H*W, Python 3 arithmetic: the tutorial's Python 2 integer division
made it 1); fold the statistics into the layer so that inference is one affine map:

    BN (SegNet fork):  scale' = scale / sqrt(var + eps),  shift' = shift - scale' * mean,
                       bn_mode: INFERENCE
    BatchNorm (BVLC):  blobs = [mean, var, 1],  use_global_stats: true
"""

import numpy as np
import torch
from tqdm import tqdm

from .errors import CaffeError
from .io import array_to_blobproto
from .layer_types.bn import FORK_EPS
from .layer_types.list_data import ListDataLayer
from .logs import get_logger
from .net import TEST, Net
from .net_graph import remove_splits
from .proto import caffe_pb2

NORMALISING_TYPES = ("BN", "BatchNorm")


class _StatisticsRecorder:
    """Adds up the batch statistics of a normalisation layer's bottom, read before the layer
    runs (a net.before_forward callback: BN runs in place)."""

    def __init__(self, net, index):
        self.layer, self.index = net.layers[index], index
        self.bottom = net.blobs[net.param.layer[index].bottom[0]]
        self.mean_sum = self.var_sum = None
        self.batches, self.pixels = 0, 0
        net.before_forward(self)

    def __call__(self, index):
        if index != self.index:
            return
        x = self.bottom.tensor().detach().double()
        axes = (0,) + tuple(range(2, x.dim()))
        mean = x.mean(axes)
        var = (x * x).mean(axes) - mean * mean
        self.mean_sum = mean if self.mean_sum is None else self.mean_sum + mean
        self.var_sum = var if self.var_sum is None else self.var_sum + var
        self.batches += 1
        self.pixels = x.numel() // x.shape[1]

    def statistics(self):
        """Averaged mean and the unbiased averaged variance, as float64 numpy arrays."""
        m = self.pixels
        mean = (self.mean_sum / self.batches).cpu().numpy()
        var = (self.var_sum / self.batches).cpu().numpy() * (m / (m - 1) if m > 1 else 1.0)
        return mean, var


def data_iterations(net):
    """Batches that cover the first data layer's list once."""
    for layer in net.layers:
        if isinstance(layer, ListDataLayer):
            return layer.epoch_batches
    raise CaffeError("the net has no list data layer (DenseImageData/ImageData): give --iterations")


def compute_bn_statistics(train_prototxt, weights, iterations=None, progress=True):
    """The training net's NetParameter with BN folded for inference, and that net's weights.

    Returns (inference NetParameter without blobs, weights NetParameter with blobs).
    """
    log = get_logger()
    net = Net(train_prototxt, TEST, weights=weights)
    recorders = [_StatisticsRecorder(net, index) for index, layer in enumerate(net.layers)
                 if layer.type in NORMALISING_TYPES]
    if not recorders:
        raise CaffeError(f"{train_prototxt}: no BN or BatchNorm layer: nothing to compute")
    for layer in net.layers:
        if isinstance(layer, ListDataLayer) and layer.order.batch_size == 1:
            log.warning("the training net's batch size is 1: its BN layers learned to normalise "
                        "each image by its own statistics, which averaged statistics cannot "
                        "reproduce in INFERENCE mode (train with a batch of several images)")
    iterations = iterations or data_iterations(net)
    with torch.no_grad():
        for _ in tqdm(range(iterations), desc="BN statistics", unit="batch", disable=not progress):
            net.forward_range(0, len(net.layers) - 1)
    weights_param = net.to_proto()
    inference = net.to_proto()
    by_name = {layer.name: layer for layer in weights_param.layer}
    for recorder in recorders:
        layer = recorder.layer
        mean, var = recorder.statistics()
        target = by_name[layer.name]
        del target.blobs[:]
        if layer.type == "BN":
            scale = layer.blobs[0].data.astype(np.float64).reshape(-1)
            shift = layer.blobs[1].data.astype(np.float64).reshape(-1)
            folded_scale = scale / np.sqrt(var + FORK_EPS)
            folded_shift = shift - folded_scale * mean
            shape = layer.blobs[0].shape
            blobs = [folded_scale.reshape(shape), folded_shift.reshape(shape)]
        else:
            blobs = [mean, var, np.ones(1)]
        for array in blobs:
            target.blobs.add().CopyFrom(array_to_blobproto(array.astype(np.float32)))
        log.info(f"{layer.name}: statistics of {recorder.batches} batches folded in")
    inference = remove_splits(inference)
    for layer in inference.layer:
        del layer.blobs[:]
        layer.ClearField("phase")
        if layer.type == "BN":
            layer.bn_param.bn_mode = caffe_pb2.BNParameter.INFERENCE
        elif layer.type == "BatchNorm":
            layer.batch_norm_param.use_global_stats = True
    return inference, weights_param
