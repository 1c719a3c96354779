"""Property-based fuzzing of what users hand us: a valid prototxt and caffemodel, mutated
(field values, truncation, inserted or replaced bytes), either load (and run) or fail with a
CaffeError; never another exception type, never a hang (hypothesis' deadline bounds each
example)."""
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import segnet_caffe as caffe
from segnet_caffe import io

NET = """name: "fuzz"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } shape { dim: 2 dim: 1 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 1 group: 1
    weight_filler { type: "msra" } bias_filler { type: "constant" value: 0 } } }
layer { name: "bn1" type: "BN" bottom: "conv1" top: "conv1" bn_param { bn_mode: LEARN
  scale_filler { type: "constant" value: 1 } shift_filler { type: "constant" value: 0.001 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" top: "mask1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "drop" type: "Dropout" bottom: "pool1" top: "pool1" dropout_param { dropout_ratio: 0.5 } }
layer { name: "up1" type: "Upsample" bottom: "pool1" bottom: "mask1" top: "up1"
  upsample_param { scale: 2 } }
layer { name: "concat" type: "Concat" bottom: "up1" bottom: "data" top: "cat" concat_param { axis: 1 } }
layer { name: "score" type: "Convolution" bottom: "cat" top: "score"
  convolution_param { num_output: 3 kernel_size: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "crop" type: "Crop" bottom: "score" bottom: "data" top: "cropped" crop_param { axis: 2 offset: 0 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "cropped" bottom: "label" top: "loss"
  loss_param { ignore_label: 255 weight_by_label_freqs: true class_weighting: 1 class_weighting: 2
    class_weighting: 0.5 } }
layer { name: "accuracy" type: "Accuracy" bottom: "cropped" bottom: "label" top: "accuracy"
  include { phase: TEST } }
"""
NUMBER = re.compile(r"(?<![\w.])-?\d+(\.\d+)?(?![\w.])")
STRING = re.compile(r'"[^"]*"')
# Small values, the edges, and sizes no machine can allocate (which fail at once); middling
# sizes that take seconds to fill are left out so that every example stays fast.
NUMBERS = st.one_of(st.integers(-3, 40).map(str), st.sampled_from(
    ["0", "-1", "0.5", "-0.5", "1e-9", "nan", "inf", "-inf", "2147483647", "4294967296",
     "99999999999999", "1e40"]))
STRINGS = st.one_of(st.sampled_from(['"data"', '"label"', '"conv1"', '"mask1"', '"loss"',
                                     '"Pooling"', '"Upsample"', '"Deconvolution"', '"xavier"',
                                     '"ReLU"', '"Input"', '""']),
                    st.text(max_size=8).map(lambda t: '"' + t.replace('"', "") + '"'))


def run_net(text, phase):
    """Parse, build and run one forward and backward: the whole path a prototxt takes."""
    net = caffe.Net(io.parse_net_text(text, "fuzz.prototxt"), phase)
    for name in net.inputs:
        blob = net.blobs[name]
        blob.data[...] = np.random.RandomState(0).randint(0, 3, blob.shape)
    net.forward()
    if phase == caffe.TRAIN:
        net.backward()


def expect_clean(action):
    try:
        action()
    except caffe.CaffeError as error:
        assert "\n" not in str(error), str(error)


def mutate_tokens(text, data, pattern, values):
    spans = [m.span() for m in pattern.finditer(text)]
    for _ in range(data.draw(st.integers(1, 3))):
        start, end = data.draw(st.sampled_from(spans))
        text = text[:start] + data.draw(values) + text[end:]
        spans = [m.span() for m in pattern.finditer(text)]
    return text


FUZZ = settings(max_examples=100, deadline=5000, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(st.data(), st.sampled_from([caffe.TRAIN, caffe.TEST]))
def test_prototxt_with_changed_values_loads_or_fails_cleanly(data, phase):
    text = mutate_tokens(NET, data, NUMBER, NUMBERS)
    text = mutate_tokens(text, data, STRING, STRINGS) if data.draw(st.booleans()) else text
    expect_clean(lambda: run_net(text, phase))


@FUZZ
@given(st.data())
def test_prototxt_cut_or_garbled_loads_or_fails_cleanly(data):
    text = NET
    position = data.draw(st.integers(0, len(text)))
    how = data.draw(st.sampled_from(["truncate", "insert", "delete"]))
    if how == "truncate":
        text = text[:position]
    elif how == "insert":
        text = text[:position] + data.draw(st.text(min_size=1, max_size=6)) + text[position:]
    else:
        text = text[:position] + text[position + data.draw(st.integers(1, 40)):]
    expect_clean(lambda: run_net(text, caffe.TRAIN))


def fuzz_solver(prefix):
    """An SGD solver of NET snapshotting to `prefix`."""
    param = caffe.caffe_pb2.SolverParameter()
    io.parse_text(f'base_lr: 0.01 lr_policy: "fixed" max_iter: 1 snapshot_prefix: "{prefix}" '
                  "momentum: 0.9", param)
    param.net_param.CopyFrom(io.parse_net_text(NET))
    return caffe.get_solver(param)


@pytest.fixture(scope="module")
def saved_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    solver = fuzz_solver(folder / "s")
    solver.step(1)
    model, state = solver.snapshot()
    return open(model, "rb").read(), open(state, "rb").read(), folder


def garble(data, original, path):
    """Write a mutation of the bytes `original` to `path`; return the path as a string."""
    path.write_bytes(_mutated(data, original))
    return str(path)


def _mutated(data, original):
    how = data.draw(st.sampled_from(["truncate", "flip", "insert", "random", "splice"]))
    position = data.draw(st.integers(0, len(original)))
    if how == "truncate":
        return original[:position]
    if how == "flip":
        flipped = bytearray(original)
        for _ in range(data.draw(st.integers(1, 8))):
            index = data.draw(st.integers(0, len(flipped) - 1))
            flipped[index] = data.draw(st.integers(0, 255))
        return bytes(flipped)
    if how == "insert":
        return original[:position] + data.draw(st.binary(min_size=1, max_size=16)) + original[position:]
    if how == "random":
        return data.draw(st.binary(max_size=256))
    return original[:position] + original[data.draw(st.integers(0, len(original))):]


@FUZZ
@given(st.data())
def test_garbled_caffemodel_loads_or_fails_cleanly(saved_files, data):
    model, _, folder = saved_files
    path = garble(data, model, folder / "garbled.caffemodel")

    def load():
        net = caffe.Net(io.parse_net_text(NET, "fuzz.prototxt"), caffe.TEST)
        net.copy_from(path)
        net.forward()
    expect_clean(load)


@FUZZ
@given(st.data())
def test_garbled_solverstate_restores_or_fails_cleanly(saved_files, data):
    _, state, folder = saved_files
    path = garble(data, state, folder / "garbled.solverstate")
    solver = fuzz_solver(folder / "r")
    expect_clean(lambda: solver.restore(path))


def test_the_unmutated_files_load_and_run(saved_files):
    """The fuzzing starts from files that work: a failure is the mutation's doing."""
    model, state, folder = saved_files
    run_net(NET, caffe.TRAIN)
    run_net(NET, caffe.TEST)
    (folder / "model.caffemodel").write_bytes(model)
    net = caffe.Net(io.parse_net_text(NET), caffe.TEST, weights=str(folder / "model.caffemodel"))
    assert net.params["conv1"][0].data.any()
    assert caffe.caffe_pb2.SolverState.FromString(state).iter == 1
