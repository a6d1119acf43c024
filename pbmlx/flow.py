"""The edit flow: load -> plan -> adjust | diffuse -> save, for one or several turns.

``edit(image, *instructions)`` is the Python API (PIL image in, PIL image out);
``edit_file(input, instructions, ...)`` is what ``pbmlx edit`` runs. Every instruction is
planned, and the editor model (when a turn needs one) is found and loaded, before any pixel is
touched, so an instruction that cannot be carried out fails before work is done and before
anything is written. Turn k edits the result of turn k-1.

The editor model for diffusion turns is, first found wins: ``--model`` / ``model=``, the
``PBMLX_MODEL`` environment variable, ``{"model": ...}`` in the config file
(``~/.config/pbmlx/config.json``, or the path in ``PBMLX_CONFIG``). See :func:`find_model`.

Judged edits (``--judge``, ``--best-of N``, ``--min-score S``; :class:`JudgeOptions`): every turn is
scored by the local judge (:mod:`pbmlx.judge`) against that turn's input. A diffusion turn is
made with up to N seeds (``seed + k``, ``seed + k + 1``, ...; 3 by default with only
``--min-score``), stopping at the first attempt whose overall reaches S, and keeps the best
verdict. An adjust turn is exact (the same ops give the same pixels), so it is made and judged
once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pbmlx.diffuse.pipeline import DEFAULT_GUIDANCE, DEFAULT_IMAGE_GUIDANCE, DEFAULT_STEPS
from pbmlx.diffuse.schedulers import DEFAULT_SCHEDULER, SCHEDULERS
from pbmlx.editor import DEFAULT_SIZE, Editor, EditorResult
from pbmlx.errors import PbmlxError
from pbmlx.load import DEFAULT_MAX_PIXELS, Photo, read_image
from pbmlx.plan import ENGLISH_ONLY, EditPlan, plan
from pbmlx.save import check_output_path, default_output_path, write_image

# "coreml": every instruction goes to the editor, which must be a Core ML bundle (macOS).
ENGINES = ("auto", "adjust", "diffusion", "coreml")
MODEL_ENV = "PBMLX_MODEL"  # default editor model (a converted folder or a hub id)
CONFIG_ENV = "PBMLX_CONFIG"  # path of the config file, overriding DEFAULT_CONFIG
DEFAULT_CONFIG = "~/.config/pbmlx/config.json"  # {"model": "<folder or hub id>"}


@dataclass
class EditorOptions:
    """How diffusion turns run: which model and the sampler's settings (CLI flags)."""

    model: str | Path | Editor | None = None  # None: find_model() decides
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    image_guidance: float = DEFAULT_IMAGE_GUIDANCE
    size: int = DEFAULT_SIZE  # working size: longest side in pixels
    scheduler: str = DEFAULT_SCHEDULER
    low_memory: bool = False
    progress: bool = False  # a tqdm bar on stderr for the denoising steps


@dataclass
class JudgeOptions:
    """Judged edits: how many attempts a diffusion turn may take and what stops them early.

    ``best_of``: attempts per diffusion turn (None: 3 with ``min_score``, else 1).
    ``min_score``: stop at the first attempt whose overall verdict reaches it.
    ``model``: the judge's CLIP (folder or hub id) for generative edits; None: the default
    CLIP if it is cached locally, else their compliance is "not available" and attempts are
    ranked by the partial overall (said in the JSON).
    """

    best_of: int | None = None
    min_score: float | None = None
    model: str | Path | None = None

    def __post_init__(self) -> None:
        if self.best_of is not None and (
            isinstance(self.best_of, bool) or not isinstance(self.best_of, int) or self.best_of < 1
        ):
            raise PbmlxError(f"best_of must be an integer of at least 1, got {self.best_of!r}.")
        if self.min_score is not None and not 0.0 <= float(self.min_score) <= 1.0:
            raise PbmlxError(f"min_score {self.min_score!r} is outside [0, 1].")

    @property
    def attempts(self) -> int:
        from pbmlx.judge.retry import DEFAULT_ATTEMPTS

        if self.best_of is not None:
            return self.best_of
        return DEFAULT_ATTEMPTS if self.min_score is not None else 1


@dataclass
class Turn:
    """One instruction carried out: its plan, the engine that ran it and how long it took."""

    plan: EditPlan
    engine: str
    seconds: float
    editor: EditorResult | None = None  # diffusion turns: provenance, stage timings, memory
    judge: Any = None  # judged edits: the pbmlx.judge.retry.Choice (kept attempt and the others)
    judge_seconds: float = 0.0  # of ``seconds``, the time spent judging
    warps: list = field(default_factory=list)  # adjust turns: the resolved geometric transforms

    def to_dict(self) -> dict:
        out = {**self.plan.to_dict(), "engine": self.engine, "seconds": round(self.seconds, 4)}
        if self.editor is not None:
            details = self.editor.to_dict()
            details.pop("instruction")
            out.update(details)
        if self.judge is not None:
            out["judge_seconds"] = round(self.judge_seconds, 4)
            out["judge"] = self.judge.to_dict()
        return out


@dataclass
class EditResult:
    """The edited image with its provenance: plans, timings, peak memory, seed."""

    image: Image.Image
    turns: list[Turn]
    seed: int
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    peak_memory_bytes: int = 0

    @property
    def verdict(self) -> Any:
        """The judge's verdict on the last judged turn (None if the edit was not judged)."""
        judged = [t.judge for t in self.turns if t.judge is not None]
        return judged[-1].verdict if judged else None

    def to_dict(self) -> dict:
        out = {
            "turns": [t.to_dict() for t in self.turns],
            "seed": self.seed,
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
            "peak_memory_bytes": self.peak_memory_bytes,
            "size": list(self.image.size),
        }
        judged = [(k, t.judge) for k, t in enumerate(self.turns) if t.judge is not None]
        if judged:
            # The chosen attempt's verdict, and every attempt's scores, for each judged turn.
            out["judge"] = [{"turn": k, **c.to_dict()} for k, c in judged]
        return out


def config_path() -> Path:
    """The config file: ``$PBMLX_CONFIG`` if set, else ``~/.config/pbmlx/config.json``."""
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG).expanduser()


def find_model(model: str | Path | None = None) -> tuple[str, str] | None:
    """The editor model to use and where it was set: ``(model, source)``, or ``None``.

    First found wins: ``model`` (``source`` "--model"), ``$PBMLX_MODEL``, the config file's
    ``"model"`` (``source`` the file). A config file that exists but is not a JSON object
    with a string ``"model"`` raises :class:`PbmlxError` naming it.
    """
    if model is not None and str(model).strip():
        return str(model), "--model"
    if os.environ.get(MODEL_ENV, "").strip():
        return os.environ[MODEL_ENV].strip(), MODEL_ENV
    path = config_path()
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PbmlxError(f"Config file {path} is not readable JSON ({e}).") from None
    if not isinstance(config, dict):
        raise PbmlxError(f"Config file {path} is not a JSON object.")
    value = config.get("model")
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise PbmlxError(
            f'Config file {path} has "model": {value!r}; it must be a folder or hub id.'
        )
    return value.strip(), str(path)


def load_editor(options: EditorOptions) -> Editor | None:
    """The editor ``options`` ask for (loaded lazily: weights are read on first use), or
    ``None`` when no model is set anywhere (:func:`find_model`)."""
    if isinstance(options.model, Editor):
        return options.model
    found = find_model(options.model)
    if found is None:
        return None
    name, source = found
    try:
        return Editor.from_pretrained(name, low_memory=options.low_memory)
    except PbmlxError as e:
        if source == "--model":
            raise
        raise PbmlxError(f"{str(e).rstrip('.')} (model set by {source}).") from None


def plan_turns(
    instructions: list[str],
    engine: str = "auto",
    *,
    need_editor: bool = True,
    editor: Editor | None = None,
) -> list[tuple[EditPlan, str]]:
    """Plan every instruction and choose its engine; raise before any work if one can't run.

    A diffusion turn needs ``editor``; with ``need_editor=False`` (a dry run) diffusion turns
    are planned without one.
    """
    if engine not in ENGINES:
        raise PbmlxError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if not instructions:
        raise PbmlxError(
            'give at least one instruction, e.g. pbmlx edit photo.jpg "brighten this picture"'
        )
    planned = []
    for text in instructions:
        p = plan(text)
        if p.reason.startswith(ENGLISH_ONLY):  # the editor's text encoder reads English only too
            raise PbmlxError(p.reason)
        chosen = {"auto": p.route, "coreml": "diffusion"}.get(engine, engine)
        if chosen == "adjust" and p.route != "adjust":
            raise PbmlxError(
                f"the adjust engine cannot do {text!r}: {p.reason}; drop --engine adjust to use the editor"
            )
        planned.append((p, chosen))
    if need_editor and editor is None and any(chosen == "diffusion" for _, chosen in planned):
        _require_editor(next(p for p, c in planned if c == "diffusion"))
    return planned


def _require_editor(p: EditPlan) -> None:
    """No editor model is set: say exactly how to give one."""
    raise PbmlxError(
        f"{p.instruction!r} needs the generative editor (route: diffusion: {p.reason.rstrip('.')}), "
        f"and no editor model is set: pass --model DIR_OR_HUB_ID, or set {MODEL_ENV} (or "
        f'"model" in {DEFAULT_CONFIG}); make a model folder with `pbmlx convert '
        "timbrooks/instruct-pix2pix ./ip2p-mlx`. Global photometric edits (brightness, "
        "contrast, colour, grain, vignette, blur, ...) need no model. See README.md "
        "'Generative edits'."
    )


def _progress_bar(label: str):
    """A ``progress(done, total)`` callback drawing a tqdm bar on stderr (never stdout)."""
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=label, unit="step", file=sys.stderr, dynamic_ncols=True)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


def _run_turns(
    rgb: np.ndarray,
    planned: list[tuple[EditPlan, str]],
    seed: int,
    editor: Editor | None = None,
    options: EditorOptions | None = None,
    judging: JudgeOptions | None = None,
    judge: Any = None,
) -> tuple[np.ndarray, list[Turn]]:
    """Carry out the planned turns on ``rgb``; with ``judging``, ``judge`` (a
    :class:`pbmlx.judge.Judge`) scores each turn and diffusion turns may take several seeds."""
    import mlx.core as mx

    from pbmlx.adjust.ops import apply_ops

    options = options or EditorOptions()
    x: np.ndarray | mx.array = rgb
    turns = []
    judge_time = [0.0]  # this turn's seconds spent judging

    def judged(source_codes: np.ndarray, edited: np.ndarray, instruction: str) -> Any:
        t = time.perf_counter()
        verdict = judge(source_codes, _codes(edited), instruction)
        judge_time[0] += time.perf_counter() - t
        return verdict

    for k, (p, engine) in enumerate(planned):
        t0 = time.perf_counter()
        judge_time[0] = 0.0
        # Each turn gets its own seed so that e.g. grain twice is not the same noise twice.
        if engine == "adjust":
            before = _codes(x) if judging is not None else None
            # 8-bit codes in (an 8-bit file's own samples) give 8-bit codes out of the last turn
            # (what will be saved, quantized once); turns before it keep float values.
            codes_out = _is_codes(rgb) and k == len(planned) - 1
            warps: list = []  # geometric steps, resolved: the alpha plane replays them
            x = apply_ops(
                np.asarray(x),
                p.ops,
                seed=seed + k,
                out_dtype=mx.uint8 if codes_out else mx.float32,
                warps=warps,
            )
            choice = None
            if judging is not None:
                from pbmlx.judge.retry import Attempt, choose_best

                verdict = judged(before, x, p.instruction)
                choice = choose_best([Attempt(seed + k, None, verdict)], judging.min_score)
            seconds = time.perf_counter() - t0
            turns.append(Turn(p, engine, seconds, None, choice, judge_time[0], warps))
            continue
        if editor is None:  # plan_turns has already refused this; kept as a guard
            _require_editor(p)
        source = np.asarray(x, dtype=np.float32)

        def attempt(turn_seed: int, k: int = k, p: EditPlan = p, source: np.ndarray = source):
            progress = None
            if options.progress:
                label = "denoising" if len(planned) == 1 else f"turn {k + 1}/{len(planned)}"
                if judging is not None and judging.attempts > 1:
                    label += f" (seed {turn_seed})"
                progress = _progress_bar(label)
            return editor.edit(
                source,
                p.instruction,
                steps=options.steps,
                guidance=options.guidance,
                image_guidance=options.image_guidance,
                size=options.size,
                seed=turn_seed,
                scheduler=options.scheduler,
                progress=progress,
            )

        if judging is None:
            result, choice = attempt(seed + k), None
        else:
            from pbmlx.judge.retry import run_attempts

            src_codes = _codes(source)
            choice = run_attempts(
                attempt,
                lambda r, p=p, src_codes=src_codes: judged(src_codes, r.rgb, p.instruction),
                seed=seed + k,
                attempts=judging.attempts,
                min_score=judging.min_score,
            )
            result = choice.image
        x = result.rgb
        turns.append(Turn(p, engine, time.perf_counter() - t0, result, choice, judge_time[0]))
    if _is_codes(x):
        return x, turns
    return np.asarray(x, dtype=np.float32), turns


def _follow_geometry(
    turns: list[Turn], alpha: np.ndarray | None, photo: Photo | None = None
) -> tuple[np.ndarray | None, Photo | None]:
    """The alpha plane and the photo's metadata after the turns' geometric steps: alpha goes
    through the same warps (rotations fill it transparent); an odd number of quarter turns
    swaps the x and y resolution; the EXIF pixel dimensions (if present) become the new size.
    The EXIF orientation is already 1 (the loader made the pixels upright), so it stays."""
    warps = [w for t in turns for w in t.warps]
    if not warps:
        return alpha, photo
    from dataclasses import replace

    from pbmlx.adjust.geometry import apply_warps_to_plane

    if alpha is not None:
        alpha = apply_warps_to_plane(alpha, warps)
    if photo is None:
        return alpha, None
    height, width = photo.height, photo.width
    for w in warps:
        height, width = w.output_size(height, width)
    dpi = photo.dpi
    if dpi is not None and sum(w.swaps_axes for w in warps) % 2:
        dpi = (dpi[1], dpi[0])
    return alpha, replace(photo, dpi=dpi, exif=_exif_with_size(photo.exif, width, height))


def _exif_with_size(exif: bytes | None, width: int, height: int) -> bytes | None:
    """``exif`` with PixelXDimension / PixelYDimension set to the new size where it has them."""
    if exif is None:
        return None
    exif_ifd, pixel_x, pixel_y = 0x8769, 0xA002, 0xA003
    tags = Image.Exif()
    tags.load(exif)
    ifd = tags.get_ifd(exif_ifd)
    if pixel_x not in ifd and pixel_y not in ifd:
        return exif
    ifd[pixel_x], ifd[pixel_y] = width, height
    data = tags.tobytes()
    return data if data.startswith(b"Exif") else b"Exif\0\0" + data


def _is_codes(x: Any) -> bool:
    return isinstance(x, np.ndarray) and x.dtype == np.uint8


def _codes(rgb: np.ndarray) -> np.ndarray:
    """Float RGB in [0, 1] as the 8-bit codes it will be saved as: the judge scores what the
    user gets (and the same verdict as ``pbmlx judge`` on a lossless copy of the output)."""
    if _is_codes(rgb):
        return rgb
    return np.clip(np.rint(np.asarray(rgb, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def _pil_to_float(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """A PIL image as float32 RGB in [0, 1] and an optional float32 alpha plane."""
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    rgba = np.asarray(image.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0
    return np.ascontiguousarray(rgba[..., :3]), (rgba[..., 3].copy() if has_alpha else None)


def _float_to_pil(rgb: np.ndarray, alpha: np.ndarray | None) -> Image.Image:
    if _is_codes(rgb):
        if alpha is None:
            return Image.fromarray(rgb, "RGB")
        rgb = rgb / np.float32(255.0)
    arr = rgb if alpha is None else np.concatenate([rgb, alpha[..., None]], axis=-1)
    u8 = np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(u8, "RGB" if alpha is None else "RGBA")


def _peak_memory(turns: list[Turn]) -> int:
    """MLX's peak since the last reset (each editor run resets it), or a turn's, the larger."""
    import mlx.core as mx

    turn_peaks = [t.editor.peak_memory_bytes for t in turns if t.editor is not None]
    return max([int(mx.get_peak_memory()), *turn_peaks])


def _prepare(
    instructions: list[str],
    engine: str,
    options: EditorOptions,
    seed: int,
    judging: JudgeOptions | None = None,
) -> tuple[list[tuple[EditPlan, str]], Editor | None, Any]:
    """Plan the turns, load the editor if one needs it and the judge if asked: every refusal
    happens here, before pixels are read."""
    planned = plan_turns(instructions, engine, need_editor=False)
    diffusion = [p for p, chosen in planned if chosen == "diffusion"]
    editor = load_editor(options) if diffusion else None
    if diffusion and editor is None:
        _require_editor(diffusion[0])
    if engine == "coreml" and editor is not None and editor.backend != "coreml":
        raise PbmlxError(
            f"--engine coreml runs a Core ML bundle, and the model {editor.model} is not one: "
            "make one with `pbmlx export-coreml MODEL OUT_DIR` and pass --model OUT_DIR."
        )
    judge = None
    if judging is not None:
        from pbmlx.judge.core import Judge

        judge = Judge(model=judging.model)
    if editor is not None:
        extra = judging.attempts - 1 if judging is not None else 0
        seeds = [seed + k for k, (_, chosen) in enumerate(planned) if chosen == "diffusion"]
        for turn_seed in (min(seeds), max(seeds) + extra):
            editor.check_settings(
                steps=options.steps,
                guidance=options.guidance,
                image_guidance=options.image_guidance,
                size=options.size,
                scheduler=options.scheduler,
                seed=turn_seed,
            )
    return planned, editor, judge


def edit(
    image: Image.Image | str | Path,
    *instructions: str,
    engine: str = "auto",
    seed: int = 0,
    model: str | Path | Editor | None = None,
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    image_guidance: float = DEFAULT_IMAGE_GUIDANCE,
    size: int = DEFAULT_SIZE,
    scheduler: str = DEFAULT_SCHEDULER,
    low_memory: bool = False,
    progress: bool = False,
    judge: bool = False,
    best_of: int | None = None,
    min_score: float | None = None,
    judge_model: str | Path | None = None,
) -> EditResult:
    """Edit a PIL image (or an image file) with one or more instructions, each on the last result.

    Diffusion turns use ``model`` (a folder, a hub id or a loaded :class:`~pbmlx.editor.Editor`;
    default: :func:`find_model`) with the sampler settings given. With ``judge``, ``best_of``
    or ``min_score`` every turn is judged, and with the latter two diffusion turns may take
    several seeds (see :class:`JudgeOptions`; ``judge_model`` is the judge's CLIP);
    ``result.verdict`` is the last judged turn's verdict. Returns an :class:`EditResult`
    whose ``image`` is a new 8-bit RGB (or RGBA) PIL image; the input is never modified.
    """
    options = EditorOptions(
        model, steps, guidance, image_guidance, size, scheduler, low_memory, progress
    )
    judging = None
    if judge or best_of is not None or min_score is not None:
        judging = JudgeOptions(best_of, min_score, judge_model)
    elif judge_model is not None:
        raise PbmlxError("judge_model is the judge's CLIP: use it with judge, best_of or min_score")
    t0 = time.perf_counter()
    if isinstance(image, (str, Path)):
        photo = read_image(image)
        rgb, alpha = photo.rgb, photo.alpha
    elif isinstance(image, Image.Image):
        rgb, alpha = _pil_to_float(image)
    else:
        raise PbmlxError(f"edit() takes a PIL image or a path, not {type(image).__name__}")
    t_load = time.perf_counter()
    planned, editor, judge = _prepare(list(instructions), engine, options, seed, judging)
    out, turns = _run_turns(rgb, planned, seed, editor, options, judging, judge)
    alpha, _ = _follow_geometry(turns, alpha)
    t_edit = time.perf_counter()
    seconds = {"load": t_load - t0, "edit": t_edit - t_load, "total": t_edit - t0}
    return EditResult(_float_to_pil(out, alpha), turns, seed, seconds, _peak_memory(turns))


def edit_file(
    input: str | Path,
    instructions: list[str],
    *,
    output: str | Path | None = None,
    engine: str = "auto",
    seed: int = 0,
    overwrite: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    options: EditorOptions | None = None,
    judging: JudgeOptions | None = None,
    quality: int | None = None,
) -> tuple[EditResult, Path]:
    """Edit an image file and write the result atomically (default: ``default_output_path``).

    ``quality``: 1-100 for JPEG, WebP and HEIF output; ``None`` keeps a JPEG input's own
    quality and chroma subsampling (see :func:`pbmlx.save.write_image`).

    Plans every instruction, loads the editor if a turn needs it (``options``) and the judge
    if ``judging``, and checks the output path before reading pixels; never writes over the
    input, never overwrites an existing file unless ``overwrite``.
    """
    options = options or EditorOptions()
    t0 = time.perf_counter()
    planned, editor, judge = _prepare(instructions, engine, options, seed, judging)
    input = Path(input)
    out_path = Path(output) if output is not None else default_output_path(input)
    check_output_path(
        out_path, input, overwrite=overwrite
    )  # fail before decoding, not after editing
    photo: Photo = read_image(input, max_pixels=max_pixels)
    t_load = time.perf_counter()
    # An 8-bit colour file edited by the adjust engine alone stays in 8-bit codes from decode to
    # encode (the kernels read and write them): no float32 copy of the photo is ever made.
    adjust_only = all(engine == "adjust" for _, engine in planned) and planned
    source = photo.codes if adjust_only and photo.codes is not None else photo.rgb
    rgb, turns = _run_turns(source, planned, seed, editor, options, judging, judge)
    # Geometric steps: alpha, resolution and EXIF size follow the pixels.
    alpha, edited = _follow_geometry(turns, photo.alpha, photo)
    t_edit = time.perf_counter()
    written = write_image(edited, rgb, out_path, overwrite=overwrite, quality=quality, alpha=alpha)
    t_save = time.perf_counter()
    seconds = {
        "load": t_load - t0,
        "edit": t_edit - t_load,
        "save": t_save - t_edit,
        "total": t_save - t0,
    }
    result = EditResult(_float_to_pil(rgb, alpha), turns, seed, seconds, _peak_memory(turns))
    return result, written


def main(args: argparse.Namespace) -> int:
    judged = args.judge or args.best_of is not None or args.min_score is not None
    if args.judge_model is not None and not judged:
        raise PbmlxError(
            "--judge-model is the judge's CLIP: use it with --judge, --best-of or --min-score"
        )
    if args.dry_run:
        for p, engine in plan_turns(args.instructions, args.engine, need_editor=False):
            if args.json:
                print(json.dumps(p.to_dict()))
            else:
                ops = ", ".join(f"{o['op']} {o['amount']:+g}" for o in p.ops) or "-"
                print(f"{p.instruction!r}: {engine}: {ops} ({p.reason})")
        return 0
    result, written = edit_file(
        args.input,
        args.instructions,
        output=args.output,
        engine=args.engine,
        seed=args.seed,
        overwrite=args.overwrite,
        max_pixels=args.max_pixels,
        options=EditorOptions(
            model=args.model,
            steps=args.steps,
            guidance=args.guidance,
            image_guidance=args.image_guidance,
            size=args.size,
            scheduler=args.scheduler,
            low_memory=args.low_memory,
            progress=True,
        ),
        judging=JudgeOptions(args.best_of, args.min_score, args.judge_model) if judged else None,
        quality=args.quality,
    )
    if args.json:
        print(json.dumps({"input": str(args.input), "output": str(written), **result.to_dict()}))
    else:
        for t in result.turns:
            if t.editor is not None:
                e = t.editor
                steps = f"{e.steps} step{'s' if e.steps != 1 else ''}"
                what = f"{e.model}, {steps} {e.scheduler}, seed {e.seed}"
            else:
                what = ", ".join(f"{o['op']} {o['amount']:+g}" for o in t.plan.ops)
            sys.stderr.write(
                f"{t.plan.instruction!r}: {t.engine} [{what}] {t.seconds * 1000:.0f} ms\n"
            )
            if t.judge is not None:
                sys.stderr.write(f"  judge: {_judge_line(t.judge)}\n")
        print(written)
    return 0


def _judge_line(choice: Any) -> str:
    """One line on a judged turn: the kept attempt's scores and how it was chosen."""
    from pbmlx.judge.verdict import CRITERIA

    v = choice.verdict

    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2f}"

    scores = ", ".join(f"{c} {fmt(getattr(v, c))}" for c in CRITERIA)
    if v.overall is not None:
        head = f"overall {v.overall:.2f} ({'accepted' if v.accepted else 'not accepted'})"
    else:
        head = f"overall n/a (partial {fmt(v.details.get('partial_overall'))})"
    n = len(choice.attempts)
    tail = ""
    if n > 1:
        others = ", ".join(fmt(a.verdict.rank_score) for a in choice.attempts)
        tail = f"; kept attempt {choice.index + 1} of {n}, seed {choice.attempt.seed} [{others}]"
    if choice.min_score is not None and not choice.reached_min_score:
        tail += f"; none reached --min-score {choice.min_score:g}"
    return f"{head}: {scores}{tail}"


def _quality(text: str) -> int:
    """argparse type of --quality: a whole number from 1 to 100."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 100, got {text!r}")
    return value


def add_parser(sub, parents) -> None:
    from pbmlx.judge.command import at_least_one, unit_interval

    p = sub.add_parser(
        "edit",
        parents=parents,
        help="edit a photo with plain-language instructions",
        description="Edit INPUT with one or more INSTRUCTIONs; each applies to the previous result.",
    )
    p.add_argument("input", metavar="INPUT", help="the photo to edit (never modified)")
    p.add_argument(
        "instructions", metavar="INSTRUCTION", nargs="+", help='e.g. "brighten this picture"'
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="output path (default beside INPUT: <stem>.edited.<ext>, or <name>.edited.png "
        "for a format pbmlx does not write, e.g. cat.gif -> cat.gif.edited.png)",
    )
    p.add_argument(
        "--quality",
        type=_quality,
        metavar="Q",
        help="JPEG (and WebP, HEIC) quality, 1-100 (default: a JPEG input's own quality and "
        "chroma subsampling; other inputs 90 with 4:2:0 for JPEG, 95 for WebP and HEIC)",
    )
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="force a route (default: the planner decides); coreml: every instruction to "
        "the editor, run by the Core ML bundle given as --model (macOS)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed for grain and the editor's noise (default 0)"
    )
    p.add_argument(
        "--model",
        metavar="DIR_OR_ID",
        help=f"editor model for generative edits: a model folder or a Hugging Face hub id "
        f'(default: ${MODEL_ENV}, else "model" in {DEFAULT_CONFIG} or ${CONFIG_ENV})',
    )
    p.add_argument(
        "--steps",
        type=int,
        default=DEFAULT_STEPS,
        metavar="N",
        help=f"denoising steps (default {DEFAULT_STEPS})",
    )
    p.add_argument(
        "--guidance",
        type=float,
        default=DEFAULT_GUIDANCE,
        metavar="F",
        help=f"how strongly to follow the instruction (default {DEFAULT_GUIDANCE})",
    )
    p.add_argument(
        "--image-guidance",
        type=float,
        default=DEFAULT_IMAGE_GUIDANCE,
        metavar="F",
        help=f"how strongly to stay with the photo (default {DEFAULT_IMAGE_GUIDANCE})",
    )
    p.add_argument(
        "--size",
        type=int,
        default=DEFAULT_SIZE,
        metavar="N",
        help=f"working size of the editor: longest side in pixels (default {DEFAULT_SIZE}); "
        "the result is brought back to the photo's own size",
    )
    p.add_argument(
        "--scheduler",
        choices=tuple(SCHEDULERS),
        default=DEFAULT_SCHEDULER,
        help=f"sampler (default {DEFAULT_SCHEDULER}: Euler-Ancestral)",
    )
    p.add_argument(
        "--low-memory",
        action="store_true",
        help="free the text encoder after encoding and decode in tiles",
    )
    p.add_argument(
        "--judge",
        action="store_true",
        help="score every turn with the local judge (Pico-Banana rubric); one attempt each",
    )
    p.add_argument(
        "--best-of",
        type=at_least_one,
        metavar="N",
        help="judge the edit; generative turns try N seeds (--seed, --seed+1, ...) and keep "
        "the best verdict",
    )
    p.add_argument(
        "--min-score",
        type=unit_interval,
        metavar="S",
        help="judge the edit; generative turns retry with new seeds until the overall score "
        "reaches S (up to --best-of, default 3 attempts)",
    )
    p.add_argument(
        "--judge-model",
        metavar="CLIP_DIR_OR_ID",
        help="the judge's CLIP for generative edits (default: openai/clip-vit-base-patch32 "
        "if cached; without it they are ranked on a partial score)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the plan only; read and write nothing"
    )
    p.add_argument(
        "--json", action="store_true", help="print JSON (with --dry-run: one plan per line)"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace OUT if it exists (never INPUT)"
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help=f"refuse images with more pixels (decompression-bomb guard; default {DEFAULT_MAX_PIXELS:,})",
    )
    p.set_defaults(func=main)
