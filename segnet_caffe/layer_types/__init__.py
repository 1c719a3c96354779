"""The layer registry: every layer type registers itself by its Caffe type string.

A new layer is one module in this package whose class carries `@register_layer("Type")`;
the net builder knows no layer by name, it asks `create_layer(layer_param, phase)`.
"""
import importlib
import pkgutil

from ..errors import CaffeError

_REGISTRY = {}


def register_layer(type_name):
    """Class decorator: make `cls` the implementation of Caffe layer type `type_name`."""
    def decorate(cls):
        if type_name in _REGISTRY:
            raise RuntimeError(f"layer type {type_name!r} registered twice")
        cls.type_name = type_name
        _REGISTRY[type_name] = cls
        return cls
    return decorate


def _load_all():
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def known_types():
    """The registered layer type strings, sorted."""
    return sorted(_REGISTRY)


def layer_class(type_name, layer_name="?"):
    """The class registered for `type_name`; a CaffeError naming the layer when there is none."""
    try:
        return _REGISTRY[type_name]
    except KeyError:
        raise CaffeError(f'layer "{layer_name}": unknown layer type "{type_name}"; '
                         f"known types: {', '.join(known_types())}") from None


# Caffe's data layers that this engine does not implement: a deploy net replaces them all the same.
_UNIMPLEMENTED_DATA_TYPES = ("HDF5Data", "WindowData")


def is_data_type(type_name):
    """Whether Caffe layer type `type_name` is a data layer (see BaseLayer.reads_data)."""
    if type_name in _REGISTRY:
        return _REGISTRY[type_name].reads_data
    return type_name in _UNIMPLEMENTED_DATA_TYPES


def create_layer(layer_param, phase):
    """Instantiate the layer that `layer_param.type` names, for `phase` (caffe_pb2.TRAIN/TEST)."""
    return layer_class(layer_param.type, layer_param.name)(layer_param, phase)


_load_all()
