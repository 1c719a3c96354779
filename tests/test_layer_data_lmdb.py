"""Data (BVLC): Datum records from LMDB databases written here with the lmdb package."""

import cv2
import lmdb
import numpy as np
import pytest

import segnet_caffe as caffe
from segnet_caffe import CaffeError, distributed, io
from segnet_caffe.proto import caffe_pb2
from tests.layer_testing import check_resume_gives_the_same_batch, net_from_text


# ----- databases ---------------------------------------------------------------------------------
def write_lmdb(path, items):
    """An LMDB at `path` holding (key, Datum or bytes) items; returns its path as a string."""
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for key, value in items:
            key = key.encode() if isinstance(key, str) else key
            txn.put(key, value if isinstance(value, bytes) else value.SerializeToString())
    env.close()
    return str(path)


def raw_datum(chw, label=0):
    datum = caffe_pb2.Datum(channels=chw.shape[0], height=chw.shape[1], width=chw.shape[2],
                            data=np.ascontiguousarray(chw, dtype=np.uint8).tobytes(), label=label)
    return datum


def float_datum(chw, label=0):
    datum = caffe_pb2.Datum(channels=chw.shape[0], height=chw.shape[1], width=chw.shape[2],
                            label=label)
    datum.float_data.extend(np.asarray(chw, np.float32).ravel().tolist())
    return datum


def encoded_datum(image, label=0, ext=".png"):
    ok, buffer = cv2.imencode(ext, image)
    assert ok
    return caffe_pb2.Datum(data=buffer.tobytes(), encoded=True, label=label)


def key(i):
    return f"{i:08d}_item"  # convert_imageset's keys: LMDB order is the written order


def images(count, shape=(3, 4, 6), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(count)]


def data_net(source, data="", transform="", phase="TRAIN", batch_size=2, label=True,
             backend="backend: LMDB"):
    tops = 'top: "data" top: "label"' if label else 'top: "data"'
    return net_from_text(f"""
        layer {{ name: "data" type: "Data" {tops}
                 transform_param {{ {transform} }}
                 data_param {{ source: "{source}" {backend} batch_size: {batch_size} {data} }} }}
    """, phase=phase)


@pytest.fixture
def raw(tmp_path):
    """Five raw uint8 3x4x6 datums labelled 10..14, written in the order 4, 2, 0, 3, 1."""
    arrays = images(5)
    order = [4, 2, 0, 3, 1]
    path = write_lmdb(tmp_path / "raw_lmdb",
                      [(key(i), raw_datum(arrays[i], 10 + i)) for i in order])
    return path, arrays


def f32(array):
    return np.asarray(array, dtype=np.float32)


# ----- reading -----------------------------------------------------------------------------------
def test_raw_datums_in_key_order_wrapping_inside_a_batch(raw):
    source, arrays = raw
    net = data_net(source)
    assert net.blobs["data"].shape == (2, 3, 4, 6) and net.blobs["label"].shape == (2,)
    for batch in ([0, 1], [2, 3], [4, 0], [1, 2], [3, 4]):
        net.forward()
        np.testing.assert_array_equal(net.blobs["data"].data, f32(np.stack([arrays[i] for i in batch])))
        np.testing.assert_array_equal(net.blobs["label"].data, [10.0 + i for i in batch])


def test_one_top_gives_the_data_only(raw):
    source, arrays = raw
    net = data_net(source, label=False, batch_size=3)
    net.forward()
    assert list(net.blobs) == ["data"]
    np.testing.assert_array_equal(net.blobs["data"].data, f32(np.stack(arrays[:3])))


def test_float_datums_keep_their_values(tmp_path):
    rng = np.random.default_rng(1)
    arrays = [rng.normal(0, 100, (2, 3, 5)).astype(np.float32) for _ in range(3)]
    source = write_lmdb(tmp_path / "float_lmdb", [(key(i), float_datum(a, i)) for i, a in enumerate(arrays)])
    net = data_net(source, batch_size=3, transform="scale: 0.5")
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, np.stack(arrays) * np.float32(0.5))
    np.testing.assert_array_equal(net.blobs["label"].data, [0, 1, 2])


def test_encoded_datums_decode_as_opencv_does(tmp_path):
    colour = np.random.default_rng(2).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    gray = np.random.default_rng(3).integers(0, 256, (5, 4), dtype=np.uint8)
    source = write_lmdb(tmp_path / "png_lmdb", [(key(0), encoded_datum(colour, 7)),
                                                (key(1), encoded_datum(gray, 8))])
    # As stored (Caffe's DecodeDatumToCVMatNative): BGR colour, one-channel gray.
    net = data_net(source, batch_size=1)
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data[0], f32(colour.transpose(2, 0, 1)))
    assert net.blobs["label"].data[0] == 7
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data[0], f32(gray[None]))
    # force_color (transform_param) or force_encoded_color (data_param): gray becomes 3 channels.
    for data, transform in (("", "force_color: true"), ("force_encoded_color: true", "")):
        net = data_net(source, data=data, transform=transform, batch_size=2)
        net.forward()
        np.testing.assert_array_equal(net.blobs["data"].data[1], f32(np.stack([gray] * 3)))
    # force_gray: OpenCV's luma of the colour image.
    net = data_net(source, transform="force_gray: true", batch_size=2)
    net.forward()
    luma = cv2.imdecode(cv2.imencode(".png", colour)[1], cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(net.blobs["data"].data[0, 0], f32(luma))
    assert net.blobs["data"].shape == (2, 1, 5, 4)


def test_encoded_jpeg_matches_opencv(tmp_path):
    image = np.random.default_rng(4).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    datum = encoded_datum(image, 1, ext=".jpg")
    source = write_lmdb(tmp_path / "jpg_lmdb", [(key(0), datum)])
    net = data_net(source, batch_size=1)
    net.forward()
    expected = cv2.imdecode(np.frombuffer(datum.data, np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(net.blobs["data"].data[0], f32(expected.transpose(2, 0, 1)))


# ----- rand_skip, data-parallel split --------------------------------------------------------------
def test_rand_skip_is_fixed_by_set_random_seed(tmp_path):
    source = write_lmdb(tmp_path / "skip_lmdb",
                        [(key(i), raw_datum(np.full((1, 2, 2), i, np.uint8), i)) for i in range(8)])

    def labels(seed):
        caffe.set_random_seed(seed)
        net = data_net(source, data="rand_skip: 5", batch_size=3)
        net.forward()
        first = list(net.blobs["label"].data)
        net.forward()
        return first + list(net.blobs["label"].data)

    seen = set()
    for seed in range(8):
        run = labels(seed)
        assert run == labels(seed)
        skip = int(run[0])
        assert 0 <= skip < 5
        assert run == [float((skip + i) % 8) for i in range(6)]  # then sequential, wrapping
        seen.add(skip)
    assert len(seen) > 1


def test_processes_read_their_share_in_train_only(raw, monkeypatch):
    source, _ = raw
    monkeypatch.setattr(distributed, "data_shard", lambda: (1, 2))
    net = data_net(source)
    read = []
    for _ in range(3):
        net.forward()
        read.append(list(net.blobs["label"].data))
    # Step k's two batches are items 4k..4k+3; process 1 takes the second batch of each step.
    assert read == [[12.0, 13.0], [11.0, 12.0], [10.0, 11.0]]
    net = data_net(source, phase="TEST")
    net.forward()
    assert list(net.blobs["label"].data) == [10.0, 11.0]


# ----- transform_param -----------------------------------------------------------------------------
def test_mean_value_and_scale(raw):
    source, arrays = raw
    net = data_net(source, transform="scale: 0.25 mean_value: 10 mean_value: 20 mean_value: 30")
    net.forward()
    mean = f32([10, 20, 30]).reshape(3, 1, 1)
    np.testing.assert_allclose(net.blobs["data"].data, (f32(np.stack(arrays[:2])) - mean) * 0.25)
    net = data_net(source, transform="mean_value: 100")
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, f32(np.stack(arrays[:2])) - 100)


def crops(chw, size):
    """Every size x size window of a CxHxW array, and its mirror image: {(top, left, flip): window}."""
    _, height, width = chw.shape
    return {(top, left, flip): chw[:, top:top + size, left:left + size][:, :, ::-1 if flip else 1]
            for top in range(height - size + 1) for left in range(width - size + 1)
            for flip in (False, True)}


def test_random_crop_and_mirror_with_mean_file_in_train(raw, tmp_path):
    source, arrays = raw
    mean = np.random.default_rng(9).uniform(0, 255, (1, 3, 4, 6)).astype(np.float32)
    io.write_binaryproto(str(tmp_path / "mean.binaryproto"), mean)
    caffe.set_random_seed(5)
    net = data_net(source, batch_size=5, transform=f'crop_size: 3 mirror: true scale: 0.5 '
                                                   f'mean_file: "{tmp_path / "mean.binaryproto"}"')
    chosen = set()
    for _ in range(4):
        net.forward()
        assert net.blobs["data"].shape == (5, 3, 3, 3)
        for item, array in zip(net.blobs["data"].data, arrays):
            # The mean is cropped at the datum's offsets, and flipped with it.
            options = crops((f32(array) - mean[0]) * np.float32(0.5), 3)
            matches = [where for where, window in options.items()
                       if np.allclose(item, window, rtol=1e-6, atol=1e-4)]
            assert matches, "the item is no window of its datum"
            chosen.update(matches)
    assert {flip for _, _, flip in chosen} == {False, True}
    assert len({(top, left) for top, left, _ in chosen}) > 1


def test_test_phase_crops_the_centre_and_still_mirrors_at_random(raw):
    source, arrays = raw
    net = data_net(source, phase="TEST", batch_size=1, transform="crop_size: 3")
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data[0], f32(arrays[0][:, 0:3, 1:4]))
    # Caffe's DataTransformer mirrors whenever mirror is set, in TEST as in TRAIN.
    caffe.set_random_seed(0)
    net = data_net(source, phase="TEST", batch_size=5, transform="crop_size: 2 mirror: true")
    flips = set()
    for _ in range(3):
        net.forward()
        for item, array in zip(net.blobs["data"].data, arrays):
            centre = f32(array[:, 1:3, 2:4])
            assert np.array_equal(item, centre) or np.array_equal(item, centre[:, :, ::-1])
            flips.add(np.array_equal(item, centre[:, :, ::-1]))
    assert flips == {False, True}


# ----- state, prefetch ---------------------------------------------------------------------------
def test_state_resumes_the_data(raw):
    source, _ = raw
    settings = dict(data="rand_skip: 4", transform="crop_size: 3 mirror: true", batch_size=2)
    check_resume_gives_the_same_batch(lambda: data_net(source, **settings))


def test_prefetch_reads_ahead_with_the_same_batches(raw, monkeypatch):
    source, _ = raw

    def batches(prefetch):
        caffe.engine_options.set_default(data_prefetch=prefetch)
        caffe.set_random_seed(3)
        net = data_net(source, data="rand_skip: 3", transform="crop_size: 3 mirror: true")
        seen = []
        for _ in range(4):
            net.forward()
            seen.append((net.blobs["data"].data.copy(), net.blobs["label"].data.copy()))
        return net, seen

    net, ahead = batches(True)
    _, plain = batches(False)
    for (data, label), (plain_data, plain_label) in zip(ahead, plain):
        np.testing.assert_array_equal(data, plain_data)
        np.testing.assert_array_equal(label, plain_label)
    caffe.engine_options.set_default(data_prefetch=True)
    net.layers[0]._cache[2].result()  # the next batch was read in the background
    monkeypatch.setattr(net.layers[0], "load_batch", lambda k: pytest.fail("read late"))
    net.forward()


# ----- training ----------------------------------------------------------------------------------
def test_one_sgd_step_of_a_tiny_net(tmp_path):
    rng = np.random.default_rng(6)
    arrays = [rng.integers(0, 256, (1, 2, 3), dtype=np.uint8) for _ in range(6)]
    labels = [0, 2, 1, 1, 0, 2]
    source = write_lmdb(tmp_path / "train_lmdb",
                        [(key(i), raw_datum(a, label)) for i, (a, label) in enumerate(zip(arrays, labels))])
    (tmp_path / "net.prototxt").write_text(f"""
        layer {{ name: "mnist" type: "Data" top: "data" top: "label"
                 include {{ phase: TRAIN }}
                 transform_param {{ scale: 0.00390625 }}
                 data_param {{ source: "{source}" batch_size: 4 backend: LMDB }} }}
        layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
                 inner_product_param {{ num_output: 3 weight_filler {{ type: "constant" }}
                                        bias_filler {{ type: "constant" }} }} }}
        layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
    """)
    (tmp_path / "solver.prototxt").write_text(f"""
        net: "{tmp_path / 'net.prototxt'}"
        base_lr: 0.5 lr_policy: "fixed" momentum: 0 weight_decay: 0 max_iter: 1 display: 1
        snapshot_prefix: "{tmp_path / 'snap'}" solver_mode: CPU
    """)
    solver = caffe.SGDSolver(str(tmp_path / "solver.prototxt"))
    solver.step(1)
    # Zero weights give uniform probabilities: loss log 3, gradient (p - onehot)^T x / N.
    assert float(solver.net.blobs["loss"].data) == pytest.approx(np.log(3), rel=1e-6)
    x = np.stack([a.ravel() for a in arrays[:4]]).astype(np.float64) / 256
    delta = np.full((4, 3), 1 / 3) - np.eye(3)[labels[:4]]
    np.testing.assert_allclose(solver.net.params["ip"][0].data, -0.5 * delta.T @ x / 4, atol=1e-6)
    np.testing.assert_allclose(solver.net.params["ip"][1].data, -0.5 * delta.mean(axis=0), atol=1e-6)
    solver.step(1)  # the second batch wraps: items 4, 5, 0, 1
    np.testing.assert_array_equal(solver.net.blobs["label"].data, [0, 2, 0, 2])


def test_a_bad_label_names_its_key(tmp_path):
    source = write_lmdb(tmp_path / "labels_lmdb",
                        [(key(0), raw_datum(np.zeros((1, 1, 2), np.uint8), 1)),
                         (key(1), raw_datum(np.zeros((1, 1, 2), np.uint8), 9))])
    net = net_from_text(f"""
        layer {{ name: "data" type: "Data" top: "data" top: "label"
                 data_param {{ source: "{source}" batch_size: 2 backend: LMDB }} }}
        layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
                 inner_product_param {{ num_output: 3 }} }}
        layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
    """, phase="TRAIN")
    with pytest.raises(CaffeError, match=r'key "00000001_item"'):
        net.forward()


# ----- errors ------------------------------------------------------------------------------------
@pytest.fixture
def databases(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = images(2)
    write_lmdb("good", [(key(0), raw_datum(a, 1)), (key(1), raw_datum(b, 2))])
    write_lmdb("mixed", [("a", raw_datum(a, 1)), ("b", raw_datum(a[:, :3], 2))])
    write_lmdb("channels", [("a", raw_datum(a, 1)), ("b", raw_datum(a[:1], 2))])
    write_lmdb("short", [("a", caffe_pb2.Datum(channels=3, height=4, width=6, data=b"x" * 10))])
    write_lmdb("nodata", [("a", caffe_pb2.Datum(channels=3, height=4, width=6))])
    write_lmdb("badpng", [("a", caffe_pb2.Datum(data=b"not a png", encoded=True))])
    write_lmdb("notdatum", [("a", b"\xff\xff\xff\xff")])
    write_lmdb("empty", [])
    (tmp_path / "leveldb").mkdir()
    (tmp_path / "leveldb" / "CURRENT").write_text("MANIFEST-000001\n")
    io.write_binaryproto("mean.binaryproto", np.zeros((1, 3, 5, 6), np.float32))


@pytest.mark.parametrize("source, data, transform, tops, message", [
    ("nope", "", "", 2, r'LMDB "nope" does not exist \(relative paths are read from the working'),
    ("empty", "", "", 2, r'LMDB "empty" is empty'),
    ("leveldb", "", "", 2, r'"leveldb" is not an LMDB.*LevelDB.*convert_imageset -backend lmdb'),
    ("good/data.mdb", "", "", 2, "is a file: give the directory"),
    ("good", "backend: LEVELDB", "", 2, r"LEVELDB is not supported: LevelDB bindings .*"
                                        r"convert_imageset -backend lmdb"),
    ("good", "NO_BACKEND", "", 2, r"backend is not set.*\"good\" is an LMDB: add `backend: LMDB`"),
    ("mixed", "", "", 2, r'mixed key "b" gives 3x3x6 \(CxHxW\) but key "a", first in the '
                         r"same batch, gives 3x4x6.*set transform_param.crop_size, or batch_size 1"),
    ("channels", "", "crop_size: 2", 2, r'key "b" gives 1x2x2 .* but key "a"'),
    ("good", "", 'mean_file: "mean.binaryproto"', 2,
     r'key "00000000_item": the image is 3x4x6 \(CxHxW\) but the mean_file is 3x5x6'),
    ("good", "", "force_color: true force_gray: true", 2, "both force_color and force_gray"),
    ("good", "", "crop_size: 5", 2, r'key "00000000_item": the image is 4x6, smaller than crop_size 5'),
    ("good", "", "mean_value: 1 mean_value: 2", 2, "one per channel"),
    ("short", "", "", 2, r'key "a": the datum holds 10 data bytes but its shape 3x4x6 \(CxHxW\) needs 72'),
    ("nodata", "", "", 2, r'key "a": the datum holds neither data nor float_data'),
    ("badpng", "", "", 2, r'key "a": cannot decode the encoded datum'),
    ("notdatum", "", "", 2, r'key "a": the value is not a Datum'),
    ("good", "", "", 3, "takes 1 to 2 top"),
    ("good", "batch_size: 0", "", 2, "batch_size must be at least 1"),
])
def test_errors_name_the_layer_in_one_line(databases, source, data, transform, tops, message):
    backend = "" if "backend" in data.lower() else "backend: LMDB"
    data = data.replace("NO_BACKEND", "")
    top_text = " ".join(f'top: "t{i}"' for i in range(tops))
    batch = "" if "batch_size" in data else "batch_size: 2"
    with pytest.raises(CaffeError, match=message) as info:
        net = net_from_text(f"""
            layer {{ name: "data" type: "Data" {top_text}
                     transform_param {{ {transform} }}
                     data_param {{ source: "{source}" {backend} {batch} {data} }} }}
        """, phase="TRAIN")
        net.forward()
    assert 'layer "data" (Data): ' in str(info.value)
    assert "\n" not in str(info.value)


def test_legacy_data_param_transform_fields_are_ignored_with_a_warning(raw, log_messages):
    source, arrays = raw
    net = data_net(source, data="scale: 0.5 mirror: true")
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, f32(np.stack(arrays[:2])))
    assert any("data_param scale, mirror ignored" in line for line in log_messages)


def test_force_color_on_raw_datums_is_said_once(raw, log_messages):
    source, _ = raw
    net = data_net(source, transform="force_color: true")
    net.forward()
    net.forward()
    assert sum("apply to encoded datums only" in line for line in log_messages) == 1
