"""The first run on a machine with a GPU: every GPU path once, everything logged.

    python -m alexnet_np.gpu_check OUT_DIR            # from the repository root
    python -m alexnet_np.gpu_check OUT_DIR --only env,gpu-tests

Runs, one after the other, each part with its own time limit, its output in
``OUT_DIR/NN-<part>.log`` and one line per part in ``OUT_DIR/summary.txt`` (status,
seconds, the log's last line):

    contact      first and fast: every GPU's kernel, GEMM, random draw and compiled kernel,
                 a peer copy both ways between GPUs 0 and 1 through the crossing function
                 (events on their own devices), one NCCL all-reduce where NCCL is installed
    env          nvidia-smi (and its topology), cupy.show_config(), peer access between
                 the GPUs, the versions of Python, NumPy, CuPy, PyTorch, mpi4py
    gpu-tests    python -m pytest tests/test_gpu.py (layers, model, dropout masks, buckets)
    train        one epoch of train.py --device gpu on the built-in demo data
    evaluate     evaluate.py --device gpu --ten-crop on that epoch's checkpoint
    ranks        mpiexec -n 2 train.py --device gpu, one epoch (where there are two GPUs)
    bench        python benchmarks/bench.py --device gpu --quick (ours against PyTorch with cuDNN)
    counts       host synchronisations and launches per training step (bench.py --count-ops,
                 counted on the CuPy stand-in of tests/standin: CUDA cannot count them cheaply)
    all-tests    python -m pytest: the whole suite, which must pass on a GPU machine too

The limits allow for the first compilation of every CuPy kernel (each part runs in a fresh
process; CuPy keeps compiled kernels on disk, so the first part to need one pays).
``--budget SECONDS`` fits the whole check in a lent machine's time: a part starts only with
at least 30 s of the budget left, and runs for at most what is left. When ``contact`` fails
the check stops there (nothing later can work; ``--keep-going`` runs the rest anyway). A
part that fails or runs out of time is logged and the next one runs; the exit status is 1
when any part failed. Rehearsed without a GPU on the CuPy stand-in:
``PYTHONPATH=tests/standin python -m alexnet_np.gpu_check OUT_DIR``.
"""
import argparse
import os
import shutil
import subprocess
import sys
import time

PY = sys.executable

CONTACT_SCRIPT = """
import cupy
from alexnet_np.nn.backend import GPU, check_gpu_works, crossing
count = cupy.cuda.runtime.getDeviceCount()
gpus = [GPU(cupy, i) for i in range(min(count, 2))]
for gpu in gpus:
    check_gpu_works(gpu)
    print(f"GPU {gpu.index}: a kernel, a GEMM, a random draw and a compiled kernel: ok", flush=True)
if len(gpus) == 2:
    xs = []
    for gpu in gpus:
        with gpu:
            xs.append(cupy.arange(1 << 22, dtype=cupy.float32) * (gpu.index + 1))
    to1, to0 = crossing([(xs[0], gpus[1]), (xs[1], gpus[0])])
    for gpu, y, scale in ((gpus[1], to1, 1), (gpus[0], to0, 2)):
        with gpu:
            assert y.device.id == gpu.index and float(y[-1]) == scale * ((1 << 22) - 1), "wrong copy"
    print("peer copies GPU 0 -> 1 and 1 -> 0, each ordered by events on its own device: ok", flush=True)
try:
    from cupy.cuda import nccl
    available = nccl.available
except ImportError as error:
    available, why = False, str(error)
if not available:
    print("NCCL: not installed here (the ranks part will sum over host copies)")
else:
    for gpu in gpus:
        with gpu:
            comm = nccl.NcclCommunicator(1, nccl.get_unique_id(), 0)
            stream = cupy.cuda.Stream(non_blocking=True)
            x = cupy.ones(1 << 20, dtype=cupy.float32)
            stream.wait_event(stream.null.record())
            comm.allReduce(x.data.ptr, x.data.ptr, x.size, nccl.NCCL_FLOAT32, nccl.NCCL_SUM, stream.ptr)
            cupy.cuda.get_current_stream().wait_event(stream.record())
            assert float(x.sum()) == float(1 << 20), "wrong NCCL sum"
    print(f"NCCL {nccl.get_version()}: one all-reduce on each GPU: ok")
print("contact: ok")
"""

ENV_SCRIPT = """
import platform, importlib, importlib.metadata as md
print("python", platform.python_version(), platform.platform())
for name in ("numpy", "cupy", "torch", "mpi4py"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as error:
        print(name, "not importable:", error)
import cupy
cupy.show_config()
count = cupy.cuda.runtime.getDeviceCount()
for i in range(count):
    props = cupy.cuda.runtime.getDeviceProperties(i)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    print(f"GPU {i}: {name}, {props['totalGlobalMem'] / 2**30:.1f} GiB, {props['multiProcessorCount']} SMs")
for i in range(count):
    print(f"peer access from GPU {i}:", [int(cupy.cuda.runtime.deviceCanAccessPeer(i, j)) if i != j else "-"
                                         for j in range(count)])
"""


def parts(out, gpus):
    """[(name, command or None, seconds allowed, why skipped)] in the order they run."""
    run = os.path.join(out, "demo-run")
    two = gpus >= 2
    standin = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.join("tests", "standin")] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    return [
        ("contact", [PY, "-c", CONTACT_SCRIPT], 120, None),
        ("env", [PY, "-c", ENV_SCRIPT], 60, None),
        ("gpu-tests", [PY, "-m", "pytest", "-v", "-p", "no:cacheprovider", "tests/test_gpu.py"], 300, None),
        ("train", [PY, "train.py", "--device", "gpu", "--epochs", "1", "--out", run, "--no-progress"], 300, None),
        ("evaluate", [PY, "evaluate.py", "--device", "gpu", "--ten-crop", "--no-progress",
                      "--checkpoint", os.path.join(run, "last.npz")], 180, None),
        ("ranks", [shutil.which("mpiexec") or "mpiexec", "-n", "2", PY, "train.py", "--device", "gpu",
                   "--epochs", "1", "--out", os.path.join(out, "ranks-run"), "--no-progress"], 300,
         None if two else "one GPU: two ranks need two"),
        ("bench", [PY, "benchmarks/bench.py", "--device", "gpu", "--quick"], 300, None),
        ("counts", ([PY, "benchmarks/bench.py", "--count-ops", "--batch-sizes", "2"], standin), 240, None),
        ("all-tests", [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider"], 420, None),
    ]


def shell_commands(out):
    """nvidia-smi's views, which need no Python (absent on a machine without the driver)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "nvidia-smi: not found\n"
    text = ""
    for args in ([smi], [smi, "topo", "-m"]):
        result = subprocess.run(args, capture_output=True, text=True, timeout=30)
        text += f"$ {' '.join(args)}\n{result.stdout}{result.stderr}\n"
    return text


def run_part(number, name, command, seconds, out):
    """Run one part with its limit; its output goes to OUT/NN-name.log. Returns a summary line.
    ``command``: the argument list, or (argument list, environment)."""
    command, env = command if isinstance(command, tuple) else (command, None)
    log = os.path.join(out, f"{number:02d}-{name}.log")
    started = time.perf_counter()
    with open(log, "w") as f:
        if name == "env":
            f.write(shell_commands(out))
        f.write(f"$ {' '.join(command)}\n")
        f.flush()
        try:
            result = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, timeout=seconds, env=env)
            status = "ok" if result.returncode == 0 else f"FAILED (exit {result.returncode})"
        except subprocess.TimeoutExpired:
            status = f"FAILED (over its {seconds} s)"
        except OSError as error:
            status = f"FAILED ({error})"
    took = time.perf_counter() - started
    with open(log) as f:
        lines = [line.strip() for line in f if line.strip()]
    last = lines[-1] if lines else ""
    return f"{name:10s} {status:28s} {took:6.1f} s   {last[:160]}", status == "ok"


def gpu_count():
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount()
    except Exception:
        return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m alexnet_np.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", metavar="OUT_DIR", help="folder for the logs (made if absent)")
    parser.add_argument("--only", default=None, metavar="PART,PART",
                        help="run only these parts (contact, env, gpu-tests, train, evaluate, ranks, bench, "
                             "counts, all-tests)")
    parser.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                        help="the whole check's time: a part starts only with 30 s of it left")
    parser.add_argument("--keep-going", action="store_true", help="run the other parts when contact fails")
    args = parser.parse_args(argv)
    count = gpu_count()
    if count == 0:
        print("error: CuPy sees no GPU here (or cannot be imported): this check is for a machine with "
              "one; to rehearse it without, put the CuPy stand-in first: PYTHONPATH=tests/standin",
              file=sys.stderr)
        return 2
    every = parts(args.out, count)
    names = [name for name, *_ in every]
    chosen = names if args.only is None else args.only.split(",")
    unknown = [n for n in chosen if n not in names]
    if unknown:
        print(f"error: --only {args.only}: no part {unknown[0]!r} (parts: {', '.join(names)})", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    summary, failed, started, stop = [], False, time.perf_counter(), None
    for number, (name, command, seconds, skip) in enumerate(every, 1):
        if name not in chosen:
            continue
        left = None if args.budget is None else args.budget - (time.perf_counter() - started)
        if stop is None and left is not None and left < 30:
            stop = f"not started: under 30 s of --budget {args.budget:g} left"
        if stop or skip:
            line, ok = f"{name:10s} {'skipped':28s}          {stop or skip}", True
        else:
            line, ok = run_part(number, name, command, seconds if left is None else min(seconds, int(left)), args.out)
            if name == "contact" and not ok and not args.keep_going:
                stop = "not started: contact failed (--keep-going runs it anyway)"
        failed |= not ok
        summary.append(line)
        print(line, flush=True)
        with open(os.path.join(args.out, "summary.txt"), "w") as f:   # kept current as parts finish
            f.write("\n".join(summary) + "\n")
    print(f"logs: {args.out}/ (summary.txt, one NN-<part>.log per part)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
