"""The README's demo scripts run end to end (tiny sizes here; the full demo is timed by hand)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]


def test_demo_squares_runs_every_step(tmp_path):
    out, data = tmp_path / "run", tmp_path / "squares"
    done = subprocess.run(["bash", "scripts/demo_squares.sh", str(out), "--size", "224",
                           "--count", "4", "--iterations", "2", "--data", str(data)],
                          cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert len((data / "train.txt").read_text().splitlines()) == 4
    assert (out / "snapshots" / "segnet_squares_iter_2.caffemodel").is_file()
    metrics = json.loads((out / "test" / "metrics.json").read_text())
    assert metrics["images"] == 4 and 0 <= metrics["mean_iou"] <= 1
    for picture in ("test/sample_0.png", "test/confusion_matrix.png", "loss.png", "net.png"):
        assert cv2.imread(str(out / picture)) is not None, picture
    assert f"Pictures: {out}/test/sample_*.png" in done.stdout


def test_demo_squares_refuses_images_smaller_than_its_training_crops(tmp_path):
    done = subprocess.run(["bash", "scripts/demo_squares.sh", str(tmp_path / "run"), "--size",
                           "128"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert "--size 128 is smaller than the training crops (224 x 224 px)" in done.stderr
    assert not (tmp_path / "run").exists()
