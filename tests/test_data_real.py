"""The real photo sets in ../shared/data (when present): prepare, load batches, check them (§2).

Dimensions: N batch, M images, R stored side (256), S crop side (227), C channels, V views.
Skipped when the folder is absent (a fresh clone has no shared data).
"""
import os

import numpy as np
import pytest

from alexnet_np.nn.backend import Device
from alexnet_np.config import Config
from alexnet_np.data.loader import Cache, DataError, TrainLoader, eval_batches
from alexnet_np.data.prepare import prepare

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")


def _need(name):
    path = os.path.join(DATA, name)
    if not os.path.isdir(path):
        pytest.skip(f"{path} is absent (the shared photo sets are not part of the project)")
    return path


@pytest.fixture(scope="module")
def hymenoptera(tmp_path_factory):
    src = _need("hymenoptera")
    lines = []
    dst = prepare(src, str(tmp_path_factory.mktemp("real") / "hymenoptera"), progress=False, print_fn=lines.append)
    return Cache(dst), lines


def test_hymenoptera_prepares_every_file_with_the_right_labels(hymenoptera):
    cache, lines = hymenoptera
    assert cache.classes == ["ants", "bees"] and cache.splits == ["train", "val"]
    assert cache.skipped == [], "the GIF placeholder and the .jpeg file are images too"
    counts = {"train": (124, 121), "val": (70, 83)}
    for split, (ants, bees) in counts.items():
        data = cache.split(split)
        assert data.images.shape == (ants + bees, 256, 256, 3) and data.images.dtype == np.uint8
        np.testing.assert_array_equal(np.bincount(data.labels), [ants, bees])
        for path, label in zip(data.relpaths, data.labels):
            assert path.split(os.sep)[1] == cache.classes[label]
    train = cache.split("train")
    assert "train/ants/ant photos.jpg" in train.relpaths and "train/ants/imageNotFound.gif" in train.relpaths
    assert os.path.exists(train.paths[0])
    assert lines[-1] == "val: 153 images written, 0 files skipped"
    # photographs: the full range of levels, a plausible mean, a dominant brightness component
    assert train.images.min() == 0 and train.images.max() == 255
    assert 60 < cache.mean_image.mean() < 190
    assert cache.pca_eigvals[0] > 5 * cache.pca_eigvals[1] > 0
    assert (cache.pca_eigvecs[:, 0] > 0.4).all(), "the first component should be brightness"
    grey = train.images[train.relpaths.index("train/ants/imageNotFound.gif")]
    assert grey.shape == (256, 256, 3)


def test_hymenoptera_training_batches_and_ten_crop(hymenoptera):
    cache, _ = hymenoptera
    config = Config(batch_size=32, seed=1)
    loader = TrainLoader(cache, config, Device(), epoch=0)
    assert len(loader) == 245 // 32
    for b, (images, labels) in enumerate(loader):
        assert images.shape == (32, 3, 227, 227) and images.dtype == np.float32
        assert labels.dtype == np.int64 and set(labels.tolist()) <= {0, 1}
        assert -300 < images.min() < -50 and 50 < images.max() < 300
        assert abs(float(images.mean())) < 30
        if b == 2:
            break
    views, labels = next(iter(eval_batches(cache, "val", config, Device(), batch_size=4, ten_crop=True)))
    assert views.shape == (4, 10, 3, 227, 227)
    np.testing.assert_array_equal(labels, cache.split("val").labels[:4])
    np.testing.assert_allclose(views[:, 5:], views[:, :5, :, :, ::-1])


def test_imagenet_sample_with_synset_names(tmp_path):
    src = _need("imagenet-sample")
    words = os.path.join(DATA, "imagenet-classes", "synset_words.txt")
    if not os.path.exists(words):
        pytest.skip("synset_words.txt is absent")
    cache = Cache(prepare(src, str(tmp_path / "sample"), splits=["sample"], class_names=words,
                          progress=False, print_fn=lambda *a: None))
    data = cache.split("sample")
    assert len(cache.classes) == 87 and len(data) == 87 and cache.skipped == []
    np.testing.assert_array_equal(data.labels, np.arange(87))
    tusker = cache.classes.index("n01871265")
    assert cache.class_names[tusker].startswith("tusker")
    assert data.relpaths[tusker] == "sample/n01871265/n01871265_tusker.JPEG"
    assert data.images.shape == (87, 256, 256, 3)
    with open(os.path.join(src, "labels.tsv")) as f:
        modes = {row.split("\t")[0]: row.split("\t")[5] for row in f.read().splitlines()[1:]}
    greys = [k for k, p in enumerate(data.relpaths) if modes[p] == "L"]
    assert len(greys) == 23
    for k in greys:  # grayscale JPEGs become RGB with three equal channels
        image = data.images[k]
        assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()


def test_imagenet_bigdl_subset_with_the_1000_class_list(tmp_path):
    """Its val holds a class that train lacks: refused as it is, fine with the ILSVRC class list."""
    src = _need("imagenet-bigdl")
    words = os.path.join(DATA, "imagenet-classes", "synset_words.txt")
    if not os.path.exists(words):
        pytest.skip("synset_words.txt is absent")
    with pytest.raises(DataError, match="split val has classes that do not match train's"):
        prepare(src, str(tmp_path / "refused"), progress=False)
    cache = Cache(prepare(src, str(tmp_path / "bigdl"), classes=words, progress=False, print_fn=lambda *a: None))
    assert cache.skipped == [] and len(cache.classes) == 1000
    with open(os.path.join(src, "labels.tsv")) as f:
        rows = [line.rstrip("\n").split("\t") for line in f][1:]
    expected = {row[0]: int(row[2]) for row in rows}
    for split, count in [("train", 13), ("val", 2)]:
        data = cache.split(split)
        assert len(data) == count
        assert {p: int(label) for p, label in zip(data.relpaths, data.labels)} == \
            {p: i for p, i in expected.items() if p.startswith(split)}
    png = cache.split("train").relpaths.index("train/n02105855/n02105855_2933.JPEG")
    assert cache.split("train").images[png].std() > 10, "the PNG named .JPEG is a real picture"
    assert cache.class_names[230].startswith("Shetland sheepdog")
