"""Write the solver / train / inference prototxts of the SegNet models.

    python scripts/generate_prototxts.py [--data-root DIR] [--camvid-root DIR] [--out prototxt/]
                                         [--class-weights class_weights.json] [--snapshots DIR]
                                         [--camvid-lists DIR]

writes every model for the squares and CamVid into prototxt/. Paths inside the files are
relative to the repository root, where train.sh runs (Caffe resolves relative paths against the
working directory). The committed prototxt/ folder is what this writes with its defaults; a test
keeps it up to date.

    python scripts/generate_prototxts.py --dataset OUT --model segnet_basic|segnet|
        bayesian_segnet_basic|bayesian_segnet|segnet_squares [--size HxW] [--batch N]
        [--lr X] [--max-iter N] [--val-interval N] --out DIR --snapshots DIR

writes DIR/<model>_solver.prototxt, _train.prototxt and _inference.prototxt for a dataset
prepared by scripts/prepare_dataset.py: its classes, void label and median-frequency class
weights (OUT/dataset.json, OUT/class_weights.json), its image size or --size (the data layers
then resize images and labels), Upsample sizes for that size (odd ones too); --val-interval N
adds DIR/<model>_val.prototxt as the solver's test net over the val list every N iterations.
DIR defaults to OUT/prototxt, the snapshot folder to OUT/snapshots (created).
"""
import argparse
import json
import sys
from pathlib import Path

from segnet_caffe.cli import run_reporting_errors
from segnet_caffe.prototxts import DATASET_MODELS, parse_size, write_all, write_dataset_files

CAMVID_DEFAULTS = {"data_root": "data/squares", "camvid_root": "data/camvid",
                   "camvid_lists": None, "class_weights": None}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default="data/squares", help="the squares dataset folder")
    parser.add_argument("--camvid-root", default="data/camvid", help="the CamVid folder (SegNet tutorial layout)")
    parser.add_argument("--out", default=None,
                        help="where to write the prototxts (default prototxt, or OUT/prototxt "
                             "with --dataset OUT)")
    parser.add_argument("--camvid-lists", default=None,
                        help="folder of CamVid's train.txt/test.txt (default: --camvid-root); "
                             "their paths stay relative to --camvid-root")
    parser.add_argument("--snapshots", default=None,
                        help="the folder the solvers' snapshot_prefix points into (default "
                             "snapshots, or OUT/snapshots with --dataset OUT)")
    parser.add_argument("--class-weights", default=None,
                        help="class_weights.json from scripts/prepare_camvid.py (median-frequency weights)")
    mine = parser.add_argument_group("a dataset of one's own (scripts/prepare_dataset.py)")
    mine.add_argument("--dataset", metavar="OUT", help="the prepared dataset's folder")
    mine.add_argument("--model", choices=DATASET_MODELS, help="the model to write for it")
    mine.add_argument("--size", type=parse_size_argument, metavar="HxW",
                      help="the net's input size (default: the images'; they are resized to it)")
    mine.add_argument("--batch", type=int, default=4, help="training batch size (4)")
    mine.add_argument("--lr", type=float, default=None, help="base_lr (default: the model's)")
    mine.add_argument("--max-iter", type=int, default=None,
                      help="max_iter (default: the model's); a learning-rate step keeps its place")
    mine.add_argument("--val-interval", type=int, default=0, metavar="N",
                      help="test on the val list every N iterations (default: never)")
    mine.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)

    if args.dataset is None:
        if args.model:
            parser.error("--model is for --dataset OUT; without it every model is written")
        for path in write_all(args.out or "prototxt", args.data_root, args.camvid_root,
                              class_weights(args.class_weights), args.snapshots or "snapshots",
                              args.camvid_lists):
            print(f"wrote {path}")
        return 0
    if not args.model:
        parser.error("--dataset needs --model (one of %s)" % ", ".join(DATASET_MODELS))
    given = [name for name, default in CAMVID_DEFAULTS.items() if getattr(args, name) != default]
    if given:
        parser.error(f"--{given[0].replace('_', '-')} is for the squares and CamVid; --dataset "
                     "takes its classes, weights and lists from OUT")

    def run():
        dataset = args.dataset.rstrip("/")
        written, summary = write_dataset_files(
            dataset, args.model, args.out or f"{dataset}/prototxt",
            args.snapshots or f"{dataset}/snapshots", size=args.size, batch=args.batch,
            base_lr=args.lr, max_iter=args.max_iter, val_interval=args.val_interval)
        for path in written:
            print(f"wrote {path}")
        print(summary)
        print(f"train: bash train.sh {written[-1]}")
        return 0
    return run_reporting_errors(run, args.debug, program="generate_prototxts.py")


def parse_size_argument(text):
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def class_weights(path):
    return json.loads(Path(path).read_text())["class_weights"] if path else None


if __name__ == "__main__":
    sys.exit(main())
