"""Coordinate maps between NetSpec tops, as pycaffe's coord_map: how a spatial position in one
blob relates to one in another, so that a Crop layer can align them (FCN's `crop` helper).

A map is (axis, a, b): output coordinate = a * input coordinate + b along every spatial axis
from `axis + 1` on (a and b are numpy arrays, one entry per axis, or scalars for the identity
(None, 1, 0) of pointwise layers). Maps compose along the layer graph and invert for the way
back.

    n.score = caffe.coord_map.crop(n.upscore, n.data)   # Crop layer with the right offset

Where we differ from pycaffe, and why: a layer's spatial settings are read from its own
parameter dict (`convolution_param=dict(...)` / `pooling_param=dict(...)` / `crop_param`)
merged over its plain keywords, so both NetSpec spellings work (pycaffe reads Pooling's only
as plain keywords); SegNet's BN layer maps pointwise; a global pooling has no map; the legacy
_h/_w check looks inside the parameter dicts too; the graph is walked breadth-first in a fixed
order (pycaffe pops from a set), which gives the same map on any consistent net. Failed checks
still raise AssertionError, as pycaffe's asserts do, but also under `python -O`.
"""
from collections import deque

import numpy as np

from .errors import CaffeError
from .netspec import _param_names, layers as L

PASS_THROUGH_LAYERS = ["AbsVal", "BatchNorm", "Bias", "BNLL", "Dropout", "Eltwise", "ELU",
                       "Log", "LRN", "Exp", "MVN", "Power", "ReLU", "PReLU", "Scale",
                       "Sigmoid", "Split", "TanH", "Threshold", "BN"]
_LEGACY_FIELDS = {"pad_h", "pad_w", "kernel_h", "kernel_w", "stride_h", "stride_w"}


class UndefinedMapException(CaffeError):
    """A layer with no coordinate mapping (not spatial, or not known to coord_map)."""


class AxisMismatchException(CaffeError):
    """Two maps on different axes cannot be composed."""


def _check(condition, message):
    if not condition:
        raise AssertionError(message)


def _spatial_params(fn):
    """fn's keywords with its own parameter dict (e.g. convolution_param) merged over them."""
    field = _param_names.get(fn.type_name, "") + "_param"
    return {**fn.params, **fn.params.get(field, {})}


def conv_params(fn):
    """(axis, stride, effective kernel extent, pad) of a Convolution, Deconvolution, Im2col or
    Pooling function, as 1-d arrays; the extent is (kernel_size - 1) * dilation + 1."""
    params = _spatial_params(fn)
    _check(not _LEGACY_FIELDS & set(params), "cropping does not support legacy _h/_w params")
    if params.get("global_pooling"):
        raise UndefinedMapException(f"{fn.type_name} with global_pooling has no coordinate map")
    kernel = np.array(params["kernel_size"], ndmin=1)
    dilation = np.array(params.get("dilation", 1), ndmin=1)
    return (params.get("axis", 1), np.array(params.get("stride", 1), ndmin=1),
            (kernel - 1) * dilation + 1, np.array(params.get("pad", 0), ndmin=1))


def crop_params(fn):
    """(axis, offset) of a Crop function, with Caffe's defaults (2: crop H and W; 0)."""
    params = _spatial_params(fn)
    return params.get("axis", 2), np.array(params.get("offset", 0), ndmin=1)


def coord_map(fn):
    """The map (axis, a, b) from fn's input coordinates to its output coordinates: output
    coordinate i * a comes from input coordinate i, shifted by b; (None, 1, 0) for pointwise
    layers. Raises UndefinedMapException for other layers."""
    if fn.type_name in ("Convolution", "Pooling", "Im2col"):
        axis, stride, extent, pad = conv_params(fn)
        return axis, 1 / stride, (pad - (extent - 1) / 2) / stride
    if fn.type_name == "Deconvolution":
        axis, stride, extent, pad = conv_params(fn)
        return axis, stride, (extent - 1) / 2 - pad
    if fn.type_name in PASS_THROUGH_LAYERS:
        return None, 1, 0
    if fn.type_name == "Crop":
        axis, offset = crop_params(fn)
        return axis - 1, 1, -offset  # -1: the last axis that is not cropped
    raise UndefinedMapException(f"{fn.type_name} layers have no coordinate map")


def compose(base_map, next_map):
    """base_map followed by next_map: scales multiply, next_map's shift is scaled by base's."""
    ax1, a1, b1 = base_map
    ax2, a2, b2 = next_map
    if ax1 is not None and ax2 is not None and ax1 != ax2:
        raise AxisMismatchException(f"cannot compose maps on axes {ax1} and {ax2}")
    return (ax2 if ax1 is None else ax1), a1 * a2, a1 * b2 + b1


def inverse(coord_map):
    """The map back: de-scale and un-shift."""
    ax, a, b = coord_map
    return ax, 1 / a, -b / a


def _mappable_inputs(top):
    """The inputs whose coordinates map to top's: all of them, but only a Crop's first (its
    second gives the size to crop to)."""
    inputs = top.fn.inputs
    return inputs[:1] if top.fn.type_name == "Crop" else inputs


def _walk_back(top):
    """Yield (ancestor, map from ancestor to top) breadth-first from top itself, composing
    the maps of the layers passed; layers without a map end their path."""
    maps = {top: (None, 1, 0)}
    frontier = deque([top])
    while frontier:
        current = frontier.popleft()
        yield current, maps[current]
        try:
            step = coord_map(current.fn)
        except UndefinedMapException:
            continue
        for bottom in _mappable_inputs(current):
            if bottom not in maps:
                maps[bottom] = compose(maps[current], step)
                frontier.append(bottom)


def coord_map_from_to(top_from, top_to):
    """The map (axis, a, b) from top_from's coordinates to top_to's, through a common
    ancestor: top_to's coordinate i corresponds to top_from's a * i + b. RuntimeError when
    no ancestor is reached through spatial layers."""
    from_maps = dict(_walk_back(top_from))
    for ancestor, to_map in _walk_back(top_to):
        if ancestor in from_maps:
            return compose(to_map, inverse(from_maps[ancestor]))
    raise RuntimeError("Could not compute map between tops; are they connected by spatial "
                       "layers?")


def crop(top_from, top_to):
    """A Crop layer (NetSpec Top) cutting top_from to top_to's extent, with the axis and
    offsets its coordinate map gives. AssertionError when the scales differ, the offset is
    negative (top_from would be smaller) or not whole, or no spatial layer relates them."""
    ax, a, b = coord_map_from_to(top_from, top_to)
    _check(ax is not None, "no spatial layer between the tops: nothing to crop")
    _check(np.all(a == 1), f"scale mismatch on crop (a = {a})")
    _check(np.all(b <= 0), f"cannot crop negative offset (b = {b})")
    _check(np.all(np.round(b) == b), f"cannot crop noninteger offset (b = {b})")
    offset = [int(-value) for value in np.round(np.array(b, ndmin=1))]
    return L.Crop(top_from, top_to, crop_param=dict(axis=ax + 1, offset=offset))
