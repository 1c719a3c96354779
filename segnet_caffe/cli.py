"""`segnet-caffe`: the `caffe` command-line tool (train, test, time, device_query) and our
additions (plot a training log, draw a net). Flags accept gflags spellings: -solver x,
--solver x, --solver=x."""
import argparse
import os
import signal
import sys
import time

import torch

from . import distributed, engine_options, hardware, mode
from .errors import CaffeError
from .logs import add_log_file, get_logger

SIGNAL_EFFECTS = ("stop", "snapshot", "none")


def _flag(parser, name, **kwargs):
    """An option spelled both -name and --name, as gflags accepts."""
    parser.add_argument(f"-{name}", f"--{name}", dest=name, **kwargs)


def _install_signal_handlers(request, sigint_effect, sighup_effect):
    """SIGINT/SIGHUP call `request(effect)` (the solver acts after the current iteration)."""
    log = get_logger()

    def handler_for(effect, name):
        def handle(signum, frame):
            if effect == "none":
                return
            log.info(f"{name} received: will {effect} after the current iteration")
            request(effect)
        return handle

    signal.signal(signal.SIGINT, handler_for(sigint_effect, "SIGINT"))
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, handler_for(sighup_effect, "SIGHUP"))


def cmd_train(args):
    from .solver import read_solver

    if not args.solver:
        raise CaffeError("train: need a solver definition (--solver SOLVER.prototxt)")
    if args.snapshot and args.weights:
        raise CaffeError("train: give --snapshot to resume or --weights to finetune, not both")
    param, _ = read_solver(args.solver)
    gpus = mode.parse_gpus(args.gpu)
    processes = distributed.processes_to_start(gpus, args.workers)
    if processes > 1:
        return distributed.launch(args.argv, processes)
    try:
        return _train(args, param, gpus)
    finally:
        distributed.shutdown()


def _train(args, param, gpus):
    from .solver import SOLVERS, solver_type

    gpu = None
    if distributed.started_by_launcher():
        gpu = distributed.init_process(gpus, param, args.sync_bn, args.dist_timeout)
    elif args.sync_bn:
        raise CaffeError("--sync_bn needs several processes (--gpu 0,1, --workers N or torchrun)")
    if args.iterations:
        param.max_iter = args.iterations
    if args.seed is not None:
        param.random_seed = args.seed
    param.train_state.level = args.level
    param.train_state.stage.extend(args.stage.split(",") if args.stage else [])
    log = get_logger()
    if args.log_file != "none" and distributed.is_root():
        path = args.log_file or f"{param.snapshot_prefix}_{time.strftime('%Y%m%d-%H%M%S')}.log"
        if os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        add_log_file(path)
        log.info(f"Logging to {path}")
    mode.choose_device(args.gpu, param, gpu)
    log.info("Starting Optimization")
    solver = SOLVERS[solver_type(param)](param, source=args.solver)
    solver.overwrite_snapshots = args.overwrite_snapshots
    solver.snapshot_on_nan = not args.no_snapshot_on_nan
    if args.keep_best and distributed.is_root():  # process 0 alone tests
        solver.keep_best_by(args.keep_best)
    if distributed.in_job():
        request = distributed.GradientAverager(solver).request
    else:
        def request(effect):
            solver.requested_action = effect
    _install_signal_handlers(request, args.sigint_effect, args.sighup_effect)
    if args.snapshot:
        log.info(f"Resuming from {args.snapshot}")
    elif args.weights:
        solver.copy_weights(args.weights)
    solver.solve(args.snapshot or None)
    log.info("Optimization Done.")
    return 0


def _scored_net(args):
    from .net import Net

    if not args.model:
        raise CaffeError(f"{args.command}: need a model definition (--model NET.prototxt)")
    mode.choose_device(args.gpu)
    net = Net(args.model, args.phase, level=args.level,
              stages=args.stage.split(",") if args.stage else ())
    if args.weights:
        for path in args.weights.split(","):
            net.copy_from(path)
    return net


def cmd_test(args):
    if not args.weights:
        raise CaffeError("test: need model weights to score (--weights W.caffemodel)")
    args.phase = "TEST"
    net = _scored_net(args)
    log = get_logger()
    from .solver import loss_text, mean_outputs

    def log_batch(i):
        for name in net.outputs:
            for value in net.blobs[name].data.reshape(-1):
                log.info(f"Batch {i}, {name} = {value:g}")

    log.info(f"Running for {args.iterations} iterations.")
    scores, loss = mean_outputs(net, args.iterations, after_batch=log_batch)
    log.info(f"Loss: {loss:g}")
    for name, mean in scores.items():
        for value in mean.reshape(-1):
            log.info(f"{name} = {value:g}{loss_text(net, name, value)}")
    return 0


def _synchronize():
    if mode.mode() == "gpu":
        torch.cuda.synchronize()


def cmd_time(args):
    net = _scored_net(args)
    log = get_logger()
    last = len(net.layers) - 1
    log.info("Performing Forward")
    log.info(f"Initial loss: {net.forward_range(0, last):g}")
    log.info("Performing Backward")
    net.backward_range(last, 0)
    forward_ms = [0.0] * len(net.layers)
    backward_ms = [0.0] * len(net.layers)
    log.info("*** Benchmark begins ***")
    log.info(f"Testing for {args.iterations} iterations.")
    total_start = time.perf_counter()
    for j in range(args.iterations):
        iter_start = time.perf_counter()
        for i in range(len(net.layers)):
            start = time.perf_counter()
            net.forward_range(i, i)
            _synchronize()
            forward_ms[i] += (time.perf_counter() - start) * 1e3
        for i in range(last, -1, -1):
            start = time.perf_counter()
            net.backward_range(i, i, keep_graph=False)
            _synchronize()
            backward_ms[i] += (time.perf_counter() - start) * 1e3
        log.info(f"Iteration: {j + 1} forward-backward time: "
                 f"{(time.perf_counter() - iter_start) * 1e3:g} ms.")
    total_ms = (time.perf_counter() - total_start) * 1e3
    log.info("Average time per layer: ")
    for name, fwd, bwd in zip(net._layer_names, forward_ms, backward_ms):
        log.info(f"{name:>10}\tforward: {fwd / args.iterations:g} ms.")
        log.info(f"{name:>10}\tbackward: {bwd / args.iterations:g} ms.")
    log.info(f"Average Forward pass: {sum(forward_ms) / args.iterations:g} ms.")
    log.info(f"Average Backward pass: {sum(backward_ms) / args.iterations:g} ms.")
    log.info(f"Average Forward-Backward: {total_ms / args.iterations:g} ms.")
    log.info(f"Total Time: {total_ms:g} ms.")
    log.info("*** Benchmark ends ***")
    return 0


def cmd_device_query(args):
    log = get_logger()
    log.info(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    log.info(f"CPU: {hardware.describe()}")
    if not torch.cuda.is_available():
        log.info("No CUDA device is available: the CPU is used.")
        return 0 if not args.gpu else 1
    for device_id in mode.parse_gpus(args.gpu) or range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(device_id)
        log.info(f"Querying GPUs {device_id}")
        log.info(f"Device id:                     {device_id}")
        log.info(f"Name:                          {props.name}")
        log.info(f"Major revision number:         {props.major}")
        log.info(f"Minor revision number:         {props.minor}")
        log.info(f"Total global memory:           {props.total_memory}")
        log.info(f"Number of multiprocessors:     {props.multi_processor_count}")
    return 0


def cmd_plot(args):
    from .plots import plot_training_log

    written = plot_training_log(args.log, args.output)
    print(f"wrote {written}")
    return 0


def cmd_draw(args):
    from . import io
    from .draw import draw_net_to_file
    from .proto import caffe_pb2

    net_param = io.read_net_prototxt(args.prototxt)
    phase = None if args.phase == "ALL" else caffe_pb2.Phase.Value(args.phase)
    draw_net_to_file(net_param, args.output, args.rankdir, phase, args.display_lrm,
                     title=f"{net_param.name} ({args.phase})")
    print(f"wrote {args.output}")
    return 0


def _batch(text):
    """--batch N | dynamic."""
    if text == "dynamic":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f'expected a positive number or "dynamic", got "{text}"')
    return value


def _positive_count(text):
    """--data_workers N: a whole number, at least 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f'expected a whole number of threads, at least 1, got '
                                         f'"{text}"')
    return int(text)


def cmd_export(args):
    from .export import export_onnx

    export_onnx(args.model, args.weights, args.out, input_size=args.input_size, batch=args.batch,
                opset=args.opset, fp16=args.fp16, argmax=args.argmax, mc_dropout=args.mc_dropout,
                output=args.output, verify=not args.no_verify, verify_images=args.verify_images)
    return 0


def cmd_segment(args):
    from pathlib import Path

    from . import segment

    mode.choose_device(args.gpu)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        segment.run(args, out)
    except ValueError as error:  # a bad --classes file
        raise CaffeError(str(error)) from error
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="segnet-caffe", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_train(commands)
    _add_test(commands)
    _add_time(commands)
    _add_device_query(commands)
    _add_plot(commands)
    _add_draw(commands)
    _add_export(commands)
    _add_segment(commands)
    return parser


def _common_flags(sub, with_model):
    """The flags of Caffe's tool that train, test, time and device_query share."""
    _flag(sub, "gpu", default="", help="GPU ids: 0, 0,1 or all (default: CPU)")
    _flag(sub, "level", type=int, default=0, help="net state level")
    _flag(sub, "stage", default="", help="comma-separated net state stages")
    sub.add_argument("--debug", action="store_true", help="show Python tracebacks")
    _flag(sub, "bf16", action="store_true",
          help="bfloat16 autocast for the layers (float32 weights, diffs and updates)")
    layout = sub.add_mutually_exclusive_group()  # default None: the measured rule (EngineOptions)
    _flag(layout, "channels_last", action="store_const", const=True,
          help="NHWC convolutions (default: NHWC with AVX-512 kernels and on GPUs, else NCHW)")
    layout.add_argument("-nchw", "--nchw", dest="channels_last", action="store_const",
                        const=False, help="NCHW convolutions (see --channels_last)")
    if with_model:
        _flag(sub, "model", default="", help="the net prototxt")
        _flag(sub, "weights", default="", help="comma-separated .caffemodel files")
        _flag(sub, "iterations", type=int, default=50, help="batches to run")


def _deployed_flags(sub, out_help):
    """--model, --weights, --out and --debug of the commands that run a deploy net."""
    sub.add_argument("--model", required=True, help="the inference or deploy prototxt")
    sub.add_argument("--weights", required=True, help="the .caffemodel")
    sub.add_argument("--out", required=True, help=out_help)
    sub.add_argument("--debug", action="store_true", help="show Python tracebacks")


def _add_train(commands):
    """`train`: Caffe's flags plus snapshots, signals, processes and the data options."""
    train = commands.add_parser("train", help="train a net with a solver prototxt")
    _common_flags(train, with_model=False)
    _flag(train, "solver", default="", help="the solver prototxt")
    _flag(train, "weights", default="", help="comma-separated .caffemodel files to finetune from")
    _flag(train, "snapshot", default="", help="a .solverstate to resume from")
    _flag(train, "iterations", type=int, default=0, help="override the solver's max_iter")
    _flag(train, "seed", type=int, default=None, help="override the solver's random_seed")
    _flag(train, "sigint_effect", default="stop", choices=SIGNAL_EFFECTS,
          help="on SIGINT (Ctrl-C): stop (after a snapshot, snapshot_after_train), snapshot, none")
    _flag(train, "sighup_effect", default="snapshot", choices=SIGNAL_EFFECTS,
          help="on SIGHUP: stop, snapshot or none")
    _flag(train, "overwrite_snapshots", action="store_true",
          help="start even if snapshot_prefix holds snapshots of later iterations than this run "
               "starts from (they are overwritten as the run reaches them)")
    _flag(train, "no_snapshot_on_nan", action="store_true",
          help="when the loss or a gradient becomes NaN/inf, stop without snapshotting the "
               "weights before that update")
    _flag(train, "workers", type=int, default=0,
          help="CPU training in N processes on this machine (torch.distributed, gloo)")
    _flag(train, "sync_bn", action="store_true",
          help="in a multi-process job, BN in LEARN mode uses the statistics of all processes' "
               "batches (default: each process's own batch, as Caffe)")
    _flag(train, "dist_timeout", type=float, default=distributed.DEFAULT_TIMEOUT_S,
          help="multi-process jobs: seconds a process waits for the others (at each gradient "
               "exchange, during process 0's tests and snapshots) before the job stops")
    _flag(train, "log_file", default="",
          help="log file (default: <snapshot_prefix>_<time>.log next to the snapshots; none: off)")
    _flag(train, "keep_best", default="", metavar="OUTPUT",
          help="after each test pass, when test net #0's OUTPUT improved (its mean; lower for a "
               'name containing "loss", else higher), write <snapshot_prefix>_best.caffemodel '
               "and _best.json")
    train.add_argument("--keep-best", dest="keep_best", help=argparse.SUPPRESS)
    _flag(train, "data_cache", action="store_true",
          help="ImageData/DenseImageData keep every decoded image and label in memory after its "
               "first read (later epochs only crop, mirror and transform)")
    _flag(train, "data_workers", type=_positive_count, default=1, metavar="N",
          help="threads that read and transform a batch's items (default 1)")
    train.set_defaults(run=cmd_train)


def _add_test(commands):
    """`test`: Caffe's scoring of a net's outputs."""
    test = commands.add_parser("test", help="score a net's outputs over --iterations batches")
    _common_flags(test, with_model=True)
    test.set_defaults(run=cmd_test)


def _add_time(commands):
    """`time`: Caffe's per-layer timing."""
    timing = commands.add_parser("time", help="per-layer forward/backward timing")
    _common_flags(timing, with_model=True)
    _flag(timing, "phase", default="TRAIN", choices=("TRAIN", "TEST"))
    timing.set_defaults(run=cmd_time)


def _add_device_query(commands):
    """`device_query`: the devices, the CPU's features and the torch build."""
    query = commands.add_parser("device_query", help="describe the compute devices")
    _common_flags(query, with_model=False)
    query.set_defaults(run=cmd_device_query)


def _add_plot(commands):
    """`plot`: a training log's curves."""
    plot = commands.add_parser("plot", help="plot a training log's loss (and test outputs) to PNG")
    plot.add_argument("log", help="a training log written by train")
    plot.add_argument("output", help="the PNG to write")
    plot.add_argument("--debug", action="store_true")
    plot.set_defaults(run=cmd_plot)


def _add_draw(commands):
    """`draw`: a net diagram."""
    draw = commands.add_parser("draw", help="draw a net prototxt as a diagram (PNG, SVG or PDF)")
    draw.add_argument("prototxt", help="the net prototxt")
    draw.add_argument("output", help="the image to write; its extension picks the format")
    draw.add_argument("--rankdir", default="TB", choices=("TB", "LR", "BT", "RL"),
                      help="layers top to bottom (TB), left to right (LR), or the reverse")
    draw.add_argument("--phase", default="TRAIN", choices=("TRAIN", "TEST", "ALL"),
                      help="draw the layers of this phase (include/exclude rules), or ALL")
    draw.add_argument("--display_lrm", "--display-lrm", dest="display_lrm", action="store_true",
                      help="show the learning-rate multipliers of learning layers")
    draw.add_argument("--debug", action="store_true")
    draw.set_defaults(run=cmd_draw)


def _add_export(commands):
    """`export`: ONNX."""
    export = commands.add_parser(
        "export", help="write a net (TEST phase, BN folded) as an ONNX file, checked in "
                       "onnxruntime against the engine")
    _deployed_flags(export, "the ONNX file to write")
    export.add_argument("--input-size", "--input_size", dest="input_size", nargs=2, type=int,
                        metavar=("H", "W"), help="input height and width (default: the "
                        "prototxt's Input shape or data layer size)")
    export.add_argument("--batch", type=_batch, default=1,
                        help='the input batch: a number (default 1) or "dynamic"')
    export.add_argument("--opset", type=int, default=17, help="ONNX opset, 12..20 (default 17)")
    export.add_argument("--fp16", action="store_true",
                        help="float16 weights and arithmetic (float32 input and outputs)")
    export.add_argument("--argmax", action="store_true",
                        help='also output "argmax", the class map (N, H, W)')
    export.add_argument("--output", default="prob", help='the blob to output (default "prob")')
    export.add_argument("--mc-dropout", "--mc_dropout", dest="mc_dropout", action="store_true",
                        help="keep the Dropout layers that sample at test time (Bayesian SegNet) "
                             "as random masks: each run is one Monte-Carlo sample")
    export.add_argument("--verify-images", "--verify_images", dest="verify_images", nargs="+",
                        metavar="FILE_OR_DIR",
                        help="compare with the engine on these images (default: synthetic ones)")
    export.add_argument("--no-verify", "--no_verify", dest="no_verify", action="store_true",
                        help="write the file without checking it in onnxruntime")
    export.set_defaults(run=cmd_export)


def _add_segment(commands):
    """`segment`: pictures, video and camera with a deploy net."""
    from . import segment

    seg = commands.add_parser(
        "segment", help="segment images, a video or a camera's frames with a deploy net "
                        "(overlays, class colours, index PNGs)")
    _deployed_flags(seg, "the output folder")
    seg.add_argument("--mc-samples", type=int, default=1,
                     help="Monte-Carlo dropout passes per picture (Bayesian SegNet)")
    seg.add_argument("--classes", default=None, help="squares | camvid | FILE.json")
    _flag(seg, "gpu", default="", help="GPU id (default: CPU)")
    segment.add_arguments(seg)
    seg.set_defaults(run=cmd_segment, check=lambda args: segment.check_arguments(seg, args))


def run_reporting_errors(run, debug=False, program="segnet-caffe", also=()):
    """Call `run()`; a CaffeError (or one of the exception types `also`: a script's OSError for
    a file it cannot write, say) becomes one line `PROGRAM: error: ...` on stderr and exit status
    1 (a traceback only with --debug or SEGNET_CAFFE_DEBUG=1). The one error style of the CLI and
    the scripts; wrong arguments stay argparse's (usage, status 2)."""
    debug = debug or os.environ.get("SEGNET_CAFFE_DEBUG") == "1"
    try:
        return run()
    except (CaffeError, *also) as exc:
        if debug:
            raise
        print(f"{program}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{program}: interrupted", file=sys.stderr)
        return 130


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "check", None) is not None:
        args.check(args)  # the subcommand's own argument rules (argparse errors)
    args.argv = list(argv)  # a multi-process train runs this same command in each process
    engine_options.set_default(bf16=getattr(args, "bf16", False),
                               channels_last=getattr(args, "channels_last", None),
                               data_cache=getattr(args, "data_cache", False),
                               data_workers=getattr(args, "data_workers", 1))
    return run_reporting_errors(lambda: args.run(args), getattr(args, "debug", False))


if __name__ == "__main__":
    sys.exit(main())
