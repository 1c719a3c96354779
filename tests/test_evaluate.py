"""scripts/test_segmentation_camvid.py end to end on a one-convolution net with hand-set weights,
whose predictions are known exactly: class 1 wherever the red channel is 255, class 0 where it
is 0 (score_1 = R - 128, score_0 = 0)."""
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import segnet_caffe as caffe
from segnet_caffe import datasets, engine_options, evaluate, hardware, mode
from segnet_caffe.metrics import ConfusionMatrix
from tests.conftest import write_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import test_segmentation_camvid as script  # noqa: E402

HEIGHT, WIDTH, VOID = 6, 8, 255

NET = """
name: "tiny"
layer {{ name: "data" type: "DenseImageData" top: "data" top: "label"
  dense_image_data_param {{ source: "{root}/list.txt" root_folder: "{root}/" batch_size: 1 }} }}
layer {{ name: "score" type: "Convolution" bottom: "data" top: "score"
  convolution_param {{ num_output: 2 kernel_size: 1 }} }}
{dropout}
layer {{ name: "prob" type: "Softmax" bottom: "{top}" top: "prob" }}
"""
DROPOUT = """layer { name: "drop" type: "Dropout" bottom: "score" top: "drop"
  dropout_param { dropout_ratio: 0.5 sample_weights_test: true } }"""
DEPLOY = """
name: "tiny_deploy"
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 6 dim: 8 } } }
layer { name: "score" type: "Convolution" bottom: "data" top: "score"
  convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "prob" type: "Softmax" bottom: "score" top: "prob" }
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Three images, their labels (prediction-disagreeing and void pixels included), the list,
    the class map, the inference / Bayesian / deploy prototxts and hand-set weights."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    images, labels = [], []
    for i in range(3):
        image = rng.integers(0, 256, (HEIGHT, WIDTH, 3)).astype(np.uint8)  # BGR
        image[:, :, 2] = 255 * (rng.random((HEIGHT, WIDTH)) > 0.5)          # red: 0 or 255
        label = (image[:, :, 2] > 128).astype(np.uint8)
        label[rng.random((HEIGHT, WIDTH)) > 0.8] ^= 1                         # some errors
        label[0, :3] = VOID                                                   # some void
        images.append(image)
        labels.append(label)
    write_dataset(root, images, labels)
    (root / "classes.json").write_text(json.dumps(
        {"names": ["dark", "red"], "colours": [[0, 0, 255], [255, 0, 0]], "ignore_label": VOID}))
    (root / "net.prototxt").write_text(NET.format(root=root, dropout="", top="score"))
    (root / "bayes.prototxt").write_text(NET.format(root=root, dropout=DROPOUT, top="drop"))
    (root / "deploy.prototxt").write_text(DEPLOY)
    net = caffe.Net(str(root / "net.prototxt"), caffe.TEST)
    weight = np.zeros((2, 3, 1, 1), np.float32)
    weight[1, 2] = 1.0                      # score_1 = R - 128 (the data blob is BGR)
    net.params["score"][0].data[...] = weight
    net.params["score"][1].data[...] = [0.0, -128.0]
    net.save(str(root / "weights.caffemodel"))
    return {"root": root, "images": images, "labels": labels}


def expected_confusion(images, labels):
    cm = ConfusionMatrix(2, ignore_label=VOID)
    for image, label in zip(images, labels):
        cm.update((image[:, :, 2] > 128).astype(int), label)
    return cm


def run(tiny, *args):
    root = tiny["root"]
    return script.main(["--weights", str(root / "weights.caffemodel"), *args])


def test_metrics_and_figures(tiny, tmp_path, capsys):
    root = tiny["root"]
    assert run(tiny, "--model", str(root / "net.prototxt"), "--iter", "3", "--out", str(tmp_path),
               "--classes", str(root / "classes.json")) == 0
    expected = expected_confusion(tiny["images"], tiny["labels"])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["confusion_matrix"] == expected.matrix.tolist()
    assert sum(map(sum, metrics["confusion_matrix"])) == 3 * HEIGHT * WIDTH - 3 * 3  # void left out
    assert metrics["global_accuracy"] == pytest.approx(expected.global_accuracy)
    assert 0.6 < metrics["global_accuracy"] < 0.95  # the labels disagree on ~20% of pixels
    assert metrics["class_average_accuracy"] == pytest.approx(expected.class_average_accuracy)
    assert metrics["mean_iou"] == pytest.approx(expected.mean_iou)
    assert metrics["per_class_iou"] == pytest.approx(expected.per_class_iou.tolist())
    assert metrics["per_class_accuracy"] == pytest.approx(expected.per_class_accuracy.tolist())
    assert metrics["class_names"] == ["dark", "red"] and metrics["images"] == 3
    assert metrics["ignore_label"] == VOID and metrics["mc_samples"] == 1
    printed = capsys.readouterr().out
    assert "mean IoU" in printed and "dark" in printed
    for name in ("sample_0.png", "sample_1.png", "sample_2.png", "confusion_matrix.png"):
        picture = cv2.imread(str(tmp_path / name))
        assert picture is not None and picture.shape[0] > 100


def test_bf16_runs_the_net_under_autocast(tiny, tmp_path, monkeypatch):
    """--bf16: the tiny net's scores (integers below 256) are exact in bfloat16, so the
    confusion matrix is the float one (on every CPU: the tiny net is fast without native
    bfloat16 too)."""
    monkeypatch.setattr(hardware, "native_bfloat16", lambda: True)
    root = tiny["root"]
    assert run(tiny, "--model", str(root / "net.prototxt"), "--iter", "3", "--bf16",
               "--out", str(tmp_path), "--classes", str(root / "classes.json")) == 0
    assert engine_options.current().computes_bf16(mode.device())
    expected = expected_confusion(tiny["images"], tiny["labels"])
    assert json.loads((tmp_path / "metrics.json").read_text())["confusion_matrix"] == \
        expected.matrix.tolist()


def test_default_classes_and_sample_count(tiny, tmp_path):
    root = tiny["root"]
    # squares (2 classes) by default: no void, so the 255 labels are an error
    assert run(tiny, "--model", str(root / "net.prototxt"), "--iter", "1", "--out",
               str(tmp_path)) == 1
    assert run(tiny, "--model", str(root / "net.prototxt"), "--iter", "2", "--samples", "1",
               "--out", str(tmp_path), "--classes", str(root / "classes.json")) == 0
    assert sorted(p.name for p in tmp_path.glob("sample_*.png")) == ["sample_0.png"]
    assert json.loads((tmp_path / "metrics.json").read_text())["images"] == 2


def test_monte_carlo_dropout(tiny, tmp_path):
    root = tiny["root"]
    torch.manual_seed(0)
    assert run(tiny, "--model", str(root / "bayes.prototxt"), "--iter", "2", "--samples", "1",
               "--mc-samples", "5", "--out", str(tmp_path), "--classes",
               str(root / "classes.json")) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["mc_samples"] == 5 and metrics["images"] == 2
    assert (tmp_path / "sample_0.png").is_file() and (tmp_path / "sample_0_uncertainty.png").is_file()


def test_forward_samples_mean_and_variance(tiny):
    root = tiny["root"]
    net = caffe.Net(str(root / "bayes.prototxt"), str(root / "weights.caffemodel"), caffe.TEST)
    assert evaluate.sampling_dropout_layers(net) == ["drop"]
    with torch.no_grad():
        net.forward()  # the data layer's batch stays in place below
        torch.manual_seed(3)
        draws = []
        for _ in range(6):
            net.forward_range(1, len(net.layers) - 1)
            draws.append(net.blobs["prob"].data.copy())
        torch.manual_seed(3)
        mean, variance = evaluate.forward_samples(net, 1, len(net.layers) - 1, 6)
    np.testing.assert_allclose(mean.numpy(), np.mean(draws, axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(variance.numpy(), np.var(draws, axis=0), rtol=1e-4, atol=1e-7)
    assert variance.max() > 0


def test_images_with_the_data_layer_replaced(tiny, tmp_path, capsys):
    root = tiny["root"]
    assert run(tiny, "--model", str(root / "net.prototxt"), "--images", str(root / "img0.png"),
               str(root / "img2.png"), "--out", str(tmp_path), "--classes",
               str(root / "classes.json")) == 0
    assert "replaced by an Input layer" in capsys.readouterr().out
    classes = datasets.load_class_map(str(root / "classes.json"))
    for i in (0, 2):
        prediction = cv2.imread(str(tmp_path / f"img{i}_prediction.png"))[:, :, ::-1]
        expected = datasets.colorize((tiny["images"][i][:, :, 2] > 128).astype(int), classes)
        np.testing.assert_array_equal(prediction, expected)
        assert cv2.imread(str(tmp_path / f"img{i}_overlay.png")).shape == (HEIGHT, WIDTH, 3)
    assert not (tmp_path / "img1_prediction.png").exists()


def test_images_with_an_input_layer_resized(tiny, tmp_path):
    root = tiny["root"]
    folder = tmp_path / "in"
    folder.mkdir()
    big = cv2.resize(tiny["images"][1], (2 * WIDTH, 2 * HEIGHT), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(folder / "big.png"), big)
    assert run(tiny, "--model", str(root / "deploy.prototxt"), "--images", str(folder),
               "--out", str(tmp_path / "out")) == 0
    prediction = cv2.imread(str(tmp_path / "out" / "big_prediction.png"))[:, :, ::-1]
    assert prediction.shape == (2 * HEIGHT, 2 * WIDTH, 3)  # back at the image's own size
    expected = datasets.colorize((big[:, :, 2] > 128).astype(int), datasets.SQUARES)
    np.testing.assert_array_equal(prediction, expected)


def test_deploy_net_param_rules(tiny, tmp_path):
    root = tiny["root"]
    param, spec = evaluate.deploy_net_param(root / "net.prototxt")
    assert param.layer[0].type == "Input" and list(param.layer[0].top) == ["data"]
    assert (spec.channels, spec.height, spec.width) == (3, HEIGHT, WIDTH)  # the list's first image
    _, spec = evaluate.deploy_net_param(root / "deploy.prototxt", input_size=(12, 16))
    assert (spec.height, spec.width) == (12, 16)
    train = tmp_path / "train.prototxt"
    train.write_text((root / "net.prototxt").read_text() + 'layer { name: "loss" type: '
                     '"SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }\n')
    with pytest.raises(caffe.CaffeError, match="label top"):
        evaluate.deploy_net_param(train)


def test_input_to_rgb_undoes_the_transform():
    from segnet_caffe.proto import caffe_pb2

    bgr = np.arange(2 * 3 * 3, dtype=np.float32).reshape(3, 2, 3) * 10
    transform = caffe_pb2.TransformationParameter(scale=0.5, mean_value=[1, 2, 3])
    data = (bgr - np.array([1, 2, 3], np.float32).reshape(3, 1, 1)) * 0.5
    rgb = evaluate.input_to_rgb(data, transform)
    np.testing.assert_array_equal(rgb, bgr[::-1].transpose(1, 2, 0).astype(np.uint8))


def test_errors(tiny, tmp_path, capsys):
    root = tiny["root"]
    assert run(tiny, "--model", str(root / "deploy.prototxt"), "--iter", "1",
               "--out", str(tmp_path)) == 1
    assert 'no "label" blob' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["--model", "m", "--weights", "w"])  # --iter is required without --images
    if not torch.cuda.is_available():
        assert run(tiny, "--model", str(root / "net.prototxt"), "--iter", "1", "--gpu",
                   "--out", str(tmp_path)) == 1
        assert "CUDA is not available" in capsys.readouterr().err
