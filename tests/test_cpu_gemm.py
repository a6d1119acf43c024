"""The CPU GEMM paths of pbmlx.kernels.cpu: linear, im2col convolution and Winograd 3 x 3
convolution, each against a float64 NumPy oracle.

Tolerances, relative to the largest output value: 2e-6 for linear, im2col and F(2 x 2)
(float32 sums of up to 9 x 640 terms; measured 3-6e-7), 5e-5 for F(4 x 4), whose transforms
have entries up to 8 and lose about 4 bits (measured 0.8-1.4e-5 on these shapes and on the
UNet's).
"""

from __future__ import annotations

import numpy as np
import pytest

import pbmlx  # noqa: F401  (before mlx.core: MLX gets its BLAS)

import mlx.core as mx  # isort: skip

from pbmlx.kernels import cpu

pytestmark = pytest.mark.skipif(
    not cpu.info().available or cpu._blas() is None, reason="CPU kernels or OpenBLAS not here"
)

TIGHT, WINOGRAD_F4 = 2e-6, 5e-5


def _arrays(seed: int, *shapes: tuple[int, ...]) -> list[np.ndarray]:
    r = np.random.default_rng(seed)
    return [r.standard_normal(s).astype(np.float32) for s in shapes]


def conv_oracle(x, w, b, stride: int, padding: int) -> np.ndarray:
    """NHWC convolution in float64: y[n, i, j, o] = sum_{ky, kx, c} x_pad[n, s i + ky,
    s j + kx, c] w[o, ky, kx, c] + b[o]."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    B, H, W, _ = x.shape
    cout, kh, kw, _ = w.shape
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    Ho, Wo = (H + 2 * padding - kh) // stride + 1, (W + 2 * padding - kw) // stride + 1
    y = np.zeros((B, Ho, Wo, cout))
    for ky in range(kh):
        for kx in range(kw):
            patch = xp[:, ky : ky + stride * Ho : stride, kx : kx + stride * Wo : stride, :]
            y += patch @ w[:, ky, kx, :].T
    return y if b is None else y + b.astype(np.float64)


def _rel_err(got: mx.array, want: np.ndarray) -> float:
    return float(np.abs(np.asarray(got, dtype=np.float64) - want).max() / np.abs(want).max())


@pytest.mark.parametrize(
    "M,K,N",
    [(3072, 64, 48), (40, 256, 1024), (300, 96, 96), (7, 512, 640)],
    ids=["tall", "wide", "square", "few-rows"],
)
def test_linear_matches_float64(M, K, N):
    x, w, b = _arrays(0, (M, K), (N, K), (N,))
    got = cpu.linear(mx.array(x), mx.array(w), mx.array(b))
    want = x.astype(np.float64) @ w.astype(np.float64).T + b
    assert _rel_err(got, want) <= TIGHT


def test_gemm_split_follows_the_longer_axis():
    # Each thread's part packs the operand along the other axis again: split the longer one.
    threads = cpu.info().threads
    rows = threads * cpu.ROWS_PER_THREAD
    assert cpu._split_rows(4 * rows, 320)
    assert not cpu._split_rows(4 * rows, 8 * rows)  # few rows, many columns: columns
    assert not cpu._split_rows(rows - 1, 8)  # too few rows to share out


@pytest.mark.parametrize(
    "shape,cout,expect_tile",
    [
        ((2, 9, 11, 16), 24, 2),  # odd sizes: partial tiles on the bottom and right edges
        ((1, 33, 35, 8), 16, 4),  # F(4 x 4) with partial tiles
        ((3, 8, 8, 64), 32, 2),
        ((2, 32, 32, 24), 40, 4),
        ((2, 4, 4, 32), 32, 0),  # under 8 x 8: im2col
        ((2, 16, 16, 12), 16, 0),  # channels not a whole vector: im2col
    ],
)
def test_conv3x3_matches_float64(shape, cout, expect_tile):
    x, w, b = _arrays(1, shape, (cout, 3, 3, shape[-1]), (cout,))
    assert cpu._winograd_tile(x.shape, w.shape, 1, 1) == expect_tile
    got = cpu.conv2d(mx.array(x), mx.array(w), mx.array(b), 1, 1)
    want = conv_oracle(x, w, b, 1, 1)
    assert got.shape == want.shape
    assert _rel_err(got, want) <= (WINOGRAD_F4 if expect_tile == 4 else TIGHT)


@pytest.mark.parametrize("tile", [2, 4])
def test_winograd_large_weight_path_matches(monkeypatch, tile):
    """Weights whose transform exceeds half the workspace take the output-channel-blocked
    path (and spans of tiles when the transformed input does not fit either)."""
    x, w, b = _arrays(2, (2, 16, 16, 64), (96, 3, 3, 64), (96,))
    want = conv_oracle(x, w, b, 1, 1)
    blas = cpu._blas()
    args = (mx.array(x), mx.array(w))
    full = cpu._conv3x3_winograd(blas, *args, (mx.array(b),), tile)
    for budget in (1 << 20, 1 << 16):  # U too big; then V too big as well (several spans)
        monkeypatch.setattr(cpu, "WINOGRAD_WORKSPACE_BYTES", budget)
        got = cpu._conv3x3_winograd(blas, *args, (mx.array(b),), tile)
        assert _rel_err(got, want) <= (WINOGRAD_F4 if tile == 4 else TIGHT)
        assert float(mx.abs(got - full).max()) <= 1e-5 * float(mx.abs(full).max())
    no_bias = cpu._conv3x3_winograd(blas, *args, (), tile)
    assert _rel_err(no_bias, want - b) <= (WINOGRAD_F4 if tile == 4 else TIGHT)


def test_winograd_switch(monkeypatch):
    shape, wshape = (1, 64, 64, 16), (16, 3, 3, 16)
    assert cpu._winograd_tile(shape, wshape, 1, 1) == 4
    monkeypatch.setenv("PBMLX_WINOGRAD", "2")
    assert cpu._winograd_tile(shape, wshape, 1, 1) == 2
    monkeypatch.setenv("PBMLX_WINOGRAD", "0")
    assert cpu._winograd_tile(shape, wshape, 1, 1) == 0
    x, w, b = _arrays(3, shape, wshape, (16,))
    got = cpu.conv2d(mx.array(x), mx.array(w), mx.array(b), 1, 1)  # im2col
    assert _rel_err(got, conv_oracle(x, w, b, 1, 1)) <= TIGHT


@pytest.mark.parametrize("stride,padding,k", [(2, 1, 3), (1, 0, 1), (1, 0, 3), (2, 0, 3)])
def test_other_convolutions_use_im2col(stride, padding, k):
    x, w, b = _arrays(4, (2, 17, 18, 16), (24, k, k, 16), (24,))
    assert cpu._winograd_tile(x.shape, w.shape, stride, padding) == 0
    got = cpu.conv2d(mx.array(x), mx.array(w), mx.array(b), stride, padding)
    assert _rel_err(got, conv_oracle(x, w, b, stride, padding)) <= TIGHT


def test_winograd_on_photo_features():
    """A real photo's features (skimage astronaut, 3 x 3 mean-filtered channel stack), not
    Gaussian noise: smooth inputs with a large mean are where Winograd's cancellation bites."""
    from skimage import data, transform

    img = transform.resize(data.astronaut(), (64, 64), anti_aliasing=True).astype(np.float32)
    feats = np.concatenate([img, img**2, 1 - img, img[..., ::-1] * 0.5, img * img[..., :1],
                            np.sqrt(img), img[..., 1:2].repeat(6, -1)], axis=-1)[None]  # fmt: skip
    feats = np.ascontiguousarray(feats[..., :24])
    (w,) = _arrays(5, (32, 3, 3, 24))
    want = conv_oracle(feats, w, None, 1, 1)
    got = cpu.conv2d(mx.array(feats), mx.array(w), None, 1, 1)
    assert cpu._winograd_tile(feats.shape, w.shape, 1, 1) == 4
    assert _rel_err(got, want) <= WINOGRAD_F4


def test_freed_memory_is_reused_on_glibc(monkeypatch):
    import sys

    if sys.platform != "linux":
        pytest.skip("glibc only")
    assert cpu._reuse_freed_memory()
    monkeypatch.setenv("PBMLX_MALLOC", "default")
    assert not cpu._reuse_freed_memory()
