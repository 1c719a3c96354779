"""Batch-normalisation statistics for inference (the SegNet tutorial's compute_bn_statistics).

Run the training net (TEST phase, trained weights) over the training set; average each BN
layer's per-batch mean and biased variance; unbias the variance by m/(m-1) with m the pixels
per channel in a batch (N*H*W, Python 3 arithmetic: the tutorial's Python 2 integer division
made it 1); fold the statistics into the layer so that inference is one affine map:

    BN (SegNet fork):  scale' = scale / sqrt(var + eps),  shift' = shift - scale' * mean,
                       bn_mode: INFERENCE
    BatchNorm (BVLC):  blobs = [mean, var, 1],  use_global_stats: true

The tutorial records every layer in one pass, each under the batch statistics of the layers
before it, which the inference net no longer uses: the later layers' statistics are those of
inputs the inference net does not produce. `sequential=True` records the layers one after the
other instead, each with the layers before it already normalising by their recorded statistics,
as in the inference net (one pass over the same `iterations` batches per layer). On the squares
demo this recovers most of what INFERENCE mode loses against the batch statistics the net
trained with (bench/results/demo_recipes.md).

A net trained on random crops is run on whole images: `whole_images=True` reads the training
images uncropped, so the statistics are of the inputs the inference net sees rather than of
crops (whose borders are a larger share of each map).
"""

import numpy as np
import torch
from tqdm import tqdm

from .errors import CaffeError
from .io import array_to_blobproto, read_net_prototxt
from .layer_types.bn import FORK_EPS
from .layer_types.list_data import ListDataLayer
from .logs import get_logger
from .net import TEST, Net
from .net_graph import remove_splits, without_crops
from .proto import caffe_pb2

NORMALISING_TYPES = ("BN", "BatchNorm")


class _StatisticsRecorder:
    """Adds up the batch statistics of a normalisation layer's bottom, read before the layer
    runs (a net.before_forward callback: BN runs in place)."""

    def __init__(self, net, index):
        self.layer, self.index = net.layers[index], index
        self.bottom = net.blobs[net.param.layer[index].bottom[0]]
        self.trained = [blob.data.astype(np.float64).reshape(-1) for blob in self.layer.blobs]
        self.mean_sum = self.var_sum = None
        self.batches, self.pixels = 0, 0
        self.recording = True
        net.before_forward(self)

    def __call__(self, index):
        if index != self.index or not self.recording:
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

    def inference_blobs(self):
        """The layer's blobs for inference, float32, shaped as its own: BN's folded scale and
        shift (from its trained ones), BatchNorm's [mean, var, 1]."""
        mean, var = self.statistics()
        if self.layer.type == "BN":
            scale, shift = self.trained
            folded_scale = scale / np.sqrt(var + FORK_EPS)
            arrays = [folded_scale, shift - folded_scale * mean]
        else:
            arrays = [mean, var, np.ones(1)]
        return [array.astype(np.float32).reshape(blob.shape)
                for array, blob in zip(arrays, self.layer.blobs)]

    def normalise_by_statistics(self):
        """Stop recording; the live layer normalises by the recorded statistics from now on, as
        in the inference net."""
        self.recording = False
        for blob, array in zip(self.layer.blobs, self.inference_blobs()):
            blob.data[...] = array
        if self.layer.type == "BN":
            self.layer.learn = False
        else:
            self.layer.use_global_stats = True


def data_iterations(net):
    """Batches that cover the first data layer's list once."""
    for layer in net.layers:
        if isinstance(layer, ListDataLayer):
            return layer.epoch_batches
    raise CaffeError("the net has no list data layer (DenseImageData/ImageData): give --iterations")


def _run(net, last, iterations, description, progress):
    """Forward `iterations` batches through layers 0..last."""
    with torch.no_grad():
        for _ in tqdm(range(iterations), desc=description, unit="batch", disable=not progress):
            net.forward_range(0, last)


def compute_bn_statistics(train_prototxt, weights, iterations=None, progress=True,
                          sequential=False, whole_images=False):
    """The training net's NetParameter with BN folded for inference, and that net's weights;
    `sequential`: record the layers one after the other, `whole_images`: with the data
    layers' crops off (module docstring).

    Returns (inference NetParameter without blobs, weights NetParameter with blobs).
    """
    log = get_logger()
    model = read_net_prototxt(train_prototxt)
    if whole_images:
        model = without_crops(model)
    net = Net(model, TEST, weights=weights, source=train_prototxt)
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
    if sequential:
        start = [layer.state() for layer in net.layers]  # each pass reads the same batches
        for recorder in recorders:
            for layer, state in zip(net.layers, start):
                layer.load_state(state)
            _run(net, recorder.index, iterations, f"BN statistics of {recorder.layer.name}",
                 progress)
            recorder.normalise_by_statistics()
    else:
        _run(net, len(net.layers) - 1, iterations, "BN statistics", progress)
    weights_param = net.to_proto()
    inference = net.to_proto()
    by_name = {layer.name: layer for layer in weights_param.layer}
    for recorder in recorders:
        target = by_name[recorder.layer.name]
        del target.blobs[:]
        for array in recorder.inference_blobs():
            target.blobs.add().CopyFrom(array_to_blobproto(array))
        log.info(f"{recorder.layer.name}: statistics of {recorder.batches} batches folded in")
    inference = remove_splits(inference)
    for layer in inference.layer:
        del layer.blobs[:]
        layer.ClearField("phase")
        if layer.type == "BN":
            layer.bn_param.bn_mode = caffe_pb2.BNParameter.INFERENCE
        elif layer.type == "BatchNorm":
            layer.batch_norm_param.use_global_stats = True
    return inference, weights_param
