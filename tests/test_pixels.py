"""pbmlx.pixels against numpy float64 oracles: exact division, round trips, ties rounding to
even, clamping, alpha, the models' range; and bit-for-bit agreement with the kernels' MLX
references and the formulas the converters it replaced used."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import pbmlx  # noqa: F401  (first, so MLX binds OpenBLAS)

import mlx.core as mx  # isort: skip
from pbmlx.kernels.image_io import from_model_output_reference, to_model_input_reference

from pbmlx import pixels
from pbmlx.errors import PbmlxError

CODES8 = np.arange(256, dtype=np.uint8)
CODES16 = np.arange(65536, dtype=np.uint16)


def random_unit(n: int = 100_000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(n, dtype=np.float32)


# ---- integer samples -> [0, 1] -----------------------------------------------------------------


@pytest.mark.parametrize(("codes", "maxval"), [(CODES8, 255), (CODES16, 65535)])
def test_codes_to_unit_is_the_correctly_rounded_quotient(codes, maxval):
    # float64 quotient, rounded once to float32: the correctly rounded float32 quotient (c/M's
    # binary expansion repeats with period 8 or 16, so the float64 step never lands on a float32
    # rounding midpoint).
    want = (codes.astype(np.float64) / maxval).astype(np.float32)
    got = pixels.codes_to_unit(codes, maxval)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    assert got[0] == 0.0 and got[-1] == 1.0
    # What the converters it replaced computed (load, the editor, the flow, auto, CLIP).
    np.testing.assert_array_equal(got, codes.astype(np.float32) / float(maxval))
    np.testing.assert_array_equal(got, np.divide(codes, np.float32(maxval), dtype=np.float32))


def test_codes_to_unit_writes_into_out_with_broadcasting():
    grey = np.array([[0, 51], [255, 128]], dtype=np.uint8)[..., None]
    out = np.empty((2, 2, 3), np.float32)
    assert pixels.codes_to_unit(grey, 255, out=out) is out
    np.testing.assert_array_equal(out, np.repeat(pixels.codes_to_unit(grey), 3, axis=-1))


def test_as_unit_by_dtype():
    np.testing.assert_array_equal(pixels.as_unit(CODES8), pixels.codes_to_unit(CODES8))
    np.testing.assert_array_equal(pixels.as_unit(CODES16), pixels.codes_to_unit(CODES16, 65535))
    x = np.array([-0.5, 0.25, 1.5], dtype=np.float64)
    assert pixels.as_unit(x).dtype == np.float32
    np.testing.assert_array_equal(pixels.as_unit(x), x.astype(np.float32))  # not clipped
    np.testing.assert_array_equal(pixels.as_unit(x, clip=True), [0.0, 0.25, 1.0])
    f32 = random_unit(10)
    assert pixels.as_unit(f32) is f32  # float32 in: no copy
    with pytest.raises(PbmlxError, match="uint8, uint16 or float, not int32"):
        pixels.as_unit(np.zeros(3, np.int32))


# ---- [0, 1] -> integer samples -------------------------------------------------------------------


@pytest.mark.parametrize(("codes", "maxval"), [(CODES8, 255), (CODES16, 65535)])
def test_round_trip_gives_every_code_back(codes, maxval):
    back = pixels.unit_to_codes(pixels.codes_to_unit(codes, maxval), maxval)
    assert back.dtype == codes.dtype
    np.testing.assert_array_equal(back, codes)


def test_unit_to_codes_matches_the_float64_oracle_away_from_ties():
    x = np.concatenate([random_unit(), np.linspace(0, 1, 4097, dtype=np.float32)])
    got = pixels.unit_to_codes(x)
    exact = x.astype(np.float64) * 255  # exact: 24-bit times 8-bit fits float64's 53 bits
    oracle = np.floor(exact + 0.5)  # round half up; ties are tested below
    far = np.abs(exact - np.floor(exact) - 0.5) > 1e-4  # float32's product can't cross .5
    np.testing.assert_array_equal(got[far], oracle[far])
    assert np.abs(got.astype(np.int64) - oracle).max() <= 1  # near a tie: one of the two
    # The formula the converters it replaced used (flow, editor, evaluate, train, save).
    np.testing.assert_array_equal(got, np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8))


def test_ties_round_half_to_even():
    # For every k, float32 values whose float32 product with 255 is exactly k + 1/2.
    xs, halves = [], []
    for k in range(255):
        x = np.float32((k + 0.5) / 255)
        for _ in range(8):
            if float(x * np.float32(255)) == k + 0.5:
                xs.append(x)
                halves.append(k + 0.5)
                break
            x = np.nextafter(x, np.float32(0) if x * np.float32(255) > k + 0.5 else np.float32(1))
    assert len(xs) == 255
    got = pixels.unit_to_codes(np.array(xs, np.float32)).astype(np.int64)
    want = np.rint(np.array(halves, np.float64))  # float64 oracle: ties to even
    np.testing.assert_array_equal(got, want)
    assert got[126] == 126 and got[127] == 128  # 126.5 -> 126, 127.5 -> 128
    # 16-bit: 0.5 * 65535 = 32767.5 exactly -> 32768 (even).
    assert pixels.unit_to_codes(np.float32([0.5]), 65535)[0] == 32768


def test_clamping():
    x = np.array([-np.inf, -1e30, -0.5, -1e-9, 0.0, 1.0, 1.0 + 1e-6, 2.0, 1e30, np.inf], np.float32)
    np.testing.assert_array_equal(pixels.unit_to_codes(x), [0, 0, 0, 0, 0, 255, 255, 255, 255, 255])
    np.testing.assert_array_equal(
        pixels.unit_to_codes(x, 65535), [0, 0, 0, 0, 0, 65535, 65535, 65535, 65535, 65535]
    )


def test_unit_to_codes_by_dtype():
    assert pixels.unit_to_codes(CODES8) is CODES8  # codes stay codes
    np.testing.assert_array_equal(
        pixels.unit_to_codes(CODES8, 65535), CODES8.astype(np.uint16) * 257
    )
    np.testing.assert_array_equal(pixels.unit_to_codes(CODES16, 65535), CODES16)
    # float64 in: the product stays in float64 (just above a tie rounds up).
    x64 = np.array([(126.5 + 1e-7) / 255], np.float64)
    assert pixels.unit_to_codes(x64)[0] == 127
    # Anything np.asarray reads, e.g. an MLX array.
    x = random_unit(1000, seed=1)
    np.testing.assert_array_equal(pixels.unit_to_codes(mx.array(x)), pixels.unit_to_codes(x))
    with pytest.raises(PbmlxError, match="not int64"):
        pixels.unit_to_codes(np.zeros(3, np.int64))


# ---- PIL images and alpha ------------------------------------------------------------------------


def rgba_image() -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 256, (5, 7, 4), dtype=np.uint8), "RGBA")


def test_pil_rgba_splits_alpha_and_round_trips():
    im = rgba_image()
    u8 = np.asarray(im)
    rgb, alpha = pixels.to_unit_rgb(im)
    assert rgb.shape == (5, 7, 3) and alpha.shape == (5, 7)
    assert rgb.dtype == alpha.dtype == np.float32 and rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb, (u8[..., :3].astype(np.float64) / 255).astype(np.float32))
    np.testing.assert_array_equal(alpha, (u8[..., 3].astype(np.float64) / 255).astype(np.float32))
    back = pixels.to_pil(rgb, alpha)
    assert back.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(back), u8)


def test_pil_modes_with_and_without_alpha():
    im = rgba_image()
    assert pixels.to_unit_rgb(im.convert("RGB"))[1] is None
    la = im.convert("LA")
    rgb, alpha = pixels.to_unit_rgb(la)
    np.testing.assert_array_equal(alpha, pixels.codes_to_unit(np.asarray(la)[..., 1]))
    assert np.array_equal(rgb[..., 0], rgb[..., 2])  # grey in three channels
    palette = im.convert("RGB").convert("P")
    assert not pixels.has_alpha(palette) and pixels.to_unit_rgb(palette)[1] is None
    palette.info["transparency"] = 0
    assert pixels.has_alpha(palette)
    _, alpha = pixels.to_unit_rgb(palette)
    index = np.asarray(palette)
    np.testing.assert_array_equal(alpha == 0, index == 0)
    assert set(np.unique(alpha)) <= {0.0, 1.0}


def test_to_pil_takes_codes_and_floats():
    codes = np.asarray(rgba_image())[..., :3].copy()
    assert pixels.to_pil(codes).mode == "RGB"
    np.testing.assert_array_equal(np.asarray(pixels.to_pil(codes)), codes)
    np.testing.assert_array_equal(np.asarray(pixels.to_pil(pixels.codes_to_unit(codes))), codes)
    alpha_codes = np.arange(0, 35 * 7, 7, dtype=np.uint8).reshape(5, 7)
    out = np.asarray(pixels.to_pil(codes, pixels.codes_to_unit(alpha_codes)))
    np.testing.assert_array_equal(out[..., :3], codes)
    np.testing.assert_array_equal(out[..., 3], alpha_codes)


def test_arrays_by_shape_and_dtype():
    grey = np.array([[0, 65535], [32768, 1]], np.uint16)
    rgb, alpha = pixels.to_unit_rgb(grey)
    assert rgb.shape == (2, 2, 3) and alpha is None
    np.testing.assert_array_equal(rgb[..., 1], (grey.astype(np.float64) / 65535).astype(np.float32))
    floats = np.array([[[-0.25, 0.5, 1.5, 0.75]]], np.float64)
    rgb, alpha = pixels.to_unit_rgb(floats)
    assert rgb.dtype == np.float32
    np.testing.assert_array_equal(rgb, [[[0.0, 0.5, 1.0]]])
    np.testing.assert_array_equal(alpha, [[0.75]])
    for bad, message in (
        (np.zeros((2, 2, 2), np.uint8), "has shape"),
        (np.zeros((0, 2, 3), np.uint8), "has shape"),
        (np.zeros((2, 2, 3), np.int16), "not int16"),
        ([[0.5]], "not list"),
    ):
        with pytest.raises(PbmlxError, match=message):
            pixels.to_unit_rgb(bad)  # type: ignore[arg-type]
    assert pixels.is_codes(CODES8) and not pixels.is_codes(random_unit(3))
    assert not pixels.is_codes(mx.array(CODES8))


# ---- the models' range ---------------------------------------------------------------------------


def test_unit_to_model_against_float64_and_the_kernels():
    x = np.concatenate([random_unit(), np.float32([0.0, 0.5, 1.0])])
    got = pixels.unit_to_model(x)
    assert got.dtype == np.float32
    # fl(x * 2) is exact; the one rounding is the subtraction's.
    np.testing.assert_array_equal(got, (x.astype(np.float64) * 2 - 1).astype(np.float32))
    np.testing.assert_array_equal(got, np.array(to_model_input_reference(mx.array(x))))
    codes = pixels.unit_to_model(CODES8)
    np.testing.assert_allclose(codes, CODES8 / 127.5 - 1, rtol=0, atol=2**-24)
    assert codes[0] == -1.0 and codes[-1] == 1.0
    np.testing.assert_array_equal(codes, np.array(to_model_input_reference(mx.array(CODES8))))
    # The training data's old formula, bit for bit.
    np.testing.assert_array_equal(codes, CODES8.astype(np.float32) / 127.5 - 1.0)


def test_model_to_unit_against_float64_and_the_kernels():
    y = np.concatenate(
        [np.random.default_rng(4).normal(0, 0.8, 100_000).astype(np.float32), [-3.0, 3.0]]
    ).astype(np.float32)
    got = pixels.model_to_unit(y)
    # y / 2 is exact; the one rounding is the addition's, then the clip.
    want = np.clip((y.astype(np.float64) / 2 + 0.5).astype(np.float32), 0, 1)
    np.testing.assert_array_equal(got, want)
    assert got.min() == 0.0 and got.max() == 1.0
    np.testing.assert_array_equal(got, np.array(from_model_output_reference(mx.array(y))))
    unclipped = pixels.model_to_unit(y, clip=False)
    np.testing.assert_array_equal(unclipped, (y.astype(np.float64) / 2 + 0.5).astype(np.float32))
    # The Core ML VAE's old formula, bit for bit.
    np.testing.assert_array_equal(unclipped, (y + 1.0) / 2.0)
    # And back: model -> unit -> model is the identity on [-1, 1] up to one rounding.
    inside = y[np.abs(y) <= 1]
    back = pixels.unit_to_model(pixels.model_to_unit(inside))
    np.testing.assert_allclose(back, inside, rtol=0, atol=2**-24 * 2)
