"""Data parallelism over ranks: the same training whatever R, sharded evaluation, one voice,
resume at another R, stopping together, faults that end the job.

The tests that start ranks run ``mpiexec -n R python train.py`` on the tiny data set and
skip, with the reason, where mpiexec or mpi4py is missing. Each rank runs single-threaded
BLAS (3 ranks share this machine's 2 cores). The rest run in this process.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time

import numpy as np
import pytest

from alexnet_np.parallel import distributed
from alexnet_np.parallel.buckets import GradientBuckets, backward_order, flat_gradients
from alexnet_np.config import Config
from alexnet_np.nn.model import AlexNet

from test_train_helpers import arrays_of, assert_bitwise_equal, make_tiny_cache, wait_for_logged_steps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--input-size", "67", "--conv-channels", "16,32,32,32,32", "--fc-units", "64,64",
        "--batch-size", "12", "--epochs", "2", "--lr-patience", "20", "--init-std", "0.1",
        "--device", "cpu", "--no-progress", "--no-figures", "--log-every", "1"]
STEPS = 7   # 60 images, batch 12: 5 steps per epoch, so 7 crosses a validation

# mpiexec: on PATH, or where pip put the mpich wheel's scripts (a virtual environment not activated)
MPIEXEC = shutil.which("mpiexec") or shutil.which("mpiexec", path=sysconfig.get_path("scripts"))
try:
    import mpi4py  # noqa: F401
    MPI_MISSING = None if MPIEXEC else "mpiexec is not on PATH (pip install -r requirements-mpi.txt)"
except ImportError:
    MPI_MISSING = "mpi4py is not installed (pip install -r requirements-mpi.txt)"
needs_mpi = pytest.mark.skipif(MPI_MISSING is not None, reason=MPI_MISSING or "")


def environment():
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    for name in distributed.MPI_LAUNCH_VARIABLES:
        env.pop(name, None)
    return env


def launch(ranks, *args, script="train.py", timeout=180):
    """``mpiexec -n ranks python script args`` (plain ``python`` for ranks == 0)."""
    command = [sys.executable, os.path.join(ROOT, script), *args]
    if ranks:
        command = [MPIEXEC, "-n", str(ranks)] + command
    return subprocess.run(command, cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=timeout)


def assert_close_arrays(a, b, rtol):
    """Every array of two checkpoints (weights and momentum) within ``rtol`` of its largest entry."""
    assert sorted(a) == sorted(b) and any(name.startswith("velocity/") for name in a)
    worst = max(float(np.abs(a[n].astype(np.float64) - b[n]).max() / np.abs(a[n]).max()) for n in a)
    assert worst <= rtol, f"largest relative difference {worst:.3g} > {rtol:g}"
    return worst


def records(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_tiny_cache(str(tmp_path_factory.mktemp("ranks")))


@pytest.fixture(scope="module")
def runs(cache, tmp_path_factory):
    """{(dtype, R): (run folder, completed process)}: STEPS steps at R = 1 (one process), 2, 3;
    and "mpiexec -n 1" (float64)."""
    if MPI_MISSING:
        pytest.skip(MPI_MISSING)
    root = tmp_path_factory.mktemp("runs")
    done = {}
    for dtype in ("float64", "float32"):
        for ranks in ((0, 1, 2, 3) if dtype == "float64" else (0, 2, 3)):   # 0: plain python; 1: mpiexec -n 1
            out = str(root / f"{dtype}-{ranks}")
            result = launch(ranks, "--data", cache, "--out", out, *ARGS, "--dtype", dtype, "--max-steps", str(STEPS))
            assert result.returncode == 0, result.stderr
            key = "mpiexec -n 1" if ranks == 1 else (dtype, max(ranks, 1))   # (dtype, 1): one plain process
            done[key] = (out, result)
    return done


# --------------------------------------------------------------------------- in this process

def test_plain_train_never_imports_mpi4py(cache, tmp_path):
    code = ("import sys, train; code = train.main(sys.argv[1:]); "
            "assert 'mpi4py' not in sys.modules, 'mpi4py was imported'; sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", code, "--data", cache, "--out", str(tmp_path / "run"), *ARGS,
                             "--max-steps", "1"], cwd=ROOT, env=environment(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_launchers_are_recognised_and_gpus_shared_out():
    assert not distributed.launched_under_mpi({"HOME": "/root"})
    assert distributed.launched_under_mpi({"PMI_SIZE": "2"})                # MPICH / Hydra
    assert distributed.launched_under_mpi({"OMPI_COMM_WORLD_SIZE": "2"})    # Open MPI
    assert distributed.rank_gpus(1, 4, 8) == (2, 3)          # 4 ranks, 8 GPUs: a GPU per tower
    assert distributed.rank_gpus(3, 4, 4) == (3, 3)          # 4 ranks, 4 GPUs: both towers on one
    with pytest.raises(ValueError, match="4 ranks on this node but only 2"):
        distributed.rank_gpus(0, 4, 2)
    world = distributed.World()
    assert world.rows(128) == slice(0, 128) and world.sum_values([1, 2.5]) == [1.0, 2.5]


def test_a_rank_gets_its_rows_of_the_batch_one_process_makes(cache):
    """Order, crops, flips and lighting are drawn for the whole batch; a rank takes its rows."""
    from alexnet_np.nn.backend import Device
    from alexnet_np.data.loader import Cache, TrainLoader
    from test_train_helpers import TINY
    data, config = Cache(cache), TINY.replace(batch_size=12)
    whole = TrainLoader(data, config, Device(), epoch=1, threads=0)
    for b in (0, 3):
        images, labels = whole.batch(b)                                  # (12, 3, S, S), (12,)
        for first in (0, 4, 8):
            part = TrainLoader(data, config, Device(), epoch=1, threads=0, rows=slice(first, first + 4))
            mine, my_labels = part.batch(b)                              # (4, 3, S, S), (4,)
            assert np.array_equal(mine, images[first:first + 4]) and np.array_equal(my_labels, labels[first:first + 4])


class RecordingWorld(distributed.World):
    """R ranks that computed the same gradients: a sum is R times the array; records starts."""

    def __init__(self, ranks):
        self.ranks, self.started, self.waited = ranks, [], False

    def start_sum(self, array):
        self.started.append(array)
        array *= self.ranks
        return None

    def wait(self, requests):
        self.waited = True


SMALL = Config(num_classes=5, input_size=67, conv_channels=(4, 8, 8, 8, 6), fc_units=(8, 6),
               init_std=0.1, dtype="float64", seed=3)


@pytest.mark.parametrize("across", [False, True], ids=["paper", "lrn-across-towers"])
def test_buckets_hold_the_gradients_and_start_as_backward_finishes_them(across):
    rng = np.random.default_rng(0)
    images = rng.standard_normal((4, 3, 67, 67))
    labels = rng.integers(0, 5, 4)
    config = SMALL.replace(lrn_across_towers=across)
    plain = AlexNet(config)
    plain.forward_loss(images, labels, train=True)
    seen = []
    plain.backward(finished=seen.extend)
    assert seen == backward_order(plain)                      # every layer once, in backward's order
    assert sorted(seen) == sorted(name for name, _ in plain.named_layers())

    net, world = AlexNet(config), RecordingWorld(ranks=3)
    buckets = GradientBuckets(net, world, bucket_bytes=2000)  # small: several buckets per device
    assert len(buckets.buckets) > 2 * len(set(map(id, net.devices)))
    flats = [b.flat for b in buckets.buckets]
    for _, _, grad, _ in net.parameters():                    # every gradient is a view into a bucket
        assert sum(np.shares_memory(grad, flat) for flat in flats) == 1
    net.forward_loss(images, labels, train=True)
    order = []
    net.backward(finished=lambda names: (buckets.finished(names), order.append(len(world.started))))
    assert order[-2] >= 1 and order == sorted(order)          # sums start before backward has ended
    assert len(world.started) == len(buckets.buckets)         # each bucket summed once
    assert buckets.buckets[0].names[0].startswith("fc8")
    buckets.wait()
    assert world.waited
    assert np.array_equal(flat_gradients(net), 3 * flat_gradients(plain))
    assert all(b.pending == b.layers and not b.started for b in buckets.buckets)


class HostCopyWorld(RecordingWorld):
    """As RecordingWorld, with each device's arrays summed over host copies (the fallback
    where a GPU has no NCCL), here on the CuPy stand-in's GPUs, which refuse any array left on the wrong one."""

    def reducer(self, device):
        return distributed.HostReducer(self, device)

    def wait(self, requests):
        for request in requests:
            if request is not None:
                request.wait()   # a host copy's: copy the sum back to its device


def test_buckets_on_two_devices_sum_over_host_copies():
    from standin_gpus import standin_gpus
    rng = np.random.default_rng(1)
    images, labels = rng.standard_normal((3, 3, 67, 67)), rng.integers(0, 5, 3)
    plain = AlexNet(SMALL, standin_gpus(2))
    plain.forward_loss(images, labels, train=True)
    plain.backward()
    net = AlexNet(SMALL, standin_gpus(2))
    world = HostCopyWorld(ranks=2)
    buckets = GradientBuckets(net, world)
    assert {b.device.index for b in buckets.buckets} == {0, 1}   # each tower's gradients on its device
    net.forward_loss(images, labels, train=True)
    net.backward(finished=buckets.finished)
    buckets.wait()
    for (name, _, grad, device), (_, _, expected, _) in zip(net.parameters(), plain.parameters()):
        assert device.holds(grad), name
        assert np.array_equal(device.to_host(grad), 2 * device.to_host(expected)), name


# --------------------------------------------------------------------------- under mpiexec

@needs_mpi
@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-10), ("float32", 1e-5)])
def test_the_same_training_whatever_the_number_of_ranks(runs, dtype, rtol):
    """Weights and momentum after STEPS steps (a validation between) at R = 1, 2, 3."""
    one = arrays_of(os.path.join(runs[dtype, 1][0], "last.npz"))
    for ranks in (2, 3):
        assert_close_arrays(one, arrays_of(os.path.join(runs[dtype, ranks][0], "last.npz")), rtol)
    epochs = [[r for r in records(runs[dtype, R][0]) if r["kind"] == "epoch"] for R in (1, 2, 3)]
    for key in ("val_top1", "val_top5", "val_images"):          # sharded validation: exactly one process's
        assert epochs[0][0][key] == epochs[1][0][key] == epochs[2][0][key]
    assert epochs[0][0]["val_loss"] == pytest.approx(epochs[2][0]["val_loss"], rel=rtol)


@needs_mpi
def test_one_rank_under_mpiexec_is_one_process(runs):
    assert "ranks:" not in runs["mpiexec -n 1"][1].stdout
    assert_bitwise_equal(arrays_of(os.path.join(runs["float64", 1][0], "last.npz")),
                         arrays_of(os.path.join(runs["mpiexec -n 1"][0], "last.npz")))


@needs_mpi
def test_one_voice(runs):
    out, result = runs["float64", 3]
    assert result.stdout.count("epoch 1/2:") == 1 and result.stdout.count("stopped at step 7") == 1
    assert "ranks: 3 ranks over MPI" in result.stdout
    steps = [r["step"] for r in records(out) if r["kind"] == "step"]
    assert steps == list(range(1, STEPS + 1))                   # one line per step, not one per rank
    assert sorted(os.listdir(out)) == ["best.npz", "config.json", "last.npz", "log.jsonl"]   # no temporaries
    assert result.stderr.strip() == ""


@needs_mpi
def test_resume_at_another_number_of_ranks(runs, cache, tmp_path):
    out = str(tmp_path / "moved")
    first = launch(2, "--data", cache, "--out", out, *ARGS, "--dtype", "float64", "--max-steps", "3")
    assert first.returncode == 0, first.stderr
    second = launch(3, "--resume", out, "--max-steps", str(STEPS))
    assert second.returncode == 0, second.stderr
    assert_close_arrays(arrays_of(os.path.join(runs["float64", 1][0], "last.npz")),
                        arrays_of(os.path.join(out, "last.npz")), 1e-10)


@needs_mpi
def test_resume_after_max_steps_goes_on_to_the_last_epoch(cache, tmp_path):
    """The hint "continue with --resume RUN" under mpiexec: to the run's last epoch, bitwise
    the run of the same ranks never stopped."""
    whole, parts = str(tmp_path / "whole"), str(tmp_path / "parts")
    assert launch(2, "--data", cache, "--out", whole, *ARGS, "--dtype", "float64").returncode == 0
    first = launch(2, "--data", cache, "--out", parts, *ARGS, "--dtype", "float64", "--max-steps", "3")
    assert first.returncode == 0 and f"continue with --resume {parts}" in first.stdout, first.stderr
    second = launch(2, "--resume", parts)
    assert second.returncode == 0, second.stderr
    assert "stopped at" not in second.stdout and "epoch 2/2:" in second.stdout
    assert [r["step"] for r in records(parts) if r["kind"] == "epoch"] == [5, 10]
    assert_bitwise_equal(arrays_of(os.path.join(whole, "last.npz")), arrays_of(os.path.join(parts, "last.npz")))


@needs_mpi
def test_batch_that_does_not_divide_among_ranks_is_refused(cache, tmp_path):
    result = launch(3, "--data", cache, "--out", str(tmp_path / "x"), *ARGS, "--batch-size", "10")
    assert result.returncode == 2
    assert "error: --batch-size 10 does not divide among 3 ranks" in result.stderr
    assert result.stderr.count("error:") == 1 and "Abort" not in result.stderr   # said once, stopped cleanly


@needs_mpi
@pytest.mark.parametrize("ten_crop", [False, True], ids=["centre-crop", "ten-crop"])
def test_sharded_evaluation_equals_one_process(runs, tmp_path, ten_crop):
    checkpoint = os.path.join(runs["float64", 1][0], "last.npz")
    results = []
    for ranks in (0, 3):
        out = str(tmp_path / f"eval-{ranks}.json")
        csv = str(tmp_path / f"eval-{ranks}.csv")
        args = ["--checkpoint", checkpoint, "--device", "cpu", "--batch-size", "6" if not ten_crop else "20",
                "--no-progress", "--json", out, "--predictions", csv] + (["--ten-crop"] if ten_crop else [])
        result = launch(ranks, *args, script="evaluate.py")
        assert result.returncode == 0, result.stderr
        with open(out) as f:
            record = json.load(f)
        results.append(({k: record[k] for k in ("images", "top1_wrong", "top5_wrong", "loss")}, open(csv).read()))
    assert results[0] == results[1]                             # counts, loss and every prediction
    assert results[0][0]["images"] == 20


@needs_mpi
@pytest.mark.parametrize("mode", ["raise", "kill"])
def test_a_failing_rank_ends_the_whole_job(cache, tmp_path, mode):
    started = time.time()
    result = launch(2, mode, "1", "2", "--data", cache, "--out", str(tmp_path / "run"), *ARGS, "--epochs", "1000",
                    script=os.path.join("tests", "mpi_fault.py"), timeout=60)
    seconds = time.time() - started
    assert result.returncode != 0 and seconds < 30
    if mode == "raise":
        lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert lines == ["error: rank 1 of 2 failed: RuntimeError: injected fault"]
    else:   # no handler sees SIGKILL: the launcher names the process; our first line maps it to its rank
        pids = result.stdout.split("pids by rank: ")[1].split(";")[0].split()
        said = result.stdout + result.stderr                   # Hydra writes its notice to stdout
        assert f"PID {pids[1]} " in said and "signal 9" in said


@needs_mpi
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_stops_every_rank_at_one_step_with_one_checkpoint(cache, tmp_path, signum):
    out = str(tmp_path / "run")
    command = [MPIEXEC, "-n", "2", sys.executable, os.path.join(ROOT, "train.py"), "--data", cache, "--out", out,
               *ARGS, "--epochs", "1000"]
    process = subprocess.Popen(command, cwd=ROOT, env=environment(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    wait_for_logged_steps(process, out)
    process.send_signal(signum)                               # to mpiexec, which passes it to every rank
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, (stdout, stderr)
    assert "Traceback" not in stderr and stdout.count("interrupted at step") == 1
    kinds = [r["kind"] for r in records(out)]
    assert kinds.count("interrupted") == 1 and kinds[-1] == "interrupted"
    step = records(out)[-1]["step"]
    from alexnet_np.train.checkpoint import load
    assert load(os.path.join(out, "last.npz")).position[2] == step
    assert [f for f in os.listdir(out) if f.endswith(".tmp")] == []


@pytest.mark.parametrize("form", ["plain", "fast"])
def test_buckets_are_ranges_of_the_packed_gradient_and_sgd_keeps_its_form(form):
    """The buckets are consecutive ranges of each device's packed gradient (nothing copied,
    the layers' gradients stay views of it), so the fast forms' SGD stays packed; a plain net
    is packed for them and keeps its plain update."""
    from alexnet_np.nn import fast
    from alexnet_np.nn.optim import SGD
    net = AlexNet(SMALL.replace(layer_form=form))
    buckets = GradientBuckets(net, RecordingWorld(ranks=2), bucket_bytes=2000)
    optimizer = net.optimizer(SMALL)
    assert all(packed.holds() for packed in net.flat)
    for packed in net.flat:
        mine = [b for b in buckets.buckets if b.device is packed.device]
        assert sum(b.flat.size for b in mine) == packed.grads.size
        assert all(np.shares_memory(b.flat, packed.grads) for b in mine)
    assert isinstance(optimizer, fast.PackedSGD) == (form == "fast") and isinstance(optimizer, SGD)
