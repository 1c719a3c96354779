"""segnet-caffe draw: layout of a net as boxes and blob edges, and the picture the CLI writes."""
import itertools
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from google.protobuf import text_format

from segnet_caffe import io
from segnet_caffe.draw import (describe, draw_net, draw_net_to_file, get_layer_label,
                               get_layer_lr_mult, get_pydot_graph, layout)
from segnet_caffe.errors import CaffeError
from segnet_caffe.proto import caffe_pb2

PROTOTXT = Path(__file__).resolve().parents[1] / "prototxt"


def squares(variant):
    return io.read_net_prototxt(str(PROTOTXT / f"segnet_squares_{variant}.prototxt"))


def overlaps(a, b):
    (ax, ay), (aw, ah) = a[3], a[4]
    (bx, by), (bw, bh) = b[3], b[4]
    return abs(ax - bx) < (aw + bw) / 2 and abs(ay - by) < (ah + bh) / 2


@pytest.mark.parametrize("rankdir", ["TB", "LR", "BT", "RL"])
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
    axis = 1 if rankdir in ("TB", "BT") else 0  # layers run along y (TB, BT) or x (LR, RL)
    sign = -1 if rankdir in ("TB", "RL") else 1  # down (y falls) or left (x falls)
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


def test_phase_none_draws_every_layer():
    net = squares("train")
    net.layer.add(name="test_only", type="Silence", bottom=["accuracy"]).include.add(
        phase=caffe_pb2.TEST)
    names = [box[0] for box in layout(net, None).boxes]
    assert names == [layer.name for layer in net.layer]


def test_empty_net_is_a_clear_error(tmp_path):
    empty = caffe_pb2.NetParameter(name="empty")
    with pytest.raises(CaffeError, match='net "empty" has no layers in phase TEST'):
        draw_net_to_file(empty, tmp_path / "x.png", "LR", caffe_pb2.TEST)
    with pytest.raises(CaffeError, match='net "empty" has no layers: nothing to draw'):
        draw_net_to_file(empty, tmp_path / "x.png")


MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF", "svg": b"<?xml", "ps": b"%!PS",
         "jpg": b"\xff\xd8\xff"}


@pytest.mark.parametrize("ext", sorted(MAGIC))
def test_draw_net_returns_the_image_bytes(ext):
    assert draw_net(squares("inference"), "LR", ext).startswith(MAGIC[ext])


def test_draw_net_raw_is_graphviz_source_and_unknown_formats_are_named():
    assert draw_net(squares("inference"), "TB", "raw").startswith(b"digraph segnet_squares {")
    with pytest.raises(CaffeError, match='cannot draw a net as "gifx": the formats are .*png'):
        draw_net(squares("inference"), "TB", "gifx")


def test_draw_net_to_file_takes_pycaffes_positional_order(tmp_path):
    path = tmp_path / "net.pdf"
    draw_net_to_file(squares("train"), str(path), "TB", caffe_pb2.TRAIN, True)
    assert path.read_bytes().startswith(b"%PDF")
    with pytest.raises(CaffeError, match="has no extension"):
        draw_net_to_file(squares("train"), tmp_path / "net")


def test_display_lrm_puts_the_multipliers_in_learning_layers_boxes():
    net = squares("train")
    net.layer[3].param[0].lr_mult, net.layer[3].param[1].lr_mult = 0.5, 0  # conv1
    frozen = net.layer[-3]  # conv_classifier: nothing learnt, nothing shown (pycaffe's)
    frozen.param[0].lr_mult, frozen.param[1].lr_mult = 0, 0
    text = {box[0]: box[2] for box in layout(net, caffe_pb2.TRAIN, display_lrm=True).boxes}
    assert text["conv1"] == "conv1\nConvolution\n7x7, 64 out\nlr mult: 0.5, 0.0"
    assert text["conv_decode1"].endswith("lr mult: 1.0, 2.0")
    assert "lr mult" not in text["conv_classifier"] + text["conv1_bn"]
    plain = {box[0]: box[2] for box in layout(net, caffe_pb2.TRAIN).boxes}
    assert "lr mult" not in "".join(plain.values())


def test_pycaffe_label_helpers():
    by_name = {layer.name: layer for layer in squares("train").layer}
    assert get_layer_label(by_name["conv1"], "LR", display_lrm=True) == (
        r'"conv1\n(Convolution)\nkernel size: 7\nstride: 1\npad: 3\nlr mult: 1.0, 2.0"')
    assert get_layer_label(by_name["pool1"], "TB") == (
        '"pool1 (Pooling MAX) kernel size: 2 stride: 2 pad: 0"')
    assert get_layer_lr_mult(caffe_pb2.LayerParameter(type="InnerProduct")) == (1.0, 1.0)
    with pytest.raises(ValueError, match="ReLU layers do not have a learning rate multiplier"):
        get_layer_lr_mult(by_name["relu1"])


def test_pydot_graph_has_a_node_per_layer_and_blob_and_an_edge_per_bottom_and_top():
    net = squares("train")
    graph = get_pydot_graph(net, "LR", phase=caffe_pb2.TRAIN)
    blobs = {blob for layer in net.layer for blob in [*layer.bottom, *layer.top]}
    assert len(net.layer) == 20 and len(blobs) == 18
    assert len(graph.get_nodes()) == 20 + 18
    assert len(graph.get_edges()) == 23 + 24  # bottoms, tops
    node = {n.get_name(): n for n in graph.get_nodes()}
    assert node["relu1_ReLU"].get("fillcolor") == "#90EE90"  # in place: green
    assert node["conv1_Convolution"].get("fillcolor") == "#FF5050"
    assert node["pool1_mask_blob"].get("shape") == "octagon"
    labels = {(e.get_source(), e.get_destination()): e.get("label") for e in graph.get_edges()}
    assert labels["conv1_Convolution", "conv1_blob"] == "64"
    assert labels["data_DenseImageData", "data_blob"] == "Batch 4"
    assert labels["data_blob", "mvn_MVN"] == '""'
    unlabelled = get_pydot_graph(net, "LR", label_edges=False)
    assert {e.get("label") for e in unlabelled.get_edges()} == {'""'}


def test_legacy_nets_are_upgraded_before_drawing():
    raw = text_format.Parse('name: "old" input: "data" input_dim: [1, 1, 4, 4] '
                            'layers { name: "relu" type: RELU bottom: "data" top: "out" }',
                            caffe_pb2.NetParameter())
    assert [box[0] for box in layout(raw, None).boxes] == ["input", "relu"]
    assert len(get_pydot_graph(raw, "LR").get_nodes()) == 2 + 2


def test_cli_writes_a_png(tmp_path):
    out = tmp_path / "net.png"
    done = subprocess.run([sys.executable, "-m", "segnet_caffe", "draw",
                           str(PROTOTXT / "segnet_squares_inference.prototxt"), str(out),
                           "--rankdir", "LR", "--phase", "TEST"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    image = cv2.imread(str(out))
    assert image is not None and image.shape[1] > 3 * image.shape[0]  # left to right: wide
    every = subprocess.run([sys.executable, "-m", "segnet_caffe", "draw",
                            str(PROTOTXT / "segnet_squares_train.prototxt"), str(out),
                            "--phase", "ALL", "--display_lrm"], capture_output=True, text=True)
    assert every.returncode == 0, every.stderr
    assert cv2.imread(str(out)).shape[0] > 3 * cv2.imread(str(out)).shape[1]  # TB: tall
    missing = subprocess.run([sys.executable, "-m", "segnet_caffe", "draw", str(tmp_path / "no"),
                              str(out)], capture_output=True, text=True)
    assert missing.returncode == 1 and "cannot read" in missing.stderr
    assert "Traceback" not in missing.stderr
