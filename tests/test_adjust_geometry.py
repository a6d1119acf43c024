"""The adjust engine's geometric ops against independent oracles, on real photos.

Oracles and tolerances:
- quarter turns, flips, crops: numpy ``rot90`` / ``flip`` / slicing, exactly (8-bit codes stay
  codes; floats bit-identical).
- arbitrary rotation: scipy ``ndimage.map_coordinates(order=1, mode="grid-constant")`` at the
  documented source coordinates, float64: 2e-4 absolute (float32 weights and taps).
- scale / resize: a float64 numpy Lanczos-3 resampler written here from the definition
  (``L(t) = sinc(t) sinc(t / 3)``, window stretched by the shrink factor, renormalised at the
  borders): 1e-4 on floats, one code on 8-bit codes (PIL's fixed-point weights).
- straighten: photos tilted by PIL ``rotate`` (bicubic) by a known angle: the detected tilt
  within 0.5 degrees (camera, page) and 1 degree (brick, whose mortar lines are not straight).
"""

from __future__ import annotations

# isort: off
import pbmlx  # noqa: F401  (before mlx.core, so MLX gets its BLAS: see pbmlx/backend.py)
# isort: on

import math

import mlx.core as mx
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage import data

from pbmlx.adjust import geometry
from pbmlx.adjust.ops import OPS, apply_ops
from pbmlx.errors import PbmlxError

PHOTOS = ("astronaut", "coffee", "chelsea")


def photo(name: str) -> np.ndarray:
    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[..., :3])


def step(op: str, amount: float) -> list[dict]:
    return [{"op": op, "amount": amount}]


# ---- exact ops ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize("degrees", [90, 180, 270, -90, 450, -540])
def test_quarter_turns_are_exact(name: str, degrees: int) -> None:
    img = photo(name)
    expected = np.rot90(img, k=(degrees // 90) % 4)
    out = apply_ops(img, step("rotate", degrees), out_dtype=mx.uint8)
    assert out.dtype == np.uint8 and np.array_equal(out, expected)
    f = img.astype(np.float32) / 255
    out_mx = apply_ops(mx.array(f), step("rotate", degrees))
    assert isinstance(out_mx, mx.array)
    assert np.array_equal(np.asarray(out_mx), np.rot90(f, k=(degrees // 90) % 4))


@pytest.mark.parametrize("name", PHOTOS)
def test_flips_are_exact(name: str) -> None:
    img = photo(name)
    assert np.array_equal(
        apply_ops(img, step("flip_horizontal", 1), out_dtype=mx.uint8), img[:, ::-1]
    )
    assert np.array_equal(apply_ops(img, step("flip_vertical", 1), out_dtype=mx.uint8), img[::-1])
    assert np.array_equal(apply_ops(img, step("flip_vertical", 0.2), out_dtype=mx.uint8), img)


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize("ratio", [1.0, 16 / 9, 4 / 3, 2 / 3, 0.5, 3.0])
def test_crop_aspect_sizes_and_content(name: str, ratio: float) -> None:
    img = photo(name)
    h, w = img.shape[:2]
    if w / h > ratio:
        eh, ew = h, round(h * ratio)
    else:
        eh, ew = round(w / ratio), w
    out = apply_ops(img, step("crop_aspect", ratio), out_dtype=mx.uint8)
    assert out.shape == (eh, ew, 3)
    top, left = (h - eh) // 2, (w - ew) // 2
    assert np.array_equal(out, img[top : top + eh, left : left + ew])
    if out.shape != img.shape:
        assert not np.may_share_memory(out, img)


def test_zero_amounts_are_the_identity() -> None:
    img = photo("coffee")
    plan = [{"op": o, "amount": 0} for o in ("crop_aspect", "scale", "resize", "rotate")]
    assert np.array_equal(apply_ops(img, plan, out_dtype=mx.uint8), img)


# ---- arbitrary rotation ---------------------------------------------------------------------


def rotate_oracle(x: np.ndarray, degrees: float, size: tuple[int, int], fill: float) -> np.ndarray:
    """The documented rotation: scipy bilinear interpolation at the source coordinates."""
    h, w = x.shape[:2]
    oh, ow = size
    th = math.radians(degrees)
    u = np.arange(ow) + 0.5 - ow / 2
    v = np.arange(oh) + 0.5 - oh / 2
    sx = w / 2 - 0.5 + u[None, :] * math.cos(th) - v[:, None] * math.sin(th)
    sy = h / 2 - 0.5 + u[None, :] * math.sin(th) + v[:, None] * math.cos(th)
    return np.stack(
        [
            ndimage.map_coordinates(
                x[..., c].astype(np.float64), [sy, sx], order=1, mode="grid-constant", cval=fill
            )
            for c in range(x.shape[-1])
        ],
        axis=-1,
    )


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize("degrees", [30.0, -12.5, 135.0, 0.7])
def test_rotation_matches_bilinear_oracle(name: str, degrees: float) -> None:
    img = photo(name)
    h, w = img.shape[:2]
    th = math.radians(degrees)
    c, s = abs(math.cos(th)), abs(math.sin(th))
    size = (math.ceil(w * s + h * c - 1e-6), math.ceil(w * c + h * s - 1e-6))
    x = img.astype(np.float32) / 255
    out = apply_ops(x, step("rotate", degrees))
    assert out.shape == (*size, 3)
    expected = rotate_oracle(x.astype(np.float64), degrees, size, fill=1.0)
    assert np.abs(out - expected).max() < 2e-4
    # 8-bit codes in and out: the same, quantised once
    codes = apply_ops(img, step("rotate", degrees), out_dtype=mx.uint8)
    assert np.abs(codes.astype(int) - np.rint(expected * 255)).max() <= 1


def test_general_rotation_at_90_is_the_exact_turn() -> None:
    x = photo("coffee").astype(np.float32) / 255
    h, w = x.shape[:2]
    out = np.asarray(geometry.rotate_bilinear(x, 90.0, (w, h), fill=1.0))
    assert np.abs(out - np.rot90(x)).max() < 1e-5


def test_rotate_wraps_any_angle() -> None:
    x = photo("chelsea").astype(np.float32) / 255
    a = apply_ops(x, step("rotate", 30.0 + 720.0))
    assert np.array_equal(a, apply_ops(x, step("rotate", 30.0)))


# ---- straighten -----------------------------------------------------------------------------


def tilted(img: np.ndarray, degrees: float) -> np.ndarray:
    """``img`` rotated counter-clockwise by PIL (bicubic), centre 70 % kept (no fill)."""
    r = np.asarray(Image.fromarray(img).rotate(degrees, Image.Resampling.BICUBIC))
    h, w = img.shape[:2]
    ch, cw = int(h * 0.7), int(w * 0.7)
    return np.ascontiguousarray(r[(h - ch) // 2 : (h - ch) // 2 + ch, (w - cw) // 2 :][:, :cw])


@pytest.mark.parametrize(("name", "tol"), [("camera", 0.5), ("page", 0.5), ("brick", 1.0)])
@pytest.mark.parametrize("angle", [-7.0, -3.0, -1.0, 2.0, 5.0, 7.0])
def test_horizon_detection_on_tilted_photos(name: str, tol: float, angle: float) -> None:
    found = geometry.detect_horizon(tilted(photo(name), angle))
    assert found is not None and abs(found - angle) <= tol, (found, angle)


def test_straighten_levels_and_crops_edge_free() -> None:
    img = tilted(photo("camera"), 6.0)
    h, w = img.shape[:2]
    tilt = geometry.detect_horizon(img)
    out = apply_ops(img, step("straighten", 1), out_dtype=mx.uint8)
    # the crop rule from the docstring, written out
    th = math.radians(tilt)
    c, s = abs(math.cos(th)), abs(math.sin(th))
    k = min((w - 1) / (w * c + h * s), (h - 1) / (w * s + h * c))
    assert out.shape == (math.floor(k * h), math.floor(k * w), 3)
    assert abs(out.shape[1] / out.shape[0] - w / h) < 0.02
    expected = rotate_oracle(img / 255.0, -tilt, out.shape[:2], fill=1.0)
    assert np.abs(out - np.rint(expected * 255)).max() <= 1
    leveled = geometry.detect_horizon(out)
    assert leveled is not None and abs(leveled) <= 0.5


def test_straighten_leaves_photos_without_lines_alone() -> None:
    img = photo("grass")
    assert geometry.detect_horizon(img) is None
    assert np.array_equal(apply_ops(img, step("straighten", 1), out_dtype=mx.uint8), img)


# ---- scale and resize -----------------------------------------------------------------------


def lanczos_axis(x: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    """Lanczos-3 resampling of one axis, float64, from the definition."""
    n_in = x.shape[axis]
    ratio = n_in / n_out
    f = max(ratio, 1.0)
    support = 3.0 * f
    m = np.zeros((n_out, n_in))
    i = np.arange(n_in) + 0.5
    for j in range(n_out):
        t = (i - (j + 0.5) * ratio) / f
        k = np.where(np.abs(t) < 3.0, np.sinc(t) * np.sinc(t / 3.0), 0.0)
        k[np.abs(i - (j + 0.5) * ratio) >= support] = 0.0
        m[j] = k / k.sum()
    return np.moveaxis(np.tensordot(m, np.moveaxis(x, axis, 0), axes=1), 0, axis)


def lanczos_oracle(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return lanczos_axis(lanczos_axis(x.astype(np.float64), size[1], 1), size[0], 0)


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize("factor", [0.5, 0.3, 1.7, 2.0])
def test_scale_matches_lanczos_oracle(name: str, factor: float) -> None:
    img = photo(name)
    h, w = img.shape[:2]
    size = (round(h * factor), round(w * factor))
    x = img.astype(np.float32) / 255
    out = apply_ops(x, step("scale", factor))
    assert out.shape == (*size, 3)
    expected = np.clip(lanczos_oracle(x, size), 0, 1)
    assert np.abs(out - expected).max() < 1e-4
    codes = apply_ops(img, step("scale", factor), out_dtype=mx.uint8)
    assert np.abs(codes.astype(int) - np.rint(expected * 255)).max() <= 1


@pytest.mark.parametrize("target", [300, 1000, 64])
def test_resize_sets_the_long_side(target: int) -> None:
    img = photo("coffee")  # 400 x 600
    out = apply_ops(img, step("resize", target), out_dtype=mx.uint8)
    assert out.shape == (round(400 * target / 600), target, 3)
    expected = np.clip(lanczos_oracle(img / 255.0, out.shape[:2]), 0, 1)
    assert np.abs(out.astype(int) - np.rint(expected * 255)).max() <= 1


def test_resize_refuses_huge_outputs() -> None:
    with pytest.raises(PbmlxError, match="over the limit"):
        apply_ops(photo("coffee"), step("resize", 16384))


def test_ops_registry_functions_follow_the_engine() -> None:
    x = mx.array(photo("chelsea").astype(np.float32) / 255)
    for name, amount in [
        ("rotate", 90),
        ("flip_horizontal", 1),
        ("crop_aspect", 1),
        ("scale", 0.5),
    ]:
        assert np.array_equal(
            np.asarray(OPS[name](x, amount)), np.asarray(apply_ops(x, step(name, amount)))
        )


def test_geometry_between_per_pixel_runs() -> None:
    img = photo("astronaut")
    plan = [
        {"op": "brightness", "amount": 0.3},
        {"op": "rotate", "amount": 90},
        {"op": "contrast", "amount": 0.2},
        {"op": "crop_aspect", "amount": 2.0},
    ]
    out = apply_ops(img, plan)
    a = apply_ops(img, plan[:1])
    b = apply_ops(np.ascontiguousarray(np.rot90(a)), plan[2:3])
    expected = b[128 : 128 + 256]
    assert out.shape == (256, 512, 3) and np.abs(out - expected).max() < 1e-6


# ---- end to end: files, alpha, EXIF ---------------------------------------------------------


def explicit_plan(monkeypatch: pytest.MonkeyPatch, ops: list[dict]):
    """``pbmlx.flow`` with its planner replaced by a fixed adjust plan (the planner's wording is
    not what these tests check)."""
    from pbmlx import flow
    from pbmlx.plan import EditPlan

    monkeypatch.setattr(flow, "plan", lambda text: EditPlan(text, "adjust", ops, "test plan"))
    return flow


def test_edit_file_rotates_codes_losslessly_with_alpha(tmp_path, monkeypatch) -> None:
    rgb = photo("coffee")
    alpha = np.linspace(0, 255, rgb.shape[1], dtype=np.float64)[None, :].repeat(rgb.shape[0], 0)
    rgba = np.concatenate([rgb, np.rint(alpha).astype(np.uint8)[..., None]], axis=-1)
    src = tmp_path / "in.png"
    Image.fromarray(rgba, "RGBA").save(src)
    flow = explicit_plan(
        monkeypatch, [{"op": "rotate", "amount": 90}, {"op": "crop_aspect", "amount": 1}]
    )
    result, out = flow.edit_file(src, ["rotate it"], output=tmp_path / "out.png")
    got = np.asarray(Image.open(out))
    expected = np.rot90(rgba)[100:500]  # 600 x 400 after the turn, centre square
    assert got.shape == (400, 400, 4) and np.array_equal(got, expected)
    assert result.image.size == (400, 400)


def test_edit_file_keeps_exif_orientation_and_sizes(tmp_path, monkeypatch) -> None:
    rgb = photo("chelsea")  # 300 x 451
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: the loader turns it upright (451 x 300 -> 300 x 451)
    src = tmp_path / "in.jpg"
    Image.fromarray(np.ascontiguousarray(np.rot90(rgb)), "RGB").save(
        src, exif=exif, dpi=(300, 72), quality=95
    )
    flow = explicit_plan(
        monkeypatch, [{"op": "rotate", "amount": -90}, {"op": "scale", "amount": 0.5}]
    )
    upright = flow.read_image(src)
    _, out = flow.edit_file(src, ["turn it"], output=tmp_path / "out.jpg")
    with Image.open(out) as im:
        assert im.getexif().get(0x0112, 1) == 1
        h, w = upright.height, upright.width
        assert im.size == (round(h * 0.5), round(w * 0.5))  # turned: the sides swap
        x_dpi, y_dpi = im.info["dpi"]
        ux, uy = upright.dpi
        assert (round(x_dpi), round(y_dpi)) == (round(uy), round(ux))
