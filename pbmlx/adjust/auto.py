"""Image-adaptive corrections: ops whose effect is computed from the image they meet.

Each op measures the image (statistics in float64 numpy), then applies a fixed rule; amount
``s`` in [0, 1] is the strength, 0 the identity. Input: (H, W, 3) float values in [0, 1] or
8-bit codes (uint8, value = code / 255), numpy; output float32 in [0, 1]. Notation as in
:mod:`pbmlx.adjust.ops`: ``L`` the BT.601 luma of the encoded values, ``decode``/``encode`` the
sRGB curves. Statistics that only need a sample (percentiles, channel norms) are taken on the
strided sample ``x[::k, ::k]``, ``k = max(1, ceil(sqrt(H W / STATS_PIXELS)))``.

- ``auto_exposure s`` (levels + gamma): ``lo, hi`` = the 0.5th / 99.5th percentiles of ``L``
  (numpy's linear interpolation; if ``hi - lo < 1/255`` then ``lo, hi = 0, 1``);
  ``m = mean(clip((L - lo) / (hi - lo)))``; ``p = clip(ln(T) / ln(m), 1/2, 2)`` with
  ``T = EXPOSURE_TARGET`` (sRGB middle grey, 18 % linear; ``p = 1`` if ``m`` is 0 or 1).
  Strength scales the parameters: ``lo_s = s lo``, ``hi_s = 1 - s (1 - hi)``, ``p_s = p ** s``;
  ``out = clip((x - lo_s) / (hi_s - lo_s)) ** p_s``, the same curve on R, G and B.
- ``auto_white_balance s`` (shades of grey, Finlayson & Trezzi 2004, Minkowski norm
  ``WB_NORM = 6``, in linear light): pixels used: no channel above ``WB_CLIPPED`` and
  ``L >= WB_DARK`` (all pixels if fewer than 1 % qualify); ``e_c = mean(decode(x_c) ** 6)
  ** (1/6)``; ``log2 g_c = clip(s * log2(mean(e) / e_c), -WB_MAX_STOPS, WB_MAX_STOPS)``;
  gains normalised so a neutral grey keeps its luminance ``g /= 0.2126 g_R + 0.7152 g_G +
  0.0722 g_B``; ``out = clip(encode(decode(x) g))``.
- ``denoise s`` (self-guided filter, He, Sun & Tang 2010, per channel): ``sigma`` = the noise
  estimate of Immerkær (1996) on ``L``: ``sqrt(pi / 2) / (6 (W - 2)(H - 2)) * sum |L * N|``
  over interior pixels, ``N = [[1, -2, 1], [-2, 4, -2], [1, -2, 1]]``; ``eps = (DENOISE_K s
  sigma)**2``; with ``box`` the mean over a ``(2r + 1)**2`` window, ``r = DENOISE_RADIUS``,
  half-sample symmetric edges (scipy ``uniform_filter(mode="reflect")``): ``a = var / (var +
  eps)``, ``b = (1 - a) mean`` (``mean = box(x)``, ``var = box(x**2) - mean**2``), ``out =
  clip(box(a) x + box(b))``. Flat regions (variance ~ noise) become their local mean, edges
  (variance >> eps) are kept.
- ``dehaze s`` (dark-channel prior, He, Sun & Tang 2009, transmission refined by a guided
  filter): on a copy ``I`` at most ``DEHAZE_WORK_SIDE`` px long (PIL box filter when
  shrinking), patch radius ``p = max(1, round(DEHAZE_PATCH * long side))``; ``dark(J)`` = the
  minimum of ``min_c J_c`` over the ``(2p + 1)**2`` window (clipped at the borders);
  atmospheric light ``A_c`` = mean of ``I_c`` over the pixels whose ``dark(I)`` is at least its
  ``ceil(0.1 %)``-th largest value, floored at ``0.05``; raw transmission
  ``t~ = 1 - DEHAZE_OMEGA s dark(I / A)``; guided filter of ``t~`` with guide ``G = L(I)``,
  radius ``4p``, ``eps = DEHAZE_EPS`` (``a = cov(G, t~) / (var G + eps)``, ``b = mean t~ - a
  mean G``, boxes as above); ``box(a)`` and ``box(b)`` are brought to full size (PIL bilinear)
  and ``t = clip(box(a) L(x) + box(b), DEHAZE_T0, 1)``; ``out = clip((x - A) / t + A)``.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from pbmlx.pixels import as_unit

AUTO_OPS = frozenset({"auto_exposure", "auto_white_balance", "denoise", "dehaze"})
LUMA = (0.299, 0.587, 0.114)
LINEAR_LUMINANCE = (0.2126, 0.7152, 0.0722)
STATS_PIXELS = 1 << 20  # statistics read at most about this many pixels
EXPOSURE_LOW, EXPOSURE_HIGH = 0.5, 99.5  # percentiles of luma mapped to black and white
EXPOSURE_TARGET = 0.4613561  # mean levelled luma after the gamma: sRGB encode(0.18)
WB_NORM = 6.0  # Minkowski norm of shades of grey (1: grey world, inf: white patch)
WB_CLIPPED = 0.98  # pixels with a channel above this are clipped: their colour is unknown
WB_DARK = 0.02  # ... and pixels darker than this are mostly noise
WB_MAX_STOPS = 2.0  # no channel gain beyond +-2 stops (a scene of one colour is not a cast)
DENOISE_RADIUS = 1  # 3 x 3 windows: noise is a pixel-scale signal, and edges stay sharp
DENOISE_K = 2.0  # windows whose std is under ~2 noise sigmas are smoothed at full strength
DEHAZE_WORK_SIDE = 1024
DEHAZE_PATCH = 7 / 600  # the paper's 15 x 15 patch on a 600-px image
DEHAZE_OMEGA = 0.95  # keep a little haze for depth (the paper's omega)
DEHAZE_EPS = 1e-3
DEHAZE_T0 = 0.1
DEHAZE_TOP = 0.001  # fraction of the haziest pixels that give the atmospheric light
DEHAZE_MIN_A = 0.05


def luma(x: np.ndarray) -> np.ndarray:
    return x[..., 0] * LUMA[0] + x[..., 1] * LUMA[1] + x[..., 2] * LUMA[2]


def stats_sample(img: np.ndarray) -> np.ndarray:
    """The strided sample ``img[::k, ::k]`` the statistics read (module docstring)."""
    h, w = img.shape[:2]
    k = max(1, math.ceil(math.sqrt(h * w / STATS_PIXELS)))
    return img[::k, ::k]


def srgb_decode(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def srgb_encode(y: np.ndarray) -> np.ndarray:
    y = np.maximum(y, 0.0)
    return np.where(y <= 0.0031308, y * 12.92, 1.055 * y ** (1.0 / 2.4) - 0.055)


def _per_channel_curve(img: np.ndarray, curve) -> np.ndarray:
    """``curve`` (float64 values -> values) on every sample; 8-bit codes through a 256-entry
    table (exactly the curve at ``code / 255``), floats directly in float32."""
    if img.dtype == np.uint8:
        table = curve(np.arange(256, dtype=np.float64) / 255.0).astype(np.float32)
        return table[img]
    return curve(np.asarray(img, dtype=np.float32)).astype(np.float32)


# ---- auto exposure ----------------------------------------------------------------------------


def exposure_params(img: np.ndarray, strength: float) -> tuple[float, float, float]:
    """``(lo_s, hi_s, p_s)`` of :func:`auto_exposure` (module docstring)."""
    lum = luma(as_unit(stats_sample(img)).astype(np.float64))
    lo, hi = np.percentile(lum, [EXPOSURE_LOW, EXPOSURE_HIGH])
    if hi - lo < 1.0 / 255.0:
        lo, hi = 0.0, 1.0
    m = float(np.mean(np.clip((lum - lo) / (hi - lo), 0.0, 1.0)))
    p = 1.0 if not 0.0 < m < 1.0 else min(2.0, max(0.5, math.log(EXPOSURE_TARGET) / math.log(m)))
    s = float(strength)
    return s * float(lo), 1.0 - s * (1.0 - float(hi)), p**s


def auto_exposure(img: np.ndarray, strength: float) -> np.ndarray:
    """Levels from the luma percentiles, then a gamma to a middle-grey mean (module docstring)."""
    lo, hi, p = exposure_params(img, strength)
    return _per_channel_curve(img, lambda x: np.clip((x - lo) / (hi - lo), 0.0, 1.0) ** p)


# ---- auto white balance -----------------------------------------------------------------------


def white_balance_gains(img: np.ndarray, strength: float) -> np.ndarray:
    """The linear-light channel gains (float64, 3) of :func:`auto_white_balance`."""
    x = as_unit(stats_sample(img)).reshape(-1, 3).astype(np.float64)
    used = (x.max(axis=1) <= WB_CLIPPED) & (luma(x) >= WB_DARK)
    if used.sum() >= 0.01 * len(x):
        x = x[used]
    e = np.mean(srgb_decode(x) ** WB_NORM, axis=0) ** (1.0 / WB_NORM)
    if not np.all(e > 0):
        return np.ones(3)
    log_gains = np.clip(strength * np.log2(e.mean() / e), -WB_MAX_STOPS, WB_MAX_STOPS)
    gains = 2.0**log_gains
    return gains / np.dot(LINEAR_LUMINANCE, gains)


def auto_white_balance(img: np.ndarray, strength: float) -> np.ndarray:
    """Shades-of-grey white balance in linear light (module docstring)."""
    g = white_balance_gains(img, strength)
    if img.dtype == np.uint8:
        return np.stack(
            [_per_channel_curve(img[..., c], lambda v, c=c: _wb_curve(v, g[c])) for c in range(3)],
            axis=-1,
        )
    x = np.asarray(img, dtype=np.float32)
    return np.clip(srgb_encode(srgb_decode(x) * g.astype(np.float32)), 0.0, 1.0).astype(np.float32)


def _wb_curve(v: np.ndarray, gain: float) -> np.ndarray:
    return np.clip(srgb_encode(srgb_decode(v) * gain), 0.0, 1.0)


# ---- box filters and the guided filter --------------------------------------------------------


def box_mean(x: np.ndarray, r: int) -> np.ndarray:
    """Mean over the ``(2r + 1) x (2r + 1)`` window of each pixel of an (H, W) or (H, W, C)
    array, with half-sample symmetric edges (scipy ``uniform_filter(mode="reflect")``):
    cumulative sums in float64 along each axis, float32 out."""
    out = np.asarray(x, dtype=np.float32)
    for axis in (0, 1):
        n = out.shape[axis]
        padded = _pad_reflect(out, axis, r)
        c = np.cumsum(padded, axis=axis, dtype=np.float64)
        hi = np.take(c, np.arange(2 * r + 1, 2 * r + 1 + n), axis=axis)
        lo = np.take(c, np.arange(0, n), axis=axis)
        out = ((hi - lo) / (2 * r + 1)).astype(np.float32)
    return out


def _pad_reflect(x: np.ndarray, axis: int, r: int) -> np.ndarray:
    """Pad (r + 1 before, r after) along ``axis`` by half-sample symmetric reflection, repeated
    when the window is longer than the axis (the first value only offsets the cumulative sum:
    window sums are differences ``c[i + 2r + 1] - c[i]``)."""
    n = x.shape[axis]
    i = np.mod(np.arange(-r - 1, n + r), 2 * n)
    i = np.where(i >= n, 2 * n - 1 - i, i)
    return np.take(x, i, axis=axis)


def guided_coefficients(
    guide: np.ndarray, src: np.ndarray, r: int, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(box(a), box(b))`` of the guided filter of ``src`` with ``guide`` (same shape):
    ``a = cov(I, p) / (var I + eps)``, ``b = mean p - a mean I``; output ``box(a) I + box(b)``."""
    mean_i, mean_p = box_mean(guide, r), box_mean(src, r)
    cov = box_mean(guide * src, r) - mean_i * mean_p
    var = box_mean(guide * guide, r) - mean_i * mean_i
    a = cov / (var + np.float32(eps))
    b = mean_p - a * mean_i
    return box_mean(a, r), box_mean(b, r)


# ---- denoise ----------------------------------------------------------------------------------


def noise_sigma(img: np.ndarray) -> float:
    """Immerkær's estimate of the noise standard deviation of the luma (module docstring)."""
    lum = luma(as_unit(img)).astype(np.float64)
    h, w = lum.shape
    if h < 3 or w < 3:
        return 0.0
    c = lum[1:-1, 1:-1]
    lap = (
        lum[:-2, :-2]
        + lum[:-2, 2:]
        + lum[2:, :-2]
        + lum[2:, 2:]
        - 2.0 * (lum[:-2, 1:-1] + lum[2:, 1:-1] + lum[1:-1, :-2] + lum[1:-1, 2:])
        + 4.0 * c
    )
    return float(math.sqrt(math.pi / 2.0) * np.abs(lap).sum() / (6.0 * (w - 2) * (h - 2)))


def denoise(img: np.ndarray, strength: float) -> np.ndarray:
    """Self-guided filter per channel, its ``eps`` from the estimated noise (module docstring)."""
    x = as_unit(img)
    eps = (DENOISE_K * float(strength) * noise_sigma(img)) ** 2
    if eps <= 0.0:
        return x.copy()
    a, b = guided_coefficients(x, x, DENOISE_RADIUS, eps)
    return np.clip(a * x + b, 0.0, 1.0)


# ---- dehaze -----------------------------------------------------------------------------------


def _min_filter(x: np.ndarray, r: int) -> np.ndarray:
    """Minimum over the ``(2r + 1)**2`` window, clipped at the borders (separable)."""
    out = x
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (r, r)
        padded = np.pad(out, pad, mode="constant", constant_values=np.inf)
        win = np.lib.stride_tricks.sliding_window_view(padded, 2 * r + 1, axis=axis)
        out = win.min(axis=-1)
    return out


def _resize_plane(plane: np.ndarray, size: tuple[int, int], resample: int) -> np.ndarray:
    """A float32 (H, W) plane resized to ``size = (H', W')`` with PIL in float mode."""
    im = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32), "F")
    return np.asarray(im.resize((size[1], size[0]), resample))


def dehaze_params(img: np.ndarray, strength: float) -> tuple[np.ndarray, np.ndarray]:
    """``(A, t)``: the atmospheric light (float64, 3) and the full-size transmission
    (float32 (H, W)) of :func:`dehaze` (module docstring)."""
    x = as_unit(img)
    h, w = x.shape[:2]
    f = DEHAZE_WORK_SIDE / max(h, w)
    if f < 1.0:
        work_size = (max(1, round(h * f)), max(1, round(w * f)))
        work = np.stack([_resize_plane(x[..., c], work_size, Image.BOX) for c in range(3)], axis=-1)
    else:
        work = x
    p = max(1, round(DEHAZE_PATCH * max(work.shape[:2])))
    dark = _min_filter(work.min(axis=-1), p)
    n_top = max(1, math.ceil(DEHAZE_TOP * dark.size))
    threshold = np.partition(dark.reshape(-1), dark.size - n_top)[dark.size - n_top]
    haziest = dark >= threshold
    atmosphere = np.maximum(work[haziest].astype(np.float64).mean(axis=0), DEHAZE_MIN_A)
    normalised = work / atmosphere.astype(np.float32)
    raw = 1.0 - DEHAZE_OMEGA * float(strength) * _min_filter(normalised.min(axis=-1), p)
    guide = luma(work)
    a, b = guided_coefficients(guide, raw.astype(np.float32), 4 * p, DEHAZE_EPS)
    if work.shape[:2] != (h, w):
        a = _resize_plane(a, (h, w), Image.BILINEAR)
        b = _resize_plane(b, (h, w), Image.BILINEAR)
    t = np.clip(a * luma(x) + b, DEHAZE_T0, 1.0).astype(np.float32)
    return atmosphere, t


def dehaze(img: np.ndarray, strength: float) -> np.ndarray:
    """Dark-channel-prior dehazing (module docstring)."""
    x = as_unit(img)
    atmosphere, t = dehaze_params(img, strength)
    a = atmosphere.astype(np.float32)
    return np.clip((x - a) / t[..., None] + a, 0.0, 1.0)


AUTO_FUNCTIONS = {
    "auto_exposure": auto_exposure,
    "auto_white_balance": auto_white_balance,
    "denoise": denoise,
    "dehaze": dehaze,
}


def run(name: str, amount: float, img: np.ndarray) -> np.ndarray:
    """The auto op ``name`` at strength ``amount`` on a numpy image (float32 out)."""
    return AUTO_FUNCTIONS[name](img, amount)
