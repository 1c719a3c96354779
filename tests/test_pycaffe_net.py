"""pycaffe's Net and module surface beyond forward/backward: forward_all, forward_backward_all,
set_input_arrays (MemoryData), HDF5 weights, backward before any forward, parameter blobs of
Python layers, and the process-level functions."""
import textwrap

import numpy as np
import pytest

import segnet_caffe as caffe
from segnet_caffe import CaffeError, distributed
from tests.layer_testing import net_from_text

IP_NET = """
force_backward: true
input: "x" input_shape { dim: 3 dim: 4 }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 }
                              bias_filler { type: "gaussian" std: 1 } } }
"""


def ip_reference(net, x):
    weight, bias = (blob.data for blob in net.params["ip"])
    return x @ weight.T + bias


def test_forward_all_runs_batches_and_drops_the_padding():
    net = net_from_text(IP_NET)
    x = np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32)  # 2 batches of 3 + 1
    out = net.forward_all(x=x)
    assert list(out) == ["y"] and out["y"].shape == (7, 2)
    np.testing.assert_allclose(out["y"], ip_reference(net, x), rtol=1e-5, atol=1e-6)
    with_input = net.forward_all(blobs=["x"], x=x)
    np.testing.assert_array_equal(with_input["x"], x)


def test_forward_backward_all_returns_data_and_input_diffs():
    net = net_from_text(IP_NET)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 4)).astype(np.float32)
    dy = rng.normal(size=(5, 2)).astype(np.float32)
    blobs, diffs = net.forward_backward_all(x=x, y=dy)
    np.testing.assert_allclose(blobs["y"], ip_reference(net, x), rtol=1e-5, atol=1e-6)
    weight = net.params["ip"][0].data
    np.testing.assert_allclose(diffs["x"], dy @ weight, rtol=1e-5, atol=1e-6)
    assert diffs["x"].shape == (5, 4)


def test_backward_without_a_forward_reads_the_blobs_as_they_are():
    """Caffe backpropagates from the current blobs (BVLC's test_backward_start_end)."""
    net = net_from_text(IP_NET)
    dy = np.arange(6, dtype=np.float32).reshape(3, 2)
    net.blobs["y"].diff[...] = dy
    diffs = net.backward()
    np.testing.assert_allclose(diffs["x"], dy @ net.params["ip"][0].data, rtol=1e-6)
    np.testing.assert_allclose(net.params["ip"][1].diff, dy.sum(0), rtol=1e-6)
    np.testing.assert_array_equal(net.blobs["y"].data, 0)  # the tops are not recomputed


MEMORY_NET = """
layer { name: "data" type: "MemoryData" top: "data" top: "label"
        memory_data_param { batch_size: 2 channels: 1 height: 2 width: 3 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def test_set_input_arrays_feeds_the_memory_data_layer_in_a_cycle():
    net = net_from_text(MEMORY_NET, phase="TRAIN")
    data = np.arange(4 * 6, dtype=np.float32).reshape(4, 1, 2, 3)
    labels = np.array([0, 1, 2, 1], np.float32)
    net.set_input_arrays(data, labels)
    for start in (0, 2, 0):
        net.forward()
        np.testing.assert_array_equal(net.blobs["data"].data, data[start:start + 2])
        np.testing.assert_array_equal(net.blobs["label"].data, labels[start:start + 2])
    net.backward()
    assert np.abs(net.params["ip"][0].diff).sum() > 0


@pytest.mark.parametrize("data, labels, message", [
    (np.zeros((3, 1, 2, 3), np.float32), np.zeros(3, np.float32), "not a multiple of batch_size 2"),
    (np.zeros((2, 1, 2, 4), np.float32), np.zeros(2, np.float32), r"items of shape \(1, 2, 3\)"),
    (np.zeros((2, 1, 2, 3), np.float64), np.zeros(2, np.float32), "4-D float32"),
    (np.zeros((2, 1, 2, 3), np.float32), np.zeros(4, np.float32), "2 data items but 4 labels"),
    (np.zeros((2, 1, 2, 3), np.float32), np.zeros((2, 2), np.float32), "4-D float32"),
])
def test_set_input_arrays_errors(data, labels, message):
    net = net_from_text(MEMORY_NET, phase="TRAIN")
    with pytest.raises(CaffeError, match=message):
        net.set_input_arrays(data, labels)


def test_set_input_arrays_needs_a_memory_data_layer_first():
    with pytest.raises(CaffeError, match="first layer is a MemoryData layer"):
        net_from_text(IP_NET).set_input_arrays(np.zeros((3, 4, 1, 1), np.float32),
                                               np.zeros(3, np.float32))


def test_hdf5_weights_round_trip_whatever_the_extension(tmp_path):
    net = net_from_text(IP_NET)
    path = tmp_path / "weights_without_extension"
    net.save_hdf5(str(path))
    assert path.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"
    other = net_from_text(IP_NET)
    assert not np.array_equal(other.params["ip"][0].data, net.params["ip"][0].data)
    other.load_hdf5(str(path))
    for mine, theirs in zip(net.params["ip"], other.params["ip"]):
        np.testing.assert_array_equal(mine.data, theirs.data)


PARAM_MODULE = textwrap.dedent("""
    import segnet_caffe as caffe

    class Offset(caffe.Layer):
        def setup(self, bottom, top):
            self.blobs.add_blob(2)
            self.blobs[0].data[...] = [1.0, -1.0]
        def reshape(self, bottom, top):
            top[0].reshape(*bottom[0].data.shape)
        def forward(self, bottom, top):
            top[0].data[...] = bottom[0].data + self.blobs[0].data
        def backward(self, top, propagate_down, bottom):
            self.blobs[0].diff[...] = top[0].diff.sum(0)
            bottom[0].diff[...] = top[0].diff
""")


def test_python_layer_parameter_blobs_are_saved_shared_and_learned(tmp_path, monkeypatch):
    (tmp_path / "offset_layer_pn.py").write_text(PARAM_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "net.prototxt").write_text(
        'force_backward: true input: "x" input_shape { dim: 3 dim: 2 } '
        'layer { name: "off" type: "Python" bottom: "x" top: "y" '
        'python_param { module: "offset_layer_pn" layer: "Offset" } }')
    net = caffe.Net("net.prototxt", caffe.TRAIN)
    assert net.params["off"][0].shape == (2,)
    net.blobs["x"].data[...] = 0
    np.testing.assert_array_equal(net.forward()["y"], [[1, -1]] * 3)
    net.blobs["y"].diff[...] = 1
    net.backward()
    np.testing.assert_array_equal(net.params["off"][0].diff, [3, 3])
    net.save("w.caffemodel")
    net.params["off"][0].data[...] = 5
    net.copy_from("w.caffemodel")
    np.testing.assert_array_equal(net.params["off"][0].data, [1, -1])
    twin = caffe.Net("net.prototxt", caffe.TRAIN)
    twin.share_with(net)
    assert twin.layer_dict["off"].user.blobs[0] is net.params["off"][0]


def test_layer_type_list_nccl_and_timer():
    types = caffe.layer_type_list()
    assert {"Python", "MemoryData", "Convolution", "Upsample", "BN"} <= set(types)
    assert types == sorted(types)
    assert caffe.has_nccl() is False
    with pytest.raises(CaffeError, match="segnet-caffe train"):
        caffe.NCCL.new_uid()
    timer = caffe.Timer()
    assert timer.ms == 0.0
    timer.start()
    timer.stop()
    assert 0.0 <= timer.ms < 1000.0 and timer.ms == timer.ms  # stopped: the value stays


def test_solver_rank_and_count_choose_the_data_shard(monkeypatch):
    monkeypatch.setattr(distributed, "_pycaffe_position", {})
    assert (caffe.solver_rank(), caffe.solver_count()) == (0, 1)
    caffe.set_solver_count(4)
    caffe.set_solver_rank(3)
    assert (caffe.solver_rank(), caffe.solver_count()) == (3, 4)
    assert distributed.data_shard() == (3, 4)
    assert not distributed.in_job() and not distributed.is_root()


def test_solver_lr_and_share_weights(tmp_path):
    (tmp_path / "net.prototxt").write_text(MEMORY_NET)
    (tmp_path / "solver.prototxt").write_text(
        f'net: "{tmp_path / "net.prototxt"}" base_lr: 0.1 lr_policy: "step" gamma: 0.5 '
        'stepsize: 2 max_iter: 10 display: 0 snapshot_after_train: false')
    solver = caffe.get_solver(str(tmp_path / "solver.prototxt"))
    solver.net.set_input_arrays(np.ones((2, 1, 2, 3), np.float32), np.zeros(2, np.float32))
    assert solver.lr == pytest.approx(0.1)
    solver.step(2)
    assert solver.lr == pytest.approx(0.05)
    other = net_from_text(MEMORY_NET, phase="TEST")
    solver.share_weights(other)
    assert other.params["ip"][0] is solver.net.params["ip"][0]


def test_underscored_views_of_the_net_that_client_code_reads():
    net = net_from_text(MEMORY_NET, phase="TRAIN")
    assert net._blob_names == ["data", "label", "ip", "loss"]
    assert [b is net.blobs[n] for b, n in zip(net._blobs, net._blob_names)] == [True] * 4
    assert net._blob_loss_weights == [0.0, 0.0, 0.0, 1.0]
    assert net._inputs == [] and net._outputs == [3]
    assert net._top_ids(0) == [0, 1] and net._bottom_ids(2) == [2, 1]


def test_a_view_taken_before_forward_sees_its_values_as_in_pycaffe():
    """pycaffe hands out the blob's own memory: `prob = net.blobs["y"].data` before forward()
    holds the new values after it, and a diff view the new diffs after backward()."""
    net = net_from_text(IP_NET)
    y_view, x_diff_view = net.blobs["y"].data, net.blobs["x"].diff
    x = np.random.default_rng(5).normal(size=(3, 4)).astype(np.float32)
    for scale in (1.0, 2.0):
        net.forward(x=scale * x)
        np.testing.assert_allclose(y_view, ip_reference(net, scale * x), rtol=1e-5, atol=1e-6)
        net.backward(y=np.ones((3, 2), np.float32))
        np.testing.assert_allclose(x_diff_view, np.ones((3, 2)) @ net.params["ip"][0].data, rtol=1e-6)
    assert net.blobs["y"].data.__array_interface__["data"][0] == y_view.__array_interface__["data"][0]
    net.blobs["x"].reshape(5, 4)
    net.forward()
    assert net.blobs["y"].data.shape == (5, 2) and y_view.shape == (3, 2)  # new memory


def test_a_view_of_a_pooling_mask_sees_the_next_mask():
    net = net_from_text('input: "x" input_shape { dim: 1 dim: 1 dim: 2 dim: 2 } '
                        'layer { name: "p" type: "Pooling" bottom: "x" top: "p" top: "m" '
                        'pooling_param { pool: MAX kernel_size: 2 stride: 2 } }')
    mask = None
    for argmax in (3, 1):
        x = np.zeros((1, 1, 2, 2), np.float32)
        x.flat[argmax] = 1
        net.forward(x=x)
        mask = net.blobs["m"].data if mask is None else mask
        assert float(mask.ravel()[0]) == argmax


def test_layer_callbacks_run_around_each_layer_in_order():
    """pycaffe's Net.before_forward & co. (Caffe's Net callbacks), called with the layer index."""
    net = net_from_text(MEMORY_NET, phase="TRAIN")
    net.set_input_arrays(np.ones((2, 1, 2, 3), np.float32), np.zeros(2, np.float32))
    calls = []
    for when in ("before_forward", "after_forward", "before_backward", "after_backward"):
        getattr(net, when)(lambda i, when=when: calls.append((when, i)))
    net.forward()
    net.backward()
    assert calls == [("before_forward", 0), ("after_forward", 0), ("before_forward", 1),
                     ("after_forward", 1), ("before_forward", 2), ("after_forward", 2),
                     ("before_backward", 2), ("after_backward", 2), ("before_backward", 1),
                     ("after_backward", 1), ("before_backward", 0), ("after_backward", 0)]
