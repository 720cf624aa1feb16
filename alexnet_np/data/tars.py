"""Listing a tar from its headers, reading on past damage as GNU tar does.

Dimensions: none (byte offsets and sizes).

    walk(fileobj, size, accept=None) -> Walk(members, gaps, cut)
    Window(f, start, size): bytes ``start .. start + size`` of an open file as a file object

Python's ``tarfile`` stops listing at the first damaged header without a word (an invalid
header after the first reads as the end of the archive). ``walk`` lists what ``tarfile``
reads, then looks at where it stopped: a zero block is the end-of-archive marker; a short
block, or nothing, is a file cut short; anything else is a damaged header. From there it scans
forward block by block (512 bytes) for the next valid header (its checksum right and the
``ustar`` magic at byte 257, as GNU tar's "Skipping to next header") that ``accept`` takes,
and lists on from it. Each damaged region is a ``Gap``: where it starts and stops, and the
headers seen inside it (``ustar`` blocks whose checksum fails, named by the legible part of
their name field, and valid headers that ``accept`` refused, such as the images of a class
tar whose own header is damaged), so that the members lost can be named. ``Gap.lost()``
says which: those headers, and the damaged block at its start when it bears no name,
unless all that follows it is zeros (a damaged end-of-archive marker loses nothing).

An image whose own header and bytes are intact is therefore either listed or named in a
gap: its header is valid, and the scan stops at the first valid header it meets.
"""
import collections
import os
import tarfile

BLOCK = tarfile.BLOCKSIZE          # 512
MAGIC = slice(257, 262)            # b"ustar" in POSIX and GNU headers
SCAN_BYTES = 1 << 20               # read at a time while scanning for the next header

Walk = collections.namedtuple("Walk", "members gaps cut")


class Gap(collections.namedtuple("Gap", "start stop headers data")):
    """A damaged region ``start .. stop`` (bytes; ``stop``: the next header read, or the end).

    ``headers``: ``[(offset, name or None, valid)]`` header blocks seen inside it; ``data``:
    whether anything but zeros follows its first block."""

    def lost(self):
        """``[(offset, name or None, valid)]``: the members this damage cost."""
        named = list(self.headers)
        if not any(offset == self.start for offset, _, _ in named) and self.data:
            named.insert(0, (self.start, None, False))
        return named


class Window:
    """Bytes ``start .. start + size`` of the open file ``f`` as a read-only file object."""

    def __init__(self, f, start, size):
        self.f, self.start, self.size, self.pos = f, start, size, 0

    def seek(self, pos, whence=os.SEEK_SET):
        self.pos = {os.SEEK_SET: 0, os.SEEK_CUR: self.pos, os.SEEK_END: self.size}[whence] + pos
        return self.pos

    def tell(self):
        return self.pos

    def read(self, n=-1):
        left = max(0, self.size - self.pos)
        data = os.pread(self.f.fileno(), left if n is None or n < 0 else min(n, left), self.start + self.pos)
        self.pos += len(data)
        return data


def legible_name(block):
    """The name field of a (damaged) header block as text, or None when nothing is legible."""
    raw = block[:100].split(b"\0", 1)[0]
    text = raw.decode("utf-8", "replace")
    return text if text and text.isprintable() and "\ufffd" not in text else None


def _read_from(fileobj, pos, members):
    """List with ``tarfile`` from the header at ``pos`` until it stops; returns where it stopped
    (the header it could not read, or past the end when a member's data runs off the file)."""
    fileobj.seek(pos)
    try:
        tar = tarfile.TarFile(fileobj=fileobj)             # reads the header at pos
    except (tarfile.TarError, EOFError, OSError, ValueError):
        return pos                                         # the header at offset 0 is damaged
    try:
        for member in iter(tar.next, None):
            members.append(member)
    except (tarfile.TarError, EOFError, OSError, ValueError):
        pass                                               # "unexpected end of data": cut, or a broken extension header
    return tar.offset


def _skip_damage(fileobj, start, size, accept):
    """The ``Gap`` from the damaged header at ``start`` to the next valid header ``accept`` takes."""
    fileobj.seek(start)
    first = fileobj.read(BLOCK)
    headers = [(start, legible_name(first), False)] if first[MAGIC] == b"ustar" else []
    data, pos = False, start + BLOCK
    while pos < size:
        fileobj.seek(pos)
        chunk = fileobj.read(min(SCAN_BYTES, size - pos))
        if not chunk:
            break
        for i in range(0, len(chunk) - BLOCK + 1, BLOCK):
            if chunk[i + MAGIC.start:i + MAGIC.stop] != b"ustar":
                continue
            block = chunk[i:i + BLOCK]
            try:
                info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
            except tarfile.HeaderError:
                headers.append((pos + i, legible_name(block), False))
                continue
            if accept is None or accept(info):
                return Gap(start, pos + i, headers, data or bool(chunk[:i].strip(b"\0")))
            headers.append((pos + i, info.name, True))
        data = data or bool(chunk.strip(b"\0"))
        pos += len(chunk)
    return Gap(start, size, headers, data)


def walk(fileobj, size, accept=None):
    """The members of the tar in ``fileobj`` (its first ``size`` bytes), in order, read on past
    damaged headers. ``accept(TarInfo)``: which valid headers may end a damaged region (default:
    any). Returns ``Walk(members, gaps, cut)``; ``cut``: the file ends before the tar's end."""
    members, gaps, pos = [], [], 0
    while True:
        pos = _read_from(fileobj, pos, members)
        fileobj.seek(pos)
        block = fileobj.read(BLOCK) if pos < size else b""
        if len(block) < BLOCK:
            return Walk(members, gaps, True)
        if block.count(0) == BLOCK:
            return Walk(members, gaps, False)              # the end-of-archive marker
        gap = _skip_damage(fileobj, pos, size, accept)
        gaps.append(gap)
        if gap.stop >= size:
            return Walk(members, gaps, False)
        pos = gap.stop
