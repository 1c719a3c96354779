"""Segmenting pictures and videos with a deploy net: the loop that
scripts/test_segmentation_camvid.py (--images, --video, --camera) and `segnet-caffe segment`
share.

    segnet-caffe segment --model NET_inference.prototxt --weights W.caffemodel \\
        (--images FILE_OR_DIR... | --video IN.mp4 | --camera N) --out DIR \\
        [--tile [--tile-stride SH SW]] [--every K] [--save-labels] [--mc-samples S]

The net is `evaluate.deploy_net`'s: a data layer is replaced by an Input fed the pictures with
its transform_param. A picture of another size than the net's input is resized to it and the
prediction resized back (nearest), or, with --tile, covered by overlapping windows of the input
size whose class probabilities are averaged where they overlap (sliding-window inference, as
mmsegmentation's `slide` mode): see Segmenter.

Outputs, per picture NAME: NAME_prediction.png (class colours), NAME_overlay.png (over the
picture), NAME_uncertainty.png (--mc-samples > 1), and with --save-labels labels/NAME.png, the
class indices as a single-channel PNG. A video or camera writes NAME_overlay.mp4 and
NAME_prediction.mp4 (mp4v; NAME_uncertainty.mp4 with --mc-samples > 1) and with --save-labels
NAME_labels/FRAME.png, and reports frames/s.
"""
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from . import datasets, evaluate, plots
from .errors import CaffeError
from .layer_types.list_data import ListDataLayer


def class_map_for(spec, num_classes):
    """The ClassMap for --classes `spec` (squares | camvid | FILE.json; by default squares for
    2 classes, camvid for 11 or 12) and a net of `num_classes` classes."""
    classes = datasets.load_class_map(spec) if spec else datasets.default_class_map(num_classes)
    if len(classes.names) < num_classes:
        raise ValueError(f"--classes gives {len(classes.names)} classes but the net predicts "
                         f"{num_classes}")
    return classes


def write_label_png(path, prediction):
    """A class map as a single-channel index PNG (8-bit, 16-bit past 256 classes): what Caffe
    users feed to their own evaluation."""
    prediction = np.asarray(prediction)
    dtype = np.uint8 if prediction.max(initial=0) < 256 else np.uint16
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), prediction.astype(dtype)):
        raise CaffeError(f'cannot write "{path}"')
    return path


# ----- one picture -------------------------------------------------------------------------------
@dataclass
class Segmentation:
    """A picture's class map and, with Monte-Carlo dropout, its uncertainty, at its own size."""
    prediction: np.ndarray               # (H, W) class indices
    uncertainty: np.ndarray | None = None  # (H, W) variance averaged over the classes


def tile_starts(size, window, stride):
    """Where the windows along one axis start: every `stride` from 0, the last one flush with
    the end (so every pixel is covered; mmsegmentation's slide rule)."""
    if size <= window:
        return [0]
    return list(range(0, size - window, stride)) + [size - window]


class Segmenter:
    """Class maps for BGR pictures of any size from a deploy net and its InputSpec.

    Resizing (the default): the picture is resized to the net's input (bilinear), the class map
    resized back (nearest). One forward pass; the net sees the whole picture, at the cost of
    its detail (a 1920x1080 frame in a 360x480 net loses 4/5 of its pixels along each axis) and
    of its aspect ratio.
    Tiling (tile=True): windows of the input size at `stride` (default two thirds of the
    window) cover the picture at its own resolution; each pixel's class probabilities are the
    mean over the windows that cover it. The net sees every pixel at the scale it was trained
    at, but only one window of context at a time, and the passes grow with the picture
    (about (H / stride_h) x (W / stride_w)). A picture smaller than a window is padded (bottom,
    right) with the input's mean colour (0 in the net's input), and the padding cropped.
    """

    def __init__(self, net, spec, mc_samples=1, tile=False, stride=None):
        self.net, self.spec, self.mc_samples, self.tile = net, spec, mc_samples, tile
        window = (spec.height, spec.width)
        self.stride = tuple(stride) if stride else tuple(max(1, (2 * n) // 3) for n in window)
        for axis, step, n in zip("HW", self.stride, window):
            if not 1 <= step <= n:
                raise CaffeError(f"--tile-stride {self.stride[0]} {self.stride[1]}: the {axis} "
                                 f"stride must be 1..{n} (the window's {axis}), or windows "
                                 "leave gaps")

    @property
    def num_classes(self):
        return int(self.net.blobs["prob"].shape[1])

    def describe(self):
        size = f"{self.spec.height}x{self.spec.width}"
        if self.tile:
            return (f"pictures tiled by {size} windows at stride {self.stride[0]}x"
                    f"{self.stride[1]}, probabilities averaged where they overlap")
        return f"pictures resized to {size}, predictions resized back"

    def __call__(self, image):
        """The Segmentation of a BGR (or grayscale) uint8 picture."""
        if self.tile:
            prob, variance = self.probabilities(image)
            prediction = _labels(prob)
            uncertainty = None if variance is None else variance.mean(dim=0).cpu().numpy()
            return Segmentation(prediction, uncertainty)
        prob, variance = evaluate.predict_image(self.net, self.spec, image, self.mc_samples)
        height, width = image.shape[:2]
        prediction = cv2.resize(_labels(prob), (width, height), interpolation=cv2.INTER_NEAREST)
        uncertainty = None
        if variance is not None:
            uncertainty = cv2.resize(variance.mean(dim=0).cpu().numpy(), (width, height),
                                     interpolation=cv2.INTER_LINEAR)
        return Segmentation(prediction, uncertainty)

    def probabilities(self, image):
        """Tiling: the (K, H, W) mean class probabilities over the windows covering each pixel
        of the picture, and their variance over every window's Monte-Carlo samples (None for
        one pass): the mean of each window's variance plus squared mean, minus the squared
        mean, that of all the samples pooled."""
        height, width = image.shape[:2]
        window = (self.spec.height, self.spec.width)
        picture = self._padded(image, window)
        full = picture.shape[:2]
        total = second = None
        count = torch.zeros(full, dtype=torch.float32)
        for y in tile_starts(full[0], window[0], self.stride[0]):
            for x in tile_starts(full[1], window[1], self.stride[1]):
                crop = picture[y:y + window[0], x:x + window[1]]
                prob, variance = evaluate.predict_image(self.net, self.spec, crop,
                                                        self.mc_samples)
                prob = prob.float().cpu()
                if total is None:
                    total = torch.zeros((prob.shape[0],) + full, dtype=torch.float32)
                    second = None if variance is None else torch.zeros_like(total)
                total[:, y:y + window[0], x:x + window[1]] += prob
                count[y:y + window[0], x:x + window[1]] += 1
                if second is not None:
                    spread = variance.float().cpu() + prob ** 2
                    second[:, y:y + window[0], x:x + window[1]] += spread
        mean = total / count
        variance = None if second is None else (second / count - mean ** 2).clamp_(min=0)
        crop = (slice(None), slice(0, height), slice(0, width))
        return mean[crop], (None if variance is None else variance[crop])

    def _padded(self, image, window):
        height, width = image.shape[:2]
        bottom, right = max(0, window[0] - height), max(0, window[1] - width)
        if not bottom and not right:
            return image
        value = self.spec.transform.mean_colour() or 0.0  # becomes 0 in the net's input
        padded = cv2.copyMakeBorder(image, 0, bottom, 0, right, cv2.BORDER_CONSTANT, value=value)
        return padded.reshape(padded.shape[:2] + image.shape[2:])


def _labels(prob):
    """(H, W) class indices of (K, H, W) probabilities: the first maximum, as numpy's argmax."""
    labels = prob.argmax(dim=0).cpu().numpy()
    return labels.astype(np.uint8 if prob.shape[0] <= 256 else np.uint16)


def _as_rgb(image):
    return image[:, :, ::-1] if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)


# ----- pictures ----------------------------------------------------------------------------------
def segment_images(segmenter, paths, out, classes, save_labels=False):
    """Segment each picture file; write NAME_prediction.png, NAME_overlay.png (and
    NAME_uncertainty.png, labels/NAME.png) under `out`. Returns the number of pictures."""
    from tqdm import tqdm

    out = Path(out)
    used = set()
    for path in tqdm(paths, desc="predict", unit="image", disable=None):
        image = evaluate.read_image(path, segmenter.spec.channels)
        result = segmenter(image)
        name = path.stem
        while name in used:
            name += "_"
        used.add(name)
        rgb = _as_rgb(image)
        cv2.imwrite(str(out / f"{name}_prediction.png"),
                    datasets.colorize(result.prediction, classes)[:, :, ::-1])
        cv2.imwrite(str(out / f"{name}_overlay.png"),
                    datasets.overlay(rgb, result.prediction, classes)[:, :, ::-1])
        if result.uncertainty is not None:
            cv2.imwrite(str(out / f"{name}_uncertainty.png"),
                        plots.uncertainty_to_rgb(result.uncertainty)[:, :, ::-1])
        if save_labels:
            write_label_png(out / "labels" / f"{name}.png", result.prediction)
    return len(used)


class DatasetLabels:
    """--save-labels for the test set: each batch's predictions as OUT/labels/NAME.png, NAME the
    image's file name in the data layer's list (its position in the run for a data layer
    without a list: LMDB, HDF5)."""

    def __init__(self, net, out, data_blob="data"):
        self.layer = net.layers[evaluate._producer_index(net, data_blob)]
        self.folder = Path(out) / "labels"
        self.count = 0

    def names(self, size):
        names = self.layer.last_batch_names() if isinstance(self.layer, ListDataLayer) else None
        return names[:size] if names else [f"{self.count + n:06d}" for n in range(size)]

    def __call__(self, prediction):
        """Write a batch's (N, H, W) predictions."""
        prediction = prediction.cpu().numpy() if torch.is_tensor(prediction) else prediction
        for name, labels in zip(self.names(len(prediction)), prediction):
            write_label_png(self.folder / f"{name}.png", labels)
        self.count += len(prediction)


# ----- video and camera --------------------------------------------------------------------------
@dataclass
class VideoRun:
    """What segment_video did."""
    name: str
    frames_read: int
    frames: int                   # segmented
    seconds: float                # the whole loop: decoding, the net, encoding
    net_seconds: float            # in the net (and tiling) alone
    outputs: list

    @property
    def frames_per_second(self):
        return self.frames / self.seconds if self.seconds else 0.0

    def line(self):
        net = self.frames / self.net_seconds if self.net_seconds else 0.0
        return (f"{self.name}: segmented {self.frames} of {self.frames_read} frames in "
                f"{self.seconds:.1f} s: {self.frames_per_second:.2f} frames/s (the net alone "
                f"{net:.2f} frames/s)")


def open_capture(source):
    """cv2.VideoCapture of a video file (a path) or a camera (an int); a CaffeError if it does
    not open. What OpenCV and FFmpeg print on stderr while opening is held back (it would
    follow our one error line) and its last line becomes part of the error."""
    capture, said = _capture_quietly(source)
    if not capture.isOpened():
        if isinstance(source, int):
            raise CaffeError(f"--camera {source}: no camera with that number can be opened "
                             "on this machine")
        reason = "no such file" if not Path(source).is_file() else \
            "OpenCV cannot decode it" + (f" ({said})" if said else "")
        raise CaffeError(f'--video "{source}": cannot open it: {reason}')
    return capture


def _capture_quietly(source):
    """cv2.VideoCapture(source) with the process's stderr (file descriptor 2) sent to a
    temporary file meanwhile; (the capture, the last line written there)."""
    import os
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            capture = cv2.VideoCapture(source)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        held.seek(0)
        lines = held.read().decode("utf-8", "replace").strip().splitlines()
    last = lines[-1].split("] ", 1)[-1].strip() if lines else ""
    return capture, last


class _VideoWriters:
    """The output videos, opened at the first frame (its size)."""

    def __init__(self, out, name, fps):
        self.out, self.name, self.fps = Path(out), name, fps
        self.writers = {}

    def write(self, kind, frame_bgr):
        writer = self.writers.get(kind)
        if writer is None:
            path = self.out / f"{self.name}_{kind}.mp4"
            height, width = frame_bgr.shape[:2]
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                     (width, height))
            if not writer.isOpened():
                raise CaffeError(f'cannot write "{path}": OpenCV has no mp4v encoder here')
            self.writers[kind] = writer
        writer.write(np.ascontiguousarray(frame_bgr))

    def paths(self):
        return [self.out / f"{self.name}_{kind}.mp4" for kind in self.writers]

    def close(self):
        for writer in self.writers.values():
            writer.release()


def segment_video(segmenter, source, out, classes, every=1, save_labels=False, max_frames=None,
                  name=None):
    """Segment every `every`-th frame of a video file (a path) or a camera (an int) into
    NAME_overlay.mp4 and NAME_prediction.mp4 (at the source's frame rate / every, so that the
    duration is kept), NAME_uncertainty.mp4 with Monte-Carlo dropout, and NAME_labels/FRAME.png
    with `save_labels`. Stops at the end of the video, after `max_frames` segmented frames, or
    at Ctrl-C (the files written so far are closed properly). Returns a VideoRun."""
    from tqdm import tqdm

    if every < 1:
        raise CaffeError(f"--every must be at least 1, got {every}")
    camera = isinstance(source, int)
    name = name or (f"camera{source}" if camera else Path(source).stem)
    capture = open_capture(source)
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if fps and fps > 0 and fps == fps else 30.0  # cameras may not say
    count = 0 if camera else int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    expected = -(-count // every) if count > 0 else None
    if max_frames is not None:
        expected = min(expected, max_frames) if expected else max_frames
    writers = _VideoWriters(out, name, fps / every)
    labels = Path(out) / f"{name}_labels"
    read = done = 0
    net_seconds, vmax = 0.0, 0.0
    start = time.perf_counter()
    bar = tqdm(total=expected, desc=name, unit="frame", disable=None)
    try:
        while max_frames is None or done < max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            read += 1
            if (read - 1) % every:
                continue
            picture = frame if segmenter.spec.channels == 3 else \
                cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            began = time.perf_counter()
            result = segmenter(picture)
            net_seconds += time.perf_counter() - began
            writers.write("overlay", datasets.overlay(frame[:, :, ::-1], result.prediction,
                                                      classes)[:, :, ::-1])
            writers.write("prediction", datasets.colorize(result.prediction, classes)[:, :, ::-1])
            if result.uncertainty is not None:
                vmax = max(vmax, float(result.uncertainty.max()))  # one scale: no flicker
                writers.write("uncertainty",
                              plots.uncertainty_to_rgb(result.uncertainty, vmax)[:, :, ::-1])
            if save_labels:
                write_label_png(labels / f"{read - 1:06d}.png", result.prediction)
            done += 1
            bar.update()
    except KeyboardInterrupt:
        pass  # a camera runs until Ctrl-C: finish the files
    finally:
        bar.close()
        writers.close()
        capture.release()
    if not done:
        what = f"--camera {source}" if camera else f'--video "{source}"'
        raise CaffeError(f"{what}: no frame could be read")
    outputs = writers.paths() + ([labels] if save_labels else [])
    return VideoRun(name, read, done, time.perf_counter() - start, net_seconds, outputs)


# ----- the command line -------------------------------------------------------------------------
def add_arguments(parser):
    """The options of picture, video and camera segmentation (shared by the script and the
    `segment` command)."""
    parser.add_argument("--images", nargs="+", default=None, metavar="FILE_OR_DIR",
                        help="segment these images (files or folders)")
    parser.add_argument("--video", default=None, metavar="FILE",
                        help="segment the frames of this video (OpenCV reads it)")
    parser.add_argument("--camera", type=int, default=None, metavar="N",
                        help="segment live frames of camera N until Ctrl-C (or --max-frames)")
    parser.add_argument("--input-size", nargs=2, type=int, default=None, metavar=("H", "W"),
                        help="the net's input size (default: the prototxt's)")
    parser.add_argument("--tile", action="store_true",
                        help="cover each picture or frame with windows of the input size and "
                             "average the probabilities where they overlap, instead of resizing")
    parser.add_argument("--tile-stride", nargs=2, type=int, default=None, metavar=("SH", "SW"),
                        help="with --tile: the windows' stride (default: 2/3 of the window)")
    parser.add_argument("--every", type=int, default=1, metavar="K",
                        help="video / camera: segment every K-th frame (default 1)")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N",
                        help="video / camera: stop after N segmented frames")
    parser.add_argument("--save-labels", action="store_true",
                        help="also write each prediction as a single-channel index PNG "
                             "(labels/NAME.png; for a video NAME_labels/FRAME.png)")


def check_arguments(parser, args, need_input=True):
    """argparse errors for contradictory options; whether pictures, a video or a camera is
    the input."""
    given = [flag for flag, value in (("--images", args.images), ("--video", args.video),
                                      ("--camera", args.camera)) if value is not None]
    if len(given) > 1:
        parser.error(f"give one of --images, --video, --camera, not {' and '.join(given)}")
    if need_input and not given:
        parser.error("give the pictures to segment: --images, --video or --camera")
    if args.tile_stride is not None and not args.tile:
        parser.error("--tile-stride needs --tile")
    if args.every < 1:
        parser.error("--every must be at least 1")
    if args.max_frames is not None and args.max_frames < 1:
        parser.error("--max-frames must be at least 1")
    return bool(given)


def run(args, out, log=print):
    """Segment args.images, args.video or args.camera with args.model and args.weights (see
    add_arguments; also args.mc_samples and args.classes) into the folder `out`."""
    net, spec = evaluate.deploy_net(args.model, args.weights, args.input_size)
    if "prob" not in net.blobs:
        raise CaffeError(f'{args.model}: no "prob" blob (the Softmax output) to predict from')
    num_classes = net.blobs["prob"].shape[1]
    classes = class_map_for(args.classes, num_classes)
    mc_samples = evaluate.check_mc_samples(net, args.mc_samples)
    segmenter = Segmenter(net, spec, mc_samples, args.tile, args.tile_stride)
    log(f"input: {spec.source}; {segmenter.describe()}")
    with torch.no_grad():
        if args.images is not None:
            count = segment_images(segmenter, evaluate.image_paths(args.images), out, classes,
                                   args.save_labels)
            log(f"wrote predictions of {count} image(s) to {out}/")
            return None
        source = args.camera if args.camera is not None else args.video
        result = segment_video(segmenter, source, out, classes, args.every, args.save_labels,
                               args.max_frames)
    log(result.line())
    for path in result.outputs:
        log(f"wrote {path}")
    return result
