"""What ImageData and DenseImageData share: list files, OpenCV decoding as Caffe's
ReadImageToCVMat, Caffe's DataTransformer on cv::Mats, the batch order, and the data-layer base.

A batch is a pure function of its index k (`ListDataLayer.load_batch(k)`): the order of epoch e
is a permutation drawn from (seed, e) and each item's random crop/mirror from (seed, position),
so the loader's whole state is (seed, k), a resumed run continues with the same data, and a
background thread can decode batch k+1 while batch k trains. For the same reason the engine
options data_cache (keep each entry's decoded image in memory) and data_workers (read a batch's
items in several threads) change how fast a batch comes, never what it holds.
"""
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from .base import BaseLayer
from .. import distributed, input_transform, list_files, mode
from ..errors import CaffeError
from ..input_transform import InputTransform
from ..logs import get_logger
from ..proto import caffe_pb2


# ----- list files --------------------------------------------------------------------------------
def read_list(layer, source, parse, what):
    """list_files.read_entries of `source` with the layer's errors: relative paths are read from
    the working directory, as Caffe does, and a missing or empty list is an error."""
    if not source:
        raise layer.error("no source: set the list file (one " + what + " per line)")
    if not os.path.isfile(source):
        raise layer.error(f'list file "{source}" does not exist (relative paths are read from the '
                          f"working directory {os.getcwd()})")
    try:
        entries = list_files.read_entries(source, parse, what)
    except ValueError as exc:
        raise layer.error(str(exc)) from None
    if not entries:
        raise layer.error(f'list file "{source}" is empty: it needs one {what} per line')
    return entries


# ----- decoding ----------------------------------------------------------------------------------
def decode(layer, path, where, is_color, new_height=0, new_width=0, is_label=False):
    """Caffe's ReadImageToCVMat: an HxWxC uint8 array (BGR, or C=1 for grayscale), resized to
    new_height x new_width when both are set, bilinearly (images) or nearest-neighbour (labels)."""
    kind = "label image" if is_label else "image"
    if not os.path.isfile(path):
        raise layer.error(f'{where}: cannot read {kind} "{path}": no such file')
    image = cv2.imread(path, cv2.IMREAD_COLOR if is_color else cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise layer.error(f'{where}: cannot read {kind} "{path}": OpenCV cannot decode it')
    with layer.said_lock:  # items may be decoded in several threads (data_workers)
        _say_once_if_converted(layer, path, where, is_color, is_label)
    if new_height > 0 and new_width > 0:
        image = cv2.resize(image, (new_width, new_height),
                           interpolation=cv2.INTER_NEAREST if is_label else cv2.INTER_LINEAR)
    if image.ndim == 2:
        image = image[:, :, None]
    return image


def _say_once_if_converted(layer, path, where, is_color, is_label):
    """Log once per layer when OpenCV converted the file's channels on reading it: a grayscale
    image read as BGR, an alpha channel dropped, or a colour label image (`is_label`) read as
    grayscale (whose values are then luminances, not class numbers). The file's own mode comes
    from its header (Pillow reads only that); formats Pillow does not know are not checked."""
    try:
        with Image.open(path) as header:
            file_mode, transparent = header.mode, "transparency" in header.info
    except (OSError, ValueError):
        return
    if is_color and file_mode in ("1", "L", "LA", "I", "I;16", "F"):
        what = "a grayscale image, converted to BGR (its channel repeated 3 times)"
    elif is_color and (file_mode in ("RGBA", "LA", "PA", "La", "RGBa") or transparent):
        what = "an image with an alpha channel, read as BGR (the alpha channel is dropped)"
    elif is_label and file_mode not in ("1", "L", "I", "I;16", "F"):
        if not _colour_label_differs(layer, path):
            return
        what = (f"a label image in colour (mode {file_mode}), read as grayscale: its values "
                "are luminances (0.299 R + 0.587 G + 0.114 B), not class numbers; labels must "
                "be one-channel images of class indices")
    else:
        return
    if what not in layer.conversions_said:
        layer.conversions_said.add(what)
        get_logger().warning(f'layer "{layer.name}": {where}: "{path}" is {what} (said once '
                             "for this layer)")


def _colour_label_differs(layer, path):
    """Whether the first colour label image a layer reads has channels that differ (a colour
    coding); labels stored as RGB with R = G = B (the squares data set) read correctly. One
    extra decode per layer: a data set's labels are assumed to be stored alike."""
    if "colour label checked" in layer.conversions_said:
        return False
    layer.conversions_said.add("colour label checked")
    pixels = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    return pixels is not None and pixels.ndim == 3 and bool(
        (pixels[:, :, :3] != pixels[:, :, :1]).any())


# ----- Caffe's DataTransformer -------------------------------------------------------------------
def read_mean_file(layer, path):
    """input_transform.read_mean_file with the layer's errors (a missing file named with the
    working directory its relative path is read from)."""
    if not os.path.isfile(path):
        raise layer.error(f'transform_param.mean_file "{path}" does not exist (relative paths are '
                          f"read from the working directory {os.getcwd()})")
    try:
        return input_transform.read_mean_file(path)
    except CaffeError as exc:
        raise layer.error(f"transform_param.mean_file: {exc}") from None


class DataTransformer:
    """Caffe's DataTransformer::Transform(cv::Mat): optional crop_size crop (random in TRAIN,
    centred in TEST) and mirror around the InputTransform (x - mean) * scale, as float32 in NCHW
    order."""

    def __init__(self, layer, param, phase):
        self.layer = layer
        self.scale = np.float32(param.scale)
        self.crop_size = param.crop_size
        self.mirror = param.mirror
        self.train = phase == caffe_pb2.TRAIN
        if param.HasField("mean_file") and len(param.mean_value):
            raise layer.error("transform_param: give mean_file or mean_value, not both")
        self.mean_file = read_mean_file(layer, param.mean_file) if param.HasField("mean_file") \
            else None
        self.mean_values = np.asarray(param.mean_value, dtype=np.float32)

    @property
    def random(self):
        """Whether the transform draws random numbers."""
        return self.mirror or (self.crop_size > 0 and self.train)

    def __call__(self, image, rng, where):
        """The HxWxC uint8 `image` transformed to a CxH'xW' float32 array."""
        height, width, channels = image.shape
        mean = None
        if self.mean_file is not None:
            if self.mean_file.shape != (channels, height, width):
                raise self.layer.error(f"{where}: the image is {channels}x{height}x{width} "
                                       f"(CxHxW) but the mean_file is "
                                       f"{'x'.join(map(str, self.mean_file.shape))}")
            mean = self.mean_file
        elif self.mean_values.size:
            if self.mean_values.size not in (1, channels):
                raise self.layer.error(f"transform_param gives {self.mean_values.size} "
                                       f"mean_value for {channels}-channel images: give one, or "
                                       "one per channel")
            mean = np.broadcast_to(self.mean_values.reshape(-1, 1, 1), (channels, 1, 1))
        do_mirror = self.mirror and bool(rng.integers(2))
        data = image.transpose(2, 0, 1)
        if self.crop_size:
            size = self.crop_size
            if height < size or width < size:
                raise self.layer.error(f"{where}: the image is {height}x{width}, smaller than "
                                       f"crop_size {size}")
            if self.train:
                top, left = int(rng.integers(height - size + 1)), int(rng.integers(width - size + 1))
            else:
                top, left = (height - size) // 2, (width - size) // 2
            data = data[:, top:top + size, left:left + size]
            if mean is not None and mean.shape[1] > 1:
                mean = mean[:, top:top + size, left:left + size]
        out = InputTransform(self.scale, mean).apply(data)
        if do_mirror:
            out = out[:, :, ::-1]
        return np.ascontiguousarray(out, dtype=np.float32)


# ----- batch order -------------------------------------------------------------------------------
class BatchOrder:
    """Which list entries batch k holds: consecutive positions from `skip`, wrapping to the start
    inside a batch as Caffe's cursor does; with shuffle, each pass over the list (epoch) in its own
    permutation drawn from (seed, epoch).

    In a data-parallel job of `shards` processes, step k's `shards` batches are consecutive and
    process `shard` takes the shard-th of them, so the processes read disjoint parts of each
    epoch and together the same items as one process with `shards` times the batch.
    """

    def __init__(self, count, batch_size, shuffle, seed, skip=0, shard=0, shards=1):
        self.count, self.batch_size, self.shuffle = count, batch_size, shuffle
        self.seed, self.skip = seed, skip
        self.shard, self.shards = shard, shards
        self._permutations = {}

    def _permutation(self, epoch):
        # Also called from the prefetch thread: the result is held locally, not re-read.
        permutation = self._permutations.get(epoch)
        if permutation is None:
            if len(self._permutations) > 4:
                self._permutations.clear()
            permutation = np.random.default_rng([self.seed, epoch]).permutation(self.count)
            self._permutations[epoch] = permutation
        return permutation

    def positions(self, k):
        """The global positions of batch k's items (position p is entry p % count of epoch
        p // count)."""
        start = self.skip + (k * self.shards + self.shard) * self.batch_size
        return range(start, start + self.batch_size)

    def entry(self, position):
        epoch, index = divmod(position, self.count)
        return int(self._permutation(epoch)[index]) if self.shuffle else index

    def rng(self, position):
        """The random source of the item at `position` (crop offsets, mirroring)."""
        return np.random.default_rng([self.seed, position, 1])


def stack(layer, arrays, names, what):
    """The arrays of one batch stacked along a new first axis; a CaffeError naming two items whose
    sizes differ."""
    for array, name in zip(arrays[1:], names[1:]):
        if array.shape != arrays[0].shape:
            raise layer.error(f"{what} {name} is {_size(array)} but {names[0]} in the same batch "
                              f"is {_size(arrays[0])}: set new_height/new_width so that a batch's "
                              "images share one size, or use batch_size 1")
    return np.stack(arrays)


def _size(array):
    return f"{array.shape[-2]}x{array.shape[-1]} (HxW) with {array.shape[0]} channel(s)"


# One thread decodes ahead for every data layer: OpenCV and numpy release the GIL, so it runs
# beside the step's torch kernels.
_PREFETCH = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segnet-caffe-data")
# The threads that read a batch's items (EngineOptions.data_workers > 1): one pool per count,
# shared by the layers asking for it. Their tasks submit nothing, so a prefetch waiting on them
# cannot deadlock.
_ITEM_POOLS = {}
_ITEM_POOLS_LOCK = threading.Lock()


def _item_pool(workers):
    with _ITEM_POOLS_LOCK:
        pool = _ITEM_POOLS.get(workers)
        if pool is None:
            pool = _ITEM_POOLS[workers] = ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix="segnet-caffe-items")
        return pool


# ----- the data-layer base -----------------------------------------------------------------------
class ListDataLayer(BaseLayer):
    """A data layer reading the images of a list file: tops come from `load_batch(k)`.

    Subclasses set `self.entries` (the parsed list), `self.order` (a BatchOrder) in `setup` and
    implement `load_batch(k)` -> the numpy arrays of the tops for batch k. Each forward starts
    decoding the next batch in a background thread; `self.batch` counts the batches handed
    out, so the saved state (and a resume) does not depend on what was decoded ahead.

    Layers that read image files implement `decode_entry(index)` (entry `index`'s decoded
    arrays: what depends on the file alone) and `make_item(position, index, decoded)` (the
    item at a position: its random crop, mirror and transform), and build batches with
    `batch_items(k)`, which applies the engine options data_cache and data_workers.
    """

    bottom_count = (0, 0)
    reads_data = True

    @property
    def epoch_batches(self):
        """Batches that cover the list once."""
        return -(-len(self.entries) // self.order.batch_size)

    def last_batch_names(self):
        """The file stems of the images of the batch handed out last (None before the first)."""
        if not self.batch:
            return None
        return [Path(str(self.entries[self.order.entry(position)][1][0])).stem
                for position in self.order.positions(self.batch - 1)]

    def draw_seed(self, needed):
        """The seed of the layer's random choices, drawn from torch's generator (seeded by
        set_random_seed) only when the layer is random, as Caffe draws from its RNG only then."""
        return int(torch.randint(0, 2 ** 31 - 1, ()).item()) if needed else 0

    def start(self, source, batch_size, shuffle, rand_skip, random):
        """Build the batch order; log as Caffe does."""
        if batch_size < 1:
            raise self.error("batch_size must be at least 1")
        seed = self.draw_seed(shuffle or rand_skip or random)
        skip = 0
        if rand_skip:
            skip = int(np.random.default_rng([seed, 2]).integers(rand_skip))
            if skip >= len(self.entries):
                raise self.error(f"rand_skip drew {skip} but {source} has only "
                                 f"{len(self.entries)} entries: lower rand_skip")
        shard, shards = distributed.data_shard() if self.phase == caffe_pb2.TRAIN else (0, 1)
        self.order = BatchOrder(len(self.entries), batch_size, shuffle, seed, skip, shard, shards)
        self.batch = 0
        self._cache = None
        self.conversions_said = set()  # channel conversions already logged (see decode)
        self.said_lock = threading.Lock()
        self._decoded = {}  # entry index -> a Future of decode_entry's arrays (data_cache)
        self._decoded_bytes = self._decoded_count = 0
        self._decoded_lock = threading.Lock()
        log = get_logger()
        log.info(f"Opening file {source}")
        if shuffle:
            log.info("Shuffling data")
        log.info(f"A total of {len(self.entries)} examples.")
        if shards > 1:
            log.info(f"Process {shard} of {shards} reads batch {shard} of every {shards} "
                     "consecutive batches")

    def load_batch(self, k):
        raise NotImplementedError

    def decode_entry(self, index):
        """The arrays read from entry `index`'s files (layers using batch_items)."""
        raise NotImplementedError

    def make_item(self, position, index, decoded):
        """The item at `position` (entry `index`) made from its decoded arrays, which it must
        not modify (cached ones are read-only)."""
        raise NotImplementedError

    def batch_items(self, k):
        """make_item(...) of each item of batch k, in order: each entry decoded (or taken from
        memory: data_cache), the items made in data_workers threads (a decode error is raised
        for the first failing item, as when reading them in turn)."""
        positions = list(self.order.positions(k))
        indices = [self.order.entry(position) for position in positions]

        def item(position, index):
            return self.make_item(position, index, self._decoded_entry(index))

        workers = self.options.data_workers
        if workers > 1 and len(positions) > 1:
            return list(_item_pool(workers).map(item, positions, indices))
        return [item(position, index) for position, index in zip(positions, indices)]

    def _decoded_entry(self, index):
        """decode_entry(index), with data_cache once per entry: a thread asking for an entry
        that another is decoding (the same entry twice in a batch, or in the batch decoded
        ahead) waits for it."""
        if not self.options.data_cache:
            return self.decode_entry(index)
        with self._decoded_lock:
            pending = self._decoded.get(index)
            owner = pending is None
            if owner:
                pending = self._decoded[index] = Future()
        if not owner:
            return pending.result()  # a failed decode raises here too
        try:
            decoded = self.decode_entry(index)
        except BaseException as error:
            with self._decoded_lock:
                del self._decoded[index]  # the next read tries again
            pending.set_exception(error)
            raise
        for array in decoded:
            array.flags.writeable = False  # an item made from it must copy, never edit it
        pending.set_result(decoded)
        with self._decoded_lock:
            self._decoded_bytes += sum(array.nbytes for array in decoded)
            self._decoded_count += 1
            if self._decoded_count == len(self.entries):
                get_logger().info(f'layer "{self.name}": all {len(self.entries)} entries of '
                                  f"{self.source} decoded and kept in memory "
                                  f"({self._decoded_bytes / 2 ** 20:.0f} MiB, data_cache)")
        return decoded

    def _batch_arrays(self, k):
        """Batch k's arrays: decoded ahead in the background, or now."""
        if self._cache is not None and self._cache[:2] == (self.order, k):
            arrays = self._cache[2]
            if isinstance(arrays, Future):  # a CaffeError of the decode is raised here
                arrays = arrays.result()
                self._cache = (self.order, k, arrays)
            return arrays
        arrays = self.load_batch(k)
        self._cache = (self.order, k, arrays)
        return arrays

    def _prefetch(self, k):
        """Start decoding batch k in the background thread (EngineOptions.data_prefetch)."""
        if self.options.data_prefetch:
            self._cache = (self.order, k, _PREFETCH.submit(self.load_batch, k))

    def reshape(self, bottom_shapes):
        """The shapes of the next batch (decoded now, handed out by the next forward)."""
        return [tuple(a.shape) for a in self._batch_arrays(self.batch)]

    def forward(self, bottoms):
        arrays = self._batch_arrays(self.batch)
        self._cache = None
        self.batch += 1
        self._prefetch(self.batch)
        device = mode.device()
        return [torch.from_numpy(a).to(device) for a in arrays]

    def describe_item(self, n):
        """Where item n of the batch last handed out comes from: its list file line."""
        position = self.order.positions(self.batch - 1)[n]
        number, entry = self.entries[self.order.entry(position)]
        root = f" under root_folder {self.root!r}" if self.root else ""
        return f'{self.source}:{number} "{" ".join(str(field) for field in entry)}"{root}'

    def state(self):
        return {"batch": self.batch, "seed": self.order.seed, "skip": self.order.skip,
                "entries": len(self.entries), "shards": self.order.shards,
                "batch_size": self.order.batch_size}

    def load_state(self, state):
        """Continue where the saved layer stopped, also when the number of processes (shards) or
        the batch size differs: the items read so far, batch x shards x batch_size, are skipped."""
        if not state:
            return
        if state.get("entries", len(self.entries)) != len(self.entries):
            get_logger().warning(f'layer "{self.name}": the list now has {len(self.entries)} '
                                 f"entries, {state['entries']} when the state was saved: the "
                                 "data order will differ")
        order = self.order
        read = int(state["batch"]) * int(state.get("shards", 1)) * int(
            state.get("batch_size", order.batch_size))
        self.batch, rest = divmod(read, order.shards * order.batch_size)
        self.order = BatchOrder(len(self.entries), order.batch_size, order.shuffle,
                                int(state["seed"]), int(state.get("skip", 0)) + rest,
                                order.shard, order.shards)
        self._cache = None
