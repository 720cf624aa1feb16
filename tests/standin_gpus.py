"""GPUs without a GPU, in this process: ``backend.GPU`` devices over the CuPy stand-in.

The stand-in (``tests/standin/cupy``) is loaded here under the name ``cupy_standin``, so
that in-process tests get its rules without installing it as ``cupy`` for the whole test
run (which would make ``--device auto`` pick it everywhere). Whole runs install it as
``cupy`` in their subprocesses: ``standin_env()``.
"""
import importlib.util
import os
import sys

from alexnet_np.nn.backend import GPU

HERE = os.path.dirname(os.path.abspath(__file__))
STANDIN = os.path.join(HERE, "standin")


def load_standin():
    """The stand-in module (loaded once)."""
    if "cupy_standin" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "cupy_standin", os.path.join(STANDIN, "cupy", "__init__.py"),
            submodule_search_locations=[os.path.join(STANDIN, "cupy")])
        module = importlib.util.module_from_spec(spec)
        sys.modules["cupy_standin"] = module
        spec.loader.exec_module(module)
    return sys.modules["cupy_standin"]


def standin_gpus(count=2):
    """``count`` GPU devices 0 .. count-1 on the stand-in, its records cleared."""
    cupy = load_standin()
    cupy._rules.GPUS = max(cupy._rules.GPUS, count)
    cupy._rules.reset()
    return [GPU(cupy, index) for index in range(count)]


def standin_env(log=None, gpus=2, **settings):
    """The environment of a subprocess in which ``import cupy`` gives the stand-in."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([STANDIN] + [p for p in [env.get("PYTHONPATH")] if p])
    env["CUPY_STANDIN_GPUS"] = str(gpus)
    # One BLAS thread, as the CPU path's towers have (side by side): with two, OpenBLAS sums
    # a float32 GEMM in another order, and "bitwise the CPU's" would not hold.
    env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = "1"
    env.pop("CUDA_VISIBLE_DEVICES", None)
    if log is not None:
        env["CUPY_STANDIN_LOG"] = str(log)
    env.update({f"CUPY_STANDIN_{k.upper()}": str(v) for k, v in settings.items()})
    return env
