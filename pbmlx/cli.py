"""The ``pbmlx`` command: parses arguments and dispatches to one command module each.

Every command is a library function plus a thin ``main(args)``; this file builds the parser,
holds the ``edit`` command's arguments and ``main`` (the library is :mod:`pbmlx.flow`, which
has no argument parsing), registers the other commands from their own modules (each module's
``add_parser``), and turns :class:`PbmlxError` into one ``pbmlx: error:`` line and exit code 2
(with ``--debug``, the traceback instead).

With ``--json`` (the commands that have it as a flag: edit, judge, judge-bench, train, eval,
doctor; bench's ``--json OUT`` names a file), such an error is *also* one JSON object on
stdout, ``{"error": "<the message>", "code": 2}``, so a program reading stdout sees it; this
holds for argument errors too when ``--json`` is spelt out in full and the command has it. Notices from the library (``pbmlx.*`` loggers at
WARNING, e.g. transparency flattened for a JPEG) are one ``pbmlx: note:`` line each on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from pbmlx import __version__
from pbmlx.errors import PbmlxError

EXIT_USAGE = 2  # bad input, as argparse uses for bad arguments
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell convention
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a program killed by it


class _UsageExit(SystemExit):
    """argparse's exit on a bad argument (a SystemExit with code 2 to any other caller), with
    the message and the parser that refused it, for main's JSON error object."""

    def __init__(self, message: str, parser: argparse.ArgumentParser) -> None:
        super().__init__(EXIT_USAGE)
        self.message = message
        self.parser = parser


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line in pbmlx's format, not usage + message."""

    def error(self, message: str):  # type: ignore[override]
        message = f"{message} (see `{self.prog} --help`)"
        sys.stderr.write(f"pbmlx: error: {message}\n")
        raise _UsageExit(message, self)


class _NoteHandler(logging.Handler):
    """Library notices as ``pbmlx: note: ...`` lines on the stderr of the moment."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(f"pbmlx: note: {record.getMessage()}\n")
        except Exception:  # logging's rule: a failing handler must not break the program
            self.handleError(record)


def _show_notes() -> None:
    logger = logging.getLogger("pbmlx")
    if not any(isinstance(h, _NoteHandler) for h in logger.handlers):
        logger.addHandler(_NoteHandler(logging.WARNING))


def _print_json_error(message: str) -> None:
    """The error as one JSON object on stdout (the ``pbmlx: error:`` line stays on stderr)."""
    print(json.dumps({"error": message, "code": EXIT_USAGE}), flush=True)


def _has_json_option(parser: argparse.ArgumentParser, options: list[str]) -> bool:
    """Whether the command that ``parser`` refused for (``parser`` itself, or the subcommand
    named in ``options`` when the top-level parser refused, e.g. an unknown option) has
    ``--json``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            name = next((a for a in options if a in action.choices), None)
            return name is not None and _has_json_option(action.choices[name], [])
    # Only a --json flag (edit, judge, ...): bench's --json OUT names a file, and its stdout
    # stays the table.
    return any("--json" in a.option_strings and a.nargs == 0 for a in parser._actions)


# ---- pbmlx edit ---------------------------------------------------------------------------------


def edit_main(args: argparse.Namespace) -> int:
    """``pbmlx edit``: plan (``--dry-run``) or edit one file (:func:`pbmlx.flow.edit_file`)."""
    from pbmlx.diffuse.settings import FIELDS, SamplerSettings
    from pbmlx.flow import EditorOptions, JudgeOptions, edit_file, plan_turns

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
    # Checked here, before any planning or reading: a bad flag is refused even when no turn
    # needs the editor.
    # The seed is the run's base seed (edit_file derives each turn's), not the sampler's.
    sampler = SamplerSettings(**{k: getattr(args, k) for k in FIELDS - {"seed"}})
    result, written = edit_file(
        args.input,
        args.instructions,
        output=args.output,
        engine=args.engine,
        seed=args.seed,
        overwrite=args.overwrite,
        max_pixels=args.max_pixels,
        options=EditorOptions(
            model=args.model, sampler=sampler, low_memory=args.low_memory, progress=True
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


def add_edit_parser(sub, parents) -> None:
    """Register ``pbmlx edit`` on the subparsers ``sub``."""
    from pbmlx.diffuse.schedulers import DEFAULT_SCHEDULER, SCHEDULERS
    from pbmlx.diffuse.settings import (
        DEFAULT_GUIDANCE,
        DEFAULT_IMAGE_GUIDANCE,
        DEFAULT_SIZE,
        DEFAULT_STEPS,
    )
    from pbmlx.flow import CONFIG_ENV, DEFAULT_CONFIG, ENGINES, MODEL_ENV
    from pbmlx.judge.command import at_least_one, unit_interval
    from pbmlx.load import DEFAULT_MAX_PIXELS

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
    p.set_defaults(func=edit_main)


# ---- the parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from pbmlx import doctor, evaluate
    from pbmlx.bench import command as bench_command
    from pbmlx.convert import cli as convert_cli
    from pbmlx.convert.coreml import cli as coreml_cli
    from pbmlx.judge import command as judge_command
    from pbmlx.train import command as train_command

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks for errors")

    parser = _Parser(prog="pbmlx", description="On-device, instruction-driven photo editing.")
    parser.add_argument("--version", action="version", version=f"pbmlx {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    commands = (
        judge_command,
        convert_cli,
        coreml_cli,
        train_command,
        evaluate,
        doctor,
        bench_command,
    )
    for add_parser in (add_edit_parser, *(m.add_parser for m in commands)):
        add_parser(sub, parents=[common])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    options = argv[: argv.index("--")] if "--" in argv else argv  # after "--": operands only
    args = None
    _show_notes()
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except _UsageExit as e:
        # Parsing stopped, so args.json is unknown: an exact "--json" among the options of a
        # command that has the option stands in for it.
        if "--json" in options and _has_json_option(e.parser, options):
            _print_json_error(e.message)
        return EXIT_USAGE
    except PbmlxError as e:
        if debug:
            raise
        sys.stderr.write(f"pbmlx: error: {e}\n")
        if getattr(args, "json", False) is True:
            _print_json_error(str(e))
        return EXIT_USAGE
    except KeyboardInterrupt:
        if debug:
            raise
        sys.stderr.write("pbmlx: interrupted; nothing was written\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our output went away (`pbmlx judge ... | head`): not an error of ours.
        # Point stdout at /dev/null so that flushing it at exit does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    raise SystemExit(main())
