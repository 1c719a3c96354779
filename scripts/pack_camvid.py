"""Pack what training on CamVid needs into a folder small enough to carry to a GPU machine.

    python scripts/pack_camvid.py [CAMVID_DIR] [--out data/camvid_packed] [--quality 95]
                                  [--limit N] [--max-mib 56]

CAMVID_DIR (default ../shared/data/camvid, the SegNet tutorial layout) holds train/ trainannot/
val/ valannot/ and their lists (train.txt, val.txt; read from the folders where absent). Writes
under OUT (git-ignored: /data/* and /data/camvid_packed/ in .gitignore):

- train/*.jpg, val/*.jpg: the images as JPEG of --quality (95), decoded from the PNGs by OpenCV
  (CamVid's 182 MB become about 25 MiB: the device tool carries 64 MiB with the working tree);
- trainannot/*.png, valannot/*.png: the label PNGs, byte for byte (labels must stay lossless);
- train.txt, val.txt: DenseImageData lists, paths relative to OUT (root_folder "OUT/");
- class_weights.json: median-frequency weights over the training labels (void 11 ignored);
- dataset.json: what `scripts/generate_prototxts.py --dataset OUT --model segnet_basic` reads.
  The test split is not packed (score it on the CPU with the original PNGs); the dataset's
  "test" list is val.txt, so the generated inference net reads val.

--limit N packs the first N pairs of each split only (a quick check). Everything is checked
(pairs, sizes, label values) before OUT is replaced; an OUT that holds anything but an earlier
pack is refused. The lossy copy's cost: bench/results/camvid_jpeg_cost.md.
"""
import argparse
import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import cv2

from segnet_caffe.cli import run_reporting_errors
from segnet_caffe.datasets import (CAMVID, CAMVID_VOID, check_pairs, folder_pairs, json_text,
                                   write_class_weights)
from segnet_caffe.errors import CaffeError
from segnet_caffe.list_files import read_list_file, write_list_file
from segnet_caffe.metrics import ClassFrequencies
from segnet_caffe.own_dataset import FORMAT, in_parallel

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CAMVID = REPO.parent / "shared" / "data" / "camvid"
PACKED_SPLITS = ("train", "val")
CARRY_LIMIT_MIB = 64  # what the device tool carries in one call, the working tree included


def split_pairs(root, split, limit=None):
    """The (image, label) paths of a split, relative to `root`: its list file, else its folders."""
    listed = root / f"{split}.txt"
    pairs = read_list_file(listed) if listed.is_file() else folder_pairs(root, split)
    if not pairs:
        raise ValueError(f"{listed}: no image/label pairs")
    return pairs[:limit] if limit else pairs


def packed_name(image):
    """train/x.png -> train/x.jpg (the folder kept, the extension JPEG's)."""
    return str(Path(image).with_suffix(".jpg"))


def folder_size(folder):
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


def pack(camvid, out, quality=95, limit=None, max_mib=56, report=print):
    """Pack CamVid's train and val splits into `out` (see the module docstring); returns
    dataset.json's dictionary."""
    camvid, out = Path(camvid), Path(out)
    if not (camvid / "train").is_dir():
        raise CaffeError(f"{camvid}: no train/ folder; expected CamVid in the SegNet tutorial "
                         "layout (train/ trainannot/ val/ valannot/)")
    if out.exists() and any(out.iterdir()) and not (out / "dataset.json").is_file():
        raise CaffeError(f"--out {out}: the folder holds files but no dataset.json of an earlier "
                         "pack; choose an empty or new folder")
    if not 1 <= quality <= 100:
        raise CaffeError(f"--quality {quality}: JPEG quality is 1..100")
    counter = ClassFrequencies(CAMVID.num_classes, CAMVID_VOID)
    pairs = {}
    for split in PACKED_SPLITS:
        pairs[split] = split_pairs(camvid, split, limit)
        try:
            check_pairs(camvid, pairs[split], CAMVID.num_classes, CAMVID_VOID,
                        str(camvid / f"{split}.txt"), counter.update if split == "train" else None)
        except ValueError as error:
            raise CaffeError(str(error)) from None
    staging = out.with_name(out.name + ".packing")
    shutil.rmtree(staging, ignore_errors=True)
    sizes = Counter()

    def pack_pair(pair):
        image, label = pair
        pixels = cv2.imread(str(camvid / image), cv2.IMREAD_COLOR)
        target = staging / packed_name(image)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(target), pixels, [cv2.IMWRITE_JPEG_QUALITY, quality]):
            raise CaffeError(f"{target}: OpenCV could not write the JPEG")
        (staging / label).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(camvid / label, staging / label)
        return pixels.shape[:2]

    staging.mkdir(parents=True)
    for split in PACKED_SPLITS:
        for size in in_parallel(pack_pair, pairs[split], f"pack {split}"):
            sizes[f"{size[0]}x{size[1]}"] += 1
        write_list_file(staging / f"{split}.txt",
                        [(packed_name(image), label) for image, label in pairs[split]])
    write_class_weights(staging / "class_weights.json", counter,
                        CAMVID.class_names(CAMVID.num_classes), report=lambda line: None)
    counts = {split: len(pairs[split]) for split in PACKED_SPLITS}
    meta = {
        "format": FORMAT,
        **CAMVID.to_palette(),
        "num_classes": CAMVID.num_classes,
        "ignore_label": CAMVID_VOID,
        "image_size": ([int(side) for side in next(iter(sizes)).split("x")] if len(sizes) == 1
                       else None),
        "image_sizes": dict(sizes),
        "counts": {**counts, "test": counts["val"]},
        "lists": {"train": "train.txt", "val": "val.txt", "test": "val.txt"},
        "class_weights": "class_weights.json",
        "label_type": "index",
        "source": {"camvid": str(camvid.resolve()), "limit": limit},
        "packed_by": "scripts/pack_camvid.py",
        "jpeg_quality": quality,
        "note": "train and val only: images as JPEG, labels as the original PNGs; the test "
                "split is not packed (score it with the original PNGs), so the test list is "
                "val's",
    }
    (staging / "dataset.json").write_text(json_text(meta))
    size_mib = folder_size(staging) / 2 ** 20
    if size_mib > max_mib:
        shutil.rmtree(staging)
        raise CaffeError(f"the pack would be {size_mib:.1f} MiB, over --max-mib {max_mib:g} (the "
                         f"device tool carries {CARRY_LIMIT_MIB} MiB with the working tree): "
                         "lower --quality or pack fewer images (--limit)")
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    files = sum(1 for path in out.rglob("*") if path.is_file())
    report(f"packed {', '.join(f'{split} {n}' for split, n in counts.items())} image/label pairs "
           f"of {camvid} into {out}: {files} files, {size_mib:.1f} MiB (JPEG quality {quality})")
    report(f"train on it: python scripts/generate_prototxts.py --dataset {out} "
           "--model segnet_basic --val-interval N")
    return json.loads((out / "dataset.json").read_text())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("camvid", nargs="?", default=str(DEFAULT_CAMVID), metavar="CAMVID_DIR",
                        help=f"CamVid in the SegNet tutorial layout (default {DEFAULT_CAMVID})")
    parser.add_argument("--out", default=str(REPO / "data" / "camvid_packed"),
                        help="the packed folder (default data/camvid_packed)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality (95)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="pack only the first N pairs of each split")
    parser.add_argument("--max-mib", type=float, default=56,
                        help="refuse a pack larger than this (56: it travels with the working "
                             "tree in the device tool's 64 MiB)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)

    def run():
        pack(args.camvid, args.out, args.quality, args.limit, args.max_mib)
        return 0
    return run_reporting_errors(run, args.debug, program="pack_camvid.py")


if __name__ == "__main__":
    sys.exit(main())
