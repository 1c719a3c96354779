"""Neuron, normalisation, softmax, loss and accuracy layers against independent numpy maths."""
import math

import numpy as np
import pytest
import torch

from segnet_caffe.errors import CaffeError
from segnet_caffe import engine_options
from layer_testing import check_layer_gradients, layer_from_text, net_from_text

FLT_MIN = np.finfo(np.float32).tiny


def rand(*shape, seed=0, low=-2.0, high=2.0):
    return np.random.RandomState(seed).uniform(low, high, shape).astype(np.float32)


def away_from_zero(*shape, seed=0):
    """Values in +-[0.2, 2]: elementwise kinks at 0 stay outside the finite-difference steps."""
    x = rand(*shape, seed=seed, low=0.2, high=2.0)
    return x * np.where(np.random.RandomState(seed + 1).rand(*shape) < 0.5, -1, 1).astype(np.float32)


def forward(layer, *bottoms):
    with torch.no_grad():
        return [t.numpy() for t in layer.forward([torch.from_numpy(np.asarray(b)) for b in bottoms])]


def gradients_ok(layer, *bottoms, **kwargs):
    return check_layer_gradients(layer, [torch.from_numpy(np.asarray(b)) for b in bottoms], **kwargs)


# ----- neurons ---------------------------------------------------------------------------------
NEURONS = [
    ('type: "ReLU"', lambda x: np.maximum(x, 0)),
    ('type: "ReLU" relu_param { negative_slope: 0.1 }', lambda x: np.where(x > 0, x, 0.1 * x)),
    ('type: "Sigmoid"', lambda x: 1 / (1 + np.exp(-x.astype(np.float64)))),
    ('type: "TanH"', lambda x: np.tanh(x.astype(np.float64))),
    ('type: "AbsVal"', np.abs),
    ('type: "ELU" elu_param { alpha: 0.5 }', lambda x: np.where(x > 0, x, 0.5 * np.expm1(x))),
    ('type: "Power" power_param { power: 2 scale: 0.5 shift: 1 }', lambda x: (1 + 0.5 * x) ** 2),
    ('type: "Power" power_param { power: 3 scale: -2 }', lambda x: (-2.0 * x) ** 3),
    ('type: "Power"', lambda x: x),
    ('type: "Dropout" dropout_param { dropout_ratio: 0.3 }', lambda x: x),  # TEST: identity
]


@pytest.mark.parametrize("text,expected", NEURONS, ids=[n[0] for n in NEURONS])
def test_neuron_forward_and_gradient(text, expected):
    layer = layer_from_text(f'name: "n" {text} bottom: "x" top: "y"', [(2, 3, 4, 5)])
    x = away_from_zero(2, 3, 4, 5)
    (y,) = forward(layer, x)
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, expected(x), rtol=1e-5, atol=1e-6)
    assert gradients_ok(layer, x)


def test_relu_gradient_at_zero_takes_the_negative_slope():
    layer = layer_from_text('name: "r" type: "ReLU" relu_param { negative_slope: 0.25 } '
                            'bottom: "x" top: "y"', [(3,)])
    x = torch.zeros(3, requires_grad=True)
    (y,) = layer.forward([x])
    (dx,) = torch.autograd.grad(y, x, torch.ones(3))
    np.testing.assert_allclose(dx.numpy(), 0.25)


def test_power_with_zero_scale_is_constant_with_zero_gradient():
    layer = layer_from_text('name: "p" type: "Power" power_param { power: 2 scale: 0 shift: 3 } '
                            'bottom: "x" top: "y"', [(4,)])
    x = torch.tensor([1.0, -2.0, 0.0, 5.0], requires_grad=True)
    (y,) = layer.forward([x])
    np.testing.assert_allclose(y.detach().numpy(), 9.0)
    (dx,) = torch.autograd.grad(y, x, torch.ones(4))
    assert not dx.any()


def test_neuron_keeps_dtype():
    layer = layer_from_text('name: "s" type: "Sigmoid" bottom: "x" top: "y"', [(2, 3)])
    (y,) = layer.forward([torch.zeros(2, 3, dtype=torch.float64)])
    assert y.dtype == torch.float64


def test_prelu_per_channel_and_shared():
    layer = layer_from_text('name: "p" type: "PReLU" bottom: "x" top: "y"', [(2, 3, 4)])
    assert layer.blobs[0].shape == (3,)
    np.testing.assert_allclose(layer.blobs[0].data, 0.25)  # Caffe's default filler
    layer.blobs[0].data[...] = [0.1, -0.5, 2.0]
    x = away_from_zero(2, 3, 4)
    (y,) = forward(layer, x)
    slope = np.array([0.1, -0.5, 2.0], np.float32).reshape(1, 3, 1)
    np.testing.assert_allclose(y, np.where(x > 0, x, slope * x), rtol=1e-6)
    assert gradients_ok(layer, x)
    shared = layer_from_text('name: "p" type: "PReLU" prelu_param { channel_shared: true '
                             'filler { type: "constant" value: 0.5 } } bottom: "x" top: "y"',
                             [(2, 3, 4)])
    assert shared.blobs[0].shape == (1,)
    np.testing.assert_allclose(forward(shared, x)[0], np.where(x > 0, x, 0.5 * x), rtol=1e-6)
    assert gradients_ok(shared, x)
    with pytest.raises(CaffeError, match="at least 2 axes"):
        layer_from_text('name: "p" type: "PReLU" bottom: "x" top: "y"', [(5,)])


def test_dropout_train_is_inverted_dropout_with_consistent_backward():
    layer = layer_from_text('name: "d" type: "Dropout" dropout_param { dropout_ratio: 0.25 } '
                            'bottom: "x" top: "y"', [(100, 100)], phase="TRAIN")
    x = torch.from_numpy(rand(100, 100, low=0.5, high=1.5)).requires_grad_(True)
    (y,) = layer.forward([x])
    kept = y.detach().numpy() != 0
    assert abs(kept.mean() - 0.75) < 0.02
    np.testing.assert_allclose(y.detach().numpy()[kept], x.detach().numpy()[kept] / 0.75, rtol=1e-6)
    (dx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    np.testing.assert_allclose(dx.numpy(), kept / 0.75, rtol=1e-6)


def test_dropout_sample_weights_test_samples_in_test_phase():
    layer = layer_from_text('name: "d" type: "Dropout" dropout_param { dropout_ratio: 0.5 '
                            'sample_weights_test: true } bottom: "x" top: "y"', [(50, 50)])
    (y,) = forward(layer, np.ones((50, 50), np.float32))
    assert set(np.unique(y)) == {0.0, 2.0}
    (y2,) = forward(layer, np.ones((50, 50), np.float32))
    assert (y != y2).any()  # a fresh mask per forward: Monte-Carlo dropout


def test_dropout_ratio_is_checked():
    with pytest.raises(CaffeError, match="dropout_ratio"):
        layer_from_text('name: "d" type: "Dropout" dropout_param { dropout_ratio: 1 } '
                        'bottom: "x" top: "y"', [(2, 2)])


# ----- softmax ---------------------------------------------------------------------------------
def np_softmax(x, axis):
    e = np.exp(x.astype(np.float64) - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("axis", [1, -1, 0])
def test_softmax(axis):
    text = f'name: "s" type: "Softmax" softmax_param {{ axis: {axis} }} bottom: "x" top: "y"'
    layer = layer_from_text(text, [(2, 3, 4)])
    x = rand(2, 3, 4, seed=3)
    np.testing.assert_allclose(forward(layer, x)[0], np_softmax(x, axis), rtol=1e-5, atol=1e-7)
    assert gradients_ok(layer, x)


def test_softmax_axis_out_of_range():
    with pytest.raises(CaffeError, match="axis 3 is out of range"):
        layer_from_text('name: "s" type: "Softmax" softmax_param { axis: 3 } bottom: "x" top: "y"',
                        [(2, 3, 4)])


# ----- SoftmaxWithLoss -------------------------------------------------------------------------
def np_softmax_loss(x, labels, ignore=None, weights=None, normalizer="VALID"):
    """Loss and gradient of Caffe's SoftmaxWithLoss on (N, C, H, W) scores, written out per pixel."""
    n, c, h, w = x.shape
    p = np_softmax(x, 1)
    loss, count, grad = 0.0, 0, np.zeros_like(p)
    for i in range(n):
        for y in range(h):
            for z in range(w):
                label = int(labels.reshape(n, h, w)[i, y, z])
                if label == ignore:
                    continue
                weight = 1.0 if weights is None else weights[label]
                loss -= weight * math.log(max(p[i, label, y, z], FLT_MIN))
                grad[i, :, y, z] = p[i, :, y, z] * weight
                grad[i, label, y, z] -= weight
                count += 1
    divisor = {"VALID": count, "FULL": n * h * w, "BATCH_SIZE": n, "NONE": 1}[normalizer]
    divisor = max(divisor, 1)
    return loss / divisor, grad / divisor


def loss_layer(params="", shapes=((2, 4, 3, 5), (2, 1, 3, 5)), tops=1):
    top = ' top: "loss"' + (' top: "prob"' if tops == 2 else "")
    return layer_from_text(f'name: "loss" type: "SoftmaxWithLoss" bottom: "x" bottom: "label"'
                           f'{top} {params}', list(shapes))


def labels_for(seed, n=2, h=3, w=5, high=4):
    return np.random.RandomState(seed).randint(0, high, (n, 1, h, w)).astype(np.float32)


LOSS_CASES = [
    ("", {}),
    ("loss_param { ignore_label: 4 }", {"ignore": 4}),
    ("loss_param { ignore_label: 1 }", {"ignore": 1}),
    ("loss_param { normalize: false ignore_label: 4 }", {"ignore": 4, "normalizer": "BATCH_SIZE"}),
    ("loss_param { weight_by_label_freqs: true class_weighting: 0.2 class_weighting: 1 "
     "class_weighting: 2.5 class_weighting: 4 ignore_label: 4 }",
     {"ignore": 4, "weights": [0.2, 1, 2.5, 4]}),
    ("loss_param { class_weighting: 0.2 class_weighting: 1 class_weighting: 2.5 "
     "class_weighting: 4 }", {}),  # without weight_by_label_freqs the weights are ignored
    ("loss_param { normalization: FULL ignore_label: 4 }", {"ignore": 4, "normalizer": "FULL"}),
    ("loss_param { normalization: NONE }", {"normalizer": "NONE"}),
    ("loss_param { normalization: BATCH_SIZE normalize: true }", {"normalizer": "BATCH_SIZE"}),
]


@pytest.mark.parametrize("params,reference", LOSS_CASES, ids=[c[0] or "plain" for c in LOSS_CASES])
def test_softmax_loss_value_and_gradient(params, reference):
    layer = loss_layer(params)
    x = rand(2, 4, 3, 5, seed=4, low=-3, high=3)
    labels = labels_for(5, high=5 if reference.get("ignore") == 4 else 4)
    expected_loss, expected_grad = np_softmax_loss(x, labels, **reference)
    xt = torch.from_numpy(x).requires_grad_(True)
    (loss,) = layer.forward([xt, torch.from_numpy(labels)])
    assert loss.shape == ()
    np.testing.assert_allclose(loss.item(), expected_loss, rtol=1e-5)
    (dx,) = torch.autograd.grad(loss, xt, torch.tensor(2.0))  # loss weight 2
    np.testing.assert_allclose(dx.numpy(), 2 * expected_grad, rtol=1e-5, atol=1e-7)
    assert gradients_ok(layer, x, labels, check_bottoms=[0])


def test_softmax_loss_all_ignored_is_zero_not_nan():
    layer = loss_layer("loss_param { ignore_label: 4 }")
    (loss,) = forward(layer, rand(2, 4, 3, 5), np.full((2, 1, 3, 5), 4, np.float32))
    assert loss == 0


def test_softmax_loss_clamps_at_flt_min_but_keeps_caffe_gradient():
    layer = loss_layer(shapes=((1, 2), (1,)))
    x = torch.tensor([[200.0, 0.0]], requires_grad=True)
    (loss,) = layer.forward([x, torch.tensor([1.0])])
    np.testing.assert_allclose(loss.item(), -math.log(FLT_MIN), rtol=1e-6)
    (dx,) = torch.autograd.grad(loss, x)
    np.testing.assert_allclose(dx.numpy(), [[1.0, -1.0]], atol=1e-6)  # p - onehot


def test_softmax_loss_labels_in_any_shape_and_dtype_and_prob_top():
    layer = loss_layer(shapes=((2, 4, 3, 5), (2, 3, 5)), tops=2)
    x = rand(2, 4, 3, 5, seed=6)
    labels = labels_for(7).reshape(2, 3, 5)
    loss, prob = forward(layer, x, labels.astype(np.int64))
    np.testing.assert_allclose(loss, np_softmax_loss(x, labels)[0], rtol=1e-5)
    np.testing.assert_allclose(prob, np_softmax(x, 1), rtol=1e-5, atol=1e-7)
    assert layer.reshape([(2, 4, 3, 5), (2, 3, 5)]) == [(), (2, 4, 3, 5)]
    assert layer.allow_force_backward(0) and not layer.allow_force_backward(1)
    assert layer.default_loss_weight == 1.0


def test_softmax_loss_label_errors():
    layer = loss_layer("loss_param { ignore_label: 255 }")
    labels = labels_for(8)
    labels[0, 0, 0, 0], labels[1, 0, 2, 4] = 7, -1
    with pytest.raises(CaffeError, match=r'"loss".*\[-1, 7\].*0\.\.3.*255'):
        forward(layer, rand(2, 4, 3, 5), labels)
    labels[0, 0, 0, 0], labels[1, 0, 2, 4] = 255, 3  # the ignore label itself is fine
    forward(layer, rand(2, 4, 3, 5), labels)
    with pytest.raises(CaffeError, match="labels but the predictions need 30"):
        loss_layer().reshape([(2, 4, 3, 5), (2, 1, 3, 4)])
    with pytest.raises(CaffeError, match="one class_weighting per class: got 3 for 4"):
        loss_layer("loss_param { weight_by_label_freqs: true class_weighting: 1 "
                   "class_weighting: 1 class_weighting: 1 }")


# ----- Accuracy --------------------------------------------------------------------------------
def np_accuracy(x, labels, top_k=1, ignore=None):
    n, c = x.shape[:2]
    scores = x.reshape(n, c, -1)
    labels = labels.reshape(n, -1).astype(int)
    hits, counts = np.zeros(c), np.zeros(c)
    counts_unknown = 0
    for i in range(n):
        for j in range(scores.shape[2]):
            label = labels[i, j]
            if label == ignore:
                continue
            if not 0 <= label < c:  # a release build of the fork: a miss, in no class
                counts_unknown += 1
                continue
            order = sorted(range(c), key=lambda k: (scores[i, k, j], k), reverse=True)
            counts[label] += 1
            hits[label] += label in order[:top_k]
    per_class = np.where(counts > 0, hits / np.maximum(counts, 1), 1.0)
    return hits.sum() / (counts.sum() + counts_unknown), per_class


@pytest.mark.parametrize("params,reference", [
    ("", {}),
    ("accuracy_param { top_k: 2 }", {"top_k": 2}),
    ("accuracy_param { ignore_label: 3 }", {"ignore": 3}),
])
def test_accuracy(params, reference):
    layer = layer_from_text(f'name: "acc" type: "Accuracy" bottom: "x" bottom: "label" '
                            f'top: "a" top: "pc" {params}', [(2, 4, 3, 5), (2, 1, 3, 5)])
    x = rand(2, 4, 3, 5, seed=9)
    x[0, :, 0, 0] = 1.0  # a four-way tie: the fork's sort hands it to the highest class
    labels = labels_for(10, high=4)
    labels[0, 0, 0, 0] = 3
    labels[labels == 1] = 0  # class 1 absent: its per-class accuracy is 1
    accuracy, per_class = forward(layer, x, labels)
    expected, expected_per_class = np_accuracy(x, labels, **reference)
    assert per_class.shape == (4, 1, 1, 1)
    np.testing.assert_allclose(accuracy, expected, rtol=1e-6)
    np.testing.assert_allclose(per_class.ravel(), expected_per_class, rtol=1e-6)
    assert per_class.ravel()[1] == 1.0


def test_accuracy_counts_a_label_that_is_no_class_as_a_miss_and_says_so_once(log_messages):
    """The SegNet tutorial's train nets have no ignore_label in their Accuracy layers while
    CamVid's labels hold the void value 11: a release build of the fork trains, counting those
    pixels as misses (its range check is a DCHECK)."""
    layer = layer_from_text('name: "accuracy" type: "Accuracy" bottom: "x" bottom: "label" '
                            'top: "a" top: "pc"', [(2, 4, 3, 5), (2, 1, 3, 5)])
    x = rand(2, 4, 3, 5, seed=9)
    labels = labels_for(10, high=4)
    labels[0, 0, :2, :] = 4  # the void value, one past the last class
    for _ in range(2):
        accuracy, per_class = forward(layer, x, labels)
    expected, expected_per_class = np_accuracy(x, labels)
    np.testing.assert_allclose(accuracy, expected, rtol=1e-6)
    np.testing.assert_allclose(per_class.ravel(), expected_per_class, rtol=1e-6)
    assert log_messages == ['layer "accuracy" (Accuracy): label values [4] are not classes 0..3 and '
                        "no ignore_label covers them: they count as misses, as in a release "
                        "build of Caffe (a debug build stops); if 4 is a void label, add "
                        "accuracy_param { ignore_label: 4 }"]


def test_accuracy_has_no_backward_and_checks_top_k():
    layer = layer_from_text('name: "acc" type: "Accuracy" bottom: "x" bottom: "label" top: "a"',
                            [(2, 3), (2,)])
    (a,) = layer.forward([torch.zeros(2, 3, requires_grad=True), torch.zeros(2)])
    assert not a.requires_grad
    assert not layer.allow_force_backward(0) and not layer.allow_force_backward(1)
    with pytest.raises(CaffeError, match="top_k 4 is more than the 3 classes"):
        layer_from_text('name: "acc" type: "Accuracy" accuracy_param { top_k: 4 } bottom: "x" '
                        'bottom: "label" top: "a"', [(2, 3), (2,)]).reshape([(2, 3), (2,)])


# ----- BN (SegNet fork) ------------------------------------------------------------------------
BN_FILLERS = 'scale_filler { type: "constant" value: 1 } shift_filler { type: "constant" value: 0 }'


def bn_layer(mode, tops=1, phase="TRAIN", fillers=BN_FILLERS):
    top = "".join(f' top: "{t}"' for t in ("y", "mean", "var")[:tops])
    return layer_from_text(f'name: "bn" type: "BN" bottom: "x"{top} bn_param {{ bn_mode: {mode} '
                           f'{fillers} }}', [(3, 4, 5, 6)], phase=phase)


def set_affine(layer, seed):
    scale, shift = rand(1, 4, 1, 1, seed=seed), rand(1, 4, 1, 1, seed=seed + 1)
    layer.blobs[0].data[...], layer.blobs[1].data[...] = scale, shift
    return scale, shift


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_bn_learn_uses_batch_statistics_in_both_phases(phase):
    layer = bn_layer("LEARN", tops=3, phase=phase)
    assert [b.shape for b in layer.blobs] == [(1, 4, 1, 1), (1, 4, 1, 1)]
    scale, shift = set_affine(layer, 11)
    x = rand(3, 4, 5, 6, seed=12, low=-1, high=3)
    y, mean, var = forward(layer, x)
    x64 = x.astype(np.float64)
    mu = x64.mean(axis=(0, 2, 3), keepdims=True)
    sigma2 = x64.var(axis=(0, 2, 3), keepdims=True)
    np.testing.assert_allclose(y, scale * (x64 - mu) / np.sqrt(sigma2 + 1e-9) + shift,
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(mean, mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, sigma2, rtol=1e-4, atol=1e-5)
    assert gradients_ok(bn_layer("LEARN"), x)


@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (2, 4), (1, 4)])
def test_bn_learn_fused_kernels_equal_the_forks_arithmetic(shape):
    """The default fused batch-norm path and caffe_accumulation's fork-order formulas agree
    in forward, bottom and parameter gradients. A single value per channel normalises to 0 (the
    top is the shift); its bottom gradient is rounding noise times 1/sqrt(1e-9) in the fork, so
    only the top is compared there."""
    x = torch.from_numpy(rand(*shape, seed=21, low=-1, high=3))
    dy = torch.from_numpy(rand(*shape, seed=22))
    results = []
    for exact in (False, True):
        engine_options.set_default(caffe_accumulation=exact)
        try:
            layer = layer_from_text(f'name: "bn" type: "BN" bottom: "x" top: "y" bn_param {{ '
                                    f'{BN_FILLERS} }}', [shape], phase="TRAIN")
            set_affine(layer, 23)
            leaf = x.clone().requires_grad_(True)
            params = [blob.tensor() for blob in layer.blobs]
            y = layer.forward([leaf])[0]
            results.append([y.detach()] + list(torch.autograd.grad(y, [leaf] + params, dy)))
        finally:
            engine_options.set_default(caffe_accumulation=False)
    single = shape[0] * math.prod(shape[2:]) == 1
    for fused, fork in zip(*results) if not single else [(results[0][0], results[1][0])]:
        np.testing.assert_allclose(fused.numpy(), fork.numpy(), rtol=1e-5, atol=1e-5)
    if single:
        np.testing.assert_allclose(results[0][0].numpy(), set_affine(layer, 23)[1].reshape(1, 4))


def test_bn_inference_is_affine():
    layer = bn_layer("INFERENCE")
    scale, shift = set_affine(layer, 13)
    x = rand(3, 4, 5, 6, seed=14)
    np.testing.assert_allclose(forward(layer, x)[0], scale * x + shift, rtol=1e-6, atol=1e-6)
    assert gradients_ok(layer, x)


def test_bn_default_fillers_are_the_forks_constant_zero():
    layer = bn_layer("LEARN", fillers="")
    assert not layer.blobs[0].data.any() and not layer.blobs[1].data.any()


def test_bn_parameter_diffs_are_overwritten_by_each_backward():
    net = net_from_text('name: "n" force_backward: true input: "x" input_shape { dim: 2 dim: 3 '
                        'dim: 4 dim: 4 } layer { name: "bn" type: "BN" bottom: "x" top: "y" '
                        f'bn_param {{ {BN_FILLERS} }} }}', phase="TRAIN")
    net.blobs["x"].data[...] = rand(2, 3, 4, 4, seed=15)
    net.forward()
    net.blobs["y"].diff[...] = rand(2, 3, 4, 4, seed=16)
    net.backward()
    once = [p.diff.copy() for p in net.params["bn"]]
    assert all(d.any() for d in once)
    net.backward()
    for param, first in zip(net.params["bn"], once):
        np.testing.assert_allclose(param.diff, first, rtol=1e-6)


def test_bn_inference_leaves_statistics_tops_zero():
    # The author's inference weights carry mean/var tops (written by compute_bn_statistics).
    layer = bn_layer("INFERENCE", tops=3)
    y, mean, var = layer.forward([torch.ones(2, 4, 3, 3)])
    assert mean.shape == var.shape == (1, 4, 1, 1)
    assert not mean.any() and not var.any()


def test_bn_errors():
    with pytest.raises(CaffeError, match="2 to 4 axes"):
        layer_from_text('name: "bn" type: "BN" bottom: "x" top: "y"', [(5,)])
    with pytest.raises(CaffeError, match="4 channels"):
        bn_layer("LEARN").reshape([(3, 5, 5, 6)])


# ----- BatchNorm (BVLC) ------------------------------------------------------------------------
def batch_norm(params="", phase="TRAIN", shape=(3, 4, 5, 6)):
    return layer_from_text(f'name: "bn" type: "BatchNorm" bottom: "x" top: "y" {params}',
                           [shape], phase=phase)


def test_batch_norm_train_normalises_and_updates_running_averages():
    layer = batch_norm("batch_norm_param { moving_average_fraction: 0.9 }")
    assert [b.shape for b in layer.blobs] == [(4,), (4,), (1,)]
    assert [p.lr_mult for p in layer.param.param] == [0, 0, 0]
    x1, x2 = rand(3, 4, 5, 6, seed=17), rand(3, 4, 5, 6, seed=18, low=0, high=5)
    for x in (x1, x2):
        (y,) = forward(layer, x)
        x64 = x.astype(np.float64)
        mu, var = x64.mean(axis=(0, 2, 3)), x64.var(axis=(0, 2, 3))
        np.testing.assert_allclose(y, (x64 - mu[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5),
                                   rtol=1e-4, atol=1e-4)
    m = 3 * 5 * 6
    mean = lambda x: x.astype(np.float64).mean(axis=(0, 2, 3))  # noqa: E731
    unbiased = lambda x: x.astype(np.float64).var(axis=(0, 2, 3)) * m / (m - 1)  # noqa: E731
    np.testing.assert_allclose(layer.blobs[0].data, 0.9 * mean(x1) + mean(x2), rtol=1e-5)
    np.testing.assert_allclose(layer.blobs[1].data, 0.9 * unbiased(x1) + unbiased(x2), rtol=1e-5)
    np.testing.assert_allclose(layer.blobs[2].data, [1.9], rtol=1e-6)
    assert gradients_ok(batch_norm(), x1, check_params=False)


def test_batch_norm_global_stats_divide_by_the_scale_factor():
    layer = batch_norm(phase="TEST")  # use_global_stats defaults to TEST phase
    x = rand(3, 4, 5, 6, seed=19)
    layer.blobs[0].data[...] = [2.0, 4.0, -2.0, 0.0]
    layer.blobs[1].data[...] = [8.0, 2.0, 4.0, 6.0]
    layer.blobs[2].data[...] = 2.0
    (y,) = forward(layer, x)
    mu, var = np.array([1.0, 2.0, -1.0, 0.0]), np.array([4.0, 1.0, 2.0, 3.0])
    expected = (x - mu[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.blobs[2].data, [2.0])  # no update
    assert gradients_ok(layer, x, check_params=False)
    layer.blobs[2].data[...] = 0.0  # a zero factor gives zero statistics
    np.testing.assert_allclose(forward(layer, x)[0], x / np.sqrt(1e-5), rtol=1e-5)


def test_batch_norm_statistics_are_not_learnable():
    layer = batch_norm('param { lr_mult: 0 } batch_norm_param { use_global_stats: false eps: 0.1 }',
                       phase="TEST")
    assert len(layer.param.param) == 3 and not layer.use_global_stats and layer.eps == pytest.approx(0.1)
    with pytest.raises(CaffeError, match="param 1 has lr_mult 1"):
        batch_norm("param { lr_mult: 0 } param { lr_mult: 1 }")


# ----- MVN -------------------------------------------------------------------------------------
def mvn_layer(options, shape=(2, 3, 4, 5)):
    return layer_from_text(f'name: "m" type: "MVN" bottom: "x" top: "y" mvn_param {{ {options} }}',
                           [shape])


@pytest.mark.parametrize("options,axes", [
    ("normalize_variance: false", (2, 3)),
    ("normalize_variance: true", (2, 3)),
    ("normalize_variance: true across_channels: true", (1, 2, 3)),
    ("normalize_variance: false across_channels: true", (1, 2, 3)),
])
def test_mvn_normalises_each_row(options, axes):
    layer = mvn_layer(options)
    x = rand(2, 3, 4, 5, seed=21, low=-1, high=5).astype(np.float64)
    expected = x - x.mean(axis=axes, keepdims=True)
    if "normalize_variance: true" in options:
        expected /= np.sqrt((expected ** 2).mean(axis=axes, keepdims=True)) + 1e-9
    np.testing.assert_allclose(forward(layer, x.astype(np.float32))[0], expected, rtol=1e-5,
                               atol=1e-5)
    assert gradients_ok(layer, x.astype(np.float32))


def test_mvn_backward_is_caffes_and_finite_on_constant_rows():
    layer = mvn_layer("normalize_variance: true eps: 0.5", shape=(1, 2, 3, 1))
    x = torch.tensor([[[[1.0], [2.0], [4.0]], [[7.0], [7.0], [7.0]]]], requires_grad=True)
    dy = torch.tensor([[[[0.3], [-1.0], [2.0]], [[1.0], [2.0], [-3.0]]]])
    (y,) = layer.forward([x])
    (dx,) = torch.autograd.grad(y, x, dy)
    rows, y_rows, dy_rows = (t.detach().reshape(2, 3).double() for t in (x, y, dy))
    std = (rows - rows.mean(1, keepdim=True)).square().mean(1, keepdim=True).sqrt() + 0.5
    caffe = (dy_rows - dy_rows.mean(1, keepdim=True)
             - y_rows * (dy_rows * y_rows).mean(1, keepdim=True)) / std
    np.testing.assert_allclose(dx.reshape(2, 3).numpy(), caffe.numpy(), rtol=1e-6, atol=1e-7)
    assert torch.isfinite(dx).all() and (y[0, 1] == 0).all()


def test_mvn_needs_a_channel_axis():
    with pytest.raises(CaffeError, match="needs a bottom with a channel axis"):
        mvn_layer("", shape=(5,))


# ----- Scale and Bias --------------------------------------------------------------------------
@pytest.mark.parametrize("axes,shape,view", [
    ("", (3,), (1, 3, 1, 1)),
    ("axis: 1 num_axes: 2", (3, 4), (1, 3, 4, 1)),
    ("axis: -2 num_axes: -1", (4, 5), (1, 1, 4, 5)),
    ("num_axes: 0", (), (1, 1, 1, 1)),
])
def test_scale_with_learned_operand_and_bias(axes, shape, view):
    layer = layer_from_text(f'name: "s" type: "Scale" bottom: "x" top: "y" scale_param {{ {axes} '
                            'bias_term: true bias_filler { type: "constant" value: 0.5 } }',
                            [(2, 3, 4, 5)])
    assert [b.shape for b in layer.blobs] == [shape, shape]
    np.testing.assert_allclose(layer.blobs[0].data, 1.0)  # default filler: identity
    scale = rand(*shape, seed=20) if shape else np.float32(1.5)
    layer.blobs[0].data[...] = scale
    x = rand(2, 3, 4, 5, seed=21)
    (y,) = forward(layer, x)
    np.testing.assert_allclose(y, x * np.reshape(scale, view) + 0.5, rtol=1e-6)
    assert gradients_ok(layer, x)


def test_scale_by_second_bottom():
    layer = layer_from_text('name: "s" type: "Scale" bottom: "x" bottom: "s" top: "y" '
                            'scale_param { axis: 0 }', [(2, 3, 4), (2, 3)])
    assert layer.blobs == []
    x, s = rand(2, 3, 4, seed=22), rand(2, 3, seed=23)
    np.testing.assert_allclose(forward(layer, x, s)[0], x * s[:, :, None], rtol=1e-6)
    assert gradients_ok(layer, x, s)
    with pytest.raises(CaffeError, match=r"operand of shape \(3, 3\) does not match"):
        layer.reshape([(2, 3, 4), (3, 3)])


def test_bias_learned_and_second_bottom():
    layer = layer_from_text('name: "b" type: "Bias" bottom: "x" top: "y" '
                            'bias_param { axis: 2 filler { type: "constant" value: 2 } }',
                            [(2, 3, 4)])
    assert layer.blobs[0].shape == (4,)
    b = rand(4, seed=24)
    layer.blobs[0].data[...] = b
    x = rand(2, 3, 4, seed=25)
    np.testing.assert_allclose(forward(layer, x)[0], x + b, rtol=1e-6)
    assert gradients_ok(layer, x)
    two = layer_from_text('name: "b" type: "Bias" bottom: "x" bottom: "b" top: "y"',
                          [(2, 3, 4), (3,)])
    bias = rand(3, seed=26)
    np.testing.assert_allclose(forward(two, x, bias)[0], x + bias[:, None], rtol=1e-6)
    assert gradients_ok(two, x, bias)


def test_scale_bias_shape_errors():
    with pytest.raises(CaffeError, match="extend past"):
        layer_from_text('name: "s" type: "Scale" bottom: "x" top: "y" scale_param { axis: 2 '
                        'num_axes: 2 }', [(2, 3, 4)])
    with pytest.raises(CaffeError, match="num_axes must be"):
        layer_from_text('name: "b" type: "Bias" bottom: "x" top: "y" bias_param { num_axes: -2 }',
                        [(2, 3, 4)])
    with pytest.raises(CaffeError, match="axis 5 is out of range"):
        layer_from_text('name: "b" type: "Bias" bottom: "x" top: "y" bias_param { axis: 5 }',
                        [(2, 3, 4)])
