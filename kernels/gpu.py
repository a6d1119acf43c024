"""Building the ``.metal`` and ``.cu`` kernels with MLX, each once per process.

``metal(name)`` returns the callable of ``mx.fast.metal_kernel`` for ``<name>.metal``,
``cuda(name)`` that of ``mx.fast.cuda_kernel`` for ``<name>.cu``. Building a Metal kernel object
needs no GPU (MLX compiles the source at the first call on a Metal device), so the same objects
are traced on Linux inside ``mx.export_function`` by the snapshot tests. A CUDA kernel object can
only be made where MLX has its CUDA backend.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable

import mlx.core as mx
from pbmlx.kernels.source import read

_LOCK = threading.Lock()


@functools.cache
def _metal(name: str) -> Callable:
    src = read(f"{name}.metal")
    return mx.fast.metal_kernel(
        name=src.name,
        input_names=list(src.input_names),
        output_names=list(src.output_names),
        source=src.body,
        header=src.header,
    )


@functools.cache
def _cuda(name: str) -> Callable:
    src = read(f"{name}.cu")
    return mx.fast.cuda_kernel(
        name=src.name,
        input_names=list(src.input_names),
        output_names=list(src.output_names),
        source=src.body,
        header=src.header,
    )


def metal(name: str) -> Callable:
    """The ``mx.fast.metal_kernel`` built from ``<name>.metal`` (built once, then cached)."""
    with _LOCK:
        return _metal(name)


def cuda(name: str) -> Callable:
    """The ``mx.fast.cuda_kernel`` built from ``<name>.cu`` (built once, then cached)."""
    with _LOCK:
        return _cuda(name)


def launch(backend: str, name: str, **kwargs) -> list[mx.array]:
    """Call kernel ``name`` on ``backend`` (``"metal"`` or ``"cuda"``) with MLX's keyword
    arguments (``inputs``, ``template``, ``grid``, ``threadgroup``, ``output_shapes``,
    ``output_dtypes``; ``verbose`` prints the generated source)."""
    kernel = metal(name) if backend == "metal" else cuda(name)
    return kernel(**kwargs)
