"""--keep_best: after each test pass the training weights are kept when a test output improved
(<snapshot_prefix>_best.caffemodel and _best.json), through the CLI and the solver API."""
import json

import numpy as np
import pytest

import segnet_caffe as caffe
from segnet_caffe.plots import mean_per_iteration, parse_training_log

NET = """
name: "pixels"
layer { name: "data" type: "DenseImageData" top: "data" top: "label" include { phase: TRAIN }
  transform_param { scale: 0.00390625 }
  dense_image_data_param { source: "LIST" batch_size: 2 shuffle: true } }
layer { name: "data" type: "DenseImageData" top: "data" top: "label" include { phase: TEST }
  transform_param { scale: 0.00390625 }
  dense_image_data_param { source: "LIST" batch_size: 1 } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "score"
  convolution_param { num_output: 2 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "score" bottom: "label" top: "accuracy"
  top: "per_class_accuracy" include { phase: TEST } }
"""


def write_solver(folder, list_file, extra="snapshot: 0"):
    """Train 8 iterations, testing every 2 over the whole list (5 images, batch 1: every pass
    sees the same images, so a pass's scores depend on the weights alone)."""
    (folder / "net.prototxt").write_text(NET.replace("LIST", str(list_file)))
    (folder / "snaps").mkdir(exist_ok=True)
    solver = folder / "solver.prototxt"
    solver.write_text(f'net: "{folder}/net.prototxt" base_lr: 0.5 lr_policy: "fixed" '
                      'momentum: 0.9 max_iter: 8 display: 2 snapshot_after_train: false '
                      f'snapshot_prefix: "{folder}/snaps/run" test_iter: 5 test_interval: 2 '
                      f'test_compute_loss: true random_seed: 1 {extra}\n')
    return solver


def passes_in_log(log_path, output):
    """[(iteration, mean of `output` over its entries)] of each test pass in a training log."""
    _, tests = parse_training_log(log_path)
    passes = {}
    for iteration, value in tests[(0, output)]:
        passes.setdefault(iteration, []).append(value)
    return [(iteration, float(np.mean(values))) for iteration, values in passes.items()]


def check_best_weights_score_their_value(folder, output):
    """The kept weights, loaded into the test net, give the recorded score again."""
    info = json.loads((folder / "snaps" / "run_best.json").read_text())
    net = caffe.Net(str(folder / "net.prototxt"), str(folder / "snaps" / "run_best.caffemodel"),
                    caffe.TEST)
    values = []
    for _ in range(5):
        net.forward()
        values.append(np.asarray(net.blobs[output].data, dtype=np.float64).copy())
    assert float(np.mean(np.mean(values, axis=0))) == pytest.approx(info["value"], rel=1e-5)
    return info


@pytest.mark.parametrize("output, better", [("per_class_accuracy", max), ("loss", min)])
def test_train_keeps_the_weights_of_the_best_test_pass(tmp_path, tiny_dataset, cli_in_process,
                                                       output, better):
    solver = write_solver(tmp_path, tiny_dataset)
    log = tmp_path / "train.log"
    status, err = cli_in_process("train", "--solver", solver, "--keep_best", output,
                                 "--log_file", log)
    assert status == 0, err
    passes = passes_in_log(log, output)
    assert [iteration for iteration, _ in passes] == [0, 2, 4, 6, 8]
    # The loss curve plots a vector output as its mean per test pass, too.
    points, entries = mean_per_iteration(parse_training_log(log)[1][(0, output)])
    assert entries == (2 if output == "per_class_accuracy" else 1)
    np.testing.assert_allclose(points, passes)
    best_value = better(value for _, value in passes)
    best_iteration = next(iteration for iteration, value in passes if value == best_value)
    info = check_best_weights_score_their_value(tmp_path, output)
    assert info["iteration"] == best_iteration and info["output"] == output
    assert info["value"] == pytest.approx(best_value, rel=1e-5)
    assert info["better"] == ("lower" if better is min else "higher")
    kept = [line for line in err.splitlines() if f"Best {output} so far" in line]
    improvements = [value for k, (_, value) in enumerate(passes)
                    if all(better(value, v) == value and value != v for _, v in passes[:k])]
    assert len(kept) == len(improvements) >= 1
    assert kept[-1].endswith(f"at iteration {best_iteration}: weights in "
                             f"{tmp_path}/snaps/run_best.caffemodel")
    assert sorted(p.name for p in (tmp_path / "snaps").iterdir()) == ["run_best.caffemodel",
                                                                      "run_best.json"]


def scripted(solver, values):
    """Make the solver's test passes score `values` in turn (accuracy), the weights untouched."""
    values = iter(values)
    solver.test = lambda index: {"accuracy": np.array(next(values)), "loss": np.array(0.0)}


def test_only_improvements_are_kept_and_a_resume_keeps_the_earlier_best(tmp_path, tiny_dataset,
                                                                         log_messages):
    path = write_solver(tmp_path, tiny_dataset, "snapshot: 4")
    info_path = tmp_path / "snaps" / "run_best.json"
    solver = caffe.get_solver(str(path))
    solver.keep_best_by("accuracy")
    scripted(solver, [0.5, 0.7, 0.6, 0.9, 0.2])
    solver.solve()
    assert json.loads(info_path.read_text())["iteration"] == 6
    assert [m.split(" at ")[0] for m in log_messages if "so far" in m] == [
        "Best accuracy so far: 0.5", "Best accuracy so far: 0.7 (was 0.5)",
        "Best accuracy so far: 0.9 (was 0.7)"]
    # Resumed at iteration 4, the run continues from the best the first run recorded by then
    # (0.9 at 6 is past its start, so it does not count: 0.7 at 2 does).
    log_messages.clear()
    resumed = caffe.get_solver(str(path))
    resumed.keep_best_by("accuracy")
    resumed.overwrite_snapshots = True  # the first run went on to 8
    scripted(resumed, [0.65, 0.8, 0.75])
    resumed.solve(str(tmp_path / "snaps" / "run_iter_4.solverstate"))
    assert any("the best accuracy of an earlier run (0.9 at iteration 6) will be replaced" in m
               for m in log_messages)
    assert [m.split(" at ")[0] for m in log_messages if "so far" in m] == [
        "Best accuracy so far: 0.65", "Best accuracy so far: 0.8 (was 0.65)"]
    assert json.loads(info_path.read_text())["value"] == pytest.approx(0.8)
    # Resumed again from iteration 8 with a best recorded at 6: it is kept.
    log_messages.clear()
    again = caffe.get_solver(str(path))
    again.param.max_iter = 10
    again.keep_best_by("accuracy")
    scripted(again, [0.1, 0.3])
    again.overwrite_snapshots = True
    again.solve(str(tmp_path / "snaps" / "run_iter_8.solverstate"))
    assert any(m.startswith("Best accuracy so far: 0.8 at iteration 6 (from ") for m in
               log_messages)
    assert json.loads(info_path.read_text())["iteration"] == 6


def test_a_non_finite_score_is_never_best(tmp_path, tiny_dataset):
    solver = caffe.get_solver(str(write_solver(tmp_path, tiny_dataset)))
    solver.keep_best_by("loss")
    scores = iter([0.5, float("nan"), 0.4, float("-inf"), 0.45])
    solver.test = lambda index: {"loss": np.array(next(scores)), "accuracy": np.array(0.0)}
    solver.solve()
    info = json.loads((tmp_path / "snaps" / "run_best.json").read_text())
    assert (info["iteration"], info["value"]) == (4, 0.4)


def test_keep_best_errors_name_the_outputs_or_the_missing_test_net(tmp_path, tiny_dataset,
                                                                  cli_in_process):
    solver = write_solver(tmp_path, tiny_dataset)
    status, err = cli_in_process("train", "--solver", solver, "--keep-best", "acuracy",
                                 "--log_file", "none")
    assert status == 1
    assert err.strip().splitlines()[-1] == (
        f'segnet-caffe: error: {solver}: --keep_best acuracy: test net #0 '
        f'({tmp_path}/net.prototxt) has no output "acuracy"; its outputs: accuracy, loss, '
        "per_class_accuracy")
    solver.write_text(solver.read_text().replace("test_interval: 2", "test_interval: 0"))
    with pytest.raises(caffe.CaffeError, match=r"--keep_best loss needs a test net that runs "
                                               r"during training"):
        caffe.get_solver(str(solver)).keep_best_by("loss")
