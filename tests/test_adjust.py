"""The adjust engine against independent oracles.

Oracles: a float64 numpy implementation of each op's documented formula (written here from the
docstrings, not calling pbmlx), scipy.ndimage's Gaussian filter for the blur, and PIL where its
semantics coincide (ImageEnhance.Contrast / Color, ImageOps.grayscale / invert, GaussianBlur,
UnsharpMask). Inputs are real photos from ``skimage.data``.

Tolerances:
- pointwise ops vs the float64 oracle: 1e-5 absolute (float32 arithmetic on values in [0, 1]
  has a relative rounding of ~6e-8 per operation; powers and the sRGB curves stay well inside).
- blur / sharpen vs scipy float64: 1e-5 (a sum of 2r + 1 float32 products, or a float32 FFT,
  errs by < 1e-6 on these images).
- vs PIL (8-bit): see each test; PIL rounds or truncates to whole levels, so ~1/255.
"""

from __future__ import annotations

# isort: off
import pbmlx  # noqa: F401  (before mlx.core, so MLX gets its BLAS: see pbmlx/backend.py)
# isort: on

import colorsys
import math

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pbmlx.kernels.dispatch import reference_only
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from scipy import ndimage
from skimage import data

from pbmlx.adjust import ops
from pbmlx.adjust.ops import OPS, SEGMENT_OPS, SPATIAL_OPS, apply_ops
from pbmlx.adjust.specs import SPECS
from pbmlx.errors import PbmlxError

POINTWISE_TOL = 1e-5
PHOTOS = ("astronaut", "chelsea", "coffee")
# The photometric ops (same size out, a pointwise or blur oracle here); geometry and the
# image-adaptive ops are tested in test_adjust_geometry.py and test_adjust_auto.py.
PHOTOMETRIC = [n for n in SPECS if n not in SEGMENT_OPS - SPATIAL_OPS]

# ---- the float64 oracles, from the documented formulas ------------------------------------------

LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601
REC709 = np.array([0.2126, 0.7152, 0.0722])
YIQ = np.array([LUMA, [0.5959, -0.2746, -0.3213], [0.2115, -0.5227, 0.3112]])
SEPIA = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])


def clip(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 1.0)


def luma(x: np.ndarray) -> np.ndarray:
    return (x[..., 0] * LUMA[0] + x[..., 1] * LUMA[1] + x[..., 2] * LUMA[2])[..., None]


def decode(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def encode(y: np.ndarray) -> np.ndarray:
    y = np.maximum(y, 0.0)
    return np.where(y <= 0.0031308, 12.92 * y, 1.055 * y ** (1 / 2.4) - 0.055)


def ref_white_balance(x: np.ndarray, log2_gains: list[float]) -> np.ndarray:
    g = 2.0 ** np.array(log2_gains)
    g = g / (REC709 @ g)
    return clip(encode(decode(x) * g))


def ref_hue(x: np.ndarray, deg: float) -> np.ndarray:
    th = math.radians(deg)
    yiq = x @ YIQ.T
    i, q = yiq[..., 1].copy(), yiq[..., 2].copy()
    # I' = I cos + Q sin, Q' = -I sin + Q cos: the direction that raises HSV hue (see test_hue_*)
    yiq[..., 1] = i * math.cos(th) + q * math.sin(th)
    yiq[..., 2] = -i * math.sin(th) + q * math.cos(th)
    return clip(yiq @ np.linalg.inv(YIQ).T)


def ref_vignette_mask(h: int, w: int) -> np.ndarray:
    half_diag = math.sqrt((w / 2) ** 2 + (h / 2) ** 2)
    yy, xx = np.meshgrid(np.arange(h) + 0.5 - h / 2, np.arange(w) + 0.5 - w / 2, indexing="ij")
    d = np.sqrt(yy**2 + xx**2) / half_diag
    t = clip((d - ops.VIGNETTE_START) / (1 - ops.VIGNETTE_START))
    return (t * t * (3 - 2 * t))[..., None]


def ref_vignette(x: np.ndarray, a: float) -> np.ndarray:
    g = abs(a) * ref_vignette_mask(*x.shape[:2])
    target = 0.0 if a > 0 else 1.0
    return clip(x + g * (target - x))


def ref_gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    if sigma < 0.3:
        return x
    return ndimage.gaussian_filter(x, (sigma, sigma, 0), mode="reflect", truncate=4.0)


def ref_grain(x: np.ndarray, a: float, seed: int) -> np.ndarray:
    # The noise is the RNG's, not a formula: take it from pbmlx and check its statistics apart.
    n = np.array(ops.grain_noise(x.shape[0], x.shape[1], seed), dtype=np.float64)
    lum = luma(x)
    return clip(x + a * ops.GRAIN_SIGMA * 4 * lum * (1 - lum) * n)


def ref_vibrance(x: np.ndarray, a: float) -> np.ndarray:
    lum = luma(x)
    c = x.max(axis=-1, keepdims=True) - x.min(axis=-1, keepdims=True)
    return clip(lum + (1 + a * (1 - c)) * (x - lum))


def ref_fade(x: np.ndarray, a: float) -> np.ndarray:
    lo, hi = ops.FADE_BLACK * a, 1 - ops.FADE_WHITE * a
    return clip(lo + x * (hi - lo))


ORACLES = {
    "exposure": lambda x, a: clip(encode(decode(x) * 2.0**a)),
    "brightness": lambda x, a: clip(x + a * x * (1 - x)),
    "contrast": lambda x, a: clip(luma(x).mean() + (1 + a) * (x - luma(x).mean())),
    "saturation": lambda x, a: clip(luma(x) + (1 + a) * (x - luma(x))),
    "vibrance": ref_vibrance,
    "temperature": lambda x, a: ref_white_balance(
        x, [ops.TEMPERATURE_STOPS * a, 0, -ops.TEMPERATURE_STOPS * a]
    ),
    "tint": lambda x, a: ref_white_balance(x, [0, -ops.TINT_STOPS * a, 0]),
    "hue": ref_hue,
    "gamma": lambda x, a: clip(x ** (2.0**-a)),
    "highlights": lambda x, a: clip(x + a * luma(x) ** 2 * (1 - luma(x))),
    "shadows": lambda x, a: clip(x + a * luma(x) * (1 - luma(x)) ** 2),
    "fade": ref_fade,
    "grayscale": lambda x, a: clip(x + a * (luma(x) - x)),
    "sepia": lambda x, a: clip(x + a * (clip(x @ SEPIA.T) - x)),
    "invert": lambda x, a: clip(x + a * ((1 - x) - x)),
    "vignette": ref_vignette,
    "grain": lambda x, a: ref_grain(x, a, seed=0),
    "sharpen": lambda x, a: clip(x + a * (x - ref_gaussian(x, ops.SHARPEN_SIGMA))),
    "blur": lambda x, a: clip(ref_gaussian(x, a / 100 * max(x.shape[:2]))),
}


def amounts_for(name: str) -> list[float]:
    """The spec's ends, its moderate amount, half of it, and its negative where allowed."""
    s = SPECS[name]
    picks = {s.min, s.max, s.moderate, 0.5 * s.moderate}
    if s.min < 0:
        picks.add(-s.moderate)
    return sorted(picks)


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    """Real photos as uint8 (H, W, 3)."""
    return {name: getattr(data, name)() for name in PHOTOS}


def to_mx(u8: np.ndarray) -> mx.array:
    return mx.array(u8.astype(np.float32) / 255.0)


def as_f64(u8: np.ndarray) -> np.ndarray:
    # The exact float32 values pbmlx sees, widened: both sides start from the same numbers.
    return (u8.astype(np.float32) / 255.0).astype(np.float64)


def run(name: str, img: mx.array, amount: float) -> np.ndarray:
    out = OPS[name](img, amount)
    assert out.shape == img.shape and out.dtype == mx.float32
    return np.array(out, dtype=np.float64)


# ---- each op against its float64 oracle ---------------------------------------------------------


def test_registry_matches_specs() -> None:
    assert list(OPS) == list(SPECS)
    assert len(OPS) == 30
    for name, spec in SPECS.items():
        if name in PHOTOMETRIC:  # 0 (the identity) is a valid amount; elsewhere 0 is skipped
            assert spec.min <= 0.0 <= spec.max, name
        assert spec.min <= spec.moderate <= spec.max, name
        assert "=" in (OPS[name].__doc__ or ""), f"{name} must document its formula"


@pytest.mark.parametrize("photo", PHOTOS)
@pytest.mark.parametrize("name", PHOTOMETRIC)
def test_op_matches_float64_oracle(name: str, photo: str, photos: dict) -> None:
    u8 = photos[photo]
    img, x = to_mx(u8), as_f64(u8)
    for a in amounts_for(name):
        got = run(name, img, a)
        want = ORACLES[name](x, a)
        err = np.abs(got - want).max()
        assert err <= POINTWISE_TOL, f"{name}({a}) on {photo}: max abs error {err:.2e}"
        assert got.min() >= 0.0 and got.max() <= 1.0


def test_gaussian_blur_both_strategies_match_scipy(photos: dict) -> None:
    x = as_f64(photos["chelsea"])  # 300 x 451: sigma 60 has a radius (240) near the height
    img = to_mx(photos["chelsea"])
    for sigma in (0.5, 1.0, 3.0, 12.0, 39.0, 41.0, 60.0, 400.0):
        _, r = ops.gaussian_kernel(sigma)
        got = np.array(ops.gaussian_blur(img, sigma), dtype=np.float64)
        err = np.abs(got - ref_gaussian(x, sigma)).max()
        path = "blocks" if r <= ops.BLOCK_MAX_RADIUS else "fft"
        assert err <= POINTWISE_TOL, f"sigma {sigma} ({path}): {err:.2e}"


def test_blur_kernel_is_the_documented_one() -> None:
    # scipy's convention must be the docstring's: k[t] ~ exp(-(t - r)^2 / (2 sigma^2)), r = int(4s + .5)
    for sigma in (0.7, 2.5, 10.0):
        k, r = ops.gaussian_kernel(sigma)
        assert r == int(4 * sigma + 0.5)
        t = np.arange(-r, r + 1)
        want = np.exp(-(t**2) / (2 * sigma**2))
        np.testing.assert_allclose(k, want / want.sum(), rtol=1e-12)
        impulse = np.zeros(4 * r + 1)
        impulse[2 * r] = 1.0
        np.testing.assert_allclose(
            ndimage.gaussian_filter1d(impulse, sigma, truncate=4.0)[r : 3 * r + 1], k, atol=1e-12
        )


def test_blur_reflects_on_axes_shorter_than_the_radius() -> None:
    # Direct numpy convolution with repeated symmetric padding: the docstring's edge rule.
    rng = np.random.default_rng(3)
    for h, w, sigma in [(1, 9, 3.0), (5, 2, 4.0), (3, 7, 50.0), (2, 300, 45.0)]:
        x = rng.random((h, w, 3)).astype(np.float32).astype(np.float64)
        k, r = ops.gaussian_kernel(sigma)
        want = x
        for axis in (0, 1):
            pad = [(0, 0)] * 3
            pad[axis] = (r, r)
            xp = np.pad(want, pad, mode="symmetric")
            n = want.shape[axis]
            want = sum(k[t] * np.take(xp, np.arange(t, t + n), axis=axis) for t in range(2 * r + 1))
        got = np.array(ops.gaussian_blur(mx.array(x.astype(np.float32)), sigma))
        assert np.abs(got - want).max() <= POINTWISE_TOL, (h, w, sigma)


def test_blur_below_min_sigma_is_identity(photos: dict) -> None:
    img = to_mx(photos["coffee"])  # long side 600: amount 0.04 % is sigma 0.24 px
    assert mx.array_equal(ops.blur(img, 0.04), img)


# ---- against PIL where the semantics coincide -------------------------------------------------


def pil_f64(im: Image.Image) -> np.ndarray:
    return np.asarray(im, dtype=np.float64) / 255.0


@pytest.mark.parametrize("photo", PHOTOS)
def test_contrast_and_saturation_match_pil_enhance(photo: str, photos: dict) -> None:
    # PIL works in 8 bits: the luma (or mean luma) is rounded to a whole level (error <= 0.5,
    # scaled by |1 - factor| = |a|) and the blend truncates to a level (error < 1), so the bound is
    # (1 + 0.5 |a|) / 255.
    u8 = photos[photo]
    pil, img = Image.fromarray(u8), to_mx(u8)
    for a in (-1.0, -0.5, 0.3, 1.0):
        bound = (1 + 0.5 * abs(a)) / 255 + 1e-6
        c = np.abs(run("contrast", img, a) - pil_f64(ImageEnhance.Contrast(pil).enhance(1 + a)))
        s = np.abs(run("saturation", img, a) - pil_f64(ImageEnhance.Color(pil).enhance(1 + a)))
        assert c.max() <= bound, f"contrast {a}: {c.max() * 255:.2f}/255"
        assert s.max() <= bound, f"saturation {a}: {s.max() * 255:.2f}/255"
        assert c.mean() <= 0.6 / 255 and s.mean() <= 0.6 / 255


@pytest.mark.parametrize("photo", PHOTOS)
def test_grayscale_and_invert_match_pil_imageops(photo: str, photos: dict) -> None:
    u8 = photos[photo]
    pil, img = Image.fromarray(u8), to_mx(u8)
    gray = run("grayscale", img, 1.0)
    want = pil_f64(ImageOps.grayscale(pil))  # L rounded to a whole level: <= 0.5/255
    for c in range(3):
        assert np.abs(gray[..., c] - want).max() <= 0.5 / 255 + 1e-6
    # 255 - v is exact in 8 bits and in float32 (1e-6 for the float32 rounding of v/255).
    np.testing.assert_allclose(run("invert", img, 1.0), pil_f64(ImageOps.invert(pil)), atol=1e-6)


@pytest.mark.parametrize("photo", PHOTOS)
def test_blur_is_close_to_pil_gaussian_blur(photo: str, photos: dict) -> None:
    # PIL approximates the Gaussian with three box blurs and clamps at the border instead of
    # reflecting, so compare away from the border (4 sigma) with loose bounds: mean difference
    # under 1/255 and no pixel off by more than 6/255 (the box approximation's error peaks at
    # sharp edges, measured at ~4.6/255).
    u8 = photos[photo]
    pil, img = Image.fromarray(u8), to_mx(u8)
    for sigma in (1.0, 2.0, 5.0, 20.0):
        r = int(4 * sigma + 0.5)
        got = np.array(ops.gaussian_blur(img, sigma), dtype=np.float64)[r:-r, r:-r]
        want = pil_f64(pil.filter(ImageFilter.GaussianBlur(sigma)))[r:-r, r:-r]
        diff = np.abs(got - want)
        assert diff.mean() <= 1.0 / 255 and diff.max() <= 6.0 / 255, (sigma, diff.max() * 255)


@pytest.mark.parametrize("photo", PHOTOS)
def test_sharpen_is_close_to_pil_unsharp_mask(photo: str, photos: dict) -> None:
    # The same unsharp mask up to PIL's box-approximated blur (max ~2.5/255 at sigma 1) scaled
    # by the amount, plus 8-bit rounding: mean <= (0.5 + 0.6 a)/255, max <= (1 + 2.5 a)/255.
    u8 = photos[photo]
    pil, img = Image.fromarray(u8), to_mx(u8)
    for a in (0.5, 1.0, 2.0):
        want = pil_f64(pil.filter(ImageFilter.UnsharpMask(ops.SHARPEN_SIGMA, round(100 * a), 0)))
        diff = np.abs(run("sharpen", img, a) - want)[4:-4, 4:-4]
        assert diff.mean() <= (0.5 + 0.6 * a) / 255, (a, diff.mean() * 255)
        assert diff.max() <= (1 + 2.5 * a) / 255, (a, diff.max() * 255)


# ---- what the formulas promise ----------------------------------------------------------------


def test_hue_keeps_luma_and_moves_hsv_hue_forward(photos: dict) -> None:
    img = to_mx(photos["astronaut"])
    for deg in (-90.0, 30.0, 180.0):
        m = ops.hue_matrix(deg)
        np.testing.assert_allclose(LUMA @ m, LUMA, atol=1e-12)  # the luma row is kept
        np.testing.assert_allclose(ops.hue_matrix(-deg) @ m, np.eye(3), atol=1e-12)
    assert np.abs(run("hue", img, 0.0) - as_f64(photos["astronaut"])).max() <= 1e-6
    for rgb in [(0.8, 0.3, 0.2), (0.3, 0.6, 0.35), (0.25, 0.3, 0.75)]:
        out = np.clip(ops.hue_matrix(20.0) @ np.array(rgb), 0, 1)
        before, after = colorsys.rgb_to_hsv(*rgb)[0], colorsys.rgb_to_hsv(*out)[0]
        assert 0 < (after - before) % 1.0 < 0.25, rgb  # moved forward, by roughly 20 degrees


def test_temperature_and_tint_directions(photos: dict) -> None:
    x = to_mx(photos["coffee"])
    mean = lambda a: np.array(a).reshape(-1, 3).mean(axis=0)  # noqa: E731
    base, warm, cool = mean(x), mean(ops.temperature(x, 0.5)), mean(ops.temperature(x, -0.5))
    assert warm[0] > base[0] > cool[0] and warm[2] < base[2] < cool[2]
    magenta, green = mean(ops.tint(x, 0.5)), mean(ops.tint(x, -0.5))
    assert magenta[1] < base[1] < green[1]
    grey = mx.full((2, 2, 3), 0.5)  # neutral grey keeps its (linear) luminance
    for op in (ops.temperature, ops.tint):
        lin = decode(np.array(op(grey, 0.7), dtype=np.float64))
        assert abs(lin[0, 0] @ REC709 - decode(np.array(0.5))) < 1e-5


def test_vignette_centre_kept_corners_moved(photos: dict) -> None:
    x = to_mx(photos["chelsea"])
    dark, light = np.array(ops.vignette(x, 1.0)), np.array(ops.vignette(x, -1.0))
    h, w = dark.shape[:2]
    np.testing.assert_array_equal(dark[h // 2, w // 2], np.array(x)[h // 2, w // 2])
    assert dark[0, 0].max() < 0.02 and light[0, 0].min() > 0.98
    mask = np.array(ops.vignette_mask(h, w))
    np.testing.assert_allclose(mask, mask[::-1, ::-1], atol=1e-6)  # symmetric about the centre
    # any aspect ratio: the two ends of a 1 x 20000 strip reach the full falloff
    strip = np.array(ops.vignette_mask(1, 20000))[0, :, 0]
    assert strip[0] > 0.999 and strip[-1] > 0.999 and strip[10000] == 0.0


def test_grain_noise_is_standard_normal_and_seeded() -> None:
    n = np.array(ops.grain_noise(400, 500, 7), dtype=np.float64)
    # 200k samples: the mean's standard error is 0.0022, the std's 0.0016 (5 sigma bounds)
    assert abs(n.mean()) < 0.011 and abs(n.std() - 1) < 0.008
    assert np.array_equal(n, np.array(ops.grain_noise(400, 500, 7)))
    assert not np.array_equal(n, np.array(ops.grain_noise(400, 500, 8)))


def test_brightness_and_exposure_keep_black_and_white(photos: dict) -> None:
    ends = mx.array(np.array([[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]], dtype=np.float32))
    for a in (-1.0, -0.3, 0.3, 1.0):
        np.testing.assert_array_equal(np.array(ops.brightness(ends, a)), np.array(ends))
    assert np.array(ops.exposure(ends, -2.0))[0, 0].max() == 0.0


# ---- hypothesis properties --------------------------------------------------------------------

small_images = hnp.arrays(
    np.float32,
    st.tuples(st.integers(1, 12), st.integers(1, 12), st.just(3)),
    elements=st.floats(0.0, 1.0, width=32),
)


@settings(max_examples=60, deadline=None)
@given(img=small_images, name=st.sampled_from(list(SPECS)))
def test_amount_zero_is_identity(img: np.ndarray, name: str) -> None:
    got = np.array(OPS[name](mx.array(img), 0.0))
    # the sRGB round trip (exposure, temperature, tint) costs a few float32 ulps
    np.testing.assert_allclose(got, img, atol=2e-6, rtol=0)
    assert np.array_equal(np.array(apply_ops(mx.array(img), [{"op": name, "amount": 0}])), img)


@settings(max_examples=120, deadline=None)
@given(
    img=small_images,
    name=st.sampled_from(PHOTOMETRIC),
    frac=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32),
)
def test_output_is_clipped_float32_same_shape(
    img: np.ndarray, name: str, frac: float, seed: int
) -> None:
    spec = SPECS[name]
    amount = spec.min + frac * (spec.max - spec.min)
    out = apply_ops(mx.array(img), [{"op": name, "amount": amount}], seed=seed)
    got = np.array(out)
    assert out.dtype == mx.float32 and got.shape == img.shape
    assert np.isfinite(got).all() and got.min() >= 0.0 and got.max() <= 1.0


@settings(max_examples=40, deadline=None)
@given(
    img=small_images,
    name=st.sampled_from(["brightness", "exposure", "gamma"]),
    a=st.floats(-1.0, 1.0),
    b=st.floats(-1.0, 1.0),
)
def test_tone_ops_are_monotonic(img: np.ndarray, name: str, a: float, b: float) -> None:
    lo, hi = min(a, b), max(a, b)
    x = mx.array(img)
    out_lo, out_hi = np.array(OPS[name](x, lo)), np.array(OPS[name](x, hi))
    assert (out_hi >= out_lo - 1e-6).all()  # more amount, never darker
    flat = img.reshape(-1)
    order = np.argsort(flat, kind="stable")
    curve = np.array(OPS[name](mx.array(flat[order].reshape(1, -1, 3)), hi)).reshape(-1)
    # the curve is per channel: sorting all values as one channel-agnostic ramp must stay sorted
    assert (np.diff(curve) >= -1e-6).all()


@settings(max_examples=30, deadline=None)
@given(
    img=small_images,
    seed=st.integers(0, 2**31),
    other=st.integers(0, 2**31),
    amount=st.floats(0.1, 1.0),
)
def test_grain_same_seed_same_output(img: np.ndarray, seed: int, other: int, amount: float) -> None:
    x = mx.array(np.full((16, 16, 3), 0.5, dtype=np.float32))  # mid-grey: full grain weight
    plan = [{"op": "grain", "amount": amount}]
    first = np.array(apply_ops(x, plan, seed=seed))
    assert np.array_equal(first, np.array(apply_ops(x, plan, seed=seed)))
    if other != seed:
        assert not np.array_equal(first, np.array(apply_ops(x, plan, seed=other)))
    y = mx.array(img)
    assert np.array_equal(
        np.array(ops.grain(y, amount, seed)), np.array(ops.grain(y, amount, seed))
    )


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (2, 3), (1, 20000), (20000, 1)])
@pytest.mark.parametrize("name", PHOTOMETRIC)
def test_odd_shapes_match_oracle(shape: tuple[int, int], name: str) -> None:
    rng = np.random.default_rng(sum(shape))
    x = rng.random((*shape, 3)).astype(np.float32)
    for a in (SPECS[name].moderate, SPECS[name].max):
        got = run(name, mx.array(x), a)
        assert np.abs(got - ORACLES[name](x.astype(np.float64), a)).max() <= POINTWISE_TOL


# ---- apply_ops --------------------------------------------------------------------------------


def test_apply_ops_chains_in_order(photos: dict) -> None:
    img = to_mx(photos["coffee"])
    plan = [
        {"op": "exposure", "amount": 0.5},
        {"op": "contrast", "amount": 0.25},
        {"op": "grain", "amount": 0.3},
        {"op": "vignette", "amount": 0.4},
    ]
    want = ops.vignette(ops.grain(ops.contrast(ops.exposure(img, 0.5), 0.25), 0.3, seed=5), 0.4)
    with reference_only():  # the MLX-op definitions: exactly the composition
        assert mx.array_equal(apply_ops(img, plan, seed=5), want)
    # The fused kernel: within its stated float32 tolerance (pbmlx.kernels.adjust).
    assert np.abs(np.array(apply_ops(img, plan, seed=5)) - np.array(want)).max() <= 2e-6
    assert mx.array_equal(apply_ops(img, []), img)


def test_apply_ops_clamps_to_the_spec_range(photos: dict) -> None:
    img = to_mx(photos["chelsea"])
    for name, past, edge in [("brightness", 7.0, 1.0), ("hue", -999.0, -180.0), ("fade", -3, 0)]:
        got = apply_ops(img, [{"op": name, "amount": past}])
        assert mx.array_equal(got, apply_ops(img, [{"op": name, "amount": edge}])), name
    assert SPECS["blur"].clamp(9) == 5.0


@pytest.mark.parametrize(
    ("plan", "words"),
    [
        ([{"op": "sparkle", "amount": 1}], "unknown op 'sparkle'"),
        ([{"op": ["blur"], "amount": 1}], "unknown op"),
        ([{"op": "blur", "amount": float("nan")}], "non-finite"),
        ([{"op": "blur", "amount": float("inf")}], "non-finite"),
        ([{"op": "exposure", "amount": -math.inf}], "non-finite"),
        ([{"op": "blur", "amount": "lots"}], "non-numeric"),
        ([{"op": "blur", "amount": True}], "non-numeric"),
        ([{"op": "blur"}], "'op' and 'amount'"),
        (["blur"], "'op' and 'amount'"),
        ({"op": "blur", "amount": 1}, "list of steps"),
    ],
)
def test_apply_ops_rejects_bad_plans(plan: object, words: str) -> None:
    img = mx.zeros((4, 4, 3))
    with pytest.raises(PbmlxError, match=words):
        apply_ops(img, plan)  # type: ignore[arg-type]


def test_apply_ops_checks_every_step_before_working() -> None:
    with pytest.raises(PbmlxError, match="step 1"):
        apply_ops(mx.zeros((4, 4, 3)), [{"op": "blur", "amount": 1}, {"op": "x", "amount": 1}])


@pytest.mark.parametrize(
    ("img", "words"),
    [
        ([[[0.0, 0.0, 0.0]]], "mlx or numpy array"),
        (np.zeros((4, 4, 3), np.int16), "dtype"),
        (mx.zeros((4, 4)), "shape"),
        (mx.zeros((4, 4, 4)), "shape"),
        (mx.zeros((0, 4, 3)), "shape"),
        (mx.zeros((4, 4, 3), dtype=mx.int32), "dtype"),
    ],
)
def test_apply_ops_rejects_bad_images(img: object, words: str) -> None:
    with pytest.raises(PbmlxError, match=words):
        apply_ops(img, [])  # type: ignore[arg-type]


def test_apply_ops_rejects_bad_seed() -> None:
    for seed in (-1, 2**64, 1.5, True):
        with pytest.raises(PbmlxError, match="seed"):
            apply_ops(mx.zeros((2, 2, 3)), [], seed=seed)  # type: ignore[arg-type]
