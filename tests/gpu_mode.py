"""A pytest plugin that runs every test in GPU mode: `caffe.set_mode_gpu()` before each test, with
cuDNN's TF32 rounding off (float32 convolutions stay float32, as Caffe's, so the tests' float32
tolerances hold), restored after it. scripts/camvid_gpu_run.sh runs the layer and solver tests
under it on a CUDA machine:

    python -m pytest -p tests.gpu_mode tests/test_layers_vision.py tests/test_solver.py ...

Without CUDA set_mode_gpu() computes on the CPU (one warning), so the tests run as usual.
"""
import pytest
import torch


@pytest.fixture(autouse=True)
def gpu_mode():
    import segnet_caffe as caffe

    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    caffe.set_mode_gpu()
    yield
    caffe.set_mode_cpu()
    torch.backends.cudnn.allow_tf32 = saved
