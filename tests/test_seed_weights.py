"""The report author's real weights, run through his own network (read from the .caffemodel),
reproduce real Caffe's scores on his 100 test squares (../shared/conformance/seed/)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import segnet_caffe as caffe
from segnet_caffe import io

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SEED = SHARED / "conformance" / "seed"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not SEED.is_dir(), reason=f"seed fixtures not found at {SEED}")]


def author_net(caffemodel, bn_mode):
    """His net as stored in the caffemodel, reading his test list in order, batch 1, TEST phase."""
    param = io.read_caffemodel(str(caffemodel))
    split_source = {top: layer.bottom[0] for layer in param.layer if layer.type == "Split"
                    for top in layer.top}
    for layer in list(param.layer):
        del layer.blobs[:]
        layer.ClearField("phase")
        layer.bottom[:] = [split_source.get(name, name) for name in layer.bottom]
        if layer.type == "Split":
            param.layer.remove(layer)  # the Net inserts its own
        elif layer.type == "DenseImageData":
            data = layer.dense_image_data_param
            data.source = str(SHARED / "data" / "seed_squares" / "test.txt")
            data.root_folder = str(SHARED / "data" / "seed_squares") + "/"
            data.batch_size, data.shuffle = 1, False
        elif layer.type == "BN":
            layer.bn_param.bn_mode = caffe.caffe_pb2.BNParameter.BNMode.Value(bn_mode)
    net = caffe.Net(param, caffe.TEST)
    net.copy_from(str(caffemodel))
    return net


def confusion_over_test_set(net, images=100):
    confusion = np.zeros((2, 2), np.int64)
    with torch.no_grad():
        for _ in range(images):
            net.forward()
            prediction = net.blobs["conv_classifier"].data[0].argmax(0)
            label = net.blobs["label"].data[0, 0].astype(np.int64)
            confusion += np.bincount(2 * label.ravel() + prediction.ravel(), minlength=4).reshape(2, 2)
    return confusion


@pytest.mark.parametrize("weights, bn_mode, record", [
    ("test_weights.caffemodel", "INFERENCE", "seed_inference_test_weights.json"),
    ("manoj_basic_iter_100.caffemodel", "LEARN", "seed_trainproto_iter100_TESTphase.json"),
])
def test_seed_weights_reproduce_real_caffe(weights, bn_mode, record):
    expected = json.loads((SEED / record).read_text())
    net = author_net(SHARED / "data" / "seed_models" / weights, bn_mode)
    confusion = confusion_over_test_set(net, expected["n"])
    global_accuracy = np.trace(confusion) / confusion.sum()
    iou = np.diag(confusion) / (confusion.sum(0) + confusion.sum(1) - np.diag(confusion))
    print(f"{weights} ({bn_mode}): global accuracy {global_accuracy:.4f}, mean IoU {iou.mean():.4f}")
    assert round(global_accuracy, 4) == round(expected["global_acc"], 4)
    assert round(iou.mean(), 4) == round(expected["mean_iou"], 4)
    np.testing.assert_allclose(confusion, expected["confusion"], rtol=1e-4, atol=50)
