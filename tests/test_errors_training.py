"""Runtime failures while training: NaN/inf (stop before the bad update, name the layer,
snapshot the last good weights), out of memory (batch size and resolution named), and the
snapshot_prefix rule (a run never overwrites a later iteration's snapshots silently)."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import segnet_caffe as caffe
from segnet_caffe import io
from segnet_caffe.proto import caffe_pb2
from segnet_caffe.solver import SOLVERS

# y = ip2(sqrt(1 + ip1(x))): ip1's output drifting below -1 makes "sqrt" the first NaN.
SQRT_NET = """name: "sqrt"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 4 dim: 3 } shape { dim: 4 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "sqrt" type: "Power" bottom: "ip1" top: "sqrt" power_param { power: 0.5 shift: 1 } }
layer { name: "ip2" type: "InnerProduct" bottom: "sqrt" top: "ip2"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""


def sqrt_solver(folder, extra="", base_lr=50.0):
    param = caffe_pb2.SolverParameter()
    io.parse_text(f'base_lr: {base_lr} lr_policy: "fixed" max_iter: 100 random_seed: 5 '
                  f'snapshot_prefix: "{folder}/run" {extra}', param)
    param.net_param.CopyFrom(io.parse_net_text(SQRT_NET))
    solver = SOLVERS["SGD"](param)
    rng = np.random.RandomState(0)
    solver.net.blobs["data"].data[...] = rng.uniform(0, 1, (4, 3))
    solver.net.blobs["label"].data[...] = [0, 1, 1, 0]
    return solver


def weights(net):
    return {name: [blob.data.copy() for blob in blobs] for name, blobs in net.params.items()}


def assert_named_layer_is_first_non_finite(net, message):
    layer, top = re.search(r'top "([^"]+)" of layer "([^"]+)"', message).group(2, 1)
    for name in net._layer_names[:net._layer_names.index(layer)]:
        for earlier in net.top_names[name]:
            assert np.isfinite(net.blobs[earlier].data).all(), earlier
    assert not np.isfinite(net.blobs[top].data).all()


def test_nan_loss_stops_before_the_update_and_snapshots_the_last_good_weights(tmp_path):
    solver = sqrt_solver(tmp_path)
    with pytest.raises(caffe.CaffeError) as info:
        solver.step(100)
    message = str(info.value)
    failed_at = solver.iter
    assert 0 < failed_at < 100
    assert re.fullmatch(
        rf'iteration {failed_at}: the loss is nan; the first non-finite output is top "sqrt" of '
        rf'layer "sqrt"; training stopped without applying this update; the weights before this '
        rf"update are in {tmp_path}/run_iter_{failed_at}\.caffemodel \(resume with --snapshot "
        rf"{tmp_path}/run_iter_{failed_at}\.solverstate\); lower base_lr \(50\) or set "
        r"clip_gradients", message), message
    assert_named_layer_is_first_non_finite(solver.net, message)
    # The same run stopped by hand one iteration earlier than the failure has these weights.
    (tmp_path / "ref").mkdir()
    reference = sqrt_solver(tmp_path / "ref")
    reference.step(failed_at)
    saved = caffe.Net(io.parse_net_text(SQRT_NET), caffe.TEST,
                      weights=f"{tmp_path}/run_iter_{failed_at}.caffemodel")
    for name, blobs in weights(reference.net).items():
        for mine, expected, on_disk in zip(solver.net.params[name], blobs, saved.params[name]):
            np.testing.assert_array_equal(mine.data, expected)
            np.testing.assert_array_equal(on_disk.data, expected)
            assert np.isfinite(expected).all()


def test_nan_with_iter_size_names_the_failing_forward_and_no_snapshot_when_asked(tmp_path):
    solver = sqrt_solver(tmp_path, "iter_size: 2")
    solver.snapshot_on_nan = False
    before = None
    with pytest.raises(caffe.CaffeError, match=r"the loss is nan in forward 1 of iter_size 2; "
                                               r'the first non-finite output is top "sqrt"') as info:
        while True:
            before = weights(solver.net)
            solver.step(1)
    assert "training stopped without applying this update; lower base_lr" in str(info.value)
    assert_named_layer_is_first_non_finite(solver.net, str(info.value))
    for name, blobs in before.items():
        for blob, expected in zip(solver.net.params[name], blobs):
            np.testing.assert_array_equal(blob.data, expected)
    assert not list(tmp_path.glob("run_iter_*"))


def test_non_finite_gradient_with_a_finite_loss_stops_too(tmp_path):
    # ip1 outputs exactly -1: sqrt(1 + -1) = 0 is finite, its gradient 0.5 / sqrt(0) is not.
    solver = sqrt_solver(tmp_path, base_lr=0.1)
    solver.net.params["ip1"][0].data[...] = 0
    solver.net.params["ip1"][1].data[...] = -1
    before = weights(solver.net)
    with pytest.raises(caffe.CaffeError, match=r'^iteration 0: the loss is [0-9.]+ but the gradient '
                                               r'of parameter 0 of layer "ip1" \(the last such '
                                               r"layer\) is not finite; training stopped"):
        solver.step(1)
    assert np.isfinite(solver.net.blobs["loss"].data).all()
    for name, blobs in before.items():
        for blob, expected in zip(solver.net.params[name], blobs):
            np.testing.assert_array_equal(blob.data, expected)
    assert (tmp_path / "run_iter_0.caffemodel").exists()


OOM_SCRIPT = """
import resource, sys
import segnet_caffe as caffe
from segnet_caffe import cli
vm = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize")][0] * 1024
limit = vm + (1 << 30)   # 1 GiB more than this process has mapped: the 2 GiB conv output fails
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
try:
    caffe.Net("net.prototxt", caffe.TRAIN).forward()
except caffe.CaffeError as error:
    print("API:", error)
sys.exit(cli.main(["time", "--model", "net.prototxt", "--iterations", "1"]))
"""
BIG_NET = """name: "big"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 8 dim: 3 dim: 256 dim: 256 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 1024 kernel_size: 3 pad: 1 } }
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmSize from /proc")
def test_out_of_memory_names_the_layer_batch_and_resolution(tmp_path):
    (tmp_path / "net.prototxt").write_text(BIG_NET)
    result = subprocess.run([sys.executable, "-c", OOM_SCRIPT], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    expected = ('out of memory (cpu) in the forward of layer "conv" of net "big" at batch size 8 at '
                'resolution 256x256 (blob "data" (8, 3, 256, 256)): lower batch_size (iter_size '
                "keeps the effective batch) or the resolution (new_height/new_width)")
    assert result.stdout.strip() == f"API: {expected}", result.stdout + result.stderr
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == f"segnet-caffe: error: {expected}"
    assert "Traceback" not in result.stderr


def test_nan_through_the_cli_is_one_line_and_the_flag_skips_the_snapshot(tmp_path, train):
    write_files(tmp_path, "base_lr: 50")
    (tmp_path / "solver.prototxt").write_text(
        (tmp_path / "solver.prototxt").read_text().replace("base_lr: 0.01 ", "").replace(
            "max_iter: 4", "max_iter: 100"))
    status, err = train("--no_snapshot_on_nan")
    assert status == 1 and "Traceback" not in err
    assert re.fullmatch(r"segnet-caffe: error: iteration \d+: the loss is nan; the first non-finite "
                        r'output is top "sqrt" of layer "sqrt"; training stopped without applying '
                        r"this update; lower base_lr \(50\) or set clip_gradients",
                        err.strip().splitlines()[-1]), err
    assert sorted(p.name for p in (tmp_path / "snaps").iterdir()) == sorted([
        name for i in range(2, int(re.search(r"iteration (\d+)", err).group(1)), 2)
        for name in (f"run_iter_{i}.caffemodel", f"run_iter_{i}.solverstate",
                     f"run_iter_{i}.solverstate.resume")])


@pytest.mark.skipif(not Path("/proc/sys/vm/overcommit_memory").exists()
                    or Path("/proc/sys/vm/overcommit_memory").read_text().strip() == "1",
                    reason="needs Linux refusing allocations larger than memory")
def test_parameters_too_large_to_allocate_name_the_layer():
    text = SQRT_NET.replace("dim: 4 dim: 3", "dim: 4 dim: 4096").replace("num_output: 3",
                                                                       "num_output: 2147483647")
    with pytest.raises(caffe.CaffeError, match=r'^<NetParameter>: layer "ip1" \(InnerProduct\): '
                                               r"out of memory creating its parameters \(32768\.0 "
                                               r"GiB\): check num_output and the kernel size$"):
        caffe.Net(io.parse_net_text(text), caffe.TRAIN)


# ----- the snapshot_prefix rule ----------------------------------------------------------------
def write_files(folder, extra=""):
    (folder / "net.prototxt").write_text(SQRT_NET)
    (folder / "solver.prototxt").write_text(
        'net: "net.prototxt" base_lr: 0.01 lr_policy: "fixed" max_iter: 4 snapshot: 2 '
        f'snapshot_prefix: "snaps/run" random_seed: 1 {extra}\n')
    (folder / "snaps").mkdir(exist_ok=True)


@pytest.fixture
def train(tmp_path, monkeypatch, cli_in_process):
    """`segnet-caffe train --solver solver.prototxt ARGS` in tmp_path: (exit status, stderr)."""
    monkeypatch.chdir(tmp_path)
    return lambda *args: cli_in_process("train", "--solver", "solver.prototxt", "--log_file",
                                        "none", *args)


def test_a_fresh_run_never_overwrites_an_earlier_runs_snapshots(tmp_path, train):
    write_files(tmp_path)
    status, _ = train()
    assert status == 0
    first = (tmp_path / "snaps" / "run_iter_4.caffemodel").read_bytes()
    status, err = train()
    assert status == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        'segnet-caffe: error: snapshot_prefix "snaps/run" already holds snapshots of later '
        "iterations (2, 4) than this run starts from (0), which it would overwrite: resume the "
        "latest with --snapshot snaps/run_iter_4.solverstate, choose another snapshot_prefix, or "
        "pass --overwrite_snapshots")
    assert "Iteration 0" not in err
    assert (tmp_path / "snaps" / "run_iter_4.caffemodel").read_bytes() == first
    # Resuming from an older snapshot would overwrite iteration 4 too; the Python API says so.
    solver = caffe.get_solver("solver.prototxt")
    with pytest.raises(caffe.CaffeError, match=r"later iterations \(4\) than this run starts "
                                               r"from \(2\)"):
        solver.solve("snaps/run_iter_2.solverstate")
    status, err = train("--overwrite_snapshots")
    assert status == 0, err
    assert "Iteration 2's snapshot files will be overwritten: snaps/run_iter_2.caffemodel" in err


def test_an_interrupted_snapshot_write_is_overwritten_with_a_log_line(tmp_path, train):
    write_files(tmp_path)
    (tmp_path / "snaps" / "run_iter_2.caffemodel").write_bytes(b"partial")
    status, err = train()
    assert status == 0, err
    assert "Iteration 2's snapshot files will be overwritten: snaps/run_iter_2.caffemodel" in err
    io.read_caffemodel(tmp_path / "snaps" / "run_iter_2.caffemodel")


def test_a_missing_snapshot_folder_is_reported_before_training(tmp_path, train):
    write_files(tmp_path)
    (tmp_path / "snaps").rmdir()
    status, err = train()
    assert status == 1
    assert err.strip().splitlines()[-1] == ('segnet-caffe: error: solver.prototxt: snapshot_prefix '
                                            '"snaps/run": folder "snaps" does not exist')
    assert "Iteration 0" not in err
