"""The command-line tool as users run it: train (snapshots, Caffe-shaped log, signals), test,
time, plot, device flags and one-line errors."""
import signal
import subprocess
import sys
import time

import pytest
import torch

from segnet_caffe.plots import parse_training_log

NET = """
name: "pixels"
layer { name: "data" type: "DenseImageData" top: "data" top: "label"
  transform_param { scale: 0.00390625 }
  dense_image_data_param { source: "LIST" batch_size: 2 shuffle: true } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "score"
  convolution_param { num_output: 2 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "score" bottom: "label" top: "accuracy" include { phase: TEST } }
"""


def write_solver(folder, list_file, extra=""):
    (folder / "net.prototxt").write_text(NET.replace("LIST", str(list_file)))
    (folder / "snaps").mkdir(exist_ok=True)
    solver = folder / "solver.prototxt"
    solver.write_text(f'net: "{folder}/net.prototxt" base_lr: 0.5 lr_policy: "fixed" momentum: 0.9 '
                      f'max_iter: 6 display: 2 snapshot: 3 snapshot_prefix: "{folder}/snaps/run" '
                      f'test_iter: 2 test_interval: 3 random_seed: 1 {extra}\n')
    return solver


def run_cli(*args, cwd=None, check=True):
    result = subprocess.run([sys.executable, "-m", "segnet_caffe", *args], capture_output=True,
                            text=True, cwd=cwd, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_train_writes_snapshots_and_a_caffe_shaped_log(tmp_path, tiny_dataset):
    solver = write_solver(tmp_path, tiny_dataset)
    result = run_cli("train", "-solver", str(solver))
    log = result.stderr
    for line in ("Use CPU.", "Iteration 0, loss = ", "    Train net output #0: loss = ",
                 "Iteration 0, lr = 0.5", "Iteration 3, Testing net (#0)",
                 "    Test net output #0: accuracy = ",
                 f"Snapshotting to binary proto file {tmp_path}/snaps/run_iter_3.caffemodel",
                 "Optimization Done."):
        assert line in log, line
    for name in ("run_iter_3.caffemodel", "run_iter_3.solverstate", "run_iter_6.caffemodel",
                 "run_iter_6.solverstate"):
        assert (tmp_path / "snaps" / name).exists()
    logs = list((tmp_path / "snaps").glob("run_*.log"))
    assert len(logs) == 1 and "Iteration 2, loss = " in logs[0].read_text()
    train, tests = parse_training_log(logs[0])
    assert [i for i, _ in train] == [0, 2, 4, 6]
    assert [i for i, _ in tests[(0, "accuracy")]] == [0, 3, 6]
    png = tmp_path / "loss.png"
    run_cli("plot", str(logs[0]), str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_with_snapshot_flag_and_gflags_spelling(tmp_path, tiny_dataset):
    solver = write_solver(tmp_path, tiny_dataset)
    run_cli("train", f"--solver={solver}", "--iterations=3")
    result = run_cli("train", "--solver", str(solver), "--snapshot",
                     str(tmp_path / "snaps" / "run_iter_3.solverstate"))
    assert "Resuming from" in result.stderr and "Iteration 4, loss = " in result.stderr
    assert (tmp_path / "snaps" / "run_iter_6.caffemodel").exists()


def test_test_and_time_commands(tmp_path, tiny_dataset):
    solver = write_solver(tmp_path, tiny_dataset)
    run_cli("train", "--solver", str(solver), "--iterations", "3")
    weights = tmp_path / "snaps" / "run_iter_3.caffemodel"
    result = run_cli("test", "--model", str(tmp_path / "net.prototxt"), "--weights", str(weights),
                     "--iterations", "2")
    assert "Batch 1, accuracy = " in result.stderr and "] accuracy = " in result.stderr
    result = run_cli("time", "-model", str(tmp_path / "net.prototxt"), "-iterations", "2")
    assert "conv\tforward: " in result.stderr and "Average Forward-Backward: " in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without CUDA")
def test_gpu_flag_without_cuda_is_a_one_line_error(tmp_path, tiny_dataset):
    solver = write_solver(tmp_path, tiny_dataset)
    result = run_cli("train", "--solver", str(solver), "--gpu", "0", check=False)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("segnet-caffe: error: --gpu 0: CUDA")
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without CUDA")
def test_solver_mode_gpu_without_cuda_falls_back_and_says_so(tmp_path, tiny_dataset):
    solver = write_solver(tmp_path, tiny_dataset, "solver_mode: GPU")
    result = run_cli("train", "--solver", str(solver), "--iterations", "1")
    assert "solver_mode: GPU but CUDA is not available on this machine: falling back to the CPU" \
        in result.stderr


def test_bad_solver_path_is_a_one_line_error(tmp_path):
    result = run_cli("train", "--solver", str(tmp_path / "missing.prototxt"), check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "missing.prototxt" in result.stderr


def test_sigint_snapshots_then_stops(tmp_path, tiny_dataset):
    solver = write_solver(tmp_path, tiny_dataset).read_text().replace("max_iter: 6", "max_iter: 100000")
    (tmp_path / "long.prototxt").write_text(solver.replace("test_iter: 2 test_interval: 3", ""))
    process = subprocess.Popen([sys.executable, "-m", "segnet_caffe", "train", "--solver",
                                str(tmp_path / "long.prototxt")], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    for line in process.stderr:
        if "Iteration 4, loss" in line or time.time() > deadline:
            break
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=60)
    assert process.returncode == 0
    assert "SIGINT received" in rest and "Optimization stopped early." in rest
    snapshots = list((tmp_path / "snaps").glob("run_iter_*.solverstate"))
    assert snapshots, rest
    latest = max(snapshots, key=lambda p: int(p.stem.split("_")[-1]))
    assert f"Resume from iteration {latest.stem.split('_')[-1]} with --snapshot {latest}" in rest
