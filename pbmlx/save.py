"""Save: write an edited photo atomically, beside or away from its input, never over it.

:func:`write_image` contract:

* The format comes from the output's extension: .jpg/.jpeg, .png, .tif/.tiff, .webp, and
  .heic/.heif when pillow-heif is installed; anything else is refused.
* Float samples are quantised with rounding: ``q = round(clip(x, 0, 1) * M)``, M = 255, or
  65535 when the input was 16-bit and the output is PNG or TIFF (then written 16-bit).
* JPEG output follows a JPEG input: its own quantisation tables (slots 0 and 1: luma,
  chroma), so the same quality, and its chroma subsampling. ``quality=Q`` (1-100; ``pbmlx
  edit --quality``) replaces the tables by the IJG tables for Q (the input's subsampling
  stays). Other inputs: quality 90 with 4:2:0 chroma (DEFAULT_JPEG_QUALITY,
  DEFAULT_JPEG_SUBSAMPLING), about a camera's "fine" setting. A grey JPEG whose edit added
  colour gets the IJG chroma table at its estimated quality
  (:func:`pbmlx.load.estimate_jpeg_quality`). WebP and HEIF are written at quality 95, or
  ``quality``; PNG and TIFF are lossless and ignore it.
* EXIF (orientation 1: the pixels are upright), the ICC profile and the resolution are kept.
* XMP is kept in JPEG (one APP1 segment: up to 65,504 bytes; PIL writes no extended XMP, so
  a longer packet is dropped), PNG (iTXt ``XML:com.adobe.xmp``), TIFF (tag 700), WebP and HEIF.
  PNG text chunks (tEXt/zTXt/iTXt: Author, Comment, ...) are written to PNG output only, as
  tEXt when Latin-1 (else iTXt), compressed when over PNG_TEXT_ZIP_CHARS characters; the other
  formats have no such chunks, so there they are dropped.
* Alpha is written where the format has it (PNG, TIFF, WebP, HEIF). JPEG has none, so a photo
  with transparency is flattened onto white, ``rgb * a + (1 - a)``, what image editors do when
  exporting to JPEG; a user who wants the transparency picks .png.
* Whatever the output format made pbmlx drop or change (transparency flattened, PNG text or
  XMP dropped) is said in a one-line notice, logged at WARNING on the ``pbmlx.save`` logger
  once the file is written (``pbmlx`` prints it as ``pbmlx: note: ...`` on stderr; with no
  logging set up, Python prints the bare line on stderr).
* A grey input whose edit is still grey (R == G == B after quantising) is written grey.
* The file appears whole or not at all: the bytes are written to a temporary file in the output
  folder, synced to disk, then renamed over the destination; any failure removes the temporary
  file. The input itself (also through a symlink, a hard link or another spelling of its path)
  is never written, and an existing file is replaced only with ``overwrite=True``.

numpy and PIL only (no MLX), so importing this module is cheap.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import struct
import tempfile
import zlib
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin, TiffImagePlugin, TiffTags

from pbmlx.errors import PbmlxError
from pbmlx.load import XMP_TAG, Photo, ensure_heif_support, ijg_quant_tables
from pbmlx.pixels import as_unit, unit_to_codes

WRITE_FORMATS = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
    ".heic": "HEIF",
    ".heif": "HEIF",
}
DEFAULT_OUTPUT_SUFFIX = ".png"  # for inputs pbmlx reads but does not write (.gif, .bmp)
# JPEG output of a non-JPEG input (a JPEG input's own tables and subsampling are kept).
DEFAULT_JPEG_QUALITY = 90
DEFAULT_JPEG_SUBSAMPLING = "4:2:0"
JPEG_XMP_MAX_BYTES = 65504  # one APP1 segment: 65533 data bytes less the 29-byte XMP header
PNG_TEXT_ZIP_CHARS = 1024  # longer PNG text values are written compressed (zTXt / iTXt)
WEBP_QUALITY = 95
HEIF_QUALITY = 95
ZLIB_LEVEL = 6  # PNG/TIFF deflate: zlib's default trade of size against time
PNG_FILTER_BLOCK_BYTES = 1 << 21  # rows filtered together by the 16-bit PNG writer
TIFF_STRIP_BYTES = 1 << 20  # uncompressed bytes per strip of the TIFF writer

_FROM_PHOTO = object()  # write_image's default alpha: the photo's own
_log = logging.getLogger(__name__)


def default_output_path(input_path: str | Path) -> Path:
    """The output beside the input: ``<stem>.edited.<ext>`` when pbmlx writes the input's
    extension (``cat.jpg`` -> ``cat.edited.jpg``, ``IMG.JPEG`` -> ``IMG.edited.JPEG``), else the
    whole name plus ``.edited.png`` (``cat.gif`` -> ``cat.gif.edited.png``, ``cat.bmp`` ->
    ``cat.bmp.edited.png``, ``scan`` -> ``scan.edited.png``).

    Inputs that differ in extension only get different outputs, so editing ``cat.gif`` and
    ``cat.bmp`` (or ``cat.png``) makes two files. The one overlap left, ``scan`` and
    ``scan.png``, is refused by check_output_path's no-overwrite rule, never clobbered.
    """
    path = Path(input_path)
    if path.suffix.lower() in WRITE_FORMATS:
        return path.with_name(f"{path.stem}.edited{path.suffix}")
    return path.with_name(f"{path.name}.edited{DEFAULT_OUTPUT_SUFFIX}")


def write_image(
    photo: Photo,
    rgb: np.ndarray,
    out_path: str | Path,
    *,
    overwrite: bool = False,
    alpha: np.ndarray | object | None = _FROM_PHOTO,
    quality: int | None = None,
) -> Path:
    """Write ``rgb`` (float (H, W, 3) in [0, 1], or its 8-bit codes as uint8) to ``out_path``
    with ``photo``'s metadata.

    ``alpha``: float (H, W) in [0, 1], ``None`` for none; by default ``photo.alpha`` (resized
    bilinearly if the edit changed the size). ``quality``: 1-100 for JPEG, WebP and HEIF
    output, ``None`` for the input's (JPEG) or the defaults. Returns the path written. See the
    module docstring for the contract; user errors (a bad ``quality`` included) raise
    PbmlxError, misshapen arrays ValueError.
    """
    check_quality(quality)
    out = check_output_path(out_path, photo.path, overwrite=overwrite)
    rgb, alpha_arr = _checked_arrays(photo, rgb, alpha)
    notes: list[str] = []
    data = _encode(photo, rgb, alpha_arr, WRITE_FORMATS[out.suffix.lower()], quality, notes)
    _write_atomically(data, out, overwrite)
    for note in notes:  # only now: a failed write reports its error alone
        _log.warning("%s: %s", out.name, note)
    return out


def check_quality(quality: object) -> None:
    """Raise PbmlxError unless ``quality`` is None or a whole number from 1 to 100."""
    if quality is not None and (
        isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100
    ):
        raise PbmlxError(f"The quality must be a whole number from 1 to 100, got {quality!r}.")


def check_output_path(
    out_path: str | Path, input_path: str | Path, *, overwrite: bool = False
) -> Path:
    """Raise the PbmlxError that writing to ``out_path`` would raise, before any work is done.

    Refused: an extension pbmlx does not write (or HEIC without pillow-heif), a missing or
    non-folder parent, a folder as output, the input file itself (any spelling, symlink or hard
    link, even with ``overwrite``), and an existing file without ``overwrite``. An unwritable
    folder shows only when the file is created.
    """
    out = Path(out_path)
    fmt = WRITE_FORMATS.get(out.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(set(WRITE_FORMATS)))
        raise PbmlxError(
            f"Cannot write {out}: pbmlx does not know the extension {out.suffix or '(none)'!r} "
            f"(it writes {known})."
        )
    if fmt == "HEIF":
        ensure_heif_support(out)
    folder = out.parent
    try:
        if not folder.is_dir():
            why = "is not a folder" if folder.exists() else "does not exist"
            raise PbmlxError(f"Cannot write {out}: the output folder {folder} {why}.")
    except OSError as e:  # e.g. permission denied on a folder above it
        raise PbmlxError(f"Cannot write {out}: the output folder {folder} cannot be used.") from e
    if _is_same_file(out, Path(input_path)):
        raise PbmlxError(
            f"Refusing to write over the input {input_path}: choose another output path."
        )
    if out.is_dir():
        raise PbmlxError(f"Cannot write {out}: it is a folder.")
    if os.path.lexists(out) and not overwrite:
        raise _already_exists(out)
    return out


def _already_exists(out: Path) -> PbmlxError:
    return PbmlxError(
        f"{out} already exists: pass --overwrite (overwrite=True in Python) to replace it."
    )


# --- checks --------------------------------------------------------------------------------------


def _checked_arrays(
    photo: Photo, rgb: np.ndarray, alpha: np.ndarray | object | None
) -> tuple[np.ndarray, np.ndarray | None]:
    rgb = np.asarray(rgb)
    codes = rgb.dtype == np.uint8
    if rgb.ndim != 3 or rgb.shape[2] != 3 or not (codes or np.issubdtype(rgb.dtype, np.floating)):
        raise ValueError(
            f"rgb must be a float or uint8 (H, W, 3) array, got {rgb.dtype} {rgb.shape}"
        )
    if not codes and not np.isfinite(rgb).all():
        raise ValueError("rgb holds NaN or infinite values")
    if alpha is _FROM_PHOTO:
        alpha = photo.alpha
        if alpha is not None and alpha.shape != rgb.shape[:2]:
            height, width = rgb.shape[:2]
            resized = Image.fromarray(alpha.astype(np.float32)).resize((width, height))
            alpha = np.asarray(resized)
    if alpha is None:
        return rgb, None
    alpha = np.asarray(alpha)
    if alpha.shape != rgb.shape[:2] or not np.isfinite(alpha).all():
        raise ValueError(f"alpha must be finite with shape {rgb.shape[:2]}, got {alpha.shape}")
    return rgb, alpha


def _is_same_file(a: Path, b: Path) -> bool:
    """True if a and b name one file: through symlinks, hard links and any path spelling."""
    with suppress(OSError):  # one of them does not exist: compare their resolved paths
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


# --- encoding ------------------------------------------------------------------------------------


def _encode(
    photo: Photo,
    rgb: np.ndarray,
    alpha: np.ndarray | None,
    fmt: str,
    quality: int | None = None,
    notes: list[str] | None = None,
) -> bytes:
    """The output file's bytes; what the format made us drop or change is appended to
    ``notes``."""
    notes = [] if notes is None else notes
    if fmt == "JPEG" and alpha is not None:
        if (alpha < 1).any():  # flatten onto white (JPEG has no alpha)
            rgb = as_unit(rgb) if rgb.dtype == np.uint8 else rgb
            a = alpha[..., None]
            rgb = rgb * a + (1.0 - a)
            notes.append(
                "JPEG has no transparency: the transparent parts were flattened onto white "
                "(write .png, .tif or .webp to keep them)."
            )
        alpha = None
    xmp = photo.xmp
    if xmp is not None and fmt == "JPEG" and len(xmp) > JPEG_XMP_MAX_BYTES:
        notes.append(
            f"the XMP metadata ({len(xmp):,} bytes) was dropped: a JPEG holds at most "
            f"{JPEG_XMP_MAX_BYTES:,} bytes of it in one segment."
        )
        xmp = None
    if photo.text and fmt != "PNG":
        keys = ", ".join(sorted(photo.text))
        notes.append(f"the input's PNG text ({keys}) was dropped: only PNG output holds it.")
    sixteen = photo.bit_depth == 16 and fmt in ("PNG", "TIFF")
    maxval = 65535 if sixteen else 255
    samples = unit_to_codes(rgb, maxval)  # rint(clip(x, 0, 1) * maxval); codes stay codes
    gray = (
        photo.gray
        and not (sixteen and fmt == "TIFF" and alpha is not None)  # PIL can't read that back
        and np.array_equal(samples[..., 0], samples[..., 1])
        and np.array_equal(samples[..., 0], samples[..., 2])
    )
    if gray:
        samples = samples[..., :1]
    if alpha is not None:
        samples = np.concatenate([samples, unit_to_codes(alpha, maxval)[..., None]], axis=-1)
    icc = photo.icc_profile
    if icc is not None and icc[16:20] != (b"GRAY" if gray else b"RGB "):
        icc = None  # e.g. a grey input's GRAY profile cannot describe colour output
    png_chunks = _png_text_chunks(photo.text, xmp) if fmt == "PNG" else []
    if fmt == "TIFF":  # PIL writes neither 16-bit colour TIFF nor EXIF sub-IFDs with deflate
        return _tiff(samples, icc=icc, exif=photo.exif, dpi=photo.dpi, xmp=xmp)
    if sixteen:
        return _png16(samples, icc=icc, exif=photo.exif, dpi=photo.dpi, chunks=png_chunks)

    im = Image.fromarray(samples[..., 0] if samples.shape[-1] == 1 else samples)
    options: dict[str, object] = {}
    if icc is not None:
        options["icc_profile"] = icc
    if photo.exif is not None:
        options["exif"] = photo.exif
    if photo.dpi is not None and fmt in ("JPEG", "PNG", "TIFF"):
        options["dpi"] = photo.dpi
    if xmp is not None and fmt != "PNG":  # PNG's goes in png_chunks
        options["xmp"] = xmp
    if fmt == "JPEG":
        options.update(_jpeg_options(photo, quality, colour=samples.shape[-1] != 1))
    elif fmt == "PNG":
        options.update(compress_level=ZLIB_LEVEL)
        if png_chunks:
            info = PngImagePlugin.PngInfo()
            for kind, chunk in png_chunks:
                info.add(kind, chunk)
            options["pnginfo"] = info
    elif fmt == "WEBP":  # exact: keep colour under alpha = 0
        options.update(quality=quality or WEBP_QUALITY, exact=True)
    elif fmt == "HEIF":
        options.update(quality=quality or HEIF_QUALITY)
    buffer = io.BytesIO()
    im.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _jpeg_options(photo: Photo, quality: int | None, *, colour: bool) -> dict[str, object]:
    """PIL's JPEG save options: the rule in the module docstring."""
    subsampling = photo.jpeg_subsampling or DEFAULT_JPEG_SUBSAMPLING
    tables = photo.jpeg_qtables
    if quality is not None or tables is None:
        return {"quality": quality or DEFAULT_JPEG_QUALITY, "subsampling": subsampling}
    if colour and len(tables) == 1 and photo.jpeg_quality is not None:
        tables = (tables[0], ijg_quant_tables(photo.jpeg_quality)[1])
    # Without `quality`, PIL writes the tables as given (with it, libjpeg would rescale them).
    return {"qtables": [list(t) for t in tables], "subsampling": subsampling}


def _png_text_chunks(text: dict[str, str], xmp: bytes | None) -> list[tuple[bytes, bytes]]:
    """(chunk type, data) for PNG text and XMP, as PIL's PngInfo encodes them."""
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        # add_text keeps an iTXt value's language and translated key, and writes other text as
        # tEXt (zTXt when compressed) if Latin-1 can hold it, else as iTXt.
        info.add_text(key, value, zip=len(value) > PNG_TEXT_ZIP_CHARS)
    if xmp is not None:
        info.add_itxt("XML:com.adobe.xmp", xmp)  # uncompressed, as the XMP spec asks for PNG
    return [(chunk[0], chunk[1]) for chunk in info.chunks]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png16(
    samples: np.ndarray,
    *,
    icc: bytes | None,
    exif: bytes | None,
    dpi: tuple[float, float] | None,
    chunks: Sequence[tuple[bytes, bytes]] = (),
) -> bytes:
    """A 16-bit PNG (grey, grey+alpha, RGB or RGBA by channel count); PIL writes 16-bit grey only.

    ``chunks``: more (type, data) chunks, e.g. text, written before the pixels.

    Each row gets the PNG filter (None, Sub, Up, Average, Paeth) whose residuals have the
    smallest sum of absolute values as signed bytes, the heuristic the PNG spec recommends.
    """
    height, width, channels = samples.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = samples.astype(">u2").view(np.uint8).reshape(height, width * channels * 2)
    bpp = channels * 2  # bytes per pixel: the filters' "left" neighbour distance
    block = max(1, PNG_FILTER_BLOCK_BYTES // rows.shape[1])
    compressor = zlib.compressobj(ZLIB_LEVEL)
    compressed = []
    above = np.zeros(rows.shape[1], np.int16)
    for start in range(0, height, block):
        x = rows[start : start + block].astype(np.int16)  # (n, L)
        b = np.vstack([above[None], x[:-1]])  # the row above each row
        a = np.zeros_like(x)
        a[:, bpp:] = x[:, :-bpp]
        c = np.zeros_like(x)
        c[:, bpp:] = b[:, :-bpp]
        pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        residuals = np.stack([x, x - a, x - b, x - (a + b) // 2, x - paeth]).astype(np.uint8)
        cost = np.stack([np.abs(r.view(np.int8), dtype=np.int16).sum(axis=1) for r in residuals])
        choice = cost.argmin(axis=0)  # (n,): the cheapest filter of each row
        filtered = np.empty((x.shape[0], rows.shape[1] + 1), np.uint8)
        filtered[:, 0] = choice
        filtered[:, 1:] = residuals[choice, np.arange(x.shape[0])]
        compressed.append(compressor.compress(filtered.tobytes()))
        above = x[-1]
    compressed.append(compressor.flush())
    stream = b"".join(compressed)

    parts = [
        b"\x89PNG\r\n\x1a\n",
        _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)),
    ]
    if icc is not None:
        parts.append(_png_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(icc)))
    if dpi is not None:  # pHYs: pixels per metre
        ppm = (round(dpi[0] / 0.0254), round(dpi[1] / 0.0254))
        parts.append(_png_chunk(b"pHYs", struct.pack(">IIB", *ppm, 1)))
    if exif is not None:
        parts.append(_png_chunk(b"eXIf", exif.removeprefix(b"Exif\0\0")))
    parts += [_png_chunk(kind, data) for kind, data in chunks]
    step = 1 << 20
    parts += [_png_chunk(b"IDAT", stream[i : i + step]) for i in range(0, len(stream), step)]
    parts.append(_png_chunk(b"IEND", b""))
    return b"".join(parts)


def _tiff(
    samples: np.ndarray,
    *,
    icc: bytes | None,
    exif: bytes | None,
    dpi: tuple[float, float] | None,
    xmp: bytes | None = None,
) -> bytes:
    """An 8- or 16-bit little-endian TIFF (by dtype), deflate with the horizontal predictor.

    Layout: header, IFD0 (EXIF's IFD0 tags, its Exif/GPS sub-IFDs, then the image's tags),
    then the strips. PIL's IFD writer takes strip offsets relative to the end of the IFD.
    """
    height, width, channels = samples.shape
    ifd = TiffImagePlugin.ImageFileDirectory_v2()
    if exif is not None:
        tags = Image.Exif()
        tags.load(exif)
        for tag in tags:
            ifd[tag] = tags.get_ifd(tag) if tag in TiffTags.TAGS_V2_GROUPS else tags[tag]
    itemsize = samples.dtype.itemsize
    rows_per_strip = max(1, TIFF_STRIP_BYTES // (width * channels * itemsize))
    strips = []
    for start in range(0, height, rows_per_strip):
        rows = samples[start : start + rows_per_strip]
        predicted = rows.copy()
        predicted[:, 1:] -= rows[:, :-1]  # horizontal differencing, modulo 2**bits
        strips.append(zlib.compress(predicted.astype(f"<u{itemsize}").tobytes(), ZLIB_LEVEL))
    ifd[256] = width  # ImageWidth
    ifd[257] = height  # ImageLength
    ifd[258] = (8 * itemsize,) * channels  # BitsPerSample
    ifd[259] = 8  # Compression: Adobe deflate
    ifd[262] = 1 if channels <= 2 else 2  # Photometric: min-is-black grey, or RGB
    ifd[273] = tuple(np.cumsum([0] + [len(s) for s in strips[:-1]]).tolist())  # StripOffsets
    ifd[277] = channels  # SamplesPerPixel
    ifd[278] = rows_per_strip  # RowsPerStrip
    ifd[279] = tuple(len(s) for s in strips)  # StripByteCounts
    ifd[284] = 1  # PlanarConfiguration: interleaved
    ifd[317] = 2  # Predictor: horizontal differencing
    ifd[339] = (1,) * channels  # SampleFormat: unsigned integer
    if channels in (2, 4):
        ifd[338] = 2  # ExtraSamples: unassociated (straight) alpha
    if dpi is not None:
        ifd[282], ifd[283], ifd[296] = dpi[0], dpi[1], 2  # X/YResolution, unit inch
    if icc is not None:
        ifd[34675] = icc  # ICC profile
    if xmp is not None:
        ifd[XMP_TAG] = xmp
    header = b"II*\x00" + struct.pack("<I", 8)
    return header + ifd.tobytes(offset=len(header)) + b"".join(strips)


# --- writing -------------------------------------------------------------------------------------


def _write_atomically(data: bytes, out: Path, overwrite: bool) -> None:
    """Write ``data`` to a temporary file beside ``out``, fsync it, then rename it to ``out``.

    Without ``overwrite`` the rename is a hard link, which fails instead of replacing a file
    that appeared since the check (falling back to a checked rename where links are missing).
    """
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    except OSError as e:
        raise PbmlxError(
            f"Cannot write {out}: the folder {out.parent} is not writable ({e.strerror or e})."
        ) from e
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; give it a normal file's mode
        if overwrite:
            os.replace(tmp, out)
        else:
            try:
                os.link(tmp, out)
            except FileExistsError as e:
                raise _already_exists(out) from e
            except OSError:  # a filesystem without hard links
                if os.path.lexists(out):
                    raise _already_exists(out) from None
                os.replace(tmp, out)
            else:
                tmp.unlink()
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise PbmlxError(f"Could not write {out}: {e.strerror or e}.") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(out.parent)


def _umask() -> int:
    # The only portable way to read the umask is to set it; set it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    with suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def publish_folder(work: Path, out: Path) -> None:
    """Put a finished work folder (written beside ``out``, same file system) at ``out``: one
    rename, so a reader sees the old folder or the whole new one, never a partial one. An
    existing ``out`` (the caller has already allowed replacing it) is moved aside into a fresh
    hidden folder first and deleted after the rename."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old / out.name)
    os.replace(work, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
