"""The benchmarks (not part of the installed package): ``bench`` (a training step and
inference against PyTorch), ``bench_dist`` (ranks) and ``bench_data`` (preparation and
loading). Run from the repository's root, e.g. ``python benchmarks/bench.py``."""
