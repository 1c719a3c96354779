"""pycaffe's Classifier: a Net that classifies H x W x K images, averaged over 10 crops or from
the centre crop."""
import numpy as np

from . import preprocessing
from .net import TEST, Net


class Classifier(Net):
    """A Net (in the TEST phase) that predicts class probabilities for images.

    `model_file` and `pretrained_file` are the prototxt and caffemodel; the net's first input
    takes the images and its first output (in name order) gives the predictions. Images are
    resized to `image_dims` (height, width; default the input's size) and cropped to the
    input's size. `mean`, `input_scale`, `raw_scale` and `channel_swap` configure
    `self.transformer` (a Transformer, which also transposes H x W x K to K x H x W) as its
    setters describe. An `image_dims` smaller than the input raises ValueError (pycaffe fails
    on it later, less clearly)."""

    def __init__(self, model_file, pretrained_file, image_dims=None, mean=None,
                 input_scale=None, raw_scale=None, channel_swap=None):
        super().__init__(model_file, TEST, weights=pretrained_file)
        self.transformer = preprocessing.first_input_transformer(
            self, mean, input_scale, raw_scale, channel_swap)
        self.crop_dims = np.array(self.blobs[self.inputs[0]].data.shape[2:])
        self.image_dims = self.crop_dims if image_dims is None or not len(image_dims) \
            else image_dims
        if (np.asarray(self.image_dims) < self.crop_dims).any():
            image_dims, crop_dims = (tuple(map(int, d)) for d in (self.image_dims, self.crop_dims))
            raise ValueError(f"Classifier: image_dims {image_dims} is smaller than the net's "
                             f"input {crop_dims} (height, width)")

    def predict(self, inputs, oversample=True):
        """Class probabilities, an N x C array (the first output's values per image), for the
        N images `inputs` (H x W x K arrays, K alike).

        Each image is resized to image_dims; with `oversample` the predictions of its 10 crops
        (corners, centre and their mirrors, see caffe.io.oversample) are averaged, else the
        centre crop's are returned. The crops go through the net in batches of its batch
        size (forward_all)."""
        images = np.zeros((len(inputs), self.image_dims[0], self.image_dims[1],
                           inputs[0].shape[2]), dtype=np.float32)
        for n, image in enumerate(inputs):
            images[n] = preprocessing.resize_image(image, self.image_dims)
        crops = preprocessing.oversample(images, self.crop_dims) if oversample else \
            self._centre_crops(images)
        in_ = self.inputs[0]
        caffe_in = np.stack([self.transformer.preprocess(in_, crop) for crop in crops])
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape((len(predictions) // 10, 10, -1)).mean(1)
        return predictions

    def _centre_crops(self, images):
        top, left = (np.asarray(self.image_dims) - self.crop_dims) // 2
        return images[:, top:top + self.crop_dims[0], left:left + self.crop_dims[1], :]

