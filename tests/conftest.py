"""Shared pytest fixtures."""
from pathlib import Path

import pytest

# The real-data folder sits beside the repository root (../shared); it is not part of the project.
SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_dir():
    """The ../shared folder (real Caffe data and conformance fixtures); skips the test without it."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"real-data folder {SHARED_DIR} is absent (it sits beside the repository root)")
    return SHARED_DIR


@pytest.fixture
def tiny_dataset(tmp_path):
    """Five 8x8 colour images with 2-class label images and a DenseImageData list file."""
    import cv2
    import numpy as np

    rng = np.random.RandomState(0)
    lines = []
    for i in range(5):
        image = rng.randint(0, 255, (8, 8, 3)).astype(np.uint8)
        label = np.zeros((8, 8), np.uint8)
        label[2:5, 3:6] = 1
        label[rng.rand(8, 8) > 0.8] = 1
        cv2.imwrite(str(tmp_path / f"img{i}.png"), image)
        cv2.imwrite(str(tmp_path / f"lab{i}.png"), label)
        lines.append(f"{tmp_path}/img{i}.png {tmp_path}/lab{i}.png")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return tmp_path / "list.txt"
