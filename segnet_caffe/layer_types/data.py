"""Data (BVLC): batches of Datum records, and their labels, from an LMDB database.

The database's keys are read once, in LMDB order; item p of the sequence is key p % count, as
Caffe's cursor walks the database and seeks to the first key at its end. So the layer is a
ListDataLayer whose entries are keys: batches, rand_skip, the data-parallel split, the saved state
and the background decoding are those of ImageData and DenseImageData (see list_data).
"""
import os
import threading
import weakref

import numpy as np
from google.protobuf.message import DecodeError

from . import register_layer
from .list_data import ListDataLayer, DataTransformer
from ..logs import get_logger
from ..proto import caffe_pb2

# Legacy preprocessing fields of DataParameter: Caffe moves them to transform_param only when it
# upgrades an old `layers {}` net (io.py does too); in a `layer {}` they are ignored.
_LEGACY_FIELDS = ("scale", "mean_file", "crop_size", "mirror")

# lmdb opens an environment once per process: the layers reading one database (a TRAIN and a TEST
# net, say) share it while any of them lives.
_ENVIRONMENTS = weakref.WeakValueDictionary()
_ENVIRONMENTS_LOCK = threading.Lock()


@register_layer("Data")
class DataLayer(ListDataLayer):
    """Datum records (raw uint8, float_data or an encoded JPEG/PNG) read from an LMDB database.

    Parameters: data_param.source (LMDB directory), backend (LMDB; LEVELDB is refused), batch_size, rand_skip, force_encoded_color; transform_param.scale, mean_value / mean_file, crop_size (random in TRAIN, centred in TEST), mirror (random), force_color / force_gray (encoded datums).
    Forward: data = (datum - mean) * scale, (N, C, H, W) float (encoded images decoded as BGR by OpenCV); label = the datums' labels, (N,) float, when there is a second top; the database wraps inside a batch.
    Backward: none.
    """

    top_count = (1, 2)

    def setup(self, bottom_shapes):
        param = self.param.data_param
        transform = self.param.transform_param
        self.source = param.source
        self._check_backend(param)
        legacy = [f for f in _LEGACY_FIELDS if param.HasField(f)]
        if legacy:
            get_logger().warning(
                f'layer "{self.name}": data_param {", ".join(legacy)} ignored, as by Caffe in a '
                "`layer {}` (it moves them to transform_param only when upgrading an old "
                "`layers {}` net): set them in transform_param")
        if transform.force_color and transform.force_gray:
            raise self.error("transform_param: cannot set both force_color and force_gray")
        # How encoded datums are decoded: as colour, as grayscale, or as stored (None).
        self.is_color = (True if transform.force_color or param.force_encoded_color
                         else False if transform.force_gray else None)
        # Caffe logs an error for force_color/force_gray on a raw datum; we warn once.
        self.forced_said = not (transform.force_color or transform.force_gray)
        self.transform = DataTransformer(self, transform, self.phase)
        self.env = self._open(param.source)
        with self.env.begin() as txn:
            self.entries = list(txn.cursor().iternext(keys=True, values=False))
        if not self.entries:
            raise self.error(f'LMDB "{self.source}" is empty: it holds no datums (write them '
                             "with convert_imageset)")
        self.start(param.source, param.batch_size, False, param.rand_skip, self.transform.random)
        data = self._batch_arrays(0)[0]
        get_logger().info("output data size: " + ",".join(str(d) for d in data.shape))

    def last_batch_names(self):
        """None: the database's keys are not file names."""
        return None

    # ----- the database ------------------------------------------------------------------------
    def _check_backend(self, param):
        convert = ("LevelDB bindings are not maintained for current Python: convert the database "
                   "to LMDB with `convert_imageset -backend lmdb` (or convert_mnist_data / "
                   "compute_image_mean's -backend lmdb), and set `backend: LMDB`")
        if param.backend == caffe_pb2.DataParameter.LMDB:
            return
        if param.HasField("backend"):
            raise self.error(f"data_param.backend LEVELDB is not supported: {convert}")
        if os.path.isfile(os.path.join(param.source, "data.mdb")):
            raise self.error(f'data_param.backend is not set, and Caffe\'s default is LEVELDB, but '
                             f'"{param.source}" is an LMDB: add `backend: LMDB` to data_param')
        raise self.error(f"data_param.backend is not set, so it is Caffe's default, LEVELDB, which "
                         f"is not supported: {convert}")

    def _open(self, source):
        """The LMDB environment at directory `source`, read-only, as Caffe's db::LMDB::Open."""
        import lmdb

        if not source:
            raise self.error("no source: set data_param.source to an LMDB directory")
        where = f"(relative paths are read from the working directory {os.getcwd()})"
        if not os.path.exists(source):
            raise self.error(f'LMDB "{source}" does not exist {where}')
        if not os.path.isdir(source):
            raise self.error(f'LMDB "{source}" is a file: give the directory that holds '
                             "data.mdb and lock.mdb")
        if not os.path.isfile(os.path.join(source, "data.mdb")):
            kind = (" (it looks like a LevelDB: convert it with `convert_imageset -backend lmdb`)"
                    if os.path.isfile(os.path.join(source, "CURRENT")) else "")
            raise self.error(f'"{source}" is not an LMDB: it has no data.mdb{kind}')
        path = os.path.realpath(source)
        with _ENVIRONMENTS_LOCK:
            env = _ENVIRONMENTS.get(path)
            if env is None:
                try:
                    try:
                        env = lmdb.open(path, readonly=True)
                    except lmdb.Error:
                        # No write access to lock.mdb: read without locking, as Caffe built
                        # with ALLOW_LMDB_NOLOCK does.
                        env = lmdb.open(path, readonly=True, lock=False)
                except lmdb.Error as exc:
                    raise self.error(f'cannot open LMDB "{source}": {exc}') from None
                _ENVIRONMENTS[path] = env
        get_logger().info(f"Opened lmdb {source}")
        return env

    def _key_text(self, key):
        return key.decode("utf-8", errors="backslashreplace")

    # ----- datums --------------------------------------------------------------------------------
    def _image(self, datum, where):
        """The datum's values as an HxWxC array: uint8 (raw or decoded) or float32 (float_data)."""
        if datum.encoded:
            from ..datum import decode_datum

            try:
                chw = decode_datum(datum, self.is_color)
            except (ValueError, RuntimeError) as exc:
                raise self.error(f"{where}: cannot decode the encoded datum: "
                                 f"{str(exc).splitlines()[0] if str(exc) else exc!r}") from None
            if chw.dtype != np.uint8:
                raise self.error(f"{where}: the encoded image decodes to {chw.dtype} values; "
                                 "Caffe takes 8-bit images only")
            return chw.transpose(1, 2, 0)
        if not self.forced_said:
            self.forced_said = True
            get_logger().warning(f'layer "{self.name}": force_color / force_gray apply to '
                                 "encoded datums only; this database holds raw ones (said once)")
        shape = (datum.channels, datum.height, datum.width)
        if min(shape) < 1:
            raise self.error(f"{where}: the datum's shape {'x'.join(map(str, shape))} (CxHxW) "
                             "is empty")
        size = shape[0] * shape[1] * shape[2]
        if datum.data:
            values, kind = np.frombuffer(datum.data, dtype=np.uint8), "data bytes"
        elif len(datum.float_data):
            values, kind = np.asarray(datum.float_data, dtype=np.float32), "float_data values"
        else:
            raise self.error(f"{where}: the datum holds neither data nor float_data")
        if values.size != size:
            raise self.error(f"{where}: the datum holds {values.size} {kind} but its shape "
                             f"{'x'.join(map(str, shape))} (CxHxW) needs {size}")
        return values.reshape(shape).transpose(1, 2, 0)

    def load_batch(self, k):
        """Batch k's (data[, label]) arrays."""
        images, labels, keys = [], [], []
        with self.env.begin() as txn:
            for position in self.order.positions(k):
                key = self.entries[self.order.entry(position)]
                where = f'{self.source} key "{self._key_text(key)}"'
                value = txn.get(key)
                if value is None:
                    raise self.error(f"{where}: the key is gone: the database changed while "
                                     "it was read")
                datum = caffe_pb2.Datum()
                try:
                    datum.ParseFromString(value)
                except DecodeError:
                    raise self.error(f"{where}: the value is not a Datum") from None
                image = self.transform(self._image(datum, where), self.order.rng(position), where)
                if images and image.shape != images[0].shape:
                    raise self.error(
                        f"{where} gives {_size(image)} but key \"{self._key_text(keys[0])}\", "
                        f"first in the same batch, gives {_size(images[0])}: a batch's datums "
                        "must share one shape; set transform_param.crop_size, or batch_size 1")
                images.append(image)
                labels.append(datum.label)
                keys.append(key)
        arrays = [np.stack(images)]
        if len(self.param.top) > 1:
            arrays.append(np.asarray(labels, dtype=np.float32))
        return arrays

    def describe_item(self, n):
        """Where item n of the batch last handed out comes from: its key."""
        position = self.order.positions(self.batch - 1)[n]
        return f'{self.source} key "{self._key_text(self.entries[self.order.entry(position)])}"'


def _size(array):
    channels, height, width = array.shape
    return f"{channels}x{height}x{width} (CxHxW)"
