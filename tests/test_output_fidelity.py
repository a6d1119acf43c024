"""Outputs that respect the file: JPEG quality and chroma subsampling, PNG text and XMP, default
output names per input format, and the notice when transparency is flattened.

Oracles: PIL's own JPEG encoder (libjpeg-turbo) at known qualities and subsamplings, PIL's
readers for the tables, sampling factors, text chunks and XMP of what pbmlx writes, and the
skimage photos. The end-to-end checks run `pbmlx edit` as a user does, in a subprocess.
"""

from __future__ import annotations

import io
import logging
import struct
import zlib
from pathlib import Path

import badfiles as bf
import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from PIL.JpegPresets import presets
from skimage import data
from test_cli import pbmlx  # the same subprocess runner

from pbmlx.errors import PbmlxError
from pbmlx.load import estimate_jpeg_quality, ijg_quant_tables, read_image
from pbmlx.save import (
    DEFAULT_JPEG_QUALITY,
    JPEG_XMP_MAX_BYTES,
    default_output_path,
    write_image,
)

# The bound on re-saving a quality-75 4:2:0 JPEG with a mild edit. Measured with the
# input's own tables and subsampling kept: 1.001 (astronaut), 1.000 (coffee), 1.004 (rocket);
# pbmlx's old quality 95 with 4:4:4 gave 2.29, 2.37 and 2.38.
MAX_RESAVE_GROWTH = 1.3
XMP = (
    b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
    b'xmlns:dc="http://purl.org/dc/elements/1.1/" dc:format="image/jpeg"/></rdf:RDF>'
    b'</x:xmpmeta><?xpacket end="w"?>'
)


def jpeg_bytes(rgb: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", **options)
    return buffer.getvalue()


def jpeg_settings(path) -> tuple[dict, tuple]:
    """PIL's view of a JPEG: its quantisation tables and its components' sampling factors."""
    with Image.open(path) as im:
        return im.quantization, tuple(layer[1:3] for layer in im.layer)


SAMPLING = {"4:4:4": ((1, 1), (1, 1), (1, 1)), "4:2:2": ((2, 1), (1, 1), (1, 1))}
SAMPLING["4:2:0"] = ((2, 2), (1, 1), (1, 1))


# --- quality estimation --------------------------------------------------------------------------


def test_ijg_tables_are_what_pil_writes():
    small = data.astronaut()[:64, :64]
    for quality in (1, 10, 49, 50, 51, 75, 90, 99, 100):
        with Image.open(io.BytesIO(jpeg_bytes(small, quality=quality))) as im:
            assert tuple(map(tuple, im.quantization.values())) == ijg_quant_tables(quality)


def test_quality_estimate_is_exact_for_every_pil_quality():
    """The rule: the IJG quality with the least sum of |ln entry - ln IJG entry|; IJG-made
    tables are at distance 0 from their own quality, so every quality 1-100 comes back exact,
    colour (two tables) and grey (one)."""
    colour = data.astronaut()[:64, :64]
    grey = data.camera()[:64, :64]
    for quality in range(1, 101):
        for rgb in (colour, grey):
            with Image.open(io.BytesIO(jpeg_bytes(rgb, quality=quality))) as im:
                assert estimate_jpeg_quality(im.quantization) == quality


def test_quality_estimate_of_other_encoders_tables():
    # Tables off the IJG scale by 5% either way (another encoder's rounding or scaling) stay
    # within 3 of the quality (the worst case measured over qualities 10-99).
    for quality in range(10, 100):
        for factor in (0.95, 1.05):
            tables = {
                slot: np.clip(np.rint(np.array(t) * factor), 1, 255).astype(int).tolist()
                for slot, t in enumerate(ijg_quant_tables(quality))
            }
            assert abs(estimate_jpeg_quality(tables) - quality) <= 3
    # Photoshop's "save for web" tables (PIL's presets) are not IJG's: their estimates rank
    # them in order, from about 65 to 99.
    names = ["web_low", "web_medium", "web_high", "web_very_high", "web_maximum"]
    estimates = [
        estimate_jpeg_quality(dict(enumerate(presets[n]["quantization"][:2]))) for n in names
    ]
    assert estimates == sorted(estimates) and len(set(estimates)) == len(names)
    assert estimate_jpeg_quality({}) is None
    assert estimate_jpeg_quality({0: [0] * 64}) is None


@pytest.mark.parametrize("subsampling", ["4:4:4", "4:2:2", "4:2:0"])
@pytest.mark.parametrize("quality", [40, 75, 95])
def test_jpeg_output_keeps_the_inputs_tables_and_subsampling(tmp_path, quality, subsampling):
    src = tmp_path / "in.jpg"
    src.write_bytes(jpeg_bytes(data.coffee(), quality=quality, subsampling=subsampling))
    photo = read_image(src)
    assert (photo.jpeg_quality, photo.jpeg_subsampling) == (quality, subsampling)
    out = write_image(photo, photo.codes, tmp_path / "out.jpg")
    tables, sampling = jpeg_settings(out)
    assert (tables, sampling) == (jpeg_settings(src)[0], SAMPLING[subsampling])
    again = read_image(out)
    assert (again.jpeg_quality, again.jpeg_subsampling) == (quality, subsampling)


def test_non_ijg_tables_are_reused_as_they_are(tmp_path):
    # A camera's or Photoshop's tables match no IJG quality; writing them back, not the
    # nearest IJG quality's, keeps the file's size (the nearest IJG tables grew it 1.1-1.9x).
    src = tmp_path / "in.jpg"
    src.write_bytes(jpeg_bytes(data.astronaut(), quality="web_high"))
    out = write_image(read_image(src), read_image(src).codes, tmp_path / "out.jpg")
    assert jpeg_settings(out) == jpeg_settings(src)
    assert out.stat().st_size <= src.stat().st_size * 1.05


def test_quality_argument_overrides_the_inputs(tmp_path):
    src = tmp_path / "in.jpg"
    src.write_bytes(jpeg_bytes(data.astronaut(), quality=75, subsampling="4:2:2"))
    photo = read_image(src)
    out = write_image(photo, photo.rgb, tmp_path / "out.jpg", quality=50)
    again = read_image(out)
    assert (again.jpeg_quality, again.jpeg_subsampling) == (50, "4:2:2")  # sampling kept
    for bad in (0, 101, 7.5, True, "90"):
        with pytest.raises(PbmlxError, match="quality must be a whole number from 1 to 100"):
            write_image(photo, photo.rgb, tmp_path / "bad.jpg", quality=bad)
    assert not (tmp_path / "bad.jpg").exists()


def test_non_jpeg_input_gets_the_stated_default(tmp_path):
    photo = read_image(bf.make_png(tmp_path))
    assert photo.jpeg_quality is None and photo.jpeg_subsampling is None
    again = read_image(write_image(photo, photo.codes, tmp_path / "out.jpg"))
    assert (again.jpeg_quality, again.jpeg_subsampling) == (DEFAULT_JPEG_QUALITY, "4:2:0")


def test_grey_jpeg_given_colour_gets_a_chroma_table_at_its_quality(tmp_path):
    src = tmp_path / "grey.jpg"
    src.write_bytes(jpeg_bytes(data.camera(), quality=70))
    photo = read_image(src)
    assert photo.gray and photo.jpeg_quality == 70 and photo.jpeg_subsampling is None
    warm = photo.rgb * np.array([1.0, 0.9, 0.8], np.float32)  # no longer grey
    out = write_image(photo, warm, tmp_path / "warm.jpg")
    tables, sampling = jpeg_settings(out)
    assert tuple(map(tuple, tables.values())) == ijg_quant_tables(70)
    assert sampling == SAMPLING["4:2:0"]
    grey_out = write_image(photo, photo.rgb, tmp_path / "still_grey.jpg")
    with Image.open(grey_out) as im:
        assert im.mode == "L" and im.quantization == {0: list(ijg_quant_tables(70)[0])}


# --- the check: a mild edit of a quality-75 4:2:0 JPEG -------------------------------


@pytest.mark.parametrize("name", ["astronaut", "coffee", "rocket"])
def test_resaving_a_quality_75_jpeg_stays_near_its_size(tmp_path, name):
    src = tmp_path / f"{name}.jpg"
    src.write_bytes(jpeg_bytes(getattr(data, name)(), quality=75, subsampling="4:2:0"))
    r = pbmlx("edit", src, "brighten it a little")
    assert r.returncode == 0, r.stderr
    out = tmp_path / f"{name}.edited.jpg"
    assert r.stdout.strip() == str(out)
    growth = out.stat().st_size / src.stat().st_size
    assert growth <= MAX_RESAVE_GROWTH, (src.stat().st_size, out.stat().st_size)
    photo = read_image(out)
    assert (photo.jpeg_quality, photo.jpeg_subsampling) == (75, "4:2:0")
    assert jpeg_settings(out) == jpeg_settings(src)
    brighter = photo.rgb.mean() - read_image(src).rgb.mean()
    assert brighter > 2 / 255  # the edit was made (brightness +0.15: ~6 levels on the astronaut)


def test_cli_quality_overrides_and_is_checked(tmp_path):
    src = tmp_path / "in.jpg"
    src.write_bytes(jpeg_bytes(data.chelsea(), quality=75))
    r = pbmlx("edit", src, "brighten it a little", "--quality", "93", "-o", tmp_path / "q.jpg")
    assert r.returncode == 0, r.stderr
    assert read_image(tmp_path / "q.jpg").jpeg_quality == 93
    for bad in ("0", "101", "high"):
        r = pbmlx("edit", src, "brighten", "--quality", bad, "-o", tmp_path / "bad.jpg")
        assert r.returncode == 2 and r.stderr.startswith("pbmlx: error: argument --quality")
        assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad.jpg").exists()


# --- PNG text and XMP ----------------------------------------------------------------------------


def png_with_text(path: Path, *, sixteen: bool = False) -> Path:
    """A PNG with Author (tEXt), a long Comment (zTXt), a French Title (iTXt with a language and
    a translated key) and an XMP packet: the 8-bit cat through PIL, or the 16-bit astronaut
    written from the spec (badfiles) with the same chunks put before its IEND."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Ada Lovelace")
    info.add_text("Comment", "long " * 400, zip=True)
    info.add_itxt("Title", "Le chat \u00e0 la fen\u00eatre \u2600", lang="fr", tkey="Titre")
    info.add_itxt("XML:com.adobe.xmp", XMP)
    if not sixteen:
        Image.fromarray(data.chelsea()).save(path, pnginfo=info)
        return path
    raw = bf.make_png_raw(path.parent, "raw16.png", bf.photo_16bit()).read_bytes()
    text = b"".join(png_chunk(kind, payload) for kind, payload, *_ in info.chunks)
    iend = len(png_chunk(b"IEND", b""))
    path.write_bytes(raw[:-iend] + text + raw[-iend:])
    return path


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def assert_text_kept(path: Path) -> None:
    with Image.open(path) as im:
        im.load()
        text = im.text
        assert text["Author"] == "Ada Lovelace"
        assert text["Comment"] == "long " * 400
        title = text["Title"]
        assert title == "Le chat \u00e0 la fen\u00eatre \u2600"
        assert (title.lang, title.tkey) == ("fr", "Titre")
        assert im.info["xmp"] == XMP


@pytest.mark.parametrize("sixteen", [False, True])
def test_png_text_and_xmp_round_trip_png_to_png(tmp_path, sixteen):
    src = png_with_text(tmp_path / "in.png", sixteen=sixteen)
    photo = read_image(src)
    assert photo.bit_depth == (16 if sixteen else 8)
    assert set(photo.text) == {"Author", "Comment", "Title"} and photo.xmp == XMP
    out = write_image(photo, photo.rgb, tmp_path / "out.png")
    assert_text_kept(out)
    with Image.open(out) as im:
        assert im.size == (photo.width, photo.height)


@pytest.mark.parametrize("suffix", [".jpg", ".tif", ".webp"])
def test_xmp_kept_and_text_dropped_with_a_notice_in_other_formats(tmp_path, suffix, caplog):
    photo = read_image(png_with_text(tmp_path / "in.png"))
    with caplog.at_level(logging.WARNING, logger="pbmlx"):
        out = write_image(photo, photo.codes, tmp_path / f"out{suffix}")
    with Image.open(out) as im:
        assert im.info["xmp"] == XMP
    assert read_image(out).xmp == XMP
    notes = [r.getMessage() for r in caplog.records]
    assert notes == [
        f"out{suffix}: the input's PNG text (Author, Comment, Title) was dropped: "
        "only PNG output holds it."
    ]


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".tif", ".webp"])
def test_jpeg_xmp_carried_to_every_format(tmp_path, suffix):
    src = tmp_path / "in.jpg"
    Image.fromarray(data.astronaut()).save(src, quality=80, xmp=XMP)
    photo = read_image(src)
    assert photo.xmp == XMP and photo.text == {}
    out = write_image(photo, photo.codes, tmp_path / f"out{suffix}")
    assert read_image(out).xmp == XMP


def test_tiff_xmp_is_not_copied_into_exif(tmp_path):
    src = tmp_path / "in.tif"
    Image.fromarray(data.astronaut()).save(src, tiffinfo={700: XMP, 0x010F: "camera"})
    photo = read_image(src)
    assert photo.xmp == XMP
    out = write_image(photo, photo.codes, tmp_path / "out.jpg")
    with Image.open(out) as im:
        assert im.info["xmp"] == XMP
        exif = im.getexif()
        assert exif[0x010F] == "camera" and 700 not in exif


def test_xmp_too_long_for_jpeg_is_dropped_with_a_notice(tmp_path, caplog):
    src = tmp_path / "in.png"
    big = XMP.replace(b"image/jpeg", b"x" * JPEG_XMP_MAX_BYTES)
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", big)
    Image.fromarray(data.chelsea()).save(src, pnginfo=info)
    photo = read_image(src)
    with caplog.at_level(logging.WARNING, logger="pbmlx"):
        out = write_image(photo, photo.codes, tmp_path / "out.jpg")
    assert "xmp" not in Image.open(out).info
    assert [r.getMessage() for r in caplog.records] == [
        f"out.jpg: the XMP metadata ({len(big):,} bytes) was dropped: a JPEG holds at most "
        f"{JPEG_XMP_MAX_BYTES:,} bytes of it in one segment."
    ]
    assert read_image(write_image(photo, photo.codes, tmp_path / "out.png")).xmp == big


# --- default output names ------------------------------------------------------------------------


def test_every_input_format_gets_its_own_default_output(tmp_path):
    """GIF, BMP, TIFF, WebP, JPEG and PNG inputs with one stem, in one folder: six outputs,
    none over another; formats pbmlx writes keep their extension, the others become PNG."""
    cat = data.chelsea()
    expected = {
        "cat.gif": "cat.gif.edited.png",
        "cat.bmp": "cat.bmp.edited.png",
        "cat.tif": "cat.edited.tif",
        "cat.webp": "cat.edited.webp",
        "cat.jpg": "cat.edited.jpg",
        "cat.png": "cat.edited.png",
    }
    for name in expected:
        Image.fromarray(cat).save(tmp_path / name)
    for name, out_name in expected.items():
        assert default_output_path(tmp_path / name) == tmp_path / out_name
        r = pbmlx("edit", tmp_path / name, "brighten it a little")
        assert r.returncode == 0, (name, r.stderr)
        assert r.stdout.strip() == str(tmp_path / out_name)
        with Image.open(tmp_path / out_name) as im:
            assert im.size == (cat.shape[1], cat.shape[0])
    assert len(list(tmp_path.iterdir())) == 2 * len(expected)


# --- the flattening notice -----------------------------------------------------------------------


def test_flattening_transparency_for_jpeg_is_noticed_once(tmp_path):
    src = bf.make_palette_png_with_transparency(tmp_path)
    r = pbmlx("edit", src, "brighten it a little", "-o", tmp_path / "out.jpg")
    assert r.returncode == 0, r.stderr
    notes = [line for line in r.stderr.splitlines() if line.startswith("pbmlx: note:")]
    assert notes == [
        "pbmlx: note: out.jpg: JPEG has no transparency: the transparent parts were flattened "
        "onto white (write .png, .tif or .webp to keep them)."
    ]
    assert r.stdout.strip() == str(tmp_path / "out.jpg")  # stdout holds the path only
    # Kept transparency, or none to lose, is no news.
    r = pbmlx("edit", src, "brighten it a little", "-o", tmp_path / "out.png")
    assert r.returncode == 0 and "pbmlx: note:" not in r.stderr
    opaque = tmp_path / "opaque.png"
    Image.fromarray(data.chelsea()).convert("RGBA").save(opaque)
    r = pbmlx("edit", opaque, "brighten it a little", "-o", tmp_path / "opaque.jpg")
    assert r.returncode == 0 and "pbmlx: note:" not in r.stderr
