"""Pico-Banana-400K readers: its record files, streamed, with their images found locally.

A DATA folder holds ``sft.jsonl``, ``preference.jsonl`` and ``multi-turn.jsonl`` (the formats of
the dataset's public release and its paper, "Pico-Banana-400K", arXiv 2510.19808) and the edited
images at the records' relative paths (``images/positive-edit/1.png``, ...). Source photos come
from a record's ``local_input_image`` (absolute, or relative to DATA: what the dataset's own Open
Images mapping script adds), else from ``sources=DIR``, a local Open Images copy
(``DIR/<ImageID>.jpg`` or ``DIR/<folder>/<ImageID>.jpg``, the ImageID looked up from the
record's URL in ``train-images-boxable-with-rotation.csv``), else from a file named after the URL
(:mod:`pbmlx.data.sources`). Nothing is downloaded.

- :func:`read_sft`, :func:`read_preference` -> :class:`EditRecord` (paths, not pixels: load them
  with :func:`pbmlx.load.read_image`);
- :func:`read_multi_turn` -> :class:`Session`;
- :func:`read_manifest` -> ``(url, local path or None)`` per line of a manifest;
- :class:`ReadStats`: what was read, yielded, skipped (by reason), filtered, missing;
- :func:`split_of`: the deterministic train / validation split by source photo;
- :data:`EDIT_TYPES`, :data:`EDIT_GROUPS`, :func:`group_of`, :func:`edit_type_key`: the 35 edit
  types in 8 groups, names matched tolerantly (:mod:`pbmlx.data.taxonomy`).

Readers are generators reading one line at a time (the 257,730 SFT rows are never held at once).
A record that cannot be used (bad JSON, a missing field, a file missing or unreadable) is skipped
and counted by reason, never guessed at and never a crash; a missing ``.jsonl`` is a
:class:`~pbmlx.errors.PbmlxError` at the call.
"""

from pbmlx.data.readers import (
    EditRecord,
    ReadStats,
    Session,
    read_manifest,
    read_multi_turn,
    read_preference,
    read_sft,
    split_of,
)
from pbmlx.data.taxonomy import (
    EDIT_GROUPS,
    EDIT_TYPES,
    canonical_edit_type,
    edit_type_key,
    group_of,
)

__all__ = [
    "EDIT_GROUPS",
    "EDIT_TYPES",
    "EditRecord",
    "ReadStats",
    "Session",
    "canonical_edit_type",
    "edit_type_key",
    "group_of",
    "read_manifest",
    "read_multi_turn",
    "read_preference",
    "read_sft",
    "split_of",
]
