"""Datasets: the report's synthetic squares, coloured shapes (a stand-in for a dataset of one's
own), CamVid's list files, median-frequency class weights files, and the one home of the class
names and colour maps (palettes) that every figure, prediction image and colour-coded label uses.

Label images follow the SegNet tutorial: one class index per pixel, read by Caffe as grayscale.
Paths inside list files are relative to the dataset folder, so a DenseImageData layer reads them
with `root_folder: "<folder>/"`.
"""
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .list_files import read_label, read_list_file, write_list_file
from .metrics import ClassFrequencies

SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff")
LABEL_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff")  # lossless: JPEG would change the colours
PALETTE_FORM = ('{"classes": [{"name": "road", "color": [128, 64, 128]}, ...], '
                '"void": {"name": "void", "color": [0, 0, 0]}}')


# ----- class names and colours -------------------------------------------------------------------
@dataclass(frozen=True)
class ClassMap:
    """Class names, their RGB colours (one row per label value) and the label that means void.

    `names`/`colours` may hold one more entry than the net has classes: the void class (CamVid's
    11 "Unlabelled"), so that ground-truth images colour their void pixels too.
    """
    names: tuple
    colours: np.ndarray
    ignore_label: int | None = None

    def __post_init__(self):
        colours = np.asarray(self.colours, dtype=np.uint8).reshape(-1, 3)
        if len(colours) != len(self.names):
            raise ValueError(f"{len(self.names)} class names but {len(colours)} colours")
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "colours", colours)

    def class_names(self, num_classes):
        """The names of classes 0..num_classes-1 (generic names past the map's end)."""
        return [self.names[c] if c < len(self.names) else f"class {c}" for c in range(num_classes)]

    @property
    def has_void_entry(self):
        """Whether the last name/colour is the void class's (its label is the ignore label)."""
        return self.ignore_label is not None and self.ignore_label == len(self.names) - 1

    @property
    def num_classes(self):
        """The classes a net predicts: the entries before the void one."""
        return len(self.names) - 1 if self.has_void_entry else len(self.names)

    def to_dict(self):
        return {"names": list(self.names), "colours": self.colours.tolist(),
                "ignore_label": self.ignore_label}

    def to_palette(self):
        """The palette form (see class_map_from_palette) of this map."""
        def entry(k):
            return {"name": self.names[k], "color": self.colours[k].tolist()}

        return {"classes": [entry(k) for k in range(self.num_classes)],
                "void": entry(len(self.names) - 1) if self.has_void_entry else None}


CAMVID_VOID = 11
CAMVID = ClassMap(
    names=("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
           "Pedestrian", "Bicyclist", "Unlabelled"),
    colours=[(128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
             (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0),
             (0, 128, 192), (0, 0, 0)],
    ignore_label=CAMVID_VOID,
)
SQUARES = ClassMap(names=("background", "square"), colours=[(0, 0, 0), (255, 200, 0)])
CLASS_MAPS = {"camvid": CAMVID, "squares": SQUARES}


def generic_class_map(num_classes):
    """Distinct colours for a net of `num_classes` classes that no named map fits."""
    hues = (np.arange(num_classes) * 180 // max(num_classes, 1)).astype(np.uint8)
    hsv = np.stack([hues, np.full_like(hues, 200), np.full_like(hues, 230)], axis=-1)
    colours = cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]
    return ClassMap(names=[f"class {c}" for c in range(num_classes)], colours=colours)


def class_map_from_palette(data, where):
    """A ClassMap from a palette: {"classes": [{"name": ..., "color": [r, g, b]}, ...],
    "void": {"name": ..., "color": [r, g, b]}} ("colour" is accepted too; "void" may be absent
    or null). Class k is the k-th entry; the void entry, if any, follows them as label K, the
    ignore label. Names and colours must be unique. `where` names the source in errors."""
    if not isinstance(data, dict) or not isinstance(data.get("classes"), list) \
            or not data["classes"]:
        raise ValueError(f"{where}: not a palette; expected {PALETTE_FORM}")
    entries = [(f"classes[{k}]", entry) for k, entry in enumerate(data["classes"])]
    if data.get("void") is not None:
        entries.append(("void", data["void"]))
    names, colours, first = [], [], {}
    for what, entry in entries:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f'{where}: {what} needs a "name" (a non-empty string), got '
                             f"{json.dumps(entry)}")
        colour = entry.get("color", entry.get("colour"))
        if not (isinstance(colour, list) and len(colour) == 3 and all(
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in colour)):
            raise ValueError(f'{where}: {what} ("{name}") needs a "color" of three integers '
                             f"0..255 (R, G, B), got {json.dumps(colour)}")
        for key, label in ((("name", name), f'the name "{name}"'),
                           (("color", tuple(colour)), f"the colour {colour}")):
            if key in first:
                raise ValueError(f"{where}: {label} is given twice, for {first[key]} and {what}: "
                                 "each class needs its own name and colour")
            first[key] = what
        names.append(name)
        colours.append(colour)
    num_classes = len(data["classes"])
    if num_classes > 255:
        raise ValueError(f"{where}: {num_classes} classes; label images hold at most 255 classes "
                         "and the void label")
    return ClassMap(names=names, colours=colours,
                    ignore_label=num_classes if data.get("void") is not None else None)


def read_palette(path):
    """The ClassMap of a palette JSON file (class_map_from_palette's form)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the palette ({exc.strerror})") from None
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); expected {PALETTE_FORM}") from None
    return class_map_from_palette(data, path)


def json_text(data, width=100):
    """`data` as JSON text for people to read and edit: a list or object that fits in `width`
    characters on its line (a colour, a class entry) stays on it, larger ones are indented."""
    def render(value, level):
        flat = json.dumps(value)
        if not isinstance(value, (list, dict)) or not value or len(flat) + level <= width:
            return flat
        pad = " " * (level + 1)
        if isinstance(value, dict):
            items = [f"{pad}{json.dumps(key)}: {render(item, level + 1)}"
                     for key, item in value.items()]
            return "{\n" + ",\n".join(items) + "\n" + " " * level + "}"
        items = [pad + render(item, level + 1) for item in value]
        return "[\n" + ",\n".join(items) + "\n" + " " * level + "]"

    return render(data, 0) + "\n"


def load_class_map(spec):
    """A ClassMap from "squares", "camvid" or a JSON file.

    The JSON file is a palette (see class_map_from_palette: what scripts/prepare_dataset.py
    reads and writes in dataset.json) or {"names": [...], "colours": [[r, g, b], ...],
    "ignore_label": int|null} (one colour per name, in label order; "colors" is accepted too).
    """
    if isinstance(spec, ClassMap):
        return spec
    if spec in CLASS_MAPS:
        return CLASS_MAPS[spec]
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f'classes "{spec}": expected "squares", "camvid" or a JSON file '
                         '{"names": [...], "colours": [[r,g,b], ...], "ignore_label": N}')
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(data, dict) and "classes" in data:
        return class_map_from_palette(data, path)
    try:
        colours = data.get("colours", data.get("colors"))
        return ClassMap(names=data["names"], colours=colours, ignore_label=data.get("ignore_label"))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a class map ({exc}); expected "
                         '{"names": [...], "colours": [[r,g,b], ...], "ignore_label": N}') from None


def default_class_map(num_classes):
    """squares for 2 classes, camvid for 11 (or 12, void included), else generic colours."""
    if num_classes == 2:
        return SQUARES
    if num_classes in (11, 12):
        return CAMVID
    return generic_class_map(num_classes)


def colorize(label, palette):
    """An (..., H, W) label array as (..., H, W, 3) uint8 RGB in the palette's colours.

    `palette` is a ClassMap or an (K, 3) colour array; labels outside 0..K-1 are black.
    """
    colours = palette.colours if isinstance(palette, ClassMap) else np.asarray(palette, np.uint8)
    label = np.asarray(label)
    if label.dtype.kind == "f":
        label = np.rint(label)
    label = label.astype(np.int64)
    table = np.concatenate([colours.astype(np.uint8), np.zeros((1, 3), np.uint8)])
    index = np.where((label >= 0) & (label < len(colours)), label, len(colours))
    return table[index]


def overlay(image_rgb, label, palette, alpha=0.5):
    """The label's colours blended over an RGB uint8 image of the same size."""
    coloured = colorize(label, palette).astype(np.float32)
    blended = (1 - alpha) * np.asarray(image_rgb, np.float32) + alpha * coloured
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


# ----- the report's synthetic squares -------------------------------------------------------------
SQUARE_SIDES = (90, 100)        # inclusive range of the square's side, in pixels
MIN_COLOUR_DISTANCE = 100.0     # Euclidean RGB distance between background and square colours


@dataclass
class SquareSample:
    image: np.ndarray       # HxWx3 uint8 RGB
    label: np.ndarray       # HxW uint8, 0 background / 1 square
    top: int
    left: int
    side: int
    background: tuple
    foreground: tuple


def draw_colours(rng):
    """A background and a square colour (RGB) at least MIN_COLOUR_DISTANCE apart."""
    background = rng.integers(0, 256, 3)
    while True:
        foreground = rng.integers(0, 256, 3)
        if np.linalg.norm(foreground - background) >= MIN_COLOUR_DISTANCE:
            return tuple(int(v) for v in background), tuple(int(v) for v in foreground)


def make_square(rng, size=512):
    """One sample: a flat background with one filled square of side 90..100 fully inside."""
    if size <= SQUARE_SIDES[1]:
        raise ValueError(f"size must be greater than {SQUARE_SIDES[1]} so that a square of side "
                         f"{SQUARE_SIDES[0]}..{SQUARE_SIDES[1]} fits inside, got {size}")
    background, foreground = draw_colours(rng)
    side = int(rng.integers(SQUARE_SIDES[0], SQUARE_SIDES[1] + 1))
    top = int(rng.integers(0, size - side + 1))
    left = int(rng.integers(0, size - side + 1))
    image = np.empty((size, size, 3), np.uint8)
    image[:] = background
    image[top:top + side, left:left + side] = foreground
    label = np.zeros((size, size), np.uint8)
    label[top:top + side, left:left + side] = 1
    return SquareSample(image, label, top, left, side, background, foreground)


def split_rng(seed, split):
    """The random source of one split: distinct for train/val/test, all derived from `seed`."""
    return np.random.default_rng([int(seed), SPLITS.index(split)])


def make_squares(out, count=100, size=512, seed=0, splits=SPLITS):
    """Write the squares dataset into `out`; return {split: list file path}.

    Layout, as the report's seed_squares: `<split>/N.png` (RGB image), `<split>annot/ann_N.png`
    (RGB PNG of (0,0,0) background and (1,1,1) square, read by Caffe as grayscale labels 0/1) and
    `<split>.txt` list files with paths relative to `out`. The same seed gives the same files.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if size <= SQUARE_SIDES[1]:
        raise ValueError(f"size must be greater than {SQUARE_SIDES[1]} so that a square of side "
                         f"{SQUARE_SIDES[0]}..{SQUARE_SIDES[1]} fits inside, got {size}")
    out = Path(out)
    written = {}
    for split in splits:
        rng = split_rng(seed, split)
        (out / split).mkdir(parents=True, exist_ok=True)
        (out / f"{split}annot").mkdir(parents=True, exist_ok=True)
        pairs = []
        for n in range(count):
            sample = make_square(rng, size)
            image_name, label_name = f"{split}/{n}.png", f"{split}annot/ann_{n}.png"
            _write_png(out / image_name, cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR))
            _write_png(out / label_name, np.repeat(sample.label[:, :, None], 3, axis=2))
            pairs.append((image_name, label_name))
        write_list_file(out / f"{split}.txt", pairs)
        written[split] = out / f"{split}.txt"
    return written


def _write_png(path, array):
    if not cv2.imwrite(str(path), array):
        raise OSError(f'cannot write "{path}"')


# ----- coloured shapes: a dataset in a user's layout ----------------------------------------------
# Mask colours (RGB) of the shapes dataset; void is the band along every shape's outline, where
# the image's anti-aliased edge mixes two classes (as PASCAL VOC's void border).
SHAPES = ClassMap(names=("background", "disc", "triangle", "box", "void"),
                  colours=[(0, 0, 0), (220, 20, 60), (0, 0, 142), (250, 170, 30),
                           (224, 224, 192)], ignore_label=4)
# OpenCV hue ranges (0..180) each shape's colour is drawn from (saturated, on a background of low
# saturation): a net tells the classes apart by colour and finds their outlines by shape.
SHAPE_HUES = {1: (0, 30), 2: (55, 90), 3: (110, 150)}
SHAPE_SIDES = (30, 80)


def _shape_polygon(rng, kind, centre, size):
    """The outline of a triangle (kind 2) or a box (kind 3) of about `size` px, turned at random."""
    angle = rng.uniform(0, 2 * np.pi)
    if kind == 2:
        corners = angle + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3])
        radius = size / np.sqrt(3)
    else:
        corners = angle + np.array([0.25, 0.75, 1.25, 1.75]) * np.pi
        radius = size / np.sqrt(2)
    points = np.stack([centre[0] + radius * np.cos(corners),
                       centre[1] + radius * np.sin(corners)], 1)
    return np.rint(points).astype(np.int32)


def make_shape_sample(rng, height=200, width=300, void_width=2):
    """An (RGB image, RGB colour-coded mask) pair: a noisy gradient background with 2..5 discs,
    triangles and boxes (which may overlap and leave the frame), the mask in SHAPES' colours
    with a void band of `void_width` px on each side of every visible outline."""
    corner = np.stack([rng.integers(0, 180, 2), rng.integers(0, 60, 2), np.sort(
        rng.integers(40, 230, 2))], 1).astype(np.uint8)  # two low-saturation HSV colours
    ends = cv2.cvtColor(corner[None], cv2.COLOR_HSV2RGB)[0].astype(np.float32)
    t = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    if rng.random() < 0.5:
        t = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    image = np.broadcast_to(ends[0] * (1 - t) + ends[1] * t, (height, width, 3)).copy()
    mask = np.zeros((height, width, 3), np.uint8)
    mask[:] = SHAPES.colours[0]
    void = tuple(int(v) for v in SHAPES.colours[SHAPES.ignore_label])
    thickness = 2 * void_width + 1
    for _ in range(int(rng.integers(2, 6))):
        kind = int(rng.integers(1, 4))
        hue = rng.integers(*SHAPE_HUES[kind])
        hsv = np.array([[[hue, rng.integers(150, 256), rng.integers(150, 256)]]], np.uint8)
        colour = tuple(float(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])
        label = tuple(int(v) for v in SHAPES.colours[kind])
        size = int(rng.integers(SHAPE_SIDES[0], SHAPE_SIDES[1] + 1))
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        if kind == 1:
            cv2.circle(image, centre, size // 2, colour, -1, cv2.LINE_AA)
            cv2.circle(mask, centre, size // 2, label, -1, cv2.LINE_8)
            cv2.circle(mask, centre, size // 2, void, thickness, cv2.LINE_8)
        else:
            polygon = _shape_polygon(rng, kind, centre, size)
            cv2.fillPoly(image, [polygon], colour, cv2.LINE_AA)
            cv2.fillPoly(mask, [polygon], label, cv2.LINE_8)
            cv2.polylines(mask, [polygon], True, void, thickness, cv2.LINE_8)
    image += rng.normal(0, 6, image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask


def make_shapes(out, count=120, height=200, width=300, seed=0, void_width=2):
    """Write a dataset as users bring theirs: `out/images/shape_NNN.jpg` (RGB photos, JPEG),
    `out/masks/shape_NNN.png` (colour-coded RGB masks in SHAPES' colours, void along the
    outlines) and `out/palette.json` (SHAPES as a palette); no splits, no list files (that is
    scripts/prepare_dataset.py's job). The same seed writes the same files. Returns the
    palette's path."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if min(height, width) < 16:
        raise ValueError(f"images must be at least 16x16, got {height}x{width}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(int(seed))
    digits = len(str(count - 1))
    for n in range(count):
        image, mask = make_shape_sample(rng, height, width, void_width)
        name = f"shape_{n:0{digits}d}"
        if not cv2.imwrite(str(out / "images" / f"{name}.jpg"),
                           cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90]):
            raise OSError(f'cannot write "{out / "images" / name}.jpg"')
        _write_png(out / "masks" / f"{name}.png", cv2.cvtColor(mask, cv2.COLOR_RGB2BGR))
    palette = out / "palette.json"
    palette.write_text(json_text(SHAPES.to_palette()))
    return palette


# ----- CamVid in the SegNet tutorial layout -------------------------------------------------------
def folder_pairs(root, split):
    """(image, label) paths relative to `root` for `<split>/X` and `<split>annot/X`, by file name."""
    root = Path(root)
    image_dir, label_dir = root / split, root / f"{split}annot"
    images = sorted(p.name for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    labels = {p.name for p in label_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS}
    missing = [name for name in images if name not in labels]
    extra = sorted(labels.difference(images))
    if missing:
        raise ValueError(f"{label_dir}: no label image for {len(missing)} image(s) of {image_dir}, "
                         f"e.g. {missing[:3]} (labels must share the image's file name)")
    if extra:
        raise ValueError(f"{image_dir}: no image for {len(extra)} label(s) of {label_dir}, "
                         f"e.g. {extra[:3]}")
    if not images:
        raise ValueError(f"{image_dir}: no images")
    return [(f"{split}/{name}", f"{split}annot/{name}") for name in images]


def check_pairs(root, pairs, num_classes, ignore_label, where, on_label=None):
    """Check that every pair's files exist, sizes match and labels lie in 0..num_classes-1 (or are
    the ignore label); call on_label(label array) for each label image."""
    root = Path(root)
    for number, (image_name, label_name) in enumerate(pairs, start=1):
        image_path, label_path = root / image_name, root / label_name
        for path in (image_path, label_path):
            if not path.is_file():
                raise ValueError(f'{where}:{number}: "{path}" does not exist (paths are relative '
                                 f"to {root}; rewrite the list with --rewrite)")
        image = cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise ValueError(f'{where}:{number}: OpenCV cannot decode "{image_path}"')
        label = read_label(label_path)
        if image.shape[:2] != label.shape:
            raise ValueError(f'{where}:{number}: image "{image_path}" is {image.shape[0]}x'
                             f'{image.shape[1]} but its label is {label.shape[0]}x{label.shape[1]}')
        bad = np.setdiff1d(np.unique(label), np.arange(num_classes))
        if ignore_label is not None:
            bad = bad[bad != ignore_label]
        if bad.size:
            raise ValueError(f'{where}:{number}: label "{label_path}" holds values {bad.tolist()} '
                             f"outside the classes 0..{num_classes - 1}"
                             + (f" and void {ignore_label}" if ignore_label is not None else ""))
        if on_label is not None:
            on_label(label)


def prepare_camvid(root, out=None, rewrite=False, num_classes=11, ignore_label=CAMVID_VOID,
                   class_names=None, report=print):
    """Write or validate CamVid's list files and compute median-frequency class weights.

    For each split folder of the SegNet tutorial layout (`train/` + `trainannot/`, `val/` ...,
    `test/` ...) under `root`: an existing `<out>/<split>.txt` is validated (pairs exist relative
    to `root`, sizes match, labels in 0..num_classes-1 or void) and kept, unless `rewrite`; a
    missing one is written from the folder, pairing files by name. The weights come from the
    training labels (see metrics.median_frequency_weights) and are written to
    `<out>/class_weights.json` as {"class_weights": [...], ...}. Returns that dictionary.
    """
    root = Path(root)
    out = Path(out) if out is not None else root
    if not (root / "train").is_dir() or not (root / "trainannot").is_dir():
        raise ValueError(f"{root}: expected the SegNet tutorial layout (train/, trainannot/, "
                         "val/, valannot/, test/, testannot/)")
    out.mkdir(parents=True, exist_ok=True)
    class_names = list(class_names or CAMVID.names[:num_classes])
    counter = ClassFrequencies(num_classes, ignore_label)
    lists = {}
    for split in SPLITS:
        if not (root / split).is_dir() or not (root / f"{split}annot").is_dir():
            report(f"{split}: no {split}/ and {split}annot/ folders in {root}, skipped")
            continue
        list_path = out / f"{split}.txt"
        if list_path.is_file() and not rewrite:
            pairs, action = read_list_file(list_path), "validated"
            if not pairs:
                raise ValueError(f"{list_path} is empty (use --rewrite to write it from the folder)")
        else:
            pairs, action = folder_pairs(root, split), "written"
        check_pairs(root, pairs, num_classes, ignore_label, str(list_path),
                    counter.update if split == "train" else None)
        if action == "written":
            write_list_file(list_path, pairs)
        lists[split] = str(list_path)
        report(f"{list_path}: {len(pairs)} image/label pairs, {action}")
    result = write_class_weights(out / "class_weights.json", counter, class_names, report,
                                 root_folder=str(root.resolve()) + "/", lists=lists)
    report(f'DenseImageData: source: "{out / "train.txt"}"  root_folder: "{root}/"')
    return result


def write_class_weights(path, counter, class_names, report=print, **extra):
    """Write the median-frequency class weights of a metrics.ClassFrequencies (filled with the
    training labels) to `path` as JSON ({"class_weights": [...], "frequencies": ..., ...} and
    `extra`: what scripts/generate_prototxts.py --class-weights reads), report them as a table
    and return the dictionary."""
    weights = counter.weights()
    result = {
        "class_weights": [float(w) for w in weights],
        "class_names": list(class_names),
        "frequencies": [None if np.isnan(f) else float(f) for f in counter.frequencies],
        "class_pixels": counter.class_pixels.tolist(),
        "num_classes": counter.num_classes,
        "ignore_label": counter.ignore_label,
        "images": counter.images,
        "method": "median frequency balancing: weight(c) = median(freq) / freq(c), freq(c) = "
                  "pixels of c / all pixels of the training images containing c",
        **extra,
    }
    Path(path).write_text(json.dumps(result, indent=1) + "\n")
    void = f" (label {counter.ignore_label} ignored)" if counter.ignore_label is not None else ""
    report(f"median-frequency class weights over {counter.images} training label images{void}:")
    width = max(len(n) for n in class_names)
    for name, weight, freq in zip(class_names, weights, counter.frequencies):
        report(f"  {name:<{width}}  {weight:8.4f}   (freq {freq:.6f})")
    report(f"wrote {path}")
    return result
