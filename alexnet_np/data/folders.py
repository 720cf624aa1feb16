"""A folder tree as a source (``source.Source``): ``ROOT/<split>/<class>/<image>``, ImageNet's
usual layout (§2).

Dimensions:
    F  files listed in a split    K  classes

Class folders, sorted, give the class index (n01440764 = 0, ...), unless a class list is given
(``prepare(..., classes=)``: a list, or a file such as synset_words.txt whose lines start with
the folder names), in which case each split's folders need only be among it. Files are found
at any depth below a class folder; names starting with '.' are skipped. An empty class folder
keeps its index. Printable names come from a names file in ROOT (``CLASS_NAME_FILES``): one
line per class in class order, or ``<folder name> <name>`` lines (Caffe's synset_words.txt).
"""
import os

import numpy as np

from .loader import DataError
from .source import Listing, Source

CLASS_NAME_FILES = ("class_names.txt", "classes.txt", "synset_words.txt", "LOC_synset_mapping.txt")


class FolderTree(Source):
    """The folder ``root`` holding ``<split>/<class>/<image>``."""

    def __init__(self, root):
        self.root = root

    def has_split(self, split):
        return os.path.isdir(os.path.join(self.root, split))

    def listing(self, split, classes, fixed, print_fn=print, listing_dir=None):
        return Listing(*list_split(self.root, split, classes if fixed else None))

    def class_names(self, classes, path=None):
        return find_class_names(self.root, classes, path)


def list_split(src, split, classes=None):
    """Class folders and files of ``src/split``, sorted: ``(classes, relpaths, labels, empty)``.

    ``classes``: the class list (its order gives the labels) when given, else the sorted
    class folders. ``relpaths`` are relative to ``src``; ``empty`` lists the class folders
    that exist but hold no file.
    """
    root = os.path.join(src, split)
    if not os.path.isdir(root):
        raise DataError(f"split folder {root} is missing")
    folders = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if classes is None:
        classes = folders
    extra = sorted(set(folders) - set(classes))
    if extra:
        raise DataError(f"split {split} has class folders that are not in the class list: "
                        f"{extra[:5]}{'...' if len(extra) > 5 else ''}")
    relpaths, labels, empty = [], [], []
    for label, name in enumerate(classes):
        if not os.path.isdir(os.path.join(root, name)):
            continue
        found = []
        for folder, dirs, files in os.walk(os.path.join(root, name), followlinks=True):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            rel = os.path.relpath(folder, src)
            found += [os.path.join(rel, f) for f in sorted(files) if not f.startswith(".")]
        if not found:
            empty.append(name)
        relpaths += found
        labels += [label] * len(found)
    if not relpaths:
        raise DataError(f"split folder {root} holds no files in class folders")
    return classes, relpaths, np.array(labels, dtype=np.int64), empty


def read_class_names(path, classes):
    """Printable class names from a file: one line per class, or ``<folder> <name>`` lines."""
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip()]
    keyed = {}
    for line in lines:
        key, _, rest = line.partition(" ")
        keyed[key] = rest.strip() or key
    if all(c in keyed for c in classes):
        return [keyed[c] for c in classes]
    if len(lines) == len(classes):
        return lines
    raise DataError(f"class names file {path}: {len(lines)} lines for {len(classes)} classes, "
                    "and its lines do not start with the class folder names")


def names_file(folder, names=CLASS_NAME_FILES):
    """The first of the class-names files ``names`` found in ``folder``, or None."""
    return next((os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))), None)


def find_class_names(src, classes, path=None):
    """The class names: from ``path``, else a known file in ``src``, else the folder names."""
    path = path or names_file(src)
    return read_class_names(path, classes) if path is not None else list(classes)


def read_class_list(path):
    """Class folder names, in label order: the first word of each line (e.g. synset_words.txt)."""
    with open(path, encoding="utf-8") as f:
        return [line.split()[0] for line in f if line.strip()]
