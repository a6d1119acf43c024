"""Raw image measurements for the judge: alignment, SSIM, change mask, tone/colour/detail statistics.

Everything here is numpy (float32 images, float64 reductions) and PIL (resampling); nothing is
learned and nothing is mapped to [0, 1] (that is :mod:`pbmlx.judge.maps`' job). Images
are ``(H, W, 3)`` float arrays of sRGB-encoded values in [0, 1]; ``L`` is the BT.601 luma
``0.299 R + 0.587 G + 0.114 B`` (the adjust engine's and PIL's).

The pair a criterion looks at is prepared once by :func:`prepare_pair`:

* **alignment** (:func:`align`): Pico-Banana outputs are not always pixel-aligned with their
  inputs (other size, aspect, a crop or a shift), so the edited image is registered to the
  source with an axis-aligned scale + translation found on gradient-magnitude maps (which a
  photometric edit, even an inversion, leaves in place). The plain stretch of the edited onto
  the source frame wins unless another candidate is clearly better (:data:`ALIGN_MARGIN`).
* the **working pair**: the overlap of the two frames, resampled to a long side of at most
  :data:`WORK_SIDE` (tone, colour, structure, change mask, seams);
* the **detail pair**: a centre window of the overlap at the source's own resolution, at most
  :data:`DETAIL_SIDE` square (sharpness, noise, grain: pixel-level statistics that resampling
  would change), and centre windows of each image's own pixels (JPEG blockiness needs the
  8x8 grid, banding the exact 8-bit levels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pbmlx.errors import PbmlxError

LUMA = (0.299, 0.587, 0.114)  # BT.601, as the adjust engine and PIL's convert("L")
WORK_SIDE = 512  # long side of the working pair: enough for SSIM and seams, fast on a phone
DETAIL_SIDE = 512  # side of the native-resolution detail window
ALIGN_SIDE = 160  # long side of the gradient maps the registration searches on
# The edited image is taken as a plain stretch onto the source frame unless a shifted or
# rescaled placement correlates better by this much (NCC of gradient maps, in [-1, 1]): a
# real crop or shift gains 0.2-0.8, noise around the true placement gains < 0.02.
ALIGN_MARGIN = 0.06
ALIGN_MIN_OVERLAP = 0.3  # a placement must cover this fraction of the source frame
ALIGN_MIN_NCC = 0.4  # ... and correlate this well (unrelated photos reach ~0.3 somewhere)
# Zoom factors tried around the stretch (edited shows a smaller or larger part of the scene).
ALIGN_ZOOMS = tuple(1.5 ** (k / 5) for k in range(-5, 6))  # 1/1.5 .. 1.5, 8.4 % steps
ALIGN_SCALE_STEPS = (0.97, 0.985, 1.015, 1.03)  # then the best one is refined by these
SSIM_SIGMA = 1.5  # Wang et al. 2004: an 11-tap Gaussian window with sigma 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
SSIM_TRUNCATE = 3.5  # radius int(3.5 * 1.5 + 0.5) = 5: the 11-tap window
DETAIL_SIGMA = 1.0  # high-pass = L - gaussian(L, 1 px): pixel-level detail, as the engine's sharpen
NOISE_FLOOR = 1.0 / 255.0  # one 8-bit level: differences below it are quantisation, not change
# Change mask: a pixel changed when its residual after the best global colour mapping, averaged
# over a few pixels, exceeds this (about 15 levels of 255: a change seen at a glance).
CHANGE_THRESHOLD = 0.06
CHANGE_SMOOTH = 1.5  # Gaussian sigma (working pixels) over the residual before thresholding
COLOR_BINS = 6  # per channel: the global colour mapping is affine within each of 6**3 cells
BORDER_RADIUS = 2  # half-width (working pixels) of the band along the change-mask border
TILING_MIN_LAG = 0.08  # autocorrelation lags shorter than this fraction of the side are texture
BANDING_MIN_PIXELS = 2000  # fewer smooth pixels than this: banding is not measured
VIGNETTE_CORNER, VIGNETTE_CENTRE = 0.75, 0.35  # radius bands (fraction of the half-diagonal)


# ---- conversion and resampling ------------------------------------------------------------------


def as_rgb(image: object, name: str = "image") -> tuple[np.ndarray, float]:
    """An image as float32 ``(H, W, 3)`` in [0, 1], and the fraction of non-finite samples it had.

    Accepts a path (read with :func:`pbmlx.load.read_image`: orientation applied, 16-bit kept),
    a PIL image (alpha dropped, grey expanded), or a numpy array ``(H, W)``, ``(H, W, 1)``,
    ``(H, W, 3)`` or ``(H, W, 4)`` (uint8 / uint16 scaled by their maximum, floats taken as
    [0, 1]). Non-finite samples are replaced by 0 and counted (the quality criterion fails such
    a frame); values are clipped to [0, 1].
    """
    if isinstance(image, (str, Path)):
        from pbmlx.load import read_image

        photo = read_image(image)
        # Back to the file's integer codes, then the one conversion used for every input
        # (a file, the same picture as a PIL image or an array give bit-identical verdicts).
        # In float32, in place: rint(rgb * peak) is exactly the code k (for every 8- and
        # 16-bit k), and k / peak is then what the integer branch below computes.
        peak = np.float32(65535.0 if photo.bit_depth == 16 else 255.0)
        x = photo.rgb * peak
        np.rint(x, out=x)
        x /= peak
        return _checked_shape(x, name), 0.0
    elif isinstance(image, Image.Image):
        im = image
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.clip(np.asarray(im), 0, 65535).astype(np.uint16)
        else:
            arr = np.asarray(im.convert("RGB"))
    elif isinstance(image, np.ndarray):
        arr = image
        if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number):
            raise PbmlxError(
                f"The {name} array has dtype {arr.dtype}; give uint8, uint16 or float."
            )
    else:
        raise PbmlxError(
            f"The {name} must be a path, a PIL image or a numpy array, not {type(image).__name__}."
        )
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[..., None]
    arr = _checked_shape(arr, name)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    arr = arr[..., :3]
    if arr.dtype in (np.uint8, np.uint16):
        # Integer codes are finite and in range: one conversion, no checks (12 MP: ~10x less
        # time than the float path below).
        return arr.astype(np.float32) / np.float32(255 if arr.dtype == np.uint8 else 65535), 0.0
    arr = arr.astype(np.float32)
    finite = np.isfinite(arr)
    bad = float(1.0 - finite.mean())
    if bad > 0.0:
        arr = np.where(finite, arr, 0.0).astype(np.float32)
    return np.clip(arr, 0.0, 1.0), bad


def _checked_shape(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4) or arr.shape[0] < 8 or arr.shape[1] < 8:
        raise PbmlxError(
            f"The {name} has shape {arr.shape}; the judge needs an (H, W, 3) image at least 8x8."
        )
    return arr


def luma(x: np.ndarray) -> np.ndarray:
    """BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` of an (H, W, 3) image, float32 (H, W)."""
    return (x[..., 0] * LUMA[0] + x[..., 1] * LUMA[1] + x[..., 2] * LUMA[2]).astype(np.float32)


def resize(
    x: np.ndarray, size: tuple[int, int], box: tuple[float, float, float, float] | None = None
) -> np.ndarray:
    """Resample ``x`` (H, W[, C]) to ``size = (width, height)``; ``box`` = (left, top, right, bottom)
    is the source region in pixel-edge coordinates (PIL's ``resize(box=)``; default the whole).

    PIL bicubic on float planes, antialiased when shrinking; clipped back to [0, 1]. An integer
    box of exactly ``size`` is a plain slice, so an aligned pair keeps its exact pixels.
    """
    h, w = x.shape[:2]
    if box is None:
        box = (0.0, 0.0, float(w), float(h))
    else:  # clamp float round-off at the frame's edges (the overlap rectangle touches them)
        bl, bt, br, bb = (float(v) for v in box)
        box = (
            min(max(bl, 0.0), w),
            min(max(bt, 0.0), h),
            min(max(br, 0.0), w),
            min(max(bb, 0.0), h),
        )
    left, top, right, bottom = box
    if (
        all(float(v).is_integer() for v in box)
        and right - left == size[0]
        and bottom - top == size[1]
        and left >= 0
        and top >= 0
        and right <= w
        and bottom <= h
    ):
        return x[int(top) : int(bottom), int(left) : int(right)].copy()
    planes = x[..., None] if x.ndim == 2 else x
    out = np.empty((size[1], size[0], planes.shape[-1]), np.float32)
    for c in range(planes.shape[-1]):
        im = Image.fromarray(np.ascontiguousarray(planes[..., c], dtype=np.float32), "F")
        out[..., c] = np.asarray(im.resize(size, Image.Resampling.BICUBIC, box=box))
    out = np.clip(out, 0.0, 1.0)
    return out[..., 0] if x.ndim == 2 else out


def fit_size(width: float, height: float, side: int) -> tuple[int, int]:
    """``(w, h)`` with the aspect of ``width x height`` and long side ``min(side, long side)``."""
    s = min(1.0, side / max(width, height))
    return max(1, round(width * s)), max(1, round(height * s))


# ---- filters ------------------------------------------------------------------------------------


def gaussian_kernel(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Normalised sampled Gaussian, radius ``int(truncate * sigma + 0.5)`` (scipy.ndimage's)."""
    r = int(truncate * sigma + 0.5)
    d = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (d / sigma) ** 2)
    return k / k.sum()


def _correlate_rows(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Correlate along axis 0 with the symmetric odd kernel ``k``, half-sample symmetric
    edges (scipy.ndimage ``mode="reflect"``). Pairs of taps share a multiply (``k`` is
    symmetric); shifted slices of a padded copy, no large temporaries."""
    r = len(k) // 2
    n = x.shape[0]
    if r == 0:
        return x * k[0]
    if r <= n:
        xp = np.concatenate([x[:r][::-1], x, x[n - r :][::-1]], axis=0)
    else:  # a tiny axis: the reflection repeats
        idx = np.mod(np.arange(-r, n + r), 2 * n)
        xp = x[np.where(idx >= n, 2 * n - 1 - idx, idx)]
    out = k[r] * x
    for t in range(r):
        out += k[t] * (xp[t : t + n] + xp[2 * r - t : 2 * r - t + n])
    return out


def gaussian_filter(x: np.ndarray, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Separable Gaussian blur of a 2-D array (scipy.ndimage.gaussian_filter, mode "reflect")."""
    k = gaussian_kernel(sigma, truncate).astype(x.dtype if x.dtype == np.float32 else np.float64)
    y = _correlate_rows(x, k)
    return np.ascontiguousarray(_correlate_rows(np.ascontiguousarray(y.T), k).T)


def box_max(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation of a 2-D boolean mask by a (2r+1) square (max filter, edges replicated)."""
    if r <= 0:
        return mask.copy()
    out = mask.copy()
    p = np.pad(mask, r, mode="edge")
    h, w = mask.shape
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out |= p[dy : dy + h, dx : dx + w]
    return out


def box_min(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary erosion of a 2-D boolean mask by a (2r+1) square (min filter, edges replicated)."""
    return ~box_max(~mask, r)


def gradient_magnitude(x: np.ndarray) -> np.ndarray:
    """``sqrt(dx**2 + dy**2)`` with central differences (one-sided at the edges), float32."""
    gy, gx = np.gradient(x.astype(np.float32))
    return np.sqrt(gx * gx + gy * gy)


# ---- SSIM (Wang, Bovik, Sheikh, Simoncelli 2004) ------------------------------------------------


@dataclass(frozen=True)
class SSIMMaps:
    """Per-pixel SSIM and its structure term, over the full image (edges reflected)."""

    ssim: np.ndarray  # ((2 mx my + C1)(2 sxy + C2)) / ((mx^2 + my^2 + C1)(sx^2 + sy^2 + C2))
    structure: np.ndarray  # (sxy + C3) / (sx sy + C3), C3 = C2 / 2: correlation of local detail
    radius: int  # the window radius: skimage's mean SSIM ignores this many pixels at each edge


def ssim_maps(x: np.ndarray, y: np.ndarray, data_range: float = 1.0) -> SSIMMaps:
    """SSIM maps of two equal-shape 2-D images (Wang et al. 2004, eq. 13).

    Local statistics use the Gaussian window ``w`` (sigma 1.5, 11 taps, normalised):
    ``mx = w * x``, ``sx^2 = w * x^2 - mx^2``, ``sxy = w * (x y) - mx my`` (population, not sample,
    covariance), ``C1 = (K1 L)^2``, ``C2 = (K2 L)^2`` with ``K1 = 0.01``, ``K2 = 0.03``, ``L`` the
    data range.
    """
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"ssim needs two equal 2-D arrays, got {x.shape} and {y.shape}")
    # float32 when both inputs are float32 (the judge's working pair, 2x faster; errors ~1e-6),
    # else float64.
    dt = np.float32 if x.dtype == np.float32 and y.dtype == np.float32 else np.float64
    x = x.astype(dt)
    y = y.astype(dt)
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2

    def w(a: np.ndarray) -> np.ndarray:
        return gaussian_filter(a, SSIM_SIGMA, SSIM_TRUNCATE)

    mx, my = w(x), w(y)
    vx = np.maximum(w(x * x) - mx * mx, 0.0)
    vy = np.maximum(w(y * y) - my * my, 0.0)
    cxy = w(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    c3 = c2 / 2.0
    structure = (cxy + c3) / (np.sqrt(vx * vy) + c3)
    return SSIMMaps(s, structure, int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5))


def ssim(x: np.ndarray, y: np.ndarray, data_range: float = 1.0) -> float:
    """Mean SSIM of two 2-D images over the pixels at least one window radius from the edges.

    The value ``skimage.metrics.structural_similarity(x, y, data_range=..., gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False)`` returns.
    """
    m = ssim_maps(x, y, data_range)
    r = m.radius
    return float(m.ssim[r:-r, r:-r].mean())


# ---- alignment ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alignment:
    """Where the edited image sits on the source: ``x_e = ax * x_s + bx``, ``y_e = ay * y_s + by``.

    Coordinates are pixel edges (0 .. width) in each image's own native pixels. The overlap of
    the two frames, in source pixels, is ``rect = (left, top, right, bottom)``.
    """

    ax: float
    bx: float
    ay: float
    by: float
    rect: tuple[float, float, float, float]
    coverage: float  # overlap area / source area
    kind: str  # "identity" (same size), "stretch" (resized onto the frame), "shift", "zoom"
    ncc: float  # gradient-map correlation at the chosen placement
    ncc_stretch: float  # ... and at the plain stretch

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "coverage": round(self.coverage, 4),
            "scale": [round(1.0 / self.ax, 4), round(1.0 / self.ay, 4)],
            "offset": [round(-self.bx / self.ax, 2), round(-self.by / self.ay, 2)],
            "ncc": round(self.ncc, 4),
            "ncc_stretch": round(self.ncc_stretch, 4),
        }


def _align_map(y: np.ndarray) -> np.ndarray:
    """The registration signal of a luma plane: gradient magnitude after a light blur, zero mean."""
    g = gradient_magnitude(gaussian_filter(y, 1.0)).astype(np.float64)
    return g - g.mean()


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    d = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / d) if d > 1e-12 else 0.0


def _fast_len(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n (FFT lengths pocketfft does fastest)."""
    best = 1 << (n - 1).bit_length()
    f5 = 1
    while f5 < best:
        f35 = f5
        while f35 < best:
            m = f35
            while m < n:
                m *= 2
            best = min(best, m)
            f35 *= 3
        f5 *= 5
    return best


def _peaks(corr: np.ndarray, n: int, guard: int = 2) -> list[tuple[int, int]]:
    """Positions of the ``n`` highest local maxima (each suppressing a (2 guard + 1) square)."""
    c = corr.copy()
    out = []
    for _ in range(n):
        i, j = np.unravel_index(int(np.argmax(c)), c.shape)
        out.append((int(i), int(j)))
        c[max(0, i - guard) : i + guard + 1, max(0, j - guard) : j + guard + 1] = -np.inf
    return out


def _phase_correlation(src: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """Phase correlation of two zero-padded maps; entry (dy, dx) (indices mod the padded shape)
    peaks where ``moving`` placed with its origin at (dy, dx) matches ``src``."""
    shape = (_fast_len(src.shape[0] + moving.shape[0]), _fast_len(src.shape[1] + moving.shape[1]))
    cross = np.fft.rfft2(src, shape) * np.conj(np.fft.rfft2(moving, shape))
    corr = np.fft.irfft2(cross / (np.abs(cross) + 1e-9), shape)
    return gaussian_filter(corr, 0.7)  # a sub-pixel true offset splits its peak over neighbours


def _signed(i: int, n: int, limit: int) -> int:
    return i - n if i > limit else i


def _place_ncc(src: np.ndarray, moving: np.ndarray, dy: int, dx: int) -> tuple[float, float]:
    """NCC of ``moving`` placed at (dy, dx) on ``src`` over their overlap, and the overlap fraction."""
    sh, sw = src.shape
    mh, mw = moving.shape
    y0, y1 = max(0, dy), min(sh, dy + mh)
    x0, x1 = max(0, dx), min(sw, dx + mw)
    if y1 - y0 < 4 or x1 - x0 < 4:
        return -1.0, 0.0
    frac = (y1 - y0) * (x1 - x0) / (sh * sw)
    return _ncc(src[y0:y1, x0:x1], moving[y0 - dy : y1 - dy, x0 - dx : x1 - dx]), frac


def _subpixel(corr: np.ndarray, i: int, j: int) -> tuple[float, float]:
    """Parabolic refinement of a correlation peak at (i, j) (indices wrap)."""
    h, w = corr.shape

    def vertex(a: float, b: float, c: float) -> float:
        d = a - 2 * b + c
        return float(np.clip(0.5 * (a - c) / d, -0.5, 0.5)) if d < 0 else 0.0

    di = vertex(corr[(i - 1) % h, j], corr[i, j], corr[(i + 1) % h, j])
    dj = vertex(corr[i, (j - 1) % w], corr[i, j], corr[i, (j + 1) % w])
    return di, dj


def align(source: np.ndarray, edited: np.ndarray) -> Alignment:
    """Register ``edited`` onto ``source`` (scale + translation, no rotation).

    Both are reduced to gradient-magnitude maps of their luma, the source's with long side
    :data:`ALIGN_SIDE`. Candidates: the plain stretch of the edited onto the source frame, the
    edited at the source's pixel scale, and uniform scales around the aspect-keeping fit
    (:data:`ALIGN_ZOOMS`); each is placed at the 3 highest peaks of its phase correlation with
    the source map and scored by the normalised cross-correlation (NCC) of the maps over the
    overlap. The stretch is kept unless another placement covers at least
    :data:`ALIGN_MIN_OVERLAP` of the frame, has NCC >= :data:`ALIGN_MIN_NCC` and beats the
    stretch by :data:`ALIGN_MARGIN`; a winning placement is then refined at twice the map size
    (parabolic sub-pixel peak). Deterministic (float64 FFTs, fixed candidate order).
    """
    hs, ws = source.shape[:2]
    he, we = edited.shape[:2]
    sw, sh = fit_size(ws, hs, ALIGN_SIDE)
    l_src, l_edt = luma(source), luma(edited)
    src_map = _align_map(resize(l_src, (sw, sh)))
    # One shrink of the edited luma to about twice the largest candidate size, reused below.
    ew, eh = fit_size(we, he, 4 * ALIGN_SIDE)
    l_edt_small = resize(l_edt, (ew, eh))
    ncc_stretch = _ncc(src_map, _align_map(resize(l_edt_small, (sw, sh))))
    kind = "identity" if (he, we) == (hs, ws) else "stretch"
    stretch = Alignment(
        we / ws,
        0.0,
        he / hs,
        0.0,
        (0.0, 0.0, float(ws), float(hs)),
        1.0,
        kind,
        ncc_stretch,
        ncc_stretch,
    )
    if ncc_stretch >= 1.0 - ALIGN_MARGIN:
        return stretch  # nothing can beat it by the margin

    # A candidate resizes the edited map to (mw, mh) (sx = mw / we map px per edited px) and
    # places its origin at (dx, dy) on the source map, whose px are k = sw / ws source px:
    # map x = sx x_e + dx = k x_s, so x_e = (k / sx) x_s - dx / sx.
    fit = math.sqrt((sw / we) * (sh / he))
    scales = [(sw / we, sh / he), (sw / ws, sh / hs)] + [(fit * z, fit * z) for z in ALIGN_ZOOMS]
    best: tuple[float, int, int, int, int] | None = None  # (ncc, mw, mh, dy, dx)
    seen = set()
    for csx, csy in scales:
        mw, mh = max(8, round(we * csx)), max(8, round(he * csy))
        if (mw, mh) in seen or mw > 3 * sw or mh > 3 * sh:
            continue
        seen.add((mw, mh))
        moving = _align_map(resize(l_edt_small, (mw, mh)))
        corr = _phase_correlation(src_map, moving)
        for i, j in _peaks(corr, 3):
            dy, dx = _signed(i, corr.shape[0], sh), _signed(j, corr.shape[1], sw)
            if (dy, dx) == (0, 0) and (mw, mh) == (sw, sh):
                continue  # the stretch itself
            c, frac = _place_ncc(src_map, moving, dy, dx)
            if frac >= ALIGN_MIN_OVERLAP and (best is None or c > best[0]):
                best = (c, mw, mh, dy, dx)
    if best is None or best[0] < ALIGN_MIN_NCC or best[0] < ncc_stretch + ALIGN_MARGIN:
        return stretch
    # Refine the scale a little around the winner (the zoom grid is 8 % apart).
    _, mw0, mh0, _, _ = best
    for f_ in ALIGN_SCALE_STEPS:
        mw, mh = max(8, round(mw0 * f_)), max(8, round(mh0 * f_))
        moving = _align_map(resize(l_edt_small, (mw, mh)))
        corr = _phase_correlation(src_map, moving)
        for i, j in _peaks(corr, 1):
            dy, dx = _signed(i, corr.shape[0], sh), _signed(j, corr.shape[1], sw)
            c, frac = _place_ncc(src_map, moving, dy, dx)
            if frac >= ALIGN_MIN_OVERLAP and c > best[0]:
                best = (c, mw, mh, dy, dx)

    # Refine at twice the resolution around the found placement.
    c, mw, mh, dy, dx = best
    f = 2
    src2 = _align_map(resize(l_src, (f * sw, f * sh)))
    mov2 = _align_map(resize(l_edt_small if f * mw <= ew else l_edt, (f * mw, f * mh)))
    corr = _phase_correlation(src2, mov2)
    h2, w2 = corr.shape
    win = np.full_like(corr, -np.inf)
    for yy in range(f * dy - 2, f * dy + 3):
        for xx in range(f * dx - 2, f * dx + 3):
            win[yy % h2, xx % w2] = corr[yy % h2, xx % w2]
    i, j = np.unravel_index(int(np.argmax(win)), corr.shape)
    di, dj = _subpixel(corr, int(i), int(j))
    dy2 = (_signed(int(i), h2, f * sh) + di) / f
    dx2 = (_signed(int(j), w2, f * sw) + dj) / f
    c2, _ = _place_ncc(src2, mov2, round(f * dy2), round(f * dx2))
    sx, sy = mw / we, mh / he
    ax, ay = (sw / ws) / sx, (sh / hs) / sy
    bx, by = -dx2 / sx, -dy2 / sy
    left, top = max(0.0, -bx / ax), max(0.0, -by / ay)
    right, bottom = min(float(ws), (we - bx) / ax), min(float(hs), (he - by) / ay)
    if right - left < 8 or bottom - top < 8:
        return stretch
    coverage = (right - left) * (bottom - top) / (ws * hs)
    same_scale = all(
        math.isclose(a, b, rel_tol=0.02) for a, b in ((ax, we / ws), (ay, he / hs))
    ) or all(math.isclose(a, 1.0, rel_tol=0.02) for a in (ax, ay))
    kind = "shift" if same_scale else "zoom"
    return Alignment(
        ax, bx, ay, by, (left, top, right, bottom), float(coverage), kind, max(c, c2), ncc_stretch
    )


# ---- the prepared pair --------------------------------------------------------------------------


@dataclass
class Pair:
    """A source/edited pair ready to measure (see the module docstring)."""

    source: np.ndarray  # native source, float32 (Hs, Ws, 3)
    edited: np.ndarray  # native edited, float32 (He, We, 3)
    alignment: Alignment
    source_w: np.ndarray  # working pair: the overlap, long side <= WORK_SIDE
    edited_w: np.ndarray
    source_d: np.ndarray  # detail pair: centre window of the overlap at source resolution
    edited_d: np.ndarray
    edited_own: np.ndarray  # a window of the edited image's own pixels (8-aligned origin)
    source_own: np.ndarray  # the same for the source
    nonfinite: float  # fraction of non-finite samples in the edited input (replaced by 0)


def _own_window(x: np.ndarray, side: int) -> np.ndarray:
    """A centre window of ``x`` at most ``side`` square whose origin is a multiple of 8."""
    h, w = x.shape[:2]
    ch, cw = min(h, side), min(w, side)
    y0 = ((h - ch) // 2) // 8 * 8
    x0 = ((w - cw) // 2) // 8 * 8
    return x[y0 : y0 + ch, x0 : x0 + cw]


def prepare_pair(source: object, edited: object) -> Pair:
    """Convert, align and resample a pair once (see :class:`Pair`)."""
    src, bad_src = as_rgb(source, "source image")
    edt, bad = as_rgb(edited, "edited image")
    if bad_src > 0.0:
        raise PbmlxError(
            f"The source image has {bad_src:.1%} non-finite values; judge needs a real photo."
        )
    al = align(src, edt)
    left, top, right, bottom = al.rect

    def edited_box(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
        return (al.ax * x0 + al.bx, al.ay * y0 + al.by, al.ax * x1 + al.bx, al.ay * y1 + al.by)

    ww, wh = fit_size(right - left, bottom - top, WORK_SIDE)
    source_w = resize(src, (ww, wh), (left, top, right, bottom))
    edited_w = resize(edt, (ww, wh), edited_box(left, top, right, bottom))

    # Detail window: integer source pixels in the middle of the overlap.
    il, it = math.ceil(left), math.ceil(top)
    ir, ib = math.floor(right), math.floor(bottom)
    dw, dh = min(DETAIL_SIDE, ir - il), min(DETAIL_SIDE, ib - it)
    dl = il + (ir - il - dw) // 2
    dt = it + (ib - it - dh) // 2
    source_d = src[dt : dt + dh, dl : dl + dw].copy()
    edited_d = resize(edt, (dw, dh), edited_box(dl, dt, dl + dw, dt + dh))
    return Pair(
        src,
        edt,
        al,
        source_w,
        edited_w,
        source_d,
        edited_d,
        _own_window(edt, DETAIL_SIDE),
        _own_window(src, DETAIL_SIDE),
        bad,
    )


# ---- tone, colour and structure statistics (pairwise) -------------------------------------------


CHROMA_FLOOR = 0.02  # YIQ chroma below which a pixel's hue is mostly noise
STATS_STRIDE = 2  # tone/colour statistics are means: every 2nd pixel each way gives the same


def radial_distance(h: int, w: int) -> np.ndarray:
    """Distance of each pixel centre from the image centre over the half-diagonal (0 .. ~1)."""
    hd = math.hypot(w / 2.0, h / 2.0)
    dy = (np.arange(h) + 0.5 - h / 2.0) / hd
    dx = (np.arange(w) + 0.5 - w / 2.0) / hd
    return np.sqrt(dy[:, None] ** 2 + dx[None, :] ** 2)


# Each statistic: its group (what kind of change it sees) and its meaning.
STATS: dict[str, tuple[str, str]] = {
    "mean": ("tone", "mean luma"),
    "std": ("tone", "luma standard deviation (global contrast)"),
    "p02": ("tone", "2nd-percentile luma (black point)"),
    "p98": ("tone", "98th-percentile luma (white point)"),
    "dark": ("tone", "mean luma change over the source's darkest third"),
    "mid": ("tone", "mean luma change over the source's middle third"),
    "bright": ("tone", "mean luma change over the source's brightest third"),
    "saturation": ("colour", "mean HSV saturation (max - min) / max"),
    "temperature": ("colour", "mean chromaticity r - b (warm +, cool -)"),
    "tint": ("colour", "mean chromaticity g - (r + b) / 2 (green +, magenta -)"),
    "hue": ("colour", "chroma-weighted mean hue rotation in YIQ, in half turns"),
    "hue_concentration": ("colour", "how much all hues agree (sepia, toning), 0..1"),
    "inversion": ("structure", "(1 - corr(L_edited, L_source)) / 2: 0 kept, 1 inverted"),
    "vignette": ("vignette", "darkening of the corners against the centre (log ratio)"),
    "detail_gain": ("detail", "regression slope of edited on source high-pass, minus 1"),
    "new_detail": ("detail", "rms high-pass content not explained by the source's (noise, grain)"),
}


@dataclass(frozen=True)
class Profile:
    """Per-image quantities behind :func:`tone_colour_stats` (computed once per image)."""

    luma: np.ndarray  # float32, every STATS_STRIDE-th pixel
    mean: float
    std: float
    p02: float
    p98: float
    saturation: float
    temperature: float
    tint: float
    i: np.ndarray  # YIQ chroma axes, float32
    q: np.ndarray
    chroma: np.ndarray  # hypot(i, q)
    concentration: float
    corner: float  # mean luma where radial distance > VIGNETTE_CORNER
    centre: float  # ... and < VIGNETTE_CENTRE


def profile(x: np.ndarray) -> Profile:
    """The :class:`Profile` of an (H, W, 3) working image."""
    x = np.ascontiguousarray(x[::STATS_STRIDE, ::STATS_STRIDE], dtype=np.float32)
    y = luma(x)
    p02, p98 = np.percentile(y, [2, 98])
    mx, mn = x.max(axis=-1), x.min(axis=-1)
    lit = mx > 0.05  # saturation is undefined in the blacks
    sat = float(((mx - mn)[lit] / mx[lit]).mean()) if lit.any() else 0.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    tot = np.maximum(r + g + b, 1e-3)
    temp = float(((r - b) / tot).mean())
    tint = float(((g - 0.5 * (r + b)) / tot).mean())
    i = 0.5959 * r - 0.2746 * g - 0.3213 * b  # NTSC YIQ (the engine's hue rotation plane)
    q = 0.2115 * r - 0.5227 * g + 0.3112 * b
    c = np.hypot(i, q)
    ctot = float(c.sum(dtype=np.float64))
    # A chroma floor in the denominator: a grey image's hues are noise and must not agree.
    conc = math.hypot(float(i.sum(dtype=np.float64)), float(q.sum(dtype=np.float64))) / (
        ctot + CHROMA_FLOOR * c.size
    )
    rad = radial_distance(*y.shape)
    return Profile(
        y,
        float(y.mean(dtype=np.float64)),
        float(y.std(dtype=np.float64)),
        float(p02),
        float(p98),
        sat,
        temp,
        tint,
        i,
        q,
        c,
        conc,
        float(y[rad > VIGNETTE_CORNER].mean(dtype=np.float64)),
        float(y[rad < VIGNETTE_CENTRE].mean(dtype=np.float64)),
    )


def tone_colour_stats(s: np.ndarray | Profile, e: np.ndarray | Profile) -> dict[str, float]:
    """The tone, colour, structure and vignette statistics of the change from ``s`` to ``e``.

    Two equal-shape (H, W, 3) working images (or their :func:`profile`); every value is a
    *change*, 0 when ``e == s`` (see :data:`STATS`). Per-image quantities are differenced;
    the pairwise ones are: ``dark/mid/bright`` = mean of ``L_e - L_s`` over the source's luma
    terciles; ``hue`` = the circular mean of the per-pixel YIQ hue rotation weighted by
    ``min(chroma_s, chroma_e)``; ``inversion = (1 - corr(L_s, L_e)) / 2``; ``vignette =
    -(log((corner_e + .02) / (corner_s + .02)) - log((centre_e + .02) / (centre_s + .02)))``.
    """
    ps = s if isinstance(s, Profile) else profile(s)
    pe = e if isinstance(e, Profile) else profile(e)
    out: dict[str, float] = {
        "mean": pe.mean - ps.mean,
        "std": pe.std - ps.std,
        "p02": pe.p02 - ps.p02,
        "p98": pe.p98 - ps.p98,
    }
    ls, le = ps.luma, pe.luma
    t1, t2 = np.percentile(ls, [100 / 3, 200 / 3])
    d = le - ls
    for name, sel in (("dark", ls <= t1), ("mid", (ls > t1) & (ls <= t2)), ("bright", ls > t2)):
        out[name] = float(d[sel].mean(dtype=np.float64)) if sel.any() else 0.0
    out["saturation"] = pe.saturation - ps.saturation
    out["temperature"] = pe.temperature - ps.temperature
    out["tint"] = pe.tint - ps.tint
    # Rotation of each pixel's (I, Q) vector: angle of conj(z_s) z_e, weighted by min chroma.
    re_ = ps.i * pe.i + ps.q * pe.q
    im_ = ps.i * pe.q - ps.q * pe.i
    mag = np.maximum(ps.chroma * pe.chroma, 1e-12)
    wgt = np.minimum(ps.chroma, pe.chroma)
    sw_ = float((wgt * im_ / mag).sum(dtype=np.float64))
    cw_ = float((wgt * re_ / mag).sum(dtype=np.float64))
    # The engine turns (I, Q) by -theta for a positive hue amount: report the engine's sign.
    # Shrunk towards 0 where little of the picture has colour (a grey image has no hue to turn).
    confidence = float(wgt.sum(dtype=np.float64)) / (
        float(wgt.sum(dtype=np.float64)) + CHROMA_FLOOR * wgt.size
    )
    out["hue"] = (
        -math.atan2(sw_, cw_) / math.pi * confidence if (abs(sw_) + abs(cw_)) > 1e-9 else 0.0
    )
    out["hue_concentration"] = pe.concentration - ps.concentration
    if ps.std * pe.std > 1e-9:
        cov = float(((ls - ps.mean) * (le - pe.mean)).mean(dtype=np.float64))
        out["inversion"] = (1.0 - cov / (ps.std * pe.std)) / 2.0
    else:
        out["inversion"] = 0.0 if pe.std == ps.std else 0.5
    eps = 0.02
    out["vignette"] = -(
        math.log((pe.corner + eps) / (ps.corner + eps))
        - math.log((pe.centre + eps) / (ps.centre + eps))
    )
    return out


def highpass(y: np.ndarray) -> np.ndarray:
    """``L - gaussian(L, DETAIL_SIGMA)``: the pixel-level detail of a luma plane (float64)."""
    y = y.astype(np.float64)
    return y - gaussian_filter(y, DETAIL_SIGMA)


GAIN_BLOCK = 4  # px: tone gain is read from means of 4x4 blocks (a 1-2 px blur barely moves it)
GAIN_MIN_CORR = 0.8  # below this low-pass correlation the pair is not a tone mapping: gain 1
GAIN_FULL_CORR = 0.95  # ... and from this one on, the fitted gain counts in full


def _block_means(y: np.ndarray, k: int) -> np.ndarray:
    h, w = (y.shape[0] // k) * k, (y.shape[1] // k) * k
    return y[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3))


def tone_gain(s: np.ndarray, e: np.ndarray) -> float:
    """The local contrast gain a global tone mapping applied: the slope ``a`` of the least-squares
    line ``low(L_e) = a low(L_s) + c`` over the blocks clipped in neither image, ``low`` the
    means of :data:`GAIN_BLOCK`-pixel square blocks (equal-shape (H, W, 3) images).

    A global tone mapping ``T`` scales pixel-level detail and noise by its slope, ``hp(T(L)) ~
    T'(L) hp(L)``: multiplying the values by 1.2 (a brightness scaling) makes every edge and
    every noise grain 1.2x as large without adding noise or sharpening anything. Detail and
    noise are therefore compared to the source's *scaled by ``a``* (:func:`detail_stats`,
    :func:`detail_change`). When the low-passes do not correlate (another picture, a restyle)
    there is no tone mapping to speak of: ``a`` is blended towards 1 as the correlation ``rho``
    falls from :data:`GAIN_FULL_CORR` to :data:`GAIN_MIN_CORR`, ``1 + t (a - 1)`` with ``t =
    clip((|rho| - 0.8) / 0.15, 0, 1)``. ``a`` may be negative (an inversion).
    """
    k = GAIN_BLOCK
    ls = _block_means(luma(s).astype(np.float64), k)
    le = _block_means(luma(e).astype(np.float64), k)
    keep = _block_means((~(_clipped(s) | _clipped(e))).astype(np.float64), k) == 1.0
    if int(keep.sum()) < 16:
        return 1.0
    ls, le = ls[keep], le[keep]
    ls = ls - ls.mean()
    le = le - le.mean()
    vs, ve = float(ls @ ls), float(le @ le)
    if vs < 1e-12 or ve < 1e-12:
        return 1.0
    cov = float(ls @ le)
    a = cov / vs
    corr = abs(cov) / math.sqrt(vs * ve)
    t = min(1.0, max(0.0, (corr - GAIN_MIN_CORR) / (GAIN_FULL_CORR - GAIN_MIN_CORR)))
    return 1.0 + t * (a - 1.0)


def _clipped(x: np.ndarray) -> np.ndarray:
    """Pixels with a channel at 0 or 1 (within half an 8-bit level)."""
    return (x <= 0.5 / 255.0).any(axis=-1) | (x >= 254.5 / 255.0).any(axis=-1)


def unclipped(x: np.ndarray, r: int = 2) -> np.ndarray:
    """Pixels at least ``r`` px away from any pixel with a channel at 0 or 1 (within half an
    8-bit level): where detail can still be seen, and its high-pass is not cut by a clip."""
    return ~box_max(_clipped(x), r)


def detail_stats(s: np.ndarray, e: np.ndarray, gain: float | None = None) -> dict[str, float]:
    """Pixel-level detail change on the detail pair (equal-shape (H, W, 3) images).

    With ``hs``, ``he`` the high-passes of the two lumas and ``a`` the pair's tone gain
    (``gain``, else :func:`tone_gain` of this pair; a part of a pair takes the whole pair's): ``detail_gain = b / a - 1`` where ``b = <he, hs> / <hs, hs>``
    (sharpening > 0, blur < 0; a pure tone mapping, which scales detail by ``a``, 0);
    ``new_detail = rms(he - b hs)`` minus one 8-bit level in quadrature (content with no
    counterpart in the source: noise, grain, blocking, a different picture), floored at 0.
    Both over the pixels clipped in neither image (:func:`unclipped`, all pixels if fewer than
    64 are left), as in :func:`detail_change`: a clipped area has lost its detail to the clip,
    which the quality criterion reports, and a brightening that clips was read as detail lost.
    """
    hs, he = highpass(luma(s)), highpass(luma(e))
    keep = unclipped(s) & unclipped(e)
    if int(keep.sum()) >= 64:
        hs, he = hs[keep], he[keep]
    ess = float((hs * hs).mean())
    if ess < 1e-12:
        return {
            "detail_gain": 0.0,
            "new_detail": float(np.sqrt(max(0.0, (he * he).mean() - NOISE_FLOOR**2))),
        }
    b = float((he * hs).mean()) / ess
    res = he - b * hs
    new = math.sqrt(max(0.0, float((res * res).mean()) - NOISE_FLOOR**2))
    a = tone_gain(s, e) if gain is None else gain
    # |a| floored: a picture mapped to nearly one grey has no detail left to compare.
    a = math.copysign(max(abs(a), 0.05), a)
    return {"detail_gain": b / a - 1.0, "new_detail": new}


DETAIL_EPS = 0.25 / 255.0  # a quarter level: keeps log ratios of near-flat images finite


def detail_change(s: np.ndarray, e: np.ndarray, gain: float | None = None) -> dict[str, float]:
    """How pixel-level sharpness and noise changed from ``s`` to ``e`` (equal shapes), net of
    the pair's tone gain ``a`` (:func:`tone_gain`), in octaves (log2 ratios):

    * ``sharpness = log2((hf(e) + eps) / (|a| hf(s) + eps))``, ``hf`` the rms luma high-pass
      (:func:`hf_amplitude`) over the pixels clipped in neither image (:func:`unclipped`: a
      clipped area has no detail, and that is clipping's defect, not blur);
    * ``noise = log2((sigma(e) + eps) / (|a| sigma(s) + eps))``, ``sigma`` the noise level
      (:func:`noise_sigma`) of each image on its own flattest half (:func:`flat_mask`);

    ``eps`` = :data:`DETAIL_EPS`. A pure scaling of the values gives 0 for both. ``gain``:
    ``a`` if already known. Also returns ``gain`` = ``|a|``, ``noise_source`` and
    ``noise_edited`` (the two sigmas).
    """
    a = abs(tone_gain(s, e) if gain is None else gain)
    keep = unclipped(s) & unclipped(e)
    if int(keep.sum()) < 64:
        keep = np.ones(keep.shape, bool)
    hs, he = highpass(luma(s))[keep], highpass(luma(e))[keep]
    hf_s, hf_e = float(np.sqrt((hs * hs).mean())), float(np.sqrt((he * he).mean()))
    n_s = noise_sigma(s, flat_mask(s))
    n_e = noise_sigma(e, flat_mask(e))
    eps = DETAIL_EPS
    return {
        "gain": a,
        "sharpness": math.log2((hf_e + eps) / (a * hf_s + eps)),
        "noise": math.log2((n_e + eps) / (a * n_s + eps)),
        "noise_source": n_s,
        "noise_edited": n_e,
    }


def hf_amplitude(x: np.ndarray) -> float:
    """rms of the luma high-pass of an (H, W, 3) image (its pixel-level sharpness)."""
    h = highpass(luma(x))
    return float(np.sqrt((h * h).mean()))


def noise_sigma(x: np.ndarray, flat: np.ndarray | None = None) -> float:
    """Noise standard deviation of an image's luma (Immerkaer 1996, "Fast noise variance
    estimation"): ``sigma = sqrt(pi / 2) / 6 * mean |L * N|`` with the Laplacian-difference
    kernel ``N = [[1, -2, 1], [-2, 4, -2], [1, -2, 1]]``, which cancels any local plane, so
    smooth image content does not count. ``flat`` (a boolean mask of the interior pixels,
    shape (H-2, W-2)) restricts the mean to low-detail pixels, where edges cannot leak in.
    """
    y = luma(x).astype(np.float64)
    n = (
        y[:-2, :-2] - 2 * y[:-2, 1:-1] + y[:-2, 2:]
        - 2 * y[1:-1, :-2] + 4 * y[1:-1, 1:-1] - 2 * y[1:-1, 2:]
        + y[2:, :-2] - 2 * y[2:, 1:-1] + y[2:, 2:]
    )  # fmt: skip
    a = np.abs(n)
    if flat is not None and flat.any():
        a = a[flat]
    return float(math.sqrt(math.pi / 2.0) / 6.0 * a.mean())


def flat_mask(x: np.ndarray, fraction: float = 0.5) -> np.ndarray:
    """The interior pixels (shape (H-2, W-2)) in the lowest ``fraction`` of blurred gradient."""
    g = gradient_magnitude(gaussian_filter(luma(x), 1.0))[1:-1, 1:-1]
    return g <= np.quantile(g, fraction)


def clipped_fraction(x: np.ndarray) -> float:
    """Fraction of pixels with a channel at 0 or 1 (within half an 8-bit level)."""
    lo = (x <= 0.5 / 255.0).any(axis=-1)
    hi = (x >= 254.5 / 255.0).any(axis=-1)
    return float((lo | hi).mean())


def blockiness(x: np.ndarray) -> float:
    """JPEG 8x8 blocking: ``max_p D_p / median_p D_p - 1`` over the 8 grid phases ``p``.

    ``D_p`` is the mean absolute luma difference between neighbouring columns ``8k + p - 1``
    and ``8k + p`` (and the same for rows, added). A block-coded image has one phase with
    larger steps (its block boundaries); a natural or resampled image has none (about 0).
    """
    y = luma(x).astype(np.float64)
    dh = np.abs(np.diff(y, axis=1)).mean(axis=0)  # between column j and j + 1
    dv = np.abs(np.diff(y, axis=0)).mean(axis=1)
    if len(dh) < 16 or len(dv) < 16:
        return 0.0
    ph = np.array([dh[p::8].mean() for p in range(8)])
    pv = np.array([dv[p::8].mean() for p in range(8)])
    d = ph + pv
    med = float(np.median(d))
    return float(d.max() / med - 1.0) if med > 1e-9 else 0.0


def banding(x: np.ndarray, smooth: np.ndarray) -> float | None:
    """Colour banding: the fraction of 8-bit luma levels inside the smooth region's 1-99 %
    range that lie in runs of 2 or more empty levels (posterised gradients leave such gaps;
    a contrast stretch leaves single-level gaps, which do not count). ``smooth`` is a boolean
    mask of the pixels to look at. None when there are fewer than :data:`BANDING_MIN_PIXELS`.
    """
    if int(smooth.sum()) < BANDING_MIN_PIXELS:
        return None
    v = np.rint(luma(x)[smooth] * 255.0).astype(np.int64)
    lo, hi = np.percentile(v, [1, 99])
    lo, hi = int(lo), int(hi)
    if hi - lo < 4:
        return 0.0
    v = v[(v >= lo) & (v <= hi)]
    hist = np.bincount(v - lo, minlength=hi - lo + 1)
    empty = hist == 0
    # Length of the empty run each level belongs to.
    gap = 0
    count = 0
    for is_empty in np.append(empty, False):
        if is_empty:
            gap += 1
        else:
            if gap >= 2:
                count += gap
            gap = 0
    return count / float(hi - lo + 1)


def smooth_region(x: np.ndarray) -> np.ndarray:
    """Pixels where ``x`` varies slowly but does vary: blurred luma gradient below 1.5 levels
    per pixel, and not in the clipped ends. Banding shows there (skies, walls, skin)."""
    y = luma(x)
    g = gradient_magnitude(gaussian_filter(y, 1.0))
    return (g < 1.5 / 255.0) & (y > 4 / 255.0) & (y < 251 / 255.0)


TILING_SIDE = 256  # repeats of a region are as visible at this size; the FFTs cost 1/4
# Local contrast normalisation before the autocorrelation: a smooth spatial gain (a vignette,
# a graduated filter) reweights the picture's parts and moved the old score by up to +0.05 on a
# photo with a strong pattern (rocket, strong vignette); normalised, it moves by 0.02 at most.
TILING_NORM_SIGMA = 4.0  # px at TILING_SIDE: the window of the local rms
TILING_NORM_FLOOR = 0.25  # x the global rms: flat areas are not amplified into "patterns"


def tiling(x: np.ndarray) -> float:
    """Repeated-pattern strength: the highest autocorrelation of the luma high-pass at lags of
    at least :data:`TILING_MIN_LAG` of the image side (1 for an exact repeat, ~0 for a photo).

    On the luma reduced to long side :data:`TILING_SIDE`, high-passed and divided by its local
    contrast, ``h / (sqrt(G_s * h^2) + f rms(h))`` (``G_s`` a Gaussian of sigma
    :data:`TILING_NORM_SIGMA`, ``f`` = :data:`TILING_NORM_FLOOR`), so that a smooth spatial
    gain such as a vignette does not read as a pattern. The autocorrelation is the inverse
    FFT of the power spectrum of the zero-padded high-pass; lag (dy, dx) is divided by its
    overlap ``(H - |dy|)(W - |dx|)`` and only lags overlapping a quarter of the image count.
    """
    y = luma(x)
    y = resize(y, fit_size(y.shape[1], y.shape[0], TILING_SIDE))
    h = highpass(y)
    h = h - h.mean()
    local = np.sqrt(gaussian_filter(h * h, TILING_NORM_SIGMA))
    h = h / (local + TILING_NORM_FLOOR * math.sqrt(float((h * h).mean())) + 1e-12)
    h = h - h.mean()
    H, W = h.shape
    shape = (_fast_len(2 * H), _fast_len(2 * W))
    f = np.fft.rfft2(h, shape)
    acf = np.fft.irfft2(f * np.conj(f), shape)
    zero = acf[0, 0] / (H * W)
    if zero <= 1e-12:
        return 0.0
    ly = np.minimum(np.arange(shape[0]), shape[0] - np.arange(shape[0]))[:, None]
    lx = np.minimum(np.arange(shape[1]), shape[1] - np.arange(shape[1]))[None, :]
    count = np.maximum(H - ly, 0) * np.maximum(W - lx, 0)
    valid = count > 0.25 * H * W
    far = (ly >= TILING_MIN_LAG * H) | (lx >= TILING_MIN_LAG * W)
    sel = valid & far
    if not sel.any():
        return 0.0
    norm = acf[sel] / count[sel] / zero
    return float(np.clip(norm.max(), 0.0, 1.0))


# ---- change mask and seams ----------------------------------------------------------------------


def global_colour_residual(s: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Per-pixel size of the part of the change that no global colour mapping explains.

    The mapping: source colours are binned into :data:`COLOR_BINS`^3 cells; within each cell
    the edited colour is an affine function of the source colour, fitted by least squares
    (ridge-regularised towards the one affine map fitted on all pixels), on every 2nd pixel
    each way. Any global edit that is a smooth function of the pixel's colour (tone curves,
    white balance, saturation, hue, inversion, sepia) is explained; new content is not.
    Returns ``|e - f(s)|`` (RGB Euclidean over sqrt 3) for every pixel, float32 (H, W).
    """
    h, w, _ = s.shape

    def design(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        flat = a.reshape(-1, 3)
        q = np.minimum((flat * COLOR_BINS).astype(np.int64), COLOR_BINS - 1)
        cells = (q[:, 0] * COLOR_BINS + q[:, 1]) * COLOR_BINS + q[:, 2]
        ones = np.ones((len(flat), 1), np.float64)
        return np.concatenate([flat.astype(np.float64), ones], axis=1), cells

    x, cell = design(s[::2, ::2])
    y = e[::2, ::2].reshape(-1, 3).astype(np.float64)
    n_cells = COLOR_BINS**3
    g = np.linalg.solve(x.T @ x + 1e-6 * np.eye(4), x.T @ y)  # the global affine map
    # Per-cell normal equations, accumulated with bincount over the 10 + 12 products.
    xtx = np.zeros((n_cells, 4, 4))
    xty = np.zeros((n_cells, 4, 3))
    for a in range(4):
        for b in range(a, 4):
            v = np.bincount(cell, x[:, a] * x[:, b], n_cells)
            xtx[:, a, b] = v
            xtx[:, b, a] = v
        for c in range(3):
            xty[:, a, c] = np.bincount(cell, x[:, a] * y[:, c], n_cells)
    lam = 1.0  # ridge weight in pixels: a cell with few pixels follows the global map
    coef = np.linalg.solve(xtx + lam * np.eye(4), xty + lam * g[None])
    x, cell = design(s)
    pred = np.einsum("nk,nkc->nc", x, coef[cell])
    r = np.sqrt(((e.reshape(-1, 3) - pred) ** 2).sum(axis=1) / 3.0)
    return r.reshape(h, w).astype(np.float32)


def change_mask(s: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The region the edit changed beyond a global colour mapping, and the smoothed residual.

    ``mask = gaussian(residual, CHANGE_SMOOTH) > CHANGE_THRESHOLD``, then opened (3x3 erosion
    and dilation) so isolated pixels do not count.
    """
    r = gaussian_filter(global_colour_residual(s, e), CHANGE_SMOOTH)
    m = r > CHANGE_THRESHOLD
    m = box_max(box_min(m, 1), 1)
    return m, r


def border_discontinuity(s: np.ndarray, e: np.ndarray, mask: np.ndarray) -> float | None:
    """Edges the edit created along the border of its change mask.

    Border band ``B`` = dilate(mask, r) minus erode(mask, r), r = :data:`BORDER_RADIUS`. With
    ``G(x)`` the per-pixel largest RGB gradient magnitude: ``mean_B max(0, G(e) - G(s)) /
    mean_all G(s)``, the new edge strength on the border in units of the source's average
    edge strength. None when there is no border (mask empty, or nearly the whole frame).
    """
    frac = float(mask.mean())
    if frac < 0.002 or frac > 0.95:
        return None
    band = box_max(mask, BORDER_RADIUS) & ~box_min(mask, BORDER_RADIUS)
    if not band.any():
        return None

    def grad(x: np.ndarray) -> np.ndarray:
        return np.max(np.stack([gradient_magnitude(x[..., c]) for c in range(3)]), axis=0)

    gs, ge = grad(s), grad(e)
    scale = float(gs.mean()) + 1e-3
    return float(np.maximum(ge[band] - gs[band], 0.0).mean() / scale)
