"""segnet-caffe draw: layout of a net as boxes and blob edges, and the picture the CLI writes."""
import itertools
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from segnet_caffe import io
from segnet_caffe.draw import describe, draw_net_to_file, layout
from segnet_caffe.errors import CaffeError
from segnet_caffe.proto import caffe_pb2

PROTOTXT = Path(__file__).resolve().parents[1] / "prototxt"


def squares(variant):
    return io.read_net_prototxt(str(PROTOTXT / f"segnet_squares_{variant}.prototxt"))


def overlaps(a, b):
    (ax, ay), (aw, ah) = a[3], a[4]
    (bx, by), (bw, bh) = b[3], b[4]
    return abs(ax - bx) < (aw + bw) / 2 and abs(ay - by) < (ah + bh) / 2


@pytest.mark.parametrize("rankdir", ["TB", "LR"])
def test_every_layer_is_a_box_and_every_blob_an_edge(rankdir):
    net = squares("train")
    diagram = layout(net, caffe_pb2.TRAIN, rankdir)
    assert [box[0] for box in diagram.boxes] == [layer.name for layer in net.layer]
    assert not any(overlaps(a, b) for a, b in itertools.combinations(diagram.boxes, 2))
    # one edge per bottom; in-place layers chain (conv1 -> conv1_bn -> relu1 -> pool1)
    assert len(diagram.edges) == sum(len(layer.bottom) for layer in net.layer)
    masks = sorted(blob for blob, _, is_mask in diagram.edges if is_mask)
    assert masks == ["pool1_mask", "pool2_mask"]
    centre = {box[0]: box[3] for box in diagram.boxes}
    conv1, pool1, upsample1 = centre["conv1"], centre["pool1"], centre["upsample1"]
    axis = 1 if rankdir == "TB" else 0  # layers run down (y falls) or right (x grows)
    sign = -1 if rankdir == "TB" else 1
    assert sign * conv1[axis] < sign * pool1[axis] < sign * upsample1[axis]


def test_phase_rules_decide_what_is_drawn():
    net = squares("train")
    extra = net.layer.add(name="train_only", type="Silence", bottom=["accuracy"])
    extra.include.add(phase=caffe_pb2.TRAIN)
    names = lambda phase: [box[0] for box in layout(net, phase).boxes]
    assert "train_only" in names(caffe_pb2.TRAIN) and "train_only" not in names(caffe_pb2.TEST)


def test_layer_summaries():
    by_name = {layer.name: layer for layer in squares("inference").layer}
    assert describe(by_name["conv1"]) == "7x7, 64 out"
    assert describe(by_name["pool1"]) == "MAX 2x2 /2"
    assert describe(by_name["upsample1"]) == "x2"
    assert describe(by_name["conv1_bn"]) == "INFERENCE"
    assert describe(by_name["prob"]) == ""


def test_empty_net_is_a_clear_error(tmp_path):
    with pytest.raises(CaffeError, match='net "empty" has no layers in phase TEST'):
        draw_net_to_file(caffe_pb2.NetParameter(name="empty"), tmp_path / "x.png")


def test_cli_writes_a_png(tmp_path):
    out = tmp_path / "net.png"
    done = subprocess.run([sys.executable, "-m", "segnet_caffe", "draw",
                           str(PROTOTXT / "segnet_squares_inference.prototxt"), str(out),
                           "--rankdir", "LR", "--phase", "TEST"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    image = cv2.imread(str(out))
    assert image is not None and image.shape[1] > 3 * image.shape[0]  # left to right: wide
    missing = subprocess.run([sys.executable, "-m", "segnet_caffe", "draw", str(tmp_path / "no"),
                              str(out)], capture_output=True, text=True)
    assert missing.returncode == 1 and "cannot read" in missing.stderr
    assert "Traceback" not in missing.stderr
