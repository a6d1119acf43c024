"""Geometry: the adjust ops that change which pixel is where, and often the image size.

Each geometric step of a plan is first *resolved* against the image it meets into a
:class:`Warp` (a concrete transform: ``straighten`` measures its angle there, ``resize`` its
output size), then the warp is applied. :func:`apply_warp` applies a warp to any (H, W, C) array,
so an alpha plane follows exactly the geometry of the colour it belongs to.

Conventions: pixel ``(i, j)`` (row, column) covers ``[j, j + 1] x [i, i + 1]``, its centre at
``(j + 0.5, i + 0.5)``; the image centre is ``(W / 2, H / 2)``; angles are degrees
counter-clockwise as seen on screen (the direction of ``np.rot90`` and PIL ``rotate``).

The ops (amounts as in :data:`pbmlx.adjust.specs.SPECS`):

- ``rotate a``: ``a`` is wrapped into ``(-180, 180]``. Multiples of 90 are exact transposes
  (lossless, 8-bit codes stay codes). Any other angle is a **bilinear** rotation about the centre
  onto an **expanded canvas** ``W' = ceil(W |cos a| + H |sin a| - 1e-6)``,
  ``H' = ceil(W |sin a| + H |cos a| - 1e-6)`` whose centre maps to the image centre; output
  pixel centre offset ``(u, v)`` from the canvas centre reads the source at continuous index
  ``x = W/2 - 0.5 + u cos a - v sin a``, ``y = H/2 - 0.5 + u sin a + v cos a`` (pixel centres
  at integers), bilinearly interpolated with every tap outside the image equal to the *fill*:
  white (1.0) for colour, what :mod:`pbmlx.save` flattens transparency onto, and 0
  (transparent) for alpha. (scipy ``map_coordinates(order=1, mode="grid-constant")``.)
- ``straighten 1``: :func:`detect_horizon` measures the tilt ``t`` of the dominant near-
  horizontal line (``|t| <= MAX_TILT``), then rotates by ``-t`` in **crop mode**: the output is
  the largest centred rectangle of the input's aspect ratio whose pixel centres all read inside
  the image (edge-free, no fill): ``k = min((W - 1) / (W c + H s), (H - 1) / (W s + H c))``,
  ``c = |cos t|, s = |sin t|``, size ``floor(k W) x floor(k H)``. No line found: no change.
- ``flip_horizontal 1`` / ``flip_vertical 1``: mirror left-right / top-bottom (amounts below
  0.5 do nothing).
- ``crop_aspect r``: the largest centred rectangle with width / height = ``r``: if
  ``W / H > r`` it is ``round(H r) x H`` else ``W x round(W / r)``; offsets
  ``((W - w) // 2, (H - h) // 2)``. Exact slicing.
- ``scale f``: resample to ``max(1, round(W f)) x max(1, round(H f))``; ``resize L``: the long
  side becomes ``L`` and the short one ``max(1, round(short * L / long))``. Both use PIL's
  **Lanczos** filter (``a = 3``; when shrinking the kernel is stretched by the factor, so it
  also low-passes), channel by channel in PIL's 32-bit float mode (8-bit codes as
  ``code / 255``), clipped to [0, 1]: :func:`lanczos_resample`. Outputs over
  :data:`MAX_OUTPUT_PIXELS` are refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mlx.core as mx
import numpy as np
from PIL import Image

from pbmlx.errors import PbmlxError
from pbmlx.pixels import as_unit

GEOMETRIC_OPS = frozenset(
    {"rotate", "flip_horizontal", "flip_vertical", "crop_aspect", "straighten", "scale", "resize"}
)
MAX_OUTPUT_PIXELS = 100_000_000  # the loader's default limit: an edit may not make a bigger photo
COLOUR_FILL = 1.0  # outside the rotated image: white, as save.py flattens transparency
ALPHA_FILL = 0.0  # ... and transparent in the alpha plane
MAX_TILT = 15.0  # degrees: straighten corrects horizons tilted at most this much
# Horizon detection works on a copy whose long side is at most this: a horizon is a long
# structure, and at ~1000 px one Hough bin is ~0.06 degrees over the width.
HORIZON_WORK_SIDE = 1024
HORIZON_STEP = 0.05  # degrees between Hough angles
HORIZON_EDGE_QUANTILE = 0.90  # edge pixels: the top 10 % of Sobel magnitudes ...
HORIZON_MIN_EDGE = 0.05  # ... and at least this (Sobel of values in [0, 1]): flat images have none
HORIZON_CONE = 20.0  # ... whose edge direction is within this many degrees of horizontal
HORIZON_VOTE_WINDOW = 3.0  # each edge pixel votes for angles within this of its own direction
HORIZON_MIN_PEAK_RATIO = 2.0  # the best angle's score over the median score: "a line is there"


@dataclass(frozen=True)
class Warp:
    """One resolved geometric transform.

    ``kind``: ``"rot90"`` (``k`` quarter turns counter-clockwise), ``"flip"`` (``axis`` 0:
    top-bottom, 1: left-right), ``"crop"`` (``box = (top, left, height, width)``), ``"rotate"``
    (``degrees`` onto an ``size = (height, width)`` canvas, see the module docstring) or
    ``"resample"`` (Lanczos to ``size = (height, width)``).
    """

    kind: str
    k: int = 0
    axis: int = 0
    box: tuple[int, int, int, int] = (0, 0, 0, 0)
    degrees: float = 0.0
    size: tuple[int, int] = (0, 0)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after this warp of an ``height x width`` image."""
        if self.kind == "rot90":
            return (width, height) if self.k % 2 else (height, width)
        if self.kind == "flip":
            return height, width
        if self.kind == "crop":
            return self.box[2], self.box[3]
        return self.size

    @property
    def swaps_axes(self) -> bool:
        """True when x and y trade places (an odd number of quarter turns)."""
        return self.kind == "rot90" and self.k % 2 == 1


# ---- resolving a step -------------------------------------------------------------------------


def wrap_degrees(a: float) -> float:
    """``a`` wrapped into ``(-180, 180]``."""
    w = math.fmod(float(a), 360.0)
    if w > 180.0:
        w -= 360.0
    elif w <= -180.0:
        w += 360.0
    return w


def expanded_size(height: int, width: int, degrees: float) -> tuple[int, int]:
    """The expanded canvas (H', W') of a rotation by ``degrees`` (module docstring)."""
    th = math.radians(degrees)
    c, s = abs(math.cos(th)), abs(math.sin(th))
    return (
        max(1, math.ceil(width * s + height * c - 1e-6)),
        max(1, math.ceil(width * c + height * s - 1e-6)),
    )


def cropped_size(height: int, width: int, degrees: float) -> tuple[int, int]:
    """The crop-mode output (h, w) of a rotation by ``degrees``: the largest centred
    rectangle of the input's aspect ratio whose pixel centres all read inside the image
    (module docstring)."""
    th = math.radians(degrees)
    c, s = abs(math.cos(th)), abs(math.sin(th))
    k = min((width - 1) / (width * c + height * s), (height - 1) / (width * s + height * c))
    k = max(k, 0.0)
    return max(1, math.floor(k * height)), max(1, math.floor(k * width))


def rotation_warp(height: int, width: int, degrees: float, crop: bool = False) -> Warp | None:
    """The warp of ``rotate degrees`` (crop mode: straighten's); ``None`` for no change."""
    a = wrap_degrees(degrees)
    quarter = a / 90.0
    if quarter == round(quarter):
        k = round(quarter) % 4
        return Warp("rot90", k=k) if k else None
    size = cropped_size(height, width, a) if crop else expanded_size(height, width, a)
    return Warp("rotate", degrees=a, size=size)


def resample_warp(height: int, width: int, size: tuple[int, int]) -> Warp | None:
    """A Lanczos resample to ``size``; ``None`` when it is the current size."""
    if size == (height, width):
        return None
    if size[0] * size[1] > MAX_OUTPUT_PIXELS:
        raise PbmlxError(
            f"Resizing {width}x{height} to {size[1]}x{size[0]} would make "
            f"{size[0] * size[1]:,} pixels, over the limit of {MAX_OUTPUT_PIXELS:,}."
        )
    return Warp("resample", size=size)


def crop_aspect_box(height: int, width: int, ratio: float) -> tuple[int, int, int, int]:
    """(top, left, h, w) of the largest centred rectangle with w / h = ``ratio``."""
    if width / height > ratio:
        h, w = height, min(width, max(1, round(height * ratio)))
    else:
        h, w = min(height, max(1, round(width / ratio))), width
    return (height - h) // 2, (width - w) // 2, h, w


def resolve(name: str, amount: float, img: mx.array | np.ndarray) -> Warp | None:
    """The warp that the step ``name amount`` makes of ``img`` (None: the identity)."""
    height, width = int(img.shape[0]), int(img.shape[1])
    if name == "rotate":
        return rotation_warp(height, width, amount)
    if name == "flip_horizontal":
        return Warp("flip", axis=1) if amount >= 0.5 else None
    if name == "flip_vertical":
        return Warp("flip", axis=0) if amount >= 0.5 else None
    if name == "crop_aspect":
        box = crop_aspect_box(height, width, amount)
        return None if box[2:] == (height, width) else Warp("crop", box=box)
    if name == "straighten":
        if amount < 0.5:
            return None
        tilt = detect_horizon(img)
        return None if tilt is None else rotation_warp(height, width, -tilt, crop=True)
    if name == "scale":
        size = (max(1, round(height * amount)), max(1, round(width * amount)))
        return resample_warp(height, width, size)
    if name == "resize":
        target = round(amount)
        if height >= width:
            size = (target, max(1, round(width * target / height)))
        else:
            size = (max(1, round(height * target / width)), target)
        return resample_warp(height, width, size)
    raise ValueError(f"{name!r} is not a geometric op")


# ---- applying a warp --------------------------------------------------------------------------


def apply_warp(
    img: mx.array | np.ndarray, warp: Warp, fill: float = COLOUR_FILL
) -> mx.array | np.ndarray:
    """``warp`` applied to an (H, W, C) array (any C): numpy in, numpy out; mlx in, mlx out.

    rot90, flip and crop move samples (any dtype, 8-bit codes stay codes); rotate and
    resample return float32 (codes read as ``code / 255``).
    """
    is_np = isinstance(img, np.ndarray)
    if warp.kind == "rot90":
        out = img
        for _ in range(warp.k):  # one quarter turn counter-clockwise: transpose, then flip rows
            out = (np if is_np else mx).swapaxes(out, 0, 1)[::-1]
    elif warp.kind == "flip":
        out = img[::-1] if warp.axis == 0 else img[:, ::-1]
    elif warp.kind == "crop":
        top, left, h, w = warp.box
        out = img[top : top + h, left : left + w]
    elif warp.kind == "rotate":
        out = rotate_bilinear(img, warp.degrees, warp.size, fill)
        out = np.asarray(out) if is_np else out
    elif warp.kind == "resample":
        out = lanczos_resample(np.asarray(img), warp.size)
        out = out if is_np else mx.array(out)
    else:
        raise ValueError(f"unknown warp kind {warp.kind!r}")
    if not is_np:
        return out
    out = np.ascontiguousarray(out)
    # A crop of whole rows is a contiguous view: the result must not alias the caller's array.
    return out.copy() if np.may_share_memory(out, img) else out


def apply_warps_to_plane(plane: np.ndarray, warps: list[Warp]) -> np.ndarray:
    """An (H, W) plane (alpha) through ``warps`` in order, rotations filled with
    :data:`ALPHA_FILL`; float32 out."""
    x = np.asarray(plane, dtype=np.float32)[..., None]
    for w in warps:
        x = apply_warp(x, w, fill=ALPHA_FILL)
    return np.ascontiguousarray(x[..., 0], dtype=np.float32)


def rotate_bilinear(
    img: mx.array | np.ndarray, degrees: float, size: tuple[int, int], fill: float
) -> mx.array:
    """Bilinear rotation of an (H, W, C) image by ``degrees`` onto a ``size = (H', W')``
    canvas centred on the image centre (module docstring), float32 mlx out."""
    x = mx.array(img) if isinstance(img, np.ndarray) else img
    x = x.astype(mx.float32) / 255.0 if x.dtype == mx.uint8 else x.astype(mx.float32)
    h, w, ch = x.shape
    out_h, out_w = size
    th = math.radians(degrees)
    c, s = math.cos(th), math.sin(th)
    # Source coordinates in float64 (an affine map: row and column terms added once).
    u = np.arange(out_w, dtype=np.float64) + (0.5 - out_w / 2.0)
    v = np.arange(out_h, dtype=np.float64) + (0.5 - out_h / 2.0)
    sx = (w / 2.0 - 0.5) + u[None, :] * c - v[:, None] * s
    sy = (h / 2.0 - 0.5) + u[None, :] * s + v[:, None] * c
    x0, y0 = np.floor(sx), np.floor(sy)
    fx, fy = (sx - x0).astype(np.float32), (sy - y0).astype(np.float32)
    # A one-pixel border of fill: every tap outside the image lands on it (indices are clipped
    # into the padded frame, and everything beyond the image is fill).
    padded = mx.pad(x, ((1, 1), (1, 1), (0, 0)), constant_values=fill).reshape(-1, ch)
    xi0 = np.clip(x0 + 1, 0, w + 1).astype(np.int64)
    xi1 = np.clip(x0 + 2, 0, w + 1).astype(np.int64)
    yi0 = np.clip(y0 + 1, 0, h + 1).astype(np.int64) * (w + 2)
    yi1 = np.clip(y0 + 2, 0, h + 1).astype(np.int64) * (w + 2)

    def tap(yi: np.ndarray, xi: np.ndarray) -> mx.array:
        idx = (yi + xi).astype(np.uint32).reshape(-1)
        return mx.take(padded, mx.array(idx), axis=0).reshape(out_h, out_w, ch)

    fx_m, fy_m = mx.array(fx)[..., None], mx.array(fy)[..., None]
    top = tap(yi0, xi0) + fx_m * (tap(yi0, xi1) - tap(yi0, xi0))
    bottom = tap(yi1, xi0) + fx_m * (tap(yi1, xi1) - tap(yi1, xi0))
    return top + fy_m * (bottom - top)


def lanczos_resample(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """PIL Lanczos resample of an (H, W, C) array to ``size = (H', W')``, channel by channel in
    PIL's float mode (8-bit codes read as ``code / 255``); float32 out, clipped to [0, 1]
    (Lanczos overshoots at edges).

    Not PIL's 8-bit path: it rounds and clips between its horizontal and vertical passes, up
    to ~9 codes off the exact result at strong edges (measured on skimage's coffee at 1/2).
    """
    out_h, out_w = size
    x = as_unit(img)
    planes = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(x[..., c]), "F").resize(
                (out_w, out_h), Image.Resampling.LANCZOS
            )
        )
        for c in range(x.shape[-1])
    ]
    return np.clip(np.stack(planes, axis=-1), 0.0, 1.0)


# ---- horizon detection ------------------------------------------------------------------------


def _luma_work(img: mx.array | np.ndarray) -> np.ndarray:
    """BT.601 luma in [0, 1] of a copy whose long side is at most HORIZON_WORK_SIDE (box
    filtered when shrinking, so fine texture does not alias into false lines)."""
    x = as_unit(img)
    lum = x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114
    h, w = lum.shape
    f = HORIZON_WORK_SIDE / max(h, w)
    if f < 1.0:
        size = (max(1, round(w * f)), max(1, round(h * f)))
        lum = np.asarray(Image.fromarray(lum.astype(np.float32), "F").resize(size, Image.BOX))
    return lum


def detect_horizon(img: mx.array | np.ndarray) -> float | None:
    """The tilt in degrees (counter-clockwise) of the dominant near-horizontal straight lines,
    or ``None`` when there are none: a gradient-weighted Hough (projection-profile) transform.

    On the luma of a copy at most :data:`HORIZON_WORK_SIDE` px long: Sobel gradients
    ``gx, gy`` (interior pixels), magnitude ``m = hypot(gx, gy)``, edge direction
    ``e = atan2(gx, gy)`` folded into ``[-90, 90)`` (a line of tilt ``t`` has ``e = t``).
    Edge pixels: ``m`` at least the :data:`HORIZON_EDGE_QUANTILE` quantile of ``m`` and at least
    :data:`HORIZON_MIN_EDGE`, ``|e| <= HORIZON_CONE``. A line of tilt ``t`` through ``(x, y)``
    (y down) has ``rho = x sin t + y cos t``; for each ``t`` in ``[-MAX_TILT, MAX_TILT]``
    (steps of :data:`HORIZON_STEP`), every edge pixel with ``|e - t| <= HORIZON_VOTE_WINDOW``
    adds ``m`` to the 1-px bin of ``round(rho)``, and ``S(t)`` = the sum of the squared bins
    (aligned edges pile into few bins, so ``S`` peaks where the long lines are level). The
    answer is the ``t`` maximising ``S``, if ``max S >= HORIZON_MIN_PEAK_RATIO * median S``
    (texture without lines gives a flat ``S``).
    """
    lum = _luma_work(img)
    h, w = lum.shape
    if h < 8 or w < 8:
        return None
    p = lum
    # Sobel on interior pixels: gx = d/dx (columns), gy = d/dy (rows), weights (1, 2, 1).
    gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
    gy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])
    mag = np.hypot(gx, gy)
    # The edge runs perpendicular to the gradient; the gradient's sign does not matter.
    direction = (np.degrees(np.arctan2(gx, gy)) + 90.0) % 180.0 - 90.0
    threshold = max(float(np.quantile(mag, HORIZON_EDGE_QUANTILE)), HORIZON_MIN_EDGE)
    keep = (mag >= threshold) & (np.abs(direction) <= HORIZON_CONE)
    if not keep.any():
        return None
    ys, xs = np.nonzero(keep)
    xs = xs.astype(np.float64) + 1.0  # interior index -> image column / row
    ys = ys.astype(np.float64) + 1.0
    e = direction[keep].astype(np.float64)
    weight = mag[keep].astype(np.float64)
    thetas = np.linspace(-MAX_TILT, MAX_TILT, round(2 * MAX_TILT / HORIZON_STEP) + 1)
    rho_max = math.ceil(math.hypot(h, w)) + 1
    scores = np.zeros(len(thetas))
    for i, t in enumerate(thetas):
        near = np.abs(e - t) <= HORIZON_VOTE_WINDOW
        tr = math.radians(t)
        rho = np.rint(xs[near] * math.sin(tr) + ys[near] * math.cos(tr)).astype(np.int64)
        bins = np.bincount(rho + rho_max, weights=weight[near], minlength=2 * rho_max + 1)
        scores[i] = float(np.dot(bins, bins))
    best = int(np.argmax(scores))
    if not scores[best] > 0 or scores[best] < HORIZON_MIN_PEAK_RATIO * np.median(scores):
        return None
    return float(thetas[best])
