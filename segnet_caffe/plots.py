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


def mean_per_iteration(points):
    """A test output's points, a vector output's entries (several values logged at one
    iteration, such as per_class_accuracy) averaged: ([(iter, value)], entries per iteration)."""
    by_iteration = {}
    for iteration, value in points:
        by_iteration.setdefault(iteration, []).append(value)
    entries = max(len(values) for values in by_iteration.values())
    return [(i, sum(values) / len(values)) for i, values in by_iteration.items()], entries


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
        points, entries = mean_per_iteration(points)
        is_loss = "loss" in name
        axis = loss_axis if is_loss else (other_axis or loss_axis.twinx())
        if not is_loss:
            other_axis = axis
            axis.set_ylabel("test accuracy / score")
        axis.plot(*zip(*points), marker="o", linestyle="--", color=next(colours),
                  label=f"test #{net} {name}" + (f" (mean of {entries})" if entries > 1 else ""))
    loss_axis.set_xlabel("iteration")
    loss_axis.set_ylabel("loss")
    loss_axis.set_title("Training loss and test outputs" if tests else "Training loss")
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


# ----- segmentation figures ----------------------------------------------------------------------
def _pyplot(show=False):
    """pyplot on the Agg backend (files only), or on the default interactive one for --show."""
    import matplotlib

    if not show:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(plt, figure, png_path, show):
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    if show:
        plt.show()
    plt.close(figure)
    return png_path


def uncertainty_to_rgb(uncertainty, vmax=None, cmap="bone_r"):
    """An HxW uncertainty (variance) map as HxWx3 uint8 RGB, 0..vmax through `cmap` (Bayesian
    SegNet's script shows it with bone_r, 0 to the image's maximum)."""
    import matplotlib
    import numpy as np

    uncertainty = np.asarray(uncertainty, np.float64)
    vmax = float(uncertainty.max()) if vmax is None else float(vmax)
    scaled = uncertainty / vmax if vmax > 0 else np.zeros_like(uncertainty)
    rgba = matplotlib.colormaps[cmap](np.clip(scaled, 0, 1))
    return np.rint(rgba[..., :3] * 255).astype(np.uint8)


def plot_segmentation_sample(png_path, image, ground_truth, prediction, uncertainty=None,
                             legend=None, title=None, show=False):
    """Input | ground truth | prediction (| uncertainty) side by side.

    image, ground_truth, prediction: HxWx3 uint8 RGB (labels already coloured, see
    datasets.colorize); uncertainty: an HxW float map (drawn with bone_r); legend: [(name, RGB)]
    for a class-colour key under the panels.
    """
    import numpy as np

    plt = _pyplot(show)
    panels = [("input", image), ("ground truth", ground_truth), ("prediction", prediction)]
    if ground_truth is None:
        panels.pop(1)
    if uncertainty is not None:
        panels.append(("uncertainty (variance)", uncertainty))
    aspect = image.shape[0] / image.shape[1]
    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4 * aspect + 1.0),
                                layout="constrained")
    for axis, (name, picture) in zip(np.atleast_1d(axes), panels):
        if name.startswith("uncertainty"):
            top = max(float(np.max(picture)), 1e-12)
            shown = axis.imshow(picture, cmap="bone_r", vmin=0, vmax=top)
            figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.04)
        else:
            axis.imshow(picture, vmin=0, vmax=255)
        axis.set_title(name)
        axis.axis("off")
    if legend:
        from matplotlib.patches import Patch

        handles = [Patch(facecolor=np.asarray(colour) / 255.0, edgecolor="grey", label=name)
                   for name, colour in legend]
        figure.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6),
                      fontsize="small", frameon=False)
    if title:
        figure.suptitle(title)
    figure.savefig(png_path, dpi=100, bbox_inches="tight")
    if show:
        plt.show()
    plt.close(figure)
    return png_path


def plot_confusion_matrix(png_path, matrix, class_names, normalize=True, show=False):
    """The confusion matrix (rows: ground truth, columns: prediction) as a heat map, each row
    divided by its pixel count when `normalize` (so the diagonal is the per-class accuracy)."""
    import numpy as np

    plt = _pyplot(show)
    matrix = np.asarray(matrix, np.float64)
    shown = matrix
    if normalize:
        rows = matrix.sum(axis=1, keepdims=True)
        shown = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    size = max(4.0, 0.6 * len(class_names) + 2)
    figure, axis = plt.subplots(figsize=(size + 1, size))
    image = axis.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    ticks = np.arange(len(class_names))
    axis.set_xticks(ticks, class_names, rotation=45, ha="right")
    axis.set_yticks(ticks, class_names)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("ground-truth class")
    axis.set_title("confusion matrix" + (" (row-normalised)" if normalize else " (pixels)"))
    if len(class_names) <= 16:
        dark = 0.5 if normalize else 0.5 * (shown.max() or 1)  # white text on the darker half
        for (i, j), value in np.ndenumerate(shown):
            text = f"{value:.2f}" if normalize else f"{int(value)}"
            axis.text(j, i, text, ha="center", va="center", fontsize="small",
                      color="white" if value > dark else "black")
    return _finish(plt, figure, png_path, show)
