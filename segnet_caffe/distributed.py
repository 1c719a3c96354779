"""Data-parallel training on torch.distributed with Caffe's multi-GPU rules.

A job is one process per GPU (NCCL) or N processes on the CPU (gloo), started by `segnet-caffe
train --gpu 0,1 | --gpu all | --workers N` (through torch's elastic launcher, as torchrun) or by
`torchrun ... -m segnet_caffe train ...` on one or several machines. As in Caffe:

- every process runs the net with the prototxt's batch size; the effective batch is
  batch_size x processes (x iter_size per update);
- the data layers of the training net read disjoint batches (see list_data.BatchOrder);
- before each update the accumulated parameter gradients are averaged over the processes
  (Caffe's on_gradients_ready: a sum, scaled by 1/processes), so clipping, iter_size
  normalisation, weight decay and lr_mult act on the combined gradient exactly as in one process;
- process 0 (the root solver) alone builds the test nets, logs, tests and writes snapshots;
- BN in LEARN mode normalises by each process's own batch statistics unless the job was started
  with --sync_bn (statistics over all processes' batches).

Signals (SIGINT, SIGHUP) are agreed between the processes at the next gradient exchange, so all
of them snapshot or stop at the same iteration. A collective that fails (another process died)
or waits longer than the job's timeout becomes one CaffeError line.
"""
import datetime
import glob
import os
import signal
import sys

import torch
import torch.distributed as dist

from . import mode
from .errors import CaffeError
from .logs import get_logger

DEFAULT_TIMEOUT_S = 1800
WORKER_ENVIRONMENT = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
_job = {}   # set by init_process: rank, world_size, local_rank, backend, sync_bn, timeout_s
_pycaffe_position = {}  # rank / world_size a pycaffe script set (caffe.set_solver_rank/count)


# ----- where this process stands -----------------------------------------------------------------
def started_by_launcher():
    """Whether this process is a worker started by torchrun or by `launch` (its environment
    names its rank and the job's rendezvous)."""
    return all(name in os.environ for name in WORKER_ENVIRONMENT)


def in_job():
    """Whether this process trains as one process of a data-parallel job (after init_process)."""
    return bool(_job)


def rank():
    return _job.get("rank", _pycaffe_position.get("rank", 0))


def world_size():
    return _job.get("world_size", _pycaffe_position.get("world_size", 1))


def set_pycaffe_position(**position):
    """A pycaffe multi-process script's own rank / world_size for this process: they choose its
    data shard and whether it is the root solver, without joining a torch.distributed job."""
    _pycaffe_position.update(position)


def is_root():
    """Caffe's Caffe::root_solver(): true in a single process and in process 0 of a job."""
    return rank() == 0


def data_shard():
    """(this process's index, the number of processes) for the training net's data layers."""
    return rank(), world_size()


def sync_batch_stats():
    """Whether LEARN-mode batch normalisation of training nets uses all processes' batches."""
    return _job.get("sync_bn", False)


# ----- starting a job ----------------------------------------------------------------------------
def processes_to_start(gpus, workers):
    """How many processes a `train` command run by hand starts on this machine: one per listed GPU
    (--gpu 0,1 or all), else --workers (CPU); 1 trains in this process."""
    if workers < 0:
        raise CaffeError(f"--workers {workers}: give a number of processes, at least 1")
    if gpus and workers > 1:
        raise CaffeError(f"--workers {workers} is for CPU training; with --gpu the job runs one "
                         "process per listed GPU")
    if gpus:
        mode.require_cuda(gpus)
    if started_by_launcher():   # a worker: the launcher (torchrun or `launch`) started the job
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
        if workers > 1 and workers != local_size:
            raise CaffeError(f"--workers {workers}, but the launcher (torchrun) started "
                             f"{local_size} processes on this machine: leave --workers out")
        return 1
    return len(gpus) if len(gpus) > 1 else max(1, workers)


def _forward_to_workers(signum, frame):
    """Pass SIGINT/SIGHUP on to the workers (the elastic launcher starts each in its own session,
    out of the terminal's reach); they agree on it and snapshot or stop together."""
    children = set()
    for path in glob.glob(f"/proc/{os.getpid()}/task/*/children"):
        with open(path) as stream:
            children.update(int(pid) for pid in stream.read().split())
    get_logger().info(f"{signal.Signals(signum).name} received: passed on to the "
                      f"{len(children)} training processes")
    for pid in children:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def launch(argv, processes):
    """Run `python -m segnet_caffe ARGV` as `processes` local workers of one job through torch's
    elastic launcher (torchrun --standalone); any worker failing stops the others. Returns 0."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    log = get_logger()
    log.info(f"Starting {processes} training processes on this machine (torch.distributed)")
    # SIGINT/SIGHUP go on to the workers (torch's launcher would shut them down instead), so
    # that Ctrl-C snapshots and stops and SIGHUP snapshots, as in one process.
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=processes,
                          run_id=f"segnet-caffe-{os.getpid()}", rdzv_backend="c10d",
                          rdzv_endpoint="localhost:0", max_restarts=0,
                          signals_to_handle="SIGTERM,SIGQUIT")
    handled = [sig for sig in (signal.SIGINT, getattr(signal, "SIGHUP", None)) if sig]
    previous = {sig: signal.signal(sig, _forward_to_workers) for sig in handled}
    try:
        elastic_launch(config, sys.executable)("-m", "segnet_caffe", *argv)
    except ChildFailedError as exc:
        raise CaffeError(_describe_failures(exc.failures, processes)) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _describe_failures(failures, processes):
    """One line naming the process that failed first and how (the launcher stops the others)."""
    # Timestamps are whole seconds: among equals, the launcher's own SIGTERMs come last.
    global_rank, failure = min(failures.items(), key=lambda item: (
        item[1].timestamp, item[1].exitcode == -signal.SIGTERM))
    if failure.exitcode < 0:
        try:
            how = f"was killed by {signal.Signals(-failure.exitcode).name}"
        except ValueError:
            how = f"was killed by signal {-failure.exitcode}"
    else:
        how = f"exited with status {failure.exitcode} (its error is above)"
    return (f"training job of {processes} processes failed: process {global_rank} (pid "
            f"{failure.pid}) {how}; the other processes were stopped")


def init_process(gpus, solver_param, sync_bn=False, timeout_s=DEFAULT_TIMEOUT_S):
    """Join the job this process was started for: choose its device (the local_rank-th listed
    GPU, else the CPU), start the process group (NCCL on GPUs, gloo on the CPU), agree on the
    random seed and keep the log to process 0. Returns the GPU id or None."""
    global_rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", size))
    gpu = _process_gpu(gpus, solver_param, local_rank, local_size)
    if gpu is None:
        backend = "gloo"
        if "OMP_NUM_THREADS" not in os.environ:  # as torchrun: share the cores between processes
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_size))
    else:
        backend = "nccl"
        torch.cuda.set_device(gpu)
    if timeout_s <= 0:
        raise CaffeError(f"--dist_timeout {timeout_s}: give a positive number of seconds")
    dist.init_process_group(backend, rank=global_rank, world_size=size,
                            timeout=datetime.timedelta(seconds=timeout_s),
                            device_id=torch.device("cuda", gpu) if gpu is not None else None)
    _job.update(rank=global_rank, world_size=size, local_rank=local_rank, backend=backend,
                sync_bn=bool(sync_bn), timeout_s=timeout_s)
    if global_rank != 0:
        get_logger().setLevel("WARNING")
    _agree_random_seed(solver_param)
    return gpu


def _process_gpu(gpus, solver_param, local_rank, local_size):
    gpus = mode.solver_gpus(gpus, solver_param, one_per_process=True)
    if not gpus:
        return None
    mode.require_cuda(gpus)
    if len(gpus) != local_size:
        raise CaffeError(f"--gpu lists {len(gpus)} GPU(s) but this machine runs {local_size} "
                         "processes of the job: give one GPU per process "
                         "(torchrun --nproc_per_node = the number of GPUs listed)")
    return gpus[local_rank]


def _agree_random_seed(solver_param):
    """Every process builds the nets from process 0's seed (identical initial weights and data
    order); an unset random_seed becomes process 0's current torch seed."""
    seed = solver_param.random_seed if solver_param.random_seed >= 0 else torch.initial_seed()
    agreed = [seed]
    _collective(lambda: dist.broadcast_object_list(agreed, src=0), "agreeing on the random seed")
    solver_param.random_seed = int(agreed[0]) % 2 ** 63


def shutdown():
    """Leave the job (after training)."""
    if in_job():
        dist.destroy_process_group()
        _job.clear()


# ----- collectives -------------------------------------------------------------------------------
def _collective(run, what):
    """Run a collective; a failure (a process died, or none answered within the timeout) becomes
    one clear CaffeError."""
    try:
        return run()
    except (RuntimeError, dist.DistError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CaffeError(f"process {rank()} of {world_size()}: {what} failed: another process of "
                         "the job stopped or crashed, or did not answer within --dist_timeout "
                         f"{_job.get('timeout_s', DEFAULT_TIMEOUT_S)} s ({detail})") from None


def global_moments(mean, mean_sq, count):
    """E[x] and E[x^2] over every process's batch from this process's (mean, mean_sq) over
    `count` values per channel, differentiable (the backward sums the gradients across the
    processes, as SyncBatchNorm); returns (mean, mean_sq, total count)."""
    from torch.distributed.nn.functional import all_reduce

    if mean.is_meta:   # shape inference at setup: nothing to exchange
        return mean, mean_sq, count
    channels = mean.numel()
    packed = torch.cat([mean.reshape(-1) * count, mean_sq.reshape(-1) * count,
                        mean.new_full((1,), float(count))])
    total = _collective(lambda: all_reduce(packed), "synchronising batch statistics")
    number = total[-1]
    return ((total[:channels] / number).reshape(mean.shape),
            (total[channels:2 * channels] / number).reshape(mean.shape), int(number.item()))


def gather_rng_states():
    """Every process's (torch, CUDA) random state for a snapshot, or None outside a job."""
    if not in_job():
        return None
    own = (torch.get_rng_state(),
           torch.cuda.get_rng_state() if mode.mode() == "gpu" else None)
    states = [None] * world_size()
    _collective(lambda: dist.all_gather_object(states, own), "gathering random states")
    return states


def restore_rng_state(states):
    """In process r > 0, the random state it had when the snapshot was written; from a snapshot of
    another number of processes (or of one), a state drawn from process 0's (which `restore`
    has set) and r."""
    if rank() == 0:
        return
    if states is not None and len(states) == world_size():
        cpu_state, cuda_state = states[rank()]
        torch.set_rng_state(cpu_state)
        if cuda_state is not None and mode.mode() == "gpu":
            torch.cuda.set_rng_state(cuda_state)
    else:
        torch.manual_seed(int(torch.randint(0, 2 ** 62, ())) + rank())


# ----- the solver's side -------------------------------------------------------------------------
class GradientAverager:
    """Joins a solver to the job: process 0's weights at the start, gradients averaged before
    each update (with the pending signal requests), a random stream per process.

    Caffe's P2PSync/NCCL callbacks: on_start and on_gradients_ready. Signal handlers call
    `request(action)`; the solver acts on a request when any process made it.
    """

    REQUESTS = ("snapshot", "stop")

    def __init__(self, solver):
        self.solver = solver
        self.blobs = [param.blob for param in solver.net.learnable_params]
        self.pending = None
        self._synchronised = False
        solver.add_callback(on_start=self._on_start, on_gradients_ready=self._on_gradients_ready)
        if rank() > 0:   # dropout & co. draw differently in each process; process 0 as alone
            mode.set_random_seed(solver.param.random_seed + rank())
        self._log_effective_batch()

    def _log_effective_batch(self):
        net, size = self.solver.net, world_size()
        batch = next(iter(net.blobs.values())).shape[0] if net.blobs else 1
        iter_size = self.solver.param.iter_size
        per_update = f" x iter_size {iter_size} = {batch * size * iter_size} per update" \
            if iter_size > 1 else ""
        get_logger().info(f"Data-parallel training over {size} processes ({_job['backend']}): "
                          f"effective batch {batch} per process x {size} processes = "
                          f"{batch * size}{per_update}; BN batch statistics "
                          f"{'over all processes (--sync_bn)' if sync_batch_stats() else 'per process'}")

    def request(self, action):
        """Note a snapshot/stop request (from a signal) for the next gradient exchange."""
        self.pending = action

    def _on_start(self):
        if self._synchronised:
            return
        # After any restore: every process starts from process 0's weights, as Caffe's root
        # solver copies its parameters to the others.
        flat = torch.cat([blob.tensor().detach().reshape(-1) for blob in self.blobs])
        _collective(lambda: dist.broadcast(flat, src=0), "sharing process 0's weights")
        with torch.no_grad():
            for blob, values in zip(self.blobs, flat.split([b.count for b in self.blobs])):
                blob.tensor().copy_(values.view_as(blob.tensor()))
        self._synchronised = True

    def _on_gradients_ready(self):
        action, self.pending = self.pending, None
        diffs = [blob.diff_tensor() for blob in self.blobs]
        flags = [float(action == request) for request in self.REQUESTS]
        flat = torch.cat([diff.reshape(-1) for diff in diffs]
                         + [diffs[0].new_tensor(flags) if diffs else torch.tensor(flags)])
        _collective(lambda: dist.all_reduce(flat), f"averaging gradients at iteration "
                    f"{self.solver.iter}")
        requested = flat[-len(flags):].tolist()
        gradients = flat[:-len(flags)]
        gradients.div_(world_size())
        with torch.no_grad():
            for diff, values in zip(diffs, gradients.split([d.numel() for d in diffs])):
                diff.copy_(values.view_as(diff))
        agreed = [request for request, count in zip(self.REQUESTS, requested) if count > 0]
        if agreed:
            self.solver.requested_action = "stop" if "stop" in agreed else "snapshot"
