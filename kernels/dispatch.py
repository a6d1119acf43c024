"""Which implementation of a kernel runs: the backend's kernel or the MLX-op reference.

Every kernel in :mod:`pbmlx.kernels` comes as a reference written with MLX ops (its definition)
and one or more kernels: a ``.metal`` body for MLX's Metal backend, a ``.cu`` twin for MLX's
CUDA backend and, for some, a C kernel for the CPU backend (:mod:`pbmlx.kernels.cpu`). A
dispatcher asks :func:`choose` which one to run:

- ``"reference"`` when forced (``PBMLX_KERNELS=reference`` in the environment, or inside
  :func:`reference_only`), or when the backend has no kernel for the op;
- otherwise the backend of the default device: ``"metal"``, ``"cuda"`` or ``"cpu"``.

Forcing the reference path is how a kernel is compared with its definition on any machine.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import mlx.core as mx

ENV_KERNELS = "PBMLX_KERNELS"  # "reference": every dispatcher runs its MLX-op reference
BACKENDS = ("metal", "cuda", "cpu")

_STATE = threading.local()


def forced_reference() -> bool:
    """True inside :func:`reference_only` or with ``PBMLX_KERNELS=reference``."""
    if getattr(_STATE, "reference", False):
        return True
    return os.environ.get(ENV_KERNELS, "").strip().lower() == "reference"


@contextmanager
def reference_only(enabled: bool = True) -> Iterator[None]:
    """Run the block (in this thread) with every dispatcher on its MLX-op reference."""
    before = getattr(_STATE, "reference", False)
    _STATE.reference = enabled
    try:
        yield
    finally:
        _STATE.reference = before


def device_backend() -> str:
    """The backend of MLX's default device: ``"metal"``, ``"cuda"`` or ``"cpu"``."""
    if mx.default_device() == mx.cpu:
        return "cpu"
    if mx.metal.is_available():
        return "metal"
    if hasattr(mx, "cuda") and mx.cuda.is_available():
        return "cuda"
    return "cpu"


def choose(available: tuple[str, ...] = BACKENDS) -> str:
    """The implementation a dispatcher runs: a backend named in ``available`` or ``"reference"``."""
    if forced_reference():
        return "reference"
    backend = device_backend()
    return backend if backend in available else "reference"
