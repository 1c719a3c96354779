"""Segmenting pictures and videos (segnet_caffe/segment.py), through
scripts/test_segmentation_camvid.py and `segnet-caffe segment`: sliding-window tiling, a short
video written by OpenCV, the camera branch, index PNGs for images and for the test set."""
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import segnet_caffe as caffe
from segnet_caffe import cli, evaluate, segment
from segnet_caffe.evaluate import deploy_net_param

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import test_segmentation_camvid as script  # noqa: E402

SQUARES = "prototxt/segnet_squares_inference.prototxt"
SIZE = (16, 20)  # the squares net's input here: two 2x2 poolings, 7x7 convolutions

TINY = """
name: "tiny"
layer {{ name: "data" type: "DenseImageData" top: "data" top: "label"
  dense_image_data_param {{ source: "{root}/list.txt" root_folder: "{root}/" batch_size: 2 }} }}
layer {{ name: "score" type: "Convolution" bottom: "data" top: "score"
  convolution_param {{ num_output: 2 kernel_size: 1 }} }}
layer {{ name: "prob" type: "Softmax" bottom: "score" top: "prob" }}
"""


@pytest.fixture(scope="module")
def squares(tmp_path_factory):
    """The generated squares net at 16x20 with random filters and BN parameters."""
    folder = tmp_path_factory.mktemp("squares")
    param, _ = deploy_net_param(SQUARES, SIZE)
    torch.manual_seed(0)
    net = caffe.Net(param, caffe.TEST)
    rng = np.random.default_rng(0)
    for name, blobs in net.params.items():
        if net.layer_dict[name].type == "BN":
            blobs[0].data[...] = rng.uniform(0.5, 1.5, blobs[0].data.shape)
            blobs[1].data[...] = rng.normal(0, 0.2, blobs[1].data.shape)
    net.save(str(folder / "w.caffemodel"))
    return folder / "w.caffemodel"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Four 6x8 images, a list and a one-convolution net whose prediction is known: class 1
    exactly where the red channel is 255 (score_1 = R - 128)."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(1)
    images = []
    for i in range(4):
        image = rng.integers(0, 256, (6, 8, 3)).astype(np.uint8)
        image[:, :, 2] = 255 * (rng.random((6, 8)) > 0.5)
        cv2.imwrite(str(root / f"img{i}.png"), image)
        cv2.imwrite(str(root / f"lab{i}.png"), (image[:, :, 2] > 128).astype(np.uint8))
        images.append(image)
    (root / "list.txt").write_text("".join(f"img{i}.png lab{i}.png\n" for i in range(4)))
    (root / "net.prototxt").write_text(TINY.format(root=root))
    net = caffe.Net(str(root / "net.prototxt"), caffe.TEST)
    net.params["score"][0].data[...] = 0
    net.params["score"][0].data[1, 2] = 1.0
    net.params["score"][1].data[...] = [0.0, -128.0]
    net.save(str(root / "w.caffemodel"))
    return {"root": root, "images": images}


def blocks(rng, height, width, cells=(4, 5)):
    """A picture of flat coloured blocks (edges for the net to see)."""
    coarse = rng.integers(0, 256, cells + (3,), dtype=np.uint8)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_NEAREST)


def test_tile_starts():
    assert segment.tile_starts(64, 32, 32) == [0, 32]
    assert segment.tile_starts(64, 32, 21) == [0, 21, 32]
    assert segment.tile_starts(120, 40, 26) == [0, 26, 52, 78, 80]  # the last one flush
    assert segment.tile_starts(20, 32, 21) == [0]


def test_a_tiled_pattern_equals_one_tile_where_the_windows_do_not_overlap(squares):
    """An image made of 2x3 copies of one tile of the net's input size: tiled without overlap,
    each block's probabilities are the tile's own (exactly: the same forward pass). With the
    default overlapping windows, pixels that one window covers are still the tile's, and the
    others are the mean of the windows that cover them."""
    net, spec = evaluate.deploy_net(SQUARES, str(squares), SIZE)
    tile = blocks(np.random.default_rng(2), *SIZE)
    image = np.tile(tile, (2, 3, 1))
    one, _ = evaluate.predict_image(net, spec, tile)
    with torch.no_grad():
        apart = segment.Segmenter(net, spec, tile=True, stride=SIZE)
        prob, variance = apart.probabilities(image)
        assert variance is None and prob.shape == (2, 32, 60)
        for i in range(2):
            for j in range(3):
                block = prob[:, 16 * i:16 * (i + 1), 20 * j:20 * (j + 1)]
                assert torch.equal(block, one)
        assert (apart(image).prediction == np.tile(one.argmax(0).numpy(), (2, 3))).all()
        assert not torch.equal(one, evaluate.predict_image(net, spec, image)[0])  # resizing

        overlapping = segment.Segmenter(net, spec, tile=True)
        assert overlapping.stride == (10, 13)
        prob, _ = overlapping.probabilities(image)
        assert torch.equal(prob[:, :10, :13], one[:, :10, :13])      # window (0, 0) alone
        assert torch.equal(prob[:, 26:, 59:], one[:, 10:, 19:])      # the last window alone
        total, count = torch.zeros_like(prob), torch.zeros(prob.shape[1:])
        for y in (0, 10, 16):
            for x in (0, 13, 26, 39, 40):
                window, _ = evaluate.predict_image(net, spec, image[y:y + 16, x:x + 20])
                total[:, y:y + 16, x:x + 20] += window
                count[y:y + 16, x:x + 20] += 1
        assert count.min() == 1 and count.max() == 6
        assert torch.allclose(prob, total / count, atol=1e-6)


def test_tiling_pads_a_picture_smaller_than_a_window(squares):
    net, spec = evaluate.deploy_net(SQUARES, str(squares), SIZE)
    picture = blocks(np.random.default_rng(3), 10, 12)
    padded = np.zeros(SIZE + (3,), np.uint8)
    padded[:10, :12] = picture
    with torch.no_grad():
        result = segment.Segmenter(net, spec, tile=True)(picture)
        expected = evaluate.predict_image(net, spec, padded)[0].argmax(0).numpy()[:10, :12]
    assert result.prediction.shape == (10, 12) and (result.prediction == expected).all()


def test_tiling_pools_the_monte_carlo_variance(monkeypatch):
    """Where windows overlap, the variance is that of all their samples pooled: the mean of
    (variance + mean^2) minus the squared mean."""
    spec = evaluate.InputSpec("data", 3, 4, 4)
    net = type("FakeNet", (), {"blobs": {"prob": caffe.Blob((1, 1, 4, 4))}})()
    calls = []

    def predict(net_, spec_, image, mc_samples):
        k = len(calls)
        calls.append(image)
        return torch.full((1, 4, 4), 0.2 + 0.4 * k), torch.full((1, 4, 4), 0.01 * (k + 1))

    monkeypatch.setattr(evaluate, "predict_image", predict)
    segmenter = segment.Segmenter(net, spec, mc_samples=4, tile=True, stride=(4, 2))
    mean, variance = segmenter.probabilities(np.zeros((4, 6, 3), np.uint8))
    assert len(calls) == 2  # windows at x = 0 and 2
    assert torch.allclose(mean[0, 0], torch.tensor([0.2, 0.2, 0.4, 0.4, 0.6, 0.6]))
    pooled = (0.01 + 0.2 ** 2 + 0.02 + 0.6 ** 2) / 2 - 0.4 ** 2
    assert torch.allclose(variance[0, 0], torch.tensor([0.01, 0.01, pooled, pooled, 0.02, 0.02]))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 7-frame 48x64 video (mp4v, 10 frames/s) of moving blocks, written by OpenCV."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    rng = np.random.default_rng(4)
    base = blocks(rng, 48, 96)
    for k in range(7):
        writer.write(np.ascontiguousarray(base[:, 4 * k:4 * k + 64]))
    writer.release()
    return path


def read_frames(path):
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return frames, fps


def test_video_through_the_script(squares, clip, tmp_path, capsys):
    out = tmp_path / "out"
    assert script.main(["--model", SQUARES, "--weights", str(squares), "--input-size", "16", "20",
                        "--video", str(clip), "--every", "2", "--save-labels",
                        "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "clip: segmented 4 of 7 frames in" in printed and "frames/s" in printed
    overlay, fps = read_frames(out / "clip_overlay.mp4")
    predicted, _ = read_frames(out / "clip_prediction.mp4")
    assert len(overlay) == len(predicted) == 4 and overlay[0].shape == (48, 64, 3)
    assert fps == pytest.approx(5.0)
    frames, _ = read_frames(clip)
    net, spec = evaluate.deploy_net(SQUARES, str(squares), SIZE)
    segmenter = segment.Segmenter(net, spec)
    classes = segment.class_map_for(None, 2)
    for k, frame in zip((0, 2, 4, 6), frames[::2]):
        labels = cv2.imread(str(out / "clip_labels" / f"{k:06d}.png"), cv2.IMREAD_UNCHANGED)
        with torch.no_grad():
            expected = segmenter(frame).prediction
        assert labels.ndim == 2 and labels.dtype == np.uint8 and (labels == expected).all()
        # mp4v is lossy: each decoded pixel's nearest class colour is the prediction's
        distance = np.abs(predicted[k // 2][:, :, None, ::-1].astype(int)
                          - classes.colours[None, None, :2].astype(int)).sum(-1)
        assert (distance.argmin(-1) == expected).mean() > 0.95
    assert sorted(p.name for p in (out / "clip_labels").iterdir()) == \
        ["000000.png", "000002.png", "000004.png", "000006.png"]


def test_the_camera_is_a_branch_of_the_same_loop(squares, clip, tmp_path, capsys, monkeypatch):
    """`segnet-caffe segment --camera 0`, with camera 0 standing in for the clip."""
    opened = []
    real = cv2.VideoCapture

    def capture(source):
        opened.append(source)
        return real(str(clip) if isinstance(source, int) else source)

    monkeypatch.setattr(segment.cv2, "VideoCapture", capture)
    out = tmp_path / "cam"
    assert cli.main(["segment", "--model", SQUARES, "--weights", str(squares), "--input-size",
                     "16", "20", "--camera", "0", "--max-frames", "2",
                     "--out", str(out)]) == 0
    assert opened == [0]
    assert "camera0: segmented 2 of 2 frames" in capsys.readouterr().out
    assert len(read_frames(out / "camera0_overlay.mp4")[0]) == 2


def test_save_labels_for_the_test_set_and_for_images(tiny, tmp_path):
    root = tiny["root"]
    base = ["--model", str(root / "net.prototxt"), "--weights", str(root / "w.caffemodel")]
    assert script.main(base + ["--iter", "2", "--samples", "0", "--save-labels",
                               "--out", str(tmp_path / "test")]) == 0
    pictures = [str(root / "img1.png"), str(root / "img3.png")]
    assert cli.main(["segment"] + base + ["--images", *pictures, "--save-labels",
                                          "--out", str(tmp_path / "cli")]) == 0
    for folder, numbers in (("test", range(4)), ("cli", (1, 3))):
        written = sorted(p.name for p in (tmp_path / folder / "labels").iterdir())
        assert written == [f"img{i}.png" for i in numbers]
        for i in numbers:
            labels = cv2.imread(str(tmp_path / folder / "labels" / f"img{i}.png"),
                                cv2.IMREAD_UNCHANGED)
            assert labels.ndim == 2 and labels.dtype == np.uint8
            assert (labels == (tiny["images"][i][:, :, 2] > 128)).all()
    assert (tmp_path / "cli" / "img1_overlay.png").is_file()


def test_errors(squares, tiny, tmp_path, cli_in_process, capsys):
    base = ["segment", "--model", SQUARES, "--weights", squares, "--input-size", 16, 20,
            "--out", tmp_path]

    def error(*args):
        status, err = cli_in_process(*base, *args)
        assert status == 1 and "Traceback" not in err
        return err.strip().splitlines()[-1]  # after the log's "Use CPU."

    assert error("--video", tmp_path / "none.mp4").endswith("cannot open it: no such file")
    (tmp_path / "bad.mp4").write_text("not a video")
    assert error("--video", tmp_path / "bad.mp4") == (
        f'segnet-caffe: error: --video "{tmp_path / "bad.mp4"}": cannot open it: OpenCV cannot '
        "decode it (moov atom not found)")
    assert error("--camera", 7) == ("segnet-caffe: error: --camera 7: no camera with that number "
                                    "can be opened on this machine")
    assert "--tile-stride 17 8: the H stride must be 1..16" in error(
        "--images", tiny["root"], "--tile", "--tile-stride", 17, 8)
    for args, message in (
            (["--images", "x", "--tile-stride", "8", "8"], "--tile-stride needs --tile"),
            (["--video", "x", "--every", "0"], "--every must be at least 1"),
            (["--images", "x", "--camera", "0"], "not --images and --camera")):
        with pytest.raises(SystemExit):
            cli.main([str(a) for a in base] + args)
        assert message in capsys.readouterr().err
