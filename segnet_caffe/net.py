"""Net: a Caffe network built from a NetParameter, with pycaffe's Python surface.

Data flows one way: NetParameter -> phase/stage filtering -> split insertion -> layers and
blobs -> forward / backward. Backward runs layer by layer in reverse, as Caffe's does, each
layer's gradient coming from autograd over that layer's forward alone, so every Caffe rule
(in-place tops, split layers summing diffs, propagate_down, force_backward, parameter diffs
that accumulate across calls) holds exactly.
"""
import dataclasses
import re
from collections import OrderedDict

import torch

from . import engine_options, io, mode
from . import folding
from . import net_diagnostics as diagnostics
from .blob import Blob
from .errors import BadLabelsError, CaffeError
from .layer_types import create_layer
from .logs import get_logger
from .proto import caffe_pb2
from .net_graph import filter_net, insert_splits
from .pycaffe_net import PycaffeNetMethods

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST


def _phase_value(phase):
    if phase in (TRAIN, TEST):
        return phase
    if isinstance(phase, str) and phase.upper() in ("TRAIN", "TEST"):
        return caffe_pb2.Phase.Value(phase.upper())
    raise CaffeError(f"phase must be caffe.TRAIN or caffe.TEST, got {phase!r}")


@dataclasses.dataclass
class _Step:
    """One layer of the net and what the executor needs to know of it."""

    layer: object                 # the BaseLayer
    param: object                 # its LayerParameter (after filtering and split insertion)
    bottom_need: list             # per bottom: whether backward computes its diff
    param_need: list              # per parameter blob: whether backward computes its diff
    need_backward: bool = False   # whether the layer runs backward at all
    overwrite: bool = False       # whether it computes its top over its bottom's memory


class _LearnableParam:
    """A parameter blob the solver updates, with its multipliers (Caffe's learnable_params_)."""

    def __init__(self, blob, spec, name):
        self.blob = blob
        self.name = name
        self.has_lr_mult = spec.HasField("lr_mult")
        self.has_decay_mult = spec.HasField("decay_mult")
        self.lr_mult = spec.lr_mult
        self.decay_mult = spec.decay_mult


class Net(PycaffeNetMethods):
    """A Caffe network, constructed like pycaffe's.

    Net(model, phase), Net(model, weights, phase) or Net(model, phase, weights=...), where
    `model` is a prototxt path or a NetParameter and `weights` a .caffemodel path; optional
    `level` and `stages` select layers by their NetStateRules, and `source` names a
    NetParameter in errors (the file it came from). An error in the definition is a CaffeError
    that starts with the prototxt's name. `options` (an EngineOptions; by default
    engine_options.current()) says how the net computes, for its whole life.
    """

    def __init__(self, model, *args, phase=None, weights=None, level=0, stages=(), source=None,
                 options=None):
        if len(args) == 2:
            weights, phase = args
        elif len(args) == 1:
            phase = args[0]
        elif args:
            raise CaffeError("Net(model, phase), Net(model, weights, phase) or "
                             "Net(model, phase, weights=...)")
        if phase is None:
            raise CaffeError("Net needs a phase: caffe.TRAIN or caffe.TEST")
        self.phase = _phase_value(phase)
        if isinstance(model, caffe_pb2.NetParameter):
            self.source = source or "<NetParameter>"
            net_param = io.upgrade_net(model, self.source)
        else:
            net_param, self.source = io.read_net_prototxt(str(model)), str(model)
        state = caffe_pb2.NetState()
        state.CopyFrom(net_param.state)  # as pycaffe: the prototxt's state, phase/level/stages set
        state.phase, state.level = self.phase, level
        state.stage.extend(stages)
        self.name = net_param.name
        self.force_backward = net_param.force_backward
        self._device = mode.device()
        self.options = options if options is not None else engine_options.current()
        self._callbacks = {"before_forward": [], "after_forward": [], "before_backward": [],
                           "after_backward": []}
        try:
            included = insert_splits(filter_net(net_param, state))
            self._say_if_empty(net_param, included)
            with engine_options.use(self.options):  # its layers get the net's options
                self._build(included)
        except CaffeError as error:
            if str(error).startswith(self.source):
                raise
            raise CaffeError(f"{self.source}: {error}") from error  # chained for --debug
        if weights is not None:
            self.copy_from(weights)

    # ----- construction ------------------------------------------------------------------------
    def _say_if_empty(self, net_param, included):
        """Caffe builds an empty net without a word; it is almost surely the wrong file."""
        if not net_param.layer:
            get_logger().warning(f"{self.source}: the net defines no layers: it is empty")
        elif not included.layer:
            get_logger().warning(f"{self.source}: no layer of the net is included in the "
                                 f"{caffe_pb2.Phase.Name(self.phase)} phase: it is empty")

    def _say_if_names_repeat(self):
        """Caffe allows two layers of one name: weights copy into the first of them, and
        pycaffe's layer_dict and params show the last. Almost surely a mistake: say so."""
        repeated = sorted({n for n in self._layer_names if self._layer_names.count(n) > 1})
        if repeated:
            names = ", ".join(f'"{name}"' for name in repeated)
            get_logger().warning(f"{self.source}: several layers are named {names}: weights are "
                                 "copied into the first of each and net.params / layer_dict "
                                 "hold the last, as in Caffe; give each layer its own name")

    def _build(self, param):
        self.param = param
        self.blobs = OrderedDict()
        self.layers = []
        self._layer_names = []
        self.top_names = OrderedDict()
        self.bottom_names = OrderedDict()
        self.blob_loss_weights = OrderedDict()
        self.inputs = []
        self.learnable_params = []
        self._steps = []              # one _Step per layer, in order
        self._said = set()            # keys of the warnings its layers gave (BaseLayer.warn_once)
        self._loss_tops = []          # (blob name, loss weight)
        self._saved = {}              # layer index -> (bottom leaves, tops) for backward
        self._folds = {}              # convolution index -> its FoldedConvolution (fold_bn)
        self._producer = {}           # blob name -> index of the layer that last wrote it
        self._blob_need_backward = {}  # while building: whether a blob's diff is wanted
        self._available = OrderedDict()  # while building: blobs no later layer has read yet
        self._param_owner = {}        # shared param name -> index into self.learnable_params
        for index, layer_param in enumerate(param.layer):
            self._add_layer(index, layer_param)
        self._link_pooling_masks()
        self._prune_backward()
        if self.force_backward:
            self._force_backward()
        self.outputs = sorted(self._available)  # Caffe walks a std::set: outputs in name order
        del self._blob_need_backward, self._available, self._param_owner
        self.layer_dict = OrderedDict(zip(self._layer_names, self.layers))
        self._say_if_names_repeat()
        self.params = OrderedDict((layer.name, layer.blobs) for layer in self.layers if layer.blobs)

    def _add_layer(self, index, layer_param):
        """Create layer `index`, connect its bottoms and tops, set it up and record its step."""
        layer = create_layer(layer_param, self.phase)
        layer.said = self._said  # each warning once per net
        layer.check_counts()
        bottom_need = self._connect_bottoms(layer, layer_param)
        overwrite = self._may_overwrite(layer, layer_param)  # reads the bottom's producer
        self._create_tops(layer, layer_param, index)
        bottom_shapes = [self.blobs[b].shape for b in layer_param.bottom]
        self._set_up(layer, bottom_shapes)
        self._set_top_shapes(layer, layer.reshape(bottom_shapes))
        param_need = self._append_params(layer, self._param_owner)
        need = any(bottom_need) or any(param_need)
        for name in layer_param.top:
            self._blob_need_backward[name] = need
        self._set_loss_weights(layer)
        self.layers.append(layer)
        self._layer_names.append(layer.name)
        self.top_names[layer.name] = list(layer_param.top)
        self.bottom_names[layer.name] = list(layer_param.bottom)
        self._steps.append(_Step(layer, layer_param, bottom_need, param_need, need, overwrite))

    def _connect_bottoms(self, layer, layer_param):
        """Check each bottom was produced and not yet consumed; whether each wants a diff."""
        propagate = list(layer_param.propagate_down)
        if propagate and len(propagate) != len(layer_param.bottom):
            raise layer.error("propagate_down must be given once per bottom or not at all")
        bottom_need = []
        for j, name in enumerate(layer_param.bottom):
            if name not in self._available:
                raise layer.error(f'bottom blob "{name}" is not produced by any earlier layer')
            del self._available[name]
            bottom_need.append(self._blob_need_backward[name] and (not propagate or propagate[j]))
        return bottom_need

    def _create_tops(self, layer, layer_param, index):
        """A Blob for each top that is not in place; only in-place layers reuse a name."""
        for j, name in enumerate(layer_param.top):
            in_place = j < len(layer_param.bottom) and layer_param.bottom[j] == name
            if name in self.blobs and not in_place:
                raise layer.error(f'top blob "{name}" is already produced by another layer '
                                  "(only in-place layers may reuse a blob name)")
            if not in_place:
                self.blobs[name] = Blob(device=self._device)
            self._available[name] = True
            self._producer[name] = index
        if layer_param.type == "Input":
            self.inputs.extend(layer_param.top)

    def _set_up(self, layer, bottom_shapes):
        """layer.setup, its parameters made autograd leaves on the net's device; failures as one
        CaffeError naming the layer (out of memory with the size asked for)."""
        try:
            layer.setup(bottom_shapes)
        except (CaffeError, MemoryError) + layer.FAILURES as error:
            if diagnostics.out_of_memory(error):
                size = re.search(r"allocate (\d+) bytes", str(error))
                need = f" ({int(size.group(1)) / 2 ** 30:.1f} GiB)" if size else ""
                raise layer.error(f"out of memory creating its parameters{need}: check "
                                  "num_output and the kernel size") from None
            raise layer.failure(error, "set up", bottom_shapes) from error
        for blob in layer.blobs:
            blob.to(self._device)
            blob.tensor().requires_grad_(True)  # parameters are autograd leaves

    def _may_overwrite(self, layer, layer_param):
        """Whether `layer` may compute its top over its bottom's memory: it is in place in the
        prototxt, has an in_place_activation, and the layer that wrote the bottom does not read
        it again in backward (so only Caffe's own in-place overwrite is seen)."""
        bottoms = list(layer_param.bottom)
        if len(bottoms) != 1 or list(layer_param.top) != bottoms:
            return False
        if layer.in_place_activation() is None:
            return False
        return not self.layers[self._producer[bottoms[0]]].backward_reads_top

    def _link_pooling_masks(self):
        """A Pooling mask top read only by Upsample layers (through Splits) stays in the compact
        one-byte form (a WindowOffsets); any other reader gets Caffe's mask."""
        origin = {}  # blob name -> (layer index, top index) of its producer, through Splits
        for layer in self.layers:
            if layer.type == "Pooling":
                layer.compact_mask = True
        for i, (layer, names) in enumerate(zip(self.layers, self.param.layer)):
            for j, name in enumerate(names.bottom):
                source, top = origin[name]
                pooling = self.layers[source]
                if (pooling.type == "Pooling" and top == 1 and layer.type != "Split"
                        and not (layer.type == "Upsample" and j == 1)):
                    pooling.compact_mask = False
            for t, name in enumerate(names.top):
                origin[name] = origin[names.bottom[0]] if layer.type == "Split" else (i, t)

    def _set_top_shapes(self, layer, top_shapes):
        for name, shape in zip(layer.param.top, top_shapes):
            if shape is not None:
                self.blobs[name].reshape(shape)

    def _append_params(self, layer, param_owner):
        """Register the layer's parameter blobs (sharing by ParamSpec name); whether each learns."""
        need = []
        for k, blob in enumerate(layer.blobs):
            spec = layer.param.param[k] if k < len(layer.param.param) else caffe_pb2.ParamSpec()
            display = f"{layer.name}[{k}]"
            if spec.name and spec.name in param_owner:
                owner = self.learnable_params[param_owner[spec.name]]
                strict = spec.share_mode == caffe_pb2.ParamSpec.STRICT
                if (strict and owner.blob.shape != blob.shape) or owner.blob.count != blob.count:
                    raise layer.error(f'shared parameter "{spec.name}" has shape {blob.shape} '
                                      f"here but {owner.blob.shape} where it was first defined")
                for field in ("lr_mult", "decay_mult"):
                    if spec.HasField(field):
                        if getattr(owner, "has_" + field) and getattr(owner, field) != getattr(spec, field):
                            raise layer.error(f'shared parameter "{spec.name}" has mismatched {field}')
                        setattr(owner, field, getattr(spec, field))
                        setattr(owner, "has_" + field, True)
                layer.blobs[k] = owner.blob
            else:
                if spec.name:
                    param_owner[spec.name] = len(self.learnable_params)
                self.learnable_params.append(_LearnableParam(blob, spec, display))
            need.append(spec.lr_mult != 0)
        return need

    def _set_loss_weights(self, layer):
        weights = list(layer.param.loss_weight)
        if weights and len(weights) != len(layer.param.top):
            raise layer.error("loss_weight must be given once per top or not at all")
        if not weights:
            weights = [layer.default_loss_weight if j == 0 else 0.0
                       for j in range(len(layer.param.top))]
        for name, weight in zip(layer.param.top, weights):
            if weight:
                self.blob_loss_weights[name] = weight
                self._loss_tops.append((name, weight))
                blob = self.blobs[name]
                blob.diff[...] = weight
            else:
                self.blob_loss_weights.setdefault(name, 0.0)

    def _prune_backward(self):
        """Caffe's rule: a layer computes gradients only if it is under a loss and something below it
        wants them."""
        loss_weight_of = dict(self._loss_tops)
        under_loss, skip_backprop = set(), set()
        for step in reversed(self._steps):
            tops = list(step.param.top)
            contributes = any(loss_weight_of.get(t) or t in under_loss for t in tops)
            skip = all(t in skip_backprop for t in tops)
            if step.need_backward and skip and tops:
                step.need_backward = False
                step.bottom_need = [False] * len(step.bottom_need)
            if not contributes:
                step.need_backward = False
            for j, name in enumerate(step.param.bottom):
                if contributes:
                    under_loss.add(name)
                else:
                    step.bottom_need[j] = False
                if not step.bottom_need[j]:
                    skip_backprop.add(name)

    def _force_backward(self):
        for step in self._steps:
            step.need_backward = True
            step.bottom_need = [need or step.layer.allow_force_backward(j)
                                for j, need in enumerate(step.bottom_need)]
            step.param_need = [True] * len(step.layer.blobs)

    # ----- device ------------------------------------------------------------------------------
    def _ensure_device(self):
        """Follow the global mode: move blobs and parameters when set_mode_* changed the device."""
        wanted = mode.device()
        if wanted == self._device:
            return
        self._saved.clear()
        for blob in self.blobs.values():
            blob.to(wanted)
        for layer in self.layers:
            for blob in layer.blobs:
                blob.to(wanted)
        self._device = wanted

    @property
    def device(self):
        return self._device

    # ----- folding per-channel affine layers into convolutions (inference) ---------------------
    def fold_bn(self):
        """Fold INFERENCE-mode BN layers, use_global_stats BatchNorm layers and per-channel Scale
        layers into the Convolution before them: the filters and bias are scaled at each forward
        (from the current parameters) and the folded layers are skipped. A ReLU after them is
        applied in place on the convolution's fresh output (saving a pass that writes a new map).
        Opt-in, for inference.

        Only layers that work in place on the convolution's top, right after it, are folded, so
        every blob a user can read keeps Caffe's value: in place, Caffe overwrites the
        convolution's output too. A forward range that ends inside a folded chain, or starts
        inside one, runs the chain's layers one by one as before. Parameters, snapshots and
        saved weights are unchanged. Backward through a folded layer is refused (unfold_bn()
        first). Returns the names of the folded layers.
        """
        self._folds = folding.fold_bn(self.layers, self.param.layer)
        self._saved.clear()
        return [self._layer_names[j] for node in self._folds.values() for j in node.chain]

    def unfold_bn(self):
        """Undo fold_bn: every layer runs on its own again."""
        self._folds = {}

    def _folded_in(self, start, end):
        """{convolution index: its FoldedConvolution} for the folded chains wholly inside
        start..end, and the indices of the layers they skip."""
        active = {conv: node for conv, node in self._folds.items()
                  if start <= conv and node.chain[-1] <= end}
        return active, {j for node in active.values() for j in node.chain}

    # ----- forward / backward ------------------------------------------------------------------
    def _layer_index(self, name, default):
        if name is None:
            return default
        try:
            return self._layer_names.index(name)
        except ValueError:
            raise CaffeError(f'no layer named "{name}" in net "{self.name}"') from None

    def forward_range(self, start, end):
        """Run layers start..end (inclusive); return the weighted loss of their loss tops.

        Layers that need a gradient record their autograd graph unless the caller disabled
        gradients (torch.no_grad()), which is how tests and inference skip that cost.
        """
        with self.options.kernels():
            return self._run_forward(start, end)

    def _run_forward(self, start, end):
        self._ensure_device()
        record = torch.is_grad_enabled()
        folded, skipped = self._folded_in(start, end)
        loss = 0.0
        for i in range(start, end + 1):
            self._run_callbacks("before_forward", i)
            if i in skipped:  # computed by the convolution it is folded into (in place)
                self._saved.pop(i, None)
            else:
                loss += self._forward_layer(i, record, folded.get(i))
            self._run_callbacks("after_forward", i)
        return loss

    def _forward_layer(self, i, record, fold):
        """Run layer i (with `fold`, the layers folded into it), write its tops; its loss."""
        layer, names = self.layers[i], self.param.layer[i]
        try:
            tops = self._layer_tops(i, record, fold)
        except BadLabelsError as error:
            raise CaffeError(f"{error}; {diagnostics.label_origin(self, i, error)}") from None
        except (MemoryError,) + layer.FAILURES as error:
            if diagnostics.out_of_memory(error):
                raise diagnostics.out_of_memory_error(self, i, "forward") from None
            raise layer.failure(error, "run forward",
                                [self.blobs[b].shape for b in names.bottom]) from error
        for name, top in zip(names.top, tops):
            if top is not None:
                self.blobs[name].set_tensor(top)
        return sum(self.blob_loss_weights.get(name, 0.0)
                   * float(self.blobs[name].tensor().detach().sum())
                   for name in names.top if self.blob_loss_weights.get(name, 0.0))

    def _layer_tops(self, i, record, fold):
        """Layer i's tops, its autograd graph kept for backward when it is recorded."""
        layer = self.layers[i]
        overwrite = self._steps[i].overwrite
        if (fold is None and record and self._steps[i].need_backward
                and not layer.backward_reads_bottom_blob):
            self._saved[i] = self._record_forward(i, overwrite)
            return self._saved[i][1]
        self._saved.pop(i, None)
        bottoms = [self.blobs[b].tensor() for b in self.param.layer[i].bottom]
        with torch.no_grad():
            if fold is not None:
                return self._layer_forward(fold, bottoms)
            return self._layer_forward(layer, bottoms, overwrite)

    def _record_forward(self, index, overwrite=False):
        """(bottom leaves, tops): layer `index` run from its bottom blobs with its autograd
        graph recorded. Each layer's graph starts at its own bottoms: backward runs layer by
        layer, as Caffe's."""
        bottoms = [self.blobs[b].graph_input() for b in self.param.layer[index].bottom]
        leaves = [b.requires_grad_(need and b.is_floating_point())
                  for b, need in zip(bottoms, self._steps[index].bottom_need)]
        with torch.enable_grad():
            return leaves, self._layer_forward(self.layers[index], leaves, overwrite)

    def _recomputed_graph(self, index):
        """For a backward with no recorded forward (none yet, one without gradients, or a layer
        that `backward_reads_bottom_blob`): Caffe's backward reads the blobs as they are, so the
        layer is recomputed from its bottom blobs (an in-place layer's bottom blob holds its
        top, as in Caffe) without writing its tops back. A layer without bottoms (a data layer: rerunning it would read
        the next batch) gets None: it has nothing to backpropagate into."""
        if not self.param.layer[index].bottom:
            if any(self._steps[index].param_need):
                raise CaffeError(f'layer "{self._layer_names[index]}": backward() of its '
                                 "parameters needs a forward() with gradients enabled first")
            return None
        return self._record_forward(index)

    def _layer_forward(self, layer, bottoms, overwrite=False):
        """layer.forward (a layer's, or a fused node's), or with `overwrite` its
        in_place_activation over bottom 0, under bfloat16 autocast when the net's options
        compute bfloat16 (layers that keep float32, losses and scores, get float32 bottoms)."""
        forward = layer.forward_over_bottom if overwrite else layer.forward
        if not self.options.computes_bf16(self._device):
            return forward(bottoms)
        if not layer.low_precision:
            return forward([b.float() if b.is_floating_point() else b for b in bottoms])
        with torch.autocast(self._device.type, dtype=torch.bfloat16):
            return forward(bottoms)

    def backward_range(self, start, end, keep_graph=True):
        """Backpropagate layers start down to end (inclusive), Caffe's Net::BackwardFromTo.

        Each layer reads its tops' diffs and writes its bottoms' diffs (overwriting, as Caffe's
        layers do; Split layers sum) and adds its parameter gradients to the parameter diffs.
        `keep_graph=False` frees each layer's graph as it goes (the solver's path).
        """
        with self.options.kernels():
            self._run_backward(start, end, keep_graph)

    def _run_backward(self, start, end, keep_graph):
        self._ensure_device()
        for i in range(start, end - 1, -1):
            self._run_callbacks("before_backward", i)
            if self._steps[i].need_backward:
                self._backward_layer(i, keep_graph)
            self._run_callbacks("after_backward", i)

    def _backward_layer(self, i, keep_graph):
        """Layer i's bottom diffs (overwritten) and parameter diffs (added, or overwritten)."""
        layer = self.layers[i]
        if i not in self._saved and (i in self._folds or any(
                i in node.chain for node in self._folds.values())):
            raise CaffeError(f'layer "{layer.name}": folded by fold_bn(), it has no backward; '
                             "call net.unfold_bn() and forward() again to backpropagate")
        graph = self._saved[i] if i in self._saved else self._recomputed_graph(i)
        if graph is None:
            return
        leaves, tops = graph
        names = self.param.layer[i]
        outputs, grads = [], []
        for name, top in zip(names.top, tops):
            if top is not None and top.requires_grad:
                outputs.append(top)
                grads.append(self.blobs[name].diff_tensor().to(top.dtype))
        bottom_targets = [(name, leaf) for name, leaf, need in
                          zip(names.bottom, leaves, self._steps[i].bottom_need)
                          if need and leaf.requires_grad]
        param_targets = [blob for blob, need in zip(layer.blobs, self._steps[i].param_need)
                         if need]
        inputs = [leaf for _, leaf in bottom_targets] + [b.tensor() for b in param_targets]
        if not outputs:  # nothing above depends on this layer (Silence): zero gradients
            for name, leaf in bottom_targets:
                self.blobs[name].set_diff_tensor(torch.zeros_like(leaf))
            return
        if not inputs:
            return
        try:
            results = torch.autograd.grad(outputs, inputs, grads, allow_unused=True,
                                          retain_graph=keep_graph)
        except (MemoryError,) + layer.FAILURES as error:
            if diagnostics.out_of_memory(error):
                raise diagnostics.out_of_memory_error(self, i, "backward") from None
            raise layer.failure(error, "run backward") from error
        if not keep_graph:
            self._saved.pop(i, None)
        for (name, leaf), grad in zip(bottom_targets, results):
            self.blobs[name].set_diff_tensor(torch.zeros_like(leaf) if grad is None else grad)
        self._add_param_diffs(layer, param_targets, results[len(bottom_targets):])

    @staticmethod
    def _add_param_diffs(layer, blobs, grads):
        for blob, grad in zip(blobs, grads):
            if grad is None:
                continue
            if layer.accumulates_param_diffs:
                diff = blob.diff_tensor()
                diff += grad
            else:
                blob.set_diff_tensor(grad.detach().clone())

    # ----- Caffe's layer callbacks (pycaffe's Net.before_forward & co.) ------------------------
    def before_forward(self, callback):
        """Call callback(i) before layer i runs forward, as Caffe's Net::add_before_forward."""
        self._callbacks["before_forward"].append(callback)

    def after_forward(self, callback):
        """Call callback(i) after layer i ran forward."""
        self._callbacks["after_forward"].append(callback)

    def before_backward(self, callback):
        """Call callback(i) before layer i runs backward."""
        self._callbacks["before_backward"].append(callback)

    def after_backward(self, callback):
        """Call callback(i) after layer i ran backward."""
        self._callbacks["after_backward"].append(callback)

    def _run_callbacks(self, when, index):
        for callback in self._callbacks[when]:
            callback(index)

    def forward(self, blobs=None, start=None, end=None, **kwargs):
        """pycaffe's Net.forward: set inputs from kwargs, run start..end, return the outputs' data."""
        start_index = self._layer_index(start, 0)
        end_index = self._layer_index(end, len(self.layers) - 1)
        wanted = list(blobs or [])
        outputs = (self.top_names[end] if end is not None else self.outputs) + wanted
        self._assign(kwargs, self.inputs, "forward(): input blob", "data")
        self.forward_range(start_index, end_index)
        self.keep_views()
        return {name: self.blobs[name].data for name in dict.fromkeys(outputs)}

    def backward(self, diffs=None, start=None, end=None, **kwargs):
        """pycaffe's Net.backward: set output diffs from kwargs, backpropagate, return input diffs."""
        start_index = self._layer_index(start, len(self.layers) - 1)
        end_index = self._layer_index(end, 0)
        wanted = list(diffs or [])
        outputs = (self.bottom_names[end] if end is not None else self.inputs) + wanted
        self._assign(kwargs, self.outputs, "backward(): top diff", "diff")
        self.backward_range(start_index, end_index)
        self.keep_views()
        return {name: self.blobs[name].diff for name in dict.fromkeys(outputs)}

    def keep_views(self):
        """Let numpy views of the blobs taken earlier see the values written since (Blob.keep_views)."""
        for blob in self.blobs.values():
            blob.keep_views()

    def _assign(self, values, expected, what, field):
        """Write keyword arrays into the named blobs' data or diff, pycaffe's checks first."""
        if not values:
            return
        if set(values) != set(expected):
            raise CaffeError(f"{what} arguments {sorted(values)} do not match {expected}")
        for name, value in values.items():
            shape = self.blobs[name].shape
            if shape and getattr(value, "shape", (None,))[:1] != shape[:1]:
                raise CaffeError(f'blob "{name}": array of shape {getattr(value, "shape", None)} '
                                 f"is not batch sized for {shape}")
            getattr(self.blobs[name], field)[...] = value

    def reshape(self):
        """Recompute every blob's shape from the inputs' (Caffe's Net::Reshape)."""
        for layer in self.layers:
            bottom_shapes = [self.blobs[b].shape for b in layer.param.bottom]
            self._set_top_shapes(layer, layer.reshape(bottom_shapes))

    def clear_param_diffs(self):
        """Zero every learnable parameter's diff (Caffe's ClearParamDiffs)."""
        for param in self.learnable_params:
            param.blob.diff_tensor().zero_()

    # ----- weights -----------------------------------------------------------------------------
    def copy_from(self, weights, hdf5=None):
        """Copy parameters by layer name from a .caffemodel (path or NetParameter), shape-checked;
        a path in Caffe's HDF5 layout when it ends in .h5 or `hdf5` is true."""
        source = (weights if isinstance(weights, caffe_pb2.NetParameter)
                  else io.read_caffemodel(str(weights), hdf5=hdf5))
        where = "<NetParameter>" if isinstance(weights, caffe_pb2.NetParameter) else str(weights)
        copied, ignored = [], []
        for source_layer in source.layer:
            layer = self._first_layer_named(source_layer.name)
            if layer is None or not source_layer.blobs:
                if source_layer.blobs:
                    ignored.append(source_layer.name)
                continue
            if len(layer.blobs) != len(source_layer.blobs):
                raise CaffeError(f'{where}: layer "{layer.name}" has {len(source_layer.blobs)} '
                                 f"parameter blobs in the weights but {len(layer.blobs)} in the net")
            for k, (blob, proto) in enumerate(zip(layer.blobs, source_layer.blobs)):
                array = io.blobproto_to_array(proto)
                if tuple(array.shape) != tuple(blob.shape):
                    legacy = not proto.HasField("shape")
                    if legacy and array.size == blob.count:  # Caffe compares legacy 4-D shapes
                        array = array.reshape(blob.shape)
                    else:
                        raise CaffeError(f'{where}: cannot copy parameter {k} of layer '
                                         f'"{layer.name}": shape {tuple(array.shape)} in the '
                                         f"weights, {tuple(blob.shape)} in the net")
                blob.data[...] = array
            copied.append(layer.name)
        return copied, ignored

    def _first_layer_named(self, name):
        """The first layer of that name, as Caffe's weight copying and sharing find it."""
        return next((layer for layer in self.layers if layer.name == name), None)

    def to_proto(self, write_diff=False):
        """The net as a NetParameter with its parameter blobs (Caffe's Net::ToProto)."""
        out = caffe_pb2.NetParameter()
        out.name = self.name
        for layer in self.layers:
            layer_param = out.layer.add()
            layer_param.CopyFrom(layer.param)
            del layer_param.blobs[:]
            for blob in layer.blobs:
                layer_param.blobs.add().CopyFrom(
                    io.array_to_blobproto(blob.data, blob.diff if write_diff else None))
        return out

    def save(self, path):
        """Write the parameters as a binary .caffemodel Caffe can read."""
        io.write_caffemodel(str(path), self.to_proto())

    def share_with(self, other):
        """Use `other`'s parameter blobs in the layers of the same name (Caffe's ShareTrainedLayersWith)."""
        for source in other.layers:
            layer = self._first_layer_named(source.name)
            if layer is None or not source.blobs:
                continue
            if len(source.blobs) != len(layer.blobs):
                raise CaffeError(f'layer "{layer.name}": {len(source.blobs)} parameter blobs in '
                                 f"the source net, {len(layer.blobs)} here")
            for k, blob in enumerate(source.blobs):
                if blob.shape != layer.blobs[k].shape:
                    raise CaffeError(f'layer "{layer.name}": cannot share parameter {k}: shape '
                                     f"{blob.shape} vs {layer.blobs[k].shape}")
                layer.blobs[k] = blob
        self.params = OrderedDict((layer.name, layer.blobs) for layer in self.layers if layer.blobs)
