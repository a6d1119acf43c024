"""``pbmlx judge-bench preference.jsonl --images DIR``: the judge against Pico-Banana's preferences.

Each record of Pico-Banana-400K's ``preference.jsonl`` holds a source photo, an instruction, the
edit that passed the dataset's judge and one or more failed attempts. For every (passed,
rejected) pair, the local judge agrees when it scores the passed edit strictly higher (ties
count half). Reported: pairwise accuracy overall, per edit type and per criterion.

Records are read by :func:`pbmlx.data.read_preference` (streamed; see :mod:`pbmlx.data` for
where files are looked for): the source photo (``local_input_image``, else the
``open_image_input_url`` found under ``--images`` by its path or file name, or in an Open Images
copy given as ``sources``), ``output_image`` (the passed edit) and ``rejected_images`` (a path or a
list), relative to ``--images``. The instruction is ``summarized_text`` (short, as a person would
write it; CLIP reads at most 77 tokens) unless ``--instruction text`` picks the long ``text``.
Edit types are grouped by :func:`pbmlx.data.edit_type_key` of their canonical name (the
release's spellings match case- and punctuation-insensitively) and passed to the judge (it tells
local from global edits).

A record whose files are missing is skipped and counted by reason, never guessed at; a line that
is not a JSON object refuses the whole file (a benchmark over a damaged file would mislead).
When a verdict is partial (no CLIP for a generative edit), pairs are ranked by the labelled
partial overall, and the report counts how many pairs that was.

``--fit-clip FILE`` (with a CLIP ``--model``) also fits the CLIP compliance map on the
CLIP-scored verdicts (passed edits labelled 1, rejected 0; :func:`fit_clip_map`), reports its
pairwise compliance accuracy on held-out records before and after, and writes FILE for
``PBMLX_JUDGE_CALIBRATION`` (see :mod:`pbmlx.judge.maps`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pbmlx.data import ReadStats, edit_type_key, read_preference
from pbmlx.errors import PbmlxError
from pbmlx.judge.verdict import CRITERIA, DEFAULT_THRESHOLD

# The instruction fields judge-bench offers (pbmlx.data's "both" would judge each record twice).
INSTRUCTION_KEYS = ("summarized", "text")


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

    The map is :func:`pbmlx.judge.fitting.fit_logistic` on the negated features (that fit
    keeps only weights that lower the score as a feature grows; here more direction and more
    gain may only raise it), negated back. ``heldout``: records split in two by parity, a map
    fitted on each half, and the pairwise accuracy of the compliance score (passed strictly
    above rejected, ties half) on the other half's pairs, for the fitted map and for the map in
    force before; None when a half lacks a label.
    """
    import numpy as np

    # The fit is offline code: imported on this path only, never by the runtime judge.
    from pbmlx.judge.fitting import fit_logistic
    from pbmlx.judge.maps import LogisticMap, load_map

    feats = load_map(CLIP_MAP).features

    def fit(idx: list[int]) -> LogisticMap:
        x = np.array([[-cases[i].raw[f] for f in feats] for i in idx], np.float64)
        y = np.array([cases[i].label for i in idx], np.float64)
        w, b = fit_logistic(x, y)
        return LogisticMap(
            feats, tuple(0.0 - float(v) for v in w), b, calibrated=True, kind="evidence"
        )

    def pair_accuracy(lm: LogisticMap, ps: list[tuple[int, int, int]]) -> float:
        got = [_agree(lm.apply(cases[g].raw)[0], lm.apply(cases[r].raw)[0]) for _, g, r in ps]
        return sum(got) / len(got)  # type: ignore[arg-type]

    labels = {c.label for c in cases}
    if labels != {0, 1}:
        raise PbmlxError(
            f"Fitting the CLIP map needs CLIP-scored passed and rejected edits; found "
            f"{sum(c.label for c in cases)} passed and {sum(1 - c.label for c in cases)} "
            "rejected (generative instructions only: adjust ones are not scored by CLIP)."
        )
    before = load_map(CLIP_MAP)
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
    sources: str | Path | None = None,
) -> dict:
    """Judge every (passed, rejected) pair of a preference file; the report (see module doc).

    ``limit``: only the first ``limit`` records of the file (used or skipped). ``sources``: an
    Open Images folder for the source photos (:mod:`pbmlx.data.sources`). With ``fit_clip``,
    also fit the CLIP compliance map and write it there (a new file; see :func:`fit_clip_map`);
    the report gets ``clip_fit``.
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
    stats = ReadStats()
    records = read_preference(
        path,
        images=images,
        sources=sources,
        instruction=instruction,
        stats=stats,
        strict=True,
        read_limit=limit,
    )
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

    by_type: dict[str, list[float]] = {}
    by_crit: dict[str, list[float]] = {c: [] for c in CRITERIA}
    scores: list[float] = []
    partial_pairs = 0
    used = 0
    for r in records:
        n = stats.read  # the record's number in the file (blank lines aside): held-out halves
        used += 1
        edit_type = edit_type_key(r.edit_type)
        good = judge(r.source, r.output, r.instruction, edit_type=edit_type)
        g = clip_case(good, n, 1)
        for rej in r.rejected:
            bad = judge(r.source, rej, r.instruction, edit_type=edit_type)
            b = clip_case(bad, n, 0)
            if g is not None and b is not None:
                clip_pairs.append((n, g, b))
            partial_pairs += int(good.partial or bad.partial)
            s = _agree(good.rank_score, bad.rank_score)
            assert s is not None
            scores.append(s)
            by_type.setdefault(edit_type, []).append(s)
            for c in CRITERIA:
                a = _agree(getattr(good, c), getattr(bad, c))
                if a is not None:
                    by_crit[c].append(a)
        if progress:
            sys.stderr.write(f"\rjudge-bench: {n} records read, {used} used, {len(scores)} pairs")
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
        "records": stats.read,
        "used": used,
        "skipped": dict(stats.skipped),
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
        sources=getattr(args, "sources", None),  # once the command offers --sources
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
        from pbmlx.judge.maps import USER_CALIBRATION_ENV

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
