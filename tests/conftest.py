"""Shared pytest fixtures."""
from pathlib import Path

import pytest
import torch

# The real-data folder sits beside the repository root (../shared); it is not part of the project.
SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(autouse=True)
def seeded_fillers():
    """Every test starts from the same torch seed: torch seeds its generator at random in each
    process, and a test's random weights (unseeded fillers) must not decide whether it passes."""
    torch.manual_seed(1)


@pytest.fixture(autouse=True)
def default_engine_switches():
    """Every test starts from the engine's default switches (segnet_caffe.mode), whatever the
    test before it set."""
    from segnet_caffe import engine_options, mode

    saved, saved_options = dict(mode._state), engine_options.current()
    yield
    mode._state.update(saved)
    engine_options.set_default(**vars(saved_options))


@pytest.fixture(autouse=True)
def no_decode_outlives_its_test():
    """Data layers decode their next batch in a background thread (EngineOptions.data_prefetch). A
    decode still running when a test ends would read the next test's files (list files name
    them relative to the working folder) and log into its output: wait for it. The thread is
    one worker, so a no-op queued behind it returns when everything before it is done."""
    yield
    from segnet_caffe.layer_types import list_data
    list_data._PREFETCH.submit(int).result()


@pytest.fixture
def log_messages():
    """The messages the package logger emits during the test, in order (its logger does not
    propagate to the root logger, so pytest's caplog does not see them)."""
    import logging

    from segnet_caffe.logs import get_logger

    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    get_logger().addHandler(handler)
    yield messages
    get_logger().removeHandler(handler)


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


@pytest.fixture
def cli_in_process(capsys):
    """Run `segnet-caffe ARGS...` in this process (no interpreter start-up): a function of the
    arguments returning (exit status, stderr). It logs to the captured stderr and leaves the
    signal handlers that `train` installs as they were."""
    import signal
    import sys

    from segnet_caffe import cli
    from segnet_caffe.logs import TqdmHandler, get_logger

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGHUP)}

    def run(*args):
        for handler in get_logger().handlers:
            if isinstance(handler, TqdmHandler):
                handler.stream = sys.stderr
        capsys.readouterr()
        status = cli.main([str(arg) for arg in args])
        return status, capsys.readouterr().err

    yield run
    for sig, handler in saved.items():
        signal.signal(sig, handler)
