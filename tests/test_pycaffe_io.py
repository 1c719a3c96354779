"""pycaffe's caffe.io beyond the file formats (BlobProtoVector strings, Datums, load_image,
resize_image, oversample, Transformer) and its Classifier and Detector.

The expected resize values were checked against pycaffe's resize_image with scikit-image 0.26
and SciPy 1.17 (not dependencies here)."""
import os
import sys
import types

import cv2
import numpy as np
import pytest
from google.protobuf.message import DecodeError
from PIL import Image

import segnet_caffe as caffe
from segnet_caffe import CaffeError, caffe_pb2, io


# ----- BlobProtoVector strings, blobproto_to_array ----------------------------------------------

def test_blobprotovector_str_round_trip():
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((2, 3)).astype(np.float32), np.arange(4, dtype=np.float32),
              np.float32(7).reshape(())]
    data = io.arraylist_to_blobprotovector_str(arrays)
    assert isinstance(data, bytes)
    vector = caffe_pb2.BlobProtoVector.FromString(data)
    assert [list(blob.shape.dim) for blob in vector.blobs] == [[2, 3], [4], []]
    back = io.blobprotovector_str_to_arraylist(data)
    assert len(back) == 3
    for array, again in zip(arrays, back):
        assert again.shape == array.shape and again.dtype == np.float32
        np.testing.assert_array_equal(again, array)
    assert io.blobprotovector_str_to_arraylist(io.arraylist_to_blobprotovector_str([])) == []


def test_blobprotovector_str_that_is_not_one_raises_decode_error():
    with pytest.raises(DecodeError, match="not a serialized BlobProtoVector"):
        io.blobprotovector_str_to_arraylist(b"\x0a\xff\xff")


def test_blobproto_to_array_raises_value_error_as_pycaffe():
    unshaped = caffe_pb2.BlobProto(data=[1, 2, 3])
    with pytest.raises(ValueError, match=r"shape \(\) holds 1 values but the blob has 3"):
        io.blobproto_to_array(unshaped)
    with pytest.raises(CaffeError):  # the project's callers catch CaffeError
        io.blobproto_to_array(unshaped)
    legacy = caffe_pb2.BlobProto(num=1, channels=2, height=1, width=3, data=range(6))
    np.testing.assert_array_equal(io.blobproto_to_array(legacy), np.arange(6).reshape(1, 2, 1, 3))
    assert io.blobproto_to_array(caffe_pb2.BlobProto(data=[123])) == 123


# ----- Datums ------------------------------------------------------------------------------------

def test_array_to_datum_uint8_is_raw_bytes_other_types_float_data():
    pixels = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    datum = io.array_to_datum(pixels, label=5)
    assert (datum.channels, datum.height, datum.width, datum.label) == (2, 3, 4, 5)
    assert datum.data == pixels.tobytes() and len(datum.float_data) == 0
    values = np.linspace(-1, 1, 24).reshape(2, 3, 4)
    datum = io.array_to_datum(values)
    assert not datum.HasField("label") and not datum.data
    np.testing.assert_allclose(datum.float_data, values.ravel().astype(np.float32))
    with pytest.raises(ValueError, match=r"3-D .* got shape \(3, 4\)"):
        io.array_to_datum(np.zeros((3, 4)))


def test_datum_round_trips_keep_values_and_types():
    pixels = np.random.default_rng(1).integers(0, 256, (3, 5, 4)).astype(np.uint8)
    back = caffe.io.datum_to_array(caffe.io.array_to_datum(pixels))
    assert back.dtype == np.uint8 and back.flags.writeable
    np.testing.assert_array_equal(back, pixels)
    values = np.float32([[[0.5, -2.25]]])
    back = caffe.io.datum_to_array(caffe_pb2.Datum.FromString(
        caffe.io.array_to_datum(values).SerializeToString()))
    assert back.dtype == np.float64 and back.shape == (1, 1, 2)
    np.testing.assert_array_equal(back, values)


def test_datum_to_array_rejects_values_that_do_not_fill_the_shape():
    with pytest.raises(ValueError, match=r"2x2x2 \(CxHxW\) but holds 3 values$"):
        caffe.io.datum_to_array(caffe_pb2.Datum(channels=2, height=2, width=2, data=b"abc"))
    encoded = caffe_pb2.Datum(channels=3, height=2, width=2, data=b"\x89PNG", encoded=True)
    with pytest.raises(ValueError, match="decode it with decode_datum"):
        caffe.io.datum_to_array(encoded)


def _encoded_datum(image, extension=".png"):
    ok, data = cv2.imencode(extension, image)
    assert ok
    return caffe_pb2.Datum(data=data.tobytes(), encoded=True, label=3)


def test_decode_datum_decodes_an_encoded_png_to_bgr_chw():
    from segnet_caffe.datum import decode_datum

    bgr = np.random.default_rng(2).integers(0, 256, (4, 6, 3)).astype(np.uint8)
    datum = caffe_pb2.Datum.FromString(_encoded_datum(bgr).SerializeToString())
    decoded = decode_datum(datum)
    assert decoded.dtype == np.uint8 and decoded.shape == (3, 4, 6)
    np.testing.assert_array_equal(decoded, bgr.transpose(2, 0, 1))  # PNG is lossless
    gray = decode_datum(datum, is_color=False)  # read as gray by the PNG decoder, as Caffe
    assert gray.shape == (1, 4, 6)
    np.testing.assert_array_equal(gray[0], cv2.imdecode(np.frombuffer(datum.data, np.uint8),
                                                        cv2.IMREAD_GRAYSCALE))
    np.testing.assert_allclose(gray[0], cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), atol=1)


def test_decode_datum_keeps_or_forces_a_gray_image_s_channels():
    from segnet_caffe.datum import decode_datum

    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    datum = _encoded_datum(gray)
    np.testing.assert_array_equal(decode_datum(datum), gray[np.newaxis])
    np.testing.assert_array_equal(decode_datum(datum, is_color=True), np.stack([gray] * 3))


def test_decode_datum_of_raw_and_undecodable_datums():
    from segnet_caffe.datum import decode_datum

    pixels = np.arange(6, dtype=np.uint8).reshape(1, 2, 3)
    np.testing.assert_array_equal(decode_datum(caffe.io.array_to_datum(pixels)), pixels)
    with pytest.raises(ValueError, match="5 bytes are not an image OpenCV can decode"):
        decode_datum(caffe_pb2.Datum(data=b"hello", encoded=True))


# ----- load_image --------------------------------------------------------------------------------

def _write_png(folder, name, pixels, mode=None):
    path = folder / name
    Image.fromarray(pixels, mode).save(path)
    return str(path)


def test_load_image_of_a_gray_png(tmp_path):
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5) * 12
    path = _write_png(tmp_path, "gray.png", gray)
    color = caffe.io.load_image(path)
    assert color.dtype == np.float32 and color.shape == (4, 5, 3)
    np.testing.assert_array_equal(color, np.stack([gray / 255] * 3, axis=2).astype(np.float32))
    plain = caffe.io.load_image(path, color=False)
    assert plain.shape == (4, 5, 1)
    np.testing.assert_array_equal(plain[:, :, 0], (gray / 255).astype(np.float32))


def test_load_image_of_an_rgb_png_is_rgb_in_unit_range(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 256, (3, 4, 3)).astype(np.uint8)
    path = _write_png(tmp_path, "rgb.png", rgb)
    image = caffe.io.load_image(path)
    assert image.dtype == np.float32 and image.shape == (3, 4, 3)
    np.testing.assert_array_equal(image, (rgb / 255).astype(np.float32))  # R first, not BGR
    gray = caffe.io.load_image(path, color=False)
    expected = (rgb / 255) @ np.array([0.2125, 0.7154, 0.0721])
    assert gray.shape == (3, 4, 1)
    np.testing.assert_allclose(gray[:, :, 0], expected, rtol=1e-6)


def test_load_image_of_an_rgba_png(tmp_path):
    rgba = np.random.default_rng(4).integers(0, 256, (3, 4, 4)).astype(np.uint8)
    path = _write_png(tmp_path, "rgba.png", rgba)
    image = caffe.io.load_image(path)
    np.testing.assert_array_equal(image, (rgba[:, :, :3] / 255).astype(np.float32))
    gray = caffe.io.load_image(path, color=False)  # composed over white, then luminance
    alpha = rgba[:, :, 3:] / 255
    over_white = rgba[:, :, :3] / 255 * alpha + (1 - alpha)
    np.testing.assert_allclose(gray[:, :, 0], over_white @ [0.2125, 0.7154, 0.0721], rtol=1e-6)


def test_load_image_of_16_bit_and_palette_pngs(tmp_path):
    deep = np.array([[0, 1000, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(deep).save(path)
    np.testing.assert_array_equal(caffe.io.load_image(str(path), color=False)[0, :, 0],
                                  (deep[0] / 65535).astype(np.float32))
    rgb = np.array([[[255, 0, 0], [0, 0, 255]]], dtype=np.uint8)
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    np.testing.assert_array_equal(caffe.io.load_image(str(tmp_path / "palette.png")), rgb / 255)


def test_load_image_of_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        caffe.io.load_image(str(tmp_path / "missing.png"))


# ----- resize_image ------------------------------------------------------------------------------

def test_resize_image_enlarging_fades_edges_to_the_minimum():
    im = np.array([[[2.0], [6.0]]])  # 1 x 2 x 1, scaled to [0, 1] and back around the resize
    linear = caffe.io.resize_image(im, (1, 4))
    assert linear.dtype == np.float32 and linear.shape == (1, 4, 1)
    # Samples at x = -0.25, 0.25, 0.75, 1.25 with the minimum (2) outside the image.
    np.testing.assert_allclose(linear[0, :, 0], [2, 3, 5, 5], rtol=1e-6)
    np.testing.assert_array_equal(caffe.io.resize_image(im, (1, 4), interp_order=0)[0, :, 0],
                                  [2, 2, 6, 6])


def test_resize_image_shrinking_blurs_first():
    im = np.array([[[0.0], [0.0], [4.0], [4.0]]])
    # skimage's anti-aliasing: a Gaussian of sigma (2 - 1) / 2 truncated at radius 2, zeros
    # beyond the edges, then linear samples at x = 0.5 and 2.5.
    def kernel(d):
        return np.where(np.abs(d) <= 2, np.exp(-2.0 * d ** 2), 0) / np.exp(
            -2.0 * np.arange(-2, 3) ** 2).sum()
    i = np.arange(4)
    blurred = (np.array([0, 0, 1, 1.0]) * kernel(i[:, None] - i[None, :])).sum(1)
    expected = 4 * np.array([blurred[:2].mean(), blurred[2:].mean()])
    np.testing.assert_allclose(caffe.io.resize_image(im, (1, 2))[0, :, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(expected, [0.213957, 3.572086], rtol=1e-6)  # skimage's numbers


def test_resize_image_of_a_constant_image_is_that_constant():
    resized = caffe.io.resize_image(np.full((3, 5, 3), 7.5), (4, 2))
    assert resized.dtype == np.float32 and resized.shape == (4, 2, 3)
    assert (resized == 7.5).all()


def test_resize_image_of_other_channel_counts_aligns_corners_without_scaling():
    im = np.array([[[0.0, 5.0], [10.0, 5.0], [20.0, 5.0]]])  # scipy.ndimage.zoom's branch
    resized = caffe.io.resize_image(im, (1, 5))
    np.testing.assert_array_equal(resized[0], [[0, 5], [5, 5], [10, 5], [15, 5], [20, 5]])
    rounded = caffe.io.resize_image(np.array([[[0, 5], [1, 5], [2, 5]]], np.uint8), (1, 5))
    np.testing.assert_array_equal(rounded[0, :, 0], [0, 1, 1, 2, 2])  # half away from zero
    nearest = caffe.io.resize_image(im, (1, 5), interp_order=0)  # x = 0.5 and 1.5 round up
    np.testing.assert_array_equal(nearest[0, :, 0], [0, 10, 10, 20, 20])


def test_resize_image_cubic_reproduces_parabolas_inside():
    # Catmull-Rom is exact on quadratics (linear interpolation is not); so is skimage's spline
    # away from the edges, where its zero padding rings.
    parabola = np.broadcast_to((np.arange(12.0) ** 2)[np.newaxis, :, np.newaxis], (4, 12, 3))
    resized = caffe.io.resize_image(parabola, (4, 23), interp_order=3)
    x = (np.arange(23) + 0.5) * 12 / 23 - 0.5
    inside = (x > 1) & (x < 10)
    np.testing.assert_allclose(resized[1, inside, 0], x[inside] ** 2, rtol=1e-5, atol=1e-4)


def test_resize_image_cubic_overshoot_is_clipped_to_the_image_range():
    step = np.array([[[0.0], [0.0], [1.0], [1.0]]])
    resized = caffe.io.resize_image(step, (1, 8), interp_order=3)[0, :, 0]
    assert resized.min() == 0 and resized.max() == 1  # unclipped: -0.07 and 1.07
    # Catmull-Rom at x = 1.25 and 1.75 (0.203125, 0.796875); skimage's spline: 0.2013, 0.7583.
    np.testing.assert_allclose(resized[[3, 4, 7]], [0.203125, 0.796875, 0.796875], rtol=1e-6)


def test_resize_image_argument_errors():
    with pytest.raises(ValueError, match=r"H x W x K array, got shape \(4, 4\)"):
        caffe.io.resize_image(np.zeros((4, 4)), (2, 2))
    with pytest.raises(ValueError, match="interp_order 7"):
        caffe.io.resize_image(np.zeros((4, 4, 3)), (2, 2), interp_order=7)
    with pytest.raises(ValueError, match="new_dims"):
        caffe.io.resize_image(np.zeros((4, 4, 3)), (0, 2))


# ----- oversample --------------------------------------------------------------------------------

def test_oversample_gives_corners_centre_and_mirrors():
    images = np.random.default_rng(5).random((2, 7, 9, 2))
    crops = caffe.io.oversample(list(images), (4, 5))
    assert crops.dtype == np.float32 and crops.shape == (20, 4, 5, 2)
    for n, image in enumerate(images):
        five = [image[:4, :5], image[:4, 4:], image[3:, :5], image[3:, 4:], image[1:5, 2:7]]
        expected = five + [crop[:, ::-1] for crop in five]
        np.testing.assert_array_equal(crops[10 * n:10 * n + 10], np.float32(expected))
    with pytest.raises(ValueError, match="crop_dims"):
        caffe.io.oversample(images, (8, 5))


# ----- Transformer -------------------------------------------------------------------------------

def _transformer(shape=(1, 3, 4, 5)):
    transformer = caffe.io.Transformer({"data": shape})
    transformer.set_transpose("data", (2, 0, 1))
    transformer.set_channel_swap("data", (2, 1, 0))
    transformer.set_raw_scale("data", 255.0)
    transformer.set_mean("data", np.array([10.0, 20.0, 30.0]))
    transformer.set_input_scale("data", 0.5)
    return transformer


def test_transformer_preprocess_then_deprocess():
    image = np.random.default_rng(6).random((4, 5, 3)).astype(np.float32)
    original = image.copy()
    caffe_in = _transformer().preprocess("data", image)
    expected = (image.transpose(2, 0, 1)[::-1] * 255 - np.array([10, 20, 30])[:, None, None]) * 0.5
    assert caffe_in.dtype == np.float32 and caffe_in.shape == (3, 4, 5)
    np.testing.assert_allclose(caffe_in, expected, rtol=1e-5)
    np.testing.assert_array_equal(image, original)  # the caller's array is left alone
    np.testing.assert_allclose(_transformer().deprocess("data", caffe_in), image, atol=1e-6)


def test_transformer_resizes_to_the_input_and_resizes_the_mean():
    transformer = _transformer()
    assert transformer.preprocess("data", np.zeros((8, 10, 3))).shape == (3, 4, 5)
    transformer.set_mean("data", np.full((3, 2, 2), 4.0))
    assert transformer.mean["data"].shape == (3, 4, 5) and (transformer.mean["data"] == 4).all()
    ramp = np.broadcast_to(np.arange(5.0), (3, 4, 5))
    transformer.set_mean("data", ramp)  # already the input's shape: kept as it is
    assert transformer.mean["data"] is ramp


def test_transformer_argument_errors():
    transformer = caffe.io.Transformer({"data": (1, 3, 4, 5)})
    with pytest.raises(CaffeError, match=r"label is not one of the net inputs: \['data'\]"):
        transformer.preprocess("label", np.zeros((4, 5, 3)))
    with pytest.raises(Exception, match="must have 3 axes"):  # pycaffe raises Exception
        transformer.set_transpose("data", (1, 0))
    with pytest.raises(CaffeError, match="must have 3 entries, one per channel"):
        transformer.set_channel_swap("data", (1, 0))
    with pytest.raises(ValueError, match="2 mean values for input data, which has 3 channels"):
        transformer.set_mean("data", np.zeros(2))
    with pytest.raises(ValueError, match=r"a mean of shape \(1, 3, 4, 5\)"):
        transformer.set_mean("data", np.zeros((1, 3, 4, 5)))


# ----- Classifier and Detector -------------------------------------------------------------------

TINY_NET = """name: "tiny"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 4 dim: 3 dim: 4 dim: 4 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 3 } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""


@pytest.fixture
def tiny_net(tmp_path):
    """The prototxt and caffemodel of Input (4 x 3 x 4 x 4) -> InnerProduct (3) -> Softmax, and
    its weights."""
    rng = np.random.default_rng(7)
    weight = rng.standard_normal((3, 48)).astype(np.float32)
    bias = rng.standard_normal(3).astype(np.float32)
    model = tmp_path / "tiny.prototxt"
    model.write_text(TINY_NET)
    weights = caffe_pb2.NetParameter(name="tiny")
    layer = weights.layer.add(name="ip", type="InnerProduct")
    layer.blobs.extend([io.array_to_blobproto(weight), io.array_to_blobproto(bias)])
    io.write_caffemodel(str(tmp_path / "tiny.caffemodel"), weights)
    return str(model), str(tmp_path / "tiny.caffemodel"), weight, bias


def _probabilities(crops, weight, bias, mean=0.0, raw_scale=1.0):
    """The tiny net on H x W x K crops (RGB -> BGR, times raw_scale, less the mean)."""
    inputs = crops.transpose(0, 3, 1, 2)[:, ::-1] * raw_scale - mean
    scores = inputs.reshape(len(crops), -1) @ weight.T + bias
    scores = np.exp(scores - scores.max(1, keepdims=True))
    return scores / scores.sum(1, keepdims=True)


def test_classifier_predict_with_and_without_oversampling(tiny_net):
    model, weights, weight, bias = tiny_net
    mean = np.array([0.1, 0.2, 0.3])
    classifier = caffe.Classifier(model, weights, image_dims=(6, 7), mean=mean, raw_scale=2.0,
                                  channel_swap=(2, 1, 0))
    assert isinstance(classifier, caffe.Net) and classifier.phase == caffe.TEST
    images = list(np.random.default_rng(8).random((3, 6, 7, 3)).astype(np.float32))
    centre = classifier.predict(images, oversample=False)
    crops = np.stack(images)[:, 1:5, 1:5]
    expected = _probabilities(crops, weight, bias, mean[:, None, None], 2.0)
    assert centre.shape == (3, 3)
    np.testing.assert_allclose(centre, expected, rtol=1e-4, atol=1e-6)

    averaged = classifier.predict(images)  # 30 crops: batches of 4, the last one padded
    assert averaged.shape == (3, 3)
    for n, image in enumerate(images):
        five = [image[:4, :4], image[:4, 3:], image[2:, :4], image[2:, 3:], image[1:5, 1:5]]
        crops = np.stack(five + [crop[:, ::-1] for crop in five])
        expected = _probabilities(crops, weight, bias, mean[:, None, None], 2.0).mean(0)
        np.testing.assert_allclose(averaged[n], expected, rtol=1e-4, atol=1e-6)


def test_classifier_resizes_images_to_image_dims(tiny_net):
    model, weights, weight, bias = tiny_net
    classifier = caffe.Classifier(model, weights)  # image_dims: the input's 4 x 4
    assert tuple(classifier.image_dims) == (4, 4)
    image = np.random.default_rng(9).random((9, 11, 3)).astype(np.float32)
    resized = caffe.io.resize_image(image, (4, 4))
    np.testing.assert_allclose(classifier.predict([image], oversample=False),
                               _probabilities(resized[np.newaxis, :, :, ::-1], weight, bias),
                               rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match=r"image_dims \(3, 8\) is smaller than the net's "
                                         r"input \(4, 4\) \(height, width\)$"):
        caffe.Classifier(model, weights, image_dims=np.array([3, 8]))


def test_detector_detect_windows(tiny_net, tmp_path):
    model, weights, weight, bias = tiny_net
    pixels = np.random.default_rng(10).integers(0, 256, (8, 9, 3)).astype(np.uint8)
    path = _write_png(tmp_path, "scene.png", pixels)
    detector = caffe.Detector(model, weights, channel_swap=(2, 1, 0))
    windows = [np.array([0, 0, 4, 4]), np.array([3, 5, 7, 9])]
    # An iterator: pycaffe reads it twice, which gave no detections on Python 3.
    detections = detector.detect_windows(iter([(path, windows)]))
    assert [d["filename"] for d in detections] == [path, path]
    assert [list(d["window"]) for d in detections] == [[0, 0, 4, 4], [3, 5, 7, 9]]
    image = pixels / 255
    crops = np.stack([image[0:4, 0:4], image[3:7, 5:9]])
    expected = _probabilities(crops, weight, bias)
    np.testing.assert_allclose(np.stack([d["prediction"] for d in detections]), expected,
                               rtol=1e-4, atol=1e-6)


def test_detector_context_crop_pads_with_the_mean(tiny_net):
    model, weights, _, _ = tiny_net
    detector = caffe.Detector(model, weights, mean=np.array([0.3, 0.2, 0.1]), raw_scale=2.0,
                              channel_swap=(2, 1, 0), context_pad=1)
    assert list(detector.crop_dims) == [4, 4, 3]
    # The mean in the image's space: channels back in RGB order, divided by the raw scale.
    np.testing.assert_allclose(detector.crop_mean.reshape(3), [0.05, 0.1, 0.15])
    # Window (0, 0, 3, 3) with context: box (-2, -2, 6, 6), 9 px warped to 4, so 1 px of
    # padding above and left and the image's 0..6 x 0..6 warped to 3 x 3.
    crop = detector.crop(np.full((10, 10, 3), 0.5, np.float32), np.array([0, 0, 3, 3]))
    assert crop.shape == (4, 4, 3)
    np.testing.assert_allclose(crop[1:, 1:], 0.5)
    np.testing.assert_allclose(crop[0], np.broadcast_to([0.05, 0.1, 0.15], (4, 3)))
    np.testing.assert_allclose(crop[:, 0], np.broadcast_to([0.05, 0.1, 0.15], (4, 3)))


def test_detector_selective_search(tiny_net, tmp_path, monkeypatch):
    model, weights, _, _ = tiny_net
    detector = caffe.Detector(model, weights)
    monkeypatch.setitem(sys.modules, "selective_search_ijcv_with_python", None)
    with pytest.raises(ImportError, match="needs the module selective_search_ijcv_with_python"):
        detector.detect_selective_search(["a.png"])
    _write_png(tmp_path, "scene.png", np.zeros((6, 6, 3), np.uint8))
    calls = []

    def get_windows(image_fnames, cmd):
        calls.append((image_fnames, cmd))
        return [np.array([[0, 0, 4, 4], [1, 1, 5, 5]])]

    fake = types.SimpleNamespace(get_windows=get_windows)
    monkeypatch.setitem(sys.modules, "selective_search_ijcv_with_python", fake)
    monkeypatch.chdir(tmp_path)
    path = os.path.join(os.getcwd(), "scene.png")  # made absolute, for MATLAB
    detections = detector.detect_selective_search(["scene.png"])
    assert calls == [([path], "selective_search_rcnn")]
    assert len(detections) == 2 and [d["filename"] for d in detections] == [path, path]
    np.testing.assert_allclose(detections[0]["prediction"], detections[1]["prediction"])
