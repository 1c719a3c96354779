"""segnet_caffe: Caffe's SegNet toolkit on PyTorch, with pycaffe's API.

    import segnet_caffe as caffe
    net = caffe.Net("deploy.prototxt", "weights.caffemodel", caffe.TEST)
"""
from .blob import Blob
from .errors import CaffeError
from .layers.python_layer import Layer
from .mode import set_device, set_mode_cpu, set_mode_gpu, set_random_seed
from .net import TEST, TRAIN, Net
from .proto import caffe_pb2

__version__ = "0.1.0"

__all__ = ["Blob", "CaffeError", "Net", "TEST", "TRAIN", "caffe_pb2", "set_device",
           "set_mode_cpu", "set_mode_gpu", "set_random_seed"]
