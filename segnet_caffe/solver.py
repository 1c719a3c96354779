"""Solvers with Caffe's exact update rules, learning-rate policies, test phases and snapshots.

The order of one iteration is Caffe's: clear parameter diffs; test if due; forward+backward
`iter_size` times (diffs accumulate); display; then ApplyUpdate = learning rate from the number
of completed updates, clip the accumulated gradient, and per parameter normalise by iter_size,
add weight decay, turn the gradient into the update with the solver type's history formula;
finally data -= update, iter += 1, snapshot if due.
"""
import io as _bytes_io
import json
import math
import os
import re
import sys

import numpy as np
import torch
from tqdm import tqdm

from . import distributed, engine_options, io, mode, net_diagnostics
from .errors import CaffeError
from .logs import get_logger
from .net import Net
from .proto import caffe_pb2

LEGACY_SOLVER_TYPES = {caffe_pb2.SolverParameter.SGD: "SGD",
                       caffe_pb2.SolverParameter.NESTEROV: "Nesterov",
                       caffe_pb2.SolverParameter.ADAGRAD: "AdaGrad",
                       caffe_pb2.SolverParameter.RMSPROP: "RMSProp",
                       caffe_pb2.SolverParameter.ADADELTA: "AdaDelta",
                       caffe_pb2.SolverParameter.ADAM: "Adam"}
LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


def learning_rate(param, iteration, current_step):
    """Caffe's GetLearningRate for `iteration` completed updates; returns (rate, current_step)."""
    policy, base = param.lr_policy, param.base_lr
    if policy == "fixed":
        return base, current_step
    if policy == "step":
        current_step = iteration // param.stepsize
        return base * param.gamma ** current_step, current_step
    if policy == "exp":
        return base * param.gamma ** iteration, current_step
    if policy == "inv":
        return base * (1 + param.gamma * iteration) ** (-param.power), current_step
    if policy == "multistep":
        if current_step < len(param.stepvalue) and iteration >= param.stepvalue[current_step]:
            current_step += 1
            get_logger().info(f"MultiStep Status: Iteration {iteration}, step = {current_step}")
        return base * param.gamma ** current_step, current_step
    if policy == "poly":
        return base * (1 - iteration / param.max_iter) ** param.power, current_step
    if policy == "sigmoid":
        return base * (1 / (1 + math.exp(-param.gamma * (iteration - param.stepsize)))), current_step
    raise CaffeError(f'unknown lr_policy "{policy}"; known: {", ".join(LR_POLICIES)}')


def solver_type(param):
    """The solver type string, upgrading the legacy `solver_type` enum as Caffe does."""
    if param.HasField("solver_type"):
        legacy = LEGACY_SOLVER_TYPES[param.solver_type]
        if param.HasField("type") and param.type != legacy:
            raise CaffeError(f'solver_type {caffe_pb2.SolverParameter.SolverType.Name(param.solver_type)}'
                             f' and type "{param.type}" disagree; keep only `type`')
        return legacy
    return param.type


def read_solver(solver, source=None):
    """A SolverParameter from a path or a message, checked the way Caffe checks it at start;
    `source` names a message in errors (the file it was read from)."""
    if isinstance(solver, caffe_pb2.SolverParameter):
        param, source = solver, source or "<SolverParameter>"
    else:
        param, source = io.read_solver_prototxt(str(solver)), str(solver)
    if param.lr_policy not in LR_POLICIES:
        raise CaffeError(f'{source}: unknown lr_policy "{param.lr_policy}"; known: '
                         f'{", ".join(LR_POLICIES)}')
    if param.lr_policy == "step" and param.stepsize <= 0:
        raise CaffeError(f"{source}: lr_policy step needs a positive stepsize, got {param.stepsize}")
    if param.max_iter <= 0:  # Caffe trains no iteration, then snapshots and tests
        get_logger().warning(f"{source}: max_iter is {param.max_iter}: solve() runs no "
                             "training iteration (as Caffe); set max_iter to train")
    if solver_type(param) not in SOLVERS:
        raise CaffeError(f'{source}: unknown solver type "{solver_type(param)}"; known: '
                         f'{", ".join(SOLVERS)}')
    if param.iter_size < 1:
        raise CaffeError(f"{source}: iter_size must be at least 1, got {param.iter_size}")
    return param, source


def mean_outputs(net, iterations, after_batch=None, stop=None):
    """Score `net` as Caffe's Solver::Test and `caffe test` do: run `iterations` forward passes
    and return (the mean of each output blob as a float64 array, by name; the mean loss).
    `after_batch(i)` runs after batch i; when `stop()` is true before a batch, returns None."""
    totals, loss = {}, 0.0
    with torch.no_grad():
        for i in range(iterations):
            if stop is not None and stop():
                return None
            loss += net.forward_range(0, len(net.layers) - 1)
            for name in net.outputs:
                value = net.blobs[name].data.astype(np.float64).copy()
                totals[name] = totals[name] + value if name in totals else value
            if after_batch is not None:
                after_batch(i)
    return {name: total / iterations for name, total in totals.items()}, loss / iterations


def loss_text(net, name, value):
    """Caffe's ` (* w = w*v loss)` after an output's value `v`, for an output with a loss weight."""
    weight = net.blob_loss_weights.get(name, 0.0)
    return f" (* {weight:g} = {weight * value:g} loss)" if weight else ""


class Solver:
    """Caffe's Solver: owns the training net, the test nets and the update history.

    Two switches besides the solver file: `snapshot_on_nan` (True: when the loss or a gradient
    becomes NaN/inf, snapshot the weights before that update, then stop with a CaffeError) and
    `overwrite_snapshots` (False: solve() refuses to start when snapshot_prefix already holds
    snapshots of later iterations than the run starts from, which it would overwrite); and
    `keep_best_by(output)`, which keeps the weights with the best test score.
    """

    def __init__(self, solver, weights=None, source=None):
        self.param, self.source = read_solver(solver, source)
        self.options = engine_options.current()  # the engine options of all its nets
        self.log = get_logger()
        if self.param.random_seed >= 0:
            mode.set_random_seed(self.param.random_seed)
        self.iter = 0
        self.current_step = 0
        self.requested_action = None     # set by signal handlers: "snapshot" or "stop"
        self.requested_early_exit = False
        self.snapshot_on_nan = True
        self.overwrite_snapshots = False
        self.last_snapshot = None        # (iteration, model path, state path) last written
        self.best = None                 # keep_best_by: {"output", "minimise", "value", "iteration"}
        self._callbacks = []
        self._losses, self.smoothed_loss = [], 0.0
        self.net = self._train_net()
        # As Caffe's root solver: in a data-parallel job process 0 alone tests.
        self.test_nets = self._test_nets() if distributed.is_root() else []
        for test_net in self.test_nets:
            test_net.share_with(self.net)
        self.history = self._initial_history()
        if weights:
            self.copy_weights(weights)

    # ----- construction ------------------------------------------------------------------------
    def _net_state(self, phase, rule):
        state = caffe_pb2.NetState(phase=phase)
        state.MergeFrom(rule)
        state.phase = phase
        return state

    def _build_net(self, net_param, phase, state_rule, source):
        state = self._net_state(phase, state_rule)
        return Net(net_param, phase, level=state.level, stages=list(state.stage), source=source,
                   options=self.options)

    def _read_net(self, path):
        if not os.path.exists(path):
            raise CaffeError(f'{self.source}: net file "{path}" does not exist (relative paths are '
                             f"resolved against the working directory {os.getcwd()})")
        return io.read_net_prototxt(path)

    def _train_net(self):
        p = self.param
        given = [p.HasField("train_net_param"), p.HasField("train_net"), p.HasField("net_param"),
                 p.HasField("net")]
        if sum(given) != 1:
            raise CaffeError(f"{self.source}: give exactly one of net, net_param, train_net, "
                             f"train_net_param (found {sum(given)})")
        if p.HasField("train_net_param"):
            net_param, source = p.train_net_param, f"{self.source} (train_net_param)"
        elif p.HasField("train_net"):
            net_param, source = self._read_net(p.train_net), p.train_net
        elif p.HasField("net_param"):
            net_param, source = p.net_param, f"{self.source} (net_param)"
        else:
            net_param, source = self._read_net(p.net), p.net
        self.log.info("Creating training net from "
                      + (f"net file: {p.net or p.train_net}" if (p.net or p.train_net) else "net_param"))
        return self._build_net(net_param, caffe_pb2.TRAIN, p.train_state, source)

    def _test_nets(self):
        p = self.param
        specific = [(param, "test_net_param", f"{self.source} (test_net_param #{i})")
                    for i, param in enumerate(p.test_net_param)]
        specific += [(self._read_net(path), f"test_net file: {path}", path) for path in p.test_net]
        generic = p.HasField("net") or p.HasField("net_param")
        if generic:
            if len(p.test_iter) < len(specific):
                raise CaffeError(f"{self.source}: test_iter must be given for each test net")
        elif len(p.test_iter) != len(specific):
            if p.test_iter and not specific:
                raise CaffeError(f"{self.source}: test_iter is given but there is no test net "
                                 "(add test_net, or use `net` for both phases)")
            raise CaffeError(f"{self.source}: test_iter must be given once for each test net")
        for _ in range(len(p.test_iter) - len(specific)):
            if p.HasField("net_param"):
                specific.append((p.net_param, "net", f"{self.source} (net_param)"))
            else:
                specific.append((self._read_net(p.net), "net", p.net))
        if p.test_state and len(p.test_state) != len(specific):
            raise CaffeError(f"{self.source}: test_state must be given once per test net or not at all")
        nets = []
        for i, (net_param, origin, source) in enumerate(specific):
            self.log.info(f"Creating test net (#{i}) specified by {origin}")
            rule = p.test_state[i] if p.test_state else caffe_pb2.NetState()
            nets.append(self._build_net(net_param, caffe_pb2.TEST, rule, source))
        if nets and p.test_interval <= 0:
            self.log.info("test_interval is 0: the test nets run only when asked (test_all())")
        return nets

    def _initial_history(self):
        return [torch.zeros(p.blob.shape, device=self.net.device) for p in self.net.learnable_params]

    def copy_weights(self, weights):
        """Initialise the train and test nets by layer name from comma-separated .caffemodel paths."""
        paths = weights.split(",") if isinstance(weights, str) else list(weights)
        for path in paths:
            copied, ignored = self.net.copy_from(path)
            for name in copied:
                self.log.info(f"Copying weights of layer {name} from {path}")
            for name in ignored:
                self.log.info(f"Ignoring source layer {name} of {path} (no layer of that name)")
            for layer in self.net.layers:
                if layer.blobs and layer.name not in copied:
                    self.log.info(f"Layer {layer.name} keeps its filler initialisation "
                                  f"({path} has no layer of that name)")
            for test_net in self.test_nets:
                test_net.copy_from(path)

    # ----- callbacks and signals ---------------------------------------------------------------
    def add_callback(self, on_start=None, on_gradients_ready=None):
        """Call `on_start()` before each iteration and `on_gradients_ready()` before each update."""
        self._callbacks.append((on_start, on_gradients_ready))

    def _take_request(self):
        action, self.requested_action = self.requested_action, None
        return action

    # ----- training ----------------------------------------------------------------------------
    def _update_smoothed_loss(self, loss, start_iter):
        average = max(1, self.param.average_loss)
        if len(self._losses) < average:
            self._losses.append(loss)
            self.smoothed_loss = (self.smoothed_loss * (len(self._losses) - 1) + loss) / len(self._losses)
        else:
            index = (self.iter - start_iter) % average
            self.smoothed_loss += (loss - self._losses[index]) / average
            self._losses[index] = loss

    def forward_backward(self):
        """One forward and backward pass of the training net; returns its loss."""
        last = len(self.net.layers) - 1
        loss = self.net.forward_range(0, last)
        self.net.backward_range(last, 0, keep_graph=False)
        self.net.keep_views()
        return loss

    def step(self, iters):
        """Run `iters` training iterations (Caffe's Solver::Step)."""
        start_iter, stop_iter = self.iter, self.iter + iters
        self._losses, self.smoothed_loss = [], 0.0
        bar = tqdm(total=iters, desc="train", unit="iter",
                   disable=not (sys.stderr.isatty() and distributed.is_root()),
                   dynamic_ncols=True, leave=False)
        try:
            self._step_until(stop_iter, start_iter, bar)
        finally:
            bar.close()

    def _step_until(self, stop_iter, start_iter, bar):
        p = self.param
        while self.iter < stop_iter:
            self.net.clear_param_diffs()
            if p.test_interval and self.iter % p.test_interval == 0 and (
                    self.iter > 0 or p.test_initialization):
                self.test_all()
                if self.requested_early_exit:
                    break
            for on_start, _ in self._callbacks:
                if on_start:
                    on_start()
            loss = 0.0
            for k in range(p.iter_size):
                part = self.forward_backward()
                # In a data-parallel job one process's loss is its own: the processes stop
                # together at the check of the averaged gradients, which a NaN reaches.
                if not math.isfinite(part) and not distributed.in_job():
                    self._stop_diverged(f"the loss is {part}"
                                        + (f" in forward {k + 1} of iter_size {p.iter_size}"
                                           if p.iter_size > 1 else "")
                                        + f"; {net_diagnostics.non_finite_origin(self.net)}")
                loss += part
            loss /= p.iter_size
            self._update_smoothed_loss(loss, start_iter)
            if p.display and self.iter % p.display == 0:
                self.log.info(f"Iteration {self.iter}, loss = {self.smoothed_loss:g}")
                self._log_outputs(self.net, "Train", None)
            for _, on_gradients_ready in self._callbacks:
                if on_gradients_ready:
                    on_gradients_ready()
            self._check_gradients(loss)
            self.apply_update()
            self.iter += 1
            bar.set_postfix(iter=self.iter, loss=f"{self.smoothed_loss:.4g}", refresh=False)
            bar.update(1)
            request = self._take_request()
            if (p.snapshot and self.iter % p.snapshot == 0) or request == "snapshot":
                self.snapshot()
            if request == "stop":
                self.requested_early_exit = True
                break

    def _check_gradients(self, loss):
        """Stop (see _stop_diverged) when a parameter gradient holds NaN/inf: one sum per blob."""
        diffs = [param.blob.diff_tensor() for param in self.net.learnable_params]
        if not diffs or math.isfinite(float(torch.stack([d.sum() for d in diffs]).sum())):
            return
        for name, layer in reversed(self.net.layer_dict.items()):
            for k, blob in enumerate(layer.blobs):
                if not bool(torch.isfinite(blob.diff_tensor()).all()):
                    self._stop_diverged(f"the loss is {loss:g} but the gradient of parameter {k} "
                                        f'of layer "{name}" (the last such layer) is not finite')

    def _stop_diverged(self, reason):
        """Training diverged in this iteration: leave its update unapplied, snapshot the weights
        (unless snapshot_on_nan is off; a snapshot of this iteration already written is kept),
        and stop with one line saying where they are."""
        saved = ""
        if self.snapshot_on_nan:
            if self.last_snapshot is None or self.last_snapshot[0] != self.iter:
                self.snapshot()
            saved = (f"; the weights before this update are in {self.last_snapshot[1]} (resume "
                     f"with --snapshot {self.last_snapshot[2]})")
        raise CaffeError(f"iteration {self.iter}: {reason}; training stopped without applying "
                         f"this update{saved}; lower base_lr ({self.param.base_lr:g}) or set "
                         "clip_gradients")

    def solve(self, resume_file=None):
        """Train to max_iter (resuming from a .solverstate if given), Caffe's Solver::Solve."""
        self.log.info(f"Solving {self.net.name}")
        self.log.info(f"Learning Rate Policy: {self.param.lr_policy}")
        self.requested_early_exit = False
        if resume_file:
            self.log.info(f"Restoring previous solver status from {resume_file}")
            self.restore(resume_file)
        self._check_snapshot_prefix()
        self._restore_best(bool(resume_file))
        self.step(max(0, self.param.max_iter - self.iter))
        p = self.param
        if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0):
            self.snapshot()
        if self.requested_early_exit:
            self.log.info("Optimization stopped early.")
            if self.last_snapshot:
                self.log.info(f"Resume from iteration {self.last_snapshot[0]} with --snapshot "
                              f"{self.last_snapshot[2]}")
            return
        if p.display and self.iter % p.display == 0:
            with torch.no_grad():
                loss = self.net.forward_range(0, len(self.net.layers) - 1)
            self._update_smoothed_loss(loss, self.iter)
            self.log.info(f"Iteration {self.iter}, loss = {self.smoothed_loss:g}")
        if p.test_interval and self.iter % p.test_interval == 0:
            self.test_all()
        self.log.info("Optimization Done.")

    def _log_outputs(self, net, kind, scores):
        """`Train net output #k: name = v (* w = w*v loss)` lines, as Caffe prints them."""
        index = 0
        for name in net.outputs:
            values = (scores[name] if scores is not None else net.blobs[name].data).reshape(-1)
            for value in values:
                self.log.info(f"    {kind} net output #{index}: {name} = {value:g}"
                              f"{loss_text(net, name, value)}")
                index += 1

    # ----- testing -----------------------------------------------------------------------------
    def test_all(self):
        """Run every test net for its test_iter batches and log the averaged outputs; with
        keep_best_by, keep the weights if test net #0's score improved."""
        scores = [self.test(i) for i in range(len(self.test_nets))]
        if self.best is not None and scores and scores[0] is not None:
            self._keep_if_best(scores[0])
        return scores

    # ----- the best weights by a test output (--keep_best) ----------------------------------------
    def keep_best_by(self, output):
        """After each test pass, when test net #0's `output` improved, write the training net's
        weights to <snapshot_prefix>_best.caffemodel (atomically) and <snapshot_prefix>_best.json
        (iteration, output, value), with one log line. The score is the output's mean over the
        test batches, and over its entries for a vector output (per_class_accuracy); an output
        whose name contains "loss" is better lower, any other higher."""
        where = f"--keep_best {output}"
        if not self.test_nets or self.param.test_interval <= 0:
            raise CaffeError(f"{self.source}: {where} needs a test net that runs during training "
                             "(test_net, or net for both phases, with test_iter and "
                             "test_interval > 0)")
        outputs = list(self.test_nets[0].outputs)
        if output not in outputs:
            raise CaffeError(f'{self.source}: {where}: test net #0 ({self.test_nets[0].source}) '
                             f'has no output "{output}"; its outputs: {", ".join(outputs)}')
        self.best = {"output": output, "minimise": "loss" in output.lower(), "value": None,
                     "iteration": None}

    def _best_paths(self):
        hdf5 = self.param.snapshot_format == caffe_pb2.SolverParameter.HDF5
        prefix = self.param.snapshot_prefix
        return f"{prefix}_best.caffemodel" + (".h5" if hdf5 else ""), f"{prefix}_best.json"

    def _keep_if_best(self, scores):
        best = self.best
        value = float(np.mean(scores[best["output"]]))
        previous = best["value"]
        if not math.isfinite(value) or (previous is not None and (
                value >= previous if best["minimise"] else value <= previous)):
            return
        model_path, info_path = self._best_paths()
        self._snapshot_folder()
        io.write_caffemodel(model_path, self.net.to_proto())
        best.update(value=value, iteration=self.iter)
        info = {"iteration": self.iter, "output": best["output"], "value": value,
                "better": "lower" if best["minimise"] else "higher",
                "weights": os.path.basename(model_path)}
        io.atomic_write_bytes(info_path, (json.dumps(info, indent=1) + "\n").encode())
        was = "" if previous is None else f" (was {previous:g})"
        self.log.info(f"Best {best['output']} so far: {value:g}{was} at iteration {self.iter}: "
                      f"weights in {model_path}")

    def _restore_best(self, resumed):
        """At the start of solve(): a resumed run keeps the best recorded by the run it continues
        (up to its iteration); a fresh run replaces an earlier run's best, and says so."""
        _, info_path = self._best_paths()
        if self.best is None or not os.path.exists(info_path):
            return
        try:
            info = json.loads(open(info_path, encoding="utf-8").read())
            iteration, value = int(info["iteration"]), float(info["value"])
            output = info["output"]
        except (OSError, ValueError, KeyError, TypeError):
            self.log.warning(f"{info_path}: not a best-weights record; it will be replaced")
            return
        if resumed and output == self.best["output"] and iteration <= self.iter:
            self.best.update(value=value, iteration=iteration)
            self.log.info(f"Best {output} so far: {value:g} at iteration {iteration} (from "
                          f"{info_path})")
        else:
            self.log.warning(f"{info_path}: the best {output} of an earlier run ({value:g} at "
                             f"iteration {iteration}) will be replaced by this run's")

    def test(self, index):
        """Caffe's Solver::Test: the mean of each output of test net `index` over test_iter batches."""
        self.log.info(f"Iteration {self.iter}, Testing net (#{index})")
        net = self.test_nets[index]
        scored = mean_outputs(net, self.param.test_iter[index],
                              stop=lambda: self.requested_action == "stop")
        if scored is None:
            self.requested_early_exit = True
            return None
        scores, loss = scored
        if self.param.test_compute_loss:
            self.log.info(f"Test loss: {loss:g}")
        self._log_outputs(net, "Test", scores)
        return scores

    # ----- update ------------------------------------------------------------------------------
    @property
    def lr(self):
        """The learning rate of the next update (pycaffe's SGDSolver.lr)."""
        return learning_rate(self.param, self.iter, self.current_step)[0]

    def share_weights(self, net):
        """Make `net` compute with the training net's parameters (pycaffe's share_weights)."""
        net.share_with(self.net)

    def apply_update(self):
        """Caffe's ApplyUpdate: rate, clipping, then normalise/regularise/update each parameter."""
        rate, self.current_step = learning_rate(self.param, self.iter, self.current_step)
        if self.param.display and self.iter % self.param.display == 0:
            self.log.info(f"Iteration {self.iter}, lr = {rate:g}")
        params = self.net.learnable_params
        with torch.no_grad():
            self._clip_gradients(params)
            for index, param in enumerate(params):
                diff = param.blob.diff_tensor()
                if self.param.iter_size > 1:
                    diff *= 1.0 / self.param.iter_size
                self._regularize(param, diff)
                self.compute_update_value(index, diff, rate * param.lr_mult)
                data = param.blob.tensor()
                data -= diff

    def _clip_gradients(self, params):
        threshold = self.param.clip_gradients
        if threshold < 0:
            return
        norm = math.sqrt(sum(float((p.blob.diff_tensor().double() ** 2).sum()) for p in params))
        if norm > threshold:
            factor = threshold / norm
            self.log.info(f"Gradient clipping: scaling down gradients (L2 norm {norm:g} > "
                          f"{threshold:g}) by scale factor {factor:g}")
            for p in params:
                p.blob.diff_tensor().mul_(factor)

    def _regularize(self, param, diff):
        decay = self.param.weight_decay * param.decay_mult
        if not decay:
            return
        data = param.blob.tensor()
        if self.param.regularization_type == "L2":
            diff.add_(data, alpha=decay)
        elif self.param.regularization_type == "L1":
            diff.add_(torch.sign(data), alpha=decay)
        else:
            raise CaffeError(f'unknown regularization_type "{self.param.regularization_type}"; '
                             "known: L1, L2")

    def compute_update_value(self, index, diff, local_rate):
        """Turn the regularised gradient `diff` into the update, in place (per solver type)."""
        raise NotImplementedError

    # ----- snapshots ---------------------------------------------------------------------------
    def _snapshot_path(self, extension):
        return f"{self.param.snapshot_prefix}_iter_{self.iter}{extension}"

    def _snapshot_folder(self):
        """The folder snapshots go to; a CaffeError if it does not exist (Caffe does not create
        it either)."""
        folder = os.path.dirname(self.param.snapshot_prefix)
        if folder and not os.path.isdir(folder):
            raise CaffeError(f'{self.source}: snapshot_prefix "{self.param.snapshot_prefix}": '
                             f'folder "{folder}" does not exist')
        return folder or "."

    def _check_snapshot_prefix(self):
        """Before training: the snapshot folder exists, and no snapshot of a later iteration than
        this run starts from would be overwritten (unless overwrite_snapshots). A later
        .caffemodel without its .solverstate is a write a kill interrupted: overwritten, with a
        log line. Temporary files left by killed snapshot writes are removed."""
        p = self.param
        if not (p.snapshot or p.snapshot_after_train) or not distributed.is_root():
            return
        folder = self._snapshot_folder()
        base = os.path.basename(p.snapshot_prefix)
        for leftover in io.stale_temporary_files(folder, f"{base}_iter_"):
            self.log.info(f"Removing {leftover}, left by a snapshot write that was interrupted")
            os.remove(leftover)
        pattern = re.compile(re.escape(base) + r"_iter_(\d+)\.(caffemodel|solverstate)(\.h5)?")
        later = {}
        for name in os.listdir(folder):
            match = pattern.fullmatch(name)
            if match and int(match.group(1)) > self.iter:
                later.setdefault(int(match.group(1)), []).append(os.path.join(folder, name))
        states = {i: path for i, paths in later.items() for path in paths if ".solverstate" in path}
        if states and not self.overwrite_snapshots:
            shown = ", ".join(str(i) for i in sorted(states)[:5]) + (", ..." if len(states) > 5
                                                                     else "")
            raise CaffeError(
                f'snapshot_prefix "{p.snapshot_prefix}" already holds snapshots of later '
                f"iterations ({shown}) than this run starts from ({self.iter}), which it would "
                f"overwrite: resume the latest with --snapshot {states[max(states)]}, choose "
                "another snapshot_prefix, or pass --overwrite_snapshots")
        for i in sorted(later):
            self.log.warning(f"Iteration {i}'s snapshot files will be overwritten: "
                             + ", ".join(sorted(later[i])))

    def snapshot(self):
        """Write <prefix>_iter_N.caffemodel and .solverstate (atomically), plus the resume extras.

        In a data-parallel job every process calls it (they contribute their random states) and
        process 0 writes; the others return None."""
        extras = self._resume_extras()
        hdf5 = self.param.snapshot_format == caffe_pb2.SolverParameter.HDF5
        suffix = ".h5" if hdf5 else ""
        model_path = self._snapshot_path(".caffemodel" + suffix)
        state_path = self._snapshot_path(".solverstate" + suffix)
        if not distributed.is_root():
            self.last_snapshot = (self.iter, model_path, state_path)   # what process 0 writes
            return None
        self._snapshot_folder()
        self.log.info(f"Snapshotting to {'HDF5' if hdf5 else 'binary proto'} file {model_path}")
        io.write_caffemodel(model_path, self.net.to_proto(self.param.snapshot_diff))
        state = caffe_pb2.SolverState(iter=self.iter, learned_net=model_path,
                                      current_step=self.current_step)
        for tensor in self.history:
            state.history.add().CopyFrom(io.array_to_blobproto(tensor.cpu().numpy()))
        self.log.info(f"Snapshotting solver state to {'HDF5' if hdf5 else 'binary proto'} file "
                      f"{state_path}")
        io.atomic_write_bytes(state_path + ".resume", extras)
        io.write_solverstate(state_path, state)
        self.last_snapshot = (self.iter, model_path, state_path)
        return model_path, state_path

    def _resume_extras(self):
        """What Caffe's solverstate lacks for an exact resume: data positions and random state."""
        extras = {"iter": self.iter, "torch_rng": torch.get_rng_state(),
                  "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                  "process_rngs": distributed.gather_rng_states(),
                  "layers": [{layer.name: layer.state() for layer in net.layers
                              if layer.state() is not None}
                             for net in [self.net] + self.test_nets]}
        buffer = _bytes_io.BytesIO()
        torch.save(extras, buffer)
        return buffer.getvalue()

    def restore(self, state_path):
        """Resume from a .solverstate: iteration, lr step, history, weights, and our extras."""
        state = io.read_solverstate(state_path)
        if len(state.history) != len(self.history):
            raise CaffeError(f"{state_path}: holds {len(state.history)} history blobs but this "
                             f"solver needs {len(self.history)}: it was written for another net "
                             "or solver type")
        history = []
        for i, (proto, current) in enumerate(zip(state.history, self.history)):
            array = io.blobproto_to_array(proto)
            if array.size != current.numel():
                raise CaffeError(f"{state_path}: history blob {i} has shape {array.shape}, the "
                                 f"net's parameter {self.net.learnable_params[i % len(self.net.learnable_params)].name} "
                                 f"has {tuple(current.shape)}: the state belongs to another net")
            history.append(torch.from_numpy(array.reshape(current.shape)).to(current.device))
        if state.learned_net:
            try:
                self.net.copy_from(state.learned_net)
            except CaffeError as error:
                raise CaffeError(f"{state_path}: the weights it names: {error}") from None
        self.history = history
        self.iter, self.current_step = state.iter, state.current_step
        extras_path = state_path + ".resume"
        if os.path.exists(extras_path):
            extras = torch.load(extras_path, weights_only=False)
            torch.set_rng_state(extras["torch_rng"])
            if extras["cuda_rng"] is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(extras["cuda_rng"])
            distributed.restore_rng_state(extras.get("process_rngs"))
            for net, states in zip([self.net] + self.test_nets, extras["layers"]):
                for name, layer_state in states.items():
                    if name in net.layer_dict:
                        net.layer_dict[name].load_state(layer_state)
        else:
            self.log.info(f"{extras_path} not found: data layers restart from the beginning of "
                          "their lists, as in Caffe")


class SGDSolver(Solver):
    """SGD with momentum: h = momentum*h + local_lr*g; update = h."""

    def compute_update_value(self, index, diff, local_rate):
        history = self.history[index]
        history.mul_(self.param.momentum).add_(diff, alpha=local_rate)
        diff.copy_(history)


class NesterovSolver(Solver):
    """Nesterov: h' = momentum*h + local_lr*g; update = (1+momentum)*h' - momentum*h."""

    def compute_update_value(self, index, diff, local_rate):
        history = self.history[index]
        previous = history.clone()
        history.mul_(self.param.momentum).add_(diff, alpha=local_rate)
        diff.copy_(history * (1 + self.param.momentum) - previous * self.param.momentum)


class AdaGradSolver(Solver):
    """AdaGrad: h += g^2; update = local_lr * g / (sqrt(h) + delta)."""

    def compute_update_value(self, index, diff, local_rate):
        history = self.history[index]
        history.add_(diff * diff)
        diff.copy_(local_rate * diff / (history.sqrt() + self.param.delta))


class RMSPropSolver(Solver):
    """RMSProp: h = rms_decay*h + (1-rms_decay)*g^2; update = local_lr * g / (sqrt(h) + delta)."""

    def compute_update_value(self, index, diff, local_rate):
        history = self.history[index]
        decay = self.param.rms_decay
        history.mul_(decay).add_(diff * diff, alpha=1 - decay)
        diff.copy_(local_rate * diff / (history.sqrt() + self.param.delta))


class _TwoHistorySolver(Solver):
    """Solvers keeping a second history per parameter, stored after the first (Caffe's layout)."""

    def _initial_history(self):
        first = super()._initial_history()
        return first + [torch.zeros_like(h) for h in first]

    def second_history(self, index):
        return self.history[index + len(self.net.learnable_params)]


class AdaDeltaSolver(_TwoHistorySolver):
    """AdaDelta: h = m*h + (1-m)*g^2; u = g*sqrt((hu+delta)/(h+delta)); hu = m*hu + (1-m)*u^2; update = local_lr*u."""

    def compute_update_value(self, index, diff, local_rate):
        momentum, delta = self.param.momentum, self.param.delta
        history, update_history = self.history[index], self.second_history(index)
        history.mul_(momentum).add_(diff * diff, alpha=1 - momentum)
        update = diff * ((update_history + delta) / (history + delta)).sqrt()
        update_history.mul_(momentum).add_(update * update, alpha=1 - momentum)
        diff.copy_(local_rate * update)


class AdamSolver(_TwoHistorySolver):
    """Adam: m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2; update = local_lr*sqrt(1-b2^t)/(1-b1^t)*m/(sqrt(v)+delta)."""

    def compute_update_value(self, index, diff, local_rate):
        beta1, beta2 = self.param.momentum, self.param.momentum2
        m, v = self.history[index], self.second_history(index)
        t = self.iter + 1
        correction = math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
        m.mul_(beta1).add_(diff, alpha=1 - beta1)
        v.mul_(beta2).add_(diff * diff, alpha=1 - beta2)
        diff.copy_(local_rate * correction * m / (v.sqrt() + self.param.delta))


SOLVERS = {"SGD": SGDSolver, "Nesterov": NesterovSolver, "AdaGrad": AdaGradSolver,
           "RMSProp": RMSPropSolver, "AdaDelta": AdaDeltaSolver, "Adam": AdamSolver}


def get_solver(solver, weights=None, source=None):
    """The solver its prototxt's `type` (or legacy solver_type) names, as pycaffe's get_solver;
    `source` names a SolverParameter message in errors."""
    param, _ = read_solver(solver, source)
    return SOLVERS[solver_type(param)](solver, weights=weights, source=source)
