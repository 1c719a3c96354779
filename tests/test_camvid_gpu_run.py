"""The prepared CamVid GPU run (issue 19): scripts/pack_camvid.py, the recipe of
scripts/camvid_gpu_recipe.py, and scripts/camvid_gpu_run.sh --smoke end to end on the CPU, on a
tiny CamVid-shaped data set made here."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from segnet_caffe import io
from segnet_caffe.metrics import ClassFrequencies

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import camvid_gpu_recipe  # noqa: E402
import pack_camvid  # noqa: E402

RUN = REPO / "scripts" / "camvid_gpu_run.sh"
OUT_FILES = ["bench.json", "bench.md", "loss.png", "run.log", "segnet_basic_best.caffemodel",
             "segnet_basic_best.json", "summary.json", "train.log"]


@pytest.fixture
def camvid(tmp_path):
    """CamVid's layout in miniature: 6 train and 3 val pairs of 32x32 (labels 0..11, 11 void),
    train.txt listing them, val/ read from its folder."""
    root = tmp_path / "camvid"
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 3)):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for i in range(count):
            image = cv2.GaussianBlur(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), (5, 5), 0)
            cv2.imwrite(str(root / split / f"f{i}.png"), image)
            cv2.imwrite(str(root / f"{split}annot" / f"f{i}.png"),
                        rng.integers(0, 12, (32, 32), dtype=np.uint8))
    (root / "train.txt").write_text("".join(f"train/f{i}.png trainannot/f{i}.png\n"
                                            for i in range(6)))
    return root


@pytest.fixture
def packed(camvid, tmp_path):
    out = tmp_path / "packed"
    assert pack_camvid.main([str(camvid), "--out", str(out)]) == 0
    return out


def test_pack_keeps_the_labels_and_compresses_the_images(camvid, packed):
    lines = (packed / "train.txt").read_text().splitlines()
    assert lines == [f"train/f{i}.jpg trainannot/f{i}.png" for i in range(6)]
    assert len((packed / "val.txt").read_text().splitlines()) == 3
    counter = ClassFrequencies(11, 11)
    for split, count in (("train", 6), ("val", 3)):
        for i in range(count):
            label = f"{split}annot/f{i}.png"
            assert (packed / label).read_bytes() == (camvid / label).read_bytes()
            original = cv2.imread(str(camvid / split / f"f{i}.png")).astype(int)
            jpeg = cv2.imread(str(packed / split / f"f{i}.jpg")).astype(int)
            assert jpeg.shape == original.shape and 0 < np.abs(jpeg - original).mean() < 10
            if split == "train":
                counter.update(cv2.imread(str(camvid / label), cv2.IMREAD_GRAYSCALE))
    weights = json.loads((packed / "class_weights.json").read_text())["class_weights"]
    np.testing.assert_allclose(weights, counter.weights(), rtol=1e-6)
    meta = json.loads((packed / "dataset.json").read_text())
    assert meta["counts"] == {"train": 6, "val": 3, "test": 3}
    assert meta["lists"] == {"train": "train.txt", "val": "val.txt", "test": "val.txt"}
    assert (meta["image_size"], meta["num_classes"], meta["ignore_label"]) == ([32, 32], 11, 11)
    assert not (packed.parent / "packed.packing").exists()


def test_pack_limit_refusals_and_repacking(camvid, packed, tmp_path, capsys):
    # An earlier pack is replaced.
    assert pack_camvid.main([str(camvid), "--out", str(packed), "--limit", "2"]) == 0
    assert capsys.readouterr().out.startswith(f"packed train 2, val 2 image/label pairs of "
                                              f"{camvid} into {packed}: 12 files, ")
    assert len((packed / "train.txt").read_text().splitlines()) == 2
    assert len(list((packed / "train").iterdir())) == 2
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert pack_camvid.main([str(camvid), "--out", str(tmp_path / "mine")]) == 1
    assert pack_camvid.main([str(camvid), "--out", str(tmp_path / "big"),
                             "--max-mib", "0.001"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (f"pack_camvid.py: error: --out {tmp_path / 'mine'}: the folder holds files "
                      "but no dataset.json of an earlier pack; choose an empty or new folder")
    assert err[1].startswith("pack_camvid.py: error: the pack would be ")
    assert err[1].endswith(", over --max-mib 0.001 (the device tool carries 64 MiB with the "
                           "working tree): lower --quality or pack fewer images (--limit)")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert not (tmp_path / "big").exists()


def test_recipe_sizes_the_run_from_the_benchmark(tmp_path):
    bench = tmp_path / "cuda.json"
    bench.write_text(json.dumps({"device": "cuda", "nets": {"segnet_basic": {
        "engine": {"train": {"sweep": [{"batch": 16, "images_per_s": 100.0}]}},
        "bf16": {"train": {"sweep": [{"batch": 4, "images_per_s": 150.0},
                                     {"batch": 16, "images_per_s": 400.0}]}}}}}))
    assert camvid_gpu_recipe.training_rate(bench, 16) == (
        400.0, "bench/run.py's bf16 training step at batch 16 on the cuda")
    assert camvid_gpu_recipe.training_rate(bench, 32) is None
    assert camvid_gpu_recipe.training_rate(tmp_path / "missing.json", 16) is None
    # (300 s - 25 s) x 0.8 x 400 images/s / 16 = 5500 iterations; bounded both ways.
    assert camvid_gpu_recipe.iterations_for(300, 16, 400.0) == 5500
    assert camvid_gpu_recipe.iterations_for(10, 16, 400.0) == 50
    assert camvid_gpu_recipe.iterations_for(3000, 16, 400.0) == 8000


def test_recipe_writes_a_poly_solver_caffe_reads(packed, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert camvid_gpu_recipe.main(["--packed", str(packed), "--out", "proto", "--snapshots",
                                   "snaps", "--seconds", "300"]) == 0
    assert "100.0 training images/s (a guess: no benchmark given) x (300 s - 25 s) x 0.8 -> 1375 " \
           "iterations of batch 16 (3667 epochs of 6 images)" in capsys.readouterr().err
    solver = io.read_solver_prototxt("proto/segnet_basic_solver.prototxt")
    assert (solver.lr_policy, solver.max_iter) == ("poly", 1375)
    assert (solver.power, solver.base_lr) == (pytest.approx(0.9), pytest.approx(0.1))
    assert (solver.snapshot, solver.snapshot_after_train, solver.test_initialization) == (
        0, False, False)
    assert (solver.test_interval, list(solver.test_iter), solver.snapshot_prefix) == (
        137, [3], "snaps/segnet_basic")
    assert not solver.HasField("stepsize") and solver.solver_mode == solver.GPU
    assert solver.display == solver.average_loss == 1375 // 50
    train = io.read_net_prototxt(solver.net)
    data = train.layer[0].dense_image_data_param
    assert (data.batch_size, data.mirror, data.shuffle) == (16, True, True)
    assert data.source == f"{packed}/train.txt"
    assert Path("proto/segnet_basic_solver.prototxt").read_text().startswith(
        "# Generated by scripts/generate_prototxts.py")


def run_script(*args, out, env=None):
    environment = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, **(env or {})}
    return subprocess.run(["bash", str(RUN), *args], capture_output=True, text=True,
                          env=environment, timeout=300)


def test_smoke_runs_every_stage_on_the_cpu_and_writes_the_files(packed, tmp_path):
    out = tmp_path / "out"
    done = run_script("--smoke", "--packed", str(packed), out=out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == OUT_FILES
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] and summary["smoke"] and summary["problems"] == []
    assert all(stage["exit_status"] == "0" for stage in summary["stages"].values())
    assert list(summary["stages"]) == ["device", "tests", "bench", "recipe", "train", "plot"]
    best = json.loads((out / "segnet_basic_best.json").read_text())
    assert (best["output"], best["iteration"]) == ("per_class_accuracy", 2)
    weights = io.read_caffemodel(str(out / "segnet_basic_best.caffemodel"))
    classifier = next(layer for layer in weights.layer if layer.name == "conv_classifier")
    assert classifier.blobs[0].shape.dim[0] == 11
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = (out / "run.log").read_text()
    assert "no CUDA device: --smoke runs on the CPU" in log
    assert "Iteration 2, Testing net (#0)" in (out / "train.log").read_text()
    assert json.loads((out / "bench.json").read_text())["quick"] is True


def test_without_cuda_only_the_smoke_mode_runs_and_bad_setups_stop(packed, tmp_path):
    import torch

    if not torch.cuda.is_available():
        done = run_script("--packed", str(packed), out=tmp_path / "out")
        assert done.returncode == 1
        assert "no CUDA device: stopping (bash scripts/camvid_gpu_run.sh --smoke checks this " \
               "script on the CPU)" in done.stdout
    done = run_script("--smoke", "--packed", str(tmp_path / "none"), out=tmp_path / "out")
    assert done.returncode == 1 and f"no packed CamVid at {tmp_path / 'none'}" in done.stdout
    done = run_script("--smoke", out=tmp_path / "out", env={"PYTHON": "false"})
    assert done.returncode == 1 and "cannot import segnet_caffe with false" in done.stdout
    assert run_script("--bogus", out=tmp_path / "out").returncode == 2
