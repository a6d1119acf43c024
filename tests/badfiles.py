"""Build bad and odd input files from real photos, one function per case, for the I/O and CLI tests.

Each ``make_*`` function writes one file into ``folder`` and returns its path. The photos come
from ``skimage.data``. Import from a test module as ``from badfiles import make_truncated_jpeg``
(pytest puts tests/ on sys.path because tests/ has no ``__init__.py``).
"""

from __future__ import annotations

import functools
import hashlib
import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms
from skimage import data

EXIF_MAKE = "pbmlx-test-camera"
EXIF_DATETIME = "2024:05:17 10:11:12"
EXIF_DATETIME_ORIGINAL = "2024:05:17 10:11:00"


def photo_exif(orientation: int = 1) -> Image.Exif:
    """EXIF with Make, DateTime (IFD0), DateTimeOriginal (Exif sub-IFD) and an orientation."""
    exif = Image.Exif()
    exif[0x010F] = EXIF_MAKE  # Make
    exif[0x0132] = EXIF_DATETIME  # DateTime
    exif[0x0112] = orientation
    exif.get_ifd(0x8769)[0x9003] = EXIF_DATETIME_ORIGINAL  # Exif IFD: DateTimeOriginal
    return exif


@functools.cache  # LittleCMS stamps each new profile with the time: make one, compare to it
def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


# --- folder checks -------------------------------------------------------------------------------


def snapshot(folder: Path) -> dict[str, str]:
    """{name: sha256} of every entry in ``folder`` (hidden temp files included)."""
    out = {}
    for p in sorted(folder.iterdir()):
        out[p.name] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
    return out


# --- good and odd inputs -------------------------------------------------------------------------


def _astronaut_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(
        buffer, "JPEG", quality=92, exif=photo_exif().tobytes(), icc_profile=srgb_profile()
    )
    return buffer.getvalue()


def make_jpeg(folder: Path, name: str = "astronaut.jpg") -> Path:
    """The astronaut (512x512 RGB) as a quality-92 JPEG with EXIF and an sRGB ICC profile."""
    path = folder / name
    path.write_bytes(_astronaut_jpeg())
    return path


def make_png(folder: Path, name: str = "chelsea.png") -> Path:
    """The cat (300x451 RGB) as an 8-bit PNG with EXIF and an sRGB ICC profile."""
    path = folder / name
    Image.fromarray(data.chelsea()).save(
        path, exif=photo_exif().tobytes(), icc_profile=srgb_profile(), dpi=(300, 300)
    )
    return path


def make_exif_rotated_jpeg(folder: Path, orientation: int = 6) -> Path:
    """The coffee photo stored sideways with an EXIF orientation that makes it upright."""
    path = folder / f"coffee_orientation{orientation}.jpg"
    Image.fromarray(data.coffee()).save(
        path, quality=92, exif=photo_exif(orientation).tobytes(), dpi=(72, 144)
    )
    return path


def make_grayscale_png(folder: Path) -> Path:
    """The cameraman (512x512, mode L)."""
    path = folder / "camera.png"
    Image.fromarray(data.camera()).save(path)
    return path


def photo_16bit(channels: int = 3) -> np.ndarray:
    """A 16-bit version of the astronaut whose low bytes carry real detail, not zeros.

    value = 257 * v8 + (a smooth ramp in 0..256): every low byte occurs, rounding tests bite.
    """
    rgb = data.astronaut().astype(np.uint32)
    ramp = (np.add.outer(np.arange(512), 3 * np.arange(512)) % 257).astype(np.uint32)
    values = (rgb * 257 + ramp[..., None]).clip(0, 65535).astype(np.uint16)
    if channels == 1:
        return values[..., 1]
    if channels in (2, 4):
        alpha = np.linspace(0, 65535, 512, dtype=np.uint16)[None, :].repeat(512, 0)
        base = values[..., :1] if channels == 2 else values
        return np.concatenate([base, alpha[..., None]], axis=-1)
    return values


def make_png_raw(folder: Path, name: str, samples: np.ndarray, *, interlace: bool = False) -> Path:
    """A PNG written straight from the spec (filter None), for any channel count at 8/16 bits.

    Independent of PIL and of pbmlx's writer, so it can serve as a decoding oracle. With
    ``interlace`` the rows are stored in the seven Adam7 passes.
    """
    h, w = samples.shape[:2]
    s = samples.reshape(h, w, -1)
    channels = s.shape[2]
    depth = 16 if s.dtype == np.uint16 else 8
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    dtype = ">u2" if depth == 16 else "u1"

    def scanlines(img: np.ndarray) -> bytes:
        return b"".join(b"\0" + row.astype(dtype).tobytes() for row in img)

    if interlace:
        passes = [(0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2)]
        passes += [(0, 1, 2, 2), (1, 0, 2, 1)]  # (row start, col start, row step, col step)
        raw = b"".join(
            scanlines(s[r0::rs, c0::cs]) for r0, c0, rs, cs in passes if s[r0::rs, c0::cs].size
        )
    else:
        raw = scanlines(s)

    return write_png(folder / name, w, h, depth, colour_type, zlib.compress(raw), interlace)


def make_16bit_png(folder: Path) -> Path:
    """The 16-bit astronaut (see :func:`photo_16bit`) as a 16-bit RGB PNG."""
    return make_png_raw(folder, "astronaut16.png", photo_16bit())


def make_palette_png_with_transparency(folder: Path) -> Path:
    """The rocket quantised to 64 colours, with the sky's colour fully and one colour half
    transparent (a tRNS chunk)."""
    path = folder / "rocket_palette.png"
    im = Image.fromarray(data.rocket()).quantize(64)
    sky = int(np.bincount(np.asarray(im)[0]).argmax())  # most common colour of the top row
    alpha = [255] * 64
    alpha[sky] = 0
    alpha[(sky + 1) % 64] = 128
    im.save(path, transparency=bytes(alpha))
    return path


def cmyk_profile(to_rgb: Callable[[np.ndarray], np.ndarray], grid: int = 9) -> bytes:
    """An ICC v2 CMYK output profile whose A2B0 table encodes ``to_rgb`` (CMYK in [0, 1],
    shape (..., 4) -> sRGB in [0, 1], shape (..., 3)).

    The table is a lut16 (mft2) with ``grid`` points per ink and Lab PCS values, computed by
    converting ``to_rgb`` of each grid point from sRGB to Lab with LittleCMS.
    """
    axis = np.linspace(0.0, 1.0, grid)
    cmyk = np.stack(np.meshgrid(axis, axis, axis, axis, indexing="ij"), -1).reshape(-1, 4)
    rgb8 = np.rint(np.clip(to_rgb(cmyk), 0, 1) * 255).astype(np.uint8)
    lab_im = ImageCms.profileToProfile(
        Image.fromarray(rgb8[None]),
        ImageCms.createProfile("sRGB"),
        ImageCms.createProfile("LAB"),
        outputMode="LAB",
    )
    assert lab_im is not None
    # PIL's 8-bit Lab: L * 255 / 100, and a, b as signed bytes. Offset a, b by 128 and times 256
    # it is ICC v2's 16-bit Lab encoding (L = 100 at 0xFF00, a = b = 0 at 0x8000).
    lab8 = np.asarray(lab_im).reshape(-1, 3)
    lab16 = lab8.astype(np.uint16) * 256
    lab16[:, 1:] = (lab8[:, 1:].view(np.int8).astype(np.int16) + 128).astype(np.uint16) * 256
    lab16 = lab16.astype(">u2")

    identity = np.array([0, 65535], ">u2").tobytes()
    lut = b"mft2" + bytes(4) + bytes([4, 3, grid, 0])
    lut += struct.pack(">9i", *(65536 if i % 4 == 0 else 0 for i in range(9)))  # identity matrix
    lut += struct.pack(">HH", 2, 2) + identity * 4 + lab16.tobytes() + identity * 3
    desc_text = b"pbmlx test CMYK\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(desc_text)) + desc_text
    desc += bytes(4) + bytes(4) + bytes(2) + bytes(1) + bytes(67)  # no Unicode / ScriptCode text
    d50 = struct.pack(">3i", *(round(v * 65536) for v in (0.9642, 1.0, 0.8249)))
    wtpt = b"XYZ " + bytes(4) + d50
    tags = [(b"desc", desc), (b"wtpt", wtpt), (b"A2B0", lut)]

    offset = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for sig, payload in tags:
        payload += bytes(-len(payload) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(payload))
        body += payload
    size = 128 + len(table) + len(body)
    header = struct.pack(">I4sI4s4s4s", size, b"none", 0x02100000, b"prtr", b"CMYK", b"Lab ")
    header += bytes(12) + b"acsp" + bytes(28) + d50 + bytes(128 - 80)
    assert len(header) == 128
    return header + table + body


def naive_cmyk_to_rgb(cmyk: np.ndarray) -> np.ndarray:
    """R = (1 - C)(1 - K), G = (1 - M)(1 - K), B = (1 - Y)(1 - K)."""
    return (1 - cmyk[..., :3]) * (1 - cmyk[..., 3:])


def make_cmyk_jpeg(folder: Path, to_rgb: Callable | None = None) -> Path:
    """The astronaut as a CMYK JPEG (PIL's RGB -> CMYK: C = 255 - R, ..., K = 0), with an
    embedded CMYK profile built from ``to_rgb`` when given (see :func:`cmyk_profile`)."""
    path = folder / ("astronaut_cmyk_icc.jpg" if to_rgb else "astronaut_cmyk.jpg")
    im = Image.fromarray(data.astronaut()).convert("CMYK")
    extra = {"icc_profile": cmyk_profile(to_rgb)} if to_rgb else {}
    im.save(path, quality=95, **extra)
    return path


def make_long_strip_png(folder: Path, length: int = 20000) -> Path:
    """A 1 x ``length`` strip: the astronaut squeezed into one row."""
    path = folder / "strip.png"
    Image.fromarray(data.astronaut()).resize((length, 1), Image.Resampling.BILINEAR).save(path)
    return path


def make_multipage_tiff(folder: Path) -> Path:
    path = folder / "pages.tif"
    pages = [Image.fromarray(data.astronaut()), Image.fromarray(data.coffee())]
    pages[0].save(path, save_all=True, append_images=pages[1:])
    return path


def _frames() -> list[Image.Image]:
    photo = Image.fromarray(data.chelsea())
    return [photo, photo.rotate(90, expand=False), photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]


def make_animated_gif(folder: Path) -> Path:
    """Three frames of the cat."""
    path = folder / "cat.gif"
    frames = _frames()
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def make_animated_webp(folder: Path) -> Path:
    path = folder / "cat.webp"
    frames = _frames()
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def make_apng(folder: Path) -> Path:
    """An animated PNG (acTL/fcTL chunks) of three frames."""
    path = folder / "cat_animated.png"
    frames = _frames()
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


# --- bad inputs ----------------------------------------------------------------------------------


def make_truncated_jpeg(folder: Path, fraction: float = 0.5) -> Path:
    """The astronaut JPEG cut after ``fraction`` of its bytes (as an interrupted copy leaves it)."""
    full = _astronaut_jpeg()
    path = folder / f"truncated_{round(fraction * 1000)}.jpg"
    path.write_bytes(full[: int(len(full) * fraction)])
    return path


def make_zero_byte_file(folder: Path) -> Path:
    path = folder / "empty.jpg"
    path.write_bytes(b"")
    return path


def make_text_named_jpg(folder: Path) -> Path:
    """A text file with a .jpg name."""
    path = folder / "notes.jpg"
    path.write_text("These are my holiday notes, not a picture.\n" * 20)
    return path


def make_bomb_png(folder: Path, side: int = 100_000) -> Path:
    """A ~1 KB PNG whose header claims ``side`` x ``side`` pixels (10 gigapixels by default).

    Its IDAT holds only a few rows, so a decoder that trusted the header would allocate 30 GB
    before noticing the data ends.
    """
    rows = b"".join(b"\0" + bytes(3 * side) for _ in range(4))
    return write_png(folder / "bomb.png", side, side, 8, 2, zlib.compress(rows, 9))


def write_png(
    path: Path,
    width: int,
    height: int,
    depth: int,
    colour_type: int,
    idat: bytes,
    interlace: bool = False,
) -> Path:
    """A PNG from its header fields and compressed pixel stream, chunk by chunk from the spec."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload)
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, int(interlace))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


def missing_path(folder: Path) -> Path:
    """A path that does not exist."""
    return folder / "no_such_photo.jpg"


def output_under_a_file(folder: Path) -> Path:
    """An output path whose folder is a regular file: unwritable even for root."""
    blocker = folder / "not_a_folder"
    blocker.write_text("a file, not a folder\n")
    return blocker / "out.png"


def output_in_missing_folder(folder: Path) -> Path:
    return folder / "missing_folder" / "out.png"


def make_symlink(target: Path, folder: Path, name: str = "link.jpg") -> Path:
    """A symlink in ``folder`` pointing at ``target``."""
    link = folder / name
    link.symlink_to(target)
    return link
