"""A dataset of one's own: scripts/prepare_dataset.py (pairing, palettes, index labels, splits,
class weights, dataset.json), scripts/generate_prototxts.py --dataset (classes, weights, sizes,
Upsample sizes at odd sizes) and every bad input of docs/errors.md's "A dataset of one's own"
table, checked line for line against what the scripts print."""
import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import segnet_caffe as caffe
from segnet_caffe import io
from segnet_caffe.datasets import SHAPES, load_class_map, make_shapes
from segnet_caffe.metrics import median_frequency_weights
from segnet_caffe.models import DataSpec, LossSpec, segnet_basic, segnet_vgg16
from segnet_caffe.prototxts import DATASET_MODELS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import generate_prototxts  # noqa: E402
import prepare_dataset  # noqa: E402

PALETTE_NAMES = ["background", "disc", "triangle", "box"]


# ----- helpers -----------------------------------------------------------------------------------
def run_script(script, capsys, *args):
    """(exit status, stdout, stderr) of a script's main() run in this process."""
    status = script.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def prepare(capsys, *args):
    return run_script(prepare_dataset, capsys, *args)


def files_state(folder):
    """{path: sha1} of every file below `folder`: what "nothing of the user's touched" compares."""
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def rgb(path):
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]


def expected_labels(mask_rgb, classes=SHAPES):
    """The class label of each pixel of a colour mask, by the palette (void = its index)."""
    labels = np.full(mask_rgb.shape[:2], 255, np.uint8)
    for label, colour in enumerate(classes.colours):
        labels[(mask_rgb == colour).all(axis=2)] = label
    assert (labels != 255).all(), "a mask colour outside the palette"
    return labels


@pytest.fixture
def mine(tmp_path, monkeypatch):
    """A user's dataset in the working folder: mine/images/*.jpg, mine/masks/*.png (colour
    masks with a void colour), mine/palette.json; 10 pairs of 40x60."""
    monkeypatch.chdir(tmp_path)
    make_shapes("mine", count=10, height=40, width=60, seed=3)
    return tmp_path / "mine"


def index_dataset(root, labels, channels=1, extension=".png"):
    """images/<n>.png (random) and labels/<n><extension> holding the given index arrays."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for n, label in enumerate(labels):
        label = np.asarray(label, np.uint8)
        cv2.imwrite(str(root / "images" / f"{n}.png"),
                    rng.integers(0, 255, (*label.shape, 3)).astype(np.uint8))
        if channels == 3:
            label = np.repeat(label[:, :, None], 3, axis=2)
        cv2.imwrite(str(root / "labels" / f"{n}{extension}"), label)
    return root


# ----- preparing colour masks --------------------------------------------------------------------
def test_colour_masks_become_index_labels_lists_weights_and_dataset_json(mine, capsys):
    before = files_state(mine)
    status, out, err = prepare(capsys, "--images", "mine/images", "--labels", "mine/masks",
                               "--palette", "mine/palette.json", "--out", "prepared")
    assert status == 0, err
    assert files_state(mine) == before                  # the user's folder only read
    prepared = Path("prepared")
    counts = {split: len((prepared / f"{split}.txt").read_text().splitlines())
              for split in ("train", "val", "test")}
    assert counts == {"train": 8, "val": 1, "test": 1}
    info = json.loads((prepared / "dataset.json").read_text())
    assert [c["name"] for c in info["classes"]] == PALETTE_NAMES
    assert [c["color"] for c in info["classes"]] == SHAPES.colours[:4].tolist()
    assert info["void"] == {"name": "void", "color": [224, 224, 192]}
    assert info["num_classes"] == 4 and info["ignore_label"] == 4
    assert info["image_size"] == [40, 60] and info["counts"] == counts
    assert info["label_type"] == "colour"
    seen = []
    for split in ("train", "val", "test"):
        for line in (prepared / f"{split}.txt").read_text().splitlines():
            image, label = line.split()
            assert image.startswith("../mine/images/shape_") and image.endswith(".jpg")
            stem = Path(image).stem
            assert label == f"index_labels/{stem}.png"
            converted = cv2.imread(str(prepared / label), cv2.IMREAD_UNCHANGED)
            assert converted.ndim == 2 and converted.dtype == np.uint8
            np.testing.assert_array_equal(converted,
                                          expected_labels(rgb(mine / "masks" / f"{stem}.png")))
            seen.append(stem)
    assert sorted(seen) == [f"shape_{n}" for n in range(10)]
    # median frequency over the training labels, void ignored: the one computation of metrics
    train_labels = [prepared / line.split()[1]
                    for line in (prepared / "train.txt").read_text().splitlines()]
    weights = json.loads((prepared / "class_weights.json").read_text())
    assert weights["class_weights"] == pytest.approx(
        median_frequency_weights(train_labels, 4, 4).tolist(), rel=1e-12)
    assert weights["class_names"] == PALETTE_NAMES and weights["ignore_label"] == 4
    # the test script's --classes reads dataset.json: names and colours of the dataset
    classes = load_class_map(str(prepared / "dataset.json"))
    assert list(classes.names) == PALETTE_NAMES + ["void"]
    assert classes.num_classes == 4 and classes.ignore_label == 4
    assert "4 classes, void = label 4 (ignored)" in out and "all 40x60" in out


def test_dense_image_data_reads_the_lists_as_written(mine, capsys):
    assert prepare(capsys, "--images", "mine/images", "--labels", "mine/masks", "--palette",
                   "mine/palette.json", "--out", "prepared")[0] == 0
    net_file = Path("net.prototxt")
    net_file.write_text('layer { name: "data" type: "DenseImageData" top: "data" top: "label" '
                        'dense_image_data_param { source: "prepared/train.txt" '
                        'root_folder: "prepared/" batch_size: 8 } }\n')
    net = caffe.Net(str(net_file), caffe.TEST)
    net.forward()
    lines = Path("prepared/train.txt").read_text().splitlines()
    for n, line in enumerate(lines):
        image, label = line.split()
        np.testing.assert_array_equal(net.blobs["data"].data[n],
                                      cv2.imread(f"prepared/{image}").transpose(2, 0, 1))
        np.testing.assert_array_equal(net.blobs["label"].data[n, 0],
                                      cv2.imread(f"prepared/{label}", cv2.IMREAD_GRAYSCALE))


def test_the_split_is_the_same_for_a_seed_and_changes_with_it(mine, capsys):
    args = ["--images", "mine/images", "--labels", "mine/masks", "--palette", "mine/palette.json"]
    for out, seed in (("a", 0), ("b", 0), ("c", 5)):
        assert prepare(capsys, *args, "--out", out, "--seed", seed)[0] == 0
    lists = {out: [Path(out, f"{s}.txt").read_text() for s in ("train", "val", "test")]
             for out in "abc"}
    assert lists["a"] == lists["b"] and lists["a"] != lists["c"]
    assert files_state("a") == files_state("b")
    status, out, _ = prepare(capsys, *args, "--out", "d", "--split", "0.5,0.3,0.2")
    assert status == 0 and "split: train 5, val 3, test 2" in out


def test_a_rerun_replaces_its_own_files_only(mine, capsys):
    args = ["--images", "mine/images", "--labels", "mine/masks", "--palette", "mine/palette.json",
            "--out", "prepared"]
    assert prepare(capsys, *args)[0] == 0
    Path("prepared/prototxt").mkdir()
    Path("prepared/prototxt/keep.prototxt").write_text("mine")
    Path("prepared/index_labels/stale.png").write_bytes(b"old")
    assert prepare(capsys, *args, "--split", "0.6,0.2,0.2")[0] == 0
    assert len(Path("prepared/train.txt").read_text().splitlines()) == 6
    assert Path("prepared/prototxt/keep.prototxt").read_text() == "mine"
    assert not Path("prepared/index_labels/stale.png").exists()
    assert not [p for p in Path("prepared").iterdir() if p.name.startswith(".")]


def test_out_may_be_the_folder_holding_the_users_folders(mine, capsys):
    """OUT = mine (holding mine/images, mine/masks) adds its files beside the user's; a user's
    folder where OUT's own would go is refused."""
    before = files_state(mine)
    status, _, err = prepare(capsys, "--images", "mine/images", "--labels", "mine/masks",
                             "--palette", "mine/palette.json", "--out", "mine")
    assert status == 0, err
    after = files_state(mine)
    assert {k: v for k, v in after.items() if k in before} == before
    assert "train.txt" in after and "index_labels/shape_0.png" in after
    assert Path("mine/train.txt").read_text().startswith("images/shape_")
    shutil.rmtree(mine / "index_labels")
    (mine / "masks").rename(mine / "index_labels")
    status, _, err = prepare(capsys, "--images", "mine/images", "--labels", "mine/index_labels",
                             "--palette", "mine/palette.json", "--out", "mine")
    assert status == 1 and err.strip() == (
        "prepare_dataset.py: error: --out mine would write mine/index_labels, which holds "
        "--labels mine/index_labels: choose another --out")


def test_unpaired_files_are_named_and_left_out(mine, capsys):
    (mine / "masks" / "shape_9.png").rename(mine / "masks" / "other.png")
    (mine / "images" / "notes.txt").write_text("not an image")
    status, out, err = prepare(capsys, "--images", "mine/images", "--labels", "mine/masks",
                               "--palette", "mine/palette.json", "--out", "prepared")
    assert status == 0, err
    assert "9 image/label pairs" in out
    assert "1 image(s) without a label, left out: shape_9.jpg" in out
    assert "1 label(s) without an image, left out: other.png" in out


def test_split_lists_choose_each_splits_pairs(mine, capsys):
    Path("train.lst").write_text("shape_0\nshape_1.jpg\nmine/images/shape_2.jpg\nshape_3\n")
    Path("val.lst").write_text("# validation\nshape_4\n")
    Path("test.lst").write_text("shape_5.png\n")
    args = ["--images", "mine/images", "--labels", "mine/masks", "--palette", "mine/palette.json",
            "--out", "prepared", "--train-list", "train.lst", "--val-list", "val.lst",
            "--test-list", "test.lst"]
    status, out, err = prepare(capsys, *args)
    assert status == 0, err
    assert [line.split()[1] for line in Path("prepared/train.txt").read_text().splitlines()] == \
        [f"index_labels/shape_{n}.png" for n in range(4)]
    assert Path("prepared/test.txt").read_text() == \
        "../mine/images/shape_5.jpg index_labels/shape_5.png\n"
    assert "4 pair(s) in no list, left out" in out
    Path("test.lst").write_text("shape_0\n")
    assert "test.lst:1: \"shape_0\" is already in the train list" in prepare(capsys, *args)[2]


def test_paths_with_spaces_are_linked_for_the_list_files(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_shapes("my data", count=10, height=32, width=48)
    status, out, err = prepare(capsys, "--images", "my data/images", "--labels", "my data/masks",
                               "--palette", "my data/palette.json", "--out", "prepared")
    assert status == 0, err
    image, label = Path("prepared/train.txt").read_text().splitlines()[0].split()
    assert image.startswith("image_links/shape_") and cv2.imread(f"prepared/{image}") is not None
    assert "linked under" in out


# ----- palettes ----------------------------------------------------------------------------------
def test_colour_masks_without_a_palette_list_their_colours_and_write_one(mine, capsys):
    status, _, err = prepare(capsys, "--images", "mine/images", "--labels", "mine/masks",
                             "--out", "prepared")
    assert status == 1 and "the labels are colour-coded (5 colours: [250, 170, 30]" in err
    assert "[224, 224, 192]" in err and "--write-palette" in err
    assert not Path("prepared").exists()
    status, out, err = prepare(capsys, "--images", "mine/images", "--labels", "mine/masks",
                               "--write-palette", "draft.json")
    assert status == 0, err
    draft = json.loads(Path("draft.json").read_text())
    assert sorted(c["color"] for c in draft["classes"]) == sorted(SHAPES.colours.tolist())
    assert [c["name"] for c in draft["classes"]] == [f"class_{k}" for k in range(5)]
    # the user names the classes and moves the outline colour to void
    void = next(c for c in draft["classes"] if c["color"] == [224, 224, 192])
    draft["classes"].remove(void)
    draft["void"] = {"name": "outline", "color": void["color"]}
    Path("draft.json").write_text(json.dumps(draft))
    status, out, err = prepare(capsys, "--images", "mine/images", "--labels", "mine/masks",
                               "--palette", "draft.json", "--out", "prepared")
    assert status == 0, err
    info = json.loads(Path("prepared/dataset.json").read_text())
    assert info["num_classes"] == 4 and info["void"]["name"] == "outline"
    assert "draft.json exists" in prepare(capsys, "--images", "mine/images", "--labels",
                                          "mine/masks", "--write-palette", "draft.json")[2]


def test_grey_masks_with_a_palette_are_colours(tmp_path, capsys, monkeypatch):
    """Binary masks stored as 0/255 one-channel PNGs, with a palette of black and white."""
    monkeypatch.chdir(tmp_path)
    label = np.zeros((12, 18), np.uint8)
    label[3:9, 4:10] = 255
    index_dataset(tmp_path / "d", [label] * 10)
    Path("palette.json").write_text(json.dumps({"classes": [
        {"name": "sky", "color": [0, 0, 0]}, {"name": "cat", "color": [255, 255, 255]}]}))
    status, out, err = prepare(capsys, "--images", "d/images", "--labels", "d/labels",
                               "--palette", "palette.json", "--out", "p")
    assert status == 0, err
    np.testing.assert_array_equal(cv2.imread("p/index_labels/0.png", cv2.IMREAD_UNCHANGED),
                                  label // 255)
    info = json.loads(Path("p/dataset.json").read_text())
    assert info["label_type"] == "colour" and info["ignore_label"] is None


def test_palette_files_are_checked():
    from segnet_caffe.datasets import class_map_from_palette

    good = {"classes": [{"name": "a", "color": [1, 2, 3]}, {"name": "b", "colour": [4, 5, 6]}],
            "void": {"name": "v", "color": [0, 0, 0]}}
    classes = class_map_from_palette(good, "p.json")
    assert classes.names == ("a", "b", "v") and classes.ignore_label == 2
    assert classes.num_classes == 2 and classes.to_palette()["void"]["color"] == [0, 0, 0]
    for bad, message in [
        ({"names": ["a"]}, "not a palette"),
        ({"classes": [{"name": "a", "color": [1, 2]}]}, r'classes\[0\] \("a"\) needs a "color"'),
        ({"classes": [{"name": "a", "color": [1, 2, 300]}]}, "three integers 0..255"),
        ({"classes": [{"color": [1, 2, 3]}]}, 'needs a "name"'),
        ({"classes": [{"name": "a", "color": [1, 2, 3]}, {"name": "a", "color": [3, 2, 1]}]},
         r'the name "a" is given twice, for classes\[0\] and classes\[1\]'),
        ({**good, "void": {"name": "v", "color": [4, 5, 6]}},
         r"the colour \[4, 5, 6\] is given twice, for classes\[1\] and void"),
    ]:
        with pytest.raises(ValueError, match=message):
            class_map_from_palette(bad, "p.json")


# ----- index labels ------------------------------------------------------------------------------
INDEX = np.array([[0, 1, 2], [2, 255, 1]], np.uint8)


@pytest.mark.parametrize("channels, extension", [(1, ".png"), (3, ".bmp"), (1, ".tif")])
def test_index_labels_with_a_void_value(tmp_path, capsys, monkeypatch, channels, extension):
    monkeypatch.chdir(tmp_path)
    index_dataset(tmp_path / "d", [INDEX] * 10, channels, extension)
    status, _, err = prepare(capsys, "--images", "d/images", "--labels", "d/labels", "--out", "p")
    assert status == 1 and "pass --void 255" in err
    status, out, err = prepare(capsys, "--images", "d/images", "--labels", "d/labels",
                               "--out", "p", "--void", "255")
    assert status == 0, err
    converted = cv2.imread("p/index_labels/0.png", cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(converted, [[0, 1, 2], [2, 3, 1]])
    info = json.loads(Path("p/dataset.json").read_text())
    assert info["num_classes"] == 3 and info["ignore_label"] == 3
    assert info["label_type"] == "index" and info["void_value"] == 255
    assert [c["name"] for c in info["classes"]] == ["class 0", "class 1", "class 2"]


def test_a_void_value_below_the_classes_moves_them_down(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    index_dataset(tmp_path / "d", [[[0, 1, 2, 3]]] * 10)
    assert prepare(capsys, "--images", "d/images", "--labels", "d/labels", "--out", "p",
                   "--void", "0")[0] == 0
    np.testing.assert_array_equal(cv2.imread("p/index_labels/0.png", cv2.IMREAD_UNCHANGED),
                                  [[3, 0, 1, 2]])
    assert json.loads(Path("p/dataset.json").read_text())["num_classes"] == 3


def test_index_labels_take_names_from_a_palette_and_classes_absent_by_request(
        tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    index_dataset(tmp_path / "d", [[[0, 2, 2]]] * 10)
    status, _, err = prepare(capsys, "--images", "d/images", "--labels", "d/labels", "--out", "p")
    assert status == 1 and "of which 1 (1) never occur" in err
    assert prepare(capsys, "--images", "d/images", "--labels", "d/labels", "--out", "p",
                   "--num-classes", "4")[0] == 0
    assert json.loads(Path("p/dataset.json").read_text())["num_classes"] == 4
    Path("palette.json").write_text(json.dumps({"classes": [
        {"name": n, "color": [k, 100, 200]} for k, n in enumerate(["road", "car", "tree"])]}))
    assert prepare(capsys, "--images", "d/images", "--labels", "d/labels", "--out", "q",
                   "--palette", "palette.json")[0] == 0
    info = json.loads(Path("q/dataset.json").read_text())
    assert [c["name"] for c in info["classes"]] == ["road", "car", "tree"]
    assert info["label_type"] == "index" and info["class_pixels"] == [10, 0, 20]


# ----- the generator -----------------------------------------------------------------------------
def test_generator_writes_the_models_files_for_the_dataset(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_shapes("mine", count=10, height=200, width=300)
    assert prepare(capsys, "--images", "mine/images", "--labels", "mine/masks", "--palette",
                   "mine/palette.json", "--out", "prepared")[0] == 0
    weights = json.loads(Path("prepared/class_weights.json").read_text())["class_weights"]
    status, out, err = run_script(generate_prototxts, capsys, "--dataset", "prepared", "--model",
                                  "segnet_basic", "--out", "run/prototxt", "--snapshots",
                                  "run/snapshots", "--batch", "2", "--max-iter", "30")
    assert status == 0, err
    assert sorted(p.name for p in Path("run/prototxt").iterdir()) == [
        "segnet_basic_inference.prototxt", "segnet_basic_solver.prototxt",
        "segnet_basic_train.prototxt"]
    assert Path("run/snapshots").is_dir()
    assert "4 classes (void label 4 ignored), input 200x300, batch 2" in out
    train = io.read_net_prototxt("run/prototxt/segnet_basic_train.prototxt")
    data = train.layer[0].dense_image_data_param
    assert (data.source, data.root_folder, data.batch_size, data.shuffle) == \
        ("prepared/train.txt", "prepared/", 2, True)
    assert not data.new_height                              # the images' own size
    loss = next(layer for layer in train.layer if layer.type == "SoftmaxWithLoss").loss_param
    assert loss.ignore_label == 4 and list(loss.class_weighting) == pytest.approx(weights)
    ups = {layer.name: (layer.upsample_param.upsample_h, layer.upsample_param.upsample_w)
           for layer in train.layer if layer.type == "Upsample"}
    # 200x300 -> 100x150 -> 50x75 -> 25x38 -> 13x19: the odd sides are given back exactly
    assert ups == {"upsample4": (25, 38), "upsample3": (50, 75), "upsample2": (0, 0),
                   "upsample1": (0, 0)}
    solver = io.read_solver_prototxt("run/prototxt/segnet_basic_solver.prototxt")
    assert (solver.max_iter, solver.snapshot_prefix, solver.net) == \
        (30, "run/snapshots/segnet_basic", "run/prototxt/segnet_basic_train.prototxt")
    inference = io.read_net_prototxt("run/prototxt/segnet_basic_inference.prototxt")
    assert inference.layer[0].dense_image_data_param.source == "prepared/test.txt"
    # the train net reads the dataset and runs at 200x300
    net = caffe.Net("run/prototxt/segnet_basic_train.prototxt", caffe.TRAIN)
    net.forward()
    assert net.blobs["conv_classifier"].data.shape == (2, 4, 200, 300)
    assert np.isfinite(net.blobs["loss"].data).all()
    # --val-interval: the solver tests on the val list
    assert run_script(generate_prototxts, capsys, "--dataset", "prepared", "--model",
                      "segnet_squares", "--val-interval", "10")[0] == 0
    solver = io.read_solver_prototxt("prepared/prototxt/segnet_squares_solver.prototxt")
    assert list(solver.test_net) == ["prepared/prototxt/segnet_squares_val.prototxt"]
    assert (list(solver.test_iter), solver.test_interval) == ([1], 10)


@pytest.mark.parametrize("model", DATASET_MODELS)
def test_every_dataset_model_builds_at_the_datasets_size(tmp_path, capsys, monkeypatch, model):
    monkeypatch.chdir(tmp_path)
    index_dataset(tmp_path / "d", [np.tile([[0, 1, 2]], (101, 51))] * 10)  # 101x153
    assert prepare(capsys, "--images", "d/images", "--labels", "d/labels", "--out", "p")[0] == 0
    assert run_script(generate_prototxts, capsys, "--dataset", "p", "--model", model)[0] == 0
    net = caffe.Net(f"p/prototxt/{model}_inference.prototxt", caffe.TEST)
    assert net.blobs["prob"].shape == (1, 3, 101, 153)


@pytest.mark.parametrize("size", [(200, 300), (201, 299), (97, 131), (360, 480), (33, 17)])
@pytest.mark.parametrize("builder, levels", [(segnet_basic, 4), (segnet_vgg16, 5)])
def test_upsample_sizes_give_back_every_pooled_size(size, builder, levels):
    """Each Upsample restores its pooling's input size (Caffe's ceil pooling of odd sides)."""
    net = builder(DataSpec("x", height=size[0], width=size[1]), LossSpec(3), "inference")
    data = net.layer[0]
    data.type = "Input"
    data.ClearField("dense_image_data_param")
    data.input_param.shape.add(dim=[1, 3, *size])
    data.input_param.shape.add(dim=[1, 1, *size])
    built = caffe.Net(net, caffe.TEST)
    assert built.blobs["prob"].shape == (1, 3, *size)
    for layer in net.layer:
        if layer.type == "Upsample":
            pooled = built.blobs[layer.bottom[1]].shape[2:]
            unpooled = built.blobs[layer.top[0]].shape[2:]
            before = built.blobs[next(p.bottom[0] for p in net.layer
                                      if p.type == "Pooling" and layer.bottom[1] in p.top)]
            assert unpooled == before.shape[2:] and pooled == tuple(-(-s // 2) for s in unpooled)


def test_generator_resizes_images_of_several_sizes(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    index_dataset(tmp_path / "d", [np.tile([[0, 1]], (20, 15))] * 5
                  + [np.tile([[0, 1]], (16, 12))] * 5)
    status, out, err = prepare(capsys, "--images", "d/images", "--labels", "d/labels",
                               "--out", "p")
    assert status == 0, err
    assert "images: 2 sizes (20x30: 5, 16x24: 5)" in out
    info = json.loads(Path("p/dataset.json").read_text())
    assert info["image_size"] is None and info["image_sizes"] == {"20x30": 5, "16x24": 5}
    status, _, err = run_script(generate_prototxts, capsys, "--dataset", "p", "--model",
                                "segnet_squares")
    assert status == 1 and "pass --size HxW" in err
    assert run_script(generate_prototxts, capsys, "--dataset", "p", "--model", "segnet_squares",
                      "--size", "19x27", "--batch", "8")[0] == 0
    train = io.read_net_prototxt("p/prototxt/segnet_squares_train.prototxt")
    param = train.layer[0].dense_image_data_param
    assert (param.new_height, param.new_width) == (19, 27)
    net = caffe.Net("p/prototxt/segnet_squares_train.prototxt", caffe.TRAIN)
    net.forward()
    assert net.blobs["label"].data.shape == (8, 1, 19, 27)
    assert set(np.unique(net.blobs["label"].data)) <= {0.0, 1.0}   # nearest: still classes


# ----- bad input: docs/errors.md's table, line for line ------------------------------------------
def documented_errors():
    """{case: the line} of docs/errors.md's "A dataset of one's own" table."""
    text = (ROOT / "docs" / "errors.md").read_text()
    section = text.split("### A dataset of one's own", 1)[1].split("\n#", 1)[0]
    return {m[1].strip(): m[2] for m in re.finditer(r"^\| (.+?) \| `(.+)` \|$", section, re.M)}


def _write(path, data):
    Path(path).write_bytes(data)


def _recolour(path, colour, rows=1):
    mask = cv2.imread(str(path))
    mask[:rows, :5] = colour[::-1]
    cv2.imwrite(str(path), mask)


def _index_with_value(path, value):
    label = np.zeros((40, 60), np.uint8)
    label[:2, :6] = value
    cv2.imwrite(str(path), label)


PREP = ["prepare_dataset.py", "--images", "mine/images", "--labels", "mine/masks",
        "--palette", "mine/palette.json", "--out", "prepared"]
INDEX_PREP = ["prepare_dataset.py", "--images", "mine/images", "--labels", "ix",
              "--palette", "mine/palette.json", "--void", "255", "--out", "prepared"]


def _index_labels():
    Path("ix").mkdir()
    for n in range(10):
        _index_with_value(f"ix/shape_{n}.png", 0)


# case: (how the valid dataset is broken, the command)
ERROR_CASES = {
    "a folder that does not exist": (
        lambda: None, ["prepare_dataset.py", "--images", "photos", "--labels", "mine/masks",
                       "--out", "prepared"]),
    "an empty folder": (
        lambda: Path("empty").mkdir(), ["prepare_dataset.py", "--images", "empty", "--labels",
                                        "mine/masks", "--out", "prepared"]),
    "no pairs": (
        lambda: [p.rename(p.with_name(p.stem + "_mask.png"))
                 for p in sorted(Path("mine/masks").iterdir())], PREP),
    "two files of one stem": (
        lambda: cv2.imwrite("mine/images/shape_1.png", np.zeros((40, 60, 3), np.uint8)), PREP),
    "JPEG labels": (
        lambda: [p.rename(p.with_suffix(".jpg")) for p in sorted(Path("mine/masks").iterdir())],
        PREP),
    "a label of another size than its image": (
        lambda: cv2.imwrite("mine/masks/shape_3.png", np.zeros((20, 30, 3), np.uint8)), PREP),
    "a colour not in the palette": (
        lambda: _recolour("mine/masks/shape_2.png", (1, 2, 3)), PREP),
    "colour masks without a palette": (
        lambda: None, PREP[:5] + ["--out", "prepared"]),
    "an index value that is no class and not void": (
        lambda: (_index_labels(), _index_with_value("ix/shape_4.png", 7)), INDEX_PREP),
    "index values with gaps": (
        lambda: (_index_labels(), _index_with_value("ix/shape_4.png", 255)),
        INDEX_PREP[:5] + ["--out", "prepared"]),
    "a palette with a colour twice": (
        lambda: Path("mine/palette.json").write_text(json.dumps(
            {"classes": [{"name": "background", "color": [0, 0, 0]}],
             "void": {"name": "void", "color": [0, 0, 0]}})), PREP),
    "a palette with a name twice": (
        lambda: Path("mine/palette.json").write_text(json.dumps(
            {"classes": [{"name": "disc", "color": [0, 0, 0]},
                         {"name": "disc", "color": [1, 1, 1]}]})), PREP),
    "a palette that is not JSON": (
        lambda: Path("mine/palette.json").write_text("classes: [road]"), PREP),
    "a split that leaves a split empty": (
        lambda: [p.unlink() for p in sorted(Path("mine/images").iterdir())[4:]],
        PREP + ["--split", "0.8,0.1,0.1"]),
    "a split that is not three shares": (lambda: None, PREP + ["--split", "0.8,0.2"]),
    "a corrupt image": (
        lambda: _write("mine/images/shape_1.jpg", b"\xff\xd8 not a JPEG \xff\xd9"), PREP),
    "a truncated image": (
        lambda: _write("mine/images/shape_5.jpg",
                       Path("mine/images/shape_5.jpg").read_bytes()[:600]), PREP),
    "a corrupt label": (lambda: _write("mine/masks/shape_6.png", b"junk"), PREP),
    "--out inside the user's folder": (
        lambda: None, PREP[:-1] + ["mine/images/prepared"]),
    "--out holding files of another origin": (
        lambda: (Path("prepared").mkdir(), Path("prepared/train.txt").write_text("mine")), PREP),
    "a list naming no pair": (
        lambda: [Path(f"{s}.lst").write_text("shape_0\n" if s == "train" else f"shape_{s}\n")
                 for s in ("train", "val", "test")],
        PREP + ["--train-list", "train.lst", "--val-list", "val.lst", "--test-list", "test.lst"]),
    "generator: a folder that is no prepared dataset": (
        lambda: None, ["generate_prototxts.py", "--dataset", "mine", "--model", "segnet_basic"]),
}


def test_every_documented_error_has_a_case():
    assert sorted(documented_errors()) == sorted(ERROR_CASES)


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_bad_input_gets_the_documented_line(mine, capsys, case):
    expected = documented_errors()[case]
    breaking, command = ERROR_CASES[case]
    breaking()
    before = files_state(mine)
    script = prepare_dataset if command[0] == "prepare_dataset.py" else generate_prototxts
    status, out, err = run_script(script, capsys, *command[1:])
    assert status == 1, out + err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    pattern = ".*".join(re.escape(part) for part in expected.split("..."))
    assert re.fullmatch(pattern, err.strip()), f"\n{err.strip()}\n{expected}"
    assert files_state(mine) == before                      # nothing of the user's touched
    if case != "--out holding files of another origin":
        assert not Path("prepared").exists() and not Path("mine/prototxt").exists()
    else:
        assert Path("prepared/train.txt").read_text() == "mine"


# ----- end to end --------------------------------------------------------------------------------
def test_three_commands_end_to_end_with_the_datasets_names(tmp_path):
    """prepare, generate, train 2 iterations, BN statistics, test (scripts/demo_dataset.sh) on
    shapes of 50x74 (pooled 25x37, 13x19, 7x10, 4x5: odd sides at three levels)."""
    import os
    import subprocess

    make_shapes(tmp_path / "mine", count=10, height=50, width=74, seed=1)
    run = tmp_path / "run"
    done = subprocess.run(
        ["bash", "scripts/demo_dataset.sh", str(tmp_path / "prepared"), "segnet_basic",
         "--run", str(run), "--iterations", "2", "--batch", "2",
         "--images", str(tmp_path / "mine/images"), "--labels", str(tmp_path / "mine/masks"),
         "--palette", str(tmp_path / "mine/palette.json")],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert (run / "snapshots" / "segnet_basic_iter_2.caffemodel").is_file()
    metrics = json.loads((run / "test" / "metrics.json").read_text())
    assert metrics["class_names"] == PALETTE_NAMES
    assert metrics["class_colours"] == SHAPES.colours[:4].tolist()
    assert metrics["ignore_label"] == 4 and metrics["images"] == 1
    assert 0 <= metrics["mean_iou"] <= 1
    for picture in ("test/sample_0.png", "test/confusion_matrix.png", "loss.png", "net.png"):
        assert cv2.imread(str(run / picture)) is not None, picture
    assert f"Pictures: {run}/test/sample_*.png" in done.stdout


@pytest.mark.slow
def test_the_readme_shapes_run_reaches_its_mean_iou(tmp_path):
    """The README's measured run: 150 shapes of 200x300 (scripts/make_shapes.py), SegNet-Basic
    trained 100 iterations of batch 4 through the three commands (demo_dataset.sh): mean IoU
    0.901-0.903 on the 15 test images measured; 0.85 asked here (4 minutes on 2 idle cores of
    the Zen 5 machine, 12 under a load of 4-6)."""
    import os
    import subprocess

    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run([sys.executable, "scripts/make_shapes.py", "--out", str(tmp_path / "raw")],
                   cwd=ROOT, check=True, capture_output=True)
    run = tmp_path / "run"
    done = subprocess.run(
        ["bash", "scripts/demo_dataset.sh", str(tmp_path / "prepared"), "segnet_basic",
         "--run", str(run), "--iterations", "100", "--images", str(tmp_path / "raw/images"),
         "--labels", str(tmp_path / "raw/masks"), "--palette", str(tmp_path / "raw/palette.json")],
        cwd=ROOT, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    metrics = json.loads((run / "test" / "metrics.json").read_text())
    assert metrics["images"] == 15 and metrics["class_names"] == PALETTE_NAMES
    assert metrics["mean_iou"] >= 0.85, metrics["per_class_iou"]
