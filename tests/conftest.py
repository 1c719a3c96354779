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
