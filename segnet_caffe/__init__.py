"""segnet_caffe: Caffe's SegNet toolkit on PyTorch, with pycaffe's API.

    import segnet_caffe as caffe
    net = caffe.Net("deploy.prototxt", "weights.caffemodel", caffe.TEST)
"""
from . import io
from .blob import Blob
from .errors import CaffeError
from .layers.python_layer import Layer
from .mode import set_device, set_mode_cpu, set_mode_gpu, set_random_seed
from .net import TEST, TRAIN, Net
from .netspec import NetSpec, params, to_proto
from .netspec import layers  # noqa: E402  pycaffe's `caffe.layers` is NetSpec's layer factory;
# the layer implementations stay importable as the subpackage `segnet_caffe.layers.*`.
from .proto import caffe_pb2
from .solver import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver, RMSPropSolver,
                     SGDSolver, get_solver)

__version__ = "0.1.0"

__all__ = ["AdaDeltaSolver", "AdaGradSolver", "AdamSolver", "Blob", "CaffeError", "Layer",
           "NesterovSolver", "Net", "NetSpec", "RMSPropSolver", "SGDSolver", "TEST", "TRAIN",
           "caffe_pb2", "get_solver", "io", "layers", "params", "set_device", "set_mode_cpu",
           "set_mode_gpu", "set_random_seed", "to_proto"]
