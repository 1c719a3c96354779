"""Fold batch-normalisation statistics into trained weights for INFERENCE-mode BN.

    python scripts/compute_bn_statistics.py TRAIN_PROTOTXT WEIGHTS OUT_DIR [--iterations N]
                                            [--sequential] [--whole-images]

Runs the training net (TEST phase) over its training list once (or N batches) with the trained
weights, averages each BN/BatchNorm layer's batch mean and unbiased variance, and writes
OUT_DIR/test_weights.caffemodel and OUT_DIR/inference.prototxt (the training net with BN in
INFERENCE mode), as the SegNet tutorial's script did, in Python 3. --sequential records the
layers one after the other, each with the layers before it already in INFERENCE mode, so each
layer's statistics are those of the inputs the inference net gives it (one pass per layer).
--whole-images reads the training images without the data layers' crops, as the inference net
reads them (for a net trained on random crops).
"""
import argparse
import os
import sys

from segnet_caffe import io
from segnet_caffe.bn_statistics import compute_bn_statistics
from segnet_caffe.cli import run_reporting_errors


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train_prototxt")
    parser.add_argument("weights")
    parser.add_argument("out_dir")
    parser.add_argument("--iterations", type=int, default=None,
                        help="batches to average (default: the training list once)")
    parser.add_argument("--sequential", action="store_true",
                        help="record the layers one after the other, each under the statistics "
                             "recorded before it (the inputs of the inference net)")
    parser.add_argument("--whole-images", action="store_true",
                        help="read the training images without the data layers' crops (the "
                             "inputs of the inference net)")
    args = parser.parse_args(argv)

    def run():
        inference, weights = compute_bn_statistics(args.train_prototxt, args.weights,
                                                   args.iterations, sequential=args.sequential,
                                                   whole_images=args.whole_images)
        os.makedirs(args.out_dir, exist_ok=True)
        weights_path = os.path.join(args.out_dir, "test_weights.caffemodel")
        prototxt_path = os.path.join(args.out_dir, "inference.prototxt")
        io.write_caffemodel(weights_path, weights)
        io.write_prototxt(prototxt_path, inference)
        print(f"wrote {weights_path}\nwrote {prototxt_path}")
        return 0
    return run_reporting_errors(run, program="compute_bn_statistics.py")


if __name__ == "__main__":
    sys.exit(main())
