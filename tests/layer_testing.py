"""Helpers for layer tests: build one-layer nets from prototxt text, check gradients numerically."""
import json

import numpy as np
import torch

from segnet_caffe import io, set_random_seed
from segnet_caffe.layer_types import create_layer
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


def pooling_masks(net):
    """{mask top: Caffe mask values} of every MAX Pooling layer of `net` that has a mask top."""
    return {tops[1]: net.blobs[tops[1]].data.copy() for name, tops in net.top_names.items()
            if net.layer_dict[name].type == "Pooling" and len(tops) == 2}


def forward_adopting_ties(net, masks, rtol, atol):
    """Run `net` forward one pooling at a time, taking each pooling's choice of maximum from
    `masks` ({mask top: Caffe mask values}, another kernel path's choices) wherever the two
    paths chose differently inside a window whose two candidates tie in `net` (differ by at
    most atol + rtol * |value|). Two kernel paths that round differently may break such a
    near-tie either way, and one flipped index moves a value a pixel away, so comparing the
    paths' outputs is only meaningful once both made the same choices. A different choice
    between candidates that do not tie is a real error and fails. Returns the count adopted."""
    names = list(net.layer_dict)
    adopted, start = 0, 0
    for i, name in enumerate(names):
        tops = net.top_names[name]
        pooled_with_mask = net.layer_dict[name].type == "Pooling" and len(tops) == 2
        if not pooled_with_mask and i < len(names) - 1:
            continue
        net.forward(start=names[start], end=name)
        start = i + 1
        if pooled_with_mask:
            adopted += _adopt_ties(net, net.bottom_names[name][0], tops[1], masks[tops[1]],
                                   rtol, atol)
    return adopted


def _adopt_ties(net, bottom, mask_top, theirs, rtol, atol):
    """Replace the pooling mask `mask_top` of `net` by `theirs` after checking that every index
    they differ at picks a value tied with the one `net` picked (see forward_adopting_ties)."""
    ours = net.blobs[mask_top].data.copy()
    differ = ours != theirs
    if not differ.any():
        return 0
    planes = net.blobs[bottom].data.reshape(ours.shape[0], ours.shape[1], -1)
    rows = np.nonzero(differ)
    picked = planes[rows[0], rows[1], ours[differ].astype(np.int64)]
    other = planes[rows[0], rows[1], theirs[differ].astype(np.int64)]
    gap = np.abs(picked - other)
    allowed = atol + rtol * np.abs(picked)
    worst = int(np.argmax(gap - allowed))
    assert gap[worst] <= allowed[worst], (
        f"{mask_top}: the other path's maximum {other[worst]} at index "
        f"{int(theirs[differ][worst])} is not tied with this one's {picked[worst]} at index "
        f"{int(ours[differ][worst])}")
    net.blobs[mask_top].data[...] = theirs
    return int(differ.sum())


def check_resume_gives_the_same_batch(make_net):
    """A data layer's saved state (through JSON, as in a snapshot) makes a new net, built under
    another seed, read the batch the first net reads next."""
    set_random_seed(2)
    net = make_net()
    for _ in range(3):
        net.forward()
    state = json.loads(json.dumps(net.layers[0].state()))
    net.forward()
    expected = net.blobs["data"].data.copy(), net.blobs["label"].data.copy()
    set_random_seed(99)
    resumed = make_net()
    resumed.layers[0].load_state(state)
    resumed.forward()
    np.testing.assert_array_equal(resumed.blobs["data"].data, expected[0])
    np.testing.assert_array_equal(resumed.blobs["label"].data, expected[1])


TINY_TRAIN_NET = """
layer { name: "d" type: "DummyData" top: "x" top: "y"
        dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "s" inner_product_param { num_output: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "s" bottom: "y" top: "l" }
"""


def tiny_solver_file(folder, settings):
    """A solver file in `folder` for a 3-input, 2-class InnerProduct net on DummyData, with
    `settings` (solver prototxt text) after its net and base_lr: 0.1, lr_policy: "fixed"."""
    (folder / "net.prototxt").write_text(TINY_TRAIN_NET)
    path = folder / "solver.prototxt"
    path.write_text(f'net: "{folder / "net.prototxt"}" base_lr: 0.1 lr_policy: "fixed" {settings}')
    return str(path)
