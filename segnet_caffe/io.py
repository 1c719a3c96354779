"""Caffe's files: text prototxt nets and solvers, binary caffemodel / solverstate / binaryproto.

Everything is parsed and written by protobuf itself (`text_format` and the binary wire
format, with the schema in `proto/caffe.proto`); this module adds what Caffe adds around it:

* one-line `CaffeError`s naming the file (and line:column for text) at fault;
* the upgrades Caffe 1.0 applies when it reads a net (`upgrade_net`): V1 `layers { type:
  CONVOLUTION }` to `layer { type: "Convolution" }`, legacy data-layer transformation
  fields to `transform_param`, legacy net inputs (`input` + `input_shape` / `input_dim`) to
  an "Input" layer named "input", and 3-parameter BatchNorm layers to lr_mult 0;
* blob <-> numpy conversion with Caffe's shape rules, and atomic file writes;
* the rest of pycaffe's caffe.io, under its names: BlobProtoVector strings here, Datums from
  `datum`, and images and the Transformer from `preprocessing`.

Paths are used as given: like Caffe, relative paths resolve against the working directory.
"""
import difflib
import math
import os
import re
import secrets
from io import BytesIO  # the standard library's io (this module is segnet_caffe.io)

import numpy as np
from google.protobuf import text_format
from google.protobuf import unknown_fields
from google.protobuf.message import DecodeError

from .datum import array_to_datum, datum_to_array, decode_datum
from .errors import CaffeError
from .preprocessing import Transformer, load_image, oversample, resize_image
from .proto import caffe_pb2

__all__ = [
    "caffe_pb2", "parse_text", "read_prototxt", "read_net_prototxt", "read_solver_prototxt",
    "parse_net_text", "upgrade_net", "read_caffemodel", "read_solverstate", "read_binaryproto",
    "write_binaryproto", "blobproto_to_array", "array_to_blobproto", "atomic_write_bytes",
    "stale_temporary_files", "write_caffemodel", "write_prototxt", "BlobProtoError",
    "arraylist_to_blobprotovector_str", "blobprotovector_str_to_arraylist", "array_to_datum",
    "datum_to_array", "decode_datum", "Transformer", "load_image", "oversample", "resize_image",
]


# ----------------------------------------------------------------------------- text

def parse_text(text, message, source_name="<string>"):
    """Parse protobuf text format `text` into `message` (merging nothing: it is cleared first) and
    return it. Errors raise CaffeError "source_name:line:col: what"."""
    message.Clear()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as error:
        raise CaffeError(_describe_parse_error(error, source_name, text)) from None
    return message


def read_prototxt(path, message):
    """Read the text-format file `path` into `message` and return it (no upgrade)."""
    return parse_text(_read_text(path), message, os.fspath(path))


def read_net_prototxt(path):
    """Read a text NetParameter file and upgrade it as Caffe does (see `upgrade_net`)."""
    net = read_prototxt(path, caffe_pb2.NetParameter())
    _upgrade_net_in_place(net, os.fspath(path))
    return net


def read_solver_prototxt(path):
    """Read a text SolverParameter file. Its nets (inline or by file) are left as written; the
    legacy `solver_type` enum is left for the solver to interpret."""
    return read_prototxt(path, caffe_pb2.SolverParameter())


def parse_net_text(text, source_name="<string>"):
    """Parse a NetParameter from text (NetSpec output, tests) and upgrade it like a file."""
    net = parse_text(text, caffe_pb2.NetParameter(), source_name)
    _upgrade_net_in_place(net, source_name)
    return net


def _read_text(path):
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as error:
        raise CaffeError(f"{path}: not a text file (byte {error.start} is not UTF-8)") from None
    except OSError as error:
        raise CaffeError(f"{path}: cannot read ({error.strerror or error})") from None


_UNKNOWN_FIELD = re.compile(r'Message type "([\w.]+)" has no field named "([^"]+)"')
_UNKNOWN_ENUM_VALUE = re.compile(r'Enum type "([\w.]+)" has no value named ([\w-]+)')


def _describe_parse_error(error, source_name, text):
    """One line "source:line:col: what" from a text_format.ParseError, with a "did you mean"
    for misspelt field names and enum values."""
    line, column = error.GetLine(), error.GetColumn()
    what = str(error)
    if line is not None:
        # The exception text starts "line:col : ", sometimes then "'<the line>': ".
        what = re.sub(r"^\d+(:\d+)? : ", "", what)
        lines = text.splitlines()
        quoted = f"'{lines[line - 1]}': " if 0 < line <= len(lines) else None
        if quoted and what.startswith(quoted):
            what = what[len(quoted):]
    match = _UNKNOWN_FIELD.search(what)
    if match:
        type_name, field = match.groups()
        what = f'unknown field "{field}" in {_short_type_name(type_name)}'
        what += _suggestion(field, _field_names(type_name))
    else:
        match = _UNKNOWN_ENUM_VALUE.search(what)
        if match:
            type_name, value = match.groups()
            what = f"unknown value {value} for enum {_short_type_name(type_name)}"
            what += _suggestion(value, _enum_value_names(type_name), quote="")
    what = " ".join(what.split())
    where = source_name if line is None else f"{source_name}:{line}" + (
        "" if column is None else f":{column}")
    return f"{where}: {what}"


def _short_type_name(full_name):
    prefix = caffe_pb2.DESCRIPTOR.package + "."
    return full_name[len(prefix):] if full_name.startswith(prefix) else full_name


def _field_names(full_name):
    try:
        return list(caffe_pb2.DESCRIPTOR.pool.FindMessageTypeByName(full_name).fields_by_name)
    except KeyError:
        return []


def _enum_value_names(full_name):
    try:
        return list(caffe_pb2.DESCRIPTOR.pool.FindEnumTypeByName(full_name).values_by_name)
    except KeyError:
        return []


def _suggestion(name, candidates, quote='"'):
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f"; did you mean {quote}{close[0]}{quote}?" if close else ""


# ------------------------------------------------------------------------ upgrades

# Caffe's UpgradeV1LayerType: V1 enum name -> layer type string (BN: the SegNet fork's).
_V1_LAYER_TYPES = {
    "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BN": "BN", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution", "DATA": "Data", "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise",
    "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice",
    "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}

# V1 data layers whose legacy preprocessing fields move to transform_param
# (Caffe's UpgradeNetDataTransformation).
_V1_DATA_LAYER_PARAMS = {"DATA": "data_param", "IMAGE_DATA": "image_data_param",
                         "WINDOW_DATA": "window_data_param"}
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


def upgrade_net(net_param, source_name="<NetParameter>"):
    """Return an upgraded copy of `net_param`, as Caffe 1.0's UpgradeNetAsNeeded does:

    * V1 `layers` (enum types, blobs_lr, weight_decay, param names) become `layer`s with type
      strings and ParamSpecs (lr_mult, decay_mult, name, share_mode); V1 data layers' legacy
      scale / mean_file / crop_size / mirror move to transform_param first;
    * legacy inputs (`input` with `input_shape`, or with 4 `input_dim` each) become one layer
      `name: "input" type: "Input"` placed first, whose tops are the inputs and whose
      input_param holds the shapes; `input` without shapes (old caffemodels) is dropped;
    * BatchNorm layers with 3 ParamSpecs get lr_mult 0 and decay_mult 0 on each.

    V0 layers, nets mixing `layer` and `layers`, V1 type NONE and inconsistent input
    declarations raise CaffeError naming `source_name` (and the layer)."""
    net = caffe_pb2.NetParameter()
    net.CopyFrom(net_param)
    _upgrade_net_in_place(net, source_name)
    return net


def _upgrade_net_in_place(net, source):
    if len(net.layers):
        _upgrade_v1_layers(net, source)
    if len(net.input) or len(net.input_shape) or len(net.input_dim):
        _upgrade_net_input(net, source)
    for layer in net.layer:
        if layer.type == "BatchNorm" and len(layer.param) == 3:
            for spec in layer.param:
                spec.lr_mult = 0.0
                spec.decay_mult = 0.0


def _upgrade_v1_layers(net, source):
    if len(net.layer):
        raise CaffeError(f"{source}: the net mixes `layer` and legacy V1 `layers` definitions; "
                         'write them all as layer { type: "..." }')
    upgraded = []
    for index, v1 in enumerate(net.layers):
        name = v1.name or f"#{index}"
        if v1.HasField("layer"):
            raise CaffeError(f'{source}: layer "{name}" is in the V0 format (layers {{ layer '
                             "{ ... } }), which cannot be upgraded here; convert it with "
                             "Caffe's upgrade_net_proto_text")
        upgraded.append(_upgrade_v1_layer(v1, name, source))
    del net.layers[:]
    net.layer.extend(upgraded)


def _upgrade_v1_layer(v1, name, source):
    layer = caffe_pb2.LayerParameter()
    layer.bottom.extend(v1.bottom)
    layer.top.extend(v1.top)
    if v1.HasField("name"):
        layer.name = v1.name
    layer.include.extend(v1.include)
    layer.exclude.extend(v1.exclude)
    if v1.HasField("type"):
        type_name = caffe_pb2.V1LayerParameter.LayerType.Name(v1.type)
        if type_name not in _V1_LAYER_TYPES:
            raise CaffeError(f'{source}: layer "{name}" has V1 type {type_name}, which names '
                             "no layer type")
        layer.type = _V1_LAYER_TYPES[type_name]
    layer.blobs.extend(v1.blobs)

    def spec(i):
        while len(layer.param) <= i:
            layer.param.add()
        return layer.param[i]

    for i, param_name in enumerate(v1.param):
        spec(i).name = param_name
    for i, mode in enumerate(v1.blob_share_mode):
        spec(i).share_mode = caffe_pb2.ParamSpec.DimCheckMode.Value(
            caffe_pb2.V1LayerParameter.DimCheckMode.Name(mode))
    for i, lr in enumerate(v1.blobs_lr):
        spec(i).lr_mult = lr
    for i, decay in enumerate(v1.weight_decay):
        spec(i).decay_mult = decay
    layer.loss_weight.extend(v1.loss_weight)

    data_param = _V1_DATA_LAYER_PARAMS.get(
        caffe_pb2.V1LayerParameter.LayerType.Name(v1.type) if v1.HasField("type") else "")
    for field, value in v1.ListFields():
        if field.name.endswith("_param") and field.name != "param":
            getattr(layer, field.name).CopyFrom(value)
    if data_param is not None:
        legacy = getattr(layer, data_param)
        if any(legacy.HasField(f) for f in _TRANSFORM_FIELDS):
            for f in _TRANSFORM_FIELDS:
                if legacy.HasField(f):
                    setattr(layer.transform_param, f, getattr(legacy, f))
                    legacy.ClearField(f)
    return layer


def _upgrade_net_input(net, source):
    inputs, shapes, dims = list(net.input), list(net.input_shape), list(net.input_dim)
    if not inputs:
        raise CaffeError(f"{source}: input_shape / input_dim given without any `input` name")
    if shapes and dims:
        raise CaffeError(f"{source}: give the inputs' shapes with input_shape or with the "
                         "legacy input_dim, not both")
    if shapes and len(shapes) != len(inputs):
        raise CaffeError(f"{source}: {len(inputs)} input(s) but {len(shapes)} input_shape(s); "
                         "give one input_shape per input")
    if dims and len(dims) != 4 * len(inputs):
        raise CaffeError(f"{source}: {len(inputs)} input(s) need {4 * len(inputs)} input_dim "
                         f"values (num, channels, height, width each), got {len(dims)}")
    if shapes or dims:
        layer = caffe_pb2.LayerParameter(name="input", type="Input")
        layer.top.extend(inputs)
        for i in range(len(inputs)):
            if shapes:
                layer.input_param.shape.add().CopyFrom(shapes[i])
            else:
                layer.input_param.shape.add().dim.extend(dims[4 * i:4 * i + 4])
        layers = [layer] + list(net.layer)
        del net.layer[:]
        net.layer.extend(layers)
    net.ClearField("input")
    net.ClearField("input_shape")
    net.ClearField("input_dim")


# --------------------------------------------------------------------------- binary

def _is_hdf5(path, hdf5):
    """Caffe chooses the HDF5 layout by the `.h5` extension unless the caller says which."""
    return os.fspath(path).endswith(".h5") if hdf5 is None else hdf5


def read_caffemodel(path, hdf5=None):
    """Read a binary NetParameter (a .caffemodel: layer definitions with their blobs) and
    upgrade it (see `upgrade_net`: old caffemodels hold V1 `layers`). An HDF5 file (`.h5`, or
    `hdf5=True`) is read in Caffe's HDF5 layout (layer names and blobs only)."""
    if _is_hdf5(path, hdf5):
        return _read_hdf5_caffemodel(os.fspath(path))
    net = _read_binary(path, caffe_pb2.NetParameter(), "NetParameter")
    _upgrade_net_in_place(net, os.fspath(path))
    return net


def read_solverstate(path):
    """Read a SolverState snapshot: binary protobuf, or Caffe's HDF5 layout for `.h5`."""
    if os.fspath(path).endswith(".h5"):
        return _read_hdf5_solverstate(os.fspath(path))
    return _read_binary(path, caffe_pb2.SolverState(), "SolverState")


def write_solverstate(path, state):
    """Write a SolverState atomically: binary protobuf, or Caffe's HDF5 layout for `.h5`."""
    if os.fspath(path).endswith(".h5"):
        atomic_write_bytes(path, _hdf5_bytes(path, lambda f: _fill_hdf5_solverstate(f, state)))
    else:
        atomic_write_bytes(path, state.SerializeToString())


# ---------------------------------------------------------------------------- HDF5 (snapshot_format: HDF5)

def _h5py(path):
    try:
        import h5py
    except ImportError:
        raise CaffeError(f"{path}: HDF5 snapshots need h5py (pip install h5py), or use "
                         "snapshot_format: BINARYPROTO") from None
    return h5py


def _hdf5_bytes(path, fill):
    """An HDF5 file built in memory by `fill(file)`, as bytes (so it can be written atomically)."""
    buffer = BytesIO()
    with _h5py(path).File(buffer, "w") as f:
        fill(f)
    return buffer.getvalue()


def _open_hdf5(path):
    h5py = _h5py(path)
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise CaffeError(f"{path}: not a readable HDF5 file ({error})") from None


def _fill_hdf5_caffemodel(f, net_param):
    # Caffe's Net::ToHDF5: /data/<layer name>/<param index>, a group for every layer.
    data = f.create_group("data")
    for layer in net_param.layer:
        group = data.create_group(layer.name)
        for i, blob in enumerate(layer.blobs):
            group.create_dataset(str(i), data=blobproto_to_array(blob))


def _read_hdf5_caffemodel(path):
    net = caffe_pb2.NetParameter()
    with _open_hdf5(path) as f:
        if "data" not in f:
            raise CaffeError(f'{path}: no "data" group: not a Caffe HDF5 caffemodel')
        for name, group in f["data"].items():
            layer = net.layer.add(name=name)
            for key in sorted(group, key=int):
                layer.blobs.add().CopyFrom(array_to_blobproto(group[key][()]))
    return net


def _fill_hdf5_solverstate(f, state):
    # Caffe's SnapshotSolverStateToHDF5: iter, learned_net, current_step, /history/<index>.
    f.create_dataset("iter", data=np.array([state.iter], np.int32))
    f.create_dataset("learned_net", data=state.learned_net)
    f.create_dataset("current_step", data=np.array([state.current_step], np.int32))
    history = f.create_group("history")
    for i, blob in enumerate(state.history):
        history.create_dataset(str(i), data=blobproto_to_array(blob))


def _read_hdf5_solverstate(path):
    state = caffe_pb2.SolverState()
    with _open_hdf5(path) as f:
        try:
            state.iter = int(np.asarray(f["iter"][()]).reshape(-1)[0])
            state.current_step = int(np.asarray(f["current_step"][()]).reshape(-1)[0])
            learned = f["learned_net"][()]
            state.learned_net = learned.decode() if isinstance(learned, bytes) else str(learned)
            for key in sorted(f["history"], key=int):
                state.history.add().CopyFrom(array_to_blobproto(f["history"][key][()]))
        except KeyError as error:
            raise CaffeError(f"{path}: not a Caffe HDF5 solverstate (missing {error})") from None
    return state


def read_binaryproto(path):
    """Read a binary BlobProto file (e.g. a mean file) as a float32 numpy array."""
    path = os.fspath(path)
    return blobproto_to_array(_read_binary(path, caffe_pb2.BlobProto(), "BlobProto"), name=path)


def write_binaryproto(path, array):
    """Write `array` as a binary BlobProto file (shape + float data, as Caffe writes it)."""
    atomic_write_bytes(path, array_to_blobproto(array).SerializeToString())


def _read_binary(path, message, kind):
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except (OSError, ValueError) as error:  # ValueError: a NUL byte in the path
        shown = repr(path) if "\0" in path else path
        reason = getattr(error, "strerror", None) or error
        raise CaffeError(f"{shown}: cannot read ({reason})") from None
    if not data:
        raise CaffeError(f"{path}: empty file, not a Caffe binary {kind}")
    try:
        message.ParseFromString(data)
    except DecodeError as error:
        detail = str(error).split(": ")[-1].strip() or "undecodable"
        raise CaffeError(f"{path}: not a Caffe binary {kind} ({detail}: the file is truncated "
                         f"or corrupt{_looks_like_text(data)})") from None
    unknown = [field.field_number for field in unknown_fields.UnknownFieldSet(message)]
    if unknown:
        raise CaffeError(f"{path}: not a Caffe binary {kind} (field number {unknown[0]} is "
                         f"not part of {kind})")
    return message


def _looks_like_text(data):
    """A hint for a text file given where a binary one is expected."""
    head = data[:512]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    if all(c.isprintable() or c.isspace() for c in text):
        return ", or a text file (a prototxt?) where a binary file is expected"
    return ""


class BlobProtoError(CaffeError, ValueError):
    """A BlobProto whose values do not fill its shape: a CaffeError, and a ValueError as
    pycaffe's blobproto_to_array raises (numpy's reshape)."""


def blobproto_to_array(blob, return_diff=False, name="BlobProto"):
    """A BlobProto's data (or diff) as a float32 numpy array of the blob's shape (pycaffe's,
    with a `name` for the blob in errors).

    Shape as Caffe's Blob::FromProto and pycaffe: (num, channels, height, width) when any legacy
    4-D field is set, else `shape.dim` (no shape: a 0-d array of the one value). Values that do
    not fill the shape raise BlobProtoError, a ValueError as pycaffe's. Where pycaffe differs:
    it returns float64 (Caffe's blobs are float32, as here) and ignores `double_data` /
    `double_diff`, which are read here when present; a blob written without diff gives zeros
    for `return_diff=True` (a fresh Caffe blob's diff), where pycaffe raises ValueError."""
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        shape = (blob.num, blob.channels, blob.height, blob.width)
    else:
        shape = tuple(blob.shape.dim)
    if any(d < 0 for d in shape):
        raise BlobProtoError(f"{name}: negative dimension in shape {shape}")
    count = math.prod(shape)
    kind = "diff" if return_diff else "data"
    doubles = blob.double_diff if return_diff else blob.double_data
    values = doubles if len(doubles) else (blob.diff if return_diff else blob.data)
    if return_diff and not len(values):
        return np.zeros(shape, dtype=np.float32)
    if len(values) != count:
        raise BlobProtoError(f"{name}: shape {shape} holds {count} values but the blob has "
                             f"{len(values)} {kind} values")
    dtype = np.float64 if values is doubles else np.float32
    return np.fromiter(values, dtype=dtype, count=count).astype(np.float32).reshape(shape)


def array_to_blobproto(arr, diff=None):
    """A BlobProto holding `arr` as Caffe 1.0's Blob::ToProto writes it: `shape { dim }` (no
    shape at all for a 0-d array, no legacy 4-D fields) and float `data`; float `diff` too
    when `diff` (same shape) is given. Accepts numpy arrays, lists and CPU torch tensors."""
    arr = _as_float32(arr)
    blob = caffe_pb2.BlobProto()
    if arr.ndim:
        blob.shape.dim.extend(int(d) for d in arr.shape)
    blob.data.extend(arr.ravel().tolist())
    if diff is not None:
        diff = _as_float32(diff)
        if diff.shape != arr.shape:
            raise CaffeError(f"array_to_blobproto: diff shape {diff.shape} differs from data "
                             f"shape {arr.shape}")
        blob.diff.extend(diff.ravel().tolist())
    return blob


def _as_float32(values):
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float32)


def arraylist_to_blobprotovector_str(arraylist):
    """The arrays as a serialized BlobProtoVector (bytes), each as array_to_blobproto writes it
    (pycaffe's)."""
    vector = caffe_pb2.BlobProtoVector()
    vector.blobs.extend(array_to_blobproto(array) for array in arraylist)
    return vector.SerializeToString()


def blobprotovector_str_to_arraylist(str):  # noqa: A002  pycaffe's parameter name
    """The arrays of a serialized BlobProtoVector (pycaffe's), as blobproto_to_array gives
    them; bytes that are not one raise protobuf's DecodeError, as in pycaffe."""
    vector = caffe_pb2.BlobProtoVector()
    try:
        vector.ParseFromString(str)
    except DecodeError as error:
        raise DecodeError(f"blobprotovector_str_to_arraylist: not a serialized BlobProtoVector "
                          f"({error})") from None
    return [blobproto_to_array(blob, name=f"BlobProtoVector blob {i}")
            for i, blob in enumerate(vector.blobs)]


# ---------------------------------------------------------------------------- writes

def _no_fault(temporary, path):
    """Nothing: the fault-injection point of atomic_write_bytes (tests/test_recovery.py makes a
    process die there, between the complete temporary file and the rename)."""


before_rename = _no_fault


def atomic_write_bytes(path, data):
    """Write `data` to `path` atomically: a temporary file in the same folder, flushed and
    fsync'ed, then renamed over `path` (a reader sees the old file or the new one, never a
    partial one). The folder must exist (Caffe does not create it either)."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    temp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}."
                                f"{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # mode per umask
    except OSError as error:
        raise CaffeError(f"{path}: cannot write ({error.strerror or error})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        before_rename(temp, path)
        os.replace(temp, path)
    except BaseException as error:
        try:
            os.unlink(temp)
        except OSError:
            pass
        if isinstance(error, OSError):
            raise CaffeError(f"{path}: cannot write ({error.strerror or error})") from None
        raise
    _fsync_folder(folder)


def stale_temporary_files(folder, prefix):
    """The temporary files in `folder` that atomic_write_bytes left for targets whose names start
    with `prefix` when its process was killed mid-write (that process no longer runs)."""
    pattern = re.compile(r"\.(.+)\.(\d+)\.[0-9a-f]{8}\.tmp")
    stale = []
    for name in sorted(os.listdir(folder)):
        match = pattern.fullmatch(name)
        if match and match.group(1).startswith(prefix) and not _process_runs(int(match.group(2))):
            stale.append(os.path.join(folder, name))
    return stale


def _process_runs(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    return True


def _fsync_folder(folder):
    # Make the rename itself durable; not every platform or file system allows it.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_caffemodel(path, net_param, hdf5=None):
    """Write a NetParameter as a binary .caffemodel, atomically; in Caffe's HDF5 layout
    (parameters only) for a `.h5` path or `hdf5=True`."""
    if not isinstance(net_param, caffe_pb2.NetParameter):
        raise TypeError(f"write_caffemodel needs a caffe_pb2.NetParameter, got "
                        f"{type(net_param).__name__}")
    if _is_hdf5(path, hdf5):
        atomic_write_bytes(path, _hdf5_bytes(path, lambda f: _fill_hdf5_caffemodel(f, net_param)))
    else:
        atomic_write_bytes(path, net_param.SerializeToString())


def write_prototxt(path, message):
    """Write any Caffe message in protobuf text format (as Caffe's WriteProtoToTextFile),
    atomically."""
    atomic_write_bytes(path, text_format.MessageToString(message).encode("utf-8"))
