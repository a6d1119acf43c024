"""Leaf layers shared by every model pbmlx runs (UNet, VAE, CLIP text and vision towers).

They are ``mlx.nn.Linear`` / ``mlx.nn.Conv2d`` with the same parameters, names and
quantization behaviour, whose products go through the dispatchers of
:mod:`pbmlx.kernels.cpu`: on MLX's CPU backend, OpenBLAS's sgemm on independent row ranges of
this process's threads (MLX's own CPU GEMM runs OpenBLAS multi-threaded on each small product,
and its threads spin against each other on shared cores); elsewhere (Metal, CUDA, non-float32
weights, inside ``mx.compile``) the plain MLX op. Results agree to float32 rounding.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from pbmlx.kernels import cpu as cpu_kernels


class Linear(nn.Linear):
    """``mlx.nn.Linear`` whose product goes through :func:`pbmlx.kernels.cpu.linear`
    (OpenBLAS split over threads on MLX's CPU backend, ``mx.addmm`` elsewhere)."""

    def __call__(self, x: mx.array) -> mx.array:
        return cpu_kernels.linear(x, self.weight, self.get("bias"))


class Conv2d(nn.Conv2d):
    """``mlx.nn.Conv2d`` through :func:`pbmlx.kernels.cpu.conv2d` (blocked im2col + threaded
    OpenBLAS on MLX's CPU backend, ``mx.conv2d`` elsewhere)."""

    def __call__(self, x: mx.array) -> mx.array:
        (sh, sw), (ph, pw) = self.stride, self.padding
        if sh != sw or ph != pw or self.dilation not in (1, (1, 1)) or self.groups != 1:
            return super().__call__(x)
        return cpu_kernels.conv2d(x, self.weight, self.get("bias"), sh, ph)
