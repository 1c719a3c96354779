"""The BN-folding pass (Net.fold_bn): for inference, a Convolution and the per-channel affine
layers working in place right after it (INFERENCE-mode BN, use_global_stats BatchNorm, Scale),
plus an in-place activation after them (ReLU), run as one fused node.

Layers declare what the pass needs: `channel_affine()` (the per-channel (a, b) of
top = a * bottom + b, or None) and `in_place_activation()`. Only layers in place on the
convolution's top are folded, so every blob keeps Caffe's value (Caffe overwrites the
convolution's output in place too).
"""
import torch


class FoldedConvolution:
    """A Convolution with `affine_layers` folded into its filters and bias, scaled at each call
    from the current parameters, then `activation` applied in place on the fresh output. The
    executor runs it instead of the convolution and skips the layers of `chain`."""

    low_precision = True

    def __init__(self, conv, affine_layers, activation, chain):
        self.conv, self.affine_layers, self.activation = conv, affine_layers, activation
        self.chain = chain  # indices of the layers folded in

    def channel_affine(self):
        """The chain's combined (a, b), from the current parameters (detached: inference);
        (None, None) when only an activation is folded."""
        a, b = None, None
        for layer in self.affine_layers:
            a_j, b_j = (t.detach() for t in layer.channel_affine())
            a, b = (a_j, b_j) if a is None else (a * a_j, torch.addcmul(b_j, b, a_j))
        return a, b

    def convolve_affine(self, bottoms, affine=None):
        """The convolution with the affine layers folded in, without the activation; `affine`
        (a, b) when computed beforehand (the ONNX exporter takes it as constants)."""
        self.conv.check_bottoms(bottoms)
        a, b = affine if affine is not None else self.channel_affine()
        if a is None:
            return [self.conv.convolve(x, *self.conv.weights(x)) for x in bottoms]
        tops = []
        for x in bottoms:
            weight, bias = self.conv.weights(x)
            a_x, b_x = a.to(device=x.device, dtype=x.dtype), b.to(device=x.device, dtype=x.dtype)
            weight = weight * a_x.reshape((-1,) + (1,) * (weight.dim() - 1))
            bias = b_x if bias is None else torch.addcmul(b_x, bias, a_x)
            tops.append(self.conv.convolve(x, weight, bias))
        return tops

    def forward(self, bottoms):
        tops = self.convolve_affine(bottoms)
        return tops if self.activation is None else [self.activation(top) for top in tops]


def fold_bn(layers, layer_params):
    """{convolution index: FoldedConvolution} for each Convolution with one top followed by
    in-place channel-affine layers and/or an in-place activation on that top."""
    folds, i = {}, 0
    while i < len(layers):
        chain, affine, activation = [], [], None
        top = list(layer_params[i].top)
        if layers[i].type == "Convolution" and len(top) == 1:
            j = i + 1
            while _in_place_on(layer_params, j, top) and layers[j].channel_affine() is not None:
                chain.append(j)
                affine.append(layers[j])
                j += 1
            if _in_place_on(layer_params, j, top) and layers[j].in_place_activation():
                chain.append(j)
                activation = layers[j].in_place_activation()
        if chain:
            folds[i] = FoldedConvolution(layers[i], affine, activation, chain)
        i += 1 + len(chain)
    return folds


def _in_place_on(layer_params, index, top):
    """Whether layer `index` exists and works in place on the blobs `top`."""
    return (index < len(layer_params) and list(layer_params[index].bottom) == top
            and list(layer_params[index].top) == top)
