"""Write the solver / train / inference prototxts of every SegNet model into prototxt/.

    python scripts/generate_prototxts.py [--data-root DIR] [--camvid-root DIR] [--out prototxt/]
                                         [--class-weights class_weights.json] [--snapshots DIR]
                                         [--camvid-lists DIR]

Paths inside the files are relative to the repository root, where train.sh runs (Caffe resolves
relative paths against the working directory). The committed prototxt/ folder is what this
script writes with its defaults; a test keeps it up to date.
"""
import argparse
import json
import sys
from pathlib import Path

from segnet_caffe.prototxts import write_all


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default="data/squares", help="the squares dataset folder")
    parser.add_argument("--camvid-root", default="data/camvid", help="the CamVid folder (SegNet tutorial layout)")
    parser.add_argument("--out", default="prototxt", help="where to write the prototxts")
    parser.add_argument("--camvid-lists", default=None,
                        help="folder of CamVid's train.txt/test.txt (default: --camvid-root); "
                             "their paths stay relative to --camvid-root")
    parser.add_argument("--snapshots", default="snapshots",
                        help="the folder the solvers' snapshot_prefix points into")
    parser.add_argument("--class-weights", default=None,
                        help="class_weights.json from scripts/prepare_camvid.py (median-frequency weights)")
    args = parser.parse_args(argv)
    weights = None
    if args.class_weights:
        weights = json.loads(Path(args.class_weights).read_text())["class_weights"]
    for path in write_all(args.out, args.data_root, args.camvid_root, weights, args.snapshots,
                          args.camvid_lists):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
