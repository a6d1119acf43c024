"""``pbmlx export-coreml MODEL OUT_DIR``: the command around
:func:`pbmlx.convert.coreml.export.export_coreml`.

Building the parser imports nothing heavy (the choices are mirrored here; a test checks they
agree with the exporter's); torch and coremltools are imported when the command runs, and
their absence is one clear error.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

from pbmlx.errors import PbmlxError

ATTENTION_CHOICES = ("split-einsum", "original")
DEFAULT_ATTENTION = "split-einsum"
PALETTIZE_CHOICES = (4, 6, 8)
TARGET_CHOICES = ("macOS14", "macOS15", "iOS17", "iOS18")
DEFAULT_TARGET = "macOS14"
UNET_BATCH_CHOICES = (3, 1)
DEFAULT_SIZE = "512"
NEEDED = ("torch", "coremltools", "diffusers", "transformers")


def add_parser(sub, parents) -> None:
    p = sub.add_parser(
        "export-coreml",
        parents=parents,
        help="export an InstructPix2Pix model to a Core ML app bundle (.mlpackage files)",
        description=(
            "Export MODEL (a diffusers InstructPix2Pix folder, a Hugging Face Hub id, or a "
            "`pbmlx convert` folder) into a new folder OUT_DIR holding TextEncoder, Unet (or "
            "UnetChunk1/UnetChunk2), VAEEncoder and VAEDecoder .mlpackage files (float16 "
            "ML programs), vocab.json, merges.txt and pbmlx-coreml.json, the contract an app "
            "drives them by. Runs on Linux and macOS; needs pip install 'pbmlx[coreml]'. "
            "OUT_DIR must not exist (or be empty); a failed export leaves nothing behind."
        ),
    )
    p.add_argument("model", metavar="MODEL", help="diffusers folder, hub id or pbmlx folder")
    p.add_argument("out_dir", metavar="OUT_DIR", help="the bundle folder to create")
    p.add_argument(
        "--attention",
        choices=ATTENTION_CHOICES,
        default=DEFAULT_ATTENTION,
        help="UNet attention: split-einsum for the Neural Engine (default), original for the GPU",
    )
    p.add_argument(
        "--palettize",
        type=int,
        choices=PALETTIZE_CHOICES,
        metavar="BITS",
        help="k-means palettize the convolution and linear weights to 4, 6 or 8 bits",
    )
    p.add_argument(
        "--size",
        default=DEFAULT_SIZE,
        metavar="N|WxH",
        help=f"working image size in pixels, N or WIDTHxHEIGHT (default {DEFAULT_SIZE})",
    )
    p.add_argument(
        "--unet-batch",
        type=int,
        choices=UNET_BATCH_CHOICES,
        default=3,
        help="UNet rows per call: 3 (the guidance branches at once, default) or 1 (phones)",
    )
    p.add_argument(
        "--chunk-unet",
        action="store_true",
        help="write the UNet as two chained packages (UnetChunk1, UnetChunk2) for iOS",
    )
    p.add_argument(
        "--target",
        choices=TARGET_CHOICES,
        default=DEFAULT_TARGET,
        help=f"minimum deployment target (default {DEFAULT_TARGET}; per-channel-group "
        "palettization needs macOS15 or iOS18)",
    )
    p.set_defaults(func=main)


def _require_toolchain() -> None:
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if missing:
        raise PbmlxError(
            f"export-coreml needs {', '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed "
            "(pip install 'pbmlx[coreml]')."
        )


def main(args: argparse.Namespace) -> int:
    _require_toolchain()
    from pbmlx.convert.coreml.export import ExportOptions, export_coreml, parse_size

    options = ExportOptions(
        attention=args.attention,
        palettize=args.palettize,
        size=parse_size(args.size),
        unet_batch=args.unet_batch,
        chunk_unet=args.chunk_unet,
        target=args.target,
    )
    out = export_coreml(
        args.model,
        args.out_dir,
        options,
        log=lambda line: print(f"pbmlx: {line}", file=sys.stderr, flush=True),
    )
    print(out)
    return 0
