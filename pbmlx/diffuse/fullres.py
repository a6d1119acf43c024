"""Full resolution: bring an edit made at the editor's working size back to the photo's own size.

The editor works at a working size (longest side 512, multiples of 8: :func:`working_size`). A
12 MP photo ``O`` (H, W) is brought down to it (:func:`to_working`: ``S``, h x w), the editor
turns ``S`` into ``E``, and :func:`restore_full_resolution` builds the full-size result. Simply
upsampling ``E`` throws away everything finer than the working size, and even where the edit
changed nothing ``E`` is not ``S``: a latent-diffusion editor's VAE softens fine texture, adds a
little noise and shifts colours slightly. So the edit is split into what can be carried onto the
original's own pixels (a tone change, global or smooth) and what must be replaced (new content).

Notation: ``G_s *`` is a Gaussian blur of standard deviation ``s`` working pixels (edges
mirrored); ``up_lin``, ``up_cub`` are PIL's bilinear and bicubic resizes from (h, w) to (H, W)
(pixel centres aligned); ``Y`` is Rec. 709 luma; ``|v|`` of a colour is its RMS over the three
channels; ``ss(t) = 3t^2 - 2t^3`` on ``t`` clipped to [0, 1]. All analysis runs at working size.

1. Tone model ``g``, global: ``g_c(x) = f_c(M_c . x + o_c)``, a 3 x 3 colour matrix and offset
   (saturation, hue, sepia, contrast) followed by a piecewise-linear curve per channel with 8
   segments (white balance, warm/cool, gamma, tone curves, and clipping after the mix). Fitted
   on ``G_4 * S -> G_4 * E`` (smooth colours, where a VAE's softness changes nothing; fitting raw
   pixels would read that softness as lost contrast) by iteratively reweighted least squares
   with Tukey weights (cut at 4.685 x max(MAD scale, HIGH / 4.685): only residuals beyond about
   ``HIGH`` are treated as edits, so the pixels an edit changed locally do not bend it), a ridge
   towards the identity, alternating a Gauss-Newton step for the matrix with a fit of the curves.

2. Low-frequency residual ``D``: what ``g`` leaves, under the most charitable reading of "the
   editor only softened the image", ``E ~ G_b * g(S)`` for ``b`` in {0, 1, 1.5}::

       D_b = G_2 * E - G_sqrt(4 + b^2) * g(S)
       D   = sum_b w_b D_b,   w_b ~ exp(-(|D_b|^2 - min_b |D_b|^2) / 0.002^2)   (soft minimum)

3. Structure, on luminance bands (periods of about 4 to 12 working px, where a VAE is faithful)::

       y_E = Y(G_1 * E - G_2 * E),   y_S,b = Y(G_sqrt(1 + b^2) * g(S) - G_sqrt(4 + b^2) * g(S))
       amp = sqrt(G_4 * y^2),   corr = max_b G_4 * (y_E y_S,b) / (amp_E amp_S,b + 0.005^2)
       beta = ss((corr - 0.6) / 0.3),   flat = 1 - ss((amp_S - 0.005) / 0.01)

   ``beta`` is 1 where the edit kept the source's structure (unchanged, recoloured, re-lit),
   0 where the structure is new or gone; ``flat`` is 1 where the source had no structure. The
   averaging window is wide (sigma 4 px): over a smaller one, unrelated textures correlate by
   chance often enough to let the original's detail through under new content.

4. Change score and mask (:func:`change_mask`)::

       c_band = max(amp_E, amp_S) * (1 - beta)                   structure that came or went
       c_low  = |D - 0.75 max(beta, flat) G_8 * D|               colour that changed
       m0     = ss((max(c_low, 2.5 c_band) - LOW) / (HIGH - LOW))
       M      = clip(2 G_1 * m0, 0, 1)                           feathered, grown ~1 px

   ``c_low`` discounts three quarters of the smooth part (slower than ~8 px) of a colour change
   where the structure was kept or there was none: a recolour, a vignette or a change of light is
   a tone change to carry onto the original's detail; the same colour change where the
   structure changed is new content, whose original detail would otherwise show through.
   ``LOW = 0.04`` (10/255): on the test photos, the score of a VAE-like round trip (1 px blur,
   noise of 0.01, a 2 % colour shift) peaks at 0.023-0.033, also with a global warm edit on top;
   a harsher 1.5 px blur or a saturation + contrast edit that clips reach ``LOW`` on under 1 %
   of the pixels. ``HIGH = 0.10`` (25/255): a tenth of the range is a clear edit. The factor
   2.5 puts structure of amplitude 0.016 that came or went at ``LOW``, 0.04 at ``HIGH``.
   Doubling the blurred mask keeps it 1 inside a region and grows it by about a working pixel,
   so the edge of a changed region is not half kept.

5. Full resolution, in bands of rows::

       K   = O + dz(g(O) - O + up_lin(D))                        keep branch: the original, re-toned
       C   = up_cub(E) + up_lin(beta) (Y(O) - up_cub(Y(S)))      change branch: the edit, plus the
                                                                  original's fine luma where the
                                                                  structure was kept
       out = clip(K + up_lin(M) (C - K), 0, 1)

   with the dead zone ``dz(d) = d clip(2 |d| / DEAD - 1, 0, 1)``, ``DEAD = 1/255``: per-pixel
   changes under half an 8-bit code value are dropped (so where the edit did nothing the
   original's pixels come back bit for bit), changes from one code value on are kept whole.
   ``D``, ``M`` and ``beta`` are upsampled bilinearly (convex combinations: no overshoot),
   ``E`` bicubically for sharpness. Where ``M = 0`` all of the original's detail is
   kept; where the content changed the upsampled edit replaces it. Bands the edit left alone are
   copied, and ``E`` is upsampled only over the columns the mask reaches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
from PIL import Image

from pbmlx.errors import PbmlxError

WORKING_LONGEST = 512  # the editor's longest side (InstructPix2Pix is trained at 512)
WORKING_MULTIPLE = 8  # the VAE downsamples by 8, so both sides must be multiples of it

# Change detection (module doc, steps 2-4); lengths in working pixels.
CHANGE_LOW = 0.04  # change score under which nothing changed (above VAE-like round trips)
CHANGE_HIGH = 0.10  # change score over which the content is replaced by the edit
SIGMA_FIT = 4.0  # the tone fit sees colours this smooth, where a VAE's softness changes nothing
SIGMA_LOW = 2.0  # low-pass of D: removes VAE texture loss and noise, keeps changes of ~3 px up
SIGMA_BAND = 1.0  # with SIGMA_LOW, the structure band: periods of ~4-12 px
SIGMA_ENERGY = 4.0  # local averaging of band energies and correlations (wide: stable estimates)
SIGMA_SMOOTH = 8.0  # a colour change slower than this is "smooth" (a tone change, if allowed)
SIGMA_FEATHER = 1.0  # feathering (and ~1 px growth) of the change mask
VAE_BLURS = (1.0, 1.5)  # softenings of g(S) tried as explanations of E, besides none
SOFTMIN_ENERGY = 0.002**2  # energy gap at which one reading of D outweighs another e-fold
SMOOTH_DISCOUNT = 0.75  # share of a smooth colour change over kept structure not counted
BAND_GAIN = 2.5  # structure amplitudes run ~2.5x smaller than equally visible colour shifts
STRUCTURE_FLOOR = 0.005  # band amplitude well above noise (~0.15 x its sigma): below it, "flat"
DETAIL_CORRELATION = (0.6, 0.9)  # band correlation of E and g(S): structure gone / kept
LUMA = np.array([0.2126, 0.7152, 0.0722])  # Rec. 709 luma weights

# Full resolution (module doc, step 5).
DEAD_ZONE = 1.0 / 255.0  # keep-branch changes under half of this are dropped, from it kept whole
BAND_ROWS = 64  # full-resolution rows per band: 64 x 4000 px planes stay in the CPU's L2 cache

# The tone model (module doc, step 1).
FIT_SAMPLES = 8192  # pixels the tone model is fitted on (a regular grid over the working image)
FIT_ITERATIONS = 6  # IRLS rounds; the weights settle in 3-4
FIT_RIDGE = 1e-6  # ridge to the identity per unit weight: grey photos solvable, no bias
TUKEY_C = 4.685  # Tukey biweight constant (95% efficiency on Gaussian residuals)
MIN_SCALE = CHANGE_HIGH / TUKEY_C  # residual scale floor: only residuals over ~HIGH are outliers
CURVE_SEGMENTS = 8  # pieces of each channel's tone curve (knots every 1/8 of its range)
CURVE_TABLE = 8192  # points of each curve's lookup table at full resolution
SNAP = 0.25 / 255.0  # a tone map this close to the identity on every colour is the identity


def working_size(
    width: int, height: int, longest: int = WORKING_LONGEST, multiple: int = WORKING_MULTIPLE
) -> tuple[int, int]:
    """The editor's working size ``(w, h)`` for a ``width`` x ``height`` photo.

    ``s = min(1, L / max(width, height))`` with ``L = longest`` rounded down to a multiple of
    ``multiple``; each side is ``max(multiple, multiple * ceil(side * s / multiple - 1/2))`` (the
    nearest multiple, ties rounding down).
    So a large photo's long side becomes ``L`` and the aspect ratio is kept to within the rounding;
    a photo smaller than ``L`` is never scaled up beyond rounding to the nearest multiple (nor
    below ``multiple``, so a 1 x 20000 strip becomes 8 x 512).
    """
    for name, value in (("width", width), ("height", height), ("multiple", multiple)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise PbmlxError(f"working_size needs a positive integer {name}, got {value!r}.")
    if (
        isinstance(longest, bool)
        or not isinstance(longest, (int, np.integer))
        or longest < multiple
    ):
        raise PbmlxError(
            f"working_size needs an integer longest side of at least {multiple}, got {longest!r}."
        )
    top = (int(longest) // int(multiple)) * int(multiple)
    scale = min(1.0, top / max(int(width), int(height)))

    def side(n: int) -> int:
        # Nearest multiple, ties down (a tie never enlarges), at least one multiple.
        return max(int(multiple), int(multiple) * math.ceil(n * scale / multiple - 0.5))

    return min(side(int(width)), top), min(side(int(height)), top)


def _check_rgb(name: str, x: object) -> np.ndarray:
    """An (H, W, 3) float array in [0, 1] as float32 (values just outside are clipped)."""
    if not isinstance(x, np.ndarray):
        raise PbmlxError(f"{name} must be a numpy array, got {type(x).__name__}.")
    if x.ndim != 3 or x.shape[2] != 3 or x.shape[0] < 1 or x.shape[1] < 1:
        raise PbmlxError(f"{name} must be an (H, W, 3) RGB image, got shape {x.shape}.")
    if not np.issubdtype(x.dtype, np.floating):
        raise PbmlxError(
            f"{name} must hold float values in [0, 1], got dtype {x.dtype} "
            "(divide 8-bit images by 255)."
        )
    x = np.asarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise PbmlxError(f"{name} contains NaN or infinite values.")
    # A VAE decode can overshoot [0, 1] by a hair before the caller clips it.
    return np.clip(x, 0.0, 1.0)


def _resize(
    channel: np.ndarray | Image.Image,
    size: tuple[int, int],
    resample: int,
    box: tuple[float, float, float, float] | None = None,
) -> np.ndarray:
    """One float32 (h, w) channel resized by PIL to ``size = (w, h)`` (``box`` in source px)."""
    img = channel if isinstance(channel, Image.Image) else Image.fromarray(channel, mode="F")
    return np.asarray(img.resize(size, resample, box=box), dtype=np.float32)


def to_working(rgb_full: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Downsample an (H, W, 3) float image in [0, 1] to ``size = (w, h)``.

    Lanczos-3 with its support widened by the scale factor (PIL), i.e. a proper antialiasing
    low-pass before sampling, per channel in float32 (no 8-bit rounding). Returns float32
    (h, w, 3) in [0, 1] (Lanczos lobes can overshoot; the result is clipped).
    """
    rgb = _check_rgb("rgb_full", rgb_full)
    w, h = _check_size(size)
    if (h, w) == rgb.shape[:2]:
        return rgb.copy()
    out = np.stack([_resize(rgb[:, :, c], (w, h), Image.LANCZOS) for c in range(3)], axis=-1)
    return np.clip(out, 0.0, 1.0)


def _check_size(size: object) -> tuple[int, int]:
    try:
        w, h = size  # type: ignore[misc]
    except (TypeError, ValueError):
        raise PbmlxError(f"size must be a (width, height) pair, got {size!r}.") from None
    for v in (w, h):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise PbmlxError(f"size must be two positive integers (width, height), got {size!r}.")
    return int(w), int(h)


# ---------------------------------------------------------------------------------------------
# The tone model g: a colour matrix, then a tone curve per channel


@dataclass(frozen=True)
class ToneModel:
    """``g_c(x) = f_c(u_c)``, ``u = matrix @ x + offset``, for colours ``x`` in [0, 1].

    ``f_c`` is piecewise linear through ``CURVE_SEGMENTS + 1`` knots spaced evenly over
    ``[lo_c, hi_c]`` (values ``curves[c]``), extended linearly beyond them. The matrix expresses
    channel mixing (saturation, hue rotation, sepia, contrast about grey); the curves after it
    per-channel tone (white balance, warm/cool in linear light, gamma, tone curves) and the
    clipping of the mix at 0 and 1, which a curve before the mix could not express.
    """

    matrix: np.ndarray  # (3, 3)
    offset: np.ndarray  # (3,)
    lo: np.ndarray  # (3,)
    hi: np.ndarray  # (3,)
    curves: np.ndarray  # (3, CURVE_SEGMENTS + 1)

    @classmethod
    def identity(cls) -> ToneModel:
        knots = np.linspace(0.0, 1.0, CURVE_SEGMENTS + 1)
        return cls(np.eye(3), np.zeros(3), np.zeros(3), np.ones(3), np.stack([knots] * 3))

    def is_identity(self) -> bool:
        ident = ToneModel.identity()
        return all(
            np.abs(a - b).max() < 1e-7
            for a, b in zip(
                (self.matrix, self.offset, self.lo, self.hi, self.curves),
                (ident.matrix, ident.offset, ident.lo, ident.hi, ident.curves),
                strict=True,
            )
        )

    def _segments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per channel and segment: ``f(u) = start + slope * u``; and segments per unit of u."""
        n = CURVE_SEGMENTS
        width = (self.hi - self.lo) / n
        slopes = np.diff(self.curves, axis=1) / width[:, None]
        knots = self.lo[:, None] + width[:, None] * np.arange(n)
        starts = self.curves[:, :-1] - slopes * knots
        return starts, slopes, 1.0 / width

    def mix(self, x: np.ndarray) -> np.ndarray:
        """``u = matrix @ x + offset`` for (3, N) float64 colours."""
        return self.matrix @ x + self.offset[:, None]

    def curve(self, c: int, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(f_c(u), f_c'(u))`` for float64 ``u``."""
        starts, slopes, per_unit = self._segments()
        seg = np.clip(np.floor((u - self.lo[c]) * per_unit[c]), 0, CURVE_SEGMENTS - 1).astype(int)
        return starts[c][seg] + slopes[c][seg] * u, slopes[c][seg]

    @cached_property
    def _tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each ``f_c`` tabulated at ``CURVE_TABLE`` points over the range ``u_c`` takes on the
        unit cube (``[lo_c, lo_c + span_c]``): ``(tables (3, CURVE_TABLE), lo (3,), span (3,))``."""
        lo = self.offset + np.minimum(self.matrix, 0.0).sum(axis=1)
        span = np.maximum(np.abs(self.matrix).sum(axis=1), 1e-6)
        grid = np.linspace(0.0, 1.0, CURVE_TABLE)
        tables = np.stack([self.curve(c, lo[c] + span[c] * grid)[0] for c in range(3)])
        return tables.astype(np.float32), lo, span

    def __call__(self, planes: np.ndarray) -> np.ndarray:
        """``g`` of a planar (3, ...) float32 image in [0, 1] (float32, not clipped).

        ``f_c`` is read from its table at the nearest point: the error is at most half a table
        step (``span_c / 16382``) times the curve's slope, under 0.05/255 for a span up to 3."""
        tables, lo, span = self._tables
        m, off = self.matrix.astype(np.float32), self.offset.astype(np.float32)
        out = np.empty(planes.shape, dtype=np.float32)
        pos = np.empty(planes.shape[1:], dtype=np.float32)
        for c in range(3):
            # pos = (u - lo) / span * (CURVE_TABLE - 1) + 1/2, u = m[c] . x + off[c]
            scale = np.float32((CURVE_TABLE - 1) / span[c])
            np.multiply(planes[0], m[c, 0] * scale, out=pos)
            pos += (m[c, 1] * scale) * planes[1]
            pos += (m[c, 2] * scale) * planes[2]
            pos += np.float32((off[c] - lo[c]) * scale + 0.5)
            np.clip(pos, 0.0, CURVE_TABLE - 1, out=pos)
            np.take(tables[c], pos.astype(np.uint16), out=out[c])
        return out


def _hinges(u: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(N,) -> (N, CURVE_SEGMENTS + 1) features ``[1, u, (u - k_1)+, ..., (u - k_{n-1})+]``."""
    inner = np.linspace(lo, hi, CURVE_SEGMENTS + 1)[1:-1]
    return np.column_stack([np.ones_like(u), u, np.maximum(u[:, None] - inner[None, :], 0.0)])


def _weighted_ridge(
    feats: np.ndarray, target: np.ndarray, weight: np.ndarray, prior: np.ndarray
) -> np.ndarray:
    """``argmin_b sum w (target - feats b)^2 + FIT_RIDGE * sum(w) * |b - prior|^2``."""
    fw = feats * weight[:, None]
    # einsum, not matmul: for these thin matrices it beats a threaded BLAS call several-fold.
    gram = np.einsum("ni,nj->ij", fw, feats)
    gram += FIT_RIDGE * max(float(weight.sum()), 1e-9) * np.eye(feats.shape[1])
    rhs = np.einsum("ni,n->i", fw, target - feats @ prior)
    return prior + np.linalg.solve(gram, rhs)


def fit_tone(source: np.ndarray, edited: np.ndarray) -> ToneModel:
    """Robust fit of ``edited ~ g(source)`` on planar (3, h, w) colours (see the module doc).

    On :data:`FIT_SAMPLES` grid pixels, alternately: the matrix and offset by a Gauss-Newton step
    through the current curves (pixels on a flat part of a curve, e.g. clipped, carry no weight
    there), then each channel's curve by weighted least squares on the mixed values; each with a
    ridge ``FIT_RIDGE * sum(w)`` towards the identity. The weights are Tukey's biweight of each
    pixel's RMS residual over ``TUKEY_C`` times its MAD scale (at least ``MIN_SCALE``, so only
    residuals beyond ~``CHANGE_HIGH`` count as edits), starting from the identity's residuals so
    that the pixels a local edit changed are outliers from the first round on.
    """
    _, h, w = source.shape
    step = max(1, math.ceil(math.sqrt(h * w / FIT_SAMPLES)))
    src = source[:, ::step, ::step].reshape(3, -1).astype(np.float64)
    dst = edited[:, ::step, ::step].reshape(3, -1).astype(np.float64)
    design = np.vstack([src, np.ones((1, src.shape[1]))]).T  # (N, 4): [r, g, b, 1]
    tone = ToneModel.identity()
    resid = np.sqrt(np.mean((dst - src) ** 2, axis=0))
    for _ in range(FIT_ITERATIONS):
        scale = max(1.4826 * float(np.median(resid)), MIN_SCALE)
        u = np.minimum(resid / (TUKEY_C * scale), 1.0)
        weight = (1.0 - u * u) ** 2
        if float(weight.sum()) <= 1e-9:
            return ToneModel.identity()
        # Matrix step: linearise f_c around the current mix, target u + (E - f(u)) / f'(u).
        mixed = tone.mix(src)
        rows = np.empty((3, 4))
        for c in range(3):
            value, slope = tone.curve(c, mixed[c])
            usable = np.abs(slope) > 0.05
            safe = np.where(usable, slope, 1.0)
            target = mixed[c] + (dst[c] - value) / safe
            prior = np.append(np.eye(3)[c], 0.0)
            rows[c] = _weighted_ridge(design, target, weight * usable * safe**2, prior)
        matrix, offset = rows[:, :3], rows[:, 3]
        mixed = matrix @ src + offset[:, None]
        # Curve step: each channel's curve over the range its mixed values span.
        lo, hi, curves = np.empty(3), np.empty(3), np.empty((3, CURVE_SEGMENTS + 1))
        pred = np.empty_like(dst)
        for c in range(3):
            lo[c], hi[c] = float(mixed[c].min()), float(mixed[c].max())
            if hi[c] - lo[c] < 1e-3:  # a flat channel: pad the range, the ridge keeps it sane
                lo[c], hi[c] = lo[c] - 0.5, hi[c] + 0.5
            feats = _hinges(mixed[c], lo[c], hi[c])
            prior = np.zeros(CURVE_SEGMENTS + 1)
            prior[1] = 1.0  # f(u) = u
            coef = _weighted_ridge(feats, dst[c], weight, prior)
            curves[c] = _hinges(np.linspace(lo[c], hi[c], CURVE_SEGMENTS + 1), lo[c], hi[c]) @ coef
            pred[c] = feats @ coef
        tone = ToneModel(matrix, offset, lo, hi, curves)
        resid = np.sqrt(np.mean((dst - pred) ** 2, axis=0))
    # A map within SNAP of the identity on every sampled colour and the cube's corners is the
    # identity: then an unchanged photo comes back bit for bit, and faster.
    corners = np.array(np.meshgrid([0.0, 1.0], [0.0, 1.0], [0.0, 1.0])).reshape(3, -1)
    probe = np.hstack([src, corners])
    mixed = tone.mix(probe)
    values = np.stack([tone.curve(c, mixed[c])[0] for c in range(3)])
    if np.abs(values - probe).max() < SNAP:
        return ToneModel.identity()
    return tone


# ---------------------------------------------------------------------------------------------
# Working-size analysis


def _gaussian_taps(sigma: float) -> np.ndarray:
    r = max(1, math.ceil(3.0 * sigma))
    t = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return (t / t.sum()).astype(np.float32)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur over the last two axes, edges mirrored (``d c b a | a b c d``)."""
    taps = _gaussian_taps(sigma)
    r = len(taps) // 2
    for axis in (x.ndim - 2, x.ndim - 1):
        n = x.shape[axis]
        pad = [(0, 0)] * x.ndim
        pad[axis] = (r, r)
        # np.pad repeats the reflection when the image is narrower than the kernel.
        xp = np.pad(x, pad, mode="symmetric")
        window = [slice(None)] * x.ndim
        acc = np.zeros(x.shape, dtype=np.float32)
        for i, t in enumerate(taps):
            window[axis] = slice(i, i + n)
            acc += t * xp[tuple(window)]
        x = acc
    return x


def _smoothstep(v: np.ndarray) -> np.ndarray:
    v = np.clip(v, 0.0, 1.0)
    return v * v * (3.0 - 2.0 * v)


@dataclass(frozen=True)
class _Analysis:
    tone: ToneModel  # g
    resid: np.ndarray  # D, (3, h, w)
    mask: np.ndarray  # M, (h, w)
    detail: np.ndarray  # beta, (h, w): share of the original's fine luminance kept where M > 0


def _analyze(source: np.ndarray, edited: np.ndarray, low: float, high: float) -> _Analysis:
    """The working-size quantities of the module doc for planar (3, h, w) images."""
    if not 0.0 <= low < high:
        raise PbmlxError(f"The change thresholds need 0 <= low < high, got low={low}, high={high}.")
    e_low = _blur(edited, SIGMA_LOW)
    tone = fit_tone(_blur(source, SIGMA_FIT), _blur(edited, SIGMA_FIT))
    g_src = tone(source)
    g_low = _blur(g_src, SIGMA_LOW)
    # Both D and the structural agreement take the most charitable reading of "the editor only
    # softened the image": E ~ G_b * g(S) (its softness acting after its tone change), with b
    # in {0} + VAE_BLURS chosen pixel by pixel. Structure is compared on luminance bands
    # y = Y(G_1 * x - G_2 * x): local amplitudes amp = sqrt(G_2 * y^2), correlation
    # corr = G_2 * (y_E y_S) / (amp_E amp_S + floor^2).
    luma = LUMA.reshape(3, 1, 1)
    y_e = (luma * (_blur(edited, SIGMA_BAND) - e_low)).sum(axis=0)
    amp_e = np.sqrt(_blur(y_e * y_e, SIGMA_ENERGY))
    g_luma = (luma * g_src).sum(axis=0)
    alts, energies, corrs = [], [], []
    for b in (0.0, *VAE_BLURS):
        s_low = _blur(g_src, math.hypot(SIGMA_LOW, b)) if b else g_low
        alt = e_low - s_low
        y_s = _blur(g_luma, math.hypot(SIGMA_BAND, b)) - (luma * s_low).sum(axis=0)
        amp = np.sqrt(_blur(y_s * y_s, SIGMA_ENERGY))
        if not b:
            amp_s = amp
        alts.append(alt)
        energies.append(np.mean(alt * alt, axis=0))  # smooth already: alt is low-passed
        corrs.append(_blur(y_e * y_s, SIGMA_ENERGY) / (amp_e * amp + STRUCTURE_FLOOR**2))
    corr = np.max(corrs, axis=0)
    # D blends the readings by a soft minimum of their energy: a hard per-pixel choice would
    # flip between them on noise and print that flicker onto the photo. (When E = S, reading 0
    # is exactly 0 and the others add at most 0.3 * sqrt(SOFTMIN_ENERGY) < DEAD / 2.)
    energies = np.stack(energies)
    weights = np.exp((energies.min(axis=0) - energies) / SOFTMIN_ENERGY)
    resid = np.einsum("bhw,bchw->chw", weights / weights.sum(axis=0), np.stack(alts))
    lo, hi = DETAIL_CORRELATION
    detail = _smoothstep((corr - lo) / (hi - lo))
    # Structure that appeared or vanished: amplitude the other image does not echo.
    c_band = np.maximum(amp_e, amp_s) * (1.0 - detail)
    flat = 1.0 - _smoothstep((amp_s - STRUCTURE_FLOOR) / (2.0 * STRUCTURE_FLOOR))
    # A smooth colour change over structure the edit kept (a recolour, a vignette) or over no
    # structure at all is a tone change; over structure it dropped (a new object of a similar
    # colour) it is not: there the original's detail would show through.
    smooth = _blur(resid, SIGMA_SMOOTH) * (SMOOTH_DISCOUNT * np.maximum(detail, flat))
    struct = resid - smooth
    c_low = np.sqrt(np.mean(struct * struct, axis=0))
    score = np.maximum(c_low, BAND_GAIN * c_band)
    m0 = _smoothstep((score - low) / (high - low))
    mask = np.clip(2.0 * _blur(m0, SIGMA_FEATHER), 0.0, 1.0)
    # Exact zeros where nothing changed let the full-resolution stage skip those bands.
    mask[mask < 1e-3] = 0.0
    f32 = np.float32
    return _Analysis(tone, resid.astype(f32), mask.astype(f32), detail.astype(f32))


def _planar_pair(source_small: object, edited_small: object) -> tuple[np.ndarray, np.ndarray]:
    source = _check_rgb("source_small", source_small)
    edited = _check_rgb("edited_small", edited_small)
    if source.shape != edited.shape:
        raise PbmlxError(
            f"source_small {source.shape} and edited_small {edited.shape} must have the same shape."
        )
    return (
        np.ascontiguousarray(source.transpose(2, 0, 1)),
        np.ascontiguousarray(edited.transpose(2, 0, 1)),
    )


def change_mask(
    source_small: np.ndarray,
    edited_small: np.ndarray,
    *,
    low: float = CHANGE_LOW,
    high: float = CHANGE_HIGH,
) -> np.ndarray:
    """Where the editor changed the content: an (h, w) float32 map in [0, 1] at working size.

    ``M`` of the module doc: 0 where ``edited_small`` is ``source_small`` up to a global tone map,
    a smooth local colour drift under ``low`` and VAE-like reconstruction error (blur, noise,
    slight colour shift); 1 where the colour differs by more than ``high`` at scales of a few
    working pixels, or where new structure appeared; feathered over about a working pixel.
    """
    source, edited = _planar_pair(source_small, edited_small)
    return _analyze(source, edited, float(low), float(high)).mask


# ---------------------------------------------------------------------------------------------
# Full resolution


def restore_full_resolution(
    original: np.ndarray,
    source_small: np.ndarray,
    edited_small: np.ndarray,
    *,
    low: float = CHANGE_LOW,
    high: float = CHANGE_HIGH,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """The edit ``source_small -> edited_small`` carried onto the full-resolution ``original``.

    ``original``: float (H, W, 3) in [0, 1]; ``source_small``: the (h, w, 3) image the editor was
    given (normally ``to_working(original, working_size(W, H))``; it need not be exactly that);
    ``edited_small``: the editor's (h, w, 3) output. Returns float32 (H, W, 3) in [0, 1]::

        K   = O + dz(g(O) - O + up_lin(D))
        C   = up_cub(E) + up_lin(beta) (Y(O) - up_cub(Y(S)))
        out = clip(K + up_lin(M) (C - K), 0, 1)

    (module doc: ``g`` the robust global tone map from S to E, ``D`` the low-passed residual it
    leaves, ``M`` = :func:`change_mask`, ``beta`` the structural agreement of E with g(S), ``dz``
    a dead zone of 1/255). Unchanged regions keep the original's own pixels (bit for bit where
    the edit's tone change there is under 0.5/255) and so all of its detail; global and smooth
    tone changes are carried onto them; changed content comes from the upsampled edit, with the
    original's fine luminance where the edit kept the structure (a recolour). ``low`` and
    ``high`` are the change thresholds of :func:`change_mask`; ``mask`` (h, w) in [0, 1]
    replaces the computed change mask (a user's brush, say). Bad inputs (shapes, dtypes,
    non-finite values, a working image of another aspect ratio) raise :class:`PbmlxError`.
    """
    orig = _check_rgb("original", original)
    source, edited = _planar_pair(source_small, edited_small)
    _check_aspect(orig.shape[:2], source.shape[1:])
    found = _analyze(source, edited, float(low), float(high))
    if mask is not None:
        mask = np.asarray(mask, dtype=np.float32)
        if mask.shape != source.shape[1:] or not np.isfinite(mask).all():
            raise PbmlxError(
                f"mask must be a finite {source.shape[1:]} array, got shape {mask.shape}."
            )
        found = replace(found, mask=np.clip(mask, 0.0, 1.0))
    return _compose(orig, source, edited, found)


def _check_aspect(big: tuple[int, ...], small: tuple[int, ...]) -> None:
    """The working image must be the photo's frame: same aspect ratio up to the rounding of
    its sides to multiples of 8 (|log ratio| <= 8 / shorter working side, plus 2 %); checked
    only where both are at least 32 px (tiny and extreme strips are rounded beyond that)."""
    (big_h, big_w), (h, w) = big, small
    if min(big_h, big_w, h, w) < 32:
        return
    if abs(math.log((w / h) / (big_w / big_h))) > 8.0 / min(h, w) + 0.02:
        raise PbmlxError(
            f"source_small ({h} x {w}) does not have the aspect ratio of original "
            f"({big_h} x {big_w}); pass the working-size image made from this photo."
        )


def _compose(
    orig: np.ndarray, source: np.ndarray, edited: np.ndarray, found: _Analysis
) -> np.ndarray:
    """The full-resolution formula of the module doc, band by band, channels planar."""
    big_h, big_w = orig.shape[:2]
    _, h, w = edited.shape
    sy, sx = h / big_h, w / big_w  # working px per full-res px
    tone, resid, mask = found.tone, found.resid, found.mask
    identity = tone.is_identity()
    luma = LUMA.astype(np.float32)
    resid_imgs = [Image.fromarray(resid[c], mode="F") for c in range(3)]
    edit_imgs = [Image.fromarray(edited[c], mode="F") for c in range(3)]
    mask_img = Image.fromarray(mask, mode="F")
    detail_img = Image.fromarray(found.detail, mode="F")
    luma_img = Image.fromarray(np.tensordot(luma, source, axes=1), mode="F")
    out = np.empty_like(orig)
    keep_buf = np.empty((3, BAND_ROWS, big_w), dtype=np.float32)
    delta_buf = np.empty_like(keep_buf)
    for r0 in range(0, big_h, BAND_ROWS):
        r1 = min(big_h, r0 + BAND_ROWS)
        n = r1 - r0
        # Working rows whose values reach this band (bicubic support 2 px, plus rounding).
        y0, y1 = max(0, math.floor(r0 * sy) - 3), min(h, math.ceil(r1 * sy) + 3)
        cols = np.nonzero(mask[y0:y1].max(axis=0) > 0.0)[0]
        untouched = identity and float(np.abs(resid[:, y0:y1]).max()) <= 0.5 * DEAD_ZONE
        if untouched and cols.size == 0:
            out[r0:r1] = orig[r0:r1]  # the dead zone drops D entirely and M = 0: the original
            continue
        box = (0.0, r0 * sy, float(w), r1 * sy)
        keep = keep_buf[:, :n]
        for c in range(3):  # planar copies: per-channel strided copies beat one transpose
            keep[c] = orig[r0:r1, :, c]
        if cols.size:
            # The original's fine luminance, before the keep branch changes ``keep``.
            c0 = max(0, math.floor((cols[0] - 3) / sx))
            c1 = min(big_w, math.ceil((cols[-1] + 4) / sx))
            fine = np.tensordot(luma, keep[:, :, c0:c1], axes=1)
        if not untouched:
            delta = delta_buf[:, :n]
            for c in range(3):
                delta[c] = _resize(resid_imgs[c], (big_w, n), Image.BILINEAR, box)
            if not identity:
                delta += tone(keep)
                delta -= keep
            # Dead zone: nothing below DEAD/2, all of it from DEAD on, linear in between.
            ramp = np.abs(delta)
            ramp *= 2.0 / DEAD_ZONE
            ramp -= 1.0
            np.clip(ramp, 0.0, 1.0, out=ramp)
            delta *= ramp
            keep += delta
        if cols.size:
            # Only the columns the mask reaches get the edit upsampled (a local edit is a box).
            cbox = (c0 * sx, box[1], c1 * sx, box[3])
            csize = (c1 - c0, n)
            m = _resize(mask_img, csize, Image.BILINEAR, cbox)
            fine -= _resize(luma_img, csize, Image.BICUBIC, cbox)
            fine *= _resize(detail_img, csize, Image.BILINEAR, cbox)
            k = keep[:, :, c0:c1]
            for c in range(3):
                # k += m * (up(E) + fine - k)
                e = _resize(edit_imgs[c], csize, Image.BICUBIC, cbox) + fine
                e -= k[c]
                e *= m
                k[c] += e
        np.clip(keep, 0.0, 1.0, out=keep)
        for c in range(3):
            out[r0:r1, :, c] = keep[c]
    return out
