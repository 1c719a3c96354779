"""BN statistics folding: INFERENCE mode with folded weights equals normalising by the
accumulated statistics."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import segnet_caffe as caffe
from segnet_caffe import io
from segnet_caffe.bn_statistics import compute_bn_statistics
from tests.conftest import write_dataset

NET = """
name: "bn_net"
layer { name: "data" type: "DenseImageData" top: "data" top: "label"
  dense_image_data_param { source: "LIST" batch_size: 5 } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "conv_bn" type: "BN" bottom: "conv" top: "conv"
  bn_param { scale_filler { type: "uniform" min: 0.5 max: 2 } shift_filler { type: "uniform" min: -1 max: 1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "conv" bottom: "label" top: "loss" }
"""


def test_folded_inference_equals_normalising_by_the_accumulated_statistics(tmp_path, tiny_dataset):
    prototxt = tmp_path / "train.prototxt"
    prototxt.write_text(NET.replace("LIST", str(tiny_dataset)))
    learn = caffe.Net(str(prototxt), caffe.TEST)
    weights = tmp_path / "trained.caffemodel"
    learn.save(str(weights))
    with torch.no_grad():
        learn.forward(end="conv")           # the conv output, before BN overwrites it in place
        x = learn.blobs["conv"].data.astype(np.float64).copy()
    inference, folded = compute_bn_statistics(str(prototxt), str(weights), iterations=1,
                                              progress=False)
    assert [l.bn_param.bn_mode for l in inference.layer if l.type == "BN"] == [caffe.caffe_pb2.BNParameter.INFERENCE]
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    m = x.shape[0] * x.shape[2] * x.shape[3]
    var = x.var(axis=(0, 2, 3), keepdims=True) * m / (m - 1)
    scale, shift = (blob.data.astype(np.float64) for blob in learn.params["conv_bn"])
    expected = scale * (x - mean) / np.sqrt(var + 1e-9) + shift
    test = caffe.Net(inference, caffe.TEST)
    test.copy_from(folded)
    with torch.no_grad():
        test.forward(end="conv_bn")
    np.testing.assert_allclose(test.blobs["conv"].data, expected, rtol=1e-4, atol=1e-5)


def test_script_writes_weights_and_inference_prototxt_and_warns_at_batch_one(tmp_path, tiny_dataset):
    prototxt = tmp_path / "train.prototxt"
    prototxt.write_text(NET.replace("LIST", str(tiny_dataset)).replace("batch_size: 5", "batch_size: 1"))
    weights = tmp_path / "trained.caffemodel"
    caffe.Net(str(prototxt), caffe.TEST).save(str(weights))
    script = Path(__file__).resolve().parents[1] / "scripts" / "compute_bn_statistics.py"
    result = subprocess.run([sys.executable, str(script), str(prototxt), str(weights),
                             str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "batch size is 1" in result.stderr
    assert "5/5" in result.stderr or "conv_bn: statistics of 5 batches" in result.stderr
    inference = io.read_net_prototxt(str(tmp_path / "out" / "inference.prototxt"))
    assert [l.type for l in inference.layer] == ["DenseImageData", "Convolution", "BN", "SoftmaxWithLoss"]
    net = caffe.Net(inference, caffe.TEST, weights=str(tmp_path / "out" / "test_weights.caffemodel"))
    assert net.params["conv_bn"][0].shape == (1, 4, 1, 1)


TWO_BN = NET.replace('layer { name: "loss"', """layer { name: "conv2" type: "Convolution" bottom: "conv" top: "conv2"
  convolution_param { num_output: 3 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "conv2_bn" type: "BN" bottom: "conv2" top: "conv2"
  bn_param { scale_filler { type: "uniform" min: 0.5 max: 2 } shift_filler { type: "uniform" min: -1 max: 1 } } }
layer { name: "loss\"""").replace('bottom: "conv" bottom: "label"', 'bottom: "conv2" bottom: "label"')


def test_sequential_statistics_are_those_the_inference_net_feeds_each_layer(tmp_path):
    """With sequential=True the second BN layer's statistics are those of its input when the
    first already normalises by its own (as in the inference net); the tutorial's one pass
    records that input under the first layer's batch statistics, which differ (the images'
    brightness differs, so each batch's statistics do)."""
    rng = np.random.RandomState(0)
    images = [(rng.randint(0, 60, (8, 8, 3)) + 45 * i).astype(np.uint8) for i in range(5)]
    labels = [(rng.rand(8, 8) > 0.5).astype(np.uint8) for _ in range(5)]
    listed = write_dataset(tmp_path, images, labels, prefix=f"{tmp_path}/")
    prototxt = tmp_path / "train.prototxt"
    prototxt.write_text(TWO_BN.replace("LIST", str(listed)).replace("batch_size: 5",
                                                                    "batch_size: 2"))
    weights = tmp_path / "trained.caffemodel"
    caffe.Net(str(prototxt), caffe.TEST).save(str(weights))
    folded = {}
    for sequential in (False, True):
        inference, param = compute_bn_statistics(str(prototxt), str(weights), iterations=3,
                                                 progress=False, sequential=sequential)
        net = caffe.Net(inference, caffe.TEST)
        net.copy_from(param)
        folded[sequential] = [blob.data.astype(np.float64).ravel() for blob in net.params["conv2_bn"]]
    # the inference net's input to conv2_bn over the same 3 batches of 2 (the list in order)
    net = caffe.Net(inference, caffe.TEST)
    net.copy_from(param)
    means, variances = [], []
    with torch.no_grad():
        for _ in range(3):
            net.forward(end="conv2")
            x = net.blobs["conv2"].data.astype(np.float64)
            means.append(x.mean(axis=(0, 2, 3)))
            variances.append(x.var(axis=(0, 2, 3)))
    m = 2 * 8 * 8
    mean, var = np.mean(means, axis=0), np.mean(variances, axis=0) * m / (m - 1)
    scale, shift = (blob.data.astype(np.float64).ravel()
                    for blob in caffe.Net(str(prototxt), caffe.TEST, weights=str(weights))
                    .params["conv2_bn"])
    expected_scale = scale / np.sqrt(var + 1e-9)
    np.testing.assert_allclose(folded[True][0], expected_scale, rtol=1e-4)
    np.testing.assert_allclose(folded[True][1], shift - expected_scale * mean, rtol=1e-4, atol=1e-5)
    assert not np.allclose(folded[False][0], expected_scale, rtol=0.02)


def test_whole_images_statistics_are_those_of_the_uncropped_net(tmp_path):
    """whole_images=True folds the statistics the same net without its random crops gives;
    with the crops (the tutorial's way) they differ."""
    rng = np.random.RandomState(1)
    images = [rng.randint(0, 255, (8, 8, 3)).astype(np.uint8) for _ in range(4)]
    labels = [(rng.rand(8, 8) > 0.5).astype(np.uint8) for _ in range(4)]
    listed = write_dataset(tmp_path, images, labels, prefix=f"{tmp_path}/")
    uncropped = TWO_BN.replace("LIST", str(listed)).replace("batch_size: 5", "batch_size: 2")
    paths = {}
    for name, text in (("whole", uncropped),
                       ("cropped", uncropped.replace("batch_size: 2",
                                                     "batch_size: 2 crop_height: 5 crop_width: 5"))):
        paths[name] = tmp_path / f"{name}.prototxt"
        paths[name].write_text(text)
    weights = tmp_path / "trained.caffemodel"
    caffe.Net(str(paths["whole"]), caffe.TEST).save(str(weights))

    def folded(prototxt, whole_images):
        _, param = compute_bn_statistics(str(prototxt), str(weights), iterations=2,
                                         progress=False, sequential=True,
                                         whole_images=whole_images)
        return [np.array(blob.data) for layer in param.layer if layer.type == "BN"
                for blob in layer.blobs]

    expected = folded(paths["whole"], False)
    for got, want in zip(folded(paths["cropped"], True), expected):
        np.testing.assert_array_equal(got, want)
    assert not all(np.allclose(got, want, rtol=0.01)
                   for got, want in zip(folded(paths["cropped"], False), expected))
