"""The CuPy stand-in's rules, and every --device gpu path run on it (no GPU needed).

The stand-in (``tests/standin/cupy``) keeps what CuPy on real GPUs enforces or silently gets
wrong: a per-thread current device, work launched only on it, no NumPy arrays in device
operations, peer copies ordered by events, and which devices get a CUDA context. The GPU
paths run on it as whole processes (train on two GPUs and on one, resume, evaluate with ten
crops, two ranks, ``tests/test_gpu.py``) must break no rule, make contexts only on their own
GPUs, and give the CPU's results bitwise (the arithmetic underneath is NumPy's).
"""
import importlib.util
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from alexnet_np.nn import backend
from standin_gpus import STANDIN, load_standin, standin_env, standin_gpus
from test_train_helpers import TINY_ARGS, arrays_of, assert_bitwise_equal, make_tiny_cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPU_ARGS = [a for a in TINY_ARGS if a not in ("--device", "cpu")] + ["--no-figures", "--log-every", "1"]


# --------------------------------------------------------------------------- the rules themselves

@pytest.fixture
def cupy():
    module = load_standin()
    module._rules.GPUS = max(module._rules.GPUS, 2)
    module._rules.reset()
    return module


def on(cupy, index, make):
    with cupy.cuda.Device(index):
        return make()


def test_work_runs_on_the_current_device_only(cupy):
    a = on(cupy, 1, lambda: cupy.ones(3, dtype=cupy.float32))
    assert a.device.id == 1 and a[1:].device.id == 1 and a.T.device.id == 1   # views keep it
    for launch in (lambda: a + 1, lambda: a.sum(), lambda: a.fill(0), lambda: a.astype(np.float64),
                   lambda: cupy.concatenate([a, a]), lambda: a[cupy.arange(2)]):
        with cupy.cuda.Device(0), pytest.raises(ValueError, match="Peer access is unavailable"):
            launch()
    with cupy.cuda.Device(1):
        b = a * 2
        b[0] = a[2]
        assert b.device.id == 1 and float(b.sum()) == 5.0


def test_peer_access_where_available_is_a_performance_warning(cupy, monkeypatch):
    monkeypatch.setattr(cupy._rules, "PEER", True)
    a = on(cupy, 1, lambda: cupy.ones(3))
    with cupy.cuda.Device(0), pytest.warns(RuntimeWarning, match="Peer access has been activated"):
        a + 1


def test_host_arrays_are_refused_and_never_converted_implicitly(cupy):
    with cupy.cuda.Device(0):
        a = cupy.ones(3)
        with pytest.raises(TypeError):
            a + np.ones(3)
        with pytest.raises(TypeError):
            cupy.exp(np.ones(3))
        with pytest.raises(TypeError):
            cupy.ascontiguousarray(np.ones(3))
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(a)
    assert np.array_equal(a.get(), np.ones(3)) and np.array_equal(cupy.asnumpy(a), np.ones(3))


def test_a_peer_copy_must_be_ordered_by_an_event_of_the_source(cupy):
    a = on(cupy, 1, lambda: cupy.arange(4.0) + 1)
    with cupy.cuda.Device(0), pytest.raises(RuntimeError, match="no event between them"):
        a.copy()
    ready = on(cupy, 1, lambda: cupy.cuda.Event(disable_timing=True))   # GPU 1's event...
    on(cupy, 1, ready.record)                                            # ...on GPU 1's stream
    with cupy.cuda.Device(0):
        cupy.cuda.get_current_stream().wait_event(ready)   # waiting on another GPU's event: allowed
        b = a.copy()                                       # into the current device
    assert b.device.id == 0 and np.array_equal(b.get(), a.get())
    cupy._rules.reset()                                    # (the refusal above was recorded)
    moved = backend.move(a, backend.GPU(cupy, 0))          # our one crossing function does both sides
    assert moved.device.id == 0 and not cupy._rules.broken


def test_an_event_belongs_to_the_device_current_when_it_was_made(cupy):
    """CUDA: recording an event on another device's stream is cudaErrorInvalidResourceHandle
    (the mistake our first peer copy made: both events made on the destination)."""
    event = on(cupy, 0, lambda: cupy.cuda.Event(disable_timing=True))
    with cupy.cuda.Device(1), pytest.raises(RuntimeError, match="invalid resource handle"):
        event.record()
    stream = on(cupy, 1, lambda: cupy.cuda.Stream(non_blocking=True))
    with cupy.cuda.Device(0):
        with pytest.raises(RuntimeError, match="invalid resource handle"):
            event.record(stream)                       # a stream of device 1
        with pytest.raises(RuntimeError, match="does not match with the current device"):
            with stream:                               # entered off its device
                pass
        with pytest.raises(RuntimeError, match="does not match with the current device"):
            stream.use()


def test_elapsed_time_needs_two_timed_events_of_one_device(cupy):
    def timed(index, timing=True):
        event = on(cupy, index, lambda: cupy.cuda.Event(disable_timing=not timing))
        on(cupy, index, event.record)
        return event
    assert cupy.cuda.get_elapsed_time(timed(1), timed(1)) >= 0
    with pytest.raises(RuntimeError, match="devices 0 and 1"):
        cupy.cuda.get_elapsed_time(timed(0), timed(1))
    with pytest.raises(RuntimeError, match="disable_timing"):
        cupy.cuda.get_elapsed_time(timed(0), timed(0, timing=False))


def test_work_of_one_thread_is_ordered_before_anothers_only_by_an_event(cupy):
    """Each thread's work goes to its own stream (CuPy's per-thread default streams): an array
    a loader thread made is used by the main thread only after an event says it is there."""
    made = {}

    def loader(record):
        with cupy.cuda.Device(0):
            made["x"] = cupy.ones(3) * 2
            if record:
                made["ready"] = cupy.cuda.Event(disable_timing=True)
                made["ready"].record()
    for record in (False, True):
        thread = threading.Thread(target=loader, args=(record,))
        thread.start()
        thread.join()
        with cupy.cuda.Device(0):
            if not record:
                with pytest.raises(RuntimeError, match="no event between them"):
                    made["x"] + 1
            else:
                cupy.cuda.get_current_stream().wait_event(made["ready"])
                assert float((made["x"] + 1).sum()) == 9.0
    gpu = backend.GPU(cupy, 0)                             # our hand-off: record there, wait here
    event = []
    thread = threading.Thread(target=lambda: (made.update(y=gpu.xp.zeros(2) + 1) if gpu.__enter__() else None,
                                              event.append(gpu.record()), gpu.__exit__()))
    thread.start()
    thread.join()
    gpu.wait(event[0])
    with gpu:
        assert float(made["y"].sum()) == 2.0


def test_host_synchronisations_are_counted_where_our_code_makes_them(cupy):
    with cupy.cuda.Device(0):
        a = cupy.arange(6.0)
        cupy._rules.reset()
        a.get(), cupy.asnumpy(a), float(a[1]), int(a[2]), bool(a[3]), a[4].item()
        cupy.cuda.Device(0).synchronize()
        a[a > 2]                                          # a boolean mask: the host reads its count
    assert sum(cupy._rules.syncs.values()) == 8
    assert all(where.startswith("tests/test_standin.py") for _, where in cupy._rules.syncs)


def test_launches_are_counted_as_cupy_makes_them(cupy):
    def launches(work):
        cupy._rules.reset()
        with cupy.cuda.Device(0):
            work()
        return sum(cupy._rules.launches.values())
    with cupy.cuda.Device(0):
        a, index = cupy.ones((4, 6)), cupy.arange(4)
    assert launches(lambda: cupy.split(a, [2], axis=1)) == 0                  # views
    assert launches(lambda: (a.T, a.reshape(6, 4), a[1:, ::2])) == 0
    assert launches(lambda: cupy.concatenate([a, a, a])) == 3                 # a copy per array
    assert launches(lambda: a[index]) == 1                                    # take
    assert launches(lambda: a[index, index]) == 4                            # flat index, then take
    assert launches(lambda: a + 1) == 1


def test_numpy_functions_cupy_lacks_are_refused(cupy):
    with cupy.cuda.Device(0):
        a = cupy.ones(4)
        assert float(np.concatenate([a, a]).sum()) == 8.0   # CuPy has concatenate: dispatched to it
        with pytest.raises(TypeError, match="no implementation found for 'numpy.insert'"):
            np.insert(a, 0, 1.0)                            # CuPy has no insert


def test_nccl_checks_the_device_the_stream_and_the_buffers(cupy):
    nccl = cupy.cuda.nccl
    with cupy.cuda.Device(1):
        comm = nccl.NcclCommunicator(1, nccl.get_unique_id(), 0)
        stream = cupy.cuda.Stream(non_blocking=True)
        x = cupy.arange(4.0)
        done = cupy.cuda.Event(disable_timing=True)
        done.record()
        stream.wait_event(done)                                       # x is written: the stream may read it
        comm.allReduce(x.data.ptr, x.data.ptr, 4, nccl.NCCL_FLOAT64, nccl.NCCL_SUM, stream.ptr)
        with pytest.raises(RuntimeError, match="no event between them"):
            x + 1                                                     # the sum is NCCL's stream's
        cupy.cuda.get_current_stream().wait_event(stream.record())
        assert float((x + 1).sum()) == 10.0
    with cupy.cuda.Device(0):
        with pytest.raises(nccl.NcclError, match="not the current device"):
            comm.allReduce(x.data.ptr, x.data.ptr, 4, nccl.NCCL_FLOAT64, nccl.NCCL_SUM, stream.ptr)


def test_cupys_device_context_returns_to_gpu_0_and_ours_does_not(cupy):
    def in_a_new_thread(work):
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()

    in_a_new_thread(lambda: on(cupy, 1, lambda: cupy.ones(2)))
    assert cupy._rules.contexts == {0, 1}   # CuPy's __exit__ set device 0 again: a context there
    cupy._rules.reset()
    gpu = backend.GPU(cupy, 1)

    def ours():
        with gpu:
            x = gpu.receive(np.ones(2)) * 2
        gpu.to_host(x)
        gpu.synchronize()
    in_a_new_thread(ours)
    assert cupy._rules.contexts == {1}


def test_missing_cuda_libraries_are_found_before_anything_runs(cupy, monkeypatch):
    monkeypatch.setattr(cupy._rules, "MISSING", {"cublas"})
    with pytest.raises(backend.DeviceError, match=r"cannot run a matrix product \(cuBLAS\) on GPU 1"):
        backend.check_gpu_works(backend.GPU(cupy, 1))
    assert cupy._rules.contexts <= {1}
    monkeypatch.setattr(cupy._rules, "MISSING", set())
    backend.check_gpu_works(backend.GPU(cupy, 1))


def test_install_hints_never_suggest_a_second_cupy():
    assert backend.missing_libraries_hint("cupy-cuda12x", 12).startswith('pip install "cupy-cuda12x[ctk]"')
    assert backend.missing_libraries_hint("cupy-cuda13x", 13).startswith('pip install "cupy-cuda13x[ctk]"')
    assert "pip install" not in backend.missing_libraries_hint("cupy", 13)      # built from source
    assert "pip install" not in backend.missing_libraries_hint(None, 12)


def test_the_nccl_hint_follows_cupys_cuda_version(cupy, monkeypatch):
    from alexnet_np.parallel import distributed
    assert distributed.nccl_install_hint(cupy) == "pip install nvidia-nccl-cu13"
    monkeypatch.setattr(cupy._rules, "CUDA_VERSION", 12080)
    assert distributed.nccl_install_hint(cupy) == "pip install nvidia-nccl-cu12"


def test_dropout_masks_are_the_same_bits_on_numpy_and_a_gpu(cupy):
    from alexnet_np.nn.backend import Device
    from alexnet_np.nn.layers import Dropout
    masks = []
    for device in (Device(), standin_gpus(2)[1]):
        drop = Dropout(device, 0.5, (0, 0xD0, 7, 1))
        drop.position = (123, 64, 128)
        with device:
            masks.append(device.to_host(drop.draw_mask((64, 2048))))
    assert masks[0].dtype == masks[1].dtype == bool and np.array_equal(masks[0], masks[1])


def public_names(module, prefix):
    """{dotted name} of everything the stand-in module provides, submodules followed."""
    names = set()
    for name in dir(module):
        if name.startswith("_"):
            continue
        value = getattr(module, name)
        names.add(f"{prefix}.{name}")
        if type(value).__name__ == "module" and value.__name__.startswith("cupy_standin"):
            names |= public_names(value, f"{prefix}.{name}")
    return names


@pytest.mark.skipif(importlib.util.find_spec("cupy") is None or
                    os.path.dirname(importlib.util.find_spec("cupy").origin).startswith(STANDIN),
                    reason="real CuPy is not installed")
def test_the_standin_exposes_only_what_real_cupy_has(cupy):
    import importlib
    real = importlib.import_module("cupy")
    missing = []
    for dotted in sorted(public_names(cupy, "cupy")):
        obj = real
        for part in dotted.split(".")[1:]:
            obj = getattr(obj, part, missing)
            if obj is missing:
                missing.append(dotted)
                break
    assert not missing, f"the stand-in has names real CuPy lacks: {missing}"


# --------------------------------------------------------------------------- whole runs on the stand-in

@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_tiny_cache(str(tmp_path_factory.mktemp("standin")))


def run(script, args, env, cwd=ROOT, launcher=()):
    result = subprocess.run([*launcher, sys.executable, os.path.join(ROOT, script), *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return result


def records(log):
    return [json.loads(line) for line in open(log)]


def assert_no_rule_broken(log, processes):
    done = records(log)
    assert len(done) == processes
    for record in done:
        assert record["broken"] == {}, record


def test_training_on_two_gpus_resumed_and_evaluated_equals_the_cpu_bitwise(cache, tmp_path):
    log = tmp_path / "standin.jsonl"
    gpu, cpu = str(tmp_path / "gpu"), str(tmp_path / "cpu")
    # Four steps with dropout, a resume (on the GPU: the checkpoint's device), four more.
    first = run("train.py", ["--data", cache, "--out", gpu, *GPU_ARGS, "--device", "gpu", "--max-steps", "4"],
                standin_env(log))
    assert "device: gpu; tower 0: gpu:0, tower 1: gpu:1" in first.stdout
    again = run("train.py", ["--resume", gpu, "--max-steps", "8"], standin_env(log))
    assert "device: gpu;" in again.stdout
    # the CPU as a GPU computes: conv3-conv5 by im2col, not Winograd
    run("train.py", ["--data", cache, "--out", cpu, *GPU_ARGS, "--device", "cpu", "--no-winograd", "--max-steps", "8"],
        os.environ)
    assert_bitwise_equal(arrays_of(os.path.join(cpu, "last.npz")), arrays_of(os.path.join(gpu, "last.npz")))
    evaluations = []
    for device, env in (("gpu", standin_env(log)), ("cpu", os.environ)):
        out = str(tmp_path / f"eval-{device}.json")
        run("evaluate.py", ["--checkpoint", os.path.join(gpu, "last.npz"), "--ten-crop", "--device", device,
                            "--no-winograd", "--no-progress", "--json", out], env)
        evaluations.append({k: v for k, v in json.load(open(out)).items() if k in ("top1_wrong", "top5_wrong", "loss")})
    assert evaluations[0] == evaluations[1] and len(evaluations[0]) == 3
    assert_no_rule_broken(log, 3)
    assert all(r["contexts"] == [0, 1] and r["peer_copies"] > 0 for r in records(log))


def test_both_towers_on_one_gpu_equal_the_cpu_bitwise(cache, tmp_path):
    # and the GPU asked to do conv3-conv5 by Winograd, as the CPU does by default
    log = tmp_path / "standin.jsonl"
    gpu, cpu = str(tmp_path / "gpu"), str(tmp_path / "cpu")
    out = run("train.py", ["--data", cache, "--out", gpu, *GPU_ARGS, "--device", "gpu", "--winograd",
                           "--max-steps", "3"], standin_env(log, gpus=1))
    assert "tower 0: gpu:0, tower 1: gpu:0" in out.stdout
    run("train.py", ["--data", cache, "--out", cpu, *GPU_ARGS, "--device", "cpu", "--max-steps", "3"], os.environ)
    assert_bitwise_equal(arrays_of(os.path.join(cpu, "last.npz")), arrays_of(os.path.join(gpu, "last.npz")))
    assert_no_rule_broken(log, 1)
    assert records(log)[0]["contexts"] == [0] and records(log)[0]["peer_copies"] == 0


def test_two_ranks_make_contexts_on_their_own_gpus_only(cache, tmp_path):
    from test_distributed import MPI_MISSING, MPIEXEC
    if MPI_MISSING:
        pytest.skip(MPI_MISSING)
    log = tmp_path / "standin.jsonl"
    out = str(tmp_path / "ranks")
    run("train.py", ["--data", cache, "--out", out, *GPU_ARGS, "--device", "gpu", "--max-steps", "2"],
        standin_env(log, gpus=4), launcher=(MPIEXEC, "-n", "2"))
    assert_no_rule_broken(log, 2)
    assert sorted(r["contexts"] for r in records(log)) == [[0, 1], [2, 3]]   # rank 1: GPUs 2, 3 only


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 1e-5)])
def test_two_ranks_summing_by_nccl_equal_one_process(cache, tmp_path, dtype, rtol):
    """mpiexec -n 2 train.py --device gpu: the gradients summed by the stand-in's NCCL (which
    checks what NCCL checks and sums through MPI underneath), weights and momentum equal to
    one process's after a few steps (float64 to 1e-12, float32 to 1e-5 of each array's largest)."""
    from test_distributed import MPI_MISSING, MPIEXEC, assert_close_arrays
    if MPI_MISSING:
        pytest.skip(MPI_MISSING)
    log = tmp_path / "standin.jsonl"
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    args = ["--data", cache, *GPU_ARGS, "--device", "gpu", "--dtype", dtype, "--max-steps", "4"]
    run("train.py", [*args, "--out", one], standin_env(log))
    ranks = run("train.py", [*args, "--out", two], standin_env(log, gpus=4), launcher=(MPIEXEC, "-n", "2"))
    assert "NCCL cannot be used" not in ranks.stderr
    assert_no_rule_broken(log, 3)
    assert [r["nccl_calls"] > 0 for r in records(log)] == [False, True, True]   # both ranks summed by NCCL
    assert_close_arrays(arrays_of(os.path.join(one, "last.npz")), arrays_of(os.path.join(two, "last.npz")), rtol)


def test_a_training_step_reads_from_the_gpu_once(cache, tmp_path):
    """The host waits for the GPUs at most once a training step: the loss and the top-1/top-5
    misses are read together after the update is queued. Counted on the stand-in (every
    get, float(), bool(), synchronize...) as the difference between two runs that differ
    only in their number of steps."""
    syncs = []
    for steps in (1, 5):
        log = tmp_path / f"syncs-{steps}.jsonl"
        run("train.py", ["--data", cache, "--out", str(tmp_path / f"run{steps}"), *GPU_ARGS, "--device", "gpu",
                         "--max-steps", str(steps)], standin_env(log))
        syncs.append(records(log)[0]["syncs"])
    assert (syncs[1] - syncs[0]) / 4 <= 1, syncs


def test_the_gpu_tests_pass_on_the_standin(tmp_path):
    log = tmp_path / "standin.jsonl"
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             os.path.join("tests", "test_gpu.py")], cwd=ROOT, env=standin_env(log),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    assert " passed" in result.stdout and "no usable GPU" not in result.stdout
    assert_no_rule_broken(log, 1)


def test_gpu_without_its_cuda_libraries_is_one_line(cache, tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--data", cache,
                             "--out", str(tmp_path / "run"), *GPU_ARGS, "--device", "gpu"],
                            env=standin_env(missing="nvrtc"), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot run a compiled kernel (NVRTC) on GPU 0" in lines[0], lines
    assert not os.path.exists(tmp_path / "run")   # refused before anything was written


def test_the_gpu_check_script_logs_each_part(tmp_path):
    out = tmp_path / "check"
    result = subprocess.run([sys.executable, "-m", "alexnet_np.gpu_check", str(out), "--only",
                             "contact,env,gpu-tests"],
                            cwd=ROOT, env=standin_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = (out / "summary.txt").read_text().splitlines()
    assert [line.split()[:2] for line in summary] == [["contact", "ok"], ["env", "ok"], ["gpu-tests", "ok"]]
    contact = (out / "01-contact.log").read_text()
    assert "peer copies GPU 0 -> 1 and 1 -> 0" in contact and "one all-reduce on each GPU: ok" in contact
    assert "peer access from GPU 0" in (out / "02-env.log").read_text()
    assert " passed" in (out / "03-gpu-tests.log").read_text()
    # a contact that fails stops the check: nothing after it can work
    broken = subprocess.run([sys.executable, "-m", "alexnet_np.gpu_check", str(tmp_path / "broken"), "--only",
                             "contact,env"], cwd=ROOT, env=standin_env(missing="nvrtc"), capture_output=True,
                            text=True, timeout=300)
    lines = (tmp_path / "broken" / "summary.txt").read_text().splitlines()
    assert broken.returncode == 1 and lines[0].split()[:2] == ["contact", "FAILED"]
    assert lines[1].split()[:2] == ["env", "skipped"] and "contact failed" in lines[1]
    refused = subprocess.run([sys.executable, "-m", "alexnet_np.gpu_check", str(out), "--only", "nothing"],
                             cwd=ROOT, env=standin_env(), capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and refused.stderr.startswith("error: --only nothing")
    if not backend.gpu_available():   # this machine, without the stand-in: no GPU to check
        alone = subprocess.run([sys.executable, "-m", "alexnet_np.gpu_check", str(tmp_path / "none")],
                               cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert alone.returncode == 2 and alone.stderr.startswith("error: CuPy sees no GPU")
        assert not os.path.exists(tmp_path / "none")


def longest_run(devices):
    """The most launches queued on one device in a row."""
    best = run_length = 0
    for previous, device in zip([None] + devices, devices):
        run_length = run_length + 1 if device == previous else 1
        best = max(best, run_length)
    return best


def test_towers_on_two_gpus_are_queued_layer_by_layer():
    """On distinct GPUs the towers' layers are queued alternately, so that neither GPU waits
    for the host to queue a whole stage of the other tower. The longest run of launches on
    one GPU is then the head's own work (the loss and fc8 backward, on GPU 0 only: 40 here,
    launches counted as CuPy makes them), where a stage at a time gave 118."""
    from alexnet_np.config import Config
    from alexnet_np.nn.model import AlexNet
    config = Config(num_classes=5, input_size=67, conv_channels=(4, 8, 8, 8, 6), fc_units=(8, 6), seed=3)
    gpus = standin_gpus(2)
    net = AlexNet(config, gpus)
    assert net.lockstep and not AlexNet(config, standin_gpus(1) * 2).lockstep
    rng = np.random.default_rng(0)
    images, labels = rng.standard_normal((2, 3, 67, 67)), rng.integers(0, 5, 2)
    cupy = gpus[0].xp
    cupy._rules.sequence = []
    try:
        net.forward_loss(images, labels, train=True)
        net.backward()
        sequence = cupy._rules.sequence
    finally:
        cupy._rules.sequence = None
    assert set(sequence) == {0, 1} and longest_run(sequence) <= 45, longest_run(sequence)
    assert not cupy._rules.broken


def test_a_training_step_of_the_paper_net_is_a_few_hundred_array_operations():
    """Every array operation is a CuPy launch or copy, 5-20 µs of host time each: counted on
    the stand-in (benchmarks/bench.py --count-ops), with a GPU's whole-batch chunks, which make the count
    the same at any batch size that fits them (here 2 and 4 images of 227 x 227)."""
    from benchmarks import bench
    counts = [bench.count_ops(n)[1] for n in (2, 4)]
    assert counts[0] == counts[1]
    assert counts[0]["train"] <= 1000 and counts[0]["infer"] <= 300, counts[0]
