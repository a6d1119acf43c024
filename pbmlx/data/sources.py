"""Finding a record's files on this machine: edited images under DATA, source photos by
``local_input_image``, by Open Images ImageID, or by their URL's name. Nothing is downloaded.

A reference (a record's path or URL value) gives candidate local paths, tried in order; the first
that is a readable image wins. A URL never names a local file by itself: its path's trailing parts
are looked up under a local folder (``https://host/a/b/images/x/1.png`` ->
``ROOT/host/a/b/images/x/1.png``, ``ROOT/a/b/images/x/1.png``, ..., ``ROOT/images/x/1.png``, and
for source photos also ``ROOT/1.png``). Edited images need at least two trailing parts (a folder
and a name): their bare names (``1.png``) repeat between ``positive-edit/`` and ``negative-edit/``,
so a bare name would be a guess. Source photos' names (Flickr ``<id>_<secret>_o.jpg``, Open
Images ``<ImageID>.jpg``) are unique, so their bare name is enough.

Source ids (what the train/validation split hashes, see :func:`source_key`): the Open Images
ImageID when known, else a key of the URL that ignores http/https, the Flickr host and size
suffix (``flickr:<photo id>``), else a key of the path as the record writes it.
"""

from __future__ import annotations

import csv
import functools
import os
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from PIL import Image

from pbmlx.errors import PbmlxError
from pbmlx.load import HEIF_SUFFIXES, READ_FORMATS

# Open Images' image metadata (ImageID, Subset, OriginalURL, ...): the train file is the one the
# dataset's mapping script reads; the others map the few sources from those subsets.
OPEN_IMAGES_CSVS = (
    "train-images-boxable-with-rotation.csv",
    "validation-images-with-rotation.csv",
    "test-images-with-rotation.csv",
)
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)
_IMAGE_ID = re.compile(r"^[0-9a-f]{16}$")
# Flickr static file names: <photo id>_<secret>[_<size>].<ext>; the original (_o) has its own
# secret, so only the photo id is common to every size of one photo.
_FLICKR_NAME = re.compile(r"^(\d+)_[0-9a-z]+(?:_[0-9a-z]+)?$", re.I)

OK, MISSING, UNREADABLE = "ok", "missing", "unreadable"


def is_url(value: str) -> bool:
    return bool(_URL.match(value))


def probe(path: Path, check_images: bool = True) -> str:
    """``"ok"``, ``"missing"`` (no such regular file) or ``"unreadable"`` (cannot be opened, is
    empty, or, with ``check_images``, its header is not an image format pbmlx reads). Only the
    header is read: a file damaged further in is found when its pixels are loaded."""
    try:
        st = path.stat()
    except OSError:
        return MISSING
    if not os.path.isfile(path):
        return MISSING
    if st.st_size == 0:
        return UNREADABLE
    try:
        with open(path, "rb") as f:
            if not check_images or path.suffix.lower() in HEIF_SUFFIXES:
                # HEIF needs an optional plugin to identify; read_image reports it if missing.
                return OK if f.read(1) else UNREADABLE
            with Image.open(f, formats=READ_FORMATS):
                return OK
    except Exception:  # any failure to open or identify: PIL raises many types on bad headers
        return UNREADABLE


def first_good(candidates: Iterator[Path], check_images: bool = True) -> tuple[Path | None, str]:
    """(the first readable candidate, ``"ok"``), else (None, ``"unreadable"`` when some
    candidate exists but cannot be read, else ``"missing"``)."""
    worst = MISSING
    seen: set[Path] = set()
    for p in candidates:
        if p in seen:
            continue
        seen.add(p)
        state = probe(p, check_images)
        if state == OK:
            return p, OK
        if state == UNREADABLE:
            worst = UNREADABLE
    return None, worst


def _url_parts(url: str) -> tuple[str, list[str]]:
    u = urlparse(url)
    return u.netloc.lower(), [unquote(p) for p in u.path.split("/") if p not in ("", ".")]


def candidates(root: Path, value: str, min_parts: int) -> Iterator[Path]:
    """Local paths for a reference under ``root`` (see the module doc). A relative path is
    ``root/value``; an absolute path is itself; a URL gives its trailing parts of at least
    ``min_parts`` components."""
    if is_url(value):
        host, parts = _url_parts(value)
        if ".." in parts:
            return
        if host and parts:
            yield root.joinpath(host, *parts)
        for i in range(len(parts) - min_parts + 1):
            yield root.joinpath(*parts[i:])
        return
    p = Path(value)
    yield p if p.is_absolute() else root / p


def image_id_from_path(value: str) -> str | None:
    """The Open Images ImageID a local source file is named after (``.../<ImageID>.jpg``, as the
    dataset's mapping script writes ``local_input_image``), or None."""
    stem = PurePosixPath(value.replace("\\", "/")).stem.lower()
    return stem if _IMAGE_ID.match(stem) else None


def url_key(url: str) -> str:
    """A key of a source URL that is the same for every spelling of one photo: ``flickr:<photo
    id>`` for Flickr static URLs (any host such as ``farm8.`` or ``c1.staticflickr.com``, any
    size suffix ``_o``, ``_b``, ..., http or https), else ``url:<host><path>`` without the
    scheme."""
    host, parts = _url_parts(url.strip())
    if parts and (host == "flickr.com" or host.endswith((".flickr.com", ".staticflickr.com"))):
        m = _FLICKR_NAME.match(PurePosixPath(parts[-1]).stem)
        if m:
            return f"flickr:{m.group(1)}"
    return f"url:{host}/{'/'.join(parts)}"


def source_key(image_id: str | None, url: str | None, path: str | None) -> str:
    """The source id: the ImageID when known, else :func:`url_key` of the URL, else
    ``path:<the record's path>`` (an absolute path by its file name, as it is machine-specific)."""
    if image_id:
        return image_id
    if url:
        return url_key(url)
    if path:
        p = PurePosixPath(path.replace("\\", "/"))
        return f"path:{p.name if p.is_absolute() else p.as_posix()}"
    return "unknown"


@functools.lru_cache(maxsize=2)
def _load_url_index(path: str, mtime_ns: int, size: int) -> dict[str, tuple[str, str]]:
    """{url_key(OriginalURL): (ImageID, Subset)} from an Open Images metadata CSV, streamed row by
    row. Cached per file version: train and validation readers share one load (the train CSV
    has 1.74M rows; the dict holds short keys, some 300 MB)."""
    index: dict[str, tuple[str, str]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = csv.reader(f)
            header = next(rows, [])
            if "ImageID" not in header or "OriginalURL" not in header:
                raise PbmlxError(
                    f"{path} is not Open Images image metadata (it needs the columns ImageID "
                    "and OriginalURL)."
                )
            i_id, i_url = header.index("ImageID"), header.index("OriginalURL")
            i_sub = header.index("Subset") if "Subset" in header else None
            for row in rows:
                if len(row) <= max(i_id, i_url) or not row[i_url].strip():
                    continue
                sub = row[i_sub] if i_sub is not None and i_sub < len(row) else ""
                index.setdefault(url_key(row[i_url]), (row[i_id].strip(), sub.strip()))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise PbmlxError(f"Open Images metadata {path} is not readable ({e}).") from None
    return index


class SourceFinder:
    """Finds source photos for records (see the module doc): ``root`` is the folder the records'
    relative paths are relative to (DATA), ``sources`` an optional Open Images folder."""

    def __init__(self, root: Path, sources: Path | None, check_images: bool = True) -> None:
        self.root = root
        self.sources = sources
        self.check_images = check_images
        self._csvs: list[Path] | None = None
        self._folders: list[Path] | None = None

    def _csv_files(self) -> list[Path]:
        if self._csvs is None:
            assert self.sources is not None
            # Beside the images, or one level up (the dataset's instructions download the CSV
            # next to the folder the Open Images tars are extracted into).
            self._csvs = [
                d / n
                for n in OPEN_IMAGES_CSVS
                for d in (self.sources, self.sources.parent)
                if (d / n).is_file()
            ]
        return self._csvs

    def image_id(self, url: str | None) -> tuple[str, str] | None:
        """(ImageID, Subset) of a source URL from the Open Images CSVs (loaded on first use)."""
        if self.sources is None or not url:
            return None
        key = url_key(url)
        for f in self._csv_files():
            st = f.stat()
            hit = _load_url_index(str(f), st.st_mtime_ns, st.st_size).get(key)
            if hit is not None:
                return hit
        return None

    def _image_folders(self) -> list[Path]:
        if self._folders is None:
            assert self.sources is not None
            # DIR/<ImageID>.jpg, or DIR/<folder>/<ImageID>.jpg: the tars extract to train_0/ ...
            with os.scandir(self.sources) as it:
                subs = sorted(Path(e.path) for e in it if e.is_dir())
            self._folders = [self.sources, *subs]
        return self._folders

    def by_image_id(self, image_id: str, subset: str = "") -> Iterator[Path]:
        if self.sources is None:
            return
        if subset:
            yield self.sources / subset / f"{image_id}.jpg"
        for d in self._image_folders():
            yield d / f"{image_id}.jpg"

    def find(self, local: Any, url: Any) -> tuple[Path | None, str, str | None]:
        """(path or None, ``"ok"`` / ``"missing"`` / ``"unreadable"``, ImageID or None) for a
        record's ``local_input_image`` and source URL values."""
        local = local.strip() if isinstance(local, str) and local.strip() else None
        url = url.strip() if isinstance(url, str) and url.strip() else None
        image_id = image_id_from_path(local) if local else None
        subset = ""
        if image_id is None and url is not None and is_url(url):
            hit = self.image_id(url)
            if hit is not None:
                image_id, subset = hit

        def cands() -> Iterator[Path]:
            if local is not None:
                yield from candidates(self.root, local, 1)
            if image_id is not None:
                yield from self.by_image_id(image_id, subset)
            if url is not None:
                if self.sources is not None:
                    yield from candidates(self.sources, url, 1)
                yield from candidates(self.root, url, 1)

        path, state = first_good(cands(), self.check_images)
        return path, state, image_id
