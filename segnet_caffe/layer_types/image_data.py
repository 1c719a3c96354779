"""ImageData (BVLC): batches of images and integer class labels from a list file."""
import numpy as np

from . import register_layer
from .list_data import ListDataLayer, DataTransformer, decode, read_list, stack


@register_layer("ImageData")
class ImageDataLayer(ListDataLayer):
    """Images with one integer label each, listed as `path label` lines in a text file.

    Parameters: image_data_param.source (list file), root_folder (prefix of every path), batch_size, shuffle, rand_skip, new_height/new_width (resize), is_color (true); transform_param.scale, mean_value / mean_file, crop_size (random in TRAIN, centred in TEST), mirror (random).
    Forward: data = (image - mean) * scale, (N, C, H, W) float, BGR 0..255 before the transform; label = the listed integers, (N,) float; the list wraps inside a batch.
    Backward: none.
    """

    top_count = (2, 2)

    def setup(self, bottom_shapes):
        param = self.param.image_data_param
        if (param.new_height > 0) != (param.new_width > 0):
            raise self.error("set new_height and new_width together (or neither)")
        self.root = param.root_folder
        self.is_color = param.is_color
        self.new_size = (param.new_height, param.new_width)
        self.source = param.source
        self.transform = DataTransformer(self, self.param.transform_param, self.phase)

        def parse(tokens):
            # The label is the last field; a path may contain spaces, as BVLC's find_last_of(' ').
            if len(tokens) < 2:
                raise ValueError("no label")
            try:
                return " ".join(tokens[:-1]), int(tokens[-1])
            except ValueError:
                raise ValueError(f"the label {tokens[-1]!r} is not an integer") from None

        self.entries = read_list(self, param.source, parse, '"image_path integer_label"')
        self.start(param.source, param.batch_size, param.shuffle, param.rand_skip,
                   self.transform.random)

    def decode_entry(self, index):
        """Entry `index`'s image, decoded (and resized)."""
        number, (name, _) = self.entries[index]
        return (decode(self, self.root + name, f"{self.source}:{number}", self.is_color,
                       *self.new_size),)

    def make_item(self, position, index, decoded):
        """(data, label, name) of the item at `position`: the transformed image and its label."""
        number, (name, label) = self.entries[index]
        where = f"{self.source}:{number}"
        return (self.transform(decoded[0], self.order.rng(position), where), label,
                f'"{self.root + name}" ({where})')

    def load_batch(self, k):
        """Batch k's (data, label) arrays."""
        images, labels, names = zip(*self.batch_items(k))
        return [stack(self, images, names, "image"), np.asarray(labels, dtype=np.float32)]
