"""Confusion-matrix scores against hand-computed values; SegNet's median-frequency weights."""
import json

import cv2
import numpy as np
import pytest
import torch

from segnet_caffe.metrics import ConfusionMatrix, median_frequency_weights

# 3 classes, void 255. Ground truth rows / prediction columns:
#   gt 0: predicted 0, 1, 0     -> [2, 1, 0]
#   gt 1: predicted 1, 2        -> [0, 1, 1]
#   gt 2: predicted 2, 0        -> [1, 0, 1]
#   gt 255 (void): skipped
LABEL = np.array([0, 0, 0, 1, 1, 2, 255, 2])
PREDICTION = np.array([0, 1, 0, 1, 2, 2, 0, 0])
MATRIX = [[2, 1, 0], [0, 1, 1], [1, 0, 1]]


def test_scores_match_a_hand_computed_matrix():
    cm = ConfusionMatrix(3, ignore_label=255).update(PREDICTION, LABEL)
    assert cm.matrix.tolist() == MATRIX
    assert cm.pixels == 7
    assert cm.global_accuracy == pytest.approx(4 / 7)
    np.testing.assert_allclose(cm.per_class_accuracy, [2 / 3, 1 / 2, 1 / 2])
    assert cm.class_average_accuracy == pytest.approx(5 / 9)
    # IoU: 2 / (3 + 3 - 2), 1 / (2 + 2 - 1), 1 / (2 + 2 - 1)
    np.testing.assert_allclose(cm.per_class_iou, [1 / 2, 1 / 3, 1 / 3])
    assert cm.mean_iou == pytest.approx(7 / 18)


def test_torch_and_numpy_agree_and_batches_accumulate():
    a = ConfusionMatrix(3, ignore_label=255)
    a.update(PREDICTION[:4], LABEL[:4]).update(PREDICTION[4:], LABEL[4:])
    b = ConfusionMatrix(3, ignore_label=255)
    b.update(torch.from_numpy(PREDICTION).reshape(2, 4),
             torch.from_numpy(LABEL).float().reshape(2, 4), images=2)  # labels as a blob holds them
    assert a.matrix.tolist() == b.matrix.tolist() == MATRIX
    assert a.images == 2 and b.images == 2
    a.merge(b)
    assert a.matrix.tolist() == (2 * np.array(MATRIX)).tolist() and a.images == 4


def test_classes_absent_from_the_ground_truth_are_left_out_of_the_averages():
    # class 2 is predicted once but never in the ground truth
    cm = ConfusionMatrix(3).update(np.array([0, 0, 1, 2]), np.array([0, 0, 1, 1]))
    assert np.isnan(cm.per_class_accuracy[2]) and np.isnan(cm.per_class_iou[2])
    assert cm.class_average_accuracy == pytest.approx((1 + 1 / 2) / 2)
    assert cm.mean_iou == pytest.approx((1 + 1 / 2) / 2)
    # SegNet's compute_test_results.m: absent classes count 0 and the sum is divided by K
    assert cm.class_average_accuracy_with("zero") == pytest.approx((1 + 1 / 2) / 3)
    assert cm.mean_iou_with("zero") == pytest.approx((1 + 1 / 2) / 3)
    d = cm.to_dict()
    assert d["per_class_iou"][2] is None
    json.dumps(d, allow_nan=False)


def test_to_dict_and_table():
    cm = ConfusionMatrix(3, 255, ["road", "car", "sky"]).update(PREDICTION, LABEL)
    d = cm.to_dict()
    for key in ("global_accuracy", "class_average_accuracy", "mean_iou", "per_class_iou",
                "per_class_accuracy", "confusion_matrix", "class_names", "images"):
        assert key in d
    assert d["confusion_matrix"] == MATRIX and d["class_names"] == ["road", "car", "sky"]
    table = cm.format_table()
    assert "road" in table and "0.5714" in table and "0.3889" in table


def test_out_of_range_values_are_errors():
    cm = ConfusionMatrix(2, ignore_label=11)
    with pytest.raises(ValueError, match="label values span 0..5"):
        cm.update(np.array([0, 1]), np.array([0, 5]))
    with pytest.raises(ValueError, match="prediction values span 0..2"):
        cm.update(torch.tensor([0, 2]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros(3), np.zeros(4))
    cm.update(np.array([0, 1]), np.array([11, 11]))  # all void: counts nothing
    assert cm.pixels == 0 and np.isnan(cm.global_accuracy)


# Three 2x2 label images (void 11): freq(0) = 5 / 8 (images a, b), freq(1) = 3 / 8 (images a, c,
# c's void pixels count in its total), freq(2) = 1 / 4 (image b); median 3 / 8.
LABELS = [np.array([[0, 0], [1, 1]]), np.array([[0, 0], [0, 2]]), np.array([[1, 11], [11, 11]])]


def test_median_frequency_weights_on_arrays():
    weights, freq = median_frequency_weights(LABELS, 3, ignore_label=11, return_frequencies=True)
    np.testing.assert_allclose(freq, [5 / 8, 3 / 8, 1 / 4], rtol=1e-15)
    np.testing.assert_allclose(weights, [0.6, 1.0, 1.5], rtol=1e-15)


def test_median_frequency_weights_on_files_and_absent_classes(tmp_path):
    paths = []
    for i, label in enumerate(LABELS):
        path = tmp_path / f"{i}.png"
        cv2.imwrite(str(path), label.astype(np.uint8))
        paths.append(path)
    weights = median_frequency_weights(paths, 4, ignore_label=11)
    np.testing.assert_allclose(weights, [0.6, 1.0, 1.5, 0.0], rtol=1e-15)  # class 3 never occurs
    # without an ignore label, 11 is out of range
    with pytest.raises(ValueError, match=r"\[11\]"):
        median_frequency_weights(LABELS, 3)
