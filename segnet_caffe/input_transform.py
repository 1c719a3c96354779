"""Caffe's transform_param arithmetic on an image, one home: (x - mean) * scale, and back.

The data layers apply it after their crop and mirror (layer_types/list_data.DataTransformer),
the deploy path applies it to plain images (evaluate.InputSpec), and the pictures of a test
run invert it to show what the net saw (evaluate.input_to_rgb); all of them read a mean_file
with read_mean_file.
"""
from dataclasses import dataclass

import numpy as np

from . import io
from .errors import CaffeError


def read_mean_file(path):
    """A transform_param.mean_file (a BlobProto of shape (1, C, H, W)) as a (C, H, W) float32
    array; a CaffeError when it cannot be read or is not one image's shape."""
    mean = io.read_binaryproto(path)
    while mean.ndim > 3 and mean.shape[0] == 1:
        mean = mean[0]
    if mean.ndim != 3:
        raise CaffeError(f'"{path}" holds a blob of shape {mean.shape}; expected (1, C, H, W)')
    return mean.astype(np.float32)


@dataclass(frozen=True)
class InputTransform:
    """(x - mean) * scale on a (C, H, W) image; `mean` broadcasts to it (a mean_file's
    (C, H, W) blob or per-channel mean_value as (C, 1, 1)), None for no mean."""
    scale: float = 1.0
    mean: np.ndarray | None = None

    @classmethod
    def from_param(cls, param, file_mean=None):
        """A TransformationParameter's scale and mean_value; its mean_file's blob is `file_mean`
        (read by the caller, which knows what a missing or mismatched file means there)."""
        scale = param.scale if param.HasField("scale") else 1.0
        if len(param.mean_value):
            return cls(scale, np.asarray(param.mean_value, np.float32).reshape(-1, 1, 1))
        return cls(scale, None if file_mean is None else np.asarray(file_mean, np.float32))

    def apply(self, image):
        """The (C, H, W) image as the net's float32 input."""
        out = np.asarray(image).astype(np.float32)
        if self.mean is not None:
            out = out - self.mean
        if self.scale != 1:
            out = out * np.float32(self.scale)
        return out

    def invert(self, data):
        """The image that `apply` maps to the (C, H, W) `data` (float32; a scale of 0 is not
        undone)."""
        out = np.asarray(data, np.float32)
        if self.scale not in (0, 1):
            out = out / np.float32(self.scale)
        if self.mean is not None:
            out = out + self.mean
        return out

    def describe(self):
        """The steps in words, e.g. ["minus mean [104.0, 117.0, 123.0]", "times 0.5"]."""
        parts = []
        if self.mean is not None:
            spatial = np.asarray(self.mean).reshape(self.mean.shape[0], -1).shape[1] > 1
            parts.append("minus mean " + ("file" if spatial else str(self.mean_colour())))
        if self.scale != 1:
            parts.append(f"times {self.scale:g}")
        return parts

    def mean_colour(self):
        """The mean as one value per channel (0 where there is none): the colour the net sees as
        zero."""
        if self.mean is None:
            return None
        mean = np.asarray(self.mean, np.float64)
        return [float(v) for v in mean.reshape(mean.shape[0], -1).mean(axis=1)]
