"""Building a net's graph from a NetParameter as Caffe's Net::Init does before it creates
layers: the include/exclude rules of the phase, level and stages (FilterNet), and Split layers
where a top feeds several bottoms (InsertSplits); their inverse for saving a net; and a net's
data layers without their crops."""
from .errors import CaffeError
from .proto import caffe_pb2


def state_meets_rule(state, rule):
    """Caffe's StateMeetsRule: does the net state (phase, level, stages) satisfy a NetStateRule?"""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    return all(s in stages for s in rule.stage) and not any(s in stages for s in rule.not_stage)


def filter_net(net_param, state):
    """The layers of `net_param` that the include/exclude rules keep for `state` (Caffe's FilterNet)."""
    filtered = caffe_pb2.NetParameter()
    filtered.CopyFrom(net_param)
    del filtered.layer[:]
    for layer in net_param.layer:
        if layer.include and layer.exclude:
            raise CaffeError(f'layer "{layer.name}": specify either include rules or exclude '
                             "rules, not both")
        if layer.include:
            keep = any(state_meets_rule(state, rule) for rule in layer.include)
        else:
            keep = not any(state_meets_rule(state, rule) for rule in layer.exclude)
        if keep:
            filtered.layer.add().CopyFrom(layer)
    return filtered


def split_layer_name(layer_name, blob_name, top_index):
    return f"{blob_name}_{layer_name}_{top_index}_split"


def split_blob_name(layer_name, blob_name, top_index, split_index):
    return f"{blob_name}_{layer_name}_{top_index}_split_{split_index}"


def insert_splits(net_param):
    """Caffe's InsertSplits: a top read by several layers (or read and weighted as a loss) gets a
    Split layer whose tops feed the readers one each, so that their diffs are summed."""
    last_top = {}            # blob name -> (layer index, top index) that last produced it
    source_of_bottom = {}    # (layer index, bottom index) -> (layer index, top index)
    readers = {}             # (layer index, top index) -> how many places consume it
    loss_weight = {}
    for i, layer in enumerate(net_param.layer):
        for j, name in enumerate(layer.bottom):
            if name not in last_top:
                raise CaffeError(f'layer "{layer.name}": bottom blob "{name}" (bottom #{j}) is '
                                 "not produced by any earlier layer")
            source = last_top[name]
            source_of_bottom[(i, j)] = source
            readers[source] = readers.get(source, 0) + 1
        for j, name in enumerate(layer.top):
            last_top[name] = (i, j)
            if j < len(layer.loss_weight):
                loss_weight[(i, j)] = layer.loss_weight[j]
                if layer.loss_weight[j]:
                    readers[(i, j)] = readers.get((i, j), 0) + 1
    split_param = caffe_pb2.NetParameter()
    split_param.CopyFrom(net_param)
    del split_param.layer[:]
    next_split = {}
    for i, layer in enumerate(net_param.layer):
        new_layer = split_param.layer.add()
        new_layer.CopyFrom(layer)
        for j, name in enumerate(layer.bottom):
            source = source_of_bottom[(i, j)]
            if readers[source] > 1:
                source_layer = net_param.layer[source[0]].name
                k = next_split.get(source, 0)
                next_split[source] = k + 1
                new_layer.bottom[j] = split_blob_name(source_layer, name, source[1], k)
        for j, name in enumerate(layer.top):
            count = readers.get((i, j), 0)
            if count > 1:
                split = split_param.layer.add()
                split.name = split_layer_name(layer.name, name, j)
                split.type = "Split"
                split.bottom.append(name)
                weight = loss_weight.get((i, j), 0.0)
                for k in range(count):
                    split.top.append(split_blob_name(layer.name, name, j, k))
                    if weight:
                        split.loss_weight.append(weight if k == 0 else 0.0)
    return split_param


def remove_splits(net_param):
    """The net without Split layers, their readers wired back to the split blob (the inverse of
    insert_splits, for writing a net a person will read)."""
    source = {top: layer.bottom[0] for layer in net_param.layer if layer.type == "Split"
              for top in layer.top}
    plain = caffe_pb2.NetParameter()
    plain.CopyFrom(net_param)
    del plain.layer[:]
    for layer in net_param.layer:
        if layer.type != "Split":
            kept = plain.layer.add()
            kept.CopyFrom(layer)
            kept.bottom[:] = [source.get(name, name) for name in layer.bottom]
    return plain


def without_crops(net_param):
    """A copy of net_param whose data layers read whole images (no crop_size, crop_height or
    crop_width)."""
    whole = caffe_pb2.NetParameter()
    whole.CopyFrom(net_param)
    for layer in whole.layer:
        layer.transform_param.ClearField("crop_size")
        layer.dense_image_data_param.ClearField("crop_height")
        layer.dense_image_data_param.ClearField("crop_width")
    return whole
