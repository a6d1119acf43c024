"""The ``pbmlx bench`` command (thin: the work is in :mod:`pbmlx.bench.runner`).

``pbmlx/cli.py`` registers it with ``from pbmlx.bench import command as bench_command`` and
``bench_command.add_parser(sub, parents=[common])``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pbmlx.bench.configs import VARIANTS
from pbmlx.judge.command import at_least_one


def _size(text: str) -> int:
    v = at_least_one(text)
    if v % 8:
        raise argparse.ArgumentTypeError(f"{text!r} is not a multiple of 8")
    return v


class _Progress:
    """One tqdm bar on stderr over the plan's tasks (hidden when stderr is not a terminal);
    ``self(label)`` names the next task and returns its ``on_step(done, total)``."""

    def __init__(self, enabled: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            desc="pbmlx bench",
            unit="task",
            file=sys.stderr,
            dynamic_ncols=True,
            disable=None if enabled else True,  # None: off unless stderr is a terminal
            bar_format="{desc:<28.28}|{bar}| {n_fmt}/{total_fmt} [{elapsed}]{postfix}",
        )

    def set_total(self, total: int) -> None:
        self.bar.total = total
        self.bar.refresh()

    def __call__(self, label: str):
        self.bar.set_description_str(label, refresh=False)
        self.bar.set_postfix_str("", refresh=False)
        self.bar.update(1)

        def on_step(done: int, total: int) -> None:
            self.bar.set_postfix_str(f"step {done}/{total}" if total > 1 else "")

        return on_step

    def close(self) -> None:
        self.bar.close()


def main(args: argparse.Namespace) -> int:
    """``pbmlx bench``: run the plan, print the tables, write ``--json`` / ``--report``."""
    from pbmlx.bench.report import Outputs, format_text
    from pbmlx.bench.runner import Bench, Options

    options = Options(
        quick=args.quick,
        model=args.model,
        compare=tuple(args.compare or ()),
        coreml=args.coreml,
        judge_model=args.judge_model,
        sizes=tuple(args.sizes) if args.sizes else None,
        steps=tuple(args.steps) if args.steps else None,
        variants=tuple(args.variants) if args.variants else None,
        only=tuple(args.only) if args.only else ("edit", "adjust", "judge"),
        seed=args.seed,
    )
    outputs = Outputs(args.json, args.report, args.overwrite)
    progress = _Progress(enabled=not args.no_progress)
    bench = Bench(options, progress=progress)
    try:
        outputs.prepare()
        bench.check()
        progress.set_total(bench.task_count())
        doc = bench.run()
        progress.close()
        outputs.write(doc)
    except BaseException:
        progress.close()
        outputs.abort()
        raise
    print(format_text(doc))
    for what, where in (("JSON", args.json), ("report", args.report)):
        if where is not None:
            print(f"wrote {what} {where}")
    return 0


def add_parser(sub, parents) -> None:
    """Register ``bench`` on the top-level subparsers."""
    p = sub.add_parser(
        "bench",
        parents=parents,
        help="time the editor, the adjust engine and the judge here, against peers and the peak",
        description=(
            "Time the generative edit stage by stage (load, text encode, image encode, each "
            "denoising step, decode, full-resolution restore) per variant and working size, "
            "the adjust engine against PIL and the judge, on the backend present (Metal, CUDA "
            "or CPU). Without --model the full-size InstructPix2Pix networks are built with "
            "random weights (nothing is downloaded). Each stage gets its FLOPs (counted from "
            "the model configs), FLOP/s, fraction of the device's peak (published Apple GPU "
            "figures, a measured GEMM elsewhere) and peak memory."
        ),
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="256 px, float32 and 8-bit, 2 measured steps (totals extrapolated), 1 MP adjust, "
        "judge without CLIP (under 2 minutes on 2 CPU cores)",
    )
    p.add_argument("--json", type=Path, metavar="OUT", help="write every figure as JSON to OUT")
    p.add_argument("--report", type=Path, metavar="DIR", help="write DIR/report.md with PNG charts")
    p.add_argument("--overwrite", action="store_true", help="replace OUT / DIR if they exist")
    p.add_argument(
        "--model",
        metavar="DIR_OR_ID",
        help="time this model (diffusers folder, `pbmlx convert` folder or hub id) instead of "
        "random full-size networks",
    )
    p.add_argument(
        "--compare",
        nargs="+",
        choices=["diffusers"],
        metavar="diffusers",
        help="also run the edit through diffusers' pipeline (needs torch, diffusers, "
        "transformers), alternating with pbmlx",
    )
    p.add_argument(
        "--coreml", metavar="DIR", help="also time this `pbmlx export-coreml` bundle (macOS)"
    )
    p.add_argument(
        "--judge-model",
        metavar="CLIP_DIR_OR_ID",
        help="the judge's CLIP (default: random weights with ViT-B/32's shapes)",
    )
    p.add_argument(
        "--sizes", type=_size, nargs="+", metavar="PX", help="working sizes (default 256 512)"
    )
    p.add_argument(
        "--steps", type=at_least_one, nargs="+", metavar="N", help="step counts (default 10 20)"
    )
    p.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        metavar="VARIANT",
        help=f"weight variants, of {', '.join(VARIANTS)} (default: all)",
    )
    p.add_argument(
        "--only",
        nargs="+",
        choices=["edit", "adjust", "judge"],
        help="run only these parts (default: all three)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and photos")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=main)
