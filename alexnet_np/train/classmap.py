"""A data set seen with a checkpoint's classes: labels matched by id (a WordNet id, a folder
name), the checkpoint's mean image.

Dimensions:
    M  images of a split    K  the checkpoint's classes    R  stored image side    C  channels

A checkpoint names its outputs: ``meta["classes"]``, their ids in output order, and
``meta["class_names"]``: a converted model (``alexnet_np.interop.convert``) ILSVRC's 1000
WordNet ids, a run trained here the class folders of its data (WordNet ids where the data
is ImageNet's). Any prepared data set whose class folders are among them can then be
evaluated, drawn and compared with published numbers: a folder of a few photos in
``train/<wnid>/`` folders, the ILSVRC-2012 validation set, a subset prepared with other class
indices. Each split's label (an index into the data's own class list) becomes the index of
the same id among the checkpoint's outputs. Checkpoints written before runs recorded their
classes are matched by position (the same number of classes). The checkpoint's mean image
(Caffe's), when it has one, replaces the data's.

    for_checkpoint(cache, ckpt, mean_image=None) -> cache, or a ``CheckpointView`` of it
"""
import copy
import re

import numpy as np

from .checkpoint import CheckpointError
from ..data.loader import Cache


class CheckpointView(Cache):
    """``cache`` with ``classes``/``class_names`` (K) of a checkpoint, every split's labels
    (M,) mapped through ``label_map`` (the data's index -> the checkpoint's), and ``mean_image``
    (R, R, C) replaced when given. Everything else is the cache's."""

    def __init__(self, cache, classes, class_names, label_map, mean_image=None):
        self.__dict__.update(cache.__dict__)
        self._splits = {}
        self.data_classes = list(cache.classes)                      # the data's own, before mapping
        self.classes, self.class_names = list(classes), list(class_names)
        self.label_map = label_map                                   # (classes of the data,) int64
        if mean_image is not None:
            self.mean_image = np.asarray(mean_image, dtype=np.float32)  # (R, R, C)

    def __repr__(self):
        """The data's own classes and the checkpoint's they map onto (87 of 1000, say)."""
        counts = ", ".join(f"{s} {self.meta['counts'][s]}" for s in self.splits)
        mapped = ("" if self.data_classes == self.classes else
                  f" (mapped by {id_kind(self.classes)} onto {len(self.classes)} classes of the checkpoint)")
        return (f"<Cache {self.path}: {len(self.data_classes)} classes{mapped}, {counts}, "
                f"{self.image_size}px>")

    def split(self, name):
        if name not in self._splits:
            split = copy.copy(Cache.split(self, name))
            split.labels = self.label_map[split.labels]              # (M,) checkpoint's indices
            self._splits[name] = split
        return self._splits[name]


def id_kind(classes):
    """What the ids ``classes`` are, for messages: "WordNet id" (n01440764, ...) or "name"."""
    return "WordNet id" if all(re.fullmatch(r"n\d{8}", c) for c in classes) else "name"


def for_checkpoint(cache, ckpt, mean_image=None):
    """The cache as ``ckpt`` sees it; one-line ``CheckpointError`` when the classes do not fit.

    Checkpoints that name their classes (converted ones, and every run trained here since
    runs record them) are matched by id; older ones need the same number of classes as the
    data, which is then taken as is. The mean image is the
    checkpoint's own (a converted model's), else ``mean_image`` (R, R, C) when given (that of
    the data the weights were trained on), else the data's.
    """
    classes = ckpt.meta.get("classes")
    names = ckpt.meta.get("class_names", classes) if classes is not None else cache.class_names
    mean = ckpt.mean_image if ckpt.mean_image is not None else mean_image
    # The classes first: data of other classes cannot be evaluated at any image size.
    if classes is None:
        if len(cache.classes) != ckpt.config.num_classes:
            raise CheckpointError(f"checkpoint {ckpt.path} is of another configuration: it has "
                                  f"{ckpt.config.num_classes} classes, the data {cache.path} has {len(cache.classes)}")
        classes = cache.classes
        label_map = np.arange(len(classes), dtype=np.int64)
    else:
        index = {c: k for k, c in enumerate(classes)}
        unknown = [c for c in cache.classes if c not in index]
        if unknown:
            named = (f"are WordNet ids such as {classes[0]}" if id_kind(classes) == "WordNet id" else
                     f"are {', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}")
            raise CheckpointError(f"the data {cache.path} has classes the checkpoint {ckpt.path} does not know: "
                                  f"{unknown[:5]}{'...' if len(unknown) > 5 else ''} (its {len(classes)} classes "
                                  f"{named}; class folders must be named by them)")
        label_map = np.array([index[c] for c in cache.classes], dtype=np.int64)
    if mean is not None and mean.shape[:2] != (cache.image_size, cache.image_size):
        raise CheckpointError(f"checkpoint {ckpt.path} has a {mean.shape[0]}x{mean.shape[1]} mean image, the data "
                              f"{cache.path} {cache.image_size}x{cache.image_size} images: give the folder "
                              f"of its images as --data (it is prepared at {mean.shape[0]} then), or prepare it "
                              f"with python -m alexnet_np.data.prepare SRC DST --image-size {mean.shape[0]}")
    if mean is None and list(classes) == list(cache.classes):
        return cache
    return CheckpointView(cache, classes, names, label_map, mean)
