"""Data-parallel speed: the paper's configuration trained by 1 process and by R ranks, and a
scaling table computed from it.

    python benchmarks/bench_dist.py                 # R = 1 (2 threads) and R = 2 under mpiexec (1 thread each)
    python benchmarks/bench_dist.py --ranks 1,2,3 --steps 3

Each configuration runs in fresh processes: R = 1 as ``python benchmarks/bench_dist.py --worker``
(the towers side by side, one thread each), R > 1 as ``mpiexec -n R python benchmarks/bench_dist.py
--worker`` with one BLAS thread per rank (on this machine's 2 cores a rank then runs its
towers in turn). A training step is forward + loss, backward with the gradient sums
started bucket by bucket as backward finishes them (moved forward by MPI at backward's
stage boundaries only, or also by a thread every 0.5 ms: both are run), the wait for the
sums, and the SGD update, on a synthetic batch (the data pipeline is timed by
``benchmarks/bench_data.py``). Medians of ``--steps`` steps after ``--warmup``. Per step it
reports the time left waiting for the sums after backward (*exposed*), and, timed
separately after the steps, the same sums with nothing to hide them (*reduction*); hidden
= reduction - exposed.

The scaling table: for R = 1..64 ranks and a global batch of 128 (§5), a step costs the
compute of 128/R images plus a ring all-reduce of the gradients, 2 (R-1)/R x 60,965,224 x
4 bytes, at the bandwidths named in ``LINKS``; no overlap is assumed (the upper bound of
the cost). Compute per image: measured here for the CPU rows; for the GPU rows an
assumption, named in the table.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository: alexnet_np, uninstalled

import numpy as np

PARAMETERS = 60_965_224                      # the paper's net (tests/test_model.py)
FC_PARAMETERS = 2 * (9216 * 2048 + 2048) + 2 * (4096 * 2048 + 2048) + 4096 * 1000 + 1000   # fc6-fc8
GRADIENT_BYTES = 4 * PARAMETERS
GPU_IMAGES_PER_S = 4000.0                    # assumed, not measured: one replica (two towers) on modern GPUs
# (name, bytes/s each rank's link carries, most ranks it serves: one 8-GPU node holds 4
# two-tower replicas). Conservative: all the gradient bytes of a replica over one link (its
# two towers' GPUs each have a link of their own, which would halve the time).
LINKS = [("NVLink 4, in one 8-GPU node (450 GB/s per direction)", 450e9, 4),
         ("400 Gb/s between nodes", 400e9 / 8, 64),
         ("100 Gb/s between nodes", 100e9 / 8, 64)]


# --------------------------------------------------------------------------- one rank

def worker(args):
    from alexnet_np.parallel import distributed
    from alexnet_np.parallel.buckets import GradientBuckets
    from alexnet_np.config import Config
    from alexnet_np.nn.model import AlexNet
    from alexnet_np.train.runs import rank_devices

    world = distributed.world()
    config = Config(dtype="float32", batch_size=args.batch_size)
    rows = world.rows(config.batch_size)
    devices = rank_devices("cpu", config.towers, None, world)
    model = AlexNet(config, devices)
    buckets = GradientBuckets(model, world, progress_thread=not args.no_progress_thread) if world.size > 1 else None
    sgd = model.optimizer(config)   # §5's SGD in the net's form (packed with the fast forms)
    rng = np.random.default_rng(world.rank)
    n = rows.stop - rows.start
    images = (rng.standard_normal((n, 3, config.input_size, config.input_size)) * 50).astype(np.float32)
    labels = rng.integers(0, config.num_classes, n)
    times = {"step": [], "forward": [], "backward": [], "exposed": []}
    for i in range(args.warmup + args.steps):
        world.barrier()
        t0 = time.perf_counter()
        part = model.forward_loss(images, labels, train=True, step=i, rows=(rows.start, config.batch_size))
        world.sum_values([float(part)])
        t1 = time.perf_counter()
        if buckets is None:
            model.backward()
        else:
            model.backward(finished=buckets.finished)
        t2 = time.perf_counter()
        if buckets is not None:
            buckets.wait()
        t3 = time.perf_counter()
        sgd.step()
        t4 = time.perf_counter()
        if i >= args.warmup:
            for key, value in (("step", t4 - t0), ("forward", t1 - t0), ("backward", t2 - t1), ("exposed", t3 - t2)):
                times[key].append(value)
    reduction = []
    if buckets is not None:
        for _ in range(args.steps):
            world.barrier()
            t0 = time.perf_counter()
            buckets.sum_now()
            reduction.append(time.perf_counter() - t0)
    result = {key: statistics.median(v) for key, v in times.items()}
    result.update(reduction=statistics.median(reduction) if reduction else 0.0, ranks=world.size,
                  batch=config.batch_size, per_rank=n, buckets=buckets.describe() if buckets else "none",
                  side_by_side=len({id(d) for d in devices}) > 1,
                  progress_thread=bool(buckets and buckets.progress))
    everyone = world.allgather(result)
    if world.is_root:
        # The slowest rank sets the pace: the largest of each time. But the exposed wait: the
        # smallest, the last rank to finish backward's (the others' also hold the time they
        # wait for it to arrive, an imbalance, not communication).
        merged = dict(result, **{k: max(r[k] for r in everyone) for k in ("step", "forward", "backward",
                                                                          "reduction")})
        merged["exposed"] = min(r["exposed"] for r in everyone)
        print("RESULT " + json.dumps(merged), flush=True)


# --------------------------------------------------------------------------- the launcher

def launch(ranks, args, progress_thread=True):
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--batch-size", str(args.batch_size)]
    command += [] if progress_thread else ["--no-progress-thread"]
    env = dict(os.environ)
    if ranks > 1:
        command = ["mpiexec", "-n", str(ranks)] + command
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        sys.exit(f"error: R = {ranks} failed (status {done.returncode}): {done.stderr.strip()[-500:]}")
    return json.loads(lines[-1][len("RESULT "):])


def measured_table(results):
    lines = ["| R | threads per rank | MPI progress | images per rank | step (s) | images/s | vs R = 1 | "
             "forward (s) | backward (s) | reduction (s) | exposed after backward (s) | hidden |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base = results[0]["batch"] / results[0]["step"]
    for r in results:
        rate = r["batch"] / r["step"]
        threads = "2 (towers side by side)" if r["side_by_side"] else "1 (towers in turn)"
        hidden = (f"{max(0.0, r['reduction'] - r['exposed']) / r['reduction']:.0%}" if r["reduction"] else "-")
        progress = "-" if r["ranks"] == 1 else ("a thread, every 0.5 ms" if r["progress_thread"]
                                                else "at stage boundaries")
        lines.append(f"| {r['ranks']} | {threads} | {progress} | {r['per_rank']} | {r['step']:.2f} | {rate:.1f} | "
                     f"{rate / base:.2f}x | {r['forward']:.2f} | {r['backward']:.2f} | "
                     f"{r['reduction']:.3f} | {r['exposed']:.3f} | {hidden} |")
    return "\n".join(lines)


def ring_seconds(ranks, nbytes, bandwidth):
    """A ring all-reduce: each rank sends and receives 2 (R-1)/R of the bytes over its link."""
    return 2 * (ranks - 1) / ranks * nbytes / bandwidth


def scaling_table(cpu_seconds_per_image, batch=128):
    conv_bytes = 4 * (PARAMETERS - FC_PARAMETERS)
    gpu = f"GPU, assumed {GPU_IMAGES_PER_S:.0f} images/s per replica"
    rows = [("CPU, measured here", cpu_seconds_per_image, LINKS[2], GRADIENT_BYTES)]
    rows += [(gpu, 1 / GPU_IMAGES_PER_S, link, GRADIENT_BYTES) for link in LINKS]
    rows += [(gpu + "; only the conv layers' gradients (the bound of the one-weird-trick split, its fc "
              "activation exchange not counted)", 1 / GPU_IMAGES_PER_S, LINKS[1], conv_bytes)]
    header = "| compute | link | " + " | ".join(f"R = {r}" for r in RANKS) + " |"
    lines = [header, "|---|---|" + "---:|" * len(RANKS)]
    for name, per_image, (link, bandwidth, most), nbytes in rows:
        cells = []
        for r in RANKS:
            if r > most:
                cells.append("-")
                continue
            compute = per_image * batch / r
            comm = ring_seconds(r, nbytes, bandwidth)
            rate = batch / (compute + comm)
            mark = "**" if comm > compute else ""
            cells.append(f"{mark}{rate:,.0f}{mark}")
        lines.append(f"| {name} | {link} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"images/s for a global batch of {batch}; **bold**: the all-reduce takes longer than the compute "
                 f"(communication-bound). fc6-fc8 hold {FC_PARAMETERS:,} of the {PARAMETERS:,} parameters "
                 f"({FC_PARAMETERS / PARAMETERS:.1%}); the convolutional layers' gradients alone are "
                 f"{conv_bytes / 2 ** 20:.1f} MiB against {GRADIENT_BYTES / 2 ** 20:.1f} MiB.")
    return "\n".join(lines)


RANKS = (1, 2, 4, 8, 16, 32, 64)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", default="1,2", help="rank counts to run (default 1,2)")
    parser.add_argument("--steps", type=int, default=3, help="measured steps (median)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128, help="the global batch (default §5's 128)")
    parser.add_argument("--no-progress-thread", action="store_true",
                        help="(worker) move the sums forward at backward's stage boundaries only")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    ranks = [int(r) for r in args.ranks.split(",")]
    print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
    # R > 1 twice: the sums moved forward at backward's stage boundaries only, and by a thread.
    results = [launch(r, args) for r in ranks if r == 1]
    results += [launch(r, args, progress_thread=thread) for r in ranks if r > 1 for thread in (False, True)]
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(f"\nThe paper's configuration, float32, global batch {args.batch_size}, median of {args.steps} steps "
          f"({results[-1]['buckets']} at R > 1):\n")
    print(measured_table(results))
    print("\nScaling, computed (see the docstring):\n")
    print(scaling_table(results[0]["step"] / results[0]["batch"], args.batch_size))


if __name__ == "__main__":
    sys.exit(main())
