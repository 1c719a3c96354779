"""Segmentation scores: a confusion-matrix accumulator and SegNet's median-frequency class weights.

Conventions (SegNet's Scripts/compute_test_results.m):
- the confusion matrix has one row per ground-truth class and one column per predicted class;
  pixels whose ground truth is the ignore (void) label are left out everywhere;
- global accuracy = correctly labelled pixels / counted pixels;
- per-class accuracy of class c = matrix[c, c] / (pixels of class c) (recall);
- IoU of class c = matrix[c, c] / (row c + column c - matrix[c, c]).
Averages: class_average_accuracy and mean_iou average over the classes PRESENT in the ground
truth (a class absent from the ground truth has no accuracy; its per-class values are None/NaN).
compute_test_results.m sets an absent class's accuracy and IoU to 0 and divides by the number of
classes; both rules agree whenever every class occurs, as on CamVid's test set. Pass
`absent="zero"` to the averages for the MATLAB script's numbers.
"""
import numpy as np
import torch

from .list_files import read_label


class ConfusionMatrix:
    """Accumulates (ground truth, prediction) pixel counts over batches.

    update() takes numpy arrays or torch tensors of equal shape (any number of axes); torch
    tensors are counted on their own device with torch.bincount, numpy ones with np.bincount.
    Labels equal to `ignore_label` are skipped; any other label or prediction outside
    0..num_classes-1 is an error.
    """

    def __init__(self, num_classes, ignore_label=None, class_names=None):
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_label = None if ignore_label is None else int(ignore_label)
        self.class_names = list(class_names) if class_names is not None else \
            [f"class {c}" for c in range(self.num_classes)]
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")
        self.matrix = np.zeros((self.num_classes, self.num_classes), np.int64)
        self.images = 0

    # ----- accumulation ------------------------------------------------------------------------
    def update(self, prediction, label, images=1):
        """Count one batch (`images` says how many images it holds, for the record)."""
        if tuple(prediction.shape) != tuple(label.shape):
            raise ValueError(f"prediction shape {tuple(prediction.shape)} differs from label "
                             f"shape {tuple(label.shape)}")
        k = self.num_classes
        if isinstance(prediction, torch.Tensor) or isinstance(label, torch.Tensor):
            prediction, label = torch.as_tensor(prediction), torch.as_tensor(label)
            label = label.to(prediction.device)
            label = (label.round() if label.is_floating_point() else label).long().reshape(-1)
            prediction = prediction.long().reshape(-1)
            if self.ignore_label is not None:
                keep = label != self.ignore_label
                label, prediction = label[keep], prediction[keep]
            self._check_range(label, prediction, lambda t: (int(t.min()), int(t.max())))
            counts = torch.bincount(label * k + prediction, minlength=k * k).cpu().numpy()
        else:
            label = np.asarray(label)
            label = (np.rint(label) if label.dtype.kind == "f" else label).astype(np.int64).ravel()
            prediction = np.asarray(prediction).astype(np.int64).ravel()
            if self.ignore_label is not None:
                keep = label != self.ignore_label
                label, prediction = label[keep], prediction[keep]
            self._check_range(label, prediction, lambda a: (int(a.min()), int(a.max())))
            counts = np.bincount(label * k + prediction, minlength=k * k)
        self.matrix += counts.reshape(k, k)
        self.images += int(images)
        return self

    def _check_range(self, label, prediction, bounds):
        for what, values in (("label", label), ("prediction", prediction)):
            if values.numel() if isinstance(values, torch.Tensor) else values.size:
                low, high = bounds(values)
                if low < 0 or high >= self.num_classes:
                    void = "" if self.ignore_label is None or what == "prediction" else \
                        f" or the ignore label {self.ignore_label}"
                    raise ValueError(f"{what} values span {low}..{high}: expected 0.."
                                     f"{self.num_classes - 1}{void}")

    def merge(self, other):
        """Add another matrix's counts (e.g. from another process)."""
        if other.num_classes != self.num_classes:
            raise ValueError("cannot merge confusion matrices of different class counts")
        self.matrix += other.matrix
        self.images += other.images
        return self

    def reset(self):
        self.matrix[:] = 0
        self.images = 0

    # ----- scores ------------------------------------------------------------------------------
    @property
    def pixels(self):
        """Pixels counted (void excluded)."""
        return int(self.matrix.sum())

    @property
    def present(self):
        """Which classes occur in the ground truth."""
        return self.matrix.sum(axis=1) > 0

    @property
    def global_accuracy(self):
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")

    @property
    def per_class_accuracy(self):
        """matrix[c, c] / pixels of class c; NaN for a class absent from the ground truth."""
        rows = self.matrix.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(rows > 0, np.diag(self.matrix) / np.maximum(rows, 1), np.nan)

    @property
    def per_class_iou(self):
        """Intersection over union per class; NaN for a class absent from the ground truth."""
        diag = np.diag(self.matrix)
        union = self.matrix.sum(axis=1) + self.matrix.sum(axis=0) - diag
        return np.where(self.present, diag / np.maximum(union, 1), np.nan)

    def _average(self, values, absent):
        if absent == "zero":  # compute_test_results.m: absent classes count 0, divide by K
            return float(np.nan_to_num(values, nan=0.0).sum() / self.num_classes)
        if absent != "ignore":
            raise ValueError(f'absent must be "ignore" or "zero", got {absent!r}')
        return float(np.nanmean(values)) if self.present.any() else float("nan")

    def class_average_accuracy_with(self, absent="ignore"):
        return self._average(self.per_class_accuracy, absent)

    def mean_iou_with(self, absent="ignore"):
        return self._average(self.per_class_iou, absent)

    @property
    def class_average_accuracy(self):
        """Mean per-class accuracy over the classes present in the ground truth."""
        return self.class_average_accuracy_with("ignore")

    @property
    def mean_iou(self):
        """Mean IoU over the classes present in the ground truth."""
        return self.mean_iou_with("ignore")

    # ----- reporting ---------------------------------------------------------------------------
    def to_dict(self):
        """JSON-ready scores (NaN written as None)."""
        def clean(value):
            return None if value is None or np.isnan(value) else float(value)

        return {
            "global_accuracy": clean(self.global_accuracy),
            "class_average_accuracy": clean(self.class_average_accuracy),
            "mean_iou": clean(self.mean_iou),
            "per_class_accuracy": [clean(v) for v in self.per_class_accuracy],
            "per_class_iou": [clean(v) for v in self.per_class_iou],
            "class_names": list(self.class_names),
            "confusion_matrix": self.matrix.tolist(),
            "pixels": self.pixels,
            "images": self.images,
            "ignore_label": self.ignore_label,
            "averages_over": "classes present in the ground truth",
        }

    def format_table(self):
        """A text table: one row per class, then the three summary scores."""
        width = max([len(n) for n in self.class_names] + [5])
        rows = self.matrix.sum(axis=1)
        lines = [f"{'class':<{width}}  {'accuracy':>8}  {'IoU':>8}  {'pixels':>12}"]
        for name, acc, iou, count in zip(self.class_names, self.per_class_accuracy,
                                         self.per_class_iou, rows):
            lines.append(f"{name:<{width}}  {_fmt(acc):>8}  {_fmt(iou):>8}  {count:>12d}")
        lines.append("-" * len(lines[0]))
        lines.append(f"global accuracy          {_fmt(self.global_accuracy)}")
        lines.append(f"class average accuracy   {_fmt(self.class_average_accuracy)}")
        lines.append(f"mean IoU                 {_fmt(self.mean_iou)}")
        lines.append(f"({self.images} images, {self.pixels} pixels"
                     + (f", label {self.ignore_label} ignored" if self.ignore_label is not None
                        else "") + ")")
        return "\n".join(lines)

    def __str__(self):
        return self.format_table()


def _fmt(value):
    return "-" if np.isnan(value) else f"{value:.4f}"


# ----- median-frequency balancing ----------------------------------------------------------------
class ClassFrequencies:
    """Accumulates, per class, its pixel count and the pixel count of the images it occurs in."""

    def __init__(self, num_classes, ignore_label=None):
        self.num_classes = int(num_classes)
        self.ignore_label = ignore_label
        self.class_pixels = np.zeros(self.num_classes, np.int64)
        self.image_pixels = np.zeros(self.num_classes, np.int64)
        self.images = 0

    def update(self, label):
        label = np.asarray(label)
        if label.ndim == 3 and label.shape[-1] in (3, 4):
            raise ValueError(f"label of shape {label.shape} looks like a colour image; read it "
                             "as grayscale (class index per pixel)")
        values = label.astype(np.int64).ravel()
        counts = np.bincount(values[values != self.ignore_label] if self.ignore_label is not None
                             else values, minlength=self.num_classes)
        self.add(counts, values.size)

    def add(self, counts, pixels):
        """Count one label image from its histogram: `counts[c]` pixels of class c (void left
        out) among `pixels` pixels in all (void included)."""
        counts = np.asarray(counts, np.int64)
        if counts.size > self.num_classes:
            bad = np.nonzero(counts[self.num_classes:])[0] + self.num_classes
            raise ValueError(f"label values {bad.tolist()} outside the classes "
                             f"0..{self.num_classes - 1}")
        present = counts > 0
        self.class_pixels[:counts.size] += counts
        self.image_pixels[:counts.size][present] += int(pixels)  # the whole image, void included
        self.images += 1

    @property
    def frequencies(self):
        """freq(c) = pixels of c / pixels of the images where c occurs (NaN if c never occurs)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.image_pixels > 0,
                            self.class_pixels / np.maximum(self.image_pixels, 1), np.nan)

    def weights(self):
        """median(freq) / freq(c); 0 for a class that never occurs (it gets no loss anyway)."""
        freq = self.frequencies
        seen = ~np.isnan(freq)
        if not seen.any():
            raise ValueError("no labelled pixels: cannot compute class frequencies")
        median = np.median(freq[seen])
        return np.where(seen, median / np.where(seen, freq, 1.0), 0.0)


def median_frequency_weights(labels, num_classes, ignore_label=None, return_frequencies=False):
    """SegNet's median-frequency balancing (Eigen & Fergus): weight(c) = median(freq) / freq(c),
    freq(c) = pixels of class c / total pixels of the images in which c is present.

    `labels`: label arrays (HxW class indices) or label image paths (read as grayscale, as
    Caffe reads them). "Total pixels" counts every pixel of those images, void included (the
    definition's literal reading, as chainercv's SegNet example computes it); void pixels are
    never a class and get no weight. The median runs over the classes that occur at least once;
    a class that never occurs gets weight 0.
    """
    counter = ClassFrequencies(num_classes, ignore_label)
    for label in labels:
        is_path = isinstance(label, (str, bytes)) or hasattr(label, "__fspath__")
        counter.update(read_label(label) if is_path else label)
    if return_frequencies:
        return counter.weights(), counter.frequencies
    return counter.weights()
