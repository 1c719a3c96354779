"""NetSpec: write Caffe nets in Python, as pycaffe's net_spec does.

    n = caffe.NetSpec()
    n.data, n.label = caffe.layers.DenseImageData(dense_image_data_param=dict(source="train.txt"), ntop=2)
    n.conv1 = caffe.layers.Convolution(n.data, num_output=64, kernel_size=7, pad=3)
    n.pool1, n.pool1_mask = caffe.layers.Pooling(n.conv1, pool=caffe.params.Pooling.MAX,
                                                 kernel_size=2, stride=2, ntop=2)
    print(n.to_proto())

As in pycaffe: `layers.<Type>(*inputs, **params)` makes a `Function` whose outputs are `Top`s
(`top.fn`, `top.n`; `fn.type_name`, `fn.inputs`, `fn.params`, `fn.ntop`, `fn.in_place`,
`fn.tops`), which `caffe.coord_map` reads. A keyword ending in "param" fills that
LayerParameter field; any other fills the layer type's own `<type>_param` message when that
message has the field, else the LayerParameter field of that name. Names assigned through a
NetSpec (`n.conv1 = ...`) name the layer and its first top; unnamed layers and tops get their
type plus a per-type counter (`Convolution1`, `ReLU2`), an in-place layer included (its tops
are its bottoms). Errors are pycaffe's types: TypeError for an input that is not a Top,
AttributeError for an unknown field, KeyError or AttributeError for a NetSpec name never set.

Where we differ: Deconvolution's keywords fill convolution_param and SoftmaxWithLoss's
softmax_param (pycaffe finds no message for them and raises AttributeError); an empty dict
writes an empty message (`loss_param {}`; pycaffe writes nothing, the net is the same); tuples
are accepted wherever lists are; in_place with ntop different from the number of inputs is an
error here (pycaffe writes a layer whose tops do not match its ntop); a NetSpec value that is
neither a Top nor a Function is a TypeError naming it (pycaffe: an AttributeError about
`_to_proto`).
"""
from collections import Counter, OrderedDict

from .errors import CaffeError
from .proto import caffe_pb2

# Layer types whose parameter message is not named after the type.
_EXTRA_PARAM_NAMES = {"Deconvolution": "convolution", "SoftmaxWithLoss": "softmax"}


class UnknownFieldError(CaffeError, AttributeError):
    """A keyword that names no field of the message it fills (pycaffe: AttributeError)."""


class MissingTopError(CaffeError, AttributeError, KeyError):
    """A NetSpec name that was never assigned (pycaffe: KeyError; AttributeError for getattr)."""


def param_name_dict():
    """{layer type: its parameter field without "_param"}, e.g. {"Convolution": "convolution"},
    from LayerParameter's `<x>_param` fields and their message names (pycaffe's), plus
    Deconvolution and SoftmaxWithLoss (ours)."""
    names = {}
    for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        message = field.message_type
        if field.name.endswith("_param") and message and message.name.endswith("Parameter"):
            names[message.name[:-len("Parameter")]] = field.name[:-len("_param")]
    names.update(_EXTRA_PARAM_NAMES)
    return names


_param_names = param_name_dict()


def _field(proto, name):
    field = proto.DESCRIPTOR.fields_by_name.get(name)
    if field is None:
        raise UnknownFieldError(f'{proto.DESCRIPTOR.name} has no field "{name}"')
    return field


def _fill(proto, values):
    for key, value in values.items():
        assign_proto(proto, key, value)


def assign_proto(proto, name, val):
    """Set field `name` of message `proto` from a Python value, as pycaffe does: dicts fill
    sub-messages, lists (or tuples) extend repeated fields (of scalars or of dicts), a single
    value given to a repeated field is a one-element list, other values are assigned."""
    field = _field(proto, name)
    if field.is_repeated:
        container = getattr(proto, name)
        for item in val if isinstance(val, (list, tuple)) else [val]:
            if isinstance(item, dict):
                _fill(container.add(), item)
            else:
                container.append(item)
    elif isinstance(val, dict):
        if field.message_type is None:
            raise TypeError(f"{proto.DESCRIPTOR.name}.{name} is not a message: give it a value, "
                            f"not a dict ({val!r})")
        getattr(proto, name).SetInParent()
        _fill(getattr(proto, name), val)
    else:
        setattr(proto, name, val)


def to_proto(*tops):
    """A NetParameter with every layer needed to compute `tops`, in dependency order; blobs
    and layers are auto-named (use NetSpec to name them)."""
    layers, autonames = OrderedDict(), Counter()
    for top in tops:
        top.fn._to_proto(layers, {}, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


class Top:
    """Output `n` of the layer function `fn`; give it to another layer as an input."""

    def __init__(self, fn, n):
        self.fn = fn
        self.n = n

    def to_proto(self):
        """A NetParameter holding this top and every layer it depends on."""
        return to_proto(self)

    def _to_proto(self, layers, names, autonames):
        return self.fn._to_proto(layers, names, autonames)


class Function:
    """A layer: its type, its inputs (Tops of other layers) and its parameters. The keywords
    `ntop` (default 1) and `in_place` (default False) are taken out of `params`."""

    def __init__(self, type_name, inputs, params):
        self.type_name = type_name
        for index, top in enumerate(inputs):
            if not isinstance(top, Top):
                raise TypeError(f"{type_name} input {index} is not a Top (type is {type(top)})")
        self.inputs = tuple(inputs)
        self.params = dict(params)
        self.ntop = self.params.pop("ntop", 1)
        self.in_place = self.params.pop("in_place", False)
        if self.in_place and self.ntop != len(self.inputs):
            raise CaffeError(f"{type_name}: in_place needs as many tops as inputs "
                             f"(ntop={self.ntop}, {len(self.inputs)} input(s))")
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _get_name(self, names, autonames):
        """The layer's name: its own (NetSpec), else its first top's, else Type<counter>."""
        if self not in names and self.ntop > 0:
            names[self] = self._get_top_name(self.tops[0], names, autonames)
        elif self not in names:
            names[self] = self._autoname(autonames)
        return names[self]

    def _get_top_name(self, top, names, autonames):
        """A top's name: its NetSpec name, else Type<counter> of the layer making it."""
        if top not in names:
            names[top] = top.fn._autoname(autonames)
        return names[top]

    def _autoname(self, autonames):
        autonames[self.type_name] += 1
        return f"{self.type_name}{autonames[self.type_name]}"

    def _to_proto(self, layers, names, autonames):
        """Add this layer, after the layers of its inputs, to the ordered dict `layers`."""
        if self in layers:
            return
        layer = caffe_pb2.LayerParameter(type=self.type_name)
        for top in self.inputs:
            top._to_proto(layers, names, autonames)
            layer.bottom.append(layers[top.fn].top[top.n])
        if self.in_place:
            layer.top.extend(layer.bottom)
        else:
            layer.top.extend(self._get_top_name(top, names, autonames) for top in self.tops)
        layer.name = self._get_name(names, autonames)
        for key, value in self.params.items():
            assign_proto(self._message_for(layer, key), key, value)
        layers[self] = layer

    def _message_for(self, layer, key):
        """The message a keyword fills: the layer for "...param" keywords, else the type's own
        parameter message if it has that field, else the layer."""
        if key.endswith("param") or self.type_name not in _param_names:
            return layer
        own = getattr(layer, _param_names[self.type_name] + "_param")
        return own if key in own.DESCRIPTOR.fields_by_name else layer


class NetSpec:
    """Named tops: `n.conv1 = layers.Convolution(n.data, ...)` names the layer and blob conv1.
    A top-less layer (ntop=0) is assigned as its Function and named the same way."""

    def __init__(self):
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name, value):
        self.tops[name] = value

    def __getattr__(self, name):
        try:
            return self.tops[name]
        except KeyError:
            raise MissingTopError(f'NetSpec has no top named "{name}"') from None

    def __setitem__(self, key, value):
        self.__setattr__(key, value)

    def __getitem__(self, item):
        return self.__getattr__(item)

    def to_proto(self):
        """The NetParameter of every assigned top and the layers they need, named by their
        attribute names (unnamed ones auto-named)."""
        for name, value in self.tops.items():
            if not isinstance(value, (Top, Function)):
                raise TypeError(f'NetSpec "{name}" holds {value!r} ({type(value).__name__}), '
                                "not a Top (or a top-less layer)")
        names = {value: name for name, value in self.tops.items()}
        layers, autonames = OrderedDict(), Counter()
        for value in self.tops.values():
            value._to_proto(layers, names, autonames)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return net


class Layers:
    """`layers.<Type>(*inputs, **params)`: the layer's Top, its tuple of Tops when ntop > 1,
    or the Function itself when ntop == 0."""

    def __getattr__(self, type_name):
        def layer_fn(*args, **kwargs):
            fn = Function(type_name, args, kwargs)
            if fn.ntop == 0:
                return fn
            return fn.tops[0] if fn.ntop == 1 else fn.tops
        return layer_fn


class Parameters:
    """`params.Pooling.MAX`: the enum value MAX of caffe_pb2.PoolingParameter."""

    def __getattr__(self, name):
        message = getattr(caffe_pb2, name + "Parameter", None)
        if message is None:
            raise AttributeError(f"caffe_pb2 has no {name}Parameter")

        class Param:
            def __getattr__(self, param_name):
                return getattr(message, param_name)
        return Param()


layers = Layers()
params = Parameters()
