"""Make a folder of images and a folder of labels into a dataset the SegNet models train on.

    python scripts/prepare_dataset.py --images DIR --labels DIR --out OUT [--palette FILE.json]
        [--split 0.8,0.1,0.1 | --train-list F --val-list F --test-list F] [--seed S]
        [--label-type auto|index|colour] [--void VALUE] [--num-classes K] [--write-palette FILE]

Images (png, jpg, jpeg, bmp, tif) and labels (png, bmp, tif) are paired by file stem, in
subfolders too (images/a/x.jpg with labels/a/x.png); unpaired files are named and left out.
Labels are either class indices (one channel, or three equal channels: 0..K-1, and --void VALUE
for unlabelled pixels) or colour-coded RGB masks, converted through the palette:

    {"classes": [{"name": "road", "color": [128, 64, 128]}, ...],
     "void": {"name": "void", "color": [0, 0, 0]}}

(class k is the k-th entry; the void colour, optional, becomes label K, the ignore label).
Colour masks without --palette stop with their colours listed; --write-palette FILE writes them
as a palette to edit (names, void) and stops.

Writes under OUT: index_labels/<stem>.png (class indices, void K), train.txt val.txt test.txt
(DenseImageData lists, paths relative to OUT: root_folder "OUT/"), class_weights.json
(median-frequency weights over train, void ignored) and dataset.json (class names and colours,
number of classes, void label, image size, counts per split), which
`python scripts/generate_prototxts.py --dataset OUT --model segnet_basic` reads. The split is
random, the same for the same --seed; --train-list/--val-list/--test-list name each split's
pairs instead (one stem or file name per line). The folders given are only read.
"""
import argparse
import sys

from segnet_caffe.cli import run_reporting_errors
from segnet_caffe.own_dataset import DEFAULT_SPLIT, parse_split, prepare_dataset


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, metavar="DIR", help="the images")
    parser.add_argument("--labels", required=True, metavar="DIR",
                        help="the labels (index images or colour-coded masks), same stems")
    parser.add_argument("--out", metavar="OUT", help="where the prepared dataset goes")
    parser.add_argument("--palette", metavar="FILE.json",
                        help="class names and colours (and the void colour), in label order")
    parser.add_argument("--split", default=None, metavar="TRAIN,VAL,TEST",
                        help="shares of a random split (default %s)"
                             % ",".join(f"{s:g}" for s in DEFAULT_SPLIT))
    for split in ("train", "val", "test"):
        parser.add_argument(f"--{split}-list", metavar="FILE",
                            help=f"the {split} pairs' stems or file names, one per line")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the split (0)")
    parser.add_argument("--label-type", choices=("auto", "index", "colour"), default="auto",
                        help="auto (default): colour when any label is colour-coded")
    parser.add_argument("--void", type=int, default=None, metavar="VALUE",
                        help="index labels: the value of unlabelled pixels (becomes label K)")
    parser.add_argument("--num-classes", type=int, default=None, metavar="K",
                        help="index labels: the number of classes (default: the largest value "
                             "+ 1, every class present)")
    parser.add_argument("--write-palette", metavar="FILE.json",
                        help="write the labels' colours (or classes) as a palette to edit, then "
                             "stop")
    parser.add_argument("--workers", type=int, default=None,
                        help="threads decoding images (default: the cores, at most 8)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    lists = [args.train_list, args.val_list, args.test_list]
    if any(lists) and not all(lists):
        parser.error("give --train-list, --val-list and --test-list together")
    if any(lists) and args.split:
        parser.error("give --split or the three lists, not both")
    if not args.out and not args.write_palette:
        parser.error("--out OUT is required (unless --write-palette FILE)")

    def run():
        split = parse_split(args.split) if args.split else DEFAULT_SPLIT
        prepare_dataset(args.images, args.labels, args.out, args.palette, split,
                        lists if all(lists) else None, args.seed, args.label_type,
                        args.void, args.num_classes, args.write_palette, args.workers)
        return 0
    return run_reporting_errors(run, args.debug, program="prepare_dataset.py",
                                also=(ValueError, OSError))


if __name__ == "__main__":
    sys.exit(main())
