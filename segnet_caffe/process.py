"""pycaffe's process-level functions beyond the mode and device (those are in mode.py): logging,
the solver count and rank of a multi-process job, NCCL, Timer and the layer registry's list.

They keep pycaffe's names and signatures so that scripts written for pycaffe run unchanged.
"""
import logging
import time

from . import distributed
from .errors import CaffeError
from .layer_types import known_types
from .logs import get_logger

_GLOG_LEVELS = {0: logging.INFO, 1: logging.WARNING, 2: logging.ERROR, 3: logging.CRITICAL}


def layer_type_list():
    """The registered layer types, sorted (Caffe's LayerRegistry::LayerTypeList)."""
    return known_types()


def init_log(level=0, stderr=False):
    """pycaffe's init_log: log at glog's minimum level `level` (0 INFO, 1 WARNING, 2 ERROR,
    3 FATAL). The package logs to stderr already, so `stderr` changes nothing."""
    get_logger().setLevel(_GLOG_LEVELS.get(int(level), logging.INFO))


def log(message):
    """pycaffe's log: one INFO line through the package's glog-formatted logger."""
    get_logger().info(message)


def solver_count():
    """How many solver processes train together (Caffe::solver_count)."""
    return distributed.world_size()


def solver_rank():
    """This process's rank among them (Caffe::solver_rank); data layers read every
    solver_count()-th batch from this rank on."""
    return distributed.rank()


def set_solver_count(count):
    """Set the number of solver processes, as a pycaffe multi-process script does in each child."""
    distributed.set_pycaffe_position(world_size=int(count))


def set_solver_rank(rank):
    """Set this process's rank, as a pycaffe multi-process script does in each child."""
    distributed.set_pycaffe_position(rank=int(rank))


def set_multiprocess(multiprocess):
    """Accepted for pycaffe scripts. Caffe uses the flag to share one data reader between the
    solvers of one process; here every process reads its own shard, so there is nothing to set."""


def has_nccl():
    """False: Caffe's Python NCCL class is not offered. Data-parallel training runs through
    `segnet-caffe train --gpu 0,1,...`, one process per GPU over torch.distributed (NCCL on
    GPUs), which averages gradients as Caffe's NCCL callback does."""
    return False


class NCCL:
    """Caffe's NCCL class exists only in builds with NCCL (has_nccl() tells); here it never does."""

    def __init__(self, *args, **kwargs):
        raise CaffeError("caffe.NCCL is not available (caffe.has_nccl() is False): train on "
                         "several GPUs with `segnet-caffe train --solver S --gpu 0,1`")

    @staticmethod
    def new_uid():
        NCCL()


class Timer:
    """pycaffe's Timer: start(), stop(), and `ms`, the milliseconds between them (or since start
    while running)."""

    def __init__(self):
        self._start = self._stop = None

    def start(self):
        self._start, self._stop = time.perf_counter(), None

    def stop(self):
        if self._start is not None:
            self._stop = time.perf_counter()

    @property
    def ms(self):
        if self._start is None:
            return 0.0
        end = self._stop if self._stop is not None else time.perf_counter()
        return (end - self._start) * 1000.0
