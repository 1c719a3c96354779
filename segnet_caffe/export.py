"""ONNX export of a net's TEST phase with PyTorch's exporter, verified in onnxruntime.

    segnet-caffe export --model NET_inference.prototxt --weights W.caffemodel --out net.onnx

What is exported: the net as `evaluate.deploy_net_param` makes it for plain images (TEST phase,
a data layer replaced by an Input of the same name; the input is the `data` blob as the data
layer produces it: BGR 0..255, minus the mean, times the scale), with
- BN (INFERENCE), use_global_stats BatchNorm and per-channel Scale layers working in place
  after a convolution folded into its filters and bias (`Net.fold_bn`'s chains);
- Dropout removed (identity, Caffe's TEST phase), or, with `mc_dropout`, the Bayesian SegNet
  layers that sample at test time (sample_weights_test) kept as random masks;
- every MAX Pooling as ONNX MaxPool with its Indices output and every Upsample as ONNX
  MaxUnpool fed those indices (see `_MaxPool` and `_MaxUnpool` for why these two ops and how
  Caffe's sizes are kept);
- outputs: `prob` (or another blob) and optionally `argmax`, the class map (N, H, W) int64.

Each export is checked: the file runs in onnxruntime on the CPU on the same inputs as the
engine (the unfolded net, dropout off), and the largest difference of `prob`, the share of
close values and of equal argmax pixels are reported beside the same figures for the engine
against itself with BN folded (see Parity); beyond the tolerances the export fails.

The exporter is PyTorch's TorchScript-based one (`torch.onnx.export(..., dynamo=False)`): it
needs no package beyond `onnx`, and its `symbolic` hooks let the two pooling-mask ops be
written as exactly the ONNX nodes wanted. The dynamo-based exporter would need onnxscript and
a custom translation table for the same result.
"""
import dataclasses
import re
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import engine_options, mode
from .errors import CaffeError
from .evaluate import deploy_net_param, image_paths, read_image
from .net import TEST, Net
from .proto import caffe_pb2

INSTALL_HINT = 'pip install -e ".[onnx]" (or: pip install onnx onnxruntime)'
DEFAULT_OPSET = 17
MIN_OPSET, MAX_OPSET = 12, 20  # GreaterOrEqual (MC dropout) needs 12; the exporter goes to 20
# Verification tolerances: (a prob value is "close" within this, the least fraction of close
# values, the least fraction of equal argmax pixels). Not a bound on the largest difference:
# where the values of a pooling window lie within float rounding of each other (flat image
# regions; a ReLU's 0 against 1e-6), two runtimes' convolutions may pick different maxima, and
# Upsample then puts a decoder value elsewhere in its window. Such moves are rare but exist in
# every SegNet (the demo's squares net on its 100 test images: 149 of 131 million pooling
# indices, 0.01% of the prob values beyond 1e-3, 4 of 6.5 million pixels of another class);
# float16 has many more. The maximum is reported.
TOLERANCE = {"float32": (1e-3, 0.999, 0.999), "float16": (5e-2, 0.99, 0.99)}

# Layer types exported by tracing the engine's own forward (each tested against onnxruntime).
TRACED = ("AbsVal", "BN", "BatchNorm", "Bias", "Concat", "Convolution", "Crop", "Deconvolution",
          "ELU", "Eltwise", "Flatten", "InnerProduct", "LRN", "MVN", "PReLU", "Power", "ReLU",
          "Reshape", "Scale", "Sigmoid", "Slice", "Softmax", "TanH")
SPECIAL = ("Input", "Pooling", "Upsample", "Dropout", "Split", "Silence")
EXPORTABLE = tuple(sorted(TRACED + SPECIAL))


def _require(module, why, alternative=""):
    try:
        return __import__(module)
    except ImportError:
        raise CaffeError(f"{module} is not installed ({why}): {INSTALL_HINT}"
                         f"{alternative}") from None


# ----- the pooling mask: MaxPool indices -> MaxUnpool ---------------------------------------------
@dataclass
class _Mask:
    """A pooling mask inside the exported graph: ONNX MaxPool's indices, which count over the
    whole (N, C, H, W) input tensor, and the (H, W) of the map that was pooled."""
    indices: torch.Tensor
    plane: tuple


class _MaxPool(torch.autograd.Function):
    """Caffe's max pooling as ONNX MaxPool with the Indices output.

    Caffe's pooled size (ceil rounding, minus a last window that would start in the padding)
    becomes explicit, asymmetric pads with floor rounding (ceil_mode 0): the end pad is exactly
    what the last window reaches past the map (0 where Caffe's rule drops it), so no runtime's
    reading of ceil_mode matters. The padding never wins a maximum (MaxPool pads with -inf),
    and the indices are those of the unpadded input, the first maximum in raster order as in
    Caffe. ONNX counts them over the whole tensor ((n * C + c) * H + h) * W + w, Caffe per
    plane h * W + w: only MaxUnpool reads them, which counts the same way.
    """

    @staticmethod
    def forward(ctx, x, kernel, stride, pads):
        padded = F.pad(x, (pads[1], pads[3], pads[0], pads[2]), value=float("-inf"))
        y, index = F.max_pool2d(padded, kernel, stride, return_indices=True)
        width = padded.shape[3]
        row = torch.div(index, width, rounding_mode="floor")
        col = index % width
        # No "- 0": the exporter inlines this forward while tracing, and its peephole pass
        # fails on a subtraction of zero in there ("Argument passed to at() was not in the map").
        if pads[0]:
            row = row - pads[0]
        if pads[1]:
            col = col - pads[1]
        n, c, h, w = x.shape
        planes = torch.arange(n * c, device=x.device).view(n, c, 1, 1) * (h * w)
        return y, planes + row * w + col

    @staticmethod
    def symbolic(g, x, kernel, stride, pads):
        return g.op("MaxPool", x, kernel_shape_i=list(kernel), strides_i=list(stride),
                    pads_i=list(pads), ceil_mode_i=0, outputs=2)


class _MaxUnpool(torch.autograd.Function):
    """The fork's Upsample as ONNX MaxUnpool: a zero map of the Upsample's size with each value
    at its index, given as MaxUnpool's output_shape input (odd sizes, upsample_h/upsample_w).

    MaxUnpool is the op that means this: onnxruntime runs it as one scatter, and the graph
    reads as SegNet's. A gather/scatter spelling (ScatterElements over each plane) would
    compute the same but hide the pairing from a converter that maps MaxPool + MaxUnpool to
    its own unpooling. The kernel, strides and end pads only set
    MaxUnpool's inferred size, which must not exceed output_shape: strides = ceil(out / in),
    end pads = in * stride - out. When the Upsample's size is not the pooled map's (Caffe then
    places values at shifted positions: plane index h * W_in + w read in a W_out-wide plane),
    the indices are rebased per plane first, so that quirk is kept too.
    """

    @staticmethod
    def forward(ctx, x, indices, plane, size, geometry):
        n, c = x.shape[:2]
        indices = _MaxUnpool.rebase(indices, plane, size)
        top = x.new_zeros(n * c * size[0] * size[1])
        return top.scatter(0, indices.reshape(-1), x.reshape(-1)).view(n, c, *size)

    @staticmethod
    def rebase(indices, plane, size):
        inside, outside = plane[0] * plane[1], size[0] * size[1]
        if inside == outside:
            return indices
        return indices % inside + torch.div(indices, inside, rounding_mode="floor") * outside

    @staticmethod
    def symbolic(g, x, indices, plane, size, geometry):
        inside, outside = plane[0] * plane[1], size[0] * size[1]
        if inside != outside:
            step = g.op("Constant", value_t=torch.tensor(inside, dtype=torch.int64))
            indices = g.op("Add", g.op("Mod", indices, step),
                           g.op("Mul", g.op("Div", indices, step),
                                g.op("Constant", value_t=torch.tensor(outside, dtype=torch.int64))))
        batch_channels = g.op("Slice", g.op("Shape", x),
                              g.op("Constant", value_t=torch.tensor([0])),
                              g.op("Constant", value_t=torch.tensor([2])))
        spatial = g.op("Constant", value_t=torch.tensor(list(size), dtype=torch.int64))
        shape = g.op("Concat", batch_channels, spatial, axis_i=0)
        kernel, strides, ends = geometry
        return g.op("MaxUnpool", x, indices, shape, kernel_shape_i=list(kernel),
                    strides_i=list(strides), pads_i=[0, 0] + list(ends))


def unpool_geometry(in_size, size):
    """MaxUnpool's (kernel, strides, end pads) for an in_size -> size unpooling. They only set
    the size MaxUnpool infers, (in - 1) * stride + kernel - end pad, which must be `size`
    (output_shape may not be smaller): kernel = stride = ceil(out / in) with end pad
    in * stride - out, SegNet's 2x2 / 2 with a pad of 1 on odd sizes; stride 1 and kernel
    out - in + 1 where that pad would reach the kernel."""
    kernel, strides, ends = [], [], []
    for n, out in zip(in_size, size):
        step = -(-out // n)
        if n * step - out < step:
            kernel.append(step), strides.append(step), ends.append(n * step - out)
        else:
            kernel.append(out - n + 1), strides.append(1), ends.append(0)
    return tuple(kernel), tuple(strides), tuple(ends)


# ----- the net as a torch module of ONNX-exportable steps ----------------------------------------
def _module_name(name, taken):
    base = re.sub(r"\W", "_", name) or "layer"
    if base[0].isdigit():
        base = "_" + base
    while base in taken:
        base += "_"
    taken.add(base)
    return base


class _Step(nn.Module):
    """One layer of the net and how it runs. Its parameter blobs hold frozen module parameters
    (same values) while it is traced: the tracer takes module parameters as the graph's
    initializers, where a tensor that requires grad it refuses as a constant. With `half`, the
    layer computes in float16 (its float32 bottoms cast; the layer casts its parameters to its
    input's type, which the exporter folds into float16 initializers)."""

    def __init__(self, layer, bottoms, tops, run, half=False):
        super().__init__()
        self.layer, self.bottoms, self.tops, self.run, self.half = layer, bottoms, tops, run, half
        for k, blob in enumerate(layer.blobs):
            param = nn.Parameter(blob.tensor().detach().float(), requires_grad=False)
            self.register_parameter(str(k), param)
            blob.set_tensor(param)

    def forward(self, blobs):
        bottoms = [blobs[b] for b in self.bottoms]
        if self.half:
            bottoms = [b.half() if torch.is_tensor(b) and b.dtype == torch.float32 else b
                       for b in bottoms]
        tops = self.run(self.layer, bottoms)
        for name, top in zip(self.tops, tops):
            blobs[name] = top


class _Graph(nn.Module):
    def __init__(self, steps, input_name, outputs, argmax, fp16):
        super().__init__()
        taken = set()
        self.order = []
        for name, step in steps:
            key = _module_name(name, taken)
            self.add_module(key, step)
            self.order.append(key)
        self.input_name, self.outputs, self.argmax, self.fp16 = input_name, outputs, argmax, fp16

    def forward(self, data):
        blobs = {self.input_name: data}
        for key in self.order:
            getattr(self, key)(blobs)
        results = [blobs[name].float() for name in self.outputs]
        if self.argmax:
            results.append(results[0].argmax(dim=1))
        return tuple(results)


def _traced(layer, bottoms):
    return layer.forward(bottoms)


def _max_pool(layer, bottoms):
    x = bottoms[0]
    kernel, pooled = layer.geometry(x.shape)
    pads = [layer.pad[0], layer.pad[1]]
    for axis in (0, 1):
        covered = (pooled[axis] - 1) * layer.stride[axis] + kernel[axis]
        pads.append(max(0, covered - layer.pad[axis] - int(x.shape[2 + axis])))
    y, indices = _MaxPool.apply(x, tuple(kernel), tuple(layer.stride), tuple(pads))
    return [y, _Mask(indices, (int(x.shape[2]), int(x.shape[3])))][:len(layer.param.top)]


def _upsample(layer, bottoms):
    x, mask = bottoms
    if not isinstance(mask, _Mask):
        raise layer.error("its mask bottom does not come from a MAX Pooling layer's mask top: "
                          "only a pooling mask can be exported as MaxUnpool indices")
    size = tuple(int(s) for s in layer.top_shape(x.shape, x.shape)[2:])
    if size[0] < x.shape[2] or size[1] < x.shape[3]:
        raise layer.error(f"its output {size[0]}x{size[1]} is smaller than its input "
                          f"{x.shape[2]}x{x.shape[3]}: MaxUnpool cannot express it")
    geometry = unpool_geometry((int(x.shape[2]), int(x.shape[3])), size)
    return [_MaxUnpool.apply(x, mask.indices, mask.plane, size, geometry)]


def _identity(layer, bottoms):
    return [bottoms[0]] * max(1, len(layer.param.top))


def _sampled_dropout(layer, bottoms):
    x = bottoms[0]
    keep = (torch.rand_like(x) >= layer.ratio).to(x.dtype)
    return [x * keep * (1.0 / (1.0 - layer.ratio))]


def _silence(layer, bottoms):
    return []


def _refusal(layer, phase_first):
    """Why `layer` cannot be exported (None when it can)."""
    kind = layer.type
    if kind.endswith("Loss") or kind == "Accuracy":
        return ("needs ground-truth labels: export the inference or deploy prototxt (it ends in a "
                "Softmax prob instead of a loss)")
    if layer.reads_data or (kind == "Input" and not phase_first):
        return "is a data layer after the first layer: only the first layer may feed the net"
    if kind == "Python":
        return "runs Python code at each forward, which an ONNX graph cannot hold"
    if kind == "BN" and layer.learn:
        return ("is in LEARN mode (it normalises each batch by its own statistics): compute the "
                "inference statistics first (scripts/compute_bn_statistics.py) and export the "
                "net with bn_mode: INFERENCE")
    if kind == "BatchNorm" and not layer.use_global_stats:
        return ("has use_global_stats: false (batch statistics): export with the stored "
                "statistics (use_global_stats: true, Caffe's TEST default)")
    if kind == "Pooling" and layer.method != caffe_pb2.PoolingParameter.MAX \
            and len(layer.param.top) > 1:
        return "has a mask top but is not MAX pooling"
    if kind not in EXPORTABLE:
        return f"has no ONNX export here (exportable types: {', '.join(EXPORTABLE)})"
    return None


@dataclass
class ExportPlan:
    """The module to trace and what it did with the net's layers."""
    graph: nn.Module
    folded: list = field(default_factory=list)       # layer names folded into convolutions
    dropped: list = field(default_factory=list)      # Dropout layers removed
    sampled: list = field(default_factory=list)      # Dropout layers kept as random masks
    unpooled: list = field(default_factory=list)     # (pooling, upsample) pairs


def build_plan(net, source, outputs=("prob",), argmax=False, mc_dropout=False, fp16=False):
    """The torch module that computes `net` (a deploy net from deploy_net_param) with
    ONNX-exportable ops; a CaffeError naming the first layer that cannot be exported."""
    for name in outputs:
        if name not in net.blobs:
            raise CaffeError(f'{source}: no blob "{name}" to export (--output BLOB names another; '
                             f'blobs: {", ".join(net.blobs)})')
    for index, layer in enumerate(net.layers):
        why = _refusal(layer, index == 0)
        if why is not None:
            raise CaffeError(f"{source}: {layer.error('cannot be exported to ONNX: ' + why)}")
    plan = ExportPlan(graph=None)
    net.fold_bn()
    folded, skipped = net._folded_in(0, len(net.layers) - 1)
    steps, mask_pooling, half = [], {}, False
    for index, (layer, layer_param) in enumerate(zip(net.layers, net.param.layer)):
        kind = layer.type
        if index == 0:
            continue  # the Input: the graph's input
        if index in skipped and layer.channel_affine() is not None:
            plan.folded.append(layer.name)
            continue
        if index in folded:
            node = folded[index]
            run = (lambda l, b, node=node, affine=node.channel_affine():
                   node.convolve_affine(b, affine))
        elif kind == "Pooling" and layer.method == caffe_pb2.PoolingParameter.MAX:
            run = _max_pool
            if len(layer_param.top) > 1:
                mask_pooling[layer_param.top[1]] = layer.name
        elif kind == "Upsample":
            run = _upsample
            plan.unpooled.append((mask_pooling.get(layer_param.bottom[1], "?"), layer.name))
        elif kind == "Dropout":
            sampling = layer.sample and mc_dropout
            (plan.sampled if sampling else plan.dropped).append(layer.name)
            run = _sampled_dropout if sampling else _identity
        elif kind == "Split":
            run = _identity
            for top in layer_param.top:
                if layer_param.bottom[0] in mask_pooling:
                    mask_pooling[top] = mask_pooling[layer_param.bottom[0]]
        elif kind == "Silence":
            run = _silence
        else:
            run = _traced
        # float16 from the first layer with parameters on: layers before it (MVN, LRN of the
        # 0..255 input) stay float32, where float16 would overflow (255^2 sums).
        half = fp16 and (half or bool(layer.blobs))
        steps.append((layer.name, _Step(layer, list(layer_param.bottom), list(layer_param.top),
                                        run, half)))
    _check_mask_readers(net, source, outputs)
    plan.graph = _Graph(steps, net.param.layer[0].top[0], list(outputs), argmax, fp16)
    return plan


def _check_mask_readers(net, source, outputs):
    """A pooling mask may only reach Upsample layers (through Splits): MaxPool's indices are not
    Caffe's float mask values, so any other reader, or an output, would see something else."""
    masks = {p.top[1] for p in net.param.layer if p.type == "Pooling" and len(p.top) > 1}
    for layer_param in net.param.layer:
        if layer_param.type == "Split" and layer_param.bottom[0] in masks:
            masks.update(layer_param.top)
            continue
        for j, name in enumerate(layer_param.bottom):
            if name in masks and not (layer_param.type == "Upsample" and j == 1):
                raise CaffeError(f'{source}: layer "{layer_param.name}" ({layer_param.type}): '
                                 f'cannot be exported to ONNX: it reads the pooling mask "{name}", '
                                 "which only an Upsample layer may read in an exported net")
    for name in outputs:
        if name in masks:
            raise CaffeError(f'{source}: the pooling mask "{name}" cannot be an output of the '
                             "exported net (its MaxPool indices are not Caffe's mask values)")


# ----- export and verification --------------------------------------------------------------------
@dataclass
class Figures:
    """How far one computation of `prob` is from the engine's, over some inputs."""
    atol: float
    max_abs_diff: float = 0.0
    close_values: int = 0     # prob values within `atol` of the engine's
    values: int = 0
    equal_pixels: int = 0     # pixels of the same argmax class
    pixels: int = 0

    def add(self, prob, reference, labels=None):
        difference = np.abs(prob.astype(np.float64) - reference)
        self.max_abs_diff = max(self.max_abs_diff, float(difference.max()))
        self.close_values += int((difference <= self.atol).sum())
        self.values += difference.size
        labels = prob.argmax(axis=1) if labels is None else labels
        self.equal_pixels += int((labels == reference.argmax(axis=1)).sum())
        self.pixels += labels.size

    @property
    def close(self):
        return self.close_values / max(self.values, 1)

    @property
    def agreement(self):
        return self.equal_pixels / max(self.pixels, 1)

    def text(self):
        return (f"prob max abs diff {self.max_abs_diff:.3g} ({100 * self.close:.4f}% of values "
                f"within {self.atol:g}), argmax agreement {100 * self.agreement:.4f}% "
                f"({self.equal_pixels} of {self.pixels} pixels)")


@dataclass
class Parity:
    """onnxruntime against the engine on the same inputs, and for scale, the engine against
    itself with its BN layers folded (Net.fold_bn: float rounding alone changes). SegNet's
    unpooling turns rounding into moved values (see TOLERANCE), and a net with large
    activations and near-equal class scores (random weights, say) turns those into other
    classes: the engine's own figure says how much of that to expect from this net."""
    inputs: int
    onnx: Figures
    engine: Figures
    what: str = ""            # which inputs

    # The figures users and tests read are onnxruntime's.
    max_abs_diff = property(lambda self: self.onnx.max_abs_diff)
    agreement = property(lambda self: self.onnx.agreement)
    close = property(lambda self: self.onnx.close)
    equal_pixels = property(lambda self: self.onnx.equal_pixels)
    pixels = property(lambda self: self.onnx.pixels)

    def line(self):
        return (f"onnxruntime vs the engine on {self.inputs} {self.what}: {self.onnx.text()}; "
                f"the engine vs itself with BN folded (rounding alone): {self.engine.text()}")

    def check(self, tolerance, path):
        """A CaffeError unless onnxruntime's figures are within `tolerance` (see TOLERANCE),
        or no more than 3 times as far from the engine as the engine is from itself."""
        _, least_close, least_equal = tolerance
        allowed_far = max(1 - least_close, 3 * (1 - self.engine.close))
        allowed_other = max(1 - least_equal, 3 * (1 - self.engine.agreement))
        if 1 - self.close > allowed_far + 1e-12 or 1 - self.agreement > allowed_other + 1e-12:
            raise CaffeError(f"{path}: the exported file does not compute what the engine does "
                             f"({100 * self.close:.4f}% of prob values within {self.onnx.atol:g}, "
                             f"needed {100 * (1 - allowed_far):.4f}%; argmax agreement "
                             f"{100 * self.agreement:.4f}%, needed "
                             f"{100 * (1 - allowed_other):.4f}%); the file is left for inspection")


@dataclass
class ExportResult:
    path: str
    input_shape: tuple | None  # with None for a dynamic batch
    outputs: list
    plan: ExportPlan | None
    parity: Parity | None = None
    sampling: str | None = None
    seconds: float = 0.0
    lines: list = field(default_factory=list)


def _engine_param(model, input_size, sampling):
    """deploy_net_param's net, with the Dropout layers' test-time sampling on or off."""
    param, spec = deploy_net_param(model, input_size)
    for layer in param.layer:
        if layer.type == "Dropout" and not sampling:
            layer.dropout_param.sample_weights_test = False
    return param, spec


def _cpu_net(param, weights, source):
    """The net on the CPU in float32, whatever the process's mode and engine options say: the
    export traces it, and onnxruntime's CPU run is compared with it."""
    saved = mode.mode()
    mode.set_mode_cpu()
    try:
        with engine_options.options(bf16=False):
            net = Net(param, TEST, weights=weights, source=source)
    finally:
        if saved == "gpu":
            mode.set_mode_gpu()
    return net


def _reshaped(net, spec, batch):
    shape = (batch, spec.channels, spec.height, spec.width)
    if net.blobs[spec.blob].shape != shape:
        net.blobs[spec.blob].reshape(*shape)
        net.reshape()


def sample_inputs(spec, count, seed=0):
    """`count` prepared inputs (float32, (count, C, H, W)): noise and blocky pictures (edges at
    all scales), as the net's data layer would hand them over."""
    rng = np.random.default_rng(seed)
    images = []
    for k in range(count):
        if k % 2 == 0:
            image = rng.integers(0, 256, (spec.height, spec.width, spec.channels), dtype=np.uint8)
        else:
            coarse = rng.integers(0, 256, (4 + k, 5 + k, spec.channels), dtype=np.uint8)
            image = np.asarray(np.repeat(np.repeat(coarse, -(-spec.height // coarse.shape[0]), 0),
                                         -(-spec.width // coarse.shape[1]), 1)
                               [:spec.height, :spec.width])
        images.append(spec.prepare(image)[0])
    return np.stack(images).astype(np.float32)


def image_inputs(spec, items):
    """The images (files or folders) as prepared inputs, resized to the net's input."""
    return np.stack([spec.prepare(read_image(p, spec.channels))[0]
                     for p in image_paths(items)]).astype(np.float32)


def onnxruntime_session(path):
    ort = _require("onnxruntime", "it runs the exported file")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        raise CaffeError(f"{path}: onnxruntime cannot load the exported file: "
                         f"{str(error).splitlines()[0]}") from error


def run_onnx(session, inputs):
    """onnxruntime's outputs {name: array} for the input array."""
    feed = {session.get_inputs()[0].name: inputs}
    names = [o.name for o in session.get_outputs()]
    try:
        return dict(zip(names, session.run(names, feed)))
    except Exception as error:
        raise CaffeError(f"onnxruntime cannot run the exported file on inputs of shape "
                         f"{inputs.shape}: {str(error).splitlines()[0]}") from error


def engine_prob(net, spec, inputs, output="prob"):
    """The engine's `output` blob for inputs (N, C, H, W), as float32 numpy."""
    _reshaped(net, spec, inputs.shape[0])
    net.blobs[spec.blob].data[...] = inputs
    with torch.no_grad():
        net.forward_range(0, len(net.layers) - 1)
    return net.blobs[output].tensor().detach().float().cpu().numpy()


def compare(session, net, spec, inputs, output="prob", what="inputs", atol=1e-4):
    """Parity of the ONNX file against the engine `net` (unfolded) on `inputs`: in runs of the
    file's batch when it is fixed (the inputs repeated to fill the last run), else in one."""
    batch = session.get_inputs()[0].shape[0]
    if isinstance(batch, int):
        runs = -(-len(inputs) // batch)
        inputs = np.resize(inputs, (runs * batch,) + inputs.shape[1:])  # repeats from the start
        chunks = [inputs[k:k + batch] for k in range(0, len(inputs), batch)]
    else:
        chunks = [inputs]
    exported, folded = Figures(atol), Figures(atol)
    for chunk in chunks:
        reference = engine_prob(net, spec, chunk, output)
        results = run_onnx(session, chunk)
        prob = results[output]
        if prob.shape != reference.shape:
            raise CaffeError(f'onnxruntime gives "{output}" of shape {prob.shape}, the engine '
                             f"{reference.shape}")
        exported.add(prob, reference, results.get("argmax"))
        net.fold_bn()
        try:
            folded.add(engine_prob(net, spec, chunk, output), reference)
        finally:
            net.unfold_bn()
    return Parity(sum(len(c) for c in chunks), exported, folded, what)


@dataclass
class Settings:
    """What an export writes (export_onnx's arguments, checked)."""
    batch: int | str = 1                 # a number or "dynamic"
    opset: int = DEFAULT_OPSET
    fp16: bool = False
    argmax: bool = False
    mc_dropout: bool = False
    output: str = "prob"

    @property
    def dynamic(self):
        return self.batch == "dynamic"

    @property
    def outputs(self):
        return [self.output] + (["argmax"] if self.argmax else [])

    def check(self):
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise CaffeError(f"--opset {self.opset}: choose {MIN_OPSET}..{MAX_OPSET} (opset "
                             f"{MIN_OPSET} has every op the export writes; PyTorch's exporter "
                             f"goes to {MAX_OPSET})")
        if not self.dynamic and (not isinstance(self.batch, int) or self.batch < 1):
            raise CaffeError(f'--batch must be a positive number or "dynamic", got {self.batch!r}')


def export_onnx(model, weights, out, input_size=None, batch=1, opset=DEFAULT_OPSET, fp16=False,
                argmax=False, mc_dropout=False, output="prob", verify=True, verify_images=None,
                tolerance=None, log=print):
    """Export `model` (prototxt) with `weights` to the ONNX file `out` and, unless verify is
    False, check it in onnxruntime against the engine (on `verify_images`, or synthetic
    images). `batch` is a number or "dynamic". Returns an ExportResult whose `lines` (each also
    passed to `log`) say what was done and the parity figures; a CaffeError when the file does
    not compute what the engine does within `tolerance` (see TOLERANCE)."""
    settings = Settings(batch, opset, fp16, argmax, mc_dropout, output)
    settings.check()
    _require("onnx", "the export writes and checks its file with it")
    if verify:
        _require("onnxruntime", "the export runs its file in it to compare with the engine",
                 ", or pass --no-verify")
    start = time.perf_counter()
    result = ExportResult(str(out), None, settings.outputs, None)

    def say(text):
        result.lines.append(text)
        if log is not None:
            log(text)

    param, spec = _engine_param(model, input_size, sampling=mc_dropout)
    result.plan, net = _write(param, weights, str(model), out, spec, settings)
    plan = result.plan
    result.input_shape = (None if settings.dynamic else batch, spec.channels, spec.height,
                          spec.width)
    shown = "x".join("N" if s is None else str(s) for s in result.input_shape)
    say(f"exported {model} ({weights or 'no weights'}) to {out}: opset {opset}, "
        f"{'float16' if fp16 else 'float32'} weights and arithmetic, input \"{spec.blob}\" "
        f"{shown} ({_input_text(spec)}), outputs {', '.join(settings.outputs)}")
    say(f"  {len(plan.folded)} layers folded into convolutions, {len(plan.unpooled)} Upsample "
        f"layers as MaxUnpool of their pooling's MaxPool indices, {len(plan.dropped)} Dropout "
        f"layers removed" + (f", {len(plan.sampled)} kept sampling (MC dropout)"
                             if plan.sampled else ""))
    if verify:
        tolerance = tolerance or TOLERANCE["float16" if fp16 else "float32"]
        if verify_images:
            inputs, what = image_inputs(spec, verify_images), "images"
        else:
            inputs = sample_inputs(spec, 3 if settings.dynamic else max(2, batch), seed=1)
            what = "synthetic images (noise, blocks)"
        if plan.sampled:
            result.parity, result.sampling = _verify_sampled(
                net, param, weights, str(model), out, spec, settings, inputs, what, tolerance[0])
        else:
            result.parity = compare(onnxruntime_session(out), net, spec, inputs, output, what,
                                    tolerance[0])
        say(result.parity.line())
        if result.sampling:
            say(result.sampling)
        result.parity.check(tolerance, out)
    result.seconds = time.perf_counter() - start
    return result


def _write(param, weights, source, out, spec, settings):
    """Build the net, plan it and write the ONNX file. Returns the ExportPlan and the net,
    unfolded again: the engine as it runs without the export (its parameter blobs are the
    plan's frozen parameters, with the same values)."""
    net = _cpu_net(param, weights, source)
    plan = build_plan(net, source, (settings.output,), settings.argmax, settings.mc_dropout,
                      settings.fp16)
    example = torch.from_numpy(sample_inputs(spec, 1 if settings.dynamic else settings.batch))
    axes = None
    if settings.dynamic:
        axes = {name: {0: "batch"} for name in [spec.blob] + settings.outputs}
    _export(plan.graph, example, out, spec.blob, settings.outputs, settings.opset, axes)
    _annotate(out, source, weights, spec, plan, settings.fp16)
    net.unfold_bn()
    return plan, net


def _input_text(spec):
    parts = ["BGR 0..255" if spec.channels == 3 else "gray 0..255"]
    return ", ".join(parts + spec.transform.describe())


def _addcmul(g, base, tensor1, tensor2, value):
    """aten::addcmul as Add(base, Mul(tensor1, tensor2)): the exporter's own spelling multiplies
    by `value` as a float32 constant, which turns a float16 graph's folded bias (and BN's
    scale * x + shift) to float32 and the convolution after it with it."""
    from torch.onnx import symbolic_helper

    if symbolic_helper._maybe_get_const(value, "f") != 1:
        raise CaffeError("internal: addcmul with a value other than 1 in an exported layer")
    return g.op("Add", base, g.op("Mul", tensor1, tensor2))


def _export(graph, example, out, input_name, out_names, opset, axes):
    torch.onnx.register_custom_op_symbolic("aten::addcmul", _addcmul, opset)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, (example,), str(out), dynamo=False, opset_version=opset,
                              input_names=[input_name], output_names=out_names,
                              dynamic_axes=axes, do_constant_folding=True)
    except CaffeError:
        raise
    except Exception as error:  # the exporter raises many types; the first line says which op
        raise CaffeError(f"{out}: PyTorch's ONNX exporter failed: "
                         f"{str(error).strip().splitlines()[0]}") from error
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::addcmul", opset)


def _annotate(out, model, weights, spec, plan, fp16):
    """Record in the file how its input is made and where it came from; check it."""
    import onnx

    proto = onnx.load(str(out))
    info = {"segnet_caffe.source": str(model), "segnet_caffe.weights": str(weights or ""),
            "segnet_caffe.input": f'"{spec.blob}": {_input_text(spec)}, (N, C, H, W) float32',
            "segnet_caffe.folded": ",".join(plan.folded),
            "segnet_caffe.unpooling": ",".join(f"{p}->{u}" for p, u in plan.unpooled),
            "segnet_caffe.mc_dropout": ",".join(plan.sampled),
            "segnet_caffe.precision": "float16" if fp16 else "float32"}
    for key, value in info.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "segnet-caffe"
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as error:
        raise CaffeError(f"{out}: the exported graph is not valid ONNX: "
                         f"{str(error).strip().splitlines()[0]}") from error
    onnx.save(proto, str(out))


def _verify_sampled(net, param, weights, source, out, spec, settings, inputs, what, atol,
                    samples=16):
    """For an export that samples dropout: the same net exported with dropout off is compared
    with the engine with dropout off (every op but the random masks, exactly), and the sampled
    file's mean over `samples` runs with the engine's Monte-Carlo mean over as many (their
    difference is sampling noise). Returns (Parity, a line on the sampling)."""
    import tempfile
    from pathlib import Path

    off = caffe_pb2.NetParameter()
    off.CopyFrom(param)
    for layer in off.layer:
        if layer.type == "Dropout":
            layer.dropout_param.sample_weights_test = False
    with tempfile.TemporaryDirectory() as folder:
        twin = Path(folder) / "dropout_off.onnx"
        _, off_net = _write(off, weights, source, twin, spec,
                            dataclasses.replace(settings, mc_dropout=False))
        parity = compare(onnxruntime_session(twin), off_net, spec, inputs, settings.output,
                         what + "; dropout off", atol)
    session = onnxruntime_session(out)
    one = inputs[:1]
    feed = one if settings.dynamic else np.concatenate([one] * settings.batch)
    runs = np.stack([run_onnx(session, feed)[settings.output][0] for _ in range(samples)])
    engine = np.stack([engine_prob(net, spec, one, settings.output)[0]
                       for _ in range(samples)])
    spread, engine_spread = float(runs.std(axis=0).mean()), float(engine.std(axis=0).mean())
    gap = float(np.abs(runs.mean(axis=0) - engine.mean(axis=0)).mean())
    if spread == 0:
        raise CaffeError(f"{out}: the exported file does not sample dropout (every run gives the "
                         "same prob)")
    return parity, (f"MC dropout: {samples} runs of the file on one image vary as the engine's "
                    f"{samples} samples do (mean per-pixel std of prob {spread:.3g}, engine "
                    f"{engine_spread:.3g}); their means differ by {gap:.3g} on average "
                    "(sampling noise)")
