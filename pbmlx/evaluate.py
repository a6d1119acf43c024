"""``pbmlx eval DATA --model M --out DIR``: an editor measured on Pico-Banana-400K, per edit type.

Three stages, one pass over the data (nothing is held but one record's images and the tallies):

1. **run** -- every SFT record (``DATA/sft.jsonl``, read by :func:`pbmlx.data.read_sft`) is
   edited the way ``pbmlx edit SOURCE INSTRUCTION`` edits it: the planner decides, photometric
   instructions take the exact adjust engine, the others the generative editor ``--model``
   (``--steps``, ``--size``, ``--seed``, ...). Every multi-turn session
   (``DATA/multi-turn.jsonl``, :func:`pbmlx.data.read_multi_turn`) is edited turn by turn:
   turn ``k`` (from 0) edits the 8-bit result of turn ``k - 1`` with seed ``--seed + k``, as
   ``pbmlx edit SOURCE I1 I2 ...`` seeds its turns.
2. **judge and compare** -- each edit is scored by the local judge (:mod:`pbmlx.judge`) against
   its own input, with the record's edit type. With ``--clip`` generative edits get CLIP
   compliance; without it their compliance is "not available", so their verdict is partial
   (``overall`` and ``accept`` null, ``partial_overall`` labelled): no score is invented, and no
   CLIP is picked up from a cache behind the user's back. The edit is then compared with the
   dataset's own output for that record (the reference), see :func:`compare`:

   * aligned when the aspect ratios agree within 2% (:data:`ASPECT_TOLERANCE`): the reference
     is resized (Lanczos) to the edit's size and
     ``PSNR = 10 log10(255^2 / MSE)`` over the 8-bit RGB samples, capped at
     :data:`PSNR_CAP_DB` (an identical pair reports exactly the cap, never infinity, so that
     means and JSON stay finite), and ``SSIM`` = the mean over R, G, B of Wang et al.'s mean
     SSIM (Gaussian window sigma 1.5, population covariance, data range 255: what
     ``skimage.metrics.structural_similarity(a, b, channel_axis=-1, data_range=255,
     gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`` returns);
   * otherwise ``alignment`` says "not aligned" and PSNR / SSIM are null;
   * ``clip_sim`` = ``cos(I(edited), I(reference))`` with CLIP's image embeddings, only with
     ``--clip``; it is computed for every reference, aligned or not, because CLIP embeddings
     do not depend on pixel registration.
3. **report** -- ``DIR/results.jsonl`` (one object per edit, :func:`_row`), ``DIR/summary.json``
   (built by :func:`_run`: per edit type, per group, multi-turn, overall, reader skip counts,
   settings, versions), ``DIR/report.html`` with PNG charts (``DIR/charts``) and before /
   edited / reference JPEG thumbnails (``DIR/thumbs``, for the first ``--max-thumbs`` edits),
   all linked relatively: the folder is viewable offline and can be moved.

``results.jsonl``, one object per edit (a session gives one per turn): ``id`` (``sft-<line>``
or ``mt-<line>-t<turn>``, the thumbnails' stem), ``kind`` ("sft" / "multi-turn"), ``line``,
``turn`` / ``turns`` (sessions; else null), ``edit_type`` (canonical name; "multi-turn" for
sessions), ``group``, ``instruction``, ``instruction_field``, ``source_id``, ``source``,
``reference`` (paths), ``route`` ("adjust" / "diffusion"), ``ops``, ``seed``, ``seconds`` (the
edit's wall time; the first generative edit also loads the weights), ``judge_seconds``,
``judge`` (``compliance``, ``seamlessness``, ``preservation``, ``quality``, ``overall``,
``accept``, ``partial``, ``missing``, ``partial_overall``, ``explanations``), ``size`` (the
edit's ``[w, h]``), ``alignment``, ``aligned``, ``reference_size``, ``psnr``, ``ssim``,
``clip_sim``, ``thumbs`` (``{"before", "edited", "reference"}`` paths relative to DIR, or null
past ``--max-thumbs``).

``summary.json``: ``counts`` (``edits``, ``sft``, ``sessions``, ``multi_turn_turns``),
``overall``, ``per_edit_type`` (type -> ``group`` and the :class:`Tally` fields), ``per_group``
(in the dataset's group order), ``multi_turn`` (with ``sessions`` and ``per_turn``),
``reader`` (each reader's :meth:`pbmlx.data.ReadStats.summary`: read, yielded, skipped and
filtered by reason), ``skipped`` (edits this command could not run, by reason: no editor, an
unreadable source, an edit refused) with the first ``errors``, ``settings`` (those in force),
``editor``, ``metrics`` (the PSNR cap, the aspect tolerance), ``versions``, ``seconds``.

Rates and means are over what could be measured, and say over how many: ``accept_rate =
accepted / judged`` where ``judged`` counts full verdicts (partial ones cannot pass or fail);
each mean score is over the edits where that criterion was scored (``scored`` gives the n).

DIR is written into a temporary sibling folder and renamed into place only when everything is
written, so a failed or interrupted run leaves no DIR (and an existing DIR is replaced only
with ``--overwrite``, and only at the end).
"""

from __future__ import annotations

import argparse
import html
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pbmlx.errors import PbmlxError
from pbmlx.pixels import unit_to_codes

if TYPE_CHECKING:
    from pbmlx.diffuse.settings import SamplerSettings

PSNR_CAP_DB = (
    100.0  # above any 8-bit pair that differs in a way one can see (1 code in 1e6 px: 113 dB)
)
ASPECT_TOLERANCE = 0.02  # |aspect_ref / aspect_edit - 1| up to this: the same framing, resized
THUMB_SIDE = 256  # long side of the report's thumbnails
DEFAULT_MAX_THUMBS = 300  # thumbnails for this many edits (the report stays small on a big split)
SPLITS = ("val", "train", "all")
INSTRUCTIONS = ("summarized", "text")
MULTI_TURN = "multi-turn"  # edit_type and group of the turns of multi-turn sessions
MAX_ERRORS_LISTED = 50  # summary["errors"] keeps the first ones; every one is counted
SCORE_KEYS = ("compliance", "seamlessness", "preservation", "quality", "overall")


# ---- comparison with the reference --------------------------------------------------------------


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """``min(10 log10(data_range^2 / MSE), PSNR_CAP_DB)`` of two equal-shape arrays, in dB.

    An identical pair (MSE 0) gives :data:`PSNR_CAP_DB` exactly.
    """
    if a.shape != b.shape:
        raise ValueError(f"psnr needs two equal shapes, got {a.shape} and {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0.0:
        return PSNR_CAP_DB
    return min(10.0 * math.log10(data_range * data_range / mse), PSNR_CAP_DB)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float | None:
    """Mean SSIM of two equal-shape (H, W) or (H, W, C) images, the channels' mean.

    Per channel: :func:`pbmlx.judge.measure.ssim` (Wang et al. 2004, Gaussian window sigma 1.5,
    mean over the pixels at least one window radius from the edges). None when the image is too
    small to hold one window (a side of 11 px or less).
    """
    from pbmlx.judge import measure

    if a.shape != b.shape:
        raise ValueError(f"ssim needs two equal shapes, got {a.shape} and {b.shape}")
    radius = int(measure.SSIM_TRUNCATE * measure.SSIM_SIGMA + 0.5)
    if min(a.shape[:2]) <= 2 * radius + 1:
        return None
    a3 = a.reshape(*a.shape[:2], -1).astype(np.float64)
    b3 = b.reshape(*b.shape[:2], -1).astype(np.float64)
    return float(
        np.mean([measure.ssim(a3[..., c], b3[..., c], data_range) for c in range(a3.shape[-1])])
    )


def aspect_mismatch(size: tuple[int, int], other: tuple[int, int]) -> float:
    """``|aspect(other) / aspect(size) - 1|`` for ``(width, height)`` sizes."""
    return abs((other[0] / other[1]) / (size[0] / size[1]) - 1.0)


def compare(edited: np.ndarray, reference: np.ndarray | None, clip: Any = None) -> dict[str, Any]:
    """The edit against the dataset's output: ``alignment``, ``psnr``, ``ssim``, ``clip_sim``.

    ``edited`` / ``reference``: uint8 (H, W, 3). ``alignment`` is "same size", "resized"
    (aspects within :data:`ASPECT_TOLERANCE`: the reference resized to the edit's size) or
    "not aligned" (PSNR and SSIM then null), or "no reference". ``clip_sim`` (with a CLIP
    model) is the cosine of the two images' CLIP embeddings, aligned or not.
    """
    out: dict[str, Any] = {
        "alignment": "no reference",
        "aligned": None,
        "reference_size": None,
        "psnr": None,
        "ssim": None,
        "clip_sim": None,
    }
    if reference is None:
        return out
    h, w = edited.shape[:2]
    rh, rw = reference.shape[:2]
    out["reference_size"] = [rw, rh]
    mismatch = aspect_mismatch((w, h), (rw, rh))
    if (rw, rh) == (w, h):
        ref = reference
        out["alignment"] = "same size"
    elif mismatch <= ASPECT_TOLERANCE:
        ref = np.asarray(Image.fromarray(reference).resize((w, h), Image.Resampling.LANCZOS))
        out["alignment"] = "resized"
    else:
        ref = None
        out["alignment"] = (
            f"not aligned: aspect {rw / rh:.3f} vs {w / h:.3f} (differs by {mismatch:.1%})"
        )
    out["aligned"] = ref is not None
    if ref is not None:
        out["psnr"] = round(psnr(edited, ref), 4)
        s = ssim(edited, ref)
        out["ssim"] = None if s is None else round(s, 5)
    if clip is not None:
        emb = np.asarray(clip.encode_image(np.stack([_square(edited), _square(reference)])))
        e = emb.astype(np.float64)
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        out["clip_sim"] = round(float(e[0] @ e[1]), 5)
    return out


def _square(x: np.ndarray, side: int = 224) -> np.ndarray:
    """An image resized to ``side`` x ``side`` (uint8) so two images of any sizes stack; CLIP's
    preprocessor resizes and centre-crops to its own input size anyway."""
    h, w = x.shape[:2]
    s = side / min(h, w)
    im = Image.fromarray(x).resize((max(side, round(w * s)), max(side, round(h * s))))
    left, top = (im.width - side) // 2, (im.height - side) // 2
    return np.asarray(im.crop((left, top, left + side, top + side)))


# ---- tallies ------------------------------------------------------------------------------------


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


@dataclass
class Tally:
    """Counts and sums over some edits; :meth:`to_dict` gives rates and means over what was
    measured, with the n of each."""

    count: int = 0
    judged: int = 0  # full verdicts: overall and accept are known
    accepted: int = 0
    partial: int = 0  # partial verdicts (a criterion could not be scored)
    scores: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in SCORE_KEYS})
    partial_overall: list[float] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    clip_sim: list[float] = field(default_factory=list)
    alignment: Counter = field(default_factory=Counter)  # aligned / not aligned / no reference
    seconds: list[float] = field(default_factory=list)

    def add(self, row: dict) -> None:
        j = row["judge"]
        self.count += 1
        if j["accept"] is not None:
            self.judged += 1
            self.accepted += bool(j["accept"])
        if j["partial"]:
            self.partial += 1
            if j["partial_overall"] is not None:
                self.partial_overall.append(j["partial_overall"])
        for k in SCORE_KEYS:
            if j[k] is not None:
                self.scores[k].append(j[k])
        for k in ("psnr", "ssim", "clip_sim"):
            if row[k] is not None:
                getattr(self, k).append(row[k])
        a = row["aligned"]
        self.alignment["no reference" if a is None else "aligned" if a else "not aligned"] += 1
        self.seconds.append(row["seconds"])

    def to_dict(self) -> dict:
        return {
            "count": self.count,
            "judged": self.judged,
            "accepted": self.accepted,
            "accept_rate": round(self.accepted / self.judged, 4) if self.judged else None,
            "partial": self.partial,
            "scores": {k: _mean(v) for k, v in self.scores.items()},
            "scored": {k: len(v) for k, v in self.scores.items()},
            "partial_overall": _mean(self.partial_overall),
            "psnr": _mean(self.psnr),
            "ssim": _mean(self.ssim),
            "clip_sim": _mean(self.clip_sim),
            "compared": len(self.psnr),
            "alignment": {k: self.alignment[k] for k in ("aligned", "not aligned", "no reference")},
            "seconds": _mean(self.seconds),
        }


# ---- settings and the run -----------------------------------------------------------------------


@dataclass
class EvalSettings:
    """What ``pbmlx eval`` was asked to do (the CLI flags)."""

    data: Path
    out: Path
    model: str | None = None
    limit: int | None = None
    edit_types: list[str] | None = None
    steps: int | None = None  # None: the editor's default
    size: int | None = None
    seed: int = 0
    split: str = "val"
    instruction: str = "summarized"
    clip: str | None = None
    guidance: float | None = None
    image_guidance: float | None = None
    scheduler: str | None = None
    max_thumbs: int = DEFAULT_MAX_THUMBS
    overwrite: bool = False
    sources: Path | None = None  # a local Open Images folder for the source photos

    @property
    def sampler(self) -> SamplerSettings:
        """The editor's sampler settings in force: ``steps``, ``size``, ``guidance``,
        ``image_guidance`` and ``scheduler`` where given, the defaults elsewhere (its ``seed``
        is the default: turn k of a record is edited with ``seed + k``). Bad values raise
        :class:`PbmlxError`."""
        from pbmlx.diffuse.settings import resolve

        return resolve(
            steps=self.steps,
            size=self.size,
            guidance=self.guidance,
            image_guidance=self.image_guidance,
            scheduler=self.scheduler,
        )

    def to_dict(self) -> dict:
        return {
            "data": str(self.data),
            "out": str(self.out),
            "model": self.model,
            "limit": self.limit,
            "edit_types": self.edit_types,
            "steps": self.steps,
            "size": self.size,
            "seed": self.seed,
            "split": self.split,
            "instruction": self.instruction,
            "clip": self.clip,
            "guidance": self.guidance,
            "image_guidance": self.image_guidance,
            "scheduler": self.scheduler,
            "max_thumbs": self.max_thumbs,
            "sources": None if self.sources is None else str(self.sources),
        }


@dataclass
class _Job:
    """One SFT record (one turn) or one multi-turn session (several)."""

    kind: str  # "sft" or MULTI_TURN
    line: int
    source: Path
    instructions: list[str]
    references: list[Path | None]
    edit_type: str
    group: str
    instruction_field: str | None
    source_id: str | None


def _editor_options(s: EvalSettings) -> Any:
    from pbmlx.flow import EditorOptions

    return EditorOptions(model=s.model, sampler=s.sampler)


def _check_data(data: Path) -> tuple[Path | None, Path | None]:
    """``(sft.jsonl, multi-turn.jsonl)`` in DATA, each None when absent; neither: PbmlxError."""
    if not data.exists():
        raise PbmlxError(f"Dataset folder {data} does not exist.")
    if not data.is_dir():
        raise PbmlxError(
            f"DATA {data} is not a folder; give the folder holding sft.jsonl or multi-turn.jsonl."
        )
    sft, multi = data / "sft.jsonl", data / "multi-turn.jsonl"
    found = (sft if sft.is_file() else None, multi if multi.is_file() else None)
    if found == (None, None):
        raise PbmlxError(f"Dataset folder {data} has neither sft.jsonl nor multi-turn.jsonl.")
    return found


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise PbmlxError(f"Output {out} exists and is not a folder.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise PbmlxError(
            f"Output folder {out} exists and is not empty; pass --overwrite to replace it."
        )
    if not out.parent.is_dir():
        raise PbmlxError(f"The folder {out.parent} for the output does not exist.")


def _jobs(s: EvalSettings, sft: Path | None, multi: Path | None, stats: dict) -> Iterator[_Job]:
    """SFT records, then multi-turn sessions (sessions have no edit type: with --edit-types
    they are left out). ``--limit`` applies to each file. The readers are opened here, not on
    the first ``next``, so that a bad filter (an unknown edit type) raises before any work."""
    from pbmlx.data import ReadStats, read_multi_turn, read_sft

    split = None if s.split == "all" else s.split
    records = sessions = None
    if sft is not None:
        stats["sft"] = ReadStats()
        records = read_sft(
            s.data,
            edit_types=s.edit_types,
            sources=s.sources,
            instruction=s.instruction,
            split=split,
            limit=s.limit,
            stats=stats["sft"],
        )
    if multi is not None and not s.edit_types:
        stats[MULTI_TURN] = ReadStats()
        sessions = read_multi_turn(
            s.data, sources=s.sources, split=split, limit=s.limit, stats=stats[MULTI_TURN]
        )
    return _chain_jobs(records, sessions)


def _chain_jobs(records: Iterator[Any] | None, sessions: Iterator[Any] | None) -> Iterator[_Job]:
    for r in records or ():
        yield _Job(
            "sft",
            r.line,
            Path(r.source),
            [r.instruction],
            [Path(r.output) if r.output is not None else None],
            r.edit_type,
            r.group,
            r.instruction_field,
            r.source_id,
        )
    for x in sessions or ():
        refs = [None if o is None else Path(o) for o in x.outputs]
        refs += [None] * (len(x.instructions) - len(refs))
        yield _Job(
            MULTI_TURN,
            x.line,
            Path(x.source),
            list(x.instructions),
            refs[: len(x.instructions)],
            MULTI_TURN,
            MULTI_TURN,
            None,
            x.source_id,
        )


def _read_codes(path: Path) -> np.ndarray:
    """uint8 (H, W, 3) upright RGB of an image file (PbmlxError for a bad one)."""
    from pbmlx.load import read_image

    photo = read_image(path)
    if photo.codes is not None:
        return photo.codes
    return unit_to_codes(photo.rgb)


def _thumb(x: np.ndarray, path: Path) -> None:
    im = Image.fromarray(x)
    im.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS)
    im.save(path, "JPEG", quality=85)


class _Runner:
    """Carries out jobs and writes one results row per edit into the work folder."""

    def __init__(self, s: EvalSettings, work: Path, editor: Any, judge: Any, clip: Any):
        self.s, self.work, self.editor, self.judge, self.clip = s, work, editor, judge, clip
        self.options = _editor_options(s)
        self.skipped: Counter = Counter()
        self.errors: list[dict] = []
        self.thumbs = 0

    def _skip(self, job: _Job, reason: str, message: str, turns: int = 1) -> None:
        self.skipped[reason] += turns
        if len(self.errors) < MAX_ERRORS_LISTED:
            self.errors.append(
                {"kind": job.kind, "line": job.line, "reason": reason, "error": message}
            )

    def run(self, job: _Job) -> Iterator[dict]:
        from pbmlx.flow import edit
        from pbmlx.plan import plan

        plans = [plan(t) for t in job.instructions]
        n = len(plans)
        if self.editor is None and any(p.route == "diffusion" for p in plans):
            self._skip(job, "needs the generative editor and no --model is set", "", n)
            return
        try:
            before = _read_codes(job.source)
        except PbmlxError as e:
            self._skip(job, "source image unreadable", str(e), n)
            return
        for k, (p, instruction) in enumerate(zip(plans, job.instructions, strict=True)):
            t0 = time.perf_counter()
            seed = self.s.seed + k
            try:
                result = edit(
                    Image.fromarray(before),
                    instruction,
                    seed=seed,
                    model=self.editor,
                    settings=self.options.sampler,
                )
            except PbmlxError as e:
                self._skip(job, "edit failed", str(e), n - k)
                return
            seconds = time.perf_counter() - t0
            edited = np.asarray(result.image.convert("RGB"))
            t1 = time.perf_counter()
            verdict = self.judge(before, edited, instruction, edit_type=self._judge_type(job))
            judge_seconds = time.perf_counter() - t1
            reference, ref_error = None, None
            if job.references[k] is not None:
                try:
                    reference = _read_codes(job.references[k])
                except PbmlxError as e:
                    ref_error = str(e)
            cmp = compare(edited, reference, self.clip)
            if ref_error is not None:
                cmp["alignment"] = "reference unreadable"
            row = _row(job, k, p, verdict, cmp, seconds, judge_seconds, seed, edited.shape)
            if self.thumbs < self.s.max_thumbs:
                row["thumbs"] = self._thumbs(row["id"], before, edited, reference)
                self.thumbs += 1
            yield row
            before = edited

    @staticmethod
    def _judge_type(job: _Job) -> str | None:
        return None if job.kind == MULTI_TURN else job.edit_type

    def _thumbs(self, rid: str, before, edited, reference) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for name, x in (("before", before), ("edited", edited), ("reference", reference)):
            if x is None:
                out[name] = None
                continue
            rel = f"thumbs/{rid}-{name}.jpg"
            _thumb(x, self.work / rel)
            out[name] = rel
        return out


def _row(
    job: _Job,
    k: int,
    p: Any,
    verdict: Any,
    cmp: dict,
    seconds: float,
    judge_seconds: float,
    seed: int,
    shape: tuple[int, ...],
) -> dict:
    """One results.jsonl object (fields: the module docstring)."""
    details = verdict.details
    turn = k + 1 if job.kind == MULTI_TURN else None
    rid = f"sft-{job.line}" if turn is None else f"mt-{job.line}-t{turn}"
    return {
        "id": rid,
        "kind": job.kind,
        "line": job.line,
        "turn": turn,
        "turns": len(job.instructions) if turn is not None else None,
        "edit_type": job.edit_type,
        "group": job.group,
        "instruction": job.instructions[k],
        "instruction_field": job.instruction_field,
        "source_id": job.source_id,
        "source": str(job.source),
        "reference": None if job.references[k] is None else str(job.references[k]),
        "route": p.route,
        "ops": [{"op": o["op"], "amount": o["amount"]} for o in p.ops],
        "seed": seed,
        "seconds": round(seconds, 4),
        "judge_seconds": round(judge_seconds, 4),
        "judge": {
            "compliance": verdict.compliance,
            "seamlessness": verdict.seamlessness,
            "preservation": verdict.preservation,
            "quality": verdict.quality,
            "overall": verdict.overall,
            "accept": verdict.accepted,
            "partial": verdict.partial,
            "missing": list(details.get("missing", [])),
            "partial_overall": details.get("partial_overall"),
            "explanations": {c: details.get(c, {}).get("explanation", "") for c in SCORE_KEYS[:-1]},
        },
        "size": [int(shape[1]), int(shape[0])],
        **cmp,
        "thumbs": None,
    }


def _make_judge(clip_name: str | None) -> tuple[Any, Any]:
    """(judge, CLIP model or None). Without ``clip_name`` the judge has no CLIP at all (not
    even a cached default): generative edits get partial verdicts, the same on every machine."""
    from pbmlx.judge import criteria
    from pbmlx.judge.core import Judge, load_clip

    if clip_name is not None:
        clip, _ = load_clip(clip_name)
        return Judge(model=clip), clip
    why = "no --clip given: generative edits' compliance needs a CLIP model"
    providers = criteria.default_providers(criteria.ClipCompliance(None, why))
    return Judge(providers=providers), None


def _versions() -> dict[str, str]:
    from importlib import metadata

    import PIL

    from pbmlx import __version__

    out = {"pbmlx": __version__, "python": platform.python_version(), "numpy": np.__version__}
    out["pillow"] = PIL.__version__
    try:
        out["mlx"] = metadata.version("mlx")
    except metadata.PackageNotFoundError:
        out["mlx"] = "unknown"
    return out


def evaluate(s: EvalSettings, *, progress: bool = True) -> dict:
    """Run the evaluation ``s`` describes, write DIR (``s.out``) and return the summary.

    Raises :class:`PbmlxError` before any work for a missing DATA, an output folder that exists
    (without ``overwrite``), a model or CLIP that does not load or bad editor settings; and,
    after reading, when no record is left after the filters (nothing is written then).
    """
    from pbmlx.flow import load_editor

    if s.split not in SPLITS:
        raise PbmlxError(f"Unknown split {s.split!r}; choose one of {', '.join(SPLITS)}.")
    if s.instruction not in INSTRUCTIONS:
        raise PbmlxError(
            f"Unknown instruction field {s.instruction!r}; choose one of {', '.join(INSTRUCTIONS)}."
        )
    if isinstance(s.max_thumbs, bool) or not isinstance(s.max_thumbs, int) or s.max_thumbs < 0:
        raise PbmlxError(f"max_thumbs must be a whole number >= 0, got {s.max_thumbs!r}.")
    sft, multi = _check_data(Path(s.data))
    out = Path(s.out)
    _check_out(out, s.overwrite)
    options = _editor_options(s)
    sampler = options.sampler
    # The settings reported are the ones in force (the editor's defaults where not given).
    from pbmlx.diffuse.settings import FIELDS

    s = replace(s, **{k: getattr(sampler, k) for k in FIELDS - {"seed"}})
    editor = load_editor(options)
    if editor is not None:
        editor.check_settings(sampler, seed=s.seed)
    judge, clip = _make_judge(s.clip)

    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    work.chmod(0o777 & ~umask)  # mkdtemp's 0700 would make DIR private: a report is to be read
    try:
        summary = _run(s, work, sft, multi, editor, judge, clip, progress)
        summary["seconds"] = round(time.perf_counter() - t0, 3)
        _write_json(work / "summary.json", summary)
        from pbmlx.save import publish_folder  # not at import: the CLI parser loads this module

        publish_folder(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return summary


def _run(s, work, sft, multi, editor, judge, clip, progress) -> dict:
    from tqdm import tqdm

    (work / "thumbs").mkdir()
    (work / "charts").mkdir()
    runner = _Runner(s, work, editor, judge, clip)
    reader_stats: dict[str, Any] = {}
    tallies: dict[str, dict[str, Tally]] = {"edit_type": {}, "group": {}, "turn": {}}
    overall, multi_tally = Tally(), Tally()
    sessions = 0
    shown: list[dict] = []  # rows with thumbnails, for the report's gallery
    jobs = _jobs(s, sft, multi, reader_stats)
    bar = None  # made at the first edit: a run that finds nothing to do draws no bar
    try:
        with open(work / "results.jsonl", "w", encoding="utf-8") as f:
            for job in jobs:
                sessions += job.kind == MULTI_TURN
                for row in runner.run(job):
                    f.write(json.dumps(row, allow_nan=False) + "\n")
                    overall.add(row)
                    if row["kind"] == MULTI_TURN:
                        multi_tally.add(row)
                        tallies["turn"].setdefault(str(row["turn"]), Tally()).add(row)
                    else:
                        tallies["edit_type"].setdefault(row["edit_type"], Tally()).add(row)
                        tallies["group"].setdefault(row["group"], Tally()).add(row)
                    if row["thumbs"] is not None:
                        shown.append(row)
                    if bar is None:
                        bar = tqdm(
                            desc="eval",
                            unit="edit",
                            file=sys.stderr,
                            dynamic_ncols=True,
                            disable=not progress,
                        )
                    bar.update(1)
                    bar.set_postfix_str(f"accepted {overall.accepted}/{overall.judged}")
    finally:
        if bar is not None:
            bar.close()  # ends the bar's line, so an error message starts on its own
    reader = {k: v.summary() for k, v in reader_stats.items()}
    if overall.count == 0:
        raise PbmlxError(_nothing_message(s, reader, runner.skipped))
    from pbmlx.data import group_of

    per_type = {}
    for t, tally in sorted(tallies["edit_type"].items()):
        per_type[t] = {"group": group_of(t), **tally.to_dict()}
    summary = {
        "data": str(s.data),
        "out": str(s.out),
        "counts": {
            "edits": overall.count,
            "sft": sum(t.count for t in tallies["edit_type"].values()),
            "sessions": sessions,
            "multi_turn_turns": multi_tally.count,
        },
        "overall": overall.to_dict(),
        "per_edit_type": per_type,
        "per_group": {g: t.to_dict() for g, t in _group_order(tallies["group"])},
        "multi_turn": {
            **multi_tally.to_dict(),
            "sessions": sessions,
            "per_turn": {
                k: t.to_dict()
                for k, t in sorted(tallies["turn"].items(), key=lambda kv: int(kv[0]))
            },
        },
        "reader": reader,
        "skipped": dict(runner.skipped),
        "errors": runner.errors,
        "settings": s.to_dict(),
        # the editor actually used (--model, else $PBMLX_MODEL or the config file), or None
        "editor": None if editor is None else str(editor.model),
        "metrics": {
            "psnr_cap_db": PSNR_CAP_DB,
            "aspect_tolerance": ASPECT_TOLERANCE,
            "ssim": "mean over RGB of Gaussian-window SSIM (sigma 1.5), data range 255",
            "judge_clip": s.clip,
        },
        "versions": _versions(),
        "results": "results.jsonl",
        "report": "report.html",
    }
    charts = write_charts(work / "charts", summary)
    (work / "report.html").write_text(render_report(summary, shown, charts), encoding="utf-8")
    return summary


def _group_order(groups: dict[str, Any]) -> list[tuple[str, Any]]:
    """``groups`` items in the dataset's group order, unknown names after."""
    from pbmlx.data import EDIT_GROUPS

    order = list(EDIT_GROUPS)
    return sorted(
        groups.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0])
    )


def _nothing_message(s: EvalSettings, reader: dict, skipped: Counter) -> str:
    filters = [f"split {s.split}"]
    if s.edit_types:
        filters.append(f"edit types {', '.join(s.edit_types)}")
    if s.limit:
        filters.append(f"limit {s.limit}")
    why = dict(skipped)
    for v in reader.values():
        for key in ("filtered", "skipped"):
            for reason, n in (v.get(key) or {}).items():
                label = f"filtered by {reason}" if key == "filtered" else reason
                why[label] = why.get(label, 0) + n
    tail = f"; skipped: {', '.join(f'{r} ({n})' for r, n in why.items())}" if why else ""
    hint = "" if s.split == "all" else " (try --split all)"
    return f"No record of {s.data} was left to evaluate after the filters ({'; '.join(filters)}){hint}{tail}."


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n", encoding="utf-8")


# ---- charts (PIL: no plotting library needed) ---------------------------------------------------

GROUP_COLOURS = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (23, 190, 207),
    (127, 127, 127),
]
CRITERION_COLOURS = [(31, 119, 180), (44, 160, 44), (255, 127, 14), (148, 103, 189), (40, 40, 40)]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _group_colour(group: str) -> tuple[int, int, int]:
    from pbmlx.data import EDIT_GROUPS

    order = list(EDIT_GROUPS)
    return GROUP_COLOURS[order.index(group) if group in order else len(GROUP_COLOURS) - 1]


# PIL's built-in font lacks some characters of the release's type names: ASCII stand-ins.
_ASCII = str.maketrans({"↔": "<->", "–": "-", "—": "-", "…": "...", "’": "'"})


def _label(text: str, width: int) -> str:
    """``text`` in characters the chart font has, cut to ``width`` characters."""
    text = text.translate(_ASCII)
    return text if len(text) <= width else text[: width - 3] + "..."


def bar_chart(
    title: str,
    bars: list[tuple[str, float | None, str, tuple[int, int, int]]],
    path: Path,
    *,
    vmax: float = 1.0,
    marker: float | None = None,
) -> None:
    """A horizontal bar chart PNG: ``bars`` = (label, value or None, value text, colour); a
    None value draws no bar (its text says why). ``marker``: a dashed line at that value."""
    font, small = _font(14), _font(12)
    row, left, right, top = 22, 330, 150, 40
    width = 1000
    plot = width - left - right
    im = Image.new("RGB", (width, top + row * max(len(bars), 1) + 30), "white")
    d = ImageDraw.Draw(im)
    d.text((10, 10), title, fill="black", font=font)
    for i, (label, value, text, colour) in enumerate(bars):
        y = top + i * row
        d.text((10, y + 3), _label(label, 46), fill="black", font=small)
        if value is not None:
            w = max(1, round(plot * min(max(value, 0.0), vmax) / vmax))
            d.rectangle((left, y + 3, left + w, y + row - 3), fill=colour)
        d.text((left + plot + 8, y + 3), text, fill="black", font=small)
    bottom = top + row * max(len(bars), 1)
    d.line((left, top, left, bottom), fill="black")
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = left + round(plot * frac)
        d.line((x, bottom, x, bottom + 4), fill="black")
        d.text((x - 10, bottom + 6), f"{vmax * frac:g}", fill="black", font=small)
    if marker is not None:
        x = left + round(plot * marker / vmax)
        for y in range(top, bottom, 8):
            d.line((x, y, x, y + 4), fill=(200, 0, 0))
    im.save(path, "PNG")


def grouped_chart(
    title: str, groups: list[tuple[str, dict[str, float | None]]], path: Path
) -> None:
    """Vertical grouped bars in [0, 1]: one cluster per group, one bar per key of its dict (a
    None value: no bar, "n/a" under it)."""
    font, small = _font(14), _font(12)
    keys = list(groups[0][1]) if groups else []
    cluster = max(len(keys), 1) * 16 + 30
    left, top, height = 50, 60, 260
    width = max(600, left + cluster * len(groups) + 20)
    im = Image.new("RGB", (width, top + height + 70), "white")
    d = ImageDraw.Draw(im)
    d.text((10, 10), title, fill="black", font=font)
    for i, k in enumerate(keys):  # the legend
        x = 10 + i * 130
        d.rectangle((x, 34, x + 12, 46), fill=CRITERION_COLOURS[i % len(CRITERION_COLOURS)])
        d.text((x + 16, 33), k, fill="black", font=small)
    base = top + height
    for frac in (0.0, 0.5, 0.7, 1.0):
        y = base - round(height * frac)
        d.line(
            (left - 4, y, width - 10, y), fill=(200, 200, 200) if frac != 0.7 else (230, 120, 120)
        )
        d.text((8, y - 7), f"{frac:g}", fill="black", font=small)
    for g, (name, values) in enumerate(groups):
        x0 = left + g * cluster + 10
        for i, k in enumerate(keys):
            v = values[k]
            x = x0 + i * 16
            if v is None:
                d.text((x, base - 14), "-", fill="gray", font=small)
                continue
            d.rectangle(
                (x, base - round(height * v), x + 12, base),
                fill=CRITERION_COLOURS[i % len(CRITERION_COLOURS)],
            )
        d.text((x0, base + 6), _label(name, 18), fill="black", font=small)
    im.save(path, "PNG")


def write_charts(folder: Path, summary: dict) -> dict[str, str]:
    """The report's charts as PNG files in ``folder``; returns {name: path relative to DIR}."""
    charts = {}
    rows = _type_rows(summary)
    bars = []
    for t, g, st in rows:
        if st is None:
            continue
        rate = st["accept_rate"]
        text = (
            f"{rate:.2f} of {st['judged']}"
            if rate is not None
            else f"n/a ({st['partial']} partial)"
        )
        bars.append((t, rate, text, _group_colour(g)))
    if summary["multi_turn"]["count"]:
        mt = summary["multi_turn"]
        rate = mt["accept_rate"]
        text = (
            f"{rate:.2f} of {mt['judged']}"
            if rate is not None
            else f"n/a ({mt['partial']} partial)"
        )
        bars.append(("multi-turn sessions (all turns)", rate, text, GROUP_COLOURS[-1]))
    if bars:
        bar_chart(
            "Accept rate per edit type (judge overall >= 0.7)",
            bars,
            folder / "accept_rate.png",
            marker=None,
        )
        charts["accept_rate"] = "charts/accept_rate.png"
    groups = [(g, st["scores"]) for g, st in summary["per_group"].items()]
    if summary["multi_turn"]["count"]:
        groups.append(("multi-turn", summary["multi_turn"]["scores"]))
    if groups:
        grouped_chart(
            "Mean judge scores per group (line: pass mark 0.7)", groups, folder / "scores.png"
        )
        charts["scores"] = "charts/scores.png"
    sims = [
        (
            t,
            st["ssim"],
            "n/a" if st["ssim"] is None else f"{st['ssim']:.3f} (n={st['compared']})",
            _group_colour(g),
        )
        for t, g, st in rows
        if st is not None
    ]
    if any(v is not None for _, v, _, _ in sims):
        bar_chart("Mean SSIM to the dataset's output, per edit type", sims, folder / "ssim.png")
        charts["ssim"] = "charts/ssim.png"
    return charts


# ---- the HTML report ----------------------------------------------------------------------------


def _type_rows(summary: dict) -> list[tuple[str, str, dict | None]]:
    """(edit type, group, stats or None) for every type of the dataset's 8 groups in order,
    then any other type seen; stats None for a type with no edit in this run."""
    from pbmlx.data import EDIT_GROUPS, edit_type_key

    per_type = summary["per_edit_type"]
    by_key = {edit_type_key(t): t for t in per_type}
    rows, used = [], set()
    for g, types in EDIT_GROUPS.items():
        for t in types:
            seen = by_key.get(edit_type_key(t))
            if seen is not None:
                used.add(seen)
            rows.append((seen or t, g, per_type.get(seen) if seen else None))
    for t, st in per_type.items():
        if t not in used:
            rows.append((t, st["group"], st))
    return rows


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _stat_cells(st: dict | None) -> str:
    if st is None:
        return '<td class="num">0</td>' + '<td class="na">–</td>' * 10
    rate = st["accept_rate"]
    cells = [
        str(st["count"]),
        f"{_fmt(rate)} <small>of {st['judged']}</small>" if rate is not None else "n/a",
        *(_fmt(st["scores"][k]) for k in SCORE_KEYS),
        _fmt(st["partial_overall"]),
        _fmt(st["psnr"], 1),
        _fmt(st["ssim"], 3),
        _fmt(st["clip_sim"], 3),
    ]
    return "".join(f'<td class="num">{c}</td>' for c in cells)


STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px;
       color: #222; max-width: 1200px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: left; }
th { background: #f3f3f3; }
tr.group td { background: #e8eef7; font-weight: 600; }
tr.empty td { color: #aaa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.na { color: #aaa; text-align: right; }
.note { color: #555; font-size: 13px; }
.charts img { max-width: 100%; border: 1px solid #eee; margin: 6px 0; }
.edit { display: flex; gap: 10px; align-items: flex-start; border-top: 1px solid #eee;
        padding: 8px 0; }
.edit figure { margin: 0; text-align: center; font-size: 11px; color: #555; }
.edit img { width: 200px; height: 200px; object-fit: contain; display: block;
            background: #f4f4f4; }
.edit .missing { width: 200px; height: 200px; background: #f4f4f4; color: #999;
                 display: flex; align-items: center; justify-content: center; }
.edit .text { font-size: 12px; max-width: 500px; }
.accept { color: #187a18; font-weight: 600; } .reject { color: #b42318; font-weight: 600; }
.partial { color: #8a6d00; font-weight: 600; }
"""


def render_report(summary: dict, shown: list[dict], charts: dict[str, str]) -> str:
    """The report page: self-contained HTML (inline CSS, no script, no external URL); images by
    relative path within DIR."""
    e = html.escape
    s = summary["settings"]
    o = summary["overall"]
    editor = (
        f"editor <code>{e(summary['editor'])}</code>"
        if summary["editor"]
        else "no editor (records that need it skipped)"
    )
    clip = (
        f"CLIP <code>{e(s['clip'])}</code>"
        if s["clip"]
        else "without CLIP (generative edits' compliance not measured: partial verdicts)"
    )
    rate = "" if o["accept_rate"] is None else f" ({o['accept_rate']:.0%})"
    head = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>pbmlx eval report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>pbmlx eval: per-edit-type report</h1>",
        f'<p class="note">Data <code>{e(str(summary["data"]))}</code> (split {e(s["split"])}, '
        f"instruction field {e(s['instruction'])}); {editor}; "
        f"steps {e(_fmt(s['steps']))}, size {e(_fmt(s['size']))}, seed {s['seed']}; judge "
        f"{clip}. pbmlx {e(summary['versions']['pbmlx'])}.</p>",
        f"<p>{o['count']} edits ({summary['counts']['sft']} single-turn, "
        f"{summary['counts']['multi_turn_turns']} turns of {summary['counts']['sessions']} "
        f"multi-turn sessions): accepted {o['accepted']} of {o['judged']} fully judged"
        f"{rate}; "
        f"{o['partial']} partial verdicts (a criterion not measurable: not accepted or "
        f"rejected); compared with the dataset's output: {o['compared']}.</p>",
    ]
    skipped = dict(summary["skipped"])
    for name, r in summary["reader"].items():
        for reason, n in (r.get("skipped") or {}).items():
            skipped[f"{name}: {reason}"] = n
    if skipped:
        items = "".join(f"<li>{e(k)}: {n}</li>" for k, n in skipped.items())
        head.append(f'<p class="note">Skipped:</p><ul class="note">{items}</ul>')

    cols = [
        "edit type",
        "n",
        "accept rate",
        "compliance",
        "seamless",
        "preserve",
        "quality",
        "overall",
        "partial overall",
        "PSNR dB",
        "SSIM",
        "CLIP sim",
    ]
    table = [
        "<h2>Per edit type</h2>",
        '<p class="note">Means over the edits where a value could be measured. Accept rate: '
        "accepted / fully judged (the n after it). Partial overall: the weighted mean of the "
        "criteria that were scored, for verdicts missing one (labelled, never used to accept). "
        "PSNR / SSIM against the dataset's output where the two are aligned (PSNR capped at "
        f"{summary['metrics']['psnr_cap_db']:g} dB for identical images).</p>",
        "<table><thead><tr>" + "".join(f"<th>{c}</th>" for c in cols) + "</tr></thead><tbody>",
    ]
    rows = _type_rows(summary)
    groups: dict[str, list] = {}
    for t, g, st in rows:
        groups.setdefault(g, []).append((t, st))
    for g, items in groups.items():
        gst = summary["per_group"].get(g)
        table.append(f'<tr class="group"><td>{e(g)}</td>{_stat_cells(gst)}</tr>')
        for t, st in items:
            cls = ' class="empty"' if st is None else ""
            table.append(f"<tr{cls}><td>{e(t)}</td>{_stat_cells(st)}</tr>")
    if summary["multi_turn"]["count"]:
        mt = summary["multi_turn"]
        table.append(
            f'<tr class="group"><td>multi-turn sessions ({mt["sessions"]})</td>{_stat_cells(mt)}</tr>'
        )
        for k, st in mt["per_turn"].items():
            table.append(f"<tr><td>turn {e(k)}</td>{_stat_cells(st)}</tr>")
    table.append(f'<tr class="group"><td>all edits</td>{_stat_cells(o)}</tr>')
    table.append("</tbody></table>")

    chart_html = ['<h2>Charts</h2><div class="charts">']
    for name, rel in charts.items():
        chart_html.append(f'<div><img src="{e(rel)}" alt="{e(name)} chart"></div>')
    chart_html.append("</div>")

    gallery = [
        "<h2>Edits</h2>",
        f'<p class="note">Before / edited / the dataset\'s output, for the first '
        f"{len(shown)} of {o['count']} edits.</p>",
    ]
    for r in shown:
        gallery.append(_gallery_item(r))
    return "\n".join([*head, *table, *chart_html, *gallery, "</body></html>"]) + "\n"


def _gallery_item(r: dict) -> str:
    e = html.escape
    j = r["judge"]
    figs = []
    for name in ("before", "edited", "reference"):
        rel = (r["thumbs"] or {}).get(name)
        if rel is None:
            figs.append(f'<figure><div class="missing">no {name}</div>{name}</figure>')
        else:
            figs.append(f'<figure><img src="{e(rel)}" alt="{name}">{name}</figure>')
    if j["accept"] is None:
        verdict = (
            f'<span class="partial">partial</span> ({e(", ".join(j["missing"]))} not available; '
            f"partial overall {_fmt(j['partial_overall'])})"
        )
    else:
        cls = "accept" if j["accept"] else "reject"
        word = "accepted" if j["accept"] else "rejected"
        verdict = f'<span class="{cls}">{word}</span> overall {_fmt(j["overall"])}'
    scores = ", ".join(f"{k} {_fmt(j[k])}" for k in SCORE_KEYS[:-1])
    if r["turn"] is None:
        where = f"{r['edit_type']} · sft line {r['line']}"
    else:
        where = f"multi-turn session line {r['line']}, turn {r['turn']}/{r['turns']}"
    cmp = (
        f"PSNR {_fmt(r['psnr'], 1)} dB, SSIM {_fmt(r['ssim'], 3)}"
        if r["aligned"]
        else e(r["alignment"])
    )
    if r["clip_sim"] is not None:
        cmp += f", CLIP sim {r['clip_sim']:.3f}"
    text = (
        f'<div class="text"><b>{e(r["instruction"])}</b><br>{e(where)} · '
        f"route {e(r['route'])} · {r['seconds']:.2f} s<br>{verdict}<br>{e(scores)}<br>{cmp}</div>"
    )
    return f'<div class="edit">{"".join(figs)}{text}</div>'


# ---- the command --------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> int:
    settings = EvalSettings(
        data=Path(args.data),
        out=Path(args.out),
        model=args.model,
        limit=args.limit,
        edit_types=args.edit_types,
        steps=args.steps,
        size=args.size,
        seed=args.seed,
        split=args.split,
        instruction=args.instruction,
        clip=args.clip,
        guidance=args.guidance,
        image_guidance=args.image_guidance,
        scheduler=args.scheduler,
        max_thumbs=args.max_thumbs,
        overwrite=args.overwrite,
        sources=Path(args.sources) if args.sources else None,
    )
    summary = evaluate(settings, progress=True)
    if args.json:
        print(json.dumps(summary, allow_nan=False))
    else:
        o = summary["overall"]
        rate = "n/a" if o["accept_rate"] is None else f"{o['accept_rate']:.0%}"
        print(
            f"{o['count']} edits: accepted {o['accepted']} of {o['judged']} fully judged ({rate}), "
            f"{o['partial']} partial; report: {Path(args.out) / 'report.html'}"
        )
    return 0


def add_parser(sub, parents) -> None:
    from pbmlx.diffuse.schedulers import SCHEDULERS
    from pbmlx.judge.command import at_least_one

    p = sub.add_parser(
        "eval",
        parents=parents,
        help="evaluate an editor on a Pico-Banana-400K folder: per-edit-type report",
        description=(
            "Run the edits of a Pico-Banana-400K folder (DATA/sft.jsonl, DATA/multi-turn.jsonl) "
            "as `pbmlx edit` would, judge each with the local judge, compare with the dataset's "
            "output, and write DIR/results.jsonl, DIR/summary.json and DIR/report.html."
        ),
    )
    p.add_argument(
        "data", metavar="DATA", help="the dataset folder (sft.jsonl / multi-turn.jsonl and images/)"
    )
    p.add_argument(
        "--out", required=True, metavar="DIR", help="the report folder (written when done)"
    )
    p.add_argument(
        "--model",
        metavar="DIR_OR_ID",
        help="the generative editor (as for `pbmlx edit`; default $PBMLX_MODEL or the config "
        "file); without one, records that need it are skipped and counted",
    )
    p.add_argument(
        "--limit", type=at_least_one, metavar="N", help="the first N records of each file"
    )
    p.add_argument(
        "--sources",
        metavar="DIR",
        help="a local Open Images folder for the source photos (<ImageID>.jpg and "
        "train-images-boxable-with-rotation.csv)",
    )
    p.add_argument(
        "--edit-types",
        nargs="+",
        action="extend",
        metavar="TYPE",
        help="only these edit types (matched case- and punctuation-insensitively); leaves out "
        "multi-turn sessions, which have none",
    )
    p.add_argument(
        "--steps", type=int, metavar="N", help="editor denoising steps (default: as `pbmlx edit`)"
    )
    p.add_argument(
        "--size",
        type=int,
        metavar="PX",
        help="editor working size, longest side (default: as `pbmlx edit`)",
    )
    p.add_argument(
        "--guidance", type=float, metavar="F", help="text guidance (default: as `pbmlx edit`)"
    )
    p.add_argument(
        "--image-guidance",
        type=float,
        metavar="F",
        help="image guidance (default: as `pbmlx edit`)",
    )
    p.add_argument(
        "--scheduler", choices=tuple(SCHEDULERS), help="sampler (default: as `pbmlx edit`)"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="N",
        help="seed of every edit; turn k of a session uses N + k (default 0)",
    )
    p.add_argument(
        "--split",
        choices=SPLITS,
        default="val",
        help="the deterministic split by source image (default val)",
    )
    p.add_argument(
        "--instruction",
        choices=INSTRUCTIONS,
        default="summarized",
        help="SFT instruction field: summarized_text (default) or the long text",
    )
    p.add_argument(
        "--clip",
        metavar="CLIP_DIR_OR_ID",
        help="CLIP for the judge's compliance of generative edits and for CLIP image similarity; "
        "without it their verdicts are partial",
    )
    p.add_argument(
        "--max-thumbs",
        type=int,
        default=DEFAULT_MAX_THUMBS,
        metavar="N",
        help=f"thumbnails for the first N edits (default {DEFAULT_MAX_THUMBS})",
    )
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=main)
