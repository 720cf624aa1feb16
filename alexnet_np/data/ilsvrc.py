"""ILSVRC-2012 as it is distributed: the two image tars, the validation labels, the class lists.

Dimensions:
    F  files listed in a split    K  classes (1000)

What ``python -m alexnet_np.data.prepare SRC DST`` reads from SRC besides ImageFolder folders:

    ILSVRC2012_img_train.tar      a tar of 1000 tars, ``n01440764.tar`` ..., each holding that
                                  class's JPEGs: the training split, read in place
    ILSVRC2012_img_val.tar        50,000 JPEGs ``ILSVRC2012_val_00000001.JPEG`` ... in one flat
                                  tar; or ``val/`` holding the same JPEGs flat (already extracted)
    validation labels, one of     (``--val-labels FILE``, else the first found in SRC)
      LOC_val_solution.csv        Kaggle's: ``ImageId,PredictionString``; each row an image id and
                                  its boxes, ``<wnid> x0 y0 x1 y1`` each: the first token is the label
      ILSVRC2012_validation_ground_truth.txt   the devkit's: line i is the ILSVRC2012_ID of image
                                  i, mapped to a WordNet id by the devkit's ``meta.mat`` (beside
                                  it, or in SRC); also read from ``ILSVRC2012_devkit_t12.tar.gz``
                                  or its extracted folder ``ILSVRC2012_devkit_t12/data/``
    class names                   synset_words.txt or LOC_synset_mapping.txt (``<wnid> <names>``
                                  lines, found by ``prepare``), else the devkit's ``meta.mat``

Labels are by WordNet id: a validation image's label is the index of its wnid among the
training classes (sorted wnids: n01440764 = 0), so train and val line up whatever order the
label files use (the devkit's ILSVRC2012_IDs are in another order). Classes that the labels
name but a cut or damaged train tar lacks are kept as empty classes by ``prepare``, so that
the indices stay ILSVRC's (``UnknownClasses``, ``Listing.with_classes``); with an intact
train tar they are a one-line error.

Reading in place. A tar is listed once by its headers (seeking over the data):
every image is a (path, byte offset, size) in the big file, a nested class tar's offsets
added to its own. ``prepare`` then reads each chunk of files in list order, in the parent
process (sequential reads of the tar), and hands the bytes to its decoding workers. Nothing
is extracted; a rerun after a kill continues at the saved file like any other split. The
listing is kept in the cache folder (``.<tar name>.listing.npz``) and reused by later runs
(a resume, a finished cache checked) while the tar's size and modification time are unchanged.

Bad input, one line each (``LabelError`` / ``data.DataError``): a tar that is not ILSVRC's
layout (a train member that is not a class tar; a val tar with folders), a class tar in
which no header is valid, a val image without a label, a label file naming a class that is
not among the training classes, a label file that cannot be parsed, ``meta.mat`` without
SciPy. A truncated tar is not fatal: the files before the damage are kept and the damage is
reported in one line. A damaged header is read past (``alexnet_np/data/tars.py``): one line per
tar says where, and the members lost are the listing's ``lost`` rows, which ``prepare``
reports with the skipped files (reason ``lost: ...``). A class tar whose own header is
damaged loses its images (named by their headers); its class keeps its index when the
damaged header's name is still legible.

Class lists: ``ILSVRC2012_SYNSETS`` (``alexnet_np/ilsvrc2012_synset_words.txt``) is the
1000 ILSVRC-2012 classes in sorted-wnid order with their WordNet names, in the format of
Caffe's synset_words.txt (from chainer/chainer, ``onnx_chainer/examples/images``, MIT);
it is the output order of BVLC's models, used by ``alexnet_np.interop.convert``.
"""
import csv
import io
import json
import os
import re
import tarfile

import numpy as np

from . import tars
from .folders import CLASS_NAME_FILES, FolderTree, names_file, read_class_names
from .loader import DataError
from .source import Listing
from .source import UnknownClasses as ClassesMissing

TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
LOC_SOLUTION = "LOC_val_solution.csv"
GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
META_MAT = "meta.mat"
DEVKIT_TAR = "ILSVRC2012_devkit_t12.tar.gz"
DEVKIT_DIR = os.path.join("ILSVRC2012_devkit_t12", "data")
ILSVRC2012_SYNSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ilsvrc2012_synset_words.txt")
SCIPY_MISSING = "reading the devkit's meta.mat needs SciPy: pip install scipy (or use LOC_val_solution.csv)"
WNID = re.compile(r"^n\d{8}$")
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


class LabelError(DataError):
    """A label or class file that cannot be used; the message is one line naming it."""


class UnknownClasses(ClassesMissing, LabelError):
    """Validation labels that name classes the training split lacks (``wnids``, a set): a
    truncated train tar, say; ``Source.listings`` then keeps them, empty, so indices stay ILSVRC's."""


# --------------------------------------------------------------------------- the source

class ILSVRC(FolderTree):
    """ILSVRC-2012 as downloaded, in the folder ``root`` (a ``source.Source``): the train tar
    (unless ``train/`` is extracted into class folders), the val tar or a flat ``val/`` folder
    labelled through ``val_labels`` (default: the first label file found in ``root``), class
    names from a synset file or the devkit. A split in class folders is read as a folder tree."""

    def __init__(self, root, val_labels=None):
        super().__init__(root)
        self.val_labels = val_labels

    @staticmethod
    def holds(folder, val_labels=None):
        """True when ``folder`` holds any of ILSVRC-2012's files as downloaded (a tar, a flat
        folder of images, a label file, the devkit), or ``val_labels`` is given."""
        entries = [e for e in os.scandir(folder) if not e.name.startswith(".")] if os.path.isdir(folder) else []
        return bool(val_labels or find_val_labels(folder) or devkit_meta_path(folder)
                    or any(e.is_file() and re.match(r"ILSVRC2012_img_.+\.tar$", e.name) for e in entries)
                    or any(e.is_dir() and is_flat_image_folder(e.path) for e in entries))

    def has_split(self, split):
        return super().has_split(split) or has_split(self.root, split)

    def listing(self, split, classes, fixed, print_fn=print, listing_dir=None):
        listing = list_split(self.root, split, classes, self.val_labels, print_fn, listing_dir)
        return listing if listing is not None else super().listing(split, classes, fixed, print_fn, listing_dir)

    def class_names(self, classes, path=None):
        """From ``path``, else a names file in the root or a synset file beside the label file
        (Kaggle's LOC_synset_mapping.txt sits beside its CSV, above ``ILSVRC/Data/CLS-LOC``), else
        the devkit's meta.mat in either folder, else the wnids."""
        beside = os.path.dirname(os.path.abspath(self.val_labels)) if self.val_labels else None
        path = path or names_file(self.root) or (names_file(beside, CLASS_NAME_FILES[2:]) if beside else None)
        if path is not None:
            return read_class_names(path, classes)
        for folder in [self.root] + ([beside] if beside else []):
            names = devkit_class_names(folder, classes)
            if names is not None:
                return names
        return list(classes)


# --------------------------------------------------------------------------- class lists

def read_synsets(path):
    """``(wnids, names)`` in file order from ``<wnid> <names>`` lines (synset_words.txt,
    LOC_synset_mapping.txt), or the devkit's meta.mat (the 1000 classes, sorted by wnid)."""
    if path.endswith(".mat"):
        meta = read_devkit_meta(path)
        pairs = sorted(meta.values())
        return [w for w, _ in pairs], [n for _, n in pairs]
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError as error:
        raise LabelError(f"class list {path}: cannot read ({error.strerror or error})") from None
    wnids, names = [], []
    for number, line in enumerate(lines, 1):
        wnid, _, name = line.partition(" ")
        if not WNID.match(wnid):
            raise LabelError(f"class list {path}, line {number}: {wnid!r} is not a WordNet id (n + 8 digits)")
        wnids.append(wnid)
        names.append(name.strip() or wnid)
    if len(set(wnids)) != len(wnids):
        raise LabelError(f"class list {path} names a class twice")
    return wnids, names


def read_devkit_meta(source):
    """The devkit's meta.mat (a path or an open file): ``{ILSVRC2012_ID: (wnid, words)}`` of the
    1000 classes (the synsets with no children; the file also holds their 860 ancestors)."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise LabelError(SCIPY_MISSING) from None
    name = source if isinstance(source, str) else getattr(source, "name", "meta.mat")
    try:
        synsets = loadmat(source, squeeze_me=True)["synsets"]       # structured array, one row per synset
        ids = np.atleast_1d(synsets["ILSVRC2012_ID"]).astype(np.int64)
        wnids = [str(w) for w in np.atleast_1d(synsets["WNID"])]
        words = [str(w) for w in np.atleast_1d(synsets["words"])]
        children = np.atleast_1d(synsets["num_children"]).astype(np.int64)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise LabelError(f"{name}: not the devkit's meta.mat (a 'synsets' struct with ILSVRC2012_ID, "
                         f"WNID, words, num_children): {type(error).__name__}: {error}") from None
    return {int(i): (w, n) for i, w, n, c in zip(ids, wnids, words, children) if c == 0}


# --------------------------------------------------------------------------- validation labels

def val_image_id(name):
    """``ILSVRC2012_val_00000001`` from a file name (any folder, any image extension)."""
    return os.path.splitext(os.path.basename(name))[0]


def read_loc_solution(path):
    """Kaggle's LOC_val_solution.csv: ``{image id: wnid}`` (the first box's class)."""
    labels = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except OSError as error:
        raise LabelError(f"label file {path}: cannot read ({error.strerror or error})") from None
    for number, row in enumerate(rows, 1):
        if number == 1 and row and row[0] == "ImageId":
            continue
        tokens = row[1].split() if len(row) >= 2 else []
        if not tokens or not WNID.match(tokens[0]):
            raise LabelError(f"label file {path}, line {number}: expected 'image id,<wnid> x0 y0 x1 y1 ...', "
                             f"got {','.join(row)[:80]!r}")
        labels[row[0]] = tokens[0]
    return labels


def read_ground_truth(lines, meta, name):
    """The devkit's ground truth (one ILSVRC2012_ID per line, line i for image i) and its
    meta (``read_devkit_meta``): ``{image id: wnid}``."""
    labels = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            wnid = meta[int(line)][0]
        except (ValueError, KeyError):
            raise LabelError(f"label file {name}, line {number}: {line.strip()!r} is not an ILSVRC2012_ID "
                             f"of the devkit's 1000 classes") from None
        labels[f"ILSVRC2012_val_{number:08d}"] = wnid
    return labels


def _read_devkit_tar(path):
    """Ground truth and meta.mat read from ``ILSVRC2012_devkit_t12.tar.gz`` without extracting it."""
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}
            if GROUND_TRUTH not in members or META_MAT not in members:
                raise LabelError(f"devkit {path}: no data/{GROUND_TRUTH} and data/{META_MAT} in it")
            lines = tar.extractfile(members[GROUND_TRUTH]).read().decode("ascii").splitlines()
            meta = read_devkit_meta(io.BytesIO(tar.extractfile(members[META_MAT]).read()))
    except (tarfile.TarError, OSError, EOFError) as error:
        raise LabelError(f"devkit {path}: cannot read it ({error})") from None
    return read_ground_truth(lines, meta, f"{path}:{GROUND_TRUTH}")


def read_val_labels(path, src=None):
    """``{image id: wnid}`` from LOC_val_solution.csv, the devkit's ground truth (its meta.mat
    beside it or in ``src``) or the devkit archive."""
    if not os.path.isfile(path):
        raise LabelError(f"label file {path}: no such file")
    if path.endswith(".csv"):
        return read_loc_solution(path)
    if path.endswith((".tar.gz", ".tgz", ".tar")):
        return _read_devkit_tar(path)
    candidates = [os.path.join(os.path.dirname(path), META_MAT)] + ([os.path.join(src, META_MAT)] if src else [])
    meta_path = next((p for p in candidates if os.path.isfile(p)), None)
    if meta_path is None:
        raise LabelError(f"label file {path}: its ILSVRC2012_IDs need the devkit's {META_MAT} beside it")
    with open(path, encoding="ascii") as f:
        return read_ground_truth(f.read().splitlines(), read_devkit_meta(meta_path), path)


def find_val_labels(src):
    """The first validation label file found in ``src`` (see the module docstring), or None."""
    for name in (LOC_SOLUTION, GROUND_TRUTH, os.path.join(DEVKIT_DIR, GROUND_TRUTH), DEVKIT_TAR):
        if os.path.isfile(os.path.join(src, name)):
            return os.path.join(src, name)
    return None


def devkit_meta_path(src):
    """The devkit's meta.mat in ``src`` (loose or in the extracted devkit), or its archive, or None."""
    for name in (META_MAT, os.path.join(DEVKIT_DIR, META_MAT), DEVKIT_TAR):
        if os.path.isfile(os.path.join(src, name)):
            return os.path.join(src, name)
    return None


def devkit_class_names(src, classes):
    """Names of ``classes`` from a devkit in ``src`` (``meta.mat``, loose, in the extracted
    devkit or in its archive), or None when there is none."""
    meta = None
    for name in (META_MAT, os.path.join(DEVKIT_DIR, META_MAT)):
        if os.path.isfile(os.path.join(src, name)):
            meta = read_devkit_meta(os.path.join(src, name))
            break
    else:
        archive = os.path.join(src, DEVKIT_TAR)
        if os.path.isfile(archive):
            try:
                with tarfile.open(archive, "r:*") as tar:
                    member = next((m for m in tar.getmembers() if os.path.basename(m.name) == META_MAT), None)
                    if member is not None:
                        meta = read_devkit_meta(io.BytesIO(tar.extractfile(member).read()))
            except (tarfile.TarError, OSError, EOFError) as error:
                raise LabelError(f"devkit {archive}: cannot read it ({error})") from None
    if meta is None:
        return None
    names = {w: n for w, n in meta.values()}
    return [names.get(c, c) for c in classes]


# --------------------------------------------------------------------------- tars read in place

def member_reader(tar_path, offsets, sizes):
    """``read(start, stop)``: the bytes of members ``start..stop-1`` of ``tar_path``, by offset."""
    def read(start, stop):
        fd = os.open(tar_path, os.O_RDONLY)
        try:
            return [os.pread(fd, int(sizes[i]), int(offsets[i])) for i in range(start, stop)]
        finally:
            os.close(fd)
    return read


def _truncation_note(path, damage, kept, last):
    return (f"{path} is truncated or damaged ({damage}); the {kept} files before the damage are kept"
            + (f" (the last: {last})" if last else ""))


def _walk_file(path, accept=None):
    """``tars.walk`` over the whole file ``path``; a one-line error when no header in it is valid."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        walked = tars.walk(tars.Window(f, 0, size), size, accept)
    if not walked.members and walked.gaps and walked.gaps[0].start == 0:
        raise DataError(f"{path}: not a tar file (no valid tar header in its {size} bytes)")
    return walked


def _damage_note(where, gaps, lost, size):
    """One line for the damaged headers of one tar: where, what was lost, what was left unread."""
    at = ", ".join(str(g.start) for g in gaps)
    note = (f"{where}: damaged tar header{'s' * (len(gaps) > 1)} at byte {at}: read on from the next valid "
            f"header; {lost} member{'s' * (lost != 1)} lost (listed with the skipped files)")
    last = gaps[-1]
    if last.stop >= size and last.data:
        note += f"; no valid header after byte {last.start}: its last {size - last.start} bytes are unread"
    return note


def _lost_rows(prefix, where, gaps):
    """``[(relpath, reason)]``: the members named in the gaps of a class tar or a flat tar."""
    return [(f"{prefix}/{name or f'<member at byte {offset}>'}",
             f"lost: its tar header is damaged (byte {offset} of {where})")
            for gap in gaps for offset, name, _ in gap.lost()]


def _lost_class_tars(path, gaps):
    """``[(relpath, reason)]``: the images of class tars whose header in the train tar is damaged
    (their own headers, seen in the gap, name them), or the class tar where none is named."""
    name, rows = os.path.basename(path), []
    for gap in gaps:
        cls, named = None, True
        for offset, member, _ in gap.lost():
            if offset == gap.start or (member or "").endswith(".tar"):
                if not named:
                    rows.append((f"{name}/{cls}", f"lost: its header in {name} is damaged, no image in it named"))
                cls, named = member or f"<class tar at byte {offset}>", False
                continue
            rows.append((f"{name}/{cls}/{member or f'<member at byte {offset}>'}",
                         f"lost: the header of its class tar is damaged (byte {gap.start} of {name})"))
            named = True
        if not named:
            rows.append((f"{name}/{cls}", f"lost: its header in {name} is damaged, no image in it named"))
    return rows


def _legible_classes(gaps):
    """The wnids of class tars whose damaged headers still bear a legible name."""
    names = [os.path.basename(name or "") for gap in gaps for _, name, _ in gap.lost()]
    return [n[:-4] for n in names if n.endswith(".tar") and WNID.match(n[:-4])]


def _is_class_tar(info):
    return info.isfile() and info.name.endswith(".tar") and WNID.match(os.path.basename(info.name)[:-4]) is not None


def _class_of(path, member):
    """The wnid of a training tar member ``n01440764.tar``; a one-line error for anything else."""
    wnid, ext = os.path.splitext(os.path.basename(member.name))
    if ext != ".tar" or not WNID.match(wnid):
        raise DataError(f"{path}: member {member.name} is not a class tar (nXXXXXXXX.tar): "
                        "not ILSVRC-2012's training tar layout")
    return wnid


def _class_tar_images(path, f, member, file_size, listing):
    """Add one class tar's images (name, offset in the big file, size) and its losses to
    ``listing``. Returns True when the file ends inside it. Damaged headers are read past
    (``tars.walk``); a class tar wholly present in which no header is valid is an error."""
    name = os.path.basename(path)
    size = min(member.size, file_size - member.offset_data)
    inner = tars.walk(tars.Window(f, member.offset_data, size), size)
    cut = member.offset_data + member.size > file_size
    if not inner.members and inner.gaps and not cut:
        raise DataError(f"{path}: class tar {member.name} is corrupt (no valid tar header in its {size} bytes)")
    for image in inner.members:
        start = member.offset_data + image.offset_data          # offset in the big file
        if image.isfile() and start + image.size <= file_size:
            listing["relpaths"].append(f"{name}/{member.name}/{image.name}")
            listing["wnids"].append(listing["found"][-1])
            listing["offsets"].append(start)
            listing["sizes"].append(image.size)
    if inner.gaps:
        lost = _lost_rows(f"{name}/{member.name}", member.name, inner.gaps)
        listing["lost"] += lost
        listing["notes"].append(_damage_note(f"{path}: class tar {member.name}", inner.gaps, len(lost), size))
    return cut


LISTING_VERSION = 1   # changes here make saved listings be read again from the tar


def listing_file(folder, tar_path):
    return os.path.join(folder, f".{os.path.basename(tar_path)}.listing.npz")


def kept_listing(tar_path, folder, read, print_fn=print):
    """``read(tar_path)``, a dict of lists with ``"offsets"`` and ``"sizes"`` (F,), kept in
    ``folder`` (the cache being written; None: not kept) and reused while the tar's size and
    modification time are those it was listed at: listing ImageNet's train tar takes minutes."""
    stat = os.stat(tar_path)
    stamp = [LISTING_VERSION, stat.st_size, stat.st_mtime_ns]
    path = listing_file(folder, tar_path) if folder is not None else None
    if path is not None and os.path.isfile(path):
        try:
            with np.load(path) as saved:
                if saved["stamp"].tolist() == stamp:
                    listing = json.loads(saved["rest"].tobytes().decode("utf-8", "surrogateescape"))
                    listing["offsets"], listing["sizes"] = saved["offsets"], saved["sizes"]
                    print_fn(f"{tar_path}: listing read from {path} (the tar's size and time are unchanged)")
                    return listing
        except (OSError, ValueError, KeyError):
            pass                                           # unreadable: list the tar again
    listing = read(tar_path)
    if path is not None and os.path.isdir(folder):
        rest = {k: v for k, v in listing.items() if k not in ("offsets", "sizes")}
        text = np.frombuffer(json.dumps(rest).encode("utf-8", "surrogateescape"), np.uint8)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            np.savez_compressed(f, stamp=np.array(stamp, np.int64), rest=text,
                                offsets=np.array(listing["offsets"], np.int64), sizes=np.array(listing["sizes"], np.int64))
        os.replace(tmp, path)
    return listing


def read_train_tar(path):
    """What the headers of ILSVRC2012_img_train.tar say, as plain data: ``{"relpaths",
    "wnids", "offsets", "sizes"}`` (F each, tar order), ``"found"`` (the class tars' wnids),
    ``"lost"`` (``[(relpath, reason)]``) and ``"notes"`` (lines on damage). Only headers are
    read (seeking over the images); damaged headers are read past, in the train tar and in
    its class tars."""
    file_size = os.path.getsize(path)
    listing = {"relpaths": [], "wnids": [], "offsets": [], "sizes": [], "found": [], "lost": [], "notes": []}
    outer = _walk_file(path, accept=_is_class_tar)
    damage = "no end-of-archive marker after the last member: the file is cut short" if outer.cut else None
    with open(path, "rb") as f:
        for member in (m for m in outer.members if m.isfile()):
            listing["found"].append(_class_of(path, member))
            if _class_tar_images(path, f, member, file_size, listing):
                damage = f"{member.name} ends past the end of the file"
                break
    if outer.gaps:
        lost = _lost_class_tars(path, outer.gaps)
        listing["lost"] += lost
        listing["found"] += [c for c in _legible_classes(outer.gaps) if c not in listing["found"]]  # indices kept
        listing["notes"].append(_damage_note(path, outer.gaps, len(lost), file_size))
    if damage is not None:
        last = listing["relpaths"][-1] if listing["relpaths"] else None
        listing["notes"].append(_truncation_note(path, damage, len(listing["relpaths"]), last))
    return listing


def list_train_tar(path, classes=None, print_fn=print, listing_dir=None):
    """ILSVRC2012_img_train.tar: a tar of per-class tars. Returns a ``source.Listing``.

    Files are listed in tar order; labels are positions in ``classes`` (default: the class
    tars' wnids, sorted). Damage is said in one line per tar (``read_train_tar``). The
    listing is kept in ``listing_dir`` and reused while the tar is unchanged (``kept_listing``).
    """
    listing = kept_listing(path, listing_dir, read_train_tar, print_fn)
    for note in listing["notes"]:
        print_fn(note)
    if not listing["relpaths"]:
        raise DataError(f"{path}: no images in it")
    found = listing["found"]
    classes = sorted(set(found)) if classes is None else list(classes)
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(found) - set(index))
    if unknown:
        raise LabelError(f"{path}: class tars {unknown[:5]} are not in the class list")
    listed = set(listing["wnids"])
    empty = [c for c in found if c not in listed]
    return Listing(classes, listing["relpaths"], [index[w] for w in listing["wnids"]], empty,
                      member_reader(path, np.array(listing["offsets"], np.int64), np.array(listing["sizes"], np.int64)),
                      listing["lost"], listing["wnids"], damaged=bool(listing["notes"]),
                      source_files=[os.path.basename(path)])


def list_val(source, classes, labels_path, src=None, print_fn=print, listing_dir=None):
    """The flat validation set (ILSVRC2012_img_val.tar, or a flat folder of its JPEGs), labelled
    by wnid through ``labels_path`` and numbered by ``classes``. Returns a ``source.Listing``."""
    if labels_path is None:
        raise LabelError(f"{source}: validation images without labels: put LOC_val_solution.csv or the "
                         "devkit (ILSVRC2012_devkit_t12.tar.gz) in the source folder, give --val-labels, "
                         "or prepare the training set alone (--splits train)")
    by_image = read_val_labels(labels_path, src)
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(by_image.values()) - set(index))
    if unknown:
        raise UnknownClasses(f"label file {labels_path} names class {unknown[0]}"
                             f"{f' (and {len(unknown) - 1} more)' if len(unknown) > 1 else ''}, "
                             f"which is not among the {len(classes)} training classes: prepare the training "
                             "set alone (--splits train), or fix the class list (--classes synset_words.txt)",
                             unknown)
    lost, files = [], None                  # files: None, the images themselves make the split
    if os.path.isdir(source):
        names = sorted(e.name for e in os.scandir(source) if e.is_file() and not e.name.startswith(".")
                       and e.name.lower().endswith(IMAGE_SUFFIXES))
        relpaths = [os.path.join(os.path.basename(os.path.normpath(source)), n) for n in names]
        root = os.path.dirname(os.path.normpath(source))
        read = lambda start, stop: [os.path.join(root, p) for p in relpaths[start:stop]]  # noqa: E731
    else:
        flat = kept_listing(source, listing_dir, read_flat_tar, print_fn)
        for note in flat["notes"]:
            print_fn(note)
        names, relpaths, lost, files = flat["names"], flat["relpaths"], flat["lost"], [os.path.basename(source)]
        read = member_reader(source, np.array(flat["offsets"], np.int64), np.array(flat["sizes"], np.int64))
    if not names:
        raise DataError(f"{source}: no validation images in it")
    labels = []
    for name in names:
        wnid = by_image.get(val_image_id(name))
        if wnid is None:
            raise LabelError(f"validation image {name} has no label in {labels_path}")
        labels.append(index[wnid])
    return Listing(list(classes), relpaths, labels, [], read, lost, source_files=files)


def read_flat_tar(path):
    """Members of a flat tar of images, read past damaged headers, to the end of the file if it
    is cut: ``{"names", "relpaths", "offsets", "sizes"}`` (F each), ``"lost"`` and ``"notes"``."""
    file_size = os.path.getsize(path)
    walked = _walk_file(path)
    damage = "no end-of-archive marker after the last member: the file is cut short" if walked.cut else None
    names, relpaths, offsets, sizes = [], [], [], []
    for member in walked.members:
        if member.isdir() or "/" in member.name.strip("/") or member.name.endswith(".tar"):
            raise DataError(f"{path}: member {member.name} is not an image at the top: "
                            "not ILSVRC-2012's flat validation tar layout")
        if not member.isfile():
            continue
        if member.offset_data + member.size > file_size:
            damage = f"{member.name} ends past the end of the file"
            break
        names.append(member.name)
        relpaths.append(f"{os.path.basename(path)}/{member.name}")
        offsets.append(member.offset_data)
        sizes.append(member.size)
    lost = _lost_rows(os.path.basename(path), os.path.basename(path), walked.gaps)
    notes = [_damage_note(path, walked.gaps, len(lost), file_size)] if walked.gaps else []
    if damage is not None:
        notes.append(_truncation_note(path, damage, len(names), names[-1] if names else None))
    return {"names": names, "relpaths": relpaths, "offsets": offsets, "sizes": sizes, "lost": lost, "notes": notes}


def is_flat_image_folder(folder):
    """True for a folder holding image files directly and no class folders (an extracted val tar)."""
    if not os.path.isdir(folder):
        return False
    entries = [e for e in os.scandir(folder) if not e.name.startswith(".")]
    return (not any(e.is_dir() for e in entries)
            and any(e.name.lower().endswith(IMAGE_SUFFIXES) for e in entries))


def list_split(src, split, classes, val_labels=None, print_fn=print, listing_dir=None):
    """A split of SRC in ILSVRC's distributed form, as a ``source.Listing``; None when it is not.

    ``train``: ``ILSVRC2012_img_train.tar`` when SRC has no ``train/`` folder. Other splits
    (``val``): ``ILSVRC2012_img_<split>.tar`` or a flat ``<split>/`` folder of images, labelled
    through ``val_labels`` (default: found in SRC); ``classes``: the training split's.
    ``listing_dir``: where a tar's listing is kept for the next run (``kept_listing``).
    """
    if split == "train":
        tar = os.path.join(src, TRAIN_TAR)
        if os.path.isdir(os.path.join(src, "train")) or not os.path.isfile(tar):
            return None
        return list_train_tar(tar, classes, print_fn, listing_dir)
    folder, tar = os.path.join(src, split), os.path.join(src, f"ILSVRC2012_img_{split}.tar")
    if is_flat_image_folder(folder):
        source = folder
    elif not os.path.isdir(folder) and os.path.isfile(tar):
        source = tar
    else:
        return None
    if classes is None:
        raise DataError(f"{source}: a flat split needs the training classes first (list train before it)")
    return list_val(source, classes, val_labels or find_val_labels(src), src, print_fn, listing_dir)


def has_split(src, split):
    """True when SRC holds ``split`` in ILSVRC's distributed form (a tar, or a flat folder)."""
    if split == "train":
        return os.path.isfile(os.path.join(src, TRAIN_TAR))
    return (os.path.isfile(os.path.join(src, f"ILSVRC2012_img_{split}.tar"))
            or is_flat_image_folder(os.path.join(src, split)))
