"""Write a folder of coloured shapes laid out as users bring their own data.

    python scripts/make_shapes.py --out data/shapes [--count 150] [--size 200x300] [--seed 0]

OUT/images/shape_NNN.jpg: a noisy gradient background with 2..5 discs, triangles and boxes
(overlapping, leaving the frame), each of a random saturated colour from its kind's hue range
(discs red to yellow, triangles green to cyan, boxes blue to purple);
OUT/masks/shape_NNN.png: colour-coded RGB masks (background black, disc crimson, triangle
navy, box orange) with a band of the "void" colour (224, 224, 192) along every outline;
OUT/palette.json: the palette scripts/prepare_dataset.py reads. No splits and no list
files: that is prepare_dataset.py's work. The same seed writes the same files.
"""
import argparse
import sys

from segnet_caffe.cli import run_reporting_errors
from segnet_caffe.datasets import make_shapes
from segnet_caffe.prototxts import parse_size


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (e.g. data/shapes)")
    parser.add_argument("--count", type=int, default=150, help="images (150)")
    parser.add_argument("--size", default="200x300", help="HEIGHTxWIDTH (200x300)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    args = parser.parse_args(argv)
    try:
        height, width = parse_size(args.size)
    except ValueError as exc:
        parser.error(str(exc))

    def run():
        try:
            palette = make_shapes(args.out, args.count, height, width, args.seed)
        except ValueError as exc:  # the arguments do not make a dataset
            parser.error(str(exc))
        print(f"wrote {args.count} images of {height}x{width} to {args.out}/images/ (JPEG), their "
              f"colour masks to {args.out}/masks/ (PNG) and the palette {palette}")
        return 0
    return run_reporting_errors(run, program="make_shapes.py", also=(OSError,))


if __name__ == "__main__":
    sys.exit(main())
