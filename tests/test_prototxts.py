"""The committed prototxt/ folder is what scripts/generate_prototxts.py writes, and every
generated net builds."""
from pathlib import Path

import pytest

import segnet_caffe as caffe
from segnet_caffe import io
from segnet_caffe.prototxts import render_all

ROOT = Path(__file__).resolve().parents[1]


def test_committed_prototxts_are_up_to_date():
    rendered = render_all("prototxt", "data/squares", "data/camvid")
    stale = [str(path) for path, text in rendered.items() if (ROOT / path).read_text() != text]
    assert not stale, f"regenerate with `python scripts/generate_prototxts.py`: {stale}"


@pytest.mark.parametrize("name, size, classes, params", [
    ("segnet_squares", (512, 512), 2, 612418),
    ("segnet_squares_report", (512, 512), 2, 612418),
    ("segnet_basic", (360, 480), 11, 1416587),
    ("segnet", (360, 480), 11, 29443723),
    ("bayesian_segnet_basic", (360, 480), 11, 1416587),
])
def test_generated_nets_build_with_the_expected_shapes(name, size, classes, params):
    param = io.read_net_prototxt(str(ROOT / "prototxt" / f"{name}_inference.prototxt"))
    net = caffe.Net(input_fed(param, size), caffe.TEST)
    assert net.blobs["prob"].shape == (1, classes, *size)
    assert sum(blob.count for blobs in net.params.values() for blob in blobs) == params


def input_fed(param, size):
    """The net with its data layer replaced by Input blobs of the given size."""
    data = param.layer[0]
    data.type = "Input"
    data.ClearField("dense_image_data_param")
    data.input_param.shape.add(dim=[1, 3, *size])
    data.input_param.shape.add(dim=[1, 1, *size])
    return param


def test_squares_net_matches_the_report_authors_layers(shared_dir):
    """His caffemodel's layers are ours, by name, and his weights load into ours shape-checked."""
    seed = shared_dir / "data" / "seed_models" / "manoj_basic_iter_100.caffemodel"
    theirs = io.read_caffemodel(str(seed))
    report = io.read_net_prototxt(str(ROOT / "prototxt" / "segnet_squares_report_train.prototxt"))
    ours = io.read_net_prototxt(str(ROOT / "prototxt" / "segnet_squares_train.prototxt"))
    theirs_names = [layer.name for layer in theirs.layer if layer.type != "Split"]
    assert [layer.name for layer in report.layer] == theirs_names
    # ours adds one parameter-free MVN layer between the data and the LRN
    assert [layer.name for layer in ours.layer] == theirs_names[:1] + ["mvn"] + theirs_names[1:]
    assert ours.layer[1].type == "MVN" and ours.layer[2].bottom == ["mvn"]
    net = caffe.Net(input_fed(ours, (512, 512)), caffe.TRAIN)
    copied, ignored = net.copy_from(str(seed))
    assert sorted(copied) == sorted(layer.name for layer in theirs.layer if layer.blobs)
    assert not ignored
