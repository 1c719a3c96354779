"""segnet_caffe.io: text and binary files, Caffe's upgrades, blob conversion, atomic writes."""
import os

import numpy as np
import pytest

from segnet_caffe import io
from segnet_caffe.errors import CaffeError
from segnet_caffe.proto import caffe_pb2

MISSPELT = """name: "net"
layer {
  name: "conv"
  type: "Convolution"
  bottom: "data"
  top: "conv"
  convolution_parm { num_output: 2 }
}
"""


def error_text(call, *args):
    with pytest.raises(CaffeError) as caught:
        call(*args)
    message = str(caught.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------ text files

def test_unknown_field_names_place_and_suggests(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(MISSPELT)
    assert error_text(io.read_net_prototxt, path) == (
        f'{path}:7:3: unknown field "convolution_parm" in LayerParameter; '
        'did you mean "convolution_param"?')


def test_unknown_field_without_close_match_has_no_suggestion():
    message = error_text(io.parse_net_text, 'layer { name: "a" zzzzzz: 1 }', "mem")
    assert message == 'mem:1:19: unknown field "zzzzzz" in LayerParameter'


def test_unknown_enum_value_suggests():
    text = 'layer {\n  pooling_param { pool: MAXX }\n}\n'
    assert error_text(io.parse_net_text, text, "p.prototxt") == (
        "p.prototxt:2:25: unknown value MAXX for enum PoolingParameter.PoolMethod; "
        "did you mean MAX?")


def test_syntax_error_has_line_and_column(tmp_path):
    path = tmp_path / "solver.prototxt"
    path.write_text('base_lr: 0.01\nlr_policy: "step"\nmomentum 0.9\n')
    assert error_text(io.read_solver_prototxt, path) == f'{path}:3:10: Expected ":".'


def test_wrong_value_type_message_is_one_clean_line():
    message = error_text(io.parse_net_text, 'layer { name: "x" type: 3 }', "t")
    assert message == "t:1:25: Expected string but found: '3'"


def test_missing_and_unreadable_text_files(tmp_path):
    missing = tmp_path / "nope.prototxt"
    assert error_text(io.read_net_prototxt, missing).startswith(f"{missing}: cannot read")
    binary = tmp_path / "binary.prototxt"
    binary.write_bytes(b"name: \xff\xfe")
    assert error_text(io.read_net_prototxt, binary).startswith(f"{binary}: not a text file")


def test_parse_text_fills_and_returns_the_message():
    solver = io.parse_text('base_lr: 0.5 type: "Adam" stepvalue: 1 stepvalue: 3',
                           caffe_pb2.SolverParameter(), "<s>")
    assert isinstance(solver, caffe_pb2.SolverParameter)
    assert (solver.base_lr, solver.type, list(solver.stepvalue)) == (0.5, "Adam", [1, 3])


def test_conformance_net_reads_with_an_input_layer(shared_dir):
    net = io.read_net_prototxt(shared_dir / "conformance/layers/softmaxloss_class_weighting.prototxt")
    first = net.layer[0]
    assert (first.name, first.type, list(first.top)) == ("input", "Input", ["x", "label"])
    assert [list(s.dim) for s in first.input_param.shape] == [[2, 4, 5, 6], [2, 1, 5, 6]]
    assert not net.input and not net.input_shape
    loss = net.layer[1].loss_param
    assert loss.weight_by_label_freqs and list(loss.class_weighting) == pytest.approx([0.2, 1, 2.5, 4])


def test_conformance_solver_reads(shared_dir):
    solver = io.read_solver_prototxt(shared_dir / "conformance/solver/solver_sgd_run.prototxt")
    assert solver.net == "conformance/solver/tiny_segnet_train.prototxt"
    assert solver.solver_type == caffe_pb2.SolverParameter.SGD and solver.stepsize == 5


# -------------------------------------------------------------------------- upgrades

V1_NET = """
name: "v1"
layers {
  name: "data" type: DATA top: "data" top: "label"
  data_param { source: "db" batch_size: 4 scale: 0.5 mirror: true }
  include { phase: TRAIN }
}
layers {
  name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
  blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0 param: "w" param: "b"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 }
}
layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layers { name: "loss" type: SOFTMAX_LOSS bottom: "pool1" bottom: "label" top: "loss"
  loss_weight: 2 }
"""


def test_v1_net_upgrades_to_layers():
    net = io.parse_net_text(V1_NET, "v1.prototxt")
    assert not net.layers
    assert [(l.name, l.type) for l in net.layer] == [
        ("data", "Data"), ("conv1", "Convolution"), ("pool1", "Pooling"),
        ("loss", "SoftmaxWithLoss")]
    data, conv, pool, loss = net.layer
    assert list(data.top) == ["data", "label"] and data.include[0].phase == caffe_pb2.TRAIN
    assert data.transform_param.scale == 0.5 and data.transform_param.mirror
    assert not data.data_param.HasField("scale") and data.data_param.batch_size == 4
    assert [(p.name, p.lr_mult, p.decay_mult) for p in conv.param] == [("w", 1, 1), ("b", 2, 0)]
    assert list(conv.convolution_param.kernel_size) == [3] and conv.convolution_param.num_output == 8
    assert pool.pooling_param.stride == 2 and list(loss.loss_weight) == [2]


def test_v1_caffemodel_with_blobs_upgrades(tmp_path):
    v1 = caffe_pb2.NetParameter(name="old")
    layer = v1.layers.add(name="ip", type=caffe_pb2.V1LayerParameter.INNER_PRODUCT)
    layer.bottom.append("data")
    layer.top.append("ip")
    layer.blobs.append(io.array_to_blobproto(np.arange(6, dtype=np.float32).reshape(2, 3)))
    layer.inner_product_param.num_output = 2
    v1.input.append("data")  # old ToProto wrote input names without shapes
    path = tmp_path / "old.caffemodel"
    path.write_bytes(v1.SerializeToString())
    net = io.read_caffemodel(path)
    assert [(l.name, l.type) for l in net.layer] == [("ip", "InnerProduct")]
    assert not net.input  # an input without shape is dropped, as Caffe does
    np.testing.assert_array_equal(io.blobproto_to_array(net.layer[0].blobs[0]),
                                  np.arange(6).reshape(2, 3))


def test_input_dim_becomes_an_input_layer_first():
    net = io.parse_net_text('input: "a" input_dim: 1 input_dim: 3 input_dim: 4 input_dim: 5\n'
                            'input: "b" input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 5\n'
                            'layer { name: "r" type: "ReLU" bottom: "a" top: "a" }', "dims")
    first = net.layer[0]
    assert (first.name, first.type, list(first.top)) == ("input", "Input", ["a", "b"])
    assert [list(s.dim) for s in first.input_param.shape] == [[1, 3, 4, 5], [1, 1, 4, 5]]
    assert net.layer[1].name == "r" and not net.input_dim


@pytest.mark.parametrize("text, expected", [
    ('input: "a" input_dim: 1 input_dim: 3', "1 input(s) need 4 input_dim values"),
    ('input: "a" input: "b" input_shape { dim: 1 }', "2 input(s) but 1 input_shape(s)"),
    ('input: "a" input_shape { dim: 1 } input_dim: 1 input_dim: 1 input_dim: 1 input_dim: 1',
     "not both"),
    ('input_shape { dim: 1 }', "without any `input` name"),
    ('layer { name: "x" type: "ReLU" } layers { name: "y" type: RELU }', "mixes `layer`"),
    ('layers { name: "old" layer { name: "old" type: "conv" } }', 'layer "old" is in the V0'),
    ('layers { name: "none" type: NONE }', 'layer "none" has V1 type NONE'),
])
def test_upgrade_errors_name_the_source(text, expected):
    message = error_text(io.parse_net_text, text, "bad.prototxt")
    assert message.startswith("bad.prototxt: ") and expected in message


def test_upgrade_net_returns_an_upgraded_copy():
    original = caffe_pb2.NetParameter()
    original.input.append("x")
    original.input_shape.add().dim.extend([2, 3])
    upgraded = io.upgrade_net(original)
    assert list(original.input) == ["x"]  # untouched
    assert upgraded.layer[0].type == "Input" and not upgraded.input


def test_old_batchnorm_params_get_zero_learning_rate():
    net = io.parse_net_text('layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x" '
                            'param { lr_mult: 1 } param { lr_mult: 1 } param { lr_mult: 1 } }',
                            "bn")
    assert [(p.lr_mult, p.decay_mult) for p in net.layer[0].param] == [(0, 0)] * 3


# ----------------------------------------------------------------------- binary files

def test_caffemodel_missing_empty_truncated_or_not_protobuf(tmp_path, shared_dir):
    data = (shared_dir / "conformance/solver/init.caffemodel").read_bytes()
    missing = tmp_path / "missing.caffemodel"
    assert error_text(io.read_caffemodel, missing).startswith(f"{missing}: cannot read")
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    assert error_text(io.read_caffemodel, empty) == (
        f"{empty}: empty file, not a Caffe binary NetParameter")
    for cut in (len(data) // 2, len(data) - 1):
        truncated = tmp_path / f"cut{cut}.caffemodel"
        truncated.write_bytes(data[:cut])
        assert error_text(io.read_caffemodel, truncated).startswith(
            f"{truncated}: not a Caffe binary NetParameter (")
    text = tmp_path / "net.caffemodel"
    text.write_text(MISSPELT)
    assert error_text(io.read_caffemodel, text).startswith(f"{text}: not a Caffe binary")


def test_unknown_top_level_field_is_rejected(tmp_path):
    path = tmp_path / "odd.caffemodel"
    path.write_bytes(b"\xa0\x06\x01")  # field 100 as a varint: not a NetParameter layer
    assert "not a Caffe binary NetParameter" in error_text(io.read_caffemodel, path)


def test_seed_model_and_state_read(shared_dir):
    net = io.read_caffemodel(shared_dir / "data/seed_models/manoj_basic_iter_100.caffemodel")
    conv1 = next(layer for layer in net.layer if layer.name == "conv1")
    assert io.blobproto_to_array(conv1.blobs[0]).shape == (64, 3, 7, 7)
    state = io.read_solverstate(shared_dir / "data/seed_models/manoj_basic_iter_100.solverstate")
    assert state.iter == 100 and len(state.history) > 0


def test_blob_conversion_writes_exactly_what_caffe_wrote(shared_dir):
    net = caffe_pb2.NetParameter.FromString(
        (shared_dir / "conformance/solver/snap_sgd_run_iter_10.caffemodel").read_bytes())
    blobs = [blob for layer in net.layer for blob in layer.blobs]
    assert blobs
    for blob in blobs:
        again = io.array_to_blobproto(io.blobproto_to_array(blob))
        assert again.SerializeToString() == blob.SerializeToString()


# ------------------------------------------------------------------ blob conversion

def test_legacy_4d_shape_and_double_data():
    legacy = caffe_pb2.BlobProto(num=2, channels=3, height=1, width=2, data=range(12))
    np.testing.assert_array_equal(io.blobproto_to_array(legacy), np.arange(12).reshape(2, 3, 1, 2))
    # Any legacy field set means 4-D (unset ones are 0), as in Caffe's Blob::FromProto.
    assert io.blobproto_to_array(caffe_pb2.BlobProto(num=0)).shape == (0, 0, 0, 0)
    doubles = caffe_pb2.BlobProto(double_data=[0.1, 0.2, 0.3], data=[9, 9, 9])
    doubles.shape.dim.append(3)
    result = io.blobproto_to_array(doubles)
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, np.float32([0.1, 0.2, 0.3]))


def test_diff_and_count_mismatch():
    blob = io.array_to_blobproto(np.ones((2, 2)), diff=np.full((2, 2), 3.0))
    np.testing.assert_array_equal(io.blobproto_to_array(blob, return_diff=True), np.full((2, 2), 3))
    no_diff = io.array_to_blobproto(np.ones((2, 2)))
    np.testing.assert_array_equal(io.blobproto_to_array(no_diff, return_diff=True), np.zeros((2, 2)))
    bad = caffe_pb2.BlobProto(data=[1, 2, 3])
    bad.shape.dim.extend([2, 2])
    assert error_text(io.blobproto_to_array, bad, False, "conv1[0]") == (
        "conv1[0]: shape (2, 2) holds 4 values but the blob has 3 data values")
    with pytest.raises(CaffeError, match="diff shape"):
        io.array_to_blobproto(np.ones(3), diff=np.ones(2))


@pytest.mark.parametrize("shape", [(), (0,), (5,), (2, 3), (1, 2, 3, 4), (2, 1, 2, 1, 2)])
def test_array_blobproto_round_trip(shape):
    array = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    blob = io.array_to_blobproto(array)
    assert list(blob.shape.dim) == list(shape) and blob.HasField("shape") == bool(shape)
    assert not any(blob.HasField(f) for f in ("num", "channels", "height", "width"))
    back = io.blobproto_to_array(caffe_pb2.BlobProto.FromString(blob.SerializeToString()))
    assert back.dtype == np.float32 and back.shape == shape
    np.testing.assert_array_equal(back, array)


def test_binaryproto_round_trip(tmp_path):
    mean = np.arange(24, dtype=np.float32).reshape(1, 3, 2, 4)
    path = tmp_path / "mean.binaryproto"
    io.write_binaryproto(path, mean)
    np.testing.assert_array_equal(io.read_binaryproto(path), mean)


# --------------------------------------------------------------------------- writing

def test_atomic_writes_leave_no_temporary_files(tmp_path):
    net = io.parse_net_text('name: "w" layer { name: "r" type: "ReLU" bottom: "x" top: "x" }')
    model = tmp_path / "w.caffemodel"
    io.write_caffemodel(model, net)
    io.write_caffemodel(model, net)  # replaces
    assert io.read_caffemodel(model) == net
    text = tmp_path / "w.prototxt"
    io.write_prototxt(text, net)
    assert io.read_net_prototxt(text) == net
    io.atomic_write_bytes(tmp_path / "raw.bin", b"\x00\x01")
    assert (tmp_path / "raw.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.bin", "w.caffemodel", "w.prototxt"]
    umask = os.umask(0)
    os.umask(umask)
    assert (model.stat().st_mode & 0o777) == (0o666 & ~umask)


def test_write_into_missing_folder_names_the_path(tmp_path):
    target = tmp_path / "snapshots" / "x.caffemodel"
    assert error_text(io.write_caffemodel, target, caffe_pb2.NetParameter()).startswith(
        f"{target}: cannot write")
    with pytest.raises(TypeError):
        io.write_caffemodel(tmp_path / "y.caffemodel", caffe_pb2.SolverState())
