"""SegNet model builders on NetSpec: the report's simplified SegNet, SegNet-Basic, the full
VGG16 SegNet and their Bayesian (Monte-Carlo dropout) variants, each as a training net, an
inference net and a solver.

Every builder takes a `variant` ("train" or "inference"): training nets put BN in LEARN mode
and end in SoftmaxWithLoss + Accuracy; inference nets put BN in INFERENCE mode (statistics
folded in by scripts/compute_bn_statistics.py) and end in a Softmax `prob` blob.
"""
import math
from dataclasses import dataclass, field

from .netspec import NetSpec, layers as L, params as P
from .proto import caffe_pb2

LEARN_MULTS = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]
BN_MULTS = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=1, decay_mult=0)]


@dataclass
class DataSpec:
    """Where a net reads its images: DenseImageData list file and batch."""
    source: str
    root_folder: str = ""
    batch_size: int = 1
    shuffle: bool = False
    height: int = 360   # the net's input size (the images', or new_height/new_width's)
    width: int = 480
    crop: int = 0  # random square crops of this side (training), 0 for whole images
    resize: bool = False  # resize every image (bilinear) and label (nearest) to height x width


@dataclass
class LossSpec:
    """Classes, void label and (median-frequency) class weights of the loss."""
    num_classes: int
    ignore_label: int = -1
    class_weighting: list = field(default_factory=list)


def _data(n, data):
    param = dict(source=data.source, batch_size=data.batch_size, shuffle=data.shuffle)
    if data.root_folder:
        param["root_folder"] = data.root_folder
    if data.resize:
        param.update(new_height=data.height, new_width=data.width)
    if data.crop:
        param.update(crop_height=data.crop, crop_width=data.crop)
    n.data, n.label = L.DenseImageData(dense_image_data_param=param, ntop=2)
    return n.data


def _conv_bn(n, name, bottom, num_output, kernel, variant, relu):
    """conv -> BN (LEARN or INFERENCE) -> optional ReLU, with SegNet's names and fillers."""
    setattr(n, name, L.Convolution(bottom, num_output=num_output, kernel_size=kernel,
                                   pad=(kernel - 1) // 2, param=LEARN_MULTS,
                                   weight_filler=dict(type="msra"),
                                   bias_filler=dict(type="constant")))
    mode = P.BN.LEARN if variant == "train" else P.BN.INFERENCE
    setattr(n, name + "_bn", L.BN(getattr(n, name), param=BN_MULTS, in_place=True,
                                  bn_param=dict(bn_mode=mode,
                                                scale_filler=dict(type="constant", value=1),
                                                shift_filler=dict(type="constant", value=0.001))))
    top = getattr(n, name)
    if relu:
        setattr(n, relu, L.ReLU(top, in_place=True))
    return top


def _pool(n, index, bottom):
    pool, mask = L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=2, stride=2, ntop=2)
    setattr(n, f"pool{index}", pool)
    setattr(n, f"pool{index}_mask", mask)
    return pool


def _upsample(n, index, bottom, size):
    """Upsample by pool<index>'s mask back to the exact size of the map that was pooled."""
    param = dict(scale=2)
    if size is not None and (size[0] % 2 or size[1] % 2):
        # the pooling rounded an odd side up (Caffe's ceil): give the exact size back
        param.update(upsample_h=size[0], upsample_w=size[1])
    name = f"upsample{index}"
    setattr(n, name, L.Upsample(bottom, getattr(n, f"pool{index}_mask"), upsample_param=param))
    return getattr(n, name)


def _dropout(n, name, bottom, variant):
    param = dict(dropout_ratio=0.5)
    if variant == "inference":
        param["sample_weights_test"] = True  # Monte-Carlo dropout at test time
    setattr(n, name, L.Dropout(bottom, dropout_param=param))
    return getattr(n, name)


def _head(n, bottom, loss, variant, classifier="conv_classifier"):
    score = L.Convolution(bottom, num_output=loss.num_classes, kernel_size=1, param=LEARN_MULTS,
                          weight_filler=dict(type="msra"), bias_filler=dict(type="constant"))
    setattr(n, classifier, score)
    if variant == "inference":
        n.prob = L.Softmax(score)
        return
    loss_param = {}
    if loss.ignore_label >= 0:
        loss_param["ignore_label"] = loss.ignore_label
    if loss.class_weighting:
        loss_param.update(weight_by_label_freqs=True, class_weighting=list(loss.class_weighting))
    n.loss = L.SoftmaxWithLoss(score, n.label, loss_param=loss_param)
    accuracy = dict(ignore_label=loss.ignore_label) if loss.ignore_label >= 0 else {}
    n.accuracy, n.per_class_accuracy = L.Accuracy(score, n.label, ntop=2,
                                                  accuracy_param=accuracy)


def _pooled_sizes(height, width, levels):
    """Spatial size before each pooling (Caffe's ceil rounding), for the upsample sizes."""
    sizes = [(height, width)]
    for _ in range(levels):
        h, w = sizes[-1]
        sizes.append((math.ceil(h / 2), math.ceil(w / 2)))
    return sizes


def segnet_squares(data, loss, variant="train", name="segnet_squares", normalize_input=True):
    """The report's simplified SegNet: LRN, 2 encoders (7x7 conv 64, BN, ReLU, pool with mask),
    2 decoders (upsample by mask, 7x7 conv 64, BN), 1x1 classifier. Layer names are the
    report author's, so his .caffemodel files load by name.

    normalize_input puts an MVN layer (each image's channels to mean 0, variance 1) before the
    LRN: the net sees only about 40 px around a pixel, so without it the inside of a 90 px
    square looks like background, and only LEARN-mode BN at batch 1 (per-image statistics)
    could tell them apart. MVN has no parameters: the report author's weights still load."""
    return _segnet_basic_like(data, loss, variant, name, levels=2, dropout_levels=(),
                              normalize_input=normalize_input)


def segnet_basic(data, loss, variant="train", name="segnet_basic", bayesian=False):
    """SegNet-Basic (CamVid): LRN, 4 encoders and 4 decoders of 7x7 convs with 64 channels;
    Bayesian: dropout after the two central encoders and decoders."""
    return _segnet_basic_like(data, loss, variant, name, levels=4,
                              dropout_levels=(3, 4) if bayesian else ())


def _segnet_basic_like(data, loss, variant, name, levels, dropout_levels, normalize_input=False):
    n = NetSpec()
    top = _data(n, data)
    lrn = dict(local_size=5, alpha=0.0001, beta=0.75)  # the report's
    if normalize_input:
        n.mvn = L.MVN(top)
        top = n.mvn
        # y = x / sqrt(1 + |x|^2) over the 3 channels: squashes the normalised colours so that
        # a square's pixels look alike whatever the image size (MVN scales them by ~sqrt(1/f)
        # for a square covering a fraction f of the image).
        lrn = dict(local_size=5, alpha=5, beta=0.5, k=1)
    n.norm = L.LRN(top, lrn_param=lrn)
    top = n.norm
    for i in range(1, levels + 1):
        top = _conv_bn(n, f"conv{i}", top, 64, 7, variant, relu=f"relu{i}")
        top = _pool(n, i, top)
        if i in dropout_levels:
            top = _dropout(n, f"encdrop{i}", top, variant)
    sizes = _pooled_sizes(data.height, data.width, levels)
    for i in range(levels, 0, -1):
        top = _upsample(n, i, top, sizes[i - 1])
        top = _conv_bn(n, f"conv_decode{i}", top, 64, 7, variant, relu=None)
        if i in dropout_levels:
            top = _dropout(n, f"decdrop{i}", top, variant)
    _head(n, top, loss, variant)
    net = n.to_proto()
    net.name = name
    return net


VGG16_BLOCKS = [(1, 64, 2), (2, 128, 2), (3, 256, 3), (4, 512, 3), (5, 512, 3)]


def segnet_vgg16(data, loss, variant="train", name="segnet", bayesian=False):
    """Full SegNet: the 13 VGG16 conv layers (conv1_1 ... conv5_3, so VGG16 weights load by
    name) with BN and ReLU, 5 poolings with masks, and the mirrored 13-layer decoder
    (conv5_3_D ... conv1_1_D); Bayesian: dropout after encoders/decoders 3-5."""
    n = NetSpec()
    top = _data(n, data)
    dropped = (3, 4, 5) if bayesian else ()
    for block, channels, depth in VGG16_BLOCKS:
        for j in range(1, depth + 1):
            top = _conv_bn(n, f"conv{block}_{j}", top, channels, 3, variant, relu=f"relu{block}_{j}")
        top = _pool(n, block, top)
        if block in dropped:
            top = _dropout(n, f"encdrop{block}", top, variant)
    sizes = _pooled_sizes(data.height, data.width, len(VGG16_BLOCKS))
    for block, channels, depth in reversed(VGG16_BLOCKS):
        top = _upsample(n, block, top, sizes[block - 1])
        below = VGG16_BLOCKS[block - 2][1] if block > 1 else None  # channels the block hands on
        for j in range(depth, 0, -1):
            if j == 1 and below is None:
                break  # conv1_1_D is the classifier
            out = below if j == 1 else channels
            top = _conv_bn(n, f"conv{block}_{j}_D", top, out, 3, variant, relu=f"relu{block}_{j}_D")
        if block in dropped:
            top = _dropout(n, f"decdrop{block}", top, variant)
    _head(n, top, loss, variant, classifier="conv1_1_D")  # named after the layer it mirrors
    net = n.to_proto()
    net.name = name
    return net


def solver(net_path, snapshot_prefix, base_lr=0.1, max_iter=10000, snapshot=1000,
           test_net=None, test_iter=0, test_interval=0, display=20, gamma=1.0, stepsize=10000000,
           clip_gradients=None):
    """SegNet's solver settings (SGD, momentum 0.9, weight decay 5e-4, lr times gamma every
    stepsize iterations: by default a fixed lr, as SegNet's) on the CPU; clip_gradients: the
    L2 norm the whole gradient is scaled down to when larger (default: none)."""
    param = caffe_pb2.SolverParameter(
        net=net_path, base_lr=base_lr, lr_policy="step", gamma=gamma, stepsize=stepsize,
        weight_decay=0.0005, momentum=0.9, display=display, max_iter=max_iter,
        snapshot=snapshot, snapshot_prefix=snapshot_prefix, solver_mode=caffe_pb2.SolverParameter.CPU,
        random_seed=0, type="SGD")
    if clip_gradients is not None:
        param.clip_gradients = clip_gradients
    if test_net:
        param.test_net.append(test_net)
        param.test_iter.append(test_iter)
        param.test_interval = test_interval
    return param
