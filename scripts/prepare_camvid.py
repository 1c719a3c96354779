"""Check CamVid (SegNet tutorial layout), write its list files and its class weights.

    python scripts/prepare_camvid.py CAMVID_DIR [--out DIR] [--rewrite]

CAMVID_DIR holds train/ trainannot/ val/ valannot/ test/ testannot/ (labels: grayscale PNGs,
0..10 the classes, 11 void). For each split, DIR/<split>.txt (DIR defaults to CAMVID_DIR) is
validated if present (its paths are relative to CAMVID_DIR: use root_folder: "CAMVID_DIR/"),
else written from the folders; --rewrite writes it anyway (e.g. over the tutorial's lists with
absolute /SegNet/... paths). Then the median-frequency class weights over trainannot (void
ignored) are printed and written to DIR/class_weights.json, which
`python scripts/generate_prototxts.py --class-weights DIR/class_weights.json` reads.
"""
import argparse
import sys

from segnet_caffe.cli import run_reporting_errors
from segnet_caffe.datasets import prepare_camvid


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("camvid_dir", metavar="CAMVID_DIR", help="CamVid in the SegNet tutorial layout")
    parser.add_argument("--out", default=None, help="where list files and class_weights.json go "
                                                    "(default: CAMVID_DIR)")
    parser.add_argument("--rewrite", action="store_true",
                        help="write the list files from the folders even where they exist")
    args = parser.parse_args(argv)

    def run():
        prepare_camvid(args.camvid_dir, args.out, rewrite=args.rewrite)
        return 0
    return run_reporting_errors(run, program="prepare_camvid.py", also=(ValueError, OSError))


if __name__ == "__main__":
    sys.exit(main())
