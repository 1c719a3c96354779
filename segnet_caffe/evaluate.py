"""Evaluation of a segmentation net: predictions batch by batch from the net's own data layer,
scores accumulated in a ConfusionMatrix, Monte-Carlo dropout sampling for Bayesian SegNet, and
prediction of plain image files with a deploy/inference net.

The net's prediction is the argmax over the channels of its `prob` blob (Softmax output).
Everything runs under torch.no_grad(): inference records no autograd graph.
"""
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from . import io, list_files
from .datasets import IMAGE_EXTENSIONS
from .errors import CaffeError
from .input_transform import InputTransform, read_mean_file
from .layer_types import is_data_type
from .logs import get_logger
from .metrics import ConfusionMatrix
from .net import TEST, Net
from .net_graph import filter_net
from .proto import caffe_pb2

@dataclass
class Prediction:
    """One batch's net input, ground truth and (mean) class probabilities, as torch tensors."""
    data: torch.Tensor                   # (N, C, H, W) the data blob, as the net saw it
    label: torch.Tensor | None           # (N, H, W) ground-truth labels (None without labels)
    prob: torch.Tensor                   # (N, K, H, W) class probabilities (mean over MC samples)
    variance: torch.Tensor | None = None  # (N, K, H, W) their variance over MC samples

    @property
    def prediction(self):
        """(N, H, W) int64: the most probable class (the first on ties, as numpy's argmax)."""
        return self.prob.argmax(dim=1)

    @property
    def uncertainty(self):
        """(N, H, W): the variance averaged over classes (Bayesian SegNet's uncertainty map)."""
        return None if self.variance is None else self.variance.mean(dim=1)


# ----- Monte-Carlo dropout -----------------------------------------------------------------------
def sampling_dropout_layers(net):
    """Names of the Dropout layers that draw a new mask at every forward in this phase."""
    return [layer.name for layer in net.layers
            if layer.param.type == "Dropout"
            and (net.phase != TEST or layer.param.dropout_param.sample_weights_test)]


def check_mc_samples(net, mc_samples):
    """The number of forward passes to run per batch: 1 when nothing in the net samples."""
    if mc_samples < 1:
        raise CaffeError(f"--mc-samples must be at least 1, got {mc_samples}")
    sampling = sampling_dropout_layers(net)
    if mc_samples > 1 and not sampling:
        get_logger().warning(f"{mc_samples} Monte-Carlo samples asked for, but no Dropout layer "
                             "samples at test time (dropout_param { sample_weights_test: true }): "
                             "every pass would give the same result; running one")
        return 1
    if mc_samples == 1 and sampling:
        get_logger().warning(f"Dropout layers {sampling} sample at test time: one pass gives one "
                             "random draw; use --mc-samples S to average S of them")
    return mc_samples


def forward_samples(net, start, end, samples, prob_blob="prob", resample_from=None):
    """Run layers start..end once, then resample_from..end (default start) samples - 1 more
    times; return the mean and (population) variance of `prob_blob` over the passes (variance
    None for one pass). Welford's update keeps a single running copy in memory."""
    resample_from = start if resample_from is None else resample_from
    mean = m2 = None
    for k in range(1, samples + 1):
        net.forward_range(start if k == 1 else resample_from, end)
        prob = net.blobs[prob_blob].tensor().detach()
        if samples == 1:
            return prob, None
        prob = prob.double()
        if mean is None:
            mean, m2 = prob.clone(), torch.zeros_like(prob)
            continue
        delta = prob - mean
        mean += delta / k
        m2 += delta * (prob - mean)
    return mean.float(), (m2 / samples).float()


# ----- batches from the net's own data layer -----------------------------------------------------
def _producer_index(net, blob):
    for index, layer in enumerate(net.layers):
        if blob in net.top_names[layer.name]:
            return index
    raise CaffeError(f'net "{net.name}" has no blob "{blob}" (blobs: {", ".join(net.blobs)})')


def check_blobs(net, prob_blob="prob", label_blob="label", data_blob="data"):
    """A clear error when the net lacks the blobs evaluation reads."""
    for blob, what in ((data_blob, "input images"), (label_blob, "ground-truth labels"),
                       (prob_blob, "class probabilities (the Softmax output)")):
        if blob is not None and blob not in net.blobs:
            raise CaffeError(f'net "{net.name}" ({net.source}) has no "{blob}" blob for the '
                             f"{what}; use an inference prototxt whose data layer has `data` "
                             "and `label` tops and that ends in a Softmax `prob` top")


def predict_batches(net, iterations, mc_samples=1, prob_blob="prob", label_blob="label",
                    data_blob="data"):
    """Yield a Prediction for each of `iterations` batches of the net's data layer.

    With mc_samples > 1 the data layer runs once per batch and the layers after it run
    mc_samples times (each pass draws new dropout masks), so every pass sees the same images.
    """
    check_blobs(net, prob_blob, label_blob, data_blob)
    last = len(net.layers) - 1
    after_data = _producer_index(net, label_blob) + 1
    with torch.no_grad():
        for _ in range(iterations):
            prob, variance = forward_samples(net, 0, last, mc_samples, prob_blob, after_data)
            data = net.blobs[data_blob].tensor().detach()
            label = net.blobs[label_blob].tensor().detach()
            if label.dim() == 4:
                if label.shape[1] != 1:
                    raise CaffeError(f'blob "{label_blob}" has shape {tuple(label.shape)}: '
                                     "expected one label channel (N, 1, H, W)")
                label = label[:, 0]
            if prob.dim() != 4 or prob.shape[0] != label.shape[0] or \
                    prob.shape[2:] != label.shape[1:]:
                raise CaffeError(f'blob "{prob_blob}" has shape {tuple(prob.shape)} but '
                                 f'"{label_blob}" has {tuple(label.shape)}: the prediction '
                                 "must be (N, classes, H, W) over the label's (N, H, W)")
            yield Prediction(data=data, label=label, prob=prob, variance=variance)


def evaluate(net, iterations, num_classes=None, ignore_label=None, class_names=None,
             mc_samples=1, on_batch=None, progress=False, prob_blob="prob", label_blob="label",
             data_blob="data"):
    """Run `iterations` batches of the net's data layer (TEST phase) and count the predictions
    (argmax of `prob_blob`) against `label_blob` in a ConfusionMatrix.

    num_classes defaults to the prob blob's channel count; pixels labelled ignore_label are
    skipped. on_batch(Prediction) sees each batch (for figures). mc_samples > 1 averages that
    many passes of the layers after the data layer (Bayesian SegNet).
    """
    from tqdm import tqdm

    check_blobs(net, prob_blob, label_blob, data_blob)
    if num_classes is None:
        num_classes = net.blobs[prob_blob].shape[1]
    confusion = ConfusionMatrix(num_classes, ignore_label, class_names)
    batches = predict_batches(net, iterations, mc_samples, prob_blob, label_blob, data_blob)
    for batch in tqdm(batches, total=iterations, desc="test", unit="batch",
                      disable=not progress or None, leave=False):
        confusion.update(batch.prediction, batch.label, images=batch.label.shape[0])
        if on_batch is not None:
            on_batch(batch)
    return confusion


# ----- what the net's input looked like ----------------------------------------------------------
def data_transform(net, data_blob="data"):
    """The transform_param of the layer producing `data_blob` (None when it has none)."""
    layer = net.layers[_producer_index(net, data_blob)]
    return layer.param.transform_param if layer.param.HasField("transform_param") else None


def input_to_rgb(data, transform_param=None):
    """A (C, H, W) net input (BGR, (x - mean) * scale) back to an HxWx3 uint8 RGB picture.

    The data layer's transform is undone when known (scale, mean_value, a mean_file of the same
    size); if the values still fall outside 0..255 they are min-max stretched instead.
    """
    data = np.asarray(data, np.float32)
    if transform_param is not None:
        file_mean = None
        if transform_param.HasField("mean_file") and os.path.isfile(transform_param.mean_file):
            file_mean = read_mean_file(transform_param.mean_file)
            file_mean = file_mean if file_mean.shape == data.shape else None
        data = InputTransform.from_param(transform_param, file_mean).invert(data)
    if data.min() < -0.5 or data.max() > 255.5:
        low, high = float(data.min()), float(data.max())
        data = (data - low) * (255.0 / max(high - low, 1e-12))
    picture = np.clip(np.rint(data), 0, 255).astype(np.uint8)
    if picture.shape[0] == 1:
        picture = np.repeat(picture, 3, axis=0)
    return np.ascontiguousarray(picture[:3][::-1].transpose(1, 2, 0))  # BGR -> RGB


# ----- plain images with a deploy / inference net -------------------------------------------------
@dataclass
class InputSpec:
    """How plain images become the net's input blob."""
    blob: str
    channels: int
    height: int
    width: int
    transform: InputTransform = InputTransform()
    source: str = ""                    # what the net's first layer was, for the record

    def prepare(self, image):
        """An HxWxC uint8 (BGR, as OpenCV reads) image -> the (1, C, H, W) float32 input."""
        if image.ndim == 2:
            image = image[:, :, None]
        if image.shape[:2] != (self.height, self.width):
            image = cv2.resize(image, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
            if image.ndim == 2:
                image = image[:, :, None]
        return self.transform.apply(image.transpose(2, 0, 1))[None]


def deploy_net_param(model, input_size=None):
    """The TEST-phase NetParameter of `model` with a batch-1 Input first layer, and its InputSpec.

    - A net whose first layer is an Input keeps it (batch set to 1); images are fed as Caffe's
      data layers produce them: BGR, 0..255, no mean or scale.
    - A net whose first layer is a data layer (DenseImageData, ImageData, ...) gets it replaced by
      an Input layer of the same name producing its first top (`data`); its transform_param
      (scale, mean_value, mean_file) is applied to the images, and no other layer may read its
      other tops (the labels).
    Input size (H, W): `input_size` if given, else the Input layer's shape, else the data layer's
    new_height/new_width, crop_height/crop_width or crop_size, else the size of the first image of
    its list file. Images of another size are resized to it (bilinear, as DenseImageData's
    new_height/new_width resize).
    """
    param = io.read_net_prototxt(str(model))
    state = caffe_pb2.NetState(phase=TEST)
    param = filter_net(param, state)
    if not param.layer:
        raise CaffeError(f"{model}: no layers in the TEST phase")
    first = param.layer[0]
    if first.type == "Input":
        return param, _input_layer_spec(model, first, input_size)
    if not is_data_type(first.type):
        raise CaffeError(f'{model}: the first layer "{first.name}" is a {first.type}; expected an '
                         "Input layer or a data layer whose first top is the image blob")
    readers = [layer.name for layer in param.layer[1:]
               if any(top in layer.bottom for top in first.top[1:])]
    if readers:
        raise CaffeError(f'{model}: layers {readers} read the data layer\'s label top; use the '
                         "inference prototxt (no loss or accuracy layers)")
    spec = _data_layer_spec(model, first, input_size)
    replacement = caffe_pb2.LayerParameter(name=first.name, type="Input")
    replacement.top.append(first.top[0])
    replacement.input_param.shape.add().dim.extend([1, spec.channels, spec.height, spec.width])
    layers = [replacement] + list(param.layer[1:])
    del param.layer[:]
    param.layer.extend(layers)
    return param, spec


def _input_layer_spec(model, first, input_size):
    """The InputSpec of an Input first layer, whose shape becomes batch 1 at the input size."""
    if not first.input_param.shape:
        raise CaffeError(f'{model}: Input layer "{first.name}" declares no shape')
    dims = list(first.input_param.shape[0].dim)
    if len(dims) != 4:
        raise CaffeError(f'{model}: Input layer "{first.name}" shape {dims} is not (N, C, H, W)')
    height, width = (input_size or dims[2:])
    dims[0], dims[2], dims[3] = 1, height, width
    del first.input_param.shape[:]
    first.input_param.shape.add().dim.extend(dims)
    return InputSpec(first.top[0], dims[1], height, width, source=f'Input layer "{first.name}"')


def _data_layer_spec(model, first, input_size):
    """The InputSpec of a data first layer: its channels, size and transform_param."""
    channels, size, list_image = 3, None, None
    if first.type in ("DenseImageData", "ImageData"):
        p = first.dense_image_data_param if first.type == "DenseImageData" \
            else first.image_data_param
        channels = 3 if p.is_color else 1
        if p.new_height and p.new_width:
            size = (p.new_height, p.new_width)
        if first.type == "DenseImageData" and p.crop_height and p.crop_width:
            size = (p.crop_height, p.crop_width)
        list_image = list_files.first_image(p.source, p.root_folder)
    if first.transform_param.crop_size:
        size = (first.transform_param.crop_size,) * 2
    if input_size is not None:
        size = tuple(input_size)
    if size is None and list_image is not None:
        image = cv2.imread(list_image, cv2.IMREAD_UNCHANGED)
        if image is not None:
            size = image.shape[:2]
    if size is None:
        raise CaffeError(f'{model}: cannot tell the input size of data layer "{first.name}" (no '
                         "new_height/new_width, crop or readable list file): pass --input-size H W")
    transform = first.transform_param
    file_mean = None
    if not len(transform.mean_value) and transform.HasField("mean_file"):
        file_mean = read_mean_file(transform.mean_file)
        if file_mean.shape[-2:] != tuple(size):
            raise CaffeError(f"{model}: transform_param.mean_file is {file_mean.shape[-2]}x"
                             f"{file_mean.shape[-1]} but the input is {size[0]}x{size[1]}")
    return InputSpec(first.top[0], channels, int(size[0]), int(size[1]),
                     transform=InputTransform.from_param(transform, file_mean),
                     source=f'{first.type} layer "{first.name}" replaced by an Input layer')


def deploy_net(model, weights=None, input_size=None):
    """A TEST-phase Net reading plain images (see deploy_net_param) and its InputSpec."""
    param, spec = deploy_net_param(model, input_size)
    net = Net(param, TEST, weights=weights)
    net.source = str(model)
    return net, spec


def image_paths(items):
    """Image files from a list of files and folders (a folder's images in name order)."""
    paths = []
    for item in items:
        item = Path(item)
        if item.is_dir():
            paths.extend(sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS))
        elif item.is_file():
            paths.append(item)
        else:
            raise CaffeError(f'--images: "{item}" is neither a file nor a folder')
    if not paths:
        raise CaffeError(f"--images: no image files in {[str(i) for i in items]}")
    return paths


def read_image(path, channels=3):
    """An image file as OpenCV (Caffe) reads it: BGR uint8, or grayscale for 1 channel."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR if channels == 3 else cv2.IMREAD_GRAYSCALE)
    if image is None:
        reason = "no such file" if not os.path.isfile(path) else "OpenCV cannot decode it"
        raise CaffeError(f'cannot read image "{path}": {reason}')
    return image


def predict_image(net, spec, image, mc_samples=1, prob_blob="prob"):
    """Class probabilities (K, H, W) for one BGR image at the net's input size, and their
    variance over Monte-Carlo passes (None for one pass)."""
    if prob_blob not in net.blobs:
        raise CaffeError(f'net "{net.name}" has no "{prob_blob}" blob (outputs: {net.outputs})')
    net.blobs[spec.blob].data[...] = spec.prepare(image)
    with torch.no_grad():
        mean, variance = forward_samples(net, 0, len(net.layers) - 1, mc_samples, prob_blob)
    return mean[0], (None if variance is None else variance[0])
