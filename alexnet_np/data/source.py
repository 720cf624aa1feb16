"""What ``prepare`` asks of a source of images: one interface for every kind (§2).

Dimensions:
    F  files (members) listed in a split    K  classes

A source answers four questions, and ``prepare`` asks it nothing else:

    source.root                      the folder it reads (recorded in the cache's meta.json)
    source.splits()                  which splits it holds, by default: ``train``, and ``val``
                                     when there (the first split gives the classes, the mean
                                     image and the PCA)
    source.has_split(split)          whether it holds that one
    source.listings(splits, classes=None, print_fn=print, listing_dir=None)
                                     which members and which labels: ``{split: Listing}``, every
                                     split numbered by the first one's classes (or ``classes``)
    source.class_names(classes, path=None)
                                     which printable names (``path``: a names file given)

The kinds, each in its module:

    FolderTree (folders)   ``ROOT/<split>/<class>/<image>``, ImageNet's usual layout
    ILSVRC (ilsvrc)        ILSVRC-2012 as downloaded: its tars, its flat val folder, its label
                           files and devkit (a split extracted into class folders is read as one)
    CIFAR10 (cifar10)      CIFAR-10's binary batches, read as decoded arrays
    Demo (demo)            the generated demo set: a folder tree that makes itself

``prepare.open_source(folder)`` tells a folder tree from ILSVRC's files. A kind says how to
list one split (``listing``); checking the splits' classes against each other is the same
for all and lives here (``Source.listings``).
"""
import numpy as np

from .loader import DataError


class UnknownClasses(DataError):
    """Labels of a split that name classes the first split lacks (``wnids``, a set): a truncated
    train tar, say; ``Source.listings`` then keeps them, empty, so that indices stay the full list's."""

    def __init__(self, message, wnids):
        super().__init__(message)
        self.wnids = set(wnids)


class Listing(tuple):
    """One split of a source: ``(classes, relpaths, labels, empty)``, the class list (K), the
    members' paths relative to the source's root (F), their labels (F,) int64 (positions in
    ``classes``) and the classes that hold no member; plus

    ``read(start, stop)``: what the decoders get for members ``start..stop-1``: bytes (tar
        members, read in order), paths or decoded (H, W, C) uint8 arrays; None: the paths
        ``root/relpath`` themselves;
    ``lost``: ``[(relpath, reason)]``, members known but unreadable (damaged tar headers);
    ``wnids``: each member's class name (F), for ``with_classes``;
    ``damaged``: the source is cut or damaged (classes may be missing from it);
    ``source_files``: the files that make the split, relative to the root (its tar, say), whose
        names, sizes and times tell one source from another (None: the members themselves)."""

    def __new__(cls, classes, relpaths, labels, empty, read=None, lost=(), wnids=None, damaged=False,
                source_files=None):
        listing = super().__new__(cls, (classes, relpaths, np.asarray(labels, dtype=np.int64), empty))
        listing.read, listing.lost, listing.wnids, listing.damaged = read, list(lost), wnids, damaged
        listing.source_files = source_files
        return listing

    @property
    def files(self):
        """The files whose names, sizes and times identify this split (``prepare.source_digest``)."""
        return self.source_files or self[1]

    def with_classes(self, classes):
        """The same members numbered by another class list (a superset of theirs); classes without
        members are empty (their indices kept)."""
        index = {c: i for i, c in enumerate(classes)}
        listed = set(self.wnids)
        return Listing(list(classes), self[1], [index[w] for w in self.wnids],
                       [c for c in classes if c not in listed], self.read, self.lost, self.wnids, self.damaged,
                       self.source_files)


class Source:
    """The interface (see the module docstring); a kind defines ``has_split``, ``listing`` and
    ``class_names`` and sets ``root``."""

    root = None

    def splits(self):
        return ["train"] + (["val"] if self.has_split("val") else [])

    def has_split(self, split):
        raise NotImplementedError

    def listing(self, split, classes, fixed, print_fn=print, listing_dir=None):
        """One split as a ``Listing``. ``classes``: the class list given to ``prepare``
        (``fixed``), else the first split's (None for the first split itself); a kind that can
        read the split's own classes (class folders) does so unless ``fixed``, and
        ``listings`` compares them with the first split's. ``listing_dir``: where a slow
        listing (a tar's) may be kept for the next run."""
        raise NotImplementedError

    def class_names(self, classes, path=None):
        raise NotImplementedError

    def listings(self, splits, classes=None, print_fn=print, listing_dir=None):
        """Every split, each checked against the first one's classes: ``{split: Listing}``.

        A split whose labels name classes that a damaged first split lacks (``UnknownClasses``)
        widens the first split's class list, the missing classes kept as empty ones."""
        found = {}
        for split in splits:
            known = classes if classes is not None or not found else found[splits[0]][0]
            try:
                found[split] = self.listing(split, known, classes is not None, print_fn, listing_dir)
            except UnknownClasses as error:
                first = found.get(splits[0])
                if classes is not None or not getattr(first, "damaged", False):
                    raise  # a class list given, class folders, an intact tar: the error says what to do
                known = sorted(set(first[0]) | error.wnids)
                print_fn(f"{splits[0]}: the labels of {split} name {len(error.wnids)} classes that it lacks "
                         f"({', '.join(sorted(error.wnids)[:3])}{', ...' if len(error.wnids) > 3 else ''}): "
                         f"kept as empty classes, so that the {len(known)} class indices stay ILSVRC's")
                found[splits[0]] = first.with_classes(known)
                found[split] = self.listing(split, known, classes is not None, print_fn, listing_dir)
            mine, first = found[split][0], found[splits[0]][0]
            if mine != first:
                missing, extra = sorted(set(first) - set(mine)), sorted(set(mine) - set(first))
                raise DataError(f"split {split} has classes that do not match {splits[0]}'s: "
                                f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                                f"extra {extra[:5]}{'...' if len(extra) > 5 else ''}")
        return found
