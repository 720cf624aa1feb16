"""Damaged ILSVRC tars: bytes flipped in headers and data, files cut, at random places.

Whatever the damage, ``prepare`` never ends with status 0 while an image that was intact in
the source (its header and bytes unchanged and inside the file) is neither in the cache nor
listed as lost, and it never prints a traceback: it ends with status 0, or with one line
``error: ...`` and status 2. A fixed seed, small images, a few dozen cases.
"""
import csv
import io
import json
import os
import tarfile

import numpy as np
import pytest
from PIL import Image

from alexnet_np.data import loader, ilsvrc
from alexnet_np.data.prepare import main as prepare_main

WNIDS = ["n01440764", "n01443537"]
CASES = 36


def _jpeg(rng):
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(out, "JPEG", quality=90)
    return out.getvalue()


def _tar(members):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def _image_spans(whole, flat):
    """``{image name: (header offset, end of its bytes)}`` in the big file, and every header's offset."""
    spans, headers = {}, []
    with tarfile.open(fileobj=io.BytesIO(whole)) as tar:
        for member in tar.getmembers():
            headers.append(member.offset)
            if flat:
                spans[member.name] = (member.offset, member.offset_data + member.size)
                continue
            with tarfile.open(fileobj=tar.extractfile(member)) as inner:
                for image in inner.getmembers():
                    headers.append(member.offset_data + image.offset)
                    spans[image.name] = (member.offset_data + image.offset,
                                         member.offset_data + image.offset_data + image.size)
    return spans, headers


@pytest.fixture(scope="module")
def source():
    rng = np.random.default_rng(17)
    train = _tar([(f"{w}.tar", _tar([(f"{w}_{i}.JPEG", _jpeg(rng)) for i in range(3)])) for w in WNIDS])
    val = [(f"ILSVRC2012_val_{i:08d}.JPEG", _jpeg(rng)) for i in range(1, 5)]
    return {ilsvrc.TRAIN_TAR: train, ilsvrc.VAL_TAR: _tar(val)}, [WNIDS[i % 2] for i in range(4)]


def _damage(rng, whole, headers):
    """A damaged copy of ``whole`` and the set of byte offsets changed (a cut: all from it on)."""
    damaged, kind = bytearray(whole), rng.choice(["header", "header", "data", "cut"])
    if kind == "cut":
        cut = int(rng.integers(1, len(whole)))
        return bytes(damaged[:cut]), lambda start, stop: stop > cut
    start = int(rng.choice(headers)) if kind == "header" else int(rng.integers(0, len(whole)))
    length = tarfile.BLOCKSIZE if kind == "header" else 64
    places = {min(len(whole) - 1, start + int(p)) for p in rng.integers(0, length, int(rng.integers(1, 16)))}
    for p in places:
        damaged[p] ^= int(rng.integers(1, 256))
    return bytes(damaged), lambda a, b: any(a <= p < b for p in places)


def test_prepare_never_loses_an_intact_image_without_a_word(source, tmp_path, capsys):
    tars, val_wnids = source
    rng = np.random.default_rng(2012)
    for case in range(CASES):
        src = tmp_path / f"src{case}"
        src.mkdir()
        with open(src / ilsvrc.LOC_SOLUTION, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["ImageId", "PredictionString"])
            writer.writerows([f"ILSVRC2012_val_{i:08d}", f"{w} 1 2 3 4"] for i, w in enumerate(val_wnids, 1))
        target = ilsvrc.TRAIN_TAR if case % 3 else ilsvrc.VAL_TAR
        spans, headers = _image_spans(tars[target], flat=target == ilsvrc.VAL_TAR)
        damaged, touched = _damage(rng, tars[target], headers)
        for name, content in tars.items():
            (src / name).write_bytes(damaged if name == target else content)
        intact = [name for name, (a, b) in spans.items() if not touched(a, b) and b <= len(damaged)]
        dst = str(tmp_path / f"cache{case}")
        status = prepare_main([str(src), dst, "--image-size", "8", "--workers", "1", "--no-progress"])
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err, (case, out, err)
        assert status in (0, 2), (case, status, err)
        if status == 2:
            assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), (case, err)
            continue
        with open(os.path.join(dst, loader.META_FILE)) as f:
            meta = json.load(f)
        cached = {os.path.basename(p) for s in meta["splits"] for p in loader.Cache(dst).split(s).relpaths}
        lost = {os.path.basename(row[1]) for row in meta["skipped"] if row[2].startswith("lost")}
        silent = [name for name in intact if name not in cached | lost]
        assert not silent, (case, target, silent, out)
