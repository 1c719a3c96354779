"""caffe.coord_map (pycaffe's): coordinate maps through NetSpec layers and FCN's crop helper."""
import numpy as np
import pytest

import segnet_caffe as caffe
from segnet_caffe import layers as L, params as P
from segnet_caffe.coord_map import (AxisMismatchException, UndefinedMapException, compose,
                                    coord_map, coord_map_from_to, crop, inverse)


def fcn_like(pooling_param_dict=False):
    """FCN's pattern: a conv padded by 100, a 2x pool, a conv, a 2x deconv back up.
    By hand, data coordinate c lands in
      conv1 (k3 p100) at c + 99, pool (k2 s2) at (c + 98.5) / 2, conv2 (k3) at (c + 96.5) / 2,
      deconv (k4 s2) at 2 * (c + 96.5) / 2 + 1.5 = c + 98.
    """
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 20, 20]))
    n.conv1 = L.Convolution(n.data, num_output=2, kernel_size=3, pad=100)
    pool = dict(pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.pool = (L.Pooling(n.conv1, pooling_param=pool) if pooling_param_dict
              else L.Pooling(n.conv1, **pool))
    n.conv2 = L.Convolution(n.pool, convolution_param=dict(num_output=2, kernel_size=3))
    n.deconv = L.Deconvolution(n.conv2, num_output=1, kernel_size=4, stride=2)
    return n


@pytest.mark.parametrize("pooling_param_dict", [False, True])
def test_fcn_crop_offset_is_the_hand_computed_one(pooling_param_dict):
    n = fcn_like(pooling_param_dict)
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    assert (ax, a.tolist(), b.tolist()) == (1, [1.0], [-98.0])
    n.score = crop(n.deconv, n.data)
    layer = n.to_proto().layer[-1]
    assert (layer.type, list(layer.bottom)) == ("Crop", ["deconv", "data"])
    assert (layer.crop_param.axis, list(layer.crop_param.offset)) == (2, [98])
    net = caffe.Net(n.to_proto(), caffe.TEST)
    assert net.blobs["deconv"].shape == (1, 1, 216, 216)  # 20 -> 218 -> 109 -> 107 -> 216
    assert net.blobs["score"].shape == (1, 1, 20, 20)


def test_cropping_a_padded_identity_conv_gives_the_input_back():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 5, 7]))
    n.padded = L.Convolution(n.data, num_output=1, kernel_size=1, pad=[2, 3],
                             weight_filler=dict(type="constant", value=1))
    n.back = crop(n.padded, n.data)
    assert list(n.to_proto().layer[-1].crop_param.offset) == [2, 3]
    net = caffe.Net(n.to_proto(), caffe.TEST)
    x = np.random.default_rng(0).standard_normal((1, 1, 5, 7)).astype(np.float32)
    net.blobs["data"].data[...] = x
    net.forward()
    np.testing.assert_array_equal(net.blobs["back"].data, x)


def test_pointwise_layers_map_identically_and_others_are_undefined():
    n = fcn_like()
    n.relu = L.ReLU(n.deconv)
    n.bn = L.BN(n.relu)  # SegNet's BN layer is pointwise too
    assert coord_map(n.relu.fn) == (None, 1, 0)
    for top in (n.relu, n.bn):
        assert coord_map_from_to(top, n.data)[2].tolist() == [-98.0]
    n.ip = L.InnerProduct(n.deconv, num_output=3)
    with pytest.raises(UndefinedMapException, match="InnerProduct layers have no coordinate map"):
        coord_map(n.ip.fn)
    with pytest.raises(RuntimeError, match="connected by spatial layers"):
        coord_map_from_to(n.ip, n.data)


def test_compose_and_inverse():
    scale_then_shift = compose((1, 2, 3), (None, 5, 7))
    assert scale_then_shift == (1, 10, 17)  # 2 * (5 x + 7) + 3
    assert inverse((1, 2.0, 3.0)) == (1, 0.5, -1.5)
    with pytest.raises(AxisMismatchException):
        compose((1, 1, 0), (2, 1, 0))


def test_crop_refuses_what_it_cannot_crop():
    n = fcn_like()
    n.shrunk = L.Deconvolution(n.conv2, num_output=1, kernel_size=4, stride=2, pad=100)
    with pytest.raises(AssertionError, match="cannot crop negative offset"):
        crop(n.shrunk, n.data)
    with pytest.raises(AssertionError, match="scale mismatch"):
        crop(n.conv2, n.data)
    with pytest.raises(AssertionError, match="legacy _h/_w"):
        coord_map(L.Convolution(n.data, kernel_h=3, kernel_w=3).fn)
