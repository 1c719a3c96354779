"""NetSpec: write Caffe nets in Python, as pycaffe's net_spec does.

    n = caffe.NetSpec()
    n.data, n.label = caffe.layers.DenseImageData(dense_image_data_param=dict(source="train.txt"), ntop=2)
    n.conv1 = caffe.layers.Convolution(n.data, num_output=64, kernel_size=7, pad=3)
    n.pool1, n.pool1_mask = caffe.layers.Pooling(n.conv1, pool=caffe.params.Pooling.MAX,
                                                 kernel_size=2, stride=2, ntop=2)
    print(n.to_proto())

Keyword arguments fill the layer's own `<type>_param` message unless they name a
LayerParameter field (`param`, `loss_weight`, `include`, ...) or end in `_param`. Which
`*_param` field belongs to which layer type is read from the schema's descriptors.
"""
from collections import OrderedDict

from .errors import CaffeError
from .proto import caffe_pb2


def _type_to_param_field():
    """{"Convolution": "convolution_param", ...} derived from LayerParameter's descriptor."""
    mapping = {}
    for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if field.name.endswith("_param") and field.message_type is not None:
            type_name = field.message_type.name
            if type_name.endswith("Parameter"):
                mapping[type_name[: -len("Parameter")]] = field.name
    # Layer types whose parameter message is named differently from the type.
    for type_name, field in (("Deconvolution", "convolution_param"),
                             ("SoftmaxWithLoss", "softmax_param"),
                             ("DenseImageData", "dense_image_data_param"),
                             ("BN", "bn_param"), ("Upsample", "upsample_param")):
        if field in caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name:
            mapping.setdefault(type_name, field)
    return mapping


_PARAM_FIELD = _type_to_param_field()


def assign(message, name, value):
    """Set field `name` of `message` from a Python value: dicts fill sub-messages, lists
    extend repeated fields (of scalars or of dicts), scalars are assigned."""
    fields = message.DESCRIPTOR.fields_by_name
    if name not in fields:
        raise CaffeError(f'{message.DESCRIPTOR.name} has no field "{name}"')
    field = fields[name]
    repeated = field.is_repeated
    values = value if isinstance(value, (list, tuple)) else [value]
    if repeated:
        container = getattr(message, name)
        for item in values:
            if isinstance(item, dict):
                element = container.add()
                for key, sub_value in item.items():
                    assign(element, key, sub_value)
            else:
                container.append(item)
    elif isinstance(value, dict):
        sub_message = getattr(message, name)
        sub_message.SetInParent()
        for key, sub_value in value.items():
            assign(sub_message, key, sub_value)
    else:
        setattr(message, name, value)


class Top:
    """One output of a layer function; give it to another layer as a bottom."""

    def __init__(self, function, index):
        self.function = function
        self.index = index

    def to_proto(self):
        """A NetParameter holding this top and everything it depends on."""
        return to_proto(self)


class LayerFunction:
    """A layer in a NetSpec graph: its type, its bottoms (Tops) and its parameters."""

    def __init__(self, type_name, bottoms, params):
        self.type_name = type_name
        for bottom in bottoms:
            if not isinstance(bottom, Top):
                raise CaffeError(f"layers.{type_name}: bottoms must be NetSpec tops, got {bottom!r}")
        self.bottoms = bottoms
        self.params = dict(params)
        self.ntop = self.params.pop("ntop", 1)
        self.in_place = self.params.pop("in_place", False)
        if self.in_place and self.ntop != len(bottoms):
            raise CaffeError(f"layers.{type_name}: in_place needs as many tops as bottoms")
        self.tops = tuple(Top(self, i) for i in range(self.ntop))

    def _top_name(self, top, names, autonames):
        if top not in names:
            autonames[top.function.type_name] = autonames.get(top.function.type_name, 0) + 1
            names[top] = f"{top.function.type_name}{autonames[top.function.type_name]}"
        return names[top]

    def _auto_layer_name(self, autonames):
        autonames[self.type_name] = autonames.get(self.type_name, 0) + 1
        return f"{self.type_name}{autonames[self.type_name]}"

    def build(self, layers, names, autonames):
        """Add this layer (after its bottoms' layers) to the ordered dict `layers`."""
        if self in layers:
            return
        bottom_names = []
        for bottom in self.bottoms:
            bottom.function.build(layers, names, autonames)
            bottom_names.append(layers[bottom.function].top[bottom.index])
        layer = caffe_pb2.LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottom_names)
        if self.in_place:
            layer.top.extend(layer.bottom)
            for top, name in zip(self.tops, layer.bottom):
                names.setdefault(top, name)
        else:
            layer.top.extend(self._top_name(top, names, autonames) for top in self.tops)
        layer.name = self.params.get("name") or (
            names[self.tops[0]] if self.tops else self._auto_layer_name(autonames))
        layer_fields = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
        for key, value in self.params.items():
            if key == "name":
                continue
            if key.endswith("_param") or (key in layer_fields and key not in self._own_fields()):
                assign(layer, key, value)
            else:
                field = _PARAM_FIELD.get(self.type_name)
                if field is None:
                    raise CaffeError(f'layers.{self.type_name}: "{key}" is not a LayerParameter '
                                     "field and this layer type has no *_param message")
                assign(getattr(layer, field), key, value)
        layers[self] = layer

    def _own_fields(self):
        field = _PARAM_FIELD.get(self.type_name)
        if field is None:
            return set()
        message = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name[field].message_type
        return set(message.fields_by_name)


def to_proto(*tops, names=None):
    """A NetParameter with the layers producing `tops` (and their inputs), in dependency order."""
    layers, names, autonames = OrderedDict(), dict(names or {}), {}
    for top in tops:
        top.function.build(layers, names, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


class NetSpec:
    """Named tops: `n.conv1 = layers.Convolution(n.data, ...)` names the layer and blob conv1."""

    def __init__(self):
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name, value):
        self.tops[name] = value

    def __getattr__(self, name):
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError(name) from None

    __setitem__ = __setattr__

    def __getitem__(self, name):
        return self.tops[name]

    def to_proto(self):
        """The NetParameter of every named top, layer names taken from the attribute names."""
        names = {top: name for name, top in self.tops.items() if isinstance(top, Top)}
        layers, autonames = OrderedDict(), {}
        for name, top in self.tops.items():
            if isinstance(top, LayerFunction):  # a layer without tops (Silence), ntop=0
                top.params.setdefault("name", name)
                top.build(layers, names, autonames)
            else:
                top.function.build(layers, names, autonames)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return net


class _Layers:
    """`layers.<Type>(*bottoms, **params)` -> the layer's top (or tuple of tops when ntop > 1)."""

    def __getattr__(self, type_name):
        def make(*bottoms, **params):
            function = LayerFunction(type_name, bottoms, params)
            if function.ntop == 0:
                return function
            return function.tops[0] if function.ntop == 1 else function.tops
        return make


class _Params:
    """`params.Pooling.MAX` -> the enum value from PoolingParameter (any *Parameter message)."""

    def __getattr__(self, message_name):
        message = getattr(caffe_pb2, message_name + "Parameter", None)
        if message is None:
            raise AttributeError(f"caffe_pb2 has no {message_name}Parameter")

        class _Enum:
            def __getattr__(self, value_name):
                return getattr(message, value_name)
        return _Enum()


layers = _Layers()
params = _Params()
