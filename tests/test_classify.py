"""Classifying photos (``python classify.py``, ``alexnet_np.load``) gives exactly the
probabilities ``evaluate.py --predictions`` gives the same files, centre crop and ten-crop.

Dimensions: N images, R stored side, C channels, K classes, D fc7 units.

The photos: generated ones of every odd kind ``prepare`` takes (RGB and RGBA PNG, grayscale,
16-bit grayscale, CMYK JPEG, a PNG under a .JPEG name) and, where ../shared/data is present,
real ImageNet photos (grayscale, tiny, a PNG named .JPEG). evaluate.py sees them through an
ImageFolder (``PHOTOS/train/<class>/...``) prepared into a cache; classify decodes each
file itself: the two paths share only the decoder and the test-time views. The nets: a
tiny one trained one step here, and the small Caffe model of tests/test_convert_caffe.py
converted. Probabilities are compared to 1e-6 (evaluate.py writes 6 decimals).
"""
import csv
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import alexnet_np
import evaluate
import train
import classify
from alexnet_np.nn.backend import Device
from alexnet_np.data.loader import Cache, eval_views
from alexnet_np.data.ilsvrc import ILSVRC2012_SYNSETS, read_synsets

from test_train_e2e import assert_png
from test_train_helpers import TINY_ARGS, make_tiny_cache

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")
REAL = ["imagenet-sample/sample/n02096051/n02096051_Airedale.JPEG",        # grayscale JPEG
        "imagenet-sample/sample/n01871265/n01871265_tusker.JPEG",          # 75 x 56: upscaled
        "imagenet-sample/sample/n03992509/n03992509_potter's_wheel.JPEG",  # an apostrophe in the name
        "imagenet-bigdl/train/n02105855/n02105855_2933.JPEG",              # a PNG (RGBA) named .JPEG
        "imagenet-bigdl/train/n02110063/n02110063_11239.JPEG"]
COLOURS = ["blue", "green", "red", "yellow"]                              # the tiny net's classes
WNIDS = ("n01440764", "n02119789", "n15075141", "n02105855")             # the Caffe test's folders


def generated_photos(folder):
    """Odd files of every kind, written into ``folder``; returns their paths."""
    rng = np.random.default_rng(7)
    os.makedirs(folder, exist_ok=True)

    def pixels(h, w):
        base = rng.integers(0, 256, (1, 1, 3)) + np.linspace(0, 120, w)[None, :, None]  # a gradient
        return np.clip(base + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)    # (H, W, C)

    made = {"rgb.png": Image.fromarray(pixels(120, 150)),
            "rgba.png": Image.fromarray(np.dstack([pixels(90, 70), rng.integers(0, 256, (90, 70), dtype=np.uint8)])),
            "gray.png": Image.fromarray(pixels(100, 130)).convert("L"),
            "gray16.png": Image.fromarray(pixels(80, 96)[..., 0].astype(np.uint16) * 257),
            "cmyk.jpg": Image.fromarray(pixels(110, 140)).convert("CMYK"),
            "png_named.JPEG": Image.fromarray(pixels(64, 200))}
    paths = []
    for name, image in made.items():
        path = os.path.join(folder, name)
        image.save(path, format="PNG" if name.endswith("JPEG") else None)
        paths.append(path)
    return paths


def image_folder(root, files, classes):
    """``root/train/<class>/<file>``, the files dealt out over ``classes`` in turn; returns root."""
    for i, path in enumerate(files):
        folder = os.path.join(root, "train", classes[i % len(classes)])
        os.makedirs(folder, exist_ok=True)
        shutil.copy(path, folder)
    return root


def evaluated(ckpt, photos, tmp, ten_crop):
    """{file name: (classes (5,), probabilities (5,))} from ``evaluate.py --predictions``."""
    table = os.path.join(tmp, f"predictions-{ten_crop}.csv")
    argv = ["--checkpoint", ckpt, "--data", photos, "--split", "train", "--device", "cpu", "--no-progress",
            "--cache", os.path.join(tmp, "photos-cache"), "--json", os.path.join(tmp, "eval.json"),
            "--predictions", table] + (["--ten-crop"] if ten_crop else [])
    assert evaluate.main(argv) == 0
    with open(table) as f:
        rows = list(csv.DictReader(f))
    return {os.path.basename(r["path"]): ([int(r[f"class{k}"]) for k in range(1, 6) if f"class{k}" in r],
                                          [float(r[f"prob{k}"]) for k in range(1, 6) if f"prob{k}" in r])
            for r in rows}


def classified(ckpt, photos, tmp, ten_crop, capsys):
    """The same from ``python classify.py PHOTOS --json``."""
    out = os.path.join(tmp, f"classify-{ten_crop}.json")
    argv = [os.path.join(photos, "train"), "--checkpoint", ckpt, "--device", "cpu", "--json", out,
            "--no-progress"] + (["--ten-crop"] if ten_crop else [])
    assert classify.main(argv) == 0, capsys.readouterr().err
    with open(out) as f:
        record = json.load(f)
    assert record["failed"] == []
    return {os.path.basename(image["path"]): ([t["class"] for t in image["top"]], [t["probability"] for t in image["top"]])
            for image in record["images"]}


def assert_same_as_evaluate(ckpt, photos, tmp, capsys):
    for ten_crop in (False, True):
        expected = evaluated(ckpt, photos, tmp, ten_crop)
        got = classified(ckpt, photos, tmp, ten_crop, capsys)
        assert sorted(got) == sorted(expected) and len(got) >= 4
        for name, (classes, probs) in expected.items():
            assert got[name][0][:len(classes)] == classes, (name, ten_crop)
            np.testing.assert_allclose(got[name][1][:len(probs)], probs, rtol=0, atol=1e-6, err_msg=name)
        spread = [p[0] - p[-1] for _, p in expected.values()]
        assert max(spread) > 1e-3            # the net tells the classes apart: not a uniform output


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny net trained one step here on the tiny colour classes: its checkpoint and cache."""
    root = str(tmp_path_factory.mktemp("classify-run"))
    cache = make_tiny_cache(root)
    out = os.path.join(root, "run")
    assert train.main(["--data", cache, "--out", out, *TINY_ARGS, "--max-steps", "1", "--no-figures"]) == 0
    return {"checkpoint": os.path.join(out, "last.npz"), "cache": cache, "root": root}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return generated_photos(str(tmp_path_factory.mktemp("generated")))


@pytest.fixture(scope="module")
def real():
    if not os.path.isdir(DATA):
        pytest.skip(f"{DATA} is absent (the shared photo sets are not part of the project)")
    return [os.path.join(DATA, p) for p in REAL]


@pytest.fixture(scope="module")
def caffe_checkpoint(tmp_path_factory):
    """The small Caffe model of tests/test_convert_caffe.py, converted (1000 ILSVRC classes)."""
    pytest.importorskip("google.protobuf")
    from test_convert_caffe import convert_small_model
    _, _, out = convert_small_model(tmp_path_factory.mktemp("caffe"), layouts=("v2",))
    return out["v2"]


# --------------------------------------------------------------------------- tests

def test_generated_odd_files_get_evaluates_probabilities(trained, generated, tmp_path, capsys):
    photos = image_folder(str(tmp_path / "photos"), generated, COLOURS)   # the net's 4 classes, by name
    assert_same_as_evaluate(trained["checkpoint"], photos, str(tmp_path), capsys)


def test_real_photos_get_evaluates_probabilities(trained, real, tmp_path, capsys):
    photos = image_folder(str(tmp_path / "photos"), real, COLOURS)
    assert_same_as_evaluate(trained["checkpoint"], photos, str(tmp_path), capsys)


def test_a_converted_caffe_model_classifies_through_the_same_path(caffe_checkpoint, generated, tmp_path, capsys):
    photos = image_folder(str(tmp_path / "photos"), generated, WNIDS)               # classes by WordNet id
    assert_same_as_evaluate(caffe_checkpoint, photos, str(tmp_path), capsys)
    assert classify.main([generated[0], "--checkpoint", caffe_checkpoint, "--device", "cpu", "--top", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    block = lines[lines.index(generated[0]):][:4]                                    # the path, then 3 classes
    assert lines[-1].startswith("classified 1 image in ") and "images/s" in lines[-1]
    _, wordnet = read_synsets(ILSVRC2012_SYNSETS)
    assert all(line.split("%  ", 1)[1] in wordnet for line in block[1:])            # WordNet names, not ids


def test_the_api_predicts_arrays_files_and_prepared_views_alike(trained, generated):
    net = alexnet_np.load(trained["checkpoint"], device="cpu")
    # the mean image the weights were trained with, from the run's data
    np.testing.assert_array_equal(net.mean_image, Cache(trained["cache"]).mean_image)
    files = [p for p in generated if p.endswith("rgb.png") or p.endswith("gray.png")]
    from_files = net.predict(files)                                                  # (N, K)
    arrays = [np.asarray(Image.open(p)) for p in files]                              # (H, W, C), (H, W)
    np.testing.assert_allclose(net.predict(arrays), from_files, rtol=0, atol=1e-7)
    for array, row in zip(arrays, from_files):      # one array (H, W, C) or (H, W) alone: one image
        np.testing.assert_allclose(net.predict(array), row[None], rtol=0, atol=1e-7)  # (1, K)
    assert net.features(arrays[0]).shape == (1, net.config.fc_units[1])
    stored = net.stored_batch(files)                                                 # (N, R, R, C)
    views = eval_views(net.mean_image, net.config, Device())(stored)                 # (N, C, S, S)
    np.testing.assert_allclose(net.predict(views), from_files, rtol=0, atol=1e-7)
    np.testing.assert_allclose(from_files.sum(axis=1), 1.0, atol=1e-9)
    top = net.classify(files[0], top=3)
    assert [p for _, p in top] == sorted((p for _, p in top), reverse=True) and len(top) == 3
    assert top[0] == (net.class_names[int(from_files[0].argmax())], pytest.approx(from_files[0].max()))
    assert set(net.class_names) == {"blue", "green", "red", "yellow"}
    features = net.features(files, "fc7")                                            # (N, D)
    assert features.shape == (2, net.config.fc_units[1])
    np.testing.assert_allclose(net.features(files[1:]), features[1:], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="fc7"):
        net.features(files, "conv9")


def test_bad_paths_get_one_line_each_and_the_rest_is_classified(trained, generated, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image\n")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    missing = str(tmp_path / "missing.png")
    figure = tmp_path / "sheet.png"
    argv = [missing, str(empty), str(broken), generated[0], "--checkpoint", trained["checkpoint"],
            "--device", "cpu", "--figure", str(figure), "--top", "2"]
    assert classify.main(argv) == 1                                                  # some failed
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert "Traceback" not in captured.err and len(errors) == 3, captured.err
    for path, line in zip((missing, str(empty), str(broken)), errors):
        assert line.startswith(f"error: {path}: "), line
    assert "no image files" in errors[1] and "1 file without an image extension" in captured.out
    block = captured.out.strip().splitlines()
    start = block.index(generated[0])
    assert len(block[start + 1:start + 3]) == 2 and all("%" in line for line in block[start + 1:start + 3])
    assert_png(str(figure))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []     # no temporary file left
    assert classify.main([missing, "--checkpoint", trained["checkpoint"], "--device", "cpu"]) == 1


def test_a_net_trained_on_wnid_folders_evaluates_photos_matched_by_wnid(tmp_path, capsys):
    """A run records its classes (the data's folder names: WordNet ids for ImageNet-like data);
    photos in folders of a few of those ids are then evaluated on the net's outputs of the same
    ids, as a converted BVLC model's are: each photo's label is the index of its id, and it
    gets the probabilities it gets in the run's own validation split."""
    from test_train_helpers import make_tiny_images
    images = make_tiny_images(str(tmp_path / "images"))
    wnids = dict(zip(COLOURS, sorted(WNIDS)))                 # the colours' order is the ids' order
    for split in ("train", "val"):
        for colour, wnid in wnids.items():
            os.rename(os.path.join(images, split, colour), os.path.join(images, split, wnid))
    out, cache = str(tmp_path / "run"), str(tmp_path / "cache")
    assert train.main(["--data", images, "--cache", cache, "--out", out, *TINY_ARGS,
                       "--max-steps", "2", "--no-figures"]) == 0
    ckpt = os.path.join(out, "last.npz")
    meta = alexnet_np.train.checkpoint.load(ckpt).meta
    assert meta["classes"] == meta["class_names"] == sorted(WNIDS)
    photos = str(tmp_path / "photos")                         # two of the four ids
    for colour in ("red", "yellow"):
        shutil.copytree(os.path.join(images, "val", wnids[colour]), os.path.join(photos, "train", wnids[colour]))
    capsys.readouterr()

    def predictions(data, split, name):
        """{relative path: (label, top classes, their probabilities)} from evaluate.py --predictions."""
        table = str(tmp_path / f"{name}.csv")
        assert evaluate.main(["--checkpoint", ckpt, "--data", data, "--split", split, "--device", "cpu",
                              "--no-progress", "--cache", str(tmp_path / f"{name}-cache"),
                              "--predictions", table]) == 0
        with open(table) as f:
            return {r["path"]: (int(r["true_class"]), [int(r[f"class{k}"]) for k in range(1, 5)],
                                [float(r[f"prob{k}"]) for k in range(1, 5)]) for r in csv.DictReader(f)}

    few = predictions(photos, "train", "photos")
    assert "2 classes (mapped by WordNet id onto 4 classes of the checkpoint)" in capsys.readouterr().out
    val = predictions(cache, "val", "val")
    assert len(few) == 10 and len(val) == 20
    for path, (label, classes, probs) in few.items():                # train/<wnid>/NN.png
        wnid, same = path.split("/")[1], path.replace("train/", "val/", 1)
        assert label == sorted(WNIDS).index(wnid) and label in (2, 3)
        assert val[same][:2] == (label, classes)
        np.testing.assert_allclose(probs, val[same][2], rtol=0, atol=1e-6)
