"""Writing a converted model folder all at once or not at all (``convert``, ``export-coreml``).

:func:`refuse_existing` refuses an ``out_dir`` that exists and is not an empty folder (pbmlx
never overwrites); :func:`atomic_folder` yields a fresh hidden sibling folder to write into and
renames it to ``out_dir`` only when the block completes (same file system, so the rename is
atomic); on any error or interruption the sibling is removed, so nothing half-written is left.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from pbmlx.errors import PbmlxError


def refuse_existing(out_dir: Path) -> None:
    """An existing ``out_dir`` is refused unless it is an empty folder."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        what = "folder is not empty" if out_dir.is_dir() else "path is a file"
        raise PbmlxError(
            f"Output {out_dir} already exists (the {what}); pbmlx never overwrites it."
        )


def prepare_out(out_dir: Path) -> Path:
    """Refuse an existing non-empty ``out_dir``; create its parent; return a fresh hidden
    sibling folder to write into (same file system, so the final rename is atomic)."""
    refuse_existing(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_dir.parent / f".{out_dir.name}.partial-{secrets.token_hex(4)}"
        tmp.mkdir()
    except OSError as e:
        raise PbmlxError(f"Output folder {out_dir} cannot be created ({e.strerror}).") from None
    return tmp


@contextlib.contextmanager
def atomic_folder(out_dir: Path) -> Iterator[Path]:
    """``with atomic_folder(out_dir) as tmp:`` write into ``tmp``; see the module docstring.
    An ``OSError`` while writing becomes one :class:`PbmlxError` naming ``out_dir``."""
    tmp = prepare_out(out_dir)
    try:
        yield tmp
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above); raises if something appeared since
        os.rename(tmp, out_dir)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise PbmlxError(f"Writing {out_dir} failed ({e}); nothing was written.") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
