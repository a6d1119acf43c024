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

``--fit-clip FILE`` (with a CLIP ``--model``) also fits the CLIP compliance map on the
CLIP-scored verdicts (passed edits labelled 1, rejected 0; :func:`fit_clip_map`), reports its
pairwise compliance accuracy on held-out records before and after, and writes FILE for
``PBMLX_JUDGE_CALIBRATION`` (see :mod:`pbmlx.judge.calibrate`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
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


CLIP_MAP = "compliance/clip"


@dataclass(frozen=True)
class ClipCase:
    """One CLIP-scored verdict for the fit: its record's number, its label (1 passed, 0
    rejected) and the raw CLIP features of its compliance details."""

    record: int
    label: int
    raw: dict[str, float]


def fit_clip_map(cases: list[ClipCase], pairs: list[tuple[int, int, int]]) -> dict:
    """Fit the CLIP compliance map on ``cases``; ``pairs`` are (record, passed case index,
    rejected case index). Returns ``{"map": ..., "heldout": ...}``.

    The map is :func:`pbmlx.judge.calibrate.fit_logistic` on the negated features (that fit
    keeps only weights that lower the score as a feature grows; here more direction and more
    gain may only raise it), negated back. ``heldout``: records split in two by parity, a map
    fitted on each half, and the pairwise accuracy of the compliance score (passed strictly
    above rejected, ties half) on the other half's pairs, for the fitted map and for the map in
    force before; None when a half lacks a label.
    """
    import numpy as np

    from pbmlx.judge import calibrate

    feats = calibrate.load_map(CLIP_MAP).features

    def fit(idx: list[int]) -> calibrate.LogisticMap:
        x = np.array([[-cases[i].raw[f] for f in feats] for i in idx], np.float64)
        y = np.array([cases[i].label for i in idx], np.float64)
        w, b = calibrate.fit_logistic(x, y)
        return calibrate.LogisticMap(feats, tuple(0.0 - float(v) for v in w), b, calibrated=True)

    def pair_accuracy(lm: calibrate.LogisticMap, ps: list[tuple[int, int, int]]) -> float:
        got = [_agree(lm.apply(cases[g].raw)[0], lm.apply(cases[r].raw)[0]) for _, g, r in ps]
        return sum(got) / len(got)  # type: ignore[arg-type]

    labels = {c.label for c in cases}
    if labels != {0, 1}:
        raise PbmlxError(
            f"Fitting the CLIP map needs CLIP-scored passed and rejected edits; found "
            f"{sum(c.label for c in cases)} passed and {sum(1 - c.label for c in cases)} "
            "rejected (generative instructions only: adjust ones are not scored by CLIP)."
        )
    before = calibrate.load_map(CLIP_MAP)
    held = {"pairs": 0, "accuracy": 0.0, "accuracy_before": 0.0}
    for part in (0, 1):
        train = [i for i, c in enumerate(cases) if c.record % 2 != part]
        test = [p for p in pairs if p[0] % 2 == part]
        if {cases[i].label for i in train} != {0, 1} or not test:
            held = None
            break
        lm = fit(train)
        held["pairs"] += len(test)
        held["accuracy"] += pair_accuracy(lm, test) * len(test)
        held["accuracy_before"] += pair_accuracy(before, test) * len(test)
    if held is not None:
        for k in ("accuracy", "accuracy_before"):
            held[k] = round(held[k] / held["pairs"], 4)
    lm = fit(list(range(len(cases))))
    return {"map": lm.to_dict(), "heldout": held}


def _write_json_new(path: Path, obj: dict) -> None:
    """Write ``obj`` to a new file ``path`` atomically (never over an existing file)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1)
            f.write("\n")
        os.link(tmp, path)  # fails if path appeared meanwhile: nothing is overwritten
    finally:
        os.unlink(tmp)


def judge_bench(
    path: str | Path,
    images: str | Path,
    *,
    model: Any = None,
    limit: int | None = None,
    instruction: str = "summarized",
    threshold: float = DEFAULT_THRESHOLD,
    progress: bool = False,
    fit_clip: str | Path | None = None,
) -> dict:
    """Judge every (passed, rejected) pair of a preference file; the report (see module doc).

    With ``fit_clip``, also fit the CLIP compliance map and write it there (a new file; see
    :func:`fit_clip_map`); the report gets ``clip_fit``.
    """
    from pbmlx.judge.core import Judge
    from pbmlx.judge.criteria import ClipCompliance

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
    fit_path = Path(fit_clip) if fit_clip is not None else None
    if fit_path is not None:
        if fit_path.exists():
            raise PbmlxError(f"{fit_path} exists; choose another path for --fit-clip.")
        if not fit_path.parent.is_dir():
            raise PbmlxError(f"The folder of {fit_path} does not exist.")
    judge = Judge(model=model, threshold=threshold)
    if fit_path is not None and not any(
        isinstance(p, ClipCompliance) and p.model is not None for p in judge.providers
    ):
        raise PbmlxError("--fit-clip needs a CLIP model: pass --model CLIP_DIR_OR_ID.")
    clip_cases: list[ClipCase] = []
    clip_pairs: list[tuple[int, int, int]] = []

    def clip_case(v: Any, record: int, label: int) -> int | None:
        d = v.details.get("compliance", {})
        if fit_path is None or d.get("provider") != "clip":
            return None
        clip_cases.append(ClipCase(record, label, dict(d["raw"])))
        return len(clip_cases) - 1

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
        g = clip_case(good, n, 1)
        for rej in r.rejected:
            bad = judge(r.source, rej, r.instruction, edit_type=r.edit_type)
            b = clip_case(bad, n, 0)
            if g is not None and b is not None:
                clip_pairs.append((n, g, b))
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

    clip_fit = None
    if fit_path is not None:
        fitted = fit_clip_map(clip_cases, clip_pairs)
        clip_fit = {
            "file": str(fit_path),
            "cases": len(clip_cases),
            "pairs": len(clip_pairs),
            "map": fitted["map"],
            "heldout": fitted["heldout"],
        }
        _write_json_new(
            fit_path,
            {
                "format": 1,
                "maps": {CLIP_MAP: fitted["map"]},
                "fitted_on": {
                    "preference_file": str(path),
                    "model": None if model is None else str(model),
                    "instruction": instruction,
                    **{k: clip_fit[k] for k in ("cases", "pairs", "heldout")},
                },
            },
        )

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
        **({"clip_fit": clip_fit} if clip_fit is not None else {}),
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
        fit_clip=args.fit_clip,
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
    fit = report.get("clip_fit")
    if fit is not None:
        from pbmlx.judge.calibrate import USER_CALIBRATION_ENV

        h = fit["heldout"]
        m = fit["map"]
        terms = ", ".join(f"{w:+.3g} {f}" for f, w in zip(m["features"], m["weights"], strict=True))
        print(
            f"CLIP map fitted on {fit['cases']} verdicts: sigmoid({m['bias']:+.3g} {terms}); "
            + (
                f"held-out compliance pairs {h['pairs']}: accuracy {h['accuracy']:.3f} "
                f"(before {h['accuracy_before']:.3f})"
                if h
                else "too few records for a held-out check"
            )
        )
        print(f"wrote {fit['file']}; use it with {USER_CALIBRATION_ENV}={fit['file']}")
    return 0
