"""The benchmarked nets: the generated prototxt/ files with their data layer replaced by an Input,
so the compute figures need no dataset (the data pipeline is measured on its own, reading whole
images: the squares demo's random training crops are off)."""
from pathlib import Path

import torch

from segnet_caffe import io
from segnet_caffe.errors import CaffeError
from segnet_caffe.net_graph import without_crops
from segnet_caffe.proto import caffe_pb2

REPO = Path(__file__).resolve().parents[1]
PROTOTXT_DIR = REPO / "prototxt"

# The input size each generated net was made for (its Upsample sizes follow from it).
NATIVE_SIZES = {"segnet_squares": (512, 512), "segnet_basic": (360, 480), "segnet": (360, 480)}


def prototxt(net_name, kind):
    """Path of the generated file: kind is "train", "inference" or "solver"."""
    return PROTOTXT_DIR / f"{net_name}_{kind}.prototxt"


def _input_layer(data_layer, batch, size):
    """An Input layer with the data layer's tops: data (batch, 3, H, W), label (batch, 1, H, W)."""
    layer = caffe_pb2.LayerParameter(name=data_layer.name, type="Input")
    layer.top.extend(data_layer.top)
    for top, channels in zip(data_layer.top, (3, 1)):
        layer.input_param.shape.add().dim.extend([batch, channels, *size])
    return layer


def _resized_upsamples(param, size, net_name):
    """Upsample layers switched to scale 2 for a size other than the native one; only sizes that
    every pooling halves exactly qualify (otherwise the generated upsample_h/w are needed)."""
    poolings = sum(layer.type == "Pooling" for layer in param.layer)
    if any(side % 2 ** poolings for side in size):
        raise CaffeError(f"{net_name}: benchmark size {size[0]}x{size[1]} must be divisible by "
                         f"{2 ** poolings} ({poolings} poolings), or be the native "
                         f"{NATIVE_SIZES[net_name]}")
    for layer in param.layer:
        if layer.type == "Upsample":
            layer.upsample_param.ClearField("upsample_h")
            layer.upsample_param.ClearField("upsample_w")
            layer.upsample_param.scale = 2


def _data_index(param):
    return next(i for i, layer in enumerate(param.layer) if layer.type == "DenseImageData")


def _read_data_from(layer, list_file, root_folder, batch):
    """Point a DenseImageData layer at another list file (no shuffling: a fixed cost per batch)."""
    data = layer.dense_image_data_param
    data.source, data.root_folder, data.batch_size, data.shuffle = (str(list_file),
                                                                    str(root_folder), batch, False)


def net_param(net_name, kind, batch, size=None, data=None):
    """The train or inference NetParameter of `net_name` at (batch, size), fed by an Input, or
    with `data=(list file, root folder)` by its DenseImageData reading that list."""
    size = tuple(size or NATIVE_SIZES[net_name])
    param = without_crops(io.read_net_prototxt(str(prototxt(net_name, kind))))
    data_index = _data_index(param)
    if data is not None:
        _read_data_from(param.layer[data_index], *data, batch)
    else:
        param.layer[data_index].CopyFrom(_input_layer(param.layer[data_index], batch, size))
        if kind == "inference":  # the label top feeds nothing in an inference net
            del param.layer[data_index].top[1:]
            del param.layer[data_index].input_param.shape[1:]
    if size != NATIVE_SIZES[net_name]:
        _resized_upsamples(param, size, net_name)
    return param


def data_layer_net(net_name, list_file, root_folder, batch):
    """A net of `net_name`'s training DenseImageData layer alone, reading `list_file`'s whole
    images."""
    param = without_crops(io.read_net_prototxt(str(prototxt(net_name, "train"))))
    layer = param.layer[_data_index(param)]
    _read_data_from(layer, list_file, root_folder, batch)
    alone = caffe_pb2.NetParameter(name=f"{net_name}_data")
    alone.layer.add().CopyFrom(layer)
    return alone


def prototxt_batch(net_name):
    """The batch size the training prototxt's data layer asks for."""
    param = io.read_net_prototxt(str(prototxt(net_name, "train")))
    return next(layer.dense_image_data_param.batch_size for layer in param.layer
                if layer.type == "DenseImageData")


def solver_param(net_name, train_param):
    """The net's generated solver settings, training `train_param`, with display, snapshots and
    test nets off (the benchmark times iterations, not logging or disk)."""
    param = io.read_solver_prototxt(str(prototxt(net_name, "solver")))
    param.ClearField("net")
    param.net_param.CopyFrom(train_param)
    param.display = 0
    param.snapshot = 0
    param.snapshot_after_train = False
    del param.test_iter[:]
    param.test_interval = 0
    return param


def inputs(net_name, batch, size=None, seed=0):
    """Seeded image batch (0..255, as DenseImageData delivers) and labels (void included)."""
    from .eager import ARCHITECTURES

    size = tuple(size or NATIVE_SIZES[net_name])
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand((batch, 3, *size), generator=generator) * 255
    arch = ARCHITECTURES[net_name]
    top_label = arch.classes + (1 if arch.ignore_label >= 0 else 0)
    labels = torch.randint(0, top_label, (batch, 1, *size), generator=generator).float()
    return images, labels
