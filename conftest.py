"""Shared pytest set-up for the unit tests and the notebooks run by nbval.

When pytest-xdist runs several workers, each worker (and each notebook kernel
it starts, which inherits the environment) gets an equal share of the cores,
so that parallel workers do not over-subscribe the CPU with BLAS/OpenMP threads.
"""

import os

_workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
if _workers:
    _threads = str(max(1, (os.cpu_count() or 1) // int(_workers)))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, _threads)
# Notebooks draw figures without a screen.
os.environ.setdefault("MPLBACKEND", "Agg")
