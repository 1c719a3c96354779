"""Write the report's synthetic squares dataset (train/val/test, images + labels + list files).

    python scripts/make_squares.py --out data/squares [--count 100] [--size 512] [--seed 0]

Each image is a flat random background colour with one filled square of another clearly
different colour, side 90..100 px, fully inside; labels are RGB PNGs of (0,0,0) background and
(1,1,1) square (Caffe reads them as grayscale 0/1). List files hold paths relative to --out, so
a DenseImageData layer reads them with root_folder: "<out>/". The same seed writes the same
files; each split draws from its own seed derived from --seed.
"""
import argparse
import sys

from segnet_caffe.cli import run_reporting_errors
from segnet_caffe.datasets import make_squares


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (e.g. data/squares)")
    parser.add_argument("--count", type=int, default=100, help="images per split (100)")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels, > 100 (512)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    args = parser.parse_args(argv)

    def run():
        try:
            lists = make_squares(args.out, args.count, args.size, args.seed)
        except ValueError as exc:  # the arguments do not make a dataset
            parser.error(str(exc))
        for split, list_path in lists.items():
            print(f"wrote {args.count} {args.size}x{args.size} images to {args.out}/{split}/ and "
                  f"{args.out}/{split}annot/, list {list_path}")
        print(f'use root_folder: "{args.out}/" with these list files')
        return 0
    return run_reporting_errors(run, program="make_squares.py", also=(OSError,))

if __name__ == "__main__":
    sys.exit(main())
