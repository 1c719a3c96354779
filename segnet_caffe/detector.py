"""pycaffe's Detector: a Net that classifies windows of images (R-CNN style, Girshick et al.,
"Rich feature hierarchies for accurate object detection and semantic segmentation",
arXiv:1311.2524), given as boxes or proposed by selective search."""
import os

import numpy as np

from . import preprocessing
from .net import TEST, Net


class Detector(Net):
    """A Net (in the TEST phase) that classifies windows of images.

    `model_file` and `pretrained_file` are the prototxt and caffemodel; the net's first input
    takes the windows (warped to its size) and its first output (in name order) gives the
    predictions. `mean`, `input_scale`, `raw_scale` and `channel_swap` configure
    `self.transformer` as in Classifier. With `context_pad`, each window is enlarged so that a
    border of that many pixels of the net's (square) input is context around it, as R-CNN
    extracts features; context beyond the image is filled with the mean."""

    def __init__(self, model_file, pretrained_file, mean=None, input_scale=None,
                 raw_scale=None, channel_swap=None, context_pad=None):
        super().__init__(model_file, TEST, weights=pretrained_file)
        self.transformer = preprocessing.first_input_transformer(
            self, mean, input_scale, raw_scale, channel_swap)
        self.configure_crop(context_pad)

    def detect_windows(self, images_windows):
        """Classify windows: `images_windows` holds (image file name, windows) pairs, each window
        (ymin, xmin, ymax, xmax) in pixels. Returns one dict per window, in order:
        {"window": the window, "prediction": the first output's values, "filename": the
        image}. The pairs may be any iterable (pycaffe reads them twice, so its own
        detect_selective_search returns nothing on Python 3; here they are read once)."""
        images_windows = [(filename, list(windows)) for filename, windows in images_windows]
        window_inputs = []
        for filename, windows in images_windows:
            image = preprocessing.load_image(filename)
            window_inputs.extend(self.crop(image, window) for window in windows)
        in_ = self.inputs[0]
        caffe_in = np.stack([self.transformer.preprocess(in_, window) for window in window_inputs])
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        detections = []
        for filename, windows in images_windows:
            for window in windows:
                detections.append({"window": window, "prediction": predictions[len(detections)],
                                   "filename": filename})
        return detections

    def detect_selective_search(self, image_fnames):
        """detect_windows over the windows that selective search proposes for each image, from
        the selective_search_ijcv_with_python module (which runs MATLAB); ImportError when it
        is not installed."""
        try:
            import selective_search_ijcv_with_python as selective_search
        except ImportError as error:
            raise ImportError("Detector.detect_selective_search needs the module "
                              "selective_search_ijcv_with_python (https://github.com/sergeyk/"
                              "selective_search_ijcv_with_python, with MATLAB) on the Python "
                              "path") from error
        image_fnames = [os.path.abspath(f) for f in image_fnames]  # absolute, for MATLAB
        windows_list = selective_search.get_windows(image_fnames, cmd="selective_search_rcnn")
        return self.detect_windows(zip(image_fnames, windows_list))

    def crop(self, im, window):
        """The H x W x K image's `window` (ymin, xmin, ymax, xmax; ymax and xmax excluded), or,
        with context_pad, the window with its context, warped to the net's input size and
        placed over the mean where the context lies beyond the image."""
        if self.context_pad:
            return self._context_crop(im, np.asarray(window, dtype=float))
        return im[window[0]:window[2], window[1]:window[3]]

    def _context_crop(self, im, box):
        crop_size = self.blobs[self.inputs[0]].width  # a square input
        scale = crop_size / (crop_size - 2.0 * self.context_pad)
        half_h, half_w = (box[2] - box[0] + 1) / 2, (box[3] - box[1] + 1) / 2
        centre = (box[0] + half_h, box[1] + half_w)
        box = np.round(np.tile(centre, 2) + scale * np.array((-half_h, -half_w, half_h, half_w)))
        scale_h = crop_size / (box[2] - box[0] + 1)
        scale_w = crop_size / (box[3] - box[1] + 1)
        pad_y = round(max(0, -box[0]) * scale_h)  # how far the box reaches beyond the image
        pad_x = round(max(0, -box[1]) * scale_w)
        im_h, im_w = im.shape[:2]
        box = np.clip(box, 0, [im_h, im_w, im_h, im_w])
        clip_h, clip_w = box[2] - box[0] + 1, box[3] - box[1] + 1
        crop_h = min(round(clip_h * scale_h), crop_size - pad_y)
        crop_w = min(round(clip_w * scale_w), crop_size - pad_x)
        top, left, bottom, right = box.astype(int)
        if bottom <= top or right <= left:
            raise ValueError(f"Detector.crop: the window with its context, {box.tolist()}, lies "
                             f"outside the {im_h}x{im_w} image")
        context = preprocessing.resize_image(im[top:bottom, left:right], (crop_h, crop_w))
        crop = np.ones(self.crop_dims, dtype=np.float32) * self.crop_mean
        crop[pad_y:pad_y + crop_h, pad_x:pad_x + crop_w] = context
        return crop

    def configure_crop(self, context_pad):
        """Set the crop size (the input's H x W x K) and the context padding; with context,
        also the mean to fill context beyond the image with (`crop_mean`, in the image's own
        space: before the channel swap and raw scale; zeros without a mean)."""
        in_ = self.inputs[0]
        inverse = np.argsort(self.transformer.transpose[in_])
        self.crop_dims = np.array(self.blobs[in_].data.shape[1:])[inverse]
        self.context_pad = context_pad
        if not context_pad:
            return
        mean = self.transformer.mean.get(in_)
        if mean is None:
            self.crop_mean = np.zeros(self.crop_dims, dtype=np.float32)
            return
        crop_mean = mean.transpose(inverse)
        channel_swap = self.transformer.channel_swap.get(in_)
        if channel_swap is not None:
            crop_mean = crop_mean[:, :, np.argsort(channel_swap)]
        raw_scale = self.transformer.raw_scale.get(in_)
        self.crop_mean = crop_mean / raw_scale if raw_scale is not None else crop_mean.copy()
