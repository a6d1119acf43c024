"""The edit flow: load -> plan -> adjust | diffuse -> save, for one or several turns.

``edit(image, *instructions)`` is the Python API (PIL image in, PIL image out);
``edit_file(input, instructions, ...)`` is what ``pbmlx edit`` runs (its arguments are parsed
in :mod:`pbmlx.cli`). Every instruction is planned, and the editor model (when a turn needs
one) is found and loaded, before any pixel is touched, so an instruction that cannot be carried
out fails before work is done and before anything is written. Turn k edits the result of turn
k-1. Diffusion turns sample with one :class:`~pbmlx.diffuse.settings.SamplerSettings`.

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

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pbmlx import pixels
from pbmlx.diffuse.settings import SamplerSettings, resolve
from pbmlx.editor import Editor, EditorResult
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
    """How diffusion turns run: which model, the sampler's settings and how to load and show it
    (the CLI flags).

    ``sampler``: every diffusion turn's settings, its seed replaced by that turn's (``seed +
    k``); its ``seed`` is the run's base seed when :func:`edit_file` is given none.
    """

    model: str | Path | Editor | None = None  # None: find_model() decides
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    low_memory: bool = False  # free the text encoder after encoding and decode in tiles
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
        # The judge scores the 8-bit codes that will be saved: what the user gets, and the same
        # verdict as `pbmlx judge` on a lossless copy of the output.
        t = time.perf_counter()
        verdict = judge(source_codes, pixels.unit_to_codes(edited), instruction)
        judge_time[0] += time.perf_counter() - t
        return verdict

    for k, (p, engine) in enumerate(planned):
        t0 = time.perf_counter()
        judge_time[0] = 0.0
        # Each turn gets its own seed so that e.g. grain twice is not the same noise twice.
        if engine == "adjust":
            before = pixels.unit_to_codes(x) if judging is not None else None
            # 8-bit codes in (an 8-bit file's own samples) give 8-bit codes out of the last turn
            # (what will be saved, quantized once); turns before it keep float values.
            codes_out = pixels.is_codes(rgb) and k == len(planned) - 1
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
                source, p.instruction, settings=options.sampler, seed=turn_seed, progress=progress
            )

        if judging is None:
            result, choice = attempt(seed + k), None
        else:
            from pbmlx.judge.retry import run_attempts

            src_codes = pixels.unit_to_codes(source)
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
    if pixels.is_codes(x):
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
            editor.check_settings(options.sampler, seed=turn_seed)
    return planned, editor, judge


def edit(
    image: Image.Image | str | Path,
    *instructions: str,
    engine: str = "auto",
    seed: int | None = None,
    model: str | Path | Editor | None = None,
    settings: SamplerSettings | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    image_guidance: float | None = None,
    size: int | None = None,
    scheduler: str | None = None,
    low_memory: bool = False,
    progress: bool = False,
    judge: bool = False,
    best_of: int | None = None,
    min_score: float | None = None,
    judge_model: str | Path | None = None,
) -> EditResult:
    """Edit a PIL image (or an image file) with one or more instructions, each on the last result.

    Diffusion turns use ``model`` (a folder, a hub id or a loaded :class:`~pbmlx.editor.Editor`;
    default: :func:`find_model`) with the sampler settings ``settings`` (a
    :class:`~pbmlx.diffuse.settings.SamplerSettings`; default: 20 steps, guidance 7.5, image
    guidance 1.5, size 512, euler_a), each of the keywords ``steps``, ``guidance``,
    ``image_guidance``, ``size`` and ``scheduler`` that is given (not None) replacing its field.
    ``seed`` is the run's base seed: turn k uses ``seed + k`` (grain, the editor's noise);
    None: ``settings.seed`` (0 by default). With ``judge``, ``best_of``
    or ``min_score`` every turn is judged, and with the latter two diffusion turns may take
    several seeds (see :class:`JudgeOptions`; ``judge_model`` is the judge's CLIP);
    ``result.verdict`` is the last judged turn's verdict. Returns an :class:`EditResult`
    whose ``image`` is a new 8-bit RGB (or RGBA) PIL image; the input is never modified.
    """
    sampler = resolve(
        settings,
        steps=steps,
        guidance=guidance,
        image_guidance=image_guidance,
        size=size,
        scheduler=scheduler,
    )
    seed = sampler.seed if seed is None else seed
    options = EditorOptions(model, sampler, low_memory, progress)
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
        rgb, alpha = pixels.to_unit_rgb(image)
    else:
        raise PbmlxError(f"edit() takes a PIL image or a path, not {type(image).__name__}")
    t_load = time.perf_counter()
    planned, editor, judge = _prepare(list(instructions), engine, options, seed, judging)
    out, turns = _run_turns(rgb, planned, seed, editor, options, judging, judge)
    alpha, _ = _follow_geometry(turns, alpha)
    t_edit = time.perf_counter()
    seconds = {"load": t_load - t0, "edit": t_edit - t_load, "total": t_edit - t0}
    return EditResult(pixels.to_pil(out, alpha), turns, seed, seconds, _peak_memory(turns))


def edit_file(
    input: str | Path,
    instructions: list[str],
    *,
    output: str | Path | None = None,
    engine: str = "auto",
    seed: int | None = None,
    overwrite: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    options: EditorOptions | None = None,
    judging: JudgeOptions | None = None,
    quality: int | None = None,
) -> tuple[EditResult, Path]:
    """Edit an image file and write the result atomically (default: ``default_output_path``).

    ``quality``: 1-100 for JPEG, WebP and HEIF output; ``None`` keeps a JPEG input's own
    quality and chroma subsampling (see :func:`pbmlx.save.write_image`).

    ``seed``: the run's base seed (turn k uses ``seed + k``); None: ``options.sampler.seed``.
    Plans every instruction, loads the editor if a turn needs it (``options``) and the judge
    if ``judging``, and checks the output path before reading pixels; never writes over the
    input, never overwrites an existing file unless ``overwrite``.
    """
    options = options or EditorOptions()
    seed = options.sampler.seed if seed is None else seed
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
    result = EditResult(pixels.to_pil(rgb, alpha), turns, seed, seconds, _peak_memory(turns))
    return result, written
