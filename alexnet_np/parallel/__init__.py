"""Ranks: ``distributed`` (one process, or MPI with NCCL for GPU arrays) and ``buckets`` (the
flat gradient buffers summed across ranks during backward).

Imports the package's top and ``nn``."""
