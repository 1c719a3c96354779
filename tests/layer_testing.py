"""Helpers for layer tests: build one-layer nets from prototxt text, check gradients numerically."""
import torch

from segnet_caffe import io
from segnet_caffe.layers import create_layer
from segnet_caffe.net import Net


def net_from_text(text, phase="TEST"):
    """A Net built from prototxt text (legacy `input:` lines or Input layers both work)."""
    return Net(io.parse_net_text(text, "<test>"), phase)


def layer_from_text(layer_text, bottom_shapes, phase="TEST"):
    """One layer built from the text of a `layer { ... }` body, set up for `bottom_shapes`."""
    param = io.parse_net_text(f"layer {{ {layer_text} }}", "<test>").layer[0]
    layer = create_layer(param, io.caffe_pb2.Phase.Value(phase))
    layer.check_counts()
    layer.setup([tuple(s) for s in bottom_shapes])
    return layer


def check_layer_gradients(layer, bottoms, check_params=True, check_bottoms=None, atol=1e-5, rtol=1e-3):
    """Finite-difference check (float64) of the layer's backward for the given bottom values.

    `bottoms` are tensors; `check_bottoms` lists the indices to differentiate (default: every
    floating bottom). Parameters are differentiated too when `check_params`.
    """
    if check_bottoms is None:
        check_bottoms = [i for i, b in enumerate(bottoms) if b.is_floating_point()]
    bottoms = [b.double() if i in check_bottoms else b for i, b in enumerate(bottoms)]
    params = [blob.tensor().detach().double() for blob in layer.blobs] if check_params else []
    saved = [blob.tensor() for blob in layer.blobs]
    variables = [bottoms[i].clone().requires_grad_(True) for i in check_bottoms]
    variables += [p.clone().requires_grad_(True) for p in params]

    def run(*values):
        inputs = list(bottoms)
        for i, value in zip(check_bottoms, values):
            inputs[i] = value
        for blob, value in zip(layer.blobs, values[len(check_bottoms):]):
            blob.set_tensor(value)
        tops = layer.forward(inputs)
        return tuple(t for t in tops if t is not None and t.is_floating_point())

    try:
        return torch.autograd.gradcheck(run, tuple(variables), atol=atol, rtol=rtol, eps=1e-6)
    finally:
        for blob, value in zip(layer.blobs, saved):
            blob.set_tensor(value)
