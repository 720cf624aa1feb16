"""ILSVRC-2012 as distributed: tars read in place, validation labels from the devkit or Kaggle's
CSV, and the one-line errors. The tars, label files and meta.mat are made here, small.

Dimensions: M images, R stored side, C channels.
"""
import csv
import io
import os
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

from alexnet_np.data import ilsvrc
from alexnet_np.data.loader import Cache, DataError, is_cache
from alexnet_np.data.prepare import main as prepare_main, prepare
from test_data_resume import kill_prepare_midway

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
R = 32
WNIDS = ["n01440764", "n01443537", "n01484850"]         # tench, goldfish, great white shark
WORDS = ["tench, Tinca tinca", "goldfish, Carassius auratus", "great white shark"]
QUIET = dict(workers=1, progress=False, print_fn=lambda *a: None)


def jpeg(rng, width=48, height=40):
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)   # (H, W, C)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def tar_bytes(members):
    """A tar (bytes) of ``[(name, bytes)]``, in that order."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


@pytest.fixture(scope="module")
def distribution(tmp_path_factory):
    """SRC as downloaded (train tar of class tars, flat val tar, label files, devkit) and the
    same images extracted into ImageFolder folders, with a corrupt training member."""
    rng = np.random.default_rng(0)
    train = {w: [(f"{w}_{i}.JPEG", jpeg(rng)) for i in range(4)] for w in WNIDS}
    train[WNIDS[1]][2] = (f"{WNIDS[1]}_2.JPEG", b"\xff\xd8 not really a JPEG")     # a corrupt member
    val_wnids = [WNIDS[i] for i in (2, 0, 1, 1, 0, 2)]
    val = [(f"ILSVRC2012_val_{i:08d}.JPEG", jpeg(rng)) for i in range(1, 7)]

    src = tmp_path_factory.mktemp("ilsvrc")
    (src / ilsvrc.TRAIN_TAR).write_bytes(tar_bytes([(f"{w}.tar", tar_bytes(files)) for w, files in train.items()]))
    (src / ilsvrc.VAL_TAR).write_bytes(tar_bytes(val))
    with open(src / ilsvrc.LOC_SOLUTION, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ImageId", "PredictionString"])
        for (name, _), w in zip(val, val_wnids):
            writer.writerow([name[:-5], f"{w} 1 2 30 40 {w} 5 6 20 21 "])

    devkit = tmp_path_factory.mktemp("devkit")
    ids = {WNIDS[0]: 3, WNIDS[1]: 1, WNIDS[2]: 2}       # the devkit numbers classes in its own order
    write_meta_mat(devkit / "meta.mat", ids)
    (devkit / ilsvrc.GROUND_TRUTH).write_text("".join(f"{ids[w]}\n" for w in val_wnids))

    folders = tmp_path_factory.mktemp("folders")
    for w, files in train.items():
        for name, content in files:
            (folders / "train" / w).mkdir(parents=True, exist_ok=True)
            (folders / "train" / w / name).write_bytes(content)
    for (name, content), w in zip(val, val_wnids):
        (folders / "val" / w).mkdir(parents=True, exist_ok=True)
        (folders / "val" / w / name).write_bytes(content)
    return src, devkit, folders, val_wnids


def extract_flat(tar_path, folder):
    """The members of a flat tar as files in ``folder`` (what ``tar xf`` would make)."""
    folder.mkdir()
    with tarfile.open(tar_path) as tar:
        for member in tar.getmembers():
            (folder / member.name).write_bytes(tar.extractfile(member).read())


def write_meta_mat(path, ids):
    """A devkit meta.mat: the struct array ``synsets`` with the devkit's fields; the classes
    (no children) and one ancestor synset (children), as in the real file's 1860 rows."""
    savemat = pytest.importorskip("scipy.io").savemat
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children",
              "wordnet_height", "num_train_images"]
    rows = [(i, w, words, 0) for (w, i), words in zip(ids.items(), WORDS)] + [(len(ids) + 1, "n01439121", "fish", 3)]
    synsets = np.zeros((len(rows), 1), dtype=[(f, "O") for f in fields])
    for r, (i, w, words, children) in enumerate(rows):
        synsets[r, 0] = (np.array([[i]], np.uint16), np.array([w]), np.array([words]), np.array(["a gloss"]),
                         np.array([[children]], np.uint8), np.arange(1, children + 1, dtype=np.uint16)[None],
                         np.array([[0 if not children else 1]], np.uint8), np.array([[4]], np.uint16))
    savemat(str(path), {"synsets": synsets})


def _arrays(folder):
    """The cache's arrays (not its paths or meta): {file name: array}."""
    return {n: np.load(os.path.join(folder, n)) for n in sorted(os.listdir(folder)) if n.endswith(".npy")}


@pytest.fixture(scope="module")
def from_folders(distribution, tmp_path_factory):
    dst = str(tmp_path_factory.mktemp("from_folders") / "c")
    prepare(str(distribution[2]), dst, image_size=R, **QUIET)
    return dst


@pytest.fixture(scope="module")
def from_tars(distribution, tmp_path_factory):
    dst = str(tmp_path_factory.mktemp("from_tars") / "c")
    prepare(str(distribution[0]), dst, image_size=R, **QUIET)
    return dst


# --------------------------------------------------------------------------- reading in place

def test_tars_give_the_cache_of_the_extracted_folders(from_tars, from_folders):
    """Train rows come in the same order (class tars and images sorted as the folders);
    val rows in tar order (by image number), so they are matched by file name."""
    ours, reference = _arrays(from_tars), _arrays(from_folders)
    assert sorted(ours) == sorted(reference)
    for name in ("train_images.npy", "train_labels.npy", "mean_image.npy"):
        np.testing.assert_array_equal(ours[name], reference[name], err_msg=name)
    with np.load(os.path.join(from_tars, "pca.npz")) as a, np.load(os.path.join(from_folders, "pca.npz")) as b:
        np.testing.assert_array_equal(a["eigvecs"], b["eigvecs"])
    tar_val, folder_val = Cache(from_tars).split("val"), Cache(from_folders).split("val")
    row = {os.path.basename(p): i for i, p in enumerate(folder_val.relpaths)}
    order = [row[os.path.basename(p)] for p in tar_val.relpaths]
    np.testing.assert_array_equal(tar_val.images, folder_val.images[order])
    np.testing.assert_array_equal(tar_val.labels, folder_val.labels[order])
    cache = Cache(from_tars)
    assert cache.classes == WNIDS and cache.class_names == WNIDS    # no names file: the wnids
    assert cache.split("train").labels.tolist() == [0] * 4 + [1] * 3 + [2] * 4
    assert cache.split("val").labels.tolist() == [2, 0, 1, 1, 0, 2]
    assert cache.split("val").relpaths[0] == f"{ilsvrc.VAL_TAR}/ILSVRC2012_val_00000001.JPEG"


def test_corrupt_member_is_skipped_and_reported(from_tars):
    (split, path, reason), = Cache(from_tars).skipped
    assert (split, path) == ("train", f"{ilsvrc.TRAIN_TAR}/{WNIDS[1]}.tar/{WNIDS[1]}_2.JPEG")
    assert "corrupt" in reason or "not an image" in reason
    with open(os.path.join(from_tars, "report.tsv")) as f:
        assert f"{WNIDS[1]}.tar/{WNIDS[1]}_2.JPEG" in f.read()


def test_devkit_labels_equal_the_csv_labels(distribution, tmp_path):
    pytest.importorskip("scipy")
    src, devkit, _, val_wnids = distribution
    csv_labels = ilsvrc.read_val_labels(str(src / ilsvrc.LOC_SOLUTION))
    assert list(csv_labels.values()) == val_wnids
    assert ilsvrc.read_val_labels(str(devkit / ilsvrc.GROUND_TRUTH)) == csv_labels   # meta.mat beside it
    archive = tmp_path / ilsvrc.DEVKIT_TAR
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("meta.mat", ilsvrc.GROUND_TRUTH):
            tar.add(devkit / name, arcname=f"ILSVRC2012_devkit_t12/data/{name}")
    assert ilsvrc.read_val_labels(str(archive)) == csv_labels
    assert ilsvrc.devkit_class_names(str(tmp_path), WNIDS[::-1]) == WORDS[::-1]   # names from the archive
    assert ilsvrc.read_synsets(str(devkit / "meta.mat")) == (WNIDS, WORDS)     # the ancestor is left out


def test_flat_val_folder_and_devkit_with_class_names(distribution, from_tars, tmp_path):
    """An extracted flat val folder, the devkit's ground truth: the same val arrays; names from meta.mat."""
    pytest.importorskip("scipy")
    src, devkit, _, _ = distribution
    mixed = tmp_path / "src"
    mixed.mkdir()
    os.symlink(src / ilsvrc.TRAIN_TAR, mixed / ilsvrc.TRAIN_TAR)
    extract_flat(src / ilsvrc.VAL_TAR, mixed / "val")
    os.symlink(devkit / "meta.mat", mixed / "meta.mat")
    dst = str(tmp_path / "c")
    assert prepare_main([str(mixed), dst, "--image-size", str(R), "--workers", "1", "--no-progress",
                         "--val-labels", str(devkit / ilsvrc.GROUND_TRUTH)]) == 0
    ours, reference = _arrays(dst), _arrays(from_tars)
    for name in ("val_images.npy", "val_labels.npy", "train_images.npy"):
        np.testing.assert_array_equal(ours[name], reference[name], err_msg=name)
    assert Cache(dst).class_names == WORDS
    assert Cache(dst).split("val").relpaths[0] == "val/ILSVRC2012_val_00000001.JPEG"


def test_truncated_train_tar_keeps_the_files_before_the_damage(distribution, tmp_path):
    src = distribution[0]
    whole = (src / ilsvrc.TRAIN_TAR).read_bytes()
    with tarfile.open(src / ilsvrc.TRAIN_TAR) as outer:
        third = outer.getmember(f"{WNIDS[2]}.tar")
        with tarfile.open(fileobj=outer.extractfile(third)) as inner:
            second_image = inner.getmembers()[1]
    cut = third.offset_data + second_image.offset_data + second_image.size // 2   # inside class 3's 2nd image
    damaged = tmp_path / "src"
    damaged.mkdir()
    (damaged / ilsvrc.TRAIN_TAR).write_bytes(whole[:cut])
    lines = []
    prepare(str(damaged), str(tmp_path / "c"), image_size=R, workers=1, progress=False, print_fn=lines.append)
    notes = [line for line in lines if "is truncated" in line]
    assert len(notes) == 1 and "the 9 files before the damage are kept" in notes[0], lines
    assert f"{WNIDS[2]}.tar/{WNIDS[2]}_0.JPEG" in notes[0]
    cache = Cache(str(tmp_path / "c"))
    assert cache.split("train").labels.tolist() == [0] * 4 + [1] * 3 + [2]   # 9 files, the corrupt one skipped
    assert cache.splits == ["train"]


def test_train_tar_cut_between_class_tars_is_reported(distribution, tmp_path):
    """A cut at a member boundary looks like a shorter tar to tarfile: the missing end marker tells."""
    src = distribution[0]
    with tarfile.open(src / ilsvrc.TRAIN_TAR) as outer:
        third = outer.getmember(f"{WNIDS[2]}.tar")
    damaged = tmp_path / ilsvrc.TRAIN_TAR
    damaged.write_bytes((src / ilsvrc.TRAIN_TAR).read_bytes()[:third.offset_data - tarfile.BLOCKSIZE])
    lines = []
    listing = ilsvrc.list_train_tar(str(damaged), print_fn=lines.append)
    assert len(lines) == 1 and "cut short" in lines[0] and "the 8 files before the damage" in lines[0]
    assert listing[0] == WNIDS[:2]


def test_truncated_val_tar_keeps_the_files_before_the_damage(distribution, tmp_path):
    src = distribution[0]
    whole = (src / ilsvrc.VAL_TAR).read_bytes()
    with tarfile.open(src / ilsvrc.VAL_TAR) as tar:
        fourth = tar.getmembers()[3]
    damaged = tmp_path / "src"
    damaged.mkdir()
    os.symlink(src / ilsvrc.TRAIN_TAR, damaged / ilsvrc.TRAIN_TAR)
    os.symlink(src / ilsvrc.LOC_SOLUTION, damaged / ilsvrc.LOC_SOLUTION)
    (damaged / ilsvrc.VAL_TAR).write_bytes(whole[:fourth.offset_data + 10])
    lines = []
    prepare(str(damaged), str(tmp_path / "c"), image_size=R, workers=1, progress=False, print_fn=lines.append)
    assert any("the 3 files before the damage are kept" in line for line in lines), lines
    assert Cache(str(tmp_path / "c")).split("val").labels.tolist() == [2, 0, 1]


def _header_offset(tar_path, class_tar, image=None):
    """The byte offset, in the train tar, of a class tar's header or of one of its images' headers."""
    with tarfile.open(tar_path) as outer:
        member = outer.getmember(class_tar)
        if image is None:
            return member.offset
        with tarfile.open(fileobj=outer.extractfile(member)) as inner:
            return member.offset_data + inner.getmembers()[image].offset


def _prepare_damaged(src, tmp_path, at, splits=("train",)):
    """SRC's train tar with 15 bytes of one header overwritten (its checksum fails), prepared."""
    damaged = tmp_path / "src"
    damaged.mkdir()
    whole = bytearray((src / ilsvrc.TRAIN_TAR).read_bytes())
    whole[at + 140:at + 155] = b"\xff" * 15                  # size, mtime and checksum fields
    (damaged / ilsvrc.TRAIN_TAR).write_bytes(bytes(whole))
    lines, dst = [], str(tmp_path / "c")
    prepare(str(damaged), dst, image_size=R, workers=1, progress=False, print_fn=lines.append, splits=list(splits))
    return Cache(dst), lines


@pytest.mark.parametrize("image", [0, 1])
def test_damaged_image_header_in_a_class_tar_is_read_past_and_listed(distribution, tmp_path, image):
    """tarfile stops at a damaged header without a word; we read on at the next valid one and
    list the member lost, in report.tsv, meta.json and the summary line."""
    src = distribution[0]
    at = _header_offset(src / ilsvrc.TRAIN_TAR, f"{WNIDS[0]}.tar", image)
    cache, lines = _prepare_damaged(src, tmp_path, at)
    kept = [os.path.basename(p) for p in cache.split("train").relpaths]
    lost = f"{WNIDS[0]}_{image}.JPEG"
    assert lost not in kept and [f"{WNIDS[0]}_{i}.JPEG" for i in range(4) if i != image] == kept[:3]
    assert len(kept) == 10 and cache.split("train").labels.tolist() == [0] * 3 + [1] * 3 + [2] * 4
    rows = [row for row in cache.skipped if row[2].startswith("lost")]
    assert rows == [("train", f"{ilsvrc.TRAIN_TAR}/{WNIDS[0]}.tar/{lost}", rows[0][2])], cache.skipped
    assert "header is damaged" in rows[0][2]
    with open(os.path.join(cache.path, "report.tsv")) as f:
        assert f"{WNIDS[0]}.tar/{lost}\tlost" in f.read()
    assert any(line.startswith("train: 10 images written, 1 file skipped, 1 lost to damaged tar headers")
               for line in lines), lines
    notes = [line for line in lines if "damaged tar header at byte" in line]
    assert len(notes) == 1 and f"class tar {WNIDS[0]}.tar" in notes[0] and "1 member lost" in notes[0]


def test_damaged_class_tar_header_lists_its_images_as_lost(distribution, tmp_path):
    """The images of a class tar whose header is damaged are named by their own headers; the
    class keeps its index where the damaged header's name is legible."""
    src = distribution[0]
    cache, lines = _prepare_damaged(src, tmp_path, _header_offset(src / ilsvrc.TRAIN_TAR, f"{WNIDS[1]}.tar"))
    assert cache.classes == WNIDS and cache.split("train").labels.tolist() == [0] * 4 + [2] * 4
    lost = sorted(os.path.basename(row[1]) for row in cache.skipped if row[2].startswith("lost"))
    assert lost == [f"{WNIDS[1]}_{i}.JPEG" for i in range(4)], cache.skipped
    assert any("4 lost to damaged tar headers" in line for line in lines), lines


# --------------------------------------------------------------------------- one-line errors

def _error_of(argv, capsys):
    assert prepare_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.fixture
def bad_src(distribution, tmp_path):
    """A copy of SRC whose files a test may replace."""
    src = tmp_path / "src"
    src.mkdir()
    for name in (ilsvrc.TRAIN_TAR, ilsvrc.VAL_TAR, ilsvrc.LOC_SOLUTION):
        (src / name).write_bytes((distribution[0] / name).read_bytes())
    return src


def test_train_tar_of_another_layout(bad_src, tmp_path, capsys):
    (bad_src / ilsvrc.TRAIN_TAR).write_bytes(tar_bytes([("a.JPEG", b"x" * 100)]))
    line = _error_of([str(bad_src), str(tmp_path / "c"), "--no-progress"], capsys)
    assert "a.JPEG is not a class tar" in line and ilsvrc.TRAIN_TAR in line


def test_val_tar_with_folders(bad_src, tmp_path, capsys):
    (bad_src / ilsvrc.VAL_TAR).write_bytes(tar_bytes([(f"{WNIDS[0]}/x.JPEG", b"x" * 100)]))
    line = _error_of([str(bad_src), str(tmp_path / "c"), "--no-progress"], capsys)
    assert "flat validation tar" in line


def test_val_image_without_label(bad_src, tmp_path, capsys):
    rows = (bad_src / ilsvrc.LOC_SOLUTION).read_text().splitlines()
    (bad_src / ilsvrc.LOC_SOLUTION).write_text("\n".join(r for r in rows if "_00000004" not in r) + "\n")
    line = _error_of([str(bad_src), str(tmp_path / "c"), "--no-progress"], capsys)
    assert "ILSVRC2012_val_00000004.JPEG has no label" in line


def test_label_of_an_unknown_class(bad_src, tmp_path, capsys):
    text = (bad_src / ilsvrc.LOC_SOLUTION).read_text().replace(WNIDS[2], "n09999999")
    (bad_src / ilsvrc.LOC_SOLUTION).write_text(text)
    line = _error_of([str(bad_src), str(tmp_path / "c"), "--no-progress"], capsys)
    assert "n09999999" in line and "not among the 3 training classes" in line
    assert "--splits train" in line and "--classes synset_words.txt" in line      # what to do


def test_truncated_train_tar_keeps_the_classes_the_val_labels_name(distribution, tmp_path):
    """Cut before the last class tar: its class is kept, empty, so the indices stay ILSVRC's."""
    src = distribution[0]
    damaged = tmp_path / "src"
    damaged.mkdir()
    at = _header_offset(src / ilsvrc.TRAIN_TAR, f"{WNIDS[2]}.tar")
    (damaged / ilsvrc.TRAIN_TAR).write_bytes((src / ilsvrc.TRAIN_TAR).read_bytes()[:at])
    for name in (ilsvrc.VAL_TAR, ilsvrc.LOC_SOLUTION):
        os.symlink(src / name, damaged / name)
    lines = []
    prepare(str(damaged), str(tmp_path / "c"), image_size=R, workers=1, progress=False, print_fn=lines.append)
    cache = Cache(str(tmp_path / "c"))
    assert cache.classes == WNIDS and cache.splits == ["train", "val"]
    assert cache.split("train").labels.tolist() == [0] * 4 + [1] * 3
    assert cache.split("val").labels.tolist() == [2, 0, 1, 1, 0, 2]
    assert any("kept as empty classes" in line and WNIDS[2] in line for line in lines), lines


def test_unreadable_label_file_and_missing_labels(bad_src, tmp_path, capsys):
    (bad_src / ilsvrc.LOC_SOLUTION).write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,tench 1 2 3 4\n")
    assert "line 2" in _error_of([str(bad_src), str(tmp_path / "c"), "--no-progress"], capsys)
    os.remove(bad_src / ilsvrc.LOC_SOLUTION)
    assert "--val-labels" in _error_of([str(bad_src), str(tmp_path / "c"), "--no-progress"], capsys)


def test_ground_truth_without_meta_mat(bad_src, distribution, tmp_path, capsys):
    gt = tmp_path / "gt" / ilsvrc.GROUND_TRUTH
    gt.parent.mkdir()
    gt.write_text((distribution[1] / ilsvrc.GROUND_TRUTH).read_text())
    line = _error_of([str(bad_src), str(tmp_path / "c"), "--no-progress", "--val-labels", str(gt)], capsys)
    assert "meta.mat" in line


def test_meta_mat_without_scipy_names_the_install_command(distribution, monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.io", None)       # import scipy.io now fails
    with pytest.raises(ilsvrc.LabelError, match="pip install scipy"):
        ilsvrc.read_val_labels(str(distribution[1] / ilsvrc.GROUND_TRUTH))


def test_corrupt_class_tar(bad_src, tmp_path, capsys):
    (bad_src / ilsvrc.TRAIN_TAR).write_bytes(tar_bytes([(f"{WNIDS[0]}.tar", b"\x00garbage" * 200),
                                                        (f"{WNIDS[1]}.tar", tar_bytes([("a.JPEG", b"x")]))]))
    line = _error_of([str(bad_src), str(tmp_path / "c"), "--no-progress"], capsys)
    assert f"{WNIDS[0]}.tar" in line


# --------------------------------------------------------------------------- resume

@pytest.fixture(scope="module")
def big_tar(tmp_path_factory):
    """2 classes x 40 textured 640x480 JPEGs in a train tar: enough work to be killed mid-way."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:480, 0:640]
    classes = []
    for w in WNIDS[:2]:
        files = []
        for i in range(40):
            wave = np.sin(rng.uniform(0.01, 0.2) * xx + rng.uniform(0, 6)) * np.cos(rng.uniform(0.01, 0.2) * yy)
            pixels = (128 + 100 * wave[:, :, None] * rng.uniform(-1, 1, 3)).astype(np.uint8)   # (H, W, C)
            out = io.BytesIO()
            Image.fromarray(pixels).save(out, "JPEG", quality=92)
            files.append((f"{w}_{i}.JPEG", out.getvalue()))
        classes.append((f"{w}.tar", tar_bytes(files)))
    src = tmp_path_factory.mktemp("big")
    (src / ilsvrc.TRAIN_TAR).write_bytes(tar_bytes(classes))
    return str(src)


def test_killed_then_rerun_gives_the_same_cache_from_a_tar(big_tar, tmp_path):
    reference = str(tmp_path / "whole")
    prepare(big_tar, reference, image_size=R, **QUIET)
    dst = kill_prepare_midway(big_tar, str(tmp_path / "killed"), ".train.state.npz", image_size=R)
    assert not is_cache(dst)
    lines = []
    prepare(big_tar, dst, image_size=R, workers=1, progress=False, print_fn=lines.append)
    assert any(line.startswith("train: resuming at file ") for line in lines), lines
    assert any("listing read from" in line for line in lines), lines     # not listed again
    for name in sorted(os.listdir(reference)):
        with open(os.path.join(reference, name), "rb") as a, open(os.path.join(dst, name), "rb") as b:
            assert a.read() == b.read(), f"{name} differs after the resume"


def test_tar_listings_are_kept_while_the_tars_are_unchanged(distribution, tmp_path, monkeypatch):
    """A second run (a finished cache checked) reads the kept listings instead of the tars'
    headers; a tar whose time changed is listed again."""
    src = tmp_path / "src"
    src.mkdir()
    for name in (ilsvrc.TRAIN_TAR, ilsvrc.VAL_TAR, ilsvrc.LOC_SOLUTION):
        (src / name).write_bytes((distribution[0] / name).read_bytes())
    dst = str(tmp_path / "c")
    prepare(str(src), dst, image_size=R, **QUIET)
    assert os.path.isfile(ilsvrc.listing_file(dst, str(src / ilsvrc.TRAIN_TAR)))

    def not_again(path):
        raise AssertionError(f"{path} listed again")
    monkeypatch.setattr(ilsvrc, "read_train_tar", not_again)
    monkeypatch.setattr(ilsvrc, "read_flat_tar", not_again)
    lines = []
    prepare(str(src), dst, image_size=R, workers=1, progress=False, print_fn=lines.append)
    assert sum("listing read from" in line for line in lines) == 2 and lines[-1].endswith("nothing to do"), lines
    stat = os.stat(src / ilsvrc.TRAIN_TAR)
    os.utime(src / ilsvrc.TRAIN_TAR, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))
    with pytest.raises(AssertionError, match="listed again"):
        prepare(str(src), dst, image_size=R, **QUIET)


def test_an_imagefolder_is_still_listed_as_before(distribution):
    """A train/ folder wins over a tar, and class folders in val/ are not a flat split."""
    assert ilsvrc.list_split(str(distribution[2]), "train", None) is None
    assert ilsvrc.list_split(str(distribution[2]), "val", WNIDS) is None
    with pytest.raises(DataError):
        ilsvrc.list_split(str(distribution[0]), "val", None)


def test_kaggle_layout_class_folders_and_a_flat_val_folder(distribution, from_folders, tmp_path):
    """Kaggle's CLS-LOC: train/<wnid>/ folders, the val JPEGs flat in val/, LOC_val_solution.csv."""
    src, _, folders, _ = distribution
    kaggle = tmp_path / "CLS-LOC"
    kaggle.mkdir()
    os.symlink(folders / "train", kaggle / "train")
    extract_flat(src / ilsvrc.VAL_TAR, kaggle / "val")
    (kaggle / "LOC_synset_mapping.txt").write_text("".join(f"{w} {n}\n" for w, n in zip(WNIDS, WORDS)))
    dst = str(tmp_path / "c")
    prepare(str(kaggle), dst, image_size=R, val_labels=str(src / ilsvrc.LOC_SOLUTION), **QUIET)
    ours, reference = Cache(dst), Cache(from_folders)
    assert ours.class_names == WORDS
    np.testing.assert_array_equal(ours.split("train").images, reference.split("train").images)
    assert ours.split("val").labels.tolist() == [2, 0, 1, 1, 0, 2]


def test_class_names_beside_the_label_file(distribution, tmp_path):
    """Kaggle's LOC_synset_mapping.txt beside LOC_val_solution.csv, above the source folder; a
    devkit's meta.mat beside its ground truth, outside the source folder."""
    src, devkit, folders, _ = distribution
    kaggle = tmp_path / "kaggle"
    (kaggle / "ILSVRC" / "Data").mkdir(parents=True)
    cls_loc = kaggle / "ILSVRC" / "Data" / "CLS-LOC"
    cls_loc.mkdir()
    os.symlink(folders / "train", cls_loc / "train")
    extract_flat(src / ilsvrc.VAL_TAR, cls_loc / "val")
    (kaggle / ilsvrc.LOC_SOLUTION).write_bytes((src / ilsvrc.LOC_SOLUTION).read_bytes())
    (kaggle / "LOC_synset_mapping.txt").write_text("".join(f"{w} {n}\n" for w, n in zip(WNIDS, WORDS)))
    dst = str(tmp_path / "c")
    prepare(str(cls_loc), dst, image_size=R, val_labels=str(kaggle / ilsvrc.LOC_SOLUTION), **QUIET)
    assert Cache(dst).class_names == WORDS
    pytest.importorskip("scipy")
    dst = str(tmp_path / "d")
    prepare(str(cls_loc), dst, image_size=R, val_labels=str(devkit / ilsvrc.GROUND_TRUTH), **QUIET)
    assert Cache(dst).class_names == WORDS
