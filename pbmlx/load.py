"""Load: read a photo file into upright float RGB, with the metadata that save puts back.

:func:`read_image` is the one way pbmlx reads a photo. Its contract:

* ``Photo.rgb`` is float32 ``(H, W, 3)`` in [0, 1]: the file's integer code values divided by
  their maximum (255, or 65535 for 16-bit files), so ``round(rgb * 255)`` gives back the 8-bit
  values exactly. For 8-bit colour files ``Photo.codes`` holds those code values (uint8) and
  ``rgb`` is made from them on first use, so an edit that works on the codes (the adjust
  kernels read 8-bit codes) never holds the 4x larger float copy. Values stay encoded in the colour space of ``Photo.icc_profile`` (sRGB when it
  is ``None``); only CMYK is converted (to sRGB, through its embedded profile when it has one).
* ``Photo.alpha`` is float32 ``(H, W)`` in [0, 1], or ``None`` when the file has no transparency.
* Pixels are upright: the EXIF orientation is applied, and ``Photo.exif`` carries orientation 1.
* Refused with a one-sentence :class:`~pbmlx.errors.PbmlxError` naming the file: a missing path,
  a folder, an empty file, anything that is not an image pbmlx reads, truncated or corrupt data,
  more than ``max_pixels`` pixels (checked from the header, before decoding), and images with
  more than one frame (animated GIF/WebP/PNG, multi-page TIFF). MPO (a JPEG with extra preview
  pictures, as many cameras write) and HEIF give their first, main picture.
* What save needs to respect the file: a JPEG's quantisation tables (``Photo.jpeg_qtables``),
  their estimated quality (``Photo.jpeg_quality``, the IJG quality whose tables are closest,
  see :func:`estimate_jpeg_quality`) and its chroma subsampling (``Photo.jpeg_subsampling``);
  a PNG's text chunks (``Photo.text``); XMP in any format that has it (``Photo.xmp``).
* The input is opened read-only and never modified.

numpy and PIL only (no MLX), so importing this module is cheap.
"""

from __future__ import annotations

import io
import stat
import struct
import sys
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageFile, JpegImagePlugin, UnidentifiedImageError

from pbmlx.errors import PbmlxError
from pbmlx.pixels import codes_to_unit

DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP: above every current camera but the largest backs
HEIC_INSTALL_HINT = 'pip install "pbmlx[heic]"'
HEIF_SUFFIXES = frozenset({".heic", ".heif", ".hif"})
# Formats pbmlx opens. A whitelist, so PIL never hands a file to a decoder we do not mean to
# use (EPS, for one, runs Ghostscript). "JPEG" also opens MPO files.
READ_FORMATS = ("JPEG", "PNG", "TIFF", "WEBP", "GIF", "BMP")
# ISO-BMFF brands of HEIF still images (bytes 8..12 of the file, after "ftyp").
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})

ORIENTATION = 0x0112
XMP_TAG = 700  # TIFF's XMLPacket
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N"})
# TIFF tags that describe a TIFF file's own pixel layout. PIL's getexif() on a TIFF returns them
# with the descriptive tags; written into another file's EXIF they would describe nothing.
_TIFF_LAYOUT_TAGS = frozenset(
    {254, 255, 256, 257, 258, 259, 262, 266, 273, 277, 278, 279, 284, 317, 320, 322, 323, 324,
     325, 330, 338, 339, 347, 530, 531, 532, 34377, 34675, 37724}
)  # fmt: skip
# PNG text keys not kept in Photo.text: the XMP packet (kept as Photo.xmp) and ImageMagick's copies
# of EXIF and XMP, which pbmlx writes in their own chunks (an old EXIF copy would still hold the
# file's orientation, which the upright pixels no longer need).
_PNG_TEXT_CARRIED_ELSEWHERE = frozenset(
    {"XML:com.adobe.xmp", "Raw profile type exif", "Raw profile type APP1", "Raw profile type xmp"}
)
# JPEG chroma subsampling as PIL's JpegImagePlugin.get_sampling numbers it.
_SUBSAMPLING_NAMES = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}
# ITU-T T.81 Annex K: the example luminance (K.1) and chrominance (K.2) quantisation tables that
# the IJG library (libjpeg, libjpeg-turbo, so PIL and most software) scales by its quality
# setting; natural (row-major) order, as PIL's `quantization` gives them.
_ANNEX_K_LUMA = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
_ANNEX_K_CHROMA = (
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
    *(99,) * 32,
)  # fmt: skip
# Exceptions PIL's decoders raise on damaged data (besides UnidentifiedImageError, an OSError).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error, zlib.error)


@dataclass(eq=False)
class Photo:
    """A decoded photo: upright pixels plus what :func:`pbmlx.save.write_image` needs to put back."""

    float_rgb: np.ndarray | None  # float32 (H, W, 3) in [0, 1]; None until `rgb` makes it
    alpha: np.ndarray | None  # float32 (H, W) in [0, 1]; None when the file has no transparency
    exif: bytes | None  # "Exif\0\0" + TIFF structure, orientation set to 1
    icc_profile: bytes | None  # an RGB profile, or a GRAY one when `gray` is True
    format: str  # PIL format name: "JPEG", "PNG", "TIFF", "WEBP", "HEIF", "GIF", "BMP"
    bit_depth: int  # 8 or 16: bits per channel of the file's samples
    path: Path
    mode: str = "RGB"  # PIL mode of the file as opened ("L", "P", "CMYK", "I;16", ...)
    gray: bool = False  # the file stores a single grey channel (save keeps it grey if it still is)
    dpi: tuple[float, float] | None = None  # (x, y) in the upright orientation
    codes: np.ndarray | None = None  # uint8 (H, W, 3) samples of an 8-bit colour file
    # JPEG input only: the estimated IJG quality (1-100; estimate_jpeg_quality), the chroma
    # subsampling ("4:4:4", "4:2:2", "4:2:0"; None for grey, CMYK or another layout) and the
    # quantisation tables of slots 0 and 1 (luma, chroma; natural order; one for a grey file).
    jpeg_quality: int | None = None
    jpeg_subsampling: str | None = None
    jpeg_qtables: tuple[tuple[int, ...], ...] | None = None
    text: dict[str, str] = field(default_factory=dict)  # PNG tEXt/zTXt/iTXt: key -> text
    xmp: bytes | None = None  # the XMP packet (JPEG APP1, PNG iTXt, TIFF tag 700, WebP, HEIF)

    @property
    def rgb(self) -> np.ndarray:
        """float32 (H, W, 3) in [0, 1], encoded in icc_profile's space (sRGB if None)."""
        if self.float_rgb is None:
            assert self.codes is not None
            self.float_rgb = codes_to_unit(self.codes)
        return self.float_rgb

    @property
    def height(self) -> int:
        return (self.codes if self.codes is not None else self.rgb).shape[0]

    @property
    def width(self) -> int:
        return (self.codes if self.codes is not None else self.rgb).shape[1]


def read_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Photo:
    """Read the photo at ``path`` (see the module docstring for the contract).

    Raises PbmlxError for anything wrong with the file; ``max_pixels`` bounds width * height.
    """
    path = Path(path)
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise PbmlxError(f"The pixel limit must be a positive whole number, got {max_pixels!r}.")
    _check_regular_file(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 -- closed by the `with f` below
    except OSError as e:
        raise PbmlxError(f"{path} cannot be read: {e.strerror or e}.") from e
    with f:
        formats = list(READ_FORMATS)
        if _looks_like_heif(path, f.read(16)):
            ensure_heif_support(path)
            formats.append("HEIF")
        with _strict_pil():
            return _decode(f, path, formats, max_pixels)


def ijg_quant_tables(quality: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The (luminance, chrominance) tables the IJG library makes for ``quality`` (1-100).

    libjpeg's rule (jpeg_quality_scaling, jpeg_add_quant_table with force_baseline, as PIL
    calls it): scale = 5000 // q below 50, else 200 - 2q; entry = (base * scale + 50) // 100,
    clipped to [1, 255]; base: Annex K's tables.
    """
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return tuple(
        tuple(min(max((b * scale + 50) // 100, 1), 255) for b in base)
        for base in (_ANNEX_K_LUMA, _ANNEX_K_CHROMA)
    )  # type: ignore[return-value]


def _all_ijg_log_tables() -> np.ndarray:
    """(100, 2, 64): log of every quality's (luma, chroma) tables, quality 1 first."""
    return np.log([ijg_quant_tables(q) for q in range(1, 101)])


_IJG_LOG_TABLES = _all_ijg_log_tables()


def estimate_jpeg_quality(tables: dict[int, list[int]]) -> int | None:
    """The IJG quality (1-100) whose tables are closest to a JPEG's quantisation ``tables``.

    ``tables``: PIL's ``im.quantization`` ({slot: 64 entries in natural order}); slot 0 is
    compared with the luminance table and slot 1 (when present) with the chrominance table.
    Distance: the sum over entries of |ln(file's) - ln(IJG's)|, so each entry's relative error
    counts alike, the small low-frequency steps that matter most as much as the large ones.
    The smallest distance wins; a tie goes to the higher quality. Tables written by the IJG
    library at quality q give q exactly (distance 0); other encoders' tables give the nearest
    IJG quality. None when there is no usable table (no slot 0, or not 64 entries in
    1..65535).
    """
    usable = _usable_qtables(tables)
    if usable is None:
        return None
    wanted = np.log(np.asarray(usable, dtype=np.float64))
    distance = np.abs(_IJG_LOG_TABLES[:, : len(wanted)] - wanted).sum(axis=(1, 2))
    # argmin takes the first of equal minima: search from quality 100 down, so ties go higher.
    return 100 - int(np.argmin(distance[::-1]))


def _usable_qtables(tables: dict[int, list[int]]) -> tuple[tuple[int, ...], ...] | None:
    """Slots 0 and 1 (or 0 alone) of ``tables`` if each is 64 entries in 1..65535, else None."""
    usable = []
    for slot in (0, 1):
        table = tables.get(slot)
        if table is None:
            break
        entries = tuple(int(v) for v in table)
        if len(entries) != 64 or not all(1 <= v <= 65535 for v in entries):
            return None
        usable.append(entries)
    return tuple(usable) or None


def ensure_heif_support(path: Path) -> None:
    """Register pillow-heif's HEIF opener and saver with PIL, or explain how to get it."""
    try:
        import pillow_heif
    except ImportError as e:
        raise PbmlxError(
            f"{path} is HEIC/HEIF, which needs the pillow-heif package: run {HEIC_INSTALL_HINT}."
        ) from e
    if "HEIF" not in Image.OPEN:
        pillow_heif.register_heif_opener()


# --- checks before decoding ---------------------------------------------------------------------


def _check_regular_file(path: Path) -> None:
    try:
        st = path.stat()
    except FileNotFoundError as e:
        raise PbmlxError(f"{path} does not exist.") from e
    except OSError as e:  # permission denied on a parent folder, a path through a file, ...
        raise PbmlxError(f"{path} cannot be read: {e.strerror or e}.") from e
    if stat.S_ISDIR(st.st_mode):
        raise PbmlxError(f"{path} is a folder, not an image file.")
    if not stat.S_ISREG(st.st_mode):  # opening a FIFO or a device could block or never end
        raise PbmlxError(f"{path} is not a regular file.")
    if st.st_size == 0:
        raise PbmlxError(f"{path} is empty (0 bytes).")


def _looks_like_heif(path: Path, head: bytes) -> bool:
    return path.suffix.lower() in HEIF_SUFFIXES or (
        head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS
    )


# PIL keeps two process-wide settings that decide what read_image must guarantee itself:
# MAX_IMAGE_PIXELS (its own bomb limit, which would override max_pixels both ways) and
# LOAD_TRUNCATED_IMAGES (if some other code set it, PIL would silently pad truncated files).
# While any read_image runs they are held at None / False; the counter lets reads overlap and
# restores the caller's values when the last one ends.
_pil_lock = threading.Lock()
_pil_users = 0
_pil_saved: tuple[int | None, bool] = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)


@contextmanager
def _strict_pil() -> Iterator[None]:
    global _pil_users, _pil_saved
    with _pil_lock:
        if _pil_users == 0:
            _pil_saved = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
            Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = None, False
        _pil_users += 1
    try:
        yield
    finally:
        with _pil_lock:
            _pil_users -= 1
            if _pil_users == 0:
                Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = _pil_saved


# --- decoding ------------------------------------------------------------------------------------


def _open(f: io.BufferedReader, path: Path, formats: list[str]) -> ImageFile.ImageFile:
    f.seek(0)
    try:
        return Image.open(f, formats=formats)
    except UnidentifiedImageError as e:
        raise PbmlxError(
            f"{path} is not an image pbmlx can read (it reads JPEG, PNG, TIFF, WebP, HEIC, "
            "GIF and BMP)."
        ) from e
    except _DECODE_ERRORS as e:
        raise PbmlxError(f"{path} is damaged and could not be decoded ({e}).") from e


def _decode(f: io.BufferedReader, path: Path, formats: list[str], max_pixels: int) -> Photo:
    with _open(f, path, formats) as im:
        width, height = im.size
        if width * height == 0:
            raise PbmlxError(f"{path} has no pixels ({width}x{height}).")
        if width * height > max_pixels:
            raise PbmlxError(
                f"{path} is {width}x{height} pixels ({width * height / 1e6:.1f} MP), more than "
                f"the limit of {max_pixels} pixels ({max_pixels / 1e6:g} MP); if you trust this "
                f"file, raise the limit with --max-pixels {width * height} "
                f"(max_pixels= in Python)."
            )
        fmt = "JPEG" if im.format == "MPO" else str(im.format)
        frames = 1 if fmt in ("JPEG", "HEIF") else _count_frames(im, path)
        if frames > 1:
            what = "a multi-page TIFF" if fmt == "TIFF" else f"an animated {fmt}"
            unit = "pages" if fmt == "TIFF" else "frames"
            raise PbmlxError(
                f"{path} is {what} with {frames} {unit}, and pbmlx edits single pictures: "
                "save the frame you want as a PNG or JPEG first."
            )
        mode = im.mode
        rawmode = _rawmode(im)
        _load(im, path)

        gray = mode in GRAY_MODES or rawmode.startswith("LA;16")
        icc = im.info.get("icc_profile") or None
        if mode == "CMYK":
            # The conversion puts the pixels in sRGB, so the CMYK profile no longer describes them.
            values, alpha, maxval, icc = _cmyk_to_srgb(im, icc), None, 255, None
        else:
            values, alpha, maxval = _pixels(im, f, path, rawmode)
        if icc is not None and icc[16:20] != (b"GRAY" if gray else b"RGB "):
            icc = None  # a profile for other data (e.g. GRAY on a palette image) would mislead

        exif, orientation = _upright_exif(im, fmt)
        qtables = _usable_qtables(getattr(im, "quantization", None) or {})
        jpeg_quality = estimate_jpeg_quality(dict(enumerate(qtables or ())))
        jpeg_subsampling = _SUBSAMPLING_NAMES.get(JpegImagePlugin.get_sampling(im))
        text = _png_text(im) if fmt == "PNG" else {}
        xmp = _xmp(im.info.get("xmp"))
        values = _orient(values, orientation)
        alpha = None if alpha is None else _orient(alpha, orientation)
        dpi = _dpi(im.info.get("dpi"), swap=orientation in (5, 6, 7, 8))

    # codes_to_unit divides (correctly rounded): the same float32 numbers as the kernels'
    # code / 255.
    codes = rgb = None
    if values.dtype == np.uint8 and values.ndim == 3:
        codes = np.ascontiguousarray(values)  # rgb is made from these when first asked for
    else:
        if values.ndim == 2:  # grey: one channel, shared by R, G and B
            values = values[..., None]
        rgb = np.empty((*values.shape[:2], 3), np.float32)
        codes_to_unit(values, maxval, out=rgb)  # broadcasts a grey channel to 3
    return Photo(
        float_rgb=rgb,
        codes=codes,
        alpha=None if alpha is None else codes_to_unit(alpha, maxval),
        exif=exif,
        icc_profile=icc,
        format=fmt,
        bit_depth=16 if maxval == 65535 else 8,
        path=path,
        mode=mode,
        gray=gray,
        dpi=dpi,
        jpeg_quality=jpeg_quality,
        jpeg_subsampling=jpeg_subsampling,
        jpeg_qtables=qtables,
        text=text,
        xmp=xmp,
    )


def _png_text(im: Image.Image) -> dict[str, str]:
    """A PNG's text chunks (iTXt values keep their language and translated key), read after
    load: chunks after the pixels count too."""
    text = getattr(im, "text", None) or {}
    return {k: v for k, v in text.items() if k not in _PNG_TEXT_CARRIED_ELSEWHERE}


def _xmp(value: object) -> bytes | None:
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, tuple):  # a TIFF BYTE tag PIL could not turn into bytes
        try:
            value = bytes(value)
        except (TypeError, ValueError):
            return None
    return value if isinstance(value, bytes) and value.strip(b"\0 \t\r\n") else None


def _load(im: Image.Image, path: Path) -> None:
    """Decode the pixels; PIL raises (never pads) on missing data inside _strict_pil."""
    try:
        im.load()
    except _DECODE_ERRORS as e:
        raise PbmlxError(f"{path} is truncated or corrupt and could not be decoded ({e}).") from e


def _count_frames(im: Image.Image, path: Path) -> int:
    try:
        return int(getattr(im, "n_frames", 1))
    except _DECODE_ERRORS as e:
        raise PbmlxError(f"{path} is damaged and could not be decoded ({e}).") from e


def _rawmode(im: Image.Image) -> str:
    """The layout PIL will decode the file's samples from, e.g. "RGB;16B" (before load)."""
    if not im.tile:
        return im.mode
    args = im.tile[0].args
    return args if isinstance(args, str) else str(args[0]) if args else im.mode


def _pixels(
    im: Image.Image, f: io.BufferedReader, path: Path, rawmode: str
) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Integer samples of the loaded image: (values (H, W, 3) or grey (H, W), alpha, max value)."""
    mode = im.mode
    if ";16" in rawmode and mode in ("RGB", "RGBA"):
        return _pixels_16bit(im, f, path, rawmode)
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(im)
        if mode == "I" and (values.min() < 0 or values.max() > 65535):
            raise PbmlxError(f"{path} holds 32-bit integer samples, which pbmlx does not edit.")
        values = values.astype(np.uint16)  # native byte order (I;16B arrives big-endian)
        return values, _key_alpha(values, im.info.get("transparency")), 65535
    if mode in ("1", "L"):
        values = np.asarray(im.convert("L"))
        return values, _key_alpha(values, im.info.get("transparency")), 255
    if mode in ("LA", "La"):
        values = np.asarray(im.convert("LA"))
        return values[..., 0], values[..., 1], 255
    if mode == "RGB":
        values = np.asarray(im)
        return values, _key_alpha(values, im.info.get("transparency")), 255
    if mode in ("RGBA", "RGBa", "PA") or (
        mode == "P" and ("transparency" in im.info or im.palette.mode == "RGBA")
    ):
        values = np.asarray(im.convert("RGBA"))
        return values[..., :3], values[..., 3], 255
    if mode in ("P", "RGBX", "YCbCr"):
        return np.asarray(im.convert("RGB")), None, 255
    raise PbmlxError(f"{path} stores pixels as {mode}, which pbmlx cannot convert to RGB.")


def _key_alpha(values: np.ndarray, key: object) -> np.ndarray | None:
    """Alpha from a PNG tRNS colour key: 0 where a pixel equals the key, opaque elsewhere.

    PIL gives the key in the file's own sample values (16-bit keys for 16-bit files).
    """
    if key is None or isinstance(key, bytes):  # bytes: a palette's alpha table, handled by PIL
        return None
    opaque = np.uint16(65535) if values.dtype == np.uint16 else np.uint8(255)
    match = values == key if values.ndim == 2 else np.all(values == np.asarray(key), axis=-1)
    return np.where(match, 0, opaque).astype(values.dtype)


def _pixels_16bit(
    im: Image.Image, f: io.BufferedReader, path: Path, rawmode: str
) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Full 16-bit samples of a 16-bit RGB(A) or grey+alpha PNG/TIFF.

    PIL has no 16-bit colour mode: it decodes these files to 8 bits by keeping each sample's
    high byte. Its decoders un-filter (PNG), decompress and un-predict (TIFF) per byte, before
    unpacking, so decoding the file a second time with the opposite byte order keeps each
    sample's low byte instead; value = high * 256 + low. Grey+alpha (PNG only, big-endian) has
    no such unpacker, so it is decoded once with a 4-byte RGBA layout that returns its raw
    bytes: (Yh, Yl, Ah, Al).
    """
    if rawmode.startswith("LA;16"):
        raw = _decode_again(f, path, im, "RGBA").astype(np.uint16)
        return raw[..., 0] << 8 | raw[..., 1], raw[..., 2] << 8 | raw[..., 3], 65535
    # "N" is the machine's byte order (libtiff hands samples over in it).
    flip = {"B": "L", "L": "B", "N": "B" if sys.byteorder == "little" else "L"}[rawmode[-1]]
    high = np.asarray(im).astype(np.uint16)
    low = _decode_again(f, path, im, rawmode[:-1] + flip)
    values = high << 8 | low
    if im.mode == "RGBA":
        return values[..., :3], values[..., 3], 65535
    return values, _key_alpha(values, im.info.get("transparency")), 65535


def _decode_again(f: io.BufferedReader, path: Path, first: Image.Image, rawmode: str) -> np.ndarray:
    """Decode the file once more with its tiles' sample layout replaced by ``rawmode``."""
    f.seek(0)
    with Image.open(f, formats=["JPEG" if first.format == "MPO" else str(first.format)]) as im:
        tiles = []
        for tile in im.tile:
            args = tile.args
            args = rawmode if isinstance(args, str) else (rawmode, *args[1:])
            tiles.append(tile._replace(args=args))
        im.tile = tiles
        _load(im, path)
        if im.size != first.size:
            raise PbmlxError(f"{path} decoded to two different sizes and may be corrupt.")
        return np.asarray(im)


def _cmyk_to_srgb(im: Image.Image, icc: bytes | None) -> np.ndarray:
    """CMYK -> 8-bit sRGB: through the file's ICC profile when it has a usable one.

    Without a profile PIL's naive formula applies: R = 255 - C - K (clipped), same for G, B.
    """
    if icc is not None and icc[16:20] == b"CMYK":
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
            converted = ImageCms.profileToProfile(
                im, source, srgb, renderingIntent=ImageCms.Intent.PERCEPTUAL, outputMode="RGB"
            )
            assert converted is not None  # inPlace=False always returns an image
            return np.asarray(converted)
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken embedded profile: the naive conversion is better than refusing
    return np.asarray(im.convert("RGB"))


def _upright_exif(im: Image.Image, fmt: str) -> tuple[bytes | None, int]:
    """The EXIF to keep (orientation set to 1) and the orientation the pixels still need.

    Read after load: PIL's TIFF loader rotates the pixels itself and drops the tag.
    """
    try:
        exif = im.getexif()
        orientation = exif.get(ORIENTATION, 1)
        if not len(exif):
            return None, 1
        if fmt == "TIFF":  # XMP too: it is carried as Photo.xmp, not inside EXIF
            for tag in (_TIFF_LAYOUT_TAGS | {XMP_TAG}) & set(exif):
                del exif[tag]
        exif[ORIENTATION] = 1
        data = exif.tobytes()
    except (*_DECODE_ERRORS, KeyError, TypeError):
        return None, 1  # unreadable EXIF: keep the pixels, lose the metadata (and its rotation)
    return data, orientation if orientation in range(1, 9) else 1


def _orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an (H, W, ...) array; the same maps as PIL's
    ImageOps.exif_transpose (6 = rotate 90 degrees clockwise, 8 = counter-clockwise)."""
    if orientation in (5, 6, 7, 8):
        a = a.swapaxes(0, 1)  # 5: transpose; then 6 = transpose + mirror, 8 = transpose + flip
        a = {5: a, 6: a[:, ::-1], 7: a[::-1, ::-1], 8: a[::-1]}[orientation]
    else:
        a = {1: a, 2: a[:, ::-1], 3: a[::-1, ::-1], 4: a[::-1]}[orientation]
    return np.ascontiguousarray(a)


def _dpi(dpi: object, *, swap: bool) -> tuple[float, float] | None:
    try:
        x, y = (float(v) for v in dpi)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    if not (x > 0 and y > 0):
        return None
    return (y, x) if swap else (x, y)
