"""Data-parallel training on torch.distributed (gloo, 2 CPU processes): Caffe's multi-GPU rules.

Two kinds of jobs: the real command (`python -m segnet_caffe train --workers 2`, torch's elastic
launcher) and, where a test needs to look inside the processes, two spawned processes that join
the job through the same `distributed.init_process` as the command's workers. Every job runs
under a deadline, so a hang fails the test instead of the suite.
"""
import contextlib
import multiprocessing
import os
import queue
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist

import segnet_caffe as caffe
from segnet_caffe import distributed, io, mode
from segnet_caffe.errors import CaffeError
from segnet_caffe.layer_types.list_data import BatchOrder
from segnet_caffe.proto import caffe_pb2
from segnet_caffe.solver import get_solver
from tests.conftest import write_dataset

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is unavailable")

DEADLINE_S = 120
REPO = Path(__file__).resolve().parents[1]
IMAGES = 8


# ----- data, nets, solvers -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """8 random 8x8 colour images with random 0/1 labels; image i's pixel (0, 0) holds 10*i in
    its first channel, so a batch tells which images it holds. Returns the list file."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.RandomState(3)
    images, labels = [], []
    for i in range(IMAGES):
        image = rng.randint(0, 255, (8, 8, 3)).astype(np.uint8)
        image[0, 0, 0] = 10 * i
        images.append(image)
        labels.append((rng.rand(8, 8) > 0.6).astype(np.uint8))
    return write_dataset(folder, images, labels, prefix=f"{folder}/")


def net_text(source, batch_size, bn=False):
    """Convolutions with a shared pair of parameters, lr_mult/decay_mult, optional BN, softmax
    loss (no ignore_label: every image has the same number of counted pixels)."""
    conv = ('convolution_param {{ num_output: {n} kernel_size: {k} pad: {p} '
            'weight_filler {{ type: "gaussian" std: 0.3 }} '
            'bias_filler {{ type: "constant" value: 0.1 }} }}')
    # BN's scale and shift stay fixed: the fork's BN overwrites their diffs in each backward
    # instead of accumulating over iter_size (a quirk that would hide what is tested here).
    bn_layer = ('layer { name: "bn1" type: "BN" bottom: "conv1" top: "bn1" param { lr_mult: 0 } '
                'param { lr_mult: 0 } bn_param { scale_filler { type: "constant" value: 1 } '
                'shift_filler { type: "constant" value: 0.2 } } }') if bn else ""
    return f"""
name: "tiny"
layer {{ name: "data" type: "DenseImageData" top: "data" top: "label"
  transform_param {{ scale: 0.01 }}
  dense_image_data_param {{ source: "{source}" batch_size: {batch_size} shuffle: true }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param {{ lr_mult: 1 decay_mult: 1 }} param {{ lr_mult: 2 decay_mult: 0 }}
  {conv.format(n=4, k=3, p=1)} }}
{bn_layer}
layer {{ name: "relu1" type: "ReLU" bottom: "{'bn1' if bn else 'conv1'}" top: "relu1" }}
layer {{ name: "conv2" type: "Convolution" bottom: "relu1" top: "conv2"
  param {{ name: "shared_w" lr_mult: 1 }} param {{ name: "shared_b" lr_mult: 2 }}
  {conv.format(n=4, k=3, p=1)} }}
layer {{ name: "conv3" type: "Convolution" bottom: "conv2" top: "conv3"
  param {{ name: "shared_w" }} param {{ name: "shared_b" }}
  {conv.format(n=4, k=3, p=1)} }}
layer {{ name: "score" type: "Convolution" bottom: "conv3" top: "score"
  {conv.format(n=2, k=1, p=0)} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }}
"""


def write_solver(folder, source, batch_size, iter_size=2, bn=False, max_iter=4, prefix=None,
                 clip=0.05, base_lr=0.1):
    """SGD with momentum, a step lr policy, weight decay, gradient clipping and iter_size;
    snapshots FOLDER/snap_iter_N unless given another prefix."""
    prefix = prefix or f"{folder}/snap"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "net.prototxt").write_text(net_text(source, batch_size, bn))
    (folder / "solver.prototxt").write_text(f"""
net: "{folder}/net.prototxt"
type: "SGD" base_lr: {base_lr} momentum: 0.9 weight_decay: 0.01 clip_gradients: {clip}
lr_policy: "step" gamma: 0.5 stepsize: 2 max_iter: {max_iter} iter_size: {iter_size}
display: 1 snapshot: 2 snapshot_prefix: "{prefix}" random_seed: 7 solver_mode: CPU
""")
    return folder / "solver.prototxt"


def solve_here(solver_path, resume=None):
    """Train in this process (the single-process reference), from the solver file's folder."""
    cwd = os.getcwd()
    os.chdir(Path(solver_path).parent)
    try:
        mode.set_mode_cpu()
        get_solver(str(solver_path)).solve(resume)
    finally:
        os.chdir(cwd)


def snapshot(folder, iteration):
    """The weights (layer -> arrays) and history of FOLDER/snap_iter_N."""
    weights = io.read_caffemodel(str(folder / f"snap_iter_{iteration}.caffemodel"))
    params = {layer.name: [io.blobproto_to_array(b) for b in layer.blobs]
              for layer in weights.layer if layer.blobs}
    state = io.read_solverstate(str(folder / f"snap_iter_{iteration}.solverstate"))
    assert state.iter == iteration
    return params, [io.blobproto_to_array(b) for b in state.history]


def assert_same_training(folder_a, folder_b, iteration, tolerance=2e-5):
    params_a, history_a = snapshot(folder_a, iteration)
    params_b, history_b = snapshot(folder_b, iteration)
    assert params_a.keys() == params_b.keys()
    for name in params_a:
        for a, b in zip(params_a[name], params_b[name]):
            np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance, err_msg=name)
    assert len(history_a) == len(history_b)
    for a, b in zip(history_a, history_b):
        np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance)


# ----- jobs --------------------------------------------------------------------------------------
def run_command(args, cwd, timeout=DEADLINE_S):
    """`python -m segnet_caffe ARGS` (a 2-process job with --workers 2), bounded in time."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "segnet_caffe", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _process_main(rank, size, port, task, args, results):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        results.put((rank, "ok", task(rank, *args)))
    except BaseException as exc:  # reported to the test, whatever it is
        results.put((rank, "error", f"{type(exc).__name__}: {exc}"))
    finally:
        distributed.shutdown()


def run_processes(task, *args, size=2, deadline=DEADLINE_S):
    """task(rank, *args) in `size` spawned processes of one gloo job; {rank: (status, result)}
    for those that reported before the deadline (the others are killed)."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    port = free_port()
    processes = [context.Process(target=_process_main, args=(rank, size, port, task, args, results))
                 for rank in range(size)]
    for process in processes:
        process.start()
    reports, end = {}, time.monotonic() + deadline
    try:
        while len(reports) < size and time.monotonic() < end:
            if all(not p.is_alive() for p in processes) and results.empty():
                break
            try:
                rank, status, value = results.get(timeout=0.5)
                reports[rank] = (status, value)
            except queue.Empty:
                pass
    finally:
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()
    return reports


def join_job(solver_param_text="random_seed: -1", sync_bn=False, timeout_s=60):
    param = io.parse_text(solver_param_text, caffe_pb2.SolverParameter(), "<solver>")
    distributed.init_process([], param, sync_bn=sync_bn, timeout_s=timeout_s)
    return param


# ----- the batch order ---------------------------------------------------------------------------
@pytest.mark.parametrize("shards, batch_size, count", [(2, 1, 8), (2, 3, 10), (3, 2, 7)])
def test_shards_split_every_epoch_without_overlap(shards, batch_size, count):
    orders = [BatchOrder(count, batch_size, True, seed=5, shard=s, shards=shards)
              for s in range(shards)]
    single = BatchOrder(count, batch_size * shards, True, seed=5)
    steps = 3 * count  # several epochs, wrapping inside batches when count is not a multiple
    read = {s: [p for k in range(steps) for p in orders[s].positions(k)] for s in range(shards)}
    everything = sorted(p for positions in read.values() for p in positions)
    # Together the shards read consecutive positions, each once: the single process's items.
    assert everything == [p for k in range(steps) for p in single.positions(k)]
    assert everything == list(range(steps * batch_size * shards))
    for epoch in range(2):
        entries = [orders[0].entry(p) for p in range(epoch * count, (epoch + 1) * count)]
        assert sorted(entries) == list(range(count))   # a permutation per epoch
    assert [orders[0].entry(p) for p in range(count)] != \
        [orders[0].entry(p) for p in range(count, 2 * count)]


def _read_images(rank, source, steps, seed_offset):
    import torch

    torch.manual_seed(1000 * rank + seed_offset)  # the seeds differ until the job agrees on one
    param = join_job("random_seed: -1")
    mode.set_random_seed(param.random_seed)
    net = caffe.Net(caffe.io.parse_net_text(net_text(str(source), 3), "<net>"), caffe.TRAIN)
    read = []
    for _ in range(steps):
        net.forward_range(0, 0)
        read.extend(int(round(v * 100 / 10)) for v in net.blobs["data"].data[:, 0, 0, 0])
    return read


def test_two_processes_read_disjoint_parts_of_each_epoch(images):
    reports = run_processes(_read_images, images, 4, 1)
    assert {rank: status for rank, (status, _) in reports.items()} == {0: "ok", 1: "ok"}, reports
    first, second = reports[0][1], reports[1][1]
    for epoch in range(3):   # 4 steps x 2 processes x 3 images = 3 epochs of 8
        merged = []
        for step in range(4):
            merged += first[3 * step:3 * step + 3] + second[3 * step:3 * step + 3]
        assert sorted(merged[IMAGES * epoch:IMAGES * (epoch + 1)]) == list(range(IMAGES))
    assert first != second


# ----- the command: 2 processes x batch 1 == 1 process x batch 2 ---------------------------------
@pytest.fixture(scope="module")
def trained(images, tmp_path_factory):
    """The same training (4 iterations, snapshots at 2 and 4) by 1 process with batch 2 and by
    `train --workers 2` with batch 1."""
    root = tmp_path_factory.mktemp("trained")
    single = write_solver(root / "single", images, batch_size=2)
    solve_here(single)
    pair = write_solver(root / "pair", images, batch_size=1)
    job = run_command(["train", "--solver", str(pair), "--workers", "2", "--log_file", "none"],
                      cwd=pair.parent)
    assert job.returncode == 0, job.stderr[-3000:]
    return {"single": single.parent, "pair": pair.parent, "log": job.stderr}


def test_two_processes_train_as_one_with_the_combined_batch(trained):
    for iteration in (2, 4):
        assert_same_training(trained["single"], trained["pair"], iteration)


def test_the_job_logs_its_effective_batch_from_process_0_only(trained):
    log = trained["log"]
    assert ("Data-parallel training over 2 processes (gloo): effective batch 1 per process x 2 "
            "processes = 2 x iter_size 2 = 4 per update; BN batch statistics per process") in log
    assert log.count(f"Snapshotting to binary proto file {trained['pair']}/snap_iter_2.caffemodel") == 1
    assert "Gradient clipping" in log
    info_pids = {line.split()[2] for line in log.splitlines() if line.startswith("I")}
    assert len(info_pids) == 2   # the launcher and process 0; process 1 logs warnings only


def test_a_two_process_snapshot_resumes_in_one_process(trained, tmp_path, images):
    single = write_solver(tmp_path, images, batch_size=2)
    state = trained["pair"] / "snap_iter_2.solverstate"
    solve_here(single, resume=str(state))
    assert_same_training(trained["single"], tmp_path, 4)


def test_a_one_process_snapshot_resumes_with_two_processes(trained, tmp_path, images):
    pair = write_solver(tmp_path, images, batch_size=1)
    state = trained["single"] / "snap_iter_2.solverstate"
    job = run_command(["train", "--solver", str(pair), "--workers", "2", "--snapshot",
                       str(state), "--log_file", "none"], cwd=tmp_path)
    assert job.returncode == 0, job.stderr[-3000:]
    assert_same_training(trained["single"], tmp_path, 4)


# ----- inside the processes: snapshots, BN statistics, a dying process ---------------------------
def _train_in_own_folder(rank, folder, solver_path, sync_bn, kill_at):
    param = join_job(Path(solver_path).read_text(), sync_bn=sync_bn, timeout_s=60)
    own = Path(folder) / f"process{rank}"
    own.mkdir()
    os.chdir(own)   # relative snapshot_prefix: each process would write into its own folder
    solver = caffe.get_solver(param)
    distributed.GradientAverager(solver)
    if kill_at is not None and rank == 1:
        solver.add_callback(on_start=lambda: solver.iter == kill_at and os.kill(
            os.getpid(), signal.SIGKILL))
    solver.solve()
    return sorted(os.listdir(own))


@pytest.mark.parametrize("sync_bn", [False, True])
def test_bn_statistics_per_process_or_synchronised_and_only_process_0_snapshots(tmp_path, images, sync_bn):
    # Per process (Caffe's rule), 2 x batch 1 normalises each image by itself: 1 process with
    # batch 1 and twice the iter_size. With --sync_bn the statistics cover both images: 1
    # process with batch 2. No clipping here: Caffe clips the gradient summed over iter_size,
    # so with clipping 1 process x iter_size 4 is not 2 processes x iter_size 2.
    pair = write_solver(tmp_path / "pair", images, batch_size=1, bn=True, max_iter=2,
                        prefix="snap", clip=-1)
    reports = run_processes(_train_in_own_folder, str(tmp_path / "pair"), str(pair), sync_bn,
                            None)
    # Process 0 alone wrote snapshots (each process ran in its own folder).
    assert reports[0] == ("ok", ["snap_iter_2.caffemodel", "snap_iter_2.solverstate",
                                 "snap_iter_2.solverstate.resume"]), reports
    assert reports[1] == ("ok", []), reports
    single = write_solver(tmp_path / "single", images, batch_size=2 if sync_bn else 1,
                          iter_size=2 if sync_bn else 4, bn=True, max_iter=2, clip=-1)
    solve_here(single)
    assert_same_training(single.parent, tmp_path / "pair" / "process0", 2)
    other = write_solver(tmp_path / "other", images, batch_size=1 if sync_bn else 2,
                         iter_size=4 if sync_bn else 2, bn=True, max_iter=2, clip=-1)
    solve_here(other)
    with pytest.raises(AssertionError):
        assert_same_training(other.parent, tmp_path / "pair" / "process0", 2)


def test_a_killed_process_stops_the_others_with_a_message(tmp_path, images):
    solver = write_solver(tmp_path / "job", images, batch_size=1, max_iter=50, prefix="snap")
    start = time.monotonic()
    reports = run_processes(_train_in_own_folder, str(tmp_path), str(solver), False, 3,
                            deadline=60)
    assert time.monotonic() - start < 60
    assert 1 not in reports   # killed: it reported nothing
    status, message = reports[0]
    assert status == "error" and message.startswith("CaffeError: process 0 of 2: averaging "
                                                    "gradients at iteration 3 failed: another "
                                                    "process of the job stopped or crashed"), message


def test_a_diverging_job_stops_every_process_at_the_same_update(tmp_path, images):
    # The processes see the same averaged gradients: a NaN in one reaches all, and they stop
    # together (process 0 snapshotting the weights before that update) instead of hanging.
    solver = write_solver(tmp_path / "job", images, batch_size=1, max_iter=50, prefix="snap",
                          clip=-1, base_lr=1e12)
    reports = run_processes(_train_in_own_folder, str(tmp_path), str(solver), False, None)
    messages = [reports[rank][1] for rank in (0, 1)]
    assert [reports[rank][0] for rank in (0, 1)] == ["error", "error"], reports
    assert messages[0].startswith("CaffeError: iteration ") and \
        "training stopped without applying this update" in messages[0], messages
    iteration = int(messages[0].split()[2].rstrip(":"))
    assert all(m.startswith(f"CaffeError: iteration {iteration}:") for m in messages), messages
    assert sorted(os.listdir(tmp_path / "process0")) == [
        f"snap_iter_{iteration}.caffemodel", f"snap_iter_{iteration}.solverstate",
        f"snap_iter_{iteration}.solverstate.resume"]
    assert os.listdir(tmp_path / "process1") == []


@contextlib.contextmanager
def running_job(folder, images):
    """`train --workers 2` of a long run, in the background, once it has snapshotted iteration
    2: yields (the launcher's Popen, {rank: worker pid}, the file of its stderr)."""
    solver = write_solver(folder, images, batch_size=1, max_iter=10000)
    errors = folder / "stderr.txt"
    with open(errors, "w") as stream:
        launcher = subprocess.Popen([sys.executable, "-m", "segnet_caffe", "train", "--solver",
                                     str(solver), "--workers", "2", "--log_file", "none"],
                                    cwd=folder, env=dict(os.environ, PYTHONPATH=str(REPO)),
                                    stderr=stream)
    try:
        end = time.monotonic() + DEADLINE_S
        while not (folder / "snap_iter_2.solverstate").exists():
            assert time.monotonic() < end and launcher.poll() is None, errors.read_text()[-3000:]
            time.sleep(0.5)
        workers = {}
        for path in Path(f"/proc/{launcher.pid}/task").glob("*/children"):
            for pid in path.read_text().split():
                environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                rank = next(v for v in environment if v.startswith(b"RANK="))
                workers[int(rank[5:])] = int(pid)
        assert sorted(workers) == [0, 1]
        yield launcher, workers, errors
    finally:
        if launcher.poll() is None:
            launcher.kill()
        launcher.wait()


@pytest.mark.slow
def test_the_launcher_stops_the_job_when_a_worker_is_killed(tmp_path, images):
    with running_job(tmp_path, images) as (launcher, workers, errors):
        os.kill(workers[1], signal.SIGKILL)
        assert launcher.wait(timeout=60) == 1
    assert errors.read_text().strip().splitlines()[-1] == (
        f"segnet-caffe: error: training job of 2 processes failed: process 1 (pid {workers[1]}) "
        "was killed by SIGKILL; the other processes were stopped")


@pytest.mark.slow
def test_ctrl_c_snapshots_and_stops_every_process_at_the_same_iteration(tmp_path, images):
    with running_job(tmp_path, images) as (launcher, workers, errors):
        os.kill(launcher.pid, signal.SIGINT)
        assert launcher.wait(timeout=60) == 0, errors.read_text()[-3000:]
    log = errors.read_text()
    assert "SIGINT received: passed on to the 2 training processes" in log
    assert "Optimization stopped early." in log
    last = max(int(path.name.split("_")[2].split(".")[0])
               for path in tmp_path.glob("snap_iter_*.solverstate"))
    assert last > 2 and f"Resume from iteration {last} with --snapshot" in log
    state = io.read_solverstate(str(tmp_path / f"snap_iter_{last}.solverstate"))
    assert state.iter == last


# ----- flags -------------------------------------------------------------------------------------
def test_flags_that_cannot_start_a_job_are_one_line_errors(tmp_path, images, monkeypatch, capsys):
    from segnet_caffe import cli

    solver = write_solver(tmp_path, images, batch_size=1)
    for variable in distributed.WORKER_ENVIRONMENT:
        monkeypatch.delenv(variable, raising=False)
    assert cli.main(["train", "--solver", str(solver), "--workers", "2", "--gpu", "0"]) == 1
    assert "--workers 2 is for CPU training; with --gpu" in capsys.readouterr().err
    assert cli.main(["train", "--solver", str(solver), "--sync_bn"]) == 1
    assert "--sync_bn needs several processes" in capsys.readouterr().err


def test_gpu_lists_without_cuda_are_one_line_errors(tmp_path, images, monkeypatch, capsys):
    import torch

    from segnet_caffe import cli

    if torch.cuda.is_available():
        pytest.skip("checks the message of a machine without CUDA")
    solver = write_solver(tmp_path, images, batch_size=1)
    for flag in ("0,1", "all"):
        assert cli.main(["train", "--solver", str(solver), "--gpu", flag]) == 1
        assert "CUDA is not available on this machine" in capsys.readouterr().err
    # A worker started by torchrun with --gpu: the same message, before joining any job.
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(CaffeError, match="CUDA is not available"):
        distributed.init_process([0, 1], caffe_pb2.SolverParameter())
    assert not distributed.in_job()
