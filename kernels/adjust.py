"""Kernels of the adjust engine: the fused per-pixel op chain, and the separable Gaussian blur
with its unsharp mask; their MLX-op references; one dispatcher each.

The chain (``adjust_chain``): a run of per-pixel steps of a plan (every op but blur and
sharpen) becomes a *program*, one row of :data:`ROW` float32 values per step
(``[opcode, p0, p1, ...]``, written by :func:`pbmlx.adjust.ops.kernel_step`), which one kernel
applies to every pixel in one pass: the pixel is read once (8-bit codes divided by 255, or
float32), every step runs in registers, and the result is written once (float32, or 8-bit codes
``round(clip(x) * 255)``, round half to even). Contrast needs the mean luma of the image as it
stands before it: each contrast step costs one extra *statistics pass* that runs the steps
before it and sums the luma (the kernel's ``OUT = 2`` mode), then its ``m`` is written into
its row. The definition is the reference: the ops of :mod:`pbmlx.adjust.ops` applied in turn.

Implementations, chosen by :func:`pbmlx.kernels.dispatch.choose`:

- ``metal``: ``adjust_chain.metal``, one thread per pixel; ``cuda``: ``adjust_chain.cu``;
- ``cpu``: ``pb_adjust_chain`` in ``cpu_kernels.c`` (8 pixels per vector, rows shared out over
  the CPU threads; ``pow`` as ``exp(p log x)`` with vector polynomials);
- ``reference``: the MLX ops.

Blur (``gaussian_blur`` / ``unsharp``): on Metal and CUDA, ``blur.metal`` / ``blur.cu``, a
direct 1-D convolution per axis with reflected edges (two passes; the unsharp mask's
``clip(x + a (x - blur(x)))`` fused into the second); elsewhere, and for radii over
:data:`GPU_MAX_RADIUS`, the MLX reference (banded matrix products or an FFT).

Tolerances (the tests hold each path to them): float32 results within 2e-6 of the reference
(``pow`` and the luma sum are computed differently: float64 row sums here, two float32 means
there); 8-bit results equal except where the float32 value lies within that distance of a
rounding boundary (a code off by one at well under 0.1 % of the values).
"""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx
import numpy as np
from pbmlx.kernels import cpu, gpu
from pbmlx.kernels.dispatch import choose

ROW = 16  # floats per program row: the opcode, then up to 15 parameters
# Opcodes (the `case` labels of adjust_chain.metal / .cu and the AJ_* enum of cpu_kernels.c).
OP_GAINS = 0
OP_BRIGHTNESS = 1
OP_CONTRAST = 2
OP_GAMMA = 3
OP_HIGHLIGHTS = 4
OP_SHADOWS = 5
OP_FADE = 6
OP_MATRIX = 7
OP_SEPIA = 8
OP_VIBRANCE = 9
OP_INVERT = 10
OP_VIGNETTE = 11
OP_GRAIN = 12
OP_NONE = -1  # a row that does nothing (a program that only converts or quantizes)
OUT_VALUES, OUT_CODES, OUT_LUMA = 0, 1, 2  # the kernels' output modes
THREADGROUP = 256
GPU_MAX_RADIUS = 160  # wider Gaussians (sigma > 40 px) go to the reference's FFT


def dtype_of(img: mx.array | np.ndarray) -> mx.Dtype:
    """The MLX dtype of an MLX or numpy array (uint8 or float32 here)."""
    if isinstance(img, np.ndarray):
        return mx.uint8 if img.dtype == np.uint8 else mx.float32
    return img.dtype


def _steps(steps: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
    return [(str(n), float(a)) for n, a in steps]


# ---------------------------------------------------------------------------- references


def quantize_reference(x: mx.array) -> mx.array:
    """8-bit codes ``round(clip(x, 0, 1) * 255)`` (round half to even) as uint8."""
    return mx.round(mx.clip(x, 0.0, 1.0) * 255.0).astype(mx.uint8)


def to_float(img: mx.array) -> mx.array:
    """float32 values: 8-bit codes divided by 255, float arrays cast."""
    return img.astype(mx.float32) / 255.0 if img.dtype == mx.uint8 else img.astype(mx.float32)


def chain_reference(
    img: mx.array,
    steps: Sequence[tuple[str, float]],
    seed: int = 0,
    out_dtype: mx.Dtype = mx.float32,
) -> mx.array:
    """The definition: each step's op from :mod:`pbmlx.adjust.ops` in turn on ``to_float(img)``;
    uint8 ``out_dtype`` quantizes the result (:func:`quantize_reference`)."""
    from pbmlx.adjust.ops import OPS, SEEDED_OPS

    x = to_float(img)
    for name, amount in _steps(steps):
        x = OPS[name](x, amount, seed=seed) if name in SEEDED_OPS else OPS[name](x, amount)
    return quantize_reference(x) if out_dtype == mx.uint8 else x.astype(out_dtype)


def gaussian_blur_reference(img: mx.array, sigma: float) -> mx.array:
    """:func:`pbmlx.adjust.ops.gaussian_blur` (float32, not clipped)."""
    from pbmlx.adjust.ops import gaussian_blur

    return gaussian_blur(to_float(img), sigma)


def unsharp_reference(img: mx.array, amount: float, sigma: float) -> mx.array:
    """``clip(x + amount * (x - gaussian_blur(x, sigma)))``."""
    x = to_float(img)
    return mx.clip(x + amount * (x - gaussian_blur_reference(x, sigma)), 0.0, 1.0)


# ---------------------------------------------------------------------------- programs


def program(
    steps: Sequence[tuple[str, float]], height: int, width: int
) -> tuple[np.ndarray, list[int], bool]:
    """The kernel program of ``steps`` (all per-pixel ops): float32 ``(max(n, 1), ROW)``, the
    rows of the contrast steps (their mean is filled in at run time), and whether any step
    reads the grain noise."""
    from pbmlx.adjust.ops import kernel_step

    rows = np.zeros((max(len(steps), 1), ROW), dtype=np.float32)
    rows[:, 0] = OP_NONE
    contrast, grain = [], False
    for i, (name, amount) in enumerate(_steps(steps)):
        op, params = kernel_step(name, amount, height, width)
        rows[i, 0] = op
        rows[i, 1 : 1 + len(params)] = np.asarray(params, dtype=np.float32)
        contrast += [i] if op == OP_CONTRAST else []
        grain |= op == OP_GRAIN
    return rows, contrast, grain


def _noise(height: int, width: int, seed: int, needed: bool) -> mx.array:
    from pbmlx.adjust.ops import grain_noise

    if not needed:
        return mx.zeros((1,), dtype=mx.float32)
    return grain_noise(height, width, seed).reshape(-1)


def _mean_of_row_means(luma: mx.array) -> mx.array:
    # The reference's mean: of the row means (see ops.contrast).
    return mx.mean(mx.mean(luma, axis=1))


# ---------------------------------------------------------------------------- CPU


def _cpu_ready() -> bool:
    return cpu._ENABLED and cpu._lib() is not None


def _chain_cpu(
    img: mx.array | np.ndarray, steps: list[tuple[str, float]], seed: int, out_dtype: mx.Dtype
) -> mx.array | np.ndarray | None:
    if isinstance(img, np.ndarray):
        x = img  # read in place (uint8 or float32, C-contiguous: see ops._check_image)
    else:
        ready = cpu._ready(img if img.dtype in (mx.uint8, mx.float32) else img.astype(mx.float32))
        if ready is None:  # inside a function transformation
            return None
        x = np.asarray(ready[0])
    h, w, _ = x.shape
    rows, contrast, grain = program(steps, h, w)
    noise = _noise(h, w, seed, grain)
    mx.eval(noise)
    lib, src, is_u8 = cpu._LIB, x.ctypes.data, int(x.dtype == np.uint8)
    noise_p = cpu._ptr(noise)

    def run_pass(n_steps: int, kind: int, dst: int, sums: np.ndarray | None) -> None:
        prog = np.ascontiguousarray(rows[: max(n_steps, 1)])
        sums_p = sums.ctypes.data if sums is not None else None

        def run(r0: int, r1: int) -> None:
            lib.pb_adjust_chain(
                src, is_u8, dst, kind, w, prog.ctypes.data, n_steps, noise_p, r0, r1, sums_p
            )

        cpu._parallel(run, h, h * w * 3 * max(n_steps, 1))

    for k in contrast:  # the statistics pass of each contrast step, in order
        sums = np.zeros(h, dtype=np.float64)
        run_pass(k, OUT_LUMA, 0, sums)
        rows[k, 2] = np.float32(np.mean(sums / w))
    kind = OUT_CODES if out_dtype == mx.uint8 else OUT_VALUES
    if isinstance(img, np.ndarray):  # numpy in, numpy out: no MLX allocation to zero-fill
        out = np.empty((h, w, 3), dtype=np.uint8 if out_dtype == mx.uint8 else np.float32)
        view = out
    else:
        out, view = cpu._out((h, w, 3), out_dtype)
    run_pass(len(steps), kind, view.ctypes.data, None)
    return out


# ---------------------------------------------------------------------------- Metal / CUDA


def chain_gpu(
    backend: str,
    img: mx.array,
    prog: mx.array,
    noise: mx.array,
    out_mode: int,
    out_dtype: mx.Dtype,
    verbose: bool = False,
) -> mx.array:
    """One launch of ``adjust_chain`` on ``backend``: ``prog`` ``(n, ROW)`` float32, ``noise``
    ``(H * W,)`` or a 1-element placeholder; ``out_mode`` :data:`OUT_VALUES` / ``OUT_CODES``
    -> (H, W, 3), :data:`OUT_LUMA` -> (H, W)."""
    h, w, _ = img.shape
    dims = mx.array([h, w, prog.shape[0]], dtype=mx.int32)
    shape = (h, w) if out_mode == OUT_LUMA else (h, w, 3)
    return gpu.launch(
        backend,
        "adjust_chain",
        inputs=[img, prog, noise, dims],
        template=[
            ("TI", img.dtype),
            ("TO", out_dtype),
            ("IN_U8", img.dtype == mx.uint8),
            ("OUT", out_mode),
        ],
        grid=(h * w, 1, 1),
        threadgroup=(THREADGROUP, 1, 1),
        output_shapes=[shape],
        output_dtypes=[out_dtype],
        verbose=verbose,
    )[0]


def _chain_on_gpu(
    backend: str, img: mx.array, steps: list[tuple[str, float]], seed: int, out_dtype: mx.Dtype
) -> mx.array:
    h, w, _ = img.shape
    if img.dtype not in (mx.uint8, mx.float32, mx.float16):
        img = img.astype(mx.float32)
    rows, contrast, grain = program(steps, h, w)
    noise = _noise(h, w, seed, grain)
    prog = mx.array(rows)
    nop = mx.array(np.asarray([[OP_NONE] + [0.0] * (ROW - 1)], dtype=np.float32))
    for k in contrast:  # stays lazy: each mean is computed on the device
        luma = chain_gpu(backend, img, prog[:k] if k else nop, noise, OUT_LUMA, mx.float32)
        hit = (mx.arange(prog.shape[0]) == k)[:, None] & (mx.arange(ROW) == 2)[None, :]
        prog = mx.where(hit, _mean_of_row_means(luma), prog)
    mode = OUT_CODES if out_dtype == mx.uint8 else OUT_VALUES
    return chain_gpu(backend, img, prog, noise, mode, out_dtype)


# ---------------------------------------------------------------------------- dispatchers


def adjust_chain(
    img: mx.array | np.ndarray,
    steps: Sequence[tuple[str, float]],
    seed: int = 0,
    out_dtype: mx.Dtype = mx.float32,
) -> mx.array | np.ndarray:
    """Apply the per-pixel ``steps`` (``(op name, amount)``, amounts already in range) to
    ``img`` (H, W, 3), 8-bit codes (uint8) or float values in [0, 1], in one fused pass per
    pixel (plus one statistics pass per contrast step). Returns ``out_dtype``: float32 values,
    or uint8 codes ``round(clip(x) * 255)``. A numpy ``img`` (uint8 or float32, C-contiguous)
    gives a numpy result, an ``mx.array`` an ``mx.array``. Reference: :func:`chain_reference`."""
    steps = _steps(steps)
    impl = choose(("metal", "cuda", "cpu"))
    if impl == "cpu" and out_dtype in (mx.uint8, mx.float32) and _cpu_ready():
        out = _chain_cpu(img, steps, seed, out_dtype)
        if out is not None:
            return out
    as_numpy = isinstance(img, np.ndarray)
    x = mx.array(img) if as_numpy else img
    if impl in ("metal", "cuda"):
        out = _chain_on_gpu(impl, x, steps, seed, out_dtype)
    else:
        out = chain_reference(x, steps, seed, out_dtype)
    return np.asarray(out) if as_numpy else out


def blur_gpu(
    backend: str,
    src: mx.array,
    orig: mx.array,
    taps: mx.array,
    axis: int,
    mode: int,
    amount: float = 0.0,
    verbose: bool = False,
) -> mx.array:
    """One pass of ``blur`` on ``backend`` along ``axis`` (0: along W, 1: along H) of float32
    (H, W, 3) ``src``: ``mode`` 0 writes the convolution, 1 its clip to [0, 1], 2 the unsharp
    mask ``clip(orig + amount * (orig - convolution))``."""
    h, w, _ = src.shape
    radius = (taps.size - 1) // 2
    dims = mx.array([h, w, radius], dtype=mx.int32)
    params = mx.array([amount, 0.0], dtype=mx.float32)
    return gpu.launch(
        backend,
        "blur",
        inputs=[src, orig, taps, dims, params],
        template=[("AXIS", axis), ("MODE", mode)],
        grid=(h * w * 3, 1, 1),
        threadgroup=(THREADGROUP, 1, 1),
        output_shapes=[src.shape],
        output_dtypes=[mx.float32],
        verbose=verbose,
    )[0]


def _blur_on_gpu(backend: str, x: mx.array, sigma: float, mode: int, amount: float) -> mx.array:
    from pbmlx.adjust.ops import gaussian_kernel

    k, _ = gaussian_kernel(sigma)
    taps = mx.array(k.astype(np.float32))
    rows = blur_gpu(backend, x, x, taps, 0, 0)
    return blur_gpu(backend, rows, x, taps, 1, mode, amount)


def _blur_choice(sigma: float) -> str:
    from pbmlx.adjust.ops import gaussian_kernel

    impl = choose(("metal", "cuda"))
    if impl != "reference" and gaussian_kernel(sigma)[1] > GPU_MAX_RADIUS:
        return "reference"
    return impl


def gaussian_blur(img: mx.array, sigma: float, clip: bool = False) -> mx.array:
    """Separable Gaussian blur (:func:`pbmlx.adjust.ops.gaussian_blur`'s contract; ``clip``
    clips the result to [0, 1]); ``sigma < BLUR_MIN_SIGMA`` is the identity."""
    from pbmlx.adjust.ops import BLUR_MIN_SIGMA

    x = to_float(img)
    if sigma < BLUR_MIN_SIGMA:
        return mx.clip(x, 0.0, 1.0) if clip else x
    impl = _blur_choice(sigma)
    if impl != "reference":
        return _blur_on_gpu(impl, x, sigma, 1 if clip else 0, 0.0)
    y = gaussian_blur_reference(x, sigma)
    return mx.clip(y, 0.0, 1.0) if clip else y


def unsharp(img: mx.array, amount: float, sigma: float) -> mx.array:
    """Unsharp mask ``clip(x + amount * (x - gaussian_blur(x, sigma)))`` (reference:
    :func:`unsharp_reference`)."""
    from pbmlx.adjust.ops import BLUR_MIN_SIGMA

    x = to_float(img)
    if sigma < BLUR_MIN_SIGMA:
        return mx.clip(x, 0.0, 1.0)
    impl = _blur_choice(sigma)
    if impl != "reference":
        return _blur_on_gpu(impl, x, sigma, 2, amount)
    return unsharp_reference(x, amount, sigma)
