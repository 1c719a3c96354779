"""Data layers: DenseImageData (SegNet fork) and ImageData (BVLC), on tiny PNGs written here, and
the DenseImageData fixtures recorded from real SegNet Caffe."""
import time

import cv2
import numpy as np
import pytest
import torch

import segnet_caffe as caffe
from segnet_caffe import CaffeError, io
from tests.conftest import SHARED_DIR, write_dataset
from tests.layer_testing import check_resume_gives_the_same_batch, net_from_text

DATA_FIXTURES = SHARED_DIR / "conformance" / "data"
FIXTURES = sorted(p.stem for p in DATA_FIXTURES.glob("*.npz")) if DATA_FIXTURES.is_dir() else []


def write_pairs(folder, count, height=4, width=6, seed=0):
    """`count` colour PNGs and grayscale label PNGs; returns the BGR images and the labels."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(count):
        images.append(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        labels.append(rng.integers(0, 12, (height, width), dtype=np.uint8))
    write_dataset(folder, images, labels, image_name="img/{}.png", label_name="lab/{}.png")
    return images, labels


def write_list(folder, lines, name="list.txt"):
    (folder / name).write_text("".join(line + "\n" for line in lines))
    return name


def dense_net(source, dense="", transform="", phase="TRAIN", batch_size=2):
    return net_from_text(f"""
        layer {{ name: "data" type: "DenseImageData" top: "data" top: "label"
                 transform_param {{ {transform} }}
                 dense_image_data_param {{ source: "{source}" batch_size: {batch_size} {dense} }} }}
    """, phase=phase)


@pytest.fixture
def pairs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative list files and paths are read from the working directory
    images, labels = write_pairs(tmp_path, 3)
    write_list(tmp_path, [f"img/{i}.png lab/{i}.png" for i in range(3)])
    return images, labels


def chw(image):
    return image.transpose(2, 0, 1).astype(np.float32)


# ----- DenseImageData ----------------------------------------------------------------------------
def test_dense_reads_bgr_and_gray_labels_and_wraps_inside_a_batch(pairs):
    images, labels = pairs
    net = dense_net("list.txt")
    assert net.blobs["data"].shape == (2, 3, 4, 6) and net.blobs["label"].shape == (2, 1, 4, 6)
    for batch in ([0, 1], [2, 0], [1, 2], [0, 1]):
        net.forward()
        np.testing.assert_array_equal(net.blobs["data"].data, np.stack([chw(images[i]) for i in batch]))
        np.testing.assert_array_equal(net.blobs["label"].data,
                                      np.stack([labels[i][None].astype(np.float32) for i in batch]))


def test_dense_transform_applies_to_the_image_only(pairs, tmp_path):
    images, labels = pairs
    net = dense_net("list.txt", transform="scale: 0.5 mean_value: 10 mean_value: 20 mean_value: 30")
    net.forward()
    mean = np.array([10, 20, 30], dtype=np.float32).reshape(3, 1, 1)
    np.testing.assert_allclose(net.blobs["data"].data[1], (chw(images[1]) - mean) * 0.5)
    np.testing.assert_array_equal(net.blobs["label"].data[1, 0], labels[1])
    mean_image = np.random.default_rng(1).uniform(0, 255, (1, 3, 4, 6)).astype(np.float32)
    io.write_binaryproto(str(tmp_path / "mean.binaryproto"), mean_image)
    net = dense_net("list.txt", transform='mean_file: "mean.binaryproto" scale: 2')
    net.forward()
    np.testing.assert_allclose(net.blobs["data"].data[0], (chw(images[0]) - mean_image[0]) * 2,
                               rtol=1e-6)


def test_dense_is_color_false_reads_one_channel(pairs, tmp_path):
    images, _ = pairs
    net = dense_net("list.txt", dense="is_color: false", batch_size=1)
    net.forward()
    gray = cv2.imread(str(tmp_path / "img" / "0.png"), cv2.IMREAD_GRAYSCALE)
    assert net.blobs["data"].shape == (1, 1, 4, 6)
    np.testing.assert_array_equal(net.blobs["data"].data[0, 0], gray)
    # OpenCV's luma: 0.299 R + 0.587 G + 0.114 B, rounded.
    luma = images[0][..., 2] * 0.299 + images[0][..., 1] * 0.587 + images[0][..., 0] * 0.114
    assert np.abs(gray - luma).max() <= 1


def test_dense_resize_is_bilinear_for_images_and_nearest_for_labels(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # 2x2 blocks whose means are whole numbers: halving bilinearly averages each block.
    image = np.kron(np.arange(12, dtype=np.uint8).reshape(2, 2, 3) * 8,
                    np.ones((2, 2, 1), dtype=np.uint8))
    image[0::2, 0::2] += 2
    image[1::2, 1::2] -= 2
    label = np.array([[1, 2], [3, 4]], dtype=np.uint8)
    cv2.imwrite("big.png", image)
    cv2.imwrite("small_label.png", np.kron(label, np.ones((2, 2), dtype=np.uint8)))
    cv2.imwrite("label.png", label)
    write_list(tmp_path, ["big.png small_label.png"], "down.txt")
    net = dense_net("down.txt", dense="new_height: 2 new_width: 2", batch_size=1)
    net.forward()
    block_mean = image.astype(np.float32).reshape(2, 2, 2, 2, 3).mean(axis=(1, 3))
    np.testing.assert_array_equal(net.blobs["data"].data[0], block_mean.transpose(2, 0, 1))
    np.testing.assert_array_equal(net.blobs["label"].data[0, 0], label)
    # Upsampling a label keeps its class ids: nearest neighbour, never a blend.
    cv2.imwrite("small.png", image[:2, :2])
    write_list(tmp_path, ["small.png label.png"], "up.txt")
    net = dense_net("up.txt", dense="new_height: 6 new_width: 6", batch_size=1)
    net.forward()
    np.testing.assert_array_equal(net.blobs["label"].data[0, 0],
                                  np.kron(label, np.ones((3, 3))).astype(np.float32))


def test_dense_crop_and_mirror_treat_image_and_label_alike(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(5)
    lines = []
    for i in range(4):
        image = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
        cv2.imwrite(f"i{i}.png", image)
        cv2.imwrite(f"l{i}.png", image[..., 0])  # the label is the image's blue channel
        lines.append(f"i{i}.png l{i}.png")
    write_list(tmp_path, lines)
    caffe.set_random_seed(11)
    net = dense_net("list.txt", dense="crop_height: 3 crop_width: 5 mirror: true", batch_size=4)
    seen = set()
    for _ in range(6):
        net.forward()
        assert net.blobs["data"].shape == (4, 3, 3, 5)
        np.testing.assert_array_equal(net.blobs["data"].data[:, 0], net.blobs["label"].data[:, 0])
        seen.add(net.blobs["data"].data.tobytes())
    assert len(seen) > 1  # the crops and flips are random


def test_dense_shuffle_is_seeded_and_covers_every_entry_each_epoch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    images, _ = write_pairs(tmp_path, 5)
    write_list(tmp_path, [f"img/{i}.png lab/{i}.png" for i in range(5)])
    keys = {chw(image).tobytes(): i for i, image in enumerate(images)}

    def order(seed, batches=5):
        caffe.set_random_seed(seed)
        net = dense_net("list.txt", dense="shuffle: true", batch_size=3)
        seq = []
        for _ in range(batches):
            net.forward()
            seq += [keys[item.tobytes()] for item in net.blobs["data"].data]
        return seq

    first = order(4)
    assert first == order(4)
    assert sorted(first[:5]) == sorted(first[5:10]) == list(range(5))
    assert any(order(seed)[:5] != list(range(5)) for seed in (4, 5, 6))


def test_dense_state_resumes_the_data_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_pairs(tmp_path, 5)
    write_list(tmp_path, [f"img/{i}.png lab/{i}.png" for i in range(5)])
    check_resume_gives_the_same_batch(
        lambda: dense_net("list.txt", dense="shuffle: true mirror: true", batch_size=2))


def _batches(make_net, count, options, state=None):
    """`count` (data, label) batches of a net built under `options`, optionally resumed from a
    data-layer state; the net is returned too."""
    with caffe.options(**options):
        caffe.set_random_seed(3)
        net = make_net()
    if state is not None:
        net.layers[0].load_state(state)
    seen = []
    for _ in range(count):
        net.forward()
        seen.append((net.blobs["data"].data.copy(), net.blobs["label"].data.copy()))
    return net, seen


def _assert_same(batches, reference):
    assert len(batches) == len(reference)
    for (data, label), (expected_data, expected_label) in zip(batches, reference):
        np.testing.assert_array_equal(data, expected_data)
        np.testing.assert_array_equal(label, expected_label)


def test_dense_prefetch_decodes_ahead_with_the_same_batches_and_resume(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_pairs(tmp_path, 5)
    write_list(tmp_path, [f"img/{i}.png lab/{i}.png" for i in range(5)])

    def batches(prefetch, count=4, state=None):
        return _batches(lambda: dense_net("list.txt", dense="shuffle: true mirror: true",
                                          batch_size=2),
                        count, dict(data_prefetch=prefetch), state)

    net, ahead = batches(True)
    _, plain = batches(False)
    for (data, label), (plain_data, plain_label) in zip(ahead, plain):
        np.testing.assert_array_equal(data, plain_data)
        np.testing.assert_array_equal(label, plain_label)
    # The next batch was decoded in the background: the next forward no longer decodes.
    net.layers[0]._cache[2].result()
    monkeypatch.setattr(net.layers[0], "load_batch", lambda k: pytest.fail("decoded late"))
    net.forward()
    # The saved state counts batches handed out, not decoded: a resume continues exactly.
    state = net.layers[0].state()
    _, resumed = batches(True, count=1, state=state)
    _, reference = batches(False, count=6)
    np.testing.assert_array_equal(resumed[0][0], reference[5][0])


def test_dense_root_folder_and_batch_size_one_with_varying_sizes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "root").mkdir()
    write_pairs(tmp_path / "root", 1, height=4, width=6, seed=1)
    small = np.full((2, 3, 3), 9, dtype=np.uint8)
    cv2.imwrite("root/img/small.png", small)
    cv2.imwrite("root/lab/small.png", small[..., 0])
    write_list(tmp_path, ["img/0.png lab/0.png", "img/small.png lab/small.png"])
    net = dense_net("list.txt", dense='root_folder: "root/"', batch_size=1)
    net.forward()
    assert net.blobs["data"].shape == (1, 3, 4, 6)
    net.forward()
    assert net.blobs["data"].shape == (1, 3, 2, 3) and net.blobs["label"].shape == (1, 1, 2, 3)


@pytest.mark.parametrize("lines, dense, transform, message", [
    (None, "", "", r'list file "missing.txt" does not exist'),
    ([], "", "", "is empty"),
    (["img/0.png lab/0.png", "img/1.png"], "", "", r"list.txt:2: 1 field;"),
    (["img/0.png lab/0.png extra"], "", "", r"list.txt:1: 3 fields"),
    (["img/0.png lab/0.png", "img/9.png lab/1.png"], "", "",
     r'list.txt:2: cannot read image "img/9.png": no such file'),
    (["img/0.png lab/0.png", "bad.png lab/1.png"], "", "",
     r'list.txt:2: cannot read image "bad.png": OpenCV cannot decode it'),
    (["img/0.png odd.png"], "", "", r'image "img/0.png" is 4x6 but label "odd.png" is 5x6'),
    (["img/0.png lab/0.png", "tall.png tall_label.png"], "", "", r"is 5x6 .* but .* is 4x6"),
    (["img/0.png lab/0.png"], "new_height: 4", "", "new_height and new_width together"),
    (["img/0.png lab/0.png"], "crop_width: 4", "", "crop_height and crop_width together"),
    (["img/0.png lab/0.png"], "", "crop_size: 2", "crop_height/crop_width"),
    (["img/0.png lab/0.png"], "", "mean_value: 1 mean_value: 2", "one per channel"),
    (["img/0.png lab/0.png"], "", 'mean_file: "nope.binaryproto"', "does not exist"),
    (["img/0.png lab/0.png"], "crop_height: 9 crop_width: 9", "", "smaller than crop"),
])
def test_dense_errors(tmp_path, monkeypatch, lines, dense, transform, message):
    monkeypatch.chdir(tmp_path)
    write_pairs(tmp_path, 2)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    cv2.imwrite("odd.png", np.zeros((5, 6), np.uint8))
    cv2.imwrite("tall.png", np.zeros((5, 6, 3), np.uint8))
    cv2.imwrite("tall_label.png", np.zeros((5, 6), np.uint8))
    source = "missing.txt" if lines is None else write_list(tmp_path, lines)
    with pytest.raises(CaffeError, match=message) as info:
        net = dense_net(source, dense=dense, transform=transform)
        net.forward()
    assert "\n" not in str(info.value)


def test_dense_tops_are_float32_on_the_mode_device(pairs):
    net = dense_net("list.txt")
    net.forward()
    tensor = net.blobs["data"].tensor()
    assert tensor.dtype == torch.float32 and tensor.device == caffe.mode.device()


@pytest.mark.skipif(not FIXTURES, reason=f"DenseImageData fixtures not found at {DATA_FIXTURES}")
@pytest.mark.parametrize("name", FIXTURES)
def test_dense_fixture(name, monkeypatch):
    monkeypatch.chdir(SHARED_DIR)  # the fixtures' paths are relative to shared/
    record = np.load(DATA_FIXTURES / f"{name}.npz")
    net = caffe.Net(str(DATA_FIXTURES / f"{name}.prototxt"), caffe.TRAIN)
    k = 0
    while f"data_fwd{k}" in record.files:
        net.forward()
        # Exact: unscaled images and labels are integers in float32.
        np.testing.assert_array_equal(net.blobs["data"].data, record[f"data_fwd{k}"])
        np.testing.assert_array_equal(net.blobs["label"].data, record[f"label_fwd{k}"])
        k += 1
    assert k > 0


# ----- ImageData ---------------------------------------------------------------------------------
def image_net(source, params="", transform="", phase="TRAIN", batch_size=2):
    return net_from_text(f"""
        layer {{ name: "data" type: "ImageData" top: "data" top: "label"
                 transform_param {{ {transform} }}
                 image_data_param {{ source: "{source}" batch_size: {batch_size} {params} }} }}
    """, phase=phase)


def test_image_data_labels_and_wrap(pairs, tmp_path):
    images, _ = pairs
    write_list(tmp_path, ["img/0.png 7", "img/1.png 3", "img/2.png 11"], "cls.txt")
    net = image_net("cls.txt", transform="scale: 0.25")
    assert net.blobs["label"].shape == (2,)
    net.forward()
    net.forward()
    np.testing.assert_array_equal(net.blobs["label"].data, [11.0, 7.0])
    np.testing.assert_allclose(net.blobs["data"].data, np.stack([chw(images[2]), chw(images[0])]) * 0.25)


def test_image_data_centre_crop_in_test_and_mirror(pairs, tmp_path):
    images, _ = pairs
    write_list(tmp_path, ["img/0.png 1"], "cls.txt")
    net = image_net("cls.txt", transform="crop_size: 2", phase="TEST", batch_size=1)
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data[0], chw(images[0])[:, 1:3, 2:4])
    caffe.set_random_seed(0)
    net = image_net("cls.txt", transform="mirror: true", batch_size=1)
    flips = set()
    for _ in range(8):
        net.forward()
        data = net.blobs["data"].data[0]
        flipped = np.array_equal(data, chw(images[0])[:, :, ::-1])
        assert flipped or np.array_equal(data, chw(images[0]))
        flips.add(flipped)
    assert flips == {True, False}


def test_image_data_errors(pairs, tmp_path):
    write_list(tmp_path, ["img/0.png seven"], "cls.txt")
    with pytest.raises(CaffeError, match=r"cls.txt:1: the label 'seven' is not an integer"):
        image_net("cls.txt")
    write_list(tmp_path, ["img/0.png 1"], "cls.txt")
    with pytest.raises(CaffeError, match="takes 2 top"):
        net_from_text('layer { name: "d" type: "ImageData" top: "data" '
                      'image_data_param { source: "cls.txt" batch_size: 1 } }')


# ----- the data cache and item threads (EngineOptions.data_cache, data_workers) -------------------
DATA_OPTIONS = [dict(data_cache=True), dict(data_workers=3), dict(data_cache=True, data_workers=3),
                dict(data_cache=True, data_workers=3, data_prefetch=False)]


@pytest.mark.parametrize("options", DATA_OPTIONS, ids=lambda o: ",".join(sorted(o)))
def test_dense_cache_and_workers_give_the_same_batches_and_resume(tmp_path, monkeypatch, options):
    monkeypatch.chdir(tmp_path)
    write_pairs(tmp_path, 5, height=6, width=8)
    write_list(tmp_path, [f"img/{i}.png lab/{i}.png" for i in range(5)])

    def make_net():  # random order, mirror and crop; batches of 3 wrap around the 5 entries
        return dense_net("list.txt", batch_size=3,
                         dense="shuffle: true mirror: true crop_height: 4 crop_width: 5",
                         transform="mean_value: 10 scale: 0.5")

    plain = dict(data_cache=False, data_workers=1, data_prefetch=False)
    _, reference = _batches(make_net, 7, plain)
    mirrored = [np.array_equal(d[:, :, :, ::-1], d) for d, _ in reference]
    assert not all(mirrored)  # the draws matter: a wrong rng per item would show
    net, batches = _batches(make_net, 4, options)
    _assert_same(batches, reference[:4])
    # A resume from the state after 4 batches continues with batch 5, whatever was cached.
    _, resumed = _batches(make_net, 3, options, state=net.layers[0].state())
    _assert_same(resumed, reference[4:])


def test_dense_cache_reads_each_file_once_and_says_its_size(tmp_path, monkeypatch, log_messages):
    from segnet_caffe.layer_types import list_data

    monkeypatch.chdir(tmp_path)
    write_pairs(tmp_path, 4)
    write_list(tmp_path, [f"img/{i}.png lab/{i}.png" for i in range(4)])
    reads = []
    imread = list_data.cv2.imread
    monkeypatch.setattr(list_data.cv2, "imread", lambda path, flag: reads.append(path)
                        or imread(path, flag))
    with caffe.options(data_cache=True, data_workers=2):
        net = dense_net("list.txt", dense="shuffle: true", batch_size=3)
    first = []
    for _ in range(2):  # 6 items: every entry read
        net.forward()
        first.append(net.blobs["data"].data.copy())
    assert sorted(reads) == sorted([f"img/{i}.png" for i in range(4)]
                                   + [f"lab/{i}.png" for i in range(4)])
    cached = [m for m in log_messages if "kept in memory" in m]
    assert cached == ['layer "data": all 4 entries of list.txt decoded and kept in memory '
                      '(0 MiB, data_cache)']
    for path in tmp_path.glob("*/*.png"):  # later epochs need no file
        path.unlink()
    for _ in range(4):
        net.forward()
    assert len(reads) == 8
    cached_arrays = net.layers[0]._decoded[0].result()
    assert not any(array.flags.writeable for array in cached_arrays)


def test_dense_cache_decodes_an_entry_once_when_threads_ask_for_it_together(tmp_path,
                                                                            monkeypatch):
    from segnet_caffe.layer_types import list_data

    monkeypatch.chdir(tmp_path)
    write_pairs(tmp_path, 2)
    write_list(tmp_path, ["img/0.png lab/0.png", "img/1.png lab/1.png"])
    reads = []
    imread = list_data.cv2.imread

    def slow_imread(path, flag):  # long enough for the other threads to ask meanwhile
        reads.append(path)
        time.sleep(0.05)
        return imread(path, flag)

    monkeypatch.setattr(list_data.cv2, "imread", slow_imread)
    with caffe.options(data_cache=True, data_workers=4, data_prefetch=False):
        net = dense_net("list.txt", batch_size=6)  # each entry 3 times in a batch
    net.forward()
    assert sorted(reads) == ["img/0.png", "img/1.png", "lab/0.png", "lab/1.png"]
    np.testing.assert_array_equal(net.blobs["data"].data[0], net.blobs["data"].data[2])


def test_image_data_cache_and_workers_give_the_same_batches(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_pairs(tmp_path, 3, height=5, width=7)
    write_list(tmp_path, ["img/0.png 7", "img/1.png 3", "img/2.png 11"], "cls.txt")

    def make_net():
        return image_net("cls.txt", params="shuffle: true", transform="crop_size: 3 mirror: true",
                         batch_size=2)

    _, reference = _batches(make_net, 5, dict(data_prefetch=False))
    _, batches = _batches(make_net, 5, dict(data_cache=True, data_workers=2))
    _assert_same(batches, reference)


def test_item_threads_raise_the_first_bad_item_as_reading_in_turn(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_pairs(tmp_path, 2)
    write_list(tmp_path, ["img/0.png lab/0.png", "img/missing.png lab/1.png",
                          "img/1.png lab/missing.png"])
    messages = []
    for options in (dict(data_prefetch=False), dict(data_workers=3, data_cache=True)):
        with caffe.options(**options):
            net = None
            with pytest.raises(CaffeError) as error:
                net = dense_net("list.txt", batch_size=3)
                net.forward()
        messages.append(str(error.value))
    assert messages[0] == messages[1]
    assert 'list.txt:2: cannot read image "img/missing.png": no such file' in messages[0]


def test_data_workers_must_be_a_positive_count():
    with pytest.raises(CaffeError, match=r"data_workers must be a whole number of threads, at "
                                         r"least 1; got 0"):
        with caffe.options(data_workers=0):
            pass
    with pytest.raises(CaffeError, match="got 2.5"):
        caffe.EngineOptions(data_workers=2.5)


def test_train_flags_set_the_data_options_of_its_nets(tmp_path, tiny_dataset, cli_in_process,
                                                      monkeypatch):
    from segnet_caffe import solver as solver_module

    (tmp_path / "net.prototxt").write_text(f"""
        layer {{ name: "data" type: "DenseImageData" top: "data" top: "label"
                 dense_image_data_param {{ source: "{tiny_dataset}" batch_size: 5 }} }}
        layer {{ name: "conv" type: "Convolution" bottom: "data" top: "score"
                 convolution_param {{ num_output: 2 kernel_size: 1 }} }}
        layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }}""")
    (tmp_path / "solver.prototxt").write_text(
        f'net: "{tmp_path}/net.prototxt" base_lr: 0.1 lr_policy: "fixed" max_iter: 2 '
        'snapshot_after_train: false')
    built, initial_history = [], solver_module.Solver._initial_history
    monkeypatch.setattr(solver_module.Solver, "_initial_history",
                        lambda self: built.append(self.options) or initial_history(self))
    status, err = cli_in_process("train", "--solver", tmp_path / "solver.prototxt",
                                 "--data_cache", "--data_workers", "2", "--log_file", "none")
    assert status == 0, err
    assert (built[0].data_cache, built[0].data_workers) == (True, 2)
    assert 'layer "data": all 5 entries of' in err
    with pytest.raises(SystemExit):
        cli_in_process("train", "--solver", tmp_path / "solver.prototxt", "--data_workers", "0")
