"""The hand-written eager PyTorch SegNets the engine is compared with.

Written as a user would write SegNet in plain PyTorch (nn.Conv2d, nn.BatchNorm2d,
F.max_pool2d(return_indices=True), F.max_unpool2d), with the same architecture as the
generated prototxt/ nets, so that a timing ratio engine / eager measures only what the Caffe
layer machinery costs. `load_engine_weights` copies an engine Net's parameters in by layer name
(tests/test_bench.py checks that both then compute the same forward).
"""
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

FORK_BN_EPS = 1e-9  # the SegNet fork's BN epsilon (segnet_caffe.layer_types.bn.FORK_EPS)


@dataclass(frozen=True)
class Architecture:
    """An encoder-decoder SegNet: per block (name, convolution channels), mirrored by the decoder."""
    encoder: tuple           # ((block name, (channels, ...)), ...), input side first
    kernel: int
    classes: int
    lrn: tuple               # LocalResponseNorm (size, alpha, beta, k) on the input, or ()
    decoder_relu: bool       # VGG16 SegNet's decoder has ReLUs, SegNet-Basic's has none
    vgg_names: bool          # conv{b}_{j} / conv{b}_{j}_D (VGG16) or conv{b} / conv_decode{b}
    ignore_label: int = -1   # the loss's void label (-1: none)
    mvn: bool = False        # per-image, per-channel mean/variance normalisation before the LRN


ARCHITECTURES = {
    "segnet_squares": Architecture(encoder=(("1", (64,)), ("2", (64,))), kernel=7, classes=2,
                                   lrn=(5, 5.0, 0.5, 1.0), mvn=True, decoder_relu=False,
                                   vgg_names=False),
    "segnet_basic": Architecture(encoder=tuple((str(b), (64,)) for b in range(1, 5)), kernel=7,
                                 classes=11, lrn=(5, 1e-4, 0.75, 1.0), decoder_relu=False,
                                 vgg_names=False,
                                 ignore_label=11),
    "segnet": Architecture(encoder=(("1", (64, 64)), ("2", (128, 128)), ("3", (256,) * 3),
                                    ("4", (512,) * 3), ("5", (512,) * 3)),
                           kernel=3, classes=11, lrn=(), decoder_relu=True, vgg_names=True,
                           ignore_label=11),
}


class ConvBN(nn.Sequential):
    """Convolution, batch normalisation and an optional ReLU."""

    def __init__(self, in_channels, out_channels, kernel, relu, caffe_name):
        layers = [nn.Conv2d(in_channels, out_channels, kernel, padding=(kernel - 1) // 2),
                  nn.BatchNorm2d(out_channels, eps=FORK_BN_EPS)]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)
        self.caffe_name = caffe_name


class SegNet(nn.Module):
    """SegNet: encoder blocks (conv-BN-ReLU, then 2x2 max pooling that keeps its indices), decoder
    blocks (max-unpooling by those indices, then conv-BN[-ReLU]) and a 1x1 classifier."""

    def __init__(self, arch, in_channels=3):
        super().__init__()
        self.arch = arch
        self.lrn = nn.LocalResponseNorm(*arch.lrn) if arch.lrn else None
        self.encoders = nn.ModuleList()
        channels = in_channels
        for block, widths in arch.encoder:
            convs = []
            for j, width in enumerate(widths, 1):
                name = f"conv{block}_{j}" if arch.vgg_names else f"conv{block}"
                convs.append(ConvBN(channels, width, arch.kernel, True, name))
                channels = width
            self.encoders.append(nn.Sequential(*convs))
        self.decoders = nn.ModuleList()
        blocks = list(arch.encoder)
        for index in range(len(blocks) - 1, -1, -1):
            block, widths = blocks[index]
            below = blocks[index - 1][1][-1] if index > 0 else None
            convs = []
            for j in range(len(widths), 0, -1):
                if arch.vgg_names and j == 1 and below is None:
                    break  # VGG16 SegNet: conv1_1_D is the classifier
                width = below if (j == 1 and below is not None) else widths[-1]
                name = f"conv{block}_{j}_D" if arch.vgg_names else f"conv_decode{block}"
                convs.append(ConvBN(channels, width, arch.kernel, arch.decoder_relu, name))
                channels = width
            self.decoders.append(nn.Sequential(*convs))
        self.classifier = nn.Conv2d(channels, arch.classes, 1)
        self.classifier.caffe_name = "conv1_1_D" if arch.vgg_names else "conv_classifier"

    def forward(self, x):
        return self.decode(*self.encode(x))

    def encode(self, x):
        """The encoder's output and, per pooling (input side first), its indices and input size."""
        if self.arch.mvn:
            x = x - x.mean((2, 3), keepdim=True)
            x = x / (x.square().mean((2, 3), keepdim=True).sqrt() + 1e-9)
        if self.lrn is not None:
            x = self.lrn(x)
        pooled = []
        for encoder in self.encoders:
            x = encoder(x)
            size = x.shape[2:]
            x, indices = F.max_pool2d(x, 2, 2, ceil_mode=True, return_indices=True)
            pooled.append((indices, size))
        return x, pooled

    def decode(self, x, pooled):
        """The class scores from the encoder's output and its poolings (as encode gives them)."""
        for decoder, (indices, size) in zip(self.decoders, reversed(pooled)):
            x = F.max_unpool2d(x, indices, 2, 2, output_size=size)
            x = decoder(x)
        return self.classifier(x)

    def loss(self, scores, labels, class_weights=None):
        """SoftmaxWithLoss as the fork computes it: class-weighted cross-entropy summed over the
        pixels not labelled void, divided by their count."""
        ignore = self.arch.ignore_label
        target = labels[:, 0].long()
        total = F.cross_entropy(scores, target, weight=class_weights, ignore_index=ignore,
                                reduction="sum")
        valid = (target != ignore).sum() if ignore >= 0 else target.numel()
        return total / valid


def build(net_name):
    """The eager SegNet of the generated net `net_name`."""
    return SegNet(ARCHITECTURES[net_name])


def caffe_layers(model):
    """{Caffe layer name: (conv, bn or None)} of the model's convolutions."""
    table = {}
    for module in model.modules():
        if isinstance(module, ConvBN):
            table[module.caffe_name] = (module[0], module[1])
    table[model.classifier.caffe_name] = (model.classifier, None)
    return table


@torch.no_grad()
def load_engine_weights(model, net):
    """Copy an engine Net's convolution and BN parameters into `model` by layer name.

    BN: the engine's scale/shift become weight/bias; running statistics mean 0, variance 1, so
    an eval() model computes the fork's INFERENCE BN (scale * x + shift) and a train() model
    its LEARN BN (batch statistics)."""
    for name, (conv, bn) in caffe_layers(model).items():
        weight, bias = net.params[name]
        conv.weight.copy_(torch.from_numpy(weight.data))
        conv.bias.copy_(torch.from_numpy(bias.data))
        if bn is not None:
            scale, shift = net.params[name + "_bn"]
            bn.weight.copy_(torch.from_numpy(scale.data).reshape(-1))
            bn.bias.copy_(torch.from_numpy(shift.data).reshape(-1))
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0)


def class_weights(net_name):
    """The class_weighting of the net's training loss (None when the loss is unweighted)."""
    from segnet_caffe import io
    from .nets import prototxt

    param = io.read_net_prototxt(str(prototxt(net_name, "train")))
    loss = next(layer.loss_param for layer in param.layer if layer.type == "SoftmaxWithLoss")
    return torch.tensor(list(loss.class_weighting)) if loss.weight_by_label_freqs else None


def fuse_bn(model):
    """The eval() model with each BatchNorm folded into its convolution (PyTorch's own
    fuse_conv_bn_eval), as a user would prepare a model for inference."""
    for module in model.modules():
        if isinstance(module, ConvBN):
            module[0] = fuse_conv_bn_eval(module[0], module[1])
            module[1] = nn.Identity()
    return model


# PyTorch (c10's alloc_cpu, Linux) aligns CPU allocations of 2 MiB and more to 2 MiB and
# madvises them MADV_HUGEPAGE when this is set before the process's first tensor allocation.
TRANSPARENT_HUGE_PAGES = {"THP_MEM_ALLOC_ENABLE": "1"}


@dataclass(frozen=True)
class EagerVariant:
    """One way a user would run the hand-written module."""
    description: str
    channels_last: bool = False
    fuse_bn: bool = False
    compile: bool = False
    kinds: tuple = ("inference", "train")
    environment: dict = field(default_factory=dict)  # as bench/variants.py's Variant


VARIANTS = {
    "eager": EagerVariant("hand-written nn.Module, float32 NCHW"),
    "eager_channels_last": EagerVariant("the same, model and input in channels_last",
                                        channels_last=True),
    "eager_channels_last_thp": EagerVariant("the same with transparent huge pages "
                                            "(THP_MEM_ALLOC_ENABLE=1)", channels_last=True,
                                            environment=TRANSPARENT_HUGE_PAGES),
    "eager_fused_channels_last": EagerVariant("channels_last with BN folded into the convolutions "
                                              "(torch.nn.utils.fusion.fuse_conv_bn_eval)",
                                              channels_last=True, fuse_bn=True,
                                              kinds=("inference",)),
    "eager_fused_channels_last_compiled": EagerVariant(
        "the same through torch.compile (Inductor; its compile time is in the warm-up run)",
        channels_last=True, fuse_bn=True, compile=True, kinds=("inference",)),
}
