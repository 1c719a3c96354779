"""NetSpec as pycaffe's net_spec: auto-names, in-place layers, keyword routing, the attributes
coord_map reads, and pycaffe's exception types."""
import pytest

import segnet_caffe as caffe
from segnet_caffe import layers as L, params as P
from segnet_caffe.errors import CaffeError
from segnet_caffe.netspec import Function, Top, to_proto


def names_and_blobs(net):
    return [(layer.name, list(layer.bottom), list(layer.top)) for layer in net.layer]


def test_anonymous_layers_are_named_by_type_and_counter():
    data, label = L.DummyData(shape=[dict(dim=[2, 1, 8, 8]), dict(dim=[2, 1, 1, 1])], ntop=2)
    conv = L.Convolution(data, kernel_size=3, num_output=4)
    relu = L.ReLU(conv, in_place=True)
    again = L.ReLU(relu, in_place=True)  # two in-place layers on one blob: two names
    ip = L.InnerProduct(again, num_output=2)
    loss = L.SoftmaxWithLoss(ip, label)
    assert names_and_blobs(loss.to_proto()) == [
        ("DummyData1", [], ["DummyData1", "DummyData2"]),
        ("Convolution1", ["DummyData1"], ["Convolution1"]),
        ("ReLU1", ["Convolution1"], ["Convolution1"]),
        ("ReLU2", ["Convolution1"], ["Convolution1"]),
        ("InnerProduct1", ["Convolution1"], ["InnerProduct1"]),
        ("SoftmaxWithLoss1", ["InnerProduct1", "DummyData2"], ["SoftmaxWithLoss1"]),
    ]


def test_netspec_names_win_and_in_place_layers_keep_their_bottom_blob():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 8, 8]))
    n.conv1 = L.Convolution(n.data, kernel_size=3, num_output=4)
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    unnamed = L.ReLU(n.relu1, in_place=True)
    n.pool1 = L.Pooling(unnamed, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.silence = L.Silence(n.pool1, ntop=0)
    assert names_and_blobs(n.to_proto()) == [
        ("data", [], ["data"]),
        ("conv1", ["data"], ["conv1"]),
        ("relu1", ["conv1"], ["conv1"]),
        ("ReLU1", ["conv1"], ["conv1"]),
        ("pool1", ["conv1"], ["pool1"]),
        ("silence", ["pool1"], []),
    ]


def test_name_keyword_renames_the_layer_but_not_its_top():
    top = L.ReLU(L.Input(shape=dict(dim=[1])), name="my_relu")
    layer = top.to_proto().layer[1]
    assert (layer.name, list(layer.top)) == ("my_relu", ["ReLU1"])


def test_keywords_fill_the_type_message_or_the_layer():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 8, 8]))
    n.deconv = L.Deconvolution(n.data, num_output=3, kernel_size=4, stride=2,
                               param=[dict(lr_mult=0)], loss_weight=0,
                               bias_filler=dict(type="constant", value=0.5))
    layer = n.to_proto().layer[1]
    assert list(layer.convolution_param.kernel_size) == [4]  # a repeated field from a scalar
    assert layer.convolution_param.bias_filler.value == 0.5
    assert [spec.lr_mult for spec in layer.param] == [0]
    assert list(layer.loss_weight) == [0]


def test_top_and_function_attributes_are_pycaffes():
    data = L.Input(shape=dict(dim=[1, 3, 8, 8]))
    pool, mask = L.Pooling(data, kernel_size=2, stride=2, ntop=2)
    fn = mask.fn
    assert isinstance(mask, Top) and isinstance(fn, Function)
    assert (mask.n, pool.n, fn.tops) == (1, 0, (pool, mask))
    assert (fn.type_name, fn.inputs, fn.ntop, fn.in_place) == ("Pooling", (data,), 2, False)
    assert fn.params == dict(kernel_size=2, stride=2)  # ntop and in_place taken out
    assert L.ReLU(data, in_place=True).fn.in_place
    assert L.Silence(data, ntop=0).tops == ()
    assert names_and_blobs(to_proto(pool, mask)) == names_and_blobs(pool.to_proto())


def test_an_input_that_is_not_a_top_is_a_type_error():
    data = L.DummyData(ntop=2)
    message = r"^Silence input 1 is not a Top \(type is <class 'tuple'>\)$"
    with pytest.raises(TypeError, match=message):
        L.Silence(data[0], data, ntop=0)


def test_an_unknown_field_is_an_attribute_error():
    with pytest.raises(AttributeError, match='ConvolutionParameter has no field "kernel"'):
        L.Convolution(L.Input(), convolution_param=dict(kernel=3)).to_proto()
    with pytest.raises(CaffeError, match='LayerParameter has no field "bogus"'):
        L.ReLU(L.Input(), bogus=1).to_proto()


def test_a_dict_for_a_scalar_field_is_a_type_error():
    with pytest.raises(TypeError, match="ConvolutionParameter.num_output is not a message"):
        L.Convolution(L.Input(), num_output=dict(value=3)).to_proto()


def test_missing_netspec_names_are_key_and_attribute_errors():
    n = caffe.NetSpec()
    with pytest.raises(KeyError):
        n["nothing"]
    with pytest.raises(AttributeError, match='no top named "nothing"'):
        n.nothing
    assert not hasattr(n, "nothing")


def test_a_netspec_value_that_is_not_a_top_is_named():
    n = caffe.NetSpec()
    n.data = L.Input()
    n.size = 3
    with pytest.raises(TypeError, match=r'NetSpec "size" holds 3 \(int\), not a Top'):
        n.to_proto()


def test_in_place_needs_one_top_per_input():
    data = L.Input()
    with pytest.raises(CaffeError, match="in_place needs as many tops as inputs"):
        L.Eltwise(data, data, in_place=True)


def test_the_generated_net_builds_and_runs():
    n = caffe.NetSpec()
    n.data, n.label = L.DummyData(shape=[dict(dim=[2, 1, 6, 6]), dict(dim=[2, 1, 1, 1])], ntop=2)
    n.ip = L.InnerProduct(n.data, num_output=3, weight_filler=dict(type="xavier"))
    L.ReLU(n.ip, in_place=True)  # never reached from a NetSpec name: not in the net
    n.loss = L.SoftmaxWithLoss(L.ReLU(n.ip, in_place=True), n.label)
    param = n.to_proto()
    assert [layer.name for layer in param.layer] == ["data", "ip", "ReLU1", "loss"]
    net = caffe.Net(param, caffe.TEST)
    assert list(net.forward()) == ["loss"]
