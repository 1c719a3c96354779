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


def write_dataset(folder, images, labels, prefix="", image_name="img{}.png",
                  label_name="lab{}.png", list_name="list.txt"):
    """The small-dataset factory of the tests: each BGR image and label image of the lists as a
    PNG in `folder` (named by image_name / label_name formatted with its index) and a
    DenseImageData list file of the pairs, each path written after `prefix` (e.g. the folder, for
    absolute paths). Returns the list file's path."""
    import cv2

    lines = []
    for i, (image, label) in enumerate(zip(images, labels)):
        names = image_name.format(i), label_name.format(i)
        for name, array in zip(names, (image, label)):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / name), array)
        lines.append(f"{prefix}{names[0]} {prefix}{names[1]}\n")
    (folder / list_name).write_text("".join(lines))
    return folder / list_name


@pytest.fixture
def tiny_dataset(tmp_path):
    """Five 8x8 colour images with 2-class label images and a DenseImageData list file of
    absolute paths."""
    import numpy as np

    rng = np.random.RandomState(0)
    images, labels = [], []
    for i in range(5):
        images.append(rng.randint(0, 255, (8, 8, 3)).astype(np.uint8))
        label = np.zeros((8, 8), np.uint8)
        label[2:5, 3:6] = 1
        label[rng.rand(8, 8) > 0.8] = 1
        labels.append(label)
    return write_dataset(tmp_path, images, labels, prefix=f"{tmp_path}/")


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
