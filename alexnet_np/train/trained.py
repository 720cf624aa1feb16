"""A trained net for use from code: photos in, class probabilities, names or features out.

Dimensions:
    N  images    R  stored image side (config.image_size, 256)    S  input size (227)
    C  colour channels (3)    K  classes    V  views (10 for ten-crop)    D  features (fc7: 4096)

    import alexnet_np
    net = alexnet_np.load("runs/<run>/best.npz", device="cpu")   # or a converted Caffe model
    probs = net.predict(["cat.jpg", "dog.png"])                  # (N, K)
    top = net.classify("cat.jpg")                                # [(name, probability), ...]
    features = net.features(images, "fc7")                       # (N, D), Figure 4's space

An image is prepared exactly as ``prepare`` stores it (``prepare.load_image`` for a file,
``prepare.stored_image`` for a decoded one: RGB, shorter side to R, the central R x R) and
then cut and normalised exactly as evaluation does (``data.eval_views``: the centre S x S
crop, or §4.1's ten crops whose softmax outputs are averaged, minus the mean image the
weights expect). So a photo gets here the probabilities ``evaluate.py`` gives it.

What the weights expect comes from the checkpoint: a converted model (``alexnet_np.interop.convert``)
carries its mean image and class names; a model trained here takes them from the data its
run was trained on (``runs.run_cache``), which must be at hand (the demo's is made again).
"""
import os

import numpy as np
from PIL import Image

from .checkpoint import CheckpointError
from .classmap import for_checkpoint
from ..data.loader import eval_views, prefetch
from .evaluation import model_probabilities
from .metrics import topk_classes
from ..data.prepare import BadImage, load_image, stored_image
from .runs import open_model, run_cache

FEATURES = {"fc7": "fc7_features"}   # layer name -> the model's attribute holding it after forward


class TrainedNet:
    """A checkpoint's model with what it expects of an image; see the module docstring.

    ``classes`` (K,) the outputs' ids (WordNet ids, or the data's folder names),
    ``class_names`` (K,) their printable names, ``mean_image`` (R, R, C) float32,
    ``batch_size``: images per forward pass (ten-crop: a tenth as many images).
    """

    def __init__(self, path, ckpt, model, mean_image, classes, class_names, batch_size=None):
        self.path, self.checkpoint, self.model = path, ckpt, model
        self.config = ckpt.config
        self.device = model.devices[0]
        self.mean_image = np.asarray(mean_image, dtype=np.float32)                # (R, R, C)
        self.classes, self.class_names = list(classes), list(class_names)
        self.batch_size = batch_size or self.config.batch_size
        self._views = {}   # ten_crop -> data.eval_views function (the mean, cropped once, on the device)

    # ------------------------------------------------------------------ images
    def stored(self, image):
        """One image as prepare stores it: (R, R, C) uint8. ``image``: a file path, a Pillow
        image, or an array (H, W, C) or (H, W), uint8 or 16-bit. Raises ``BadImage``."""
        size = self.config.image_size
        if isinstance(image, (str, os.PathLike)):
            return load_image(os.fspath(image), size)
        if isinstance(image, Image.Image):
            return stored_image(image, size)
        array = np.asarray(image)
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]                                                   # (H, W)
        try:
            image = Image.fromarray(array)
        except (TypeError, ValueError):  # Pillow's refusal of a shape or dtype
            raise BadImage(f"an image array must be uint8 (H, W), (H, W, 3) or (H, W, 4), or 16-bit "
                           f"(H, W); not {array.dtype} {array.shape}") from None
        return stored_image(image, size)

    def stored_batch(self, images):
        """``images`` (a list, or an array (N, H, W, C)) -> (N, R, R, C) uint8; ``BadImage``
        names the file that cannot be decoded."""
        stored = []
        for image in images:
            try:
                stored.append(self.stored(image))                                    # (R, R, C)
            except BadImage as error:
                where = os.fspath(image) if isinstance(image, (str, os.PathLike)) else f"image {len(stored)}"
                raise BadImage(f"{where}: {error}") from None
        return np.stack(stored)                                                      # (N, R, R, C)

    # ------------------------------------------------------------------ the net
    def probabilities(self, stored, ten_crop=False):
        """Stored images (N, R, R, C) uint8 -> softmax outputs (N, K) float64 on the host
        (§4.1's ten-crop average with ``ten_crop``). Leaves the model's features of the last
        chunk (``features``)."""
        if ten_crop not in self._views:
            self._views[ten_crop] = eval_views(self.mean_image, self.config, self.device, ten_crop)
        return model_probabilities(self.model, self._views[ten_crop](stored), self.device.to_host,
                                   self.batch_size)                                 # (N, K)

    def _chunks(self, images, ten_crop):
        """``images`` in batches of stored images (N, R, R, C), decoded one batch ahead."""
        if isinstance(images, (str, os.PathLike, Image.Image)) or (isinstance(images, np.ndarray) and images.ndim < 4):
            images = [images]   # one image: a file, a Pillow image, an array (H, W[, C])
        n = max(1, self.batch_size // 10) if ten_crop else self.batch_size
        return prefetch(lambda start: self.stored_batch(images[start:start + n]), range(0, len(images), n),
                        threads=1, depth=1)

    def predict(self, images, ten_crop=False):
        """Class probabilities (N, K) float64 of ``images``: file paths, Pillow images, uint8
        arrays (N, H, W, C) or a list of (H, W[, C]) arrays of any sizes (prepared as
        ``prepare`` does; one path, Pillow image or (H, W[, C]) array alone is one image,
        N = 1), or views already prepared, float (N, C, S, S) (the centre crops
        of stored images minus the mean: what ``eval_views`` makes). ``ten_crop``: §4.1's
        ten views, their softmax outputs averaged (photos only)."""
        if isinstance(images, np.ndarray) and images.ndim == 4 and images.dtype.kind == "f":
            return self._prepared(images, ten_crop)
        return np.concatenate([self.probabilities(stored, ten_crop) for stored in self._chunks(images, ten_crop)])

    def _prepared(self, views, ten_crop):
        if ten_crop or views.shape[1:] != (3, self.config.input_size, self.config.input_size):
            raise ValueError(f"prepared views must be (N, 3, {self.config.input_size}, {self.config.input_size}), "
                             f"not {views.shape}{' (ten-crop takes photos)' if ten_crop else ''}")
        views = views.astype(self.config.dtype, copy=False)
        return np.concatenate([model_probabilities(self.model, views[i:i + self.batch_size], self.device.to_host,
                                                   self.batch_size) for i in range(0, len(views), self.batch_size)])

    def top(self, probs, k=5):
        """The ``k`` most probable classes of each row of ``probs`` (N, K), ties by class index:
        ``[[(class index, name, probability), ...], ...]``."""
        k = min(k, probs.shape[1])
        ranked = topk_classes(probs, k)                                               # (N, k)
        return [[(int(c), self.class_names[int(c)], float(p[c])) for c in row] for row, p in zip(ranked, probs)]

    def classify(self, image, top=5, ten_crop=False):
        """``[(name, probability), ...]``, the ``top`` most probable classes of one image."""
        probs = self.predict([image], ten_crop)                                       # (1, K)
        return [(name, p) for _, name, p in self.top(probs, top)[0]]

    def features(self, images, layer="fc7"):
        """The ``layer`` activations (N, D) float on the host of ``images`` (as ``predict``
        takes them), centre crop: fc7's are Figure 4's space for nearest neighbours."""
        if layer not in FEATURES:
            raise ValueError(f"layer {layer!r}: one of {', '.join(FEATURES)}")
        out = []
        for stored in self._chunks(images, False):                                  # (N, R, R, C)
            self.probabilities(stored)
            out.append(np.asarray(self.device.to_host(getattr(self.model, FEATURES[layer]))))  # (N, D)
        return np.concatenate(out)


def expected_inputs(ckpt):
    """``(mean_image (R, R, C), classes (K,), class_names (K,))`` that ``ckpt``'s weights expect.

    Raises ``CheckpointError`` (one line) when they cannot be known: a converted model
    without a mean image, or a model trained here whose data is not at hand.
    """
    if ckpt.mean_image is not None and ckpt.meta.get("classes"):
        return ckpt.mean_image, ckpt.meta["classes"], ckpt.meta.get("class_names", ckpt.meta["classes"])
    cache = run_cache(ckpt)
    if cache is None:
        if ckpt.meta.get("converted_from"):
            raise CheckpointError(f"checkpoint {ckpt.path} has no mean image: convert it again with "
                                  "--mean imagenet_mean.binaryproto")
        recorded = ckpt.meta.get("data", {}).get("cache") or "not recorded"
        raise CheckpointError(f"checkpoint {ckpt.path}: the data it was trained on ({recorded}) is not here, "
                              "and its mean image and class names come from it")
    view = for_checkpoint(cache, ckpt)
    return view.mean_image, view.classes, view.class_names


def load(path=None, device="auto", gpus=None, batch_size=None):
    """A ``TrainedNet`` of the checkpoint at ``path`` (None: best.npz of the newest run under
    runs/), on ``device`` ("cpu", "gpu", or "auto": the GPU when one is usable; ``gpus``: one
    id per tower)."""
    path, ckpt, model = open_model(path, device, gpus)
    mean_image, classes, class_names = expected_inputs(ckpt)
    return TrainedNet(path, ckpt, model, mean_image, classes, class_names, batch_size)
