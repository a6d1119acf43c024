"""The edit flow: load -> plan -> adjust | diffuse -> save, for one or several turns.

``edit(image, *instructions)`` is the Python API (PIL image in, PIL image out);
``edit_file(input, instructions, ...)`` is what ``pbmlx edit`` runs. Every instruction is
planned before any pixel is touched, so an instruction that cannot be carried out fails
before work is done and before anything is written. Turn k edits the result of turn k-1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from pbmlx.errors import PbmlxError
from pbmlx.load import DEFAULT_MAX_PIXELS, Photo, read_image
from pbmlx.plan import EditPlan, plan
from pbmlx.save import check_output_path, default_output_path, write_image

ENGINES = ("auto", "adjust", "diffusion")
MODEL_ENV = "PBMLX_MODEL"  # default editor model (a converted folder or a hub id)


@dataclass
class Turn:
    """One instruction carried out: its plan, the engine that ran it and how long it took."""

    plan: EditPlan
    engine: str
    seconds: float

    def to_dict(self) -> dict:
        return {**self.plan.to_dict(), "engine": self.engine, "seconds": round(self.seconds, 4)}


@dataclass
class EditResult:
    """The edited image with its provenance: plans, timings, peak memory, seed."""

    image: Image.Image
    turns: list[Turn]
    seed: int
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    peak_memory_bytes: int = 0

    def to_dict(self) -> dict:
        return {
            "turns": [t.to_dict() for t in self.turns],
            "seed": self.seed,
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
            "peak_memory_bytes": self.peak_memory_bytes,
            "size": list(self.image.size),
        }


def plan_turns(
    instructions: list[str], engine: str = "auto", *, need_editor: bool = True
) -> list[tuple[EditPlan, str]]:
    """Plan every instruction and choose its engine; raise before any work if one can't run.

    With ``need_editor=False`` (a dry run) diffusion turns are planned without an editor.
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
        chosen = p.route if engine == "auto" else engine
        if chosen == "adjust" and p.route != "adjust":
            raise PbmlxError(
                f"the adjust engine cannot do {text!r}: {p.reason}; drop --engine adjust to use the editor"
            )
        planned.append((p, chosen))
    if need_editor and any(chosen == "diffusion" for _, chosen in planned):
        _require_editor(next(p for p, c in planned if c == "diffusion"))
    return planned


def _require_editor(p: EditPlan) -> None:
    """The generative editor is not part of this build yet: say how to get one, exactly."""
    where = (
        f"{MODEL_ENV}={os.environ[MODEL_ENV]!r} is set, but " if os.environ.get(MODEL_ENV) else ""
    )
    raise PbmlxError(
        f"{p.instruction!r} needs the generative editor (route: diffusion: {p.reason.rstrip('.')}), and {where}"
        "this pbmlx has no editor model to run it: only global photometric edits (brightness, "
        "contrast, colour, grain, vignette, blur, ...) work offline. Rephrase as a global edit, "
        "or see README.md 'Generative edits' for the InstructPix2Pix editor."
    )


def _run_turns(
    rgb: np.ndarray, planned: list[tuple[EditPlan, str]], seed: int
) -> tuple[np.ndarray, list[Turn]]:
    import mlx.core as mx

    from pbmlx.adjust.ops import apply_ops

    x = mx.array(rgb)
    turns = []
    for k, (p, engine) in enumerate(planned):
        t0 = time.perf_counter()
        if engine != "adjust":  # plan_turns has already refused this; kept as a guard
            _require_editor(p)
        # Each turn gets its own seed so that e.g. grain twice is not the same noise twice.
        x = apply_ops(x, p.ops, seed=seed + k)
        mx.eval(x)
        turns.append(Turn(p, engine, time.perf_counter() - t0))
    return np.asarray(x), turns


def _pil_to_float(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """A PIL image as float32 RGB in [0, 1] and an optional float32 alpha plane."""
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    rgba = np.asarray(image.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0
    return np.ascontiguousarray(rgba[..., :3]), (rgba[..., 3].copy() if has_alpha else None)


def _float_to_pil(rgb: np.ndarray, alpha: np.ndarray | None) -> Image.Image:
    arr = rgb if alpha is None else np.concatenate([rgb, alpha[..., None]], axis=-1)
    u8 = np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(u8, "RGB" if alpha is None else "RGBA")


def _peak_memory() -> int:
    import mlx.core as mx

    return int(mx.get_peak_memory())


def edit(
    image: Image.Image | str | Path, *instructions: str, engine: str = "auto", seed: int = 0
) -> EditResult:
    """Edit a PIL image (or an image file) with one or more instructions, each on the last result.

    Returns an :class:`EditResult` whose ``image`` is a new 8-bit RGB (or RGBA) PIL image;
    the input is never modified.
    """
    t0 = time.perf_counter()
    if isinstance(image, (str, Path)):
        photo = read_image(image)
        rgb, alpha = photo.rgb, photo.alpha
    elif isinstance(image, Image.Image):
        rgb, alpha = _pil_to_float(image)
    else:
        raise PbmlxError(f"edit() takes a PIL image or a path, not {type(image).__name__}")
    t_load = time.perf_counter()
    planned = plan_turns(list(instructions), engine)
    out, turns = _run_turns(rgb, planned, seed)
    t_edit = time.perf_counter()
    seconds = {"load": t_load - t0, "edit": t_edit - t_load, "total": t_edit - t0}
    return EditResult(_float_to_pil(out, alpha), turns, seed, seconds, _peak_memory())


def edit_file(
    input: str | Path,
    instructions: list[str],
    *,
    output: str | Path | None = None,
    engine: str = "auto",
    seed: int = 0,
    overwrite: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[EditResult, Path]:
    """Edit an image file and write the result atomically (default ``<stem>.edited.<ext>``).

    Plans every instruction and checks the output path before reading pixels; never writes
    over the input, never overwrites an existing file unless ``overwrite``.
    """
    t0 = time.perf_counter()
    planned = plan_turns(instructions, engine)
    input = Path(input)
    out_path = Path(output) if output is not None else default_output_path(input)
    check_output_path(
        out_path, input, overwrite=overwrite
    )  # fail before decoding, not after editing
    photo: Photo = read_image(input, max_pixels=max_pixels)
    t_load = time.perf_counter()
    rgb, turns = _run_turns(photo.rgb, planned, seed)
    t_edit = time.perf_counter()
    written = write_image(photo, rgb, out_path, overwrite=overwrite)
    t_save = time.perf_counter()
    seconds = {
        "load": t_load - t0,
        "edit": t_edit - t_load,
        "save": t_save - t_edit,
        "total": t_save - t0,
    }
    result = EditResult(_float_to_pil(rgb, photo.alpha), turns, seed, seconds, _peak_memory())
    return result, written


def main(args: argparse.Namespace) -> int:
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
    )
    if args.json:
        print(json.dumps({"input": str(args.input), "output": str(written), **result.to_dict()}))
    else:
        for t in result.turns:
            ops = ", ".join(f"{o['op']} {o['amount']:+g}" for o in t.plan.ops)
            sys.stderr.write(
                f"{t.plan.instruction!r}: {t.engine} [{ops}] {t.seconds * 1000:.0f} ms\n"
            )
        print(written)
    return 0


def add_parser(sub, parents) -> None:
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
        help="output path (default: <stem>.edited.<ext> beside INPUT)",
    )
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="force a route (default: the planner decides)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed for grain and the editor's noise (default 0)"
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
