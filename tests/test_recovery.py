"""Nothing lost: a training process killed with SIGKILL resumes from its last snapshot to the
same weights as an uninterrupted run, and a kill in the middle of a snapshot write leaves no
partial file under a snapshot's name (and the temporary file is cleaned up on resume)."""
import signal
import subprocess
import sys

import numpy as np

from segnet_caffe import io

NET = """name: "pixels"
layer { name: "data" type: "DenseImageData" top: "data" top: "label"
  transform_param { scale: 0.00390625 }
  dense_image_data_param { source: "LIST" batch_size: 2 shuffle: true } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "drop" type: "Dropout" bottom: "conv" top: "conv" dropout_param { dropout_ratio: 0.3 } }
layer { name: "score" type: "Convolution" bottom: "conv" top: "score"
  convolution_param { num_output: 2 kernel_size: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
"""
def setup_run(folder, list_file, max_iter, snapshot):
    (folder / "net.prototxt").write_text(NET.replace("LIST", str(list_file)))
    (folder / "snaps").mkdir()
    (folder / "solver.prototxt").write_text(
        f'net: "{folder}/net.prototxt" base_lr: 0.1 lr_policy: "step" gamma: 0.5 stepsize: 20 '
        f'momentum: 0.9 weight_decay: 0.001 max_iter: {max_iter} display: 1 snapshot: {snapshot} '
        f'snapshot_prefix: "{folder}/snaps/run" random_seed: 7\n')
    return folder / "solver.prototxt"


def start_training(solver, *args):
    return subprocess.Popen([sys.executable, "-m", "segnet_caffe", "train", "--solver", str(solver),
                             "--log_file", "none", *args], stderr=subprocess.PIPE, text=True)


def latest_state(folder):
    states = sorted(folder.glob("run_iter_*.solverstate"), key=lambda p: int(p.stem.split("_")[-1]))
    return states[-1]


def final_weights(path):
    return {layer.name: [io.blobproto_to_array(b) for b in layer.blobs]
            for layer in io.read_caffemodel(path).layer if layer.blobs}


def test_kill_9_then_resume_gives_the_uninterrupted_weights(tmp_path, tiny_dataset, cli_in_process):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    whole.mkdir()
    broken.mkdir()
    max_iter = 40
    status, err = cli_in_process("train", "--solver", setup_run(whole, tiny_dataset, max_iter, 5),
                                 "--log_file", "none")
    assert status == 0, err
    process = start_training(setup_run(broken, tiny_dataset, max_iter, 5))
    for line in process.stderr:
        if "Iteration 8, loss" in line:
            break
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert not (broken / "snaps" / f"run_iter_{max_iter}.caffemodel").exists(), "finished unkilled"
    state = latest_state(broken / "snaps")
    status, err = cli_in_process("train", "--solver", broken / "solver.prototxt", "--log_file",
                                 "none", "--snapshot", state)
    assert status == 0, err
    expected = final_weights(whole / "snaps" / f"run_iter_{max_iter}.caffemodel")
    resumed = final_weights(broken / "snaps" / f"run_iter_{max_iter}.caffemodel")
    assert expected.keys() == resumed.keys()
    for name in expected:
        for a, b in zip(expected[name], resumed[name]):
            np.testing.assert_array_equal(a, b)  # bit-exact on the CPU


# A training process that dies (SIGKILL, as a power cut or the OOM killer) at the fault-injection
# point of the atomic writer: after the second snapshot's temporary file, before its rename.
DIE_IN_SNAPSHOT = """
import os, signal, sys
from segnet_caffe import cli, io

def die_in_second_snapshot(temporary, path):
    if path.endswith("run_iter_4.solverstate"):
        os.kill(os.getpid(), signal.SIGKILL)

io.before_rename = die_in_second_snapshot
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_kill_during_a_snapshot_write_leaves_no_partial_snapshot(tmp_path, tiny_dataset,
                                                                  cli_in_process):
    snaps = tmp_path / "snaps"
    solver = setup_run(tmp_path, tiny_dataset, 6, 2)
    died = subprocess.run([sys.executable, "-c", DIE_IN_SNAPSHOT, "train", "--solver", str(solver),
                           "--log_file", "none"], capture_output=True, text=True, timeout=600)
    assert died.returncode == -signal.SIGKILL, died.stderr[-2000:]
    assert sorted(p.name for p in snaps.glob("run_iter_*")) == [
        "run_iter_2.caffemodel", "run_iter_2.solverstate", "run_iter_2.solverstate.resume",
        "run_iter_4.caffemodel", "run_iter_4.solverstate.resume"]
    # Every file under a snapshot's own name is complete; the interrupted one is a temporary.
    for path in snaps.glob("run_iter_*.caffemodel"):
        io.read_caffemodel(path)
    for path in snaps.glob("run_iter_*.solverstate"):
        io.read_solverstate(path)
    leftover = [p for p in snaps.iterdir() if p.name.endswith(".tmp")]
    assert [p.name.split(".")[1] for p in leftover] == ["run_iter_4"]
    state = latest_state(snaps)
    resume_to = int(state.stem.split("_")[-1]) + 2
    status, err = cli_in_process("train", "--solver", solver, "--log_file", "none", "--snapshot",
                                 state, "--iterations", resume_to)
    assert status == 0, err
    for path in leftover:
        assert f"Removing {path}, left by a snapshot write that was interrupted" in err
        assert not path.exists()
    io.read_caffemodel(snaps / f"run_iter_{resume_to}.caffemodel")
