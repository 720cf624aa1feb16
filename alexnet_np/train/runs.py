"""Opening what a run needs: its data, its newest checkpoint, a trained model on its devices.

Shared by train.py, evaluate.py and figures.py. Under several ranks (``distributed``),
rank 0 prepares data that needs preparing while the others wait, then every rank opens
the same cache (the data and the run folder must be visible to every rank: a shared file
system, or the same paths on every node).
"""
import os

from ..nn import backend
from . import checkpoint, classmap
from ..nn.backend import Device, DeviceError, tower_devices
from ..data.loader import Cache, DataError, is_cache
from ..parallel.distributed import World, rank_gpus
from ..nn.model import AlexNet

LAST, BEST = "last.npz", "best.npz"
LOG, CONFIG_FILE = "log.jsonl", "config.json"
RUNS = "runs"              # where runs go by default, under the current folder
DATA_ROOT = "data_cache"   # where the demo data and prepared ImageFolders go by default


def check_data(data):
    """What ``open_data`` can tell of ``--data`` without reading or writing any image: that
    it is a prepared cache, or a source with a train split. Returns ``"demo"``, ``"cache"``
    or ``"source"``; raises ``DataError`` with one line. The commands call it before
    choosing a device, so that a mistyped folder is the only thing said."""
    if data is None:
        return "demo"
    if not os.path.exists(data):
        raise DataError(f"--data {data}: no such folder")
    if is_cache(data):
        return "cache"
    if not os.path.isdir(data):
        raise DataError(f"--data {data} is neither a folder of images (train/<class>/...) nor a prepared cache")
    from ..data.prepare import open_source
    if not open_source(data).has_split("train"):
        raise DataError(f"--data {data} has no train/ folder: expected an ImageFolder root "
                        "(train/<class>/<image>, val/<class>/<image>) or a prepared cache")
    return "source"


def open_data(data, image_size, cache_dir=None, workers=None, progress=True, print_fn=print, check=None):
    """The ``Cache`` for ``--data``, and a record of where it came from (saved in checkpoints).

    ``data``: None (the built-in demo set, generated and prepared under ``data_cache/``),
    a prepared cache folder, or an ImageFolder root (``train/<class>/...``, ``val/...``) or
    ILSVRC-2012's files as distributed (``ILSVRC2012_img_train.tar``, ..., see ``ilsvrc``),
    prepared once into ``cache_dir`` (default ``data_cache/<name>-<image_size>``, or
    ``data_cache/<name>-<image_size>-<digest>`` when that one holds another source of the
    same name) at ``image_size`` and reused afterwards. ``check``: ``prepare``'s, called with
    a source's classes and number of training files before anything is prepared. Raises
    ``DataError`` with one line.
    """
    kind = check_data(data)
    if kind == "demo":
        from ..data.demo import demo_cache
        path = demo_cache(DATA_ROOT, progress=progress)
        return Cache(path), {"demo": True, "cache": os.path.abspath(path), "source": None}
    if kind == "cache":
        return Cache(data), {"demo": False, "cache": os.path.abspath(data), "source": None}
    from ..data.prepare import prepare
    name = os.path.basename(os.path.normpath(os.path.abspath(data)))
    dst = cache_dir or os.path.join(DATA_ROOT, f"{name}-{image_size}")
    path = prepare(data, dst, image_size=image_size, workers=workers, progress=progress, print_fn=print_fn,
                   elsewhere=cache_dir is None,   # the default folder of another source: beside it
                   check=check)
    return Cache(path), {"demo": False, "cache": os.path.abspath(path), "source": os.path.abspath(data)}


def latest_checkpoint(runs=RUNS, name=BEST):
    """``runs/<run>/<name>`` of the run whose checkpoint is newest; DataError when none."""
    found = []
    if os.path.isdir(runs):
        for run in os.listdir(runs):
            for candidate in (name, LAST):
                path = os.path.join(runs, run, candidate)
                if os.path.isfile(path):
                    found.append((os.path.getmtime(os.path.join(runs, run, LAST))
                                  if os.path.isfile(os.path.join(runs, run, LAST)) else os.path.getmtime(path), path))
                    break
    if not found:
        raise DataError(f"no checkpoint under {runs}/: train first (python train.py) or give --checkpoint")
    return max(found)[1]


def describe_devices(kind, devices):
    """One line: which device, why (for --device auto), and each tower's."""
    name = devices[0].name.split(":")[0]
    why = ""
    if kind == "auto":
        why = " (default: a GPU is usable)" if name == "gpu" else " (default: no usable GPU found)"
    return f"device: {name}{why}; " + ", ".join(f"tower {g}: {d.name}" for g, d in enumerate(devices))


def rank_devices(kind, towers, gpus, world, winograd=None):
    """Each tower's device on this rank (``backend.tower_devices`` for one process).

    Several ranks on GPUs: node-local rank l takes GPUs 2l and 2l+1 when the node has
    enough, else GPU l for both towers (``distributed.rank_gpus``); ``gpus`` overrides.
    Several ranks on the CPU: the node's cores are shared out; a rank with a core per tower
    runs its towers side by side, otherwise both towers share one device and run in turn,
    with BLAS on the rank's share of the cores (at least one thread). ``winograd``: as
    ``backend.tower_devices``.
    """
    if world.size == 1:
        return tower_devices(kind, towers, gpus, winograd)
    if kind == "auto":
        kind = "gpu" if backend.gpu_available() else "cpu"
    if kind == "gpu":
        if gpus is None:
            _, count = backend._import_cupy()
            try:
                gpus = rank_gpus(world.local_rank, world.local_size, count, towers)
            except ValueError as error:
                raise DeviceError(str(error)) from None
        return tower_devices("gpu", towers, gpus, winograd)
    cores = max(1, (os.cpu_count() or 1) // world.local_size)
    if cores >= towers:
        return tower_devices("cpu", towers, winograd=winograd)
    from threadpoolctl import threadpool_limits
    world.blas_limit = threadpool_limits(limits=cores, user_api="blas")   # kept for the process's life
    shared = Device()
    if winograd is not None:
        shared.winograd = winograd
    return [shared] * towers


def data_of_checkpoint(ckpt):
    """The ``--data`` a checkpoint's run used: None for the demo, else its cache (or source)."""
    info = ckpt.meta.get("data", {})
    if info.get("demo"):
        return None
    if info.get("cache") and is_cache(info["cache"]):
        return info["cache"]
    if info.get("source"):
        return info["source"]
    raise DataError(f"checkpoint {ckpt.path} does not say which data it was trained on: give --data")


def open_data_once(world, data, image_size, cache_dir=None, workers=None, progress=True, check=None):
    """``open_data`` on rank 0 first (it may prepare the data), then on the other ranks,
    which find it prepared. An error on rank 0 is raised on every rank (as a ``DataError``)."""
    if world.size == 1:
        return open_data(data, image_size, cache_dir, workers, progress, check=check)
    opened, error = None, None
    if world.is_root:
        try:
            opened = open_data(data, image_size, cache_dir, workers, progress, check=check)
        except (DataError, ValueError) as failure:   # ValueError: ``check``'s ConfigError
            error = str(failure)
    error = world.bcast(error)
    if error is not None:
        raise DataError(error)
    if not world.is_root:
        opened = open_data(data, image_size, cache_dir, workers, progress=False)
    return opened


def run_cache(ckpt):
    """The prepared data a checkpoint's run was trained on, when it is at hand, else None.

    Its mean image is the one the weights expect (§2) and its class names are the outputs'.
    The demo's is made again where it is missing (it is generated, the same everywhere).
    """
    info = ckpt.meta.get("data", {})
    if info.get("cache") and is_cache(info["cache"]):
        return Cache(info["cache"])
    if info.get("demo"):
        return open_data(None, ckpt.config.image_size, progress=False)[0]
    return None


def open_model(path, device_kind, gpus, world=None, winograd=None):
    """A checkpoint's model on its devices, for inference (no gradient arrays):
    ``(path, checkpoint, model)``.

    ``path`` None means the best checkpoint of the latest run. Prints nothing.
    """
    world = world or World()
    path = world.bcast(path or (latest_checkpoint() if world.is_root else None))
    ckpt = checkpoint.load(path)
    devices = rank_devices(device_kind, ckpt.config.towers, gpus, world, winograd)
    model = AlexNet(ckpt.config, devices).for_inference()
    checkpoint.restore(ckpt, model)
    return path, ckpt, model


def open_trained_model(path, device_kind, gpus, data, cache_dir=None, workers=None, progress=True,
                       world=None, winograd=None):
    """A checkpoint's model on its devices, with the data it is to be run on.

    ``path`` None means the best checkpoint of the latest run; ``data`` None means the data
    that run used. Returns ``(path, checkpoint, model, cache)``; refuses a checkpoint whose
    classes do not fit the data's (``classmap.for_checkpoint``). Other data than the run's
    is seen with the mean image the weights expect: the checkpoint's own (a converted
    model's), else that of the run's data where it is at hand (else the data's own, said in
    one line). ``world``: the ranks (rank 0 prepares data first).
    """
    world = world or World()
    if data is not None:
        check_data(data)   # a mistyped folder before anything else is said
    path, ckpt, model = open_model(path, device_kind, gpus, world, winograd)
    print(describe_devices(device_kind, model.devices))
    cache, _ = open_data_once(world, data if data is not None else data_of_checkpoint(ckpt),
                              ckpt.config.image_size, cache_dir, workers, progress)
    trained_mean = None
    if data is not None and ckpt.mean_image is None and ckpt.meta.get("data"):
        trained = run_cache(ckpt)
        if trained is not None:
            trained_mean = trained.mean_image                                  # (R, R, C)
        else:
            print(f"mean image: that of {cache.path} (the data checkpoint {path} was trained on is not here)")
    cache = classmap.for_checkpoint(cache, ckpt, trained_mean)   # classes by WordNet id, the weights' mean image
    return path, ckpt, model, cache
