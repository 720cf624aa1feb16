"""Writing a file whole or not at all: into a temporary file beside it, then renamed onto it.

A reader, or a kill midway, never sees a half-written file, and an old file stays whole
until it is replaced (``os.replace`` is atomic within a folder). Checkpoints add an fsync
of the file and its folder on top (``checkpoint.write_atomic``).
"""
import json
import os


def write_then_rename(path, write):
    """``write(temporary path)`` beside ``path`` (its extension kept, so that a writer that
    goes by it, e.g. Pillow's, still can), then renamed onto ``path``; no temporary is left."""
    folder, name = os.path.split(os.path.abspath(path))
    stem, ext = os.path.splitext(name)
    tmp = os.path.join(folder, f".{stem}.{os.getpid()}.tmp{ext}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path, write):
    """``write(f)`` into a text file (newline="": the csv module's own line ends) at ``path``."""
    def to_file(tmp):
        with open(tmp, "w", newline="") as f:
            write(f)
    write_then_rename(path, to_file)


def write_json(path, record):
    """``record`` as indented JSON at ``path``."""
    write_text(path, lambda f: json.dump(record, f, indent=1))
