"""What a Net says when something goes wrong: where bad labels came from, the first layer
whose output went non-finite, and out-of-memory errors naming the layer, batch and resolution."""
import torch

from .errors import CaffeError


def out_of_memory(error):
    """Whether `error` is a failed allocation: torch's CUDA OutOfMemoryError, its CPU allocator's
    RuntimeError, or Python's MemoryError (numpy)."""
    text = str(error)
    return (isinstance(error, (MemoryError, torch.OutOfMemoryError)) or "out of memory" in text
            or "can't allocate memory" in text)


def label_origin(net, index, error):
    """Which list file lines the bad labels of layer `index` came from (through Splits)."""
    name = net.param.layer[index].bottom[error.bottom_index]
    source = net._producer[name]
    while net.param.layer[source].type == "Split":
        source = net._producer[net.param.layer[source].bottom[0]]
    describe = getattr(net.layers[source], "describe_item", None)
    if describe is None:
        return f'the labels come from layer "{net._layer_names[source]}"'
    items = sorted(error.items.items())
    shown = "; ".join(f"{describe(n)}: {values}" for n, values in items[:3])
    more = f" (and {len(items) - 3} more items of this batch)" if len(items) > 3 else ""
    return f"found in {shown}{more}"


def non_finite_origin(net):
    """Which layer's output first holds NaN/inf, in forward order, read from the blobs as the
    last forward left them (an in-place layer's output is its producer's blob)."""
    for name, layer_param in zip(net._layer_names, net.param.layer):
        for top in layer_param.top:
            tensor = net.blobs[top].tensor()
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                return f'the first non-finite output is top "{top}" of layer "{name}"'
    return "no layer output holds NaN/inf"


def input_shape_text(net):
    """The batch size and resolution the net runs at, from its first 4-axis data blob."""
    for index, layer in enumerate(net.layers):
        if net.param.layer[index].bottom:
            continue
        for name in net.param.layer[index].top:
            shape = net.blobs[name].shape
            if len(shape) == 4:
                return (f"batch size {shape[0]} at resolution {shape[2]}x{shape[3]} "
                        f'(blob "{name}" {shape})')
    return "its input shapes " + ", ".join(f"{n} {net.blobs[n].shape}" for n in net.inputs)


def out_of_memory_error(net, index, what):
    """The CaffeError for an allocation that failed in the `what` pass of layer `index`."""
    net._saved.clear()
    if net._device.type == "cuda":
        torch.cuda.empty_cache()
    return CaffeError(f'out of memory ({net._device}) in the {what} of layer '
                      f'"{net._layer_names[index]}" of net "{net.name}" at '
                      f"{input_shape_text(net)}: lower batch_size (iter_size keeps the "
                      "effective batch) or the resolution (new_height/new_width)")
