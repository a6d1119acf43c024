"""Full resolution (pbmlx.diffuse.fullres): an edit made at working size, brought back to the photo.

The editor is simulated at working size on real photos (skimage.data), with the oracles computed
independently in NumPy float64 / SciPy / PIL:

- a VAE-like round trip ``vae_like``: a 1 px Gaussian blur, a 1-2 % colour shift and N(0, 0.01)
  noise (26-31 dB PSNR against the source here). Where an edit changed nothing, the ideal
  full-resolution result is the original with that colour shift (``_shift``), since a colour
  shift is something the editor did; its blur and noise are not.
- a local paste of another photo inside an ellipse (new content), a local hue rotation inside an
  ellipse (a recolour: the ideal applies the same rotation to the original at full resolution),
  and a global warm white balance (the ideal applies it to the original at full resolution).

Full-resolution photos are the skimage photos upscaled 2x (Lanczos) and edited at a working
size of 256 (long side): a 4-5x ratio, and the native detail of the photos lies above the
working size's Nyquist limit, so keeping it is measurable. One test runs the default working
size (512) on a 2048 px photo; a slow one runs 12 MP. Sharpness is the variance of the
4-neighbour Laplacian of luma (float64), a standard focus measure dominated by the finest
detail. Run with ``-s`` to see the measured numbers.
"""

from __future__ import annotations

import functools
import math
import time

import numpy as np
import pytest
import skimage.data
from PIL import Image
from scipy import ndimage

import pbmlx  # noqa: F401  (before anything that loads MLX, so MLX binds OpenBLAS)
from pbmlx.diffuse.fullres import (
    ToneModel,
    _blur,
    change_mask,
    fit_tone,
    restore_full_resolution,
    to_working,
    working_size,
)
from pbmlx.errors import PbmlxError

LONGEST = 256  # working long side of the 2x photos (see the module doc)
GAIN = np.array([1.02, 0.99, 0.985])  # the VAE-like colour shift
OFFSET = np.array([0.004, 0.0, -0.004])
LUMA601 = np.array([0.299, 0.587, 0.114])  # the sharpness measure's luma (independent of pbmlx)

# Ellipses (centre y, centre x, radius y, radius x) as fractions of the height / width:
# where to paste new content, and a colourful region to recolour; and the donor photo.
CASES = {
    "astronaut": ((0.30, 0.45, 0.20, 0.20), (0.85, 0.25, 0.12, 0.20), "coffee"),
    "coffee": ((0.50, 0.50, 0.30, 0.25), (0.45, 0.50, 0.25, 0.22), "astronaut"),
    "chelsea": ((0.45, 0.45, 0.30, 0.20), (0.45, 0.45, 0.30, 0.20), "rocket"),
    "rocket": ((0.55, 0.45, 0.25, 0.15), (0.75, 0.30, 0.20, 0.15), "chelsea"),
}
MARGIN = 6  # working px excluded around a region's edge (low-pass sigma 2 + feather + rounding)


# ---------------------------------------------------------------------------------------------
# Oracles and simulated editors (NumPy float64 / SciPy / PIL)


def _resize(img: np.ndarray, width: int, height: int, resample: int) -> np.ndarray:
    chans = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(img[:, :, c], np.float32), "F").resize(
                (width, height), resample
            )
        )
        for c in range(3)
    ]
    return np.clip(np.stack(chans, axis=-1), 0.0, 1.0).astype(np.float32)


def _up(small: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The naive result: the edit upsampled bicubically."""
    return _resize(small, shape[1], shape[0], Image.BICUBIC)


def _shift(x: np.ndarray) -> np.ndarray:
    return np.clip(x * GAIN + OFFSET, 0.0, 1.0)


def vae_like(x: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = _shift(ndimage.gaussian_filter(x.astype(np.float64), (1.0, 1.0, 0.0)))
    return np.clip(y + rng.normal(0.0, 0.01, x.shape), 0.0, 1.0).astype(np.float32)


def _srgb_decode(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def _srgb_encode(y: np.ndarray) -> np.ndarray:
    y = np.clip(y, 0.0, 1.0)
    return np.where(y <= 0.0031308, 12.92 * y, 1.055 * y ** (1 / 2.4) - 0.055)


def _warm(x: np.ndarray) -> np.ndarray:
    """A warm white balance: red +1/4 stop, blue -1/4 stop in linear light, grey kept."""
    gains = 2.0 ** np.array([0.25, 0.0, -0.25])
    gains /= np.dot([0.2126, 0.7152, 0.0722], gains)
    return np.clip(_srgb_encode(_srgb_decode(x.astype(np.float64)) * gains), 0.0, 1.0)


def _hue_rotate(x: np.ndarray, degrees: float) -> np.ndarray:
    """Rotation of RGB about the grey axis (Rodrigues), clipped."""
    t = np.radians(degrees)
    k = np.ones(3) / np.sqrt(3.0)
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    rot = np.cos(t) * np.eye(3) + np.sin(t) * cross + (1 - np.cos(t)) * np.outer(k, k)
    return np.clip(x.astype(np.float64) @ rot.T, 0.0, 1.0)


def _ellipse(h: int, w: int, spec: tuple[float, float, float, float]) -> np.ndarray:
    cy, cx, ry, rx = spec
    y, x = np.mgrid[0:h, 0:w]
    return ((y + 0.5 - cy * h) / (ry * h)) ** 2 + ((x + 0.5 - cx * w) / (rx * w)) ** 2 <= 1.0


def sharpness(img: np.ndarray, region: np.ndarray | None = None) -> float:
    """Variance of the 4-neighbour Laplacian of luma over ``region`` (1 px border dropped)."""
    y = img.astype(np.float64) @ LUMA601
    lap = y[1:-1, :-2] + y[1:-1, 2:] + y[:-2, 1:-1] + y[2:, 1:-1] - 4.0 * y[1:-1, 1:-1]
    return float(lap[region[1:-1, 1:-1]].var() if region is not None else lap.var())


def psnr(a: np.ndarray, b: np.ndarray, region: np.ndarray | None = None) -> float:
    d = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    return float(10.0 * np.log10(1.0 / (d[region] if region is not None else d).mean()))


@functools.cache
def photo(name: str, scale: int = 2, longest: int = LONGEST) -> tuple[np.ndarray, np.ndarray]:
    """(original at full resolution, source at working size): read-only, shared by the tests."""
    native = getattr(skimage.data, name)().astype(np.float32) / 255.0
    h0, w0 = native.shape[:2]
    full = _resize(native, w0 * scale, h0 * scale, Image.LANCZOS) if scale > 1 else native
    source = to_working(full, working_size(full.shape[1], full.shape[0], longest))
    full.flags.writeable = source.flags.writeable = False
    return full, source


def regions(name: str, which: int, full_shape, small_shape):
    """(region at working size, inside at full res, outside at full res) for CASES[name][which]."""
    spec = CASES[name][which]
    small = _ellipse(small_shape[0], small_shape[1], spec)
    big = _ellipse(full_shape[0], full_shape[1], spec)
    margin = round(MARGIN * full_shape[0] / small_shape[0])
    inside = ndimage.binary_erosion(big, iterations=margin)
    outside = ~ndimage.binary_dilation(big, iterations=margin)
    return small, inside, outside


def _check_output(out: np.ndarray, original: np.ndarray) -> None:
    assert out.shape == original.shape and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0


# ---------------------------------------------------------------------------------------------
# working_size and to_working


@pytest.mark.parametrize(
    ("size", "kwargs", "expected"),
    [
        ((4000, 3000), {}, (512, 384)),  # 12 MP landscape
        ((3000, 4000), {}, (384, 512)),  # portrait
        ((4032, 3024), {}, (512, 384)),  # a phone's 12 MP
        ((6000, 4000), {}, (512, 344)),  # 341.3 rounds to 344
        ((512, 512), {}, (512, 512)),
        ((100, 60), {}, (96, 56)),  # smaller than 512: only rounded, ties down (12.5, 7.5)
        ((100, 61), {}, (96, 64)),  # 7.625 rounds up
        ((5, 3), {}, (8, 8)),  # never below one multiple
        ((1, 20000), {}, (8, 512)),  # extreme ratios keep both sides >= multiple
        ((20000, 1), {}, (512, 8)),
        ((4000, 3000), {"longest": 256}, (256, 192)),
        ((4000, 3000), {"longest": 700, "multiple": 64}, (640, 448)),  # 700 -> 640; 7.5 -> 7
    ],
)
def test_working_size_cases(size, kwargs, expected) -> None:
    assert working_size(*size, **kwargs) == expected


def test_working_size_properties() -> None:
    """Multiples, long side, aspect within rounding, no upscaling beyond rounding."""
    rng = np.random.default_rng(0)
    for _ in range(500):
        width, height = (int(v) for v in rng.integers(1, 9000, size=2))
        w, h = working_size(width, height)
        assert w % 8 == 0 and h % 8 == 0 and w >= 8 and h >= 8
        scale = min(1.0, 512 / max(width, height))
        # Each side is the exactly scaled side rounded to the nearest multiple of 8 (or 8).
        for got, side in ((w, width), (h, height)):
            assert got == 8 or abs(got - side * scale) <= 4.0 + 1e-9
        if max(width, height) >= 512:
            assert max(w, h) == 512
        else:
            assert w <= width + 4 or w == 8
            assert h <= height + 4 or h == 8


@pytest.mark.parametrize(
    "args",
    [(0, 10), (10, -1), (2.5, 10), (True, 10), (10, 10, 4), (10, 10, 512, 0), (10, 10, "512")],
)
def test_working_size_refuses_bad_values(args) -> None:
    with pytest.raises(PbmlxError):
        working_size(*args)


def test_to_working_antialiases() -> None:
    """A full-res checkerboard (energy only at Nyquist) must come out flat grey, not aliased;
    a real photo downsampled 4x must match a float64 4x4 area average within 30 dB (both are
    antialiasing low-passes; Lanczos is sharper, hence not tighter)."""
    y, x = np.mgrid[0:400, 0:600]
    checker = np.repeat(((x + y) % 2).astype(np.float32)[:, :, None], 3, axis=2)
    small = to_working(checker, (150, 100))
    assert small.shape == (100, 150, 3) and small.dtype == np.float32
    assert np.abs(small[4:-4, 4:-4] - 0.5).max() < 0.02
    full, _ = photo("coffee", scale=1)
    small = to_working(full, (150, 100))
    area = full.astype(np.float64).reshape(100, 4, 150, 4, 3).mean(axis=(1, 3))
    assert psnr(small, area) > 30.0
    assert to_working(full, (600, 400)) is not full and np.array_equal(
        to_working(full, (600, 400)), full
    )


# ---------------------------------------------------------------------------------------------
# Building blocks against their oracles


def test_blur_matches_scipy() -> None:
    """The analysis blur equals SciPy's Gaussian (mirrored edges, 3-sigma support) to float32."""
    rng = np.random.default_rng(1)
    x = rng.random((3, 37, 53)).astype(np.float32)
    for sigma in (1.0, 2.0, math.hypot(2.0, 1.5), 8.0):
        radius = int(np.ceil(3.0 * sigma))
        ref = ndimage.gaussian_filter(
            x.astype(np.float64), (0, sigma, sigma), mode="reflect", truncate=radius / sigma
        )
        assert np.abs(_blur(x, sigma) - ref).max() < 2e-6


def test_tone_model_recovers_a_global_map() -> None:
    """A saturation boost (a colour matrix) followed by a brightening curve that clips at white,
    applied to a real photo, is recovered by ``fit_tone`` to within 1/255 on all of the photo's
    colours (measured 0.3/255); the lookup-table evaluation matches the exact piecewise-linear
    model to 1e-4; an unchanged photo gives exactly the identity."""
    _, source = photo("chelsea")
    planes = np.ascontiguousarray(source.transpose(2, 0, 1)).astype(np.float64)
    grey = np.tensordot([0.2126, 0.7152, 0.0722], planes, axes=1)
    mixed = grey + 1.15 * (planes - grey)  # saturation +15 %
    target = np.clip(0.03 + 1.25 * mixed - 0.15 * mixed**2, 0.0, 1.0).astype(np.float32)
    tone = fit_tone(planes.astype(np.float32), target)
    got = tone(planes.astype(np.float32))
    assert np.abs(got - target).max() < 1.0 / 255.0
    flat = planes.reshape(3, -1)
    exact = np.stack([tone.curve(c, tone.mix(flat)[c])[0] for c in range(3)]).reshape(got.shape)
    assert np.abs(got - exact).max() < 1e-4
    assert fit_tone(planes.astype(np.float32), planes.astype(np.float32)).is_identity()
    assert ToneModel.identity().is_identity()


# ---------------------------------------------------------------------------------------------
# (1) Nothing changed: the original's sharpness is kept


@pytest.mark.parametrize("name", list(CASES))
def test_unchanged_regions_keep_the_originals_sharpness(name: str) -> None:
    """The whole photo is unchanged (a VAE-like round trip only): sharpness of the result
    >= 0.95 of the original's and of the ideal's (measured 0.97-0.99), PSNR against the ideal
    >= 45 dB (measured 54-56); the naive upsampled edit keeps <= 10 % of it (measured 0.2-2 %)."""
    full, source = photo(name)
    edited = vae_like(source, seed=0)
    out = restore_full_resolution(full, source, edited)
    _check_output(out, full)
    ideal = _shift(full)
    naive = _up(edited, full.shape)
    ours, base = sharpness(out) / sharpness(full), sharpness(naive) / sharpness(full)
    print(
        f"\n{name}: sharpness ours/original {ours:.3f}, ours/ideal "
        f"{sharpness(out) / sharpness(ideal):.3f}, naive/original {base:.3f}; PSNR vs ideal "
        f"ours {psnr(out, ideal):.1f} dB, naive {psnr(naive, ideal):.1f} dB"
    )
    assert ours >= 0.95 and sharpness(out) / sharpness(ideal) >= 0.95
    assert base <= 0.10
    assert psnr(out, ideal) >= 45.0
    assert not change_mask(source, edited).any()


@pytest.mark.parametrize("name", list(CASES))
def test_an_identical_edit_returns_the_original_bit_for_bit(name: str) -> None:
    full, source = photo(name)
    assert np.array_equal(restore_full_resolution(full, source, source), full)


# ---------------------------------------------------------------------------------------------
# (2) Local edits


@pytest.mark.parametrize("name", list(CASES))
def test_pasted_object_comes_from_the_edit_and_the_rest_from_the_original(name: str) -> None:
    """New content pasted in an ellipse (plus the VAE-like round trip everywhere). Inside (the
    ellipse shrunk by 6 working px): PSNR against the upsampled edit >= 30 dB (measured 50-130)
    and no ghost of the original: the regression of the result's fine luma (minus up(E)) on the
    original's (minus up(S)) is <= 0.05 (measured <= 0.014). Outside (grown by 6 px): PSNR
    against the ideal >= 42 dB (measured 44-54), sharpness >= 0.95 of the ideal's. The mask
    covers the ellipse (mean >= 0.9) and little more (area over 0.5 under 1.3x; measured
    1.03-1.16)."""
    full, source = photo(name)
    donor = _resize(
        photo(CASES[name][2], scale=1)[0], source.shape[1], source.shape[0], Image.LANCZOS
    )
    region, inside, outside = regions(name, 0, full.shape, source.shape)
    pasted = source.copy()
    pasted[region] = donor[region]
    edited = vae_like(pasted, seed=1)
    mask = change_mask(source, edited)
    out = restore_full_resolution(full, source, edited)
    _check_output(out, full)
    naive, ideal = _up(edited, full.shape), _shift(full)
    fine_out = ((out - naive).astype(np.float64) @ LUMA601)[inside]
    fine_orig = ((full - _up(source, full.shape)).astype(np.float64) @ LUMA601)[inside]
    leak = np.cov(fine_out, fine_orig)[0, 1] / fine_orig.var()
    keep = sharpness(out, outside) / sharpness(ideal, outside)
    print(
        f"\n{name}: inside PSNR vs up(E) {psnr(out, naive, inside):.1f} dB, ghost {leak:.3f}; "
        f"outside PSNR vs ideal {psnr(out, ideal, outside):.1f} dB (naive "
        f"{psnr(naive, ideal, outside):.1f}), sharpness ours/ideal {keep:.3f} (naive "
        f"{sharpness(naive, outside) / sharpness(ideal, outside):.3f}); mask mean in "
        f"{mask[region].mean():.3f}, area {(mask > 0.5).sum() / region.sum():.2f}x"
    )
    assert psnr(out, naive, inside) >= 30.0
    assert leak <= 0.05
    assert psnr(out, ideal, outside) >= 42.0
    assert keep >= 0.95
    assert mask[region].mean() >= 0.9 and (mask > 0.5).sum() <= 1.3 * region.sum()


@pytest.mark.parametrize("name", list(CASES))
def test_recoloured_region_gets_the_colour_and_keeps_the_detail(name: str) -> None:
    """A 150 degree hue rotation inside an ellipse. The ideal is the same rotation applied to
    the original at full resolution. Inside: sharpness >= 0.4 of the ideal's (the fine luma
    comes from the original; measured 0.5-1.1) where the upsampled edit keeps <= 5 % (measured
    0.1-2 %), and PSNR against the ideal >= the upsampled edit's + 1 dB (measured +1.3 to +2.9;
    both are limited by the simulated VAE's blur of the colour). Outside: >= 42 dB."""
    full, source = photo(name)
    region, inside, outside = regions(name, 1, full.shape, source.shape)
    recoloured = source.copy()
    recoloured[region] = _hue_rotate(source, 150.0)[region]
    edited = vae_like(recoloured, seed=2)
    out = restore_full_resolution(full, source, edited)
    _check_output(out, full)
    big = _ellipse(full.shape[0], full.shape[1], CASES[name][1])
    ideal = _shift(full).astype(np.float64)
    ideal[big] = _shift(_hue_rotate(full[big], 150.0))
    naive = _up(edited, full.shape)
    gain = psnr(out, ideal, inside) - psnr(naive, ideal, inside)
    ours = sharpness(out, inside) / sharpness(ideal, inside)
    base = sharpness(naive, inside) / sharpness(ideal, inside)
    print(
        f"\n{name}: inside sharpness ours/ideal {ours:.3f}, naive {base:.3f}; PSNR vs ideal ours "
        f"{psnr(out, ideal, inside):.1f} dB, naive {psnr(naive, ideal, inside):.1f} dB "
        f"(+{gain:.1f}); outside vs ideal {psnr(out, ideal, outside):.1f} dB"
    )
    assert ours >= 0.4 and base <= 0.05
    assert gain >= 1.0
    assert psnr(out, ideal, outside) >= 42.0


# ---------------------------------------------------------------------------------------------
# (3) A global tone edit


@pytest.mark.parametrize("name", list(CASES))
def test_global_warm_edit_transfers_with_the_detail(name: str) -> None:
    """Warm white balance everywhere (then the VAE-like round trip). The mean colour of the
    result matches the upsampled edit's within 2/255 per channel (measured <= 0.3/255); against
    the ideal (the same warm at full resolution) PSNR >= 45 dB (measured 51-57) and sharpness
    >= 0.95 (measured 0.97-0.99; the tone fit's slopes come out ~1 % low through the VAE blur),
    against 2 % or less for the naive upsampled edit; no region counts as changed content."""
    full, source = photo(name)
    edited = vae_like(_warm(source), seed=3)
    out = restore_full_resolution(full, source, edited)
    _check_output(out, full)
    naive, ideal = _up(edited, full.shape), _shift(_warm(full))
    drift = np.abs(out.reshape(-1, 3).mean(0) - naive.reshape(-1, 3).mean(0)).max() * 255
    keep = sharpness(out) / sharpness(ideal)
    print(
        f"\n{name}: mean colour vs up(E) {drift:.2f}/255; PSNR vs ideal ours "
        f"{psnr(out, ideal):.1f} dB, naive {psnr(naive, ideal):.1f} dB; sharpness ours/ideal "
        f"{keep:.3f}, naive {sharpness(naive) / sharpness(ideal):.3f}"
    )
    assert drift <= 2.0
    assert psnr(out, ideal) >= 45.0
    assert keep >= 0.95
    assert (change_mask(source, edited) > 0.5).mean() < 0.001


# ---------------------------------------------------------------------------------------------
# The default working size on a 2048 px photo, odd shapes, bad inputs, a user's mask


def test_default_working_size_on_a_2048_px_photo() -> None:
    """astronaut 4x (2048 px) edited at the default 512: unchanged -> sharpness >= 0.95 of the
    original's (measured 0.99; naive 0.12); pasted content as in the 2x tests."""
    full, source = photo("astronaut", scale=4, longest=512)
    assert source.shape == (512, 512, 3)
    edited = vae_like(source, seed=0)
    out = restore_full_resolution(full, source, edited)
    _check_output(out, full)
    ours = sharpness(out) / sharpness(full)
    base = sharpness(_up(edited, full.shape)) / sharpness(full)
    print(f"\nastronaut 2048 px: sharpness ours {ours:.3f}, naive {base:.3f}")
    assert ours >= 0.95 and base <= 0.2


@pytest.mark.parametrize(("height", "width"), [(20000, 1), (3, 2000), (30, 50), (7, 5)])
def test_extreme_and_tiny_photos(height: int, width: int) -> None:
    rng = np.random.default_rng(height + width)
    full = rng.random((height, width, 3)).astype(np.float32)
    w, h = working_size(width, height)
    source = to_working(full, (w, h))
    assert source.shape == (h, w, 3)
    edited = np.clip(source[::-1] * 0.9 + 0.05, 0, 1).astype(np.float32)  # content changed
    out = restore_full_resolution(full, source, edited)
    _check_output(out, full)
    assert np.array_equal(restore_full_resolution(full, source, source), full)


def test_float64_inputs_and_slight_overshoot_are_accepted() -> None:
    full, source = photo("coffee")
    edited = vae_like(source, seed=5).astype(np.float64) * 1.01 - 0.002  # a VAE decode's overshoot
    out = restore_full_resolution(full.astype(np.float64), source.astype(np.float64), edited)
    _check_output(out, full)


def test_user_mask_replaces_the_computed_one() -> None:
    """Under a pasted object, mask = 0 keeps the original's fine detail (the correlation of
    the high-passed luma with the original's is > 0.9: only the object's smooth colour is carried
    over) and mask = 1 drops it (< 0.3)."""
    full, source = photo("rocket")
    region, inside, _ = regions("rocket", 0, full.shape, source.shape)
    pasted = source.copy()
    pasted[region] = 1.0 - source[region]

    def fine(img: np.ndarray) -> np.ndarray:  # full-res high-pass of luma (sigma 2 px)
        y = img.astype(np.float64) @ LUMA601
        return (y - ndimage.gaussian_filter(y, 2.0))[inside]

    zeros, ones = np.zeros(source.shape[:2]), np.ones(source.shape[:2])
    kept = np.corrcoef(fine(restore_full_resolution(full, source, pasted, mask=zeros)), fine(full))
    gone = np.corrcoef(fine(restore_full_resolution(full, source, pasted, mask=ones)), fine(full))
    assert kept[0, 1] > 0.9 and gone[0, 1] < 0.3


@pytest.mark.parametrize(
    ("original", "source", "edited", "kwargs"),
    [
        (np.zeros((8, 8)), np.zeros((8, 8, 3)), np.zeros((8, 8, 3)), {}),  # not RGB
        (np.zeros((8, 8, 4)), np.zeros((8, 8, 3)), np.zeros((8, 8, 3)), {}),  # RGBA
        (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3)), np.zeros((8, 8, 3)), {}),  # 8-bit
        (np.full((8, 8, 3), np.nan), np.zeros((8, 8, 3)), np.zeros((8, 8, 3)), {}),  # NaN
        (np.zeros((8, 8, 3)), np.zeros((8, 8, 3)), np.zeros((8, 16, 3)), {}),  # S, E differ
        (np.zeros((8, 8, 3)), np.zeros((8, 8, 3)), np.zeros((8, 8, 3)), {"mask": np.zeros((4, 4))}),
        (np.zeros((8, 8, 3)), np.zeros((8, 8, 3)), np.zeros((8, 8, 3)), {"low": 0.2, "high": 0.1}),
        ([[0.0]], np.zeros((8, 8, 3)), np.zeros((8, 8, 3)), {}),  # not an array
        (np.zeros((300, 400, 3)), np.zeros((64, 48, 3)), np.zeros((64, 48, 3)), {}),  # transposed
    ],
)
def test_bad_inputs_raise_pbmlx_error(original, source, edited, kwargs) -> None:
    with pytest.raises(PbmlxError):
        restore_full_resolution(original, source, edited, **kwargs)


@pytest.mark.parametrize("size", [(0, 8), (8,), "512x384", (8.0, 8)])
def test_to_working_refuses_bad_sizes(size) -> None:
    with pytest.raises(PbmlxError):
        to_working(np.zeros((16, 16, 3), np.float32), size)


def test_change_mask_contract() -> None:
    full, source = photo("chelsea")
    region, _, _ = regions("chelsea", 0, full.shape, source.shape)
    pasted = source.copy()
    pasted[region] = 1.0 - source[region]
    mask = change_mask(source, vae_like(pasted, seed=4))
    assert mask.shape == source.shape[:2] and mask.dtype == np.float32
    assert mask.min() >= 0.0 and mask.max() <= 1.0 and mask[region].mean() > 0.95


# ---------------------------------------------------------------------------------------------
# 12 MP


@pytest.mark.slow
def test_twelve_megapixels() -> None:
    """chelsea resized to 4000 x 3000, edited at 512 x 384: unchanged and local-edit restores
    keep the checks above; wall time is printed (the report quotes it) and bounded loosely by
    10 s so that a shared CI machine does not fail it."""
    native = skimage.data.chelsea().astype(np.float32) / 255.0
    full = _resize(native, 4000, 3000, Image.LANCZOS)
    t0 = time.perf_counter()
    source = to_working(full, working_size(4000, 3000))
    t_down = time.perf_counter() - t0
    edited = vae_like(source, seed=0)
    t0 = time.perf_counter()
    out = restore_full_resolution(full, source, edited)
    t_same = time.perf_counter() - t0
    _check_output(out, full)
    assert sharpness(out) / sharpness(full) >= 0.95
    region = _ellipse(384, 512, CASES["chelsea"][0])
    pasted = source.copy()
    pasted[region] = 1.0 - source[region]
    t0 = time.perf_counter()
    out = restore_full_resolution(full, source, vae_like(pasted, seed=1))
    t_local = time.perf_counter() - t0
    _check_output(out, full)
    print(f"\n12 MP: to_working {t_down:.2f} s, restore {t_same:.2f} s, local edit {t_local:.2f} s")
    assert max(t_same, t_local) < 10.0
