"""GroupNorm over channels-last activations, optionally fused with SiLU (UNet and VAE).

``group_norm(x, weight, bias, groups, eps, act)`` computes, per sample and group of ``C / groups``
channels of ``x`` ``(B, ..., C)``::

    mean = mean(x_g),  var = mean((x_g - mean)^2)             (biased, in float32)
    y    = act((x - mean) / sqrt(var + eps) * weight + bias)

which is torch.nn.GroupNorm on NHWC followed by ``act``. Statistics are float32 whatever ``x``'s
dtype; the result has ``x``'s dtype (the promotion of ``x``, ``weight`` and ``bias``). SiLU is
fused into the kernels when ``act`` is :func:`pbmlx.kernels.cpu.silu`; any other ``act`` runs
after them.

Which implementation runs (:func:`pbmlx.kernels.dispatch.choose`):

- ``"metal"``: ``group_norm.metal``, ``"cuda"``: its twin ``group_norm.cu``: one threadgroup of
  :data:`THREADS` threads per (sample, group), two float32 tree reductions (mean, then variance
  of the deviations), then normalise, affine and SiLU in the same kernel;
- ``"cpu"``: the fused C kernel :func:`pbmlx.kernels.cpu.group_norm` (float32; its own reference
  otherwise);
- ``"reference"``: :func:`group_norm_reference`, MLX ops.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import mlx.core as mx
import mlx.nn as nn
from pbmlx.kernels import cpu, gpu
from pbmlx.kernels.dispatch import choose

KERNEL = "group_norm"  # group_norm.metal / group_norm.cu
THREADS = 256  # threads per (sample, group); a power of two (the tree reduction halves it)
KERNEL_DTYPES = (mx.float32, mx.float16, mx.bfloat16)
MAX_ELEMENTS = 1 << 31  # the kernels index within a sample in 32 bits (HW * C must fit)

Activation = Callable[[mx.array], mx.array]


def group_norm_reference(
    x: mx.array,
    weight: mx.array,
    bias: mx.array,
    groups: int,
    eps: float,
    act: Activation | None = None,
) -> mx.array:
    """The definition: :func:`pbmlx.kernels.cpu.group_norm_reference`, then ``act`` (SiLU as
    ``mlx.nn.silu``, so that forcing the reference runs no kernel at all)."""
    y = cpu.group_norm_reference(x, weight, bias, groups, eps)
    if act is None:
        return y
    return nn.silu(y) if act is cpu.silu else act(y)


def output_dtype(x: mx.array, weight: mx.array, bias: mx.array) -> mx.Dtype:
    """The reference's result dtype: the common dtype, float32 when the floats differ (any two of
    float32, float16 and bfloat16 promote to float32)."""
    return x.dtype if x.dtype == weight.dtype == bias.dtype else mx.float32


def launch_shape(batch: int, groups: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(grid, threadgroup) of the kernels: one threadgroup of :data:`THREADS` per (sample, group)."""
    return (THREADS * batch * groups, 1, 1), (THREADS, 1, 1)


def kernel_template(dtype: mx.Dtype, silu: bool) -> list[tuple[str, object]]:
    """The kernels' template arguments: output type ``T``, ``TG`` = :data:`THREADS`, ``SILU``."""
    return [("T", dtype), ("TG", THREADS), ("SILU", silu)]


@functools.lru_cache(maxsize=128)
def _params(hw: int, channels: int, groups: int, eps: float) -> tuple[mx.array, mx.array]:
    # Kept per shape: a model calls each norm with the same few shapes at every step.
    return mx.array([hw, channels, groups], dtype=mx.int32), mx.array([eps], dtype=mx.float32)


def kernel_inputs(
    x: mx.array, weight: mx.array, bias: mx.array, groups: int, eps: float
) -> list[mx.array]:
    """The kernels' inputs in the order of their ``// inputs:`` line (x, weight, bias, dims, eps)."""
    B, C = x.shape[0], x.shape[-1]
    dims, eps_arr = _params(x.size // (B * C), C, groups, float(eps))
    return [x, weight, bias, dims, eps_arr]


def group_norm_kernel(
    backend: str,
    x: mx.array,
    weight: mx.array,
    bias: mx.array,
    groups: int,
    eps: float,
    silu: bool = False,
    verbose: bool = False,
) -> mx.array:
    """Run ``group_norm.metal`` (``backend="metal"``) or ``group_norm.cu`` (``"cuda"``), SiLU fused
    when ``silu``; ``verbose`` prints the generated source (the snapshot tests trace it)."""
    dtype = output_dtype(x, weight, bias)
    grid, threadgroup = launch_shape(x.shape[0], groups)
    return gpu.launch(
        backend,
        KERNEL,
        inputs=kernel_inputs(x, weight, bias, groups, eps),
        template=kernel_template(dtype, silu),
        grid=grid,
        threadgroup=threadgroup,
        output_shapes=[x.shape],
        output_dtypes=[dtype],
        verbose=verbose,
    )[0]


def _kernel_fits(x: mx.array, weight: mx.array, bias: mx.array, groups: int) -> bool:
    if x.ndim < 2 or x.size == 0 or x.size // x.shape[0] >= MAX_ELEMENTS:
        return False
    C = x.shape[-1]
    if groups <= 0 or C % groups or weight.shape != (C,) or bias.shape != (C,):
        return False
    return all(a.dtype in KERNEL_DTYPES for a in (x, weight, bias))


def group_norm(
    x: mx.array,
    weight: mx.array,
    bias: mx.array,
    groups: int,
    eps: float,
    act: Activation | None = None,
) -> mx.array:
    """``act(group_norm(x))`` on channels-last ``x`` ``(B, ..., C)`` (see the module docstring);
    the backend's kernel where it has one, else :func:`group_norm_reference`."""
    impl = choose()
    if impl == "cpu":  # the C kernel decides float32 vs its own reference: nothing added here
        return cpu.group_norm(x, weight, bias, groups, eps, act)
    if impl == "reference" or not _kernel_fits(x, weight, bias, groups):
        return group_norm_reference(x, weight, bias, groups, eps, act)
    fused = act is cpu.silu
    y = group_norm_kernel(impl, x, weight, bias, groups, eps, silu=fused)
    return y if fused or act is None else act(y)
