"""Caffe's Datum (one item of an LMDB/LevelDB data set) <-> numpy arrays.

`array_to_datum` and `datum_to_array` are pycaffe's (`caffe.io` re-exports them): raw uint8
pixels or float values in C x H x W order, no decoding. `decode_datum` is what Caffe's data
layers do with a datum: it also decodes an `encoded` one (a JPEG/PNG file's bytes, as
`convert_imageset --encoded` writes) with OpenCV, as Caffe's DecodeDatumToCVMat does.
"""
import cv2
import numpy as np

from .proto import caffe_pb2

__all__ = ["array_to_datum", "datum_to_array", "decode_datum"]


def array_to_datum(arr, label=None):
    """A Datum holding the C x H x W array `arr`, as pycaffe's: uint8 arrays as raw bytes in
    `data`, any other dtype as `float_data`; `label` is set only when given. A non-3-D array
    raises ValueError."""
    if arr.ndim != 3:
        raise ValueError(f"array_to_datum: arr must be 3-D (channels x height x width), got "
                         f"shape {arr.shape}")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = arr.shape
    if arr.dtype == np.uint8:
        datum.data = arr.tobytes()
    else:
        datum.float_data.extend(arr.astype(float).flat)
    if label is not None:
        datum.label = label
    return datum


def datum_to_array(datum):
    """The datum's values as a C x H x W array, as pycaffe's: uint8 from raw `data` when it has
    any, else float64 from `float_data` (the label is `datum.label`). An encoded datum is not
    decoded here (pycaffe does not either): use `decode_datum`. Values that do not fill the
    datum's shape raise ValueError."""
    shape = (datum.channels, datum.height, datum.width)
    if len(datum.data):
        values = np.frombuffer(datum.data, dtype=np.uint8).copy()  # writable, as pycaffe's
    else:
        values = np.array(datum.float_data, dtype=float)
    if values.size != np.prod(shape):
        hint = ": it is encoded (an image file's bytes), decode it with decode_datum" \
            if datum.encoded else ""
        raise ValueError(f"datum_to_array: the datum is {'x'.join(map(str, shape))} (CxHxW) "
                         f"but holds {values.size} values{hint}")
    return values.reshape(shape)


def decode_datum(datum, is_color=None):
    """The datum's pixels as a C x H x W array, decoding an `encoded` datum as Caffe does.

    An encoded datum is decoded by OpenCV (cv2.imdecode) to uint8 in BGR order:
    `is_color=None` keeps the image's own channels (Caffe's DecodeDatumToCVMatNative, used
    unless transform_param sets force_color / force_gray), True gives 3 channels and False 1
    (DecodeDatumToCVMat(datum, is_color)). Other datums are `datum_to_array`'s (their channels
    as stored, which Caffe also leaves as they are). Bytes OpenCV cannot decode raise
    ValueError."""
    if not datum.encoded:
        return datum_to_array(datum)
    flag = {None: cv2.IMREAD_ANYCOLOR, True: cv2.IMREAD_COLOR,
            False: cv2.IMREAD_GRAYSCALE}[is_color]
    image = cv2.imdecode(np.frombuffer(datum.data, dtype=np.uint8), flag)
    if image is None:
        raise ValueError(f"decode_datum: the encoded datum's {len(datum.data)} bytes are not an "
                         "image OpenCV can decode")
    if image.ndim == 2:
        image = image[:, :, np.newaxis]
    return np.ascontiguousarray(image.transpose(2, 0, 1))
