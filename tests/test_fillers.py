"""Caffe's fillers: values and statistics by their definitions."""
import math

import pytest
import torch

from segnet_caffe.errors import CaffeError
from segnet_caffe.fillers import fill
from segnet_caffe.proto import caffe_pb2


def filler(**fields):
    return caffe_pb2.FillerParameter(**fields)


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


def test_constant_default_is_zero_and_value_is_used():
    assert not fill(filler(), (3, 4)).any()
    assert (fill(filler(type="constant", value=0.25), (2, 2)) == 0.25).all()


def test_uniform_range():
    values = fill(filler(type="uniform", min=-2, max=3), (100, 100))
    assert values.min() >= -2 and values.max() <= 3 and abs(values.mean() - 0.5) < 0.05


def test_gaussian_and_sparse_gaussian():
    values = fill(filler(type="gaussian", mean=1, std=2), (200, 100))
    assert abs(values.mean() - 1) < 0.05 and abs(values.std() - 2) < 0.05
    sparse = fill(filler(type="gaussian", std=1, sparse=20), (100, 400))
    assert abs((sparse != 0).float().mean() - 20 / 100) < 0.01   # kept with p = sparse / num


def test_positive_unitball_rows_sum_to_one():
    values = fill(filler(type="positive_unitball"), (5, 3, 2, 2))
    assert (values >= 0).all()
    torch.testing.assert_close(values.reshape(5, -1).sum(1), torch.ones(5))


@pytest.mark.parametrize("norm, fan", [("FAN_IN", 3 * 7 * 7), ("FAN_OUT", 64 * 7 * 7),
                                       ("AVERAGE", (3 * 7 * 7 + 64 * 7 * 7) / 2)])
def test_xavier_and_msra_scale_with_the_fan(norm, fan):
    variance_norm = caffe_pb2.FillerParameter.VarianceNorm.Value(norm)
    xavier = fill(filler(type="xavier", variance_norm=variance_norm), (64, 3, 7, 7))
    bound = math.sqrt(3 / fan)
    assert xavier.abs().max() <= bound and xavier.abs().max() > 0.95 * bound
    msra = fill(filler(type="msra", variance_norm=variance_norm), (64, 3, 7, 7))
    assert abs(msra.std().item() - math.sqrt(2 / fan)) < 0.05 * math.sqrt(2 / fan)


def test_bilinear_is_the_upsampling_kernel():
    kernel = fill(filler(type="bilinear"), (2, 1, 4, 4))
    row = torch.tensor([0.25, 0.75, 0.75, 0.25])  # f = 2, c = 0.75 (Caffe's formula)
    torch.testing.assert_close(kernel[1, 0], torch.outer(row, row))
    with pytest.raises(CaffeError, match="bilinear"):
        fill(filler(type="bilinear"), (2, 3))


def test_unknown_filler_is_an_error():
    with pytest.raises(CaffeError, match='unknown filler type "nope"'):
        fill(filler(type="nope"), (2,))
