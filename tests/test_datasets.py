"""The squares synthesizer, class maps and colouring, and CamVid list/weight preparation."""
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from segnet_caffe import datasets
from segnet_caffe.datasets import (CAMVID, SQUARES, ClassMap, colorize, load_class_map,
                                   make_squares, overlay, prepare_camvid)

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))


def read_rgb(path):
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]


def square_box(label):
    ys, xs = np.nonzero(label)
    return ys.min(), ys.max() + 1, xs.min(), xs.max() + 1


# ----- squares -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def squares(tmp_path_factory):
    out = tmp_path_factory.mktemp("squares")
    make_squares(out, count=6, size=128, seed=7)
    return out


def test_squares_layout_and_list_files(squares):
    for split in datasets.SPLITS:
        lines = (squares / f"{split}.txt").read_text().splitlines()
        assert lines == [f"{split}/{n}.png {split}annot/ann_{n}.png" for n in range(6)]
        for line in lines:
            for name in line.split():
                assert (squares / name).is_file()


def test_each_image_is_one_flat_square_on_a_flat_background(squares):
    for split in datasets.SPLITS:
        for n in range(6):
            image = read_rgb(squares / split / f"{n}.png")
            label_rgb = cv2.imread(str(squares / f"{split}annot" / f"ann_{n}.png"),
                                   cv2.IMREAD_UNCHANGED)
            assert image.shape == (128, 128, 3) and label_rgb.shape == (128, 128, 3)
            # RGB annotation of (0,0,0) / (1,1,1), which Caffe reads as grayscale 0 / 1
            assert set(np.unique(label_rgb)) <= {0, 1}
            assert (label_rgb == label_rgb[:, :, :1]).all()
            label = cv2.imread(str(squares / f"{split}annot" / f"ann_{n}.png"), cv2.IMREAD_GRAYSCALE)
            np.testing.assert_array_equal(label, label_rgb[:, :, 0])
            top, bottom, left, right = square_box(label)
            side = bottom - top
            assert side == right - left, "the shape is a square"
            assert 90 <= side <= 100
            assert top >= 0 and left >= 0 and bottom <= 128 and right <= 128
            inside = np.zeros_like(label, bool)
            inside[top:bottom, left:right] = True
            np.testing.assert_array_equal(label == 1, inside)  # labels are exactly the square
            square_colours = np.unique(image[inside], axis=0)
            background_colours = np.unique(image[~inside], axis=0)
            assert len(square_colours) == 1 and len(background_colours) == 1  # flat colours
            distance = np.linalg.norm(square_colours[0].astype(float) - background_colours[0])
            assert distance >= datasets.MIN_COLOUR_DISTANCE


def test_sides_cover_the_range_and_positions_vary():
    rng = np.random.default_rng(0)
    samples = [datasets.make_square(rng, 101) for _ in range(400)]
    assert {s.side for s in samples} == set(range(90, 101))
    assert len({(s.top, s.left) for s in samples}) > 20
    assert all(s.top + s.side <= 101 and s.left + s.side <= 101 for s in samples)


def test_same_seed_same_files_other_seed_other_files(squares, tmp_path):
    make_squares(tmp_path / "again", count=6, size=128, seed=7)
    make_squares(tmp_path / "other", count=6, size=128, seed=8)
    for split in datasets.SPLITS:
        for n in range(6):
            for name in (f"{split}/{n}.png", f"{split}annot/ann_{n}.png"):
                assert (squares / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    differ = [not np.array_equal(read_rgb(squares / f"train/{n}.png"),
                                 read_rgb(tmp_path / "other" / f"train/{n}.png")) for n in range(6)]
    assert all(differ)


def test_splits_are_distinct(squares):
    images = {split: [read_rgb(squares / split / f"{n}.png") for n in range(6)]
              for split in datasets.SPLITS}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        for x in images[a]:
            assert not any(np.array_equal(x, y) for y in images[b])


def test_size_must_exceed_the_largest_square(tmp_path):
    with pytest.raises(ValueError, match="greater than 100"):
        make_squares(tmp_path, count=1, size=100)
    assert not any(tmp_path.iterdir())


def test_make_squares_script(tmp_path, capsys):
    import make_squares as script

    assert script.main(["--out", str(tmp_path / "sq"), "--count", "2", "--size", "120",
                        "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "train.txt" in printed and "root_folder" in printed
    assert len((tmp_path / "sq" / "test.txt").read_text().splitlines()) == 2
    with pytest.raises(SystemExit):
        script.main(["--out", str(tmp_path / "bad"), "--size", "64"])
    assert "greater than 100" in capsys.readouterr().err


# ----- class maps and colours --------------------------------------------------------------------
def test_camvid_class_map_is_the_tutorials():
    assert CAMVID.names[:3] == ("Sky", "Building", "Pole") and CAMVID.names[11] == "Unlabelled"
    assert CAMVID.ignore_label == 11
    assert CAMVID.colours[4].tolist() == [60, 40, 222]      # Pavement
    assert CAMVID.colours[10].tolist() == [0, 128, 192]     # Bicyclist
    assert CAMVID.colours[11].tolist() == [0, 0, 0]         # Unlabelled
    assert len(SQUARES.names) == 2 and SQUARES.ignore_label is None


def test_colorize_and_overlay():
    label = np.array([[0, 1], [11, 200]])
    rgb = colorize(label, CAMVID)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[0, 0].tolist() == [128, 128, 128] and rgb[0, 1].tolist() == [128, 0, 0]
    assert rgb[1, 0].tolist() == [0, 0, 0] and rgb[1, 1].tolist() == [0, 0, 0]  # out of range
    assert colorize(np.array([1.0, 0.0]), SQUARES).tolist() == [[255, 200, 0], [0, 0, 0]]
    image = np.full((2, 2, 3), 100, np.uint8)
    blended = overlay(image, np.zeros((2, 2), int), SQUARES, alpha=0.5)
    assert (blended == 50).all()


def test_load_class_map(tmp_path):
    assert load_class_map("camvid") is CAMVID and load_class_map("squares") is SQUARES
    path = tmp_path / "classes.json"
    path.write_text(json.dumps({"names": ["a", "b", "c"], "colours": [[1, 2, 3], [4, 5, 6],
                                                                      [7, 8, 9]],
                                "ignore_label": 255}))
    classes = load_class_map(str(path))
    assert classes.names == ("a", "b", "c") and classes.ignore_label == 255
    assert classes.colours[2].tolist() == [7, 8, 9]
    with pytest.raises(ValueError, match="squares"):
        load_class_map("nonsense")
    path.write_text(json.dumps({"names": ["a"], "colours": [[1, 2, 3], [4, 5, 6]]}))
    with pytest.raises(ValueError, match="1 class names but 2 colours"):
        load_class_map(str(path))
    assert datasets.default_class_map(2) is SQUARES and datasets.default_class_map(11) is CAMVID
    assert len(datasets.default_class_map(5).names) == 5
    assert isinstance(datasets.default_class_map(5), ClassMap)


# ----- CamVid preparation ------------------------------------------------------------------------
# Three 2x2 training labels: freq(0) = 5/8, freq(1) = 3/8 (image C's void pixels count in its
# total), freq(2) = 1/4; median 3/8 -> weights 0.6, 1, 1.5; classes 3..10 never occur -> 0.
TRAIN_LABELS = {"a.png": [[0, 0], [1, 1]], "b.png": [[0, 0], [0, 2]], "c.png": [[1, 11], [11, 11]]}
EXPECTED_WEIGHTS = [0.6, 1.0, 1.5] + [0.0] * 8


def make_camvid(root):
    for split, labels in (("train", TRAIN_LABELS), ("val", {"v.png": [[3, 4], [11, 10]]}),
                          ("test", {"t.png": [[5, 6], [7, 8]]})):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for name, label in labels.items():
            cv2.imwrite(str(root / split / name), np.full((2, 2, 3), 50, np.uint8))
            cv2.imwrite(str(root / f"{split}annot" / name), np.array(label, np.uint8))
    return root


def test_prepare_camvid_writes_lists_and_exact_weights(tmp_path, capsys):
    import prepare_camvid as script

    root = make_camvid(tmp_path / "CamVid")
    assert script.main([str(root)]) == 0
    printed = capsys.readouterr().out
    assert (root / "train.txt").read_text() == ("train/a.png trainannot/a.png\n"
                                                "train/b.png trainannot/b.png\n"
                                                "train/c.png trainannot/c.png\n")
    assert (root / "test.txt").read_text() == "test/t.png testannot/t.png\n"
    result = json.loads((root / "class_weights.json").read_text())
    assert result["class_weights"] == pytest.approx(EXPECTED_WEIGHTS, rel=1e-12, abs=0)
    assert result["frequencies"][:3] == pytest.approx([5 / 8, 3 / 8, 1 / 4], rel=1e-12)
    assert result["class_names"][0] == "Sky" and len(result["class_names"]) == 11
    assert result["ignore_label"] == 11 and result["images"] == 3
    assert "1.5000" in printed and "written" in printed
    # second run: the lists exist and are validated, not rewritten
    assert script.main([str(root)]) == 0
    assert "validated" in capsys.readouterr().out


def test_prepare_camvid_into_another_folder(tmp_path):
    root = make_camvid(tmp_path / "CamVid")
    result = prepare_camvid(root, tmp_path / "out", report=lambda line: None)
    assert (tmp_path / "out" / "val.txt").read_text() == "val/v.png valannot/v.png\n"
    assert not (root / "train.txt").exists()
    assert result["class_weights"] == pytest.approx(EXPECTED_WEIGHTS, rel=1e-12, abs=0)


def test_prepare_camvid_rejects_bad_lists_and_labels(tmp_path):
    root = make_camvid(tmp_path / "CamVid")
    (root / "train.txt").write_text("/SegNet/CamVid/train/a.png /SegNet/CamVid/trainannot/a.png\n")
    with pytest.raises(ValueError, match="--rewrite"):
        prepare_camvid(root, report=lambda line: None)
    prepare_camvid(root, rewrite=True, report=lambda line: None)
    assert (root / "train.txt").read_text().startswith("train/a.png trainannot/a.png")
    cv2.imwrite(str(root / "testannot" / "t.png"), np.full((2, 2), 12, np.uint8))
    with pytest.raises(ValueError, match=r"values \[12\]"):
        prepare_camvid(root, report=lambda line: None)
    (root / "testannot" / "t.png").unlink()
    with pytest.raises(ValueError, match="no label image"):
        prepare_camvid(root, rewrite=True, report=lambda line: None)


def test_prepare_camvid_script_reports_errors(tmp_path, capsys):
    import prepare_camvid as script

    assert script.main([str(tmp_path)]) == 1
    assert "SegNet tutorial layout" in capsys.readouterr().err
