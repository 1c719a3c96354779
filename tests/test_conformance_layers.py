"""Every layer fixture recorded from real SegNet Caffe, run through the public pycaffe-style API."""
import json

import numpy as np
import pytest

import segnet_caffe as caffe
from tests.conftest import SHARED_DIR

LAYERS_DIR = SHARED_DIR / "conformance" / "layers"
FIXTURES = sorted(p.stem for p in LAYERS_DIR.glob("*.npz")) if LAYERS_DIR.is_dir() else []


def assert_close(actual, expected, what):
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    assert actual.shape == expected.shape or actual.size == expected.size == 1, \
        f"{what}: shape {actual.shape}, expected {expected.shape}"
    atol = 1e-5 * max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual.reshape(expected.shape), expected, rtol=1e-5, atol=atol,
                               err_msg=what)


@pytest.mark.skipif(not FIXTURES, reason=f"conformance fixtures not found at {LAYERS_DIR}")
@pytest.mark.parametrize("name", FIXTURES)
def test_layer_fixture(name):
    record = np.load(LAYERS_DIR / f"{name}.npz")
    meta = json.loads(str(record["meta"]))
    net = caffe.Net(str(LAYERS_DIR / f"{name}.prototxt"), getattr(caffe, meta["phase"]))
    assert list(net.outputs) == meta["net_outputs"]
    arrays = {key: record[key] for key in record.files if key != "meta"}

    def items(prefix):
        return {key[len(prefix):]: value for key, value in arrays.items() if key.startswith(prefix)}

    for blob, value in items("in__").items():
        net.blobs[blob].data[...] = value
    for key, value in items("param__").items():
        layer, index = key.split("__")
        net.params[layer][int(index)].data[...] = value
    net.forward()
    for blob, value in items("out__").items():
        assert_close(net.blobs[blob].data, value, f"{name}: forward top {blob}")
    if not meta.get("backward", True):
        return
    for blob, value in items("topdiff__").items():
        net.blobs[blob].diff[...] = value
    net.backward()
    for blob, value in items("diff__").items():
        assert_close(net.blobs[blob].diff, value, f"{name}: diff of {blob}")
    for key, value in items("grad__").items():
        layer, index = key.split("__")
        assert_close(net.params[layer][int(index)].diff, value, f"{name}: gradient {key}")
    second = items("grad_after_second_backward__")
    if second:
        net.backward()
        for key, value in second.items():
            layer, index = key.split("__")
            assert_close(net.params[layer][int(index)].diff, value,
                         f"{name}: gradient {key} after a second backward")
