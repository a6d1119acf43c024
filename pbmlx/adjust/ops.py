"""The adjust engine: exact, parametric global edits on MLX arrays.

Every op is a pure function ``op(img, amount) -> img`` (``grain`` also takes a ``seed``) on an
``mx.array`` of shape ``(H, W, 3)``, float32, holding sRGB-encoded values in ``[0, 1]``. It returns
float32 values clipped to ``[0, 1]``, of the same shape except for the geometric ops
(:data:`GEOMETRIC_OPS`, defined in :mod:`pbmlx.adjust.geometry`); the image-adaptive ops
(:data:`AUTO_OPS`) are defined in :mod:`pbmlx.adjust.auto`. Amount 0 is the identity. Each
docstring states
the op's formula, which is the one definition of the op: the numpy oracles in the tests check it,
and a fused kernel (:mod:`pbmlx.kernels`) must reproduce it. Amount ranges, units and moderate amounts are in
:data:`pbmlx.adjust.specs.SPECS`; the op functions apply their formula to any amount they are
given, and :func:`apply_ops` clamps to the spec range first.

Notation used in the docstrings: ``x`` is one channel value (the op applies to R, G, B alike unless
said otherwise), ``a`` the amount, ``L = 0.299 R + 0.587 G + 0.114 B`` the ITU-R BT.601 luma of the
sRGB-encoded pixel (what PIL's ``convert("L")`` computes), ``clip`` clipping to ``[0, 1]``,
``lerp(x, t, s) = x + s * (t - x)``, and ``decode``/``encode`` the sRGB transfer functions
(IEC 61966-2-1) between encoded values and linear light.

Ops build a lazy MLX graph; :func:`apply_ops` chains them without evaluating, so the caller
evaluates the result once (``mx.eval`` or converting it to numpy).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import mlx.core as mx
import numpy as np

from pbmlx.adjust import auto, geometry
from pbmlx.adjust.auto import AUTO_OPS
from pbmlx.adjust.geometry import GEOMETRIC_OPS, Warp
from pbmlx.adjust.specs import SPECS
from pbmlx.errors import PbmlxError
from pbmlx.kernels import adjust as kern

# ITU-R BT.601 luma weights on encoded values: the weights of PIL's convert("L") and
# ImageEnhance, so contrast/saturation/grayscale agree with what users know from PIL.
LUMA = (0.299, 0.587, 0.114)
# Rec. 709 / sRGB luminance of linear light: keeps neutral greys' brightness under white balance.
LINEAR_LUMINANCE = (0.2126, 0.7152, 0.0722)
# NTSC YIQ rows for I and Q (Y is LUMA); the hue rotation turns the (I, Q) plane.
YIQ_I = (0.5959, -0.2746, -0.3213)
YIQ_Q = (0.2115, -0.5227, 0.3112)
# The classic sepia tone matrix (rows give R', G', B' from R, G, B).
SEPIA = ((0.393, 0.769, 0.189), (0.349, 0.686, 0.168), (0.272, 0.534, 0.131))

TEMPERATURE_STOPS = 0.5  # red gain +0.5 EV and blue gain -0.5 EV at amount +1 (before normalising)
TINT_STOPS = 0.5  # green gain -0.5 EV at amount +1 (before normalising)
FADE_BLACK = 0.25  # black is lifted to 0.25 at amount 1
FADE_WHITE = 0.10  # white is lowered to 0.90 at amount 1
VIGNETTE_START = 0.35  # radius (fraction of the half-diagonal) where the falloff begins
GRAIN_SIGMA = 0.1  # noise standard deviation at mid-grey for amount 1
SHARPEN_SIGMA = 1.0  # unsharp-mask blur radius in pixels: sharpening acts on pixel-level detail
BLUR_MIN_SIGMA = 0.3  # below this (in pixels) a Gaussian barely moves a pixel: treated as identity
GAUSS_TRUNCATE = 4.0  # kernel radius = int(4 sigma + 0.5), as scipy.ndimage.gaussian_filter
# Separable blur strategy per axis: radius <= this uses a banded matrix product over blocks of
# the axis (cost grows with the radius); a larger radius uses an FFT (cost independent of it).
BLOCK_MAX_RADIUS = 160


def _clip(x: mx.array) -> mx.array:
    return mx.clip(x, 0.0, 1.0)


def _luma(img: mx.array) -> mx.array:
    """BT.601 luma of each pixel, shape (H, W, 1)."""
    return img[..., 0:1] * LUMA[0] + img[..., 1:2] * LUMA[1] + img[..., 2:3] * LUMA[2]


def _matrix_columns(m: np.ndarray) -> np.ndarray:
    """float32 ``cols`` with ``cols[j] = m[:, j]`` (``m`` built in float64)."""
    return np.asarray(m, dtype=np.float64).T.astype(np.float32)


def _apply_matrix(img: mx.array, m: np.ndarray) -> mx.array:
    """``out[..., i] = sum_j m[i, j] * img[..., j]`` for a 3x3 colour matrix (built in float64).

    Written as three broadcast multiply-adds, not ``img @ m.T``: a K = 3 matrix product gains
    nothing from BLAS, and its threads stall when the other cores are busy.
    """
    cols = _matrix_columns(m)
    return (
        img[..., 0:1] * mx.array(cols[0])
        + img[..., 1:2] * mx.array(cols[1])
        + img[..., 2:3] * mx.array(cols[2])
    )


def srgb_decode(x: mx.array) -> mx.array:
    """sRGB encoded -> linear: ``x / 12.92`` if ``x <= 0.04045`` else ``((x + 0.055) / 1.055) ** 2.4``."""
    return mx.where(x <= 0.04045, x / 12.92, mx.power((x + 0.055) / 1.055, 2.4))


def srgb_encode(y: mx.array) -> mx.array:
    """Linear -> sRGB encoded: ``12.92 y`` if ``y <= 0.0031308`` else ``1.055 y ** (1/2.4) - 0.055``."""
    y = mx.maximum(y, 0.0)  # a power of a negative number is NaN, even in the unused branch
    return mx.where(y <= 0.0031308, y * 12.92, 1.055 * mx.power(y, 1.0 / 2.4) - 0.055)


# ---- tone -------------------------------------------------------------------------------------


def exposure(img: mx.array, amount: float) -> mx.array:
    """Exposure in EV stops, in linear light: ``out = clip(encode(decode(x) * 2**a))``."""
    return _clip(srgb_encode(srgb_decode(img) * (2.0**amount)))


def brightness(img: mx.array, amount: float) -> mx.array:
    """Midtone lift keeping 0 and 1 fixed: ``out = x + a * x * (1 - x)``.

    For ``|a| <= 1`` the curve is monotonic (slope ``1 + a (1 - 2x) >= 0``) and stays in [0, 1],
    so nothing clips; mid-grey moves by ``a / 4``.
    """
    return _clip(img + amount * img * (1.0 - img))


def contrast(img: mx.array, amount: float) -> mx.array:
    """Stretch around the mean luma (PIL ``ImageEnhance.Contrast`` with factor ``1 + a``).

    ``m = mean over all pixels of L``; ``out = clip(m + (1 + a) * (x - m))``. At ``a = -1`` the
    image is a flat grey of its mean luma. (PIL rounds ``m`` to a whole 8-bit level; this does not.)
    """
    # Mean of row means: the same number, but a one-pass float32 mean of millions of values
    # drifts by ~3e-5, two short passes by ~1e-7.
    m = mx.mean(mx.mean(_luma(img), axis=1))
    return _clip(m + (1.0 + amount) * (img - m))


def gamma(img: mx.array, amount: float) -> mx.array:
    """Power curve on each channel: ``out = x ** (2 ** -a)`` (``a > 0`` brightens midtones)."""
    return _clip(mx.power(img, 2.0 ** (-amount)))


def highlights(img: mx.array, amount: float) -> mx.array:
    """Tone curve on the bright tones, added equally to R, G and B: ``out = clip(x + a L**2 (1 - L))``.

    The luma then follows ``L' = L + a L**2 (1 - L)``: monotonic for ``|a| <= 1`` (slope
    ``1 + a L (2 - 3 L)``), zero change at black and white, largest (``4a/27``) at ``L = 2/3``.
    """
    lum = _luma(img)
    return _clip(img + amount * lum * lum * (1.0 - lum))


def shadows(img: mx.array, amount: float) -> mx.array:
    """Tone curve on the dark tones, added equally to R, G and B: ``out = clip(x + a L (1 - L)**2)``.

    Mirror of :func:`highlights`: monotonic in L for ``|a| <= 1``, largest change (``4a/27``) at
    ``L = 1/3``.
    """
    lum = _luma(img)
    return _clip(img + amount * lum * (1.0 - lum) * (1.0 - lum))


def fade(img: mx.array, amount: float) -> mx.array:
    """Matte look, a linear remap of [0, 1] onto ``[lo, hi]``: ``out = lo + x * (hi - lo)``.

    ``lo = FADE_BLACK * a`` (blacks lifted), ``hi = 1 - FADE_WHITE * a`` (whites lowered).
    """
    lo = FADE_BLACK * amount
    hi = 1.0 - FADE_WHITE * amount
    return _clip(lo + img * (hi - lo))


# ---- colour -----------------------------------------------------------------------------------


def saturation(img: mx.array, amount: float) -> mx.array:
    """Blend with the luma (PIL ``ImageEnhance.Color`` with factor ``1 + a``).

    ``out = clip(L + (1 + a) * (x - L))``; ``a = -1`` is grayscale. Applied as the equivalent
    colour matrix ``(1 + a) I - a 1 LUMA^T``.
    """
    return _clip(_apply_matrix(img, _saturation_matrix(amount)))


def _saturation_matrix(amount: float) -> np.ndarray:
    f = 1.0 + amount
    return f * np.eye(3) + (1.0 - f) * np.outer(np.ones(3), LUMA)


def vibrance(img: mx.array, amount: float) -> mx.array:
    """Saturation weighted towards muted colours.

    ``c = max(R, G, B) - min(R, G, B)`` (chroma of the encoded pixel);
    ``out = clip(L + (1 + a (1 - c)) * (x - L))``: a grey-ish pixel gets the full factor
    ``1 + a``, a fully saturated one (``c = 1``) is left alone.
    """
    lum = _luma(img)
    chroma = mx.max(img, axis=-1, keepdims=True) - mx.min(img, axis=-1, keepdims=True)
    return _clip(lum + (1.0 + amount * (1.0 - chroma)) * (img - lum))


def _wb_gains(log2_gains: tuple[float, float, float]) -> np.ndarray:
    gains = 2.0 ** np.asarray(log2_gains, dtype=np.float64)
    gains /= np.dot(LINEAR_LUMINANCE, gains)  # a neutral grey keeps its luminance
    return gains.astype(np.float32)


def _white_balance(img: mx.array, log2_gains: tuple[float, float, float]) -> mx.array:
    return _clip(srgb_encode(srgb_decode(img) * mx.array(_wb_gains(log2_gains))))


def temperature(img: mx.array, amount: float) -> mx.array:
    """White-balance shift towards amber (+) or blue (-), as channel gains in linear light.

    ``k = TEMPERATURE_STOPS * a``; gains ``g = (2**k, 1, 2**-k) / s`` with
    ``s = 0.2126 * 2**k + 0.7152 + 0.0722 * 2**-k`` (so a neutral grey keeps its luminance);
    ``out = clip(encode(decode(x) * g))`` per channel.
    """
    k = TEMPERATURE_STOPS * amount
    return _white_balance(img, (k, 0.0, -k))


def tint(img: mx.array, amount: float) -> mx.array:
    """White-balance shift towards magenta (+) or green (-), as channel gains in linear light.

    ``k = TINT_STOPS * a``; gains ``g = (1, 2**-k, 1) / s`` with ``s = 0.2126 + 0.7152 * 2**-k +
    0.0722``; ``out = clip(encode(decode(x) * g))`` per channel.
    """
    k = TINT_STOPS * amount
    return _white_balance(img, (0.0, -k, 0.0))


def hue_matrix(degrees: float) -> np.ndarray:
    """The 3x3 RGB matrix of a hue rotation by ``degrees`` in the YIQ plane (float64).

    ``T`` = rows (LUMA, YIQ_I, YIQ_Q); ``R`` turns the (I, Q) plane by ``theta``:
    ``I' = I cos + Q sin``, ``Q' = -I sin + Q cos``; the matrix is ``T^-1 R T``. Y (the luma) is
    unchanged. Positive angles move red towards yellow (the direction HSV hue increases).
    """
    t = np.array([LUMA, YIQ_I, YIQ_Q], dtype=np.float64)
    th = math.radians(degrees)
    c, s = math.cos(th), math.sin(th)
    # This sense of rotation moves red -> yellow -> green, the way HSV hue increases.
    r = np.array([[1.0, 0.0, 0.0], [0.0, c, s], [0.0, -s, c]])
    return np.linalg.inv(t) @ r @ t


def hue(img: mx.array, amount: float) -> mx.array:
    """Rotate every hue by ``a`` degrees: ``out = clip(hue_matrix(a) @ rgb)`` (luma kept)."""
    return _clip(_apply_matrix(img, hue_matrix(amount)))


def grayscale(img: mx.array, amount: float) -> mx.array:
    """Mix towards the luma: ``out = lerp(x, L, a)``; ``a = 1`` is PIL ``ImageOps.grayscale``."""
    return _clip(_apply_matrix(img, _grayscale_matrix(amount)))


def _grayscale_matrix(amount: float) -> np.ndarray:
    return (1.0 - amount) * np.eye(3) + amount * np.outer(np.ones(3), LUMA)


def sepia(img: mx.array, amount: float) -> mx.array:
    """Mix towards the sepia tone: ``out = clip(lerp(x, clip(SEPIA @ rgb), a))``."""
    toned = _clip(_apply_matrix(img, np.array(SEPIA)))
    return _clip(img + amount * (toned - img))


def invert(img: mx.array, amount: float) -> mx.array:
    """Mix towards the negative: ``out = lerp(x, 1 - x, a) = x + a (1 - 2x)``."""
    return _clip(img + amount * (1.0 - 2.0 * img))


# ---- spatial and stochastic -------------------------------------------------------------------


def vignette_mask(height: int, width: int) -> mx.array:
    """Radial falloff ``g`` in [0, 1] of shape (H, W, 1), relative to the image size.

    Pixel centres ``(i + 0.5, j + 0.5)``; ``d`` = distance to the image centre divided by the
    half-diagonal ``sqrt((W/2)**2 + (H/2)**2)`` (0 at the centre, ~1 in the corners, any aspect
    ratio); ``t = clip((d - VIGNETTE_START) / (1 - VIGNETTE_START))``; ``g = t*t*(3 - 2t)``.
    """
    half_diag = math.hypot(width / 2.0, height / 2.0)
    dy = (mx.arange(height, dtype=mx.float32) + (0.5 - height / 2.0)) / half_diag
    dx = (mx.arange(width, dtype=mx.float32) + (0.5 - width / 2.0)) / half_diag
    d = mx.sqrt(dy[:, None] * dy[:, None] + dx[None, :] * dx[None, :])
    t = _clip((d - VIGNETTE_START) / (1.0 - VIGNETTE_START))
    return (t * t * (3.0 - 2.0 * t))[..., None]


def vignette(img: mx.array, amount: float) -> mx.array:
    """Darken (+) or lighten (-) towards the corners: ``out = lerp(x, target, |a| g)``.

    ``g`` is :func:`vignette_mask`; ``target = 0`` for ``a > 0`` and ``1`` for ``a < 0``.
    """
    h, w, _ = img.shape
    g = abs(amount) * vignette_mask(h, w)
    target = 0.0 if amount > 0 else 1.0
    return _clip(img + g * (target - img))


def grain_noise(height: int, width: int, seed: int) -> mx.array:
    """Standard normal noise of shape (H, W, 1) from ``mx.random.key(seed)`` (same seed, same noise)."""
    return mx.random.normal((height, width, 1), key=mx.random.key(seed))


def grain(img: mx.array, amount: float, seed: int = 0) -> mx.array:
    """Monochrome film grain, strongest in the midtones.

    ``n`` = :func:`grain_noise` (one value per pixel, shared by R, G, B);
    ``out = clip(x + a * GRAIN_SIGMA * 4 L (1 - L) * n)``.
    """
    h, w, _ = img.shape
    lum = _luma(img)
    weight = (amount * GRAIN_SIGMA * 4.0) * lum * (1.0 - lum)
    return _clip(img + weight * grain_noise(h, w, seed))


def gaussian_kernel(sigma: float) -> tuple[np.ndarray, int]:
    """Normalised sampled Gaussian (float64) and its radius ``r = int(GAUSS_TRUNCATE sigma + 0.5)``.

    ``k[t] = exp(-(t - r)**2 / (2 sigma**2)) / sum``, ``t = 0 .. 2r`` (scipy.ndimage's kernel).
    """
    r = int(GAUSS_TRUNCATE * sigma + 0.5)
    d = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (d / sigma) ** 2)
    return k / k.sum(), r


def _reflect_index(i: np.ndarray, n: int) -> np.ndarray:
    """Half-sample symmetric extension (``d c b a | a b c d | d c b a``) of indices, any range."""
    i = np.mod(i, 2 * n)
    return np.where(i >= n, 2 * n - 1 - i, i)


def _pad_reflect_last(x: mx.array, left: int, right: int) -> mx.array:
    """Pad the last axis by half-sample symmetric reflection."""
    n = x.shape[-1]
    if left <= n and right <= n:  # a single reflection each side: slices beat a gather
        flipped = x[..., ::-1]
        return mx.concatenate([flipped[..., n - left :], x, flipped[..., :right]], axis=-1)
    idx = _reflect_index(np.arange(-left, n + right), n).astype(np.int32)
    return mx.take(x, mx.array(idx), axis=-1)


def _block_size(radius: int) -> int:
    # Blocks of B outputs read B + 2r inputs: B ~ 4r keeps the redundant work near 50 %, while
    # B >= 32 keeps the matrix products large enough to run at BLAS speed.
    return max(32, 16 * math.ceil(radius / 4))


def _blur_last_blocks(x: mx.array, k: np.ndarray, r: int) -> mx.array:
    """Convolve every row of ``x`` (..., n) with ``k`` (2r + 1 taps), reflected edges.

    The row is cut into blocks of B outputs; each block is one product of its B + 2r padded
    inputs with the banded (B + 2r, B) matrix ``band[j + t, j] = k[t]``, done for all blocks of
    all rows at once through an overlapping strided view.
    """
    *lead, n = x.shape
    rows = math.prod(lead)
    b = _block_size(r)
    nb = -(-n // b)
    span = b + 2 * r
    band = np.zeros((span, b), dtype=np.float32)
    j = np.arange(b)
    band[j[:, None] + np.arange(2 * r + 1)[None, :], j[:, None]] = k
    xp = _pad_reflect_last(x.reshape(rows, n), r, nb * b - n + r)  # (rows, nb*b + 2r)
    windows = mx.as_strided(xp, (rows, nb, span), (nb * b + 2 * r, b, 1))
    out = windows @ mx.array(band)  # (rows, nb, b)
    return out.reshape(rows, nb * b)[:, :n].reshape(*lead, n)


def _blur_last_fft(x: mx.array, k: np.ndarray, r: int) -> mx.array:
    """The same convolution as :func:`_blur_last_blocks`, through an FFT of length 2n.

    The reflected row is 2n-periodic, so convolving it with ``k`` is a circular convolution of
    ``[x, reversed x]`` with ``k`` folded modulo 2n; the cost does not depend on ``r``.
    """
    n = x.shape[-1]
    folded = np.zeros(2 * n, dtype=np.float64)
    np.add.at(folded, np.arange(-r, r + 1) % (2 * n), k)
    spectrum = mx.array(np.fft.rfft(folded).astype(np.complex64))
    y = mx.concatenate([x, x[..., ::-1]], axis=-1)
    return mx.fft.irfft(mx.fft.rfft(y) * spectrum, n=2 * n)[..., :n]


def gaussian_blur(img: mx.array, sigma: float) -> mx.array:
    """Separable Gaussian blur of an (H, W, 3) image with standard deviation ``sigma`` pixels.

    ``out = k * (k * x along W) along H`` with ``k`` = :func:`gaussian_kernel` and half-sample
    symmetric edges (scipy.ndimage ``mode="reflect"``, repeated on axes shorter than the radius).
    ``sigma < BLUR_MIN_SIGMA`` returns ``img`` unchanged. Not clipped (a convex combination of
    values in [0, 1] stays there).
    """
    if sigma < BLUR_MIN_SIGMA:
        return img
    k, r = gaussian_kernel(sigma)
    blur_rows = _blur_last_blocks if r <= BLOCK_MAX_RADIUS else _blur_last_fft
    planar = blur_rows(mx.transpose(img, (2, 0, 1)), k, r)  # (3, H, W), blurred along W
    planar = blur_rows(mx.transpose(planar, (0, 2, 1)), k, r)  # (3, W, H), blurred along H
    return mx.transpose(planar, (2, 1, 0))


def blur(img: mx.array, amount: float) -> mx.array:
    """Gaussian blur with ``sigma = a / 100 * max(H, W)`` pixels (:func:`gaussian_blur`).

    ``sigma < BLUR_MIN_SIGMA`` (0.3 px) is the identity.
    """
    h, w, _ = img.shape
    return _clip(gaussian_blur(img, amount / 100.0 * max(h, w)))


def sharpen(img: mx.array, amount: float) -> mx.array:
    """Unsharp mask: ``out = clip(x + a * (x - gaussian_blur(x, SHARPEN_SIGMA)))``.

    The same as PIL ``ImageFilter.UnsharpMask(radius=SHARPEN_SIGMA, percent=100 a, threshold=0)``
    up to PIL's box approximation of the Gaussian.
    """
    return _clip(img + amount * (img - gaussian_blur(img, SHARPEN_SIGMA)))


# ---- geometry and image-adaptive corrections (defined in .geometry and .auto) ----------------


def _warped(img: mx.array, name: str, amount: float) -> mx.array:
    if amount == 0.0:  # the identity (crop_aspect, scale and resize have no amount 0)
        return img
    warp = geometry.resolve(name, amount, img)
    return img if warp is None else geometry.apply_warp(img, warp)


def rotate(img: mx.array, amount: float) -> mx.array:
    """Rotate ``a`` degrees counter-clockwise: exact for multiples of 90, else bilinear onto an
    expanded canvas ``W' = ceil(W |cos a| + H |sin a|)``, ``H' = ceil(W |sin a| + H |cos a|)``
    filled with white (:mod:`pbmlx.adjust.geometry`)."""
    return _warped(img, "rotate", amount)


def flip_horizontal(img: mx.array, amount: float) -> mx.array:
    """Mirror left-right (``a >= 0.5``): ``out[i, j] = x[i, W - 1 - j]``."""
    return _warped(img, "flip_horizontal", amount)


def flip_vertical(img: mx.array, amount: float) -> mx.array:
    """Mirror top-bottom (``a >= 0.5``): ``out[i, j] = x[H - 1 - i, j]``."""
    return _warped(img, "flip_vertical", amount)


def crop_aspect(img: mx.array, amount: float) -> mx.array:
    """Centre crop to the largest rectangle with width / height = ``a``."""
    return _warped(img, "crop_aspect", amount)


def straighten(img: mx.array, amount: float) -> mx.array:
    """Level the dominant near-horizontal line (``a >= 0.5``), cropped edge-free to the
    original aspect ratio (:func:`pbmlx.adjust.geometry.detect_horizon`)."""
    return _warped(img, "straighten", amount)


def scale(img: mx.array, amount: float) -> mx.array:
    """Lanczos resample (PIL, float) of both sides by the factor ``a``: ``W' = round(W a)``,
    ``H' = round(H a)``."""
    return _warped(img, "scale", amount)


def resize(img: mx.array, amount: float) -> mx.array:
    """Lanczos resample (PIL, float) so that the long side is ``L = round(a)`` pixels and the
    short one ``short' = round(short * L / long)``."""
    return _warped(img, "resize", amount)


def _auto(img: mx.array, name: str, amount: float) -> mx.array:
    if amount == 0.0:
        return img
    return mx.array(auto.run(name, amount, np.asarray(img)))


def auto_exposure(img: mx.array, amount: float) -> mx.array:
    """Levels from the 0.5/99.5 % luma percentiles and a gamma to a middle-grey mean:
    ``out = clip((x - lo_s) / (hi_s - lo_s)) ** p_s`` (:mod:`pbmlx.adjust.auto`)."""
    return _auto(img, "auto_exposure", amount)


def auto_white_balance(img: mx.array, amount: float) -> mx.array:
    """Shades-of-grey (p = 6) channel gains in linear light (:mod:`pbmlx.adjust.auto`)."""
    return _auto(img, "auto_white_balance", amount)


def denoise(img: mx.array, amount: float) -> mx.array:
    """Self-guided filter, ``out = box(a) x + box(b)`` with ``eps = (2 a sigma)**2`` from the
    estimated noise ``sigma`` (:mod:`pbmlx.adjust.auto`)."""
    return _auto(img, "denoise", amount)


def dehaze(img: mx.array, amount: float) -> mx.array:
    """Dark-channel-prior dehazing, ``out = clip((x - A) / t + A)`` with a guided-filter
    transmission ``t`` (:mod:`pbmlx.adjust.auto`)."""
    return _auto(img, "dehaze", amount)


# ---- registry and plans -----------------------------------------------------------------------

OPS: dict[str, Callable[..., mx.array]] = {
    "exposure": exposure,
    "brightness": brightness,
    "contrast": contrast,
    "saturation": saturation,
    "vibrance": vibrance,
    "temperature": temperature,
    "tint": tint,
    "hue": hue,
    "gamma": gamma,
    "highlights": highlights,
    "shadows": shadows,
    "fade": fade,
    "grayscale": grayscale,
    "sepia": sepia,
    "invert": invert,
    "vignette": vignette,
    "grain": grain,
    "sharpen": sharpen,
    "blur": blur,
    "rotate": rotate,
    "flip_horizontal": flip_horizontal,
    "flip_vertical": flip_vertical,
    "crop_aspect": crop_aspect,
    "straighten": straighten,
    "scale": scale,
    "resize": resize,
    "auto_exposure": auto_exposure,
    "auto_white_balance": auto_white_balance,
    "denoise": denoise,
    "dehaze": dehaze,
}
SEEDED_OPS = frozenset({"grain"})  # ops that take the plan's seed
SPATIAL_OPS = frozenset({"blur", "sharpen"})  # ops that read neighbouring pixels
# Ops that are their own segment of a plan (not part of a fused per-pixel run).
SEGMENT_OPS = SPATIAL_OPS | GEOMETRIC_OPS | AUTO_OPS
assert OPS.keys() == SPECS.keys(), "every op in SPECS needs exactly one function"


def kernel_step(name: str, amount: float, height: int, width: int) -> tuple[int, list[float]]:
    """The fused kernels' program row for the per-pixel op ``name`` at ``amount`` on an
    ``height x width`` image: ``(opcode, parameters)`` (:mod:`pbmlx.kernels.adjust`). The
    parameters are the constants of the op's formula above, rounded to float32 as the MLX
    expression rounds them, so the kernel repeats the same float32 arithmetic."""
    a = float(amount)
    if name == "exposure":
        return kern.OP_GAINS, [2.0**a] * 3
    if name == "temperature":
        k = TEMPERATURE_STOPS * a
        return kern.OP_GAINS, [float(g) for g in _wb_gains((k, 0.0, -k))]
    if name == "tint":
        return kern.OP_GAINS, [float(g) for g in _wb_gains((0.0, -TINT_STOPS * a, 0.0))]
    if name == "contrast":
        return kern.OP_CONTRAST, [1.0 + a, 0.0]  # the mean luma is filled in when it runs
    if name == "gamma":
        return kern.OP_GAMMA, [2.0 ** (-a)]
    if name == "fade":
        lo, hi = FADE_BLACK * a, 1.0 - FADE_WHITE * a
        return kern.OP_FADE, [lo, hi - lo]
    matrices = {"saturation": _saturation_matrix, "hue": hue_matrix, "grayscale": _grayscale_matrix}
    if name in matrices:
        return kern.OP_MATRIX, [float(v) for v in _matrix_columns(matrices[name](a)).ravel()]
    if name == "sepia":
        return kern.OP_SEPIA, [*map(float, _matrix_columns(np.array(SEPIA)).ravel()), a]
    if name == "vignette":
        half_diag = math.hypot(width / 2.0, height / 2.0)
        target = 0.0 if a > 0 else 1.0
        return kern.OP_VIGNETTE, [abs(a), target, 0.5 - height / 2.0, 0.5 - width / 2.0, half_diag]
    if name == "grain":
        return kern.OP_GRAIN, [a * GRAIN_SIGMA * 4.0]
    simple = {
        "brightness": kern.OP_BRIGHTNESS,
        "highlights": kern.OP_HIGHLIGHTS,
        "shadows": kern.OP_SHADOWS,
        "vibrance": kern.OP_VIBRANCE,
        "invert": kern.OP_INVERT,
    }
    if name in simple:
        return simple[name], [a]
    raise ValueError(f"{name!r} is not a per-pixel op")


def _check_image(img: Any) -> mx.array | np.ndarray:
    """The image as the kernels take it: uint8 codes kept, floats as float32; a numpy array
    stays numpy (the CPU kernel reads it in place), anything else must be an ``mx.array``."""
    if not isinstance(img, (mx.array, np.ndarray)):
        raise PbmlxError(
            f"The adjust engine needs an mlx or numpy array image, got {type(img).__name__}."
        )
    if img.ndim != 3 or img.shape[-1] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise PbmlxError(
            f"The adjust engine needs an (H, W, 3) RGB image, got shape {tuple(img.shape)}."
        )
    if isinstance(img, np.ndarray):
        if img.dtype == np.uint8:
            return np.ascontiguousarray(img)
        if not np.issubdtype(img.dtype, np.floating):
            raise PbmlxError(
                f"The adjust engine needs float values in [0, 1] or 8-bit codes, got dtype "
                f"{img.dtype}."
            )
        return np.ascontiguousarray(img, dtype=np.float32)
    if img.dtype == mx.uint8:
        return img  # 8-bit codes: the kernels read them directly (value = code / 255)
    if not mx.issubdtype(img.dtype, mx.floating):
        raise PbmlxError(
            f"The adjust engine needs float values in [0, 1] or 8-bit codes, got dtype {img.dtype}."
        )
    return img.astype(mx.float32)


def _check_step(i: int, step: Any) -> tuple[str, float]:
    if not isinstance(step, Mapping) or "op" not in step or "amount" not in step:
        raise PbmlxError(f"Adjust step {i} must be a mapping with 'op' and 'amount', got {step!r}.")
    name = step["op"]
    if not isinstance(name, str) or name not in OPS:
        raise PbmlxError(f"Adjust step {i} names unknown op {name!r}; known ops: {', '.join(OPS)}.")
    amount = step["amount"]
    if isinstance(amount, bool) or not isinstance(amount, (int, float, np.integer, np.floating)):
        raise PbmlxError(f"Adjust step {i} ({name}) has a non-numeric amount {amount!r}.")
    if not math.isfinite(float(amount)):
        raise PbmlxError(f"Adjust step {i} ({name}) has a non-finite amount {amount!r}.")
    if float(amount) == 0.0:  # the identity, also for ops whose range excludes 0 (crop_aspect)
        return name, 0.0
    if name == "rotate":  # any angle: 450 degrees is 90
        amount = geometry.wrap_degrees(float(amount))
    return name, SPECS[name].clamp(float(amount))


def apply_ops(
    img: mx.array,
    ops: Sequence[Mapping[str, Any]],
    *,
    seed: int = 0,
    out_dtype: mx.Dtype = mx.float32,
    warps: list[Warp] | None = None,
) -> mx.array:
    """Apply a plan of ops in order: ``ops`` is a sequence of ``{"op": name, "amount": float}``.

    ``img`` is (H, W, 3): float values in [0, 1] (any float dtype), or 8-bit codes (uint8;
    value = code / 255), as an ``mx.array`` or a numpy array; the result is the same kind of
    array (numpy in, numpy out: the CPU kernel then reads and writes numpy memory in place). Every step is checked before any work:
    an unknown name, a missing key or a non-finite amount raises :class:`PbmlxError`; amounts
    outside the op's spec range are clamped to it (``SPECS[name].clamp``; ``rotate`` is first
    wrapped into (-180, 180]); steps whose amount is 0 are skipped (they are the identity).
    Seeded ops (grain) use ``seed`` (two grain steps in one plan draw the same noise).

    Each run of consecutive per-pixel steps goes to one fused kernel call
    (:func:`pbmlx.kernels.adjust.adjust_chain`: one pass per pixel), blur and sharpen to the
    blur kernels; which implementation runs is the dispatchers' choice (``PBMLX_KERNELS=
    reference`` forces the MLX-op definitions above). Geometric steps are resolved against the
    image as it stands (:func:`pbmlx.adjust.geometry.resolve`) and applied as their own segment:
    exact ones (quarter turns, flips, crops) move 8-bit codes as codes; with ``warps`` a list,
    each resolved :class:`~pbmlx.adjust.geometry.Warp` is appended to it in order (so an alpha
    plane can follow: :func:`pbmlx.adjust.geometry.apply_warps_to_plane`), and the result's
    size is that of the last warp. Image-adaptive steps (:mod:`pbmlx.adjust.auto`) measure the
    image as it stands, then apply their rule. Returns ``out_dtype``: float32 values in
    [0, 1], or uint8 codes ``round(clip(x) * 255)`` (written by the last kernel, so a 12 MP
    photo never exists as float32 when 8-bit codes go in and come out). The result may be
    lazy: evaluate it once.
    """
    from pbmlx.kernels import adjust as kernels

    img = _check_image(img)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
        raise PbmlxError(f"The adjust seed must be an integer in [0, 2**64), got {seed!r}.")
    if out_dtype not in (mx.float32, mx.uint8):
        raise PbmlxError(f"The adjust engine writes float32 or uint8, not {out_dtype}.")
    if isinstance(ops, (str, bytes, Mapping)):
        raise PbmlxError(f"An adjust plan must be a list of steps, got {type(ops).__name__}.")
    steps = [_check_step(i, step) for i, step in enumerate(ops)]
    steps = [(name, amount) for name, amount in steps if amount != 0.0]
    x, i = img, 0
    while i < len(steps):
        name, amount = steps[i]
        if name in GEOMETRIC_OPS:
            warp = geometry.resolve(name, amount, x)
            if warp is not None:
                x = geometry.apply_warp(x, warp)
                if warps is not None:
                    warps.append(warp)
            i += 1
            continue
        if name in AUTO_OPS:
            x = auto.run(name, amount, np.asarray(x))
            i += 1
            continue
        if name in SPATIAL_OPS:
            x = mx.array(x) if isinstance(x, np.ndarray) else x
            h, w, _ = x.shape
            if name == "blur":
                x = kernels.gaussian_blur(x, amount / 100.0 * max(h, w), clip=True)
            else:
                x = kernels.unsharp(x, amount, SHARPEN_SIGMA)
            i += 1
            continue
        j = i
        while j < len(steps) and steps[j][0] not in SEGMENT_OPS:
            j += 1
        last = j == len(steps)
        x = kernels.adjust_chain(x, steps[i:j], int(seed), out_dtype if last else mx.float32)
        i = j
    if kernels.dtype_of(x) != out_dtype:  # no per-pixel step came last: a no-op program
        x = kernels.adjust_chain(x, [], int(seed), out_dtype)
    if isinstance(img, np.ndarray) and isinstance(x, mx.array):
        return np.asarray(x)
    if isinstance(img, mx.array) and isinstance(x, np.ndarray):
        return mx.array(x)
    return x
