"""Real client code, run as published (../shared/clients; see tests/clients.py for the only
changes made to it): BVLC pycaffe's unit tests, the SegNet tutorial's train nets and solvers on
CamVid, and the tutorial's scripts end to end."""
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import segnet_caffe as caffe
from tests.clients import (BVLC_TESTS, CAMVID, CLIENTS, REPO, TUTORIAL, camvid_list, port_file,
                           run_client, tutorial_file)

pytestmark = pytest.mark.skipif(not (CLIENTS.is_dir() and CAMVID.is_dir()),
                                reason="needs ../shared/clients and ../shared/data/camvid")


# ----- BVLC pycaffe's unit tests ---------------------------------------------------------------
def test_bvlc_pycaffe_unit_tests_pass(tmp_path):
    """python/caffe/test/*.py with their import lines rewritten and nothing else. test_draw
    draws every net prototxt under <root>/models and <root>/examples (root: three folders above
    it); the SegNet tutorial's nets stand in for BVLC's model zoo there. test_nccl passes
    because has_nccl() is False, as in a Caffe built without NCCL (see segnet_caffe.process)."""
    tests = tmp_path / "python" / "caffe" / "test"
    tests.mkdir(parents=True)
    for source in sorted(BVLC_TESTS.glob("test_*.py")):
        port_file(source, tests / source.name)
    shutil.copytree(TUTORIAL / "Models", tmp_path / "models")
    shutil.copytree(TUTORIAL / "Example_Models", tmp_path / "examples")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", "-o", "addopts=",
         "--rootdir", str(tests), str(tests)], cwd=tests, capture_output=True, text=True,
        timeout=900, env={**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(REPO)})
    summary = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert re.fullmatch(r"\d+ passed(, \d+ warnings?)? in .*", summary), summary  # no skip, no failure
    assert int(summary.split()[0]) >= 52, summary


# ----- the tutorial's train nets and solvers ---------------------------------------------------
def tutorial_solver(tmp_path, model, batch_size=1, solver_mode=None, max_iter=None):
    """The tutorial's Models/<model>_solver.prototxt and _train.prototxt with their absolute
    paths pointed at the shared CamVid (two training images) and tmp_path, at `batch_size`."""
    train_list = camvid_list(tmp_path / "train.txt", "train", 2)
    train = tutorial_file(f"Models/{model}_train.prototxt", tmp_path / f"{model}_train.prototxt",
                          {"/SegNet/CamVid/train.txt": str(train_list),
                           "batch_size: 4": f"batch_size: {batch_size}"})
    replacements = {f"/SegNet/Models/{model}_train.prototxt": str(train),
                    f"/SegNet/Models/Training/{model}": str(tmp_path / "snapshots" / model)}
    if solver_mode:
        replacements["solver_mode: GPU"] = f"solver_mode: {solver_mode}"
    if max_iter:
        replacements["max_iter: 10000"] = f"max_iter: {max_iter}"
    (tmp_path / "snapshots").mkdir(exist_ok=True)
    return tutorial_file(f"Models/{model}_solver.prototxt", tmp_path / f"{model}_solver.prototxt",
                         replacements)


def check_one_step(tmp_path, model):
    """One step of the tutorial's solver: a forward and backward of its train net and an update."""
    solver = caffe.get_solver(str(tutorial_solver(tmp_path, model)))  # solver_mode: GPU, no CUDA
    conv = next(iter(solver.net.params.values()))[0]
    before = conv.data.copy()
    solver.step(1)
    loss = float(solver.net.blobs["loss"].data)
    assert np.isfinite(loss) and 0.5 < loss < 10, loss
    assert np.abs(conv.diff).sum() > 0 and not np.array_equal(conv.data, before)
    assert 11 in solver.net.blobs["label"].data  # the void label the Accuracy layers count


@pytest.mark.parametrize("model", ["segnet_basic", "bayesian_segnet_basic", "segnet",
                                   "bayesian_segnet"])
def test_tutorial_solver_steps_on_camvid(tmp_path, model):
    check_one_step(tmp_path, model)


# ----- the tutorial's workflow, scripts as published ----------------------------------------
def run_ok(script, args, cwd, **kwargs):
    result = run_client(script, args, cwd, **kwargs)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def ported_script(tmp_path, name):
    return port_file(TUTORIAL / "Scripts" / f"{name}.py", tmp_path / f"{name}.py", python2=True)


def test_tutorial_workflow_train_bn_statistics_test_and_absorb(tmp_path):
    """train.sh with the tutorial's solver, then its compute_bn_statistics.py on the snapshot,
    its test_segmentation_camvid.py on the result and its BN-absorber.py, which must not change
    the predictions."""
    solver = tutorial_solver(tmp_path, "segnet_basic", solver_mode="CPU", max_iter=2)
    trained = subprocess.run(["bash", str(REPO / "train.sh"), str(solver)], cwd=tmp_path,
                             capture_output=True, text=True, timeout=900,
                             env={**os.environ, "PYTHON": sys.executable})
    assert trained.returncode == 0, trained.stderr[-3000:]
    snapshot = tmp_path / "snapshots" / "segnet_basic_iter_2.caffemodel"
    train = tmp_path / "segnet_basic_train.prototxt"
    stats = run_ok(ported_script(tmp_path, "compute_bn_statistics"),
                   [train, snapshot, tmp_path / "bn"], tmp_path)
    assert stats.rstrip().endswith("done")
    test_list = camvid_list(tmp_path / "test.txt", "test", 2)
    inference = tutorial_file("Models/segnet_basic_inference.prototxt", tmp_path / "inference.prototxt",
                              {"/SegNet/CamVid/test.txt": str(test_list)})
    weights = tmp_path / "bn" / "test_weights.caffemodel"
    scored = run_ok(ported_script(tmp_path, "test_segmentation_camvid"),
                    ["--model", inference, "--weights", weights, "--iter", 2], tmp_path)
    assert scored.rstrip().endswith("Success!")
    run_ok(ported_script(tmp_path, "BN-absorber"),
           ["--model", inference, "--weights", weights, "--out_dir", tmp_path / "absorbed"], tmp_path)
    plain = caffe.Net(str(inference), str(weights), caffe.TEST).forward()["prob"]
    absorbed = caffe.Net(str(tmp_path / "absorbed" / "bn_conv_merged_model.prototxt"),
                         str(tmp_path / "absorbed" / "bn_conv_merged_weights.caffemodel"),
                         caffe.TEST).forward()["prob"]
    assert (plain.argmax(1) == absorbed.argmax(1)).mean() > 0.99


def example_model_weights(tmp_path, name):
    """Weights for an Example_Models net (the Model Zoo's are a download away): its fillers'."""
    model = TUTORIAL / "Example_Models" / f"{name}.prototxt"
    weights = tmp_path / f"{name}.caffemodel"
    caffe.Net(str(model), caffe.TEST).save(str(weights))
    return model, weights


def test_tutorial_bayesian_segnet_script(tmp_path):
    model, weights = example_model_weights(tmp_path, "bayesian_segnet_basic_camvid")
    data = camvid_list(tmp_path / "one.txt", "test", 1)
    out = run_ok(ported_script(tmp_path, "test_bayesian_segnet"),
                 ["--model", model, "--weights", weights,
                  "--colours", TUTORIAL / "Scripts" / "camvid11.png", "--data", data], tmp_path)
    assert "Processed:  " in out and out.rstrip().endswith("Success!")


def test_tutorial_webcam_demo_on_two_frames(tmp_path):
    model, weights = example_model_weights(tmp_path, "segnet_model_driving_webdemo")
    frames = sorted((CAMVID / "test").glob("*.png"))[:2]
    out = run_ok(ported_script(tmp_path, "webcam_demo"),
                 ["--model", model, "--weights", weights,
                  "--colours", TUTORIAL / "Scripts" / "camvid12.png"], tmp_path, frames=frames)
    assert out.count("Executed SegNet in") == 2


@pytest.mark.parametrize("flags", [["--phase", "TRAIN"], ["--phase", "ALL", "--display_lrm"]])
def test_bvlc_draw_net_script(tmp_path, flags):
    script = port_file(CLIENTS / "BVLC-caffe" / "python" / "draw_net.py", tmp_path / "draw_net.py")
    image = tmp_path / "net.png"
    out = run_ok(script, [TUTORIAL / "Models" / "segnet_basic_train.prototxt", image] + flags,
                 tmp_path)
    assert f"Drawing net to {image}" in out
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
