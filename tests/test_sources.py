"""Every kind of source answers the same questions (alexnet_np/data/source.py): which splits,
which members, which labels, which class names; and prepare asks it nothing else."""
import os
import tarfile

import numpy as np
import pytest

from alexnet_np.data import ilsvrc
from alexnet_np.data.cifar10 import CIFAR10, read_batch
from alexnet_np.data.demo import CLASSES, Demo
from alexnet_np.data.folders import FolderTree
from alexnet_np.data.loader import Cache, DataError
from alexnet_np.data.prepare import open_source, prepare
from test_experiments import write_cifar_batch

SMALL = {"train": 2, "val": 1}
QUIET = dict(workers=1, progress=False, print_fn=lambda *a: None)


def test_a_folder_tree_and_the_demo_answer_splits_members_labels_and_names(tmp_path):
    demo = Demo(str(tmp_path / "demo"), per_class=SMALL)
    tree = open_source(demo.root)
    assert type(tree) is FolderTree and tree.splits() == demo.splits() == ["train", "val"]
    listings = tree.listings(["train", "val"])
    classes, relpaths, labels, empty = listings["val"]
    assert classes == sorted(c for c, _ in CLASSES) and empty == [] and len(relpaths) == 10
    assert labels.tolist() == list(range(10))                      # one image per class, in class order
    assert relpaths[3].startswith(os.path.join("val", classes[3], ""))
    assert listings["train"].files == listings["train"][1]          # the images identify the split
    printable = dict(CLASSES)
    assert tree.class_names(classes) == demo.class_names(classes) == [printable[c] for c in classes]
    os.rename(os.path.join(demo.root, "val", classes[0]), str(tmp_path / "away"))
    with pytest.raises(DataError, match="do not match train's"):   # a class missing from val
        tree.listings(["train", "val"])


def test_prepare_given_a_source_writes_the_cache_it_writes_for_its_folder(tmp_path):
    demo = Demo(str(tmp_path / "demo"), per_class=SMALL)
    by_path = Cache(prepare(demo.root, str(tmp_path / "a"), image_size=20, **QUIET))
    by_source = Cache(prepare(demo, str(tmp_path / "b"), image_size=20, **QUIET))
    for split in ("train", "val"):
        assert np.array_equal(by_path.split(split).images, by_source.split(split).images)
        assert by_path.split(split).relpaths == by_source.split(split).relpaths
    assert by_path.class_names == by_source.class_names == [dict(CLASSES)[c] for c in by_path.classes]


def test_ilsvrc_files_are_told_from_a_folder_tree(tmp_path):
    plain = tmp_path / "plain"
    (plain / "train" / "n01").mkdir(parents=True)
    assert type(open_source(str(plain))) is FolderTree
    assert type(open_source(str(plain), val_labels="labels.csv")) is ilsvrc.ILSVRC
    with tarfile.open(plain / ilsvrc.TRAIN_TAR, "w"):
        pass
    assert type(open_source(str(plain))) is ilsvrc.ILSVRC
    flat = tmp_path / "flat"
    (flat / "val").mkdir(parents=True)
    (flat / "val" / "ILSVRC2012_val_00000001.JPEG").write_bytes(b"x")
    source = open_source(str(flat))
    assert type(source) is ilsvrc.ILSVRC and source.has_split("val") and not source.has_split("train")


def test_cifar10_answers_with_decoded_members(tmp_path):
    rng = np.random.default_rng(3)
    src = tmp_path / "cifar-10-batches-bin"
    src.mkdir()
    for i in range(1, 6):
        write_cifar_batch(src / f"data_batch_{i}.bin", [i, 9], rng)
    write_cifar_batch(src / "test_batch.bin", [0], rng)
    source = CIFAR10(str(src))
    assert source.splits() == ["train", "val"]
    listing = source.listings(["train", "val"])["train"]
    classes, relpaths, labels, empty = listing
    assert len(classes) == 10 and relpaths[:3] == ["data_batch_1.bin#0", "data_batch_1.bin#1", "data_batch_2.bin#0"]
    assert labels.tolist() == [1, 9, 2, 9, 3, 9, 4, 9, 5, 9] and empty == [classes[0], classes[6], classes[7], classes[8]]
    members = listing.read(2, 4)                                      # decoded (32, 32, 3) uint8 arrays
    assert np.array_equal(np.stack(members), read_batch(str(src / "data_batch_2.bin"))[0])
    assert source.class_names(classes) == classes
    with pytest.raises(DataError, match="missing"):
        CIFAR10(str(tmp_path / "nowhere"))
