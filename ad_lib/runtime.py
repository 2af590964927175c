"""Where computations run, and how to make them repeatable.

Every chapter starts with the same two lines::

    ad_lib.seed_everything(0)           # Python, NumPy and PyTorch generators
    dev = ad_lib.device(verbose=True)   # CUDA, else Apple MPS, else CPU

The choice of device can be forced with the environment variable
``AD_LIB_DEVICE`` (for instance ``AD_LIB_DEVICE=cpu`` to compare timings, or
``AD_LIB_DEVICE=cuda:1`` to pick a second GPU).
"""

from __future__ import annotations

import contextlib
import os
import random
import weakref

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

DEVICE_ENV_VAR = "AD_LIB_DEVICE"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def device(verbose: bool = False, float64: bool = False) -> torch.device:
    """The device the book computes on: CUDA, then Apple MPS, then CPU.

    The environment variable ``AD_LIB_DEVICE`` overrides the choice; it takes
    any string ``torch.device`` accepts (``"cpu"``, ``"cuda"``, ``"cuda:1"``,
    ``"mps"``). A device that is asked for but absent is an error, not a
    silent fall-back to the CPU.

    Parameters
    ----------
    verbose:
        print one line saying which device was picked and why.
    float64:
        the caller computes in float64 (or complex128), which Apple's MPS
        backend does not support: the automatic choice then skips MPS for the
        CPU, and an explicit ``AD_LIB_DEVICE=mps`` is an error. CUDA and the
        CPU compute in float64. The chapters of Part I pass ``float64=True``.

    Returns
    -------
    torch.device

    Used by every chapter's set-up cell (see the preface, "Running the book").
    """
    requested = os.environ.get(DEVICE_ENV_VAR, "").strip()
    if requested:
        try:
            chosen = torch.device(requested)
        except (RuntimeError, ValueError) as err:
            raise ValueError(
                f"{DEVICE_ENV_VAR}={requested!r} is not a device name; "
                "expected something like 'cpu', 'cuda', 'cuda:0' or 'mps'"
            ) from err
        if chosen.type == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError(
                    f"{DEVICE_ENV_VAR}={requested!r} asks for CUDA, but this "
                    "PyTorch sees no CUDA GPU (torch.cuda.is_available() is False)"
                )
            if chosen.index is not None and chosen.index >= torch.cuda.device_count():
                raise RuntimeError(
                    f"{DEVICE_ENV_VAR}={requested!r} asks for GPU {chosen.index}, but "
                    f"only {torch.cuda.device_count()} CUDA device(s) are visible"
                )
        elif chosen.type == "mps" and not _mps_available():
            raise RuntimeError(
                f"{DEVICE_ENV_VAR}={requested!r} asks for Apple MPS, which is not available here"
            )
        elif chosen.type == "mps" and float64:
            raise RuntimeError(
                f"{DEVICE_ENV_VAR}={requested!r} asks for Apple MPS, but this code computes in float64, "
                "which MPS does not support; use AD_LIB_DEVICE=cpu"
            )
        elif chosen.type not in ("cpu", "cuda", "mps"):
            raise ValueError(
                f"{DEVICE_ENV_VAR}={requested!r} names a {chosen.type!r} device, which the book does not "
                "compute on; expected 'cpu', 'cuda', 'cuda:N' or 'mps'"
            )
        reason = f"set by {DEVICE_ENV_VAR}"
    elif torch.cuda.is_available():
        chosen = torch.device("cuda")
        reason = f"CUDA GPU found: {torch.cuda.get_device_name(0)}"
    elif _mps_available() and float64:
        chosen = torch.device("cpu")
        reason = "Apple MPS found, but it has no float64, which this code needs"
    elif _mps_available():
        chosen = torch.device("mps")
        reason = "Apple MPS found"
    else:
        chosen = torch.device("cpu")
        reason = "no GPU found"
    if verbose:
        print(f"ad_lib: computing on {chosen} ({reason}; set {DEVICE_ENV_VAR} to override)")
    return chosen


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's, NumPy's and PyTorch's (CPU and all GPUs) generators at once.

    Parameters
    ----------
    seed:
        a non-negative integer.

    Returns
    -------
    torch.Generator
        a fresh CPU generator seeded with ``seed``, for code that prefers to
        pass a generator explicitly rather than rely on the global one.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def time_call(fn, *, repeat: int = 5, warmup: int = 1) -> float:
    """The best wall-clock time of ``fn()`` over ``repeat`` runs, in seconds.

    ``warmup`` calls run first and are not timed (they pay for caches, lazy
    initialisation and CUDA kernel loading). When CUDA is available the GPU is
    synchronized before and after each run, so that asynchronous kernels are
    counted. The best time, not the mean, is the least disturbed by other work
    on the machine. Chapters use it to compare costs side by side, as ratios.
    """
    import time

    if not callable(fn):
        raise TypeError(f"fn must be a callable taking no arguments, got {type(fn).__name__}")
    for name, value, least in (("repeat", repeat, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


@contextlib.contextmanager
def cpu_threads(n: int):
    """Run the ``with`` block with ``n`` intra-op CPU threads, then restore PyTorch's setting.

    The chapters time their cost ratios inside ``cpu_threads(1)``. The ratios
    count work; on tensors as small as theirs extra threads add only noise,
    and on a machine whose cores are busy with other programs they add long
    waits (an operation split over two threads waits for the one that the
    system has put aside), which once made a 1 ms computation take 100 ms.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1 (a number of CPU threads), got {n!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class TensorMemory(TorchDispatchMode):
    """Count the bytes of the tensor storages allocated inside a ``with`` block: alive now, and at the peak.

    Every tensor that an operation returns inside the block is seen (through
    PyTorch's dispatcher, so operations inside a primitive's rules count as
    well), its storage's bytes are added when it first appears and removed
    when the last tensor using it is freed. ``current`` is the bytes alive now,
    ``peak`` the largest ``current`` reached. Tensors that existed before the
    block (weights, inputs) are not counted. Chapter 4, section "The price:
    memory", measures forward mode's peak with it.

    Example::

        with TensorMemory() as memory:
            y = torch.tanh(W @ x)
        memory.peak, memory.current
    """

    def __init__(self):
        super().__init__()
        self.current = 0
        self.peak = 0
        self._live = {}  # storage address -> [bytes, tensors alive that use it]

    def _release(self, address):
        entry = self._live[address]
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self._live[address]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {a.untyped_storage().data_ptr() for a in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)}
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                address = storage.data_ptr()
                if address not in self._live and address in inputs:
                    continue  # a view of (or a write into) a tensor from before the block: nothing allocated
                if address not in self._live:
                    self._live[address] = [storage.nbytes(), 0]
                    self.current += storage.nbytes()
                    self.peak = max(self.peak, self.current)
                self._live[address][1] += 1
                weakref.finalize(t, self._release, address)
        return out
