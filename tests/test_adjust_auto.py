"""The image-adaptive ops against their stated rules, recomputed here in float64 numpy (scipy for
the filters), and their behaviour on real photos.

Tolerances: auto exposure and white balance 2e-5 (float32 curves vs float64); denoise 1e-4 and
dehaze 2e-3 (float32 box filters and a division by the variance plus eps; dehaze divides by a
transmission down to 0.1). 8-bit codes in give the float result of ``code / 255`` within 1e-5.
"""

from __future__ import annotations

# isort: off
import pbmlx  # noqa: F401  (before mlx.core, so MLX gets its BLAS: see pbmlx/backend.py)
# isort: on

import math

import mlx.core as mx
import numpy as np
import pytest
from scipy import ndimage
from skimage import data

from pbmlx.adjust import auto
from pbmlx.adjust.ops import apply_ops

PHOTOS = ("astronaut", "coffee", "chelsea")
BT601 = np.array([0.299, 0.587, 0.114])
REC709 = np.array([0.2126, 0.7152, 0.0722])


def photo(name: str) -> np.ndarray:
    return getattr(data, name)()[..., :3].astype(np.float64) / 255


def decode(x):
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def encode(y):
    y = np.maximum(y, 0)
    return np.where(y <= 0.0031308, 12.92 * y, 1.055 * y ** (1 / 2.4) - 0.055)


def run(x: np.ndarray, op: str, s: float) -> np.ndarray:
    return apply_ops(x.astype(np.float32), [{"op": op, "amount": s}])


# ---- oracles from the module docstring ------------------------------------------------------


def ref_auto_exposure(x: np.ndarray, s: float) -> np.ndarray:
    lum = x @ BT601
    lo, hi = np.percentile(lum, [0.5, 99.5])
    if hi - lo < 1 / 255:
        lo, hi = 0.0, 1.0
    m = np.clip((lum - lo) / (hi - lo), 0, 1).mean()
    p = min(2.0, max(0.5, math.log(encode(0.18)) / math.log(m)))
    lo_s, hi_s, p_s = s * lo, 1 - s * (1 - hi), p**s
    return np.clip((x - lo_s) / (hi_s - lo_s), 0, 1) ** p_s


def ref_awb(x: np.ndarray, s: float) -> np.ndarray:
    flat = x.reshape(-1, 3)
    used = (flat.max(axis=1) <= 0.98) & (flat @ BT601 >= 0.02)
    sample = flat[used] if used.sum() >= 0.01 * len(flat) else flat
    e = np.mean(decode(sample) ** 6, axis=0) ** (1 / 6)
    g = 2.0 ** np.clip(s * np.log2(e.mean() / e), -2, 2)
    g = g / (REC709 @ g)
    return np.clip(encode(decode(x) * g), 0, 1)


def box(x: np.ndarray, r: int) -> np.ndarray:
    size = (2 * r + 1, 2 * r + 1) + (1,) * (x.ndim - 2)
    return ndimage.uniform_filter(x, size=size, mode="reflect")


def ref_denoise(x: np.ndarray, s: float) -> np.ndarray:
    lum = x @ BT601
    n = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
    lap = ndimage.convolve(lum, n)[1:-1, 1:-1]
    h, w = lum.shape
    sigma = math.sqrt(math.pi / 2) * np.abs(lap).sum() / (6 * (w - 2) * (h - 2))
    eps = (2.0 * s * sigma) ** 2
    mean = box(x, 1)
    var = box(x * x, 1) - mean**2
    a = var / (var + eps)
    b = (1 - a) * mean
    return np.clip(box(a, 1) * x + box(b, 1), 0, 1)


def ref_dehaze(x: np.ndarray, s: float) -> np.ndarray:
    """For images up to 1024 px (no working copy)."""
    p = max(1, round(7 / 600 * max(x.shape[:2])))
    size = 2 * p + 1
    dark = ndimage.minimum_filter(x.min(axis=-1), size=size, mode="nearest")
    k = max(1, math.ceil(0.001 * dark.size))
    haziest = dark >= np.sort(dark.ravel())[-k]
    a_light = np.maximum(x[haziest].mean(axis=0), 0.05)
    raw = 1 - 0.95 * s * ndimage.minimum_filter(
        (x / a_light).min(axis=-1), size=size, mode="nearest"
    )
    g = x @ BT601
    r = 4 * p
    mg, mt = box(g, r), box(raw, r)
    a = (box(g * raw, r) - mg * mt) / (box(g * g, r) - mg * mg + 1e-3)
    b = mt - a * mg
    t = np.clip(box(a, r) * g + box(b, r), 0.1, 1)
    return np.clip((x - a_light) / t[..., None] + a_light, 0, 1)


# ---- rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize(("op", "ref", "tol"), [
    ("auto_exposure", ref_auto_exposure, 2e-5),
    ("auto_white_balance", ref_awb, 2e-5),
    ("denoise", ref_denoise, 1e-4),
    ("dehaze", ref_dehaze, 2e-3),
])  # fmt: skip
@pytest.mark.parametrize("strength", [1.0, 0.4])
def test_rule_matches_float64_oracle(name, op, ref, tol, strength) -> None:
    # a darkened, cast, hazy version gives every op something to do
    x = photo(name) * np.array([0.7, 0.55, 0.45]) + 0.1
    x = np.round(x * 255) / 255  # representable as 8-bit codes too
    out = run(x, op, strength)
    assert np.abs(out - ref(x, strength)).max() < tol
    codes = apply_ops(np.rint(x * 255).astype(np.uint8), [{"op": op, "amount": strength}])
    assert np.abs(codes - out).max() < 1e-5


# ---- behaviour on real photos ---------------------------------------------------------------


@pytest.mark.parametrize("name", PHOTOS)
def test_darkened_photo_gets_brighter(name: str) -> None:
    x = photo(name) * 0.35
    out = run(x, "auto_exposure", 1.0)
    assert (out @ BT601).mean() > (x @ BT601).mean() + 0.15
    assert abs((out @ BT601).mean() - (photo(name) @ BT601).mean()) < 0.12


@pytest.mark.parametrize("name", PHOTOS)
def test_colour_cast_moves_channel_means_together(name: str) -> None:
    x = photo(name)
    cast = np.clip(encode(decode(x) * np.array([1.4, 1.0, 0.6])), 0, 1)
    out = run(cast, "auto_white_balance", 1.0)
    spread = lambda y: np.ptp(decode(y).reshape(-1, 3).mean(axis=0))  # noqa: E731
    assert spread(out) < 0.5 * spread(cast)


@pytest.mark.parametrize("name", PHOTOS)
def test_noise_drops_and_edges_stay(name: str) -> None:
    clean = photo(name)
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 0.05, clean.shape), 0, 1)
    out = run(noisy, "denoise", 1.0)
    grad = lambda y: np.hypot(ndimage.sobel(y @ BT601, 0), ndimage.sobel(y @ BT601, 1))  # noqa: E731
    g = grad(clean)
    flat, edges = g <= np.quantile(g, 0.3), g >= np.quantile(g, 0.98)
    # the noise (difference to the clean photo) in its smooth areas, and the edges' strength
    assert np.std((out - clean)[flat]) < 0.6 * np.std((noisy - clean)[flat])
    assert grad(out)[edges].mean() > 0.8 * g[edges].mean()


@pytest.mark.parametrize("name", PHOTOS)
def test_hazed_photo_gains_contrast(name: str) -> None:
    x = photo(name)
    hazy = x * 0.55 + 0.9 * 0.45
    out = run(hazy, "dehaze", 1.0)
    assert np.std(out @ BT601) > 1.3 * np.std(hazy @ BT601)


def test_large_image_uses_working_copy() -> None:
    big = np.ascontiguousarray(np.tile(photo("coffee"), (3, 2, 1)))  # 1200 x 1200
    out = run(big * 0.6 + 0.35, "dehaze", 0.5)
    assert out.shape == big.shape and np.isfinite(out).all()
    assert auto.stats_sample(np.zeros((4000, 3000, 3))).shape[0] == 1000


def test_mlx_input_gives_mlx_output() -> None:
    x = mx.array(photo("chelsea").astype(np.float32))
    out = apply_ops(
        x, [{"op": "auto_exposure", "amount": 1.0}, {"op": "saturation", "amount": 0.2}]
    )
    assert isinstance(out, mx.array) and out.shape == x.shape
