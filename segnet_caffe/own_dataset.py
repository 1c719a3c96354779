"""A dataset of one's own: a folder of images and a folder of labels (index images or colour-coded
masks) made into what the SegNet models train on (scripts/prepare_dataset.py), and read back by
the prototxt generator (scripts/generate_prototxts.py --dataset).

prepare_dataset() pairs images and labels by file stem, converts every label to a one-channel
PNG of class indices (0..K-1, void K), splits the pairs into train/val/test, and writes under
OUT: index_labels/<stem>.png, train.txt val.txt test.txt (DenseImageData lists, paths relative
to OUT, so a data layer reads them with root_folder: "OUT/"), class_weights.json (median
frequency over train, void ignored) and dataset.json (the palette of class names and colours,
the number of classes, the void label, the image size, the counts per split). Everything is
checked before anything is written; the user's folders are only read.
"""
import json
import os
import shutil
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .datasets import (IMAGE_EXTENSIONS, LABEL_EXTENSIONS, PALETTE_FORM, SPLITS, ClassMap,
                       generic_class_map, json_text, read_palette, write_class_weights)
from .errors import CaffeError
from .list_files import write_list_file
from .metrics import ClassFrequencies

FORMAT = "segnet_caffe dataset 1"
LABEL_FOLDER = "index_labels"
LINK_FOLDER = "image_links"  # links to images whose paths a list file cannot hold (spaces)
OWNED = (LABEL_FOLDER, LINK_FOLDER, "train.txt", "val.txt", "test.txt", "dataset.json",
         "class_weights.json")
DEFAULT_SPLIT = (0.8, 0.1, 0.1)
GREY = 0x010101             # a grey level v as a packed colour: v * GREY = (v, v, v)
SHOWN = 12                  # names or colours listed in one message
TRUNCATED = "the file is truncated (its end marker is missing: an interrupted copy?)"


@dataclass(frozen=True)
class Pair:
    key: str                # the path below the folder without its extension
    image: Path
    label: Path


@dataclass
class PairInfo:
    """What the first pass learnt about a pair."""
    pair: Pair
    size: tuple             # (height, width)
    keys: np.ndarray        # the label's distinct pixel keys (grey values or packed RGB colours)
    counts: np.ndarray      # their pixel counts
    colour: bool            # a colour-coded label (channels differ somewhere)


@dataclass
class LabelMapping:
    """How source label keys become class labels (K for void)."""
    classes: ClassMap
    label_type: str         # "colour" or "index"
    keys: np.ndarray        # sorted source keys (packed colours, or index values)
    labels: np.ndarray      # their class labels
    void_value: int | None = None

    @property
    def num_classes(self):
        return self.classes.num_classes

    @property
    def void_label(self):
        return self.num_classes if self.classes.has_void_entry else None

    def source_keys(self, info_keys, colour):
        return info_keys * GREY if self.label_type == "colour" and not colour else info_keys

    def convert(self, keys, colour):
        """An array of a label file's keys as uint8 class labels."""
        keys = self.source_keys(keys, colour)
        return self.labels[np.searchsorted(self.keys, keys)].astype(np.uint8)

    def histogram(self, info):
        """Pixels per label 0..K (void last) of one pair's label."""
        labels = self.labels[np.searchsorted(self.keys, self.source_keys(info.keys, info.colour))]
        return np.bincount(labels, weights=info.counts, minlength=self.num_classes + 1
                           ).astype(np.int64)


# ----- finding and pairing the files -------------------------------------------------------------
def _names(paths, root=None, most=SHOWN):
    """'a.jpg, b.jpg, ... and 3 more' for messages."""
    shown = [str(p.relative_to(root)) if root else str(p) for p in paths[:most]]
    more = f" and {len(paths) - most} more" if len(paths) > most else ""
    return ", ".join(shown) + more


def scan_folder(folder, extensions, flag):
    """{key: path} of the files below `folder` with one of `extensions` (hidden ones skipped),
    key = the path below the folder without its extension; and the other files found."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CaffeError(f"{flag} {folder}: no such folder")
    found, other = {}, []
    for path in sorted(folder.rglob("*")):
        below = path.relative_to(folder)
        if any(part.startswith(".") for part in below.parts) or path.is_dir():
            continue
        if path.suffix.lower() not in extensions:
            other.append(path)
            continue
        key = below.with_suffix("").as_posix()
        if key in found:
            raise CaffeError(f'{flag} {folder}: "{found[key].relative_to(folder)}" and '
                             f'"{below}" share the stem "{key}" (images and labels are paired by '
                             "stem): keep one of them")
        found[key] = path
    return found, other


def pair_files(images_dir, labels_dir, report=print):
    """The (image, label) pairs of two folders, by stem; unpaired files are reported."""
    images, other_images = scan_folder(images_dir, IMAGE_EXTENSIONS, "--images")
    labels, other_labels = scan_folder(labels_dir, LABEL_EXTENSIONS, "--labels")
    kinds = "png, jpg, jpeg, bmp, tif"
    if not images:
        seen = f"; found only {_names(other_images, images_dir)}" if other_images else ""
        raise CaffeError(f"--images {images_dir}: no images ({kinds}){seen}")
    lossy = [p for p in other_labels if p.suffix.lower() in (".jpg", ".jpeg")]
    if not labels:
        why = (f"; {_names(lossy, labels_dir, 3)}: JPEG changes a label's values and colours, save "
               "labels as PNG" if lossy else
               (f"; found only {_names(other_labels, labels_dir)}" if other_labels else ""))
        raise CaffeError(f"--labels {labels_dir}: no label images (png, bmp, tif){why}")
    keys = sorted(images.keys() & labels.keys())
    if not keys:
        raise CaffeError(f"no image of --images {images_dir} has a label of the same stem in "
                         f"--labels {labels_dir} (images: {_names(list(images.values()), None, 2)}"
                         f"; labels: {_names(list(labels.values()), None, 2)}): an image and its "
                         "label must share the file name but for the extension")
    report(f"{len(keys)} image/label pairs (images in {images_dir}, labels in {labels_dir})")
    for what, unpaired, folder, other in (
            ("image(s) without a label", images.keys() - labels.keys(), images_dir, "label"),
            ("label(s) without an image", labels.keys() - images.keys(), labels_dir, "image")):
        if unpaired:
            paths = [(images if other == "label" else labels)[k] for k in sorted(unpaired)]
            report(f"  {len(paths)} {what}, left out: {_names(paths, folder)}")
    if lossy:
        report(f"  {len(lossy)} JPEG label(s) ignored (labels must be png, bmp or tif): "
               f"{_names(lossy, labels_dir)}")
    for flag, folder, other in (("--images", images_dir, other_images),
                                ("--labels", labels_dir, [p for p in other_labels
                                                          if p not in lossy])):
        if other:
            report(f"  {len(other)} file(s) of {flag} {folder} that are no images, ignored: "
                   f"{_names(other, folder)}")
    return [Pair(k, images[k], labels[k]) for k in keys]


# ----- reading labels ----------------------------------------------------------------------------
def _truncated(path):
    """Whether a JPEG or PNG file (by its signature) lacks its end marker: an interrupted copy,
    which OpenCV decodes in part, filling the rest with grey, with only a warning."""
    markers = {b"\xff\xd8": b"\xff\xd9", b"\x89PNG": b"IEND"}
    with open(path, "rb") as stream:
        head = stream.read(4)
        stream.seek(0, os.SEEK_END)
        stream.seek(max(0, stream.tell() - 64))
        tail = stream.read()
    return any(head.startswith(start) and end not in tail for start, end in markers.items())


def read_label_keys(path):
    """(HxW int64 keys, colour?) of a label image: the values of a one-channel image (or of one
    whose channels are all equal), else each pixel's packed colour R << 16 | G << 8 | B."""
    if _truncated(path):
        raise CaffeError(f"{path}: {TRUNCATED}")
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise CaffeError(f"{path}: OpenCV cannot decode this label image (corrupt or not an "
                         "image)")
    if array.dtype not in (np.uint8, np.uint16):
        raise CaffeError(f"{path}: a label image of {array.dtype} pixels; labels must be 8- or "
                         "16-bit integer images (class indices or colours)")
    if array.ndim == 3 and array.shape[2] >= 3:
        bgr = array[:, :, :3]
        if (bgr != bgr[:, :, :1]).any():
            if array.dtype != np.uint8:
                raise CaffeError(f"{path}: a 16-bit colour label image; colour-coded labels must "
                                 "be 8-bit RGB")
            bgr = bgr.astype(np.int64)
            return bgr[:, :, 2] << 16 | bgr[:, :, 1] << 8 | bgr[:, :, 0], True
        array = bgr[:, :, 0]
    elif array.ndim == 3:
        array = array[:, :, 0]
    return array.astype(np.int64), False


def analyse_pair(pair):
    """Decode a pair, check that the label has the image's size, count the label's keys."""
    if _truncated(pair.image):
        raise CaffeError(f"{pair.image}: {TRUNCATED}")
    image = cv2.imread(str(pair.image), cv2.IMREAD_COLOR)
    if image is None:
        raise CaffeError(f"{pair.image}: OpenCV cannot decode this image (corrupt or not an "
                         "image)")
    keys, colour = read_label_keys(pair.label)
    if keys.shape != image.shape[:2]:
        raise CaffeError(f"{pair.label}: the label is {keys.shape[0]}x{keys.shape[1]} but its "
                         f"image {pair.image} is {image.shape[0]}x{image.shape[1]} (height x "
                         "width): a label must have its image's size")
    values, counts = np.unique(keys, return_counts=True)
    return PairInfo(pair, image.shape[:2], values, counts, colour)


def in_parallel(function, items, desc, workers=None):
    """function(item) for each item, yielded in order, on a few threads (OpenCV decodes without
    the GIL), with a progress bar on a terminal."""
    from tqdm import tqdm

    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool, \
            tqdm(total=len(items), desc=desc, unit="pair", disable=None, leave=False) as bar:
        pending = deque()
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= 4 * workers:
                yield pending.popleft().result()
                bar.update()
        while pending:
            yield pending.popleft().result()
            bar.update()


# ----- from label keys to classes ----------------------------------------------------------------
def _colour_text(key):
    return f"[{key >> 16 & 255}, {key >> 8 & 255}, {key & 255}]"


def _totals(infos, keys_of):
    """The distinct keys over all pairs with their pixel totals and the first pair holding each."""
    keys = np.concatenate([keys_of(info) for info in infos])
    counts = np.concatenate([info.counts for info in infos])
    owner = np.concatenate([np.full(len(info.keys), n) for n, info in enumerate(infos)])
    distinct, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return distinct, np.bincount(inverse, weights=counts).astype(np.int64), owner[first]


def detect_label_type(infos, palette, label_type):
    """"colour" when any label is colour-coded, or when a palette is given and every grey level
    of the (one-channel) labels is a grey colour of the palette; else "index"."""
    first_colour = next((info for info in infos if info.colour), None)
    if label_type == "index" and first_colour is not None:
        raise CaffeError(f"{first_colour.pair.label}: a colour-coded label, but --label-type "
                         "index says the labels hold class indices")
    if label_type != "auto":
        return label_type
    if first_colour is not None:
        return "colour"
    if palette is not None:
        greys = {int(c[0]) for c in palette.colours if c[0] == c[1] == c[2]}
        if set(np.unique(np.concatenate([info.keys for info in infos])).tolist()) <= greys:
            return "colour"
    return "index"


def colour_mapping(infos, palette, palette_path, labels_dir, write_palette=None, report=print):
    """The mapping of colour-coded labels through the palette (class k = its k-th colour, void
    colour = label K). Without a palette: the colours found go into an error (or into the
    --write-palette file); a colour not in the palette is an error naming its file."""
    keys, pixels, owner = _totals(infos, lambda info: info.keys if info.colour
                                  else info.keys * GREY)
    if palette is None:
        order = np.argsort(-pixels, kind="stable")
        if write_palette is not None:
            if len(keys) > 255:
                raise CaffeError(f"--labels {labels_dir}: {len(keys)} distinct colours, too many "
                                 "for a palette: are these colour-coded labels (not photos, "
                                 "anti-aliased or JPEG-compressed masks)?")
            draft = ClassMap(names=[f"class_{k}" for k in range(len(keys))],
                             colours=[[k >> 16 & 255, k >> 8 & 255, k & 255] for k in keys[order]])
            _write_new_file(write_palette, json_text(draft.to_palette()))
            report(f"wrote {write_palette}: the {len(keys)} colours of the labels, most pixels "
                   "first, named class_0 ...: give each class its name (class k is the k-th "
                   'entry), move the colour of unlabelled pixels (if any) to "void", then run '
                   f"again with --palette {write_palette}")
            return None
        total = pixels.sum()
        shown = ", ".join(f"{_colour_text(k)} {100 * p / total:.1f}%"
                          for k, p in zip(keys[order][:SHOWN], pixels[order][:SHOWN]))
        more = f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
        raise CaffeError(f"--labels {labels_dir}: the labels are colour-coded ({len(keys)} "
                         f"colours: {shown}{more}): give --palette FILE.json naming each colour's "
                         f"class, {PALETTE_FORM}, or write one to edit with --write-palette "
                         "FILE.json")
    known = {(int(r) << 16 | int(g) << 8 | int(b)): label
             for label, (r, g, b) in enumerate(palette.colours)}
    unknown = [n for n, key in enumerate(keys) if int(key) not in known]
    if unknown:
        first = min(unknown, key=lambda n: (owner[n], -pixels[n]))
        others = len(unknown) - 1
        files = len({owner[n] for n in unknown})
        more = (f"; {others} more unknown colour(s) in {files} file(s): "
                + ", ".join(_colour_text(keys[n]) for n in unknown if n != first)[:300]
                if others else "")
        raise CaffeError(f"{infos[owner[first]].pair.label}: colour {_colour_text(keys[first])} "
                         f"({pixels[first]} pixels) is not in the palette {palette_path}"
                         f"{more}")
    labels = np.array([known[int(key)] for key in keys], np.int64)
    return LabelMapping(palette, "colour", keys, labels)


def index_mapping(infos, palette, void_value=None, num_classes=None):
    """The mapping of index labels: values are classes; `void_value` becomes label K. A void
    value among the classes (e.g. 0 for unlabelled) moves the classes above it down by one.
    K comes from the palette, `num_classes` or the largest value; values that are no class and
    not void are an error naming their file."""
    keys, pixels, owner = _totals(infos, lambda info: info.keys)
    present = [int(k) for k in keys if k != void_value]
    if palette is not None:
        if num_classes is not None and num_classes != palette.num_classes:
            raise CaffeError(f"--num-classes {num_classes} but the palette has "
                             f"{palette.num_classes} classes")
        num_classes = palette.num_classes
    explicit = num_classes is not None
    if not present:
        raise CaffeError(f"the labels hold only the void value {void_value}: no class to learn")
    if num_classes is None:  # the values up to the largest, but for the void value
        top = max(present)
        num_classes = top + 1 - (void_value is not None and void_value < top)
    values = [v for v in range(num_classes + 1) if v != void_value][:num_classes]
    bad = [n for n, key in enumerate(keys) if key != void_value and int(key) not in values]
    if bad:
        first = min(bad, key=lambda n: owner[n])
        void = f" nor the void value {void_value}" if void_value is not None else ""
        hint = (f" (pass --void {int(keys[first])} if it marks unlabelled pixels)"
                if void_value is None else "")
        raise CaffeError(f"{infos[owner[first]].pair.label}: label value {int(keys[first])} "
                         f"({pixels[first]} pixels) is not a class 0..{num_classes - 1}{void}"
                         f"{hint}")
    absent = sorted(set(values) - set(present))
    if absent and not explicit:
        shown = ", ".join(str(v) for v in absent[:SHOWN]) + (", ..." if len(absent) > SHOWN
                                                             else "")
        raise CaffeError(f"the labels hold the values {[int(k) for k in keys][:SHOWN]}: as class "
                         f"indices that makes {num_classes} classes, of which {len(absent)} "
                         f"({shown}) never occur; if {max(present)} marks unlabelled pixels pass "
                         f"--void {max(present)}, or pass --num-classes {num_classes} (or a "
                         "--palette) to keep classes absent from the data")
    if num_classes > 255:
        raise CaffeError(f"{num_classes} classes: label images hold at most 255 classes and void")
    if palette is None:
        generic = generic_class_map(num_classes)
        names, colours = list(generic.names), generic.colours.tolist()
        if void_value is not None:
            names.append("void")
            colours.append([0, 0, 0])
        classes = ClassMap(names, colours, num_classes if void_value is not None else None)
    elif void_value is not None and not palette.has_void_entry:
        classes = ClassMap(list(palette.names) + ["void"], palette.colours.tolist() + [[0, 0, 0]],
                           num_classes)
    else:
        classes = palette
    lookup = {v: k for k, v in enumerate(values)}
    labels = np.array([num_classes if key == void_value else lookup[int(key)] for key in keys],
                      np.int64)
    return LabelMapping(classes, "index", keys, labels, void_value)


# ----- splits ------------------------------------------------------------------------------------
def parse_split(text):
    """"0.8,0.1,0.1" -> (0.8, 0.1, 0.1): three positive shares adding up to 1."""
    try:
        shares = tuple(float(part) for part in text.split(","))
    except ValueError:
        shares = ()
    if len(shares) != 3 or min(shares) <= 0 or abs(sum(shares) - 1) > 1e-6:
        raise CaffeError(f"--split {text}: expected three positive shares of train, val and test "
                         "adding up to 1, e.g. 0.8,0.1,0.1")
    return shares


def split_at_random(keys, shares, seed):
    """{split: sorted keys}: the keys shuffled by `seed`, cut by the shares (largest remainder)."""
    n = len(keys)
    exact = np.asarray(shares) * n
    counts = np.floor(exact).astype(int)
    for k in np.argsort(-(exact - counts), kind="stable")[:n - counts.sum()]:
        counts[k] += 1
    empty = [split for split, count in zip(SPLITS, counts) if count == 0]
    if empty:
        raise CaffeError(f"--split {','.join(f'{s:g}' for s in shares)} of {n} pair(s) gives "
                         f"{counts[0]} training, {counts[1]} validation and {counts[2]} test "
                         f"pair(s): the {' and '.join(empty)} split would be empty; add images "
                         "or give it a larger share")
    order = np.random.default_rng(int(seed)).permutation(n)
    cuts = np.cumsum(counts)[:-1]
    return {split: sorted(keys[i] for i in part)
            for split, part in zip(SPLITS, np.split(order, cuts))}


def split_by_lists(keys, lists, report=print):
    """{split: sorted keys} from list files of names (stems, file names or paths below the
    folders, one per line); pairs that no list names are left out."""
    index = {key: key for key in keys}
    by_name = {}
    for key in keys:
        by_name.setdefault(key.rsplit("/", 1)[-1], []).append(key)
    owner, result = {}, {}
    for split, path in zip(SPLITS, lists):
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as exc:
            raise CaffeError(f"--{split}-list {path}: cannot read it ({exc.strerror})") from None
        chosen = []
        for number, line in enumerate(lines, start=1):
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            stem = entry[:-len(Path(entry).suffix)] if Path(entry).suffix else entry
            key = index.get(entry) or index.get(stem)
            if key is None and len(by_name.get(Path(stem).name, [])) == 1:
                key = by_name[Path(stem).name][0]
            if key is None:
                raise CaffeError(f'{path}:{number}: "{entry}" names no image/label pair')
            if key in owner:
                raise CaffeError(f'{path}:{number}: "{entry}" is already in the {owner[key]} '
                                 "list: a pair belongs to one split")
            owner[key] = split
            chosen.append(key)
        if not chosen:
            raise CaffeError(f"--{split}-list {path}: names no pair: the {split} split would be "
                             "empty")
        result[split] = sorted(chosen)
    left = len(keys) - len(owner)
    if left:
        report(f"  {left} pair(s) in no list, left out")
    return result


# ----- writing -----------------------------------------------------------------------------------
def _write_new_file(path, text):
    path = Path(path)
    if path.exists():
        raise CaffeError(f"{path} exists: choose a new file name (nothing is overwritten)")
    try:
        path.write_text(text)
    except OSError as exc:
        raise CaffeError(f"{path}: cannot write it ({exc.strerror})") from None


def check_output_folder(out, images_dir, labels_dir):
    """OUT may be new, empty, a previous output (dataset.json of ours) or a folder without any of
    the names written; it must not hold or lie inside the user's folders where they are written."""
    given, out = out, Path(out).resolve()
    for flag, folder in (("--images", images_dir), ("--labels", labels_dir)):
        resolved = Path(folder).resolve()
        if out == resolved or resolved in out.parents:
            raise CaffeError(f"--out {given} lies inside {flag} {folder}: write the prepared "
                             "dataset elsewhere (the folders given are only read)")
        for name in OWNED:
            if out / name == resolved or out / name in resolved.parents:
                raise CaffeError(f"--out {given} would write {Path(given) / name}, which holds "
                                 f"{flag} {folder}: choose another --out")
    if out.exists() and not out.is_dir():
        raise CaffeError(f"--out {given} is a file, not a folder")
    ours = out / "dataset.json"
    if out.is_dir() and not (ours.is_file() and FORMAT in ours.read_text(errors="replace")):
        taken = [name for name in OWNED if (out / name).exists()]
        if taken:
            raise CaffeError(f"--out {given} already holds {', '.join(taken)} but no dataset.json "
                             "of scripts/prepare_dataset.py: choose a new or empty folder "
                             "(nothing is overwritten)")


def _list_path(image, out, links, key):
    """The image's path relative to OUT for a list file; a relative link under OUT/image_links/ when
    the path holds whitespace (list files cannot)."""
    relative = os.path.relpath(image.resolve(), out.resolve())
    if not any(c.isspace() for c in relative):
        return relative, None
    name = f"{LINK_FOLDER}/{_safe(key)}{image.suffix}"
    links.append((name, image))
    return name, name


def _safe(key):
    return "".join("_" if c.isspace() else c for c in key)


def _replace_owned(out, staging):
    """Move what `staging` holds into `out`, replacing earlier outputs of the same names."""
    trash = out / f".prepare_dataset.old-{os.getpid()}"
    trash.mkdir()
    try:
        for name in OWNED:
            if (out / name).exists() or (out / name).is_symlink():
                (out / name).rename(trash / name)
            if (staging / name).exists():
                (staging / name).rename(out / name)
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def write_dataset(out, infos, mapping, splits, meta, workers=None, report=print):
    """Write labels/, the list files, class_weights.json and dataset.json into `out` (staged in a
    hidden folder first, so that an error leaves an earlier output as it was)."""
    out = Path(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staging = out / f".prepare_dataset.tmp-{os.getpid()}"
    staging.mkdir()
    try:
        by_key = {info.pair.key: info for info in infos}
        label_names = {}
        for key in sorted(by_key):
            name = _safe(key)
            while name in label_names.values():
                name += "_"
            label_names[key] = f"{LABEL_FOLDER}/{name}.png"

        def convert(info):
            keys, colour = read_label_keys(info.pair.label)
            target = staging / label_names[info.pair.key]
            target.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(target), mapping.convert(keys, colour)):
                raise CaffeError(f"{out / label_names[info.pair.key]}: cannot write it")

        chosen = [by_key[key] for split in SPLITS for key in splits[split]]
        for _ in in_parallel(convert, chosen, "write labels", workers):
            pass
        links = []
        for split in SPLITS:
            pairs = []
            for key in splits[split]:
                image, _ = _list_path(by_key[key].pair.image, out, links, key)
                pairs.append((image, label_names[key]))
            write_list_file(staging / f"{split}.txt", pairs)
        for name, image in links:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(image.resolve(), (out / name).parent.resolve()),
                       staging / name)
        counter = ClassFrequencies(mapping.num_classes, mapping.void_label)
        for key in splits["train"]:
            info = by_key[key]
            counter.add(mapping.histogram(info)[:mapping.num_classes], info.counts.sum())
        names = mapping.classes.class_names(mapping.num_classes)
        write_class_weights(staging / "class_weights.json", counter, names,
                            lambda line: report(line.replace(str(staging), str(out))))
        (staging / "dataset.json").write_text(json_text(meta))
        _replace_owned(out, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(out.iterdir()):
            out.rmdir()
        raise
    shutil.rmtree(staging, ignore_errors=True)
    if links:
        report(f"  {len(links)} image path(s) hold spaces, which list files cannot: linked under "
               f"{out / LINK_FOLDER}/")


def _size_text(size):
    return f"{size[0]}x{size[1]}"


def prepare_dataset(images_dir, labels_dir, out, palette=None, split=DEFAULT_SPLIT, lists=None,
                    seed=0, label_type="auto", void_value=None, num_classes=None,
                    write_palette=None, workers=None, report=print):
    """Check and convert a folder of images and a folder of labels into `out` (module docstring);
    return dataset.json's dictionary (None when only --write-palette's file was written)."""
    if label_type not in ("auto", "index", "colour"):
        raise CaffeError(f'label type must be "auto", "index" or "colour", got "{label_type}"')
    if write_palette is None:
        check_output_folder(out, images_dir, labels_dir)
    classes = read_palette(palette) if palette is not None else None
    pairs = pair_files(images_dir, labels_dir, report)
    infos = list(in_parallel(analyse_pair, pairs, "check pairs", workers))
    kind = detect_label_type(infos, classes, label_type)
    mapping = _label_mapping(kind, infos, classes, palette, labels_dir, void_value, num_classes,
                             write_palette, report)
    if mapping is None:
        return None
    keys = [info.pair.key for info in infos]
    splits = split_by_lists(keys, lists, report) if lists else split_at_random(keys, split, seed)
    K, void = mapping.num_classes, mapping.void_label
    how = (f"colour-coded, mapped through the palette {palette}" if kind == "colour" else
           "class indices" + (f" (void value {void_value})" if void_value is not None else ""))
    pixels = _report_classes(infos, mapping, how, report)
    sizes, size = _report_sizes(infos, report)
    report("split: " + ", ".join(f"{split} {len(splits[split])}" for split in SPLITS)
           + (f" (seed {seed})" if not lists else " (from the lists given)"))
    meta = {
        "format": FORMAT,
        **mapping.classes.to_palette(),
        "num_classes": K,
        "ignore_label": void,
        "image_size": list(size) if size is not None else None,
        "image_sizes": sizes,
        "counts": {split: len(splits[split]) for split in SPLITS},
        "lists": {split: f"{split}.txt" for split in SPLITS},
        "class_weights": "class_weights.json",
        "class_pixels": pixels[:K].tolist(),
        "void_pixels": int(pixels[K]) if void is not None else 0,
        "label_type": kind,
        "void_value": void_value,
        "source": {"images": str(Path(images_dir).resolve()),
                   "labels": str(Path(labels_dir).resolve()),
                   "palette": str(Path(palette).resolve()) if palette else None},
        "split": ({"lists": [str(Path(p).resolve()) for p in lists]} if lists
                  else {"shares": list(split), "seed": int(seed)}),
    }
    write_dataset(out, infos, mapping, splits, meta, workers, report)
    for split in SPLITS:
        report(f"wrote {Path(out) / f'{split}.txt'} ({len(splits[split])} pairs)")
    report(f"wrote {Path(out) / 'dataset.json'} and {len(infos)} label images under "
           f"{Path(out) / LABEL_FOLDER}/")
    report(f"next: python scripts/generate_prototxts.py --dataset {out} --model segnet_basic")
    return meta


def _label_mapping(kind, infos, classes, palette, labels_dir, void_value, num_classes,
                   write_palette, report):
    """The LabelMapping of the labels, by their kind ("colour" or "index"); None when only
    --write-palette's file was to be written."""
    if kind == "colour" and (void_value is not None or num_classes is not None):
        flag = "--void" if void_value is not None else "--num-classes"
        raise CaffeError(f"{flag} is for index labels; the labels are colour-coded: their classes "
                         "and void colour come from the palette")
    if kind == "colour":
        return colour_mapping(infos, classes, palette, labels_dir, write_palette, report)
    if write_palette is not None:
        draft = index_mapping(infos, classes, void_value, num_classes).classes
        _write_new_file(write_palette, json_text(draft.to_palette()))
        report(f"wrote {write_palette}: the {draft.num_classes} classes of the index labels "
               f"with generic names and colours: name them, then run again with --palette "
               f"{write_palette}")
        return None
    return index_mapping(infos, classes, void_value, num_classes)


def _report_classes(infos, mapping, how, report):
    """Report each class's share of the pixels and how many images hold it; returns the pixel
    count of each label (the classes, then void)."""
    K, void = mapping.num_classes, mapping.void_label
    histograms = [mapping.histogram(info) for info in infos]
    pixels = sum(histograms)
    images_with = sum((h > 0).astype(np.int64) for h in histograms)
    report(f"labels: {how}; {K} classes" + (f", void = label {void} (ignored)" if void is not None
                                            else ""))
    width = max(len(name) for name in mapping.classes.names)
    for label, name in enumerate(mapping.classes.names[:K + (void is not None)]):
        share = 100 * pixels[label] / max(pixels.sum(), 1)
        report(f"  {label:3d} {name:<{width}}  {str(mapping.classes.colours[label].tolist()):<16}"
               f"{share:6.2f}% of the pixels, in {images_with[label]} image(s)")
    return pixels


def _report_sizes(infos, report):
    """Report the image sizes; returns ({"HxW": count}, the one size or None)."""
    sizes = {}
    for info in infos:
        sizes[_size_text(info.size)] = sizes.get(_size_text(info.size), 0) + 1
    size = infos[0].size if len(sizes) == 1 else None
    if size is not None:
        report(f"images: all {_size_text(size)} (height x width)")
    else:
        report(f"images: {len(sizes)} sizes ({', '.join(f'{s}: {n}' for s, n in sizes.items())}"
               "); the generator resizes them to one: generate_prototxts.py --size HxW")
    return sizes, size


# ----- reading a prepared dataset ----------------------------------------------------------------
def read_dataset(folder):
    """dataset.json of a folder written by prepare_dataset, with "class_weighting" (the
    median-frequency weights of its class_weights.json) added; CaffeError when it is not one."""
    folder = Path(folder)
    path = folder / "dataset.json"
    hint = ("prepare it with scripts/prepare_dataset.py --images DIR --labels DIR --out "
            f"{folder}")
    if not path.is_file():
        raise CaffeError(f"--dataset {folder}: no dataset.json; {hint}")
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f'"format" is {data.get("format")!r}, not "{FORMAT}"')
        num_classes, void = int(data["num_classes"]), data["ignore_label"]
        for split in SPLITS:
            if not (folder / data["lists"][split]).is_file():
                raise ValueError(f"its {split} list {folder / data['lists'][split]} is missing")
        weights_path = folder / data["class_weights"]
        weights = json.loads(weights_path.read_text())["class_weights"]
        if len(weights) != num_classes:
            raise ValueError(f"{weights_path} holds {len(weights)} weights for {num_classes} "
                             "classes")
        int(data["counts"]["train"]), int(data["counts"]["test"])
        if void is not None:
            int(void)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CaffeError(f"{path}: not a prepared dataset ({exc}); {hint}") from None
    return {**data, "class_weighting": weights}
