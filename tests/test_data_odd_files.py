"""Odd and bad files in preprocessing (§2): converted, or skipped and reported, never a shifted label.

Dimensions: M images, R stored side, C channels.
"""
import json
import os

import numpy as np
import pytest
from PIL import Image

from alexnet_np.data.loader import Cache, DataError, is_cache
from alexnet_np.data.folders import find_class_names
from alexnet_np.data.prepare import main, prepare

R = 32


def _solid(colour, size=(40, 30)):
    return Image.new("RGB", size, colour)


def _write_good(folder, name, kind, colour):
    """One readable file of ``kind``; returns the RGB colour the cache must hold."""
    path = os.path.join(folder, name)
    image = _solid(colour)
    if kind == "rgb_jpeg":
        image.save(path, "JPEG", quality=95)
    elif kind == "gray_jpeg":
        image.convert("L").save(path, "JPEG", quality=95)
        return (image.convert("L").getpixel((0, 0)),) * 3
    elif kind == "cmyk_jpeg":
        image.convert("CMYK").save(path, "JPEG", quality=95)
        return Image.open(path).convert("RGB").getpixel((0, 0))
    elif kind == "palette_png":
        palette = image.convert("P", palette=Image.ADAPTIVE, colors=4)
        palette.info["transparency"] = 0
        palette.save(path, "PNG")
        return Image.open(path).convert("RGB").getpixel((0, 0))
    elif kind == "rgba_png":
        rgba = image.convert("RGBA")
        rgba.putalpha(90)
        rgba.save(path, "PNG")
    elif kind == "png16":  # 16-bit grayscale: level v * 257 stands for v
        Image.fromarray(np.full((30, 40), colour[0] * 257, np.uint16)).save(path, "PNG")
        return (colour[0],) * 3
    elif kind == "tiny_png":  # 1 x 1, upscaled
        _solid(colour, (1, 1)).save(path, "PNG")
    elif kind == "gif":
        image.convert("P", palette=Image.ADAPTIVE, colors=8).save(path, "GIF")
        return Image.open(path).convert("RGB").getpixel((0, 0))
    elif kind == "png_named_jpeg":  # as ILSVRC-2012's n02105855_2933.JPEG
        image.save(path, "PNG")
    elif kind == "tall_jpeg":
        _solid(colour, (30, 90)).save(path, "JPEG", quality=95)
    else:
        raise ValueError(kind)
    return colour


def _write_bad(folder, name, kind):
    path = os.path.join(folder, name)
    if kind == "truncated":
        noise = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
        Image.fromarray(noise).save(path, "JPEG", quality=90)
        with open(path, "rb") as f:
            content = f.read()
        with open(path, "wb") as f:
            f.write(content[:len(content) // 2])
    elif kind == "empty":
        open(path, "wb").close()
    elif kind == "text":
        with open(path, "w") as f:
            f.write("this is not a picture\n")
    return os.path.relpath(path, os.path.dirname(os.path.dirname(os.path.dirname(path))))


GOOD = [("aardvark", "a1.JPEG", "rgb_jpeg"), ("aardvark", "a2.jpg", "gray_jpeg"), ("aardvark", "a3.JPEG", "cmyk_jpeg"),
        ("bison", "b1.png", "palette_png"), ("bison", "b2.png", "rgba_png"), ("bison", "b3.png", "png16"),
        ("dingo", "d1.png", "tiny_png"), ("dingo", "d2.gif", "gif"), ("dingo", "d3.JPEG", "png_named_jpeg"),
        ("dingo", "d4.JPEG", "tall_jpeg")]
BAD = [("aardvark", "a0_truncated.JPEG", "truncated", "truncated"), ("bison", "b0_empty.JPEG", "empty", "empty file"),
       ("dingo", "d0_text.JPEG", "text", "not an image")]
CLASSES = ["aardvark", "bison", "cat", "dingo"]   # "cat" is an empty class folder


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    """A source with every odd file kind, the cache made from it, and what to expect."""
    src = str(tmp_path_factory.mktemp("odd_src"))
    expected = {}  # relpath -> (label, colour)
    for k, (cls, name, kind) in enumerate(GOOD):
        folder = os.path.join(src, "train", cls)
        os.makedirs(folder, exist_ok=True)
        colour = (20 + 23 * k, 200 - 17 * k, 60 + 11 * k)
        expected[os.path.join("train", cls, name)] = (CLASSES.index(cls), _write_good(folder, name, kind, colour))
    bad = {}
    for cls, name, kind, reason in BAD:
        bad[_write_bad(os.path.join(src, "train", cls), name, kind)] = reason
    os.makedirs(os.path.join(src, "train", "cat"))
    with open(os.path.join(src, "train", ".DS_Store"), "w") as f:
        f.write("hidden files are ignored")
    for k, cls in enumerate(CLASSES):
        folder = os.path.join(src, "val", cls)
        os.makedirs(folder)
        if cls != "cat":
            colour = (10 + 40 * k, 100, 200 - 40 * k)
            expected[os.path.join("val", cls, "v.JPEG")] = (k, _write_good(folder, "v.JPEG", "rgb_jpeg", colour))
    dst = str(tmp_path_factory.mktemp("odd_cache") / "cache")
    lines = []
    prepare(src, dst, image_size=R, workers=2, progress=False, print_fn=lines.append)
    return src, dst, expected, bad, lines


def test_the_run_completes_and_skips_exactly_the_bad_files(odd):
    src, dst, expected, bad, lines = odd
    cache = Cache(dst)
    assert is_cache(dst)
    skipped = {path: reason for split, path, reason in cache.skipped}
    assert set(skipped) == set(bad)
    for path, reason in bad.items():
        assert skipped[path].startswith(reason), (path, skipped[path])
    with open(os.path.join(dst, "report.tsv")) as f:
        report = f.read()
    for path in bad:
        assert path in report
    assert "train/cat/" in report and "empty class folder" in report
    assert "train: 10 images written, 3 files skipped (listed in" in "\n".join(lines)
    assert "train: class folder cat is empty (its index is kept)" in lines


def test_every_good_image_keeps_its_label_and_content(odd):
    src, dst, expected, bad, _ = odd
    cache = Cache(dst)
    assert cache.classes == CLASSES
    for split in ("train", "val"):
        data = cache.split(split)
        assert data.images.shape == (len(data), R, R, 3) and data.images.dtype == np.uint8
        assert data.labels.dtype == np.int64
        assert sorted(data.relpaths) == sorted(p for p in expected if p.startswith(split + os.sep))
        for image, label, path in zip(data.images, data.labels, data.relpaths):
            want_label, colour = expected[path]
            assert label == want_label, path
            centre = image[R // 4:-R // 4, R // 4:-R // 4].reshape(-1, 3).mean(axis=0)
            np.testing.assert_allclose(centre, colour, atol=4, err_msg=path)
        assert data.paths[0] == os.path.join(os.path.abspath(src), data.relpaths[0])


def test_missing_train_or_empty_split_or_mismatched_classes_are_one_line_errors(tmp_path):
    (tmp_path / "a" / "val" / "x").mkdir(parents=True)
    with pytest.raises(DataError, match="split folder .*train is missing"):
        prepare(str(tmp_path / "a"), str(tmp_path / "c1"), progress=False)
    (tmp_path / "b" / "train" / "x").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no files"):
        prepare(str(tmp_path / "b"), str(tmp_path / "c2"), progress=False)
    for split, classes in [("train", ["x", "y"]), ("val", ["x", "z"])]:
        for cls in classes:
            (tmp_path / "m" / split / cls).mkdir(parents=True)
            _solid((1, 2, 3)).save(tmp_path / "m" / split / cls / "i.png")
    with pytest.raises(DataError) as error:
        prepare(str(tmp_path / "m"), str(tmp_path / "c3"), progress=False)
    assert "do not match" in str(error.value) and "\n" not in str(error.value)
    assert "missing ['y']" in str(error.value) and "extra ['z']" in str(error.value)
    assert main([str(tmp_path / "m"), str(tmp_path / "c4"), "--no-progress"]) == 2
    assert not is_cache(str(tmp_path / "c3"))


def test_a_split_of_only_bad_files_is_an_error(tmp_path):
    (tmp_path / "s" / "train" / "x").mkdir(parents=True)
    (tmp_path / "s" / "train" / "x" / "a.JPEG").write_bytes(b"")
    with pytest.raises(DataError, match="none of its 1 files is a readable image"):
        prepare(str(tmp_path / "s"), str(tmp_path / "c"), progress=False, print_fn=lambda *a: None)
    assert not is_cache(str(tmp_path / "c"))


def test_class_names_file_by_folder_name_or_by_line(tmp_path):
    (tmp_path / "synset_words.txt").write_text("n02 dog, hound\nn01 cat\nn03 cow\n")
    assert find_class_names(str(tmp_path), ["n01", "n02"]) == ["cat", "dog, hound"]
    (tmp_path / "names.txt").write_text("first class\nsecond class\n")
    assert find_class_names(str(tmp_path), ["x", "y"], str(tmp_path / "names.txt")) == ["first class", "second class"]
    with pytest.raises(DataError, match="2 lines for 3 classes"):
        find_class_names(str(tmp_path), ["x", "y", "z"], str(tmp_path / "names.txt"))
    assert find_class_names(str(tmp_path / "nowhere"), ["x"]) == ["x"]


def test_a_foreign_destination_is_refused(tmp_path):
    (tmp_path / "s" / "train" / "x").mkdir(parents=True)
    _solid((1, 2, 3)).save(tmp_path / "s" / "train" / "x" / "i.png")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match="holds other files"):
        prepare(str(tmp_path / "s"), str(tmp_path / "d"), progress=False)
    assert json.loads(json.dumps(os.listdir(tmp_path / "d"))) == ["thesis.tex"]
