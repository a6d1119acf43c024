"""Streaming readers of Pico-Banana-400K's record files (see :mod:`pbmlx.data`)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pbmlx.data import sources as src
from pbmlx.data.taxonomy import (
    EDIT_TYPES,
    UNKNOWN,
    canonical_edit_type,
    edit_type_key,
    resolve_edit_types,
    resolve_groups,
)
from pbmlx.errors import PbmlxError

# The files a DATA folder holds (the first name that exists is read).
FILE_NAMES = {
    "sft": ("sft.jsonl",),
    "preference": ("preference.jsonl",),
    "multi-turn": ("multi-turn.jsonl", "multi_turn.jsonl"),
}
# instruction= choice -> the record fields to take, in order (see read_sft).
INSTRUCTION_FIELDS = {
    "summarized": ("summarized_text", "text"),
    "text": ("text", "summarized_text"),
    "both": ("summarized_text", "text"),
}

# Reasons a record is skipped (ReadStats.skipped's keys).
SKIP_NOT_JSON = "line is not JSON"
SKIP_NOT_OBJECT = "line is not a JSON object"
SKIP_NO_SOURCE_FIELD = "no source reference (local_input_image / open_image_input_url)"
SKIP_SOURCE_MISSING = "source image not found locally"
SKIP_SOURCE_UNREADABLE = "source image unreadable"
SKIP_NO_OUTPUT_FIELD = "no output_image"
SKIP_OUTPUT_MISSING = "passed edit (output_image) not found"
SKIP_OUTPUT_UNREADABLE = "passed edit (output_image) unreadable"
SKIP_NO_REJECTED = "no rejected_images"
SKIP_REJECTED_MISSING = "a rejected image not found"
SKIP_REJECTED_UNREADABLE = "a rejected image unreadable"
SKIP_NO_INSTRUCTION = "no instruction text"
SKIP_NO_FILES = "no files list"
SKIP_NO_PROMPTS = "no turn prompts (metadata_edit_turn_prompts)"
# Reasons a record is filtered out (ReadStats.filtered's keys).
FILTER_EDIT_TYPE = "edit type"
FILTER_GROUP = "group"
FILTER_SPLIT = "split"
# Files that are missing without the record being skipped (ReadStats.missing's keys).
MISSING_TURN = "turn output not found"
UNREADABLE_TURN = "turn output unreadable"
MISSING_LISTED = "listed file not found locally"
UNREADABLE_LISTED = "listed file unreadable"


@dataclass(frozen=True)
class EditRecord:
    """One single-turn edit (an ``sft.jsonl`` or ``preference.jsonl`` record), its files found.

    ``edit_type`` is the canonical name of one of the 35 types when the record's value matches
    one (:func:`pbmlx.data.taxonomy.canonical_edit_type`), else that value's
    :func:`edit_type_key`; ``group`` its group or ``"unknown"``. ``instruction`` is the text of
    the field ``instruction_field`` (``"summarized_text"`` or ``"text"``). ``source``,
    ``output`` and every path in ``rejected`` exist and have a readable image header.
    ``rejected`` is ``()`` for SFT records. ``source_id`` is what :func:`split_of` hashes.
    """

    line: int
    edit_type: str
    group: str
    instruction: str
    instruction_field: str
    source: Path
    output: Path
    rejected: tuple[Path, ...]
    source_id: str
    raw: dict = field(compare=False, repr=False)


@dataclass(frozen=True)
class Session:
    """One multi-turn record: the source photo, one instruction per turn and the dataset's image
    after each turn (``edit_turn<k>`` for turn k, ``final_image`` for the last; None where the
    record lists none or the file is missing or unreadable). ``len(outputs) ==
    len(instructions)``."""

    line: int
    source: Path
    instructions: tuple[str, ...]
    outputs: tuple[Path | None, ...]
    source_id: str
    raw: dict = field(compare=False, repr=False)


@dataclass
class ReadStats:
    """What a reader did. ``read``: records (non-blank lines) read; ``yielded``: records
    yielded (with ``instruction="both"`` one line can yield two); ``skipped``: records left out
    because of a problem, by reason; ``filtered``: records left out by a filter (edit type,
    group, split); ``missing``: files that were missing without their record being left out
    (a multi-turn turn's image, a manifest's entry). Pass one to several readers to add up."""

    read: int = 0
    yielded: int = 0
    skipped: Counter = field(default_factory=Counter)
    filtered: Counter = field(default_factory=Counter)
    missing: Counter = field(default_factory=Counter)

    def summary(self) -> dict:
        """A JSON-ready dict: the counts, reasons sorted by count (most first)."""
        return {
            "read": self.read,
            "yielded": self.yielded,
            "skipped": dict(self.skipped.most_common()),
            "skipped_total": sum(self.skipped.values()),
            "filtered": dict(self.filtered.most_common()),
            "missing": dict(self.missing.most_common()),
        }


def split_of(source_id: str, val_fraction: float = 0.05) -> str:
    """``"val"`` when ``u < val_fraction``, else ``"train"``, where ``u`` in [0, 1) is the first
    8 bytes of ``sha256(source_id as UTF-8)`` read big-endian, divided by 2**64. A pure function
    of its arguments: the same on every machine, run and Python version (no salted ``hash``). All
    records of one source share a split; raising ``val_fraction`` only moves sources from train
    to val."""
    _check_fraction(val_fraction)
    h = hashlib.sha256(source_id.encode("utf-8")).digest()
    return "val" if int.from_bytes(h[:8], "big") / 2.0**64 < val_fraction else "train"


def _check_fraction(val_fraction: float) -> None:
    if not (isinstance(val_fraction, (int, float)) and 0.0 <= val_fraction <= 1.0):
        raise PbmlxError(f"val_fraction must be a number in [0, 1], not {val_fraction!r}.")


def _jsonl_path(data: Path | str, kind: str) -> Path:
    data = Path(data)
    if data.is_dir():
        for name in FILE_NAMES[kind]:
            if (data / name).is_file():
                return data / name
        raise PbmlxError(f"Dataset folder {data} has no {FILE_NAMES[kind][0]}.")
    if not data.exists():
        raise PbmlxError(f"Dataset file {data} does not exist.")
    if not data.is_file():
        raise PbmlxError(f"Dataset file {data} is not a regular file.")
    return data


def _open_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, bytes) for each non-blank line, read one at a time. Bytes, not
    text: a JSON string may hold U+2028 and friends, which text-mode line splitting would cut.
    The file is opened once here (an unreadable file raises at the call) and again by the
    generator, so that a generator never started holds no open file."""
    try:
        open(path, "rb").close()
    except OSError as e:
        raise PbmlxError(f"Dataset file {path} is not readable ({e.strerror}).") from None

    def lines() -> Iterator[tuple[int, bytes]]:
        with open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    yield n, line

    return lines()


def _objects(
    path: Path, stats: ReadStats, strict: bool, read_limit: int | None
) -> Iterator[tuple[int, dict]]:
    """(line, object) per record; bad lines counted in ``stats`` (or raised when ``strict``).
    ``read_limit``: stop after that many records read by this call."""
    read = 0
    for n, line in _open_lines(path):
        if read_limit is not None and read >= read_limit:
            break
        read += 1
        stats.read += 1
        try:
            obj = json.loads(line)
        except ValueError as e:  # JSONDecodeError, or UnicodeDecodeError on bytes not UTF-8
            if strict:
                msg = e.msg if isinstance(e, json.JSONDecodeError) else "not UTF-8"
                raise PbmlxError(f"Dataset file {path} line {n} is not JSON ({msg}).") from None
            stats.skipped[SKIP_NOT_JSON] += 1
            continue
        if not isinstance(obj, dict):
            if strict:
                raise PbmlxError(f"Dataset file {path} line {n} is not a JSON object.")
            stats.skipped[SKIP_NOT_OBJECT] += 1
            continue
        yield n, obj


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _instructions(rec: dict, instruction: str) -> list[tuple[str, str]]:
    """[(field, text)]: the first available field for summarized/text; every available distinct
    one for both."""
    got: list[tuple[str, str]] = []
    for k in INSTRUCTION_FIELDS[instruction]:
        t = _text(rec.get(k))
        if t is not None and all(t != seen for _, seen in got):
            got.append((k, t))
            if instruction != "both":
                break
    return got


def _check_common(
    instruction: str | None, split: str | None, val_fraction: float, limit: int | None
) -> None:
    if instruction is not None and instruction not in INSTRUCTION_FIELDS:
        raise PbmlxError(
            f"instruction must be one of {', '.join(INSTRUCTION_FIELDS)}, not {instruction!r}."
        )
    if split not in (None, "train", "val"):
        raise PbmlxError(f"split must be 'train', 'val' or None, not {split!r}.")
    _check_fraction(val_fraction)
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise PbmlxError(f"limit must be a whole number >= 0, not {limit!r}.")


def _finder(
    path: Path, images: Path | str | None, sources: Path | str | None, check_images: bool
) -> src.SourceFinder:
    root = Path(images) if images is not None else path.parent
    if not root.is_dir():
        raise PbmlxError(f"Images folder {root} does not exist or is not a folder.")
    if sources is not None:
        sources = Path(sources)
        if not sources.is_dir():
            raise PbmlxError(f"Sources folder {sources} does not exist or is not a folder.")
    return src.SourceFinder(root, sources, check_images)


def _source_url(value: Any) -> str | None:
    v = _text(value)
    return v if v is not None and src.is_url(v) else None


def read_sft(
    data: Path | str,
    *,
    sources: Path | str | None = None,
    edit_types: str | Iterable[str] | None = None,
    groups: str | Iterable[str] | None = None,
    instruction: str = "summarized",
    split: str | None = None,
    val_fraction: float = 0.05,
    limit: int | None = None,
    stats: ReadStats | None = None,
    images: Path | str | None = None,
    check_images: bool = True,
    strict: bool = False,
    read_limit: int | None = None,
) -> Iterator[EditRecord]:
    """The usable records of ``sft.jsonl``, one at a time, as :class:`EditRecord`.

    ``data``: the DATA folder (holding ``sft.jsonl``) or the ``.jsonl`` file itself. Relative
    paths in records are relative to ``images`` (default: the folder of the ``.jsonl``).
    ``sources``: an Open Images folder for source photos (:mod:`pbmlx.data.sources`).

    ``instruction``: ``"summarized"`` (``summarized_text``, else ``text``), ``"text"``
    (``text``, else ``summarized_text``), or ``"both"`` (one record per available field, the
    summarized one first; one only when the two texts are equal).

    Filters: ``edit_types`` and ``groups`` (names matched tolerantly; a name that matches none
    of the 35 types / 8 groups raises PbmlxError), ``split`` (``"train"`` / ``"val"``:
    :func:`split_of` of the record's ``source_id`` with ``val_fraction``). ``limit``: stop
    after that many records yielded; ``read_limit``: stop after that many records read (used or
    not).

    Never raises on a record: a line that is not a JSON object, a missing field, a file not
    found or not readable is counted in ``stats.skipped`` by reason (``strict=True`` raises
    PbmlxError on a line that is not a JSON object instead). ``check_images=False`` checks that
    files exist without opening them. Raises PbmlxError at the call for a missing ``.jsonl``,
    images or sources folder, or a bad argument.
    """
    return _read_single(
        "sft", data, sources, edit_types, groups, instruction, split, val_fraction, limit,
        stats, images, check_images, strict, read_limit,
    )  # fmt: skip


def read_preference(
    data: Path | str,
    *,
    sources: Path | str | None = None,
    edit_types: str | Iterable[str] | None = None,
    groups: str | Iterable[str] | None = None,
    instruction: str = "summarized",
    split: str | None = None,
    val_fraction: float = 0.05,
    limit: int | None = None,
    stats: ReadStats | None = None,
    images: Path | str | None = None,
    check_images: bool = True,
    strict: bool = False,
    read_limit: int | None = None,
) -> Iterator[EditRecord]:
    """The usable records of ``preference.jsonl``, as :func:`read_sft` reads SFT ones, with
    ``rejected`` the failed attempts: ``rejected_images`` as a list or one string (paths such as
    ``images/negative-edit/12_retry1.png``, or URLs). A record with no rejected image, or with
    one that is missing or unreadable, is skipped (every pair it gives is complete)."""
    return _read_single(
        "preference", data, sources, edit_types, groups, instruction, split, val_fraction,
        limit, stats, images, check_images, strict, read_limit,
    )  # fmt: skip


def _read_single(
    kind: str,
    data: Path | str,
    sources: Path | str | None,
    edit_types: Any,
    groups: Any,
    instruction: str,
    split: str | None,
    val_fraction: float,
    limit: int | None,
    stats: ReadStats | None,
    images: Path | str | None,
    check_images: bool,
    strict: bool,
    read_limit: int | None,
) -> Iterator[EditRecord]:
    # Everything that can be wrong with the arguments is raised here, at the call, before the
    # generator's first step.
    _check_common(instruction, split, val_fraction, limit)
    path = _jsonl_path(data, kind)
    finder = _finder(path, images, sources, check_images)
    want_types = resolve_edit_types(edit_types)
    want_groups = resolve_groups(groups)
    st = stats if stats is not None else ReadStats()
    lines = _objects(path, st, strict, read_limit)
    return _single_records(
        kind, lines, finder, want_types, want_groups, instruction, split, val_fraction, limit, st
    )


def _single_records(
    kind: str,
    lines: Iterator[tuple[int, dict]],
    finder: src.SourceFinder,
    want_types: frozenset[str] | None,
    want_groups: frozenset[str] | None,
    instruction: str,
    split: str | None,
    val_fraction: float,
    limit: int | None,
    st: ReadStats,
) -> Iterator[EditRecord]:
    yielded = 0
    if limit == 0:
        return
    for n, rec in lines:
        # Cheap checks and filters first: no file is touched for a record left out.
        texts = _instructions(rec, instruction)
        if not texts:
            st.skipped[SKIP_NO_INSTRUCTION] += 1
            continue
        out_ref = _text(rec.get("output_image"))
        if out_ref is None:
            st.skipped[SKIP_NO_OUTPUT_FIELD] += 1
            continue
        rej_refs: list[str] = []
        if kind == "preference":
            rej = rec.get("rejected_images")
            rej_list = [rej] if isinstance(rej, str) else rej if isinstance(rej, list) else []
            rej_refs = [r for r in (_text(x) for x in rej_list) if r is not None]
            if not rej_refs or len(rej_refs) != len(rej_list):
                st.skipped[SKIP_NO_REJECTED if not rej_refs else SKIP_REJECTED_MISSING] += 1
                continue
        name = canonical_edit_type(rec.get("edit_type"))
        edit_type = name or edit_type_key(rec.get("edit_type"))
        group = EDIT_TYPES[name] if name is not None else UNKNOWN
        if want_types is not None and name not in want_types:
            st.filtered[FILTER_EDIT_TYPE] += 1
            continue
        if want_groups is not None and group not in want_groups:
            st.filtered[FILTER_GROUP] += 1
            continue
        local, url = _text(rec.get("local_input_image")), _text(rec.get("open_image_input_url"))
        if local is None and url is None:
            st.skipped[SKIP_NO_SOURCE_FIELD] += 1
            continue
        sid = _source_id(finder, local, url)
        if split is not None and split_of(sid, val_fraction) != split:
            st.filtered[FILTER_SPLIT] += 1
            continue
        source, state, _ = finder.find(local, url)
        if source is None:
            st.skipped[
                SKIP_SOURCE_UNREADABLE if state == src.UNREADABLE else SKIP_SOURCE_MISSING
            ] += 1
            continue
        output, state = src.first_good(src.candidates(finder.root, out_ref, 2), finder.check_images)
        if output is None:
            st.skipped[
                SKIP_OUTPUT_UNREADABLE if state == src.UNREADABLE else SKIP_OUTPUT_MISSING
            ] += 1
            continue
        rejected: list[Path] = []
        for r in rej_refs:
            p, state = src.first_good(src.candidates(finder.root, r, 2), finder.check_images)
            if p is None:
                st.skipped[
                    SKIP_REJECTED_UNREADABLE if state == src.UNREADABLE else SKIP_REJECTED_MISSING
                ] += 1
                break
            rejected.append(p)
        else:
            for fld, text in texts:
                st.yielded += 1
                yielded += 1
                yield EditRecord(
                    n, edit_type, group, text, fld, source, output, tuple(rejected), sid, rec
                )
                if limit is not None and yielded >= limit:
                    return


def _source_id(finder: src.SourceFinder, local: str | None, ref: str | None) -> str:
    """The record's source id (:func:`pbmlx.data.sources.source_key`) from its
    ``local_input_image`` and source reference (a URL, or a path), before any file is looked
    for: the split filter's input."""
    image_id = src.image_id_from_path(local) if local else None
    url = _source_url(ref)
    if image_id is None and url is not None:
        hit = finder.image_id(url)
        image_id = hit[0] if hit else None
    path = local if local is not None or url is not None else ref
    return src.source_key(image_id, url, path)


def read_multi_turn(
    data: Path | str,
    *,
    sources: Path | str | None = None,
    split: str | None = None,
    val_fraction: float = 0.05,
    limit: int | None = None,
    stats: ReadStats | None = None,
    images: Path | str | None = None,
    check_images: bool = True,
    strict: bool = False,
    read_limit: int | None = None,
) -> Iterator[Session]:
    """The usable sessions of ``multi-turn.jsonl``, one at a time, as :class:`Session`.

    A record: ``files``, a list of ``{"id", "url"}`` with ids ``original_input_image`` (the
    source, usually a Flickr URL), ``edit_turn1`` ... and ``final_image`` (the last turn's
    image), and ``metadata_edit_turn_prompts``, one instruction per turn. The source is found as
    for :func:`read_sft` (a ``local_input_image`` first). Turn k's output is ``edit_turn<k>``;
    the last turn's is ``final_image``, else ``edit_turn<n>``; a turn image that is missing or
    unreadable is None (counted in ``stats.missing``), the session is kept. Skipped (counted):
    no prompts, a prompt that is not text, no source reference, the source not found or not
    readable. Other arguments as for :func:`read_sft`.
    """
    _check_common(None, split, val_fraction, limit)
    path = _jsonl_path(data, "multi-turn")
    finder = _finder(path, images, sources, check_images)
    st = stats if stats is not None else ReadStats()
    lines = _objects(path, st, strict, read_limit)
    return _sessions(lines, finder, split, val_fraction, limit, st)


def _sessions(
    lines: Iterator[tuple[int, dict]],
    finder: src.SourceFinder,
    split: str | None,
    val_fraction: float,
    limit: int | None,
    st: ReadStats,
) -> Iterator[Session]:
    yielded = 0
    if limit == 0:
        return
    for n, rec in lines:
        prompts = rec.get("metadata_edit_turn_prompts")
        if isinstance(prompts, str):
            prompts = [prompts]
        texts = [_text(p) for p in prompts] if isinstance(prompts, list) else []
        if not texts or any(t is None for t in texts):
            st.skipped[SKIP_NO_PROMPTS] += 1
            continue
        files = rec.get("files")
        refs: dict[str, str] = {}
        if isinstance(files, list):
            for f in files:
                ref = _text(f.get("url")) if isinstance(f, dict) else None
                if ref is not None and isinstance(f.get("id"), str):
                    refs.setdefault(f["id"].strip().lower(), ref)
        local, url = _text(rec.get("local_input_image")), refs.get("original_input_image")
        if local is None and url is None:
            st.skipped[SKIP_NO_FILES if not isinstance(files, list) else SKIP_NO_SOURCE_FIELD] += 1
            continue
        sid = _source_id(finder, local, url)
        if split is not None and split_of(sid, val_fraction) != split:
            st.filtered[FILTER_SPLIT] += 1
            continue
        source, state, _ = finder.find(local, url)
        if source is None:
            st.skipped[
                SKIP_SOURCE_UNREADABLE if state == src.UNREADABLE else SKIP_SOURCE_MISSING
            ] += 1
            continue
        outputs: list[Path | None] = []
        for k in range(1, len(texts) + 1):
            ids = [f"edit_turn{k}"] if k < len(texts) else ["final_image", f"edit_turn{k}"]
            found, state = None, src.MISSING
            for ref in (refs[i] for i in ids if i in refs):
                found, state = src.first_good(
                    src.candidates(finder.root, ref, 2), finder.check_images
                )
                if found is not None:
                    break
            if found is None:
                st.missing[UNREADABLE_TURN if state == src.UNREADABLE else MISSING_TURN] += 1
            outputs.append(found)
        st.yielded += 1
        yielded += 1
        yield Session(n, source, tuple(texts), tuple(outputs), sid, rec)  # type: ignore[arg-type]
        if limit is not None and yielded >= limit:
            return


def read_manifest(
    path: Path | str,
    data: Path | str | None = None,
    *,
    limit: int | None = None,
    stats: ReadStats | None = None,
    check_images: bool = False,
) -> Iterator[tuple[str, Path | None]]:
    """(entry, local path or None) for each entry of a Pico-Banana manifest, one at a time.

    The format, as the dataset's README links them (``sft_manifest.txt``,
    ``preference_manifest.txt``, ``multi_turn_manifest.txt`` under
    ``https://ml-site.cdn-apple.com/datasets/pico-banana-300k/nb/manifest/``) and as the public
    download scripts read them: plain text, one absolute URL of an edited image per line, e.g.
    ``https://ml-site.cdn-apple.com/datasets/pico-banana-300k/nb/images/positive-edit/1.png``
    (the records' ``output_image`` values are those URLs' paths after ``nb/``). Source photos are
    not listed (they are the records' Flickr URLs). Blank lines and lines starting with ``#``
    are ignored; an entry may also be a relative path.

    The local path: the URL's trailing parts of at least two components under ``data``
    (default: the manifest's folder), so ``.../nb/images/positive-edit/1.png`` is found at
    ``DATA/images/positive-edit/1.png`` (:func:`pbmlx.data.sources.candidates`); None when not
    found (counted in ``stats.missing``, and ``"unreadable"`` apart when ``check_images``
    finds a file whose header is not an image). ``stats.read`` counts entries, ``yielded`` the
    entries given (all, found or not). A missing manifest raises PbmlxError.
    """
    _check_common(None, None, 0.0, limit)
    path = Path(path)
    if not path.is_file():
        raise PbmlxError(f"Manifest {path} does not exist or is not a regular file.")
    root = Path(data) if data is not None else path.parent
    if not root.is_dir():
        raise PbmlxError(f"Dataset folder {root} does not exist or is not a folder.")
    st = stats if stats is not None else ReadStats()
    return _manifest_entries(_open_lines(path), root, limit, st, check_images)


def _manifest_entries(
    lines: Iterator[tuple[int, bytes]],
    root: Path,
    limit: int | None,
    st: ReadStats,
    check_images: bool,
) -> Iterator[tuple[str, Path | None]]:
    given = 0
    if limit == 0:
        return
    for _, raw in lines:
        entry = raw.decode("utf-8", errors="replace").strip()
        if entry.startswith("#"):
            continue
        st.read += 1
        local, state = src.first_good(src.candidates(root, entry, 2), check_images)
        if local is None:
            st.missing[UNREADABLE_LISTED if state == src.UNREADABLE else MISSING_LISTED] += 1
        st.yielded += 1
        given += 1
        yield entry, local
        if limit is not None and given >= limit:
            return
