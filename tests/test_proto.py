"""The schema: committed module in sync with caffe.proto, field numbers, real files' wire format."""
import ast
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, text_format, unknown_fields

from segnet_caffe.proto import caffe_pb2

PROTO_DIR = Path(__file__).resolve().parents[1] / "segnet_caffe" / "proto"


def generated_descriptor(py_file):
    """The FileDescriptorProto a generated *_pb2.py registers (read from its source, not run)."""
    for node in ast.walk(ast.parse(Path(py_file).read_text())):
        if (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile"):
            return descriptor_pb2.FileDescriptorProto.FromString(node.args[0].value)
    raise AssertionError(f"{py_file}: no AddSerializedFile call")


def regenerate(proto_file, out_dir):
    protoc = pytest.importorskip("grpc_tools.protoc", reason="grpcio-tools (test extra) needed")
    code = protoc.main(["protoc", f"-I{proto_file.parent}", f"--python_out={out_dir}",
                        str(proto_file)])
    assert code == 0, f"protoc failed on {proto_file}"
    return generated_descriptor(out_dir / "caffe_pb2.py")


def test_committed_module_matches_schema(tmp_path):
    committed = generated_descriptor(PROTO_DIR / "caffe_pb2.py")
    assert committed == regenerate(PROTO_DIR / "caffe.proto", tmp_path), (
        "caffe_pb2.py is stale: regenerate it with the one-liner at the top of caffe.proto")


def test_schema_comparison_detects_a_changed_number(tmp_path):
    # The check above must be able to fail: renumber one field in a copy of the schema.
    text = (PROTO_DIR / "caffe.proto").read_text()
    assert "optional BNParameter bn_param = 45;" in text
    changed = tmp_path / "src" / "caffe.proto"
    changed.parent.mkdir()
    changed.write_text(text.replace("bn_param = 45;", "bn_param = 46;"))
    assert regenerate(changed, tmp_path) != generated_descriptor(PROTO_DIR / "caffe_pb2.py")


# (message, field, number): facts of the format, from BVLC 1.0's and the SegNet fork's schemas.
FIELD_NUMBERS = [
    ("BlobShape", "dim", 1), ("BlobProto", "shape", 7), ("BlobProto", "data", 5),
    ("BlobProto", "diff", 6), ("BlobProto", "double_data", 8), ("BlobProto", "double_diff", 9),
    ("BlobProto", "num", 1), ("BlobProto", "channels", 2), ("BlobProto", "height", 3),
    ("BlobProto", "width", 4),
    ("NetParameter", "name", 1), ("NetParameter", "layers", 2), ("NetParameter", "input", 3),
    ("NetParameter", "input_dim", 4), ("NetParameter", "force_backward", 5),
    ("NetParameter", "state", 6), ("NetParameter", "input_shape", 8),
    ("NetParameter", "layer", 100),
    ("SolverParameter", "train_net", 1), ("SolverParameter", "test_iter", 3),
    ("SolverParameter", "base_lr", 5), ("SolverParameter", "max_iter", 7),
    ("SolverParameter", "lr_policy", 8), ("SolverParameter", "gamma", 9),
    ("SolverParameter", "momentum", 11), ("SolverParameter", "weight_decay", 12),
    ("SolverParameter", "stepsize", 13), ("SolverParameter", "snapshot", 14),
    ("SolverParameter", "snapshot_prefix", 15), ("SolverParameter", "solver_mode", 17),
    ("SolverParameter", "random_seed", 20), ("SolverParameter", "train_net_param", 21),
    ("SolverParameter", "test_net_param", 22), ("SolverParameter", "net", 24),
    ("SolverParameter", "net_param", 25), ("SolverParameter", "test_state", 27),
    ("SolverParameter", "regularization_type", 29), ("SolverParameter", "solver_type", 30),
    ("SolverParameter", "delta", 31), ("SolverParameter", "average_loss", 33),
    ("SolverParameter", "stepvalue", 34), ("SolverParameter", "clip_gradients", 35),
    ("SolverParameter", "iter_size", 36), ("SolverParameter", "snapshot_format", 37),
    ("SolverParameter", "rms_decay", 38), ("SolverParameter", "momentum2", 39),
    ("SolverParameter", "type", 40),
    ("SolverState", "iter", 1), ("SolverState", "learned_net", 2),
    ("SolverState", "history", 3), ("SolverState", "current_step", 4),
    ("LayerParameter", "phase", 10), ("LayerParameter", "param", 6),
    ("LayerParameter", "blobs", 7), ("LayerParameter", "include", 8),
    ("LayerParameter", "transform_param", 100), ("LayerParameter", "loss_param", 101),
    ("LayerParameter", "convolution_param", 106), ("LayerParameter", "dropout_param", 108),
    ("LayerParameter", "lrn_param", 118), ("LayerParameter", "pooling_param", 121),
    ("LayerParameter", "softmax_param", 125), ("LayerParameter", "batch_norm_param", 139),
    ("LayerParameter", "input_param", 143),
    # The SegNet fork's additions.
    ("LayerParameter", "bn_param", 45), ("LayerParameter", "upsample_param", 137),
    ("LayerParameter", "dense_image_data_param", 138),
    ("LossParameter", "ignore_label", 1), ("LossParameter", "normalize", 2),
    ("LossParameter", "weight_by_label_freqs", 3), ("LossParameter", "class_weighting", 4),
    ("DropoutParameter", "sample_weights_test", 2),
    ("BNParameter", "scale_filler", 1), ("BNParameter", "shift_filler", 2),
    ("BNParameter", "bn_mode", 3),
    ("UpsampleParameter", "scale", 1), ("UpsampleParameter", "scale_h", 2),
    ("UpsampleParameter", "scale_w", 3), ("UpsampleParameter", "pad_out_h", 4),
    ("UpsampleParameter", "pad_out_w", 5), ("UpsampleParameter", "upsample_h", 6),
    ("UpsampleParameter", "upsample_w", 7),
    ("DenseImageDataParameter", "source", 1), ("DenseImageDataParameter", "batch_size", 2),
    ("DenseImageDataParameter", "shuffle", 4), ("DenseImageDataParameter", "is_color", 7),
    ("DenseImageDataParameter", "root_folder", 9), ("DenseImageDataParameter", "mirror", 10),
    ("DenseImageDataParameter", "crop_width", 11), ("DenseImageDataParameter", "crop_height", 12),
    # Layer parameters the SegNet nets use.
    ("ConvolutionParameter", "num_output", 1), ("ConvolutionParameter", "pad", 3),
    ("ConvolutionParameter", "kernel_size", 4), ("ConvolutionParameter", "stride", 6),
    ("ConvolutionParameter", "weight_filler", 7), ("ConvolutionParameter", "dilation", 18),
    ("PoolingParameter", "pool", 1), ("PoolingParameter", "kernel_size", 2),
    ("PoolingParameter", "stride", 3), ("PoolingParameter", "pad", 4),
    ("TransformationParameter", "scale", 1), ("TransformationParameter", "mean_value", 5),
    ("ParamSpec", "lr_mult", 3), ("ParamSpec", "decay_mult", 4),
    ("V1LayerParameter", "type", 5), ("V1LayerParameter", "blobs_lr", 7),
    ("V1LayerParameter", "convolution_param", 10), ("V1LayerParameter", "param", 1001),
]


@pytest.mark.parametrize("message, field, number", FIELD_NUMBERS)
def test_field_number(message, field, number):
    assert getattr(caffe_pb2, message).DESCRIPTOR.fields_by_name[field].number == number


def test_enums_and_defaults():
    v1 = caffe_pb2.V1LayerParameter
    assert (v1.CONVOLUTION, v1.POOLING, v1.SOFTMAX_LOSS, v1.BN) == (4, 17, 21, 43)
    assert caffe_pb2.BNParameter().bn_mode == caffe_pb2.BNParameter.LEARN == 0
    assert caffe_pb2.BNParameter.INFERENCE == 1
    assert caffe_pb2.LossParameter().normalize is True  # the fork's default
    assert caffe_pb2.LossParameter().weight_by_label_freqs is False
    assert caffe_pb2.UpsampleParameter().scale == 2
    assert caffe_pb2.DenseImageDataParameter().is_color is True
    assert caffe_pb2.SolverParameter().solver_mode == caffe_pb2.SolverParameter.GPU
    assert caffe_pb2.SolverParameter().type == "SGD"
    assert caffe_pb2.NetState().phase == caffe_pb2.TEST
    assert caffe_pb2.BlobShape.DESCRIPTOR.fields_by_name["dim"].is_packed
    assert caffe_pb2.BlobProto.DESCRIPTOR.fields_by_name["data"].is_packed


def unknown_field_paths(message, path="", found=None):
    """Every unknown field anywhere in `message`, as "path: number"."""
    found = [] if found is None else found
    found.extend(f"{path or '<top>'}: {f.field_number}"
                 for f in unknown_fields.UnknownFieldSet(message))
    for field, value in message.ListFields():
        if field.message_type is not None:
            for i, item in enumerate(value if field.is_repeated else [value]):
                unknown_field_paths(item, f"{path}.{field.name}[{i}]", found)
    return found


def test_real_caffe_files_round_trip_byte_for_byte(shared_dir):
    files = sorted([*shared_dir.glob("data/seed_models/*.caffemodel"),
                    *shared_dir.glob("data/seed_models/*.solverstate"),
                    *shared_dir.glob("conformance/**/*.caffemodel"),
                    *shared_dir.glob("conformance/**/*.solverstate")])
    assert any(f.name == "manoj_basic_iter_100.solverstate" for f in files)
    for path in files:
        data = path.read_bytes()
        kind = caffe_pb2.SolverState if path.suffix == ".solverstate" else caffe_pb2.NetParameter
        message = kind.FromString(data)
        assert unknown_field_paths(message) == [], path
        assert message.SerializeToString() == data, f"{path} does not re-serialize identically"


def test_fork_fields_in_the_seed_model(shared_dir):
    net = caffe_pb2.NetParameter.FromString(
        (shared_dir / "data/seed_models/manoj_basic_iter_100.caffemodel").read_bytes())
    types = {layer.type for layer in net.layer}
    assert {"DenseImageData", "BN", "Upsample", "Pooling", "SoftmaxWithLoss"} <= types
    bn = next(layer for layer in net.layer if layer.type == "BN")
    assert bn.HasField("bn_param") and len(bn.blobs) == 2
    assert next(layer for layer in net.layer if layer.type == "Upsample").HasField("upsample_param")


def test_every_conformance_prototxt_parses(shared_dir):
    files = sorted(shared_dir.glob("conformance/**/*.prototxt"))
    assert len(files) > 40
    for path in files:
        kind = caffe_pb2.SolverParameter if path.name.startswith("solver") else caffe_pb2.NetParameter
        text_format.Parse(path.read_text(), kind())
