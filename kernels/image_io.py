"""Image pre/post-processing at the diffusion models' boundary: pixels <-> values in [-1, 1].

The three conversions, in float32 (``fl`` is float32 rounding), elementwise on any layout (the
editor's ``(H, W, C)`` or a batch ``(B, H, W, C)``):

- :func:`to_model_input`: uint8 ``u`` -> ``fl(fl(u / 255) * 2) - 1``; float ``x`` (taken as
  [0, 1], not clipped) -> ``fl(x * 2) - 1``. The uint8 form is numpy's decoding of 8-bit codes
  (:func:`pbmlx.pixels.codes_to_unit`, ``fl(u / 255)``) followed by the pipeline's ``* 2 - 1``.
- :func:`from_model_output`: ``y`` -> ``clip(fl(y / 2) + 1/2, 0, 1)`` float32 (the pipeline's
  ``decode``).
- :func:`to_uint8`: ``y`` -> ``rint(fl(clip(fl(y / 2) + 1/2, 0, 1) * 255))`` uint8, rounding half
  to even as ``np.rint`` (:func:`pbmlx.pixels.unit_to_codes` of ``from_model_output(y)``).

The kernels (``image_io.metal`` and its twin ``image_io.cu``, one template per conversion) give
these float32 results bit for bit (``x / 255`` correctly rounded without a division instruction,
whatever a GPU's fast math does to ``/``), the references on MLX's CPU backend too, so a forced
reference path changes no pixel there. On the CPU the references run: MLX's elementwise ops are
already single passes there. NaN inputs give unspecified values.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
from pbmlx.kernels import gpu
from pbmlx.kernels.dispatch import choose

KERNEL = "image_io"  # image_io.metal / image_io.cu
THREADS = 256  # threads per threadgroup; one element per thread
MAX_ELEMENTS = (1 << 31) - 1  # the element count is passed as int32
FLOAT_DTYPES = (mx.float32, mx.float16, mx.bfloat16)

# The kernels' MODE template values.
U8_TO_MODEL = 0
UNIT_TO_MODEL = 1
MODEL_TO_UNIT = 2
MODEL_TO_U8 = 3
_OUT_DTYPE = {
    U8_TO_MODEL: mx.float32,
    UNIT_TO_MODEL: mx.float32,
    MODEL_TO_UNIT: mx.float32,
    MODEL_TO_U8: mx.uint8,
}

ArrayLike = mx.array | np.ndarray


# ---------------------------------------------------------------------------- references


def to_model_input_reference(image: mx.array) -> mx.array:
    """uint8 ``u`` -> ``u / 255 * 2 - 1``; float ``x`` -> ``x * 2 - 1``; float32, MLX ops."""
    if image.dtype == mx.uint8:
        return image.astype(mx.float32) / 255 * 2 - 1
    return image.astype(mx.float32) * 2 - 1


def from_model_output_reference(y: mx.array) -> mx.array:
    """``clip(y / 2 + 1/2, 0, 1)`` in float32, MLX ops."""
    return mx.clip(y.astype(mx.float32) / 2 + 0.5, 0.0, 1.0)


def to_uint8_reference(y: mx.array) -> mx.array:
    """``rint(clip(y / 2 + 1/2, 0, 1) * 255)`` as uint8 (``mx.round`` rounds half to even)."""
    return mx.round(from_model_output_reference(y) * 255).astype(mx.uint8)


# ---------------------------------------------------------------------------- kernels


def launch_shape(size: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(grid, threadgroup): one thread per element, :data:`THREADS` per threadgroup."""
    return (size, 1, 1), (THREADS, 1, 1)


def kernel_template(mode: int) -> list[tuple[str, object]]:
    """The kernels' template arguments: output type ``U`` (float32, or uint8 for
    :data:`MODEL_TO_U8`) and ``MODE``."""
    return [("U", _OUT_DTYPE[mode]), ("MODE", mode)]


def kernel_inputs(x: mx.array) -> list[mx.array]:
    """The kernels' inputs in the order of their ``// inputs:`` line (x, size)."""
    return [x, mx.array([x.size], dtype=mx.int32)]


def image_io_kernel(backend: str, x: mx.array, mode: int, verbose: bool = False) -> mx.array:
    """Run ``image_io.metal`` (``backend="metal"``) or ``image_io.cu`` (``"cuda"``) in ``mode``
    (:data:`U8_TO_MODEL`, :data:`UNIT_TO_MODEL`, :data:`MODEL_TO_UNIT`, :data:`MODEL_TO_U8`);
    ``verbose`` prints the generated source (the snapshot tests trace it)."""
    dtype = _OUT_DTYPE[mode]
    grid, threadgroup = launch_shape(x.size)
    return gpu.launch(
        backend,
        KERNEL,
        inputs=kernel_inputs(x),
        template=kernel_template(mode),
        grid=grid,
        threadgroup=threadgroup,
        output_shapes=[x.shape],
        output_dtypes=[dtype],
        verbose=verbose,
    )[0]


def _backend(x: mx.array, mode: int) -> str | None:
    """The kernel's backend for ``x`` in ``mode``, or None for the reference."""
    impl = choose(("metal", "cuda"))
    if impl == "reference" or x.size == 0 or x.size > MAX_ELEMENTS:
        return None
    wanted = (mx.uint8,) if mode == U8_TO_MODEL else FLOAT_DTYPES
    return impl if x.dtype in wanted else None


# ---------------------------------------------------------------------------- dispatchers


def to_model_input(image: ArrayLike) -> mx.array:
    """uint8 pixels, or floats in [0, 1], -> float32 model input in [-1, 1] (module docstring)."""
    x = image if isinstance(image, mx.array) else mx.array(image)
    if x.dtype != mx.uint8 and not mx.issubdtype(x.dtype, mx.floating):
        raise ValueError(f"to_model_input takes uint8 or float pixels, not {x.dtype}")
    mode = U8_TO_MODEL if x.dtype == mx.uint8 else UNIT_TO_MODEL
    backend = _backend(x, mode)
    return to_model_input_reference(x) if backend is None else image_io_kernel(backend, x, mode)


def from_model_output(y: ArrayLike) -> mx.array:
    """Model output in [-1, 1] -> float32 image clamped to [0, 1] (module docstring)."""
    x = y if isinstance(y, mx.array) else mx.array(y)
    backend = _backend(x, MODEL_TO_UNIT)
    if backend is None:
        return from_model_output_reference(x)
    return image_io_kernel(backend, x, MODEL_TO_UNIT)


def to_uint8(y: ArrayLike) -> mx.array:
    """Model output in [-1, 1] -> uint8 pixels, clamped, rounded half to even (module
    docstring)."""
    x = y if isinstance(y, mx.array) else mx.array(y)
    backend = _backend(x, MODEL_TO_U8)
    return to_uint8_reference(x) if backend is None else image_io_kernel(backend, x, MODEL_TO_U8)
