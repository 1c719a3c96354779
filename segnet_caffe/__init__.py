"""segnet_caffe: Caffe's SegNet toolkit on PyTorch, with pycaffe's API.

    import segnet_caffe as caffe
    net = caffe.Net("deploy.prototxt", "weights.caffemodel", caffe.TEST)
"""
from . import coord_map, draw, io  # pycaffe's caffe.coord_map, caffe.draw (heavy imports lazy)
from .blob import Blob
from .classifier import Classifier
from .detector import Detector
from .engine_options import EngineOptions, options
from .errors import CaffeError
from .layer_types.python_layer import Layer
from .mode import set_device, set_mode_cpu, set_mode_gpu, set_random_seed
from .net import TEST, TRAIN, Net
from .process import (NCCL, Timer, has_nccl, init_log, layer_type_list, log, set_multiprocess,
                      set_solver_count, set_solver_rank, solver_count, solver_rank)
# pycaffe's `caffe.layers` is NetSpec's layer factory; the layer implementations are the
# subpackage `segnet_caffe.layer_types`.
from .netspec import NetSpec, layers, params, to_proto
from .proto import caffe_pb2
from .solver import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver, RMSPropSolver,
                     SGDSolver, get_solver)

__version__ = "0.1.0"

__all__ = ["AdaDeltaSolver", "AdaGradSolver", "AdamSolver", "Blob", "CaffeError", "Classifier",
           "Detector", "EngineOptions", "Layer",
           "NCCL", "NesterovSolver", "Timer", "has_nccl", "init_log", "layer_type_list", "log",
           "set_multiprocess", "set_solver_count", "set_solver_rank", "solver_count",
           "solver_rank", "Net", "NetSpec", "RMSPropSolver", "SGDSolver", "TEST", "TRAIN",
           "caffe_pb2", "coord_map", "draw", "get_solver", "io", "layers", "options", "params",
           "set_device", "set_mode_cpu", "set_mode_gpu", "set_random_seed", "to_proto"]
