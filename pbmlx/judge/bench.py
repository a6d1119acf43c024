"""``pbmlx judge-bench preference.jsonl --images DIR``: the judge against Pico-Banana's preferences.

Each record of Pico-Banana-400K's ``preference.jsonl`` holds a source photo, an instruction, the
edit that passed the dataset's judge and one or more failed attempts. For every (passed,
rejected) pair, the local judge agrees when it scores the passed edit strictly higher (ties
count half). Reported: pairwise accuracy overall, per edit type and per criterion.

Record fields (see the reference notes; matched tolerantly):

* source: ``local_input_image`` (a path, absolute or relative to ``--images``), else
  ``open_image_input_url``, looked up locally as ``--images/<url path>`` or
  ``--images/<file name>`` (nothing is downloaded);
* ``output_image``: the passed edit, relative to ``--images`` (or its file name there);
* ``rejected_images``: a path or a list of paths, likewise;
* instruction: ``summarized_text`` (short, as a person would write it; CLIP reads at most 77
  tokens) unless ``--instruction text`` picks the long ``text``;
* ``edit_type``: grouped case- and punctuation-insensitively, and passed to the judge (it
  tells local from global edits).

A record whose files are missing is skipped and counted by reason, never guessed at. When a
verdict is partial (no CLIP for a generative edit), pairs are ranked by the labelled partial
overall, and the report counts how many pairs that was.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pbmlx.errors import PbmlxError
from pbmlx.judge.verdict import CRITERIA, DEFAULT_THRESHOLD

INSTRUCTION_KEYS = {"summarized": ("summarized_text", "text"), "text": ("text", "summarized_text")}


@dataclass(frozen=True)
class BenchRecord:
    line: int
    edit_type: str
    instruction: str
    source: Path
    passed: Path
    rejected: list[Path]


def edit_type_key(value: Any) -> str:
    """A grouping key for an edit type: lower case, words only ("Add a new object" ->
    "add a new object", "add_new-object" -> "add new object")."""
    return re.sub(r"[^a-z0-9]+", " ", str(value or "unknown").lower()).strip() or "unknown"


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line; a bad line raises PbmlxError naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PbmlxError(f"Preference file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PbmlxError(f"Preference file {path} is not readable text ({e}).") from None
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise PbmlxError(f"Preference file {path} line {i} is not JSON ({e.msg}).") from None
        if not isinstance(obj, dict):
            raise PbmlxError(f"Preference file {path} line {i} is not a JSON object.")
        out.append((i, obj))
    return out


def _find(images: Path, value: Any) -> Path | None:
    """A local file for a record's path or URL value, or None."""
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip()
    if re.match(r"^[a-z][a-z0-9+.-]*://", value, re.I):
        rel = urlparse(value).path.lstrip("/")
    else:
        p = Path(value)
        if p.is_absolute():
            return p if p.is_file() else None
        rel = value
    for cand in (images / rel, images / Path(rel).name):
        if cand.is_file():
            return cand
    return None


def resolve(
    line: int, rec: dict, images: Path, instruction: str = "summarized"
) -> BenchRecord | str:
    """The record's local files and fields, or the reason it is skipped."""
    src = _find(images, rec.get("local_input_image")) or _find(
        images, rec.get("open_image_input_url")
    )
    if src is None:
        return "source image not found locally"
    passed = _find(images, rec.get("output_image"))
    if passed is None:
        return "passed edit (output_image) not found"
    rej = rec.get("rejected_images")
    rej_list = [rej] if isinstance(rej, str) else list(rej) if isinstance(rej, list) else []
    if not rej_list:
        return "no rejected_images"
    rejected = [_find(images, r) for r in rej_list]
    if any(r is None for r in rejected):
        return "a rejected image not found"
    text = next(
        (
            rec[k]
            for k in INSTRUCTION_KEYS[instruction]
            if isinstance(rec.get(k), str) and rec[k].strip()
        ),
        None,
    )
    if text is None:
        return "no instruction text"
    return BenchRecord(
        line, edit_type_key(rec.get("edit_type")), text.strip(), src, passed, rejected
    )  # type: ignore[arg-type]


def _agree(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return 1.0 if a > b else 0.5 if a == b else 0.0


def judge_bench(
    path: str | Path,
    images: str | Path,
    *,
    model: Any = None,
    limit: int | None = None,
    instruction: str = "summarized",
    threshold: float = DEFAULT_THRESHOLD,
    progress: bool = False,
) -> dict:
    """Judge every (passed, rejected) pair of a preference file; the report (see module doc)."""
    from pbmlx.judge.core import Judge

    path, images = Path(path), Path(images)
    if not images.is_dir():
        raise PbmlxError(f"Images folder {images} does not exist or is not a folder.")
    if instruction not in INSTRUCTION_KEYS:
        raise PbmlxError(
            f"--instruction must be one of {', '.join(INSTRUCTION_KEYS)}, not {instruction!r}."
        )
    records = read_jsonl(path)
    if limit is not None:
        records = records[:limit]
    judge = Judge(model=model, threshold=threshold)
    skipped: dict[str, int] = {}
    by_type: dict[str, list[float]] = {}
    by_crit: dict[str, list[float]] = {c: [] for c in CRITERIA}
    scores: list[float] = []
    partial_pairs = 0
    used = 0
    for n, (line, rec) in enumerate(records, 1):
        r = resolve(line, rec, images, instruction)
        if isinstance(r, str):
            skipped[r] = skipped.get(r, 0) + 1
            continue
        used += 1
        good = judge(r.source, r.passed, r.instruction, edit_type=r.edit_type)
        for rej in r.rejected:
            bad = judge(r.source, rej, r.instruction, edit_type=r.edit_type)
            partial_pairs += int(good.partial or bad.partial)
            s = _agree(good.rank_score, bad.rank_score)
            assert s is not None
            scores.append(s)
            by_type.setdefault(r.edit_type, []).append(s)
            for c in CRITERIA:
                a = _agree(getattr(good, c), getattr(bad, c))
                if a is not None:
                    by_crit[c].append(a)
        if progress:
            sys.stderr.write(f"\rjudge-bench: {n}/{len(records)} records, {len(scores)} pairs")
    if progress:
        sys.stderr.write("\n")

    def acc(v: list[float]) -> float | None:
        return round(sum(v) / len(v), 4) if v else None

    return {
        "file": str(path),
        "records": len(records),
        "used": used,
        "skipped": skipped,
        "pairs": len(scores),
        "accuracy": acc(scores),
        "ties": sum(1 for s in scores if s == 0.5),
        "partial_pairs": partial_pairs,
        "by_edit_type": {
            t: {"pairs": len(v), "accuracy": acc(v)} for t, v in sorted(by_type.items())
        },
        "by_criterion": {c: {"pairs": len(v), "accuracy": acc(v)} for c, v in by_crit.items()},
        "instruction": instruction,
    }


def main(args: argparse.Namespace) -> int:
    report = judge_bench(
        args.file,
        args.images,
        model=args.model,
        limit=args.limit,
        instruction=args.instruction,
        threshold=args.threshold,
        progress=not args.json,
    )
    if args.json:
        print(json.dumps(report))
        return 0
    acc = report["accuracy"]
    print(
        f"pairs {report['pairs']} from {report['used']}/{report['records']} records: "
        f"accuracy {'n/a' if acc is None else f'{acc:.3f}'} (ties {report['ties']}, "
        f"partial verdicts in {report['partial_pairs']})"
    )
    for reason, n in report["skipped"].items():
        print(f"  skipped {n}: {reason}")
    for t, d in report["by_edit_type"].items():
        print(f"  {t:<60} {d['pairs']:>5}  {d['accuracy']:.3f}")
    for c, d in report["by_criterion"].items():
        a = d["accuracy"]
        print(f"  criterion {c:<13} {d['pairs']:>5}  {'n/a' if a is None else f'{a:.3f}'}")
    return 0
