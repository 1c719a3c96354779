"""Pictures: training curves from a Caffe-format training log."""
import re

from .errors import CaffeError

_TRAIN_LOSS = re.compile(r"Iteration (\d+)(?: \([^)]*\))?, loss = ([-+.\deEinfa]+)")
_TESTING = re.compile(r"Iteration (\d+), Testing net \(#(\d+)\)")
_TEST_OUTPUT = re.compile(r"Test net output #\d+: (\S+) = ([-+.\deEinfa]+)")


def parse_training_log(path):
    """Training loss points [(iter, loss)] and test outputs {(net, name): [(iter, value)]}."""
    try:
        lines = open(path, encoding="utf-8", errors="replace").read().splitlines()
    except OSError as exc:
        raise CaffeError(f"{path}: cannot read the training log ({exc.strerror})") from None
    train, tests = [], {}
    test_iter, test_net = None, None
    for line in lines:
        if match := _TRAIN_LOSS.search(line):
            train.append((int(match[1]), float(match[2])))
        elif match := _TESTING.search(line):
            test_iter, test_net = int(match[1]), int(match[2])
        elif (match := _TEST_OUTPUT.search(line)) and test_iter is not None:
            tests.setdefault((test_net, match[1]), []).append((test_iter, float(match[2])))
    return train, tests


def plot_training_log(log_path, png_path):
    """Plot training loss (and each test output) against iterations into `png_path`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, tests = parse_training_log(log_path)
    if not train and not tests:
        raise CaffeError(f'{log_path}: no "Iteration N, loss = X" or test output lines found')
    figure, loss_axis = plt.subplots(figsize=(8, 5))
    if train:
        loss_axis.plot(*zip(*train), label="training loss", color="tab:blue")
    other_axis = None
    colours = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"][1:] * 4)
    for (net, name), points in sorted(tests.items()):
        is_loss = "loss" in name
        axis = loss_axis if is_loss else (other_axis or loss_axis.twinx())
        if not is_loss:
            other_axis = axis
            axis.set_ylabel("test accuracy / score")
        axis.plot(*zip(*points), marker="o", linestyle="--", color=next(colours),
                  label=f"test #{net} {name}")
    loss_axis.set_xlabel("iteration")
    loss_axis.set_ylabel("loss")
    loss_axis.set_title("Training and validation loss")
    handles, labels = loss_axis.get_legend_handles_labels()
    if other_axis is not None:
        more_handles, more_labels = other_axis.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    loss_axis.legend(handles, labels, loc="upper right")
    loss_axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    plt.close(figure)
    return png_path
