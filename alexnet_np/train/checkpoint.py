"""Checkpoints: one ``.npz`` file with every array a run needs to continue exactly.

Contents (NumPy's uncompressed zip of ``.npy`` files, read without pickle):
    param/<name>     every parameter, e.g. ``param/tower1.conv3.W`` (F, C, KH, KW)
    velocity/<name>  its momentum buffer (§5's v), same shape
    meta             a JSON document, stored as UTF-8 bytes (uint8): the format tag, the
                     configuration, the position (epoch, batch within it, step), the
                     optimiser's hyper-parameters, the schedule's state, the history
                     of epochs, and whatever else the trainer adds (``save(..., meta=...)``).
    mean_image       optional (R, R, C) float32 RGB: the mean image the weights expect
                     (a converted Caffe model's), used by evaluation instead of the data's.

Weights only (``save_weights``): a converted model (``python -m alexnet_np.interop.convert``) has
no momentum buffers; it loads for evaluation and figures, and ``restore`` with an optimiser
refuses it. Its meta names its classes (``classes``: the ids in output order, WordNet ids for
ImageNet, and ``class_names``), as a training run's do (the folder names of its data), which
evaluation matches to the data's by id (``alexnet_np.classmap``).

Writing is atomic: the file is written under a temporary name in the same folder, flushed
to disk (fsync), then renamed over the old one (``os.replace``), so that an interruption
leaves either the old checkpoint or the new one, never half of one.

Reading refuses, with one line that names the file (``CheckpointError``):
- a file that is missing, truncated or corrupt (zip CRC, a missing member, bad JSON);
- a file of another format;
- a checkpoint whose *architecture* differs from the configuration asked for
  (``Config.architecture_differences``), naming each differing field.

Random generators: none are stored. The data pipeline derives all its randomness from
(seed, epoch, batch) and the dropout masks from (seed, step, layer, tower) (``layers.Dropout``),
so a resumed run draws what an uninterrupted one would, on the CPU and on a GPU, at any
number of ranks. Nothing in a checkpoint belongs to one rank. (Checkpoints written before
this held dropout generator states under ``generators``: they load; the states are unused.)
"""
import json
import os
import zipfile

import numpy as np

from ..config import Config

FORMAT = "alexnet_np checkpoint 1"


class CheckpointError(Exception):
    """A checkpoint cannot be used; the message is one line naming the file and why."""


class Checkpoint:
    """What ``load`` returns: ``config``, ``params`` {name: array}, ``velocity``, ``meta`` (dict)."""

    def __init__(self, path, config, params, velocity, meta, mean_image=None):
        self.path, self.config = path, config
        self.params, self.velocity, self.meta = params, velocity, meta
        self.mean_image = mean_image   # (R, R, C) float32 RGB, or None: the data's mean is used

    @property
    def position(self):
        """(epoch, batch, step): the next batch to train is ``batch`` of epoch ``epoch`` (from 0)."""
        p = self.meta["position"]
        return p["epoch"], p["batch"], p["step"]


# --------------------------------------------------------------------------- writing

def save(path, model, optimizer, meta):
    """Write model, momentum and ``meta`` (a JSON-able dict, at least ``position``) atomically.

    Returns ``path``. ``meta`` gets the format tag, the configuration and the optimiser's
    hyper-parameters added.
    """
    opt = optimizer.state_dict()
    doc = dict(meta)
    doc.update(format=FORMAT, config=model.config.to_dict(),
               optimizer={k: opt[k] for k in ("lr", "momentum", "weight_decay", "decay_biases")})
    arrays = {f"param/{name}": value for name, value in model.state_dict().items()}
    arrays.update({f"velocity/{name}": value for name, value in opt["velocity"].items()})
    arrays["meta"] = np.frombuffer(json.dumps(doc).encode("utf-8"), dtype=np.uint8)   # (bytes,)
    write_atomic(path, arrays)
    return path


def save_weights(path, model, meta, mean_image=None):
    """Write the weights alone (no momentum), ``meta`` and an optional mean image, atomically.

    For models that were not trained here (``alexnet_np.interop.convert``). ``meta`` needs at least
    ``position``; the format tag and the configuration are added. Returns ``path``.
    """
    doc = dict(meta, format=FORMAT, config=model.config.to_dict())
    arrays = {f"param/{name}": value for name, value in model.state_dict().items()}
    if mean_image is not None:
        arrays["mean_image"] = np.asarray(mean_image, dtype=np.float32)             # (R, R, C)
    arrays["meta"] = np.frombuffer(json.dumps(doc).encode("utf-8"), dtype=np.uint8)   # (bytes,)
    write_atomic(path, arrays)
    return path


def write_atomic(path, arrays):
    """np.savez into ``path`` via a temporary file in the same folder, fsync, rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    try:  # make the rename itself durable
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass  # some file systems cannot fsync a folder; the data itself is on disk


# --------------------------------------------------------------------------- reading

def load(path, config=None):
    """Read and check a checkpoint. ``config``: refuse unless the architectures agree.

    Raises ``CheckpointError`` (one line) for a missing, corrupt or foreign file, or a
    checkpoint of another architecture. Reads every array, so a damaged file fails here.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path}: no such file")
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":   # NumPy would read any other file as a pickle (and say so)
            raise CheckpointError(f"checkpoint {path}: not an alexnet_np checkpoint (not an .npz archive)")
    try:
        with np.load(path, allow_pickle=False) as z:
            names = list(z.files)
            if "meta" not in names:
                raise CheckpointError(f"checkpoint {path}: not an alexnet_np checkpoint (no 'meta' record)")
            meta = json.loads(z["meta"].tobytes().decode("utf-8"))
            params = {n[len("param/"):]: z[n] for n in names if n.startswith("param/")}
            velocity = {n[len("velocity/"):]: z[n] for n in names if n.startswith("velocity/")}
            mean_image = z["mean_image"] if "mean_image" in names else None
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, ValueError, KeyError, EOFError, OSError, UnicodeDecodeError) as error:
        # np.load raises ValueError for a file that is not a zip or npy; zipfile raises
        # BadZipFile for a truncated archive or a failed CRC; json raises ValueError.
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if "pickle" in reason:   # an object array: never unpickled, and no advice to do so
            raise CheckpointError(f"checkpoint {path}: not an alexnet_np checkpoint (it holds Python objects)") from None
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({reason})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"checkpoint {path}: format {found!r}, expected {FORMAT!r}")
    try:
        saved = Config.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path}: its configuration cannot be read ({error})") from None
    if not params or (velocity and set(params) != set(velocity)):  # no velocity: weights only
        raise CheckpointError(f"checkpoint {path} is incomplete: parameters and momentum buffers do not match")
    if config is not None:
        check_architecture(path, config, saved)
    return Checkpoint(path, saved, params, velocity, meta, mean_image)


def require_training_state(checkpoint):
    """Refuse (one line) a weights-only checkpoint where training is to resume from it."""
    if not checkpoint.velocity:
        raise CheckpointError(f"checkpoint {checkpoint.path} holds weights only (no momentum buffers, "
                              "e.g. a converted model): it can be evaluated, not resumed")


def check_architecture(path, config, saved):
    """Refuse (one line) when ``saved``'s architecture differs from ``config``'s."""
    differences = config.architecture_differences(saved)
    if differences:
        listed = "; ".join(f"{field}: {_fmt(theirs)} in the checkpoint, {_fmt(ours)} here"
                           for field, ours, theirs in differences)
        raise CheckpointError(f"checkpoint {path} is of another configuration ({listed})")


def _fmt(value):
    return ",".join(str(v) for v in value) if isinstance(value, (tuple, list)) else str(value)


def restore(checkpoint, model, optimizer=None):
    """Copy the weights (and momentum buffers) into ``model`` / ``optimizer``."""
    check_architecture(checkpoint.path, model.config, checkpoint.config)
    if optimizer is not None:
        require_training_state(checkpoint)
    try:
        model.load_state_dict(checkpoint.params)
        if optimizer is not None:
            state = dict(checkpoint.meta["optimizer"], velocity=checkpoint.velocity)
            optimizer.load_state_dict(state)
    except (ValueError, KeyError) as error:
        raise CheckpointError(f"checkpoint {checkpoint.path} does not fit the model ({error})") from None
