"""Image I/O: pbmlx.load.read_image and pbmlx.save.write_image on real photos and bad files.

Oracles: the skimage photos themselves, PNGs written straight from the spec (badfiles), PIL
and tifffile as independent decoders of what pbmlx writes, and numpy definitions of the EXIF
orientations. Every bad input must give a PbmlxError naming the file, leave the input's bytes
unchanged and leave no temporary or partial file behind.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import threading

import badfiles as bf
import numpy as np
import pytest
import tifffile
from PIL import Image, ImageFile, ImageOps
from skimage import data

from pbmlx.errors import PbmlxError
from pbmlx.load import DEFAULT_MAX_PIXELS, HEIC_INSTALL_HINT, read_image
from pbmlx.save import check_output_path, default_output_path, write_image

try:
    import pillow_heif  # noqa: F401

    HAVE_HEIF = True
except ImportError:
    HAVE_HEIF = False

# JPEG/WebP tolerances, measured on the astronaut and rocket with a margin of 3-6 dB:
# re-encoding a decoded JPEG with its own tables and subsampling (quality 92, 4:2:0) gives
# 49.4 dB, 45.2 dB for the EXIF-rotated one; WebP at 95 gives 43.5 dB; the palette rocket
# through lossy WebP 36.0 dB; flattening onto white then JPEG (a PNG input: quality 90, 4:2:0)
# 34.3 dB.
JPEG_REENCODE_PSNR = 42.0
WEBP_PSNR = 38.0
WEBP_PALETTE_PSNR = 32.0
JPEG_FLATTENED_PSNR = 31.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """10 log10(1 / MSE) for images in [0, 1], in float64."""
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))


def as8(x: np.ndarray) -> np.ndarray:
    return np.rint(x * 255).astype(np.uint8)


def as16(x: np.ndarray) -> np.ndarray:
    return np.rint(x * 65535).astype(np.uint16)


def exif_of(path) -> Image.Exif:
    """The EXIF PIL reads from a file, with its Exif sub-IFD loaded while the file is open."""
    with Image.open(path) as im:
        exif = im.getexif()
        exif.get_ifd(0x8769)
        return exif


# --- reading -------------------------------------------------------------------------------------


def test_png_8bit_reads_exact_values_and_metadata(tmp_path):
    photo = read_image(bf.make_png(tmp_path))
    assert photo.rgb.dtype == np.float32 and photo.rgb.shape == (300, 451, 3)
    assert np.array_equal(as8(photo.rgb), data.chelsea())
    assert photo.alpha is None and photo.bit_depth == 8 and photo.format == "PNG"
    assert photo.icc_profile == bf.srgb_profile()
    assert photo.dpi == pytest.approx((300, 300), abs=0.01)  # PNG stores pixels per metre


def test_16bit_png_keeps_all_16_bits(tmp_path):
    photo = read_image(bf.make_16bit_png(tmp_path))
    assert photo.bit_depth == 16
    assert np.array_equal(as16(photo.rgb), bf.photo_16bit())


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("interlace", [False, True])
def test_16bit_png_every_colour_type_and_interlace(tmp_path, channels, interlace):
    # Grey, grey+alpha, RGB, RGBA; Adam7 interlacing reorders the rows PIL un-filters.
    values = bf.photo_16bit(channels)
    path = bf.make_png_raw(tmp_path, "x.png", values, interlace=interlace)
    photo = read_image(path)
    colour = values[..., None] if channels == 1 else values[..., : 1 if channels == 2 else 3]
    assert photo.bit_depth == 16 and photo.gray == (channels <= 2)
    assert np.array_equal(as16(photo.rgb), np.broadcast_to(colour, (512, 512, 3)))
    if channels in (2, 4):
        assert np.array_equal(as16(photo.alpha), values[..., -1])
    else:
        assert photo.alpha is None


@pytest.mark.parametrize(
    "options",
    [{}, {"byteorder": ">"}, {"compression": "zlib", "predictor": 2}],
    ids=["little-endian", "big-endian", "deflate-predictor"],
)
def test_16bit_tiff_from_tifffile_keeps_all_16_bits(tmp_path, options):
    values = bf.photo_16bit()
    tifffile.imwrite(tmp_path / "x.tif", values, photometric="rgb", **options)
    photo = read_image(tmp_path / "x.tif")
    assert photo.bit_depth == 16 and np.array_equal(as16(photo.rgb), values)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_gives_upright_pixels(tmp_path, orientation):
    path = bf.make_exif_rotated_jpeg(tmp_path, orientation)
    with Image.open(path) as im:
        stored = np.asarray(im)  # the decoded pixels as stored, before any rotation
        pil_upright = np.asarray(ImageOps.exif_transpose(im))
    # The EXIF definitions: where the stored first row and column belong when upright.
    upright = {
        1: stored,
        2: stored[:, ::-1],
        3: stored[::-1, ::-1],
        4: stored[::-1],
        5: stored.transpose(1, 0, 2),
        6: np.rot90(stored, -1),  # 90 degrees clockwise
        7: stored.transpose(1, 0, 2)[::-1, ::-1],
        8: np.rot90(stored, 1),
    }[orientation]
    photo = read_image(path)
    assert np.array_equal(as8(photo.rgb), upright)
    assert np.array_equal(upright, pil_upright)
    exif = Image.Exif()
    exif.load(photo.exif)
    assert exif[0x0112] == 1 and exif[0x010F] == bf.EXIF_MAKE
    assert photo.dpi == ((144.0, 72.0) if orientation >= 5 else (72.0, 144.0))


def test_rotated_jpeg_matches_the_rotated_original(tmp_path):
    photo = read_image(bf.make_exif_rotated_jpeg(tmp_path, 6))
    assert photo.rgb.shape == (600, 400, 3)
    assert psnr(photo.rgb, np.rot90(data.coffee(), -1) / 255.0) > 35.0


@pytest.mark.parametrize("fmt", ["TIFF", "WEBP"])
def test_exif_orientation_in_tiff_and_webp(tmp_path, fmt):
    # PIL rotates TIFFs itself while loading; the orientation must not be applied twice.
    path = tmp_path / f"o.{fmt.lower()}"
    extra = {"lossless": True} if fmt == "WEBP" else {}
    Image.fromarray(data.coffee()).save(path, exif=bf.photo_exif(6).tobytes(), **extra)
    photo = read_image(path)
    assert np.array_equal(as8(photo.rgb), np.rot90(data.coffee(), -1))


def test_16bit_tiff_orientation(tmp_path):
    values = bf.photo_16bit()[:, :300]
    path = tmp_path / "o16.tif"
    tifffile.imwrite(path, values, photometric="rgb", extratags=[(274, "H", 1, 8, True)])
    photo = read_image(path)
    assert np.array_equal(as16(photo.rgb), np.rot90(values, 1))


def test_cmyk_jpeg_without_profile_is_sensible(tmp_path):
    # PIL wrote C = 255 - R, M = 255 - G, Y = 255 - B, K = 0, so RGB comes back up to JPEG loss.
    photo = read_image(bf.make_cmyk_jpeg(tmp_path))
    assert photo.mode == "CMYK" and photo.icc_profile is None
    assert psnr(photo.rgb, data.astronaut() / 255.0) > 38.0  # measured 40.8 dB


def test_cmyk_jpeg_uses_its_embedded_profile(tmp_path):
    # A profile that maps C -> blue, M -> red, Y -> green (not what PIL's naive formula does):
    # the pixels must follow the profile. Tolerance: a 9-point table interpolated in Lab, then
    # JPEG: measured 42.7 dB.
    def permuted(cmyk):
        return bf.naive_cmyk_to_rgb(cmyk)[..., [1, 2, 0]]

    photo = read_image(bf.make_cmyk_jpeg(tmp_path, permuted))
    original = data.astronaut() / 255.0
    assert psnr(photo.rgb, original[..., [1, 2, 0]]) > 38.0
    assert psnr(photo.rgb, original) < 20.0
    assert photo.icc_profile is None  # the pixels are sRGB now; the CMYK profile is gone


def test_palette_png_transparency_becomes_alpha(tmp_path):
    path = bf.make_palette_png_with_transparency(tmp_path)
    with Image.open(path) as im:
        index = np.asarray(im)
        palette = np.array(im.getpalette()[: 3 * 64], np.uint8).reshape(64, 3)
        alpha_table = np.frombuffer(im.info["transparency"], np.uint8)
    photo = read_image(path)
    assert np.array_equal(as8(photo.rgb), palette[index])
    assert np.array_equal(as8(photo.alpha), alpha_table[index])
    assert (photo.alpha == 0).any() and (photo.alpha == 1).any()


def test_grayscale_png(tmp_path):
    photo = read_image(bf.make_grayscale_png(tmp_path))
    assert photo.gray and photo.rgb.shape == (512, 512, 3)
    for c in range(3):
        assert np.array_equal(as8(photo.rgb[..., c]), data.camera())


def test_mpo_reads_its_main_picture(tmp_path):
    path = tmp_path / "camera.jpg"
    frames = [Image.fromarray(data.astronaut()), Image.fromarray(data.camera()).convert("RGB")]
    frames[0].save(path, "MPO", save_all=True, append_images=frames[1:], quality=95)
    with Image.open(path) as im:
        assert im.format == "MPO" and im.n_frames == 2
        first = np.asarray(im.convert("RGB"))
    photo = read_image(path)
    assert photo.format == "JPEG" and np.array_equal(as8(photo.rgb), first)


@pytest.mark.parametrize("suffix", [".gif", ".bmp"])
def test_single_frame_gif_and_bmp_read_and_default_to_png(tmp_path, suffix):
    path = tmp_path / f"cat{suffix}"
    Image.fromarray(data.chelsea()).save(path)
    with Image.open(path) as im:
        expected = np.asarray(im.convert("RGB"))
    photo = read_image(path)
    assert np.array_equal(as8(photo.rgb), expected)
    out = write_image(photo, photo.rgb, default_output_path(path))
    assert out.name == f"cat{suffix}.edited.png"  # cat.gif and cat.bmp do not collide
    assert np.array_equal(np.asarray(Image.open(out)), expected)


def test_tiff_exif_keeps_descriptive_tags_only(tmp_path):
    # PIL's getexif() on a TIFF lists the TIFF's own layout tags (strip offsets, sample
    # format, ...); carried into another file's EXIF they would describe nothing.
    path = tmp_path / "in.tif"
    Image.fromarray(data.coffee()).save(path, exif=bf.photo_exif().tobytes())
    photo = read_image(path)
    exif = Image.Exif()
    exif.load(photo.exif)
    assert exif[0x010F] == bf.EXIF_MAKE
    assert not {256, 257, 258, 259, 262, 273, 277, 278, 279} & set(exif)
    out_exif = exif_of(write_image(photo, photo.rgb, tmp_path / "out.jpg"))
    assert out_exif[0x010F] == bf.EXIF_MAKE and 273 not in out_exif


def test_one_by_20000_strip(tmp_path):
    path = bf.make_long_strip_png(tmp_path)
    photo = read_image(path)
    assert photo.rgb.shape == (1, 20000, 3)
    out = write_image(photo, photo.rgb, tmp_path / "strip_out.png")
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(path)))


def test_large_real_photo_over_a_lowered_limit(tmp_path):
    path = bf.make_jpeg(tmp_path)
    with pytest.raises(PbmlxError, match=r"512x512 pixels.*--max-pixels 262144"):
        read_image(path, max_pixels=512 * 512 - 1)
    assert read_image(path, max_pixels=512 * 512).rgb.shape == (512, 512, 3)


def test_pixel_limit_above_pils_own(tmp_path):
    # PIL refuses on its own beyond 2 * MAX_IMAGE_PIXELS; a raised max_pixels must win, and
    # PIL's setting must be back afterwards. A small stand-in limit keeps the test fast.
    path = bf.make_jpeg(tmp_path)
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 1000
    try:
        assert read_image(path).rgb.shape == (512, 512, 3)
        assert Image.MAX_IMAGE_PIXELS == 1000
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def test_truncated_jpeg_refused_even_if_pil_was_told_to_pad(tmp_path):
    path = bf.make_truncated_jpeg(tmp_path, 0.9)
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with pytest.raises(PbmlxError, match="truncated"):
            read_image(path)
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def test_parallel_reads_restore_pil_settings(tmp_path):
    paths = [bf.make_jpeg(tmp_path, f"{i}.jpg") for i in range(4)]
    saved = Image.MAX_IMAGE_PIXELS
    results = []
    threads = [threading.Thread(target=lambda p=p: results.append(read_image(p))) for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and saved == Image.MAX_IMAGE_PIXELS
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


BAD_INPUTS = {
    "truncated_10": (lambda d: bf.make_truncated_jpeg(d, 0.1), "truncated or corrupt"),
    "truncated_50": (lambda d: bf.make_truncated_jpeg(d, 0.5), "truncated or corrupt"),
    "truncated_99.9": (lambda d: bf.make_truncated_jpeg(d, 0.999), "truncated or corrupt"),
    "zero_bytes": (bf.make_zero_byte_file, r"is empty \(0 bytes\)"),
    "text_as_jpg": (bf.make_text_named_jpg, "is not an image pbmlx can read"),
    "bomb": (bf.make_bomb_png, r"100000x100000 pixels .*--max-pixels 10000000000"),
    "animated_gif": (bf.make_animated_gif, "animated GIF with 3 frames"),
    "animated_webp": (bf.make_animated_webp, "animated WEBP with 3 frames"),
    "apng": (bf.make_apng, "animated PNG with 3 frames"),
    "multipage_tiff": (bf.make_multipage_tiff, "multi-page TIFF with 2 pages"),
    "missing": (bf.missing_path, "does not exist"),
    "folder": (lambda d: (d / "photos.jpg").mkdir() or d / "photos.jpg", "is a folder"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused_cleanly(tmp_path, case):
    make, message = BAD_INPUTS[case]
    path = make(tmp_path)
    before = bf.snapshot(tmp_path)
    with pytest.raises(PbmlxError, match=message) as info:
        read_image(path)
    assert str(path) in str(info.value)
    assert str(info.value).endswith(".") and ". " not in str(info.value)  # one sentence
    assert bf.snapshot(tmp_path) == before  # input bytes unchanged, nothing added


def test_bomb_file_is_small(tmp_path):
    assert bf.make_bomb_png(tmp_path).stat().st_size < 40_000


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(PbmlxError, match="not a regular file"):
        read_image(fifo)


def test_bad_pixel_limit(tmp_path):
    with pytest.raises(PbmlxError, match="positive whole number"):
        read_image(bf.make_jpeg(tmp_path), max_pixels=0)
    assert DEFAULT_MAX_PIXELS == 100_000_000


def test_input_opened_read_only(tmp_path):
    path = bf.make_jpeg(tmp_path)
    path.chmod(0o444)
    mtime = path.stat().st_mtime_ns
    before = bf.snapshot(tmp_path)
    read_image(path)
    assert path.stat().st_mtime_ns == mtime and bf.snapshot(tmp_path) == before


# --- writing -------------------------------------------------------------------------------------


def test_default_output_path(tmp_path):
    assert default_output_path(tmp_path / "a.jpg") == tmp_path / "a.edited.jpg"
    assert str(default_output_path("dir/IMG_1.JPEG")) == os.path.join("dir", "IMG_1.edited.JPEG")
    assert default_output_path("x.tiff").name == "x.edited.tiff"
    # pbmlx does not write GIF or BMP: the whole name is kept, then .edited.png
    assert default_output_path("anim.gif").name == "anim.gif.edited.png"
    assert default_output_path("anim.BMP").name == "anim.BMP.edited.png"
    assert default_output_path("noext").name == "noext.edited.png"


def test_png_round_trip_exact_with_metadata(tmp_path):
    photo = read_image(bf.make_png(tmp_path))
    out = write_image(photo, photo.rgb, tmp_path / "out.png")
    again = read_image(out)
    assert np.array_equal(again.rgb, photo.rgb)
    assert again.icc_profile == bf.srgb_profile()
    assert again.dpi == pytest.approx((300, 300), abs=0.01)
    exif = exif_of(out)
    assert exif[0x010F] == bf.EXIF_MAKE and exif[0x0132] == bf.EXIF_DATETIME


def test_quantisation_rounds(tmp_path):
    photo = read_image(bf.make_png(tmp_path))
    v = data.chelsea().astype(np.float64)
    out = write_image(photo, (v + 0.49) / 255, tmp_path / "low.png")  # rounds down to v
    assert np.array_equal(np.asarray(Image.open(out)), data.chelsea())
    out = write_image(photo, (v + 0.51) / 255, tmp_path / "high.png")  # up to v + 1; 255 clips
    expected = np.minimum(data.chelsea().astype(np.int32) + 1, 255)
    assert np.array_equal(np.asarray(Image.open(out)), expected)
    out = write_image(photo, v / 255 * 3 - 1, tmp_path / "range.png")  # outside [0, 1]: clipped
    expected = np.clip(np.rint(v * 3 - 255), 0, 255)
    assert np.array_equal(np.asarray(Image.open(out)), expected)


def test_jpeg_round_trip_psnr(tmp_path):
    photo = read_image(bf.make_jpeg(tmp_path))
    out = write_image(photo, photo.rgb, tmp_path / "out.jpg")
    again = read_image(out)
    assert psnr(again.rgb, photo.rgb) > JPEG_REENCODE_PSNR
    with Image.open(out) as im, Image.open(photo.path) as src:
        assert im.layer[0][1:3] == src.layer[0][1:3] == (2, 2)  # the input's 4:2:0 kept
        assert im.quantization == src.quantization  # and its tables: the same quality
    assert again.icc_profile == bf.srgb_profile()


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".tif", ".webp"])
def test_exif_and_icc_kept_in_every_format(tmp_path, suffix):
    photo = read_image(bf.make_exif_rotated_jpeg(tmp_path, 6))
    photo.icc_profile = bf.srgb_profile()
    out = write_image(photo, photo.rgb, tmp_path / f"out{suffix}")
    exif = exif_of(out)
    assert exif[0x010F] == bf.EXIF_MAKE and exif[0x0132] == bf.EXIF_DATETIME
    assert exif.get_ifd(0x8769)[0x9003] == bf.EXIF_DATETIME_ORIGINAL
    assert exif.get(0x0112, 1) == 1  # pixels are upright, so no rotation is left to apply
    with Image.open(out) as im:
        assert im.info.get("icc_profile") == bf.srgb_profile()
        assert im.size == (400, 600)
    again = read_image(out)
    assert again.rgb.shape == (600, 400, 3)  # not rotated a second time
    tolerance = {".jpg": JPEG_REENCODE_PSNR, ".webp": WEBP_PSNR}.get(suffix, float("inf"))
    assert psnr(again.rgb, photo.rgb) >= tolerance


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16bit_written_as_16bit(tmp_path, suffix, channels):
    values = bf.photo_16bit(channels)
    photo = read_image(bf.make_png_raw(tmp_path, "in.png", values))
    photo.exif = bf.photo_exif().tobytes()
    photo.icc_profile = bf.srgb_profile() if channels >= 3 else None
    photo.dpi = (240.0, 240.0)
    out = write_image(photo, photo.rgb, tmp_path / f"out{suffix}")
    again = read_image(out)
    assert again.bit_depth == 16
    assert np.array_equal(as16(again.rgb), as16(photo.rgb))
    if channels in (2, 4):
        assert np.array_equal(as16(again.alpha), values[..., -1])
    # Independent decoders: PIL keeps the high byte of colour PNG/TIFF and reads 16-bit grey
    # fully; tifffile reads 16-bit TIFF fully.
    with Image.open(out) as im:
        pil = np.asarray(im)
        assert im.info.get("icc_profile") == photo.icc_profile
        assert im.getexif()[0x010F] == bf.EXIF_MAKE
        assert im.info["dpi"] == pytest.approx((240, 240), abs=0.01)
    if channels == 1:
        assert np.array_equal(pil, values)
    elif channels >= 3:
        assert np.array_equal(pil, (values >> 8).astype(np.uint8))
    if suffix == ".tif":
        expected = values
        if channels == 2:  # written as RGBA: PIL cannot read 16-bit grey+alpha TIFF back
            expected = values[..., [0, 0, 0, 1]]
        assert np.array_equal(tifffile.imread(out), expected)


def test_16bit_tiff_multi_strip_large(tmp_path):
    # Several strips and several PNG filter blocks: a 1500 x 2000 16-bit photo.
    big = Image.fromarray(data.astronaut()).resize((2000, 1500), Image.Resampling.BICUBIC)
    low_bytes = np.arange(2000, dtype=np.uint16)[None, :, None] % 256
    values = np.asarray(big).astype(np.uint16) * 256 + low_bytes
    photo = read_image(bf.make_png_raw(tmp_path, "big_in.png", values))
    for suffix in (".tif", ".png"):
        out = write_image(photo, photo.rgb, tmp_path / f"big{suffix}")
        assert np.array_equal(as16(read_image(out).rgb), values)
    assert np.array_equal(tifffile.imread(tmp_path / "big.tif"), values)


def test_palette_alpha_written_back(tmp_path):
    photo = read_image(bf.make_palette_png_with_transparency(tmp_path))
    png = read_image(write_image(photo, photo.rgb, tmp_path / "out.png"))
    assert np.array_equal(png.rgb, photo.rgb) and np.array_equal(png.alpha, photo.alpha)
    tif = read_image(write_image(photo, photo.rgb, tmp_path / "out.tif"))
    assert np.array_equal(tif.rgb, photo.rgb) and np.array_equal(tif.alpha, photo.alpha)
    webp = read_image(write_image(photo, photo.rgb, tmp_path / "out.webp"))
    assert np.array_equal(webp.alpha, photo.alpha)  # WebP's alpha plane is lossless here
    assert psnr(webp.rgb, photo.rgb) > WEBP_PALETTE_PSNR


def test_alpha_flattened_onto_white_for_jpeg(tmp_path):
    photo = read_image(bf.make_palette_png_with_transparency(tmp_path))
    out = write_image(photo, photo.rgb, tmp_path / "out.jpg")
    with Image.open(out) as im:
        assert im.mode == "RGB"
    a = photo.alpha[..., None].astype(np.float64)
    expected = photo.rgb * a + (1 - a)
    assert psnr(read_image(out).rgb, expected) > JPEG_FLATTENED_PSNR


def test_alpha_argument(tmp_path):
    photo = read_image(bf.make_png(tmp_path))
    alpha = np.linspace(0, 1, 451, dtype=np.float32)[None].repeat(300, 0)
    out = write_image(photo, photo.rgb, tmp_path / "with_alpha.png", alpha=alpha)
    assert np.array_equal(as8(read_image(out).alpha), as8(alpha))
    out = write_image(photo, photo.rgb, tmp_path / "none.png", alpha=None)
    assert read_image(out).alpha is None
    with pytest.raises(ValueError, match="alpha"):
        write_image(photo, photo.rgb, tmp_path / "bad.png", alpha=alpha[:10])


def test_photo_alpha_follows_a_resized_edit(tmp_path):
    photo = read_image(bf.make_palette_png_with_transparency(tmp_path))
    half = np.asarray(Image.fromarray(as8(photo.rgb)).resize((320, 214))) / 255.0
    again = read_image(write_image(photo, half, tmp_path / "half.png"))
    assert again.alpha.shape == (214, 320)


def test_grayscale_stays_grey_unless_the_edit_adds_colour(tmp_path):
    photo = read_image(bf.make_grayscale_png(tmp_path))
    out = write_image(photo, photo.rgb, tmp_path / "grey.png")
    with Image.open(out) as im:
        assert im.mode == "L" and np.array_equal(np.asarray(im), data.camera())
    tinted = photo.rgb * np.array([1.0, 0.9, 0.8], np.float32)
    out = write_image(photo, tinted, tmp_path / "sepia.png")
    with Image.open(out) as im:
        assert im.mode == "RGB"
        assert np.array_equal(np.asarray(im), as8(tinted))


def test_grey_icc_profile_only_on_grey_output(tmp_path):
    # A GRAY profile describes one channel; it must not be attached to RGB output.
    photo = read_image(bf.make_grayscale_png(tmp_path))
    gray_profile = bytearray(bf.srgb_profile())
    gray_profile[16:20] = b"GRAY"
    photo.icc_profile = bytes(gray_profile)
    with Image.open(write_image(photo, photo.rgb, tmp_path / "g.png")) as im:
        assert im.info.get("icc_profile") == photo.icc_profile
    tinted = photo.rgb * np.array([1.0, 0.9, 0.8], np.float32)
    with Image.open(write_image(photo, tinted, tmp_path / "c.png")) as im:
        assert "icc_profile" not in im.info


def test_cmyk_written_as_rgb(tmp_path):
    photo = read_image(bf.make_cmyk_jpeg(tmp_path))
    out = write_image(photo, photo.rgb, tmp_path / "out.jpg")
    with Image.open(out) as im:
        assert im.mode == "RGB" and "icc_profile" not in im.info


def test_output_file_mode_follows_umask(tmp_path):
    photo = read_image(bf.make_png(tmp_path))
    out = write_image(photo, photo.rgb, tmp_path / "out.png")
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~mask


# --- where writing must refuse -------------------------------------------------------------------


def _written_nothing(folder, before):
    after = bf.snapshot(folder)
    assert after == before, f"folder changed: {set(after) ^ set(before)}"


def test_refuses_to_write_over_the_input(tmp_path):
    path = bf.make_jpeg(tmp_path)
    photo = read_image(path)
    (tmp_path / "sub").mkdir()
    os.link(path, tmp_path / "hardlink.jpg")
    link = bf.make_symlink(path, tmp_path)
    before = bf.snapshot(tmp_path)
    spellings = [
        path,
        tmp_path / "sub" / ".." / path.name,
        link,
        tmp_path / "hardlink.jpg",
        os.path.relpath(path),
    ]
    for out in spellings:
        for overwrite in (False, True):
            with pytest.raises(PbmlxError, match="over the input"):
                write_image(photo, photo.rgb, out, overwrite=overwrite)
            with pytest.raises(PbmlxError, match="over the input"):
                check_output_path(out, path, overwrite=overwrite)
    _written_nothing(tmp_path, before)


def test_refuses_input_reached_through_a_symlinked_input(tmp_path):
    path = bf.make_jpeg(tmp_path)
    link = bf.make_symlink(path, tmp_path)
    photo = read_image(link)  # read through the link, written to the real path
    before = bf.snapshot(tmp_path)
    with pytest.raises(PbmlxError, match="over the input"):
        write_image(photo, photo.rgb, path, overwrite=True)
    _written_nothing(tmp_path, before)


def test_existing_output_needs_overwrite(tmp_path):
    photo = read_image(bf.make_png(tmp_path))
    out = tmp_path / "out.png"
    out.write_bytes(b"precious")
    before = bf.snapshot(tmp_path)
    with pytest.raises(PbmlxError, match=r"already exists.*--overwrite"):
        write_image(photo, photo.rgb, out)
    _written_nothing(tmp_path, before)
    write_image(photo, photo.rgb, out, overwrite=True)
    assert np.array_equal(np.asarray(Image.open(out)), data.chelsea())
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_output_appearing_during_the_write_is_not_clobbered(tmp_path, monkeypatch):
    # The existence check passes, then another process creates the file before the rename:
    # the hard-link rename fails instead of replacing it.
    photo = read_image(bf.make_png(tmp_path))
    out = tmp_path / "race.png"
    real_fsync = os.fsync

    def fsync_then_race(fd):
        real_fsync(fd)
        if not out.exists():
            out.write_bytes(b"the other writer")

    monkeypatch.setattr(os, "fsync", fsync_then_race)
    with pytest.raises(PbmlxError, match="already exists"):
        write_image(photo, photo.rgb, out)
    assert out.read_bytes() == b"the other writer"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


@pytest.mark.parametrize(
    "make_out, message",
    [
        (bf.output_under_a_file, "is not a folder"),
        (bf.output_in_missing_folder, "does not exist"),
        (lambda d: d / "out.gif", "does not know the extension '.gif'"),
        (lambda d: d / "out", r"does not know the extension '\(none\)'"),
        (lambda d: (d / "dir.png").mkdir() or d / "dir.png", "is a folder"),
    ],
    ids=["under-a-file", "missing-folder", "gif", "no-extension", "folder"],
)
def test_bad_output_paths(tmp_path, make_out, message):
    photo = read_image(bf.make_png(tmp_path))
    out = make_out(tmp_path)
    before = bf.snapshot(tmp_path)
    with pytest.raises(PbmlxError, match=message) as info:
        write_image(photo, photo.rgb, out)
    assert str(out) in str(info.value)
    with pytest.raises(PbmlxError, match=message):  # the same check, before any work
        check_output_path(out, photo.path)
    _written_nothing(tmp_path, before)


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="root writes into read-only folders; test_unwritable_folder_reported covers the path",
)
def test_read_only_folder(tmp_path):
    photo = read_image(bf.make_png(tmp_path))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(PbmlxError, match="not writable"):
            write_image(photo, photo.rgb, locked / "out.png")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_unwritable_folder_reported(tmp_path, monkeypatch):
    # What the OS answers for a folder the user may not write to (EACCES from creating the
    # temporary file), simulated so that the test also means something when run as root.
    photo = read_image(bf.make_png(tmp_path))

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    before = bf.snapshot(tmp_path)
    with pytest.raises(PbmlxError, match=r"folder .* is not writable \(Permission denied\)"):
        write_image(photo, photo.rgb, tmp_path / "out.png")
    _written_nothing(tmp_path, before)


@pytest.mark.parametrize("failing", ["fsync", "replace", "interrupt"])
def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch, failing):
    photo = read_image(bf.make_png(tmp_path))
    before = bf.snapshot(tmp_path)
    if failing == "fsync":  # e.g. the disk filled up

        def broken(fd):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "fsync", broken)
        expected = pytest.raises(PbmlxError, match="No space left on device")
    else:

        def broken(src, dst):
            raise KeyboardInterrupt if failing == "interrupt" else OSError(5, "I/O error")

        monkeypatch.setattr(os, "replace", broken)
        expected = pytest.raises(KeyboardInterrupt if failing == "interrupt" else PbmlxError)
    with expected:
        write_image(photo, photo.rgb, tmp_path / "out.png", overwrite=True)
    _written_nothing(tmp_path, before)


def test_bad_arrays_are_programming_errors(tmp_path):
    photo = read_image(bf.make_png(tmp_path))
    with pytest.raises(ValueError, match="H, W, 3"):
        write_image(photo, photo.rgb[..., :2], tmp_path / "a.png")
    with pytest.raises(ValueError, match="float or uint8"):
        write_image(photo, as8(photo.rgb).astype(np.int16), tmp_path / "b.png")
    # 8-bit codes are what the float values quantise to: the same file.
    write_image(photo, as8(photo.rgb), tmp_path / "codes.png")
    write_image(photo, photo.rgb, tmp_path / "float.png")
    assert (tmp_path / "codes.png").read_bytes() == (tmp_path / "float.png").read_bytes()
    nan = photo.rgb.copy()
    nan[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        write_image(photo, nan, tmp_path / "c.png")


# --- HEIC ----------------------------------------------------------------------------------------


def _fake_heic(folder):
    path = folder / "phone.heic"
    path.write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(64))
    return path


@pytest.mark.skipif(HAVE_HEIF, reason="pillow-heif is installed")
def test_heic_without_pillow_heif_explains(tmp_path):
    path = _fake_heic(tmp_path)
    with pytest.raises(PbmlxError, match="pillow-heif") as info:
        read_image(path)
    assert HEIC_INSTALL_HINT in str(info.value) and str(path) in str(info.value)
    photo = read_image(bf.make_png(tmp_path))
    with pytest.raises(PbmlxError, match="pillow-heif"):
        write_image(photo, photo.rgb, tmp_path / "out.heic")
    # Detected by content too, whatever the name.
    renamed = path.rename(tmp_path / "phone.jpg")
    with pytest.raises(PbmlxError, match="pillow-heif"):
        read_image(renamed)


@pytest.mark.skipif(not HAVE_HEIF, reason="pillow-heif is not installed")
def test_heic_round_trip(tmp_path):
    photo = read_image(bf.make_exif_rotated_jpeg(tmp_path, 6))
    photo.icc_profile = bf.srgb_profile()
    out = write_image(photo, photo.rgb, tmp_path / "out.heic")
    again = read_image(out)
    assert again.format == "HEIF" and again.rgb.shape == (600, 400, 3)
    assert psnr(again.rgb, photo.rgb) > 35.0
    assert again.icc_profile == bf.srgb_profile()
    exif = Image.Exif()
    exif.load(again.exif)
    assert exif[0x010F] == bf.EXIF_MAKE and exif.get(0x0112, 1) == 1


def test_io_modules_do_not_import_mlx():
    code = "import sys, pbmlx.load, pbmlx.save; print('mlx.core' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
