"""DenseImageData (SegNet fork): batches of images and their label images from a list file."""
import numpy as np

from . import register_layer
from .. import list_files
from .list_data import ListDataLayer, DataTransformer, decode, read_list, stack
from ..logs import get_logger


@register_layer("DenseImageData")
class DenseImageDataLayer(ListDataLayer):
    """Images and per-pixel label images, listed as `image label` pairs in a text file.

    Parameters: dense_image_data_param.source (list file), root_folder (prefix of every path), batch_size, shuffle, rand_skip, new_height/new_width (resize), is_color (true), crop_height/crop_width and mirror (random, same for image and label); transform_param.scale, mean_value / mean_file (image only).
    Forward: data = (image - mean) * scale, (N, C, H, W) float, BGR 0..255 before the transform; label = the label image read as grayscale, (N, 1, H, W), never scaled; the list wraps inside a batch.
    Backward: none.
    """

    top_count = (2, 2)

    def setup(self, bottom_shapes):
        param = self.param.dense_image_data_param
        if (param.new_height > 0) != (param.new_width > 0):
            raise self.error("set new_height and new_width together (or neither)")
        if (param.crop_height > 0) != (param.crop_width > 0):
            raise self.error("set crop_height and crop_width together (or neither)")
        transform = self.param.transform_param
        if transform.crop_size or transform.mirror:
            raise self.error("transform_param crop_size and mirror would treat image and label "
                             "differently: use dense_image_data_param crop_height/crop_width and "
                             "mirror")
        if param.HasField("mean_file"):
            get_logger().warning(f'layer "{self.name}": dense_image_data_param.mean_file is '
                                 "ignored, as by the SegNet fork; use transform_param.mean_file")
        self.root = param.root_folder
        self.is_color = param.is_color
        self.new_size = (param.new_height, param.new_width)
        self.crop = (param.crop_height, param.crop_width)
        self.mirror = param.mirror
        self.source = param.source
        self.transform = DataTransformer(self, transform, self.phase)

        self.entries = read_list(self, param.source, list_files.parse_pair,
                                 '"image_path label_path"')
        self.start(param.source, param.batch_size, param.shuffle, param.rand_skip,
                   self.mirror or self.crop[0] > 0)

    def decode_entry(self, index):
        """Entry `index`'s image and label, decoded (and resized), checked to match in size."""
        number, (image_name, label_name) = self.entries[index]
        where = f"{self.source}:{number}"
        image_path, label_path = self.root + image_name, self.root + label_name
        image = decode(self, image_path, where, self.is_color, *self.new_size)
        label = decode(self, label_path, where, False, *self.new_size, is_label=True)
        if image.shape[:2] != label.shape[:2]:
            raise self.error(f'{where}: image "{image_path}" is {image.shape[0]}x'
                             f'{image.shape[1]} but label "{label_path}" is {label.shape[0]}x'
                             f"{label.shape[1]} (HxW): they must match")
        return image, label

    def make_item(self, position, index, decoded):
        """(data, label, name) of the item at `position`: the same random mirror and crop of
        image and label, then the transform of the image."""
        image, label = decoded
        number, (image_name, _) = self.entries[index]
        where = f"{self.source}:{number}"
        image_path = self.root + image_name
        rng = self.order.rng(position)
        if self.mirror and rng.integers(2):
            image, label = image[:, ::-1], label[:, ::-1]
        if self.crop[0]:
            crop_height, crop_width = self.crop
            height, width = image.shape[:2]
            if height < crop_height or width < crop_width:
                raise self.error(f'{where}: image "{image_path}" is {height}x{width}, smaller '
                                 f"than crop_height x crop_width {crop_height}x{crop_width}")
            top = int(rng.integers(height - crop_height + 1))
            left = int(rng.integers(width - crop_width + 1))
            image = image[top:top + crop_height, left:left + crop_width]
            label = label[top:top + crop_height, left:left + crop_width]
        return (self.transform(image, rng, where), label.transpose(2, 0, 1).astype(np.float32),
                f'"{image_path}" ({where})')

    def load_batch(self, k):
        """Batch k's (data, label) arrays."""
        images, labels, names = zip(*self.batch_items(k))
        return [stack(self, images, names, "image"), stack(self, labels, names, "label of")]
