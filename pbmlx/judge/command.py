"""The ``pbmlx judge`` and ``pbmlx judge-bench`` commands (thin: the work is in the library).

``pbmlx/cli.py`` registers both with ``from pbmlx.judge import command`` and
``command.add_parser(sub, parents=[common])``.
"""

from __future__ import annotations

import argparse

from pbmlx.judge.verdict import DEFAULT_THRESHOLD


def unit_interval(text: str) -> float:
    """argparse type: a number in [0, 1] (thresholds, scores)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is outside [0, 1]")
    return v


def at_least_one(text: str) -> int:
    """argparse type: an integer >= 1 (counts)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not at least 1")
    return v


def main(args: argparse.Namespace) -> int:
    """``pbmlx judge``: print the verdict (one JSON object with ``--json``)."""
    from pbmlx.judge.core import judge

    v = judge(
        args.source,
        args.edited,
        args.instruction,
        threshold=args.threshold,
        model=args.model,
        edit_type=args.edit_type,
    )
    print(v.to_json() if args.json else v.summary())
    return 0


def main_bench(args: argparse.Namespace) -> int:
    """``pbmlx judge-bench``."""
    from pbmlx.judge import bench

    return bench.main(args)


def add_parser(sub, parents) -> None:
    """Register ``judge`` and ``judge-bench`` on the top-level subparsers."""
    p = sub.add_parser(
        "judge",
        parents=parents,
        help="score an edit on the Pico-Banana rubric, explained",
        description=(
            "Score EDITED as an edit of SOURCE by INSTRUCTION: compliance, seamlessness, "
            "preservation and quality in [0, 1], the weighted overall (0.40/0.25/0.20/0.15) "
            "and accepted (overall >= threshold). A criterion that cannot be scored (no CLIP "
            "model for a generative edit) is null, and then so are overall and accepted."
        ),
    )
    p.add_argument("source", metavar="SOURCE", help="the original photo")
    p.add_argument("edited", metavar="EDITED", help="the edited photo (any size)")
    p.add_argument("instruction", metavar="INSTRUCTION", help='e.g. "brighten this picture"')
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--model",
        metavar="CLIP_DIR_OR_ID",
        help="CLIP checkpoint for generative edits (default: openai/clip-vit-base-patch32 if cached)",
    )
    p.add_argument(
        "--threshold",
        type=unit_interval,
        default=DEFAULT_THRESHOLD,
        help=f"accept at overall >= this (default {DEFAULT_THRESHOLD})",
    )
    p.add_argument("--edit-type", help="a Pico-Banana edit type (tells local from global edits)")
    p.set_defaults(func=main)

    b = sub.add_parser(
        "judge-bench",
        parents=parents,
        help="agreement of the judge with Pico-Banana-400K preference pairs",
        description=(
            "Judge every passed edit against its rejected attempts in a Pico-Banana-400K "
            "preference.jsonl; report pairwise accuracy overall, per edit type and per criterion."
        ),
    )
    b.add_argument("file", metavar="PREFERENCE_JSONL", help="preference.jsonl (or a part of it)")
    b.add_argument("--images", required=True, metavar="DIR", help="local folder of the images")
    b.add_argument("--model", metavar="CLIP_DIR_OR_ID", help="CLIP checkpoint (as for judge)")
    b.add_argument("--limit", type=at_least_one, metavar="N", help="only the first N records")
    b.add_argument(
        "--instruction",
        choices=("summarized", "text"),
        default="summarized",
        help="which instruction field to judge against (default: summarized_text)",
    )
    b.add_argument(
        "--threshold", type=unit_interval, default=DEFAULT_THRESHOLD, help=argparse.SUPPRESS
    )
    b.add_argument(
        "--fit-clip",
        metavar="OUT_JSON",
        help="also fit the CLIP compliance map on these pairs (needs --model) and write it to "
        "OUT_JSON, a new file; PBMLX_JUDGE_CALIBRATION=OUT_JSON puts it in force",
    )
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=main_bench)
