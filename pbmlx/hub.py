"""Where a model's files are: a local folder, or a snapshot of a Hugging Face Hub repository.

One resolver for every model pbmlx reads -- the editor (:mod:`pbmlx.editor`), the judge's
CLIP (:mod:`pbmlx.models.clip`) and ``pbmlx convert``'s sources -- so that a hub id is
recognised, fetched and reported the same way everywhere:

* an existing path is used as it is (a folder; a file is refused);
* otherwise a value shaped like a repository id (``owner/name``) is fetched with
  ``huggingface_hub.snapshot_download``, limited to the caller's file patterns (so weights
  come as safetensors only unless the caller asks for more), and read from the Hugging Face
  cache afterwards (``HF_HUB_OFFLINE=1`` works once it is there);
* anything else is a folder that does not exist.

Every failure -- no network, offline mode, an unknown repository, missing auth -- is one
:class:`PbmlxError` naming the value, never a traceback from the hub client.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from pbmlx.errors import PbmlxError

# owner/name, as the Hub spells repository ids (letters, digits, "-", "_", ".").
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def is_hub_id(text: str) -> bool:
    """Whether ``text`` has the shape of a Hub repository id (``owner/name``)."""
    return bool(_HUB_ID.fullmatch(text)) and ".." not in text


def snapshot(repo_id: str, patterns: Sequence[str], what: str = "Model") -> Path:
    """The local snapshot folder of ``repo_id`` holding the files matching ``patterns``
    (fnmatch, relative to the repository root), downloaded once and then cached."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=list(patterns)))
    except KeyboardInterrupt:
        raise
    except Exception as e:  # network, offline mode, unknown repo, auth: all one message
        reason = " ".join(str(e).split()).rstrip(".") or "no details"
        raise PbmlxError(
            f"{what} {repo_id!r} is not a local folder and could not be fetched from the "
            f"Hugging Face Hub ({type(e).__name__}: {reason})."
        ) from None


def cached_snapshot(repo_id: str) -> Path | None:
    """The snapshot folder of ``repo_id`` if its ``config.json`` is already in the Hugging
    Face cache, else None; never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def is_local(path_or_hub_id: str | Path) -> bool:
    """Whether ``path_or_hub_id`` names something on disk (then it is never a hub id)."""
    return Path(str(path_or_hub_id)).expanduser().exists()


def local_folder_or_snapshot(
    path_or_hub_id: str | Path, patterns: Sequence[str], what: str = "Model"
) -> Path:
    """The folder ``path_or_hub_id`` names, else the hub snapshot of that id (see the module
    docstring). A :class:`~pathlib.Path` is always a local path, never a hub id. ``what``
    names the model in errors ("Model", "CLIP model")."""
    text = str(path_or_hub_id)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise PbmlxError(f"{what} {text} is a file; give the model's folder.")
        return path
    if isinstance(path_or_hub_id, Path) or not is_hub_id(text):
        raise PbmlxError(f"{what} folder {text} does not exist (and it is not a hub id).")
    return snapshot(text, patterns, what)
