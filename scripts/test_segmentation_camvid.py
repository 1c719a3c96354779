"""Test a SegNet: scores over the net's test data, figures, or predictions for plain images.

    python scripts/test_segmentation_camvid.py --model prototxt/segnet_squares_inference.prototxt \\
        --weights snapshots/segnet_squares_iter_300.caffemodel --iter 100 [--gpu] [--bf16] [--out DIR]

The SegNet tutorial's script, made to score: N forward passes of the net's own data layer
(TEST phase; `data` and `label` tops, a Softmax `prob` top whose channel argmax is the
prediction). Writes DIR/metrics.json (global accuracy, class average accuracy, mean IoU,
per-class accuracy and IoU, confusion matrix, class names; void pixels left out; averages over
the classes present in the ground truth), prints the same as a table, and draws PNGs: the first
--samples images as input | ground truth | prediction, and the confusion matrix. --show also
opens them in windows, as the tutorial's script did.

Bayesian SegNet: --mc-samples S runs the layers after the data layer S times per batch (its
Dropout layers sample at test time: sample_weights_test) and scores the mean probabilities;
the figures add the uncertainty (variance averaged over classes).

Plain images: --images FILE... or a folder runs the net on them, without labels. The model's
first layer may be an Input, or a data layer, which is replaced by an Input of the same name
fed the images with that layer's transform_param. Images are resized (bilinear) to the net's
input size (--input-size H W, the Input's shape, the data layer's new_height/new_width, or its
list's first image); predictions are resized back to each image's size (nearest). Writes
DIR/<name>_prediction.png and DIR/<name>_overlay.png (and DIR/<name>_uncertainty.png with
--mc-samples). --tile covers larger images with overlapping windows of the input size instead
of resizing (probabilities averaged in the overlaps). --video IN.mp4 (or --camera N) segments
frames (--every K: every K-th) into DIR/<name>_overlay.mp4 and DIR/<name>_prediction.mp4 and
prints frames/s. --save-labels also writes each prediction as a single-channel index PNG
(DIR/labels/<name>.png), here and for the test set. The same as `segnet-caffe segment`
(segnet_caffe/segment.py).

Class names and colours: --classes squares | camvid | FILE.json (default: squares for a
2-class net, camvid for 11 or 12); CamVid's void label 11 is ignored.
"""
import argparse
import json
import sys
from pathlib import Path

import cv2
import torch

import segnet_caffe as caffe
from segnet_caffe import datasets, engine_options, evaluate, plots, segment
from segnet_caffe.cli import run_reporting_errors
from segnet_caffe.segment import class_map_for


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="inference (or deploy) prototxt")
    parser.add_argument("--weights", required=True, help=".caffemodel")
    parser.add_argument("--iter", type=int,
                        help="batches to run (required without --images, --video, --camera)")
    parser.add_argument("--gpu", action="store_true", help="run on CUDA (set_mode_gpu)")
    parser.add_argument("--bf16", action="store_true",
                        help="run the net under bfloat16 autocast (EngineOptions.bf16), as --bf16 "
                             "does for training")
    parser.add_argument("--out", default="runs/test_segmentation", help="output folder")
    parser.add_argument("--show", action="store_true", help="also show the figures in windows")
    parser.add_argument("--samples", type=int, default=3, help="sample figures to draw (3)")
    parser.add_argument("--mc-samples", type=int, default=1,
                        help="Monte-Carlo dropout passes per batch (Bayesian SegNet)")
    parser.add_argument("--classes", default=None, help="squares | camvid | FILE.json")
    segment.add_arguments(parser)  # --images, --video, --camera, --tile, --save-labels, ...
    args = parser.parse_args(argv)
    if not segment.check_arguments(parser, args, need_input=False) and args.iter is None:
        parser.error("--iter N is required (the number of test batches), unless --images, "
                     "--video or --camera is given")
    if args.iter is not None and args.iter < 1:
        parser.error("--iter must be at least 1")
    if args.samples < 0:
        parser.error("--samples must be 0 or more")
    return args


def run_on_dataset(args, out):
    net = caffe.Net(args.model, args.weights, caffe.TEST)
    evaluate.check_blobs(net)
    num_classes = net.blobs["prob"].shape[1]
    classes = class_map_for(args.classes, num_classes)
    names = classes.class_names(num_classes)
    mc_samples = evaluate.check_mc_samples(net, args.mc_samples)
    transform = evaluate.data_transform(net)

    samples = []
    save_labels = segment.DatasetLabels(net, out) if args.save_labels else None

    def keep_samples(batch):
        if save_labels is not None:
            save_labels(batch.prediction)
        for i in range(batch.label.shape[0]):
            if len(samples) < args.samples:
                samples.append((batch.data[i].cpu().numpy(), batch.label[i].cpu().numpy(),
                                batch.prediction[i].cpu().numpy(),
                                None if batch.variance is None else batch.uncertainty[i].cpu().numpy()))

    confusion = evaluate.evaluate(net, args.iter, num_classes, classes.ignore_label, names,
                                  mc_samples, on_batch=keep_samples, progress=True)

    metrics = confusion.to_dict()
    metrics.update(model=args.model, weights=args.weights, iterations=args.iter,
                   mc_samples=mc_samples, class_colours=classes.colours[:num_classes].tolist())
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    print(confusion.format_table())
    print(f"wrote {out / 'metrics.json'}")

    legend = list(zip(classes.names, classes.colours.tolist()))
    for k, (data, label, prediction, uncertainty) in enumerate(samples):
        path = plots.plot_segmentation_sample(
            out / f"sample_{k}.png", evaluate.input_to_rgb(data, transform),
            datasets.colorize(label, classes), datasets.colorize(prediction, classes),
            uncertainty, legend=legend, title=f"image {k}", show=args.show)
        print(f"wrote {path}")
        if uncertainty is not None:
            cv2.imwrite(str(out / f"sample_{k}_uncertainty.png"),
                        plots.uncertainty_to_rgb(uncertainty)[:, :, ::-1])
    path = plots.plot_confusion_matrix(out / "confusion_matrix.png", confusion.matrix, names,
                                       show=args.show)
    print(f"wrote {path}")


def main(argv=None):
    args = parse_args(argv)

    def run():
        caffe.mode.choose_device("0" if args.gpu else "")  # an explicit --gpu needs CUDA
        engine_options.set_default(bf16=args.bf16)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            if args.images is not None or args.video is not None or args.camera is not None:
                segment.run(args, out)
            else:
                run_on_dataset(args, out)
        return 0
    return run_reporting_errors(run, program="test_segmentation_camvid.py",
                                also=(ValueError, OSError))


if __name__ == "__main__":
    sys.exit(main())
