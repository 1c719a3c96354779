"""The CUDA paths against the CPU's (marked gpu; skipped without CUDA): SegNet-Basic's training
step and solver iterations, bfloat16 + channels-last training, pooling masks and Upsample,
DenseImageData with its cache and threads, and snapshots that cross devices.

scripts/camvid_gpu_run.sh runs them first on a GPU machine. SEGNET_CAFFE_GPU_TESTS_ON_CPU=1 runs
them with the CPU standing in for the GPU, which checks the tests themselves where there is no
GPU (every comparison then holds trivially)."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import segnet_caffe as caffe
from tests.layer_testing import net_from_text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import nets  # noqa: E402

ON_CPU = os.environ.get("SEGNET_CAFFE_GPU_TESTS_ON_CPU") == "1"
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not (torch.cuda.is_available() or ON_CPU),
                                 reason="needs a CUDA GPU (SEGNET_CAFFE_GPU_TESTS_ON_CPU=1 runs "
                                        "them on the CPU)")]
SIZE = (32, 48)  # every pooling of SegNet-Basic halves it exactly


def use(device):
    """Compute on "gpu" (the CPU with SEGNET_CAFFE_GPU_TESTS_ON_CPU=1) or "cpu"."""
    if device == "gpu" and not ON_CPU:
        caffe.set_mode_gpu()
    else:
        caffe.set_mode_cpu()


def expected_device():
    return "cpu" if ON_CPU else "cuda"


@pytest.fixture(autouse=True)
def float32_as_float32():
    """TF32 off: cuDNN would round float32 convolution inputs to 10 bits, and the CPU comparisons
    are for the arithmetic Caffe does. The CPU mode is restored after each test."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    caffe.set_mode_cpu()


def assert_close(actual, expected, rtol, what):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    atol = rtol * max(1e-6, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def segnet_basic_step(device):
    """SegNet-Basic's training net at 32x48, batch 2, from seed 0: (net, loss) after one forward
    and backward on `device`."""
    use(device)
    caffe.set_random_seed(0)
    net = caffe.Net(nets.net_param("segnet_basic", "train", 2, SIZE), caffe.TRAIN)
    images, labels = nets.inputs("segnet_basic", 2, SIZE)
    net.blobs["data"].data[...] = images.numpy()
    net.blobs["label"].data[...] = labels.numpy()
    loss = net.forward()["loss"]
    net.backward()
    return net, float(loss)


def test_segnet_basic_training_step_on_the_gpu_matches_the_cpu():
    cpu, cpu_loss = segnet_basic_step("cpu")
    gpu, gpu_loss = segnet_basic_step("gpu")
    assert gpu.blobs["conv_classifier"].tensor().device.type == expected_device()
    assert gpu_loss == pytest.approx(cpu_loss, rel=1e-4)
    assert_close(gpu.blobs["conv_classifier"].data, cpu.blobs["conv_classifier"].data, 1e-4,
                 "class scores")
    for name, blobs in cpu.params.items():
        for k, blob in enumerate(blobs):
            assert_close(gpu.params[name][k].diff, blob.diff, 2e-3, f"gradient {name}[{k}]")


def solver_losses(device, iterations=3, **options):
    """The losses of `iterations` SGD iterations of SegNet-Basic (its generated solver settings) on
    a fixed batch, and the solver."""
    use(device)
    with caffe.options(**options):
        param = nets.solver_param("segnet_basic", nets.net_param("segnet_basic", "train", 2, SIZE))
        solver = caffe.get_solver(param)
    images, labels = nets.inputs("segnet_basic", 2, SIZE)
    solver.net.blobs["data"].data[...] = images.numpy()
    solver.net.blobs["label"].data[...] = labels.numpy()
    losses = []
    for _ in range(iterations):
        solver.step(1)
        losses.append(float(solver.net.blobs["loss"].data))
    return losses, solver


def test_solver_iterations_on_the_gpu_follow_the_cpu():
    cpu, cpu_solver = solver_losses("cpu")
    gpu, gpu_solver = solver_losses("gpu")
    assert_close(gpu, cpu, 1e-3, "losses")
    for name, blobs in cpu_solver.net.params.items():
        for k, blob in enumerate(blobs):
            assert_close(gpu_solver.net.params[name][k].data, blob.data, 1e-2, f"{name}[{k}]")


def test_bf16_channels_last_training_on_the_gpu_follows_float32():
    reference, _ = solver_losses("gpu", iterations=5)
    losses, solver = solver_losses("gpu", iterations=5, bf16=True, channels_last=True)
    if not ON_CPU:
        assert solver.net.options.computes_bf16("cuda")
    assert all(np.isfinite(losses))
    assert_close(losses, reference, 5e-2, "bfloat16 losses against float32's")
    assert all(p.blob.tensor().dtype == torch.float32 for p in solver.net.learnable_params)


POOL_NET = """
input: "x" input_shape { dim: 2 dim: 3 dim: 9 dim: 10 } force_backward: true
layer { name: "pool" type: "Pooling" bottom: "x" top: "pool" top: "mask"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "up" type: "Upsample" bottom: "pool" bottom: "mask" top: "up"
        upsample_param { upsample_h: 9 upsample_w: 10 } }
"""


@pytest.mark.parametrize("compact_masks", [True, False])
def test_pooling_masks_and_upsample_on_the_gpu_equal_the_cpu(compact_masks):
    x = np.random.default_rng(0).normal(size=(2, 3, 9, 10)).astype(np.float32)
    top_diff = np.random.default_rng(1).normal(size=(2, 3, 9, 10)).astype(np.float32)
    results = []
    for device in ("cpu", "gpu"):
        use(device)
        with caffe.options(compact_masks=compact_masks):
            net = net_from_text(POOL_NET)
        out = net.forward(x=x)
        diffs = net.backward(up=top_diff)
        results.append((out["up"].copy(), net.blobs["mask"].data.copy(), diffs["x"].copy()))
    for what, gpu, cpu in zip(("upsampled", "mask", "input gradient"), results[1], results[0]):
        np.testing.assert_array_equal(gpu, cpu, err_msg=what)


def test_dense_image_data_feeds_the_gpu_with_cache_and_threads(tmp_path, monkeypatch):
    import cv2

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(5):
        cv2.imwrite(f"i{i}.png", rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
        cv2.imwrite(f"l{i}.png", rng.integers(0, 3, (12, 16), dtype=np.uint8))
        lines.append(f"i{i}.png l{i}.png\n")
    (tmp_path / "list.txt").write_text("".join(lines))
    text = """layer { name: "data" type: "DenseImageData" top: "data" top: "label"
        dense_image_data_param { source: "list.txt" batch_size: 3 shuffle: true mirror: true
                                 crop_height: 8 crop_width: 12 } }"""
    batches = []
    for device, options in (("cpu", {}), ("gpu", dict(data_cache=True, data_workers=4))):
        use(device)
        caffe.set_random_seed(5)
        with caffe.options(**options):
            net = net_from_text(text, phase="TRAIN")
        seen = []
        for _ in range(4):
            net.forward()
            seen.append((net.blobs["data"].data.copy(), net.blobs["label"].data.copy()))
        batches.append(seen)
    assert net.blobs["data"].tensor().device.type == expected_device()
    for (gpu_data, gpu_label), (cpu_data, cpu_label) in zip(batches[1], batches[0]):
        np.testing.assert_array_equal(gpu_data, cpu_data)
        np.testing.assert_array_equal(gpu_label, cpu_label)


def test_a_gpu_snapshot_resumes_on_the_cpu(tmp_path):
    _, gpu_solver = solver_losses("gpu", iterations=2)
    gpu_solver.param.snapshot_prefix = str(tmp_path / "run")
    _, state_path = gpu_solver.snapshot()
    _, cpu_solver = solver_losses("cpu", iterations=0)
    cpu_solver.restore(state_path)
    assert cpu_solver.iter == 2
    for name, blobs in gpu_solver.net.params.items():
        for k, blob in enumerate(blobs):
            np.testing.assert_array_equal(cpu_solver.net.params[name][k].data, blob.data)
    for restored, saved in zip(cpu_solver.history, gpu_solver.history):
        np.testing.assert_array_equal(restored.numpy(), saved.cpu().numpy())
