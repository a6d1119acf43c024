"""Fit the judge's calibration maps offline, and measure them on held-out photos.

    .venv/bin/python tests/judge_fit.py [--workers 2] [--features FILE]   # refit, write both files
    .venv/bin/python tests/judge_fit.py --evaluate [--photos chelsea,moon] # held-out report only

A tool of the source checkout, not part of the ``pbmlx`` package: the runtime reads what it
writes (``pbmlx/judge/calibration.json``, through :mod:`pbmlx.judge.maps`) and never imports
it. It needs the test extra (scikit-image). ``tests/test_judge_calibration.py`` refits the maps
from the stored features and re-measures a sample; ``tests/test_judge_heldout.py`` recomputes
the held-out figures on a reduced held-out set (:data:`CI_HELDOUT_PHOTOS`) through the full
judge.

**Photos.** Real photos from ``skimage.data``, split by photo so that the held-out numbers are
on pictures the fit never saw, and at another size: :data:`FIT_PHOTOS` at long side
:data:`FIT_SIDE`, :data:`HELDOUT_PHOTOS` at :data:`HELDOUT_SIDE`.

**Edits.** For each photo and each instruction of :data:`RECIPES` (all routed to ``adjust`` by
the planner), edits of known quality are made with *independent* tools -- PIL ``ImageEnhance``
/ ``ImageFilter`` / ``ImageOps``, numpy, ``skimage.exposure`` -- never pbmlx's adjust engine
(whose output the judge uses as its yardstick). The kinds (:data:`FAMILY_LABELS`): the correct edit,
the wrong direction, an over-edit, no change, the correct edit plus heavy noise, plus blur,
saved as JPEG quality 5, shifted or cropped, an unrelated photo given the correct edit, three
artifact kinds (a tiled strip, posterisation, the edit applied to part of the frame with a hard
seam), blown highlights and half the resolution. A recipe without a sensible wrong direction or
over-edit leaves it out. Three more families give the other extents their cases: local edits
(a shaded ball or a note composited in; degraded also by a hard-edged pasted patch, a global
recolouring, a "local" edit covering most of the frame), global restyles (pencil sketch, oil
paint) and a zoom-in (layout), each made with PIL, numpy and scikit-image too.

**Labels** (:data:`FAMILY_LABELS`): ``accept`` is 1 for the correct edit only. Each criterion
gets 1, 0 or "no label" per kind: e.g. heavy noise is a compliance failure (something
unrequested moved), a preservation failure and a quality failure, but says nothing about
seams; a wrong direction fails compliance only; JPEG blocking is a quality failure, not a
seam. Compliance of the non-adjust families needs CLIP, so it has no label there. A map is
fitted on the cases that have its label.

**Stat units.** ``unit_k`` = the median, over the fit photos, of the largest change of
statistic ``k`` made by the adjust ops that target it (:data:`pbmlx.judge.criteria.TARGETS`;
graded ops before full-effect ones, :data:`FULL_EFFECT_OPS`) at their spec's moderate amount,
either sign: a "typical requested change", so that statistics of different kinds add up in
one vector (:func:`compute_stat_units`).

**Fit.** Each map is an L2-regularised logistic regression (Newton's method; ridge
on the standardised weights, not the bias; :data:`pbmlx.judge.fitting.L2`) with balanced class weights (each class carries
half the total weight, so the score does not encode how many bad examples were generated).
Every feature measures a defect, so a weight may only lower the score: a feature whose fitted
weight comes out positive is dropped and the rest refitted
(:func:`pbmlx.judge.fitting.fit_logistic`). The runtime scores relative to a defect-free edit
(``sigmoid(b + w.f) / sigmoid(b)``, the ``"defect"`` kind of :mod:`pbmlx.judge.maps`): the
fit's ``sigmoid(b) < 1`` counts the bad edits a criterion cannot see, not a flaw of the edit.

**Report.** On the held-out photos, through the full :func:`pbmlx.judge.judge`: the pairwise
ranking accuracy of the adjust family (the correct edit's overall strictly above each
degraded edit's, per photo and instruction; goal >= 0.95) and its accept/reject agreement
with the labels (goal >= 0.90; half resolution is left out of it, see
:data:`UNDECIDED_ACCEPT`). The other families are ranked too, by the labelled partial overall
(no CLIP: three criteria), without "no change", which only compliance can see
(:func:`evaluate`).

Outputs: ``pbmlx/judge/calibration.json`` (maps, units, report: what the runtime reads) and
``tests/data/judge_calibration.json`` (the same, plus the fit split's features, so the tests
refit the maps and re-measure a sample exactly). The held-out figures are not stored for the
tests to trust: CI judges :data:`CI_HELDOUT_PHOTOS` again (``--evaluate``, :func:`heldout_report`).

The CLIP compliance map
-----------------------
Not fitted: no CLIP weights are reachable where pbmlx is built, so there is no data here to
fit it on, and every verdict says ``calibrated: false`` for it. Its constants follow the
orders of magnitude reported in the literature, not checked here: the CLIP directional
similarity of successful instruction edits is roughly 0.1-0.25 in InstructPix2Pix's
evaluation (Brooks et al. 2023; the directional CLIP measure is from StyleGAN-NADA, Gal et
al. 2022), unedited or unrelated pairs sit near 0, and image-text cosines of CLIP move by a
few hundredths when an image gains what the text names (CLIPScore, Hessel et al. 2021). The
map puts 0.5 at a direction of 0.08 and 0.9 at about 0.2. Refit it on judge-bench preference
pairs with a real model before trusting its absolute values:
``pbmlx judge-bench preference.jsonl --images DIR --model CLIP --fit-clip clip.json`` fits it
(:func:`pbmlx.judge.bench.fit_clip_map`, the same logistic fit with the signs reversed: more
direction and gain may only raise the score) and writes a file that
``PBMLX_JUDGE_CALIBRATION=clip.json`` puts in force (:func:`pbmlx.judge.maps.load_params`).
"""

from __future__ import annotations

# isort: off
import pbmlx  # noqa: F401  (before mlx.core, so MLX gets its BLAS: see pbmlx/backend.py)
# isort: on

import argparse
import contextlib
import functools
import io
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from pbmlx.errors import PbmlxError
from pbmlx.judge import criteria
from pbmlx.judge import measure as m
from pbmlx.judge.core import Judge
from pbmlx.judge.fitting import fit_logistic
from pbmlx.judge.maps import FORMAT, PARAMS_PATH, LogisticMap, using

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_DATA_PATH = REPO_ROOT / "tests" / "data" / "judge_calibration.json"
GENERATED_BY = "tests/judge_fit.py"

FIT_PHOTOS = ("astronaut", "coffee", "rocket", "camera", "coins", "immunohistochemistry", "grass")
HELDOUT_PHOTOS = ("chelsea", "hubble_deep_field", "retina", "moon", "clock", "gravel")
# The reduced held-out set CI recomputes (tests/test_judge_heldout.py): a colour photo and a
# grey one (the colour instructions are left out on it), every instruction and kind of both.
CI_HELDOUT_PHOTOS = ("chelsea", "moon")
FIT_SIDE = 384
HELDOUT_SIDE = 448
GOAL_RANKING = 0.95
GOAL_AGREEMENT = 0.90


# ---- the independent edits ----------------------------------------------------------------------

Edit = Callable[[np.ndarray], np.ndarray]


def _pil(x: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8), "RGB")


def _arr(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB"), np.float32) / 255.0


def _q8(x: np.ndarray) -> np.ndarray:
    """Round to 8-bit levels, as a saved edit would be."""
    return (np.clip(np.rint(np.asarray(x, np.float64) * 255.0), 0, 255) / 255.0).astype(np.float32)


def enhance(kind: str, factor: float) -> Edit:
    """PIL ``ImageEnhance.<kind>(im).enhance(factor)``."""
    return lambda x: _arr(getattr(ImageEnhance, kind)(_pil(x)).enhance(factor))


def channel_gains(r: float, g: float, b: float) -> Edit:
    """numpy: multiply the encoded R, G, B values (a naive white balance)."""
    return lambda x: _q8(x * np.array([r, g, b], np.float32))


def _srgb_decode(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def _srgb_encode(y: np.ndarray) -> np.ndarray:
    y = np.clip(y, 0.0, 1.0)
    return np.where(y <= 0.0031308, 12.92 * y, 1.055 * y ** (1 / 2.4) - 0.055)


def linear_gain(f: float) -> Edit:
    """numpy: exposure as a gain in linear light (sRGB decode, multiply, encode)."""
    return lambda x: _q8(_srgb_encode(_srgb_decode(x) * f))


def unsharp(radius: float, percent: int) -> Edit:
    return lambda x: _arr(_pil(x).filter(ImageFilter.UnsharpMask(radius, percent, 0)))


def gaussian_blur(fraction: float) -> Edit:
    """PIL GaussianBlur with radius ``fraction`` of the long side."""
    return lambda x: _arr(_pil(x).filter(ImageFilter.GaussianBlur(fraction * max(x.shape[:2]))))


def median(size: int) -> Edit:
    return lambda x: _arr(_pil(x).filter(ImageFilter.MedianFilter(size)))


def film_grain(sigma: float) -> Edit:
    """numpy: the same Gaussian noise added to R, G and B (seeded by the image)."""

    def f(x: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(int(x.shape[0] * 7919 + x.shape[1]))
        return _q8(x + rng.normal(0.0, sigma, x.shape[:2])[..., None])

    return f


def colour_noise(sigma: float) -> Edit:
    """numpy: independent Gaussian noise per channel (a sensor-noise-like degradation)."""

    def f(x: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(int(x.shape[0] * 104729 + x.shape[1]))
        return _q8(x + rng.normal(0.0, sigma, x.shape))

    return f


def radial_vignette(strength: float, start: float = 0.3) -> Edit:
    """numpy: multiply by ``1 - strength * t^2`` with ``t`` the distance beyond ``start`` of
    the half-diagonal (negative strength lightens towards white)."""

    def f(x: np.ndarray) -> np.ndarray:
        h, w = x.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w]
        d = np.hypot((yy + 0.5 - h / 2) / (h / 2), (xx + 0.5 - w / 2) / (w / 2)) / math.sqrt(2)
        t = np.clip((d - start) / (1 - start), 0, 1) ** 2
        if strength >= 0:
            return _q8(x * (1 - strength * t)[..., None])
        return _q8(x + (-strength * t)[..., None] * (1 - x))

    return f


def colorize(black: str, white: str, mix: float = 1.0) -> Edit:
    """PIL: ``ImageOps.colorize`` of the greyscale, blended with the original by ``mix``."""

    def f(x: np.ndarray) -> np.ndarray:
        im = _pil(x)
        toned = ImageOps.colorize(ImageOps.grayscale(im), black, white).convert("RGB")
        return _arr(Image.blend(im, toned, mix))

    return f


def hsv_hue(degrees: float) -> Edit:
    """PIL: rotate the H channel of ``convert("HSV")``."""

    def f(x: np.ndarray) -> np.ndarray:
        hsv = np.asarray(_pil(x).convert("HSV")).copy()
        hsv[..., 0] = (hsv[..., 0].astype(np.int32) + round(degrees / 360 * 256)) % 256
        return _arr(Image.fromarray(hsv, "HSV"))

    return f


def tone_curve(kind: str, k: float) -> Edit:
    """numpy: lift (+k) or lower (-k) the shadows ``x + k 6.75 x (1-x)^2`` or the highlights
    ``x + k 6.75 x^2 (1-x)`` of each channel (peak change ``k`` at 1/3 or 2/3)."""

    def f(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        bump = x * (1 - x) ** 2 if kind == "shadows" else x * x * (1 - x)
        return _q8(x + k * 6.75 * bump)

    return f


def gamma(g: float) -> Edit:
    def f(x: np.ndarray) -> np.ndarray:
        from skimage import exposure

        return _q8(exposure.adjust_gamma(np.asarray(x, np.float64), g))

    return f


def remap(lo: float, hi: float) -> Edit:
    """numpy: map [0, 1] linearly onto [lo, hi] (a matte fade)."""
    return lambda x: _q8(lo + np.asarray(x, np.float64) * (hi - lo))


def stretch(p_lo: float = 2, p_hi: float = 98) -> Edit:
    def f(x: np.ndarray) -> np.ndarray:
        from skimage import exposure

        lo, hi = np.percentile(x, (p_lo, p_hi))
        return _q8(
            exposure.rescale_intensity(
                np.asarray(x, np.float64), in_range=(lo, hi), out_range=(0, 1)
            )
        )

    return f


def pil_op(name: str, *args: Any) -> Edit:
    return lambda x: _arr(getattr(ImageOps, name)(_pil(x), *args))


def chain(*edits: Edit) -> Edit:
    def f(x: np.ndarray) -> np.ndarray:
        for e in edits:
            x = e(x)
        return x

    return f


@dataclass(frozen=True)
class Recipe:
    correct: Edit
    wrong: Edit | None
    over: Edit | None
    colour: bool = False  # meaningless on a grey photo (saturation, hue, greyscale)


RECIPES: dict[str, Recipe] = {
    "brighten this picture": Recipe(
        enhance("Brightness", 1.2), enhance("Brightness", 0.8), enhance("Brightness", 2.4)
    ),
    "darken the photo": Recipe(
        enhance("Brightness", 0.8), enhance("Brightness", 1.2), enhance("Brightness", 0.25)
    ),
    "increase the contrast": Recipe(
        enhance("Contrast", 1.4), enhance("Contrast", 0.65), enhance("Contrast", 3.5)
    ),
    "reduce the contrast": Recipe(
        enhance("Contrast", 0.65), enhance("Contrast", 1.4), enhance("Contrast", 0.08)
    ),
    "make the colors more vivid": Recipe(
        enhance("Color", 1.5), enhance("Color", 0.55), enhance("Color", 4.0), colour=True
    ),
    "desaturate the photo": Recipe(
        enhance("Color", 0.55), enhance("Color", 1.5), None, colour=True
    ),
    "make it warmer": Recipe(
        channel_gains(1.1, 1.0, 0.86), channel_gains(0.9, 1.0, 1.14), channel_gains(1.6, 1.05, 0.45)
    ),
    "make it cooler": Recipe(
        channel_gains(0.9, 1.0, 1.14), channel_gains(1.1, 1.0, 0.86), channel_gains(0.45, 1.0, 1.6)
    ),
    "convert to black and white": Recipe(
        pil_op("grayscale"), enhance("Color", 1.6), None, colour=True
    ),
    "add film grain": Recipe(film_grain(0.035), median(3), film_grain(0.2)),
    "sharpen the image": Recipe(unsharp(2, 120), gaussian_blur(0.004), unsharp(2, 900)),
    "blur the image": Recipe(gaussian_blur(0.004), unsharp(2, 150), gaussian_blur(0.04)),
    "add a vignette": Recipe(
        radial_vignette(0.5), radial_vignette(-0.5), radial_vignette(1.0, 0.05)
    ),
    "give it a sepia tone": Recipe(
        colorize("#2b1a0e", "#f5e6c8", 0.85),
        colorize("#0e1a2b", "#c8e0f5", 0.85),
        colorize("#401000", "#ffa040", 1.0),
    ),
    "invert the colors": Recipe(pil_op("invert"), pil_op("solarize", 128), None),
    "increase the exposure by one stop": Recipe(
        linear_gain(2.0), linear_gain(0.5), linear_gain(8.0)
    ),
    "shift the hue": Recipe(hsv_hue(30), hsv_hue(-30), hsv_hue(150), colour=True),
    "brighten the shadows": Recipe(
        tone_curve("shadows", 0.12), tone_curve("shadows", -0.12), tone_curve("shadows", 0.6)
    ),
    "darken the highlights": Recipe(
        tone_curve("highlights", -0.12),
        tone_curve("highlights", 0.12),
        tone_curve("highlights", -0.6),
    ),
    "fade the image": Recipe(remap(0.1, 0.93), stretch(), remap(0.45, 0.6)),
    "add a magenta tint": Recipe(
        channel_gains(1.0, 0.9, 1.0), channel_gains(1.0, 1.1, 1.0), channel_gains(1.0, 0.55, 1.0)
    ),
    "brighten the midtones": Recipe(gamma(0.75), gamma(1.35), gamma(0.25)),
    "make it look vintage": Recipe(
        chain(
            colorize("#2b1a0e", "#f5e6c8", 0.4),
            remap(0.07, 0.94),
            radial_vignette(0.35),
            film_grain(0.02),
        ),
        chain(enhance("Contrast", 1.4), enhance("Color", 1.4)),
        chain(
            colorize("#2b1a0e", "#f5e6c8", 1.0),
            remap(0.3, 0.75),
            radial_vignette(0.9, 0.05),
            film_grain(0.15),
        ),
    ),
}


# ---- generative-looking edits (for the other extents), made with PIL and numpy --------------------


def _disc_layer(
    h: int, w: int, cy: float, cx: float, radius: float, rgb: tuple[float, float, float]
):
    """A shaded disc (lit from the top left) and its 1.5 px feathered alpha, float32."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    d = np.hypot(yy - cy, xx - cx)
    alpha = np.clip((radius - d) / 1.5 + 0.5, 0.0, 1.0)
    light = np.clip(
        1.0 - np.hypot(yy - (cy - 0.4 * radius), xx - (cx - 0.4 * radius)) / (1.6 * radius), 0, 1
    )
    shade = 0.35 + 0.65 * light
    layer = np.stack([c * shade for c in rgb], axis=-1)
    return layer.astype(np.float32), alpha.astype(np.float32)[..., None]


def add_ball(scale: float = 0.12) -> Edit:
    """numpy: composite a shaded red ball (feathered edge) right of centre."""

    def f(x: np.ndarray) -> np.ndarray:
        h, w = x.shape[:2]
        layer, alpha = _disc_layer(h, w, 0.58 * h, 0.62 * w, scale * min(h, w), (0.85, 0.1, 0.08))
        return _q8(x * (1 - alpha) + layer * alpha)

    return f


def _sk_gaussian(a: np.ndarray, sigma: float) -> np.ndarray:
    """scikit-image's Gaussian filter of a float plane (an independent implementation)."""
    from skimage.filters import gaussian

    return gaussian(np.asarray(a, np.float64), sigma=sigma).astype(np.float32)


def add_note(x: np.ndarray) -> np.ndarray:
    """numpy + scikit-image: a yellow note with a soft drop shadow in the upper left."""
    h, w = x.shape[:2]
    s = round(0.2 * min(h, w))
    y0, x0 = round(0.25 * h), round(0.22 * w)
    shadow = np.zeros((h, w), np.float32)
    shadow[y0 + 4 : y0 + s + 4, x0 + 4 : x0 + s + 4] = 0.45
    shadow = _sk_gaussian(shadow, 3.0)[..., None]
    out = x * (1 - shadow)
    note = np.zeros((h, w), np.float32)
    note[y0 : y0 + s, x0 : x0 + s] = 1.0
    note = _sk_gaussian(note, 0.7)[..., None]
    grad = np.linspace(1.0, 0.85, h, dtype=np.float32)[:, None, None]
    yellow = np.array([0.98, 0.88, 0.25], np.float32) * grad
    return _q8(out * (1 - note) + yellow * note)


def pasted_patch(x: np.ndarray, other: np.ndarray) -> np.ndarray:
    """A hard-edged rectangle of another photo pasted in (rows 55-80 %, columns 12-38 %): the
    seam of a careless composite."""
    h, w = x.shape[:2]
    y0, y1, x0, x1 = int(0.55 * h), int(0.8 * h), int(0.12 * w), int(0.38 * w)
    out = x.copy()
    out[y0:y1, x0:x1] = other[y0:y1, x0:x1]
    return out


def pencil_sketch(x: np.ndarray) -> np.ndarray:
    """numpy + scikit-image: the colour-dodge pencil sketch (grey / (1 - blurred inverted grey))."""
    g = np.asarray(_pil(x).convert("L"), np.float32) / 255.0
    inv = _sk_gaussian(1.0 - g, 0.015 * max(g.shape))
    sketch = np.clip(g / np.maximum(1.0 - inv, 1e-3), 0, 1)
    return _q8(np.repeat(sketch[..., None], 3, axis=-1))


def oil_paint(x: np.ndarray) -> np.ndarray:
    """PIL: mode filter (flat strokes of colour), then richer colour."""
    im = _pil(x).filter(ImageFilter.ModeFilter(5)).filter(ImageFilter.SMOOTH_MORE)
    return _arr(ImageEnhance.Color(im).enhance(1.3))


def zoom_in(x: np.ndarray) -> np.ndarray:
    """PIL: the centre 80 % (linear) enlarged back to the full size."""
    h, w = x.shape[:2]
    box = (0.1 * w, 0.1 * h, 0.9 * w, 0.9 * h)
    return _arr(_pil(x).resize((w, h), Image.Resampling.LANCZOS, box=box))


# ---- degradations and labels --------------------------------------------------------------------


def _jpeg(x: np.ndarray, quality: int = 5) -> np.ndarray:
    buf = io.BytesIO()
    _pil(x).save(buf, "JPEG", quality=quality)
    return _arr(Image.open(io.BytesIO(buf.getvalue())))


def _shift_or_crop(x: np.ndarray, crop: bool) -> np.ndarray:
    h, w = x.shape[:2]
    if crop:  # keep the lower-right 88 % (same aspect) and resize back: a zoom-in
        box = (round(0.12 * w), round(0.12 * h), w, h)
        return _arr(_pil(x).resize((w, h), Image.Resampling.LANCZOS, box=box))
    dy, dx = round(0.06 * h), round(0.08 * w)  # content moved right/down, edges repeated
    p = np.pad(x, ((dy, 0), (dx, 0), (0, 0)), mode="edge")
    return p[:h, :w].copy()


def _tiled(x: np.ndarray) -> np.ndarray:
    """The middle third (horizontal strip) filled with copies of its leftmost sixth."""
    h, w = x.shape[:2]
    y0, y1 = h // 3, 2 * h // 3
    tile = x[y0:y1, : max(8, w // 6)]
    reps = -(-w // tile.shape[1])
    out = x.copy()
    out[y0:y1] = np.tile(tile, (1, reps, 1))[:, :w]
    return out


def _seam(source: np.ndarray, edited: np.ndarray) -> np.ndarray:
    """The edit kept only in the top-left 60 % x 70 % rectangle: a hard seam."""
    h, w = source.shape[:2]
    out = source.copy()
    out[: int(0.7 * h), : int(0.6 * w)] = edited[: int(0.7 * h), : int(0.6 * w)]
    return out


Labels = tuple[
    int | None, int | None, int | None, int | None
]  # compliance, seams, preservation, quality
CRITERION_ORDER = ("compliance", "seamlessness", "preservation", "quality")
# Labels of the degradations every family shares (compliance: an adjust edit that is not the
# requested one fails it; on the other families compliance needs CLIP, so it has no label).
SHARED_LABELS: dict[str, Labels] = {
    "correct": (1, 1, 1, 1),
    "none": (0, 1, 1, 1),
    "noise": (0, None, 0, 0),
    "blur": (0, None, 0, 0),
    "jpeg": (0, None, None, 0),  # blocking is technical quality, not a seam
    "shift": (0, 1, 0, None),
    "unrelated": (0, None, 0, None),
    "tiled": (0, 0, None, None),
    "posterize": (0, 0, None, None),
    "blown": (0, None, None, 0),  # highlights blown out (x 1.6, clipped)
    "lowres": (None, None, None, 0),  # half the resolution
}
# Degraded, but not clearly to be rejected: "lowres" fails technical quality only (weight
# 0.15), so it is ranked below the correct edit but left out of the accept/reject agreement.
UNDECIDED_ACCEPT = ("lowres",)
FAMILY_LABELS: dict[str, dict[str, Labels]] = {
    "adjust": {
        **SHARED_LABELS,
        "wrong": (0, 1, None, None),
        "over": (0, None, None, None),
        "seam": (0, 0, None, None),  # the edit applied to part of the frame
    },
    "local": {
        **SHARED_LABELS,
        "seam": (None, 0, None, None),  # plus a hard-edged patch of another photo
        "recolour": (None, None, 0, None),  # the whole picture's colours changed too
        "huge": (None, None, 0, None),  # the "local" edit covers most of the frame
    },
    "global": dict(SHARED_LABELS),
    "layout": dict(SHARED_LABELS),
}
for _fam in ("local", "global", "layout"):
    FAMILY_LABELS[_fam] = {k: (None, *v[1:]) for k, v in FAMILY_LABELS[_fam].items()}
# What "nothing happened" is judged by: compliance only, which the non-adjust families do not
# have without CLIP, so "none" is left out of their ranking (it is still labelled for the maps).
UNRANKED = {"local": ("none",), "global": ("none",), "layout": ("none",)}

# The non-adjust families: instruction -> the correct edit (all planned to "diffusion").
FAMILY_EDITS: dict[str, dict[str, Edit]] = {
    "local": {
        "add a red ball to the picture": add_ball(),
        "put a yellow sticky note on it": add_note,
    },
    "global": {
        "turn it into a pencil sketch": pencil_sketch,
        "make it look like an oil painting": oil_paint,
    },
    "layout": {"zoom in on the center": zoom_in},
}


@functools.lru_cache(maxsize=32)
def photo(name: str, side: int) -> np.ndarray:
    """``skimage.data.<name>()`` as float32 RGB, resized (Lanczos, 8-bit) to long side ``side``."""
    try:
        from skimage import data
    except ImportError:
        raise PbmlxError(
            "Calibrating the judge needs scikit-image (pip install 'pbmlx[test]')."
        ) from None
    a = np.asarray(getattr(data, name)())
    if a.dtype != np.uint8:
        a = np.clip(np.rint(a * 255.0 if a.max() <= 1.0 else a), 0, 255).astype(np.uint8)
    im = Image.fromarray(a).convert("RGB")
    s = side / max(im.size)
    if s < 1:
        im = im.resize(
            (max(8, round(im.width * s)), max(8, round(im.height * s))), Image.Resampling.LANCZOS
        )
    return np.asarray(im, np.float32) / 255.0


def is_grey(x: np.ndarray) -> bool:
    return float(np.abs(x - x.mean(axis=-1, keepdims=True)).max()) < 2.0 / 255.0


@dataclass(frozen=True)
class Case:
    family: str
    photo: str
    instruction: str
    kind: str
    source: np.ndarray
    edited: np.ndarray

    @property
    def labels(self) -> dict[str, int | None]:
        lab = FAMILY_LABELS[self.family][self.kind]
        return dict(zip(CRITERION_ORDER, lab, strict=True)) | {
            "accept": int(self.kind == "correct")
        }


def _common(
    src: np.ndarray, good: np.ndarray, other_good: np.ndarray, pi: int
) -> dict[str, np.ndarray]:
    return {
        "correct": good,
        "none": src.copy(),
        "noise": colour_noise(0.12)(good),
        "blur": gaussian_blur(0.008)(good),
        "jpeg": _jpeg(good),
        "shift": _shift_or_crop(good, crop=pi % 2 == 0),
        "unrelated": other_good,
        "tiled": _tiled(good),
        "posterize": pil_op("posterize", 3)(good),
        "blown": _q8(good * 1.6),
        "lowres": _arr(
            _pil(good).resize((good.shape[1] // 2, good.shape[0] // 2), Image.Resampling.LANCZOS)
        ),
    }


def build_cases(
    photos: tuple[str, ...],
    side: int,
    instructions: tuple[str, ...] | None = None,
    families: tuple[str, ...] = ("adjust", "local", "global", "layout"),
) -> Iterator[Case]:
    """Every (family, photo, instruction, kind) case of the calibration set, deterministically.

    ``photos`` are used in turn; each photo's "unrelated" edit is made on the next photo of
    the tuple (so pass the whole split even when building one photo's cases: see
    :func:`photo_cases`).
    """
    for name in photos:
        yield from photo_cases(photos, name, side, instructions, families)


def photo_cases(
    photos: tuple[str, ...],
    name: str,
    side: int,
    instructions: tuple[str, ...] | None = None,
    families: tuple[str, ...] = ("adjust", "local", "global", "layout"),
) -> Iterator[Case]:
    pi = photos.index(name)
    src = photo(name, side)
    grey = is_grey(src)
    other = photo(photos[(pi + 1) % len(photos)], side)
    other = (
        np.asarray(
            _pil(other).resize((src.shape[1], src.shape[0]), Image.Resampling.LANCZOS), np.float32
        )
        / 255.0
    )
    if "adjust" in families:
        for ins in instructions or tuple(RECIPES):
            if ins not in RECIPES:
                continue
            r = RECIPES[ins]
            if r.colour and grey:
                continue
            good = r.correct(src)
            edits: dict[str, np.ndarray | None] = {
                **_common(src, good, r.correct(other), pi),
                "wrong": r.wrong(src) if r.wrong else None,
                "over": r.over(src) if r.over else None,
                "seam": _seam(src, good),
            }
            if ins == "add film grain":
                edits["noise"] = None  # heavy noise is this recipe's over-edit
            if ins == "blur the image":
                edits["blur"] = None  # a heavy blur is this recipe's over-edit
            for kind in FAMILY_LABELS["adjust"]:
                e = edits.get(kind)
                if e is not None:
                    yield Case("adjust", name, ins, kind, src, e)
    for fam in ("local", "global", "layout"):
        if fam not in families:
            continue
        for ins, make in FAMILY_EDITS[fam].items():
            if instructions is not None and ins not in instructions:
                continue
            good = make(src)
            edits = _common(src, good, make(other), pi)
            if fam == "local":
                edits["seam"] = pasted_patch(good, other)
                edits["recolour"] = enhance("Color", 0.4)(enhance("Brightness", 1.15)(good))
                edits["huge"] = add_ball(0.45)(src)
            for kind in FAMILY_LABELS[fam]:
                e = edits.get(kind)
                if e is not None:
                    yield Case(fam, name, ins, kind, src, e)


# ---- features, fit, evaluation ------------------------------------------------------------------


# Ops whose moderate amount is the whole effect (greyscale, sepia, invert at full strength):
# they set a statistic's unit only where no graded op targets it.
FULL_EFFECT_OPS = ("grayscale", "sepia", "invert")


def compute_stat_units(photos: tuple[str, ...], side: int) -> dict[str, float]:
    """``unit_k``: the median over photos of the largest |change of stat k| that the ops
    targeting it (:data:`pbmlx.judge.criteria.TARGETS`; graded ops first, see
    :data:`FULL_EFFECT_OPS`) make at their spec's moderate amount, either sign."""
    from pbmlx.adjust.specs import SPECS

    targeting = {k: [o for o, ks in criteria.TARGETS.items() if k in ks] for k in m.STATS}
    targeting = {
        k: [o for o in ops if o not in FULL_EFFECT_OPS] or ops for k, ops in targeting.items()
    }
    per_photo = []
    for name in photos:
        src = photo(name, side)
        pair = m.prepare_pair(src, src)
        blur_px = max(src.shape[:2]) / 100.0
        prof = m.profile(pair.source_w)
        changes: dict[str, dict[str, float]] = {}
        for op in sorted({o for ops in targeting.values() for o in ops}):
            spec = SPECS[op]
            for sign in (1.0, -1.0) if spec.min < 0 else (1.0,):
                ops = [{"op": op, "amount": spec.clamp(sign * spec.moderate)}]
                ew = criteria.apply_plan(pair.source_w, ops, blur_px_per_amount=blur_px)
                ed = criteria.apply_plan(pair.source_d, ops, blur_px_per_amount=blur_px)
                st = {**m.tone_colour_stats(prof, ew), **m.detail_stats(pair.source_d, ed)}
                for k, v in st.items():
                    changes.setdefault(op, {})[k] = max(changes.get(op, {}).get(k, 0.0), abs(v))
        per_photo.append({k: max(changes[o][k] for o in ops) for k, ops in targeting.items()})
    return {k: float(np.median([p[k] for p in per_photo])) for k in m.STATS}


def case_features(case: Case, units: dict[str, float]) -> dict[str, Any]:
    """The raw defect features of every criterion for one case (what the maps are fitted on)."""
    from pbmlx.plan import plan as make_plan

    p = make_plan(case.instruction)
    extent = criteria.instruction_extent(case.instruction, p)
    if extent != ("adjust" if case.family == "adjust" else case.family):
        raise AssertionError(f"{case.instruction!r} is judged as {extent}, not {case.family}")
    ctx = criteria.JudgeContext(
        m.prepare_pair(case.source, case.edited), case.instruction, p, extent
    )
    out: dict[str, Any] = {}
    if extent == "adjust":
        out["compliance/adjust"], _ = criteria.AdjustCompliance(units).features(ctx)
    out["seamlessness"], _ = criteria.Seamlessness().features(ctx)
    key, pres, _ = criteria.Preservation().features(ctx)
    out[key] = pres
    quality = criteria.Quality()
    out["quality"] = None if quality.broken(ctx) else quality.features(ctx)[0]
    return out


MAPS = {
    "compliance/adjust": "compliance",
    "seamlessness": "seamlessness",
    "preservation/adjust": "preservation",
    "preservation/local": "preservation",
    "preservation/global": "preservation",
    "preservation/layout": "preservation",
    "quality": "quality",
}


def fit_maps(rows: list[dict]) -> dict[str, dict]:
    """Fit every map from rows ``{"family", "kind", "features": {map: {feature: value}}}``."""
    maps = {}
    for key, crit in MAPS.items():
        ci = CRITERION_ORDER.index(crit)
        xs, ys, names = [], [], None
        for row in rows:
            lab = FAMILY_LABELS[row["family"]][row["kind"]][ci]
            f = row["features"].get(key)
            if lab is None or f is None:
                continue
            names = names or sorted(f)
            xs.append([f[k] for k in names])
            ys.append(lab)
        w, b = fit_logistic(np.array(xs), np.array(ys))
        maps[key] = LogisticMap(
            tuple(names), tuple(float(v) for v in w), b, kind="defect"
        ).to_dict()
        maps[key]["n"] = len(ys)
    maps["compliance/clip"] = CLIP_MAP.to_dict()
    return maps


# Not fitted (see the module docstring): 0.5 at direction 0.08, about 0.9 at 0.2; the gain in
# image-text similarity adds a little (a 0.03 gain is worth a 0.05 direction).
CLIP_MAP = LogisticMap(
    ("direction", "gain"), (18.0, 30.0), -1.44, calibrated=False, kind="evidence"
)


@dataclass(frozen=True)
class Judged:
    """One judged case, reduced to what the report needs (picklable, small)."""

    family: str
    photo: str
    instruction: str
    kind: str
    rank_score: float
    overall: float | None
    accepted: bool | None


def evaluate(judged: list[Judged]) -> dict:
    """Pairwise ranking accuracy and accept/reject agreement (see the module docstring).

    Ranking: within each (family, photo, instruction), the correct edit's score (``overall``,
    or the labelled partial overall where compliance needs CLIP) strictly above each degraded
    edit's. Agreement: ``accepted`` against the label, over the verdicts that decide (adjust).
    """
    groups: dict[tuple[str, str, str], dict[str, Judged]] = {}
    for j in judged:
        groups.setdefault((j.family, j.photo, j.instruction), {})[j.kind] = j
    per_family: dict[str, list[int]] = {}
    per_kind: dict[str, list[int]] = {}
    failures = []
    for (fam, ph, ins), kinds in sorted(groups.items()):
        good = kinds.get("correct")
        if good is None:
            continue
        for kind, j in sorted(kinds.items()):
            if kind == "correct" or kind in UNRANKED.get(fam, ()):
                continue
            ok = int(good.rank_score > j.rank_score)
            for table, key in ((per_family, fam), (per_kind, kind)):
                table.setdefault(key, [0, 0])
                table[key][0] += ok
                table[key][1] += 1
            if not ok:
                failures.append(
                    f"{fam} / {ph} / {ins} / {kind}: {j.rank_score:.3f} >= correct {good.rank_score:.3f}"
                )
    agree = total = na = 0
    accept_fail = []
    for j in judged:
        if j.family != "adjust" or j.kind in UNDECIDED_ACCEPT:
            continue
        if j.accepted is None:
            na += 1
            continue
        total += 1
        ok = j.accepted == (j.kind == "correct")
        agree += ok
        if not ok:
            accept_fail.append(f"{j.photo} / {j.instruction} / {j.kind}: overall {j.overall:.3f}")
    adj = per_family.get("adjust", [0, 0])
    return {
        "pairs": adj[1],
        "ranking_accuracy": adj[0] / adj[1] if adj[1] else None,
        "accept_cases": total,
        "accept_agreement": agree / total if total else None,
        "accept_not_available": na,
        "ranking_by_family": {
            k: {"accuracy": round(a / n, 4), "pairs": n} for k, (a, n) in sorted(per_family.items())
        },
        "ranking_by_kind": {k: round(a / n, 4) for k, (a, n) in sorted(per_kind.items())},
        "ranking_failures": failures,
        "accept_failures": accept_fail,
    }


def judge_photo(args: tuple[tuple[str, ...], str, int, dict | None]) -> list[Judged]:
    """Judge every case of one photo through :func:`pbmlx.judge.judge` (a worker's job)."""
    photos, name, side, params = args
    ctx = using(params) if params is not None else contextlib.nullcontext()
    with ctx:
        # No CLIP, even if one is cached: the report must not depend on the machine's cache.
        j = Judge(providers=criteria.default_providers(criteria.ClipCompliance(None, "no CLIP")))
        out = []
        for c in photo_cases(photos, name, side):
            v = j(c.source, c.edited, c.instruction)
            out.append(
                Judged(
                    c.family, c.photo, c.instruction, c.kind, v.rank_score, v.overall, v.accepted
                )
            )
    return out


def features_photo(args: tuple[tuple[str, ...], str, int, dict]) -> list[dict]:
    """The fit rows of one photo (a worker's job)."""
    photos, name, side, units = args
    rows = []
    for c in photo_cases(photos, name, side):
        row = {"family": c.family, "photo": c.photo, "instruction": c.instruction, "kind": c.kind}
        rows.append(_round_row({**row, "features": case_features(c, units)}))
    return rows


def _map_jobs(fn: Callable, jobs: list, workers: int) -> list:
    if workers <= 1:
        return [fn(j) for j in jobs]
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(workers) as pool:
        return pool.map(fn, jobs)


def heldout_report(
    photos: tuple[str, ...] = HELDOUT_PHOTOS,
    side: int = HELDOUT_SIDE,
    params: dict | None = None,
    workers: int = 1,
    cases_of: tuple[str, ...] | None = None,
) -> dict:
    """Judge every case of ``photos`` (or only of ``cases_of``, a subset of them: each photo's
    "unrelated" edit still comes from the next photo of ``photos``) through the full judge
    with ``params`` (None: the calibration in force) and return :func:`evaluate`'s report
    plus ``"cases"`` (how many were judged) and ``"seconds"``."""
    t0 = time.perf_counter()
    jobs = [(photos, name, side, params) for name in (cases_of or photos)]
    judged = [j for part in _map_jobs(judge_photo, jobs, workers) for j in part]
    rep = evaluate(judged)
    return {**rep, "cases": len(judged), "seconds": round(time.perf_counter() - t0, 1)}


def print_report(rep: dict, title: str, out: Any = sys.stdout) -> None:
    """The figures the README states, one per line."""
    fam = rep["ranking_by_family"]
    print(title, file=out)
    print(
        f"  adjust edits: correct edit ranked above a degraded one in "
        f"{rep['ranking_accuracy']:.1%} of {rep['pairs']} pairs (goal {GOAL_RANKING:.0%}); "
        f"accept/reject agrees with the label on {rep['accept_agreement']:.1%} of "
        f"{rep['accept_cases']} verdicts (goal {GOAL_AGREEMENT:.0%}; "
        f"{rep['accept_not_available']} not available)",
        file=out,
    )
    for f in ("local", "global", "layout"):
        if f in fam:
            print(
                f"  {f} edits (no CLIP: partial overall): ranked right in "
                f"{fam[f]['accuracy']:.1%} of {fam[f]['pairs']} pairs",
                file=out,
            )
    print(f"  by kind: {rep['ranking_by_kind']}", file=out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tests/judge_fit.py", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--params", type=Path, default=PARAMS_PATH, help="runtime calibration file to write"
    )
    ap.add_argument(
        "--data", type=Path, default=TEST_DATA_PATH, help="test data file to write (features too)"
    )
    ap.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    ap.add_argument(
        "--features",
        type=Path,
        help="reuse the fit split's units and features from this file if it exists, else save them there",
    )
    ap.add_argument(
        "--evaluate",
        action="store_true",
        help="only judge the held-out photos with the calibration in force and print the report",
    )
    ap.add_argument(
        "--photos", help="with --evaluate: comma-separated held-out photos (default: all six)"
    )
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.evaluate:
        cases_of = tuple(args.photos.split(",")) if args.photos else None
        if cases_of and not set(cases_of) <= set(HELDOUT_PHOTOS):
            ap.error(f"--photos must be among {', '.join(HELDOUT_PHOTOS)}")
        rep = heldout_report(workers=args.workers, cases_of=cases_of)
        print_report(rep, f"held-out {', '.join(cases_of or HELDOUT_PHOTOS)} @ {HELDOUT_SIDE}:")
        print(f"  {rep['cases']} cases judged in {rep['seconds']:.0f} s")
        for line in rep["ranking_failures"] + rep["accept_failures"]:
            print("  held-out miss:", line, file=sys.stderr)
        return 0
    if args.features is not None and args.features.exists():
        saved = json.loads(args.features.read_text())
        units, rows = saved["stat_units"], saved["fit_rows"]
    else:
        units = compute_stat_units(FIT_PHOTOS, FIT_SIDE)
        jobs = [(FIT_PHOTOS, name, FIT_SIDE, units) for name in FIT_PHOTOS]
        rows = [r for part in _map_jobs(features_photo, jobs, args.workers) for r in part]
        if args.features is not None:
            args.features.write_text(json.dumps({"stat_units": units, "fit_rows": rows}))
    t1 = time.perf_counter()
    print(f"fit split: {len(rows)} cases, features in {t1 - t0:.0f} s", file=sys.stderr)
    params: dict[str, Any] = {
        "format": FORMAT,
        "generated_by": GENERATED_BY,
        "fit_photos": [f"{p}@{FIT_SIDE}" for p in FIT_PHOTOS],
        "heldout_photos": [f"{p}@{HELDOUT_SIDE}" for p in HELDOUT_PHOTOS],
        "stat_units": units,
        "maps": fit_maps(rows),
    }
    held = heldout_report(params=params, workers=args.workers)
    print(
        f"held-out split: {held['cases']} cases judged in {held['seconds']:.0f} s", file=sys.stderr
    )
    params["report"] = {
        "heldout": _short({k: v for k, v in held.items() if k != "seconds"}),
        "goals": {"ranking": GOAL_RANKING, "agreement": GOAL_AGREEMENT},
    }
    args.params.write_text(json.dumps(params, indent=1) + "\n")
    data = {**params, "fit": pack_rows(rows)}
    args.data.parent.mkdir(parents=True, exist_ok=True)
    args.data.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    print_report(held, f"held-out {', '.join(HELDOUT_PHOTOS)} @ {HELDOUT_SIDE}:")
    for line in held["ranking_failures"] + held["accept_failures"]:
        print("  held-out miss:", line, file=sys.stderr)
    print(f"done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


def pack_rows(rows: list[dict]) -> dict:
    """Fit rows in a compact, column-wise form for the test data file (see :func:`unpack_rows`)."""
    cases = [[r["family"], r["photo"], r["instruction"], r["kind"]] for r in rows]
    maps: dict[str, dict] = {}
    for i, r in enumerate(rows):
        for key, f in r["features"].items():
            entry = maps.setdefault(key, {"names": None, "values": [], "none": []})
            if f is None:
                entry["none"].append(i)
                continue
            entry["names"] = entry["names"] or sorted(f)
            entry["values"].append([i, *(f[k] for k in entry["names"])])
    return {"cases": cases, "features": maps}


def unpack_rows(packed: dict) -> list[dict]:
    """The inverse of :func:`pack_rows`."""
    rows = [
        {"family": c[0], "photo": c[1], "instruction": c[2], "kind": c[3], "features": {}}
        for c in packed["cases"]
    ]
    for key, entry in packed["features"].items():
        for i in entry["none"]:
            rows[i]["features"][key] = None
        for i, *vals in entry["values"]:
            rows[i]["features"][key] = dict(zip(entry["names"], vals, strict=True))
    return rows


def _short(r: dict) -> dict:
    return {
        k: (round(v, 4) if isinstance(v, float) else v)
        for k, v in r.items()
        if not k.endswith("failures")
    }


def _round_row(row: dict) -> dict:
    def rnd(f: dict | None) -> dict | None:
        return None if f is None else {k: round(float(v), 6) for k, v in f.items()}

    return {**row, "features": {k: rnd(v) for k, v in row["features"].items()}}


if __name__ == "__main__":
    raise SystemExit(main())
