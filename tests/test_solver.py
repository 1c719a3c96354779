"""Solvers: learning-rate policies, each update rule by hand, iter_size, clipping, L1, freezing,
snapshots and an exact resume."""
import math

import numpy as np
import pytest

from segnet_caffe import io
from segnet_caffe.proto import caffe_pb2
from segnet_caffe.solver import SOLVERS, get_solver, learning_rate


def solver_param(text):
    return io.parse_text(text, caffe_pb2.SolverParameter(), "<solver>")


@pytest.mark.parametrize("text, iteration, expected", [
    ('lr_policy: "fixed" base_lr: 0.1', 7, 0.1),
    ('lr_policy: "step" base_lr: 0.1 gamma: 0.5 stepsize: 3', 7, 0.1 * 0.5 ** 2),
    ('lr_policy: "exp" base_lr: 0.1 gamma: 0.9', 7, 0.1 * 0.9 ** 7),
    ('lr_policy: "inv" base_lr: 0.1 gamma: 0.01 power: 0.75', 7, 0.1 * (1 + 0.07) ** -0.75),
    ('lr_policy: "poly" base_lr: 0.1 power: 2 max_iter: 10', 7, 0.1 * (1 - 0.7) ** 2),
    ('lr_policy: "sigmoid" base_lr: 0.1 gamma: -0.5 stepsize: 5', 7, 0.1 / (1 + math.exp(0.5 * 2))),
])
def test_learning_rate_policies(text, iteration, expected):
    rate, _ = learning_rate(solver_param(text), iteration, 0)
    assert rate == pytest.approx(expected, rel=1e-6)


def test_multistep_advances_one_step_per_call_like_caffe():
    param = solver_param('lr_policy: "multistep" base_lr: 1 gamma: 0.1 stepvalue: 2 stepvalue: 4')
    step, rates = 0, []
    for iteration in range(6):
        rate, step = learning_rate(param, iteration, step)
        rates.append(rate)
    np.testing.assert_allclose(rates, [1, 1, 0.1, 0.1, 0.01, 0.01])


LINEAR_NET = """
name: "linear"
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
  param { lr_mult: 2 decay_mult: 3 } param { lr_mult: 0 }
  inner_product_param { num_output: 1 weight_filler { type: "constant" value: 0.5 } } }
layer { name: "loss" type: "Power" bottom: "y" top: "loss" loss_weight: 1 }
"""


def make_linear_solver(extra, solver_class="SGD"):
    param = solver_param(f'base_lr: 0.1 lr_policy: "fixed" max_iter: 10 type: "{solver_class}" {extra}')
    param.net_param.CopyFrom(io.parse_net_text(LINEAR_NET, "<linear>"))
    solver = SOLVERS[solver_class](param)
    solver.net.blobs["x"].data[...] = [[1.0, -2.0]]
    return solver


# The loss y = w.x + b (Power layer with defaults is the identity), so dL/dw = x = [1, -2]
# every iteration; weight decay 0.01 * decay_mult 3, lr 0.1 * lr_mult 2.
def hand_updates(kind, steps, momentum=0.9, delta=1e-8, decay_rate=0.9, beta2=0.999):
    w = np.array([0.5, 0.5])
    x = np.array([1.0, -2.0])
    lr, wd = 0.2, 0.03
    h, h2 = np.zeros(2), np.zeros(2)
    for t in range(steps):
        g = x + wd * w
        if kind == "SGD":
            h = momentum * h + lr * g
            update = h
        elif kind == "Nesterov":
            previous = h.copy()
            h = momentum * h + lr * g
            update = (1 + momentum) * h - momentum * previous
        elif kind == "AdaGrad":
            h = h + g * g
            update = lr * g / (np.sqrt(h) + delta)
        elif kind == "RMSProp":
            h = decay_rate * h + (1 - decay_rate) * g * g
            update = lr * g / (np.sqrt(h) + delta)
        elif kind == "AdaDelta":
            h = momentum * h + (1 - momentum) * g * g
            u = g * np.sqrt((h2 + delta) / (h + delta))
            h2 = momentum * h2 + (1 - momentum) * u * u
            update = lr * u
        elif kind == "Adam":
            h = momentum * h + (1 - momentum) * g
            h2 = beta2 * h2 + (1 - beta2) * g * g
            correction = math.sqrt(1 - beta2 ** (t + 1)) / (1 - momentum ** (t + 1))
            update = lr * correction * h / (np.sqrt(h2) + delta)
        w = w - update
    return w


@pytest.mark.parametrize("kind, extra", [
    ("SGD", "momentum: 0.9"),
    ("Nesterov", "momentum: 0.9"),
    ("AdaGrad", "delta: 1e-8"),
    ("RMSProp", "rms_decay: 0.9 delta: 1e-8"),
    ("AdaDelta", "momentum: 0.9 delta: 1e-8"),
    ("Adam", "momentum: 0.9 momentum2: 0.999 delta: 1e-8"),
])
def test_update_rules_match_hand_computation(kind, extra):
    solver = make_linear_solver(f"weight_decay: 0.01 {extra}", kind)
    solver.step(3)
    np.testing.assert_allclose(solver.net.params["ip"][0].data[0], hand_updates(kind, 3),
                               rtol=1e-5)
    assert solver.net.params["ip"][1].data[0] == 0  # lr_mult 0 freezes the bias
    assert solver.iter == 3


def test_l1_regularization_adds_sign_of_weights():
    solver = make_linear_solver('weight_decay: 0.01 regularization_type: "L1"')
    solver.step(1)
    expected = np.array([0.5, 0.5]) - 0.2 * (np.array([1.0, -2.0]) + 0.03 * np.sign([0.5, 0.5]))
    np.testing.assert_allclose(solver.net.params["ip"][0].data[0], expected, rtol=1e-6)


def test_clip_gradients_scales_the_whole_gradient():
    solver = make_linear_solver("clip_gradients: 1")
    solver.step(1)
    g = np.array([1.0, -2.0])
    # The bias (lr_mult 0) computes no diff, so the norm is the weight gradient's alone.
    expected = np.array([0.5, 0.5]) - 0.2 * g / np.linalg.norm(g)
    np.testing.assert_allclose(solver.net.params["ip"][0].data[0], expected, rtol=1e-6)


DATA_NET = """
name: "pixels"
layer { name: "data" type: "DenseImageData" top: "data" top: "label"
  transform_param { scale: 0.00390625 }
  dense_image_data_param { source: "%s" batch_size: %d shuffle: %s } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "score"
  convolution_param { num_output: 2 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
"""


def pixel_solver(list_file, batch, extra="", shuffle="false", seed=3):
    param = solver_param(f'base_lr: 0.5 lr_policy: "step" gamma: 0.5 stepsize: 4 momentum: 0.9 '
                         f'weight_decay: 0.001 max_iter: 12 random_seed: {seed} {extra}')
    param.net_param.CopyFrom(io.parse_net_text(DATA_NET % (list_file, batch, shuffle), "<pixels>"))
    return SOLVERS["SGD"](param)


def test_iter_size_two_of_batch_one_equals_one_of_batch_two(tiny_dataset):
    list_file = tiny_dataset
    combined = pixel_solver(list_file, 2)
    split = pixel_solver(list_file, 1, "iter_size: 2")
    np.testing.assert_array_equal(combined.net.params["conv"][0].data, split.net.params["conv"][0].data)
    combined.step(6)
    split.step(6)
    for a, b in zip(combined.net.params["conv"], split.net.params["conv"]):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-5, atol=1e-6)


def test_snapshot_files_parse_as_caffe_messages(tmp_path, tiny_dataset):
    list_file = tiny_dataset
    solver = pixel_solver(list_file, 2, f'snapshot_prefix: "{tmp_path}/snap"')
    solver.step(2)
    model_path, state_path = solver.snapshot()
    assert model_path == f"{tmp_path}/snap_iter_2.caffemodel"
    model = caffe_pb2.NetParameter.FromString(open(model_path, "rb").read())
    blobs = {layer.name: [list(b.shape.dim) for b in layer.blobs] for layer in model.layer if layer.blobs}
    assert blobs == {"conv": [[2, 3, 3, 3], [2]]}
    state = caffe_pb2.SolverState.FromString(open(state_path, "rb").read())
    assert state.iter == 2 and state.learned_net == model_path
    assert [list(h.shape.dim) for h in state.history] == [[2, 3, 3, 3], [2]]


def test_interrupted_and_resumed_run_gives_identical_weights(tmp_path, tiny_dataset):
    list_file = tiny_dataset
    extra = f'snapshot: 5 snapshot_prefix: "{tmp_path}/run"'
    whole = pixel_solver(list_file, 2, extra, shuffle="true")
    whole.solve()
    interrupted = pixel_solver(list_file, 2, extra.replace("/run", "/part"), shuffle="true")
    interrupted.step(5)
    interrupted.snapshot()
    resumed = pixel_solver(list_file, 2, extra.replace("/run", "/part"), shuffle="true", seed=99)
    resumed.solve(f"{tmp_path}/part_iter_5.solverstate")
    assert resumed.iter == whole.iter == 12
    for a, b in zip(whole.net.params["conv"], resumed.net.params["conv"]):
        np.testing.assert_array_equal(a.data, b.data)


def test_get_solver_reads_type_and_legacy_enum(tmp_path):
    net_path = tmp_path / "net.prototxt"
    net_path.write_text(LINEAR_NET)
    for line, cls in (('type: "Adam"', SOLVERS["Adam"]), ("solver_type: NESTEROV", SOLVERS["Nesterov"]),
                      ("", SOLVERS["SGD"])):
        path = tmp_path / "solver.prototxt"
        path.write_text(f'net: "{net_path}" base_lr: 0.1 lr_policy: "fixed" max_iter: 1 {line}\n')
        assert type(get_solver(str(path))) is cls


def test_hdf5_snapshots_resume_exactly(tmp_path, tiny_dataset):
    pytest.importorskip("h5py")
    extra = f'snapshot: 4 snapshot_format: HDF5 snapshot_prefix: "{tmp_path}/h5"'
    whole = pixel_solver(tiny_dataset, 2, extra, shuffle="true")
    whole.step(8)
    assert (tmp_path / "h5_iter_4.caffemodel.h5").exists()
    state = io.read_solverstate(str(tmp_path / "h5_iter_4.solverstate.h5"))
    assert state.iter == 4 and state.learned_net.endswith("h5_iter_4.caffemodel.h5")
    assert [list(h.shape.dim) for h in state.history] == [[2, 3, 3, 3], [2]]
    resumed = pixel_solver(tiny_dataset, 2, extra.replace("/h5", "/again"), shuffle="true", seed=5)
    resumed.restore(str(tmp_path / "h5_iter_4.solverstate.h5"))
    resumed.step(4)
    for a, b in zip(whole.net.params["conv"], resumed.net.params["conv"]):
        np.testing.assert_array_equal(a.data, b.data)


def test_weights_initialisation_logs_each_layer(tmp_path, caplog):
    solver = make_linear_solver("")
    source = caffe_pb2.NetParameter(name="source")
    other = source.layer.add(name="unused", type="InnerProduct")
    other.blobs.add().CopyFrom(io.array_to_blobproto(np.ones((3, 2), np.float32)))
    only_other = tmp_path / "other.caffemodel"
    io.write_caffemodel(str(only_other), source)
    ip = source.layer.add(name="ip", type="InnerProduct")
    ip.blobs.add().CopyFrom(io.array_to_blobproto(np.full((1, 2), 3.0, np.float32)))
    ip.blobs.add().CopyFrom(io.array_to_blobproto(np.full((1,), -1.0, np.float32)))
    both = tmp_path / "both.caffemodel"
    io.write_caffemodel(str(both), source)
    logger = solver.log
    logger.addHandler(caplog.handler)
    try:
        solver.copy_weights(str(only_other))
        assert f"Layer ip keeps its filler initialisation ({only_other} has no layer" in caplog.text
        caplog.clear()
        solver.copy_weights(str(both))
    finally:
        logger.removeHandler(caplog.handler)
    assert f"Copying weights of layer ip from {both}" in caplog.text
    assert f"Ignoring source layer unused of {both}" in caplog.text
    assert "keeps its filler" not in caplog.text
    np.testing.assert_array_equal(solver.net.params["ip"][0].data, [[3.0, 3.0]])
