"""``pbmlx convert SOURCE OUT_DIR``: the command around :func:`pbmlx.convert.to_mlx.convert`.

Kept apart from the converter so that building the ``pbmlx`` parser imports nothing heavy; the
converter (MLX, the models) is imported when the command runs.
"""

from __future__ import annotations

import argparse
import sys

# Mirrors of the converter's defaults and choices, so that `pbmlx --help` stays light; a
# test checks they agree with pbmlx.convert.to_mlx.
DTYPE_CHOICES = ("float16", "bfloat16", "float32")
DEFAULT_DTYPE = "float16"
QUANTIZE_CHOICES = (4, 8)
GROUP_SIZE_CHOICES = (32, 64, 128)
DEFAULT_GROUP_SIZE = 64


def add_parser(sub, parents) -> None:
    p = sub.add_parser(
        "convert",
        parents=parents,
        help="convert an InstructPix2Pix checkpoint (diffusers folder or hub id) to MLX",
        description=(
            "Convert SOURCE, a diffusers-layout InstructPix2Pix pipeline folder or a Hugging "
            "Face Hub id (only the files needed are downloaded), into a new folder OUT_DIR of "
            "MLX safetensors that `pbmlx edit --model OUT_DIR` loads. Safetensors only: pickle "
            "checkpoints are refused unless --allow-pickle. OUT_DIR must not exist (or be "
            "empty); a failed conversion leaves nothing behind."
        ),
    )
    p.add_argument("source", metavar="SOURCE", help="diffusers pipeline folder or hub id")
    p.add_argument("out_dir", metavar="OUT_DIR", help="the folder to create")
    p.add_argument(
        "--quantize",
        type=int,
        choices=QUANTIZE_CHOICES,
        metavar="BITS",
        help="quantize the UNet's and text encoder's linear layers (and token embedding) to 4 or 8 bits",
    )
    p.add_argument(
        "--group-size",
        type=int,
        choices=GROUP_SIZE_CHOICES,
        default=DEFAULT_GROUP_SIZE,
        help=f"weights sharing one quantization scale (default {DEFAULT_GROUP_SIZE})",
    )
    p.add_argument(
        "--dtype",
        choices=DTYPE_CHOICES,
        default=DEFAULT_DTYPE,
        help=f"floating-point type of the weights (default {DEFAULT_DTYPE})",
    )
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="read PyTorch pickle weights (.bin/.ckpt/.pt) with torch; only for sources you trust",
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pbmlx.convert.to_mlx import convert

    out = convert(
        args.source,
        args.out_dir,
        quantize=args.quantize,
        dtype=args.dtype,
        allow_pickle=args.allow_pickle,
        group_size=args.group_size,
        log=lambda line: print(f"pbmlx: {line}", file=sys.stderr, flush=True),
    )
    print(out)
    return 0
