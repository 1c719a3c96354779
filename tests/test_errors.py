"""Bad input gets one clear line: each case of docs/errors.md through the CLI (`segnet-caffe
train|test`, run in-process: exit status 1 and the one line on stderr) and through the Python
API (a CaffeError whose message is that same line).

Every case starts from a small valid set of files (tiny images, a list file, a net with
pooling + upsampling and a solver) in a temporary folder used as the working directory, breaks
one thing, and checks the message names the file, line, layer or blob at fault."""
import re

import cv2
import numpy as np
import pytest

import segnet_caffe as caffe
from tests.conftest import write_dataset

NET = """name: "tiny"
layer { name: "data" type: "DenseImageData" top: "data" top: "label"
  dense_image_data_param { source: "list.txt" batch_size: 2 } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" top: "mask"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "up" type: "Upsample" bottom: "pool" bottom: "mask" top: "up" upsample_param { scale: 2 } }
layer { name: "score" type: "Convolution" bottom: "up" top: "score"
  convolution_param { num_output: 2 kernel_size: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
"""
SOLVER = ('net: "net.prototxt" base_lr: 0.01 lr_policy: "fixed" max_iter: 2 display: 1 '
          'snapshot_prefix: "run" random_seed: 1\n')
LIST = "".join(f"img{i}.png lab{i}.png\n" for i in range(4))


@pytest.fixture
def case_dir(tmp_path, monkeypatch):
    """A folder with a valid tiny training setup, as the working directory."""
    rng = np.random.RandomState(0)
    images = [rng.randint(0, 255, (8, 8, 3)).astype(np.uint8) for _ in range(4)]
    label = np.zeros((8, 8), np.uint8)
    label[2:5, 3:6] = 1
    assert write_dataset(tmp_path, images, [label] * 4).read_text() == LIST
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(SOLVER)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli_error(cli_in_process, *args):
    """Run the CLI in this process; return its one error line (after checking exit status 1)."""
    status, err = cli_in_process(*args)
    assert status == 1, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("segnet-caffe: error: "), err
    return last[len("segnet-caffe: error: "):]


def edit(name, old, new):
    """A case preparation: replace `old` by `new` in file `name` (which must contain it)."""
    def prepare(folder):
        text = (folder / name).read_text()
        assert old in text, (name, old)
        (folder / name).write_text(text.replace(old, new))
    return prepare


def write(name, content):
    def prepare(folder):
        path = folder / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return prepare


def write_image(name, array):
    return lambda folder: cv2.imwrite(str(folder / name), array)


def both(*steps):
    def prepare(folder):
        for step in steps:
            step(folder)
    return prepare


def saved_weights(net_text):
    """A preparation writing w.caffemodel from a net defined by `net_text`."""
    def prepare(folder):
        (folder / "other.prototxt").write_text(net_text)
        caffe.Net("other.prototxt", caffe.TEST).save("w.caffemodel")
    return prepare


def saved_state(net_text):
    """A preparation writing other_iter_1.solverstate from one iteration of `net_text`."""
    def prepare(folder):
        (folder / "other.prototxt").write_text(net_text)
        (folder / "other_solver.prototxt").write_text(
            SOLVER.replace("net.prototxt", "other.prototxt").replace('"run"', '"other"'))
        solver = caffe.get_solver("other_solver.prototxt")
        solver.step(1)
        solver.snapshot()
    return prepare


def train_api(weights=None, resume=None):
    solver = caffe.get_solver("solver.prototxt", weights=weights)
    solver.solve(resume)


def label_with(values):
    label = np.zeros((8, 8), np.uint8)
    label[0, :len(values)] = values
    return label


TRAIN = ("train", "--solver", "solver.prototxt", "--log_file", "none")

# (case, preparation, CLI arguments, Python API call, expected message (a regex, searched))
CASES = [
    # ----- prototxt
    ("syntax error", edit("net.prototxt", 'top: "conv"\n', 'top: "conv"\n }}\n'), TRAIN, train_api,
     r'^net\.prototxt:5:3: Expected identifier or number, got }\.$'),
    ("unknown field", edit("net.prototxt", "kernel_size: 3", "kernal_size: 3"), TRAIN, train_api,
     r'^net\.prototxt:5:37: unknown field "kernal_size" in ConvolutionParameter; did you mean '
     r'"kernel_size"\?$'),
    ("unknown layer type", edit("net.prototxt", '"Upsample"', '"Unpool"'), TRAIN, train_api,
     r'^net\.prototxt: layer "up": unknown layer type "Unpool"; known types: AbsVal, .*Upsample'),
    ("bottom no layer produces", edit("net.prototxt", 'bottom: "up" top', 'bottom: "upp" top'),
     TRAIN, train_api,
     r'^net\.prototxt: layer "score": bottom blob "upp" \(bottom #0\) is not produced by any '
     r'earlier layer$'),
    ("top of two non-in-place layers",
     edit("net.prototxt", 'layer { name: "loss"', 'layer { name: "relu" type: "ReLU" bottom: "up" '
                                                  'top: "conv" }\nlayer { name: "loss"'), TRAIN,
     train_api, r'^net\.prototxt: layer "relu" \(ReLU\): top blob "conv" is already produced by '
                r'another layer \(only in-place layers may reuse a blob name\)$'),
    ("wrong number of bottoms", edit("net.prototxt", 'bottom: "pool" bottom: "mask"',
                                     'bottom: "pool"'), TRAIN, train_api,
     r'^net\.prototxt: layer "up" \(Upsample\): takes 2 bottom\(s\), got 1$'),
    ("wrong number of tops", edit("net.prototxt", 'top: "loss"', 'top: "loss" top: "p" top: "q"'),
     TRAIN, train_api, r'^net\.prototxt: layer "loss" \(SoftmaxWithLoss\): takes 1 to 2 top\(s\), '
                       r'got 3$'),
    ("kernel larger than padded input", edit("net.prototxt", "kernel_size: 3 pad: 1",
                                             "kernel_size: 11 pad: 1"), TRAIN, train_api,
     r'^net\.prototxt: layer "conv" \(Convolution\): the kernel \(11 along spatial axis 0, kernel '
     r'11 dilation 1\) is larger than the padded input \(10 = 8 \+ 2 \* pad 1\)'),
    ("num_output 0", edit("net.prototxt", "num_output: 4", "num_output: 0"), TRAIN, train_api,
     r'^net\.prototxt: layer "conv" \(Convolution\): num_output must be set to the number of '
     r'output channels \(> 0\)$'),
    ("group not dividing channels", edit("net.prototxt", "num_output: 4", "num_output: 4 group: 2"),
     TRAIN, train_api,
     r'^net\.prototxt: layer "conv" \(Convolution\): group 2 does not divide the bottom\'s 3 '
     r'channels$'),
    ("Upsample mask of another shape",
     edit("net.prototxt", 'bottom: "pool" bottom: "mask"', 'bottom: "pool" bottom: "conv"'), TRAIN,
     train_api, r'^net\.prototxt: layer "up" \(Upsample\): needs a 4-axis data bottom \(N, C, H, W\) '
                r'and a mask of the same shape, got \(2, 4, 4, 4\) and \(2, 4, 8, 8\)$'),
    ("Upsample mask that is no pooling mask",
     edit("net.prototxt", 'bottom: "pool" bottom: "mask"', 'bottom: "pool" bottom: "pool"'), TRAIN,
     train_api, r'^layer "up" \(Upsample\): mask index \d+ is outside the 8 x 8 output plane '
                r'\(Caffe would write out of bounds\): the mask must come from a pooling of an '
                r'8 x 8 map; set upsample_h / upsample_w to that map\'s size$'),
    ("unknown filler type", edit("net.prototxt", '"gaussian" std: 0.1 } } }\nlayer { name: "pool"',
                                 '"gausian" std: 0.1 } } }\nlayer { name: "pool"'), TRAIN, train_api,
     r'^net\.prototxt: layer "conv" \(Convolution\): unknown filler type "gausian"; known: '
     r'constant, uniform, gaussian, positive_unitball, xavier, msra, bilinear$'),
    # ----- solver
    ("solver without net", write("solver.prototxt", 'base_lr: 0.01 lr_policy: "fixed" max_iter: 2'),
     TRAIN, train_api, r'^solver\.prototxt: give exactly one of net, net_param, train_net, '
                       r'train_net_param \(found 0\)$'),
    ("net path that does not exist", edit("solver.prototxt", "net.prototxt", "nets/net.prototxt"),
     TRAIN, train_api, r'^solver\.prototxt: net file "nets/net\.prototxt" does not exist \(relative '
                       r'paths are resolved against the working directory /'),
    ("unknown lr_policy", edit("solver.prototxt", '"fixed"', '"stepp"'), TRAIN, train_api,
     r'^solver\.prototxt: unknown lr_policy "stepp"; known: fixed, step, exp, inv, multistep, '
     r'poly, sigmoid$'),
    ("unknown solver type", edit("solver.prototxt", "max_iter", 'type: "Adamm" max_iter'), TRAIN,
     train_api, r'^solver\.prototxt: unknown solver type "Adamm"; known: SGD, Nesterov, AdaGrad, '
                r'RMSProp, AdaDelta, Adam$'),
    ("test_iter without a test net",
     edit("solver.prototxt", "net:", "test_iter: 5 test_interval: 10 train_net:"), TRAIN, train_api,
     r'^solver\.prototxt: test_iter is given but there is no test net'),
    ("step policy without stepsize", edit("solver.prototxt", '"fixed"', '"step" gamma: 0.1'),
     TRAIN, train_api, r'^solver\.prototxt: lr_policy step needs a positive stepsize, got 0$'),
    ("step policy with negative stepsize",
     edit("solver.prototxt", '"fixed"', '"step" gamma: 0.1 stepsize: -10'), TRAIN, train_api,
     r'^solver\.prototxt: lr_policy step needs a positive stepsize, got -10$'),
    ("--keep_best without a test net", None, TRAIN + ("--keep_best", "loss"),
     lambda: caffe.get_solver("solver.prototxt").keep_best_by("loss"),
     r'^solver\.prototxt: --keep_best loss needs a test net that runs during training \(test_net, '
     r'or net for both phases, with test_iter and test_interval > 0\)$'),
    ("--keep_best of an output the test net lacks",
     edit("solver.prototxt", "max_iter", "test_iter: 1 test_interval: 1 max_iter"),
     TRAIN + ("--keep_best", "acuracy"),
     lambda: caffe.get_solver("solver.prototxt").keep_best_by("acuracy"),
     r'^solver\.prototxt: --keep_best acuracy: test net #0 \(net\.prototxt\) has no output '
     r'"acuracy"; its outputs: loss$'),
    # ----- weights
    ("missing weights file", None, TRAIN + ("--weights", "w.caffemodel"),
     lambda: train_api(weights="w.caffemodel"), r'^w\.caffemodel: cannot read \(No such file'),
    ("truncated weights", write("w.caffemodel", b"\x0a\x05tin"), TRAIN + ("--weights", "w.caffemodel"),
     lambda: train_api(weights="w.caffemodel"),
     r'^w\.caffemodel: not a Caffe binary NetParameter \(Wire format was corrupt: the file is '
     r'truncated or corrupt\)$'),
    ("text file as weights", write("w.caffemodel", "name: 'not binary'\n"),
     TRAIN + ("--weights", "w.caffemodel"), lambda: train_api(weights="w.caffemodel"),
     r'^w\.caffemodel: not a Caffe binary NetParameter \(Wire format was corrupt: the file is '
     r'truncated or corrupt, or a text file \(a prototxt\?\) where a binary file is expected\)$'),
    ("empty weights file", write("w.caffemodel", b""), TRAIN + ("--weights", "w.caffemodel"),
     lambda: train_api(weights="w.caffemodel"),
     r'^w\.caffemodel: empty file, not a Caffe binary NetParameter$'),
    ("weights whose shapes do not fit the net", saved_weights(NET.replace("num_output: 4", "num_output: 6")),
     ("test", "--model", "net.prototxt", "--weights", "w.caffemodel", "--iterations", "1"),
     lambda: caffe.Net("net.prototxt", "w.caffemodel", caffe.TEST),
     r'^w\.caffemodel: cannot copy parameter 0 of layer "conv": shape \(6, 3, 3, 3\) in the '
     r'weights, \(4, 3, 3, 3\) in the net$'),
    ("solverstate of another net", saved_state(NET.replace("num_output: 4", "num_output: 6")),
     TRAIN + ("--snapshot", "other_iter_1.solverstate"),
     lambda: train_api(resume="other_iter_1.solverstate"),
     r'^other_iter_1\.solverstate: history blob 0 has shape \(6, 3, 3, 3\), the net\'s parameter '
     r'conv\[0\] has \(4, 3, 3, 3\): the state belongs to another net$'),
    ("missing solverstate", None, TRAIN + ("--snapshot", "run_iter_5.solverstate"),
     lambda: train_api(resume="run_iter_5.solverstate"),
     r'^run_iter_5\.solverstate: cannot read \(No such file or directory\)$'),
    # ----- data
    ("list file missing", edit("net.prototxt", "list.txt", "lists.txt"), TRAIN, train_api,
     r'^net\.prototxt: layer "data" \(DenseImageData\): list file "lists\.txt" does not exist'),
    ("list file empty", write("list.txt", "\n"), TRAIN, train_api,
     r'^net\.prototxt: layer "data" \(DenseImageData\): list file "list\.txt" is empty: it needs '
     r'one "image_path label_path" per line$'),
    ("list line that is not two paths", write("list.txt", LIST + "img0.png\n"), TRAIN, train_api,
     r'^net\.prototxt: layer "data" \(DenseImageData\): list\.txt:5: 1 field; expected '
     r'"image_path label_path", got \'img0\.png\'$'),
    ("image that does not exist", edit("list.txt", "img1.png", "img9.png"), TRAIN, train_api,
     r'^net\.prototxt: layer "data" \(DenseImageData\): list\.txt:2: cannot read image "img9\.png": no such file$'),
    ("label that does not decode", both(write("junk.png", b"not a png"),
                                        edit("list.txt", "lab1.png", "junk.png")), TRAIN, train_api,
     r'^net\.prototxt: layer "data" \(DenseImageData\): list\.txt:2: cannot read label image "junk\.png": OpenCV '
     r'cannot decode it$'),
    ("image and label of different sizes", write_image("img1.png", np.zeros((8, 6, 3), np.uint8)),
     TRAIN, train_api, r'^net\.prototxt: layer "data" \(DenseImageData\): list\.txt:2: image "img1\.png" is 8x6 '
                       r'but label "lab1\.png" is 8x8 \(HxW\): they must match$'),
    ("images of different sizes in a batch",
     both(write_image("img1.png", np.zeros((6, 6, 3), np.uint8)),
          write_image("lab1.png", np.zeros((6, 6), np.uint8))), TRAIN, train_api,
     r'^net\.prototxt: layer "data" \(DenseImageData\): image "img1\.png" \(list\.txt:2\) is 6x6 \(HxW\) with 3 '
     r'channel\(s\) but "img0\.png" \(list\.txt:1\) in the same batch is 8x8 .*set '
     r'new_height/new_width'),
    ("label values that are no class", write_image("lab2.png", label_with([7, 200, 1])), TRAIN,
     train_api,
     r'^layer "loss" \(SoftmaxWithLoss\): label values \[7, 200\] are neither classes 0\.\.1; fix '
     r'the labels or set ignore_label; found in list\.txt:3 "img2\.png lab2\.png": \[7, 200\]$'),
    ("bad label values with an ignore label",
     both(write_image("lab1.png", label_with([9, 11])),
          edit("net.prototxt", 'top: "loss"', 'top: "loss" loss_param { ignore_label: 11 }')),
     TRAIN, train_api,
     r'label values \[9\] are neither classes 0\.\.1 nor the ignore_label 11; .* found in '
     r'list\.txt:2 "img1\.png lab1\.png": \[9\]$'),
]


@pytest.mark.parametrize("name, prepare, args, api, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(case_dir, cli_in_process, name, prepare, args, api, message):
    if prepare:
        prepare(case_dir)
    line = cli_error(cli_in_process, *args)
    assert "\n" not in line
    assert re.search(message, line), line
    with pytest.raises(caffe.CaffeError) as info:
        api()
    assert str(info.value) == line


def test_converted_channels_are_said_once_per_layer(case_dir, cli_in_process):
    rng = np.random.RandomState(1)
    cv2.imwrite("img0.png", rng.randint(0, 255, (8, 8)).astype(np.uint8))           # grayscale
    cv2.imwrite("img1.png", rng.randint(0, 255, (8, 8)).astype(np.uint8))
    cv2.imwrite("img2.png", rng.randint(0, 255, (8, 8, 4)).astype(np.uint8))        # BGRA
    colour = np.zeros((8, 8, 3), np.uint8)
    colour[2:4, 2:4] = (0, 0, 1)
    cv2.imwrite("lab3.png", colour)                                                  # colour label
    status, err = cli_in_process(*TRAIN)
    assert status == 0, err
    assert err.count('"img0.png" is a grayscale image, converted to BGR') == 1, err
    assert "img1.png" not in err
    assert err.count('"img2.png" is an image with an alpha channel, read as BGR') == 1
    assert err.count('"lab3.png" is a label image in colour (mode RGB), read as grayscale') == 1


def test_rgb_labels_with_equal_channels_read_quietly(case_dir, cli_in_process):
    """The squares data set stores labels as RGB (1, 1, 1): read as grayscale they are right."""
    for i in range(4):
        label = cv2.imread(f"lab{i}.png", cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(f"lab{i}.png", np.repeat(label[:, :, None], 3, axis=2))
    status, err = cli_in_process(*TRAIN)
    assert status == 0, err
    assert "label image in colour" not in err


def test_debug_shows_the_traceback_with_the_original_error(case_dir, cli_in_process, monkeypatch):
    edit("net.prototxt", "kernel_size: 3 pad: 1", "kernel_size: 11 pad: 1")(case_dir)
    monkeypatch.setenv("SEGNET_CAFFE_DEBUG", "1")
    with pytest.raises(caffe.CaffeError, match=r'^net\.prototxt: layer "conv"') as info:
        cli_in_process(*TRAIN)
    assert str(info.value.__cause__).startswith('layer "conv" (Convolution): the kernel')
    monkeypatch.delenv("SEGNET_CAFFE_DEBUG")
    with pytest.raises(caffe.CaffeError):
        cli_in_process(*TRAIN, "--debug")
