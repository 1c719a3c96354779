"""pycaffe's input preprocessing (the "Pre-processing" and "Image IO" parts of caffe.io, which
re-exports them): `load_image`, `resize_image`, `oversample` and the `Transformer` that turns
H x W x K images into a Net's K x H x W inputs.

pycaffe computes these with scikit-image and SciPy; here numpy, Pillow and OpenCV give the same
numbers without them: images are read by Pillow, which scikit-image reads PNG and JPEG files
with (through imageio), and resizing samples, filters and clips as skimage.transform.resize
does. Caffe's own image reading for its data layers (OpenCV, BGR) is layer_types/list_data.py's.
"""
import cv2
import numpy as np
from PIL import Image

from .errors import CaffeError

__all__ = ["Transformer", "load_image", "oversample", "resize_image"]


# ----- Image IO ----------------------------------------------------------------------------------

# skimage.color.rgb2gray's weights (ITU-R BT.709 luminance), which load_image(color=False) uses.
_GRAY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721])

# Pillow modes whose pixels numpy reads as they are; the others are converted to RGB(A).
_PLAIN_MODES = ("L", "LA", "RGB", "RGBA", "I;16", "I", "F")


def load_image(filename, color=True):
    """An image file as pycaffe's load_image reads it: float32 in [0, 1], H x W x 3 in RGB order
    (`color`, a grayscale file's channel repeated) or H x W x 1 (`color=False`: a colour image
    becomes its luminance 0.2125 R + 0.7154 G + 0.0721 B, skimage's rgb2gray).

    Integer pixels are divided by their type's maximum (255 for 8-bit, 65535 for 16-bit), as
    skimage's img_as_float. An alpha channel is dropped with `color`; without, the image is first
    composed over white, as skimage's imread(as_gray=True) does. A gray image with alpha (LA) is
    read as gray here; pycaffe returns it as H x W x 2 (or fails without `color`). A missing or
    unreadable file raises Pillow's error (FileNotFoundError, or an OSError naming it)."""
    image = _unit_float(_read_pixels(filename))
    if image.ndim == 3 and image.shape[2] in (2, 4):
        image = image[:, :, :-1] if color else _over_white(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not color and image.ndim == 3:
        image = image @ _GRAY_WEIGHTS
    image = image.astype(np.float32)
    if image.ndim == 2:
        image = np.tile(image[:, :, np.newaxis], (1, 1, 3 if color else 1))
    return image


def _read_pixels(filename):
    """The file's pixels as Pillow (scikit-image's reader) gives them: H x W or H x W x C."""
    with Image.open(filename) as image:
        if image.mode == "1":
            image = image.convert("L")
        elif image.mode not in _PLAIN_MODES:  # palette, CMYK, ...: as imageio converts them
            alpha = "A" in image.mode or "a" in image.mode or "transparency" in image.info
            image = image.convert("RGBA" if alpha else "RGB")
        return np.asarray(image)


def _unit_float(pixels):
    """skimage's img_as_float: integers scaled by their type's maximum, as float64."""
    if np.issubdtype(pixels.dtype, np.integer):
        return np.multiply(pixels, 1.0 / np.iinfo(pixels.dtype).max, dtype=np.float64)
    return pixels.astype(np.float64)


def _over_white(image):
    """skimage's rgba2rgb: colour channels composed over a white background by the last
    (alpha) channel."""
    alpha = image[:, :, -1:]
    return np.clip(image[:, :, :-1] * alpha + (1 - alpha), 0, 1)


# ----- resizing ----------------------------------------------------------------------------------

def resize_image(im, new_dims, interp_order=1):
    """The H x W x K image `im` resized to new_dims = (height, width), as float32, as pycaffe's.

    For K = 1 or 3, pycaffe scales the image to [0, 1], resizes it with
    skimage.transform.resize(order=interp_order, mode='constant') and scales back; a constant
    image gives that constant. That resize samples at pixel centres, treats what lies outside
    the image as 0 (so edges fade towards the image's minimum when enlarging), and when
    shrinking along an axis first blurs by a Gaussian of sigma (factor - 1) / 2 (skimage's
    anti-aliasing, on by default since skimage 0.15). Other K go through
    scipy.ndimage.zoom(order=interp_order), which aligns the corner pixels, neither scales,
    blurs nor special-cases constant images, and rounds integer images to their type.

    interp_order 0 (nearest) and 1 (bilinear) give those numbers to float rounding, with two
    exceptions in the zoom branch: integer results that lie within rounding of a half may
    round the other way, and where SciPy's float coordinate of the last pixel rounds past the
    image (its last row or column then 0), the pixel is kept. Larger orders use a cubic
    convolution (Catmull-Rom), close to but not equal to the spline of that order that
    scikit-image and SciPy use (SciPy is not a dependency here). The sampling is numpy's, not
    cv2.resize's: OpenCV rounds nearest-neighbour ties down and repeats the edge pixels, so
    its results differ at ties and edges; OpenCV does the anti-aliasing blur."""
    im = np.asarray(im)
    if im.ndim != 3:
        raise ValueError(f"resize_image: im must be an H x W x K array, got shape {im.shape}")
    new_dims = (int(new_dims[0]), int(new_dims[1]))
    if min(new_dims) < 1:
        raise ValueError(f"resize_image: new_dims {new_dims} must be positive")
    if interp_order not in range(6):
        raise ValueError(f"resize_image: interp_order {interp_order!r} must be 0 to 5, as "
                         "skimage's")
    if im.shape[-1] not in (1, 3):
        zoomed = _resample(im.astype(np.float64), new_dims, interp_order, _corner_coordinates)
        return _round_like_scipy(zoomed, im.dtype).astype(np.float32)
    im_min, im_max = im.min(), im.max()
    if not im_max > im_min:
        return np.full(new_dims + im.shape[-1:], im_min, dtype=np.float32)
    standard = (im - im_min) / (im_max - im_min)
    resized = _skimage_resize(standard, new_dims, interp_order)
    return (resized * (im_max - im_min) + im_min).astype(np.float32)


def _round_like_scipy(values, dtype):
    """scipy.ndimage's output of `dtype`: integer types round half away from zero and clip to
    the type's range."""
    if not np.issubdtype(dtype, np.integer):
        return values
    limits = np.iinfo(dtype)
    return np.clip(np.trunc(values + np.copysign(0.5, values)), limits.min, limits.max)


def _skimage_resize(image, new_dims, order):
    """skimage.transform.resize(image, new_dims, order, mode='constant') of an image in [0, 1]
    (its result keeps a float32 image's type, as skimage's)."""
    factors = np.divide(image.shape[:2], new_dims)
    if (factors > 1).any():
        image = _gaussian_blur(image, np.maximum(0, (factors - 1) / 2))
    resized = _resample(image, new_dims, order, _centre_coordinates)
    return np.clip(resized, 0, 1).astype(image.dtype)


def _gaussian_blur(image, sigmas):
    """scipy.ndimage.gaussian_filter(image, (*sigmas, 0), mode='constant'): a Gaussian truncated
    at 4 sigma, zeros beyond the edges."""
    kernels = [_gaussian_kernel(sigma) for sigma in sigmas]
    blurred = cv2.sepFilter2D(image, -1, kernels[1], kernels[0], borderType=cv2.BORDER_CONSTANT)
    return blurred.reshape(image.shape)


def _gaussian_kernel(sigma):
    if sigma == 0:
        return np.ones((1, 1))
    radius = int(4 * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return (kernel / kernel.sum()).reshape(-1, 1)


def _centre_coordinates(size, new_size):
    """Where skimage's resize samples: output pixel centres mapped onto the input's."""
    return (np.arange(new_size) + 0.5) * (size / new_size) - 0.5


def _corner_coordinates(size, new_size):
    """Where scipy.ndimage.zoom samples: the first and last pixels kept."""
    return np.arange(new_size) * ((size - 1) / (new_size - 1) if new_size > 1 else 1.0)


def _resample(image, new_dims, order, coordinates):
    """`image` (H x W x K) sampled at coordinates(H, height) x coordinates(W, width)."""
    rows = _sample_axis(image, 0, coordinates(image.shape[0], new_dims[0]), order)
    return _sample_axis(rows, 1, coordinates(image.shape[1], new_dims[1]), order)


def _sample_axis(array, axis, coordinates, order):
    """`array` sampled along `axis` at fractional `coordinates`, zero beyond its ends: the
    nearest element for order 0 (half-way rounds up, as SciPy's), else the nearest 2 (order 1:
    linear) or 4 (larger orders: Catmull-Rom cubic) elements weighted by their distance."""
    size = array.shape[axis]
    if order == 0:
        return np.take(array, np.clip(np.floor(coordinates + 0.5), 0, size - 1).astype(int), axis)
    kernel, taps = (_linear, 2) if order == 1 else (_catmull_rom, 4)
    first = np.floor(coordinates).astype(int) - (taps // 2 - 1)
    shape = [1] * array.ndim
    shape[axis] = -1
    result = 0
    for index in first + np.arange(taps)[:, np.newaxis]:
        weight = kernel(coordinates - index) * ((index >= 0) & (index < size))
        result = result + np.take(array, np.clip(index, 0, size - 1), axis) * weight.reshape(shape)
    return result


def _linear(distance):
    return np.maximum(0, 1 - np.abs(distance))


def _catmull_rom(distance):
    """Keys' cubic convolution kernel with a = -0.5: of the cubic kernels the one closest to
    the cubic spline that skimage and SciPy interpolate with (1e-5 apart on smooth images, more
    near edges, where the spline's zero padding rings)."""
    d = np.abs(distance)
    near = (1.5 * d - 2.5) * d * d + 1
    far = ((-0.5 * d + 2.5) * d - 4) * d + 2
    return np.where(d <= 1, near, np.where(d < 2, far, 0))


# ----- cropping ----------------------------------------------------------------------------------

def oversample(images, crop_dims):
    """pycaffe's 10 crops of each H x W x K image: the four corners (top left, top right, bottom
    left, bottom right) and the centre, then the same five mirrored left to right; a
    (10 N) x height x width x K float32 array for crop_dims = (height, width). The centre crop
    starts at ((H - height) // 2, (W - width) // 2). All images must have the first's shape; a
    crop larger than the images raises ValueError (pycaffe fails on it less clearly)."""
    image_height, image_width, channels = np.shape(images[0])
    height, width = int(crop_dims[0]), int(crop_dims[1])
    if height > image_height or width > image_width:
        raise ValueError(f"oversample: crop_dims ({height}, {width}) exceed the images' size "
                         f"({image_height}, {image_width})")
    offsets = [(top, left) for top in (0, image_height - height)
               for left in (0, image_width - width)]
    offsets.append(((image_height - height) // 2, (image_width - width) // 2))
    crops = np.empty((10 * len(images), height, width, channels), dtype=np.float32)
    for n, image in enumerate(images):
        for i, (top, left) in enumerate(offsets):
            crop = image[top:top + height, left:left + width, :]
            crops[10 * n + i] = crop
            crops[10 * n + 5 + i] = crop[:, ::-1, :]
    return crops


# ----- Transformer -------------------------------------------------------------------------------

class Transformer:
    """pycaffe's Transformer: prepares H x W x K images for a Net's inputs and back.

    `inputs` maps each input blob's name to its shape (N, K, H, W), e.g.
    {name: net.blobs[name].data.shape}. Per input one may set a transpose (e.g. (2, 0, 1) for
    H x W x K -> K x H x W), a channel swap (e.g. (2, 1, 0) for RGB -> BGR), a raw scale (e.g.
    255 for images in [0, 1]), a mean and an input scale; preprocess applies them in that order
    after resizing to the input's H x W, deprocess undoes them. A name that is not one of
    `inputs` raises CaffeError (pycaffe: a bare Exception, which CaffeError is a kind of)."""

    def __init__(self, inputs):
        self.inputs = {name: tuple(int(d) for d in shape) for name, shape in inputs.items()}
        self.transpose = {}
        self.channel_swap = {}
        self.raw_scale = {}
        self.mean = {}
        self.input_scale = {}

    def __check_input(self, in_):
        if in_ not in self.inputs:
            raise CaffeError(f"{in_} is not one of the net inputs: {list(self.inputs)}")

    def preprocess(self, in_, data):
        """`data` (H' x W' x K) as a float32 K x H x W input for blob `in_`: resized to the
        input's H x W (resize_image) if it differs, then transposed, channel-swapped, times the
        raw scale, less the mean, times the input scale. Unlike pycaffe's, never scales the
        caller's float32 array in place."""
        self.__check_input(in_)
        caffe_in = np.array(data, dtype=np.float32)
        in_dims = self.inputs[in_][2:]
        if caffe_in.shape[:2] != in_dims:
            caffe_in = resize_image(caffe_in, in_dims)
        transpose = self.transpose.get(in_)
        if transpose is not None:
            caffe_in = caffe_in.transpose(transpose)
        channel_swap = self.channel_swap.get(in_)
        if channel_swap is not None:
            caffe_in = caffe_in[list(channel_swap), :, :]
        return self._scale(caffe_in, self.raw_scale.get(in_), self.mean.get(in_),
                           self.input_scale.get(in_))

    @staticmethod
    def _scale(caffe_in, raw_scale, mean, input_scale):
        if raw_scale is not None:
            caffe_in *= raw_scale
        if mean is not None:
            caffe_in -= mean
        if input_scale is not None:
            caffe_in *= input_scale
        return caffe_in

    def deprocess(self, in_, data):
        """preprocess undone (but not its resizing): `data` (K x H x W, singleton axes
        squeezed away as pycaffe's) divided by the input scale, plus the mean, divided by the
        raw scale, channels and axes put back."""
        self.__check_input(in_)
        decaf_in = data.copy().squeeze()
        input_scale = self.input_scale.get(in_)
        if input_scale is not None:
            decaf_in /= input_scale
        mean = self.mean.get(in_)
        if mean is not None:
            decaf_in += mean
        raw_scale = self.raw_scale.get(in_)
        if raw_scale is not None:
            decaf_in /= raw_scale
        channel_swap = self.channel_swap.get(in_)
        if channel_swap is not None:
            decaf_in = decaf_in[np.argsort(channel_swap), :, :]
        transpose = self.transpose.get(in_)
        if transpose is not None:
            decaf_in = decaf_in.transpose(np.argsort(transpose))
        return decaf_in

    def set_transpose(self, in_, order):
        """The axis order preprocess applies, e.g. (2, 0, 1) for H x W x K -> K x H x W; it must
        name one axis per axis of an item of the input (CaffeError otherwise)."""
        self.__check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise CaffeError(f"Transformer.set_transpose: the order {tuple(order)} for input "
                             f"{in_} must have {len(self.inputs[in_]) - 1} axes, as its items")
        self.transpose[in_] = order

    def set_channel_swap(self, in_, order):
        """The channel order preprocess takes after the transpose, e.g. (2, 1, 0) for RGB ->
        BGR; one entry per channel of the input (CaffeError otherwise)."""
        self.__check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise CaffeError(f"Transformer.set_channel_swap: the order {tuple(order)} for input "
                             f"{in_} must have {self.inputs[in_][1]} entries, one per channel")
        self.channel_swap[in_] = order

    def set_raw_scale(self, in_, scale):
        """The factor applied before the mean is subtracted, e.g. 255 for models trained on
        [0, 255] pixels fed load_image's [0, 1] images."""
        self.__check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_, mean):
        """The mean subtracted after the raw scale: K values (one per channel), or a K x H x W
        (or H x W) array, resized to the input's H x W when its shape differs from the input's
        K x H x W. A mean with another number of channels or dimensions raises ValueError.
        pycaffe resizes a constant mean to NaN and fails on an H x W mean to resize; here both
        resize like any other."""
        self.__check_input(in_)
        mean = np.asarray(mean)
        channels = self.inputs[in_][1]
        if mean.ndim == 1:
            if mean.shape[0] != channels:
                raise ValueError(f"Transformer.set_mean: {mean.shape[0]} mean values for input "
                                 f"{in_}, which has {channels} channels")
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            shape = (1,) + mean.shape if mean.ndim == 2 else mean.shape
            if len(shape) != 3:
                raise ValueError(f"Transformer.set_mean: a mean of shape {mean.shape} for input "
                                 f"{in_}: give K values or a (K x) H x W array")
            if shape != self.inputs[in_][1:]:
                mean = resize_image(mean.reshape(shape).transpose(1, 2, 0),
                                    self.inputs[in_][2:]).transpose(2, 0, 1)
        self.mean[in_] = mean

    def set_input_scale(self, in_, scale):
        """The factor applied last, after the mean is subtracted."""
        self.__check_input(in_)
        self.input_scale[in_] = scale


def first_input_transformer(net, mean=None, input_scale=None, raw_scale=None, channel_swap=None):
    """The Transformer that pycaffe's Classifier and Detector build for `net`'s first input:
    H x W x K -> K x H x W, and the given settings (None: not set)."""
    in_ = net.inputs[0]
    transformer = Transformer({in_: net.blobs[in_].data.shape})
    transformer.set_transpose(in_, (2, 0, 1))
    if mean is not None:
        transformer.set_mean(in_, mean)
    if input_scale is not None:
        transformer.set_input_scale(in_, input_scale)
    if raw_scale is not None:
        transformer.set_raw_scale(in_, raw_scale)
    if channel_swap is not None:
        transformer.set_channel_swap(in_, channel_swap)
    return transformer
